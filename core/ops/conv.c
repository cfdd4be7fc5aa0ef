// conv.c — 2-D convolution and lvdm's temporal convolution (Conv3d with kernel (kt, 1, 1)).
// CPU reference kernels: im2col + OpenBLAS GEMM, forward and backward. Large images: one GEMM
// per sample, samples in parallel (per-thread col buffer, serial BLAS) when they split evenly
// over the threads. Small images (a UNet's deep levels: 2x2 .. 16x16 pixels) are batched: G
// samples side by side in one col matrix and one GEMM, which would otherwise be GEMMs of a few
// columns that re-pack the whole weight matrix per sample.
//
// Both ops run on one kernel pair that sees its input as [N, C, H, W] planes. conv_time is
// that kernel on x [B, C, T, H*W] with kernel (kt, 1), padding (pad, 0): a temporal kernel
// only mixes frames, so the spatial dims fold into one "width" the kernel never moves along.
#include "ops_internal.h"
#include "params.h"
#include <omp.h>
#include <string.h>

// Geometry, fixed at the frontend so forward and backward agree.
typedef vt_conv_params conv_params;

static int64_t conv_k(const conv_params *p) { return p->C * p->kh * p->kw; }   // GEMM depth
static int64_t conv_l(const conv_params *p) { return p->OH * p->OW; }          // output pixels
static int conv_is_pointwise(const conv_params *p) {  // 1x1, stride 1, no padding: col == x
    return p->kh == 1 && p->kw == 1 && p->sh == 1 && p->sw == 1 && p->ph == 0 && p->pw == 0;
}

// Output columns [ox0, ox1) of kernel column j read inside the input row (0 <= ix < W).
static void conv_valid_cols(const conv_params *p, int j, int64_t *ox0, int64_t *ox1) {
    // ix = ox * sw - pw + j >= 0  <=>  ox >= ceil((pw - j) / sw)
    int64_t lo = p->pw - j > 0 ? (p->pw - j + p->sw - 1) / p->sw : 0;
    // ix < W  <=>  ox * sw < W + pw - j  <=>  ox <= (W + pw - j - 1) / sw
    int64_t hi = p->W + p->pw - j - 1 >= 0 ? (p->W + p->pw - j - 1) / p->sw + 1 : 0;
    if (hi > p->OW) hi = p->OW;
    if (lo > hi) lo = hi;
    *ox0 = lo;
    *ox1 = hi;
}

// x [C, H, W] (one sample) -> col [C*kh*kw, OH*OW] (row stride ldc: a sample's column block of a
// batched col); row (c*kh + i)*kw + j holds the input pixel tap (i, j) of kernel position l
// reads, zero where it falls into the padding. The row order is the flattening of
// w [O, C, kh, kw], so y = w [O, K] @ col. Parallel over rows unless the caller runs it inside
// its own parallel loop.
static void im2col(const conv_params *p, const float *x, float *col, int64_t ldc) {
    const int64_t K = conv_k(p), L = conv_l(p);
#pragma omp parallel for if (!omp_in_parallel() && K * L > 65536)
    for (int64_t r = 0; r < K; r++) {
        const int64_t c = r / (p->kh * p->kw);
        const int i = (int)(r / p->kw % p->kh), j = (int)(r % p->kw);
        const float *xc = x + c * p->H * p->W;
        float *dst = col + r * ldc;
        int64_t ox0, ox1;
        conv_valid_cols(p, j, &ox0, &ox1);
        for (int64_t oy = 0; oy < p->OH; oy++) {
            const int64_t iy = oy * p->sh - p->ph + i;
            float *d = dst + oy * p->OW;
            if (iy < 0 || iy >= p->H) {
                memset(d, 0, (size_t)p->OW * sizeof(float));
                continue;
            }
            const float *xr = xc + iy * p->W - p->pw + j;  // xr[ox * sw] = x[iy, ox * sw - pw + j]
            for (int64_t ox = 0; ox < ox0; ox++) d[ox] = 0.0f;
            if (p->sw == 1) {
                memcpy(d + ox0, xr + ox0, (size_t)(ox1 - ox0) * sizeof(float));
            } else {
                for (int64_t ox = ox0; ox < ox1; ox++) d[ox] = xr[ox * p->sw];
            }
            for (int64_t ox = ox1; ox < p->OW; ox++) d[ox] = 0.0f;
        }
    }
}

// The adjoint of im2col: dx [C, H, W] (zeroed by the caller) += every col entry (row stride ldc)
// at the pixel it was read from. Parallel over channels: a channel's rows only touch that
// channel's plane.
static void col2im(const conv_params *p, const float *col, int64_t ldc, float *dx) {
    const int64_t L = conv_l(p), taps = (int64_t)p->kh * p->kw;
#pragma omp parallel for if (!omp_in_parallel() && conv_k(p) * L > 65536)
    for (int64_t c = 0; c < p->C; c++) {
        float *dc = dx + c * p->H * p->W;
        for (int64_t t = 0; t < taps; t++) {
            const int i = (int)(t / p->kw), j = (int)(t % p->kw);
            const float *src = col + (c * taps + t) * ldc;
            int64_t ox0, ox1;
            conv_valid_cols(p, j, &ox0, &ox1);
            for (int64_t oy = 0; oy < p->OH; oy++) {
                const int64_t iy = oy * p->sh - p->ph + i;
                if (iy < 0 || iy >= p->H) continue;
                float *dr = dc + iy * p->W - p->pw + j;  // dr[ox * sw] = dx[iy, ox * sw - pw + j]
                const float *s = src + oy * p->OW;
                if (p->sw == 1) {
                    for (int64_t ox = ox0; ox < ox1; ox++) dr[ox] += s[ox];
                } else {
                    for (int64_t ox = ox0; ox < ox1; ox++) dr[ox * p->sw] += s[ox];
                }
            }
        }
    }
}

// Threads for a loop over n samples: the whole team when the samples split evenly enough
// (each sample then runs im2col + one single-threaded GEMM), else 1 (samples one by one, each
// GEMM split over the team by vt_sgemm).
static int conv_sample_threads(int64_t n) {
    const int nt = omp_get_max_threads();
    return nt > 1 && (n % nt == 0 || n >= 4 * nt) ? nt : 1;
}

// Samples per GEMM: enough for CONV_GEMM_COLS columns (1 when one image has them: no batching),
// with the batched col [K, G*L] under CONV_COL_FLOATS.
#define CONV_GEMM_COLS 1024
#define CONV_COL_FLOATS ((int64_t)8 << 20)  // 32 MiB
static int64_t conv_group(const conv_params *p) {
    const int64_t L = conv_l(p), K = conv_k(p);
    int64_t g = L > 0 ? (CONV_GEMM_COLS + L - 1) / L : 1;
    if (g > p->N) g = p->N;
    if (K * L > 0 && g * K * L > CONV_COL_FLOATS) g = CONV_COL_FLOATS / (K * L);
    return g < 1 ? 1 : g;
}

// col [K, G*L] of G samples x [G, C, H, W] (sample s in column block s), in parallel over samples
static void im2col_group(const conv_params *p, const float *x, int64_t G, float *col) {
    const int64_t L = conv_l(p), xsz = p->C * p->H * p->W;
#pragma omp parallel for if (G * conv_k(p) * L > 65536)
    for (int64_t s = 0; s < G; s++) im2col(p, x + s * xsz, col + s * L, G * L);
}

// dx [G, C, H, W] (zeroed) += col2im of each sample's column block of col [K, G*L]
static void col2im_group(const conv_params *p, const float *col, int64_t G, float *dx) {
    const int64_t L = conv_l(p), xsz = p->C * p->H * p->W;
#pragma omp parallel for if (G * conv_k(p) * L > 65536)
    for (int64_t s = 0; s < G; s++) col2im(p, col + s * L, G * L, dx + s * xsz);
}

// [G, O, L] <-> [O, G*L] for a group's outputs / output gradients (sample s is column block s)
static void group_gather(const float *src, float *dst, int64_t G, int64_t O, int64_t L) {
#pragma omp parallel for collapse(2) if (G * O * L > 65536)
    for (int64_t s = 0; s < G; s++)
        for (int64_t o = 0; o < O; o++) memcpy(dst + o * G * L + s * L, src + (s * O + o) * L, (size_t)L * sizeof(float));
}

// y [G, O, L] = yt [O, G*L] (+ b broadcast over L)
static void group_scatter_bias(const float *yt, const float *b, float *y, int64_t G, int64_t O, int64_t L) {
#pragma omp parallel for collapse(2) if (G * O * L > 65536)
    for (int64_t s = 0; s < G; s++)
        for (int64_t o = 0; o < O; o++) {
            const float *src = yt + o * G * L + s * L;
            float *dst = y + (s * O + o) * L;
            const float bo = b ? b[o] : 0.0f;
            for (int64_t l = 0; l < L; l++) dst[l] = src[l] + bo;
        }
}

// x [N, C, H, W], w [O, C, kh, kw] = [O, K], b [O] or NULL -> y [N, O, OH, OW]
// y_n [O, L] = w [O, K] @ col(x_n) [K, L] (+ b broadcast over L); batched: for a group of G
// samples, yt [O, G*L] = w @ [col(x_s0) | col(x_s1) | ...], then scattered to y.
static vt_err conv_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const conv_params *p = (const conv_params *)n->params;
    const vt_tensor *b = in[2];
    const int64_t K = conv_k(p), L = conv_l(p), O = p->O, xsz = p->C * p->H * p->W;
    const float *x = vt_f32(in[0]), *w = vt_f32(in[1]), *pb = b ? vt_f32(b) : NULL;
    float *y = vt_f32(out);
    const int64_t G = conv_group(p);
    if (G > 1) {
        vt_tensor *colt = vt_empty(VT_F32, VT_CPU, 2, (int64_t[]){K, G * L});
        vt_tensor *yt = vt_empty(VT_F32, VT_CPU, 2, (int64_t[]){O, G * L});
        if (!colt || !yt) {
            vt_release(colt);
            vt_release(yt);
            return vt_error_code();
        }
        for (int64_t s0 = 0; s0 < p->N; s0 += G) {
            const int64_t g = p->N - s0 < G ? p->N - s0 : G;  // the last group may be short
            im2col_group(p, x + s0 * xsz, g, vt_f32(colt));
            vt_sgemm(0, 0, O, g * L, K, 1.0f, w, K, vt_f32(colt), g * L, 0.0f, vt_f32(yt), g * L);
            group_scatter_bias(vt_f32(yt), pb, y + s0 * O * L, g, O, L);
        }
        vt_release(colt);
        vt_release(yt);
        return VT_OK;
    }
    const int pointwise = conv_is_pointwise(p);
    const int nt = conv_sample_threads(p->N);
    vt_tensor *colt = NULL;
    if (!pointwise) {
        colt = vt_empty(VT_F32, VT_CPU, 2, (int64_t[]){nt * K, L});  // one col buffer per thread
        if (!colt) return vt_error_code();
    }
    vt_blas_serial();
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t s = 0; s < p->N; s++) {
        const float *xs = x + s * xsz;
        float *ys = y + s * O * L;
        const float *col = xs;
        if (!pointwise) {
            float *ct = vt_f32(colt) + (int64_t)omp_get_thread_num() * K * L;
            im2col(p, xs, ct, L);
            col = ct;
        }
        if (pb)
            for (int64_t o = 0; o < O; o++)
                for (int64_t l = 0; l < L; l++) ys[o * L + l] = pb[o];
        vt_sgemm(0, 0, O, L, K, 1.0f, w, K, col, L, pb ? 1.0f : 0.0f, ys, L);
    }
    vt_release(colt);
    return VT_OK;
}

// g [N, O, OH, OW] = [N, O, L]; saved x [N, C, H, W], w [O, K]
// dx_n = col2im(w^T [K, O] @ g_n [O, L]);  dw = sum_n g_n [O, L] @ col(x_n)^T [L, K];
// db[o] = sum_{n, l} g[n, o, l]. Batched (G > 1): the same with g_n and col(x_n) of a group of
// samples side by side, [O, G*L] and [K, G*L] (dw sums the group inside one GEMM).
static vt_err conv_backward_cpu(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const conv_params *p = (const conv_params *)n->params;
    const vt_tensor *xt = n->saved[0], *wt = n->saved[1];
    const int64_t K = conv_k(p), L = conv_l(p), O = p->O, xsz = p->C * p->H * p->W;
    const float *g = vt_f32(gout), *x = vt_f32(xt), *w = vt_f32(wt);
    const int pointwise = conv_is_pointwise(p);
    const int nt = conv_sample_threads(p->N);
    const int64_t G = conv_group(p);
    vt_tensor *colt = NULL, *gt = NULL;
    vt_err e = VT_OK;
    if (n->need[0]) {
        gin[0] = vt_zeros(VT_F32, VT_CPU, n->in_ndim[0], n->in_shape[0]);
        if (!gin[0]) return vt_error_code();
    }
    if (n->need[1]) {
        gin[1] = vt_empty(VT_F32, VT_CPU, n->in_ndim[1], n->in_shape[1]);
        if (!gin[1]) return vt_error_code();
    }
    if (G > 1 && (n->need[0] || n->need[1])) {
        colt = vt_empty(VT_F32, VT_CPU, 2, (int64_t[]){K, G * L});
        gt = vt_empty(VT_F32, VT_CPU, 2, (int64_t[]){O, G * L});
        if (!colt || !gt) { e = vt_error_code(); goto done; }
        for (int64_t s0 = 0; s0 < p->N; s0 += G) {
            const int64_t gs = p->N - s0 < G ? p->N - s0 : G;
            group_gather(g + s0 * O * L, vt_f32(gt), gs, O, L);
            if (n->need[1]) {  // dw (+)= gt [O, gs*L] @ col^T [gs*L, K]
                im2col_group(p, x + s0 * xsz, gs, vt_f32(colt));
                vt_sgemm(0, 1, O, K, gs * L, 1.0f, vt_f32(gt), gs * L, vt_f32(colt), gs * L, s0 ? 1.0f : 0.0f,
                         vt_f32(gin[1]), K);
            }
            if (n->need[0]) {  // col [K, gs*L] = w^T @ gt, then each sample's block back to its pixels
                vt_sgemm(1, 0, K, gs * L, O, 1.0f, w, K, vt_f32(gt), gs * L, 0.0f, vt_f32(colt), gs * L);
                col2im_group(p, vt_f32(colt), gs, vt_f32(gin[0]) + s0 * xsz);
            }
        }
    } else {
        if (!pointwise && (n->need[0] || n->need[1])) {
            colt = vt_empty(VT_F32, VT_CPU, 2, (int64_t[]){(n->need[0] ? nt : 1) * K, L});
            if (!colt) return vt_error_code();
        }
        // dw sums over samples in sample order: one by one, each GEMM split over the team
        for (int64_t s = 0; n->need[1] && s < p->N; s++) {
            const float *gs = g + s * O * L, *xs = x + s * xsz;
            const float *col = xs;
            if (!pointwise) {
                im2col(p, xs, vt_f32(colt), L);
                col = vt_f32(colt);
            }
            vt_sgemm(0, 1, O, K, L, 1.0f, gs, L, col, L, s ? 1.0f : 0.0f, vt_f32(gin[1]), K);
        }
        // dx: samples are independent
        if (n->need[0]) {
            vt_blas_serial();
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
            for (int64_t s = 0; s < p->N; s++) {
                const float *gs = g + s * O * L;
                float *dxs = vt_f32(gin[0]) + s * xsz;
                if (pointwise) {
                    vt_sgemm(1, 0, K, L, O, 1.0f, w, K, gs, L, 0.0f, dxs, L);
                } else {
                    float *ct = vt_f32(colt) + (int64_t)omp_get_thread_num() * K * L;
                    vt_sgemm(1, 0, K, L, O, 1.0f, w, K, gs, L, 0.0f, ct, L);
                    col2im(p, ct, L, dxs);
                }
            }
        }
    }
    if (n->need[1] && p->N == 0) memset(vt_f32(gin[1]), 0, vt_nbytes(gin[1]));
    if (n->need[2]) {
        gin[2] = vt_empty(VT_F32, VT_CPU, 1, (int64_t[]){O});
        if (!gin[2]) { e = vt_error_code(); goto done; }
        float *db = vt_f32(gin[2]);
#pragma omp parallel for if (p->N * O * L > 65536)
        for (int64_t o = 0; o < O; o++) {
            double acc = 0;
            for (int64_t s = 0; s < p->N; s++) {
                const float *gr = g + (s * O + o) * L;
                for (int64_t l = 0; l < L; l++) acc += gr[l];
            }
            db[o] = (float)acc;
        }
    }
done:
    vt_release(colt);
    vt_release(gt);
    return e;
}

// Saves x and w (w is a frozen weight view: no copy); the bias is not needed backward.
static const vt_op op_conv2d = {"conv2d", {conv_forward_cpu, NULL}, {conv_backward_cpu, NULL}, 0x3, 0};
static const vt_op op_conv_time = {"conv_time", {conv_forward_cpu, NULL}, {conv_backward_cpu, NULL}, 0x3, 0};

static int conv_check_bias(const char *name, const vt_tensor *b, const vt_tensor *w) {
    if (!b) return 0;
    if (vt_check_f32(name, b)) return 1;
    if (b->ndim != 1 || b->shape[0] != w->shape[0]) {
        char s1[VT_SHAPE_BUF], s2[VT_SHAPE_BUF];
        vt_error(VT_ERR_SHAPE, "%s: bias %s does not fit weight %s", name, vt_shape_str(b, s1, sizeof s1),
                 vt_shape_str(w, s2, sizeof s2));
        return 1;
    }
    return 0;
}

vt_tensor *vt_conv2d(vt_tensor *x, vt_tensor *w, vt_tensor *b, int stride, int pad) {
    if (!x || !w) return NULL;
    if (vt_check_f32("conv2d", x) || vt_check_f32("conv2d", w)) return NULL;
    char s1[VT_SHAPE_BUF], s2[VT_SHAPE_BUF];
    if (x->ndim != 4 || w->ndim != 4 || x->shape[1] != w->shape[1]) {
        vt_error(VT_ERR_SHAPE, "conv2d: input %s does not fit weight %s (x [N, C, H, W], w [O, C, kh, kw])",
                 vt_shape_str(x, s1, sizeof s1), vt_shape_str(w, s2, sizeof s2));
        return NULL;
    }
    if (conv_check_bias("conv2d", b, w)) return NULL;
    if (stride < 1 || pad < 0) {
        vt_error(VT_ERR_ARG, "conv2d: stride %d / pad %d invalid (stride >= 1, pad >= 0) for input %s", stride, pad,
                 vt_shape_str(x, s1, sizeof s1));
        return NULL;
    }
    conv_params p = {.N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3], .O = w->shape[0],
                     .kh = (int)w->shape[2], .kw = (int)w->shape[3], .sh = stride, .sw = stride, .ph = pad, .pw = pad};
    int64_t eh = p.H + 2 * pad - p.kh, ew = p.W + 2 * pad - p.kw;
    if (eh < 0 || ew < 0 || p.kh < 1 || p.kw < 1) {
        vt_error(VT_ERR_SHAPE, "conv2d: kernel of weight %s larger than input %s padded by %d",
                 vt_shape_str(w, s2, sizeof s2), vt_shape_str(x, s1, sizeof s1), pad);
        return NULL;
    }
    p.OH = eh / stride + 1;
    p.OW = ew / stride + 1;
    vt_tensor *in[3] = {x, w, b};
    return vt_op_run(&op_conv2d, in, 3, &p, sizeof p, VT_F32, 4, (int64_t[]){p.N, p.O, p.OH, p.OW});
}

vt_tensor *vt_conv_time(vt_tensor *x, vt_tensor *w, vt_tensor *b, int pad) {
    if (!x || !w) return NULL;
    if (vt_check_f32("conv_time", x) || vt_check_f32("conv_time", w)) return NULL;
    char s1[VT_SHAPE_BUF], s2[VT_SHAPE_BUF];
    if (x->ndim != 5 || w->ndim != 5 || x->shape[1] != w->shape[1] || w->shape[3] != 1 || w->shape[4] != 1) {
        vt_error(VT_ERR_SHAPE, "conv_time: input %s does not fit weight %s (x [B, C, T, H, W], w [O, C, kt, 1, 1])",
                 vt_shape_str(x, s1, sizeof s1), vt_shape_str(w, s2, sizeof s2));
        return NULL;
    }
    if (conv_check_bias("conv_time", b, w)) return NULL;
    if (pad < 0) {
        vt_error(VT_ERR_ARG, "conv_time: pad %d < 0 for input %s", pad, vt_shape_str(x, s1, sizeof s1));
        return NULL;
    }
    int64_t T = x->shape[2], kt = w->shape[2], To = T + 2 * pad - kt + 1;
    if (kt < 1 || To < 1) {
        vt_error(VT_ERR_SHAPE, "conv_time: kernel of weight %s longer than %lld frames of input %s padded by %d",
                 vt_shape_str(w, s2, sizeof s2), (long long)T, vt_shape_str(x, s1, sizeof s1), pad);
        return NULL;
    }
    conv_params p = {.N = x->shape[0], .C = x->shape[1], .H = T, .W = x->shape[3] * x->shape[4], .O = w->shape[0],
                     .OH = To, .OW = x->shape[3] * x->shape[4], .kh = (int)kt, .kw = 1, .sh = 1, .sw = 1, .ph = pad,
                     .pw = 0};
    vt_tensor *in[3] = {x, w, b};
    return vt_op_run(&op_conv_time, in, 3, &p, sizeof p, VT_F32, 5,
                     (int64_t[]){p.N, p.O, To, x->shape[3], x->shape[4]});
}
