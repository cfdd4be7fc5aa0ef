// The action reward (rewards/action_reward.c) and its VideoMAE (core/models/videomae.h): the
// full-size VideoMAE-B / Kinetics-400 layout from its manifest (every key used exactly once),
// class names (Kinetics-400 list, close matches on a typo, ids), frame counts (resampled or
// rejected, never mis-indexed), configs/action.yaml, and a 2-step CPU training run with a tiny
// random VideoMAE. The numerical checks against transformers are the fixtures action_tiny and
// action_vader_tiny (vader-fixture, tests/CMakeLists.txt).
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include "core/models/videomae.h"
#include "core/ops.h"
#include "rewards/reward.h"
#include "testutil.h"
#include "train/config.h"
#include "train/trainer.h"

namespace {

std::string RepoPath(const std::string &rel) {
    std::string f = __FILE__;
    return f.substr(0, f.find_last_of('/')) + "/" + rel;
}

// A tiny random VideoMAE with a 400-way head (the Kinetics-400 names apply), one layer, W 16,
// tubelets 2 x 8 x 8, in the released checkpoints' q_bias / v_bias layout.
std::string TinyKineticsManifest() {
    std::string path = TempDir() + "/videomae_tiny_k400.txt";
    std::ofstream f(path);
    const char *l = "videomae.encoder.layer.0.";
    f << "videomae.embeddings.patch_embeddings.projection.weight\t[16, 3, 2, 8, 8]\tfloat32\n"
      << "videomae.embeddings.patch_embeddings.projection.bias\t[16]\tfloat32\n";
    for (const char *k : {"attention.attention.query.weight", "attention.attention.key.weight",
                          "attention.attention.value.weight", "attention.output.dense.weight"})
        f << l << k << "\t[16, 16]\tfloat32\n";
    for (const char *k : {"attention.attention.q_bias", "attention.attention.v_bias", "attention.output.dense.bias",
                          "output.dense.bias", "layernorm_before.weight", "layernorm_before.bias",
                          "layernorm_after.weight", "layernorm_after.bias"})
        f << l << k << "\t[16]\tfloat32\n";
    f << l << "intermediate.dense.weight\t[32, 16]\tfloat32\n" << l << "intermediate.dense.bias\t[32]\tfloat32\n"
      << l << "output.dense.weight\t[16, 32]\tfloat32\n"
      << "fc_norm.weight\t[16]\tfloat32\nfc_norm.bias\t[16]\tfloat32\n"
      << "classifier.weight\t[400, 16]\tfloat32\nclassifier.bias\t[400]\tfloat32\n";
    return path;
}

vt_reward *TinyAction(vt_weights *w, std::vector<vt_reward_kv> kv) {
    kv.push_back({"image_size", "16"});
    kv.push_back({"num_frames", "4"});
    vt_reward_options o = {nullptr, nullptr, nullptr, kv.data(), (int)kv.size()};
    return vt_reward_create_from_weights("action", w, &o);
}

vt_tensor *Frames(int64_t b, int64_t t, int64_t h, int64_t w) {
    std::vector<float> v((size_t)(b * 3 * t * h * w));
    for (size_t i = 0; i < v.size(); i++) v[i] = (float)std::sin(0.37 * (double)i) * 0.9f;
    const int64_t shape[5] = {b, 3, t, h, w};
    return vt_from_f32(5, shape, v.data());
}

}  // namespace

TEST(ActionReward, VideoMAEBaseKineticsBuildsFromManifest) {
    vt_weights *w = vt_weights_from_manifest(RepoPath("manifests/videomae_base_kinetics.txt").c_str(), 0, 0);
    ASSERT_VT(w);
    vt_videomae *m = vt_videomae_build(w, "", nullptr);
    ASSERT_VT(m);
    EXPECT_EQ(m->cfg.hidden_size, 768);
    EXPECT_EQ(m->cfg.num_attention_heads, 12);
    EXPECT_EQ(m->cfg.num_hidden_layers, 12);
    EXPECT_EQ(m->cfg.intermediate_size, 3072);
    EXPECT_EQ(m->cfg.num_labels, 400);
    EXPECT_EQ(m->cfg.tubelet_size, 2);
    EXPECT_EQ(m->cfg.patch_size, 16);
    EXPECT_EQ(m->cfg.image_size, 224);
    EXPECT_EQ(m->cfg.num_frames, 16);
    EXPECT_EQ(m->mean_pooling, 1);
    EXPECT_EQ(m->n_params, vt_weights_count_params(w, ""));
    EXPECT_EQ(vt_weights_finish(w, ""), VT_OK) << vt_error_message();
    vt_videomae_free(m);
    vt_mem_trim(VT_CPU);
    vt_weights_free(w);
}

// The fixed table: row pos, column j = sin / cos(pos / 10000^(2 (j/2) / d)).
TEST(ActionReward, SinusoidTable) {
    vt_tensor *t = vt_videomae_sinusoid_table(1568, 768);
    ASSERT_VT(t);
    const float *p = vt_f32(t);
    for (int64_t pos : {0, 1, 777, 1567})
        for (int64_t j : {0, 1, 2, 3, 500, 767}) {
            double a = (double)pos / std::pow(10000.0, (double)(2 * (j / 2)) / 768.0);
            EXPECT_FLOAT_EQ(p[pos * 768 + j], (float)(j % 2 ? std::cos(a) : std::sin(a))) << pos << " " << j;
        }
    vt_release(t);
}

TEST(ActionReward, ClassNamesIdsAndCloseMatches) {
    vt_weights *w = vt_weights_from_manifest(TinyKineticsManifest().c_str(), 1, 7);
    ASSERT_VT(w);
    for (const char *ok : {"playing guitar", "Playing_Guitar", "zumba", "0", "399"}) {
        vt_reward *r = TinyAction(w, {{"class", ok}});
        EXPECT_NE(r, nullptr) << ok << ": " << vt_error_message();
        vt_reward_free(r);
    }
    EXPECT_EQ(TinyAction(w, {{"class", "playin guitar"}}), nullptr);
    std::string m = vt_error_message();
    EXPECT_NE(m.find("\"playing guitar\""), std::string::npos) << m;
    EXPECT_NE(m.find("playin guitar"), std::string::npos) << m;
    EXPECT_EQ(TinyAction(w, {{"class", "400"}}), nullptr);
    EXPECT_NE(std::string(vt_error_message()).find("0..399"), std::string::npos) << vt_error_message();
    EXPECT_EQ(TinyAction(w, {}), nullptr);
    EXPECT_NE(std::string(vt_error_message()).find("class"), std::string::npos) << vt_error_message();
    EXPECT_EQ(TinyAction(w, {{"class", "yoga"}, {"frames", "all"}}), nullptr);
    EXPECT_NE(std::string(vt_error_message()).find("resample"), std::string::npos) << vt_error_message();
    EXPECT_EQ(TinyAction(w, {{"class", "yoga"}, {"num_frames", "x"}}), nullptr);
    vt_weights_free(w);
}

// Any frame count works with frames: resample (3 and 7 frames -> 4); native takes only
// multiples of the tubelet size; the gradient reaches every resampled frame.
TEST(ActionReward, FrameCountsAreResampledOrRejected) {
    vt_weights *w = vt_weights_from_manifest(TinyKineticsManifest().c_str(), 1, 7);
    ASSERT_VT(w);
    vt_reward *r = TinyAction(w, {{"class", "yoga"}});
    ASSERT_VT(r);
    for (int64_t T : {1, 3, 4, 7}) {
        vt_tensor *f = Frames(2, T, 20, 24);
        vt_requires_grad(f, 1);
        vt_tape *tape = vt_tape_begin();
        vt_tensor *rw = nullptr, *loss = nullptr;
        ASSERT_VT_OK(vt_reward_forward(r, f, nullptr, &rw, &loss));
        vt_tape_end(tape);
        ASSERT_EQ(rw->ndim, 1);
        EXPECT_EQ(rw->shape[0], 2);
        EXPECT_LE(vt_f32(rw)[0], 0.0f);  // a log-probability
        EXPECT_NEAR(vt_f32(loss)[0], -(vt_f32(rw)[0] + vt_f32(rw)[1]) / 2, 1e-5);
        ASSERT_VT_OK(vt_backward(tape, loss, nullptr));
        ASSERT_NE(f->grad, nullptr);
        // every frame of a clip of <= 4 frames is chosen at least once
        const float *g = vt_f32(f->grad);
        int64_t hw = 20 * 24;
        for (int64_t t = 0; t < T && T <= 4; t++) {
            double s = 0;
            for (int64_t i = 0; i < hw; i++) s += std::fabs(g[t * hw + i]);
            EXPECT_GT(s, 0.0) << "T " << T << " frame " << t;
        }
        vt_tape_free(tape);
        vt_release(rw);
        vt_release(loss);
        vt_release(f);
    }
    vt_reward_free(r);
    vt_reward *nat = TinyAction(w, {{"class", "yoga"}, {"frames", "native"}, {"resize", "square"}, {"reward", "prob"}});
    ASSERT_VT(nat);
    vt_tensor *odd = Frames(1, 3, 16, 16), *even = Frames(1, 6, 16, 16);
    vt_tensor *rw = nullptr, *loss = nullptr;
    EXPECT_NE(vt_reward_forward(nat, odd, nullptr, &rw, &loss), VT_OK);
    EXPECT_NE(std::string(vt_error_message()).find("tubelet"), std::string::npos) << vt_error_message();
    ASSERT_VT_OK(vt_reward_forward(nat, even, nullptr, &rw, &loss));
    EXPECT_GT(vt_f32(rw)[0], 0.0f);  // a probability
    EXPECT_LT(vt_f32(rw)[0], 1.0f);
    EXPECT_NEAR(vt_f32(loss)[0], -std::log(vt_f32(rw)[0]), 1e-4);
    vt_release(rw);
    vt_release(loss);
    vt_release(odd);
    vt_release(even);
    vt_reward_free(nat);
    vt_weights_free(w);
}

TEST(ActionReward, ActionYamlFollowsVader) {
    vt_config c;
    ASSERT_VT_OK(vt_config_load(&c, RepoPath("../configs/action.yaml").c_str()));
    EXPECT_EQ(vt_config_validate(&c), VT_OK) << vt_error_message();
    ASSERT_EQ(c.reward.n_modules, 1);
    EXPECT_EQ(c.reward.modules[0].kind, VT_CFG_REWARD_ACTION);
    EXPECT_STREQ(vt_config_reward_option(&c.reward.modules[0], "class"), "playing guitar");
    EXPECT_STREQ(vt_config_reward_option(&c.reward.modules[0], "frames"), "native");
    EXPECT_EQ(c.memory.decode_frames, VT_CFG_DECODE_ALT);
    EXPECT_EQ(c.model.frames % 4, 0);  // alt decodes frames / 2: an even count for native tubelets
    vt_config_free(&c);
}

// Two optimisation steps of the tiny CPU run with the action reward on the action_tiny
// fixture's random VideoMAE (2 decoded frames resampled to its 4, 32 x 32, 5 classes).
TEST(ActionReward, TinyTrainingRunsTwoSteps) {
    vt_config c{};
    ASSERT_VT_OK(vt_config_load_string(&c, vt_config_default_yaml, "tiny"));
    std::string dir = TempDir() + "/action_train";
    std::string ckpt = RepoPath("fixtures/action_tiny.weights.safetensors");
    std::vector<std::string> sets = {"model.height=32", "model.width=32", "model.frames=2",
                                     "memory.decode_frames=all", "optim.steps=2", "output.checkpoint_every=0",
                                     "output.dir=" + dir, "reward.0.name=action", "reward.0.checkpoint=" + ckpt,
                                     "reward.0.options.class=1", "reward.0.options.image_size=32",
                                     "reward.0.options.num_frames=4"};
    for (auto &s : sets) ASSERT_VT_OK(vt_config_set(&c, s.c_str())) << s;
    ASSERT_VT_OK(vt_config_validate(&c));
    vt_train_options o = vt_train_options_default();
    vt_trainer *t = vt_trainer_create(&c, &o);
    ASSERT_VT(t);
    ASSERT_VT_OK(vt_trainer_run(t));
    vt_trainer_stats s = vt_trainer_get_stats(t);
    EXPECT_EQ(s.step, 2);
    EXPECT_EQ(s.skipped, 0);
    EXPECT_TRUE(std::isfinite(s.first_reward) && std::isfinite(s.last_reward));
    EXPECT_LE(s.last_reward, 0.0);  // log-probabilities
    vt_trainer_free(t);
    vt_config_free(&c);
}
