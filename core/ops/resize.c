// resize.c — bilinear / bicubic resize of [N, C, H, W] with the semantics of
// torch.nn.functional.interpolate(size=(oh, ow), align_corners=False), antialias off or on.
// CPU reference kernels.
//
// Every mode is separable: along one axis, output o is sum_k w[o][k] * x[idx[o][k]] with a
// fixed number of taps K per output (unused taps have weight 0). The 2-D resize applies the
// W-axis table then the H-axis table (torch's antialiased kernel works in this order too); an
// axis whose size does not change is skipped (all four tables are the identity then). The op
// is linear in x, so backward applies the transposed tables (scatter-add), H first then W.
//
// Tables (in = input size, out = output size, scale = in / out computed in float as torch):
//  bilinear:  src = max(scale (o + 0.5) - 0.5, 0); i0 = floor(src), l = src - i0;
//             taps i0 (1 - l) and min(i0 + 1, in - 1) (l).
//  bicubic:   src = scale (o + 0.5) - 0.5 (not clamped); i = floor(src), t = src - i;
//             taps i-1..i+2 clamped to [0, in-1] with Keys' cubic weights, a = -0.75.
//  antialias: center = scale (o + 0.5); support = r * max(scale, 1) (r = 1 bilinear,
//             2 bicubic); taps j in [int(center - support + 0.5), int(center + support + 0.5))
//             clipped to [0, in); w_j = f((j - center + 0.5) / max(scale, 1)) normalised to
//             sum 1, f = triangle (bilinear) or Keys' cubic with a = -0.5 (bicubic).
#include "ops_internal.h"
#include "params.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { RESIZE_BILINEAR = VT_RESIZE_BILINEAR, RESIZE_BICUBIC = VT_RESIZE_BICUBIC };

typedef vt_resize_params resize_params;
typedef vt_resize_table resize_table;  // one axis: out outputs, K taps each; idx/w are [out, K]

void vt_resize_table_free(resize_table *t) {
    free(t->idx);
    free(t->w);
    t->idx = NULL;
    t->w = NULL;
}

// Keys' cubic convolution kernel for |x| <= 1 and 1 < |x| < 2.
static inline float cubic1(float x, float a) { return ((a + 2) * x - (a + 3)) * x * x + 1; }
static inline float cubic2(float x, float a) { return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a; }

static inline float aa_filter(int mode, float x) {
    x = fabsf(x);
    if (mode == RESIZE_BILINEAR) return x < 1.0f ? 1.0f - x : 0.0f;
    if (x < 1.0f) return cubic1(x, -0.5f);
    if (x < 2.0f) return cubic2(x, -0.5f);
    return 0.0f;
}

vt_err vt_resize_table_build(resize_table *t, int64_t in, int64_t out, int mode, int antialias) {
    const float scale = (float)in / (float)out;
    const float radius = mode == RESIZE_BICUBIC ? 2.0f : 1.0f;
    const float support = scale >= 1.0f ? radius * scale : radius;
    int64_t K;
    if (antialias) K = (int64_t)ceilf(support) * 2 + 1;
    else K = mode == RESIZE_BICUBIC ? 4 : 2;
    t->out = out;
    t->K = K;
    t->idx = calloc((size_t)(out * K), sizeof(int64_t));
    t->w = calloc((size_t)(out * K), sizeof(float));
    if (!t->idx || !t->w) {
        vt_resize_table_free(t);
        return vt_error(VT_ERR_OOM, "resize: out of host memory for %lld x %lld weights", (long long)out,
                        (long long)K);
    }
    for (int64_t o = 0; o < out; o++) {
        int64_t *ix = t->idx + o * K;
        float *w = t->w + o * K;
        if (antialias) {
            const float center = (float)((double)scale * ((double)o + 0.5));
            const float invscale = scale >= 1.0f ? 1.0f / scale : 1.0f;
            int64_t lo = (int64_t)(center - support + 0.5f);
            if (lo < 0) lo = 0;
            int64_t hi = (int64_t)(center + support + 0.5f);
            if (hi > in) hi = in;
            int64_t n = hi - lo;
            if (n > K) n = K;  // cannot happen (K covers the support); guards the table
            float total = 0.0f;
            for (int64_t j = 0; j < n; j++) {
                ix[j] = lo + j;
                w[j] = aa_filter(mode, ((float)(j + lo) - center + 0.5f) * invscale);
                total += w[j];
            }
            if (total != 0.0f)
                for (int64_t j = 0; j < n; j++) w[j] /= total;
            for (int64_t j = n; j < K; j++) ix[j] = lo;  // weight 0
        } else if (mode == RESIZE_BILINEAR) {
            float src = scale * ((float)o + 0.5f) - 0.5f;
            if (src < 0) src = 0;
            int64_t i0 = (int64_t)src;
            if (i0 > in - 1) i0 = in - 1;
            float l = src - (float)i0;
            if (l > 1) l = 1;
            ix[0] = i0;
            ix[1] = i0 < in - 1 ? i0 + 1 : i0;
            w[0] = 1.0f - l;
            w[1] = l;
        } else {
            float src = scale * ((float)o + 0.5f) - 0.5f;
            float fl = floorf(src);
            int64_t i0 = (int64_t)fl;
            if (i0 > in - 1) i0 = in - 1;
            float tt = src - (float)i0;
            if (tt < 0) tt = 0;
            if (tt > 1) tt = 1;
            const float a = -0.75f;
            w[0] = cubic2(tt + 1.0f, a);
            w[1] = cubic1(tt, a);
            w[2] = cubic1(1.0f - tt, a);
            w[3] = cubic2(2.0f - tt, a);
            for (int k = 0; k < 4; k++) {
                int64_t j = i0 - 1 + k;
                ix[k] = j < 0 ? 0 : j > in - 1 ? in - 1 : j;
            }
        }
    }
    return VT_OK;
}

// Along the last axis: x [rows, in] -> y [rows, out], y[r, o] = sum_k w[o,k] x[r, idx[o,k]].
static void apply_w(const resize_table *t, int64_t rows, int64_t in, const float *x, float *y) {
    const int64_t out = t->out, K = t->K;
#pragma omp parallel for if (rows * out * K > 65536)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * in;
        float *yr = y + r * out;
        for (int64_t o = 0; o < out; o++) {
            const int64_t *ix = t->idx + o * K;
            const float *w = t->w + o * K;
            float s = 0.0f;
            for (int64_t k = 0; k < K; k++) s += w[k] * xr[ix[k]];
            yr[o] = s;
        }
    }
}

// Transpose of apply_w: g [rows, out] -> gx [rows, in] (zeroed here), scatter-add.
static void apply_w_t(const resize_table *t, int64_t rows, int64_t in, const float *g, float *gx) {
    const int64_t out = t->out, K = t->K;
#pragma omp parallel for if (rows * out * K > 65536)
    for (int64_t r = 0; r < rows; r++) {
        const float *gr = g + r * out;
        float *xr = gx + r * in;
        memset(xr, 0, (size_t)in * sizeof(float));
        for (int64_t o = 0; o < out; o++) {
            const int64_t *ix = t->idx + o * K;
            const float *w = t->w + o * K;
            for (int64_t k = 0; k < K; k++) xr[ix[k]] += w[k] * gr[o];
        }
    }
}

// Along the middle axis: x [planes, in, width] -> y [planes, out, width].
static void apply_h(const resize_table *t, int64_t planes, int64_t in, int64_t width, const float *x, float *y) {
    const int64_t out = t->out, K = t->K;
#pragma omp parallel for if (planes * out * K * width > 65536)
    for (int64_t p = 0; p < planes; p++) {
        const float *xp = x + p * in * width;
        for (int64_t o = 0; o < out; o++) {
            const int64_t *ix = t->idx + o * K;
            const float *w = t->w + o * K;
            float *yr = y + (p * out + o) * width;
            for (int64_t c = 0; c < width; c++) yr[c] = 0.0f;
            for (int64_t k = 0; k < K; k++) {
                const float wk = w[k];
                if (wk == 0.0f) continue;
                const float *xr = xp + ix[k] * width;
                for (int64_t c = 0; c < width; c++) yr[c] += wk * xr[c];
            }
        }
    }
}

// Transpose of apply_h: g [planes, out, width] -> gx [planes, in, width] (zeroed here).
static void apply_h_t(const resize_table *t, int64_t planes, int64_t in, int64_t width, const float *g, float *gx) {
    const int64_t out = t->out, K = t->K;
#pragma omp parallel for if (planes * out * K * width > 65536)
    for (int64_t p = 0; p < planes; p++) {
        float *xp = gx + p * in * width;
        memset(xp, 0, (size_t)(in * width) * sizeof(float));
        for (int64_t o = 0; o < out; o++) {
            const int64_t *ix = t->idx + o * K;
            const float *w = t->w + o * K;
            const float *gr = g + (p * out + o) * width;
            for (int64_t k = 0; k < K; k++) {
                const float wk = w[k];
                if (wk == 0.0f) continue;
                float *xr = xp + ix[k] * width;
                for (int64_t c = 0; c < width; c++) xr[c] += wk * gr[c];
            }
        }
    }
}

// Builds the tables of the axes that change (a table with idx == NULL is the identity).
static vt_err tables_build(const resize_params *p, int64_t H, int64_t W, resize_table *th, resize_table *tw) {
    memset(th, 0, sizeof *th);
    memset(tw, 0, sizeof *tw);
    if (W != p->ow && vt_resize_table_build(tw, W, p->ow, p->mode, p->antialias)) return vt_error_code();
    if (H != p->oh && vt_resize_table_build(th, H, p->oh, p->mode, p->antialias)) {
        vt_resize_table_free(tw);
        return vt_error_code();
    }
    return VT_OK;
}

// x [N, C, H, W] -> tmp [N*C, H, ow] (W axis) -> out [N*C, oh, ow] (H axis)
static vt_err resize_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const resize_params *p = (const resize_params *)n->params;
    const vt_tensor *x = in[0];
    const int64_t planes = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    resize_table th, tw;
    if (tables_build(p, H, W, &th, &tw)) return vt_error_code();
    vt_err e = VT_OK;
    float *tmp = NULL;
    const float *xs = vt_f32(x);
    float *y = vt_f32(out);
    if (tw.idx && th.idx) {
        tmp = malloc((size_t)(planes * H * p->ow) * sizeof(float));
        if (!tmp) {
            e = vt_error(VT_ERR_OOM, "resize: out of host memory");
            goto done;
        }
        apply_w(&tw, planes * H, W, xs, tmp);
        apply_h(&th, planes, H, p->ow, tmp, y);
    } else if (tw.idx) {
        apply_w(&tw, planes * H, W, xs, y);
    } else if (th.idx) {
        apply_h(&th, planes, H, W, xs, y);
    } else {
        memcpy(y, xs, vt_nbytes(x));
    }
done:
    free(tmp);
    vt_resize_table_free(&th);
    vt_resize_table_free(&tw);
    return e;
}

// gout [N*C, oh, ow] -> g_tmp [N*C, H, ow] (H^T) -> gx [N*C, H, W] (W^T)
static vt_err resize_backward_cpu(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const resize_params *p = (const resize_params *)n->params;
    if (!n->need[0]) return VT_OK;
    const int64_t *s = n->in_shape[0];
    const int64_t planes = s[0] * s[1], H = s[2], W = s[3];
    resize_table th, tw;
    if (tables_build(p, H, W, &th, &tw)) return vt_error_code();
    vt_err e = VT_OK;
    float *tmp = NULL;
    gin[0] = vt_empty(VT_F32, VT_CPU, 4, s);
    if (!gin[0]) {
        e = vt_error_code();
        goto done;
    }
    const float *g = vt_f32(gout);
    float *gx = vt_f32(gin[0]);
    if (tw.idx && th.idx) {
        tmp = malloc((size_t)(planes * H * p->ow) * sizeof(float));
        if (!tmp) {
            e = vt_error(VT_ERR_OOM, "resize: out of host memory");
            goto done;
        }
        apply_h_t(&th, planes, H, p->ow, g, tmp);
        apply_w_t(&tw, planes * H, W, tmp, gx);
    } else if (tw.idx) {
        apply_w_t(&tw, planes * H, W, g, gx);
    } else if (th.idx) {
        apply_h_t(&th, planes, H, W, g, gx);
    } else {
        memcpy(gx, g, vt_nbytes(gout));
    }
done:
    free(tmp);
    vt_resize_table_free(&th);
    vt_resize_table_free(&tw);
    return e;
}

// The tables depend only on shapes: nothing is saved.
static const vt_op op_resize_bilinear = {"resize_bilinear", {resize_forward_cpu, NULL}, {resize_backward_cpu, NULL}, 0, 0, NULL};
static const vt_op op_resize_bicubic = {"resize_bicubic", {resize_forward_cpu, NULL}, {resize_backward_cpu, NULL}, 0, 0, NULL};

static vt_tensor *resize(vt_tensor *x, int oh, int ow, int mode, int antialias) {
    const vt_op *op = mode == RESIZE_BICUBIC ? &op_resize_bicubic : &op_resize_bilinear;
    if (!x) return NULL;
    if (vt_check_f32(op->name, x)) return NULL;
    char b[VT_SHAPE_BUF];
    if (x->ndim != 4 || x->shape[2] < 1 || x->shape[3] < 1) {
        vt_error(VT_ERR_SHAPE, "%s: input %s, expected [N, C, H, W] with H, W >= 1", op->name,
                 vt_shape_str(x, b, sizeof b));
        return NULL;
    }
    if (oh < 1 || ow < 1) {
        vt_error(VT_ERR_SHAPE, "%s: output size %d x %d for input %s (must be >= 1)", op->name, oh, ow,
                 vt_shape_str(x, b, sizeof b));
        return NULL;
    }
    resize_params p = {oh, ow, mode, antialias ? 1 : 0};
    int64_t shape[4] = {x->shape[0], x->shape[1], oh, ow};
    return vt_op_run(op, &x, 1, &p, sizeof p, VT_F32, 4, shape);
}

vt_tensor *vt_resize_bilinear(vt_tensor *x, int oh, int ow, int antialias) {
    return resize(x, oh, ow, RESIZE_BILINEAR, antialias);
}
vt_tensor *vt_resize_bicubic(vt_tensor *x, int oh, int ow, int antialias) {
    return resize(x, oh, ow, RESIZE_BICUBIC, antialias);
}
