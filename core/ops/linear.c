// linear.c — linear layers (with the LoRA branch) and batched matmul, on OpenBLAS sgemm.
#include "ops_internal.h"
#include "params.h"
#include <cblas.h>
#include <omp.h>
#include <string.h>

// Threading policy: see ops_internal.h. OpenBLAS always runs single-threaded; vt_sgemm called
// from serial code splits a large product over the OpenMP team by rows or columns of C (each
// element's k-sum is the same one BLAS computes unsplit, so results do not depend on threads).
void vt_blas_serial(void) {
    if (omp_get_level() == 0 && openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

void vt_parallel_items(int64_t n, int nt, void (*fn)(void *ctx, int64_t i, int thread), void *ctx) {
    if (nt > 1 && omp_get_level() == 0) {
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)  // a loaded thread takes fewer items
        for (int64_t i = 0; i < n; i++) fn(ctx, i, omp_get_thread_num());
    } else {
        for (int64_t i = 0; i < n; i++) fn(ctx, i, 0);
    }
}

static void sgemm1(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *A, int64_t lda,
                   const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n,
                (int)k, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

// Below this many multiply-adds a GEMM is not worth splitting over threads.
#define VT_GEMM_SPLIT_MIN ((int64_t)1 << 20)
#define VT_GEMM_SPLIT_PART 128

void vt_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (m == 0 || n == 0) return;
    if (omp_get_level() > 0) {  // inside an op's parallel loop: BLAS is serial already, no nesting
        sgemm1(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    vt_blas_serial();
    const int split_n = n >= m;  // split the longer side of C
    const int64_t len = split_n ? n : m;
    const int64_t nt = omp_get_max_threads();
    // Up to 4 parts per thread, each >= VT_GEMM_SPLIT_PART long, handed out dynamically: a
    // thread slowed by another process's load takes fewer parts instead of holding up the rest.
    int64_t parts = len / VT_GEMM_SPLIT_PART;
    if (parts > 4 * nt) parts = 4 * nt;
    if (nt < 2 || parts < 2 || m * n * k < VT_GEMM_SPLIT_MIN) {
        sgemm1(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    // part t covers [t * chunk, ...) of the split side, chunk a multiple of 16
    const int64_t chunk = ((len + parts - 1) / parts + 15) / 16 * 16;
#pragma omp parallel for num_threads((int)nt) schedule(dynamic, 1)
    for (int64_t t = 0; t < parts; t++) {
        const int64_t j0 = t * chunk, j1 = j0 + chunk < len ? j0 + chunk : len;
        if (j0 >= j1) continue;
        if (split_n)  // C[:, j0:j1] = op(A) op(B)[:, j0:j1]
            sgemm1(ta, tb, m, j1 - j0, k, alpha, A, lda, tb ? B + j0 * ldb : B + j0, ldb, beta, C + j0, ldc);
        else  // C[j0:j1, :] = op(A)[j0:j1, :] op(B)
            sgemm1(ta, tb, j1 - j0, n, k, alpha, ta ? A + j0 : A + j0 * lda, lda, B, ldb, beta, C + j0 * ldc, ldc);
    }
}

// ---- low-precision weights (ops_internal.h) ------------------------------------------------
int vt_check_gemm_weight(const char *op, const vt_tensor *w) {
    if (w->dtype != VT_F32 && !vt_dtype_is_lowp(w->dtype)) {
        vt_error(VT_ERR_DTYPE, "%s: weight: expected f32, bf16 or f16, got %s", op, vt_dtype_name(w->dtype));
        return 1;
    }
    if (vt_dtype_is_lowp(w->dtype) && w->requires_grad) {
        vt_error(VT_ERR_DTYPE,
                 "%s: weight is %s and requires grad: low-precision weights are frozen only (train an f32 weight, "
                 "or a LoRA on the frozen one)",
                 op, vt_dtype_name(w->dtype));
        return 1;
    }
    return 0;
}

// dst = src widened to f32 (bf16 / f16 -> f32 is exact)
static void lowp_widen(const uint16_t *src, vt_dtype dt, float *dst, int64_t n) {
    if (dt == VT_BF16) {
#pragma omp parallel for if (omp_get_level() == 0 && n > 65536)
        for (int64_t i = 0; i < n; i++) dst[i] = vt_bf16_to_f32(src[i]);
    } else {
#pragma omp parallel for if (omp_get_level() == 0 && n > 65536)
        for (int64_t i = 0; i < n; i++) dst[i] = vt_f16_to_f32(src[i]);
    }
}

// dst = src rounded to dt (nearest even) and widened back: the f32 value a dt operand holds
static void lowp_round(const float *src, vt_dtype dt, float *dst, int64_t n) {
    if (dt == VT_BF16) {
#pragma omp parallel for if (omp_get_level() == 0 && n > 65536)
        for (int64_t i = 0; i < n; i++) dst[i] = vt_bf16_to_f32(vt_f32_to_bf16(src[i]));
    } else {
#pragma omp parallel for if (omp_get_level() == 0 && n > 65536)
        for (int64_t i = 0; i < n; i++) dst[i] = vt_f16_to_f32(vt_f32_to_f16(src[i]));
    }
}

vt_err vt_gemm_operands_get(vt_gemm_operands *o, const vt_tensor *act, const vt_tensor *w) {
    o->a_tmp = o->w_tmp = NULL;
    o->a = vt_f32(act);
    if (!vt_dtype_is_lowp(w->dtype)) {
        o->w = vt_f32(w);
        return VT_OK;
    }
    o->w_tmp = vt_empty(VT_F32, VT_CPU, w->ndim, w->shape);
    o->a_tmp = vt_empty(VT_F32, VT_CPU, act->ndim, act->shape);
    if (!o->w_tmp || !o->a_tmp) {
        vt_gemm_operands_release(o);
        return vt_error_code();
    }
    lowp_widen((const uint16_t *)vt_data(w), w->dtype, vt_f32(o->w_tmp), w->numel);
    lowp_round(vt_f32(act), w->dtype, vt_f32(o->a_tmp), act->numel);
    o->w = vt_f32(o->w_tmp);
    o->a = vt_f32(o->a_tmp);
    return VT_OK;
}

void vt_gemm_operands_release(vt_gemm_operands *o) {
    vt_clear(&o->a_tmp);
    vt_clear(&o->w_tmp);
}

// ---- linear + LoRA -----------------------------------------------------------------------
// x [M, in] (leading dims flattened), W [out, in], b [out], A [r, in], B [out, r]
// y = x W^T + b + s (x A^T) B^T; a bf16 / f16 W: y = round_w(x) W^T + b + s (x A^T) B^T
typedef vt_linear_params linear_params;

static vt_err linear_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const linear_params *p = (const linear_params *)n->params;
    const vt_tensor *x = in[0], *w = in[1], *b = in[2];
    int64_t fin = vt_dim(w, 1), fout = vt_dim(w, 0), M = x->numel / fin;
    float *y = vt_f32(out);
    vt_gemm_operands op;  // x rounded to w's dtype and w widened when w is bf16 / f16
    if (vt_gemm_operands_get(&op, x, w)) return vt_error_code();
    if (b) {
        const float *pb = vt_f32(b);
        for (int64_t i = 0; i < M; i++) memcpy(y + i * fout, pb, (size_t)fout * sizeof(float));
    }
    vt_sgemm(0, 1, M, fout, fin, 1.0f, op.a, fin, op.w, fin, b ? 1.0f : 0.0f, y, fout);
    vt_gemm_operands_release(&op);
    // The LoRA branch reads the unrounded x: its (f32) parameters get full-precision gradients.
    if (p->has_lora) {
        const vt_tensor *A = in[3], *B = in[4];
        int64_t r = vt_dim(A, 0);
        vt_tensor *xa = vt_empty(VT_F32, VT_CPU, 2, (int64_t[]){M, r});  // x A^T [M, r]
        if (!xa) return vt_error_code();
        vt_sgemm(0, 1, M, r, fin, 1.0f, vt_f32(x), fin, vt_f32(A), fin, 0.0f, vt_f32(xa), r);
        vt_sgemm(0, 1, M, fout, r, p->scale, vt_f32(xa), r, vt_f32(B), r, 1.0f, y, fout);
        // x A^T is what dB needs: keep it rather than recompute
        if (n->recording) n->saved[n->n_saved++] = xa;
        else vt_release(xa);
    }
    return VT_OK;
}

// dx = g W + s (g B) A;  dW = g^T x;  db = sum_rows g;  dA = s (g B)^T x;  dB = s g^T (x A^T)
// A bf16 / f16 W: dx = round_w(g) W + s (g B) A (the LoRA terms from the unrounded g); no dW (such
// a W is frozen, vt_check_gemm_weight).
static vt_err linear_backward_cpu(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const linear_params *p = (const linear_params *)n->params;
    // saved: x (NULL unless dW / dA need it), W (inputs 0, 1), then A, B if LoRA, then x A^T
    const vt_tensor *x = n->saved[0], *w = n->saved[1];
    int64_t fin = vt_dim(w, 1), fout = vt_dim(w, 0), M = fout ? gout->numel / fout : 0;
    const float *g = vt_f32(gout);
    const vt_tensor *A = NULL, *B = NULL, *xa = NULL;
    int64_t r = 0;
    vt_tensor *gb_ = NULL;  // g B [M, r]
    if (p->has_lora) {
        A = n->saved[2];
        B = n->saved[3];
        xa = n->saved[4];
        r = vt_dim(A, 0);
        if (n->need[0] || n->need[3]) {
            gb_ = vt_empty(VT_F32, VT_CPU, 2, (int64_t[]){M, r});
            if (!gb_) return vt_error_code();
            vt_sgemm(0, 0, M, r, fout, 1.0f, g, fout, vt_f32(B), r, 0.0f, vt_f32(gb_), r);
        }
    }
    vt_err e = VT_OK;
    if (n->need[0]) {
        gin[0] = vt_empty(VT_F32, VT_CPU, n->in_ndim[0], n->in_shape[0]);
        if (!gin[0]) { e = vt_error_code(); goto done; }
        vt_gemm_operands op;  // g rounded to w's dtype and w widened when w is bf16 / f16
        if ((e = vt_gemm_operands_get(&op, gout, w))) goto done;
        vt_sgemm(0, 0, M, fin, fout, 1.0f, op.a, fout, op.w, fin, 0.0f, vt_f32(gin[0]), fin);
        vt_gemm_operands_release(&op);
        if (gb_) vt_sgemm(0, 0, M, fin, r, p->scale, vt_f32(gb_), r, vt_f32(A), fin, 1.0f, vt_f32(gin[0]), fin);
    }
    if (n->need[1]) {
        gin[1] = vt_empty(VT_F32, VT_CPU, 2, (int64_t[]){fout, fin});
        if (!gin[1]) { e = vt_error_code(); goto done; }
        vt_sgemm(1, 0, fout, fin, M, 1.0f, g, fout, vt_f32(x), fin, 0.0f, vt_f32(gin[1]), fin);
    }
    if (n->need[2]) {
        gin[2] = vt_zeros(VT_F32, VT_CPU, 1, (int64_t[]){fout});
        if (!gin[2]) { e = vt_error_code(); goto done; }
        float *db = vt_f32(gin[2]);
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < fout; j++) db[j] += g[i * fout + j];
    }
    if (p->has_lora && n->need[3]) {
        gin[3] = vt_empty(VT_F32, VT_CPU, 2, (int64_t[]){r, fin});
        if (!gin[3]) { e = vt_error_code(); goto done; }
        vt_sgemm(1, 0, r, fin, M, p->scale, vt_f32(gb_), r, vt_f32(x), fin, 0.0f, vt_f32(gin[3]), fin);
    }
    if (p->has_lora && n->need[4]) {
        gin[4] = vt_empty(VT_F32, VT_CPU, 2, (int64_t[]){fout, r});
        if (!gin[4]) { e = vt_error_code(); goto done; }
        vt_sgemm(1, 0, fout, r, M, p->scale, g, fout, vt_f32(xa), r, 0.0f, vt_f32(gin[4]), r);
    }
done:
    vt_release(gb_);
    return e;
}

// Saves W (a view of frozen weights: no copy; a bf16 / f16 W as it is: the backward widens it),
// A and B with LoRA, and x only when dW or (LoRA) dA is wanted: x is read backward by those
// alone, so a frozen Linear (to_out, the feed-forward, proj_in / proj_out) does not hold it.
static unsigned linear_saved_needed(const vt_node *n) {
    const linear_params *p = (const linear_params *)n->params;
    const int x_needed = n->need[1] || (p->has_lora && n->need[3]);
    return (p->has_lora ? 0x1au : 0x2u) | (x_needed ? 0x1u : 0u);
}

static const vt_op op_linear = {"linear", {linear_forward_cpu, NULL}, {linear_backward_cpu, NULL}, 0x3, 0,
                                linear_saved_needed};
static const vt_op op_linear_lora = {"linear_lora", {linear_forward_cpu, NULL}, {linear_backward_cpu, NULL}, 0x1b, 0,
                                     linear_saved_needed};

static vt_tensor *linear_common(vt_tensor *x, vt_tensor *w, vt_tensor *b, vt_tensor *A, vt_tensor *B, float scale,
                                int lora) {
    const char *name = lora ? "linear_lora" : "linear";
    if (!x || !w || (lora && (!A || !B))) return NULL;
    if (vt_check_f32(name, x) || vt_check_gemm_weight(name, w) || (b && vt_check_f32(name, b))) return NULL;
    char s1[VT_SHAPE_BUF], s2[VT_SHAPE_BUF], s3[VT_SHAPE_BUF];
    if (w->ndim != 2 || x->ndim < 1 || vt_dim(x, -1) != vt_dim(w, 1)) {
        vt_error(VT_ERR_SHAPE, "%s: input %s does not fit weight %s ([out, in])", name, vt_shape_str(x, s1, sizeof s1),
                 vt_shape_str(w, s2, sizeof s2));
        return NULL;
    }
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0])) {
        vt_error(VT_ERR_SHAPE, "%s: bias %s does not fit weight %s", name, vt_shape_str(b, s1, sizeof s1),
                 vt_shape_str(w, s2, sizeof s2));
        return NULL;
    }
    if (lora) {
        if (vt_check_f32(name, A) || vt_check_f32(name, B)) return NULL;
        if (A->ndim != 2 || B->ndim != 2 || A->shape[1] != w->shape[1] || B->shape[0] != w->shape[0] ||
            B->shape[1] != A->shape[0]) {
            vt_error(VT_ERR_SHAPE, "%s: lora A %s / B %s do not fit weight %s (A [r, in], B [out, r])", name,
                     vt_shape_str(A, s1, sizeof s1), vt_shape_str(B, s2, sizeof s2), vt_shape_str(w, s3, sizeof s3));
            return NULL;
        }
    }
    int64_t shape[VT_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = w->shape[0];
    linear_params p = {scale, b != NULL, lora};
    vt_tensor *in[5] = {x, w, b, A, B};
    return vt_op_run(lora ? &op_linear_lora : &op_linear, in, lora ? 5 : 3, &p, sizeof p, VT_F32, x->ndim, shape);
}

vt_tensor *vt_linear(vt_tensor *x, vt_tensor *w, vt_tensor *b) { return linear_common(x, w, b, NULL, NULL, 0, 0); }
vt_tensor *vt_linear_lora(vt_tensor *x, vt_tensor *w, vt_tensor *b, vt_tensor *A, vt_tensor *B, float scale) {
    return linear_common(x, w, b, A, B, scale, 1);
}

// ---- matmul ------------------------------------------------------------------------------
// a [batch, m, k] @ b [batch, k, n] or b [k, n] shared
static vt_err matmul_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const vt_tensor *a = in[0], *b = in[1];
    int64_t m = vt_dim(a, -2), k = vt_dim(a, -1), nn = vt_dim(b, -1);
    int64_t batch = a->numel / (m * k != 0 ? m * k : 1);
    int shared = b->ndim == 2;
    for (int64_t i = 0; i < batch; i++)
        vt_sgemm(0, 0, m, nn, k, 1.0f, vt_f32(a) + i * m * k, k, vt_f32(b) + (shared ? 0 : i * k * nn), nn, 0.0f,
                 vt_f32(out) + i * m * nn, nn);
    (void)n;
    return VT_OK;
}

// da = g b^T; db = a^T g (summed over the batch when b is shared)
static vt_err matmul_backward_cpu(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const vt_tensor *a = n->saved[0], *b = n->saved[1];
    int64_t m = vt_dim(a, -2), k = vt_dim(a, -1), nn = vt_dim(b, -1);
    int64_t batch = a->numel / (m * k != 0 ? m * k : 1);
    int shared = b->ndim == 2;
    const float *g = vt_f32(gout);
    if (n->need[0]) {
        gin[0] = vt_empty(VT_F32, VT_CPU, a->ndim, a->shape);
        if (!gin[0]) return vt_error_code();
        for (int64_t i = 0; i < batch; i++)
            vt_sgemm(0, 1, m, k, nn, 1.0f, g + i * m * nn, nn, vt_f32(b) + (shared ? 0 : i * k * nn), nn, 0.0f,
                     vt_f32(gin[0]) + i * m * k, k);
    }
    if (n->need[1]) {
        gin[1] = vt_zeros(VT_F32, VT_CPU, b->ndim, b->shape);
        if (!gin[1]) return vt_error_code();
        for (int64_t i = 0; i < batch; i++)
            vt_sgemm(1, 0, k, nn, m, 1.0f, vt_f32(a) + i * m * k, k, g + i * m * nn, nn, shared && i ? 1.0f : 0.0f,
                     vt_f32(gin[1]) + (shared ? 0 : i * k * nn), nn);
    }
    return VT_OK;
}

static const vt_op op_matmul = {"matmul", {matmul_forward_cpu, NULL}, {matmul_backward_cpu, NULL}, 0x3, 0, NULL};

vt_tensor *vt_matmul(vt_tensor *a, vt_tensor *b) {
    if (!a || !b) return NULL;
    if (vt_check_f32("matmul", a) || vt_check_f32("matmul", b)) return NULL;
    char s1[VT_SHAPE_BUF], s2[VT_SHAPE_BUF];
    int ok = a->ndim >= 2 && b->ndim >= 2 && vt_dim(a, -1) == vt_dim(b, -2);
    if (ok && b->ndim != 2) {
        ok = a->ndim == b->ndim;
        for (int i = 0; ok && i < a->ndim - 2; i++) ok = a->shape[i] == b->shape[i];
    }
    if (!ok) {
        vt_error(VT_ERR_SHAPE, "matmul: %s @ %s (need [..., m, k] @ [..., k, n] or [k, n])",
                 vt_shape_str(a, s1, sizeof s1), vt_shape_str(b, s2, sizeof s2));
        return NULL;
    }
    int64_t shape[VT_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[a->ndim - 1] = vt_dim(b, -1);
    vt_tensor *in[2] = {a, b};
    return vt_op_run(&op_matmul, in, 2, NULL, 0, VT_F32, a->ndim, shape);
}
