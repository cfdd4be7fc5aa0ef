// optim.cu — the optimiser's kernels (train/adamw.c calls them for parameters on the GPU):
// the fused AdamW update on fp32 parameters / moments, the sum of squares behind the gradient
// norm, and the in-place scale of gradient clipping.
#include "cuda/backend.h"
#include "cuda/check.cuh"
#include "cuda/common.cuh"

// w, m, v, g [n]. The CPU loop of train/adamw.c, operation for operation with explicit
// round-to-nearest intrinsics (no FMA contraction), so both backends give the same bits:
//   w *= decay; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g g; w -= step (m / (sqrt(v) / bc2s + eps))
__global__ void adamw_f32_kernel(float *w, float *m, float *v, const float *g, long long n, float b1, float b2,
                                 float step_size, float bc2_sqrt, float eps, float decay) {
    const float c1 = 1.0f - b1, c2 = 1.0f - b2;
    VT_GRID_STRIDE(k, n) {
        float gk = g[k];
        float wk = __fmul_rn(w[k], decay);
        float mk = __fadd_rn(__fmul_rn(b1, m[k]), __fmul_rn(c1, gk));
        float vk = __fadd_rn(__fmul_rn(b2, v[k]), __fmul_rn(__fmul_rn(c2, gk), gk));
        float den = __fadd_rn(__fdiv_rn(__fsqrt_rn(vk), bc2_sqrt), eps);
        wk = __fsub_rn(wk, __fdiv_rn(__fmul_rn(step_size, mk), den));
        m[k] = mk;
        v[k] = vk;
        w[k] = wk;
    }
}

extern "C" vt_err vt_cuda_adamw_f32(float *w, float *m, float *v, const float *g, int64_t n, float b1, float b2,
                                    float step_size, float bc2_sqrt, float eps, float decay) {
    if (n <= 0) return VT_OK;
    adamw_f32_kernel<<<vt_grid_1d(n), 256>>>(w, m, v, g, n, b1, b2, step_size, bc2_sqrt, eps, decay);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

// g [n] -> part [gridDim.x]: per-block sums of g^2 in double (the host adds the parts in order,
// so the result does not depend on scheduling).
#define SUMSQ_BLOCKS 128
__global__ void sumsq_f32_kernel(const float *g, long long n, double *part) {
    double s = 0;
    VT_GRID_STRIDE(k, n) s += (double)g[k] * (double)g[k];
    s = vt_block_sum(s);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

extern "C" vt_err vt_cuda_sumsq_f32(const float *g, int64_t n, double *out) {
    *out = 0;
    if (n <= 0) return VT_OK;
    vt_tensor *part = vt_cuda_scratch(VT_I64, SUMSQ_BLOCKS);  // 8-byte slots for the doubles
    if (!part) return vt_error_code();
    sumsq_f32_kernel<<<SUMSQ_BLOCKS, 256>>>(g, n, (double *)vt_data(part));
    cudaError_t le = cudaGetLastError();
    double host[SUMSQ_BLOCKS];
    cudaError_t ce = le == cudaSuccess ? cudaMemcpy(host, vt_data(part), sizeof host, cudaMemcpyDeviceToHost) : le;
    vt_release(part);
    if (ce != cudaSuccess) return vt_error(VT_ERR_DEVICE, "sum of squares: %s", cudaGetErrorString(ce));
    double s = 0;
    for (int b = 0; b < SUMSQ_BLOCKS; b++) s += host[b];
    *out = s;
    return VT_OK;
}

// g [n] *= s
__global__ void scale_f32_kernel(float *g, long long n, float s) {
    VT_GRID_STRIDE(k, n) g[k] = __fmul_rn(g[k], s);
}

extern "C" vt_err vt_cuda_scale_f32(float *g, int64_t n, float s) {
    if (n <= 0) return VT_OK;
    scale_f32_kernel<<<vt_grid_1d(n), 256>>>(g, n, s);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}
