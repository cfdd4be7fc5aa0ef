// image.c — reward preprocessing: per-channel normalisation and cosine similarity.
// CPU reference kernels (resize is in resize.c).
#include "ops_internal.h"
#include "params.h"
#include <math.h>
#include <string.h>

// ---- normalize_channels ------------------------------------------------------------------
// x [N, C, H, W]: y = (x - mean[c]) / std[c] (torchvision Normalize); dx = g / std[c].
#define NORM_MAX_C VT_NORMALIZE_MAX_C
typedef vt_normalize_params normalize_params;

static vt_err normalize_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const normalize_params *p = (const normalize_params *)n->params;
    const vt_tensor *x = in[0];
    const int64_t N = x->shape[0], C = p->C, HW = x->shape[2] * x->shape[3];
    const float *xs = vt_f32(x);
    float *y = vt_f32(out);
#pragma omp parallel for collapse(2) if (x->numel > 65536)
    for (int64_t b = 0; b < N; b++)
        for (int64_t c = 0; c < C; c++) {
            const float m = p->mean[c], s = p->std[c];
            const float *xr = xs + (b * C + c) * HW;
            float *yr = y + (b * C + c) * HW;
            for (int64_t i = 0; i < HW; i++) yr[i] = (xr[i] - m) / s;
        }
    return VT_OK;
}

static vt_err normalize_backward_cpu(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const normalize_params *p = (const normalize_params *)n->params;
    if (!n->need[0]) return VT_OK;
    gin[0] = vt_empty(VT_F32, VT_CPU, gout->ndim, gout->shape);
    if (!gin[0]) return vt_error_code();
    const int64_t N = gout->shape[0], C = p->C, HW = gout->shape[2] * gout->shape[3];
    const float *g = vt_f32(gout);
    float *d = vt_f32(gin[0]);
    for (int64_t b = 0; b < N; b++)
        for (int64_t c = 0; c < C; c++) {
            const float s = p->std[c];
            for (int64_t i = 0; i < HW; i++) d[(b * C + c) * HW + i] = g[(b * C + c) * HW + i] / s;
        }
    return VT_OK;
}

static const vt_op op_normalize_channels = {
    "normalize_channels", {normalize_forward_cpu, NULL}, {normalize_backward_cpu, NULL}, 0, 0, NULL};

vt_tensor *vt_normalize_channels(vt_tensor *x, const float *mean, const float *std) {
    if (!x) return NULL;
    if (vt_check_f32("normalize_channels", x)) return NULL;
    char s[VT_SHAPE_BUF];
    if (x->ndim != 4 || x->shape[1] < 1 || x->shape[1] > NORM_MAX_C) {
        vt_error(VT_ERR_SHAPE, "normalize_channels: input %s, expected [N, C, H, W] with 1 <= C <= %d",
                 vt_shape_str(x, s, sizeof s), NORM_MAX_C);
        return NULL;
    }
    if (!mean || !std) {
        vt_error(VT_ERR_ARG, "normalize_channels: mean / std arrays are NULL");
        return NULL;
    }
    normalize_params p;
    memset(&p, 0, sizeof p);
    p.C = (int)x->shape[1];
    for (int c = 0; c < p.C; c++) {
        if (std[c] == 0.0f) {
            vt_error(VT_ERR_ARG, "normalize_channels: std[%d] is 0 for input %s", c, vt_shape_str(x, s, sizeof s));
            return NULL;
        }
        p.mean[c] = mean[c];
        p.std[c] = std[c];
    }
    return vt_op_run(&op_normalize_channels, &x, 1, &p, sizeof p, VT_F32, 4, x->shape);
}

// ---- cosine_similarity -------------------------------------------------------------------
// a, b [M, D] (leading dims flattened) -> [M], torch's current definition:
//   cos = sum_i (a_i / na) (b_i / nb),  na = max(||a||, eps), nb = max(||b||, eps)
// (each norm clamped on its own). torch clamps under no-grad, so the gradient treats na as
// ||a|| for its derivative (d na / d a = a / ||a||, 0 at a = 0) even when clamped:
//   da = g (b / (na nb) - cos / na * a / ||a||),  db symmetric.
typedef vt_cosine_params cosine_params;

// <x, x>, <y, y>, <x, y> of two rows of D floats, accumulated in double.
static void row_dots(const float *x, const float *y, int64_t D, double *xx, double *yy, double *xy) {
    double sxx = 0, syy = 0, sxy = 0;
    for (int64_t i = 0; i < D; i++) {
        sxx += (double)x[i] * x[i];
        syy += (double)y[i] * y[i];
        sxy += (double)x[i] * y[i];
    }
    *xx = sxx;
    *yy = syy;
    *xy = sxy;
}

static vt_err cosine_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const cosine_params *p = (const cosine_params *)n->params;
    const vt_tensor *a = in[0], *b = in[1];
    const int64_t D = vt_dim(a, -1), M = out->numel;
    const float *pa = vt_f32(a), *pb = vt_f32(b);
    float *o = vt_f32(out);
#pragma omp parallel for if (a->numel > 65536)
    for (int64_t m = 0; m < M; m++) {
        const float *x = pa + m * D, *y = pb + m * D;
        double xx, yy, xy;
        row_dots(x, y, D, &xx, &yy, &xy);
        double na = fmax(sqrt(xx), (double)p->eps), nb = fmax(sqrt(yy), (double)p->eps);
        o[m] = (float)(xy / (na * nb));
    }
    return VT_OK;
}

static vt_err cosine_backward_cpu(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const cosine_params *p = (const cosine_params *)n->params;
    const vt_tensor *a = n->saved[0], *b = n->saved[1];
    const int64_t D = vt_dim(a, -1), M = gout->numel;
    for (int i = 0; i < 2; i++) {
        if (!n->need[i]) continue;
        gin[i] = vt_empty(VT_F32, VT_CPU, n->in_ndim[i], n->in_shape[i]);
        if (!gin[i]) return vt_error_code();
    }
    const float *pa = vt_f32(a), *pb = vt_f32(b), *g = vt_f32(gout);
    float *da = gin[0] ? vt_f32(gin[0]) : NULL, *db = gin[1] ? vt_f32(gin[1]) : NULL;
    for (int64_t m = 0; m < M; m++) {
        const float *x = pa + m * D, *y = pb + m * D;
        double xx, yy, xy;
        row_dots(x, y, D, &xx, &yy, &xy);
        const double ra = sqrt(xx), rb = sqrt(yy);
        const double na = fmax(ra, (double)p->eps), nb = fmax(rb, (double)p->eps);
        const double cs = xy / (na * nb), gm = g[m];
        const double ka = ra > 0 ? cs / (na * ra) : 0, kb = rb > 0 ? cs / (nb * rb) : 0;
        if (da)
            for (int64_t i = 0; i < D; i++) da[m * D + i] = (float)(gm * (y[i] / (na * nb) - ka * x[i]));
        if (db)
            for (int64_t i = 0; i < D; i++) db[m * D + i] = (float)(gm * (x[i] / (na * nb) - kb * y[i]));
    }
    return VT_OK;
}

static const vt_op op_cosine_similarity = {
    "cosine_similarity", {cosine_forward_cpu, NULL}, {cosine_backward_cpu, NULL}, 0x3, 0, NULL};

vt_tensor *vt_cosine_similarity(vt_tensor *a, vt_tensor *b, float eps) {
    if (!a || !b) return NULL;
    if (vt_check_f32("cosine_similarity", a) || vt_check_f32("cosine_similarity", b)) return NULL;
    if (a->ndim < 1 || !vt_same_shape(a, b)) {
        char s1[VT_SHAPE_BUF], s2[VT_SHAPE_BUF];
        vt_error(VT_ERR_SHAPE, "cosine_similarity: a %s and b %s must have the same shape [..., D]",
                 vt_shape_str(a, s1, sizeof s1), vt_shape_str(b, s2, sizeof s2));
        return NULL;
    }
    cosine_params p = {eps};
    vt_tensor *in[2] = {a, b};
    return vt_op_run(&op_cosine_similarity, in, 2, &p, sizeof p, VT_F32, a->ndim - 1, a->shape);
}
