// test_bench_memplan.cpp — the step FLOP count (train/flops.h) against the issue's figure for
// the paper config, the memory plan (train/memplan.h) against the CPU allocator's measured
// peak on the tiny config, the plan's refusal message, the LoRA / parameter counts it uses,
// and the phase timing hooks of vt_vader_step / the trainer.
#include <cmath>
#include <string>
#include <vector>
#include "train_testutil.h"
#include "core/models/unet3d.h"
#include "train/config.h"
#include "train/flops.h"
#include "train/lora.h"
#include "train/memplan.h"
#include "train/tiny_models.h"
#include "train/trainer.h"
#include "train/vader_step.h"
#include "cuda/device_query.h"

namespace {

struct Cfg : TestConfig {
    Cfg(const char *yaml, const std::vector<std::string> &sets) : TestConfig(sets, yaml, "test") {}
};

// The paper's configuration (VADER-VideoCrafter, HPS): 320x512, 12 frames, DDIM 25 + CFG,
// K = 1, checkpointing, one frame decoded, HPSv2.1 (ViT-H-14); one micro-batch of one video.
// The checkpoints are manifests (shapes only: the FLOP count needs nothing else).
std::vector<std::string> PaperSets() {
    std::string m = SharedPath("manifests/");
    return {"model.unet=" + m + "videocrafter2_unet.txt", "model.vae=" + m + "videocrafter2_vae_decoder.txt",
            "model.text=" + m + "openclip_vit_h_14.txt", "model.random_weights=true", "model.height=320",
            "model.width=512", "model.frames=12", "sampler.steps=25", "sampler.guidance_scale=12",
            "sampler.backprop_steps=1", "memory.checkpointing=true", "memory.decode_frames=\"-1\"",
            "reward=[{name: hpsv21}]", "data.batch_size=1", "optim.accumulation=1", "lora.rank=16"};
}

TEST(Flops, PaperConfigMatchesIssue) {
    Cfg c(vt_config_default_yaml, PaperSets());
    ASSERT_TRUE(c.ok) << vt_error_message();
    vt_step_flops f;
    ASSERT_VT_OK(vt_step_flops_count(&c.c, nullptr, nullptr, &f));
    char buf[2048];
    vt_step_flops_format(&f, buf, sizeof buf);
    std::printf("%s", buf);
    EXPECT_EQ(f.unet_forwards, 50);
    EXPECT_EQ(f.taped_steps, 1);
    EXPECT_EQ(f.frames_decoded, 1);
    // the issue: 516 TFLOP per step, 475 of them in the 50 UNet forwards
    EXPECT_NEAR(f.total / 1e12, 516.0, 0.10 * 516.0);
    EXPECT_NEAR(f.unet_forward / 1e12, 475.0, 0.10 * 475.0);
    double sum = f.unet_forward + f.unet_backward + f.unet_recompute + f.vae_forward + f.vae_backward +
                 f.vae_recompute + f.reward_forward + f.reward_backward + f.reward_recompute;
    EXPECT_NEAR(sum, f.total, 1e-6 * f.total);
    // accumulation scales linearly; no checkpointing drops the recompute terms
    Cfg c8(vt_config_default_yaml, [] { auto s = PaperSets(); s.push_back("optim.accumulation=8"); return s; }());
    Cfg nock(vt_config_default_yaml, [] { auto s = PaperSets(); s.push_back("memory.checkpointing=false"); return s; }());
    ASSERT_TRUE(c8.ok && nock.ok);
    vt_step_flops f8, fn;
    ASSERT_VT_OK(vt_step_flops_count(&c8.c, nullptr, nullptr, &f8));
    ASSERT_VT_OK(vt_step_flops_count(&nock.c, nullptr, nullptr, &fn));
    EXPECT_NEAR(f8.total, 8 * f.total, 1e-6 * f8.total);
    EXPECT_EQ(fn.unet_recompute, 0.0);
    EXPECT_NEAR(fn.total, f.total - f.unet_recompute - f.vae_recompute - f.reward_recompute, 1e-6 * f.total);
}

TEST(Flops, VitVisionMatchesKnownSize) {
    // ViT-H-14 at 224: ~167 GMAC -> ~334 GFLOP per image (open_clip's published 167.4 GMACs)
    vt_flops_vit v = vt_flops_reward_tower(VT_CFG_REWARD_HPS, nullptr);
    double fv = vt_flops_vit_vision(&v, 1, nullptr);
    EXPECT_NEAR(fv / 1e9, 2 * 167.4, 0.05 * 2 * 167.4);
}

TEST(Memplan, CountsMatchBuiltModels) {
    Cfg c(vt_config_default_yaml, {});
    ASSERT_TRUE(c.ok);
    vt_memplan p;
    ASSERT_VT_OK(vt_memplan_compute(&c.c, &p));
    vt_unet3d_config uc = vt_tiny_unet_config();
    vt_unet3d *u = vt_unet3d_build_random(&uc, 3);
    ASSERT_VT(u);
    unsigned targets = 0;
    ASSERT_VT_OK(vt_lora_targets_from_names(c.c.lora.targets, c.c.lora.n_targets, &targets));
    vt_unet3d_lora_config lc = {c.c.lora.rank, (float)c.c.lora.alpha, targets, 1};
    ASSERT_VT_OK(vt_unet3d_add_lora(u, &lc));
    int64_t n = 0;
    for (int i = 0; i < vt_unet3d_n_lora(u); i++) n += vt_unet3d_lora_param(u, i, nullptr)->numel;
    EXPECT_EQ(p.n_lora, n);
    EXPECT_EQ(p.n_unet, vt_unet3d_n_params(u));
    vt_unet3d_free(u);
    // the full model: the manifest's parameter count (1,413,284,420) without building it
    Cfg full(vt_config_default_yaml, PaperSets());
    ASSERT_TRUE(full.ok);
    vt_memplan pf;
    ASSERT_VT_OK(vt_memplan_compute(&full.c, &pf));
    EXPECT_EQ(pf.n_unet, 1413284420);
    EXPECT_GT(pf.n_lora, 0);
    char buf[2048];
    vt_memplan_format(&pf, buf, sizeof buf);
    std::printf("paper config, CPU fp32:\n%s", buf);
}

// The plan's peak against the CPU allocator's measured peak over a tiny training step.
void ExpectPlanMatchesRun(const std::vector<std::string> &sets) {
    std::string dir = TempDir();
    std::vector<std::string> all = {"output.dir=" + dir, "optim.steps=2", "output.checkpoint_every=0"};
    all.insert(all.end(), sets.begin(), sets.end());
    Cfg c(vt_config_default_yaml, all);
    ASSERT_TRUE(c.ok) << vt_error_message();
    vt_memplan p;
    ASSERT_VT_OK(vt_memplan_compute(&c.c, &p));
    vt_mem_reset_peak(VT_CPU);
    size_t before = vt_mem_stats_get(VT_CPU).current;
    vt_train_options o = vt_train_options_default();
    vt_trainer *t = vt_trainer_create(&c.c, &o);
    ASSERT_VT(t);
    ASSERT_VT_OK(vt_trainer_run(t));
    double measured = (double)(vt_mem_stats_get(VT_CPU).peak - before);
    vt_trainer_free(t);
    double ratio = p.peak / measured;
    std::printf("predicted %.2f MiB, measured %.2f MiB, ratio %.3f (%s)\n", p.peak / 1048576.0, measured / 1048576.0,
                ratio, p.peak_phase);
    EXPECT_GT(ratio, 0.7);
    EXPECT_LT(ratio, 1.3);
}

TEST(Memplan, PredictsTinyPeakWithin30Percent) { ExpectPlanMatchesRun({}); }
TEST(Memplan, PredictsTinyPeakWithoutCheckpointing) {
    ExpectPlanMatchesRun({"memory.checkpointing=false", "memory.decode_frames=alt"});
}

TEST(Memplan, PredictsTinyPeakWithPackedSegmentInputs) {
    ExpectPlanMatchesRun({"memory.saved_dtype=bf16", "model.height=128", "model.width=128"});
}

TEST(Memplan, RefusesTooSmallLimitNamingWhatToChange) {
    std::string dir = TempDir();
    Cfg c(vt_config_default_yaml, {"output.dir=" + dir, "memory.checkpointing=false", "memory.decode_frames=all"});
    ASSERT_TRUE(c.ok);
    vt_train_options o = vt_train_options_default();
    o.memory_limit = 1 << 20;  // 1 MiB
    vt_trainer *t = vt_trainer_create(&c.c, &o);
    EXPECT_EQ(t, nullptr);
    EXPECT_EQ(vt_error_code(), VT_ERR_OOM);
    std::string msg = vt_error_message();
    EXPECT_NE(msg.find("memory plan: this run needs about"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--memory-limit allows 1.0 MiB"), std::string::npos) << msg;
    EXPECT_NE(msg.find("memory.checkpointing: true"), std::string::npos) << msg;
    EXPECT_NE(msg.find("memory.decode_frames"), std::string::npos) << msg;
    EXPECT_NE(msg.find("model.height/width/frames"), std::string::npos) << msg;
    vt_trainer_free(t);
    // a generous limit passes
    o.memory_limit = (size_t)8 << 30;
    t = vt_trainer_create(&c.c, &o);
    EXPECT_NE(t, nullptr) << vt_error_message();
    vt_trainer_free(t);
    EXPECT_EQ(vt_memplan_parse_size("8G"), (size_t)8 << 30);
    EXPECT_EQ(vt_memplan_parse_size("512MiB"), (size_t)512 << 20);
    EXPECT_EQ(vt_memplan_parse_size("junk"), (size_t)0);
}

// The plan counts the UNet / VAE GEMM weights at the run's model.dtype (auto: fp32 on the CPU,
// bf16 on a GPU run) and activations, text tower and rewards in fp32 (no 16-bit activations yet).
TEST(Memplan, CountsTheDtypeTheRunUses) {
    struct {
        const char *dev, *dtype;
        int weight_bytes;
        const char *label;
    } cases[] = {{"device=cpu", "model.dtype=auto", 4, "(fp32 UNet / VAE weights, fp32 activations, fp32 saved"},
                 {"device=cuda", "model.dtype=auto", 2, "(16-bit UNet / VAE weights, fp32 activations, 16-bit saved"},
                 {"device=cuda", "model.dtype=fp32", 4, "(fp32 UNet / VAE weights, fp32 activations, 16-bit saved"},
                 {"device=cpu", "model.dtype=bf16", 2, "(16-bit UNet / VAE weights, fp32 activations, fp32 saved"},
                 {"device=cpu", "model.dtype=fp16", 2, "(16-bit UNet / VAE weights, fp32 activations, fp32 saved"}};
    for (const auto &k : cases) {
        SCOPED_TRACE(std::string(k.dev) + " " + k.dtype);
        Cfg c(vt_config_default_yaml, {k.dev, k.dtype});
        ASSERT_TRUE(c.ok) << vt_error_message();
        vt_memplan p;
        ASSERT_VT_OK(vt_memplan_compute(&c.c, &p));
        EXPECT_EQ(p.act_bytes, 4);
        EXPECT_EQ(p.weight_bytes, k.weight_bytes);
        EXPECT_DOUBLE_EQ(p.w_unet, k.weight_bytes * (double)p.n_unet);
        EXPECT_DOUBLE_EQ(p.w_vae, k.weight_bytes * (double)p.n_vae);
        EXPECT_DOUBLE_EQ(p.w_text, 4.0 * (double)p.n_text);
        char buf[2048];
        vt_memplan_format(&p, buf, sizeof buf);
        EXPECT_NE(std::string(buf).find(k.label), std::string::npos) << buf;
    }
    Cfg cpu(vt_config_default_yaml, {"device=cpu"}), gpu(vt_config_default_yaml, {"device=cuda"});
    EXPECT_EQ(vt_memplan_on_cuda(&cpu.c), 0);
    EXPECT_EQ(vt_memplan_on_cuda(&gpu.c), 1);
}

// A CLIP-family reward stays resident as its image tower alone, at model.dtype; its text tower
// counts at set-up only (freed once the prompts are cached). The ViT-H-14 manifest's split.
TEST(Memplan, RewardKeepsItsImageTowerAtTheModelDtype) {
    std::string m = SharedPath("manifests/openclip_vit_h_14.txt");
    for (const char *dt : {"fp32", "bf16"}) {
        SCOPED_TRACE(dt);
        Cfg c(vt_config_default_yaml, {"device=cpu", std::string("model.dtype=") + dt, "reward.0.name=hpsv21",
                                       "reward.0.checkpoint=" + m});
        ASSERT_TRUE(c.ok) << vt_error_message();
        vt_memplan p;
        ASSERT_VT_OK(vt_memplan_compute(&c.c, &p));
        const double bytes = std::string(dt) == "fp32" ? 4 : 2;
        EXPECT_EQ(p.n_reward, 986109441);
        EXPECT_DOUBLE_EQ(p.w_reward, bytes * 632076800.0);          // visual.* of ViT-H-14
        EXPECT_DOUBLE_EQ(p.w_reward_text, 4.0 * (986109441 - 632076800));
        EXPECT_GE(p.setup, p.resident + p.w_reward_text);
    }
}

// memory.saved_dtype: auto = bf16 on the GPU, fp32 on the CPU, as named otherwise; 16-bit halves
// exactly the segment inputs of the taped steps (the rest of the tape stays fp32), and a plan
// that does not fit suggests it.
TEST(Memplan, SavedDtypeHalvesTheSegmentInputs) {
    Cfg a(vt_config_default_yaml, {}), b32(vt_config_default_yaml, {"memory.saved_dtype=fp32"}),
        b16(vt_config_default_yaml, {"memory.saved_dtype=fp16"});
    EXPECT_EQ(vt_memplan_saved_dtype(&a.c, 1), VT_CFG_DTYPE_BF16);
    EXPECT_EQ(vt_memplan_saved_dtype(&a.c, 0), VT_CFG_DTYPE_FP32);
    EXPECT_EQ(vt_memplan_saved_dtype(&b32.c, 1), VT_CFG_DTYPE_FP32);
    EXPECT_EQ(vt_memplan_saved_dtype(&b16.c, 0), VT_CFG_DTYPE_FP16);
    Cfg f(vt_config_default_yaml, {"device=cpu"}), h(vt_config_default_yaml, {"device=cpu", "memory.saved_dtype=bf16"});
    ASSERT_TRUE(f.ok && h.ok) << vt_error_message();
    vt_memplan pf, ph;
    ASSERT_VT_OK(vt_memplan_compute(&f.c, &pf));
    ASSERT_VT_OK(vt_memplan_compute(&h.c, &ph));
    EXPECT_EQ(pf.saved_bytes, 4);
    EXPECT_EQ(ph.saved_bytes, 2);
    EXPECT_GT(ph.taped_seg_in, 0);
    EXPECT_DOUBLE_EQ(pf.taped_seg_in, 2 * ph.taped_seg_in);
    EXPECT_DOUBLE_EQ(pf.taped_ckpt - ph.taped_ckpt, ph.taped_seg_in);
    EXPECT_LT(ph.decode_ckpt, pf.decode_ckpt);
    EXPECT_DOUBLE_EQ(pf.taped_full, ph.taped_full);  // without checkpointing nothing is packed
    // too small a limit: the advice names memory.saved_dtype with the figure it would give
    ASSERT_EQ(vt_memplan_check(&f.c, 0, 1024, nullptr, nullptr), VT_ERR_OOM);
    std::string msg = vt_error_message();
    EXPECT_NE(msg.find("memory.saved_dtype: bf16"), std::string::npos) << msg;
    ASSERT_EQ(vt_memplan_check(&h.c, 0, 1024, nullptr, nullptr), VT_ERR_OOM);
    msg = vt_error_message();
    EXPECT_EQ(msg.find("memory.saved_dtype"), std::string::npos) << msg;
}

// model.dtype is honoured on both backends (never swapped); auto resolves per device and says so
// on the GPU.
TEST(Memplan, ModelDtypeResolvesPerDevice) {
    vt_cfg_dtype dt = VT_CFG_DTYPE_AUTO;
    const char *notice = nullptr;
    Cfg a(vt_config_default_yaml, {"device=cuda"});
    ASSERT_TRUE(a.ok);
    ASSERT_VT_OK(vt_memplan_run_dtype(&a.c, 1, &dt, &notice));
    EXPECT_EQ(dt, VT_CFG_DTYPE_BF16);
    ASSERT_NE(notice, nullptr);
    EXPECT_NE(std::string(notice).find("bf16"), std::string::npos) << notice;
    EXPECT_EQ(std::string(notice).find('\n'), std::string::npos) << "one line";
    ASSERT_VT_OK(vt_memplan_run_dtype(&a.c, 0, &dt, &notice));
    EXPECT_EQ(dt, VT_CFG_DTYPE_FP32);
    EXPECT_EQ(notice, nullptr);
    for (const char *want : {"fp32", "bf16", "fp16"}) {
        SCOPED_TRACE(want);
        Cfg g(vt_config_default_yaml, {std::string("model.dtype=") + want});
        ASSERT_TRUE(g.ok);
        for (int cuda : {0, 1}) {
            ASSERT_VT_OK(vt_memplan_run_dtype(&g.c, cuda, &dt, &notice));
            EXPECT_STREQ(vt_cfg_dtype_name(dt), want);
            EXPECT_EQ(notice, nullptr);
        }
    }
    EXPECT_EQ(vt_memplan_weight_dtype(VT_CFG_DTYPE_BF16), VT_BF16);
    EXPECT_EQ(vt_memplan_weight_dtype(VT_CFG_DTYPE_FP16), VT_F16);
    EXPECT_EQ(vt_memplan_weight_dtype(VT_CFG_DTYPE_FP32), VT_F32);
}

// On a GPU run the limit is the free memory of the run's GPU (cudaMemGetInfo); none is known
// without a GPU (the run is refused later, when the device is picked), and --memory-limit
// still refuses with the plan's advice.
TEST(Memplan, GpuRunUsesTheGpusFreeMemory) {
    Cfg g(vt_config_default_yaml, {"device=cuda"});
    ASSERT_TRUE(g.ok);
    char src[256];
    size_t m = vt_memplan_device_memory(&g.c, 0, src, sizeof src);
    if (vt_cuda_device_count() == 0) {
        EXPECT_EQ(m, (size_t)0);
        EXPECT_STREQ(src, "no GPU visible");
    } else {
        EXPECT_GT(m, (size_t)0);
        EXPECT_NE(std::string(src).find("cudaMemGetInfo"), std::string::npos) << src;
        std::printf("GPU 0: %.2f GiB free (%s)\n", m / 1073741824.0, src);
    }
    Cfg cpu(vt_config_default_yaml, {"device=cpu"});
    EXPECT_GT(vt_memplan_device_memory(&cpu.c, 0, src, sizeof src), (size_t)0);
    EXPECT_EQ(vt_memplan_check(&g.c, 0, (size_t)1 << 20, nullptr, nullptr), VT_ERR_OOM);
    std::string msg = vt_error_message();
    EXPECT_NE(msg.find("memory plan: this run needs about"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--memory-limit allows 1.0 MiB"), std::string::npos) << msg;
    EXPECT_NE(msg.find("model.height/width/frames"), std::string::npos) << msg;
}

TEST(Timing, TrainerFillsPhases) {
    std::string dir = TempDir();
    Cfg c(vt_config_default_yaml, {"output.dir=" + dir, "optim.steps=2", "output.checkpoint_every=0"});
    ASSERT_TRUE(c.ok);
    vt_train_options o = vt_train_options_default();
    vt_trainer *t = vt_trainer_create(&c.c, &o);
    ASSERT_VT(t);
    vt_step_timing tm{};
    vt_trainer_set_timing(t, &tm);
    ASSERT_VT_OK(vt_trainer_run(t));
    vt_trainer_free(t);
    EXPECT_EQ(tm.n_step_s, 2);
    EXPECT_EQ(tm.vader_steps, 2);
    EXPECT_EQ(tm.nograd_steps, 2 * 3);  // 4 DDIM steps, the last one taped
    EXPECT_EQ(tm.taped_steps, 2);
    EXPECT_GT(tm.nograd_s, 0);
    EXPECT_GT(tm.taped_fwd_s, 0);
    EXPECT_GT(tm.decode_s, 0);
    EXPECT_GT(tm.reward_s, 0);
    EXPECT_GT(tm.backward_s, 0);
    EXPECT_GT(tm.optimizer_s, 0);
    double phases = tm.nograd_s + tm.taped_fwd_s + tm.decode_s + tm.reward_s + tm.backward_s + tm.optimizer_s;
    EXPECT_LE(phases, tm.step_s[0] + tm.step_s[1] + 1e-6);
}

}  // namespace
