// common.cuh — helpers shared by the CUDA op files: library handles, the row-major GEMM
// wrapper, block reductions, element load/store (the hook for bf16 activations) and scratch
// tensors. Everything runs on the legacy default stream, so kernels, cuBLAS and cuDNN calls and
// the caching allocator's reuse of freed blocks are ordered without further synchronisation.
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cudnn.h>
#include <stdint.h>
#include "cuda/check.cuh"
#include "core/tape.h"

// Lazily created handles (one per process, device chosen at vt_cuda_init). Defined in device.cu.
vt_err vt_cuda_cublas(cublasHandle_t *h);
vt_err vt_cuda_cudnn(cudnnHandle_t *h);

// Row-major single-precision GEMM with the semantics of core's vt_sgemm:
// C[m, n] = alpha op(A)[m, k] op(B)[k, n] + beta C, lda/ldb/ldc the row strides as stored.
// Row-major X is column-major X^T, so this is the column-major C^T = op(B)^T op(A)^T.
// FP32 math (no TF32): the handle keeps CUBLAS_DEFAULT_MATH.
vt_err vt_cuda_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *A, int64_t lda,
                     const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
// batch of the above with element strides between consecutive A, B, C (0: shared operand)
vt_err vt_cuda_sgemm_batched(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *A, int64_t lda,
                             int64_t sA, const float *B, int64_t ldb, int64_t sB, float beta, float *C, int64_t ldc,
                             int64_t sC, int64_t batch);

// Row-major GEMM on low-precision operands (ops.h, "low-precision weights"): A and B both of
// dtype dt (VT_BF16 or VT_F16), C f32, products accumulated in f32 (cublasGemmEx,
// CUBLAS_COMPUTE_32F); otherwise the semantics and argument order of vt_cuda_sgemm.
vt_err vt_cuda_gemm_lowp(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const void *A, int64_t lda,
                         const void *B, int64_t ldb, vt_dtype dt, float beta, float *C, int64_t ldc);

// ---- low-precision operands (a frozen bf16 / f16 weight's GEMM partner) ------------------
// dst = src converted, n elements of two GPU buffers: f32 -> bf16 / f16 (round to nearest even,
// as vt_f32_to_bf16 / vt_f32_to_f16) or bf16 / f16 -> f32 (exact).
vt_err vt_cuda_cast(void *dst, vt_dtype dst_dt, const void *src, vt_dtype src_dt, int64_t n);
// A new GPU tensor of x's shape: x (f32) rounded to dt (bf16 / f16); NULL + error on failure.
vt_tensor *vt_cuda_rounded(const vt_tensor *x, vt_dtype dt);

// A scratch f32 / i64 tensor on the GPU (released by the caller); NULL + error on OOM.
static inline vt_tensor *vt_cuda_scratch(vt_dtype dt, int64_t n) {
    int64_t s = n > 0 ? n : 1;
    return vt_empty(dt, VT_CUDA, 1, &s);
}

// A zero-filled tensor on the GPU (cudaMemsetAsync; core's vt_zeros would stage through the host).
static inline vt_tensor *vt_cuda_zeros(vt_dtype dt, int ndim, const int64_t *shape) {
    vt_tensor *t = vt_empty(dt, VT_CUDA, ndim, shape);
    if (!t || t->numel == 0) return t;
    const size_t nbytes = vt_nbytes(t);
    cudaError_t e = cudaMemsetAsync(vt_data(t), 0, nbytes);
    if (e != cudaSuccess) {
        vt_release(t);
        vt_error(VT_ERR_DEVICE, "zero fill of a %zu-byte GPU tensor: %s", nbytes, cudaGetErrorString(e));
        return NULL;
    }
    return t;
}

#define VT_GRID_STRIDE(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

// ---- element access: kernels compute in f32 and load/store T (f32, bf16, f16) -------------
// Stores round to nearest even (the CPU's vt_f32_to_bf16 / vt_f32_to_f16).
__device__ __forceinline__ float vt_ld(const float *p) { return *p; }
__device__ __forceinline__ float vt_ld(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ float vt_ld(const __half *p) { return __half2float(*p); }
__device__ __forceinline__ void vt_st(float *p, float v) { *p = v; }
__device__ __forceinline__ void vt_st(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void vt_st(__half *p, float v) { *p = __float2half_rn(v); }

// ---- scalar functions shared by the op files ----------------------------------------------
// sigmoid split on the sign, so expf only ever sees a non-positive argument (no inf / inf)
__device__ __forceinline__ float vt_sigmoid_stable(float x) {
    if (x >= 0) return 1.0f / (1.0f + expf(-x));
    const float e = expf(x);
    return e / (1.0f + e);
}
// silu'(x) = s (1 + x (1 - s)), s = sigmoid(x)
__device__ __forceinline__ float vt_silu_grad(float x) {
    const float s = vt_sigmoid_stable(x);
    return s * (1.0f + x * (1.0f - s));
}

// ---- block reductions (blockDim.x a multiple of 32, at most 1024; all threads must call) ----
template <typename T> __device__ __forceinline__ T vt_warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
template <typename T> __device__ __forceinline__ T vt_warp_max(T v) {
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Every thread gets the block's total. The leading barrier lets one kernel call it repeatedly
// (the previous call's readers are done with the shared slots).
template <typename T> __device__ T vt_block_sum(T v) {
    __shared__ T part[32];
    v = vt_warp_sum(v);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) part[w] = v;
    __syncthreads();
    T r = lane < nw ? part[lane] : T(0);
    return vt_warp_sum(r);
}

template <typename T> __device__ T vt_block_max(T v) {
    __shared__ T part[32];
    v = vt_warp_max(v);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) part[w] = v;
    __syncthreads();
    T r = lane < nw ? part[lane] : part[0];
    return vt_warp_max(r);
}

// Launch size for one block per row, rows up to 2^31 - 1 (grid x limit).
static inline vt_err vt_cuda_rows_grid(const char *op, int64_t rows, unsigned *grid) {
    if (rows > 2147483647LL) return vt_error(VT_ERR_SHAPE, "%s: %lld rows exceed one CUDA grid", op, (long long)rows);
    *grid = (unsigned)(rows > 0 ? rows : 0);
    return VT_OK;
}
