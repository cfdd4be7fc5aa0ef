// vmath.h — exp, erf, the normal CDF, sigmoid and GELU for the CPU kernels' inner loops, written
// so that GCC vectorises a loop calling them: no branches (both sides computed, then selected),
// no libm calls, float bit tricks through unions. libm's expf / erff are scalar calls and were
// 13% of a UNet forward+backward (GELU/GEGLU, SiLU, softmax); these run 8 lanes wide.
//
// Accuracy (checked against double-precision libm over the float range in tests/test_vmath):
// vt_expf <= 2 ulp (relative 2.4e-7); vt_erff and vt_normcdf <= ~2.5e-7 relative (the CDF
// relative in both tails too: its lower tail is computed as erfc, never as 1 - erf).
//
// VT_SIMD_CLONES on a kernel function makes GCC compile it twice, for x86-64-v3 (AVX2 + FMA)
// and for the baseline (SSE2), and pick one at load time by the CPU (an ifunc): the binary still
// runs on any x86-64. Kernels are leaf functions over a range, called from the ops' OpenMP loops
// (the outlined OpenMP bodies would not be cloned).
#pragma once
#include <math.h>
#include <stdint.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define VT_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VT_SIMD_CLONES
#endif

#define VT_SQRT1_2 0.70710678118654752440f     // 1 / sqrt(2)
#define VT_INV_SQRT_2PI 0.39894228040143267794f  // 1 / sqrt(2 pi)

typedef union vt_f32_bits { float f; int32_t i; } vt_f32_bits;

// e^x = 2^n e^r, n = round(x log2 e), r = x - n ln 2 with ln 2 in two parts (Cody-Waite) so r is
// exact; e^r by Cephes' degree-6 minimax polynomial on |r| <= ln2 / 2. 2^n is built in the
// exponent bits as 2^(n-1) * 2 so n = 128 (x up to ln FLT_MAX) stays a normal float.
// x > ln FLT_MAX -> inf, x < -86.9 -> 0 (results below 1.8e-38 are flushed), NaN -> NaN.
static inline float vt_expf(float x) {
    // NaN goes to -86.9 here (a NaN reaching the int conversion below would be undefined) and
    // is put back at the end
    float xc = x > -86.9f ? x : -86.9f;
    xc = xc > 88.72283f ? 88.72283f : xc;
    // round to nearest by the 1.5 * 2^23 trick (no floorf: SSE2 has no vector rounding)
    const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    vt_f32_bits s;
    s.i = (int32_t)((uint32_t)((int32_t)n + 126) << 23);  // 2^(n - 1); n + 126 in [1, 254]
    float y = p * s.f * 2.0f;
    y = x > 88.72283f ? INFINITY : y;
    y = x < -86.9f ? 0.0f : y;
    return x == x ? y : x;
}

// erf(a) / a = P(a^2) on |a| < 1: least-squares-minimax fit, relative error 1.2e-9 (in exact
// arithmetic; float evaluation adds a few ulp).
static inline float vt_erf_small_(float a2) {
    float p = 7.8538576778175e-05f;
    p = p * a2 + -8.010192512908404e-04f;
    p = p * a2 + 5.188327559222072e-03f;
    p = p * a2 + -2.6853811868763715e-02f;
    p = p * a2 + 1.1283585147024976e-01f;
    p = p * a2 + -3.761262582409324e-01f;
    return p * a2 + 1.128379165726689f;
}

// erfc(a) e^(a^2) on 1/2 <= a <= 10 as a degree-8 polynomial in t = 1 / (1 + a / 2) (t in
// [1/6, 4/5]; the substitution makes the 1/a tail polynomial-friendly): relative error 4.4e-8.
// Beyond a = 10 erfc underflows in float anyway (e^(-a^2) < 4e-44).
static inline float vt_erfcx_tail_(float a) {
    const float t = 1.0f / (1.0f + 0.5f * a);
    float p = 4.1009548344708845e-02f;
    p = p * t + -5.301693359336299e-02f;
    p = p * t + -1.6051058621986855e-01f;
    p = p * t + 2.496767574206333e-01f;
    p = p * t + 9.023585657680544e-02f;
    p = p * t + 2.72635566174706e-01f;
    p = p * t + 2.775547194831045e-01f;
    p = p * t + 2.825297878122309e-01f;
    return p * t + -1.7492514062104934e-05f;
}

// e^(-c x^2) for c = 1 or 1/2, accurate although x^2 is not a float: e^y with y rounded to a
// float is off by |y| ulp (relative 5e-6 at y = -87), so x is split as xh + xl with xh of 12
// significant bits (xh^2 exact), y = s + t with s = -c xh^2 exact, t = -c xl (2 xh + xl) small,
// and the rounding residual of s + t goes in by e^(s + t) = e^y (1 + residual).
static inline float vt_exp_neg_sq_(float x, float c) {
    float a = fabsf(x);
    a = a > 20.0f ? 20.0f : a;  // e^(-c a^2) is 0 in float from a = 13.2 on; keeps xh^2 finite
    vt_f32_bits u;
    u.f = a;
    u.i &= (int32_t)0xfffff000;
    const float xh = u.f, xl = a - xh;
    const float s = -c * (xh * xh), t = -c * (xl * (xh + xh + xl));
    const float y = s + t, res = (s - y) + t;  // Fast2Sum: |s| >= |t|
    return vt_expf(y) * (1.0f + res);
}

// erf(x): x P(x^2) inside |x| < 1, sign(x) (1 - e^(-x^2) erfcx(|x|)) outside.
static inline float vt_erff(float x) {
    const float a = fabsf(x);
    const float small = x * vt_erf_small_(a * a);
    const float tail = 1.0f - vt_exp_neg_sq_(x, 1.0f) * vt_erfcx_tail_(a);
    const float big = x < 0.0f ? -tail : tail;
    return a < 1.0f ? small : big;
}

// Phi(x) = (1 + erf(x / sqrt 2)) / 2, the standard normal CDF. *e gets e^(-x^2 / 2) (the
// density's exponential, which the tail formula needs anyway: GELU's derivative reuses it).
static inline float vt_normcdf_e(float x, float *e) {
    const float z = x * VT_SQRT1_2, a = fabsf(z);
    const float ex = vt_exp_neg_sq_(x, 0.5f);  // = e^(-z^2), from x itself (no rounding of z)
    const float small = 0.5f + 0.5f * z * vt_erf_small_(a * a);
    const float c = 0.5f * ex * vt_erfcx_tail_(a);  // erfc(a) / 2 = Phi(-|x|), no cancellation
    const float big = z > 0.0f ? 1.0f - c : c;
    *e = ex;
    // 1/2 + z P(z^2) cancels towards 0 as z -> -1 (relative error 1e-6 at Phi = 0.08): the
    // lower side switches to the erfc form already at z = -1/2
    return z > -0.5f && z < 1.0f ? small : big;
}
static inline float vt_normcdf(float x) {
    float e;
    return vt_normcdf_e(x, &e);
}

// 1 / (1 + e^-x): e^-x = inf for x < -88.7 gives 0, as it should.
static inline float vt_sigmoidf(float x) { return 1.0f / (1.0f + vt_expf(-x)); }
// silu'(x) = s (1 + x (1 - s)), s = sigmoid(x)
static inline float vt_silu_gradf(float x) {
    const float s = vt_sigmoidf(x);
    return s * (1.0f + x * (1.0f - s));
}

// gelu(x) = x Phi(x);  gelu'(x) = Phi(x) + x phi(x), phi(x) = e^(-x^2/2) / sqrt(2 pi)
static inline float vt_geluf(float x) { return x * vt_normcdf(x); }
static inline float vt_gelu_gradf(float x) {
    float e;
    const float cdf = vt_normcdf_e(x, &e);
    return cdf + x * VT_INV_SQRT_2PI * e;
}
