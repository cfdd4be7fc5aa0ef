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
//
// Optional input 3 is a residual r of the output's shape (vt_conv2d_add, vt_conv_time_add):
// y = w @ col + (b + r), r added where the bias is (preloaded into the GEMM's accumulator, or
// in the pass that scatters a batched / wide output), so a ResBlock's "skip + conv(h)" needs no
// add op (one output-sized tensor and one pass less); dr = g.
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
#pragma omp parallel for if (omp_get_level() == 0 && K * L > 65536)
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
#pragma omp parallel for if (omp_get_level() == 0 && conv_k(p) * L > 65536)
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

// y [G, O, L] = yt [O, G*L] (+ b broadcast over L) (+ r [G, O, L])
static void group_scatter_bias(const float *yt, const float *b, const float *r, float *y, int64_t G, int64_t O,
                               int64_t L) {
#pragma omp parallel for collapse(2) if (G * O * L > 65536)
    for (int64_t s = 0; s < G; s++)
        for (int64_t o = 0; o < O; o++) {
            const float *src = yt + o * G * L + s * L;
            float *dst = y + (s * O + o) * L;
            const float bo = b ? b[o] : 0.0f;
            if (r) {
                const float *rs = r + (s * O + o) * L;
                for (int64_t l = 0; l < L; l++) dst[l] = src[l] + bo + rs[l];
            } else {
                for (int64_t l = 0; l < L; l++) dst[l] = src[l] + bo;
            }
        }
}

// ---- stride-1 convolution as shifted GEMMs (large images) ----------------------------------
// With x zero-padded to xp [C, Hp*Wp (+ kw - 1)] (Hp = H + 2 ph, Wp = W + 2 pw), tap (i, j) of
// output pixel (oy, ox) reads xp[c, (oy + i) Wp + ox + j]. Over the "wide" output positions
// l = oy Wp + ox (ox < Wp; the last Wp - OW of each row are discarded), tap (i, j) is the matrix
// xp[:, i Wp + j ...] with xp's row stride: y_wide [O, OH*Wp] = sum_taps w_ij [O, C] @ xp_ij
// [C, OH*Wp]. kh*kw GEMMs of depth C instead of im2col's kh*kw copies of x and one GEMM that packs
// them all again; the backward adds w_ij^T g_wide into shifted views of a padded dx (no col2im).
// Not for few input channels (GEMMs of depth C) nor narrow images (the wide rows waste
// 2 pw / Wp of the work: at most 1/16 here); small images take the batched im2col path above.
// Measured (1 thread, 3x3): [1, 64, 64x64] -> 64 3.4 vs 4.6 ms (im2col), -> 3 0.34 vs 1.3 ms,
// [1, 128, 32x32] -> 128 3.5 vs 3.7 ms; at 16x16 (waste 1/9) 1.2 vs 0.85 ms, hence the width rule.
static int conv_use_shifted(const conv_params *p) {
    return p->sh == 1 && p->sw == 1 && !conv_is_pointwise(p) && p->C >= 16 &&
           (p->W + 2 * p->pw) >= 32 * (int64_t)p->pw;
}

typedef struct shifted_geom {
    int64_t Hp, Wp, ldp;  // padded image, its row stride (plane size + kw - 1: the last tap's view)
    int64_t Lw;           // wide output positions OH * Wp
    int taps;
} shifted_geom;

static shifted_geom shifted_geometry(const conv_params *p) {
    shifted_geom g;
    g.Hp = p->H + 2 * p->ph;
    g.Wp = p->W + 2 * p->pw;
    g.ldp = g.Hp * g.Wp + p->kw - 1;
    g.Lw = p->OH * g.Wp;
    g.taps = p->kh * p->kw;
    return g;
}

// w [O, C, kh, kw] -> wt [taps, O, C] (one [O, C] matrix per tap)
static void shifted_pack_weight(const conv_params *p, const float *w, float *wt) {
    const int taps = p->kh * p->kw;
#pragma omp parallel for if (p->O * p->C * taps > 65536)
    for (int64_t o = 0; o < p->O; o++)
        for (int64_t c = 0; c < p->C; c++)
            for (int t = 0; t < taps; t++) wt[((int64_t)t * p->O + o) * p->C + c] = w[(o * p->C + c) * taps + t];
}

// x [C, H, W] -> xp [C, ldp]: zero border of ph rows / pw columns, zero tail
static void shifted_pad(const conv_params *p, const shifted_geom *g, const float *x, float *xp) {
    for (int64_t c = 0; c < p->C; c++) {
        float *dc = xp + c * g->ldp;
        const float *xc = x + c * p->H * p->W;
        memset(dc, 0, (size_t)(p->ph * g->Wp) * sizeof(float));
        for (int64_t y = 0; y < p->H; y++) {
            float *d = dc + (y + p->ph) * g->Wp;
            for (int64_t k = 0; k < p->pw; k++) d[k] = d[p->pw + p->W + k] = 0.0f;
            memcpy(d + p->pw, xc + y * p->W, (size_t)p->W * sizeof(float));
        }
        memset(dc + (p->H + p->ph) * g->Wp, 0, (size_t)(g->ldp - (p->H + p->ph) * g->Wp) * sizeof(float));
    }
}

// One sample: y [O, OH, OW] = sum_taps wt_t @ xp_t (+ b) (+ r [O, OH, OW]), through yw [O, Lw]
static void shifted_forward(const conv_params *p, const shifted_geom *g, const float *wt, const float *x,
                            const float *b, const float *r, float *xp, float *yw, float *y) {
    shifted_pad(p, g, x, xp);
    for (int t = 0; t < g->taps; t++) {
        const int64_t off = (t / p->kw) * g->Wp + t % p->kw;
        vt_sgemm(0, 0, p->O, g->Lw, p->C, 1.0f, wt + (int64_t)t * p->O * p->C, p->C, xp + off, g->ldp, t ? 1.0f : 0.0f,
                 yw, g->Lw);
    }
    for (int64_t o = 0; o < p->O; o++)
        for (int64_t oy = 0; oy < p->OH; oy++) {
            const float *src = yw + o * g->Lw + oy * g->Wp;
            float *dst = y + (o * p->OH + oy) * p->OW;
            const float bo = b ? b[o] : 0.0f;
            if (r) {
                const float *rs = r + (o * p->OH + oy) * p->OW;
                for (int64_t ox = 0; ox < p->OW; ox++) dst[ox] = src[ox] + bo + rs[ox];
            } else {
                for (int64_t ox = 0; ox < p->OW; ox++) dst[ox] = src[ox] + bo;
            }
        }
}

// g [O, OH, OW] -> gw [O, Lw]: each row widened to Wp with zeros (the wide positions that are
// no output must contribute nothing)
static void shifted_widen(const conv_params *p, const shifted_geom *g, const float *gs, float *gw) {
    for (int64_t o = 0; o < p->O; o++)
        for (int64_t oy = 0; oy < p->OH; oy++) {
            float *d = gw + o * g->Lw + oy * g->Wp;
            memcpy(d, gs + (o * p->OH + oy) * p->OW, (size_t)p->OW * sizeof(float));
            for (int64_t ox = p->OW; ox < g->Wp; ox++) d[ox] = 0.0f;
        }
}

// One sample's dx [C, H, W] from gw: dxp [C, ldp] = sum_taps (shifted) wt_t^T @ gw, then cropped
static void shifted_backward_x(const conv_params *p, const shifted_geom *g, const float *wt, const float *gw,
                               float *dxp, float *dx) {
    memset(dxp, 0, (size_t)(p->C * g->ldp) * sizeof(float));
    for (int t = 0; t < g->taps; t++) {
        const int64_t off = (t / p->kw) * g->Wp + t % p->kw;
        vt_sgemm(1, 0, p->C, g->Lw, p->O, 1.0f, wt + (int64_t)t * p->O * p->C, p->C, gw, g->Lw, 1.0f, dxp + off, g->ldp);
    }
    for (int64_t c = 0; c < p->C; c++)
        for (int64_t y = 0; y < p->H; y++)
            memcpy(dx + (c * p->H + y) * p->W, dxp + c * g->ldp + (y + p->ph) * g->Wp + p->pw, (size_t)p->W * sizeof(float));
}

// ---- per-sample items (vt_parallel_items: samples over threads, or one by one with each
// GEMM split over the team) ---------------------------------------------------------------
typedef struct conv_items {
    const conv_params *p;
    const shifted_geom *sg;
    const float *x, *w, *b, *r, *g;  // w: [O, K] or the shifted path's per-tap pack; r: residual
    float *y, *scratch;          // y: output or dx; scratch: per-thread block of `per` floats
    int64_t per;
} conv_items;

// y_s = w @ col(x_s) (+ b) (+ r_s)
static void conv_item_forward(void *ctx, int64_t s, int thread) {
    const conv_items *c = ctx;
    const conv_params *p = c->p;
    const int64_t K = conv_k(p), L = conv_l(p), O = p->O;
    const float *xs = c->x + s * p->C * p->H * p->W, *col = xs;
    float *ys = c->y + s * O * L;
    if (!conv_is_pointwise(p)) {
        float *ct = c->scratch + thread * c->per;
        im2col(p, xs, ct, L);
        col = ct;
    }
    const float *rs = c->r ? c->r + s * O * L : NULL;
    if (c->b || rs)
        for (int64_t o = 0; o < O; o++) {
            const float bo = c->b ? c->b[o] : 0.0f;
            for (int64_t l = 0; l < L; l++) ys[o * L + l] = rs ? bo + rs[o * L + l] : bo;
        }
    vt_sgemm(0, 0, O, L, K, 1.0f, c->w, K, col, L, c->b || rs ? 1.0f : 0.0f, ys, L);
}

// dx_s = col2im(w^T @ g_s)
static void conv_item_backward_x(void *ctx, int64_t s, int thread) {
    const conv_items *c = ctx;
    const conv_params *p = c->p;
    const int64_t K = conv_k(p), L = conv_l(p), O = p->O;
    const float *gs = c->g + s * O * L;
    float *dxs = c->y + s * p->C * p->H * p->W;
    if (conv_is_pointwise(p)) {
        vt_sgemm(1, 0, K, L, O, 1.0f, c->w, K, gs, L, 0.0f, dxs, L);
    } else {
        float *ct = c->scratch + thread * c->per;
        vt_sgemm(1, 0, K, L, O, 1.0f, c->w, K, gs, L, 0.0f, ct, L);
        col2im(p, ct, L, dxs);
    }
}

static void conv_item_shifted_forward(void *ctx, int64_t s, int thread) {
    const conv_items *c = ctx;
    const conv_params *p = c->p;
    float *xp = c->scratch + thread * c->per;
    shifted_forward(p, c->sg, c->w, c->x + s * p->C * p->H * p->W, c->b, c->r ? c->r + s * p->O * conv_l(p) : NULL,
                    xp, xp + p->C * c->sg->ldp,
                    c->y + s * p->O * conv_l(p));
}

static void conv_item_shifted_backward_x(void *ctx, int64_t s, int thread) {
    const conv_items *c = ctx;
    const conv_params *p = c->p;
    float *dxp = c->scratch + thread * c->per, *gw = dxp + p->C * c->sg->ldp;
    shifted_widen(p, c->sg, c->g + s * p->O * conv_l(p), gw);
    shifted_backward_x(p, c->sg, c->w, gw, dxp, c->y + s * p->C * p->H * p->W);
}

// x [N, C, H, W], w [O, C, kh, kw] = [O, K], b [O] or NULL, r [N, O, OH, OW] or NULL -> y [N, O, OH, OW]
// y_n [O, L] = w [O, K] @ col(x_n) [K, L] (+ b broadcast over L) (+ r_n); batched: for a group of G
// samples, yt [O, G*L] = w @ [col(x_s0) | col(x_s1) | ...], then scattered to y.
static vt_err conv_forward_f32(const conv_params *p, const float *x, const float *w, const float *pb, const float *pr,
                               float *y) {
    const int64_t K = conv_k(p), L = conv_l(p), O = p->O, xsz = p->C * p->H * p->W;
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
            group_scatter_bias(vt_f32(yt), pb, pr ? pr + s0 * O * L : NULL, y + s0 * O * L, g, O, L);
        }
        vt_release(colt);
        vt_release(yt);
        return VT_OK;
    }
    const int pointwise = conv_is_pointwise(p);
    const int nt = conv_sample_threads(p->N);
    if (conv_use_shifted(p)) {
        const shifted_geom sg = shifted_geometry(p);
        const int64_t per = p->C * sg.ldp + O * sg.Lw;  // xp + yw per thread
        vt_tensor *wt = vt_empty(VT_F32, VT_CPU, 1, (int64_t[]){(int64_t)sg.taps * O * p->C});
        vt_tensor *scr = vt_empty(VT_F32, VT_CPU, 1, (int64_t[]){nt * per});
        if (!wt || !scr) {
            vt_release(wt);
            vt_release(scr);
            return vt_error_code();
        }
        shifted_pack_weight(p, w, vt_f32(wt));
        vt_blas_serial();
        conv_items c = {p, &sg, x, vt_f32(wt), pb, pr, NULL, y, vt_f32(scr), per};
        vt_parallel_items(p->N, nt, conv_item_shifted_forward, &c);
        vt_release(wt);
        vt_release(scr);
        return VT_OK;
    }
    vt_tensor *colt = NULL;
    if (!pointwise) {
        colt = vt_empty(VT_F32, VT_CPU, 2, (int64_t[]){nt * K, L});  // one col buffer per thread
        if (!colt) return vt_error_code();
    }
    vt_blas_serial();
    conv_items c = {p, NULL, x, w, pb, pr, NULL, y, colt ? vt_f32(colt) : NULL, K * L};
    vt_parallel_items(p->N, nt, conv_item_forward, &c);
    vt_release(colt);
    return VT_OK;
}

// Every path (batched, shifted, per sample) runs on f32 operands: a bf16 / f16 w enters as its
// exact f32 copy with x rounded to its dtype (vt_gemm_operands, ops.h's "low-precision weights").
static vt_err conv_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const vt_tensor *b = in[2], *r = in[3];
    vt_gemm_operands op;
    if (vt_gemm_operands_get(&op, in[0], in[1])) return vt_error_code();
    vt_err e = conv_forward_f32((const conv_params *)n->params, op.a, op.w, b ? vt_f32(b) : NULL, r ? vt_f32(r) : NULL,
                                vt_f32(out));
    vt_gemm_operands_release(&op);
    return e;
}

// g [N, O, OH, OW] = [N, O, L]; saved x [N, C, H, W], w [O, K]
// dx_n = col2im(w^T [K, O] @ g_n [O, L]);  dw = sum_n g_n [O, L] @ col(x_n)^T [L, K];
// db[o] = sum_{n, l} g[n, o, l];  dr = g. Batched (G > 1): the same with g_n and col(x_n) of a group of
// samples side by side, [O, G*L] and [K, G*L] (dw sums the group inside one GEMM).
// g: what the GEMMs read (rounded to a bf16 / f16 w's dtype, see conv_backward_cpu); gout: the
// output gradient itself (db, dr).
static vt_err conv_backward_f32(vt_node *n, const vt_tensor *gout, const float *g, const float *w, vt_tensor **gin) {
    const conv_params *p = (const conv_params *)n->params;
    const vt_tensor *xt = n->saved[0];  // NULL unless dw needs it (conv_saved_needed)
    const int64_t K = conv_k(p), L = conv_l(p), O = p->O, xsz = p->C * p->H * p->W;
    const float *x = xt ? vt_f32(xt) : NULL;
    const int pointwise = conv_is_pointwise(p);
    const int nt = conv_sample_threads(p->N);
    const int64_t G = conv_group(p);
    vt_tensor *colt = NULL, *gt = NULL;
    vt_err e = VT_OK;
    if (n->need[0]) {  // the shifted path writes every element; the others accumulate into zeros
        gin[0] = G == 1 && conv_use_shifted(p) ? vt_empty(VT_F32, VT_CPU, n->in_ndim[0], n->in_shape[0])
                                               : vt_zeros(VT_F32, VT_CPU, n->in_ndim[0], n->in_shape[0]);
        if (!gin[0]) return vt_error_code();
    }
    if (n->need[1]) {
        gin[1] = vt_empty(VT_F32, VT_CPU, n->in_ndim[1], n->in_shape[1]);
        if (!gin[1]) return vt_error_code();
    }
    if (n->need[3]) {
        gin[3] = vt_clone(gout);
        if (!gin[3]) return vt_error_code();
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
    } else if (conv_use_shifted(p) && (n->need[0] || n->need[1])) {
        const shifted_geom sg = shifted_geometry(p);
        const int64_t per = p->C * sg.ldp + O * sg.Lw;  // xp or dxp, + gw, per thread
        vt_tensor *wt = vt_empty(VT_F32, VT_CPU, 1, (int64_t[]){(int64_t)sg.taps * O * p->C});
        gt = vt_empty(VT_F32, VT_CPU, 1, (int64_t[]){(n->need[0] ? nt : 1) * per});
        if (!wt || !gt) {
            vt_release(wt);
            e = vt_error_code();
            goto done;
        }
        // dw: per tap dw_t [O, C] = sum_n gw_n @ xp_n,t^T, samples in order (each GEMM split over
        // the team), then unpacked to [O, C, kh, kw] (wt is the scratch for dw_t)
        for (int64_t s = 0; n->need[1] && s < p->N; s++) {
            float *xp = vt_f32(gt), *gw = xp + p->C * sg.ldp;
            shifted_pad(p, &sg, x + s * xsz, xp);
            shifted_widen(p, &sg, g + s * O * L, gw);
            for (int t = 0; t < sg.taps; t++) {
                const int64_t off = (t / p->kw) * sg.Wp + t % p->kw;
                vt_sgemm(0, 1, O, p->C, sg.Lw, 1.0f, gw, sg.Lw, xp + off, sg.ldp, s ? 1.0f : 0.0f,
                         vt_f32(wt) + (int64_t)t * O * p->C, p->C);
            }
        }
        if (n->need[1]) {
            float *dw = vt_f32(gin[1]);
            const float *dwt = vt_f32(wt);
            if (p->N == 0) memset(vt_f32(wt), 0, vt_nbytes(wt));
            for (int64_t o = 0; o < O; o++)
                for (int64_t c = 0; c < p->C; c++)
                    for (int t = 0; t < sg.taps; t++) dw[(o * p->C + c) * sg.taps + t] = dwt[((int64_t)t * O + o) * p->C + c];
        }
        if (n->need[0]) {
            shifted_pack_weight(p, w, vt_f32(wt));
            vt_blas_serial();
            conv_items c = {p, &sg, NULL, vt_f32(wt), NULL, NULL, g, vt_f32(gin[0]), vt_f32(gt), per};
            vt_parallel_items(p->N, nt, conv_item_shifted_backward_x, &c);
        }
        vt_release(wt);
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
            conv_items c = {p, NULL, NULL, w, NULL, NULL, g, vt_f32(gin[0]), colt ? vt_f32(colt) : NULL, K * L};
            vt_parallel_items(p->N, nt, conv_item_backward_x, &c);
        }
    }
    if (n->need[1] && p->N == 0) memset(vt_f32(gin[1]), 0, vt_nbytes(gin[1]));
    if (n->need[2]) {
        gin[2] = vt_empty(VT_F32, VT_CPU, 1, (int64_t[]){O});
        if (!gin[2]) { e = vt_error_code(); goto done; }
        float *db = vt_f32(gin[2]);
        const float *g0 = vt_f32(gout);
#pragma omp parallel for if (p->N * O * L > 65536)
        for (int64_t o = 0; o < O; o++) {
            double acc = 0;
            for (int64_t s = 0; s < p->N; s++) {
                const float *gr = g0 + (s * O + o) * L;
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

// A bf16 / f16 w is frozen (no dw): its only GEMM is dx, which reads g rounded to w's dtype and w
// widened (vt_gemm_operands), the same f32 paths as an f32 w. db and dr read the unrounded g.
static vt_err conv_backward_cpu(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    vt_gemm_operands op = {vt_f32(gout), NULL, NULL, NULL};  // no GEMM (only db / dr): nothing to convert
    if ((n->need[0] || n->need[1]) && vt_gemm_operands_get(&op, gout, n->saved[1])) return vt_error_code();
    vt_err e = conv_backward_f32(n, gout, op.a, op.w, gin);
    vt_gemm_operands_release(&op);
    return e;
}

// Saves w (a frozen weight view: no copy; a bf16 / f16 w as it is, the backward widens it) and
// x only when dw is wanted (x is read backward by dw alone: with a frozen w, the usual case, the
// tape does not hold the input); the bias and the residual are not needed backward.
static unsigned conv_saved_needed(const vt_node *n) { return n->need[1] ? 0x3u : 0x2u; }

static const vt_op op_conv2d = {"conv2d", {conv_forward_cpu, NULL}, {conv_backward_cpu, NULL}, 0x3, 0,
                                conv_saved_needed};
static const vt_op op_conv_time = {"conv_time", {conv_forward_cpu, NULL}, {conv_backward_cpu, NULL}, 0x3, 0,
                                   conv_saved_needed};

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

// The residual of vt_conv2d_add / vt_conv_time_add: f32 with exactly the output's shape.
static int conv_check_residual(const char *name, const vt_tensor *r, int ndim, const int64_t *shape) {
    if (!r) return 0;
    if (vt_check_f32(name, r)) return 1;
    int ok = r->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = r->shape[i] == shape[i];
    if (!ok) {
        char s1[VT_SHAPE_BUF], s2[VT_SHAPE_BUF];
        vt_error(VT_ERR_SHAPE, "%s: residual %s does not fit the output %s", name, vt_shape_str(r, s1, sizeof s1),
                 vt_shape_str_raw(ndim, shape, s2, sizeof s2));
        return 1;
    }
    return 0;
}

// conv2d (+ residual r when not NULL); errors name the entry point
static vt_tensor *conv2d_run(const char *name, vt_tensor *x, vt_tensor *w, vt_tensor *b, int stride, int pad,
                             vt_tensor *r) {
    if (!x || !w) return NULL;
    if (vt_check_f32(name, x) || vt_check_gemm_weight(name, w)) return NULL;
    char s1[VT_SHAPE_BUF], s2[VT_SHAPE_BUF];
    if (x->ndim != 4 || w->ndim != 4 || x->shape[1] != w->shape[1]) {
        vt_error(VT_ERR_SHAPE, "%s: input %s does not fit weight %s (x [N, C, H, W], w [O, C, kh, kw])", name,
                 vt_shape_str(x, s1, sizeof s1), vt_shape_str(w, s2, sizeof s2));
        return NULL;
    }
    if (conv_check_bias(name, b, w)) return NULL;
    if (stride < 1 || pad < 0) {
        vt_error(VT_ERR_ARG, "%s: stride %d / pad %d invalid (stride >= 1, pad >= 0) for input %s", name, stride, pad,
                 vt_shape_str(x, s1, sizeof s1));
        return NULL;
    }
    conv_params p = {.N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3], .O = w->shape[0],
                     .kh = (int)w->shape[2], .kw = (int)w->shape[3], .sh = stride, .sw = stride, .ph = pad, .pw = pad};
    int64_t eh = p.H + 2 * pad - p.kh, ew = p.W + 2 * pad - p.kw;
    if (eh < 0 || ew < 0 || p.kh < 1 || p.kw < 1) {
        vt_error(VT_ERR_SHAPE, "%s: kernel of weight %s larger than input %s padded by %d", name,
                 vt_shape_str(w, s2, sizeof s2), vt_shape_str(x, s1, sizeof s1), pad);
        return NULL;
    }
    p.OH = eh / stride + 1;
    p.OW = ew / stride + 1;
    const int64_t oshape[4] = {p.N, p.O, p.OH, p.OW};
    if (conv_check_residual(name, r, 4, oshape)) return NULL;
    vt_tensor *in[4] = {x, w, b, r};
    return vt_op_run(&op_conv2d, in, 4, &p, sizeof p, VT_F32, 4, oshape);
}

vt_tensor *vt_conv2d(vt_tensor *x, vt_tensor *w, vt_tensor *b, int stride, int pad) {
    return conv2d_run("conv2d", x, w, b, stride, pad, NULL);
}

vt_tensor *vt_conv2d_add(vt_tensor *x, vt_tensor *w, vt_tensor *b, int stride, int pad, vt_tensor *r) {
    return r ? conv2d_run("conv2d_add", x, w, b, stride, pad, r) : NULL;
}

// conv_time (+ residual r when not NULL); errors name the entry point
static vt_tensor *conv_time_run(const char *name, vt_tensor *x, vt_tensor *w, vt_tensor *b, int pad, vt_tensor *r) {
    if (!x || !w) return NULL;
    if (vt_check_f32(name, x) || vt_check_gemm_weight(name, w)) return NULL;
    char s1[VT_SHAPE_BUF], s2[VT_SHAPE_BUF];
    if (x->ndim != 5 || w->ndim != 5 || x->shape[1] != w->shape[1] || w->shape[3] != 1 || w->shape[4] != 1) {
        vt_error(VT_ERR_SHAPE, "%s: input %s does not fit weight %s (x [B, C, T, H, W], w [O, C, kt, 1, 1])", name,
                 vt_shape_str(x, s1, sizeof s1), vt_shape_str(w, s2, sizeof s2));
        return NULL;
    }
    if (conv_check_bias(name, b, w)) return NULL;
    if (pad < 0) {
        vt_error(VT_ERR_ARG, "%s: pad %d < 0 for input %s", name, pad, vt_shape_str(x, s1, sizeof s1));
        return NULL;
    }
    int64_t T = x->shape[2], kt = w->shape[2], To = T + 2 * pad - kt + 1;
    if (kt < 1 || To < 1) {
        vt_error(VT_ERR_SHAPE, "%s: kernel of weight %s longer than %lld frames of input %s padded by %d", name,
                 vt_shape_str(w, s2, sizeof s2), (long long)T, vt_shape_str(x, s1, sizeof s1), pad);
        return NULL;
    }
    conv_params p = {.N = x->shape[0], .C = x->shape[1], .H = T, .W = x->shape[3] * x->shape[4], .O = w->shape[0],
                     .OH = To, .OW = x->shape[3] * x->shape[4], .kh = (int)kt, .kw = 1, .sh = 1, .sw = 1, .ph = pad,
                     .pw = 0};
    const int64_t oshape[5] = {p.N, p.O, To, x->shape[3], x->shape[4]};
    if (conv_check_residual(name, r, 5, oshape)) return NULL;
    vt_tensor *in[4] = {x, w, b, r};
    return vt_op_run(&op_conv_time, in, 4, &p, sizeof p, VT_F32, 5, oshape);
}

vt_tensor *vt_conv_time(vt_tensor *x, vt_tensor *w, vt_tensor *b, int pad) {
    return conv_time_run("conv_time", x, w, b, pad, NULL);
}

vt_tensor *vt_conv_time_add(vt_tensor *x, vt_tensor *w, vt_tensor *b, int pad, vt_tensor *r) {
    return r ? conv_time_run("conv_time_add", x, w, b, pad, r) : NULL;
}
