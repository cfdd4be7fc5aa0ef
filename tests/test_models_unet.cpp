// test_models_unet.cpp — the lvdm UNet3D (VideoCrafter2): the vc2_unet_tiny fixture (out and
// every grad.*), checkpoint segments bit-identical to the plain tape (dropout on), LoRA
// gradients against finite differences, LoRA names / load, the full-size build from the
// shape-only manifest, the error messages for bad keys and bad latent sizes, config options,
// the upstream-made variant (causal + relative positions), and temporal cross-attention
// gradients against finite differences (upstream cannot backpropagate that mode).
#include "testutil.h"
#include <cmath>
#include <cstring>
#include <string>
#include "core/fixture.h"
#include "core/models/fixture_checks.h"
#include "core/models/unet3d.h"

static const char *kPrefix = "model.diffusion_model.";

// The tiny fixture's weights and config.
struct TinyUnet {
    vt_fixture *fx = nullptr;
    vt_unet3d *u = nullptr;
    vt_unet3d_config cfg{};
    TinyUnet() {
        fx = vt_fixture_open(SharedPath("fixtures/vc2_unet_tiny").c_str());
        if (!fx) return;
        cfg = vt_unet3d_config_videocrafter2();
        if (vt_unet3d_config_from_json(vt_fixture_json(fx, "config"), &cfg) != VT_OK) return;
        u = vt_unet3d_build(fx->weights, kPrefix, &cfg);
    }
    ~TinyUnet() {
        vt_unet3d_free(u);
        vt_fixture_free(fx);
    }
};

static vt_tensor *I64(std::vector<int64_t> v) {
    const int64_t n[1] = {(int64_t)v.size()};
    vt_tensor *t = vt_empty(VT_I64, VT_CPU, 1, n);
    for (size_t i = 0; i < v.size(); i++) vt_i64(t)[i] = v[i];
    return t;
}

TEST(Unet3d, FixtureMatches) {
    for (int segments = 0; segments <= 1; segments++) {
        vt_fixture_opts opt = vt_fixture_opts_default();
        opt.segments = segments;
        vt_fixture_report rep{};
        ASSERT_VT_OK(vt_fixture_run(SharedPath("fixtures/vc2_unet_tiny").c_str(), &opt, &rep));
        int n_grad = 0, n_out = 0;
        for (int i = 0; i < rep.n; i++) {
            const vt_fixture_result &r = rep.r[i];
            EXPECT_TRUE(r.ok) << r.name << " rel err " << r.rel_err << " " << r.note;
            EXPECT_LE(r.rel_err, 1e-4) << r.name;
            n_grad += std::strncmp(r.name, "grad.", 5) == 0;
            n_out += std::strcmp(r.name, "out") == 0;
        }
        EXPECT_EQ(n_out, 1);
        EXPECT_EQ(n_grad, 2 + 120);  // x, context, 15 attention modules x 2 attns x 4 projections
        EXPECT_EQ(rep.n_fail, 0);
        EXPECT_STREQ(rep.model, "unet3d");
        vt_fixture_report_free(&rep);
    }
}

// Forward + backward of sum(out * R); returns every gradient (x, context, LoRA A/B) as bytes.
static std::vector<std::vector<float>> RunGrads(vt_unet3d *u, int checkpoint, vt_tensor *x, vt_tensor *ts,
                                                vt_tensor *ctx, vt_tensor *fps, vt_tensor *R, size_t *saved) {
    std::vector<std::vector<float>> g;
    vt_unet3d_set_checkpoint(u, checkpoint);
    vt_tape *t = vt_tape_begin();
    vt_tensor *out = vt_unet3d_forward(u, x, ts, ctx, fps, 1234);
    vt_tape_end(t);
    EXPECT_NE(out, nullptr) << vt_error_message();
    if (!out) return g;
    *saved = vt_tape_stats_get(t).saved_bytes;
    EXPECT_EQ(vt_backward(t, out, R), VT_OK) << vt_error_message();
    vt_release(out);
    vt_tape_free(t);
    vt_unet3d_release_segments(u);
    std::vector<vt_tensor *> ts_;
    ts_.push_back(x);
    ts_.push_back(ctx);
    for (int i = 0; i < vt_unet3d_n_lora(u); i++) ts_.push_back(vt_unet3d_lora_param(u, i, nullptr));
    for (vt_tensor *p : ts_) {
        EXPECT_NE(p->grad, nullptr);
        if (!p->grad) continue;
        g.emplace_back(vt_f32(p->grad), vt_f32(p->grad) + p->grad->numel);
        vt_zero_grad(p);
    }
    return g;
}

// Every LoRA B ~ N(0, std^2) (B = 0 at init) so that every LoRA A gets a gradient too.
static void FillLoraB(vt_unet3d *u, uint64_t seed, float std) {
    vt_rng rng;
    vt_rng_seed(&rng, seed);
    for (int i = 1; i < vt_unet3d_n_lora(u); i += 2) vt_fill_normal(vt_unet3d_lora_param(u, i, nullptr), &rng, 0, std);
}

// The tiny UNet with rank-4 LoRA on q / k / v / out (B random, so the branch is live), and the
// inputs and output cotangent the merge and 16-bit-weight tests share.
struct LoraCase {
    TinyUnet m;
    Releaser R;
    vt_tensor *x = nullptr, *ctx = nullptr, *cot = nullptr, *ts = nullptr, *fps = nullptr;
    bool ok = false;
    LoraCase() {
        if (!m.u) return;
        vt_unet3d_lora_config lc = {4, 8.0f, VT_LORA_TO_Q | VT_LORA_TO_K | VT_LORA_TO_V | VT_LORA_TO_OUT, 17};
        if (vt_unet3d_add_lora(m.u, &lc)) return;
        FillLoraB(m.u, 23, 0.2f);
        x = R(RandN({2, 4, 3, 4, 4}, 1));
        ctx = R(RandN({2, 3, 24}, 2));
        cot = R(RandN({2, 4, 3, 4, 4}, 3));
        ts = R(I64({500, 20}));
        fps = R(I64({24, 8}));
        ok = true;
    }
    // The plain untaped forward, and the gradients of x, context and LoRA on a tape (x and ctx
    // are left requiring gradients).
    vt_tensor *ref = nullptr;
    std::vector<std::vector<float>> g_ref;
    bool Reference() {
        ref = R(vt_unet3d_forward(m.u, x, ts, ctx, fps, 0));
        if (!ref) return false;
        vt_requires_grad(x, 1);
        vt_requires_grad(ctx, 1);
        size_t saved = 0;
        g_ref = RunGrads(m.u, 0, x, ts, ctx, fps, cot, &saved);
        return !g_ref.empty();
    }
};

// Appends the LoRA tensors whose name contains one of parts, in the model's order.
static void AppendLoraParams(vt_unet3d *u, std::vector<const char *> parts, std::vector<vt_tensor *> &out) {
    for (int i = 0; i < vt_unet3d_n_lora(u); i++) {
        const char *name;
        vt_tensor *p = vt_unet3d_lora_param(u, i, &name);
        for (const char *part : parts)
            if (std::strstr(name, part)) {
                out.push_back(p);
                break;
            }
    }
}

// Two RunGrads results, bit for bit.
static void ExpectGradsBitIdentical(const std::vector<std::vector<float>> &a, const std::vector<std::vector<float>> &b) {
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); i++) {
        ASSERT_EQ(a[i].size(), b[i].size()) << "gradient " << i;
        EXPECT_EQ(0, std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float))) << "gradient " << i;
    }
}

TEST(Unet3d, CheckpointSegmentsAreBitIdentical) {
    TinyUnet m;
    ASSERT_VT(m.u);
    vt_unet3d_lora_config lc = {4, 4.0f, VT_LORA_TO_Q | VT_LORA_TO_K | VT_LORA_TO_V | VT_LORA_TO_OUT, 5};
    ASSERT_VT_OK(vt_unet3d_add_lora(m.u, &lc));
    FillLoraB(m.u, 9, 0.05f);
    vt_unet3d_set_dropout(m.u, 0.1f, 0.01f);  // training mode: masks must be reproduced by the recompute
    Releaser R;
    vt_tensor *x = R(RandN({2, 4, 4, 8, 8}, 1)), *ctx = R(RandN({2, 5, 24}, 2)), *cot = R(RandN({2, 4, 4, 8, 8}, 3));
    vt_tensor *ts = R(I64({10, 900})), *fps = R(I64({24, 24}));
    vt_requires_grad(x, 1);
    vt_requires_grad(ctx, 1);
    size_t saved_plain = 0, saved_seg = 0;
    auto g0 = RunGrads(m.u, 0, x, ts, ctx, fps, cot, &saved_plain);
    auto g1 = RunGrads(m.u, 1, x, ts, ctx, fps, cot, &saved_seg);
    ASSERT_EQ(g0.size(), 2u + (size_t)vt_unet3d_n_lora(m.u));
    ExpectGradsBitIdentical(g0, g1);
    EXPECT_LT(saved_seg * 2, saved_plain);  // segments keep only their inputs
    // dropout is really on: another seed gives another output
    vt_tensor *o1 = R(vt_unet3d_forward(m.u, x, ts, ctx, fps, 1));
    vt_tensor *o2 = R(vt_unet3d_forward(m.u, x, ts, ctx, fps, 2));
    ASSERT_VT(o1);
    ASSERT_VT(o2);
    EXPECT_GT(vt_rel_err(o1, o2), 1e-4);
}

TEST(Unet3d, LoraGradientsMatchFiniteDifferences) {
    TinyUnet m;
    ASSERT_VT(m.u);
    vt_unet3d_lora_config lc = {2, 2.0f, VT_LORA_TO_Q | VT_LORA_TO_V, 11};
    ASSERT_VT_OK(vt_unet3d_add_lora(m.u, &lc));
    Releaser R;
    // small input: 1 sample, 2 frames, 4x4 latent
    vt_tensor *x = R(RandN({1, 4, 2, 4, 4}, 1)), *ctx = R(RandN({1, 3, 24}, 2));
    vt_tensor *ts = R(I64({500})), *fps = R(I64({24}));
    // B = 0 at init: the output equals the base model's
    vt_tensor *base = nullptr;
    {
        vt_unet3d *plain = vt_unet3d_build(m.fx->weights, kPrefix, &m.cfg);
        ASSERT_VT(plain);
        base = R(vt_unet3d_forward(plain, x, ts, ctx, fps, 0));
        vt_unet3d_free(plain);
    }
    vt_tensor *withlora = R(vt_unet3d_forward(m.u, x, ts, ctx, fps, 0));
    ASSERT_VT(base);
    ASSERT_VT(withlora);
    EXPECT_EQ(0.0, vt_rel_err(withlora, base));
    // one projection in a spatial block (cross-attention to_v) and one in a temporal block
    std::vector<vt_tensor *> params;
    AppendLoraParams(m.u,
                     {"input_blocks.1.1.transformer_blocks.0.attn2.to_v", "middle_block.2.transformer_blocks.0.attn1.to_q"},
                     params);
    ASSERT_EQ(params.size(), 4u);
    // the objective is a sum over a whole UNet in fp32: a larger step keeps the fp32 noise of
    // f(+) - f(-) small next to the signal (the response to B is close to linear)
    GradCheckOptions o;
    o.eps = 5e-2;
    o.max_elems = 6;
    o.rtol = 2e-2;
    o.atol = 1e-4;
    ExpectGradsMatch([&](const std::vector<vt_tensor *> &) { return vt_unet3d_forward(m.u, x, ts, ctx, fps, 0); },
                     params, o);
    // with B = 0 the gradient of A is exactly zero, the one of B is not
    vt_tape *t = vt_tape_begin();
    vt_tensor *out = vt_unet3d_forward(m.u, x, ts, ctx, fps, 0);
    vt_tape_end(t);
    ASSERT_VT(out);
    vt_tensor *cot = R(RandN({1, 4, 2, 4, 4}, 5));
    ASSERT_VT_OK(vt_backward(t, out, cot));
    vt_release(out);
    vt_tape_free(t);
    double amax = 0, bmax = 0;
    for (int k = 0; k < params[0]->numel; k++) amax = std::max(amax, (double)std::fabs(vt_f32(params[0]->grad)[k]));
    for (int k = 0; k < params[1]->numel; k++) bmax = std::max(bmax, (double)std::fabs(vt_f32(params[1]->grad)[k]));
    EXPECT_EQ(amax, 0.0);
    EXPECT_GT(bmax, 0.0);
    for (vt_tensor *p : params) vt_zero_grad(p);
}

// Cross-attention projects the text context once per sample and shares k, v over the sample's
// frames (q seen as [B, T*Lq, C]). A batch of 2 samples x 3 frames must give each sample what it
// gives alone, and the shared k, v must collect every frame's gradient: d context per sample and
// the LoRA gradients (summed over samples) equal those of the single-sample runs; d context and
// the to_k / to_v LoRA gradients also match finite differences.
TEST(Unet3d, CrossAttentionSharesContextOverFrames) {
    TinyUnet m;
    ASSERT_VT(m.u);
    vt_unet3d_lora_config lc = {2, 2.0f, VT_LORA_TO_Q | VT_LORA_TO_K | VT_LORA_TO_V, 13};
    ASSERT_VT_OK(vt_unet3d_add_lora(m.u, &lc));
    FillLoraB(m.u, 21, 0.1f);
    Releaser R;
    const int T = 3;
    vt_tensor *x = R(RandN({2, 4, T, 4, 4}, 1)), *ctx = R(RandN({2, 3, 24}, 2)), *cot = R(RandN({2, 4, T, 4, 4}, 3));
    vt_tensor *ts = R(I64({500, 20})), *fps = R(I64({24, 8}));
    vt_requires_grad(x, 1);
    vt_requires_grad(ctx, 1);
    size_t saved = 0;
    vt_tensor *out2 = R(vt_unet3d_forward(m.u, x, ts, ctx, fps, 0));
    ASSERT_VT(out2);
    auto g2 = RunGrads(m.u, 0, x, ts, ctx, fps, cot, &saved);  // x, ctx, LoRA...
    ASSERT_EQ(g2.size(), 2u + (size_t)vt_unet3d_n_lora(m.u));
    std::vector<std::vector<float>> lora_sum(g2.size());
    for (int b = 0; b < 2; b++) {
        vt_tensor *xb = R(vt_detach(R(vt_slice(x, 0, b, 1)))), *cb = R(vt_detach(R(vt_slice(ctx, 0, b, 1))));
        vt_tensor *rb = R(vt_slice(cot, 0, b, 1)), *tb = R(I64({b ? 20 : 500})), *fb = R(I64({b ? 8 : 24}));
        vt_requires_grad(xb, 1);
        vt_requires_grad(cb, 1);
        vt_tensor *o1 = R(vt_unet3d_forward(m.u, xb, tb, cb, fb, 0));
        ASSERT_VT(o1);
        vt_tensor *o2b = R(vt_slice(out2, 0, b, 1));
        EXPECT_LT(vt_rel_err(o2b, o1), 1e-5) << "sample " << b;
        auto g1 = RunGrads(m.u, 0, xb, tb, cb, fb, rb, &saved);
        ASSERT_EQ(g1.size(), g2.size());
        for (size_t k = 0; k < 2; k++) {  // d x, d context of sample b
            const size_t n = g1[k].size();
            double num = 0, den = 0;
            for (size_t i = 0; i < n; i++) {
                num = std::max(num, (double)std::fabs(g2[k][b * n + i] - g1[k][i]));
                den = std::max(den, (double)std::fabs(g1[k][i]));
            }
            EXPECT_LT(num / den, 1e-4) << (k ? "grad context" : "grad x") << " of sample " << b;
        }
        for (size_t k = 2; k < g1.size(); k++) {
            lora_sum[k].resize(g1[k].size());
            for (size_t i = 0; i < g1[k].size(); i++) lora_sum[k][i] += g1[k][i];
        }
    }
    for (size_t k = 2; k < g2.size(); k++) {
        double num = 0, den = 0;
        for (size_t i = 0; i < g2[k].size(); i++) {
            num = std::max(num, (double)std::fabs(g2[k][i] - lora_sum[k][i]));
            den = std::max(den, (double)std::fabs(lora_sum[k][i]));
        }
        const char *name;
        vt_unet3d_lora_param(m.u, (int)k - 2, &name);
        EXPECT_LT(num / std::max(den, 1e-30), 1e-4) << name;
    }
    // finite differences: the context and the cross-attention to_k / to_v LoRA of one block
    std::vector<vt_tensor *> params = {ctx};
    AppendLoraParams(m.u,
                     {"input_blocks.1.1.transformer_blocks.0.attn2.to_k.lora_A",
                      "input_blocks.1.1.transformer_blocks.0.attn2.to_v.lora_B"},
                     params);
    ASSERT_EQ(params.size(), 3u);
    vt_requires_grad(x, 0);
    GradCheckOptions o;
    o.eps = 5e-2;
    o.max_elems = 6;
    o.rtol = 2e-2;
    o.atol = 1e-4;
    ExpectGradsMatch([&](const std::vector<vt_tensor *> &) { return vt_unet3d_forward(m.u, x, ts, ctx, fps, 0); },
                     params, o);
}

// The untaped fast path: merged LoRA weights (W + scale B A) and the cached K/V of the text
// context give the untaped forward of the plain model; forwards on a tape ignore both (outputs
// and gradients bit-identical to the plain model's); so do forwards with LoRA dropout.
TEST(Unet3d, MergedLoraAndCachedContextMatchPlainForward) {
    LoraCase c;
    ASSERT_TRUE(c.ok) << vt_error_message();
    auto &m = c.m;
    Releaser R;
    vt_tensor *x = c.x, *ctx = c.ctx, *cot = c.cot, *ts = c.ts, *fps = c.fps;
    ASSERT_TRUE(c.Reference()) << vt_error_message();
    vt_tensor *ref = c.ref;
    const auto &g_ref = c.g_ref;
    size_t saved = 0;

    ASSERT_VT_OK(vt_unet3d_lora_merge(m.u));
    EXPECT_TRUE(vt_unet3d_lora_is_merged(m.u));
    vt_tensor *merged = R(vt_unet3d_forward(m.u, x, ts, ctx, fps, 0));
    ASSERT_VT(merged);
    EXPECT_LT(vt_rel_err(merged, ref), 1e-5);
    ASSERT_VT_OK(vt_unet3d_cache_context(m.u, ctx));
    vt_tensor *cached = R(vt_unet3d_forward(m.u, x, ts, ctx, fps, 0));
    ASSERT_VT(cached);
    EXPECT_LT(vt_rel_err(cached, ref), 1e-5);
    // the cached K/V are what the forward reads: with the context's values wiped afterwards, a
    // forward given the same tensor still computes the original output
    vt_tensor *ctx_copy = R(vt_clone(ctx));
    std::memset(vt_f32(ctx), 0, vt_nbytes(ctx));
    vt_tensor *from_cache = R(vt_unet3d_forward(m.u, x, ts, ctx, fps, 0));
    ASSERT_VT(from_cache);
    EXPECT_LT(vt_rel_err(from_cache, ref), 1e-5);
    std::memcpy(vt_f32(ctx), vt_f32(ctx_copy), vt_nbytes(ctx));
    // another context tensor with the same values does not hit the cache (and gives the same)
    vt_tensor *other = R(vt_unet3d_forward(m.u, x, ts, ctx_copy, fps, 0));
    ASSERT_VT(other);
    EXPECT_LT(vt_rel_err(other, ref), 1e-5);
    // on a tape: the plain model's computation, bit for bit
    auto g_fast = RunGrads(m.u, 0, x, ts, ctx, fps, cot, &saved);
    ExpectGradsBitIdentical(g_fast, g_ref);
    // LoRA dropout: the fast path is off, the forward is the unmerged one with its masks
    vt_unet3d_set_dropout(m.u, 0.0f, 0.2f);
    vt_tensor *d1 = R(vt_unet3d_forward(m.u, x, ts, ctx, fps, 7));
    ASSERT_VT_OK(vt_unet3d_cache_context(m.u, nullptr));
    vt_unet3d_lora_unmerge(m.u);
    EXPECT_FALSE(vt_unet3d_lora_is_merged(m.u));
    vt_tensor *d2 = R(vt_unet3d_forward(m.u, x, ts, ctx, fps, 7));
    ASSERT_VT(d1);
    ASSERT_VT(d2);
    EXPECT_EQ(0, std::memcmp(vt_f32(d1), vt_f32(d2), vt_nbytes(d1)));
    vt_unet3d_set_dropout(m.u, 0.0f, 0.0f);
    // dropped: the plain forward again, bit for bit
    vt_requires_grad(x, 0);
    vt_requires_grad(ctx, 0);
    vt_tensor *plain = R(vt_unet3d_forward(m.u, x, ts, ctx, fps, 0));
    ASSERT_VT(plain);
    EXPECT_EQ(0, std::memcmp(vt_f32(plain), vt_f32(ref), vt_nbytes(ref)));
}

TEST(Unet3d, LoraNamesAndLoad) {
    TinyUnet m;
    ASSERT_VT(m.u);
    vt_unet3d_lora_config lc = {4, 4.0f, VT_LORA_TO_Q | VT_LORA_TO_K | VT_LORA_TO_V, 3};
    ASSERT_VT_OK(vt_unet3d_add_lora(m.u, &lc));
    // 15 attention modules (init_attn, 4 + 2 + 6 block transformers... ) x 2 attns x 3 targets x (A, B)
    EXPECT_EQ(vt_unet3d_n_lora(m.u), 15 * 2 * 3 * 2);
    const char *name;
    vt_tensor *a0 = vt_unet3d_lora_param(m.u, 0, &name);
    EXPECT_STREQ(name, "base_model.model.model.diffusion_model.init_attn.0.transformer_blocks.0.attn1.to_q.lora_A.weight");
    EXPECT_EQ(a0->shape[0], 4);
    EXPECT_EQ(a0->shape[1], 128);
    float bound = 1.0f / std::sqrt(128.0f), amax = 0;
    for (int64_t i = 0; i < a0->numel; i++) amax = std::max(amax, std::fabs(vt_f32(a0)[i]));
    EXPECT_LE(amax, bound);
    EXPECT_GT(amax, 0.8f * bound);
    vt_unet3d_lora_param(m.u, 1, &name);
    EXPECT_STREQ(name, "base_model.model.model.diffusion_model.init_attn.0.transformer_blocks.0.attn1.to_q.lora_B.weight");
    EXPECT_TRUE(vt_unet3d_lora_param(m.u, 0, nullptr)->requires_grad);
    // save with the names, load into a second model
    std::vector<const char *> names;
    std::vector<vt_tensor *> ts;
    vt_rng rng;
    vt_rng_seed(&rng, 4);
    for (int i = 0; i < vt_unet3d_n_lora(m.u); i++) {
        vt_tensor *p = vt_unet3d_lora_param(m.u, i, &name);
        if (i % 2) vt_fill_normal(p, &rng, 0, 0.1f);
        names.push_back(name);
        ts.push_back(p);
    }
    std::string path = TempDir() + "/lora.safetensors";
    ASSERT_VT_OK(vt_st_write(path.c_str(), (int)ts.size(), names.data(), ts.data(), 0, nullptr, nullptr));
    vt_unet3d *u2 = vt_unet3d_build(m.fx->weights, kPrefix, &m.cfg);
    ASSERT_VT(u2);
    lc.seed = 99;
    ASSERT_VT_OK(vt_unet3d_add_lora(u2, &lc));
    vt_weights *store = vt_weights_open1(path.c_str());
    ASSERT_VT(store);
    ASSERT_VT_OK(vt_unet3d_lora_load(u2, store));
    for (int i = 0; i < vt_unet3d_n_lora(m.u); i++)
        EXPECT_EQ(0, std::memcmp(vt_data(ts[i]), vt_data(vt_unet3d_lora_param(u2, i, nullptr)), vt_nbytes(ts[i])));
    vt_weights_free(store);
    // a store without them: error naming the key
    EXPECT_NE(vt_unet3d_lora_load(u2, m.fx->weights), VT_OK);
    EXPECT_NE(std::strstr(vt_error_message(), "init_attn.0.transformer_blocks.0.attn1.to_q.lora_A.weight"), nullptr)
        << vt_error_message();
    vt_unet3d_free(u2);
}

TEST(Unet3d, FullSizeBuildsFromManifest) {
    vt_weights *w = vt_weights_from_manifest(SharedPath("manifests/videocrafter2_unet.txt").c_str(), 0, 0);
    ASSERT_VT(w);
    vt_unet3d_config cfg = vt_unet3d_config_videocrafter2();
    int64_t n = 0;
    ASSERT_VT_OK(vt_unet3d_check_weights(w, kPrefix, &cfg, &n));  // fails on any unused key
    EXPECT_EQ(n, 1413284420LL);
    EXPECT_EQ(n, vt_weights_count_params(w, kPrefix));  // = every key used exactly once
    vt_weights_free(w);
}

// (on the tiny fixture's weights: a full-size store costs seconds per build)
TEST(Unet3d, WeightErrorsNameTheKeys) {
    std::string path = SharedPath("fixtures/vc2_unet_tiny.weights.safetensors");
    TinyUnet m;
    ASSERT_VT(m.u);
    {
        vt_weights *w = vt_weights_open1(path.c_str());
        ASSERT_VT(w);
        vt_unet3d_config cfg = m.cfg;
        cfg.context_dim = 16;  // mis-shaped cross-attention keys
        EXPECT_EQ(vt_unet3d_build(w, kPrefix, &cfg), nullptr);
        EXPECT_EQ(vt_error_code(), VT_ERR_KEY);
        EXPECT_NE(std::strstr(vt_error_message(),
                              "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"),
                  nullptr)
            << vt_error_message();
        vt_weights_free(w);
    }
    {
        vt_weights *w = vt_weights_open1(path.c_str());  // fresh store: nothing marked used yet
        ASSERT_VT(w);
        vt_unet3d_config cfg = m.cfg;
        cfg.temporal_conv = 0;  // the temopral_conv keys are then never used
        int64_t n = 0;
        EXPECT_NE(vt_unet3d_check_weights(w, kPrefix, &cfg, &n), VT_OK);
        EXPECT_NE(std::strstr(vt_error_message(), "input_blocks.1.0.temopral_conv.conv1.0.weight"), nullptr)
            << vt_error_message();
        vt_weights_free(w);
    }
    {
        vt_weights *w = vt_weights_open1(path.c_str());
        ASSERT_VT(w);
        vt_unet3d_config cfg = m.cfg;
        cfg.num_res_blocks = 2;  // keys that do not exist
        EXPECT_EQ(vt_unet3d_build(w, kPrefix, &cfg), nullptr);
        EXPECT_NE(std::strstr(vt_error_message(), "missing key model.diffusion_model.input_blocks.2.0.in_layers.0.weight"), nullptr)
            << vt_error_message();
        vt_weights_free(w);
    }
}

TEST(Unet3d, BadLatentSizeListsAllowedSizes) {
    TinyUnet m;
    ASSERT_VT(m.u);
    Releaser R;
    vt_tensor *x = R(RandN({1, 4, 2, 5, 8}, 1)), *ctx = R(RandN({1, 3, 24}, 2));
    vt_tensor *ts = R(I64({500}));
    EXPECT_EQ(vt_unet3d_forward(m.u, x, ts, ctx, nullptr, 0), nullptr);
    EXPECT_EQ(vt_error_code(), VT_ERR_SHAPE);
    EXPECT_NE(std::strstr(vt_error_message(), "latent size 5x8"), nullptr) << vt_error_message();
    EXPECT_NE(std::strstr(vt_error_message(), "multiples of 2"), nullptr) << vt_error_message();
    EXPECT_NE(std::strstr(vt_error_message(), "nearest: 4 or 6"), nullptr) << vt_error_message();
    // full size: 8x downsampling
    vt_unet3d_config c = vt_unet3d_config_videocrafter2();
    EXPECT_EQ(vt_unet3d_downsampling(&c), 8);
    // wrong channel count / context width
    vt_tensor *x3 = R(RandN({1, 3, 2, 4, 4}, 1));
    EXPECT_EQ(vt_unet3d_forward(m.u, x3, ts, ctx, nullptr, 0), nullptr);
    EXPECT_NE(std::strstr(vt_error_message(), "must be f32 [B, 4, T, H, W]"), nullptr) << vt_error_message();
    vt_tensor *x4 = R(RandN({1, 4, 2, 4, 4}, 1)), *ctx2 = R(RandN({1, 3, 16}, 2));
    EXPECT_EQ(vt_unet3d_forward(m.u, x4, ts, ctx2, nullptr, 0), nullptr);
    EXPECT_NE(std::strstr(vt_error_message(), "context [1, 3, 16] must be [1, L, 24]"), nullptr) << vt_error_message();
}

// Over lvdm's own defaults (the fixture checks' base): a json leaving out use_relative_position
// gets lvdm's true, and a build without the temporal_length its tables need is refused; num_heads (with num_head_channels -1) and
// temporal_transformer_depth are read; unimplemented UNetModel options are refused by name.
TEST(Unet3d, ConfigFromJsonOverLvdmDefaults) {
    const char *base = "\"in_channels\": 4, \"out_channels\": 4, \"model_channels\": 32, \"num_res_blocks\": 1, "
                       "\"attention_resolutions\": [1], \"channel_mult\": [1, 2], \"context_dim\": 8";
    std::string j = std::string("{") + base + ", \"num_heads\": 2}";
    cJSON *o = cJSON_Parse(j.c_str());
    ASSERT_NE(o, nullptr);
    vt_unet3d_config c = vt_unet3d_config_lvdm_defaults();
    ASSERT_VT_OK(vt_unet3d_config_from_json(o, &c));
    EXPECT_EQ(c.use_relative_position, 1);  // lvdm's default
    vt_unet3d *bad = vt_unet3d_build_random(&c, 1);
    EXPECT_EQ(bad, nullptr);
    EXPECT_NE(std::strstr(vt_error_message(), "temporal_length"), nullptr) << vt_error_message();
    vt_unet3d_free(bad);
    cJSON_Delete(o);
    j = std::string("{") + base +
        ", \"num_heads\": 2, \"num_head_channels\": -1, \"temporal_transformer_depth\": 2, "
        "\"use_relative_position\": false}";
    o = cJSON_Parse(j.c_str());
    c = vt_unet3d_config_lvdm_defaults();
    ASSERT_VT_OK(vt_unet3d_config_from_json(o, &c));
    EXPECT_EQ(c.num_heads, 2);
    EXPECT_EQ(c.num_head_channels, -1);
    EXPECT_EQ(c.temporal_transformer_depth, 2);
    EXPECT_EQ(c.transformer_depth, 1);
    EXPECT_EQ(c.fps_cond, 0);  // lvdm's default
    vt_unet3d *u = vt_unet3d_build_random(&c, 1);
    EXPECT_NE(u, nullptr) << vt_error_message();
    vt_unet3d_free(u);
    cJSON_Delete(o);
    for (const char *opt : {"\"use_scale_shift_norm\": true", "\"resblock_updown\": true", "\"conv_resample\": false",
                            "\"dims\": 3"}) {
        j = std::string("{") + base + ", \"num_head_channels\": 16, \"use_relative_position\": false, " + opt + "}";
        o = cJSON_Parse(j.c_str());
        ASSERT_NE(o, nullptr);
        c = vt_unet3d_config_lvdm_defaults();
        EXPECT_NE(vt_unet3d_config_from_json(o, &c), VT_OK) << opt;
        std::string name(opt + 1, std::strchr(opt + 1, '"'));
        EXPECT_NE(std::strstr(vt_error_message(), name.c_str()), nullptr) << vt_error_message();
        cJSON_Delete(o);
    }
}

TEST(Unet3d, ConfigFromJsonRejectsMissingFeatures) {
    cJSON *o = cJSON_Parse("{\"model_channels\": 64, \"channel_mult\": [1, 2, 3], \"tempspatial_aware\": true}");
    ASSERT_NE(o, nullptr);
    vt_unet3d_config c = vt_unet3d_config_videocrafter2();
    EXPECT_NE(vt_unet3d_config_from_json(o, &c), VT_OK);
    EXPECT_NE(std::strstr(vt_error_message(), "tempspatial_aware"), nullptr) << vt_error_message();
    cJSON_Delete(o);
    o = cJSON_Parse("{\"model_channels\": 64, \"channel_mult\": [1, 2, 3]}");
    c = vt_unet3d_config_videocrafter2();
    ASSERT_VT_OK(vt_unet3d_config_from_json(o, &c));
    EXPECT_EQ(c.model_channels, 64);
    EXPECT_EQ(c.n_levels, 3);
    EXPECT_EQ(c.channel_mult[2], 3);
    EXPECT_EQ(c.context_dim, 1024);  // kept
    cJSON_Delete(o);
    // options at a non-default value this UNet does not have fail by name
    o = cJSON_Parse("{\"use_scale_shift_norm\": true}");
    c = vt_unet3d_config_videocrafter2();
    EXPECT_NE(vt_unet3d_config_from_json(o, &c), VT_OK);
    EXPECT_NE(std::strstr(vt_error_message(), "use_scale_shift_norm"), nullptr) << vt_error_message();
    cJSON_Delete(o);
}

// lvdm's other head / depth / temporal options: heads by count (num_head_channels -1), the
// temporal transformers' own depth, causal and cross temporal attention.
TEST(Unet3d, ConfigFromJsonReadsHeadsDepthsAndTemporalModes) {
    cJSON *o = cJSON_Parse("{\"model_channels\": 64, \"num_head_channels\": -1, \"num_heads\": 4, "
                           "\"transformer_depth\": 2, \"temporal_transformer_depth\": 3, \"use_causal_attention\": true, "
                           "\"temporal_length\": 16, \"temporal_selfatt_only\": false, \"addition_attention\": false, "
                           "\"use_relative_position\": true}");
    ASSERT_NE(o, nullptr);
    vt_unet3d_config c = vt_unet3d_config_videocrafter2();
    ASSERT_VT_OK(vt_unet3d_config_from_json(o, &c));
    cJSON_Delete(o);
    int heads = 0, dh = 0;
    vt_unet3d_heads(&c, 128, &heads, &dh);
    EXPECT_EQ(heads, 4);
    EXPECT_EQ(dh, 32);
    EXPECT_EQ(c.transformer_depth, 2);
    EXPECT_EQ(vt_unet3d_temporal_depth(&c), 3);
    EXPECT_TRUE(c.use_causal_attention);
    EXPECT_EQ(c.temporal_length, 16);
    EXPECT_FALSE(c.temporal_selfatt_only);
    EXPECT_TRUE(c.use_relative_position);
    EXPECT_FALSE(vt_unet3d_config_videocrafter2().use_relative_position);
    // relative positions need lvdm's temporal_length (tables of 2 temporal_length + 1 rows)
    {
        vt_unet3d_config r = c;
        r.num_head_channels = 32;
        r.temporal_length = 0;
        EXPECT_EQ(vt_unet3d_build_random(&r, 1), nullptr);
        EXPECT_NE(std::strstr(vt_error_message(), "use_relative_position needs temporal_length"), nullptr)
            << vt_error_message();
    }
    // init_attn takes d_head = num_head_channels: without one the model cannot be built
    c.addition_attention = 1;
    EXPECT_EQ(vt_unet3d_build_random(&c, 1), nullptr);
    EXPECT_NE(std::strstr(vt_error_message(), "addition_attention"), nullptr) << vt_error_message();
}

// Upstream-made cases with other configs (tests/fixtures, scripts/make_lvdm_variant_fixtures.py):
// one level at odd sizes, init_attn / spatial depth 2 with temporal depth 1, causal temporal
// attention with relative positions, Conv projections, 6 -> 3 channels.
TEST(Unet3d, VariantFixtureMatches) {
    vt_fixture_opts opt = vt_fixture_opts_default();
    vt_fixture_report rep{};
    std::string path = std::string(VADER_SOURCE_DIR) + "/tests/fixtures/vc2_unet_depth_causal_relpos_tiny";
    ASSERT_VT_OK(vt_fixture_run(path.c_str(), &opt, &rep));
    int n_tables = 0;
    for (int i = 0; i < rep.n; i++) {
        EXPECT_TRUE(rep.r[i].ok) << rep.r[i].name << " " << rep.r[i].note;
        n_tables += std::strstr(rep.r[i].name, ".embeddings_table") != nullptr;
    }
    // init_attn (depth 2) + 4 block temporal transformers (input, middle, 2 output blocks) of
    // depth 1; 2 attentions per block, k and v tables
    EXPECT_EQ(n_tables, (2 + 4) * 2 * 2);
    EXPECT_EQ(rep.n_fail, 0);
    vt_fixture_report_free(&rep);
}

// Temporal cross-attention on the text (temporal_selfatt_only false) has no upstream gradient
// (lvdm writes x[j] = block(x[j]) in place, which autograd refuses): its backward is checked
// against finite differences instead, on a random tiny UNet (init_attn and the block temporal
// transformer both cross), without and with relative positions (whose attn2 table is indexed
// by text token against frame). LoRA A / B of the temporal attn2 to_k / to_v (fed by the
// context) and attn1 to_q, the context and x; then checkpoint segments give the same bits.
TEST(Unet3d, TemporalCrossAttentionGradientsMatchFiniteDifferences) {
    for (int relpos = 0; relpos <= 1; relpos++) {
        SCOPED_TRACE(relpos ? "with relative positions" : "without relative positions");
        vt_unet3d_config c = vt_unet3d_config_videocrafter2();
        c.model_channels = 32;
        c.n_levels = 1;
        c.channel_mult[0] = 1;
        c.n_attention_resolutions = 1;
        c.attention_resolutions[0] = 1;
        c.num_res_blocks = 1;
        c.num_head_channels = 16;
        c.context_dim = 8;
        c.temporal_conv = 0;
        c.temporal_selfatt_only = 0;
        c.temporal_length = 2;
        c.use_relative_position = relpos;
        vt_unet3d *u = vt_unet3d_build_random(&c, 17 + relpos);
        ASSERT_VT(u);
        if (relpos) {  // the tables by their checkpoint names: [2 temporal_length + 1, d_head]
            const char *rk = "input_blocks.1.2.transformer_blocks.0.attn2.relative_position_k.embeddings_table";
            const char *rv = "init_attn.0.transformer_blocks.0.attn1.relative_position_v.embeddings_table";
            const char *spatial = "input_blocks.1.1.transformer_blocks.0.attn1.relative_position_k.embeddings_table";
            vt_tensor *tk = vt_unet3d_param(u, rk), *tv = vt_unet3d_param(u, rv);
            ASSERT_NE(tk, nullptr);
            ASSERT_NE(tv, nullptr);
            EXPECT_EQ(tk->shape[0], 5);
            EXPECT_EQ(tk->shape[1], 16);
            EXPECT_EQ(vt_unet3d_param(u, spatial), nullptr);  // spatial transformers have none
        }
        vt_unet3d_lora_config lc = {2, 2.0f, VT_LORA_TO_Q | VT_LORA_TO_K | VT_LORA_TO_V, 3};
        ASSERT_VT_OK(vt_unet3d_add_lora(u, &lc));
        FillLoraB(u, 23, 0.1f);
        Releaser R;
        // T 2 frames, 2x2 latent (H*W a multiple of T: pixel p reads frame p / 2's context), 3 tokens
        vt_tensor *x = R(RandN({1, 4, 2, 2, 2}, 1)), *ctx = R(RandN({1, 3, 8}, 2));
        vt_tensor *ts = R(I64({400})), *fps = R(I64({24}));
        std::vector<vt_tensor *> params;
        const char *want[] = {"init_attn.0.transformer_blocks.0.attn2.to_k.lora_A",
                              "input_blocks.1.2.transformer_blocks.0.attn2.to_v.lora_B",
                              "middle_block.2.transformer_blocks.0.attn2.to_k.lora_B",
                              "output_blocks.0.2.transformer_blocks.0.attn1.to_q.lora_A"};
        for (const char *w : want)
            for (int i = 0; i < vt_unet3d_n_lora(u); i++) {
                const char *name;
                vt_tensor *p = vt_unet3d_lora_param(u, i, &name);
                if (std::strstr(name, w)) params.push_back(p);
            }
        ASSERT_EQ(params.size(), 4u);
        vt_requires_grad(ctx, 1);
        params.push_back(ctx);
        GradCheckOptions o;
        o.eps = 1e-2;
        o.max_elems = 8;
        o.rtol = 2e-2;
        o.atol = 1e-4;
        auto fwd = [&](const std::vector<vt_tensor *> &) { return vt_unet3d_forward(u, x, ts, ctx, fps, 0); };
        ExpectGradsMatch(fwd, params, o);
        // x: a 2x2 latent puts 4 values in a GroupNorm group (strong curvature): a smaller step
        vt_requires_grad(x, 1);
        o.eps = 2e-3;
        ExpectGradsMatch(fwd, {x}, o);
        // (what a gradcheck did not probe kept its gradients)
        for (int i = 0; i < vt_unet3d_n_lora(u); i++) vt_zero_grad(vt_unet3d_lora_param(u, i, nullptr));
        vt_zero_grad(ctx);
        vt_zero_grad(x);
        size_t s0 = 0, s1 = 0;
        vt_tensor *cot = R(RandN({1, 4, 2, 2, 2}, 4));
        auto g0 = RunGrads(u, 0, x, ts, ctx, fps, cot, &s0);
        auto g1 = RunGrads(u, 1, x, ts, ctx, fps, cot, &s1);
        ASSERT_EQ(g0.size(), g1.size());
        for (size_t i = 0; i < g0.size(); i++) {
            double dmax = 0, gmax = 0;
            for (size_t k = 0; k < g0[i].size(); k++) {
                dmax = std::max(dmax, (double)std::fabs(g0[i][k] - g1[i][k]));
                gmax = std::max(gmax, (double)std::fabs(g0[i][k]));
            }
            EXPECT_EQ(0, std::memcmp(g0[i].data(), g1[i].data(), g0[i].size() * sizeof(float)))
                << "gradient " << i << ": max diff " << dmax << " of max " << gmax;
        }
        vt_unet3d_free(u);
    }
}

// model.dtype bf16 / fp16: every Linear / Conv weight stored 16-bit (norms, biases, the
// relative-position tables and LoRA stay f32); the output and every gradient (x, context,
// LoRA) track the f32 model within the format's precision, and differ from it (the ops really
// round). Measured: output 1.5e-2 (bf16) / 1.8e-3 (f16) max-relative, worst gradient 7.7e-2 /
// 1.1e-2 relative L2 (a LoRA gradient whose upstream gradient went through ~20 rounded GEMM
// backwards); the 8x between them is the formats' 3 bits of mantissa, so precision, not a bug.
// The merge skips 16-bit weights, so the untaped fast path stays the unmerged one.
TEST(Unet3d, HalfPrecisionWeightsTrackFp32) {
    for (vt_dtype dt : {VT_BF16, VT_F16}) {
        SCOPED_TRACE(vt_dtype_name(dt));
        LoraCase c;
        ASSERT_TRUE(c.ok) << vt_error_message();
        auto &m = c.m;
        Releaser R;
        vt_tensor *x = c.x, *ctx = c.ctx, *cot = c.cot, *ts = c.ts, *fps = c.fps;
        ASSERT_TRUE(c.Reference()) << vt_error_message();
        vt_tensor *ref = c.ref;
        const auto &g_ref = c.g_ref;
        size_t saved = 0;
        vt_requires_grad(x, 0);
        vt_requires_grad(ctx, 0);

        ASSERT_VT_OK(vt_unet3d_set_weight_dtype(m.u, dt));
        int n16 = 0;
        for (int i = 0; i < vt_unet3d_n_weights(m.u); i++) {
            const char *name;
            vt_tensor *w = vt_unet3d_weight(m.u, i, &name);
            std::string n(name);
            bool gemm = w->ndim >= 2 && n.size() > 7 && n.compare(n.size() - 7, 7, ".weight") == 0 &&
                        n.find("relative_position") == std::string::npos;
            EXPECT_EQ(w->dtype, gemm ? dt : VT_F32) << n;
            n16 += gemm;
        }
        EXPECT_GT(n16, 20);
        for (int i = 0; i < vt_unet3d_n_lora(m.u); i++) EXPECT_EQ(vt_unet3d_lora_param(m.u, i, nullptr)->dtype, VT_F32);

        const double tol = dt == VT_BF16 ? 3e-2 : 4e-3;
        vt_tensor *out = R(vt_unet3d_forward(m.u, x, ts, ctx, fps, 0));
        ASSERT_VT(out);
        EXPECT_GT(vt_rel_err(out, ref), 1e-6) << "the weights were not rounded";
        EXPECT_LT(vt_rel_err(out, ref), tol);
        // merged + cached untaped path: the merge skips 16-bit weights, same output
        ASSERT_VT_OK(vt_unet3d_lora_merge(m.u));
        ASSERT_VT_OK(vt_unet3d_cache_context(m.u, ctx));
        vt_tensor *fast = R(vt_unet3d_forward(m.u, x, ts, ctx, fps, 0));
        ASSERT_VT(fast);
        EXPECT_LT(vt_rel_err(fast, out), 1e-5);
        ASSERT_VT_OK(vt_unet3d_cache_context(m.u, nullptr));
        vt_unet3d_lora_unmerge(m.u);

        vt_requires_grad(x, 1);
        vt_requires_grad(ctx, 1);
        auto g = RunGrads(m.u, 0, x, ts, ctx, fps, cot, &saved);
        ASSERT_EQ(g.size(), g_ref.size());
        double worst = 0;
        for (size_t i = 0; i < g.size(); i++) {
            double num = 0, den = 0;
            for (size_t k = 0; k < g[i].size(); k++) {
                num += (double)(g[i][k] - g_ref[i][k]) * (g[i][k] - g_ref[i][k]);
                den += (double)g_ref[i][k] * g_ref[i][k];
            }
            worst = std::max(worst, std::sqrt(num / (den > 0 ? den : 1)));
        }
        printf("%s: output rel err %.2e, worst gradient rel L2 err %.2e\n", vt_dtype_name(dt), vt_rel_err(out, ref), worst);
        EXPECT_LT(worst, 4 * tol);
    }
}
