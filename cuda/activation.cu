// activation.cu — silu, sigmoid, gelu (exact erf), quick_gelu, GEGLU and dropout, forward and
// backward side by side, under the op names of core/ops/activation.c. Same formulas as the CPU
// kernels (sign-split sigmoid, Phi + x phi for gelu'); dropout rebuilds the CPU's mask bit for
// bit from vt_hash64(seed, i). Kernels are templated on the element type (f32 instantiated;
// bf16 activations add an instantiation and vt_ld / vt_st overloads).
#include "cuda/common.cuh"
#include "core/ops/params.h"

// ---- scalar functions (device copies of activation.c's; sigmoid and silu' in common.cuh) -----
#define ACT_SQRT1_2 0.70710678118654752440f     // 1 / sqrt(2)
#define ACT_INV_SQRT_2PI 0.39894228040143267794f  // 1 / sqrt(2 pi)
#define ACT_QUICK_GELU_K 1.702f                   // OpenAI CLIP's constant

__device__ __forceinline__ float gelu_f(float x) { return 0.5f * x * (1.0f + erff(x * ACT_SQRT1_2)); }
__device__ __forceinline__ float gelu_df(float x) {
    const float cdf = 0.5f * (1.0f + erff(x * ACT_SQRT1_2));
    return cdf + x * ACT_INV_SQRT_2PI * expf(-0.5f * x * x);
}

__device__ __forceinline__ float act_f(int kind, float x) {
    switch (kind) {
    case VT_ACT_SILU: return x * vt_sigmoid_stable(x);
    case VT_ACT_SIGMOID: return vt_sigmoid_stable(x);
    case VT_ACT_GELU: return gelu_f(x);
    case VT_ACT_QUICK_GELU: return x * vt_sigmoid_stable(ACT_QUICK_GELU_K * x);
    }
    return 0.0f;
}

// silu' = s (1 + x (1 - s)); sigmoid' = s (1 - s); quick_gelu' = s + k x s (1 - s), s = sigmoid(k x)
__device__ __forceinline__ float act_df(int kind, float x) {
    switch (kind) {
    case VT_ACT_SILU: return vt_silu_grad(x);
    case VT_ACT_SIGMOID: {
        const float s = vt_sigmoid_stable(x);
        return s * (1.0f - s);
    }
    case VT_ACT_GELU: return gelu_df(x);
    case VT_ACT_QUICK_GELU: {
        const float s = vt_sigmoid_stable(ACT_QUICK_GELU_K * x);
        return s + ACT_QUICK_GELU_K * x * s * (1.0f - s);
    }
    }
    return 0.0f;
}

// ---- unary activations -------------------------------------------------------------------
// x [n] -> out [n] = f(x)
template <typename T> __global__ void act_forward_kernel(int kind, const T *x, T *out, long long n) {
    VT_GRID_STRIDE(i, n) vt_st(out + i, act_f(kind, vt_ld(x + i)));
}

// g [n], x [n] (saved input) -> dx [n] = g f'(x)
template <typename T> __global__ void act_backward_kernel(int kind, const T *g, const T *x, T *dx, long long n) {
    VT_GRID_STRIDE(i, n) vt_st(dx + i, vt_ld(g + i) * act_df(kind, vt_ld(x + i)));
}

static vt_err act_forward_cuda(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const int kind = ((const vt_act_params *)n->params)->kind;
    if (out->numel == 0) return VT_OK;
    act_forward_kernel<float><<<vt_grid_1d(out->numel), 256>>>(kind, vt_f32(in[0]), vt_f32(out), out->numel);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

static vt_err act_backward_cuda(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    if (!n->need[0]) return VT_OK;
    const int kind = ((const vt_act_params *)n->params)->kind;
    gin[0] = vt_empty(VT_F32, VT_CUDA, gout->ndim, gout->shape);
    if (!gin[0]) return vt_error_code();
    if (gout->numel == 0) return VT_OK;
    act_backward_kernel<float><<<vt_grid_1d(gout->numel), 256>>>(kind, vt_f32(gout), vt_f32(n->saved[0]),
                                                                 vt_f32(gin[0]), gout->numel);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

// ---- GEGLU -------------------------------------------------------------------------------
// x [M, 2D] -> out [M, D] = a * gelu(g), a = x[:, :D], g = x[:, D:]
template <typename T> __global__ void geglu_forward_kernel(const T *x, T *out, long long D, long long n) {
    VT_GRID_STRIDE(i, n) {
        const long long m = i / D, j = i % D;
        const T *a = x + m * 2 * D;
        vt_st(out + i, vt_ld(a + j) * gelu_f(vt_ld(a + D + j)));
    }
}

// g [M, D], saved x [M, 2D] -> dx [M, 2D]: da = g gelu(gate), dgate = g a gelu'(gate)
template <typename T> __global__ void geglu_backward_kernel(const T *g, const T *x, T *dx, long long D, long long n) {
    VT_GRID_STRIDE(i, n) {
        const long long m = i / D, j = i % D;
        const T *a = x + m * 2 * D;
        T *da = dx + m * 2 * D;
        const float gi = vt_ld(g + i), av = vt_ld(a + j), gv = vt_ld(a + D + j);
        vt_st(da + j, gi * gelu_f(gv));
        vt_st(da + D + j, gi * av * gelu_df(gv));
    }
}

static vt_err geglu_forward_cuda(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    (void)n;
    const int64_t D = vt_dim(out, -1);
    if (out->numel == 0) return VT_OK;
    geglu_forward_kernel<float><<<vt_grid_1d(out->numel), 256>>>(vt_f32(in[0]), vt_f32(out), D, out->numel);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

static vt_err geglu_backward_cuda(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    if (!n->need[0]) return VT_OK;
    const vt_tensor *x = n->saved[0];
    gin[0] = vt_empty(VT_F32, VT_CUDA, x->ndim, x->shape);
    if (!gin[0]) return vt_error_code();
    const int64_t D = vt_dim(gout, -1);
    if (gout->numel == 0) return VT_OK;
    geglu_backward_kernel<float><<<vt_grid_1d(gout->numel), 256>>>(vt_f32(gout), vt_f32(x), vt_f32(gin[0]), D,
                                                                   gout->numel);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

// ---- dropout -----------------------------------------------------------------------------
// tensor.h's vt_hash64 (splitmix64), the same arithmetic in 64-bit unsigned integers.
__device__ __forceinline__ uint64_t hash64_dev(uint64_t seed, uint64_t index) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * (index + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Element i is kept iff u_i = top 24 bits / 2^24 >= p (exact in float, as on the CPU).
__device__ __forceinline__ bool dropout_keep(float p, uint64_t seed, long long i) {
    const float u = (float)(hash64_dev(seed, (uint64_t)i) >> 40) * (1.0f / 16777216.0f);
    return u >= p;
}

// x [n] -> out [n] = keep_i ? x_i scale : 0 (the backward runs it on the gradient: same mask)
template <typename T> __global__ void dropout_kernel(vt_dropout_params p, const T *x, T *out, long long n) {
    VT_GRID_STRIDE(i, n) vt_st(out + i, dropout_keep(p.p, p.seed, i) ? vt_ld(x + i) * p.scale : 0.0f);
}

static vt_err dropout_forward_cuda(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const vt_dropout_params *p = (const vt_dropout_params *)n->params;
    if (out->numel == 0) return VT_OK;
    dropout_kernel<float><<<vt_grid_1d(out->numel), 256>>>(*p, vt_f32(in[0]), vt_f32(out), out->numel);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

static vt_err dropout_backward_cuda(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    if (!n->need[0]) return VT_OK;
    const vt_dropout_params *p = (const vt_dropout_params *)n->params;
    gin[0] = vt_empty(VT_F32, VT_CUDA, gout->ndim, gout->shape);
    if (!gin[0]) return vt_error_code();
    if (gout->numel == 0) return VT_OK;
    dropout_kernel<float><<<vt_grid_1d(gout->numel), 256>>>(*p, vt_f32(gout), vt_f32(gin[0]), gout->numel);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

extern "C" vt_err vt_cuda_register_activation(void) {
    static const char *acts[] = {"silu", "sigmoid", "gelu", "quick_gelu"};
    for (const char *name : acts)
        if (vt_register_kernels(name, VT_CUDA, act_forward_cuda, act_backward_cuda)) return vt_error_code();
    if (vt_register_kernels("geglu", VT_CUDA, geglu_forward_cuda, geglu_backward_cuda) ||
        vt_register_kernels("dropout", VT_CUDA, dropout_forward_cuda, dropout_backward_cuda))
        return vt_error_code();
    return VT_OK;
}
