// test_sample.cpp — vader-sample on the tiny preset (32x32 pixels, 3 frames): the files it
// writes for 2 prompts, one PNG decoded and compared pixel for pixel with the frames
// computed in-process with the same seed, identical files for the same seed, a LoRA from a
// tiny training run changing the videos, and LoRA files of the wrong rank / targets / shapes
// rejected with the key named.
#include <sys/stat.h>
#include <cstdlib>
#include <string>
#include <vector>
#include "train_testutil.h"
#include "media_decode.h"
#include "core/models/unet3d.h"
#include "core/safetensors.h"
#include "train/config.h"
#include "train/lora.h"
#include "train/sample.h"
#include "train/tiny_models.h"
#include "train/trainer.h"

#ifndef VADER_SAMPLE_BIN
#error "VADER_SAMPLE_BIN (the vader-sample program) must be defined by the build"
#endif

namespace {

const std::vector<std::string> kSets = {"model.height=32", "model.width=32", "model.frames=3", "sampler.steps=4"};
const char *kPrompts[2] = {"a red fox running through snow", "a sailboat at sunset"};

struct Cfg : TestConfig {
    explicit Cfg(const std::vector<std::string> &extra = {}) : TestConfig(Concat(kSets, extra)) {}
};

bool Exists(const std::string &p) {
    struct stat st;
    return stat(p.c_str(), &st) == 0;
}

// Runs vader-sample on the tiny preset; returns its exit status.
int Sample(const std::string &out, const std::string &extra = "", std::string *log = nullptr) {
    std::string cmd = std::string("'") + VADER_SAMPLE_BIN + "'";
    for (auto &s : kSets) cmd += " --set " + s;
    cmd += " --seed 7 --out '" + out + "' --prompt '" + kPrompts[0] + "' --prompt '" + kPrompts[1] + "' " + extra;
    std::string logf = out + ".log";
    cmd += " > '" + logf + "' 2>&1";
    int rc = system(cmd.c_str());
    if (log) {
        std::vector<uint8_t> l = media::ReadFile(logf);
        log->assign(l.begin(), l.end());
    }
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::vector<std::string> Files() {
    std::vector<std::string> f;
    for (int p = 0; p < 2; p++) {
        for (int i = 0; i < 3; i++) f.push_back(std::to_string(p) + "/frame-00" + std::to_string(i) + ".png");
        f.push_back(std::to_string(p) + "/video.gif");
    }
    return f;
}

TEST(Sample, WritesFramesEqualToInProcessSamplingAndIsDeterministic) {
    std::string a = TempDir() + "/a", b = TempDir() + "/b", c = TempDir() + "/c";
    std::string log;
    ASSERT_EQ(Sample(a, "", &log), 0) << log;
    for (auto &f : Files()) EXPECT_TRUE(Exists(a + "/" + f)) << f << "\n" << log;
    if (!vt_have_ffmpeg()) EXPECT_NE(log.find("ffmpeg is not on PATH"), std::string::npos) << log;
    else EXPECT_TRUE(Exists(a + "/0/video.mp4")) << log;

    // the frames in-process, same seed: the PNG is exactly their RGB8 conversion
    Cfg cfg;
    ASSERT_TRUE(cfg.ok) << vt_error_message();
    vt_sampler *s = vt_sampler_create(&cfg.c, nullptr);
    ASSERT_NE(s, nullptr) << vt_error_message();
    vt_tensor *frames = vt_sampler_sample(s, kPrompts[1], vt_sample_prompt_seed(7, 1));
    ASSERT_NE(frames, nullptr) << vt_error_message();
    ASSERT_EQ(frames->ndim, 5);
    EXPECT_EQ(frames->shape[2], 3);
    media::Png png;
    ASSERT_EQ(media::DecodePng(media::ReadFile(a + "/1/frame-002.png"), &png), "");
    ASSERT_EQ(png.w, 32);
    ASSERT_EQ(png.h, 32);
    const float *x = vt_f32(frames);
    int HW = 32 * 32, mismatches = 0, distinct = 0;
    for (int c2 = 0; c2 < 3; c2++)
        for (int i = 0; i < HW; i++) {
            float v = x[((size_t)c2 * 3 + 2) * HW + i];
            float u = (v + 1.0f) / 2.0f * 255.0f + 0.5f;
            u = u < 0.0f ? 0.0f : u > 255.0f ? 255.0f : u;
            uint8_t want = (uint8_t)u;
            mismatches += png.rgb[(size_t)i * 3 + c2] != want;
            distinct += png.rgb[(size_t)i * 3 + c2] != png.rgb[c2];
        }
    EXPECT_EQ(mismatches, 0);
    EXPECT_GT(distinct, 0);  // not a flat image
    vt_release(frames);
    vt_sampler_free(s);

    // same seed -> identical files; another seed -> other frames
    ASSERT_EQ(Sample(b), 0);
    for (auto &f : Files()) EXPECT_EQ(media::ReadFile(a + "/" + f), media::ReadFile(b + "/" + f)) << f;
    ASSERT_EQ(Sample(c, "--seed 8"), 0);
    EXPECT_NE(media::ReadFile(a + "/0/frame-000.png"), media::ReadFile(c + "/0/frame-000.png"));
}

TEST(Sample, LoraChangesTheVideosAndMismatchedLorasAreRejected) {
    std::string dir = TempDir(), run = dir + "/run";
    // a tiny training run (2 steps) gives a LoRA
    {
        Cfg cfg({"model.frames=2", "memory.decode_frames=1", "optim.steps=2", "optim.lr=0.5", "output.dir=" + run});
        ASSERT_TRUE(cfg.ok) << vt_error_message();
        ASSERT_VT_OK(RunTrainer(&cfg.c));
    }
    std::string lora = run + "/lora-000002.safetensors";
    ASSERT_TRUE(Exists(lora));
    std::string base = dir + "/base", tuned = dir + "/tuned", log;
    ASSERT_EQ(Sample(base), 0);
    ASSERT_EQ(Sample(tuned, "--lora '" + lora + "'", &log), 0) << log;
    EXPECT_NE(log.find(lora), std::string::npos) << log;
    for (int p = 0; p < 2; p++)
        EXPECT_NE(media::ReadFile(base + "/" + std::to_string(p) + "/frame-002.png"),
                  media::ReadFile(tuned + "/" + std::to_string(p) + "/frame-002.png"));

    // wrong rank (metadata), wrong targets (a key the adapters lack): refused, key named
    ASSERT_NE(Sample(dir + "/r8", "--lora '" + lora + "' --set lora.rank=8", &log), 0);
    EXPECT_NE(log.find("lora_rank"), std::string::npos) << log;
    ASSERT_NE(Sample(dir + "/qk", "--lora '" + lora + "' --set 'lora.targets=[to_q, to_k]'", &log), 0);
    EXPECT_NE(log.find("unexpected key"), std::string::npos) << log;
    EXPECT_NE(log.find("to_v.lora_"), std::string::npos) << log;

    // wrong shapes without metadata: a rank-2 state dict loaded as rank 4
    {
        vt_unet3d_config uc = vt_tiny_unet_config();
        vt_unet3d *u = vt_unet3d_build_random(&uc, 5);
        ASSERT_NE(u, nullptr) << vt_error_message();
        vt_unet3d_lora_config lc = {2, 8.0f, VT_LORA_TO_Q | VT_LORA_TO_K | VT_LORA_TO_V, 3};
        ASSERT_VT_OK(vt_unet3d_add_lora(u, &lc));
        int n = vt_unet3d_n_lora(u);
        std::vector<const char *> names(n);
        std::vector<vt_tensor *> ts(n);
        for (int i = 0; i < n; i++) ts[i] = vt_unet3d_lora_param(u, i, &names[i]);
        std::string bad = dir + "/rank2.safetensors";
        ASSERT_VT_OK(vt_st_write(bad.c_str(), n, names.data(), ts.data(), 0, nullptr, nullptr));
        vt_unet3d_free(u);
        Cfg cfg;
        ASSERT_TRUE(cfg.ok);
        vt_sampler *s = vt_sampler_create(&cfg.c, bad.c_str());
        EXPECT_EQ(s, nullptr);
        std::string msg = vt_error_message();
        EXPECT_NE(msg.find(".lora_A.weight"), std::string::npos) << msg;
        vt_sampler_free(s);
    }
}

}  // namespace
