// testutil.h — helpers for the GoogleTest suites: random tensors, the shared/ folder, and the
// finite-difference gradient check every op is tested with.
#pragma once
#include <gtest/gtest.h>
#include <functional>
#include <string>
#include <vector>
#include "core/vt.h"

// Random normal f32 cpu tensor.
vt_tensor *RandN(std::vector<int64_t> shape, uint64_t seed, float scale = 1.0f);
vt_tensor *RandU(std::vector<int64_t> shape, uint64_t seed, float lo, float hi);
// Path under the shared folder ($VADER_SHARED or the build's default ../shared).
std::string SharedPath(const std::string &rel);
// A scratch directory unique to the running test (created; removed by the caller if wanted).
std::string TempDir();

// Builds an output from the inputs (must not release them).
using OpFn = std::function<vt_tensor *(const std::vector<vt_tensor *> &)>;

struct GradCheckOptions {
    double eps = 1e-2;       // central-difference step (inputs are f32)
    double rtol = 2e-2;      // |analytic - numeric| <= atol + rtol * max|numeric|
    double atol = 1e-3;
    int max_elems = 48;      // elements probed per input (spread over the tensor)
    uint64_t seed = 7;       // cotangent R
};

// For every input with requires_grad: compares d sum(out * R) / d input from the tape with
// central differences of the same scalar. Reports failures with EXPECT.
void ExpectGradsMatch(const OpFn &fn, const std::vector<vt_tensor *> &inputs, GradCheckOptions opt = {});

// Max |a-b| / max |b| for two f32 cpu tensors (asserts equal numel).
double RelErr(const vt_tensor *a, const vt_tensor *b);

// Releases tensors at scope exit.
struct Releaser {
    std::vector<vt_tensor *> ts;
    vt_tensor *operator()(vt_tensor *t) { ts.push_back(t); return t; }
    ~Releaser() { for (auto *t : ts) vt_release(t); }
};

#define ASSERT_VT(expr) ASSERT_NE((expr), nullptr) << vt_error_message()
#define ASSERT_VT_OK(expr) ASSERT_EQ((expr), VT_OK) << vt_error_message()
