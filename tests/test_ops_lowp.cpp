// test_ops_lowp.cpp — frozen bf16 / f16 weights of the GEMM ops (ops.h, "low-precision
// weights"): with such a weight each op equals the f32 op run on explicitly rounded operands (x
// and the cotangent rounded to w's dtype, w widened to f32), differs from the unrounded f32 op by
// a nonzero amount within the dtype's tolerance (so skipping the rounding fails), and trainable
// or non-float weights are refused naming the op.
#include "testutil.h"
#include <cstring>
#include <functional>
#include <string>

namespace {

// f32 copy of x rounded to dt (nearest even) and widened back
vt_tensor *Rounded(const vt_tensor *x, vt_dtype dt) {
    vt_tensor *l = vt_to_dtype(x, dt);
    vt_tensor *r = vt_to_dtype(l, VT_F32);
    vt_release(l);
    return r;
}

// y = fn() on a tape, backpropagated with cotangent R; grads[i] is the gradient of wrt[i] (taken
// from ->grad, which is cleared). wrt get requires_grad for the run only.
struct Run {
    vt_tensor *y = nullptr;
    std::vector<vt_tensor *> grads;
    Run(const std::function<vt_tensor *()> &fn, const std::vector<vt_tensor *> &wrt, const vt_tensor *R) {
        for (auto *t : wrt) vt_requires_grad(t, 1);
        vt_tape *t = vt_tape_begin();
        y = fn();
        vt_tape_end(t);
        EXPECT_NE(y, nullptr) << vt_error_message();
        if (y) { EXPECT_EQ(vt_backward(t, y, R), VT_OK) << vt_error_message(); }
        vt_tape_free(t);
        for (auto *w : wrt) {
            grads.push_back(w->grad);
            w->grad = nullptr;
            vt_requires_grad(w, 0);
        }
    }
    ~Run() {
        vt_release(y);
        for (auto *g : grads) vt_release(g);
    }
};

// y = a + b (f32 cpu, same shape), untaped
vt_tensor *Sum(const vt_tensor *a, const vt_tensor *b) {
    vt_tensor *s = vt_clone(a);
    for (int64_t i = 0; i < s->numel; i++) vt_f32(s)[i] += vt_f32(b)[i];
    return s;
}

// One GEMM op with its weight as a parameter. op(x, w) is the whole op; extras are its f32 inputs
// besides x (bias, residual, LoRA A / B) whose gradients are checked. For linear_lora, base(x, w)
// is the plain linear part and f32_part(x) the LoRA branch (which reads the unrounded x), so the
// reference is base(round(x), w) + f32_part(x); without it base is op.
struct Case {
    std::string name;
    vt_tensor *x, *w;  // w: the f32 master the low-precision weight is made from
    std::vector<vt_tensor *> extras;
    std::function<vt_tensor *(vt_tensor *x, vt_tensor *w)> op, base;
    std::function<vt_tensor *(vt_tensor *x)> f32_part;
};

// Relative bound between the low-precision op and the unrounded f32 op
double DtypeTol(vt_dtype dt) { return dt == VT_BF16 ? 1e-2 : 2e-3; }

void CheckCase(const Case &c, vt_dtype dt) {
    SCOPED_TRACE(c.name + " with a " + vt_dtype_name(dt) + " weight");
    Releaser K;
    vt_tensor *wl = K(vt_to_dtype(c.w, dt)), *wf = K(vt_to_dtype(wl, VT_F32));  // wf: w's exact value
    ASSERT_VT(wf);
    vt_tensor *x = c.x, *xr = K(Rounded(x, dt));
    vt_tensor *y0 = K(c.op(x, wf));
    ASSERT_VT(y0);
    vt_tensor *R = K(RandN(std::vector<int64_t>(y0->shape, y0->shape + y0->ndim), 77));
    vt_tensor *Rr = K(Rounded(R, dt));
    std::vector<vt_tensor *> wrt = {x};
    wrt.insert(wrt.end(), c.extras.begin(), c.extras.end());

    Run lp([&] { return c.op(x, wl); }, wrt, R);          // the op under test
    Run unr([&] { return c.op(x, wf); }, wrt, R);         // unrounded f32 (extras' reference too)
    Run ref([&] { return c.base(xr, wf); }, {xr}, Rr);    // rounded x, rounded cotangent
    ASSERT_TRUE(lp.y && unr.y && ref.y);
    vt_tensor *y_ref = ref.y, *dx_ref = ref.grads[0];
    if (c.f32_part) {  // + the LoRA branch on the unrounded x and cotangent
        Run lora([&] { return c.f32_part(x); }, {x}, R);
        ASSERT_TRUE(lora.y);
        y_ref = K(Sum(ref.y, lora.y));
        dx_ref = K(Sum(ref.grads[0], lora.grads[0]));
    }
    EXPECT_EQ(lp.y->dtype, VT_F32);
    EXPECT_LT(RelErr(lp.y, y_ref), 1e-5) << "forward vs the f32 op on rounded x";
    ASSERT_NE(lp.grads[0], nullptr);
    EXPECT_LT(RelErr(lp.grads[0], dx_ref), 1e-5) << "dx vs the f32 op on the rounded cotangent";
    for (size_t i = 1; i < wrt.size(); i++) {  // bias, residual, A, B: as with an f32 weight
        ASSERT_NE(lp.grads[i], nullptr) << "extra input " << i;
        EXPECT_LT(RelErr(lp.grads[i], unr.grads[i]), 1e-5) << "gradient of extra input " << i;
    }
    // The rounding happened (a nonzero difference), and it is only a rounding.
    const double ey = RelErr(lp.y, unr.y), ex = RelErr(lp.grads[0], unr.grads[0]);
    EXPECT_GT(ey, 1e-6) << "forward equals the unrounded op: x was not rounded";
    EXPECT_LT(ey, DtypeTol(dt)) << "forward";
    EXPECT_GT(ex, 1e-6) << "dx equals the unrounded op's: the cotangent was not rounded";
    EXPECT_LT(ex, DtypeTol(dt)) << "dx";
    EXPECT_EQ(wl->grad, nullptr);
}

void CheckBothDtypes(const Case &c) {
    CheckCase(c, VT_BF16);
    CheckCase(c, VT_F16);
}

// conv2d case: x [N, C, H, W], w [O, C, k, k], bias (and residual when add)
void CheckConv2d(const char *what, int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t k, int stride, int pad,
                 bool add) {
    Releaser K;
    vt_tensor *x = K(RandN({N, C, H, W}, 1)), *w = K(RandN({O, C, k, k}, 2, 0.2f)), *b = K(RandN({O}, 3));
    const int64_t OH = (H + 2 * pad - k) / stride + 1, OW = (W + 2 * pad - k) / stride + 1;
    vt_tensor *r = K(RandN({N, O, OH, OW}, 4));
    Case c;
    c.name = what;
    c.x = x;
    c.w = w;
    if (add) {
        c.extras = {b, r};
        c.op = [=](vt_tensor *xx, vt_tensor *ww) { return vt_conv2d_add(xx, ww, b, stride, pad, r); };
    } else {
        c.extras = {b};
        c.op = [=](vt_tensor *xx, vt_tensor *ww) { return vt_conv2d(xx, ww, b, stride, pad); };
    }
    c.base = c.op;
    CheckBothDtypes(c);
}

}  // namespace

TEST(LowPrecisionWeights, Linear) {
    Releaser K;
    vt_tensor *x = K(RandN({3, 7, 48}, 1)), *w = K(RandN({40, 48}, 2, 0.2f)), *b = K(RandN({40}, 3));
    Case c{"linear", x, w, {b}, [=](vt_tensor *xx, vt_tensor *ww) { return vt_linear(xx, ww, b); }, nullptr, nullptr};
    c.base = c.op;
    CheckBothDtypes(c);
    // no bias, one row
    vt_tensor *x1 = K(RandN({1, 48}, 4));
    Case c1{"linear no bias", x1, w, {}, [](vt_tensor *xx, vt_tensor *ww) { return vt_linear(xx, ww, nullptr); }, nullptr,
            nullptr};
    c1.base = c1.op;
    CheckBothDtypes(c1);
}

// The LoRA branch reads the unrounded x and cotangent: dA, dB are the f32 op's, and dx is
// round(g) W + s (g B) A.
TEST(LowPrecisionWeights, LinearLora) {
    Releaser K;
    vt_tensor *x = K(RandN({2, 9, 32}, 1)), *w = K(RandN({24, 32}, 2, 0.2f)), *b = K(RandN({24}, 3));
    vt_tensor *A = K(RandN({4, 32}, 4, 0.3f)), *B = K(RandN({24, 4}, 5, 0.3f));
    vt_tensor *zero = K(vt_zeros(VT_F32, VT_CPU, 2, w->shape));
    const float s = 0.5f;
    Case c{"linear_lora", x, w, {b, A, B},
           [=](vt_tensor *xx, vt_tensor *ww) { return vt_linear_lora(xx, ww, b, A, B, s); },
           [=](vt_tensor *xx, vt_tensor *ww) { return vt_linear(xx, ww, b); },
           [=](vt_tensor *xx) { return vt_linear_lora(xx, zero, nullptr, A, B, s); }};
    CheckBothDtypes(c);
}

// Each CPU path: shifted GEMMs (3x3 stride 1, C >= 16, wide images, one sample per GEMM), small
// images batched over samples, im2col per sample (stride 2), 1x1 (col == x).
TEST(LowPrecisionWeights, Conv2dEveryPath) {
    CheckConv2d("conv2d 3x3 shifted", 2, 16, 32, 32, 8, 3, 1, 1, false);
    CheckConv2d("conv2d 3x3 small images batched", 4, 8, 6, 6, 12, 3, 1, 1, false);
    CheckConv2d("conv2d 3x3 stride 2", 1, 8, 33, 32, 6, 3, 2, 1, false);
    CheckConv2d("conv2d 1x1", 1, 16, 8, 8, 12, 1, 1, 0, false);
}

TEST(LowPrecisionWeights, Conv2dAdd) {
    CheckConv2d("conv2d_add shifted", 2, 16, 32, 32, 8, 3, 1, 1, true);
    CheckConv2d("conv2d_add batched", 3, 8, 10, 10, 6, 3, 1, 1, true);
    CheckConv2d("conv2d_add stride 2", 1, 8, 17, 16, 6, 3, 2, 1, true);
}

TEST(LowPrecisionWeights, ConvTime) {
    Releaser K;
    for (int64_t n : {1, 2}) {  // one sample (shifted path), two (batched)
        vt_tensor *x = K(RandN({n, 16, 8, 4, 8}, 1)), *w = K(RandN({12, 16, 3, 1, 1}, 2, 0.2f));
        vt_tensor *b = K(RandN({12}, 3)), *r = K(RandN({n, 12, 8, 4, 8}, 4));
        Case c{"conv_time", x, w, {b}, [=](vt_tensor *xx, vt_tensor *ww) { return vt_conv_time(xx, ww, b, 1); }, nullptr,
               nullptr};
        c.base = c.op;
        CheckBothDtypes(c);
        Case ca{"conv_time_add", x, w, {b, r},
                [=](vt_tensor *xx, vt_tensor *ww) { return vt_conv_time_add(xx, ww, b, 1, r); }, nullptr, nullptr};
        ca.base = ca.op;
        CheckBothDtypes(ca);
    }
}

// A low-precision weight is frozen only; a weight must be a float dtype; x stays f32.
TEST(LowPrecisionWeights, TrainableOrNonFloatWeightsAreRefused) {
    Releaser K;
    vt_tensor *x = K(RandN({2, 8}, 1)), *w = K(RandN({4, 8}, 2));
    vt_tensor *xc = K(RandN({1, 8, 5, 5}, 3)), *wc = K(RandN({4, 8, 3, 3}, 4));
    vt_tensor *xt = K(RandN({1, 8, 3, 2, 2}, 5)), *wt = K(RandN({4, 8, 3, 1, 1}, 6));
    vt_tensor *A = K(RandN({2, 8}, 7)), *B = K(RandN({4, 2}, 8)), *rc = K(RandN({1, 4, 5, 5}, 9));
    auto expect_error = [](vt_tensor *y, const char *op, std::initializer_list<const char *> words) {
        EXPECT_EQ(y, nullptr) << op;
        vt_release(y);
        EXPECT_EQ(vt_error_code(), VT_ERR_DTYPE) << op;
        const std::string msg = vt_error_message();
        EXPECT_EQ(msg.rfind(std::string(op) + ":", 0), 0u) << msg;
        for (const char *wd : words) EXPECT_NE(msg.find(wd), std::string::npos) << "'" << wd << "' in: " << msg;
    };
    for (vt_dtype dt : {VT_BF16, VT_F16}) {
        vt_tensor *wl = K(vt_to_dtype(w, dt)), *wcl = K(vt_to_dtype(wc, dt)), *wtl = K(vt_to_dtype(wt, dt));
        for (auto *t : {wl, wcl, wtl}) vt_requires_grad(t, 1);
        expect_error(vt_linear(x, wl, nullptr), "linear", {"frozen"});
        expect_error(vt_linear_lora(x, wl, nullptr, A, B, 1.0f), "linear_lora", {"frozen"});
        expect_error(vt_conv2d(xc, wcl, nullptr, 1, 1), "conv2d", {"frozen"});
        expect_error(vt_conv2d_add(xc, wcl, nullptr, 1, 1, rc), "conv2d_add", {"frozen"});
        expect_error(vt_conv_time(xt, wtl, nullptr, 1), "conv_time", {"frozen"});
        for (auto *t : {wl, wcl, wtl}) vt_requires_grad(t, 0);
        // the activation must stay f32
        vt_tensor *xl = K(vt_to_dtype(x, dt));
        expect_error(vt_linear(xl, wl, nullptr), "linear", {"f32"});
    }
    vt_tensor *wi = K(vt_empty(VT_I64, VT_CPU, 2, w->shape)), *wci = K(vt_empty(VT_I64, VT_CPU, 4, wc->shape));
    std::memset(vt_data(wi), 0, vt_nbytes(wi));
    std::memset(vt_data(wci), 0, vt_nbytes(wci));
    expect_error(vt_linear(x, wi, nullptr), "linear", {"weight", "i64"});
    expect_error(vt_conv2d(xc, wci, nullptr, 1, 1), "conv2d", {"weight", "i64"});
}

// vt_cast: the same rounding as vt_to_dtype (nearest even), exact widening, a straight-through
// gradient, and no other dtypes.
TEST(Cast, RoundsWidensAndPassesTheGradientThrough) {
    Releaser K;
    vt_tensor *x = K(RandN({3, 70}, 41, 3.0f));
    vt_f32(x)[0] = 1.0f + 1.0f / 512;  // a bf16 tie: rounds to even (1.0)
    for (vt_dtype dt : {VT_BF16, VT_F16}) {
        vt_tensor *l = K(vt_cast(x, dt));
        ASSERT_VT(l);
        ASSERT_EQ(l->dtype, dt);
        vt_tensor *ref = K(vt_to_dtype(x, dt));
        EXPECT_EQ(0, std::memcmp(vt_data(l), vt_data(ref), vt_nbytes(l))) << vt_dtype_name(dt);
        vt_tensor *w = K(vt_cast(l, VT_F32));
        vt_tensor *r = K(Rounded(x, dt));
        EXPECT_EQ(0, std::memcmp(vt_data(w), vt_data(r), vt_nbytes(w))) << vt_dtype_name(dt);
        if (dt == VT_BF16) { EXPECT_EQ(vt_f32(w)[0], 1.0f); }
        EXPECT_NE(0, std::memcmp(vt_data(w), vt_data(x), vt_nbytes(w)));  // it did round
    }
    // d/dx cast(cast(x, bf16), f32) . R = R
    vt_tensor *R = K(RandN({3, 70}, 42));
    ::Run run([&] {
        vt_tensor *l = vt_cast(x, VT_BF16);
        vt_tensor *y = vt_cast(l, VT_F32);
        vt_release(l);
        return y;
    }, {x}, R);
    ASSERT_NE(run.grads[0], nullptr);
    EXPECT_EQ(0, std::memcmp(vt_data(run.grads[0]), vt_data(R), vt_nbytes(R)));
    const int64_t four[1] = {4};
    vt_tensor *ids = K(vt_empty(VT_I64, VT_CPU, 1, four));
    EXPECT_EQ(vt_cast(ids, VT_F32), nullptr);
    EXPECT_NE(std::string(vt_error_message()).find("i64"), std::string::npos) << vt_error_message();
}
