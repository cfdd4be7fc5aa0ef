// norm.c — group norm, layer norm, group norm + SiLU (fused) and L2 normalisation. CPU
// reference kernels.
//
// Group norm and layer norm share one kernel: x is seen as [N, C, S] with statistics per
// (n, group) over (C/G channels, S) and the affine per channel. Group norm is [N, C, ...]
// with S = the trailing dims; layer norm [..., C] is N = rows, G = 1, S = 1.
// Statistics are accumulated in double (two passes: mean, then centred squares), so inputs
// with a large mean relative to their spread keep full f32 accuracy; the variance is the
// biased one (divide by the group size), as torch.nn.GroupNorm / LayerNorm.
// The backward recomputes the statistics from the saved x instead of keeping them on the
// tape: one more pass over x, nothing extra held, and exact in double.
#include "ops_internal.h"
#include "params.h"
#include "vmath.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef vt_norm_params norm_params;

// Sums in double, vectorised (OpenMP simd reductions: independent lanes, so the loops run at
// throughput, not at the latency of one dependent add per element).
static inline double sum_f64(const float *x, int64_t n) {
    double a = 0;
#pragma omp simd reduction(+ : a)
    for (int64_t i = 0; i < n; i++) a += x[i];
    return a;
}

// sum (x - mu)^2
static inline double sumsq_centred(const float *x, int64_t n, double mu) {
    double a = 0;
#pragma omp simd reduction(+ : a)
    for (int64_t i = 0; i < n; i++) {
        const double d = x[i] - mu;
        a += d * d;
    }
    return a;
}

// *sg = sum g,  *sgx = sum g (x - mu)
static inline void sums_g_gx(const float *g, const float *x, int64_t n, double mu, double *sg, double *sgx) {
    double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
    for (int64_t i = 0; i < n; i++) {
        a += g[i];
        b += (double)g[i] * (x[i] - mu);
    }
    *sg = a;
    *sgx = b;
}

// ---- layer norm rows (S == 1, G == 1: the statistics run along the contiguous features) ----
// Separate kernels so that every loop runs over the C features of a row: the general kernels'
// per-channel loops over S would be loops of one element here.

// x [C] -> y [C] = (x - mean) rstd w + b (w, b NULL: 1, 0)
VT_SIMD_CLONES static void ln_row_forward(const float *x, const float *w, const float *b, float *y, int64_t C,
                                          double eps) {
    const double mu = sum_f64(x, C) / (double)C, rs = 1.0 / sqrt(sumsq_centred(x, C, mu) / (double)C + eps);
    if (w && b) {
#pragma omp simd
        for (int64_t c = 0; c < C; c++) y[c] = (float)((x[c] - mu) * rs * w[c] + b[c]);
    } else {
#pragma omp simd
        for (int64_t c = 0; c < C; c++) y[c] = (float)((x[c] - mu) * rs * (w ? w[c] : 1.0f) + (b ? b[c] : 0.0f));
    }
}

// g, x [C] -> dx [C] = rstd (gy - mean(gy) - xh mean(gy xh)), gy = g w, xh = (x - mean) rstd
VT_SIMD_CLONES static void ln_row_backward(const float *g, const float *x, const float *w, float *dx, int64_t C,
                                           double eps) {
    const double mu = sum_f64(x, C) / (double)C, rs = 1.0 / sqrt(sumsq_centred(x, C, mu) / (double)C + eps);
    double sg = 0, sgx = 0;
#pragma omp simd reduction(+ : sg, sgx)
    for (int64_t c = 0; c < C; c++) {
        const double gy = (double)g[c] * (w ? w[c] : 1.0f);
        sg += gy;
        sgx += gy * (x[c] - mu);
    }
    sg /= (double)C;
    sgx *= rs / (double)C;
#pragma omp simd
    for (int64_t c = 0; c < C; c++)
        dx[c] = (float)(rs * ((double)g[c] * (w ? w[c] : 1.0f) - sg - (x[c] - mu) * rs * sgx));
}

// ---- group norm groups: Cg channels of S contiguous elements each ---------------------------
// x [Cg*S] of one (n, group) -> mean, 1 / sqrt(var + eps)
VT_SIMD_CLONES static void gn_group_stats(const float *x, int64_t M, double eps, double *mean, double *rstd) {
    const double mu = sum_f64(x, M) / (double)M;
    *mean = mu;
    *rstd = 1.0 / sqrt(sumsq_centred(x, M, mu) / (double)M + eps);
}

// y = (x - mean) rstd w[c] + b[c] on one group (w, b at the group's first channel, or NULL)
VT_SIMD_CLONES static void gn_group_forward(const float *x, const float *w, const float *b, float *y, int64_t Cg,
                                            int64_t S, double mu, double rs) {
    for (int64_t cc = 0; cc < Cg; cc++) {
        const double a = rs * (w ? w[cc] : 1.0), sh = (b ? b[cc] : 0.0) - mu * a;
        const float *xc = x + cc * S;
        float *yc = y + cc * S;
#pragma omp simd
        for (int64_t s = 0; s < S; s++) yc[s] = (float)(xc[s] * a + sh);
    }
}

// The last step of the group norm backward on one group [Cg, S], shared by group_norm and
// group_norm_silu: dx = rstd (gy - sg - xh sgx), gy = g w[c], xh = (x - mean) rstd, given the
// group's means sg = mean(gy), sgx = mean(gy xh). g may be dx itself (group_norm_silu parks gz
// there): each element is read before it is written.
static inline void gn_group_dx(const float *g, const float *x, const float *w, float *dx, int64_t Cg, int64_t S,
                               double mu, double rs, double sg, double sgx) {
    for (int64_t cc = 0; cc < Cg; cc++) {
        const double wc = w ? w[cc] : 1.0;
        const float *gc = g + cc * S, *xc = x + cc * S;
        float *dc = dx + cc * S;
#pragma omp simd
        for (int64_t s = 0; s < S; s++) dc[s] = (float)(rs * (gc[s] * wc - sg - (xc[s] - mu) * rs * sgx));
    }
}

// dx = rstd (gy - mean(gy) - xh mean(gy xh)) on one group, gy = g w[c], xh = (x - mean) rstd
VT_SIMD_CLONES static void gn_group_backward(const float *g, const float *x, const float *w, float *dx, int64_t Cg,
                                             int64_t S, double mu, double rs) {
    double sg = 0, sgx = 0;
    for (int64_t cc = 0; cc < Cg; cc++) {  // sum_s g w = w sum_s g, likewise for g (x - mu)
        double a, b;
        sums_g_gx(g + cc * S, x + cc * S, S, mu, &a, &b);
        sg += (w ? w[cc] : 1.0) * a;
        sgx += (w ? w[cc] : 1.0) * b;
    }
    const double M = (double)(Cg * S);
    gn_group_dx(g, x, w, dx, Cg, S, mu, rs, sg / M, sgx * (rs / M));
}

// Per (n, g): mean and 1 / sqrt(var + eps) of the Cg*S contiguous elements of the group.
// x [N, C, S] -> mean, rstd [N*G]
static void norm_stats(const norm_params *p, const float *x, double *mean, double *rstd) {
    const int64_t M = p->C / p->G * p->S, NG = p->N * p->G;
#pragma omp parallel for if (NG * M > 65536)
    for (int64_t ng = 0; ng < NG; ng++) gn_group_stats(x + ng * M, M, (double)p->eps, mean + ng, rstd + ng);
}

// x [N, C, S], w, b [C] or NULL -> y [N, C, S] = (x - mean) * rstd * w[c] + b[c]
static vt_err norm_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const norm_params *p = (const norm_params *)n->params;
    const int64_t NG = p->N * p->G, Cg = p->C / p->G, S = p->S;
    const float *x = vt_f32(in[0]);
    const float *w = in[1] ? vt_f32(in[1]) : NULL, *b = in[2] ? vt_f32(in[2]) : NULL;
    float *y = vt_f32(out);
    if (S == 1 && p->G == 1) {  // layer norm
#pragma omp parallel for if (out->numel > 65536)
        for (int64_t r = 0; r < p->N; r++) ln_row_forward(x + r * p->C, w, b, y + r * p->C, p->C, (double)p->eps);
        return VT_OK;
    }
    double *mean = malloc((size_t)(NG ? NG : 1) * 2 * sizeof(double));
    if (!mean) return vt_error(VT_ERR_OOM, "out of host memory for norm statistics");
    double *rstd = mean + NG;
    norm_stats(p, x, mean, rstd);
#pragma omp parallel for if (out->numel > 65536)
    for (int64_t ng = 0; ng < NG; ng++) {
        const int64_t c0 = ng % p->G * Cg;
        gn_group_forward(x + ng * Cg * S, w ? w + c0 : NULL, b ? b + c0 : NULL, y + ng * Cg * S, Cg, S, mean[ng], rstd[ng]);
    }
    free(mean);
    return VT_OK;
}

// g [N, C, S]; saved x [N, C, S], w [C] or NULL. xh = (x - mean) rstd, gy = g w[c]; over a group
// of M elements:  dx = rstd (gy - mean(gy) - xh mean(gy xh));  dw[c] = sum g xh;  db[c] = sum g
static vt_err norm_backward_cpu(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const norm_params *p = (const norm_params *)n->params;
    const int64_t NG = p->N * p->G, Cg = p->C / p->G, S = p->S, M = Cg * S, C = p->C;
    const float *x = vt_f32(n->saved[0]), *g = vt_f32(gout);
    const float *w = n->saved[1] ? vt_f32(n->saved[1]) : NULL;
    vt_err e = VT_OK;
    if (S == 1 && p->G == 1 && n->need[0]) {  // layer norm's dx: row kernels
        gin[0] = vt_empty(VT_F32, VT_CPU, n->in_ndim[0], n->in_shape[0]);
        if (!gin[0]) return vt_error_code();
        float *dx = vt_f32(gin[0]);
#pragma omp parallel for if (NG * M > 65536)
        for (int64_t r = 0; r < p->N; r++) ln_row_backward(g + r * C, x + r * C, w, dx + r * C, C, (double)p->eps);
        if (!n->need[1] && !n->need[2]) return VT_OK;
    }
    double *mean = malloc((size_t)(NG ? NG : 1) * 2 * sizeof(double));
    if (!mean) return vt_error(VT_ERR_OOM, "out of host memory for norm statistics");
    double *rstd = mean + NG;
    norm_stats(p, x, mean, rstd);
    if (n->need[0] && !gin[0]) {
        gin[0] = vt_empty(VT_F32, VT_CPU, n->in_ndim[0], n->in_shape[0]);
        if (!gin[0]) { e = vt_error_code(); goto done; }
        float *dx = vt_f32(gin[0]);
#pragma omp parallel for if (NG * M > 65536)
        for (int64_t ng = 0; ng < NG; ng++) {
            const int64_t c0 = ng % p->G * Cg, base = ng * M;
            gn_group_backward(g + base, x + base, w ? w + c0 : NULL, dx + base, Cg, S, mean[ng], rstd[ng]);
        }
    }
    if (n->need[1] || n->need[2]) {
        float *dw = NULL, *db = NULL;
        if (n->need[1]) {
            gin[1] = vt_empty(VT_F32, VT_CPU, 1, (int64_t[]){C});
            if (!gin[1]) { e = vt_error_code(); goto done; }
            dw = vt_f32(gin[1]);
        }
        if (n->need[2]) {
            gin[2] = vt_empty(VT_F32, VT_CPU, 1, (int64_t[]){C});
            if (!gin[2]) { e = vt_error_code(); goto done; }
            db = vt_f32(gin[2]);
        }
        // Blocks of channels per thread: with S == 1 (layer norm) a row's block is contiguous.
        enum { CB = 16 };
        const int64_t nblk = (C + CB - 1) / CB;
#pragma omp parallel for if (p->N * C * S > 65536)
        for (int64_t blk = 0; blk < nblk; blk++) {
            const int64_t c0 = blk * CB, c1 = c0 + CB < C ? c0 + CB : C;
            double aw[CB] = {0}, ab[CB] = {0};
            for (int64_t i = 0; i < p->N; i++) {
                for (int64_t c = c0; c < c1; c++) {
                    const int64_t ng = i * p->G + c / Cg, off = (i * C + c) * S;
                    const double mu = mean[ng], rs = rstd[ng];
                    double sw, sb;
                    sums_g_gx(g + off, x + off, S, mu, &sb, &sw);
                    sw *= rs;
                    aw[c - c0] += sw;
                    ab[c - c0] += sb;
                }
            }
            for (int64_t c = c0; c < c1; c++) {
                if (dw) dw[c] = (float)aw[c - c0];
                if (db) db[c] = (float)ab[c - c0];
            }
        }
    }
done:
    free(mean);
    return e;
}

// Saves x and w (NULL when absent); the bias is not needed backward.
static const vt_op op_group_norm = {"group_norm", {norm_forward_cpu, NULL}, {norm_backward_cpu, NULL}, 0x3, 0, NULL};
static const vt_op op_layer_norm = {"layer_norm", {norm_forward_cpu, NULL}, {norm_backward_cpu, NULL}, 0x3, 0, NULL};

// w, b must be f32 [C] or NULL.
static int norm_check_affine(const char *name, const vt_tensor *x, const vt_tensor *t, const char *what, int64_t C) {
    if (!t) return 0;
    if (vt_check_f32(name, t)) return 1;
    if (t->ndim != 1 || t->shape[0] != C) {
        char s1[VT_SHAPE_BUF], s2[VT_SHAPE_BUF];
        vt_error(VT_ERR_SHAPE, "%s: %s %s does not fit input %s (expected [%lld])", name, what,
                 vt_shape_str(t, s1, sizeof s1), vt_shape_str(x, s2, sizeof s2), (long long)C);
        return 1;
    }
    return 0;
}

// Checks of group_norm / group_norm_silu (errors name the op) and their params; nonzero on error.
static int group_norm_params(const char *name, const vt_tensor *x, int groups, const vt_tensor *w, const vt_tensor *b,
                             float eps, norm_params *p) {
    if (vt_check_f32(name, x)) return 1;
    char s1[VT_SHAPE_BUF];
    if (x->ndim < 2 || groups < 1 || x->shape[1] % groups != 0) {
        vt_error(VT_ERR_SHAPE, "%s: input %s cannot be split into %d groups (x [N, C, ...], C %% groups == 0)", name,
                 vt_shape_str(x, s1, sizeof s1), groups);
        return 1;
    }
    const int64_t C = x->shape[1];
    if (norm_check_affine(name, x, w, "weight", C) || norm_check_affine(name, x, b, "bias", C)) return 1;
    *p = (norm_params){x->shape[0], C, vt_dim_prod(x->ndim - 2, x->shape + 2), groups, eps};
    return 0;
}

vt_tensor *vt_group_norm(vt_tensor *x, int groups, vt_tensor *w, vt_tensor *b, float eps) {
    norm_params p;
    if (!x || group_norm_params("group_norm", x, groups, w, b, eps, &p)) return NULL;
    vt_tensor *in[3] = {x, w, b};
    return vt_op_run(&op_group_norm, in, 3, &p, sizeof p, VT_F32, x->ndim, x->shape);
}

vt_tensor *vt_layer_norm(vt_tensor *x, vt_tensor *w, vt_tensor *b, float eps) {
    if (!x) return NULL;
    if (vt_check_f32("layer_norm", x)) return NULL;
    if (x->ndim < 1 || vt_dim(x, -1) < 1) {
        char s1[VT_SHAPE_BUF];
        vt_error(VT_ERR_SHAPE, "layer_norm: input %s has no feature dim", vt_shape_str(x, s1, sizeof s1));
        return NULL;
    }
    const int64_t C = vt_dim(x, -1);
    if (norm_check_affine("layer_norm", x, w, "weight", C) || norm_check_affine("layer_norm", x, b, "bias", C))
        return NULL;
    norm_params p = {x->numel / C, C, 1, 1, eps};
    vt_tensor *in[3] = {x, w, b};
    return vt_op_run(&op_layer_norm, in, 3, &p, sizeof p, VT_F32, x->ndim, x->shape);
}

// ---- group_norm_silu: SiLU(GroupNorm(x)) as one op ----------------------------------------
// Every lvdm ResBlock, TemporalConvBlock, the UNet head and the VAE decoder run GroupNorm
// straight into SiLU. As two ops the tape holds x (for the norm) and the norm's output (for the
// SiLU); fused it holds x and the per-group statistics only, and the backward recomputes the
// normalised value z from them: half the saved activation memory of the pair, and no pass
// over memory for the SiLU in either direction.
//
// Saved: x [N, C, S], w, b [C] or NULL (inputs 0-2), then stats [N, G, 3] f32 = (mean_hi,
// mean_lo, rstd) with mean = mean_hi + mean_lo: the double mean of the two-pass statistics kept
// as an f32 pair, so x - mean stays exact when the mean is large against the spread (a plain
// f32 mean would shift every z of the group by up to half an ulp of the mean times rstd). The
// forward uses the same rounded statistics as the backward, so both see one z.

// (mean, rstd) in double -> the saved f32 triple
static void gns_pack_stats(float *st, double mean, double rstd) {
    st[0] = (float)mean;
    st[1] = (float)(mean - (double)st[0]);
    st[2] = (float)rstd;
}

// x [N, C, S], w, b [C] or NULL, stats [N, G, 3] -> y [N, C, S] = silu(z), z = (x - mean) rstd w[c] + b[c]
static vt_err gns_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const norm_params *p = (const norm_params *)n->params;
    const int64_t NG = p->N * p->G, Cg = p->C / p->G, S = p->S;
    const float *x = vt_f32(in[0]);
    const float *w = in[1] ? vt_f32(in[1]) : NULL, *b = in[2] ? vt_f32(in[2]) : NULL;
    float *y = vt_f32(out);
    vt_tensor *stats = vt_empty(VT_F32, VT_CPU, 3, (int64_t[]){p->N, p->G, 3});
    double *mean = malloc((size_t)(NG ? NG : 1) * 2 * sizeof(double));
    if (!stats || !mean) {
        vt_release(stats);
        free(mean);
        return vt_error(VT_ERR_OOM, "out of host memory for norm statistics");
    }
    double *rstd = mean + NG;
    norm_stats(p, x, mean, rstd);
    float *st = vt_f32(stats);
    for (int64_t ng = 0; ng < NG; ng++) gns_pack_stats(st + 3 * ng, mean[ng], rstd[ng]);
    free(mean);
#pragma omp parallel for if (out->numel > 65536)
    for (int64_t ng = 0; ng < NG; ng++) {
        const int64_t c0 = ng % p->G * Cg;
        const double mu = (double)st[3 * ng] + st[3 * ng + 1], rs = st[3 * ng + 2];
        for (int64_t cc = 0; cc < Cg; cc++) {
            const int64_t c = c0 + cc, off = (ng * Cg + cc) * S;
            const double a = rs * (w ? w[c] : 1.0), sh = (b ? b[c] : 0.0) - mu * a;
            for (int64_t s = 0; s < S; s++) {
                const float z = (float)(x[off + s] * a + sh);
                y[off + s] = z * vt_sigmoidf(z);  // activation.c's silu
            }
        }
    }
    if (n->recording) n->saved[n->n_saved++] = stats;
    else vt_release(stats);
    return VT_OK;
}

// g [N, C, S]; saved x [N, C, S], w, b [C] or NULL, stats [N, G, 3]. With z recomputed as in
// the forward, gz = g silu'(z) = g s (1 + z (1 - s)), s = sigmoid(z), then the group norm
// backward of gz: xh = (x - mean) rstd, over a group of M elements
//   dx = rstd (gz w[c] - mean(gz w) - xh mean(gz w xh));  dw[c] = sum gz xh;  db[c] = sum gz.
// gz goes through dx's buffer (pass 1 writes it, pass 2 turns it into dx in place): one
// exp per element and no scratch the size of x. dw / db come from per (n, c) partial sums.
static vt_err gns_backward_cpu(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const norm_params *p = (const norm_params *)n->params;
    const int64_t NG = p->N * p->G, Cg = p->C / p->G, S = p->S, M = Cg * S, C = p->C;
    const float *x = vt_f32(n->saved[0]), *g = vt_f32(gout), *st = vt_f32(n->saved[3]);
    const float *w = n->saved[1] ? vt_f32(n->saved[1]) : NULL, *b = n->saved[2] ? vt_f32(n->saved[2]) : NULL;
    const int need_affine = n->need[1] || n->need[2];
    float *dx = NULL;
    double *part = NULL;  // [N, C, 2]: sum gz, sum gz xh per sample and channel
    if (n->need[0]) {
        gin[0] = vt_empty(VT_F32, VT_CPU, n->in_ndim[0], n->in_shape[0]);
        if (!gin[0]) return vt_error_code();
        dx = vt_f32(gin[0]);
    }
    for (int i = 1; i < 3; i++) {
        if (!n->need[i]) continue;
        gin[i] = vt_empty(VT_F32, VT_CPU, 1, (int64_t[]){C});
        if (!gin[i]) return vt_error_code();
    }
    const int64_t NC = p->N * C > 0 ? p->N * C : 1;
    if (need_affine && !(part = malloc((size_t)NC * 2 * sizeof(double))))
        return vt_error(VT_ERR_OOM, "out of host memory for group_norm_silu partial sums");
#pragma omp parallel for if (NG * M > 65536)
    for (int64_t ng = 0; ng < NG; ng++) {
        const int64_t c0 = ng % p->G * Cg, base = ng * M, nc0 = ng / p->G * C + c0;
        const double mu = (double)st[3 * ng] + st[3 * ng + 1], rs = st[3 * ng + 2];
        double sg = 0, sgx = 0;  // sum gz w, sum gz w xh over the group
        for (int64_t cc = 0; cc < Cg; cc++) {
            const int64_t c = c0 + cc, off = base + cc * S;
            const double wc = w ? w[c] : 1.0, a = rs * wc, sh = (b ? b[c] : 0.0) - mu * a;
            double a0 = 0, a1 = 0;
            for (int64_t s = 0; s < S; s++) {
                const float z = (float)(x[off + s] * a + sh), gz = g[off + s] * vt_silu_gradf(z);
                if (dx) dx[off + s] = gz;
                a0 += gz;
                a1 += gz * (x[off + s] - mu);
            }
            a1 *= rs;
            if (part) {
                part[2 * (nc0 + cc)] = a0;
                part[2 * (nc0 + cc) + 1] = a1;
            }
            sg += wc * a0;
            sgx += wc * a1;
        }
        if (dx) gn_group_dx(dx + base, x + base, w ? w + c0 : NULL, dx + base, Cg, S, mu, rs, sg / (double)M,
                            sgx / (double)M);
    }
    if (part) {
        float *dw = n->need[1] ? vt_f32(gin[1]) : NULL, *db = n->need[2] ? vt_f32(gin[2]) : NULL;
        for (int64_t c = 0; c < C; c++) {
            double sb = 0, sw = 0;
            for (int64_t i = 0; i < p->N; i++) {
                sb += part[2 * (i * C + c)];
                sw += part[2 * (i * C + c) + 1];
            }
            if (dw) dw[c] = (float)sw;
            if (db) db[c] = (float)sb;
        }
        free(part);
    }
    return VT_OK;
}

// Saves x, w, b (the affine enters z, and silu' needs z) and, as an extra, the statistics.
static const vt_op op_group_norm_silu = {"group_norm_silu", {gns_forward_cpu, NULL}, {gns_backward_cpu, NULL}, 0x7, 0, NULL};

vt_tensor *vt_group_norm_silu(vt_tensor *x, int groups, vt_tensor *w, vt_tensor *b, float eps) {
    norm_params p;
    if (!x || group_norm_params("group_norm_silu", x, groups, w, b, eps, &p)) return NULL;
    vt_tensor *in[3] = {x, w, b};
    return vt_op_run(&op_group_norm_silu, in, 3, &p, sizeof p, VT_F32, x->ndim, x->shape);
}

// ---- L2 normalisation --------------------------------------------------------------------
// x [M, C] (leading dims flattened) -> y = x / max(||x||, eps) per row (F.normalize, p = 2).
typedef vt_l2n_params l2n_params;

static double row_norm(const float *x, int64_t C) {
    double s = 0;
    for (int64_t i = 0; i < C; i++) s += (double)x[i] * x[i];
    return sqrt(s);
}

static vt_err l2n_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const l2n_params *p = (const l2n_params *)n->params;
    const float *x = vt_f32(in[0]);
    float *y = vt_f32(out);
#pragma omp parallel for if (out->numel > 65536)
    for (int64_t r = 0; r < p->M; r++) {
        const float *xr = x + r * p->C;
        double nrm = row_norm(xr, p->C), d = nrm > p->eps ? nrm : (double)p->eps;
        for (int64_t i = 0; i < p->C; i++) y[r * p->C + i] = (float)(xr[i] / d);
    }
    return VT_OK;
}

// g, saved x [M, C]. Where ||x|| >= eps: y = x / ||x||, dx = (g - y (g . y)) / ||x||.
// Below eps the denominator is the constant eps: dx = g / eps (torch's clamp_min passes the
// gradient at equality, so the boundary takes the first branch as there).
static vt_err l2n_backward_cpu(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const l2n_params *p = (const l2n_params *)n->params;
    if (!n->need[0]) return VT_OK;
    gin[0] = vt_empty(VT_F32, VT_CPU, n->in_ndim[0], n->in_shape[0]);
    if (!gin[0]) return vt_error_code();
    const float *x = vt_f32(n->saved[0]), *g = vt_f32(gout);
    float *dx = vt_f32(gin[0]);
#pragma omp parallel for if (gout->numel > 65536)
    for (int64_t r = 0; r < p->M; r++) {
        const float *xr = x + r * p->C, *gr = g + r * p->C;
        float *dr = dx + r * p->C;
        const double nrm = row_norm(xr, p->C);
        if (nrm >= p->eps) {
            double dot = 0;
            for (int64_t i = 0; i < p->C; i++) dot += gr[i] * (xr[i] / nrm);
            for (int64_t i = 0; i < p->C; i++) dr[i] = (float)((gr[i] - xr[i] / nrm * dot) / nrm);
        } else {
            for (int64_t i = 0; i < p->C; i++) dr[i] = (float)(gr[i] / (double)p->eps);
        }
    }
    return VT_OK;
}

static const vt_op op_l2_normalize = {"l2_normalize", {l2n_forward_cpu, NULL}, {l2n_backward_cpu, NULL}, 0x1, 0, NULL};

vt_tensor *vt_l2_normalize(vt_tensor *x, float eps) {
    if (!x) return NULL;
    if (vt_check_f32("l2_normalize", x)) return NULL;
    if (x->ndim < 1 || vt_dim(x, -1) < 1) {
        char s1[VT_SHAPE_BUF];
        vt_error(VT_ERR_SHAPE, "l2_normalize: input %s has no feature dim", vt_shape_str(x, s1, sizeof s1));
        return NULL;
    }
    l2n_params p = {x->numel / vt_dim(x, -1), vt_dim(x, -1), eps};
    return vt_op_run(&op_l2_normalize, &x, 1, &p, sizeof p, VT_F32, x->ndim, x->shape);
}
