// Reward modules (rewards/reward.h): the colour reward against vader_step_tiny, the video /
// per-frame paths, weighted sums, the registry's errors, the real LAION aesthetic head, prompt
// truncation, wrong-architecture checkpoints, and the full-size HF CLIP towers from manifests.
// The tiny CLIP reward fixtures themselves run through vader-fixture (tests/CMakeLists.txt).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include "core/models/fixture_checks.h"
#include "core/models/hf_clip.h"
#include "core/models/openclip.h"
extern "C" {
#include "rewards/fixture_rewards.h"  // internal to rewards/, C only
}
#include "rewards/reward.h"
#include "testutil.h"

namespace {

std::string RepoFixture(const std::string &name) {
    std::string f = __FILE__;
    return f.substr(0, f.find_last_of('/')) + "/fixtures/" + name;
}

std::string RepoManifest(const std::string &name) {
    std::string f = __FILE__;
    return f.substr(0, f.find_last_of('/')) + "/manifests/" + name;
}

vt_tensor *Scalar(vt_tensor *t) { return t; }

}  // namespace

// The colour reward of the tiny CPU run reproduces vader_step_tiny's reward and loss from its
// decoded frames [b, 3, t, h, w].
TEST(Reward, ColorMatchesVaderStepTiny) {
    vt_fixture *fx = vt_fixture_open(SharedPath("fixtures/vader_step_tiny").c_str());
    ASSERT_VT(fx);
    vt_tensor *frames = vt_fixture_input(fx, "frames");
    vt_tensor *want_r = vt_fixture_input(fx, "reward");
    vt_tensor *want_l = vt_fixture_input(fx, "loss");
    ASSERT_TRUE(frames && want_r && want_l) << vt_error_message();
    vt_reward_options o = {};
    vt_reward *r = vt_reward_create("color", &o);
    ASSERT_VT(r);
    vt_tensor *reward = nullptr, *loss = nullptr;
    ASSERT_VT_OK(vt_reward_forward(r, frames, nullptr, &reward, &loss));
    EXPECT_LE(RelErr(reward, want_r), 1e-5);
    EXPECT_LE(RelErr(loss, want_l), 1e-5);
    vt_release(reward);
    vt_release(loss);
    vt_reward_free(r);
    vt_release(frames);
    vt_release(want_r);
    vt_release(want_l);
    vt_fixture_free(fx);
}

// d loss / d frames of the colour reward by finite differences (values away from the clamp).
TEST(Reward, ColorGradient) {
    vt_reward_kv kv[] = {{"rgb", "[0.3, -0.6, 0.9]"}};
    vt_reward_options o = {nullptr, nullptr, nullptr, kv, 1};
    vt_reward *r = vt_reward_create("color", &o);
    ASSERT_VT(r);
    vt_tensor *x = RandU({2, 3, 4, 5}, 3, -0.9f, 0.9f);
    vt_requires_grad(x, 1);
    ExpectGradsMatch(
        [&](const std::vector<vt_tensor *> &in) -> vt_tensor * {
            vt_tensor *rw = nullptr, *l = nullptr;
            if (vt_reward_forward(r, in[0], nullptr, &rw, &l)) return nullptr;
            vt_release(rw);
            return Scalar(l);
        },
        {x});
    vt_release(x);
    vt_reward_free(r);
}

// A video [b, 3, t, h, w] scores each frame with its video's prompt: reward = mean over the
// video's frames of the per-frame rewards, loss = mean over all frames.
TEST(Reward, VideoIsMeanOfFrames) {
    vt_reward_options o = {};
    vt_reward *r = vt_reward_create("color", &o);
    ASSERT_VT(r);
    Releaser rel;
    vt_tensor *video = rel(RandU({2, 3, 3, 4, 5}, 5, -1.2f, 1.2f));
    vt_tensor *perm = rel(vt_permute(video, 5, (const int[]){0, 2, 1, 3, 4}));
    vt_tensor *flat = rel(vt_reshape(perm, 4, (const int64_t[]){6, 3, 4, 5}));
    vt_tensor *rv = nullptr, *lv = nullptr, *rf = nullptr, *lf = nullptr;
    ASSERT_VT_OK(vt_reward_forward(r, video, nullptr, &rv, &lv));
    ASSERT_VT_OK(vt_reward_forward(r, flat, nullptr, &rf, &lf));
    rel(rv), rel(lv), rel(rf), rel(lf);
    ASSERT_EQ(rv->numel, 2);
    ASSERT_EQ(rf->numel, 6);
    for (int b = 0; b < 2; b++) {
        float m = (vt_f32(rf)[3 * b] + vt_f32(rf)[3 * b + 1] + vt_f32(rf)[3 * b + 2]) / 3;
        EXPECT_NEAR(vt_f32(rv)[b], m, 1e-6);
    }
    EXPECT_NEAR(vt_f32(lv)[0], vt_f32(lf)[0], 1e-6);
    vt_reward_free(r);
}

// Weighted sums: two colour rewards combine like one with the weighted rgb (the reward is
// linear in rgb); reward weights default to the loss weights.
TEST(Reward, WeightedSum) {
    vt_reward_kv ka[] = {{"rgb", "1,0,0"}}, kb[] = {{"rgb", "0,0.5,-1"}}, kc[] = {{"rgb", "0.5,0.75,-1.5"}};
    vt_reward_options oa = {nullptr, nullptr, nullptr, ka, 1}, ob = {nullptr, nullptr, nullptr, kb, 1},
                      oc = {nullptr, nullptr, nullptr, kc, 1};
    vt_reward *parts[2] = {vt_reward_create("color", &oa), vt_reward_create("color", &ob)};
    ASSERT_TRUE(parts[0] && parts[1]) << vt_error_message();
    const float w[2] = {0.5f, 1.5f};
    vt_reward *sum = vt_reward_combine("sum", parts, w, nullptr, 2);
    ASSERT_VT(sum);
    vt_reward *one = vt_reward_create("color", &oc);
    ASSERT_VT(one);
    Releaser rel;
    vt_tensor *x = rel(RandU({3, 3, 4, 4}, 9, -1, 1));
    vt_tensor *r1 = nullptr, *l1 = nullptr, *r2 = nullptr, *l2 = nullptr;
    ASSERT_VT_OK(vt_reward_forward(sum, x, nullptr, &r1, &l1));
    ASSERT_VT_OK(vt_reward_forward(one, x, nullptr, &r2, &l2));
    rel(r1), rel(l1), rel(r2), rel(l2);
    EXPECT_LE(RelErr(r1, r2), 1e-5);
    EXPECT_LE(RelErr(l1, l2), 1e-5);
    vt_reward_free(sum);
    vt_reward_free(one);
}

TEST(Reward, UnknownNameListsValidNames) {
    vt_reward_options o = {};
    EXPECT_EQ(vt_reward_create("imagereward", &o), nullptr);
    std::string m = vt_error_message();
    EXPECT_NE(m.find("imagereward"), std::string::npos) << m;
    for (const char *n : {"aesthetic", "hps", "hpsv21", "pickscore", "color"})
        EXPECT_NE(m.find(n), std::string::npos) << m;
}

TEST(Reward, BadOptionsAreErrors) {
    vt_reward_kv bad_key[] = {{"colour", "1,2,3"}}, bad_rgb[] = {{"rgb", "1,2"}}, bad_num[] = {{"target", "ten"}};
    vt_reward_options o1 = {nullptr, nullptr, nullptr, bad_key, 1};
    EXPECT_EQ(vt_reward_create("color", &o1), nullptr);
    EXPECT_NE(std::string(vt_error_message()).find("rgb"), std::string::npos) << vt_error_message();
    vt_reward_options o2 = {nullptr, nullptr, nullptr, bad_rgb, 1};
    EXPECT_EQ(vt_reward_create("color", &o2), nullptr);
    vt_weights *w = vt_weights_open1((RepoFixture("aesthetic_tiny") + ".weights.safetensors").c_str());
    ASSERT_VT(w);
    vt_reward_options o3 = {nullptr, nullptr, nullptr, bad_num, 1};
    EXPECT_EQ(vt_reward_create_from_weights("aesthetic", w, &o3), nullptr);
    EXPECT_NE(std::string(vt_error_message()).find("target"), std::string::npos) << vt_error_message();
    vt_weights_free(w);
    vt_reward_options none = {};
    EXPECT_EQ(vt_reward_create("hps", &none), nullptr);  // no checkpoint
    EXPECT_NE(std::string(vt_error_message()).find("checkpoint"), std::string::npos) << vt_error_message();
}

// The real LAION head (shared/weights) on a fixed normalised embedding, against PyTorch's value
// (scripts/make_reward_fixtures.py: fp32 5.86611605, fp64 5.86611648035).
TEST(Reward, AestheticHeadMatchesRealHead) {
    vt_weights *w = vt_weights_open1(SharedPath("weights/aesthetic_mlp_sac_logos_ava1_l14.safetensors").c_str());
    ASSERT_VT(w);
    vt_aesthetic_head *h = vt_aesthetic_head_build(w, "", 768);
    ASSERT_VT(h);
    ASSERT_VT_OK(vt_weights_finish(w, ""));
    double e[768], n2 = 0;
    for (int i = 0; i < 768; i++) {
        e[i] = std::sin(0.37 * i + 0.1) + 0.25 * std::cos(0.011 * i * i);
        n2 += e[i] * e[i];
    }
    vt_tensor *x = vt_new_f32(2, (const int64_t[]){1, 768});
    for (int i = 0; i < 768; i++) vt_f32(x)[i] = (float)(e[i] / std::sqrt(n2));
    vt_tensor *y = vt_aesthetic_head_forward(h, x);
    ASSERT_VT(y);
    ASSERT_EQ(y->numel, 1);
    EXPECT_LE(std::fabs(vt_f32(y)[0] - 5.86611648035) / 5.86611648035, 1e-5) << vt_f32(y)[0];
    vt_release(x);
    vt_release(y);
    vt_aesthetic_head_free(h);
    // a head of another shape is rejected naming the key
    EXPECT_EQ(vt_aesthetic_head_build(w, "", 512), nullptr);
    EXPECT_NE(std::string(vt_error_message()).find("layers.0.weight"), std::string::npos) << vt_error_message();
    vt_weights_free(w);
}

// Prompts longer than 77 tokens are cut as open_clip / the HF tokenizer do: [SOT, 75 ids, EOT].
TEST(Reward, LongPromptIsTruncated) {
    vt_fixture *fx = vt_fixture_open(RepoFixture("hps_reward_tiny").c_str());
    ASSERT_VT(fx);
    vt_reward_options o = {nullptr, nullptr, vt_fixture_json(fx, "config"), nullptr, 0};
    vt_reward *r = vt_reward_create_from_weights("hps", fx->weights, &o);
    ASSERT_VT(r);
    std::string longp = "a";
    for (int i = 0; i < 200; i++) longp += " cat";
    const char *prompts[1] = {longp.c_str()};
    struct Cap {
        std::vector<int64_t> ids;
    } cap;
    r->hook = [](void *u, const char *name, vt_tensor *t) {
        if (std::string(name) == "tokens") ((Cap *)u)->ids.assign(vt_i64(t), vt_i64(t) + t->numel);
    };
    r->hook_user = &cap;
    Releaser rel;
    vt_tensor *x = rel(RandU({1, 3, 40, 48}, 1, -1, 1));
    vt_tensor *rw = nullptr, *l = nullptr;
    ASSERT_VT_OK(vt_reward_forward(r, x, prompts, &rw, &l));
    rel(rw), rel(l);
    ASSERT_EQ(cap.ids.size(), 77u);
    EXPECT_EQ(cap.ids[0], VT_TOKENIZER_SOT);
    EXPECT_EQ(cap.ids[76], VT_TOKENIZER_EOT);
    EXPECT_EQ(cap.ids[75], cap.ids[74]);  // still " cat"
    // a missing prompt list is an error, not a crash
    vt_tensor *r2 = nullptr, *l2 = nullptr;
    EXPECT_NE(vt_reward_forward(r, x, nullptr, &r2, &l2), VT_OK);
    vt_reward_free(r);
    vt_fixture_free(fx);
}

// A checkpoint of another architecture is rejected naming the key.
TEST(Reward, WrongArchitectureNamesKey) {
    struct Case {
        const char *reward, *fixture, *key;
    } cases[] = {
        {"pickscore", "aesthetic_tiny", "text_model.embeddings.token_embedding.weight"},
        {"hps", "pickscore_tiny", "token_embedding.weight"},
        {"aesthetic", "hps_reward_tiny", "vision_model.embeddings.patch_embedding.weight"},
        // CLIP-H tiny + the real 768-wide head: the head's input does not fit the projection
        {"aesthetic", "pickscore_tiny", "layers.0.weight"},
    };
    for (const Case &c : cases) {
        vt_weights *w = vt_weights_open1((RepoFixture(c.fixture) + ".weights.safetensors").c_str());
        ASSERT_VT(w);
        vt_reward_options o = {};
        EXPECT_EQ(vt_reward_create_from_weights(c.reward, w, &o), nullptr) << c.reward << " from " << c.fixture;
        std::string m = vt_error_message();
        EXPECT_NE(m.find(c.key), std::string::npos) << c.reward << " from " << c.fixture << ": " << m;
        vt_weights_free(w);
    }
}

// Full-size HF towers from the manifests (transformers' own state dicts): every key used
// exactly once (used by the build, and the parameter counts agree).
TEST(Reward, ClipViTL14VisionBuildsFromManifest) {
    vt_weights *w = vt_weights_from_manifest(RepoManifest("clip_vit_l_14_vision.txt").c_str(), 0, 0);
    ASSERT_VT(w);
    vt_hf_clip_config cfg = vt_hf_clip_config_vit_l_14();
    vt_hf_clip *m = vt_hf_clip_build(w, "", &cfg, VT_HF_CLIP_VISION);
    ASSERT_VT(m);
    EXPECT_EQ(m->vision->encoder.layers, 24);
    EXPECT_EQ(m->vision->encoder.heads, 16);
    EXPECT_EQ(m->vision->grid, 16);
    EXPECT_EQ(m->cfg.projection_dim, 768);
    EXPECT_EQ(m->n_params, vt_weights_count_params(w, ""));
    vt_hf_clip_free(m);
    vt_mem_trim(VT_CPU);
    EXPECT_EQ(vt_weights_finish(w, ""), VT_OK) << vt_error_message();
    // and with everything inferred from the shapes
    vt_weights *w2 = vt_weights_from_manifest(RepoManifest("clip_vit_l_14_vision.txt").c_str(), 0, 0);
    vt_hf_clip *m2 = vt_hf_clip_build(w2, "", nullptr, VT_HF_CLIP_VISION);
    ASSERT_VT(m2);
    EXPECT_EQ(m2->vision->encoder.heads, 16);
    EXPECT_EQ(m2->vision->encoder.quick_gelu, 1);
    vt_hf_clip_free(m2);
    vt_mem_trim(VT_CPU);
    vt_weights_free(w2);
    vt_weights_free(w);
}

TEST(Reward, PickScoreClipHBuildsFromManifest) {
    vt_weights *w = vt_weights_from_manifest(RepoManifest("pickscore_clip_h_14.txt").c_str(), 0, 0);
    ASSERT_VT(w);
    vt_hf_clip_config cfg = vt_hf_clip_config_vit_h_14();
    int64_t n = 0;
    vt_hf_clip *t = vt_hf_clip_build(w, "", &cfg, VT_HF_CLIP_TEXT);  // one tower at a time: memory
    ASSERT_VT(t);
    EXPECT_EQ(t->text->encoder.layers, 24);
    EXPECT_EQ(t->text->encoder.heads, 16);
    EXPECT_EQ(t->text->encoder.quick_gelu, 0);
    EXPECT_NE(t->logit_scale, nullptr);
    n += t->n_params;
    vt_hf_clip_free(t);
    vt_mem_trim(VT_CPU);
    vt_weights_mark_used(w, "logit_scale");  // taken again by the vision build below
    vt_hf_clip *v = vt_hf_clip_build(w, "", &cfg, VT_HF_CLIP_VISION);
    ASSERT_VT(v);
    EXPECT_EQ(v->vision->encoder.layers, 32);
    EXPECT_EQ(v->vision->encoder.heads, 16);
    n += v->n_params - 1;  // logit_scale counted once
    vt_hf_clip_free(v);
    vt_mem_trim(VT_CPU);
    EXPECT_EQ(n, vt_weights_count_params(w, ""));
    EXPECT_EQ(vt_weights_finish(w, ""), VT_OK) << vt_error_message();
    vt_weights_free(w);
}

namespace {

// A reward module of a repository fixture (its weights and config); the fixture is kept for
// the store's lifetime.
struct FixtureReward {
    vt_fixture *fx = nullptr;
    vt_reward *r = nullptr;
    FixtureReward(const char *name, const char *fixture) {
        fx = vt_fixture_open(RepoFixture(fixture).c_str());
        if (!fx) return;
        vt_reward_options o = {nullptr, nullptr, vt_fixture_json(fx, "config"), nullptr, 0};
        r = vt_reward_create_from_weights(name, fx->weights, &o);
    }
    ~FixtureReward() {
        vt_reward_free(r);
        vt_fixture_free(fx);
    }
};

// reward, loss and d loss / d frames of r on frames x (a fresh copy wanting its gradient)
struct Scored {
    std::vector<float> reward, grad;
    float loss = 0;
};
Scored Score(vt_reward *r, const vt_tensor *x0, const char *const *prompts) {
    Scored s;
    vt_tensor *x = vt_clone(x0);
    vt_requires_grad(x, 1);
    vt_tape *t = vt_tape_begin();
    vt_tensor *rw = nullptr, *l = nullptr;
    vt_err e = vt_reward_forward(r, x, prompts, &rw, &l);
    vt_tape_end(t);
    EXPECT_EQ(e, VT_OK) << vt_error_message();
    if (!e) {
        EXPECT_EQ(vt_backward(t, l, nullptr), VT_OK) << vt_error_message();
        s.reward.assign(vt_f32(rw), vt_f32(rw) + rw->numel);
        s.loss = vt_f32(l)[0];
        if (x->grad) s.grad.assign(vt_f32(x->grad), vt_f32(x->grad) + x->numel);
    }
    vt_tape_free(t);
    vt_release(rw);
    vt_release(l);
    vt_release(x);
    return s;
}

double MaxRel(const std::vector<float> &a, const std::vector<float> &b) {
    double m = 0, d = 0;
    for (size_t i = 0; i < a.size() && i < b.size(); i++) {
        d = std::fmax(d, std::fabs((double)a[i] - b[i]));
        m = std::fmax(m, std::fabs((double)b[i]));
    }
    return m > 0 ? d / m : d;
}

double RelL2(const std::vector<float> &a, const std::vector<float> &b) {
    double n = 0, d = 0;
    for (size_t i = 0; i < a.size() && i < b.size(); i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        n += (double)b[i] * b[i];
    }
    return n > 0 ? std::sqrt(d / n) : std::sqrt(d);
}

}  // namespace

// Cached prompt embeddings give the scores and frame gradients of the uncached module; once the
// text tower is freed, an uncached prompt is an error naming it (forward and cache alike).
TEST(Reward, CachedPromptsScoreAsTheTextTower) {
    for (auto nf : {std::pair<const char *, const char *>{"hps", "hps_reward_tiny"}, {"pickscore", "pickscore_tiny"}}) {
        SCOPED_TRACE(nf.first);
        FixtureReward plain(nf.first, nf.second), cached(nf.first, nf.second);
        ASSERT_VT(plain.r);
        ASSERT_VT(cached.r);
        Releaser rel;
        vt_tensor *x = rel(RandU({3, 3, 40, 48}, 5, -1, 1));
        const char *prompts[3] = {"a cat", "a red fox in the snow", "a cat"};
        const char *all[4] = {"a red fox in the snow", "a cat", "a boat", "a cat"};
        ASSERT_VT_OK(vt_reward_cache_prompts(cached.r, all, 4));
        EXPECT_EQ(cached.r->n_cached, 3);  // distinct prompts once
        ASSERT_VT_OK(vt_reward_drop_text_tower(cached.r));
        Scored a = Score(plain.r, x, prompts), b = Score(cached.r, x, prompts);
        ASSERT_EQ(a.reward.size(), 3u);
        ASSERT_EQ(b.reward.size(), 3u);
        EXPECT_LE(MaxRel(b.reward, a.reward), 1e-5);
        EXPECT_NEAR(b.loss, a.loss, 1e-5 * std::fabs(a.loss) + 1e-7);
        ASSERT_FALSE(a.grad.empty());
        EXPECT_LE(MaxRel(b.grad, a.grad), 1e-5);
        // the freed tower: a new prompt is named, in the forward and in the cache
        const char *other[3] = {"a cat", "a dog on a skateboard", "a cat"};
        vt_tensor *rw = nullptr, *l = nullptr;
        EXPECT_NE(vt_reward_forward(cached.r, x, other, &rw, &l), VT_OK);
        EXPECT_NE(std::string(vt_error_message()).find("a dog on a skateboard"), std::string::npos)
            << vt_error_message();
        EXPECT_NE(vt_reward_cache_prompts(cached.r, other, 3), VT_OK);
        EXPECT_NE(std::string(vt_error_message()).find("freed"), std::string::npos) << vt_error_message();
    }
}

// Modules without a text side accept both calls as no-ops; a weighted sum reaches its parts.
TEST(Reward, CacheAndDropAreNoOpsWithoutText) {
    FixtureReward aes("aesthetic", "aesthetic_tiny");
    ASSERT_VT(aes.r);
    const char *p[1] = {"a cat"};
    EXPECT_EQ(vt_reward_cache_prompts(aes.r, p, 1), VT_OK) << vt_error_message();
    EXPECT_EQ(vt_reward_drop_text_tower(aes.r), VT_OK) << vt_error_message();
    EXPECT_EQ(aes.r->n_cached, 0);
    vt_reward_options o = {};
    vt_reward *c = vt_reward_create("color", &o);
    ASSERT_VT(c);
    EXPECT_EQ(vt_reward_cache_prompts(c, p, 1), VT_OK);
    EXPECT_EQ(vt_reward_drop_text_tower(c), VT_OK);
    vt_reward_free(c);
}

// 16-bit image towers: the GEMM weights really are converted (the packed in_proj's q / k / v
// stay its views), and the scores and frame gradients follow fp32 within the dtype's precision.
TEST(Reward, ImageTowerIn16BitTracksFp32) {
    struct Case {
        const char *name, *fixture;
    } cases[] = {{"hps", "hps_reward_tiny"}, {"pickscore", "pickscore_tiny"}, {"aesthetic", "aesthetic_tiny"}};
    Releaser rel;
    vt_tensor *x = rel(RandU({2, 3, 40, 48}, 6, -1, 1));
    const char *prompts[2] = {"a cat", "a red fox in the snow"};
    for (const Case &c : cases) {
        FixtureReward ref(c.name, c.fixture);
        ASSERT_VT(ref.r);
        Scored a = Score(ref.r, x, prompts);
        for (vt_dtype dt : {VT_BF16, VT_F16}) {
            SCOPED_TRACE(std::string(c.name) + " " + vt_dtype_name(dt));
            FixtureReward low(c.name, c.fixture);
            ASSERT_VT(low.r);
            ASSERT_VT_OK(vt_reward_set_weight_dtype(low.r, dt));
            const vt_vit_block *b0 = nullptr;
            if (!strcmp(c.name, "hps")) {
                vt_openclip *m = *(vt_openclip **)low.r->impl;  // hps_impl's first field
                b0 = &m->visual->transformer.blocks[0];
                EXPECT_EQ(m->visual->conv1->dtype, dt);
                EXPECT_EQ(b0->q.w->storage, b0->in_proj_weight->storage);
                EXPECT_EQ(b0->in_proj_weight->dtype, dt);
                EXPECT_EQ(m->text->transformer.blocks[0].fc.w->dtype, VT_F32);  // the text tower is left alone
            } else {
                vt_hf_clip *m = *(vt_hf_clip **)low.r->impl;  // the impl's first field
                b0 = &m->vision->encoder.blocks[0];
                EXPECT_EQ(m->vision->patch_embedding->dtype, dt);
            }
            EXPECT_EQ(b0->q.w->dtype, dt);
            EXPECT_EQ(b0->fc.w->dtype, dt);
            EXPECT_EQ(b0->proj.w->dtype, dt);
            EXPECT_EQ(b0->ln_1.w->dtype, VT_F32);
            Scored b = Score(low.r, x, prompts);
            double er = MaxRel(b.reward, a.reward), eg = RelL2(b.grad, a.grad);
            std::printf("%s %s: reward max-rel %.2e, d loss / d frames rel-L2 %.2e\n", c.name, vt_dtype_name(dt), er, eg);
            EXPECT_GT(er + eg, 0.0) << "no rounding at all";
            // measured on these towers: bf16 reward <= 6.3e-3, gradient <= 9.2e-3; f16 3.3e-3, 1.2e-3
            EXPECT_LE(er, dt == VT_BF16 ? 2e-2 : 1e-2);
            EXPECT_LE(eg, dt == VT_BF16 ? 5e-2 : 1e-2);
        }
    }
}

// The other towers (VideoMAE, V-JEPA 2, YOLOS) at 16 bits too: their encoders' linears are
// converted and the scores and frame gradients follow fp32.
TEST(Reward, VideoAndDetectionTowersIn16BitTrackFp32) {
    const char *cases[][2] = {{"action", "action_tiny"}, {"temporal", "temporal_tiny"},
                              {"object_removal", "object_removal_tiny"}};
    for (auto &c : cases) {
        vt_fixture *fx = vt_fixture_open(RepoFixture(c[1]).c_str());
        ASSERT_VT(fx);
        vt_fixture_opts opt = vt_fixture_opts_default();
        vt_tensor *frames = vt_fixture_input(fx, "frames");
        ASSERT_VT(frames);
        vt_reward *ref = vt_fixture_reward_create(fx, &opt, c[0]);
        ASSERT_VT(ref);
        Scored a = Score(ref, frames, nullptr);
        for (vt_dtype dt : {VT_BF16, VT_F16}) {
            SCOPED_TRACE(std::string(c[0]) + " " + vt_dtype_name(dt));
            vt_reward *low = vt_fixture_reward_create(fx, &opt, c[0]);
            ASSERT_VT(low);
            ASSERT_VT_OK(vt_reward_set_weight_dtype(low, dt));
            Scored b = Score(low, frames, nullptr);
            double er = MaxRel(b.reward, a.reward), eg = RelL2(b.grad, a.grad);
            std::printf("%s %s: reward max-rel %.2e, d loss / d frames rel-L2 %.2e\n", c[0], vt_dtype_name(dt), er, eg);
            ASSERT_FALSE(b.grad.empty());
            EXPECT_GT(er + eg, 0.0) << "no rounding at all";
            // measured: rewards <= 4.7e-3 (bf16) / 4.4e-4 (f16); gradients <= 2.6e-2 / 2.1e-2 (the
            // temporal reward's L1 loss flips signs of near-zero differences either way)
            EXPECT_LE(er, dt == VT_BF16 ? 5e-2 : 1e-2);
            EXPECT_LE(eg, dt == VT_BF16 ? 1e-1 : 5e-2);
            vt_reward_free(low);
        }
        vt_reward_free(ref);
        vt_release(frames);
        vt_fixture_free(fx);
    }
}
