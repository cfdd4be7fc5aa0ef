// activation.c — silu, sigmoid, gelu (exact erf), quick_gelu, GEGLU and dropout. CPU
// reference kernels; every backward recomputes f'(x) from the saved input (dropout recomputes
// its mask from the seed and saves nothing).
#include "ops_internal.h"
#include "params.h"
#include <math.h>

// ---- scalar functions --------------------------------------------------------------------
// Split on the sign so exp never overflows: 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) below.
static inline float sigmoidf_stable(float x) {
    if (x >= 0) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

#define VT_SQRT1_2 0.70710678118654752440f     // 1 / sqrt(2)
#define VT_INV_SQRT_2PI 0.39894228040143267794f  // 1 / sqrt(2 pi)
#define QUICK_GELU_K 1.702f                      // OpenAI CLIP's constant

// gelu(x) = x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2;  gelu'(x) = Phi(x) + x phi(x)
static inline float gelu_f(float x) { return 0.5f * x * (1.0f + erff(x * VT_SQRT1_2)); }
static inline float gelu_df(float x) {
    float cdf = 0.5f * (1.0f + erff(x * VT_SQRT1_2));
    return cdf + x * VT_INV_SQRT_2PI * expf(-0.5f * x * x);
}

// ---- unary activations -------------------------------------------------------------------
enum { A_SILU = VT_ACT_SILU, A_SIGMOID = VT_ACT_SIGMOID, A_GELU = VT_ACT_GELU, A_QUICK_GELU = VT_ACT_QUICK_GELU };
typedef vt_act_params act_params;

static inline float act_f(int kind, float x) {
    switch (kind) {
    case A_SILU: return x * sigmoidf_stable(x);
    case A_SIGMOID: return sigmoidf_stable(x);
    case A_GELU: return gelu_f(x);
    case A_QUICK_GELU: return x * sigmoidf_stable(QUICK_GELU_K * x);
    }
    return 0;
}

// silu' = s (1 + x (1 - s)); sigmoid' = s (1 - s); quick_gelu' = s + k x s (1 - s), s = sigmoid(k x)
static inline float act_df(int kind, float x) {
    switch (kind) {
    case A_SILU: {
        float s = sigmoidf_stable(x);
        return s * (1.0f + x * (1.0f - s));
    }
    case A_SIGMOID: {
        float s = sigmoidf_stable(x);
        return s * (1.0f - s);
    }
    case A_GELU: return gelu_df(x);
    case A_QUICK_GELU: {
        float s = sigmoidf_stable(QUICK_GELU_K * x);
        return s + QUICK_GELU_K * x * s * (1.0f - s);
    }
    }
    return 0;
}

// x [...] -> out [...]
static vt_err act_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const int kind = ((const act_params *)n->params)->kind;
    const float *x = vt_f32(in[0]);
    float *o = vt_f32(out);
#pragma omp parallel for if (out->numel > 65536)
    for (int64_t i = 0; i < out->numel; i++) o[i] = act_f(kind, x[i]);
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
#pragma omp parallel for if (gout->numel > 65536)
    for (int64_t i = 0; i < gout->numel; i++) d[i] = g[i] * act_df(kind, x[i]);
    return VT_OK;
}

static const vt_op op_silu = {"silu", {act_forward_cpu, NULL}, {act_backward_cpu, NULL}, 0x1, 0};
static const vt_op op_sigmoid = {"sigmoid", {act_forward_cpu, NULL}, {act_backward_cpu, NULL}, 0x1, 0};
static const vt_op op_gelu = {"gelu", {act_forward_cpu, NULL}, {act_backward_cpu, NULL}, 0x1, 0};
static const vt_op op_quick_gelu = {"quick_gelu", {act_forward_cpu, NULL}, {act_backward_cpu, NULL}, 0x1, 0};

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
// x [M, 2D] (leading dims flattened) -> out [M, D]: out = a * gelu(g), a = x[:, :D], g = x[:, D:]
// (the order of diffusers' / lvdm's GEGLU: proj(x).chunk(2, dim=-1) gives hidden, gate).
static vt_err geglu_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    (void)n;
    const int64_t D = vt_dim(out, -1), M = D ? out->numel / D : 0;
    const float *x = vt_f32(in[0]);
    float *o = vt_f32(out);
#pragma omp parallel for if (out->numel > 65536)
    for (int64_t m = 0; m < M; m++) {
        const float *a = x + m * 2 * D, *g = a + D;
        for (int64_t j = 0; j < D; j++) o[m * D + j] = a[j] * gelu_f(g[j]);
    }
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
    for (int64_t m = 0; m < M; m++) {
        const float *a = x + m * 2 * D, *g = a + D;
        float *da = dx + m * 2 * D, *dg = da + D;
        for (int64_t j = 0; j < D; j++) {
            float gj = go[m * D + j];
            da[j] = gj * gelu_f(g[j]);
            dg[j] = gj * a[j] * gelu_df(g[j]);
        }
    }
    return VT_OK;
}

static const vt_op op_geglu = {"geglu", {geglu_forward_cpu, NULL}, {geglu_backward_cpu, NULL}, 0x1, 0};

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

static const vt_op op_dropout = {"dropout", {dropout_forward_cpu, NULL}, {dropout_backward_cpu, NULL}, 0, 0};

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
