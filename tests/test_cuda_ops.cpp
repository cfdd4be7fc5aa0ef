// test_cuda_ops.cpp — every CUDA kernel against the CPU reference (forward and the gradients
// of every input). Skips, saying so, when the build has no CUDA backend or no GPU is present.
#include "testutil.h"
#ifdef VADER_HAVE_CUDA
#include "cuda/backend.h"
#endif
#include <functional>

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
