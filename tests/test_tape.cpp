// test_tape.cpp — tape autograd: recording, no-grad, add-or-set accumulation, gradients
// nobody needs, checkpoint segments (bit-identical), and the first ops' gradients.
#include "testutil.h"
#include <functional>
#include <cstring>

TEST(Tape, NoGradRecordsNothing) {
    Releaser R;
    vt_tensor *w = R(RandN({4, 3}, 1));
    vt_requires_grad(w, 1);
    vt_tensor *x = R(RandN({2, 3}, 2));
    // no tape at all
    vt_tensor *y = R(vt_linear(x, w, nullptr));
    ASSERT_VT(y);
    EXPECT_EQ(y->requires_grad, 0);
    // a tape, suspended by no-grad
    vt_tape *t = vt_tape_begin();
    vt_tape *tok = vt_nograd_begin();
    vt_tensor *y2 = R(vt_linear(x, w, nullptr));
    vt_nograd_end(tok);
    vt_tape_end(t);
    ASSERT_VT(y2);
    EXPECT_EQ(vt_tape_stats_get(t).n_nodes, 0);
    EXPECT_EQ(vt_tape_stats_get(t).saved_bytes, 0u);
    vt_tape_free(t);
}

TEST(Tape, RecordsOnlyWhenSomethingNeedsGrad) {
    Releaser R;
    vt_tensor *w = R(RandN({4, 3}, 1));
    vt_tensor *x = R(RandN({2, 3}, 2));
    vt_tape *t = vt_tape_begin();
    vt_tensor *y = R(vt_linear(x, w, nullptr));
    vt_tape_end(t);
    ASSERT_VT(y);
    EXPECT_EQ(vt_tape_stats_get(t).n_nodes, 0);
    vt_tape_free(t);
}

TEST(Tape, FrozenWeightGetsNoGradient) {
    Releaser R;
    vt_tensor *w = R(RandN({4, 3}, 1));  // frozen
    vt_tensor *x = R(RandN({2, 3}, 2));
    vt_requires_grad(x, 1);
    vt_tape *t = vt_tape_begin();
    vt_tensor *y = R(vt_linear(x, w, nullptr));
    vt_tape_end(t);
    ASSERT_VT_OK(vt_backward(t, y, nullptr));
    EXPECT_NE(x->grad, nullptr);
    EXPECT_EQ(w->grad, nullptr);
    vt_tape_free(t);
}

TEST(Tape, AddOrSetAccumulation) {
    // y = x*x + x: dy/dx = 2x + 1 via two paths into the same leaf
    Releaser R;
    vt_tensor *x = R(RandN({5}, 3));
    vt_requires_grad(x, 1);
    vt_tape *t = vt_tape_begin();
    vt_tensor *sq = R(vt_mul(x, x));
    vt_tensor *y = R(vt_add(sq, x));
    vt_tape_end(t);
    ASSERT_VT_OK(vt_backward(t, y, nullptr));
    ASSERT_NE(x->grad, nullptr);
    for (int i = 0; i < 5; i++) EXPECT_FLOAT_EQ(vt_f32(x->grad)[i], 2 * vt_f32(x)[i] + 1);
    vt_tape_free(t);
}

TEST(Tape, BackwardFreesSavedTensors) {
    Releaser R;
    vt_tensor *x = R(RandN({64, 64}, 3));
    vt_requires_grad(x, 1);
    vt_tape *t = vt_tape_begin();
    vt_tensor *a = R(vt_mul(x, x));
    vt_tensor *b = R(vt_mul(a, a));
    vt_tape_end(t);
    EXPECT_GT(vt_tape_stats_get(t).saved_bytes, 0u);
    ASSERT_VT_OK(vt_backward(t, b, nullptr));
    EXPECT_EQ(vt_tape_stats_get(t).saved_bytes, 0u);
    vt_tape_free(t);
}

TEST(Tape, BackwardOfUnrecordedOutputIsAnError) {
    Releaser R;
    vt_tensor *x = R(RandN({3}, 3));
    vt_tape *t = vt_tape_begin();
    vt_tensor *y = R(vt_mul(x, x));
    vt_tape_end(t);
    EXPECT_NE(vt_backward(t, y, nullptr), VT_OK);
    EXPECT_NE(std::strstr(vt_error_message(), "not recorded"), nullptr);
    vt_tape_free(t);
}

// A small "block": h = silu-free MLP with a LoRA linear, x used twice (residual) so the
// accumulation order matters for bit-identity.
struct BlockCtx {
    vt_tensor *w1, *b1, *A, *B, *w2;
};
static vt_tensor *Block(void *ctx, vt_tensor *const *in, int) {
    BlockCtx *c = (BlockCtx *)ctx;
    vt_tensor *h = vt_linear_lora(in[0], c->w1, c->b1, c->A, c->B, 0.5f);
    vt_tensor *h2 = vt_mul(h, h);
    vt_tensor *h3 = vt_linear(h2, c->w2, nullptr);
    vt_tensor *o = vt_add(h3, in[0]);
    vt_release(h);
    vt_release(h2);
    vt_release(h3);
    return o;
}

// A block of width 8 (hidden 16, LoRA rank 4) whose LoRA factors A, B want gradients.
static BlockCtx MakeBlock(Releaser &R) {
    BlockCtx c = {R(RandN({16, 8}, 1, 0.3f)), R(RandN({16}, 2)), R(RandN({4, 8}, 3, 0.3f)), R(RandN({16, 4}, 4, 0.3f)),
                  R(RandN({8, 16}, 5, 0.3f))};
    vt_requires_grad(c.A, 1);
    vt_requires_grad(c.B, 1);
    return c;
}

static void RunChain(BlockCtx *c, vt_tensor *x, int segments, std::vector<float> &gx, std::vector<float> &gA,
                     std::vector<float> &gB, size_t *saved) {
    vt_tape *t = vt_tape_begin();
    vt_tensor *h = vt_retain(x);
    for (int i = 0; i < 3; i++) {
        vt_tensor *in[1] = {h};
        vt_tensor *o = segments ? vt_segment(Block, c, in, 1) : Block(c, in, 1);
        vt_release(h);
        h = o;
    }
    vt_tape_end(t);
    *saved = vt_tape_stats_get(t).saved_bytes;
    vt_tensor *R = RandN({h->shape[0], h->shape[1]}, 11);
    ASSERT_EQ(vt_backward(t, h, R), VT_OK) << vt_error_message();
    vt_release(R);
    vt_release(h);
    vt_tape_free(t);
    gx.assign(vt_f32(x->grad), vt_f32(x->grad) + x->numel);
    gA.assign(vt_f32(c->A->grad), vt_f32(c->A->grad) + c->A->numel);
    gB.assign(vt_f32(c->B->grad), vt_f32(c->B->grad) + c->B->numel);
    vt_zero_grad(x);
    vt_zero_grad(c->A);
    vt_zero_grad(c->B);
}

TEST(Tape, SegmentsGiveBitIdenticalGradients) {
    Releaser R;
    BlockCtx c = MakeBlock(R);
    vt_tensor *x = R(RandN({6, 8}, 6));
    vt_requires_grad(x, 1);
    std::vector<float> gx0, gA0, gB0, gx1, gA1, gB1;
    size_t saved_plain, saved_seg;
    RunChain(&c, x, 0, gx0, gA0, gB0, &saved_plain);
    RunChain(&c, x, 1, gx1, gA1, gB1, &saved_seg);
    ASSERT_EQ(gx0.size(), gx1.size());
    EXPECT_EQ(0, memcmp(gx0.data(), gx1.data(), gx0.size() * 4));
    EXPECT_EQ(0, memcmp(gA0.data(), gA1.data(), gA0.size() * 4));
    EXPECT_EQ(0, memcmp(gB0.data(), gB1.data(), gB0.size() * 4));
    EXPECT_LT(saved_seg, saved_plain);  // segments keep only their inputs
}

// Saved dtype bf16 / f16: a segment whose input is an activation of the tape keeps it packed and
// recomputes from the rounded value, so its gradients are exactly those of the plain tape run on
// round(a) (straight-through casts); they differ from the f32 segment's, and the segment holds
// half the bytes. A leaf input (x itself) is never packed: its gradient stays exact.
TEST(Tape, PackedSegmentInputsDifferentiateAtTheRoundedInput) {
    Releaser R;
    BlockCtx c = MakeBlock(R);
    vt_tensor *x = R(RandN({1024, 8}, 6));  // 8192 elements: above the packing threshold
    vt_tensor *G = R(RandN({1024, 8}, 7));
    vt_requires_grad(x, 1);
    struct Grads {
        std::vector<float> x, A, B;
        size_t saved;
    };
    // mode 0: f32 segment, 1: packed segment, 2: plain tape on the rounded activation, 3: packed
    // segment directly on the leaf x
    auto run = [&](int mode, vt_dtype dt) {
        Grads g;
        vt_tape *t = vt_tape_begin();
        if (mode == 1 || mode == 3) { EXPECT_EQ(vt_tape_set_saved_dtype(t, dt), VT_OK); }
        vt_tensor *a = mode == 3 ? vt_retain(x) : vt_scale(x, 2.0f);
        vt_tensor *y;
        if (mode == 2) {
            vt_tensor *l = vt_cast(a, dt), *ar = vt_cast(l, VT_F32);
            y = Block(&c, &ar, 1);
            vt_release(l);
            vt_release(ar);
        } else {
            y = vt_segment(Block, &c, &a, 1);
        }
        vt_release(a);
        vt_tape_end(t);
        g.saved = vt_tape_stats_get(t).saved_bytes;
        EXPECT_EQ(vt_backward(t, y, G), VT_OK) << vt_error_message();
        vt_release(y);
        vt_tape_free(t);
        g.x.assign(vt_f32(x->grad), vt_f32(x->grad) + x->numel);
        g.A.assign(vt_f32(c.A->grad), vt_f32(c.A->grad) + c.A->numel);
        g.B.assign(vt_f32(c.B->grad), vt_f32(c.B->grad) + c.B->numel);
        vt_zero_grad(x);
        vt_zero_grad(c.A);
        vt_zero_grad(c.B);
        return g;
    };
    for (vt_dtype dt : {VT_BF16, VT_F16}) {
        Grads f32 = run(0, dt), packed = run(1, dt), ref = run(2, dt);
        EXPECT_EQ(packed.x, ref.x) << vt_dtype_name(dt);
        EXPECT_EQ(packed.A, ref.A) << vt_dtype_name(dt);
        EXPECT_EQ(packed.B, ref.B) << vt_dtype_name(dt);
        EXPECT_NE(packed.A, f32.A) << vt_dtype_name(dt);  // the rounding is really there
        EXPECT_EQ(f32.saved - packed.saved, (size_t)x->numel * 2) << vt_dtype_name(dt);
        Grads leaf = run(3, dt);
        EXPECT_EQ(leaf.saved, (size_t)x->numel * 4) << "a leaf input is saved as it is";
        Grads leaf_f32 = run(3, VT_F32);
        EXPECT_EQ(leaf.x, leaf_f32.x);
        EXPECT_EQ(leaf.A, leaf_f32.A);
    }
    vt_tape *t = vt_tape_begin();
    EXPECT_EQ(vt_tape_set_saved_dtype(t, VT_I64), VT_ERR_DTYPE);
    vt_tape_end(t);
    vt_tape_free(t);
}

// A Linear / Conv with a frozen weight reads its input backward only for the weight's gradient:
// the tape does not keep it (saved bytes fall by the input's size), and dx is what it is when
// the input is kept (the weight wanting a gradient).
TEST(Tape, FrozenWeightOpsDoNotKeepTheirInput) {
    Releaser R;
    vt_tensor *x = R(RandN({64, 32}, 1)), *w = R(RandN({16, 32}, 2, 0.2f)), *b = R(RandN({16}, 3));
    vt_tensor *xc = R(RandN({2, 8, 10, 10}, 4)), *wc = R(RandN({6, 8, 3, 3}, 5, 0.2f));
    vt_tensor *A = R(RandN({4, 32}, 6, 0.2f)), *B = R(RandN({16, 4}, 7, 0.2f));
    struct Out {
        size_t saved;
        std::vector<float> dx;
    };
    auto run = [&](vt_tensor *in, const std::function<vt_tensor *(vt_tensor *)> &f) {
        Out o;
        vt_requires_grad(in, 1);
        vt_tape *t = vt_tape_begin();
        vt_tensor *y = f(in);
        vt_tape_end(t);
        o.saved = vt_tape_stats_get(t).saved_bytes;
        EXPECT_EQ(vt_backward(t, y, nullptr), VT_OK) << vt_error_message();
        vt_release(y);
        vt_tape_free(t);
        o.dx.assign(vt_f32(in->grad), vt_f32(in->grad) + in->numel);
        vt_zero_grad(in);
        vt_requires_grad(in, 0);
        return o;
    };
    auto lin = [&](vt_tensor *in) { return vt_linear(in, w, b); };
    auto conv = [&](vt_tensor *in) { return vt_conv2d(in, wc, nullptr, 1, 1); };
    auto lora = [&](vt_tensor *in) { return vt_linear_lora(in, w, b, A, B, 0.5f); };
    for (auto &c : std::vector<std::pair<vt_tensor *, std::function<vt_tensor *(vt_tensor *)>>>{
             {x, lin}, {xc, conv}, {x, lora}}) {
        vt_tensor *wt = c.first == xc ? wc : w;
        Out frozen = run(c.first, c.second);
        vt_requires_grad(wt, 1);
        Out trained = run(c.first, c.second);
        vt_requires_grad(wt, 0);
        vt_zero_grad(wt);
        EXPECT_EQ(frozen.dx, trained.dx);
        EXPECT_EQ(trained.saved - frozen.saved, vt_nbytes(c.first));
    }
    // linear_lora keeps x while A wants its gradient (dA = s (g B)^T x)
    vt_requires_grad(A, 1);
    Out la = run(x, lora);
    vt_requires_grad(A, 0);
    vt_zero_grad(A);
    Out l0 = run(x, lora);
    EXPECT_EQ(la.saved - l0.saved, vt_nbytes(x));
    EXPECT_EQ(la.dx, l0.dx);
}

TEST(Tape, SegmentWithConstantInputStillTrainsItsParameters) {
    // As in truncated backprop: x is a constant, only the LoRA weights inside want gradients.
    Releaser R;
    BlockCtx c = MakeBlock(R);
    vt_tensor *x = R(RandN({6, 8}, 6));
    OpFn plain = [&](const std::vector<vt_tensor *> &in) { return Block(&c, &in[0], 1); };
    OpFn seg = [&](const std::vector<vt_tensor *> &in) { return vt_segment(Block, &c, &in[0], 1); };
    for (const OpFn *fn : {&plain, &seg}) {
        vt_tape *t = vt_tape_begin();
        vt_tensor *y = (*fn)({x});
        vt_tape_end(t);
        ASSERT_VT_OK(vt_backward(t, y, nullptr));
        vt_release(y);
        vt_tape_free(t);
        EXPECT_NE(c.A->grad, nullptr);
        EXPECT_EQ(x->grad, nullptr);
    }
}

TEST(Ops, ElementwiseGradients) {
    Releaser R;
    vt_tensor *a = R(RandN({2, 3, 4}, 1)), *b = R(RandN({3, 1}, 2)), *c = R(RandN({2, 3, 4}, 3));
    for (auto *t : {a, b, c}) vt_requires_grad(t, 1);
    ExpectGradsMatch([](auto &in) { return vt_add(in[0], in[1]); }, {a, b});
    ExpectGradsMatch([](auto &in) { return vt_sub(in[1], in[0]); }, {a, b});
    ExpectGradsMatch([](auto &in) { return vt_mul(in[0], in[1]); }, {a, b});
    ExpectGradsMatch([](auto &in) { return vt_axpby(0.3f, in[0], -2.0f, in[1]); }, {a, c});
    ExpectGradsMatch([](auto &in) { return vt_affine(in[0], 1.5f, 0.25f); }, {a});
    {
        GradCheckOptions o;  // kinks at the bounds: a small step keeps probes off them
        o.eps = 1e-3;
        o.rtol = 5e-2;
        ExpectGradsMatch([](auto &in) { return vt_clamp(in[0], -0.5f, 0.7f); }, {a}, o);
    }
    ExpectGradsMatch([](auto &in) { return vt_square(in[0]); }, {a});
    ExpectGradsMatch([](auto &in) { return vt_exp(in[0]); }, {a});
    vt_tensor *p = R(RandU({2, 5}, 4, 0.5f, 2.0f));
    vt_requires_grad(p, 1);
    ExpectGradsMatch([](auto &in) { return vt_sqrt(in[0]); }, {p});
    ExpectGradsMatch([](auto &in) { return vt_log(in[0]); }, {p});
    ExpectGradsMatch([](auto &in) { return vt_abs(in[0]); }, {p});
}

TEST(Ops, BroadcastShapesAndErrors) {
    Releaser R;
    vt_tensor *a = R(RandN({2, 3, 4}, 1)), *b = R(RandN({2, 1, 4}, 2)), *c = R(RandN({5}, 3));
    vt_tensor *y = R(vt_add(a, b));
    ASSERT_VT(y);
    EXPECT_EQ(vt_f32(y)[5], vt_f32(a)[5] + vt_f32(b)[1]);
    EXPECT_EQ(vt_add(a, c), nullptr);
    EXPECT_NE(std::strstr(vt_error_message(), "add: shapes [2, 3, 4] and [5] do not broadcast"), nullptr)
        << vt_error_message();
    EXPECT_EQ(vt_add(nullptr, a), nullptr);  // NULL propagates
}

TEST(Ops, LinearAndLoraGradients) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 5}, 1)), *w = R(RandN({4, 5}, 2)), *b = R(RandN({4}, 3));
    vt_tensor *A = R(RandN({2, 5}, 4)), *B = R(RandN({4, 2}, 5));
    for (auto *t : {x, w, b, A, B}) vt_requires_grad(t, 1);
    ExpectGradsMatch([](auto &in) { return vt_linear(in[0], in[1], in[2]); }, {x, w, b});
    ExpectGradsMatch([](auto &in) { return vt_linear(in[0], in[1], nullptr); }, {x, w});
    ExpectGradsMatch([](auto &in) { return vt_linear_lora(in[0], in[1], in[2], in[3], in[4], 0.75f); },
                     {x, w, b, A, B});
}

TEST(Ops, LinearShapeErrorNamesShapes) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 6}, 1)), *w = R(RandN({4, 5}, 2));
    EXPECT_EQ(vt_linear(x, w, nullptr), nullptr);
    EXPECT_NE(std::strstr(vt_error_message(), "linear: input [2, 6] does not fit weight [4, 5]"), nullptr)
        << vt_error_message();
}

TEST(Ops, MatmulGradients) {
    Releaser R;
    vt_tensor *a = R(RandN({2, 3, 4}, 1)), *b = R(RandN({2, 4, 5}, 2)), *s = R(RandN({4, 5}, 3));
    for (auto *t : {a, b, s}) vt_requires_grad(t, 1);
    ExpectGradsMatch([](auto &in) { return vt_matmul(in[0], in[1]); }, {a, b});
    ExpectGradsMatch([](auto &in) { return vt_matmul(in[0], in[1]); }, {a, s});
}

TEST(Ops, ReshapeIsAViewWithGradient) {
    Releaser R;
    vt_tensor *a = R(RandN({2, 3, 4}, 1));
    vt_requires_grad(a, 1);
    const int64_t s64[2] = {6, 4};
    vt_tensor *v = R(vt_reshape(a, 2, s64));
    ASSERT_VT(v);
    EXPECT_EQ(vt_data(v), vt_data(a));
    ExpectGradsMatch([](auto &in) {
        const int64_t s46[2] = {4, 6};
        vt_tensor *r = vt_reshape(in[0], 2, s46);
        vt_tensor *o = vt_mul(r, r);
        vt_release(r);
        return o;
    }, {a});
}

TEST(Ops, ReductionGradients) {
    Releaser R;
    vt_tensor *a = R(RandN({2, 3, 4}, 1));
    vt_requires_grad(a, 1);
    ExpectGradsMatch([](auto &in) { return vt_sum(in[0]); }, {a});
    ExpectGradsMatch([](auto &in) { return vt_mean(in[0]); }, {a});
    for (int d = -3; d < 3; d++) {
        ExpectGradsMatch([d](auto &in) { return vt_sum_dim(in[0], d, 0); }, {a});
        ExpectGradsMatch([d](auto &in) { return vt_mean_dim(in[0], d, 1); }, {a});
    }
    vt_tensor *m = R(vt_mean_dim(a, 1, 0));
    ASSERT_VT(m);
    EXPECT_EQ(m->ndim, 2);
    EXPECT_NEAR(vt_f32(m)[0], (vt_f32(a)[0] + vt_f32(a)[4] + vt_f32(a)[8]) / 3, 1e-6);
    EXPECT_EQ(vt_sum_dim(a, 3, 0), nullptr);
}

// Out of memory inside an op is an error naming the op and the shape, not a crash.
static void *failing_alloc(size_t) { return nullptr; }
static void failing_free(void *, size_t) {}

TEST(Ops, OutOfMemoryNamesOpAndShape) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 4, 4}, 1)), *w = R(RandN({5, 3, 3, 3}, 2));
    vt_mem_trim(VT_CPU);  // no cached block may satisfy the request
    vt_set_device_allocator(VT_CPU, vt_allocator{failing_alloc, failing_free});
    vt_tensor *y = vt_conv2d(x, w, nullptr, 1, 1);
    vt_err code = vt_error_code();
    std::string msg = vt_error_message();
    vt_set_device_allocator(VT_CPU, vt_allocator{[](size_t n) -> void * {
                                                     void *p = nullptr;
                                                     return posix_memalign(&p, 64, n ? n : 64) ? nullptr : p;
                                                 },
                                                 [](void *p, size_t) { free(p); }});
    EXPECT_EQ(y, nullptr);
    EXPECT_EQ(code, VT_ERR_OOM);
    EXPECT_NE(msg.find("op conv2d"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[2, 5, 4, 4]"), std::string::npos) << msg;
}
