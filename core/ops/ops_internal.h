// ops_internal.h — helpers shared by the CPU reference op files (not a public header).
#pragma once
#include "../ops.h"
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Returns nonzero (and sets VT_ERR_DTYPE naming the op) unless x is an f32 tensor.
static inline int vt_check_f32(const char *op, const vt_tensor *x) {
    if (x->dtype != VT_F32) {
        vt_error(VT_ERR_DTYPE, "%s: expected f32, got %s", op, vt_dtype_name(x->dtype));
        return 1;
    }
    return 0;
}

// ---- low-precision weights of the GEMM ops (linear, linear_lora, conv2d, conv_time) ---------
static inline int vt_dtype_is_lowp(vt_dtype dt) { return dt == VT_BF16 || dt == VT_F16; }

// Frontend check of a GEMM op's weight w: f32, or bf16 / f16 when frozen (no gradient is ever
// computed for a low-precision weight). Returns nonzero with VT_ERR_DTYPE naming the op otherwise.
int vt_check_gemm_weight(const char *op, const vt_tensor *w);

// The f32 operands of a GEMM op whose weight may be bf16 / f16 ("mixed precision, f32
// accumulate": y = round_w(x) @ w, dx = round_w(g) @ w). For a low-precision w, `w` is an exact
// f32 copy of it and `a` a copy of the activation (x forward, g backward) rounded to w's dtype
// (round to nearest even, as vt_f32_to_bf16 / vt_f32_to_f16) and widened back, so the f32 kernels
// run unchanged on them. For an f32 w both point at the tensors' own data and nothing is allocated.
typedef struct vt_gemm_operands {
    const float *a, *w;
    vt_tensor *a_tmp, *w_tmp;  // the copies (NULL for an f32 weight)
} vt_gemm_operands;
vt_err vt_gemm_operands_get(vt_gemm_operands *o, const vt_tensor *act, const vt_tensor *w);
void vt_gemm_operands_release(vt_gemm_operands *o);

// Broadcast shape of a and b (numpy rules); 0 + VT_ERR_SHAPE naming op if they don't fit.
int vt_broadcast_shape(const char *op, const vt_tensor *a, const vt_tensor *b, int *nd, int64_t *shape);
// Sum of g (f32 cpu) over the dims broadcast from shape (nd, s).
vt_tensor *vt_reduce_to_shape(const vt_tensor *g, int nd, const int64_t *s);

// ---- threading policy ----------------------------------------------------------------------
// OpenMP owns the threads; OpenBLAS always runs single-threaded (one pool, nothing left
// spinning between a BLAS call and the next OpenMP loop, no nested oversubscription).
// - vt_sgemm called from serial code splits a large GEMM over the OpenMP team itself (by rows
//   or columns of C: the same per-element sums as one unsplit call).
// - Ops with many independent small GEMMs (attention per batch x head, conv per sample) call
//   vt_blas_serial() and then vt_sgemm inside their own `omp parallel for`: there vt_sgemm is
//   one single-threaded BLAS call per item, with per-thread scratch.
// - omp_set_num_threads / OMP_NUM_THREADS set the thread count; OPENBLAS_NUM_THREADS and
//   openblas_set_num_threads are overridden to 1 by the next vt_sgemm / vt_blas_serial.
// Row-major single-precision GEMM through OpenBLAS:
// C[m, n] = alpha * op(A)[m, k] op(B)[k, n] + beta * C, op = transpose when ta / tb.
// lda/ldb/ldc are the row strides of A, B, C as stored.
void vt_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
// Puts OpenBLAS at one thread (call from serial code before a parallel region that calls
// vt_sgemm; vt_sgemm does it itself when called from serial code).
void vt_blas_serial(void);
// fn(ctx, i, thread) for i < n: over nt threads (thread = omp_get_thread_num(), for per-thread
// scratch), or with nt == 1 as a plain loop on the caller (thread 0). Use it, not
// `#pragma omp parallel for num_threads(nt) if (nt > 1)`, around code that calls vt_sgemm: with
// nt == 1 that opens an inactive region, and vt_sgemm's split inside it becomes a nested region
// that libgomp runs with a second team; the two teams' spin-waiting threads on 2 cores made small
// convolutions 10-20x slower at 2 threads than at 1. Kernels therefore open a parallel region
// only at nesting level 0 (omp_get_level() == 0, which counts inactive regions too).
void vt_parallel_items(int64_t n, int nt, void (*fn)(void *ctx, int64_t i, int thread), void *ctx);

#ifdef __cplusplus
}
#endif
