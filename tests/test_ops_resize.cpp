// test_ops_resize.cpp — resize (bilinear/bicubic, antialias off/on), timestep embedding,
// normalize_channels and cosine_similarity: forward values against torch
// (tests/data/resize_reference.h from scripts/make_resize_reference.py) and every backward
// against finite differences.
#include "testutil.h"
#include <cmath>
#include "data/resize_reference.h"

// The script's gen(): sin(0.7 i + 0.3 seed) + 0.5 cos(1.3 i + seed), in double, to float.
static vt_tensor *RefGen(std::vector<int64_t> shape, int seed) {
    vt_tensor *t = vt_empty(VT_F32, VT_CPU, (int)shape.size(), shape.data());
    float *p = vt_f32(t);
    for (int64_t i = 0; i < t->numel; i++)
        p[i] = (float)(std::sin(0.7 * (double)i + 0.3 * seed) + 0.5 * std::cos(1.3 * (double)i + seed));
    return t;
}

static vt_tensor *Resize(vt_tensor *x, int bicubic, int oh, int ow, int aa) {
    return bicubic ? vt_resize_bicubic(x, oh, ow, aa) : vt_resize_bilinear(x, oh, ow, aa);
}

static bool ShapeIs(const vt_tensor *t, std::vector<int64_t> shape) {
    return vt_shape_eq(t, (int)shape.size(), shape.data()) != 0;
}

static vt_tensor *Wrap(const float *data, std::vector<int64_t> shape) {
    return vt_from_f32((int)shape.size(), shape.data(), data);
}

TEST(Resize, MatchesTorchSmall) {
    for (const RefResize &c : kRefResize) {
        Releaser R;
        vt_tensor *x = R(RefGen({c.n, c.c, c.h, c.w}, c.seed));
        vt_tensor *y = R(Resize(x, c.bicubic, c.oh, c.ow, c.antialias));
        ASSERT_VT(y);
        ASSERT_TRUE(ShapeIs(y, {c.n, c.c, c.oh, c.ow}));
        vt_tensor *ref = R(Wrap(c.out, {c.n, c.c, c.oh, c.ow}));
        EXPECT_LT(RelErr(y, ref), 1e-5) << (c.bicubic ? "bicubic" : "bilinear") << " aa " << c.antialias << " "
                                        << c.h << "x" << c.w << " -> " << c.oh << "x" << c.ow;
    }
}

TEST(Resize, MatchesTorchRewardSizes) {
    for (const RefResizeBig &c : kRefResizeBig) {
        Releaser R;
        vt_tensor *x = R(RefGen({1, 1, c.h, c.w}, c.seed));
        vt_tensor *y = R(Resize(x, c.bicubic, c.oh, c.ow, c.antialias));
        ASSERT_VT(y);
        const float *py = vt_f32(y);
        double maxref = 0, sum = 0;
        for (float v : c.val) maxref = std::max(maxref, (double)std::fabs(v));
        for (int k = 0; k < 8; k++)
            EXPECT_NEAR(py[c.idx[k]], c.val[k], 1e-5 * maxref)
                << (c.bicubic ? "bicubic" : "bilinear") << " aa " << c.antialias << " " << c.h << "x" << c.w << " at "
                << c.idx[k];
        for (int64_t i = 0; i < y->numel; i++) sum += py[i];
        EXPECT_NEAR(sum, c.sum, 1e-5 * std::max(1.0, std::fabs(c.sum)) + 1e-6 * (double)y->numel);
    }
}

TEST(Resize, SameSizeIsIdentity) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 5, 6}, 1));
    for (int bc = 0; bc < 2; bc++)
        for (int aa = 0; aa < 2; aa++) {
            vt_tensor *y = R(Resize(x, bc, 5, 6, aa));
            ASSERT_VT(y);
            EXPECT_EQ(RelErr(y, x), 0.0);
        }
}

TEST(Resize, Gradients) {
    Releaser R;
    struct G { int bc, aa, h, w, oh, ow; } cases[] = {
        {0, 0, 4, 5, 7, 3}, {0, 1, 9, 7, 4, 3}, {1, 0, 4, 5, 7, 3}, {1, 1, 9, 7, 4, 3}, {1, 1, 3, 4, 6, 9},
        {0, 1, 6, 6, 6, 2},
    };
    for (const G &c : cases) {
        vt_tensor *x = R(RandN({2, 2, c.h, c.w}, 3));
        vt_requires_grad(x, 1);
        SCOPED_TRACE(testing::Message() << "bicubic " << c.bc << " aa " << c.aa << " " << c.h << "x" << c.w << " -> "
                                        << c.oh << "x" << c.ow);
        ExpectGradsMatch([&](auto &in) { return Resize(in[0], c.bc, c.oh, c.ow, c.aa); }, {x},
                         {.eps = 1e-2, .rtol = 1e-2, .atol = 1e-4, .max_elems = 80});
    }
}

TEST(Resize, Errors) {
    Releaser R;
    vt_tensor *x3 = R(RandN({2, 5, 6}, 1));
    EXPECT_EQ(vt_resize_bilinear(x3, 4, 4, 0), nullptr);
    EXPECT_NE(std::string(vt_error_message()).find("resize_bilinear"), std::string::npos) << vt_error_message();
    EXPECT_NE(std::string(vt_error_message()).find("[2, 5, 6]"), std::string::npos) << vt_error_message();
    vt_tensor *x = R(RandN({1, 1, 5, 6}, 1));
    EXPECT_EQ(vt_resize_bicubic(x, 0, 4, 1), nullptr);
    EXPECT_EQ(vt_resize_bicubic(nullptr, 4, 4, 1), nullptr);
}

TEST(TimestepEmbedding, MatchesTorch) {
    for (const RefTemb &c : kRefTemb) {
        Releaser R;
        vt_tensor *t;
        if (c.is_f32) {
            t = R(Wrap(c.t, {c.b}));
        } else {
            int64_t shape[1] = {c.b};
            t = R(vt_empty(VT_I64, VT_CPU, 1, shape));
            for (int i = 0; i < c.b; i++) vt_i64(t)[i] = (int64_t)c.t[i];
        }
        vt_tensor *e = R(vt_timestep_embedding(t, c.dim, c.max_period));
        ASSERT_VT(e);
        ASSERT_TRUE(ShapeIs(e, {c.b, c.dim}));
        vt_tensor *ref = R(Wrap(c.out, {c.b, c.dim}));
        EXPECT_LT(RelErr(e, ref), 1e-5) << "dim " << c.dim;
        if (c.dim % 2) {
            for (int i = 0; i < c.b; i++) EXPECT_EQ(vt_f32(e)[i * c.dim + c.dim - 1], 0.0f);
        }
    }
}

TEST(TimestepEmbedding, NoTapeNodeAndErrors) {
    Releaser R;
    vt_tensor *t = R(vt_full(VT_CPU, 1, std::vector<int64_t>{3}.data(), 5.0f));
    vt_requires_grad(t, 1);
    vt_tape *tape = vt_tape_begin();
    vt_tensor *e = R(vt_timestep_embedding(t, 4, 10000.0f));
    vt_tape_end(tape);
    ASSERT_VT(e);
    EXPECT_EQ(vt_tape_stats_get(tape).n_nodes, 0);
    EXPECT_EQ(e->requires_grad, 0);
    vt_tape_free(tape);
    vt_tensor *t2 = R(RandN({2, 2}, 1));
    EXPECT_EQ(vt_timestep_embedding(t2, 4, 10000.0f), nullptr);
    EXPECT_NE(std::string(vt_error_message()).find("timestep_embedding"), std::string::npos);
    EXPECT_EQ(vt_timestep_embedding(nullptr, 4, 10000.0f), nullptr);
}

TEST(NormalizeChannels, ValuesAndGradient) {
    Releaser R;
    const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f}, stdv[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    vt_tensor *x = R(RandU({2, 3, 4, 5}, 4, 0.0f, 1.0f));
    vt_tensor *y = R(vt_normalize_channels(x, mean, stdv));
    ASSERT_VT(y);
    for (int64_t i = 0; i < x->numel; i++) {
        int c = (int)((i / 20) % 3);
        EXPECT_FLOAT_EQ(vt_f32(y)[i], (vt_f32(x)[i] - mean[c]) / stdv[c]);
    }
    vt_requires_grad(x, 1);
    ExpectGradsMatch([&](auto &in) { return vt_normalize_channels(in[0], mean, stdv); }, {x});
    vt_tensor *x3 = R(RandN({3, 4, 5}, 1));
    EXPECT_EQ(vt_normalize_channels(x3, mean, stdv), nullptr);
    EXPECT_NE(std::string(vt_error_message()).find("normalize_channels"), std::string::npos);
}

TEST(CosineSimilarity, MatchesTorch) {
    for (const RefCosine &c : kRefCosine) {
        Releaser R;
        vt_tensor *a0 = R(RefGen({c.m, c.d}, c.seed_a));
        vt_tensor *a = R(vt_scale(a0, c.scale_a));
        vt_tensor *b = R(RefGen({c.m, c.d}, c.seed_b));
        vt_tensor *y = R(vt_cosine_similarity(a, b, c.eps));
        ASSERT_VT(y);
        ASSERT_TRUE(ShapeIs(y, {c.m}));
        vt_tensor *ref = R(Wrap(c.out, {c.m}));
        EXPECT_LT(RelErr(y, ref), 1e-5) << "case " << c.m << "x" << c.d << " eps " << c.eps;
    }
}

TEST(CosineSimilarity, Gradients) {
    Releaser R;
    vt_tensor *a = R(RandN({2, 3, 6}, 5));
    vt_tensor *b = R(RandN({2, 3, 6}, 6));
    vt_requires_grad(a, 1);
    vt_requires_grad(b, 1);
    ExpectGradsMatch([](auto &in) { return vt_cosine_similarity(in[0], in[1], 1e-8f); }, {a, b},
                     {.eps = 1e-3, .rtol = 1e-2, .atol = 1e-4});
    vt_tensor *a1 = R(RandN({7}, 8));
    vt_tensor *b1 = R(RandN({7}, 9));
    vt_requires_grad(a1, 1);
    vt_requires_grad(b1, 1);
    vt_tensor *y0 = R(vt_cosine_similarity(a1, b1, 1e-8f));
    ASSERT_VT(y0);
    EXPECT_EQ(y0->ndim, 0);
    ExpectGradsMatch([](auto &in) { return vt_cosine_similarity(in[0], in[1], 1e-8f); }, {a1, b1},
                     {.eps = 1e-3, .rtol = 1e-2, .atol = 1e-4});
    vt_tensor *c = R(RandN({2, 3, 5}, 6));
    EXPECT_EQ(vt_cosine_similarity(a, c, 1e-8f), nullptr);
    EXPECT_NE(std::string(vt_error_message()).find("cosine_similarity"), std::string::npos);
}
