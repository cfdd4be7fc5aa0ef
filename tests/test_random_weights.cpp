// model.random_weights: absent checkpoints become the shared manifests' full-size shapes with
// random values (train/models.h vt_vc2_random_weight_fallback), and a reward checkpoint that
// is a manifest (.txt) builds the module with random values (rewards/reward.c).
#include <gtest/gtest.h>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include "core/models/fixture_checks.h"
#include "core/weights.h"
#include "rewards/reward.h"
#include "testutil.h"
#include "train/models.h"
#include "train_testutil.h"

namespace {

const char *kHpsYaml =
    "model: {random_weights: true, unet: /nonexistent/unet.safetensors, height: 64, width: 64, frames: 2}\n"
    "reward:\n  - {name: hpsv21, weight: 1.0, checkpoint: /nonexistent/hpsv2.1.safetensors}\n"
    "  - {name: color, weight: 0.5}\n"
    "data: {prompts: [a cat]}\n"
    "device: cpu\n";

std::string Shared() {
    const char *s = getenv("VADER_SHARED");
    return s && *s ? s : VADER_SHARED_DIR;
}

// The log lines of a call, through a temporary FILE.
struct Log {
    FILE *f = tmpfile();
    ~Log() {
        if (f) fclose(f);
    }
    std::string Text() {
        std::string s;
        fflush(f);
        rewind(f);
        char buf[512];
        while (fgets(buf, sizeof buf, f)) s += buf;
        return s;
    }
};

TEST(RandomWeights, AbsentCheckpointsBecomeManifests) {
    TestConfig c({"model.vae=" + Shared() + "/fixtures/vc2_vae_decoder_tiny.weights.safetensors"}, kHpsYaml);
    ASSERT_TRUE(c.ok) << vt_error_message();
    Log log;
    ASSERT_VT_OK(vt_vc2_random_weight_fallback(&c.c, log.f));
    EXPECT_EQ(std::string(c.c.model.unet), Shared() + "/manifests/videocrafter2_unet.txt");
    // a file that is there is used as it is; an unset path keeps the tiny preset
    EXPECT_EQ(std::string(c.c.model.vae), Shared() + "/fixtures/vc2_vae_decoder_tiny.weights.safetensors");
    EXPECT_EQ(c.c.model.text, nullptr);
    EXPECT_EQ(std::string(c.c.reward.modules[0].checkpoint), Shared() + "/manifests/openclip_vit_h_14.txt");
    EXPECT_EQ(c.c.reward.modules[1].checkpoint, nullptr);  // color has no weights
    std::string t = log.Text();
    EXPECT_NE(t.find("model.unet: /nonexistent/unet.safetensors absent"), std::string::npos) << t;
    EXPECT_NE(t.find("reward.0.checkpoint: /nonexistent/hpsv2.1.safetensors absent"), std::string::npos) << t;
    EXPECT_EQ(t.find("model.vae"), std::string::npos) << t;
}

TEST(RandomWeights, NothingChangesWithoutTheSwitch) {
    TestConfig c({"model.random_weights=false"}, kHpsYaml);
    ASSERT_TRUE(c.ok) << vt_error_message();
    ASSERT_VT_OK(vt_vc2_random_weight_fallback(&c.c, nullptr));
    EXPECT_EQ(std::string(c.c.model.unet), "/nonexistent/unet.safetensors");
    EXPECT_EQ(std::string(c.c.reward.modules[0].checkpoint), "/nonexistent/hpsv2.1.safetensors");
}

TEST(RandomWeights, MissingManifestIsNamed) {
    TestConfig c({}, kHpsYaml);
    ASSERT_TRUE(c.ok) << vt_error_message();
    std::string old = Shared(), empty = TempDir();
    setenv("VADER_SHARED", empty.c_str(), 1);
    vt_err e = vt_vc2_random_weight_fallback(&c.c, nullptr);
    std::string msg = vt_error_message();
    setenv("VADER_SHARED", old.c_str(), 1);
    EXPECT_EQ(e, VT_ERR_IO);
    EXPECT_NE(msg.find("model.unet"), std::string::npos) << msg;
    EXPECT_NE(msg.find(empty + "/manifests/videocrafter2_unet.txt"), std::string::npos) << msg;
}

// A reward whose checkpoint is a manifest builds with random values of those shapes: a
// manifest of the tiny HPS fixture's keys gives a working module with finite scores.
TEST(RandomWeights, RewardFromManifest) {
    std::string here = __FILE__;
    vt_fixture *fx = vt_fixture_open((here.substr(0, here.find_last_of('/')) + "/fixtures/hps_reward_tiny").c_str());
    ASSERT_VT(fx);
    const vt_weights *w = fx->weights;
    std::string manifest = TempDir() + "/hps_tiny.txt";
    FILE *f = fopen(manifest.c_str(), "w");
    ASSERT_NE(f, nullptr);
    fprintf(f, "# the tiny HPS fixture's shapes\n");
    for (int i = 0; i < vt_weights_n_keys(w); i++) {
        const char *k = vt_weights_key(w, i);
        int nd = 0;
        int64_t s[VT_MAX_DIMS];
        ASSERT_TRUE(vt_weights_shape(w, k, &nd, s));
        fprintf(f, "%s\t[", k);
        for (int d = 0; d < nd; d++) fprintf(f, d ? ", %lld" : "%lld", (long long)s[d]);
        fprintf(f, "]\tfloat32\n");
    }
    fclose(f);
    // the tiny towers' head layout is not ViT-H-14's: the fixture's config says it
    vt_reward_options o = {manifest.c_str(), nullptr, vt_fixture_json(fx, "config"), nullptr, 0};
    vt_reward *r = vt_reward_create("hps", &o);
    vt_fixture_free(fx);
    ASSERT_VT(r);
    Releaser rel;
    vt_tensor *x = rel(RandU({2, 3, 32, 32}, 3, -1, 1));
    const char *prompts[2] = {"a cat", "a dog"};
    vt_tensor *rw = nullptr, *l = nullptr;
    ASSERT_VT_OK(vt_reward_forward(r, x, prompts, &rw, &l));
    rel(rw), rel(l);
    ASSERT_EQ(rw->numel, 2);
    for (int i = 0; i < 2; i++) EXPECT_TRUE(std::isfinite(vt_f32(rw)[i]));
    EXPECT_TRUE(std::isfinite(vt_f32(l)[0]));
    vt_reward_free(r);
}

}  // namespace
