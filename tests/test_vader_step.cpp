// test_vader_step.cpp — one VADER training step: the vader_step_tiny fixture (schedule, every
// DDIM step, frames, reward, loss, every LoRA gradient), batched vs separate CFG calls, and the
// LoRA gradient of a whole step with K = 2 against central finite differences on a tiny
// random model.
#include <cmath>
#include <cstring>
#include "testutil.h"
#include "core/fixture.h"
#include "core/models/fixture_checks.h"
#include "train/ddim.h"
#include "train/lora.h"
#include "train/tiny_models.h"
#include "train/vader_step.h"

namespace {

void RunFixture(int segments) {
    vt_fixture_opts opt = vt_fixture_opts_default();
    opt.segments = segments;
    vt_fixture_report rep{};
    ASSERT_VT_OK(vt_fixture_run(SharedPath("fixtures/vader_step_tiny").c_str(), &opt, &rep));
    EXPECT_GE(rep.n, 200);
    EXPECT_EQ(rep.n_fail, 0);
    for (int i = 0; i < rep.n; i++) EXPECT_TRUE(rep.r[i].ok) << rep.r[i].name << " " << rep.r[i].rel_err << " " << rep.r[i].note;
    vt_fixture_report_free(&rep);
}

TEST(VaderStep, FixtureTiny) { RunFixture(0); }
TEST(VaderStep, FixtureTinyCheckpointSegments) { RunFixture(1); }

// A tiny random model with LoRA (B non-zero so A gets gradient too), inputs and noise.
struct TinyStep {
    vt_unet3d *unet = nullptr;
    vt_vae_decoder *vae = nullptr;
    vt_ddim_schedule sched{};
    vt_tensor *x_T = nullptr, *ctx = nullptr, *uctx = nullptr, *fps = nullptr;
    std::vector<vt_tensor *> noise;
    int S = 4;
    TinyStep() {
        vt_unet3d_config uc = vt_tiny_unet_config();
        unet = vt_unet3d_build_random(&uc, 3);
        vt_vae_config vc = vt_tiny_vae_config();
        vae = vt_vae_decoder_build_random(&vc, 4);
        if (!unet || !vae) return;
        vt_unet3d_lora_config lc = {2, 4.0f, VT_LORA_TO_Q | VT_LORA_TO_K | VT_LORA_TO_V, 5};
        if (vt_unet3d_add_lora(unet, &lc)) return;
        vt_rng r;
        vt_rng_seed(&r, 11);
        for (int i = 0; i < vt_unet3d_n_lora(unet); i += 2) vt_fill_normal(vt_unet3d_lora_param(unet, i + 1, nullptr), &r, 0, 0.2f);
        vt_ddim_options o = vt_ddim_default_options(S, 1.0);
        vt_ddim_init(&sched, &o);
        x_T = RandN({1, 4, 2, 4, 4}, 21);
        ctx = RandN({1, 5, uc.context_dim}, 22);
        uctx = RandN({1, 5, uc.context_dim}, 23);
        fps = vt_empty(VT_I64, VT_CPU, 1, (const int64_t[]){1});
        vt_i64(fps)[0] = 24;
        for (int i = 0; i < S; i++) noise.push_back(RandN({1, 4, 2, 4, 4}, 30 + i));
    }
    ~TinyStep() {
        vt_unet3d_free(unet);
        vt_vae_decoder_free(vae);
        vt_ddim_free(&sched);
        for (auto *t : {x_T, ctx, uctx, fps}) vt_release(t);
        for (auto *t : noise) vt_release(t);
    }
    vt_vader_step_args Args(int K) {
        vt_vader_step_args a;
        vt_vader_step_args_init(&a, unet, vae, &sched, x_T, ctx, uctx, fps);
        a.noise = noise.data();
        a.guidance = 3.0f;
        a.K = K;
        a.decode = VT_CFG_DECODE_INDEX;
        a.decode_index = 1;
        a.record_steps = 1;
        return a;
    }
    void ZeroGrads() {
        for (int i = 0; i < vt_unet3d_n_lora(unet); i++) vt_zero_grad(vt_unet3d_lora_param(unet, i, nullptr));
    }
    // Copies of the LoRA gradients, owned by R.
    std::vector<vt_tensor *> CloneLoraGrads(Releaser &R) {
        std::vector<vt_tensor *> g;
        for (int i = 0; i < vt_unet3d_n_lora(unet); i++) g.push_back(R(vt_clone(vt_unet3d_lora_param(unet, i, nullptr)->grad)));
        return g;
    }
    // Every LoRA gradient against ref[i] (CloneLoraGrads of another run): relative error < tol.
    void ExpectLoraGradsNear(const std::vector<vt_tensor *> &ref, double tol) {
        ASSERT_EQ(ref.size(), (size_t)vt_unet3d_n_lora(unet));
        for (int i = 0; i < vt_unet3d_n_lora(unet); i++) {
            const vt_tensor *g = vt_unet3d_lora_param(unet, i, nullptr)->grad;
            ASSERT_NE(g, nullptr) << "LoRA gradient " << i;
            ASSERT_NE(ref[i], nullptr) << "LoRA gradient " << i;
            EXPECT_LT(RelErr(g, ref[i]), tol) << "LoRA gradient " << i;
        }
    }
};

TEST(VaderStep, BatchedCfgMatchesSeparateCalls) {
    TinyStep m;
    ASSERT_VT(m.unet);
    vt_vader_step_args a = m.Args(1);
    vt_vader_step_result r1{}, r2{};
    ASSERT_VT_OK(vt_vader_step(&a, &r1));
    Releaser R;
    std::vector<vt_tensor *> g1 = m.CloneLoraGrads(R);
    m.ZeroGrads();
    a.batch_cfg = 0;
    ASSERT_VT_OK(vt_vader_step(&a, &r2));
    EXPECT_LT(RelErr(r2.samples, r1.samples), 1e-5);
    EXPECT_LT(RelErr(r2.frames, r1.frames), 1e-5);
    m.ExpectLoraGradsNear(g1, 1e-4);
    vt_vader_step_result_free(&r1);
    vt_vader_step_result_free(&r2);
    m.ZeroGrads();
}

// The untaped steps on merged LoRA weights and the context's K/V projected once (the default)
// give the same sampling trajectory, frames and LoRA gradients as the plain steps; with LoRA
// dropout the fast path is off, so both runs are bit-identical; nothing stays merged after.
TEST(VaderStep, NogradFastPathMatchesPlainSteps) {
    TinyStep m;
    ASSERT_VT(m.unet);
    vt_vader_step_args a = m.Args(1);
    vt_vader_step_result r1{}, r2{};
    ASSERT_VT_OK(vt_vader_step(&a, &r1));
    EXPECT_FALSE(vt_unet3d_lora_is_merged(m.unet));
    Releaser R;
    std::vector<vt_tensor *> g1 = m.CloneLoraGrads(R);
    m.ZeroGrads();
    a.nograd_fast = 0;
    ASSERT_VT_OK(vt_vader_step(&a, &r2));
    for (int i = 0; i < m.S; i++) EXPECT_LT(RelErr(r2.x_prev[i], r1.x_prev[i]), 1e-5) << "x_prev " << i;
    EXPECT_LT(RelErr(r2.frames, r1.frames), 1e-5);
    m.ExpectLoraGradsNear(g1, 1e-4);
    vt_vader_step_result_free(&r1);
    vt_vader_step_result_free(&r2);
    m.ZeroGrads();
    // LoRA dropout: the merged weights cannot express it, the fast path stays off
    vt_unet3d_set_dropout(m.unet, 0.0f, 0.3f);
    a.nograd_fast = 1;
    ASSERT_VT_OK(vt_vader_step(&a, &r1));
    m.ZeroGrads();
    a.nograd_fast = 0;
    ASSERT_VT_OK(vt_vader_step(&a, &r2));
    EXPECT_EQ(0, std::memcmp(vt_f32(r1.samples), vt_f32(r2.samples), vt_nbytes(r1.samples)));
    vt_vader_step_result_free(&r1);
    vt_vader_step_result_free(&r2);
    vt_unet3d_set_dropout(m.unet, 0.0f, 0.0f);
    m.ZeroGrads();
}

// The K = 2 gradient of a 4-step sampling run holds x entering step 2 constant: it equals the
// derivative of the loss of steps 2..3 started from that x, which central differences estimate.
TEST(VaderStep, TruncatedLoraGradientMatchesFiniteDifferences) {
    TinyStep m;
    ASSERT_VT(m.unet);
    vt_vader_step_args a = m.Args(2);
    vt_vader_step_result full{};
    ASSERT_VT_OK(vt_vader_step(&a, &full));
    EXPECT_EQ(full.window_start, 2);
    EXPECT_EQ(full.window_end, 3);
    int n = vt_unet3d_n_lora(m.unet);
    std::vector<vt_tensor *> grads;
    for (int i = 0; i < n; i++) {
        vt_tensor *g = vt_unet3d_lora_param(m.unet, i, nullptr)->grad;
        ASSERT_NE(g, nullptr) << i;
        grads.push_back(vt_clone(g));
    }
    m.ZeroGrads();
    // the same gradient when sampling starts at step 2 from the recorded x
    vt_vader_step_args b = a;
    b.x_T = full.x_prev[1];
    b.start_step = 2;
    b.checkpointing = 0;
    vt_vader_step_result part{};
    ASSERT_VT_OK(vt_vader_step(&b, &part));
    EXPECT_LT(RelErr(part.frames, full.frames), 1e-6);
    for (int i = 0; i < n; i++) EXPECT_LT(RelErr(vt_unet3d_lora_param(m.unet, i, nullptr)->grad, grads[i]), 1e-5) << i;
    vt_vader_step_result_free(&part);
    m.ZeroGrads();
    // central differences on the largest-gradient element of a spread of LoRA tensors
    b.K = 0;
    b.backward = 0;
    b.record_steps = 0;
    int checked = 0;
    for (int i = 0; i < n; i += n / 5 + 1) {
        vt_tensor *p = vt_unet3d_lora_param(m.unet, i, nullptr);
        const float *g = vt_f32(grads[i]);
        int64_t k = 0;
        for (int64_t j = 1; j < p->numel; j++)
            if (std::fabs(g[j]) > std::fabs(g[k])) k = j;
        float save = vt_f32(p)[k];
        const float h = 1e-2f;
        double lp, lm;
        vt_vader_step_result r{};
        vt_f32(p)[k] = save + h;
        ASSERT_VT_OK(vt_vader_step(&b, &r));
        lp = r.loss;
        vt_vader_step_result_free(&r);
        vt_f32(p)[k] = save - h;
        ASSERT_VT_OK(vt_vader_step(&b, &r));
        lm = r.loss;
        vt_vader_step_result_free(&r);
        vt_f32(p)[k] = save;
        double fd = (lp - lm) / (2.0 * h);
        EXPECT_NEAR(g[k], fd, 0.03 * std::fabs(fd) + 2e-5) << "lora param " << i << " element " << k;
        checked++;
    }
    EXPECT_GE(checked, 4);
    for (auto *t : grads) vt_release(t);
    vt_vader_step_result_free(&full);
}

TEST(VaderStep, DecodeFrameChoices) {
    int idx[VT_VADER_MAX_FRAMES];
    vt_rng r;
    vt_rng_seed(&r, 1);
    EXPECT_EQ(vt_vader_decode_frames(VT_CFG_DECODE_FML, 0, 12, &r, idx, VT_VADER_MAX_FRAMES), 3);
    EXPECT_EQ(idx[0], 0);
    EXPECT_EQ(idx[1], 6);
    EXPECT_EQ(idx[2], 11);
    EXPECT_EQ(vt_vader_decode_frames(VT_CFG_DECODE_ALT, 0, 5, &r, idx, VT_VADER_MAX_FRAMES), 3);
    EXPECT_EQ(idx[2], 4);
    EXPECT_EQ(vt_vader_decode_frames(VT_CFG_DECODE_ALL, 0, 4, &r, idx, VT_VADER_MAX_FRAMES), 4);
    EXPECT_EQ(vt_vader_decode_frames(VT_CFG_DECODE_INDEX, 3, 4, &r, idx, VT_VADER_MAX_FRAMES), 1);
    EXPECT_EQ(vt_vader_decode_frames(VT_CFG_DECODE_INDEX, 4, 4, &r, idx, VT_VADER_MAX_FRAMES), -1);
    EXPECT_NE(std::string(vt_error_message()).find("out of range"), std::string::npos);
    for (int i = 0; i < 20; i++) {
        ASSERT_EQ(vt_vader_decode_frames(VT_CFG_DECODE_RANDOM, 0, 4, &r, idx, VT_VADER_MAX_FRAMES), 1);
        EXPECT_GE(idx[0], 0);
        EXPECT_LT(idx[0], 4);
    }
}

TEST(VaderStep, LoraNames) {
    EXPECT_STREQ(vt_lora_state_name("base_model.model.model.diffusion_model.a.to_q.lora_A.weight"),
                 "model.diffusion_model.a.to_q.lora_A.weight");
    char buf[128];
    EXPECT_STREQ(vt_lora_peft_name("model.diffusion_model.x.lora_B.weight", buf, sizeof buf),
                 "base_model.model.model.diffusion_model.x.lora_B.weight");
}

}  // namespace
