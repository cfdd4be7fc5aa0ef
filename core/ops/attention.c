// attention.c — softmax over the last dim and multi-head scaled dot-product attention on the
// merged-head layout. CPU reference kernels on OpenBLAS sgemm; row sums in double.
//
// Attention keeps no probability matrix: the forward saves q, k, v and one log-sum-exp per
// (batch, head, query row), and the backward recomputes the probabilities a block of rows at
// a time (as flash attention does), so memory is O(rows_per_block * Lk), not O(Lq * Lk), in
// both passes.
#include "ops_internal.h"
#include "params.h"
#include "vmath.h"
#include <math.h>
#include <omp.h>
#include <string.h>

// ---- softmax -----------------------------------------------------------------------------
// Row kernels shared by softmax and attention, vectorised (vmath.h's exp, OpenMP simd
// reductions; the sums stay in double as before, only their order changes).

// y [n] = exp(x - max) / sum exp(x - max) (y may be x); returns the row's log-sum-exp.
VT_SIMD_CLONES static float softmax_row(const float *x, float *y, int64_t n) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int64_t j = 0; j < n; j++) mx = x[j] > mx ? x[j] : mx;
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; j++) {
        y[j] = vt_expf(x[j] - mx);
        s += y[j];
    }
    const float inv = (float)(1.0 / s);
#pragma omp simd
    for (int64_t j = 0; j < n; j++) y[j] *= inv;
    return mx + (float)log(s);
}

// s [n] <- exp(s - lse): the forward's probabilities from its saved log-sum-exp
VT_SIMD_CLONES static void exp_shift_row(float *s, float lse, int64_t n) {
#pragma omp simd
    for (int64_t j = 0; j < n; j++) s[j] = vt_expf(s[j] - lse);
}

// dx [n] = y * (g - sum_j g_j y_j) (dx may be g): the softmax Jacobian-vector product
VT_SIMD_CLONES static void softmax_grad_row(const float *y, const float *g, float *dx, int64_t n) {
    double dot = 0;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < n; j++) dot += (double)g[j] * y[j];
    const float fd = (float)dot;
#pragma omp simd
    for (int64_t j = 0; j < n; j++) dx[j] = y[j] * (g[j] - fd);
}

// x [M, n] (leading dims flattened) -> y [M, n], y = exp(x - max) / sum exp(x - max) per row
static vt_err softmax_forward_cpu(vt_node *nd, vt_tensor *const *in, vt_tensor *out) {
    (void)nd;
    const int64_t n = vt_dim(out, -1), M = n ? out->numel / n : 0;
    const float *x = vt_f32(in[0]);
    float *y = vt_f32(out);
#pragma omp parallel for if (out->numel > 65536)
    for (int64_t r = 0; r < M; r++) softmax_row(x + r * n, y + r * n, n);
    return VT_OK;
}

// gout [M, n], saved y [M, n] -> dx = y * (gout - sum_j gout_j y_j)
static vt_err softmax_backward_cpu(vt_node *nd, const vt_tensor *gout, vt_tensor **gin) {
    if (!nd->need[0]) return VT_OK;
    const vt_tensor *yt = nd->saved[0];
    gin[0] = vt_empty(VT_F32, VT_CPU, yt->ndim, yt->shape);
    if (!gin[0]) return vt_error_code();
    const int64_t n = vt_dim(yt, -1), M = n ? yt->numel / n : 0;
    const float *y = vt_f32(yt), *g = vt_f32(gout);
    float *dx = vt_f32(gin[0]);
#pragma omp parallel for if (yt->numel > 65536)
    for (int64_t r = 0; r < M; r++) softmax_grad_row(y + r * n, g + r * n, dx + r * n, n);
    return VT_OK;
}

static const vt_op op_softmax = {"softmax", {softmax_forward_cpu, NULL}, {softmax_backward_cpu, NULL}, 0, 1};

vt_tensor *vt_softmax(vt_tensor *x) {
    if (!x) return NULL;
    if (vt_check_f32("softmax", x)) return NULL;
    if (x->ndim < 1) {
        vt_error(VT_ERR_SHAPE, "softmax: input [] has no last dim");
        return NULL;
    }
    return vt_op_run(&op_softmax, &x, 1, NULL, 0, VT_F32, x->ndim, x->shape);
}

// ---- attention ---------------------------------------------------------------------------
// Head h of batch b is the strided submatrix q[b, :, h*d : (h+1)*d] (row stride C = H*d), fed
// to sgemm through its leading dimension: no permute to [B, H, L, d] and back.
typedef vt_attention_params attention_params;

// Score-matrix floats per row block: bounds the scratch of both passes (1 MiB, cache-sized).
#define ATTN_BLOCK_FLOATS ((int64_t)1 << 18)

static int64_t attn_block_rows(const attention_params *p) {
    int64_t r = ATTN_BLOCK_FLOATS / (p->Lk > 0 ? p->Lk : 1);
    if (r < 1) r = 1;
    return r < p->Lq ? r : p->Lq;
}

// Query i sees keys 0..i (causal, top-left aligned as torch's is_causal), else all Lk.
static inline int64_t attn_row_keys(const attention_params *p, int64_t i) {
    if (!p->causal) return p->Lk;
    return i + 1 < p->Lk ? i + 1 : p->Lk;
}

// S [rows, ncol] (row stride ncol) of query rows i0.. : scale q k^T, masked scores set to -inf
// then rewritten below as probabilities; lse [rows] out (forward) or in (backward).
//   forward  (lse_in == NULL): S <- softmax rows, lse <- max + log sum exp
//   backward (lse_in != NULL): S <- exp(S - lse) (the forward's probabilities)
static void attn_probs(const attention_params *p, int64_t i0, int64_t rows, int64_t ncol, float *S,
                       float *lse_out, const float *lse_in) {
#pragma omp parallel for if (!omp_in_parallel() && rows * ncol > 65536)
    for (int64_t r = 0; r < rows; r++) {
        float *sr = S + r * ncol;
        const int64_t nk = attn_row_keys(p, i0 + r);
        for (int64_t j = nk; j < ncol; j++) sr[j] = 0.0f;  // masked keys: probability 0
        if (lse_in) exp_shift_row(sr, lse_in[r], nk);
        else lse_out[r] = softmax_row(sr, sr, nk);
    }
}

// q [B, Lq, H*d], k, v [B, Lk, H*d] -> out [B, Lq, H*d]; extra saved: lse [B, H, Lq]
static vt_err attention_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const attention_params *p = (const attention_params *)n->params;
    const int64_t C = p->H * p->d, br = attn_block_rows(p);
    const int64_t lse_shape[3] = {p->B, p->H, p->Lq};
    vt_tensor *lse = vt_empty(VT_F32, VT_CPU, 3, lse_shape);
    // (batch, head) pairs run in parallel, each thread on its own score block with serial BLAS;
    // with fewer pairs than threads they run one by one and vt_sgemm splits each product.
    const int64_t pairs = p->B * p->H;
    const int nt = pairs >= omp_get_max_threads() ? omp_get_max_threads() : 1;
    vt_tensor *S = vt_empty(VT_F32, VT_CPU, 1, (int64_t[]){nt * br * p->Lk});
    if (!lse || !S) {
        vt_release(lse);
        vt_release(S);
        return vt_error_code();
    }
    const float *q = vt_f32(in[0]), *k = vt_f32(in[1]), *v = vt_f32(in[2]);
    float *o = vt_f32(out), *l = vt_f32(lse);
    vt_blas_serial();
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1)
    for (int64_t bh = 0; bh < pairs; bh++) {
        const int64_t b = bh / p->H, h = bh % p->H;
        float *s = vt_f32(S) + (int64_t)omp_get_thread_num() * br * p->Lk;
        const float *qb = q + b * p->Lq * C + h * p->d;
        const float *kb = k + b * p->Lk * C + h * p->d, *vb = v + b * p->Lk * C + h * p->d;
        float *ob = o + b * p->Lq * C + h * p->d, *lb = l + (b * p->H + h) * p->Lq;
        for (int64_t i0 = 0; i0 < p->Lq; i0 += br) {
            const int64_t rows = p->Lq - i0 < br ? p->Lq - i0 : br;
            const int64_t ncol = attn_row_keys(p, i0 + rows - 1);  // keys any row of the block sees
            vt_sgemm(0, 1, rows, ncol, p->d, p->scale, qb + i0 * C, C, kb, C, 0.0f, s, ncol);
            attn_probs(p, i0, rows, ncol, s, lb + i0, NULL);
            vt_sgemm(0, 0, rows, p->d, ncol, 1.0f, s, ncol, vb, C, 0.0f, ob + i0 * C, C);
        }
    }
    vt_release(S);
    if (n->recording) n->saved[n->n_saved++] = lse;
    else vt_release(lse);
    return VT_OK;
}

// gout [B, Lq, H*d]; saved q, k, v, lse -> dq, dk, dv. Per row block, with P recomputed:
//   dV += P^T dO;  dP = dO V^T;  dS = P * (dP - rowsum(P * dP));  dQ = scale dS K;  dK += scale dS^T Q
// rowsum(P * dP) equals the usual rowsum(dO * O) but needs no saved output: a block holds
// whole rows.
static vt_err attention_backward_cpu(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const attention_params *p = (const attention_params *)n->params;
    const int64_t C = p->H * p->d, br = attn_block_rows(p);
    const int need_qk = n->need[0] || n->need[1];
    const float *q = vt_f32(n->saved[0]), *k = vt_f32(n->saved[1]), *v = vt_f32(n->saved[2]);
    const float *l = vt_f32(n->saved[3]), *g = vt_f32(gout);
    // (batch, head) pairs in parallel as in the forward; a pair's row blocks stay on one thread
    // (dk, dv accumulate over them)
    const int64_t pairs = p->B * p->H;
    const int nt = pairs >= omp_get_max_threads() ? omp_get_max_threads() : 1;
    vt_tensor *S = vt_empty(VT_F32, VT_CPU, 1, (int64_t[]){nt * br * p->Lk});
    vt_tensor *dP = need_qk ? vt_empty(VT_F32, VT_CPU, 1, (int64_t[]){nt * br * p->Lk}) : NULL;
    if (!S || (need_qk && !dP)) goto oom;
    for (int i = 0; i < 3; i++) {
        if (!n->need[i]) continue;
        // dq is written block by block; dk, dv accumulate over blocks
        gin[i] = i == 0 ? vt_empty(VT_F32, VT_CPU, n->in_ndim[i], n->in_shape[i])
                        : vt_zeros(VT_F32, VT_CPU, n->in_ndim[i], n->in_shape[i]);
        if (!gin[i]) goto oom;
    }
    float *dq = gin[0] ? vt_f32(gin[0]) : NULL, *dk = gin[1] ? vt_f32(gin[1]) : NULL;
    float *dv = gin[2] ? vt_f32(gin[2]) : NULL;
    vt_blas_serial();
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1)
    for (int64_t bh = 0; bh < pairs; bh++) {
        const int64_t b = bh / p->H, h = bh % p->H;
        const int64_t toff = (int64_t)omp_get_thread_num() * br * p->Lk;
        float *s = vt_f32(S) + toff, *dp = dP ? vt_f32(dP) + toff : NULL;
        const int64_t qo = b * p->Lq * C + h * p->d, ko = b * p->Lk * C + h * p->d;
        const float *lb = l + (b * p->H + h) * p->Lq;
        for (int64_t i0 = 0; i0 < p->Lq; i0 += br) {
            const int64_t rows = p->Lq - i0 < br ? p->Lq - i0 : br;
            const int64_t ncol = attn_row_keys(p, i0 + rows - 1);
            const float *qi = q + qo + i0 * C, *gi = g + qo + i0 * C;
            vt_sgemm(0, 1, rows, ncol, p->d, p->scale, qi, C, k + ko, C, 0.0f, s, ncol);
            attn_probs(p, i0, rows, ncol, s, NULL, lb + i0);
            if (dv) vt_sgemm(1, 0, ncol, p->d, rows, 1.0f, s, ncol, gi, C, 1.0f, dv + ko, C);
            if (!need_qk) continue;
            vt_sgemm(0, 1, rows, ncol, p->d, 1.0f, gi, C, v + ko, C, 0.0f, dp, ncol);
#pragma omp parallel for if (!omp_in_parallel() && rows * ncol > 65536)
            for (int64_t r = 0; r < rows; r++) {
                softmax_grad_row(s + r * ncol, dp + r * ncol, dp + r * ncol, ncol);  // masked: P = 0
            }
            if (dq) vt_sgemm(0, 0, rows, p->d, ncol, p->scale, dp, ncol, k + ko, C, 0.0f, dq + qo + i0 * C, C);
            if (dk) vt_sgemm(1, 0, ncol, p->d, rows, p->scale, dp, ncol, qi, C, 1.0f, dk + ko, C);
        }
    }
    vt_release(S);
    vt_release(dP);
    return VT_OK;
oom:
    vt_release(S);
    vt_release(dP);
    return vt_error_code();  // gin[] already allocated is released by the tape
}

static const vt_op op_attention = {"attention", {attention_forward_cpu, NULL}, {attention_backward_cpu, NULL}, 0x7, 0};

vt_tensor *vt_attention(vt_tensor *q, vt_tensor *k, vt_tensor *v, int heads, float scale, int causal) {
    if (!q || !k || !v) return NULL;
    if (vt_check_f32("attention", q) || vt_check_f32("attention", k) || vt_check_f32("attention", v)) return NULL;
    char s1[VT_SHAPE_BUF], s2[VT_SHAPE_BUF], s3[VT_SHAPE_BUF];
    int ok = q->ndim == 3 && k->ndim == 3 && v->ndim == 3 && vt_same_shape(k, v) && q->shape[0] == k->shape[0] &&
             q->shape[2] == k->shape[2] && heads > 0 && q->shape[2] % heads == 0 && k->shape[1] > 0;
    if (!ok) {
        vt_error(VT_ERR_SHAPE,
                 "attention: q %s, k %s, v %s with %d heads do not fit (need q [B, Lq, H*d], k, v [B, Lk, H*d], "
                 "Lk > 0)",
                 vt_shape_str(q, s1, sizeof s1), vt_shape_str(k, s2, sizeof s2), vt_shape_str(v, s3, sizeof s3),
                 heads);
        return NULL;
    }
    attention_params p = {q->shape[0], q->shape[1], k->shape[1], heads, q->shape[2] / heads, scale, causal != 0};
    vt_tensor *in[3] = {q, k, v};
    return vt_op_run(&op_attention, in, 3, &p, sizeof p, VT_F32, 3, q->shape);
}
