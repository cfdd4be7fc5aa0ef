// testutil.cpp — see testutil.h.
#include "testutil.h"
#include <cmath>
#include <cstdlib>
#include <unistd.h>

vt_tensor *RandN(std::vector<int64_t> shape, uint64_t seed, float scale) {
    vt_tensor *t = vt_empty(VT_F32, VT_CPU, (int)shape.size(), shape.data());
    vt_rng r;
    vt_rng_seed(&r, seed);
    vt_fill_normal(t, &r, 0.0f, scale);
    return t;
}

vt_tensor *RandU(std::vector<int64_t> shape, uint64_t seed, float lo, float hi) {
    vt_tensor *t = vt_empty(VT_F32, VT_CPU, (int)shape.size(), shape.data());
    vt_rng r;
    vt_rng_seed(&r, seed);
    vt_fill_uniform(t, &r, lo, hi);
    return t;
}

std::string SharedPath(const std::string &rel) {
    const char *env = getenv("VADER_SHARED");
    std::string base = env && *env ? env : VADER_SHARED_DIR;
    return base + "/" + rel;
}

std::string TempDir() {
    const ::testing::TestInfo *info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string dir = std::string(getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp") + "/vader_test_" +
                      std::to_string(getpid()) + "_" + (info ? info->name() : "x");
    std::string cmd = "mkdir -p '" + dir + "'";
    if (system(cmd.c_str()) != 0) ADD_FAILURE() << "cannot create " << dir;
    return dir;
}

double RelErr(const vt_tensor *a, const vt_tensor *b) {
    EXPECT_EQ(a->numel, b->numel);
    return vt_rel_err(a, b);
}

// sum(out * R) in double, computed without a tape.
static double Objective(const OpFn &fn, const std::vector<vt_tensor *> &inputs, const vt_tensor *R) {
    vt_tape *tok = vt_nograd_begin();
    vt_tensor *out = fn(inputs);
    vt_nograd_end(tok);
    if (!out) {
        ADD_FAILURE() << "forward failed: " << vt_error_message();
        return NAN;
    }
    double s = 0;
    const float *o = vt_f32(out), *r = vt_f32(R);
    for (int64_t i = 0; i < out->numel; i++) s += (double)o[i] * (double)r[i];
    vt_release(out);
    return s;
}

void ExpectGradsMatch(const OpFn &fn, const std::vector<vt_tensor *> &inputs, GradCheckOptions opt) {
    for (auto *x : inputs)
        if (x && x->requires_grad) vt_zero_grad(x);
    vt_tape *tape = vt_tape_begin();
    vt_tensor *out = fn(inputs);
    vt_tape_end(tape);
    ASSERT_NE(out, nullptr) << vt_error_message();
    std::vector<int64_t> oshape(out->shape, out->shape + out->ndim);
    vt_tensor *R = RandN(oshape, opt.seed);
    ASSERT_EQ(vt_backward(tape, out, R), VT_OK) << vt_error_message();
    vt_release(out);
    vt_tape_free(tape);
    for (size_t k = 0; k < inputs.size(); k++) {
        vt_tensor *x = inputs[k];
        if (!x || !x->requires_grad) continue;
        ASSERT_NE(x->grad, nullptr) << "input " << k << " got no gradient";
        ASSERT_EQ(x->grad->numel, x->numel) << "input " << k;
        const float *ga = vt_f32(x->grad);
        float *px = vt_f32(x);
        int64_t n = x->numel, probes = std::min<int64_t>(n, opt.max_elems);
        std::vector<double> num(probes), ana(probes);
        double maxnum = 0;
        for (int64_t p = 0; p < probes; p++) {
            int64_t i = probes == n ? p : (p * 2654435761LL + 17) % n;
            float orig = px[i];
            px[i] = orig + (float)opt.eps;
            double fp = Objective(fn, inputs, R);
            px[i] = orig - (float)opt.eps;
            double fm = Objective(fn, inputs, R);
            px[i] = orig;
            // use the actually representable step
            double h = (double)(orig + (float)opt.eps) - (double)(orig - (float)opt.eps);
            num[p] = (fp - fm) / h;
            ana[p] = ga[i];
            maxnum = std::max(maxnum, std::fabs(num[p]));
        }
        int bad = 0;
        for (int64_t p = 0; p < probes; p++) {
            double tol = opt.atol + opt.rtol * std::max(maxnum, 1e-12);
            if (!(std::fabs(num[p] - ana[p]) <= tol)) {
                if (bad++ < 5)
                    ADD_FAILURE() << "input " << k << " probe " << p << ": analytic " << ana[p] << " numeric "
                                  << num[p] << " (tol " << tol << ")";
            }
        }
        EXPECT_EQ(bad, 0) << "input " << k << ": " << bad << " of " << probes << " probes off";
        vt_zero_grad(x);
    }
    vt_release(R);
}
