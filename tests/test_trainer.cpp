// test_trainer.cpp — the training loop on the tiny random preset at 32x32 pixels, 2 frames:
// resume equality (4 steps = 2 + resume 2, identical LoRA bytes and curves), same-seed
// determinism, the colour reward rising, the output files (rewards.h5 through the HDF5 C API,
// the LoRA through our safetensors reader), NaN skipping and the input errors raised before
// any compute.
#include <sys/stat.h>
#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include "train_testutil.h"
#include "core/safetensors.h"

namespace {

std::string Slurp(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

struct Cfg : TestConfig {
    explicit Cfg(const std::string &dir, const std::vector<std::string> &sets = {})
        : TestConfig(Concat({"model.height=32", "model.width=32", "model.frames=2", "memory.decode_frames=1",
                             "optim.steps=4", "output.checkpoint_every=2", "output.dir=" + dir},
                            sets)) {}
};

vt_err Train(const vt_config *c, const char *resume = nullptr, int stop_at = 0, vt_trainer_stats *st = nullptr) {
    return RunTrainer(c, resume, stop_at, st, 2);
}

std::vector<double> ReadColumn(const std::string &h5, const std::string &col) { return H5Column(h5, "/train/" + col); }

TEST(Trainer, ResumeReproducesTheUninterruptedRunAndSeedsAreDeterministic) {
    std::string a = TempDir() + "/full", b = TempDir() + "/resumed", c2 = TempDir() + "/again";
    Cfg ca(a), cb(b), cc(c2);
    ASSERT_TRUE(ca.ok && cb.ok && cc.ok) << vt_error_message();
    ASSERT_VT_OK(Train(&ca.c));
    ASSERT_VT_OK(Train(&cb.c, nullptr, 2));
    struct stat st;
    ASSERT_EQ(stat((b + "/state-000002.safetensors").c_str(), &st), 0);
    ASSERT_NE(stat((b + "/lora-000004.safetensors").c_str(), &st), 0);
    vt_trainer_stats s{};
    ASSERT_VT_OK(Train(&cb.c, "auto", 0, &s));
    EXPECT_EQ(s.step, 4);
    std::string la = Slurp(a + "/lora-000004.safetensors"), lb = Slurp(b + "/lora-000004.safetensors");
    ASSERT_FALSE(la.empty());
    EXPECT_TRUE(la == lb) << "LoRA after 2 + resume 2 differs from 4 uninterrupted steps";
    EXPECT_TRUE(Slurp(a + "/state-000004.safetensors") == Slurp(b + "/state-000004.safetensors"));
    for (const char *col : {"step", "reward_mean", "loss", "grad_norm", "lr", "reward/color_mean"}) {
        auto va = ReadColumn(a + "/rewards.h5", col), vb = ReadColumn(b + "/rewards.h5", col);
        ASSERT_EQ(va.size(), 4u) << col;
        EXPECT_EQ(va, vb) << col;
    }
    // same seed, fresh run: the same curve and bytes
    ASSERT_VT_OK(Train(&cc.c));
    EXPECT_TRUE(Slurp(c2 + "/lora-000004.safetensors") == la);
    EXPECT_EQ(ReadColumn(c2 + "/rewards.h5", "reward_mean"), ReadColumn(a + "/rewards.h5", "reward_mean"));
    // another seed: another curve
    std::string d = TempDir() + "/seed2";
    Cfg cd(d, {"seed=2", "optim.steps=1"});
    ASSERT_VT_OK(Train(&cd.c));
    EXPECT_NE(ReadColumn(d + "/rewards.h5", "reward_mean")[0], ReadColumn(a + "/rewards.h5", "reward_mean")[0]);
}

TEST(Trainer, OutputFilesAreReadable) {
    std::string dir = TempDir() + "/files";
    Cfg c(dir, {"optim.steps=3", "optim.accumulation=2", "optim.grad_clip=1.0", "optim.schedule=cosine",
                "optim.warmup_steps=1", "output.checkpoint_every=0"});
    ASSERT_TRUE(c.ok) << vt_error_message();
    ASSERT_VT_OK(Train(&c.c));
    const char **cols = nullptr;
    int n = vt_trainer_train_columns(&c.c, &cols);
    ASSERT_GT(n, 9);
    for (int i = 0; i < n; i++) {
        auto v = ReadColumn(dir + "/rewards.h5", cols[i]);
        ASSERT_EQ(v.size(), 3u) << cols[i];
        for (double x : v) EXPECT_TRUE(std::isfinite(x)) << cols[i];
    }
    free(cols);
    auto sd = ReadColumn(dir + "/rewards.h5", "reward_std");
    EXPECT_GT(sd[0], 0.0);  // 2 samples per step
    auto lr = ReadColumn(dir + "/rewards.h5", "lr");
    EXPECT_GT(lr[1], lr[2]);  // cosine decay after one warmup step
    vt_safetensors *f = vt_st_open((dir + "/lora-000003.safetensors").c_str());
    ASSERT_VT(f);
    EXPECT_GT(f->n, 0);
    for (int i = 0; i < f->n; i++) {
        std::string name = f->entries[i].name;
        EXPECT_EQ(name.rfind("base_model.model.model.diffusion_model.", 0), 0u) << name;
        bool a = name.find(".lora_A.weight") != std::string::npos, b = name.find(".lora_B.weight") != std::string::npos;
        EXPECT_TRUE(a || b) << name;
        EXPECT_EQ(f->entries[i].ndim, 2);
        EXPECT_EQ(a ? f->entries[i].shape[0] : f->entries[i].shape[1], 4) << name;  // rank
    }
    ASSERT_NE(vt_st_metadata(f, "lora_rank"), nullptr);
    EXPECT_STREQ(vt_st_metadata(f, "lora_rank"), "4");
    EXPECT_STREQ(vt_st_metadata(f, "target_modules"), "to_q,to_k,to_v");
    vt_st_close(f);
}

TEST(Trainer, ColourRewardRises) {
    std::string dir = TempDir() + "/rise";
    Cfg c(dir, {"optim.steps=24", "output.checkpoint_every=0", "model.frames=1", "memory.decode_frames=0"});
    ASSERT_TRUE(c.ok) << vt_error_message();
    vt_trainer_stats s{};
    ASSERT_VT_OK(Train(&c.c, nullptr, 0, &s));
    auto r = ReadColumn(dir + "/rewards.h5", "reward_mean");
    ASSERT_EQ(r.size(), 24u);
    double first = 0, last = 0;
    for (int i = 0; i < 6; i++) first += r[i] / 6, last += r[18 + i] / 6;
    EXPECT_GT(last, first + 0.02) << "reward " << first << " -> " << last;
}

// model.dtype bf16 on the CPU (16-bit UNet / VAE weights, f32 everything else): the same run as
// fp32 within bf16's precision, and not bit-identical to it (the weights really are 16-bit).
TEST(Trainer, Bf16WeightsTrainLikeFp32) {
    std::vector<double> r[2];
    const char *dtypes[2] = {"fp32", "bf16"};
    for (int k = 0; k < 2; k++) {
        std::string dir = TempDir() + "/dtype_" + dtypes[k];
        Cfg c(dir, {"optim.steps=3", "output.checkpoint_every=0", "model.frames=1", "memory.decode_frames=0",
                    std::string("model.dtype=") + dtypes[k]});
        ASSERT_TRUE(c.ok) << vt_error_message();
        vt_trainer_stats s{};
        ASSERT_VT_OK(Train(&c.c, nullptr, 0, &s));
        r[k] = ReadColumn(dir + "/rewards.h5", "reward_mean");
        ASSERT_EQ(r[k].size(), 3u);
    }
    EXPECT_NE(r[0][0], r[1][0]) << "bf16 weights gave the fp32 reward bit for bit";
    for (int i = 0; i < 3; i++) {
        EXPECT_TRUE(std::isfinite(r[1][i]));
        EXPECT_NEAR(r[1][i], r[0][i], 0.02 * std::max(1.0, std::fabs(r[0][i]))) << "step " << i;
    }
}

// memory.saved_dtype bf16: the forward is the fp32 one (step 0's reward bit for bit), the
// gradient is taken at the rounded segment inputs (a different, close grad norm), and training
// follows the fp32 run.
TEST(Trainer, Bf16SavedSegmentInputsTrainLikeFp32) {
    std::vector<double> r[2], g[2];
    const char *dtypes[2] = {"fp32", "bf16"};
    for (int k = 0; k < 2; k++) {
        std::string dir = TempDir() + "/saved_" + dtypes[k];
        // 128 x 128: the segment inputs are above the packing threshold (4096 elements)
        Cfg c(dir, {"optim.steps=3", "output.checkpoint_every=0", "model.frames=1", "memory.decode_frames=0",
                    "model.height=128", "model.width=128", std::string("memory.saved_dtype=") + dtypes[k]});
        ASSERT_TRUE(c.ok) << vt_error_message();
        vt_trainer_stats s{};
        ASSERT_VT_OK(Train(&c.c, nullptr, 0, &s));
        r[k] = ReadColumn(dir + "/rewards.h5", "reward_mean");
        g[k] = ReadColumn(dir + "/rewards.h5", "grad_norm");
        ASSERT_EQ(r[k].size(), 3u);
        ASSERT_EQ(g[k].size(), 3u);
    }
    EXPECT_EQ(r[0][0], r[1][0]) << "the forward must not see the packing";
    EXPECT_NE(g[0][0], g[1][0]) << "bf16 segment inputs gave the fp32 gradient bit for bit";
    EXPECT_NEAR(g[1][0], g[0][0], 0.05 * g[0][0]);
    std::printf("grad norm step 0: fp32 %.6g, bf16 saved %.6g (rel %.2e)\n", g[0][0], g[1][0],
                std::fabs(g[1][0] - g[0][0]) / g[0][0]);
    for (int i = 1; i < 3; i++) {
        EXPECT_TRUE(std::isfinite(r[1][i]));
        EXPECT_NEAR(r[1][i], r[0][i], 0.02 * std::max(1.0, std::fabs(r[0][i]))) << "step " << i;
    }
}

TEST(Trainer, NonFiniteStepsAreSkippedThenStop) {
    std::string dir = TempDir() + "/nan";
    Cfg c(dir, {"sampler.guidance_scale=1e38", "optim.steps=5"});
    ASSERT_TRUE(c.ok) << vt_error_message();
    vt_trainer_stats s{};
    EXPECT_EQ(Train(&c.c, nullptr, 0, &s), VT_ERR_NUMERIC);
    EXPECT_NE(std::string(vt_error_message()).find("in a row"), std::string::npos) << vt_error_message();
    EXPECT_EQ(s.skipped, 2);
    auto sk = ReadColumn(dir + "/rewards.h5", "skipped");
    ASSERT_EQ(sk.size(), 2u);
    EXPECT_EQ(sk[1], 2.0);
}

void ExpectCreateError(std::vector<std::string> sets, const std::string &needle) {
    Cfg c(TempDir() + "/bad", sets);
    ASSERT_TRUE(c.ok) << vt_error_message();
    vt_train_options o = vt_train_options_default();
    vt_trainer *t = vt_trainer_create(&c.c, &o);
    EXPECT_EQ(t, nullptr);
    vt_trainer_free(t);
    EXPECT_NE(std::string(vt_error_message()).find(needle), std::string::npos) << vt_error_message();
}

TEST(Trainer, BadInputFailsBeforeCompute) {
    ExpectCreateError({"model.unet=/nonexistent/unet.safetensors"}, "model.unet: /nonexistent/unet.safetensors");
    ExpectCreateError({"reward.0.name=hps", "reward.0.checkpoint=/nonexistent/hps.safetensors"}, "/nonexistent/hps.safetensors");
    ExpectCreateError({"model.frames=24"}, "model.frames: 24");
    ExpectCreateError({"output.dir=/dev/null/out"}, "output.dir");
    ExpectCreateError({"data.prompts=null", "data.prompt_file=/nonexistent/prompts.txt"}, "data.prompt_file");
    ExpectCreateError({"lora.targets=[to_q, to_x]"}, "to_x");
    // K > steps and unknown reward names are refused by the config itself
    Cfg c(TempDir() + "/bad2");
    ASSERT_TRUE(c.ok);
    EXPECT_NE(vt_config_set(&c.c, "reward.0.name=nosuchreward"), VT_OK);
    ASSERT_VT_OK(vt_config_set(&c.c, "sampler.backprop_steps=5"));
    vt_train_options o = vt_train_options_default();
    EXPECT_EQ(vt_trainer_create(&c.c, &o), nullptr);
    EXPECT_NE(std::string(vt_error_message()).find("sampler.backprop_steps"), std::string::npos) << vt_error_message();
}

}  // namespace
