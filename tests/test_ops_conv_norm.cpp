// test_ops_conv_norm.cpp — conv2d, conv_time (and their residual forms), group/layer norm, fused
// group norm + SiLU, l2 normalisation and nearest x2 upsampling: forwards against naive loops
// written here (double accumulation) or the unfused ops, every input's gradient against finite
// differences, gradients nobody asked for, shape errors.
#include "testutil.h"
#include <cmath>
#include <cstring>

namespace {

vt_tensor *T(std::vector<int64_t> s) { return vt_new_f32((int)s.size(), s.data()); }

// Backward of y = op() (cotangent ones) on a fresh tape: the tensors in `with` get a gradient,
// the ones in `without` (not requiring one) get none. The gradients are left for the caller.
void ExpectGradientsOnlyFor(const std::function<vt_tensor *()> &op, std::initializer_list<vt_tensor *> with,
                            std::initializer_list<vt_tensor *> without) {
    vt_tape *t = vt_tape_begin();
    vt_tensor *y = op();
    vt_tape_end(t);
    vt_err e = y ? vt_backward(t, y, nullptr) : vt_error_code();
    vt_tape_free(t);
    vt_release(y);
    ASSERT_EQ(e, VT_OK) << vt_error_message();
    for (vt_tensor *x : with) EXPECT_NE(x->grad, nullptr);
    for (vt_tensor *x : without) EXPECT_EQ(x->grad, nullptr);
}

// ---- naive references --------------------------------------------------------------------
// x [N, C, H, W], w [O, C, kh, kw], b [O] or null -> [N, O, OH, OW]
vt_tensor *NaiveConv2d(const vt_tensor *x, const vt_tensor *w, const vt_tensor *b, int stride, int pad) {
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t O = w->shape[0], kh = w->shape[2], kw = w->shape[3];
    int64_t OH = (H + 2 * pad - kh) / stride + 1, OW = (W + 2 * pad - kw) / stride + 1;
    vt_tensor *y = T({N, O, OH, OW});
    const float *px = vt_f32(x), *pw = vt_f32(w);
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t oy = 0; oy < OH; oy++)
                for (int64_t ox = 0; ox < OW; ox++) {
                    double acc = b ? vt_f32(b)[o] : 0.0;
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t i = 0; i < kh; i++)
                            for (int64_t j = 0; j < kw; j++) {
                                int64_t iy = oy * stride - pad + i, ix = ox * stride - pad + j;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                acc += (double)px[((n * C + c) * H + iy) * W + ix] *
                                       pw[((o * C + c) * kh + i) * kw + j];
                            }
                    vt_f32(y)[((n * O + o) * OH + oy) * OW + ox] = (float)acc;
                }
    return y;
}

// x [B, C, T, H, W], w [O, C, kt, 1, 1] -> [B, O, T + 2 pad - kt + 1, H, W]
vt_tensor *NaiveConvTime(const vt_tensor *x, const vt_tensor *w, const vt_tensor *b, int pad) {
    int64_t B = x->shape[0], C = x->shape[1], Tn = x->shape[2], HW = x->shape[3] * x->shape[4];
    int64_t O = w->shape[0], kt = w->shape[2], To = Tn + 2 * pad - kt + 1;
    vt_tensor *y = T({B, O, To, x->shape[3], x->shape[4]});
    for (int64_t n = 0; n < B; n++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t t = 0; t < To; t++)
                for (int64_t s = 0; s < HW; s++) {
                    double acc = b ? vt_f32(b)[o] : 0.0;
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t k = 0; k < kt; k++) {
                            int64_t ti = t + k - pad;
                            if (ti < 0 || ti >= Tn) continue;
                            acc += (double)vt_f32(x)[((n * C + c) * Tn + ti) * HW + s] *
                                   vt_f32(w)[(o * C + c) * kt + k];
                        }
                    vt_f32(y)[((n * O + o) * To + t) * HW + s] = (float)acc;
                }
    return y;
}

// x [N, C, S...]: per (n, group) over C/G channels and the trailing dims, biased variance.
vt_tensor *NaiveGroupNorm(const vt_tensor *x, int G, const vt_tensor *w, const vt_tensor *b, double eps) {
    int64_t N = x->shape[0], C = x->shape[1], S = x->numel / (N * C), Cg = C / G;
    vt_tensor *y = T(std::vector<int64_t>(x->shape, x->shape + x->ndim));
    for (int64_t n = 0; n < N; n++)
        for (int g = 0; g < G; g++) {
            double s = 0, ss = 0;
            int64_t cnt = Cg * S;
            for (int64_t c = g * Cg; c < (g + 1) * Cg; c++)
                for (int64_t k = 0; k < S; k++) s += vt_f32(x)[(n * C + c) * S + k];
            double mu = s / cnt;
            for (int64_t c = g * Cg; c < (g + 1) * Cg; c++)
                for (int64_t k = 0; k < S; k++) {
                    double d = vt_f32(x)[(n * C + c) * S + k] - mu;
                    ss += d * d;
                }
            double sd = std::sqrt(ss / cnt + eps);
            for (int64_t c = g * Cg; c < (g + 1) * Cg; c++)
                for (int64_t k = 0; k < S; k++) {
                    int64_t i = (n * C + c) * S + k;
                    double v = (vt_f32(x)[i] - mu) / sd;
                    if (w) v *= vt_f32(w)[c];
                    if (b) v += vt_f32(b)[c];
                    vt_f32(y)[i] = (float)v;
                }
        }
    return y;
}

void ExpectClose(const vt_tensor *a, const vt_tensor *ref, double tol, const char *what) {
    ASSERT_NE(a, nullptr) << what << ": " << vt_error_message();
    ASSERT_EQ(a->ndim, ref->ndim) << what;
    for (int i = 0; i < a->ndim; i++) ASSERT_EQ(a->shape[i], ref->shape[i]) << what << " dim " << i;
    EXPECT_LT(RelErr(a, ref), tol) << what;
}

// Conv is linear in each input (central differences exact up to f32 rounding); the norms are
// smooth with small third derivatives: both allow far tighter bounds than the defaults.
GradCheckOptions Tight(double rtol) {
    GradCheckOptions o;
    o.rtol = rtol;
    o.atol = 1e-4;
    return o;
}

void ExpectError(vt_tensor *r, const char *needle) {
    EXPECT_EQ(r, nullptr);
    vt_release(r);
    EXPECT_NE(std::strstr(vt_error_message(), needle), nullptr) << "message: " << vt_error_message();
}

struct ConvCase {
    int64_t N, C, H, W, O, kh, kw;
    int stride, pad;
    const char *name;
    int64_t OH() const { return (H + 2 * pad - kh) / stride + 1; }
    int64_t OW() const { return (W + 2 * pad - kw) / stride + 1; }
};

// A case's x [N, C, H, W], w [O, C, kh, kw] (times w_scale) and b [O], from seeds seed, seed + 1,
// seed + 2; owned by R.
struct ConvInputs {
    vt_tensor *x, *w, *b;
};
ConvInputs MakeConvInputs(Releaser &R, const ConvCase &k, uint64_t seed, float w_scale = 1.0f) {
    return {R(RandN({k.N, k.C, k.H, k.W}, seed)), R(RandN({k.O, k.C, k.kh, k.kw}, seed + 1, w_scale)),
            R(RandN({k.O}, seed + 2))};
}
const ConvCase kConvCases[] = {
    {2, 3, 5, 5, 4, 1, 1, 1, 0, "1x1"},
    {2, 3, 6, 5, 4, 3, 3, 1, 1, "3x3 s1 p1"},
    {1, 2, 7, 6, 3, 3, 3, 2, 1, "3x3 s2 p1"},
    {1, 2, 6, 7, 3, 3, 3, 2, 0, "3x3 s2 p0"},
    {2, 3, 8, 8, 5, 4, 4, 4, 0, "patch embed k4 s4"},
    {1, 2, 5, 6, 3, 2, 3, 1, 1, "non-square kernel 2x3"},
    {1, 2, 4, 4, 2, 1, 1, 2, 1, "1x1 s2 p1"},
    // 20x20 images are batched 3 per GEMM (conv.c CONV_GEMM_COLS): groups of 3 and 1
    {4, 3, 20, 20, 4, 3, 3, 1, 1, "batched 3 + 1 samples"},
    {5, 3, 20, 20, 4, 1, 1, 1, 0, "batched 1x1 3 + 2 samples"},
    // stride 1, >= 16 input channels, wide enough, one image per GEMM: the shifted-GEMM kernels
    {1, 16, 5, 30, 5, 3, 3, 1, 1, "shifted 3x3 p1"},
    {1, 16, 6, 6, 3, 3, 3, 1, 0, "shifted 3x3 p0"},
    {1, 16, 4, 60, 3, 2, 3, 1, 2, "shifted 2x3 p2"},
    {2, 16, 33, 32, 3, 3, 3, 1, 1, "shifted 2 samples"},
};

}  // namespace

// ---- conv2d ------------------------------------------------------------------------------
TEST(Conv2d, ForwardMatchesNaiveLoop) {
    for (const ConvCase &k : kConvCases) {
        Releaser R;
        auto [x, w, b] = MakeConvInputs(R, k, 1);
        vt_tensor *y = R(vt_conv2d(x, w, b, k.stride, k.pad));
        vt_tensor *ref = R(NaiveConv2d(x, w, b, k.stride, k.pad));
        ExpectClose(y, ref, 1e-5, k.name);
        vt_tensor *y0 = R(vt_conv2d(x, w, nullptr, k.stride, k.pad));
        vt_tensor *ref0 = R(NaiveConv2d(x, w, nullptr, k.stride, k.pad));
        ExpectClose(y0, ref0, 1e-5, k.name);
    }
}

TEST(Conv2d, HandValues) {
    // 1 channel 3x3 input, 2x2 kernel of ones, pad 1 stride 2: corner sums
    Releaser R;
    const float xv[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, wv[4] = {1, 1, 1, 1};
    const int64_t xs[4] = {1, 1, 3, 3}, ws[4] = {1, 1, 2, 2};
    vt_tensor *x = R(vt_from_f32(4, xs, xv)), *w = R(vt_from_f32(4, ws, wv));
    vt_tensor *y = R(vt_conv2d(x, w, nullptr, 2, 1));
    ASSERT_VT(y);
    ASSERT_TRUE(y->shape[2] == 2 && y->shape[3] == 2);
    const float want[4] = {1, 2 + 3, 4 + 7, 5 + 6 + 8 + 9};
    for (int i = 0; i < 4; i++) EXPECT_FLOAT_EQ(vt_f32(y)[i], want[i]);
}

TEST(Conv2d, GradientsOfEveryInput) {
    for (const ConvCase &k : kConvCases) {
        SCOPED_TRACE(k.name);
        Releaser R;
        auto [x, w, b] = MakeConvInputs(R, k, 4, 0.5f);
        for (auto *t : {x, w, b}) vt_requires_grad(t, 1);
        int s = k.stride, p = k.pad;
        ExpectGradsMatch([s, p](auto &in) { return vt_conv2d(in[0], in[1], in[2], s, p); }, {x, w, b}, Tight(1e-3));
        ExpectGradsMatch([s, p](auto &in) { return vt_conv2d(in[0], in[1], nullptr, s, p); }, {x, w}, Tight(1e-3));
    }
}

TEST(Conv2d, OnlyRequestedGradientsAreComputed) {
    Releaser R;
    vt_tensor *x = R(RandN({1, 2, 5, 5}, 1)), *w = R(RandN({3, 2, 3, 3}, 2)), *b = R(RandN({3}, 3));
    vt_requires_grad(x, 1);
    ExpectGradientsOnlyFor([&] { return vt_conv2d(x, w, b, 1, 1); }, {x}, {w, b});
    ASSERT_NE(x->grad, nullptr);
    // dx with g = ones: each input pixel gets the sum of the weights of the taps that read it
    // (centre pixel: all 9 taps of every (o, c) pair)
    double centre = 0;
    for (int o = 0; o < 3; o++)
        for (int k = 0; k < 9; k++) centre += vt_f32(w)[(o * 2 + 0) * 9 + k];
    EXPECT_NEAR(vt_f32(x->grad)[2 * 5 + 2], centre, 1e-4);
    vt_zero_grad(x);

    // only the weight: no input gradient, and the bias (frozen) gets none either
    vt_requires_grad(x, 0);
    vt_requires_grad(w, 1);
    ExpectGradientsOnlyFor([&] { return vt_conv2d(x, w, b, 1, 1); }, {w}, {x, b});
    vt_zero_grad(w);
}

TEST(Conv2d, ShapeErrorsNameOpAndShapes) {
    Releaser R;
    vt_tensor *x = R(RandN({1, 3, 8, 8}, 1)), *w = R(RandN({4, 2, 3, 3}, 2)), *w3 = R(RandN({4, 3, 3, 3}, 3));
    vt_tensor *b = R(RandN({5}, 4)), *big = R(RandN({4, 3, 9, 9}, 5)), *x3 = R(RandN({3, 8, 8}, 6));
    ExpectError(vt_conv2d(x, w, nullptr, 1, 1), "conv2d: input [1, 3, 8, 8] does not fit weight [4, 2, 3, 3]");
    ExpectError(vt_conv2d(x3, w3, nullptr, 1, 1), "conv2d: input [3, 8, 8] does not fit weight [4, 3, 3, 3]");
    ExpectError(vt_conv2d(x, w3, b, 1, 1), "conv2d: bias [5] does not fit weight [4, 3, 3, 3]");
    ExpectError(vt_conv2d(x, big, nullptr, 1, 0),
                "conv2d: kernel of weight [4, 3, 9, 9] larger than input [1, 3, 8, 8]");
    ExpectError(vt_conv2d(x, w3, nullptr, 0, 1), "conv2d: stride 0");
    EXPECT_EQ(vt_conv2d(nullptr, w3, nullptr, 1, 1), nullptr);  // NULL propagates
    EXPECT_EQ(vt_conv2d(x, nullptr, nullptr, 1, 1), nullptr);
}

// ---- conv_time ---------------------------------------------------------------------------
TEST(ConvTime, ForwardMatchesNaiveLoop) {
    struct { int64_t B, C, Tn, H, W, O, kt; int pad; } cases[] = {
        {2, 3, 4, 2, 3, 4, 3, 1}, {1, 2, 5, 3, 2, 3, 3, 0}, {1, 3, 3, 2, 2, 2, 1, 0}, {1, 2, 2, 2, 1, 2, 3, 2}};
    for (auto &k : cases) {
        Releaser R;
        vt_tensor *x = R(RandN({k.B, k.C, k.Tn, k.H, k.W}, 1)), *w = R(RandN({k.O, k.C, k.kt, 1, 1}, 2));
        vt_tensor *b = R(RandN({k.O}, 3));
        ExpectClose(R(vt_conv_time(x, w, b, k.pad)), R(NaiveConvTime(x, w, b, k.pad)), 1e-5, "conv_time");
        ExpectClose(R(vt_conv_time(x, w, nullptr, k.pad)), R(NaiveConvTime(x, w, nullptr, k.pad)), 1e-5,
                    "conv_time no bias");
    }
}

TEST(ConvTime, GradientsOfEveryInput) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 4, 2, 3}, 4)), *w = R(RandN({2, 3, 3, 1, 1}, 5, 0.5f)), *b = R(RandN({2}, 6));
    for (auto *t : {x, w, b}) vt_requires_grad(t, 1);
    ExpectGradsMatch([](auto &in) { return vt_conv_time(in[0], in[1], in[2], 1); }, {x, w, b}, Tight(1e-3));
    ExpectGradsMatch([](auto &in) { return vt_conv_time(in[0], in[1], nullptr, 0); }, {x, w}, Tight(1e-3));
    vt_tensor *w1 = R(RandN({4, 3, 1, 1, 1}, 7));
    vt_requires_grad(w1, 1);
    vt_tensor *b4 = R(RandN({4}, 8));
    ExpectGradsMatch([](auto &in) { return vt_conv_time(in[0], in[1], in[2], 0); }, {x, w1, b4}, Tight(1e-3));
}

TEST(ConvTime, ShiftedKernelsMatchNaiveAndGradients) {
    // 16 channels, one sample of 4 frames x 16 x 16: the shifted-GEMM path (taps along time)
    Releaser R;
    vt_tensor *x = R(RandN({1, 16, 4, 16, 16}, 4)), *w = R(RandN({8, 16, 3, 1, 1}, 5, 0.3f)), *b = R(RandN({8}, 6));
    ExpectClose(R(vt_conv_time(x, w, b, 1)), R(NaiveConvTime(x, w, b, 1)), 1e-5, "conv_time shifted");
    for (auto *t : {x, w, b}) vt_requires_grad(t, 1);
    GradCheckOptions o = Tight(1e-3);
    o.max_elems = 24;
    ExpectGradsMatch([](auto &in) { return vt_conv_time(in[0], in[1], in[2], 1); }, {x, w, b}, o);
}

TEST(ConvTime, OnlyInputGradient) {
    Releaser R;
    vt_tensor *x = R(RandN({1, 2, 4, 2, 2}, 1)), *w = R(RandN({3, 2, 3, 1, 1}, 2)), *b = R(RandN({3}, 3));
    vt_requires_grad(x, 1);
    ExpectGradientsOnlyFor([&] { return vt_conv_time(x, w, b, 1); }, {x}, {w, b});
    vt_zero_grad(x);
}

TEST(ConvTime, ShapeErrorsNameOpAndShapes) {
    Releaser R;
    vt_tensor *x = R(RandN({1, 3, 4, 2, 2}, 1)), *w = R(RandN({4, 3, 3, 3, 3}, 2)), *wc = R(RandN({4, 2, 3, 1, 1}, 3));
    vt_tensor *wl = R(RandN({4, 3, 7, 1, 1}, 4)), *b = R(RandN({3}, 5)), *w3 = R(RandN({4, 3, 3, 1, 1}, 6));
    ExpectError(vt_conv_time(x, w, nullptr, 1), "conv_time: input [1, 3, 4, 2, 2] does not fit weight [4, 3, 3, 3, 3]");
    ExpectError(vt_conv_time(x, wc, nullptr, 1),
                "conv_time: input [1, 3, 4, 2, 2] does not fit weight [4, 2, 3, 1, 1]");
    ExpectError(vt_conv_time(x, wl, nullptr, 1), "conv_time: kernel of weight [4, 3, 7, 1, 1] longer than 4 frames");
    ExpectError(vt_conv_time(x, w3, b, 1), "conv_time: bias [3] does not fit weight [4, 3, 3, 1, 1]");
    EXPECT_EQ(vt_conv_time(nullptr, w3, nullptr, 1), nullptr);
}

// ---- conv2d_add / conv_time_add: the residual added in the conv's output pass --------------
TEST(ConvAdd, EqualsConvPlusResidual) {
    for (const ConvCase &k : kConvCases) {
        SCOPED_TRACE(k.name);
        Releaser R;
        auto [x, w, b] = MakeConvInputs(R, k, 1);
        vt_tensor *ref = R(NaiveConv2d(x, w, b, k.stride, k.pad));
        vt_tensor *r = R(RandN(std::vector<int64_t>(ref->shape, ref->shape + 4), 4));
        ExpectClose(R(vt_conv2d_add(x, w, b, k.stride, k.pad, r)), R(vt_add(ref, r)), 1e-5, "with bias");
        vt_tensor *ref0 = R(NaiveConv2d(x, w, nullptr, k.stride, k.pad));
        ExpectClose(R(vt_conv2d_add(x, w, nullptr, k.stride, k.pad, r)), R(vt_add(ref0, r)), 1e-5, "no bias");
    }
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 4, 2, 3}, 1)), *w = R(RandN({4, 3, 3, 1, 1}, 2)), *b = R(RandN({4}, 3));
    vt_tensor *r = R(RandN({2, 4, 4, 2, 3}, 4));
    ExpectClose(R(vt_conv_time_add(x, w, b, 1, r)), R(vt_add(R(NaiveConvTime(x, w, b, 1)), r)), 1e-5, "conv_time");
}

TEST(ConvAdd, GradientsOfEveryInput) {
    for (const ConvCase &k : kConvCases) {
        SCOPED_TRACE(k.name);
        Releaser R;
        auto [x, w, b] = MakeConvInputs(R, k, 4, 0.5f);
        vt_tensor *r = R(RandN({k.N, k.O, k.OH(), k.OW()}, 7));
        for (auto *t : {x, w, b, r}) vt_requires_grad(t, 1);
        int s = k.stride, p = k.pad;
        ExpectGradsMatch([s, p](auto &in) { return vt_conv2d_add(in[0], in[1], in[2], s, p, in[3]); }, {x, w, b, r},
                         Tight(1e-3));
    }
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 4, 2, 3}, 4)), *w = R(RandN({2, 3, 3, 1, 1}, 5, 0.5f)), *b = R(RandN({2}, 6));
    vt_tensor *r = R(RandN({2, 2, 4, 2, 3}, 7));
    for (auto *t : {x, w, b, r}) vt_requires_grad(t, 1);
    ExpectGradsMatch([](auto &in) { return vt_conv_time_add(in[0], in[1], in[2], 1, in[3]); }, {x, w, b, r},
                     Tight(1e-3));
    ExpectGradsMatch([](auto &in) { return vt_conv_time_add(in[0], in[1], nullptr, 1, in[2]); }, {x, w, r},
                     Tight(1e-3));
}

TEST(ConvAdd, OnlyRequestedGradientsAndErrors) {
    Releaser R;
    vt_tensor *x = R(RandN({1, 2, 5, 5}, 1)), *w = R(RandN({3, 2, 3, 3}, 2)), *b = R(RandN({3}, 3));
    vt_tensor *r = R(RandN({1, 3, 5, 5}, 4)), *bad = R(RandN({1, 3, 4, 5}, 5));
    vt_requires_grad(r, 1);  // the residual alone: its gradient is the output's (ones here)
    ExpectGradientsOnlyFor([&] { return vt_conv2d_add(x, w, b, 1, 1, r); }, {r}, {x, w, b});
    ASSERT_NE(r->grad, nullptr);
    for (int64_t i = 0; i < r->numel; i++) ASSERT_EQ(vt_f32(r->grad)[i], 1.0f);
    vt_zero_grad(r);
    vt_requires_grad(r, 0);
    vt_requires_grad(x, 1);
    ExpectGradientsOnlyFor([&] { return vt_conv2d_add(x, w, b, 1, 1, r); }, {x}, {w, b, r});
    vt_zero_grad(x);
    vt_requires_grad(x, 0);
    ExpectError(vt_conv2d_add(x, w, b, 1, 1, bad),
                "conv2d_add: residual [1, 3, 4, 5] does not fit the output [1, 3, 5, 5]");
    ExpectError(vt_conv2d_add(x, w, b, 2, 1, r),
                "conv2d_add: residual [1, 3, 5, 5] does not fit the output [1, 3, 3, 3]");
    ExpectError(vt_conv2d_add(bad, w, b, 1, 1, r), "conv2d_add: input [1, 3, 4, 5] does not fit weight [3, 2, 3, 3]");
    EXPECT_EQ(vt_conv2d_add(x, w, b, 1, 1, nullptr), nullptr);  // NULL propagates
    vt_tensor *xt = R(RandN({1, 2, 4, 2, 2}, 6)), *wt = R(RandN({3, 2, 3, 1, 1}, 7));
    vt_tensor *rt = R(RandN({1, 3, 2, 2, 2}, 8));
    ExpectError(vt_conv_time_add(xt, wt, nullptr, 1, rt),
                "conv_time_add: residual [1, 3, 2, 2, 2] does not fit the output [1, 3, 4, 2, 2]");
    EXPECT_EQ(vt_conv_time_add(nullptr, wt, nullptr, 1, rt), nullptr);
}

// ---- group norm --------------------------------------------------------------------------
TEST(GroupNorm, ForwardMatchesNaiveLoop4dAnd5d) {
    struct { std::vector<int64_t> shape; int G; } cases[] = {
        {{2, 6, 3, 4}, 3}, {{2, 4, 3, 2, 3}, 2}, {{1, 8, 5}, 8}, {{3, 4}, 1}, {{1, 6, 2, 2, 2}, 6}};
    for (auto &k : cases) {
        Releaser R;
        int64_t C = k.shape[1];
        vt_tensor *x = R(RandN(k.shape, 1, 2.0f)), *w = R(RandN({C}, 2)), *b = R(RandN({C}, 3));
        ExpectClose(R(vt_group_norm(x, k.G, w, b, 1e-5f)), R(NaiveGroupNorm(x, k.G, w, b, 1e-5)), 1e-5, "affine");
        ExpectClose(R(vt_group_norm(x, k.G, nullptr, nullptr, 1e-6f)),
                    R(NaiveGroupNorm(x, k.G, nullptr, nullptr, 1e-6)), 1e-5, "plain");
        ExpectClose(R(vt_group_norm(x, k.G, w, nullptr, 1e-2f)), R(NaiveGroupNorm(x, k.G, w, nullptr, 1e-2)), 1e-5,
                    "weight only, large eps");
    }
}

TEST(GroupNorm, LargeMeanKeepsAccuracy) {
    // A mean 1000x the spread: single-pass float statistics would lose most digits.
    Releaser R;
    vt_tensor *x = R(RandN({2, 4, 8, 8}, 1));
    for (int64_t i = 0; i < x->numel; i++) vt_f32(x)[i] += 1000.0f;
    ExpectClose(R(vt_group_norm(x, 2, nullptr, nullptr, 1e-6f)), R(NaiveGroupNorm(x, 2, nullptr, nullptr, 1e-6)), 1e-5,
                "large mean");
}

TEST(GroupNorm, GradientsOfEveryInput) {
    Releaser R;
    vt_tensor *x4 = R(RandN({2, 4, 3, 3}, 1)), *x5 = R(RandN({1, 6, 2, 2, 3}, 2));
    vt_tensor *w4 = R(RandN({4}, 3)), *b4 = R(RandN({4}, 4)), *w6 = R(RandN({6}, 5)), *b6 = R(RandN({6}, 6));
    for (auto *t : {x4, x5, w4, b4, w6, b6}) vt_requires_grad(t, 1);
    ExpectGradsMatch([](auto &in) { return vt_group_norm(in[0], 2, in[1], in[2], 1e-5f); }, {x4, w4, b4}, Tight(3e-3));
    ExpectGradsMatch([](auto &in) { return vt_group_norm(in[0], 4, in[1], in[2], 1e-5f); }, {x4, w4, b4}, Tight(3e-3));
    ExpectGradsMatch([](auto &in) { return vt_group_norm(in[0], 3, in[1], in[2], 1e-6f); }, {x5, w6, b6}, Tight(3e-3));
    ExpectGradsMatch([](auto &in) { return vt_group_norm(in[0], 1, nullptr, nullptr, 1e-5f); }, {x5}, Tight(3e-3));
    ExpectGradsMatch([](auto &in) { return vt_group_norm(in[0], 2, in[1], nullptr, 1e-5f); }, {x4, w4}, Tight(3e-3));
}

TEST(GroupNorm, OnlyInputGradient) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 4, 3, 3}, 1)), *w = R(RandN({4}, 2)), *b = R(RandN({4}, 3));
    vt_requires_grad(x, 1);
    ExpectGradientsOnlyFor([&] { return vt_group_norm(x, 2, w, b, 1e-5f); }, {x}, {w, b});
    vt_zero_grad(x);
}

TEST(GroupNorm, ShapeErrorsNameOpAndShapes) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 6, 3, 3}, 1)), *w = R(RandN({4}, 2)), *x1 = R(RandN({6}, 3));
    ExpectError(vt_group_norm(x, 4, nullptr, nullptr, 1e-5f),
                "group_norm: input [2, 6, 3, 3] cannot be split into 4 groups");
    ExpectError(vt_group_norm(x1, 1, nullptr, nullptr, 1e-5f), "group_norm: input [6] cannot be split into 1 groups");
    ExpectError(vt_group_norm(x, 3, w, nullptr, 1e-5f), "group_norm: weight [4] does not fit input [2, 6, 3, 3]");
    ExpectError(vt_group_norm(x, 3, nullptr, w, 1e-5f), "group_norm: bias [4] does not fit input [2, 6, 3, 3]");
    EXPECT_EQ(vt_group_norm(nullptr, 3, nullptr, nullptr, 1e-5f), nullptr);
}

// ---- group norm + SiLU (one op) -----------------------------------------------------------
namespace {
// out = fn() on a tape, backward of sum(out * R): the output and the gradient of each input
// (nullptr where none), as cpu copies the caller releases.
struct OutAndGrads {
    vt_tensor *out = nullptr;
    std::vector<vt_tensor *> grads;
    size_t saved_bytes = 0;
};
OutAndGrads RunWithGrads(const std::function<vt_tensor *()> &fn, const std::vector<vt_tensor *> &inputs) {
    OutAndGrads r;
    vt_tape *t = vt_tape_begin();
    r.out = fn();
    vt_tape_end(t);
    EXPECT_NE(r.out, nullptr) << vt_error_message();
    if (r.out) {
        r.saved_bytes = vt_tape_stats_get(t).saved_bytes;
        vt_tensor *R = RandN(std::vector<int64_t>(r.out->shape, r.out->shape + r.out->ndim), 99);
        EXPECT_EQ(vt_backward(t, r.out, R), VT_OK) << vt_error_message();
        vt_release(R);
    }
    vt_tape_free(t);
    for (vt_tensor *x : inputs) {
        r.grads.push_back(x->grad ? vt_retain(x->grad) : nullptr);
        vt_zero_grad(x);
    }
    return r;
}
void Release(OutAndGrads &r) {
    vt_release(r.out);
    for (vt_tensor *g : r.grads) vt_release(g);
}
}  // namespace

TEST(GroupNormSilu, MatchesGroupNormThenSilu) {
    // 4-D spatial norms, the 5-D temporal case (statistics over (C/G, T, H, W) per sample), a
    // group per channel, one group, and a mean 1000x the spread (the saved mean_hi + mean_lo).
    struct {
        std::vector<int64_t> shape;
        int G;
        float scale, shift;
    } cases[] = {{{2, 6, 3, 4}, 3, 2.0f, 0.0f},  {{2, 4, 3, 2, 3}, 2, 2.0f, 0.5f}, {{1, 8, 5}, 8, 1.0f, 0.0f},
                 {{3, 4}, 1, 3.0f, 0.0f},        {{1, 6, 2, 2, 2}, 6, 1.0f, 0.0f}, {{2, 4, 8, 8}, 2, 0.01f, 1000.0f}};
    for (auto &k : cases) {
        Releaser R;
        const int64_t C = k.shape[1];
        const int G = k.G;
        vt_tensor *x = R(RandN(k.shape, 1, k.scale)), *w = R(RandN({C}, 2)), *b = R(RandN({C}, 3));
        for (int64_t i = 0; i < x->numel; i++) vt_f32(x)[i] += k.shift;
        for (auto *t : {x, w, b}) vt_requires_grad(t, 1);
        struct { vt_tensor *w, *b; float eps; const char *what; } affine[] = {
            {w, b, 1e-5f, "affine"}, {nullptr, nullptr, 1e-6f, "plain"}, {w, nullptr, 1e-2f, "weight only"}};
        for (auto &a : affine) {
            SCOPED_TRACE(testing::Message() << a.what << ", x [" << x->shape[0] << ", " << C << ", ...] G " << G);
            std::vector<vt_tensor *> in = {x};
            if (a.w) in.push_back(a.w);
            if (a.b) in.push_back(a.b);
            OutAndGrads fused = RunWithGrads([&] { return vt_group_norm_silu(x, G, a.w, a.b, a.eps); }, in);
            OutAndGrads chain = RunWithGrads(
                [&] {
                    vt_tensor *h = vt_group_norm(x, G, a.w, a.b, a.eps);
                    vt_tensor *y = vt_silu(h);
                    vt_release(h);
                    return y;
                },
                in);
            ASSERT_NE(fused.out, nullptr);
            ASSERT_NE(chain.out, nullptr);
            ExpectClose(fused.out, chain.out, 1e-5, "forward");
            for (size_t i = 0; i < in.size(); i++) {
                ASSERT_NE(fused.grads[i], nullptr) << "input " << i;
                ExpectClose(fused.grads[i], chain.grads[i], 1e-5, "gradient");
            }
            Release(fused);
            Release(chain);
        }
    }
}

TEST(GroupNormSilu, GradientsOfEveryInput) {
    Releaser R;
    // x5 is the temporal layers' [B, C, T, H, W]: 3 groups of 2 channels x (T, H, W) = (2, 2, 3)
    vt_tensor *x4 = R(RandN({2, 4, 3, 3}, 1)), *x5 = R(RandN({2, 6, 2, 2, 3}, 2));
    vt_tensor *w4 = R(RandN({4}, 3)), *b4 = R(RandN({4}, 4)), *w6 = R(RandN({6}, 5)), *b6 = R(RandN({6}, 6));
    for (auto *t : {x4, x5, w4, b4, w6, b6}) vt_requires_grad(t, 1);
    auto o = Tight(3e-3);
    ExpectGradsMatch([](auto &in) { return vt_group_norm_silu(in[0], 2, in[1], in[2], 1e-5f); }, {x4, w4, b4}, o);
    ExpectGradsMatch([](auto &in) { return vt_group_norm_silu(in[0], 4, in[1], in[2], 1e-5f); }, {x4, w4, b4}, o);
    ExpectGradsMatch([](auto &in) { return vt_group_norm_silu(in[0], 3, in[1], in[2], 1e-6f); }, {x5, w6, b6}, o);
    ExpectGradsMatch([](auto &in) { return vt_group_norm_silu(in[0], 1, nullptr, nullptr, 1e-5f); }, {x5}, o);
    ExpectGradsMatch([](auto &in) { return vt_group_norm_silu(in[0], 2, in[1], nullptr, 1e-5f); }, {x4, w4}, o);
}

TEST(GroupNormSilu, SavesInputAndStatisticsNotTheNormOutput) {
    Releaser R;
    const int64_t B = 2, C = 8, G = 4, numel = B * C * 3 * 4 * 4;
    vt_tensor *x = R(RandN({B, C, 3, 4, 4}, 1)), *w = R(RandN({C}, 2)), *b = R(RandN({C}, 3));
    vt_requires_grad(x, 1);  // frozen affine, as in the models
    OutAndGrads fused = RunWithGrads([&] { return vt_group_norm_silu(x, (int)G, w, b, 1e-5f); }, {x});
    OutAndGrads chain = RunWithGrads(
        [&] {
            vt_tensor *h = vt_group_norm(x, (int)G, w, b, 1e-5f);
            vt_tensor *y = vt_silu(h);
            vt_release(h);
            return y;
        },
        {x});
    // fused: x, w, b, stats [B, G, 3]; chain: x, w (norm) + the norm's output (silu)
    EXPECT_EQ(fused.saved_bytes, sizeof(float) * (numel + 2 * C + B * G * 3));
    EXPECT_EQ(chain.saved_bytes, sizeof(float) * (2 * numel + C));
    Release(fused);
    Release(chain);
}

TEST(GroupNormSilu, OnlyRequestedGradientsAndErrors) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 4, 3, 3}, 1)), *w = R(RandN({4}, 2)), *b = R(RandN({4}, 3));
    vt_requires_grad(x, 1);
    ExpectGradientsOnlyFor([&] { return vt_group_norm_silu(x, 2, w, b, 1e-5f); }, {x}, {w, b});
    vt_zero_grad(x);
    vt_requires_grad(x, 0);
    vt_requires_grad(w, 1);
    ExpectGradientsOnlyFor([&] { return vt_group_norm_silu(x, 2, w, b, 1e-5f); }, {w}, {x, b});
    vt_zero_grad(w);
    vt_requires_grad(w, 0);
    vt_tensor *x6 = R(RandN({2, 6, 3, 3}, 1)), *x1 = R(RandN({6}, 3));
    ExpectError(vt_group_norm_silu(x6, 4, nullptr, nullptr, 1e-5f),
                "group_norm_silu: input [2, 6, 3, 3] cannot be split into 4 groups");
    ExpectError(vt_group_norm_silu(x1, 1, nullptr, nullptr, 1e-5f),
                "group_norm_silu: input [6] cannot be split into 1 groups");
    ExpectError(vt_group_norm_silu(x6, 3, w, nullptr, 1e-5f),
                "group_norm_silu: weight [4] does not fit input [2, 6, 3, 3]");
    ExpectError(vt_group_norm_silu(x6, 3, nullptr, w, 1e-5f),
                "group_norm_silu: bias [4] does not fit input [2, 6, 3, 3]");
    EXPECT_EQ(vt_group_norm_silu(nullptr, 3, nullptr, nullptr, 1e-5f), nullptr);
}

// ---- layer norm --------------------------------------------------------------------------
TEST(LayerNorm, ForwardMatchesGroupNormOfRows) {
    // layer norm over the last dim == group norm with one group of [rows, C] (no trailing dims)
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 5}, 1, 3.0f)), *w = R(RandN({5}, 2)), *b = R(RandN({5}, 3));
    const int64_t s2[2] = {6, 5};
    vt_tensor *x2 = R(vt_view(x, 2, s2));
    vt_tensor *ref = R(NaiveGroupNorm(x2, 1, w, b, 1e-5));
    vt_tensor *y = R(vt_layer_norm(x, w, b, 1e-5f));
    ASSERT_VT(y);
    EXPECT_EQ(y->ndim, 3);
    EXPECT_LT(RelErr(y, ref), 1e-5);
    // hand values: [1, 2, 3] -> (x - 2) / sqrt(2/3 + eps)
    const float hv[3] = {1, 2, 3};
    const int64_t hs[1] = {3};
    vt_tensor *h = R(vt_from_f32(1, hs, hv));
    vt_tensor *hy = R(vt_layer_norm(h, nullptr, nullptr, 0.0f));
    ASSERT_VT(hy);
    EXPECT_NEAR(vt_f32(hy)[0], -std::sqrt(1.5), 1e-6);
    EXPECT_NEAR(vt_f32(hy)[1], 0.0, 1e-7);
    EXPECT_NEAR(vt_f32(hy)[2], std::sqrt(1.5), 1e-6);
}

TEST(LayerNorm, GradientsOfEveryInput) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 6}, 1)), *w = R(RandN({6}, 2)), *b = R(RandN({6}, 3));
    vt_tensor *xw = R(RandN({3, 40}, 4)), *ww = R(RandN({40}, 5)), *bw = R(RandN({40}, 6));
    for (auto *t : {x, w, b, xw, ww, bw}) vt_requires_grad(t, 1);
    ExpectGradsMatch([](auto &in) { return vt_layer_norm(in[0], in[1], in[2], 1e-5f); }, {x, w, b}, Tight(3e-3));
    ExpectGradsMatch([](auto &in) { return vt_layer_norm(in[0], nullptr, nullptr, 1e-5f); }, {x}, Tight(3e-3));
    // C > 16: channel blocks of the weight-gradient reduction
    ExpectGradsMatch([](auto &in) { return vt_layer_norm(in[0], in[1], in[2], 1e-5f); }, {xw, ww, bw}, Tight(3e-3));
}

TEST(LayerNorm, OnlyInputGradientAndErrors) {
    Releaser R;
    vt_tensor *x = R(RandN({4, 6}, 1)), *w = R(RandN({6}, 2)), *b = R(RandN({6}, 3)), *w5 = R(RandN({5}, 4));
    vt_requires_grad(x, 1);
    ExpectGradientsOnlyFor([&] { return vt_layer_norm(x, w, b, 1e-5f); }, {x}, {w, b});
    vt_zero_grad(x);
    ExpectError(vt_layer_norm(x, w5, nullptr, 1e-5f), "layer_norm: weight [5] does not fit input [4, 6]");
    ExpectError(vt_layer_norm(x, nullptr, w5, 1e-5f), "layer_norm: bias [5] does not fit input [4, 6]");
    EXPECT_EQ(vt_layer_norm(nullptr, w, b, 1e-5f), nullptr);
}

// ---- l2 normalize ------------------------------------------------------------------------
TEST(L2Normalize, ForwardHandValuesAndEps) {
    Releaser R;
    const float xv[6] = {3, 4, 0, 0, 0, 0};  // rows [3, 4, 0] and [0, 0, 0]
    const int64_t xs[2] = {2, 3};
    vt_tensor *x = R(vt_from_f32(2, xs, xv));
    vt_tensor *y = R(vt_l2_normalize(x, 1e-12f));
    ASSERT_VT(y);
    EXPECT_FLOAT_EQ(vt_f32(y)[0], 0.6f);
    EXPECT_FLOAT_EQ(vt_f32(y)[1], 0.8f);
    for (int i = 2; i < 6; i++) EXPECT_EQ(vt_f32(y)[i], 0.0f);
    // below eps the denominator is eps
    vt_tensor *ye = R(vt_l2_normalize(x, 10.0f));
    ASSERT_VT(ye);
    EXPECT_FLOAT_EQ(vt_f32(ye)[0], 0.3f);
    EXPECT_FLOAT_EQ(vt_f32(ye)[1], 0.4f);
    // random rows against a naive loop
    vt_tensor *r = R(RandN({3, 2, 7}, 1));
    vt_tensor *yr = R(vt_l2_normalize(r, 1e-12f));
    ASSERT_VT(yr);
    for (int64_t row = 0; row < 6; row++) {
        double s = 0;
        for (int i = 0; i < 7; i++) s += (double)vt_f32(r)[row * 7 + i] * vt_f32(r)[row * 7 + i];
        for (int i = 0; i < 7; i++) EXPECT_NEAR(vt_f32(yr)[row * 7 + i], vt_f32(r)[row * 7 + i] / std::sqrt(s), 1e-6);
    }
}

TEST(L2Normalize, Gradients) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 5}, 1));
    vt_requires_grad(x, 1);
    ExpectGradsMatch([](auto &in) { return vt_l2_normalize(in[0], 1e-12f); }, {x}, Tight(3e-3));
    // rows with norm far below eps: y = x / eps, dy/dx = 1/eps
    vt_tensor *s = R(RandN({2, 4}, 2, 1e-3f));
    vt_requires_grad(s, 1);
    ExpectGradsMatch([](auto &in) { return vt_l2_normalize(in[0], 0.5f); }, {s}, Tight(3e-3));
    EXPECT_EQ(vt_l2_normalize(nullptr, 1e-12f), nullptr);
}

// ---- upsample ----------------------------------------------------------------------------
TEST(UpsampleNearest2x, ForwardHandValuesGradientAndErrors) {
    Releaser R;
    const float xv[6] = {1, 2, 3, 4, 5, 6};
    const int64_t xs[4] = {1, 1, 2, 3};
    vt_tensor *x = R(vt_from_f32(4, xs, xv));
    vt_tensor *y = R(vt_upsample_nearest2x(x));
    ASSERT_VT(y);
    ASSERT_TRUE(y->shape[2] == 4 && y->shape[3] == 6);
    const float want[24] = {1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 4, 4, 5, 5, 6, 6};
    for (int i = 0; i < 24; i++) EXPECT_EQ(vt_f32(y)[i], want[i]) << i;
    vt_tensor *r = R(RandN({2, 3, 3, 2}, 1));
    vt_requires_grad(r, 1);
    ExpectGradsMatch([](auto &in) { return vt_upsample_nearest2x(in[0]); }, {r}, Tight(3e-3));
    vt_tensor *bad = R(RandN({2, 3, 4}, 2));
    ExpectError(vt_upsample_nearest2x(bad), "upsample_nearest2x: input [2, 3, 4] is not [N, C, H, W]");
    EXPECT_EQ(vt_upsample_nearest2x(nullptr), nullptr);
}

// ---- shapes large enough for the OpenMP paths (> 65536 elements) -------------------------
TEST(ConvNorm, ThreadedPathsMatchReferences) {
    Releaser R;
    vt_tensor *x = R(RandN({1, 8, 33, 32}, 1)), *w = R(RandN({4, 8, 3, 3}, 2, 0.3f)), *b = R(RandN({4}, 3));
    ExpectClose(R(vt_conv2d(x, w, b, 1, 1)), R(NaiveConv2d(x, w, b, 1, 1)), 1e-5, "conv2d 8x33x32");
    for (auto *t : {x, w, b}) vt_requires_grad(t, 1);
    GradCheckOptions o = Tight(1e-3);
    o.max_elems = 16;
    ExpectGradsMatch([](auto &in) { return vt_conv2d(in[0], in[1], in[2], 1, 1); }, {x, w, b}, o);

    vt_tensor *g = R(RandN({2, 8, 72, 72}, 4, 2.0f)), *gw = R(RandN({8}, 5)), *gb = R(RandN({8}, 6));
    ExpectClose(R(vt_group_norm(g, 4, gw, gb, 1e-6f)), R(NaiveGroupNorm(g, 4, gw, gb, 1e-6)), 1e-5, "group_norm");
    for (auto *t : {g, gw, gb}) vt_requires_grad(t, 1);
    o = Tight(3e-3);
    o.max_elems = 16;
    ExpectGradsMatch([](auto &in) { return vt_group_norm(in[0], 4, in[1], in[2], 1e-6f); }, {g, gw, gb}, o);
    ExpectGradsMatch([](auto &in) { return vt_group_norm_silu(in[0], 4, in[1], in[2], 1e-6f); }, {g, gw, gb}, o);
    for (auto *t : {g, gw, gb}) vt_requires_grad(t, 0);
    vt_tensor *h = R(vt_group_norm(g, 4, gw, gb, 1e-6f));
    ExpectClose(R(vt_group_norm_silu(g, 4, gw, gb, 1e-6f)), R(vt_silu(h)), 1e-5, "group_norm_silu");
}
