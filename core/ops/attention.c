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

static const vt_op op_softmax = {"softmax", {softmax_forward_cpu, NULL}, {softmax_backward_cpu, NULL}, 0, 1, NULL};

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
#pragma omp parallel for if (omp_get_level() == 0 && rows * ncol > 65536)
    for (int64_t r = 0; r < rows; r++) {
        float *sr = S + r * ncol;
        const int64_t nk = attn_row_keys(p, i0 + r);
        for (int64_t j = nk; j < ncol; j++) sr[j] = 0.0f;  // masked keys: probability 0
        if (lse_in) exp_shift_row(sr, lse_in[r], nk);
        else lse_out[r] = softmax_row(sr, sr, nk);
    }
}

// ---- small attention ---------------------------------------------------------------------
// A few queries and keys (temporal attention: Lq = Lk = the frames; the deepest spatial
// levels): per (batch, head) the BLAS path would run GEMMs like 4x32 @ 32x4, all call and
// packing overhead. Direct register-blocked loops instead, the (batch, head) pairs in parallel,
// same formulas. Blocks of SR = 4 query rows: scores against 8 keys at a time from a transposed,
// zero-padded copy of the pair's keys kT [d, Lk8] (s[r, :] += q[r, c] kT[c, :], no horizontal
// sums), row updates 8 channels at a time; the fixed-size accumulators live in registers and
// give 4 independent FMA chains.
// Measured against the BLAS path (1 thread, d 32, 8 heads): 2-4x faster at 4 keys, even at 16
// (backward 1.5x faster), 2x slower at 64 keys, where the GEMMs have enough work to pay off.
#define ATTN_SMALL_SCORES 4096  // Lq * Lk up to which the direct kernels run
#define ATTN_SMALL_MAXK 16      // and Lk up to this (16 frames: VideoCrafter2's clips)
#define SR 4                    // query rows per block (small_* below are written for 4)
#define SK 8                    // keys / channels per vector block

static int attn_is_small(const attention_params *p) {
    return p->Lq * p->Lk <= ATTN_SMALL_SCORES && p->Lk <= ATTN_SMALL_MAXK && p->d % SK == 0 && p->d <= 512;
}

// xT [d, Lk8] = the pair's rows x [Lk, d] (row stride C), keys Lk .. Lk8 zero
static inline void small_transpose(const float *x, int64_t C, int64_t Lk, int64_t Lk8, int64_t d, float *xT) {
    for (int64_t c = 0; c < d; c++) {
        for (int64_t j = 0; j < Lk; j++) xT[c * Lk8 + j] = x[j * C + c];
        for (int64_t j = Lk; j < Lk8; j++) xT[c * Lk8 + j] = 0.0f;
    }
}

// 8 floats as one value: GCC keeps such locals in registers (ymm in the x86-64-v3 clone, pairs
// of xmm in the baseline one); loads / stores through the unaligned, may-alias type.
typedef float v8f __attribute__((vector_size(32)));
typedef float v8f_u __attribute__((vector_size(32), aligned(4), may_alias));
#define ld8(p) (*(const v8f_u *)(p))
#define st8(p, v) (*(v8f_u *)(p) = (v))

// S [SR, Lk8] = scale * X[rows] kT: rows r of X at x + row[r] * C
static inline void small_scores(const float *x, const int64_t *row, int64_t C, const float *kT, int64_t d,
                                int64_t Lk8, float scale, float (*S)[ATTN_SMALL_MAXK]) {
    const float *x0 = x + row[0] * C, *x1 = x + row[1] * C, *x2 = x + row[2] * C, *x3 = x + row[3] * C;
    for (int64_t j0 = 0; j0 < Lk8; j0 += SK) {
        v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (int64_t c = 0; c < d; c++) {
            const v8f kc = ld8(kT + c * Lk8 + j0);
            a0 += x0[c] * kc;
            a1 += x1[c] * kc;
            a2 += x2[c] * kc;
            a3 += x3[c] * kc;
        }
        st8(S[0] + j0, a0 * scale);
        st8(S[1] + j0, a1 * scale);
        st8(S[2] + j0, a2 * scale);
        st8(S[3] + j0, a3 * scale);
    }
}

// Y[rows] = scale * W [SR, Lk] @ Z [Lk, d] (Z rows at z + j * C); W is zero past each row's
// keys; only the first nrows rows are written
static inline void small_rows_by_keys(const float (*W)[ATTN_SMALL_MAXK], const float *z, int64_t C, int64_t Lk,
                                      int64_t d, float scale, float *y, const int64_t *row, int nrows) {
    for (int64_t c0 = 0; c0 < d; c0 += SK) {
        v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (int64_t j = 0; j < Lk; j++) {
            const v8f zj = ld8(z + j * C + c0);
            a0 += W[0][j] * zj;
            a1 += W[1][j] * zj;
            a2 += W[2][j] * zj;
            a3 += W[3][j] * zj;
        }
        const v8f a[SR] = {a0, a1, a2, a3};
        for (int r = 0; r < nrows; r++) st8(y + row[r] * C + c0, a[r] * scale);
    }
}

// Y [Lk, d] += W^T [Lk, SR] @ X[rows] [SR, d] (dv += P^T dO, dk += dS^T Q); W zero past keys and
// on padding rows
static inline void small_keys_by_rows(const float (*W)[ATTN_SMALL_MAXK], const float *x, const int64_t *row, int64_t C,
                                      int64_t Lk, int64_t d, float *y) {
    const float *x0 = x + row[0] * C, *x1 = x + row[1] * C, *x2 = x + row[2] * C, *x3 = x + row[3] * C;
    for (int64_t j = 0; j < Lk; j++) {
        const float w0 = W[0][j], w1 = W[1][j], w2 = W[2][j], w3 = W[3][j];
        for (int64_t c0 = 0; c0 < d; c0 += SK) {
            float *yj = y + j * C + c0;
            st8(yj, ld8(yj) + w0 * ld8(x0 + c0) + w1 * ld8(x1 + c0) + w2 * ld8(x2 + c0) + w3 * ld8(x3 + c0));
        }
    }
}

// The block's rows i0 .. i0 + SR (clamped to the last row: a short block recomputes it and
// writes it once) and their visible keys.
static inline int small_block_rows(const attention_params *p, int64_t i0, int64_t *row, int64_t *nk) {
    const int n = p->Lq - i0 < SR ? (int)(p->Lq - i0) : SR;
    for (int r = 0; r < SR; r++) {
        row[r] = i0 + (r < n ? r : n - 1);
        nk[r] = attn_row_keys(p, row[r]);
    }
    return n;
}

// One (batch, head): q [Lq, d], k, v [Lk, d], o [Lq, d] (row stride C) -> o, lse [Lq]
VT_SIMD_CLONES static void attn_small_fwd(const attention_params *p, const float *q, const float *k, const float *v,
                                          float *o, float *lse) {
    const int64_t C = p->H * p->d, d = p->d, Lk = p->Lk, Lk8 = (Lk + SK - 1) / SK * SK;
    float kT[d * Lk8], S[SR][ATTN_SMALL_MAXK];
    small_transpose(k, C, Lk, Lk8, d, kT);
    for (int64_t i0 = 0; i0 < p->Lq; i0 += SR) {
        int64_t row[SR], nk[SR];
        const int n = small_block_rows(p, i0, row, nk);
        small_scores(q, row, C, kT, d, Lk8, p->scale, S);
        for (int r = 0; r < SR; r++) {  // softmax of each row over its keys; P = 0 past them
            float mx = -INFINITY;
            for (int64_t j = 0; j < nk[r]; j++) mx = S[r][j] > mx ? S[r][j] : mx;
            double sum = 0;
            for (int64_t j = 0; j < nk[r]; j++) {
                S[r][j] = vt_expf(S[r][j] - mx);
                sum += S[r][j];
            }
            const float inv = (float)(1.0 / sum);
            for (int64_t j = 0; j < nk[r]; j++) S[r][j] *= inv;
            for (int64_t j = nk[r]; j < Lk; j++) S[r][j] = 0.0f;
            if (r < n) lse[row[r]] = mx + (float)log(sum);
        }
        small_rows_by_keys(S, v, C, Lk, d, 1.0f, o, row, n);  // o = P v
    }
}

// One (batch, head), P recomputed from lse: dv += P^T dO; dP = dO v^T; dS = P * (dP -
// rowsum(P * dP)); dq = scale dS k; dk += scale dS^T q. dq / dk / dv NULL: not wanted.
VT_SIMD_CLONES static void attn_small_bwd(const attention_params *p, const float *q, const float *k, const float *v,
                                          const float *g, const float *lse, float *dq, float *dk, float *dv) {
    const int64_t C = p->H * p->d, d = p->d, Lk = p->Lk, Lk8 = (Lk + SK - 1) / SK * SK;
    float kT[d * Lk8], vT[d * Lk8], P[SR][ATTN_SMALL_MAXK], dS[SR][ATTN_SMALL_MAXK];
    small_transpose(k, C, Lk, Lk8, d, kT);
    if (dq || dk) small_transpose(v, C, Lk, Lk8, d, vT);
    for (int64_t i0 = 0; i0 < p->Lq; i0 += SR) {
        int64_t row[SR], nk[SR];
        const int n = small_block_rows(p, i0, row, nk);
        small_scores(q, row, C, kT, d, Lk8, p->scale, P);
        for (int r = 0; r < SR; r++) {
            for (int64_t j = 0; j < nk[r]; j++) P[r][j] = r < n ? vt_expf(P[r][j] - lse[row[r]]) : 0.0f;
            for (int64_t j = nk[r]; j < Lk; j++) P[r][j] = 0.0f;  // masked (and padding rows: all 0)
        }
        if (dv) small_keys_by_rows(P, g, row, C, Lk, d, dv);
        if (!dq && !dk) continue;
        small_scores(g, row, C, vT, d, Lk8, 1.0f, dS);  // dP = dO v^T
        for (int r = 0; r < SR; r++) {
            double dot = 0;
            for (int64_t j = 0; j < Lk; j++) dot += (double)P[r][j] * dS[r][j];
            const float fd = (float)dot;
            for (int64_t j = 0; j < Lk; j++) dS[r][j] = P[r][j] * (dS[r][j] - fd);
        }
        if (dq) small_rows_by_keys(dS, k, C, Lk, d, p->scale, dq, row, n);
        if (dk) {
            for (int r = 0; r < SR; r++)
                for (int64_t j = 0; j < Lk; j++) dS[r][j] *= p->scale;
            small_keys_by_rows(dS, q, row, C, Lk, d, dk);
        }
    }
}

// ---- the BLAS path: one (batch, head) pair per item (vt_parallel_items) ----------------------
typedef struct attn_items {
    const attention_params *p;
    const float *q, *k, *v, *g, *lse_in;
    float *o, *lse, *dq, *dk, *dv;
    float *S, *dP;  // per-thread score blocks [br, Lk]
    int64_t br;
} attn_items;

// Forward of pair bh, row block by row block: S = scale q k^T, P = softmax(S), o = P v
static void attn_item_forward(void *ctx, int64_t bh, int thread) {
    const attn_items *c = ctx;
    const attention_params *p = c->p;
    const int64_t C = p->H * p->d, b = bh / p->H, h = bh % p->H, br = c->br;
    float *s = c->S + thread * br * p->Lk;
    const float *qb = c->q + b * p->Lq * C + h * p->d;
    const float *kb = c->k + b * p->Lk * C + h * p->d, *vb = c->v + b * p->Lk * C + h * p->d;
    float *ob = c->o + b * p->Lq * C + h * p->d, *lb = c->lse + bh * p->Lq;
    for (int64_t i0 = 0; i0 < p->Lq; i0 += br) {
        const int64_t rows = p->Lq - i0 < br ? p->Lq - i0 : br;
        const int64_t ncol = attn_row_keys(p, i0 + rows - 1);  // keys any row of the block sees
        vt_sgemm(0, 1, rows, ncol, p->d, p->scale, qb + i0 * C, C, kb, C, 0.0f, s, ncol);
        attn_probs(p, i0, rows, ncol, s, lb + i0, NULL);
        vt_sgemm(0, 0, rows, p->d, ncol, 1.0f, s, ncol, vb, C, 0.0f, ob + i0 * C, C);
    }
}

// Backward of pair bh (its dk, dv rows accumulate over its row blocks, all on one thread)
static void attn_item_backward(void *ctx, int64_t bh, int thread) {
    const attn_items *c = ctx;
    const attention_params *p = c->p;
    const int64_t C = p->H * p->d, b = bh / p->H, h = bh % p->H, br = c->br;
    float *s = c->S + thread * br * p->Lk, *dp = c->dP ? c->dP + thread * br * p->Lk : NULL;
    const int64_t qo = b * p->Lq * C + h * p->d, ko = b * p->Lk * C + h * p->d;
    const float *lb = c->lse_in + bh * p->Lq;
    for (int64_t i0 = 0; i0 < p->Lq; i0 += br) {
        const int64_t rows = p->Lq - i0 < br ? p->Lq - i0 : br;
        const int64_t ncol = attn_row_keys(p, i0 + rows - 1);
        const float *qi = c->q + qo + i0 * C, *gi = c->g + qo + i0 * C;
        vt_sgemm(0, 1, rows, ncol, p->d, p->scale, qi, C, c->k + ko, C, 0.0f, s, ncol);
        attn_probs(p, i0, rows, ncol, s, NULL, lb + i0);
        if (c->dv) vt_sgemm(1, 0, ncol, p->d, rows, 1.0f, s, ncol, gi, C, 1.0f, c->dv + ko, C);
        if (!c->dq && !c->dk) continue;
        vt_sgemm(0, 1, rows, ncol, p->d, 1.0f, gi, C, c->v + ko, C, 0.0f, dp, ncol);
#pragma omp parallel for if (omp_get_level() == 0 && rows * ncol > 65536)
        for (int64_t r = 0; r < rows; r++) softmax_grad_row(s + r * ncol, dp + r * ncol, dp + r * ncol, ncol);  // masked: P = 0
        if (c->dq) vt_sgemm(0, 0, rows, p->d, ncol, p->scale, dp, ncol, c->k + ko, C, 0.0f, c->dq + qo + i0 * C, C);
        if (c->dk) vt_sgemm(1, 0, ncol, p->d, rows, p->scale, dp, ncol, qi, C, 1.0f, c->dk + ko, C);
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
    if (attn_is_small(p)) {
        if (!lse) return vt_error_code();
        const float *q = vt_f32(in[0]), *k = vt_f32(in[1]), *v = vt_f32(in[2]);
        float *o = vt_f32(out), *l = vt_f32(lse);
#pragma omp parallel for schedule(static) if (pairs * p->Lq * p->Lk * p->d > 32768)
        for (int64_t bh = 0; bh < pairs; bh++) {
            const int64_t b = bh / p->H, h = bh % p->H;
            attn_small_fwd(p, q + b * p->Lq * C + h * p->d, k + b * p->Lk * C + h * p->d, v + b * p->Lk * C + h * p->d,
                           o + b * p->Lq * C + h * p->d, l + bh * p->Lq);
        }
        if (n->recording) n->saved[n->n_saved++] = lse;
        else vt_release(lse);
        return VT_OK;
    }
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
    attn_items c = {p, q, k, v, NULL, NULL, o, l, NULL, NULL, NULL, vt_f32(S), NULL, br};
    vt_parallel_items(pairs, nt, attn_item_forward, &c);
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
    const int small = attn_is_small(p);
    const int nt = pairs >= omp_get_max_threads() ? omp_get_max_threads() : 1;
    vt_tensor *S = small ? NULL : vt_empty(VT_F32, VT_CPU, 1, (int64_t[]){nt * br * p->Lk});
    vt_tensor *dP = need_qk && !small ? vt_empty(VT_F32, VT_CPU, 1, (int64_t[]){nt * br * p->Lk}) : NULL;
    if (!small && (!S || (need_qk && !dP))) goto oom;
    for (int i = 0; i < 3; i++) {
        if (!n->need[i]) continue;
        // dq is written block by block; dk, dv accumulate over blocks
        gin[i] = i == 0 ? vt_empty(VT_F32, VT_CPU, n->in_ndim[i], n->in_shape[i])
                        : vt_zeros(VT_F32, VT_CPU, n->in_ndim[i], n->in_shape[i]);
        if (!gin[i]) goto oom;
    }
    float *dq = gin[0] ? vt_f32(gin[0]) : NULL, *dk = gin[1] ? vt_f32(gin[1]) : NULL;
    float *dv = gin[2] ? vt_f32(gin[2]) : NULL;
    if (small) {  // a pair's dk, dv rows are its own: pairs run in parallel
#pragma omp parallel for schedule(static) if (pairs * p->Lq * p->Lk * p->d > 32768)
        for (int64_t bh = 0; bh < pairs; bh++) {
            const int64_t b = bh / p->H, h = bh % p->H;
            const int64_t qo = b * p->Lq * C + h * p->d, ko = b * p->Lk * C + h * p->d;
            attn_small_bwd(p, q + qo, k + ko, v + ko, g + qo, l + bh * p->Lq, dq ? dq + qo : NULL, dk ? dk + ko : NULL,
                           dv ? dv + ko : NULL);
        }
        return VT_OK;
    }
    vt_blas_serial();
    attn_items c = {p, q, k, v, g, l, NULL, NULL, dq, dk, dv, vt_f32(S), dP ? vt_f32(dP) : NULL, br};
    vt_parallel_items(pairs, nt, attn_item_backward, &c);
    vt_release(S);
    vt_release(dP);
    return VT_OK;
oom:
    vt_release(S);
    vt_release(dP);
    return vt_error_code();  // gin[] already allocated is released by the tape
}

static const vt_op op_attention = {"attention", {attention_forward_cpu, NULL}, {attention_backward_cpu, NULL}, 0x7, 0, NULL};

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
