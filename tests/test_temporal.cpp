// test_temporal.cpp — V-JEPA 2 and the temporal reward beyond the fixture (tests/fixtures/
// temporal_tiny runs through vader-fixture): the full-size model from the transformers
// manifest (every key used once), the mask generators, the frame-count handling, the RoPE
// rotation against finite differences, configs/temporal.yaml, and 3 tiny CPU training steps with
// the tiny random V-JEPA 2 of the fixture as the reward model.
#include <cmath>
#include <set>
#include <string>
#include "core/models/vjepa2.h"
#include "core/ops.h"
#include "rewards/temporal.h"
#include "testutil.h"
#include "train/config.h"
#include "train/trainer.h"

namespace {

std::string RepoPath(const std::string &rel) {
    std::string f = __FILE__;
    return f.substr(0, f.find_last_of('/')) + "/" + rel;
}

// The fixture's tiny model as a temporal reward, options given as key=value pairs.
vt_reward *TinyReward(vt_weights **w, std::vector<vt_reward_kv> kv) {
    std::string path = RepoPath("fixtures/temporal_tiny.weights.safetensors");
    const char *p = path.c_str();
    *w = vt_weights_open(&p, 1);
    if (!*w) return nullptr;
    kv.push_back({"heads", "2"});
    kv.push_back({"pred_heads", "2"});
    kv.push_back({"image_size", "32"});
    vt_reward_options o = {nullptr, nullptr, nullptr, kv.data(), (int)kv.size()};
    return vt_reward_create_from_weights("temporal", *w, &o);
}

}  // namespace

TEST(VJepa2, FullSizeBuildsFromManifestUsingEveryKeyOnce) {
    vt_weights *w = vt_weights_from_manifest(RepoPath("manifests/vjepa2_vitl_fpc64_256.txt").c_str(), 0, 0);
    ASSERT_VT(w);
    vt_vjepa2 *m = vt_vjepa2_build(w, "", nullptr);  // everything inferred from the shapes
    ASSERT_VT(m);
    EXPECT_EQ(m->cfg.hidden_size, 1024);
    EXPECT_EQ(m->cfg.heads, 16);
    EXPECT_EQ(m->cfg.layers, 24);
    EXPECT_EQ(m->cfg.pred_hidden_size, 384);
    EXPECT_EQ(m->cfg.pred_heads, 12);
    EXPECT_EQ(m->cfg.pred_layers, 12);
    EXPECT_EQ(m->cfg.pred_num_mask_tokens, 10);
    EXPECT_EQ(m->cfg.patch_size, 16);
    EXPECT_EQ(m->cfg.tubelet_size, 2);
    EXPECT_EQ(m->cfg.mlp, 4096);
    EXPECT_EQ(m->cfg.pred_mlp, 1536);
    EXPECT_EQ(m->n_params, vt_weights_count_params(w, ""));
    EXPECT_EQ(m->n_params, 325971328);
    vt_vjepa2_free(m);
    EXPECT_EQ(vt_weights_finish(w, ""), VT_OK) << vt_error_message();
    vt_weights_free(w);
}

TEST(VJepa2, WrongLayoutNamesTheKey) {
    vt_weights *w = vt_weights_from_manifest(RepoPath("manifests/clip_vit_l_14_vision.txt").c_str(), 0, 0);
    ASSERT_VT(w);
    EXPECT_EQ(vt_vjepa2_build(w, "", nullptr), nullptr);
    EXPECT_NE(std::string(vt_error_message()).find("encoder.embeddings.patch_embeddings.proj.weight"), std::string::npos)
        << vt_error_message();
    vt_weights_free(w);
}

// The RoPE rotation (composed from slice / concat / mul / add) against finite differences, and
// its value on one pair.
TEST(VJepa2, RopeRotationAndGradient) {
    vt_vjepa2_config c = vt_vjepa2_config_vitl_256();
    c.crop_size = 32;
    c.patch_size = 8;
    int64_t ids[5] = {0, 3, 7, 17, 30};
    vt_tensor *cs = nullptr, *sn = nullptr;
    ASSERT_EQ(vt_vjepa2_rope_tables(&c, 2, 14, ids, 5, &cs, &sn), VT_OK);  // s = 4, 2 unrotated
    // token 17: frame 1, row 0, col 1; channels 8..11 are the column section, channel j uses
    // omega[j mod 2] (transformers repeats the frequencies, it does not interleave them)
    EXPECT_NEAR(vt_f32(cs)[3 * 28 + 8], std::cos(1.0f), 1e-6);
    EXPECT_NEAR(vt_f32(sn)[3 * 28 + 8], -std::sin(1.0f), 1e-6);  // even channel: the pair sign
    EXPECT_NEAR(vt_f32(sn)[3 * 28 + 9], std::sin(0.01f), 1e-6);  // omega[1] = 10000^(-1/2)
    EXPECT_EQ(vt_f32(sn)[3 * 28 + 9], vt_f32(sn)[3 * 28 + 14 + 9]);  // both heads alike
    EXPECT_EQ(vt_f32(cs)[3 * 28 + 13], 1.0f);  // unrotated tail
    EXPECT_EQ(vt_f32(sn)[3 * 28 + 12], 0.0f);
    vt_tensor *x = RandN({2, 5, 28}, 3);
    vt_requires_grad(x, 1);
    ExpectGradsMatch([&](const std::vector<vt_tensor *> &in) { return vt_vit_rope_apply(in[0], cs, sn); }, {x});
    vt_release(x);
    vt_release(cs);
    vt_release(sn);
}

TEST(VJepa2, MultiBlockMasksAreDeterministicDisjointAndComplete) {
    vt_vjepa2_mask a, b, c;
    ASSERT_EQ(vt_vjepa2_mask_multiblock(&a, 8, 16, 8, 0.15f, 1.0f, 0.75f, 1.5f, 42), VT_OK) << vt_error_message();
    ASSERT_EQ(vt_vjepa2_mask_multiblock(&b, 8, 16, 8, 0.15f, 1.0f, 0.75f, 1.5f, 42), VT_OK);
    ASSERT_EQ(vt_vjepa2_mask_multiblock(&c, 8, 16, 8, 0.15f, 1.0f, 0.75f, 1.5f, 43), VT_OK);
    const int64_t N = 8 * 16 * 16;
    ASSERT_EQ(a.n_ctx + a.n_tgt, N);
    ASSERT_EQ(a.n_tgt, b.n_tgt);
    bool same_c = a.n_tgt == c.n_tgt;
    for (int64_t i = 0; i < a.n_tgt; i++) {
        EXPECT_EQ(a.tgt[i], b.tgt[i]);
        if (same_c && a.tgt[i] != c.tgt[i]) same_c = false;
    }
    EXPECT_FALSE(same_c) << "another seed gave the same mask";
    std::set<int64_t> all(a.ctx, a.ctx + a.n_ctx);
    all.insert(a.tgt, a.tgt + a.n_tgt);
    EXPECT_EQ((int64_t)all.size(), N);
    // temporal scale 1: every block spans all frames, so a masked token is masked in every frame
    std::set<int64_t> tg(a.tgt, a.tgt + a.n_tgt);
    for (int64_t id : tg) EXPECT_TRUE(tg.count(id % 256)) << id;
    EXPECT_GT(a.n_tgt, N / 10);
    vt_vjepa2_mask_free(&a);
    vt_vjepa2_mask_free(&b);
    vt_vjepa2_mask_free(&c);
    // tube masking: exactly round(ratio g^2) positions per frame
    vt_vjepa2_mask t;
    ASSERT_EQ(vt_vjepa2_mask_tube(&t, 2, 4, 0.5f, 1), VT_OK);
    EXPECT_EQ(t.n_tgt, 16);
    vt_vjepa2_mask_free(&t);
    EXPECT_NE(vt_vjepa2_mask_tube(&t, 2, 4, 1.0f, 1), VT_OK);  // nothing visible
    EXPECT_NE(vt_vjepa2_mask_multiblock(&t, 2, 1, 1, 0.5f, 1.0f, 0.75f, 1.5f, 1), VT_OK);
}

TEST(TemporalReward, OddFrameCountsAreRejectedOrResampled) {
    vt_weights *w = nullptr;
    vt_reward *r = TinyReward(&w, {{"blocks", "2x0.15"}});
    ASSERT_VT(r);
    vt_tensor *f3 = RandU({1, 3, 3, 40, 48}, 5, -1, 1), *reward = nullptr, *loss = nullptr;
    EXPECT_NE(vt_reward_forward(r, f3, nullptr, &reward, &loss), VT_OK);
    EXPECT_NE(std::string(vt_error_message()).find("tubelets of 2 frames"), std::string::npos) << vt_error_message();
    // [n, 3, h, w] is one clip of n frames (the convention of every video reward)
    vt_tensor *img = RandU({2, 3, 40, 48}, 5, -1, 1);
    ASSERT_EQ(vt_reward_forward(r, img, nullptr, &reward, &loss), VT_OK) << vt_error_message();
    EXPECT_EQ(reward->numel, 1);
    vt_clear(&reward);
    vt_clear(&loss);
    vt_reward_free(r);
    vt_weights_free(w);
    // with options.frames the clip is resampled (3 -> 4 frames) and scored, gradients reach every frame
    r = TinyReward(&w, {{"frames", "4"}, {"blocks", "2x0.15"}, {"seed", "3"}});
    ASSERT_VT(r);
    vt_requires_grad(f3, 1);
    vt_tape *tape = vt_tape_begin();
    ASSERT_EQ(vt_reward_forward(r, f3, nullptr, &reward, &loss), VT_OK) << vt_error_message();
    vt_tape_end(tape);
    EXPECT_TRUE(std::isfinite(vt_f32(loss)[0]));
    EXPECT_NEAR(vt_f32(reward)[0], -vt_f32(loss)[0], 1e-6);
    ASSERT_EQ(vt_backward(tape, loss, nullptr), VT_OK) << vt_error_message();
    ASSERT_NE(f3->grad, nullptr);
    for (int t = 0; t < 3; t++) {
        double s = 0;
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < 40 * 48; i++) s += std::fabs(vt_f32(f3->grad)[(c * 3 + t) * 40 * 48 + i]);
        EXPECT_GT(s, 0.0) << "frame " << t;
    }
    vt_tape_free(tape);
    vt_release(reward);
    vt_release(loss);
    vt_release(f3);
    vt_release(img);
    vt_reward_free(r);
    vt_weights_free(w);
}

TEST(TemporalReward, BadOptionsNameTheOption) {
    const std::vector<std::pair<vt_reward_kv, const char *>> cases = {
        {{"blocks", "8y0.1"}, "blocks"}, {{"mask", "random"}, "mask"}, {{"frames", "3"}, "frames"},
        {{"aspect", "2,1"}, "aspect"},   {{"nosuch", "1"}, "nosuch"},
    };
    for (auto &c : cases) {
        vt_weights *w = nullptr;
        EXPECT_EQ(TinyReward(&w, {c.first}), nullptr) << c.second;
        EXPECT_NE(std::string(vt_error_message()).find(c.second), std::string::npos) << vt_error_message();
        vt_weights_free(w);
    }
}

TEST(TemporalReward, ConfigLoadsAndValidates) {
    vt_config c;
    ASSERT_EQ(vt_config_load(&c, RepoPath("../configs/temporal.yaml").c_str()), VT_OK) << vt_error_message();
    EXPECT_EQ(vt_config_validate(&c), VT_OK) << vt_error_message();
    ASSERT_EQ(c.reward.n_modules, 1);
    EXPECT_EQ(c.reward.modules[0].kind, VT_CFG_REWARD_TEMPORAL);
    EXPECT_STREQ(vt_config_reward_option(&c.reward.modules[0], "blocks"), "8x0.15,2x0.7");
    // one decoded frame is no clip
    EXPECT_EQ(vt_config_set(&c, "memory.decode_frames=-1"), VT_OK);
    EXPECT_NE(vt_config_validate(&c), VT_OK);
    vt_config_free(&c);
}

// Three steps of the tiny CPU run with the tiny random V-JEPA 2 as the reward.
TEST(TemporalReward, TinyCpuTrainingSteps) {
    vt_config c;
    ASSERT_EQ(vt_config_load_string(&c, vt_config_default_yaml, "tiny"), VT_OK);
    std::string dir = TempDir() + "/temporal";
    std::string ck = "reward.0.checkpoint=" + RepoPath("fixtures/temporal_tiny.weights.safetensors");
    const std::vector<std::string> sets = {
        "model.height=32", "model.width=32", "model.frames=2", "memory.decode_frames=all", "optim.steps=3",
        "output.checkpoint_every=0", "output.dir=" + dir, "reward.0.name=temporal", ck,
        "reward.0.options.heads=2", "reward.0.options.pred_heads=2", "reward.0.options.image_size=32",
        "reward.0.options.blocks=2x0.15",
    };
    for (auto &s : sets) ASSERT_EQ(vt_config_set(&c, s.c_str()), VT_OK) << s << ": " << vt_error_message();
    ASSERT_EQ(vt_config_validate(&c), VT_OK) << vt_error_message();
    vt_train_options o = vt_train_options_default();
    vt_trainer *t = vt_trainer_create(&c, &o);
    ASSERT_VT(t);
    EXPECT_EQ(vt_trainer_run(t), VT_OK) << vt_error_message();
    vt_trainer_stats s = vt_trainer_get_stats(t);
    EXPECT_EQ(s.step, 3);
    EXPECT_EQ(s.skipped, 0);
    EXPECT_TRUE(std::isfinite(s.first_reward) && std::isfinite(s.last_reward));
    EXPECT_LT(s.first_reward, 0.0);  // -L1
    vt_trainer_free(t);
    vt_config_free(&c);
}
