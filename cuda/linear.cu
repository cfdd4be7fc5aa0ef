// linear.cu — linear (with the LoRA branch) and batched matmul on cuBLAS sgemm, forward and
// backward side by side, registered under the op names of core/ops/linear.c. Saved tensors are
// the CPU op's: x (NULL unless dW / dA need it: linear_saved_needed), W (and A, B with LoRA) by the
// save mask, then the extra x A^T [M, r].
// A frozen bf16 / f16 W runs the base GEMM in cublasGemmEx on x (g) rounded to W's dtype with f32
// accumulation; everything else (LoRA, bias, activations, gradients) is f32.
#include "cuda/common.cuh"
#include "core/ops/params.h"

// ---- row-major GEMM wrappers (declared in common.cuh) -----------------------------------
static vt_err gemm_dims_fit(int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc) {
    const int64_t lim = 2147483647LL;
    if (m > lim || n > lim || k > lim || lda > lim || ldb > lim || ldc > lim)
        return vt_error(VT_ERR_SHAPE, "sgemm: m %lld n %lld k %lld exceed cuBLAS's 32-bit sizes", (long long)m,
                        (long long)n, (long long)k);
    return VT_OK;
}

vt_err vt_cuda_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *A, int64_t lda,
                     const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (m == 0 || n == 0) return VT_OK;
    if (gemm_dims_fit(m, n, k, lda, ldb, ldc) != VT_OK) return vt_error_code();
    cublasHandle_t h;
    if (vt_cuda_cublas(&h) != VT_OK) return vt_error_code();
    // column-major C^T [n, m] = op(B)^T [n, k] op(A)^T [k, m]; k == 0 scales C by beta
    VT_CUBLAS_CHECK(cublasSgemm(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)n, (int)m,
                                (int)k, &alpha, B, (int)ldb, A, (int)lda, &beta, C, (int)ldc));
    return VT_OK;
}

vt_err vt_cuda_sgemm_batched(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *A, int64_t lda,
                             int64_t sA, const float *B, int64_t ldb, int64_t sB, float beta, float *C, int64_t ldc,
                             int64_t sC, int64_t batch) {
    if (m == 0 || n == 0 || batch == 0) return VT_OK;
    if (gemm_dims_fit(m, n, k, lda, ldb, ldc) != VT_OK || gemm_dims_fit(batch, 1, 1, 1, 1, 1) != VT_OK)
        return vt_error_code();
    cublasHandle_t h;
    if (vt_cuda_cublas(&h) != VT_OK) return vt_error_code();
    VT_CUBLAS_CHECK(cublasSgemmStridedBatched(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)n,
                                              (int)m, (int)k, &alpha, B, (int)ldb, (long long)sB, A, (int)lda,
                                              (long long)sA, &beta, C, (int)ldc, (long long)sC, (int)batch));
    return VT_OK;
}

vt_err vt_cuda_gemm_lowp(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const void *A, int64_t lda,
                         const void *B, int64_t ldb, vt_dtype dt, float beta, float *C, int64_t ldc) {
    if (m == 0 || n == 0) return VT_OK;
    if (dt != VT_BF16 && dt != VT_F16)
        return vt_error(VT_ERR_INTERNAL, "gemm_lowp: operands of dtype %s (bf16 or f16 only)", vt_dtype_name(dt));
    if (gemm_dims_fit(m, n, k, lda, ldb, ldc) != VT_OK) return vt_error_code();
    cublasHandle_t h;
    if (vt_cuda_cublas(&h) != VT_OK) return vt_error_code();
    const cudaDataType_t ab = dt == VT_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    // column-major C^T [n, m] = op(B)^T [n, k] op(A)^T [k, m], as vt_cuda_sgemm
    VT_CUBLAS_CHECK(cublasGemmEx(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)n, (int)m,
                                 (int)k, &alpha, B, ab, (int)ldb, A, ab, (int)lda, &beta, C, CUDA_R_32F, (int)ldc,
                                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return VT_OK;
}

// ---- low-precision operands (declared in common.cuh) -------------------------------------
// dst [n] = src [n] converted through f32 (vt_ld / vt_st: the store rounds to nearest even)
template <typename To, typename From> __global__ void cast_kernel(To *dst, const From *src, long long n) {
    VT_GRID_STRIDE(i, n) vt_st(dst + i, vt_ld(src + i));
}

vt_err vt_cuda_cast(void *dst, vt_dtype dst_dt, const void *src, vt_dtype src_dt, int64_t n) {
    if (n == 0) return VT_OK;
    const unsigned grid = vt_grid_1d(n);
    if (src_dt == VT_F32 && dst_dt == VT_BF16)
        cast_kernel<<<grid, 256>>>((__nv_bfloat16 *)dst, (const float *)src, n);
    else if (src_dt == VT_F32 && dst_dt == VT_F16)
        cast_kernel<<<grid, 256>>>((__half *)dst, (const float *)src, n);
    else if (src_dt == VT_BF16 && dst_dt == VT_F32)
        cast_kernel<<<grid, 256>>>((float *)dst, (const __nv_bfloat16 *)src, n);
    else if (src_dt == VT_F16 && dst_dt == VT_F32)
        cast_kernel<<<grid, 256>>>((float *)dst, (const __half *)src, n);
    else
        return vt_error(VT_ERR_INTERNAL, "cuda cast %s -> %s: not supported", vt_dtype_name(src_dt),
                        vt_dtype_name(dst_dt));
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

vt_tensor *vt_cuda_rounded(const vt_tensor *x, vt_dtype dt) {
    vt_tensor *t = vt_empty(dt, VT_CUDA, x->ndim, x->shape);
    if (t && vt_cuda_cast(vt_data(t), dt, vt_data(x), VT_F32, x->numel) != VT_OK) vt_clear(&t);
    return t;
}

// ---- bias helpers ------------------------------------------------------------------------
// y [M, n] = b [n] broadcast over rows (then the GEMM accumulates onto it with beta = 1)
__global__ void bias_rows_fill_kernel(float *y, const float *b, long long n, long long total) {
    VT_GRID_STRIDE(i, total) y[i] = b[i % n];
}

// db [n] = sum over rows of g [M, n]: one thread per column, rows summed in order in double
// (coalesced across the threads of a warp). Used only when a bias wants a gradient.
__global__ void column_sum_kernel(const float *g, float *db, long long M, long long n) {
    VT_GRID_STRIDE(j, n) {
        double s = 0;
        for (long long i = 0; i < M; i++) s += g[i * n + j];
        db[j] = (float)s;
    }
}

static vt_err column_sum(const float *g, float *db, int64_t M, int64_t n) {
    if (n == 0) return VT_OK;
    column_sum_kernel<<<vt_grid_1d(n), 256>>>(g, db, M, n);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

// ---- linear + LoRA -----------------------------------------------------------------------
// The base GEMM of forward and backward, C [m, n] = act [m, k] @ op(W) + beta C (ldw: W's row
// stride). An f32 W: sgemm. A frozen bf16 / f16 W: act rounded to W's dtype in scratch, then
// GemmEx with f32 accumulation (ops.h, "low-precision weights": the CPU's round_w(act) @ W).
static vt_err linear_base_gemm(int tb, int64_t m, int64_t n, int64_t k, const vt_tensor *act, const vt_tensor *w,
                               int64_t ldw, float beta, float *C) {
    if (w->dtype == VT_F32) return vt_cuda_sgemm(0, tb, m, n, k, 1.0f, vt_f32(act), k, vt_f32(w), ldw, beta, C, n);
    vt_tensor *al = vt_cuda_rounded(act, w->dtype);
    if (!al) return vt_error_code();
    // al may be released right after the launch: the allocator reuses it in stream order
    vt_err e = vt_cuda_gemm_lowp(0, tb, m, n, k, 1.0f, vt_data(al), k, vt_data(w), ldw, w->dtype, beta, C, n);
    vt_release(al);
    return e;
}

// x [M, in] (leading dims flattened), W [out, in], b [out] or NULL, A [r, in], B [out, r]
// -> y [M, out] = x W^T + b + s (x A^T) B^T; extra saved (recording, LoRA): xa = x A^T [M, r]
// A bf16 / f16 W: y = round_w(x) W^T + b + s (x A^T) B^T (the LoRA branch on the f32 x).
static vt_err linear_forward_cuda(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const vt_linear_params *p = (const vt_linear_params *)n->params;
    const vt_tensor *x = in[0], *w = in[1], *b = in[2];
    const int64_t fin = vt_dim(w, 1), fout = vt_dim(w, 0), M = fin ? x->numel / fin : 0;
    float *y = vt_f32(out);
    if (b && out->numel) {
        bias_rows_fill_kernel<<<vt_grid_1d(out->numel), 256>>>(y, vt_f32(b), fout, out->numel);
        VT_CUDA_CHECK_LAUNCH();
    }
    if (linear_base_gemm(1, M, fout, fin, x, w, fin, b ? 1.0f : 0.0f, y)) return vt_error_code();
    if (p->has_lora) {
        const vt_tensor *A = in[3], *B = in[4];
        const int64_t r = vt_dim(A, 0);
        const int64_t xa_shape[2] = {M, r};
        vt_tensor *xa = vt_empty(VT_F32, VT_CUDA, 2, xa_shape);
        if (!xa) return vt_error_code();
        if (vt_cuda_sgemm(0, 1, M, r, fin, 1.0f, vt_f32(x), fin, vt_f32(A), fin, 0.0f, vt_f32(xa), r) ||
            vt_cuda_sgemm(0, 1, M, fout, r, p->scale, vt_f32(xa), r, vt_f32(B), r, 1.0f, y, fout)) {
            vt_release(xa);
            return vt_error_code();
        }
        if (n->recording) n->saved[n->n_saved++] = xa;
        else vt_release(xa);
    }
    return VT_OK;
}

// g [M, out]; saved x [M, in], W [out, in], (A [r, in], B [out, r], xa [M, r])
// dx = g W + s (g B) A;  dW = g^T x;  db = sum_rows g;  dA = s (g B)^T x;  dB = s g^T xa
// A bf16 / f16 W: dx = round_w(g) W + s (g B) A; no dW (frozen, checked at the frontend).
static vt_err linear_backward_cuda(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const vt_linear_params *p = (const vt_linear_params *)n->params;
    const vt_tensor *x = n->saved[0], *w = n->saved[1];  // x: NULL unless dW / dA need it
    const int64_t fin = vt_dim(w, 1), fout = vt_dim(w, 0), M = fout ? gout->numel / fout : 0;
    const float *g = vt_f32(gout);
    const vt_tensor *A = NULL, *B = NULL, *xa = NULL;
    int64_t r = 0;
    vt_tensor *gb = NULL;  // g B [M, r]
    vt_err e = VT_OK;
    const int64_t w_shape[2] = {fout, fin}, b_shape[1] = {fout};
    if (p->has_lora) {
        A = n->saved[2];
        B = n->saved[3];
        xa = n->saved[4];
        r = vt_dim(A, 0);
        if (n->need[0] || n->need[3]) {
            const int64_t gb_shape[2] = {M, r};
            gb = vt_empty(VT_F32, VT_CUDA, 2, gb_shape);
            if (!gb) return vt_error_code();
            if ((e = vt_cuda_sgemm(0, 0, M, r, fout, 1.0f, g, fout, vt_f32(B), r, 0.0f, vt_f32(gb), r))) goto done;
        }
    }
    if (n->need[0]) {
        gin[0] = vt_empty(VT_F32, VT_CUDA, n->in_ndim[0], n->in_shape[0]);
        if (!gin[0]) { e = vt_error_code(); goto done; }
        if ((e = linear_base_gemm(0, M, fin, fout, gout, w, fin, 0.0f, vt_f32(gin[0])))) goto done;
        if (gb && (e = vt_cuda_sgemm(0, 0, M, fin, r, p->scale, vt_f32(gb), r, vt_f32(A), fin, 1.0f, vt_f32(gin[0]), fin)))
            goto done;
    }
    if (n->need[1]) {
        gin[1] = vt_empty(VT_F32, VT_CUDA, 2, w_shape);
        if (!gin[1]) { e = vt_error_code(); goto done; }
        if ((e = vt_cuda_sgemm(1, 0, fout, fin, M, 1.0f, g, fout, vt_f32(x), fin, 0.0f, vt_f32(gin[1]), fin))) goto done;
    }
    if (n->need[2]) {
        gin[2] = vt_empty(VT_F32, VT_CUDA, 1, b_shape);
        if (!gin[2]) { e = vt_error_code(); goto done; }
        if ((e = column_sum(g, vt_f32(gin[2]), M, fout))) goto done;
    }
    if (p->has_lora && n->need[3]) {
        gin[3] = vt_empty(VT_F32, VT_CUDA, n->in_ndim[3], n->in_shape[3]);
        if (!gin[3]) { e = vt_error_code(); goto done; }
        if ((e = vt_cuda_sgemm(1, 0, r, fin, M, p->scale, vt_f32(gb), r, vt_f32(x), fin, 0.0f, vt_f32(gin[3]), fin)))
            goto done;
    }
    if (p->has_lora && n->need[4]) {
        gin[4] = vt_empty(VT_F32, VT_CUDA, n->in_ndim[4], n->in_shape[4]);
        if (!gin[4]) { e = vt_error_code(); goto done; }
        if ((e = vt_cuda_sgemm(1, 0, fout, r, M, p->scale, g, fout, vt_f32(xa), r, 0.0f, vt_f32(gin[4]), r))) goto done;
    }
done:
    vt_release(gb);
    return e;
}

// ---- matmul ------------------------------------------------------------------------------
// a [batch, m, k] @ b [batch, k, n] -> [batch, m, n]; b [k, n] shared: one GEMM over batch*m rows
static vt_err matmul_forward_cuda(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    (void)n;
    const vt_tensor *a = in[0], *b = in[1];
    const int64_t m = vt_dim(a, -2), k = vt_dim(a, -1), nn = vt_dim(b, -1);
    const int64_t batch = vt_dim_prod(a->ndim - 2, a->shape);
    if (b->ndim == 2)
        return vt_cuda_sgemm(0, 0, batch * m, nn, k, 1.0f, vt_f32(a), k, vt_f32(b), nn, 0.0f, vt_f32(out), nn);
    return vt_cuda_sgemm_batched(0, 0, m, nn, k, 1.0f, vt_f32(a), k, m * k, vt_f32(b), nn, k * nn, 0.0f, vt_f32(out), nn,
                                 m * nn, batch);
}

// g [batch, m, n]; saved a, b -> da = g b^T; db = a^T g (shared b: summed over the batch, which
// is one GEMM with the batch folded into the reduction: [k, batch*m] @ [batch*m, n])
static vt_err matmul_backward_cuda(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const vt_tensor *a = n->saved[0], *b = n->saved[1];
    const int64_t m = vt_dim(a, -2), k = vt_dim(a, -1), nn = vt_dim(b, -1);
    const int64_t batch = vt_dim_prod(a->ndim - 2, a->shape);
    const int shared = b->ndim == 2;
    const float *g = vt_f32(gout);
    if (n->need[0]) {
        gin[0] = vt_empty(VT_F32, VT_CUDA, a->ndim, a->shape);
        if (!gin[0]) return vt_error_code();
        vt_err e = shared ? vt_cuda_sgemm(0, 1, batch * m, k, nn, 1.0f, g, nn, vt_f32(b), nn, 0.0f, vt_f32(gin[0]), k)
                          : vt_cuda_sgemm_batched(0, 1, m, k, nn, 1.0f, g, nn, m * nn, vt_f32(b), nn, k * nn, 0.0f,
                                                  vt_f32(gin[0]), k, m * k, batch);
        if (e) return e;
    }
    if (n->need[1]) {
        // zeros: with an empty reduction (batch*m == 0) cuBLAS leaves C as beta * C
        gin[1] = vt_cuda_zeros(VT_F32, b->ndim, b->shape);
        if (!gin[1]) return vt_error_code();
        vt_err e = shared ? vt_cuda_sgemm(1, 0, k, nn, batch * m, 1.0f, vt_f32(a), k, g, nn, 0.0f, vt_f32(gin[1]), nn)
                          : vt_cuda_sgemm_batched(1, 0, k, nn, m, 1.0f, vt_f32(a), k, m * k, g, nn, m * nn, 0.0f,
                                                  vt_f32(gin[1]), nn, k * nn, batch);
        if (e) return e;
    }
    return VT_OK;
}

extern "C" vt_err vt_cuda_register_linear(void) {
    if (vt_register_kernels("linear", VT_CUDA, linear_forward_cuda, linear_backward_cuda) ||
        vt_register_kernels("linear_lora", VT_CUDA, linear_forward_cuda, linear_backward_cuda) ||
        vt_register_kernels("matmul", VT_CUDA, matmul_forward_cuda, matmul_backward_cuda))
        return vt_error_code();
    return VT_OK;
}
