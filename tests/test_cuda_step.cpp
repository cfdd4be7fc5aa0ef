// test_cuda_step.cpp — one tiny VADER step (tiny random UNet + VAE with LoRA, fixed seeds, no
// dropout, K = 1) on the CPU and on the GPU (models moved with the *_to_device functions, the
// same inputs uploaded): loss, frames and every LoRA gradient (copied back) agree at 1e-4
// relative with fp32 weights; with bf16 UNet / VAE weights (model.dtype bf16: converted on the
// host before the upload, as the trainer does) both sides round the same operands, and the GPU's
// cuDNN output rounding and summation order are what remains (bf16 tolerances, untested on a
// GPU so far: loosen if the first GPU run shows the bound too tight, not the path wrong).
// Skips, saying so, when the build has no CUDA backend or no GPU is present.
#include <vector>
#include "testutil.h"
#include "train/ddim.h"
#include "train/lora.h"
#include "train/tiny_models.h"
#include "train/vader_step.h"
#ifdef VADER_HAVE_CUDA
#include "cuda/backend.h"
#endif
#include <cmath>

namespace {

// A tiny random model with LoRA (B non-zero so A gets gradient too): identical on every build.
struct TinyModel {
    vt_unet3d *unet = nullptr;
    vt_vae_decoder *vae = nullptr;
    TinyModel() {
        vt_unet3d_config uc = vt_tiny_unet_config();
        unet = vt_unet3d_build_random(&uc, 3);
        vt_vae_config vc = vt_tiny_vae_config();
        vae = vt_vae_decoder_build_random(&vc, 4);
        if (!unet || !vae) return;
        vt_unet3d_set_dropout(unet, 0.0f, 0.0f);
        vt_unet3d_lora_config lc = {2, 4.0f, VT_LORA_TO_Q | VT_LORA_TO_K | VT_LORA_TO_V, 5};
        if (vt_unet3d_add_lora(unet, &lc)) {
            vt_unet3d_free(unet);
            unet = nullptr;
            return;
        }
        vt_rng r;
        vt_rng_seed(&r, 11);
        for (int i = 0; i < vt_unet3d_n_lora(unet); i += 2) vt_fill_normal(vt_unet3d_lora_param(unet, i + 1, nullptr), &r, 0, 0.2f);
    }
    ~TinyModel() {
        vt_unet3d_free(unet);
        vt_vae_decoder_free(vae);
    }
};

class CudaStep : public ::testing::Test {
  protected:
    void SetUp() override {
#ifndef VADER_HAVE_CUDA
        GTEST_SKIP() << "CUDA backend not built (no nvcc): CUDA step test skipped";
#else
        if (vt_cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device present: CUDA step test skipped";
        ASSERT_EQ(vt_cuda_init(0), VT_OK) << vt_error_message();
#endif
    }
};

// The step on both devices with the UNet / VAE GEMM weights in wdt, checkpoint-segment inputs
// saved in saved (a latent of hw x hw: 16 puts the UNet's segment inputs above the packing
// threshold); loss and frames within tol, every LoRA gradient within grad_tol (max-relative).
void StepMatchesCpu(vt_dtype wdt, double tol, double grad_tol, vt_dtype saved = VT_F32, int64_t hw = 4) {
    const int S = 4;
    TinyModel cpu, gpu;
    ASSERT_VT(cpu.unet);
    ASSERT_VT(gpu.unet);
    for (TinyModel *m : {&cpu, &gpu}) {
        ASSERT_VT_OK(vt_unet3d_set_weight_dtype(m->unet, wdt));
        ASSERT_VT_OK(vt_vae_decoder_set_weight_dtype(m->vae, wdt));
    }
    ASSERT_VT_OK(vt_unet3d_to_device(gpu.unet, VT_CUDA));
    ASSERT_VT_OK(vt_vae_decoder_to_device(gpu.vae, VT_CUDA));

    vt_unet3d_config uc = vt_tiny_unet_config();
    vt_ddim_schedule sched{};
    vt_ddim_options o = vt_ddim_default_options(S, 1.0);
    ASSERT_VT_OK(vt_ddim_init(&sched, &o));
    vt_tensor *x_T = RandN({1, 4, 2, hw, hw}, 21);
    vt_tensor *ctx = RandN({1, 5, uc.context_dim}, 22);
    vt_tensor *uctx = RandN({1, 5, uc.context_dim}, 23);
    vt_tensor *fps = vt_empty(VT_I64, VT_CPU, 1, (const int64_t[]){1});
    vt_i64(fps)[0] = 24;
    std::vector<vt_tensor *> noise, noise_d;
    for (int i = 0; i < S; i++) noise.push_back(RandN({1, 4, 2, hw, hw}, 30 + i));
    for (auto *t : noise) noise_d.push_back(vt_to_device(t, VT_CUDA));
    vt_tensor *x_T_d = vt_to_device(x_T, VT_CUDA), *ctx_d = vt_to_device(ctx, VT_CUDA), *uctx_d = vt_to_device(uctx, VT_CUDA);
    ASSERT_VT(x_T_d);
    ASSERT_VT(ctx_d);
    ASSERT_VT(uctx_d);
    for (auto *t : noise_d) ASSERT_VT(t);

    vt_vader_step_result res[2] = {};
    for (int dev = 0; dev < 2; dev++) {
        TinyModel &m = dev ? gpu : cpu;
        vt_vader_step_args a;
        // fps stays host data (the fps embedding's input)
        vt_vader_step_args_init(&a, m.unet, m.vae, &sched, dev ? x_T_d : x_T, dev ? ctx_d : ctx, dev ? uctx_d : uctx,
                                fps);
        a.noise = dev ? noise_d.data() : noise.data();
        a.guidance = 3.0f;
        a.K = 1;
        a.decode = VT_CFG_DECODE_INDEX;
        a.decode_index = 1;
        a.dropout_seed = 7;
        a.saved_dtype = saved;
        ASSERT_VT_OK(vt_vader_step(&a, &res[dev])) << (dev ? " (cuda)" : " (cpu)");
    }
    EXPECT_TRUE(std::isfinite(res[0].loss));
    EXPECT_LE(std::fabs(res[1].loss - res[0].loss), tol * std::fabs(res[0].loss) + 1e-7)
        << "loss cpu " << res[0].loss << " cuda " << res[1].loss;
    EXPECT_EQ(res[1].window_start, res[0].window_start);
    vt_tensor *frames = vt_to_device(res[1].frames, VT_CPU);
    ASSERT_VT(frames);
    EXPECT_LE(RelErr(frames, res[0].frames), tol) << "frames";
    vt_release(frames);
    int n = vt_unet3d_n_lora(cpu.unet);
    ASSERT_EQ(vt_unet3d_n_lora(gpu.unet), n);
    int with_grad = 0;
    for (int i = 0; i < n; i++) {
        vt_tensor *pc = vt_unet3d_lora_param(cpu.unet, i, nullptr), *pg = vt_unet3d_lora_param(gpu.unet, i, nullptr);
        ASSERT_NE(pc->grad, nullptr) << "cpu LoRA param " << i;
        ASSERT_NE(pg->grad, nullptr) << "cuda LoRA param " << i;
        EXPECT_EQ(pg->grad->device, VT_CUDA) << i;
        vt_tensor *g = vt_to_device(pg->grad, VT_CPU);
        ASSERT_VT(g);
        EXPECT_LE(RelErr(g, pc->grad), grad_tol) << "LoRA gradient " << i;
        vt_release(g);
        with_grad++;
    }
    EXPECT_GT(with_grad, 0);

    for (auto &r : res) vt_vader_step_result_free(&r);
    for (auto *t : {x_T, ctx, uctx, fps, x_T_d, ctx_d, uctx_d}) vt_release(t);
    for (auto *t : noise) vt_release(t);
    for (auto *t : noise_d) vt_release(t);
    vt_ddim_free(&sched);
}

TEST_F(CudaStep, TinyStepMatchesCpu) { StepMatchesCpu(VT_F32, 1e-4, 1e-4); }
TEST_F(CudaStep, TinyStepWithBf16WeightsMatchesCpu) { StepMatchesCpu(VT_BF16, 3e-2, 1e-1); }
// both devices pack the same values (the casts round alike), so the forward is the fp32 one and
// the gradients stay close (the tolerance allows a bf16 step where f32 sums round differently)
TEST_F(CudaStep, StepWithPackedSegmentInputsMatchesCpu) { StepMatchesCpu(VT_F32, 1e-4, 1e-2, VT_BF16, 16); }

}  // namespace
