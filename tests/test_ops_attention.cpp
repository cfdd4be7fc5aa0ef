// test_ops_attention.cpp — activations, GEGLU, dropout, softmax and multi-head attention:
// forward values against naive double-precision loops written here, backward against finite
// differences (and, for attention rows split into blocks, against the same attention composed
// of matmul / softmax / permute on the tape).
#include "testutil.h"
#include "core/ops/vmath.h"
#include <cmath>
#include <cstring>
#include <string>

namespace {

double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Naive attention in double: q [B, Lq, H*d], k, v [B, Lk, H*d] -> [B, Lq, H*d].
std::vector<double> NaiveAttention(const vt_tensor *q, const vt_tensor *k, const vt_tensor *v, int H, double scale,
                                   bool causal) {
    const int64_t B = q->shape[0], Lq = q->shape[1], Lk = k->shape[1], C = q->shape[2], d = C / H;
    const float *pq = vt_f32(q), *pk = vt_f32(k), *pv = vt_f32(v);
    std::vector<double> out(B * Lq * C, 0.0), s(Lk);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Lq; i++) {
                double mx = -1e300;
                for (int64_t j = 0; j < Lk; j++) {
                    double acc = 0;
                    for (int64_t c = 0; c < d; c++)
                        acc += (double)pq[(b * Lq + i) * C + h * d + c] * pk[(b * Lk + j) * C + h * d + c];
                    s[j] = (causal && j > i) ? -INFINITY : acc * scale;
                    mx = std::max(mx, s[j]);
                }
                double sum = 0;
                for (int64_t j = 0; j < Lk; j++) sum += (s[j] = std::exp(s[j] - mx));
                for (int64_t c = 0; c < d; c++) {
                    double acc = 0;
                    for (int64_t j = 0; j < Lk; j++) acc += s[j] / sum * pv[(b * Lk + j) * C + h * d + c];
                    out[(b * Lq + i) * C + h * d + c] = acc;
                }
            }
    return out;
}

double MaxRelErr(const vt_tensor *a, const std::vector<double> &ref) {
    EXPECT_EQ((size_t)a->numel, ref.size());
    double num = 0, den = 0;
    for (int64_t i = 0; i < a->numel; i++) {
        num = std::max(num, std::fabs(vt_f32(a)[i] - ref[i]));
        den = std::max(den, std::fabs(ref[i]));
    }
    return num / std::max(den, 1e-30);
}

// The same attention composed from tape ops (independent of the fused kernel): per head,
// softmax(q_h k_h^T * scale + mask) v_h, heads concatenated back along the channel dim.
vt_tensor *ComposedAttention(vt_tensor *q, vt_tensor *k, vt_tensor *v, int H, float scale, bool causal) {
    const int64_t Lq = q->shape[1], Lk = k->shape[1], d = q->shape[2] / H;
    vt_tensor *mask = nullptr;
    if (causal) {
        const int64_t ms[2] = {Lq, Lk};
        mask = vt_new_f32(2, ms);
        for (int64_t i = 0; i < Lq; i++)
            for (int64_t j = i + 1; j < Lk; j++) vt_f32(mask)[i * Lk + j] = -1e30f;
    }
    std::vector<vt_tensor *> heads;
    const int perm[3] = {0, 2, 1};
    for (int h = 0; h < H; h++) {
        vt_tensor *qh = vt_slice(q, 2, h * d, d), *kh = vt_slice(k, 2, h * d, d), *vh = vt_slice(v, 2, h * d, d);
        vt_tensor *kt = vt_permute(kh, 3, perm);
        vt_tensor *s = vt_matmul(qh, kt);
        vt_tensor *ss = vt_scale(s, scale);
        vt_tensor *sm = mask ? vt_add(ss, mask) : vt_retain(ss);
        vt_tensor *p = vt_softmax(sm);
        heads.push_back(vt_matmul(p, vh));
        for (auto *t : {qh, kh, vh, kt, s, ss, sm, p}) vt_release(t);
    }
    vt_tensor *out = vt_concat(heads.data(), H, 2);
    for (auto *t : heads) vt_release(t);
    vt_release(mask);
    return out;
}

}  // namespace

// ---- activations -------------------------------------------------------------------------
TEST(Activation, ForwardMatchesNaive) {
    Releaser R;
    vt_tensor *x = R(RandN({3, 7}, 1, 3.0f));
    vt_f32(x)[0] = 90.0f;  // far tails stay finite
    vt_f32(x)[1] = -90.0f;
    struct Case {
        vt_tensor *(*fn)(vt_tensor *);
        double (*ref)(double);
    } cases[] = {
        {vt_silu, [](double v) { return v * Sigmoid(v); }},
        {vt_sigmoid, [](double v) { return Sigmoid(v); }},
        {vt_gelu, [](double v) { return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))); }},
        {vt_quick_gelu, [](double v) { return v * Sigmoid(1.702 * v); }},
    };
    for (const Case &c : cases) {
        vt_tensor *y = R(c.fn(x));
        ASSERT_VT(y);
        ASSERT_TRUE(vt_same_shape(x, y));
        for (int64_t i = 0; i < x->numel; i++) {
            double ref = c.ref(vt_f32(x)[i]);
            EXPECT_NEAR(vt_f32(y)[i], ref, 1e-6 + 1e-6 * std::fabs(ref)) << "element " << i;
        }
    }
}

// vmath.h against double-precision libm on a dense sweep of floats (about 30 per binade
// and sign), through the header's scalar functions and through the ops (whose kernels run the
// same functions vectorised, possibly with FMA contraction).
TEST(Activation, VectorMathAccuracy) {
    std::vector<float> xs;
    for (float x = 1e-30f; x < 100.0f; x *= 1.0235f) {
        xs.push_back(x);
        xs.push_back(-x);
    }
    xs.push_back(0.0f);
    double e_exp = 0, e_erf = 0, e_cdf = 0, e_dg = 0;
    for (float x : xs) {
        const double xd = x;
        if (x >= -86.9f && x <= 88.7f) e_exp = std::max(e_exp, std::fabs(vt_expf(x) - std::exp(xd)) / std::exp(xd));
        if (std::fabs(x) > 1e-30f) e_erf = std::max(e_erf, std::fabs(vt_erff(x) - std::erf(xd)) / std::fabs(std::erf(xd)));
        const double cdf = 0.5 * std::erfc(-xd / std::sqrt(2.0));
        if (cdf > 1e-37) e_cdf = std::max(e_cdf, std::fabs(vt_normcdf(x) - cdf) / cdf);
        const double dg = cdf + xd * std::exp(-0.5 * xd * xd) / std::sqrt(2.0 * M_PI);  // gelu'
        e_dg = std::max(e_dg, std::fabs(vt_gelu_gradf(x) - dg));
    }
    EXPECT_LT(e_exp, 2.5e-7);
    EXPECT_LT(e_erf, 2.5e-7);
    EXPECT_LT(e_cdf, 8e-7);  // relative in the lower tail too (erfc form there, no 1 - erf)
    EXPECT_LT(e_dg, 2e-7);
    EXPECT_EQ(vt_expf(INFINITY), INFINITY);
    EXPECT_EQ(vt_expf(-INFINITY), 0.0f);
    EXPECT_EQ(vt_expf(89.0f), INFINITY);
    EXPECT_TRUE(std::isnan(vt_expf(NAN)));
    EXPECT_TRUE(std::isnan(vt_erff(NAN)));
    EXPECT_EQ(vt_erff(INFINITY), 1.0f);
    EXPECT_EQ(vt_erff(-INFINITY), -1.0f);
    EXPECT_EQ(vt_normcdf(-INFINITY), 0.0f);
    EXPECT_EQ(vt_sigmoidf(-200.0f), 0.0f);
    EXPECT_EQ(vt_sigmoidf(200.0f), 1.0f);

    // the same sweep through the ops' vector kernels
    Releaser R;
    const int64_t n = (int64_t)xs.size();
    vt_tensor *x = R(vt_from_f32(1, &n, xs.data()));
    vt_tensor *gl = R(vt_gelu(x)), *sl = R(vt_silu(x));
    ASSERT_VT(gl);
    ASSERT_VT(sl);
    for (int64_t i = 0; i < n; i++) {
        const double xd = xs[i], cdf = 0.5 * std::erfc(-xd / std::sqrt(2.0));
        EXPECT_NEAR(vt_f32(gl)[i], xd * cdf, 1e-6 * std::fabs(xd * cdf) + 1e-37) << "gelu(" << xs[i] << ")";
        // silu: e^-x overflows below x = -88.7, where silu(x) < 1e-36 comes out as 0
        EXPECT_NEAR(vt_f32(sl)[i], xd * Sigmoid(xd), 1e-6 * std::fabs(xd * Sigmoid(xd)) + 1e-36) << "silu(" << xs[i] << ")";
    }
}

TEST(Activation, Gradients) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 5}, 2, 2.0f));
    vt_requires_grad(x, 1);
    ExpectGradsMatch([](auto &in) { return vt_silu(in[0]); }, {x});
    ExpectGradsMatch([](auto &in) { return vt_sigmoid(in[0]); }, {x});
    ExpectGradsMatch([](auto &in) { return vt_gelu(in[0]); }, {x});
    ExpectGradsMatch([](auto &in) { return vt_quick_gelu(in[0]); }, {x});
}

TEST(Activation, GegluForwardAndGradient) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 8}, 3, 1.5f));
    vt_tensor *y = R(vt_geglu(x));
    ASSERT_VT(y);
    ASSERT_EQ(y->ndim, 3);
    EXPECT_EQ(y->shape[2], 4);
    for (int64_t m = 0; m < 6; m++)
        for (int64_t j = 0; j < 4; j++) {
            double a = vt_f32(x)[m * 8 + j], g = vt_f32(x)[m * 8 + 4 + j];
            double ref = a * 0.5 * g * (1.0 + std::erf(g / std::sqrt(2.0)));
            EXPECT_NEAR(vt_f32(y)[m * 4 + j], ref, 1e-5 * (1 + std::fabs(ref)));
        }
    vt_requires_grad(x, 1);
    ExpectGradsMatch([](auto &in) { return vt_geglu(in[0]); }, {x});
    vt_tensor *odd = R(RandN({2, 5}, 4));
    EXPECT_EQ(vt_geglu(odd), nullptr);
    EXPECT_NE(std::strstr(vt_error_message(), "geglu: input [2, 5]"), nullptr) << vt_error_message();
    EXPECT_EQ(vt_gelu(nullptr), nullptr);
}

// ---- dropout -----------------------------------------------------------------------------
TEST(Dropout, DeterministicMaskAndScale) {
    Releaser R;
    vt_tensor *x = R(RandU({4, 1000}, 5, 0.5f, 1.5f));  // no zeros: a zero output means dropped
    const float p = 0.3f;
    vt_tensor *a = R(vt_dropout(x, p, 42)), *b = R(vt_dropout(x, p, 42)), *c = R(vt_dropout(x, p, 43));
    ASSERT_VT(a);
    ASSERT_VT(b);
    ASSERT_VT(c);
    EXPECT_EQ(0, std::memcmp(vt_data(a), vt_data(b), vt_nbytes(a)));  // same seed, same mask
    int64_t dropped = 0, differ = 0;
    for (int64_t i = 0; i < x->numel; i++) {
        float va = vt_f32(a)[i], vx = vt_f32(x)[i];
        if (va == 0.0f) dropped++;
        else EXPECT_FLOAT_EQ(va, vx / (1.0f - p));
        differ += (va == 0.0f) != (vt_f32(c)[i] == 0.0f);
    }
    EXPECT_NEAR((double)dropped / x->numel, p, 0.03);
    EXPECT_GT(differ, x->numel / 10);  // another seed, another mask
    // p == 0 is the identity, the same tensor
    vt_tensor *id = R(vt_dropout(x, 0.0f, 1));
    EXPECT_EQ(id, x);
    EXPECT_EQ(vt_dropout(x, 1.5f, 1), nullptr);
    EXPECT_NE(std::strstr(vt_error_message(), "dropout: p = 1.5"), nullptr) << vt_error_message();
}

TEST(Dropout, GradientUsesTheSameMask) {
    Releaser R;
    vt_tensor *x = R(RandN({3, 20}, 6));
    vt_requires_grad(x, 1);
    ExpectGradsMatch([](auto &in) { return vt_dropout(in[0], 0.4f, 1234); }, {x});
    // the gradient is zero exactly where the output was dropped
    vt_tape *t = vt_tape_begin();
    vt_tensor *y = R(vt_dropout(x, 0.4f, 99));
    vt_tape_end(t);
    ASSERT_VT(y);
    ASSERT_VT_OK(vt_backward(t, y, nullptr));
    vt_tape_free(t);
    for (int64_t i = 0; i < x->numel; i++)
        EXPECT_EQ(vt_f32(x->grad)[i], vt_f32(y)[i] == 0.0f ? 0.0f : 1.0f / 0.6f);
    vt_zero_grad(x);
}

// ---- softmax -----------------------------------------------------------------------------
TEST(Softmax, ForwardStableAndGradient) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 6}, 7, 2.0f));
    vt_f32(x)[0] = 1000.0f;  // would overflow exp without the max shift
    vt_tensor *y = R(vt_softmax(x));
    ASSERT_VT(y);
    for (int64_t r = 0; r < 6; r++) {
        const float *xr = vt_f32(x) + r * 6;
        double mx = -1e300, s = 0;
        for (int j = 0; j < 6; j++) mx = std::max(mx, (double)xr[j]);
        for (int j = 0; j < 6; j++) s += std::exp(xr[j] - mx);
        for (int j = 0; j < 6; j++) EXPECT_NEAR(vt_f32(y)[r * 6 + j], std::exp(xr[j] - mx) / s, 1e-7);
    }
    vt_tensor *x2 = R(RandN({4, 5}, 8));
    vt_requires_grad(x2, 1);
    ExpectGradsMatch([](auto &in) { return vt_softmax(in[0]); }, {x2});
}

// ---- attention ---------------------------------------------------------------------------
struct AttnCase {
    int64_t B, Lq, Lk;
    int H;
    int64_t d;
    bool causal;
};
void PrintTo(const AttnCase &c, std::ostream *os) {
    *os << "B=" << c.B << " Lq=" << c.Lq << " Lk=" << c.Lk << " H=" << c.H << " d=" << c.d << (c.causal ? " causal" : "");
}

class Attention : public ::testing::TestWithParam<AttnCase> {};

TEST_P(Attention, ForwardMatchesNaiveAndGradients) {
    const AttnCase c = GetParam();
    Releaser R;
    const int64_t C = c.H * c.d;
    vt_tensor *q = R(RandN({c.B, c.Lq, C}, 11)), *k = R(RandN({c.B, c.Lk, C}, 12)), *v = R(RandN({c.B, c.Lk, C}, 13));
    const float scale = 1.0f / std::sqrt((float)c.d);
    vt_tensor *o = R(vt_attention(q, k, v, c.H, scale, c.causal));
    ASSERT_VT(o);
    ASSERT_TRUE(vt_same_shape(o, q));
    EXPECT_LT(MaxRelErr(o, NaiveAttention(q, k, v, c.H, scale, c.causal)), 1e-5);
    for (auto *t : {q, k, v}) vt_requires_grad(t, 1);
    const int H = c.H;
    const bool causal = c.causal;
    ExpectGradsMatch([=](auto &in) { return vt_attention(in[0], in[1], in[2], H, scale, causal); }, {q, k, v});
}

INSTANTIATE_TEST_SUITE_P(Shapes, Attention,
                         ::testing::Values(AttnCase{2, 5, 7, 2, 3, false},   // Lq < Lk, two heads
                                           AttnCase{1, 6, 4, 3, 2, false},   // Lq > Lk, three heads
                                           AttnCase{2, 6, 6, 2, 4, true},    // causal self-attention
                                           AttnCase{1, 7, 4, 2, 3, true},    // causal, rows past Lk see all
                                           AttnCase{1, 3, 8, 1, 5, true},    // causal, Lq < Lk
                                           // the direct small-attention kernels (Lk <= 16, d a multiple of
                                           // 8): row blocks of 4 with a short last block, keys padded to 8
                                           AttnCase{2, 5, 7, 2, 8, false},
                                           AttnCase{1, 6, 6, 3, 8, true},
                                           AttnCase{3, 16, 16, 2, 16, false},
                                           AttnCase{1, 9, 13, 1, 24, true},
                                           // the BLAS row-block path (more keys, or d not a multiple of 8)
                                           AttnCase{2, 50, 60, 2, 3, false},
                                           AttnCase{1, 60, 45, 2, 8, true}),
                         [](const ::testing::TestParamInfo<AttnCase> &i) {
                             const AttnCase &c = i.param;
                             return "B" + std::to_string(c.B) + "_Lq" + std::to_string(c.Lq) + "_Lk" +
                                    std::to_string(c.Lk) + "_H" + std::to_string(c.H) + "_d" + std::to_string(c.d) +
                                    (c.causal ? "_causal" : "");
                         });

TEST(AttentionOp, OnlyRequestedGradients) {
    // v alone, then q alone: the kernel skips the dP / dS work it does not need
    Releaser R;
    vt_tensor *q = R(RandN({1, 4, 6}, 21)), *k = R(RandN({1, 5, 6}, 22)), *v = R(RandN({1, 5, 6}, 23));
    vt_requires_grad(v, 1);
    ExpectGradsMatch([](auto &in) { return vt_attention(in[0], in[1], in[2], 2, 0.4f, 0); }, {q, k, v});
    EXPECT_EQ(q->grad, nullptr);
    vt_requires_grad(v, 0);
    vt_requires_grad(q, 1);
    ExpectGradsMatch([](auto &in) { return vt_attention(in[0], in[1], in[2], 3, 0.4f, 1); }, {q, k, v});
    vt_requires_grad(q, 0);
    // the same through the direct small kernels (d = 8)
    vt_tensor *q8 = R(RandN({2, 5, 16}, 24)), *k8 = R(RandN({2, 6, 16}, 25)), *v8 = R(RandN({2, 6, 16}, 26));
    vt_requires_grad(v8, 1);
    ExpectGradsMatch([](auto &in) { return vt_attention(in[0], in[1], in[2], 2, 0.4f, 0); }, {q8, k8, v8});
    EXPECT_EQ(q8->grad, nullptr);
    EXPECT_EQ(k8->grad, nullptr);
    vt_requires_grad(v8, 0);
    vt_requires_grad(k8, 1);
    ExpectGradsMatch([](auto &in) { return vt_attention(in[0], in[1], in[2], 2, 0.4f, 1); }, {q8, k8, v8});
    EXPECT_EQ(v8->grad, nullptr);
}

TEST(AttentionOp, BlockedRowsMatchComposedOps) {
    // Lq * Lk above the kernel's block (256K scores): rows are processed in several blocks in both
    // passes. Values and all three gradients against the same attention composed of tape ops.
    Releaser R;
    const int64_t Lq = 300, Lk = 1024, C = 8;  // rows in blocks of 256 and 44
    const int H = 2;
    vt_tensor *q = R(RandN({1, Lq, C}, 31)), *k = R(RandN({1, Lk, C}, 32)), *v = R(RandN({1, Lk, C}, 33));
    vt_tensor *g = R(RandN({1, Lq, C}, 34));
    for (bool causal : {false, true}) {
        std::vector<std::vector<float>> grads[2];
        vt_tensor *outs[2];
        for (int impl = 0; impl < 2; impl++) {
            for (auto *t : {q, k, v}) vt_requires_grad(t, 1);
            vt_tape *t = vt_tape_begin();
            outs[impl] = R(impl ? ComposedAttention(q, k, v, H, 0.5f, causal) : vt_attention(q, k, v, H, 0.5f, causal));
            vt_tape_end(t);
            ASSERT_VT(outs[impl]);
            ASSERT_VT_OK(vt_backward(t, outs[impl], g));
            vt_tape_free(t);
            for (auto *x : {q, k, v}) {
                grads[impl].emplace_back(vt_f32(x->grad), vt_f32(x->grad) + x->numel);
                vt_zero_grad(x);
            }
        }
        EXPECT_LT(RelErr(outs[0], outs[1]), 1e-5) << "causal " << causal;
        for (int i = 0; i < 3; i++) {
            double num = 0, den = 0;
            for (size_t j = 0; j < grads[0][i].size(); j++) {
                num = std::max(num, (double)std::fabs(grads[0][i][j] - grads[1][i][j]));
                den = std::max(den, (double)std::fabs(grads[1][i][j]));
            }
            EXPECT_LT(num / den, 1e-4) << "input " << i << " causal " << causal;
        }
    }
}

TEST(AttentionOp, SavesNoProbabilityMatrix) {
    Releaser R;
    const int64_t Lq = 256, Lk = 256, C = 16;
    vt_tensor *q = R(RandN({1, Lq, C}, 41)), *k = R(RandN({1, Lk, C}, 42)), *v = R(RandN({1, Lk, C}, 43));
    vt_requires_grad(q, 1);
    vt_tape *t = vt_tape_begin();
    vt_tensor *o = R(vt_attention(q, k, v, 4, 0.25f, 0));
    vt_tape_end(t);
    ASSERT_VT(o);
    // q, k, v and one float per (head, row): far below the 4 * 256 * 256 probabilities
    EXPECT_EQ(vt_tape_stats_get(t).saved_bytes, (size_t)(3 * Lq * C + 4 * Lq) * sizeof(float));
    vt_tape_free(t);
}

TEST(AttentionOp, ShapeErrors) {
    Releaser R;
    vt_tensor *q = R(RandN({2, 5, 6}, 1)), *k = R(RandN({2, 7, 6}, 2)), *v = R(RandN({2, 7, 4}, 3));
    EXPECT_EQ(vt_attention(q, k, v, 2, 1.0f, 0), nullptr);
    EXPECT_NE(std::strstr(vt_error_message(), "attention: q [2, 5, 6], k [2, 7, 6], v [2, 7, 4] with 2 heads"), nullptr)
        << vt_error_message();
    EXPECT_EQ(vt_attention(q, k, k, 4, 1.0f, 0), nullptr);  // 6 channels do not split into 4 heads
    EXPECT_NE(std::strstr(vt_error_message(), "with 4 heads do not fit"), nullptr) << vt_error_message();
    EXPECT_EQ(vt_attention(q, nullptr, k, 2, 1.0f, 0), nullptr);  // NULL propagates
}

TEST(Dropout, SegmentRecomputeIsBitIdentical) {
    // The mask comes from (seed, index), so a checkpoint segment's recompute reproduces it.
    Releaser R;
    vt_tensor *x = R(RandN({4, 6}, 51)), *w = R(RandN({6, 6}, 52, 0.5f));
    vt_requires_grad(x, 1);
    auto block = [](void *ctx, vt_tensor *const *in, int) -> vt_tensor * {
        vt_tensor *h = vt_linear(in[0], (vt_tensor *)ctx, nullptr);
        vt_tensor *a = vt_gelu(h);
        vt_tensor *o = vt_dropout(a, 0.25f, 777);
        vt_release(h);
        vt_release(a);
        return o;
    };
    std::vector<float> g[2];
    for (int seg = 0; seg < 2; seg++) {
        vt_tape *t = vt_tape_begin();
        vt_tensor *in[1] = {x};
        vt_tensor *y = R(seg ? vt_segment(block, w, in, 1) : block(w, in, 1));
        vt_tape_end(t);
        ASSERT_VT(y);
        ASSERT_VT_OK(vt_backward(t, y, nullptr));
        vt_tape_free(t);
        g[seg].assign(vt_f32(x->grad), vt_f32(x->grad) + x->numel);
        vt_zero_grad(x);
    }
    EXPECT_EQ(0, std::memcmp(g[0].data(), g[1].data(), g[0].size() * sizeof(float)));
}
