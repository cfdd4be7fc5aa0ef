// test_cuda_ops.cpp — every CUDA kernel against the CPU reference (forward and the gradients
// of every input). Skips, saying so, when the build has no CUDA backend or no GPU is present.
#include "testutil.h"
#ifdef VADER_HAVE_CUDA
#include "cuda/backend.h"
#endif
#include <cmath>
#include <cstring>
#include <functional>
#include <string>

class CudaOps : public ::testing::Test {
  protected:
    void SetUp() override {
#ifndef VADER_HAVE_CUDA
        GTEST_SKIP() << "CUDA backend not built (no nvcc): CUDA tests skipped";
#else
        if (vt_cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device present: CUDA tests skipped";
        ASSERT_EQ(vt_cuda_init(0), VT_OK) << vt_error_message();
#endif
    }
};

// Runs fn on cpu inputs and on their cuda copies under a tape, backpropagates the same
// cotangent, and compares output and every input gradient at tol.
static void ExpectCudaMatchesCpu(const OpFn &fn, const std::vector<vt_tensor *> &cpu_in, double tol) {
    std::vector<vt_tensor *> gpu_in;
    for (auto *t : cpu_in) {
        vt_tensor *g = vt_to_device(t, VT_CUDA);
        ASSERT_NE(g, nullptr) << vt_error_message();
        vt_requires_grad(g, t->requires_grad);
        gpu_in.push_back(g);
    }
    vt_tensor *outs[2], *R = nullptr;
    for (int dev = 0; dev < 2; dev++) {
        auto &in = dev ? gpu_in : cpu_in;
        vt_tape *t = vt_tape_begin();
        outs[dev] = fn(in);
        vt_tape_end(t);
        ASSERT_NE(outs[dev], nullptr) << vt_error_message();
        if (!R) R = RandN(std::vector<int64_t>(outs[0]->shape, outs[0]->shape + outs[0]->ndim), 99);
        vt_tensor *Rd = dev ? vt_to_device(R, VT_CUDA) : vt_retain(R);
        if (outs[dev]->requires_grad) {
            ASSERT_EQ(vt_backward(t, outs[dev], Rd), VT_OK) << vt_error_message();
        }
        vt_release(Rd);
        vt_tape_free(t);
    }
    vt_tensor *back = vt_to_device(outs[1], VT_CPU);
    EXPECT_LE(RelErr(back, outs[0]), tol) << "forward";
    vt_release(back);
    for (size_t i = 0; i < cpu_in.size(); i++) {
        if (!cpu_in[i]->requires_grad) continue;
        ASSERT_NE(gpu_in[i]->grad, nullptr) << "input " << i;
        vt_tensor *g = vt_to_device(gpu_in[i]->grad, VT_CPU);
        EXPECT_LE(RelErr(g, cpu_in[i]->grad), tol) << "gradient of input " << i;
        vt_release(g);
        vt_zero_grad(cpu_in[i]);
    }
    for (auto *t : gpu_in) vt_release(t);
    vt_release(outs[0]);
    vt_release(outs[1]);
    vt_release(R);
}

TEST_F(CudaOps, Elementwise) {
    Releaser R;
    vt_tensor *a = R(RandN({2, 3, 4}, 1)), *b = R(RandN({3, 1}, 2)), *c = R(RandN({2, 3, 4}, 3));
    vt_tensor *p = R(RandU({2, 3, 4}, 4, 0.5f, 2.0f));
    for (auto *t : {a, b, c, p}) vt_requires_grad(t, 1);
    ExpectCudaMatchesCpu([](auto &in) { return vt_add(in[0], in[1]); }, {a, b}, 1e-6);
    ExpectCudaMatchesCpu([](auto &in) { return vt_sub(in[0], in[1]); }, {a, b}, 1e-6);
    ExpectCudaMatchesCpu([](auto &in) { return vt_mul(in[0], in[1]); }, {a, b}, 1e-6);
    ExpectCudaMatchesCpu([](auto &in) { return vt_axpby(0.5f, in[0], -1.5f, in[1]); }, {a, c}, 1e-6);
    ExpectCudaMatchesCpu([](auto &in) { return vt_affine(in[0], 2.0f, 1.0f); }, {a}, 1e-6);
    ExpectCudaMatchesCpu([](auto &in) { return vt_clamp(in[0], -0.5f, 0.5f); }, {a}, 1e-6);
    ExpectCudaMatchesCpu([](auto &in) { return vt_sqrt(in[0]); }, {p}, 1e-5);
    ExpectCudaMatchesCpu([](auto &in) { return vt_log(in[0]); }, {p}, 1e-5);
    ExpectCudaMatchesCpu([](auto &in) { return vt_exp(in[0]); }, {a}, 1e-5);
}

// cast: the GPU's rounding is the CPU's bit for bit (both nearest even), gradient straight through
TEST_F(CudaOps, Cast) {
    Releaser R;
    vt_tensor *a = R(RandN({5, 300}, 5, 4.0f));
    vt_requires_grad(a, 1);
    for (vt_dtype dt : {VT_BF16, VT_F16}) {
        ExpectCudaMatchesCpu([dt](auto &in) {
            vt_tensor *l = vt_cast(in[0], dt);
            vt_tensor *w = vt_cast(l, VT_F32);
            vt_release(l);
            return w;
        }, {a}, 0.0);
        vt_tensor *g = R(vt_to_device(a, VT_CUDA));
        vt_tensor *lg = R(vt_cast(g, dt)), *lc = R(vt_cast(a, dt));
        ASSERT_NE(lg, nullptr) << vt_error_message();
        vt_tensor *back = R(vt_to_device(lg, VT_CPU));
        EXPECT_EQ(0, memcmp(vt_data(back), vt_data(lc), vt_nbytes(lc))) << vt_dtype_name(dt);
    }
}

// i64 cpu tensor from values
static vt_tensor *Ids(std::vector<int64_t> shape, std::vector<int64_t> v) {
    vt_tensor *t = vt_empty(VT_I64, VT_CPU, (int)shape.size(), shape.data());
    for (size_t i = 0; i < v.size(); i++) vt_i64(t)[i] = v[i];
    return t;
}

static void RequireGrad(std::initializer_list<vt_tensor *> ts) {
    for (auto *t : ts) vt_requires_grad(t, 1);
}

TEST_F(CudaOps, LinearAndLora) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 5}, 1)), *w = R(RandN({4, 5}, 2)), *b = R(RandN({4}, 3));
    RequireGrad({x, w, b});
    ExpectCudaMatchesCpu([](auto &in) { return vt_linear(in[0], in[1], in[2]); }, {x, w, b}, 1e-5);
    ExpectCudaMatchesCpu([](auto &in) { return vt_linear(in[0], in[1], nullptr); }, {x, w}, 1e-5);
    // LoRA: W, b frozen, A, B and x want gradients (the VADER case); then everything
    vt_tensor *wf = R(RandN({4, 5}, 4)), *bf = R(RandN({4}, 5));
    vt_tensor *A = R(RandN({2, 5}, 6)), *B = R(RandN({4, 2}, 7));
    RequireGrad({A, B});
    ExpectCudaMatchesCpu([](auto &in) { return vt_linear_lora(in[0], in[1], in[2], in[3], in[4], 0.5f); },
                         {x, wf, bf, A, B}, 1e-5);
    ExpectCudaMatchesCpu([](auto &in) { return vt_linear_lora(in[0], in[1], in[2], in[3], in[4], 2.0f); },
                         {x, w, b, A, B}, 1e-5);
    ExpectCudaMatchesCpu([](auto &in) { return vt_linear_lora(in[0], in[1], nullptr, in[2], in[3], 1.0f); },
                         {x, w, A, B}, 1e-5);
    // UNet-like sizes: a few hundred rows, GEMM tiles that do not divide the shapes
    vt_tensor *xl = R(RandN({3, 77, 96}, 8)), *wl = R(RandN({80, 96}, 9, 0.1f)), *bl = R(RandN({80}, 10));
    vt_tensor *Al = R(RandN({4, 96}, 11, 0.1f)), *Bl = R(RandN({80, 4}, 12, 0.1f));
    RequireGrad({xl, Al, Bl});
    ExpectCudaMatchesCpu([](auto &in) { return vt_linear_lora(in[0], in[1], in[2], in[3], in[4], 0.25f); },
                         {xl, wl, bl, Al, Bl}, 1e-5);
}

TEST_F(CudaOps, Matmul) {
    Releaser R;
    vt_tensor *a = R(RandN({2, 3, 4, 5}, 1)), *b = R(RandN({2, 3, 5, 6}, 2)), *s = R(RandN({5, 6}, 3));
    vt_tensor *a2 = R(RandN({7, 9}, 4)), *b2 = R(RandN({9, 3}, 5));
    RequireGrad({a, b, s, a2, b2});
    ExpectCudaMatchesCpu([](auto &in) { return vt_matmul(in[0], in[1]); }, {a, b}, 1e-5);
    ExpectCudaMatchesCpu([](auto &in) { return vt_matmul(in[0], in[1]); }, {a, s}, 1e-5);
    ExpectCudaMatchesCpu([](auto &in) { return vt_matmul(in[0], in[1]); }, {a2, b2}, 1e-5);
}

TEST_F(CudaOps, Activations) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 5}, 2, 2.0f)), *big = R(RandN({4, 1000}, 3, 6.0f));
    RequireGrad({x, big});
    for (vt_tensor *t : {x, big}) {
        ExpectCudaMatchesCpu([](auto &in) { return vt_silu(in[0]); }, {t}, 1e-5);
        ExpectCudaMatchesCpu([](auto &in) { return vt_sigmoid(in[0]); }, {t}, 1e-5);
        ExpectCudaMatchesCpu([](auto &in) { return vt_gelu(in[0]); }, {t}, 1e-5);
        ExpectCudaMatchesCpu([](auto &in) { return vt_quick_gelu(in[0]); }, {t}, 1e-5);
    }
    vt_tensor *g = R(RandN({2, 3, 8}, 3, 1.5f)), *gb = R(RandN({5, 7, 64}, 4, 2.0f));
    RequireGrad({g, gb});
    ExpectCudaMatchesCpu([](auto &in) { return vt_geglu(in[0]); }, {g}, 1e-5);
    ExpectCudaMatchesCpu([](auto &in) { return vt_geglu(in[0]); }, {gb}, 1e-5);
}

TEST_F(CudaOps, DropoutMaskIsTheCpuMask) {
    Releaser R;
    vt_tensor *x = R(RandN({3, 20}, 6)), *big = R(RandN({3, 50000}, 7));
    RequireGrad({x, big});
    // same mask bit for bit: forward and gradient agree exactly
    ExpectCudaMatchesCpu([](auto &in) { return vt_dropout(in[0], 0.4f, 1234); }, {x}, 0.0);
    ExpectCudaMatchesCpu([](auto &in) { return vt_dropout(in[0], 0.1f, 0x123456789abcdefull); }, {big}, 0.0);
    ExpectCudaMatchesCpu([](auto &in) { return vt_dropout(in[0], 1.0f, 5); }, {x}, 0.0);
}

TEST_F(CudaOps, GroupNorm) {
    Releaser R;
    struct {
        std::vector<int64_t> shape;
        int G;
    } cases[] = {{{2, 6, 3, 4}, 3}, {{2, 4, 3, 2, 3}, 2}, {{1, 8, 5}, 8}, {{3, 4}, 1}, {{1, 6, 2, 2, 2}, 6},
                 {{2, 8, 72, 72}, 4}};
    for (auto &k : cases) {
        const int64_t C = k.shape[1];
        const int G = k.G;
        vt_tensor *x = R(RandN(k.shape, 1, 2.0f)), *w = R(RandN({C}, 2)), *b = R(RandN({C}, 3));
        RequireGrad({x, w, b});
        ExpectCudaMatchesCpu([G](auto &in) { return vt_group_norm(in[0], G, in[1], in[2], 1e-5f); }, {x, w, b}, 1e-5);
        ExpectCudaMatchesCpu([G](auto &in) { return vt_group_norm(in[0], G, nullptr, nullptr, 1e-6f); }, {x}, 1e-5);
        ExpectCudaMatchesCpu([G](auto &in) { return vt_group_norm(in[0], G, in[1], nullptr, 1e-2f); }, {x, w}, 1e-5);
    }
    // a large mean relative to the spread (the two-pass statistics)
    vt_tensor *xm = R(RandN({2, 4, 8, 8}, 1));
    float *p = vt_f32(xm);
    for (int64_t i = 0; i < xm->numel; i++) p[i] = 1000.0f + 0.01f * p[i];
    RequireGrad({xm});
    ExpectCudaMatchesCpu([](auto &in) { return vt_group_norm(in[0], 2, nullptr, nullptr, 1e-6f); }, {xm}, 1e-4);
}

TEST_F(CudaOps, GroupNormSilu) {
    Releaser R;
    // 4-D spatial, 5-D temporal ([B, C, T, H, W]: statistics over (C/G, T, H, W)), a group per
    // channel, and threaded-size shapes (the UNet's 32 groups)
    struct {
        std::vector<int64_t> shape;
        int G;
    } cases[] = {{{2, 6, 3, 4}, 3}, {{2, 4, 3, 2, 3}, 2}, {{1, 8, 5}, 8},       {{3, 4}, 1},
                 {{1, 6, 2, 2, 2}, 6}, {{2, 8, 72, 72}, 4}, {{1, 64, 4, 16, 16}, 32}};
    for (auto &k : cases) {
        const int64_t C = k.shape[1];
        const int G = k.G;
        vt_tensor *x = R(RandN(k.shape, 1, 2.0f)), *w = R(RandN({C}, 2)), *b = R(RandN({C}, 3));
        RequireGrad({x, w, b});
        auto affine = [G](auto &in) { return vt_group_norm_silu(in[0], G, in[1], in[2], 1e-5f); };
        auto plain = [G](auto &in) { return vt_group_norm_silu(in[0], G, nullptr, nullptr, 1e-6f); };
        auto weight = [G](auto &in) { return vt_group_norm_silu(in[0], G, in[1], nullptr, 1e-2f); };
        ExpectCudaMatchesCpu(affine, {x, w, b}, 1e-5);
        ExpectCudaMatchesCpu(plain, {x}, 1e-5);
        ExpectCudaMatchesCpu(weight, {x, w}, 1e-5);
    }
    // a large mean relative to the spread (the packed mean_hi + mean_lo)
    vt_tensor *xm = R(RandN({2, 4, 8, 8}, 1)), *wm = R(RandN({4}, 2)), *bm = R(RandN({4}, 3));
    float *p = vt_f32(xm);
    for (int64_t i = 0; i < xm->numel; i++) p[i] = 1000.0f + 0.01f * p[i];
    RequireGrad({xm, wm, bm});
    ExpectCudaMatchesCpu([](auto &in) { return vt_group_norm_silu(in[0], 2, in[1], in[2], 1e-6f); }, {xm, wm, bm},
                         1e-4);
    // the GPU op equals the GPU chain group_norm -> silu
    vt_tensor *xc = R(RandN({2, 8, 3, 5, 5}, 4)), *gx = R(vt_to_device(xc, VT_CUDA));
    vt_tensor *gw = R(vt_to_device(R(RandN({8}, 5)), VT_CUDA)), *gb = R(vt_to_device(R(RandN({8}, 6)), VT_CUDA));
    vt_tensor *fused = R(vt_group_norm_silu(gx, 4, gw, gb, 1e-5f)), *h = R(vt_group_norm(gx, 4, gw, gb, 1e-5f));
    vt_tensor *chain = R(vt_silu(h));
    ASSERT_NE(fused, nullptr) << vt_error_message();
    ASSERT_NE(chain, nullptr) << vt_error_message();
    vt_tensor *fc = R(vt_to_device(fused, VT_CPU)), *cc = R(vt_to_device(chain, VT_CPU));
    EXPECT_LE(RelErr(fc, cc), 1e-5);
}

TEST_F(CudaOps, LayerNormAndL2Normalize) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 6}, 1, 3.0f)), *w = R(RandN({6}, 2)), *b = R(RandN({6}, 3));
    vt_tensor *xw = R(RandN({77, 1280}, 4)), *ww = R(RandN({1280}, 5)), *bw = R(RandN({1280}, 6));
    RequireGrad({x, w, b, xw, ww, bw});
    ExpectCudaMatchesCpu([](auto &in) { return vt_layer_norm(in[0], in[1], in[2], 1e-5f); }, {x, w, b}, 1e-5);
    ExpectCudaMatchesCpu([](auto &in) { return vt_layer_norm(in[0], nullptr, nullptr, 1e-5f); }, {x}, 1e-5);
    ExpectCudaMatchesCpu([](auto &in) { return vt_layer_norm(in[0], in[1], in[2], 1e-5f); }, {xw, ww, bw}, 1e-5);
    ExpectCudaMatchesCpu([](auto &in) { return vt_l2_normalize(in[0], 1e-12f); }, {x}, 1e-5);
    ExpectCudaMatchesCpu([](auto &in) { return vt_l2_normalize(in[0], 1e-12f); }, {xw}, 1e-5);
    vt_tensor *s = R(RandN({2, 4}, 2, 1e-3f));  // norms below eps: the constant-denominator branch
    RequireGrad({s});
    ExpectCudaMatchesCpu([](auto &in) { return vt_l2_normalize(in[0], 0.5f); }, {s}, 1e-5);
}

TEST_F(CudaOps, Softmax) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 6}, 7, 2.0f)), *x2 = R(RandN({4, 5}, 8)), *lng = R(RandN({3, 3000}, 9, 4.0f));
    RequireGrad({x, x2, lng});
    for (vt_tensor *t : {x, x2, lng}) ExpectCudaMatchesCpu([](auto &in) { return vt_softmax(in[0]); }, {t}, 1e-5);
}

// The CPU op's shapes, then the head dims of the real models (64: UNet, CLIP-L, VideoMAE;
// 80: ViT-H) and the largest kernel instantiation (d up to 256), with tiles that do not
// divide the lengths.
TEST_F(CudaOps, Attention) {
    struct {
        int64_t B, Lq, Lk;
        int H;
        int64_t d;
        bool causal;
    } cases[] = {{2, 5, 7, 2, 3, false}, {1, 6, 4, 3, 2, false},   {2, 6, 6, 2, 4, true},
                 {1, 7, 4, 2, 3, true},  {1, 3, 8, 1, 5, true},    {2, 77, 77, 2, 64, true},
                 {2, 40, 77, 3, 64, false}, {1, 50, 33, 2, 80, false}, {1, 16, 16, 5, 64, false},
                 {1, 19, 21, 1, 200, false}, {1, 35, 35, 1, 130, true}, {1, 1, 9, 2, 32, false},
                 {3, 130, 70, 1, 33, true}};
    for (auto &c : cases) {
        SCOPED_TRACE(testing::Message() << "B " << c.B << " Lq " << c.Lq << " Lk " << c.Lk << " H " << c.H << " d "
                                        << c.d << (c.causal ? " causal" : ""));
        Releaser R;
        const int64_t C = c.H * c.d;
        vt_tensor *q = R(RandN({c.B, c.Lq, C}, 11)), *k = R(RandN({c.B, c.Lk, C}, 12)), *v = R(RandN({c.B, c.Lk, C}, 13));
        RequireGrad({q, k, v});
        const float scale = 1.0f / std::sqrt((float)c.d);
        const int H = c.H;
        const bool causal = c.causal;
        ExpectCudaMatchesCpu([=](auto &in) { return vt_attention(in[0], in[1], in[2], H, scale, causal); }, {q, k, v},
                             1e-4);
    }
}

TEST_F(CudaOps, AttentionOnlyRequestedGradients) {
    Releaser R;
    vt_tensor *q = R(RandN({1, 4, 6}, 21)), *k = R(RandN({1, 5, 6}, 22)), *v = R(RandN({1, 5, 6}, 23));
    vt_requires_grad(v, 1);  // v alone: no query-side pass
    ExpectCudaMatchesCpu([](auto &in) { return vt_attention(in[0], in[1], in[2], 2, 0.4f, 0); }, {q, k, v}, 1e-5);
    vt_requires_grad(v, 0);
    vt_requires_grad(q, 1);  // q alone: no key-side pass
    ExpectCudaMatchesCpu([](auto &in) { return vt_attention(in[0], in[1], in[2], 3, 0.4f, 1); }, {q, k, v}, 1e-5);
    vt_requires_grad(q, 0);
    vt_requires_grad(k, 1);  // k alone: D from the query side, no dq
    ExpectCudaMatchesCpu([](auto &in) { return vt_attention(in[0], in[1], in[2], 2, 0.4f, 1); }, {q, k, v}, 1e-5);
}

TEST_F(CudaOps, Conv2d) {
    struct {
        int64_t N, C, H, W, O, kh, kw;
        int stride, pad;
    } cases[] = {{2, 3, 5, 5, 4, 1, 1, 1, 0}, {2, 3, 6, 5, 4, 3, 3, 1, 1}, {1, 2, 7, 6, 3, 3, 3, 2, 1},
                 {1, 2, 6, 7, 3, 3, 3, 2, 0}, {2, 3, 8, 8, 5, 4, 4, 4, 0}, {1, 2, 5, 6, 3, 2, 3, 1, 1},
                 {1, 2, 4, 4, 2, 1, 1, 2, 1}, {1, 8, 33, 32, 4, 3, 3, 1, 1}, {2, 32, 16, 20, 24, 3, 3, 2, 1}};
    for (auto &k : cases) {
        SCOPED_TRACE(testing::Message() << "conv " << k.N << "x" << k.C << "x" << k.H << "x" << k.W << " O " << k.O
                                        << " k " << k.kh << "x" << k.kw << " s " << k.stride << " p " << k.pad);
        Releaser R;
        vt_tensor *x = R(RandN({k.N, k.C, k.H, k.W}, 4)), *w = R(RandN({k.O, k.C, k.kh, k.kw}, 5, 0.5f));
        vt_tensor *b = R(RandN({k.O}, 6));
        RequireGrad({x, w, b});
        const int s = k.stride, p = k.pad;
        ExpectCudaMatchesCpu([=](auto &in) { return vt_conv2d(in[0], in[1], in[2], s, p); }, {x, w, b}, 1e-5);
        ExpectCudaMatchesCpu([=](auto &in) { return vt_conv2d(in[0], in[1], nullptr, s, p); }, {x, w}, 1e-5);
        vt_requires_grad(w, 0);  // frozen weight: input gradient only
        ExpectCudaMatchesCpu([=](auto &in) { return vt_conv2d(in[0], in[1], in[2], s, p); }, {x, w, b}, 1e-5);
        // with a residual of the output's shape (bias and no bias)
        const int64_t OH = (k.H + 2 * p - k.kh) / s + 1, OW = (k.W + 2 * p - k.kw) / s + 1;
        vt_tensor *r = R(RandN({k.N, k.O, OH, OW}, 7));
        RequireGrad({r});
        ExpectCudaMatchesCpu([=](auto &in) { return vt_conv2d_add(in[0], in[1], in[2], s, p, in[3]); }, {x, w, b, r},
                             1e-5);
        ExpectCudaMatchesCpu([=](auto &in) { return vt_conv2d_add(in[0], in[1], nullptr, s, p, in[2]); }, {x, w, r},
                             1e-5);
    }
}

TEST_F(CudaOps, ConvTime) {
    struct {
        int64_t B, C, Tn, H, W, O, kt;
        int pad;
    } cases[] = {{2, 3, 4, 2, 3, 4, 3, 1}, {1, 2, 5, 3, 2, 3, 3, 0}, {1, 3, 3, 2, 2, 2, 1, 0},
                 {1, 2, 2, 2, 1, 2, 3, 2}, {1, 16, 8, 6, 5, 16, 3, 1}};
    for (auto &k : cases) {
        Releaser R;
        vt_tensor *x = R(RandN({k.B, k.C, k.Tn, k.H, k.W}, 4)), *w = R(RandN({k.O, k.C, k.kt, 1, 1}, 5, 0.5f));
        vt_tensor *b = R(RandN({k.O}, 6));
        RequireGrad({x, w, b});
        const int p = k.pad;
        ExpectCudaMatchesCpu([=](auto &in) { return vt_conv_time(in[0], in[1], in[2], p); }, {x, w, b}, 1e-5);
        ExpectCudaMatchesCpu([=](auto &in) { return vt_conv_time(in[0], in[1], nullptr, p); }, {x, w}, 1e-5);
        vt_tensor *r = R(RandN({k.B, k.O, k.Tn + 2 * p - k.kt + 1, k.H, k.W}, 7));
        RequireGrad({r});
        ExpectCudaMatchesCpu([=](auto &in) { return vt_conv_time_add(in[0], in[1], in[2], p, in[3]); }, {x, w, b, r},
                             1e-5);
    }
}

// Frozen bf16 / f16 weights (ops.h, "low-precision weights"): the GPU against the CPU op on the
// same inputs, forward and the gradients of x, b, r, A, B. linear multiplies the same rounded
// operands with f32 accumulation on both (summation order apart: tight). cuDNN's conv output (y,
// dx) is rounded to w's dtype once more than the CPU's: the dtype's tolerance, relative to max |.|.
TEST_F(CudaOps, LowPrecisionWeights) {
    for (vt_dtype dt : {VT_BF16, VT_F16}) {
        SCOPED_TRACE(vt_dtype_name(dt));
        const double tol = dt == VT_BF16 ? 2e-2 : 2e-3;
        Releaser R;
        vt_tensor *x = R(RandN({3, 77, 96}, 1)), *w = R(RandN({80, 96}, 2, 0.1f)), *b = R(RandN({80}, 3));
        vt_tensor *A = R(RandN({4, 96}, 4, 0.1f)), *B = R(RandN({80, 4}, 5, 0.1f));
        vt_tensor *wl = R(vt_to_dtype(w, dt));
        RequireGrad({x, b, A, B});
        ExpectCudaMatchesCpu([](auto &in) { return vt_linear(in[0], in[1], in[2]); }, {x, wl, b}, 1e-4);
        ExpectCudaMatchesCpu([](auto &in) { return vt_linear(in[0], in[1], nullptr); }, {x, wl}, 1e-4);
        ExpectCudaMatchesCpu([](auto &in) { return vt_linear_lora(in[0], in[1], in[2], in[3], in[4], 0.5f); },
                             {x, wl, b, A, B}, 1e-4);
        struct {
            int64_t N, C, H, W, O, k;
            int stride, pad;
        } convs[] = {{2, 3, 5, 5, 4, 1, 1, 0}, {2, 4, 6, 5, 8, 3, 1, 1}, {1, 8, 33, 32, 4, 3, 1, 1},
                     {2, 32, 16, 20, 24, 3, 2, 1}};
        for (auto &k : convs) {
            SCOPED_TRACE(testing::Message() << "conv2d " << k.N << "x" << k.C << "x" << k.H << "x" << k.W << " O "
                                            << k.O << " k " << k.k << " s " << k.stride << " p " << k.pad);
            vt_tensor *xc = R(RandN({k.N, k.C, k.H, k.W}, 6)), *wc = R(RandN({k.O, k.C, k.k, k.k}, 7, 0.3f));
            vt_tensor *bc = R(RandN({k.O}, 8)), *wcl = R(vt_to_dtype(wc, dt));
            const int s = k.stride, p = k.pad;
            const int64_t OH = (k.H + 2 * p - k.k) / s + 1, OW = (k.W + 2 * p - k.k) / s + 1;
            vt_tensor *rc = R(RandN({k.N, k.O, OH, OW}, 9));
            RequireGrad({xc, bc, rc});
            ExpectCudaMatchesCpu([=](auto &in) { return vt_conv2d(in[0], in[1], in[2], s, p); }, {xc, wcl, bc}, tol);
            ExpectCudaMatchesCpu([=](auto &in) { return vt_conv2d(in[0], in[1], nullptr, s, p); }, {xc, wcl}, tol);
            ExpectCudaMatchesCpu([=](auto &in) { return vt_conv2d_add(in[0], in[1], in[2], s, p, in[3]); },
                                 {xc, wcl, bc, rc}, tol);
        }
        vt_tensor *xt = R(RandN({1, 16, 8, 6, 5}, 10)), *wt = R(RandN({16, 16, 3, 1, 1}, 11, 0.3f));
        vt_tensor *bt = R(RandN({16}, 12)), *rt = R(RandN({1, 16, 8, 6, 5}, 13)), *wtl = R(vt_to_dtype(wt, dt));
        RequireGrad({xt, bt, rt});
        ExpectCudaMatchesCpu([](auto &in) { return vt_conv_time(in[0], in[1], in[2], 1); }, {xt, wtl, bt}, tol);
        ExpectCudaMatchesCpu([](auto &in) { return vt_conv_time_add(in[0], in[1], in[2], 1, in[3]); },
                             {xt, wtl, bt, rt}, tol);
    }
}

TEST_F(CudaOps, PermuteConcatSlice) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 4}, 1)), *v = R(RandN({2, 3, 4, 2, 3}, 2));
    RequireGrad({x, v});
    ExpectCudaMatchesCpu([](auto &in) { const int p[] = {2, 0, 1}; return vt_permute(in[0], 3, p); }, {x}, 0.0);
    ExpectCudaMatchesCpu([](auto &in) { const int p[] = {1, 0, 2}; return vt_permute(in[0], 3, p); }, {x}, 0.0);
    // [b, c, t, h, w] -> [(b h w), t, c] and [(b t), c, h, w] layouts
    ExpectCudaMatchesCpu([](auto &in) { const int p[] = {0, 3, 4, 2, 1}; return vt_permute(in[0], 5, p); }, {v}, 0.0);
    ExpectCudaMatchesCpu([](auto &in) { const int p[] = {0, 2, 1, 3, 4}; return vt_permute(in[0], 5, p); }, {v}, 0.0);
    vt_tensor *a = R(RandN({2, 1, 3}, 3)), *b = R(RandN({2, 4, 3}, 4)), *c = R(RandN({2, 2, 3}, 5));
    vt_tensor *d = R(RandN({3, 3}, 6)), *e = R(RandN({1, 3}, 7)), *f = R(RandN({3, 2}, 8));
    RequireGrad({a, b, c, d, e, f});
    ExpectCudaMatchesCpu([](auto &in) { return vt_concat(in.data(), 3, 1); }, {a, b, c}, 0.0);
    ExpectCudaMatchesCpu([](auto &in) { return vt_concat(in.data(), 2, 0); }, {d, e}, 0.0);
    ExpectCudaMatchesCpu([](auto &in) { return vt_concat(in.data(), 2, -1); }, {d, f}, 0.0);
    ExpectCudaMatchesCpu([](auto &in) { return vt_slice(in[0], 1, 1, 2); }, {x}, 0.0);
    ExpectCudaMatchesCpu([](auto &in) { return vt_slice(in[0], -1, 0, 3); }, {x}, 0.0);
    ExpectCudaMatchesCpu([](auto &in) { return vt_slice(in[0], 0, 1, 1); }, {v}, 0.0);
}

TEST_F(CudaOps, RepeatEmbeddingGatherUpsample) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 4}, 1));
    RequireGrad({x});
    ExpectCudaMatchesCpu([](auto &in) { return vt_repeat_interleave(in[0], 1, 3); }, {x}, 1e-6);
    ExpectCudaMatchesCpu([](auto &in) { return vt_repeat_interleave(in[0], 0, 2); }, {x}, 1e-6);
    ExpectCudaMatchesCpu([](auto &in) { return vt_repeat_interleave(in[0], -1, 4); }, {x}, 1e-6);
    vt_tensor *w = R(RandN({6, 4}, 2)), *ids = R(Ids({2, 3}, {5, 0, 2, 2, 5, 1}));  // repeated ids add up
    RequireGrad({w});
    ExpectCudaMatchesCpu([](auto &in) { return vt_embedding(in[0], in[1]); }, {w, ids}, 1e-6);
    vt_tensor *xs = R(RandN({3, 5, 4}, 3)), *idx = R(Ids({3}, {4, 0, 2}));
    RequireGrad({xs});
    ExpectCudaMatchesCpu([](auto &in) { return vt_gather_rows(in[0], in[1]); }, {xs, idx}, 0.0);
    vt_tensor *u = R(RandN({2, 3, 3, 2}, 4));
    RequireGrad({u});
    ExpectCudaMatchesCpu([](auto &in) { return vt_upsample_nearest2x(in[0]); }, {u}, 0.0);
}

TEST_F(CudaOps, IndicesOutOfRangeAreErrors) {
    Releaser R;
    vt_tensor *w = R(vt_to_device(R(RandN({6, 4}, 2)), VT_CUDA));
    vt_tensor *ids = R(vt_to_device(R(Ids({3}, {1, 6, 2})), VT_CUDA));
    ASSERT_VT(w);
    ASSERT_VT(ids);
    EXPECT_EQ(vt_embedding(w, ids), nullptr);
    EXPECT_EQ(vt_error_code(), VT_ERR_ARG);
    EXPECT_NE(std::string(vt_error_message()).find("id 6 (at position 1)"), std::string::npos) << vt_error_message();
    vt_tensor *xs = R(vt_to_device(R(RandN({2, 5, 4}, 3)), VT_CUDA));
    vt_tensor *idx = R(vt_to_device(R(Ids({2}, {0, -1})), VT_CUDA));
    EXPECT_EQ(vt_gather_rows(xs, idx), nullptr);
    EXPECT_NE(std::string(vt_error_message()).find("index -1 (at position 1)"), std::string::npos)
        << vt_error_message();
}

TEST_F(CudaOps, Reductions) {
    Releaser R;
    vt_tensor *x = R(RandN({2, 3, 4}, 1)), *big = R(RandN({3, 70000}, 2));
    RequireGrad({x, big});
    for (vt_tensor *t : {x, big}) {
        ExpectCudaMatchesCpu([](auto &in) { return vt_sum(in[0]); }, {t}, 1e-6);
        ExpectCudaMatchesCpu([](auto &in) { return vt_mean(in[0]); }, {t}, 1e-6);
        ExpectCudaMatchesCpu([](auto &in) { return vt_sum_dim(in[0], 0, 0); }, {t}, 1e-6);
        ExpectCudaMatchesCpu([](auto &in) { return vt_mean_dim(in[0], -1, 1); }, {t}, 1e-6);
        ExpectCudaMatchesCpu([](auto &in) { return vt_sum_dim(in[0], 1, 1); }, {t}, 1e-6);
    }
}

TEST_F(CudaOps, Resize) {
    Releaser R;
    struct {
        int bc, aa, h, w, oh, ow;
    } cases[] = {{0, 0, 4, 5, 7, 3}, {0, 1, 9, 7, 4, 3},  {1, 0, 4, 5, 7, 3},     {1, 1, 9, 7, 4, 3},
                 {1, 1, 3, 4, 6, 9}, {0, 1, 6, 6, 6, 2},  {1, 1, 512, 320, 224, 224}, {0, 1, 40, 64, 40, 64},
                 {1, 0, 5, 6, 5, 11}, {0, 0, 7, 6, 3, 6}};
    for (auto &c : cases) {
        SCOPED_TRACE(testing::Message() << "bicubic " << c.bc << " aa " << c.aa << " " << c.h << "x" << c.w << " -> "
                                        << c.oh << "x" << c.ow);
        vt_tensor *x = R(RandN({2, 3, c.h, c.w}, 3));
        RequireGrad({x});
        const int bc = c.bc, aa = c.aa, oh = c.oh, ow = c.ow;
        ExpectCudaMatchesCpu(
            [=](auto &in) {
                return bc ? vt_resize_bicubic(in[0], oh, ow, aa) : vt_resize_bilinear(in[0], oh, ow, aa);
            },
            {x}, 1e-5);
    }
}

TEST_F(CudaOps, NormalizeChannelsAndCosine) {
    Releaser R;
    const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f}, stdv[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    vt_tensor *x = R(RandU({2, 3, 4, 5}, 4, 0.0f, 1.0f));
    RequireGrad({x});
    ExpectCudaMatchesCpu([&](auto &in) { return vt_normalize_channels(in[0], mean, stdv); }, {x}, 1e-6);
    vt_tensor *a = R(RandN({2, 3, 6}, 5)), *b = R(RandN({2, 3, 6}, 6));
    vt_tensor *a1 = R(RandN({7}, 8)), *b1 = R(RandN({7}, 9));
    vt_tensor *al = R(RandN({4, 1024}, 10)), *bl = R(RandN({4, 1024}, 11));
    RequireGrad({a, b, a1, b1, al, bl});
    ExpectCudaMatchesCpu([](auto &in) { return vt_cosine_similarity(in[0], in[1], 1e-8f); }, {a, b}, 1e-5);
    ExpectCudaMatchesCpu([](auto &in) { return vt_cosine_similarity(in[0], in[1], 1e-8f); }, {a1, b1}, 1e-5);
    ExpectCudaMatchesCpu([](auto &in) { return vt_cosine_similarity(in[0], in[1], 1e-8f); }, {al, bl}, 1e-5);
    const int64_t zshape[2] = {2, 5};
    vt_tensor *z = R(vt_zeros(VT_F32, VT_CPU, 2, zshape)), *zb = R(RandN({2, 5}, 12));
    RequireGrad({z, zb});  // a zero row: norms clamped to eps, the 0/0 term dropped
    ExpectCudaMatchesCpu([](auto &in) { return vt_cosine_similarity(in[0], in[1], 1e-8f); }, {z, zb}, 1e-5);
}

// The full-size VideoCrafter2 shapes where index arithmetic, grid sizes and cuDNN descriptors
// meet their largest values (16 frames x 320 channels x 64x64 latents x batch 2 = 42 M elements
// a tensor; temporal attention over (b h w) = 8192 sequences; spatial attention over 4096
// tokens; a 320-channel 3x3 conv at 64x64). Several seconds of CPU reference on a 16-core
// machine; left out of the compute-sanitizer runs (scripts/gpu-run-tests.sh).
TEST_F(CudaOps, FullSizeShapes) {
#ifdef VADER_CUDA_EMU
    GTEST_SKIP() << "CUDA emulator build: the full-size shapes would take hours on the emulator; they run on GPUs";
#endif
    {
        SCOPED_TRACE("group_norm [2, 320, 16, 64, 64], 32 groups");
        Releaser R;
        vt_tensor *x = R(RandN({2, 320, 16, 64, 64}, 1)), *w = R(RandN({320}, 2)), *b = R(RandN({320}, 3));
        RequireGrad({x, w, b});
        ExpectCudaMatchesCpu([](auto &in) { return vt_group_norm(in[0], 32, in[1], in[2], 1e-6f); }, {x, w, b}, 1e-4);
    }
    {
        SCOPED_TRACE("broadcast add + [b, c, t, h, w] -> [(b h w), t, c] permute");
        Releaser R;
        vt_tensor *x = R(RandN({2, 320, 16, 64, 64}, 4)), *c = R(RandN({320, 1, 1, 1}, 5));
        RequireGrad({x, c});
        ExpectCudaMatchesCpu(
            [](auto &in) {
                vt_tensor *s = vt_add(in[0], in[1]);
                const int p[] = {0, 3, 4, 2, 1};
                vt_tensor *o = s ? vt_permute(s, 5, p) : nullptr;
                vt_release(s);
                return o;
            },
            {x, c}, 1e-6);
    }
    {
        SCOPED_TRACE("temporal attention [8192, 16, 320], 5 heads of 64");
        Releaser R;
        vt_tensor *q = R(RandN({8192, 16, 320}, 6)), *k = R(RandN({8192, 16, 320}, 7)), *v = R(RandN({8192, 16, 320}, 8));
        RequireGrad({q, k, v});
        ExpectCudaMatchesCpu([](auto &in) { return vt_attention(in[0], in[1], in[2], 5, 0.125f, 0); }, {q, k, v}, 1e-4);
    }
    {
        SCOPED_TRACE("spatial attention [1, 4096, 320], 5 heads of 64");
        Releaser R;
        vt_tensor *q = R(RandN({1, 4096, 320}, 9)), *k = R(RandN({1, 4096, 320}, 10)), *v = R(RandN({1, 4096, 320}, 11));
        RequireGrad({q, k, v});
        ExpectCudaMatchesCpu([](auto &in) { return vt_attention(in[0], in[1], in[2], 5, 0.125f, 0); }, {q, k, v}, 1e-4);
    }
    {
        SCOPED_TRACE("conv2d [2, 320, 64, 64] -> 320, 3x3, pad 1");
        Releaser R;
        vt_tensor *x = R(RandN({2, 320, 64, 64}, 12)), *w = R(RandN({320, 320, 3, 3}, 13, 0.05f));
        vt_tensor *b = R(RandN({320}, 14));
        RequireGrad({x, b});  // frozen weight, as in VADER: input and bias gradients
        ExpectCudaMatchesCpu([](auto &in) { return vt_conv2d(in[0], in[1], in[2], 1, 1); }, {x, w, b}, 1e-4);
    }
    {
        SCOPED_TRACE("conv_time [2, 64, 16, 64, 64], kernel 3, pad 1");
        Releaser R;
        vt_tensor *x = R(RandN({2, 64, 16, 64, 64}, 15)), *w = R(RandN({64, 64, 3, 1, 1}, 16, 0.1f));
        RequireGrad({x, w});
        ExpectCudaMatchesCpu([](auto &in) { return vt_conv_time(in[0], in[1], nullptr, 1); }, {x, w}, 1e-4);
    }
}
