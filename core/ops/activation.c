// activation.c — silu, sigmoid, gelu (exact erf), quick_gelu, GEGLU and dropout. CPU
// reference kernels; every backward recomputes f'(x) from the saved input (dropout recomputes
// its mask from the seed and saves nothing).
#include "ops_internal.h"
#include "params.h"
#include "vmath.h"
#include <math.h>

// ---- scalar functions --------------------------------------------------------------------
// exp, the normal CDF and GELU come from vmath.h (branch-free, so the range kernels below
// vectorise; libm's expf / erff are scalar calls).
#define QUICK_GELU_K 1.702f  // OpenAI CLIP's constant

// ---- unary activations -------------------------------------------------------------------
enum { A_SILU = VT_ACT_SILU, A_SIGMOID = VT_ACT_SIGMOID, A_GELU = VT_ACT_GELU, A_QUICK_GELU = VT_ACT_QUICK_GELU };
typedef vt_act_params act_params;

// Each kind has its own loop (a switch inside the loop would keep it scalar).
// y = f(x): silu x s(x), sigmoid s(x), gelu x Phi(x), quick_gelu x s(k x)
VT_SIMD_CLONES static void act_forward_range(int kind, const float *x, float *y, int64_t n) {
    switch (kind) {
    case A_SILU:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * vt_sigmoidf(x[i]);
        break;
    case A_SIGMOID:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = vt_sigmoidf(x[i]);
        break;
    case A_GELU:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = vt_geluf(x[i]);
        break;
    case A_QUICK_GELU:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * vt_sigmoidf(QUICK_GELU_K * x[i]);
        break;
    }
}

// d = g f'(x): silu' = s (1 + x (1 - s)); sigmoid' = s (1 - s); gelu' = Phi + x phi;
// quick_gelu' = s + k x s (1 - s), s = sigmoid(k x)
VT_SIMD_CLONES static void act_backward_range(int kind, const float *g, const float *x, float *d, int64_t n) {
    switch (kind) {
    case A_SILU:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) d[i] = g[i] * vt_silu_gradf(x[i]);
        break;
    case A_SIGMOID:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            const float s = vt_sigmoidf(x[i]);
            d[i] = g[i] * (s * (1.0f - s));
        }
        break;
    case A_GELU:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) d[i] = g[i] * vt_gelu_gradf(x[i]);
        break;
    case A_QUICK_GELU:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            const float s = vt_sigmoidf(QUICK_GELU_K * x[i]);
            d[i] = g[i] * (s + QUICK_GELU_K * x[i] * s * (1.0f - s));
        }
        break;
    }
}

// Elementwise ops run over chunks of this many elements (one kernel call each; chunks are what
// the threads share).
#define ACT_CHUNK 4096

// x [...] -> out [...]
static vt_err act_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const int kind = ((const act_params *)n->params)->kind;
    const float *x = vt_f32(in[0]);
    float *o = vt_f32(out);
    const int64_t N = out->numel;
#pragma omp parallel for if (N > 65536)
    for (int64_t c = 0; c < N; c += ACT_CHUNK) act_forward_range(kind, x + c, o + c, N - c < ACT_CHUNK ? N - c : ACT_CHUNK);
    return VT_OK;
}

// gout [...], saved x [...] -> dx = gout * f'(x)
static vt_err act_backward_cpu(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    if (!n->need[0]) return VT_OK;
    const int kind = ((const act_params *)n->params)->kind;
    gin[0] = vt_empty(VT_F32, VT_CPU, gout->ndim, gout->shape);
    if (!gin[0]) return vt_error_code();
    const float *g = vt_f32(gout), *x = vt_f32(n->saved[0]);
    float *d = vt_f32(gin[0]);
    const int64_t N = gout->numel;
#pragma omp parallel for if (N > 65536)
    for (int64_t c = 0; c < N; c += ACT_CHUNK)
        act_backward_range(kind, g + c, x + c, d + c, N - c < ACT_CHUNK ? N - c : ACT_CHUNK);
    return VT_OK;
}

static const vt_op op_silu = {"silu", {act_forward_cpu, NULL}, {act_backward_cpu, NULL}, 0x1, 0, NULL};
static const vt_op op_sigmoid = {"sigmoid", {act_forward_cpu, NULL}, {act_backward_cpu, NULL}, 0x1, 0, NULL};
static const vt_op op_gelu = {"gelu", {act_forward_cpu, NULL}, {act_backward_cpu, NULL}, 0x1, 0, NULL};
static const vt_op op_quick_gelu = {"quick_gelu", {act_forward_cpu, NULL}, {act_backward_cpu, NULL}, 0x1, 0, NULL};

static vt_tensor *activation(const vt_op *op, int kind, vt_tensor *x) {
    if (!x) return NULL;
    if (vt_check_f32(op->name, x)) return NULL;
    act_params p = {kind};
    return vt_op_run(op, &x, 1, &p, sizeof p, VT_F32, x->ndim, x->shape);
}

vt_tensor *vt_silu(vt_tensor *x) { return activation(&op_silu, A_SILU, x); }
vt_tensor *vt_sigmoid(vt_tensor *x) { return activation(&op_sigmoid, A_SIGMOID, x); }
vt_tensor *vt_gelu(vt_tensor *x) { return activation(&op_gelu, A_GELU, x); }
vt_tensor *vt_quick_gelu(vt_tensor *x) { return activation(&op_quick_gelu, A_QUICK_GELU, x); }

// ---- GEGLU -------------------------------------------------------------------------------
// One row: a, g [D] -> o [D] = a * gelu(g)
VT_SIMD_CLONES static void geglu_forward_row(const float *a, const float *g, float *o, int64_t D) {
#pragma omp simd
    for (int64_t j = 0; j < D; j++) o[j] = a[j] * vt_geluf(g[j]);
}

// One row: go [D], a, g [D] -> da = go gelu(g), dg = go a gelu'(g) (one CDF and one exp for both)
VT_SIMD_CLONES static void geglu_backward_row(const float *go, const float *a, const float *g, float *da, float *dg,
                                              int64_t D) {
#pragma omp simd
    for (int64_t j = 0; j < D; j++) {
        float e;
        const float cdf = vt_normcdf_e(g[j], &e);
        da[j] = go[j] * (g[j] * cdf);
        dg[j] = go[j] * a[j] * (cdf + g[j] * VT_INV_SQRT_2PI * e);
    }
}

// x [M, 2D] (leading dims flattened) -> out [M, D]: out = a * gelu(g), a = x[:, :D], g = x[:, D:]
// (the order of diffusers' / lvdm's GEGLU: proj(x).chunk(2, dim=-1) gives hidden, gate).
static vt_err geglu_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    (void)n;
    const int64_t D = vt_dim(out, -1), M = D ? out->numel / D : 0;
    const float *x = vt_f32(in[0]);
    float *o = vt_f32(out);
#pragma omp parallel for if (out->numel > 65536)
    for (int64_t m = 0; m < M; m++) geglu_forward_row(x + m * 2 * D, x + m * 2 * D + D, o + m * D, D);
    return VT_OK;
}

// gout [M, D], saved x [M, 2D] -> dx [M, 2D]: da = gout gelu(g), dg = gout a gelu'(g)
static vt_err geglu_backward_cpu(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    if (!n->need[0]) return VT_OK;
    const vt_tensor *xt = n->saved[0];
    gin[0] = vt_empty(VT_F32, VT_CPU, xt->ndim, xt->shape);
    if (!gin[0]) return vt_error_code();
    const int64_t D = vt_dim(gout, -1), M = D ? gout->numel / D : 0;
    const float *x = vt_f32(xt), *go = vt_f32(gout);
    float *dx = vt_f32(gin[0]);
#pragma omp parallel for if (gout->numel > 65536)
    for (int64_t m = 0; m < M; m++)
        geglu_backward_row(go + m * D, x + m * 2 * D, x + m * 2 * D + D, dx + m * 2 * D, dx + m * 2 * D + D, D);
    return VT_OK;
}

static const vt_op op_geglu = {"geglu", {geglu_forward_cpu, NULL}, {geglu_backward_cpu, NULL}, 0x1, 0, NULL};

vt_tensor *vt_geglu(vt_tensor *x) {
    if (!x) return NULL;
    if (vt_check_f32("geglu", x)) return NULL;
    if (x->ndim < 1 || vt_dim(x, -1) % 2 != 0) {
        char s[VT_SHAPE_BUF];
        vt_error(VT_ERR_SHAPE, "geglu: input %s needs an even last dim ([..., 2D])", vt_shape_str(x, s, sizeof s));
        return NULL;
    }
    int64_t shape[VT_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    shape[x->ndim - 1] /= 2;
    return vt_op_run(&op_geglu, &x, 1, NULL, 0, VT_F32, x->ndim, shape);
}

// ---- dropout -----------------------------------------------------------------------------
// Element i is kept iff u_i >= p, u_i = top 24 bits of vt_hash64(seed, i) / 2^24 in [0, 1):
// a counter-based mask, so a checkpoint segment's recompute (and the backward) rebuild it
// exactly from (seed, i) without storing it.
typedef vt_dropout_params dropout_params;

static inline int dropout_keep(const dropout_params *p, int64_t i) {
    float u = (float)(vt_hash64(p->seed, (uint64_t)i) >> 40) * (1.0f / 16777216.0f);
    return u >= p->p;
}

// x [...] -> out [...] = x * keep / (1 - p)
static vt_err dropout_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const dropout_params *p = (const dropout_params *)n->params;
    const float *x = vt_f32(in[0]);
    float *o = vt_f32(out);
#pragma omp parallel for if (out->numel > 65536)
    for (int64_t i = 0; i < out->numel; i++) o[i] = dropout_keep(p, i) ? x[i] * p->scale : 0.0f;
    return VT_OK;
}

// gout [...] -> dx = gout * keep / (1 - p), the same mask rebuilt from the seed
static vt_err dropout_backward_cpu(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    if (!n->need[0]) return VT_OK;
    const dropout_params *p = (const dropout_params *)n->params;
    gin[0] = vt_empty(VT_F32, VT_CPU, gout->ndim, gout->shape);
    if (!gin[0]) return vt_error_code();
    const float *g = vt_f32(gout);
    float *d = vt_f32(gin[0]);
#pragma omp parallel for if (gout->numel > 65536)
    for (int64_t i = 0; i < gout->numel; i++) d[i] = dropout_keep(p, i) ? g[i] * p->scale : 0.0f;
    return VT_OK;
}

static const vt_op op_dropout = {"dropout", {dropout_forward_cpu, NULL}, {dropout_backward_cpu, NULL}, 0, 0, NULL};

vt_tensor *vt_dropout(vt_tensor *x, float p, uint64_t seed) {
    if (!x) return NULL;
    if (!(p >= 0.0f && p <= 1.0f)) {
        vt_error(VT_ERR_ARG, "dropout: p = %g is not in [0, 1]", (double)p);
        return NULL;
    }
    if (p == 0.0f) return vt_retain(x);
    if (vt_check_f32("dropout", x)) return NULL;
    // p == 1 drops everything (torch gives zeros): scale 0 keeps the output finite.
    dropout_params prm = {p, p < 1.0f ? 1.0f / (1.0f - p) : 0.0f, seed};
    return vt_op_run(&op_dropout, &x, 1, &prm, sizeof prm, VT_F32, x->ndim, x->shape);
}
