// elementwise.c — add/sub/mul with numpy broadcasting, affine, axpby, clamp, abs, square,
// sqrt, exp, log; and vt_accumulate (the tape's add-or-set). CPU reference kernels.
#include "ops_internal.h"
#include "params.h"
#include <math.h>
#include <string.h>

// ---- broadcasting helpers ----------------------------------------------------------------
// Right-aligns a shape of nd dims into VT_MAX_DIMS slots, padding with 1.
static void pad_shape(int nd, const int64_t *s, int64_t *o) {
    for (int i = 0; i < VT_MAX_DIMS; i++) o[i] = 1;
    for (int i = 0; i < nd; i++) o[VT_MAX_DIMS - nd + i] = s[i];
}

int vt_broadcast_shape(const char *op, const vt_tensor *a, const vt_tensor *b, int *nd, int64_t *shape) {
    int n = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t pa[VT_MAX_DIMS], pb[VT_MAX_DIMS];
    pad_shape(a->ndim, a->shape, pa);
    pad_shape(b->ndim, b->shape, pb);
    for (int i = VT_MAX_DIMS - n; i < VT_MAX_DIMS; i++) {
        if (pa[i] != pb[i] && pa[i] != 1 && pb[i] != 1) {
            char x[VT_SHAPE_BUF], y[VT_SHAPE_BUF];
            vt_error(VT_ERR_SHAPE, "%s: shapes %s and %s do not broadcast", op, vt_shape_str(a, x, sizeof x),
                     vt_shape_str(b, y, sizeof y));
            return 0;
        }
        shape[i - (VT_MAX_DIMS - n)] = pa[i] > pb[i] ? pa[i] : pb[i];
    }
    *nd = n;
    return 1;
}

// Element strides of an input of shape (nd, s) seen through the broadcast output shape
// (VT_MAX_DIMS padded): 0 on broadcast dims.
static void bcast_strides(int nd, const int64_t *s, int64_t *st) {
    int64_t p[VT_MAX_DIMS];
    pad_shape(nd, s, p);
    int64_t acc = 1;
    for (int i = VT_MAX_DIMS - 1; i >= 0; i--) {
        st[i] = p[i] == 1 ? 0 : acc;
        acc *= p[i];
    }
}

typedef float (*binary_fn)(float, float);
static float f_add(float x, float y) { return x + y; }
static float f_sub(float x, float y) { return x - y; }
static float f_mul(float x, float y) { return x * y; }

static void binary_kernel(binary_fn f, const vt_tensor *a, const vt_tensor *b, vt_tensor *out) {
    const float *pa = vt_f32(a), *pb = vt_f32(b);
    float *po = vt_f32(out);
    if (vt_same_shape(a, b)) {
#pragma omp parallel for if (out->numel > 65536)
        for (int64_t i = 0; i < out->numel; i++) po[i] = f(pa[i], pb[i]);
        return;
    }
    int64_t os[VT_MAX_DIMS], sa[VT_MAX_DIMS], sb[VT_MAX_DIMS];
    pad_shape(out->ndim, out->shape, os);
    bcast_strides(a->ndim, a->shape, sa);
    bcast_strides(b->ndim, b->shape, sb);
    // Innermost dim handled as a run: the common case (bias over H*W) is a scalar b per run.
    int64_t inner = os[VT_MAX_DIMS - 1], outer = out->numel / (inner ? inner : 1);
#pragma omp parallel for if (out->numel > 65536)
    for (int64_t o = 0; o < outer; o++) {
        int64_t rem = o, ia = 0, ib = 0;
        for (int d = VT_MAX_DIMS - 2; d >= 0; d--) {
            int64_t idx = rem % os[d];
            rem /= os[d];
            ia += idx * sa[d];
            ib += idx * sb[d];
        }
        const int64_t la = sa[VT_MAX_DIMS - 1], lb = sb[VT_MAX_DIMS - 1];
        float *dst = po + o * inner;
        for (int64_t i = 0; i < inner; i++) dst[i] = f(pa[ia + i * la], pb[ib + i * lb]);
    }
}

// Sums g (broadcast shape) down to shape (nd, s): the gradient of a broadcast input.
vt_tensor *vt_reduce_to_shape(const vt_tensor *g, int nd, const int64_t *s) {
    vt_tensor *r = vt_zeros(VT_F32, VT_CPU, nd, s);
    if (!r) return NULL;
    if (r->numel == g->numel) {
        memcpy(vt_f32(r), vt_f32(g), vt_nbytes(g));
        return r;
    }
    int64_t os[VT_MAX_DIMS], st[VT_MAX_DIMS];
    pad_shape(g->ndim, g->shape, os);
    bcast_strides(nd, s, st);
    const float *pg = vt_f32(g);
    float *pr = vt_f32(r);
    int64_t inner = os[VT_MAX_DIMS - 1], outer = g->numel / (inner ? inner : 1);
    const int64_t li = st[VT_MAX_DIMS - 1];
    for (int64_t o = 0; o < outer; o++) {
        int64_t rem = o, ir = 0;
        for (int d = VT_MAX_DIMS - 2; d >= 0; d--) {
            int64_t idx = rem % os[d];
            rem /= os[d];
            ir += idx * st[d];
        }
        const float *src = pg + o * inner;
        if (li == 0) {
            double acc = 0;
            for (int64_t i = 0; i < inner; i++) acc += src[i];
            pr[ir] += (float)acc;
        } else {
            for (int64_t i = 0; i < inner; i++) pr[ir + i] += src[i];
        }
    }
    return r;
}

// ---- add / sub / mul ---------------------------------------------------------------------
typedef vt_binary_params binary_params;

static vt_err binary_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const binary_params *p = (const binary_params *)n->params;
    binary_kernel(p->kind == 0 ? f_add : p->kind == 1 ? f_sub : f_mul, in[0], in[1], out);
    return VT_OK;
}

// d(a+b) = g, d(a-b) = g, -g; d(a*b) = g*b, g*a — each reduced to its input's shape.
static vt_err binary_backward_cpu(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const binary_params *p = (const binary_params *)n->params;
    for (int i = 0; i < 2; i++) {
        if (!n->need[i]) continue;
        vt_tensor *g = NULL;
        if (p->kind == 2) {  // saved: a, b
            vt_tensor *other = n->saved[1 - i];
            g = vt_empty(VT_F32, VT_CPU, gout->ndim, gout->shape);
            if (!g) return vt_error_code();
            binary_kernel(f_mul, gout, other, g);
        } else {
            g = vt_clone(gout);
            if (!g) return vt_error_code();
            if (p->kind == 1 && i == 1) {
                float *pg = vt_f32(g);
                for (int64_t k = 0; k < g->numel; k++) pg[k] = -pg[k];
            }
        }
        gin[i] = vt_reduce_to_shape(g, n->in_ndim[i], n->in_shape[i]);
        vt_release(g);
        if (!gin[i]) return vt_error_code();
    }
    return VT_OK;
}

static const vt_op op_add = {"add", {binary_forward_cpu, NULL}, {binary_backward_cpu, NULL}, 0, 0, NULL};
static const vt_op op_sub = {"sub", {binary_forward_cpu, NULL}, {binary_backward_cpu, NULL}, 0, 0, NULL};
static const vt_op op_mul = {"mul", {binary_forward_cpu, NULL}, {binary_backward_cpu, NULL}, 0x3, 0, NULL};

static vt_tensor *binary(const vt_op *op, int kind, vt_tensor *a, vt_tensor *b) {
    if (!a || !b) return NULL;
    if (vt_check_f32(op->name, a) || vt_check_f32(op->name, b)) return NULL;
    int nd;
    int64_t shape[VT_MAX_DIMS];
    if (!vt_broadcast_shape(op->name, a, b, &nd, shape)) return NULL;
    binary_params p = {kind};
    vt_tensor *in[2] = {a, b};
    return vt_op_run(op, in, 2, &p, sizeof p, VT_F32, nd, shape);
}

vt_tensor *vt_add(vt_tensor *a, vt_tensor *b) { return binary(&op_add, 0, a, b); }
vt_tensor *vt_sub(vt_tensor *a, vt_tensor *b) { return binary(&op_sub, 1, a, b); }
vt_tensor *vt_mul(vt_tensor *a, vt_tensor *b) { return binary(&op_mul, 2, a, b); }

// ---- axpby: a x + b y --------------------------------------------------------------------
typedef vt_axpby_params axpby_params;

static vt_err axpby_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const axpby_params *p = (const axpby_params *)n->params;
    const float *x = vt_f32(in[0]), *y = vt_f32(in[1]);
    float *o = vt_f32(out);
#pragma omp parallel for if (out->numel > 65536)
    for (int64_t i = 0; i < out->numel; i++) o[i] = p->a * x[i] + p->b * y[i];
    return VT_OK;
}

static vt_err axpby_backward_cpu(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const axpby_params *p = (const axpby_params *)n->params;
    for (int i = 0; i < 2; i++) {
        if (!n->need[i]) continue;
        float s = i == 0 ? p->a : p->b;
        gin[i] = vt_empty(VT_F32, VT_CPU, gout->ndim, gout->shape);
        if (!gin[i]) return vt_error_code();
        const float *g = vt_f32(gout);
        float *d = vt_f32(gin[i]);
        for (int64_t k = 0; k < gout->numel; k++) d[k] = s * g[k];
    }
    return VT_OK;
}

static const vt_op op_axpby = {"axpby", {axpby_forward_cpu, NULL}, {axpby_backward_cpu, NULL}, 0, 0, NULL};

vt_tensor *vt_axpby(float a, vt_tensor *x, float b, vt_tensor *y) {
    if (!x || !y) return NULL;
    if (vt_check_f32("axpby", x) || vt_check_f32("axpby", y)) return NULL;
    if (!vt_same_shape(x, y)) {
        char s1[VT_SHAPE_BUF], s2[VT_SHAPE_BUF];
        vt_error(VT_ERR_SHAPE, "axpby: x %s and y %s differ", vt_shape_str(x, s1, sizeof s1), vt_shape_str(y, s2, sizeof s2));
        return NULL;
    }
    axpby_params p = {a, b};
    vt_tensor *in[2] = {x, y};
    return vt_op_run(&op_axpby, in, 2, &p, sizeof p, VT_F32, x->ndim, x->shape);
}

// ---- unary ops ---------------------------------------------------------------------------
// One table-driven family: forward f(x), backward g * f'(x) from the saved input.
typedef vt_unary_params unary_params;

static inline float unary_f(const unary_params *p, float x) {
    switch (p->kind) {
    case VT_U_AFFINE: return p->p0 * x + p->p1;
    case VT_U_CLAMP: return x < p->p0 ? p->p0 : x > p->p1 ? p->p1 : x;
    case VT_U_ABS: return fabsf(x);
    case VT_U_SQUARE: return x * x;
    case VT_U_SQRT: return sqrtf(x);
    case VT_U_EXP: return expf(x);
    case VT_U_LOG: return logf(x);
    }
    return 0;
}

static inline float unary_df(const unary_params *p, float x) {
    switch (p->kind) {
    case VT_U_AFFINE: return p->p0;
    case VT_U_CLAMP: return (x >= p->p0 && x <= p->p1) ? 1.0f : 0.0f;  // torch: gradient 1 at the bounds
    case VT_U_ABS: return x > 0 ? 1.0f : x < 0 ? -1.0f : 0.0f;
    case VT_U_SQUARE: return 2 * x;
    case VT_U_SQRT: return 0.5f / sqrtf(x);
    case VT_U_EXP: return expf(x);
    case VT_U_LOG: return 1.0f / x;
    }
    return 0;
}

static vt_err unary_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const unary_params *p = (const unary_params *)n->params;
    const float *x = vt_f32(in[0]);
    float *o = vt_f32(out);
#pragma omp parallel for if (out->numel > 65536)
    for (int64_t i = 0; i < out->numel; i++) o[i] = unary_f(p, x[i]);
    return VT_OK;
}

static vt_err unary_backward_cpu(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const unary_params *p = (const unary_params *)n->params;
    if (!n->need[0]) return VT_OK;
    gin[0] = vt_empty(VT_F32, VT_CPU, gout->ndim, gout->shape);
    if (!gin[0]) return vt_error_code();
    const float *g = vt_f32(gout), *x = n->n_saved ? vt_f32(n->saved[0]) : NULL;
    float *d = vt_f32(gin[0]);
#pragma omp parallel for if (gout->numel > 65536)
    for (int64_t i = 0; i < gout->numel; i++) d[i] = g[i] * unary_df(p, x ? x[i] : 0.0f);
    return VT_OK;
}

static const vt_op op_affine = {"affine", {unary_forward_cpu, NULL}, {unary_backward_cpu, NULL}, 0, 0, NULL};
static const vt_op op_clamp = {"clamp", {unary_forward_cpu, NULL}, {unary_backward_cpu, NULL}, 1, 0, NULL};
static const vt_op op_abs = {"abs", {unary_forward_cpu, NULL}, {unary_backward_cpu, NULL}, 1, 0, NULL};
static const vt_op op_square = {"square", {unary_forward_cpu, NULL}, {unary_backward_cpu, NULL}, 1, 0, NULL};
static const vt_op op_sqrt = {"sqrt", {unary_forward_cpu, NULL}, {unary_backward_cpu, NULL}, 1, 0, NULL};
static const vt_op op_exp = {"exp", {unary_forward_cpu, NULL}, {unary_backward_cpu, NULL}, 1, 0, NULL};
static const vt_op op_log = {"log", {unary_forward_cpu, NULL}, {unary_backward_cpu, NULL}, 1, 0, NULL};

static vt_tensor *unary(const vt_op *op, int kind, float p0, float p1, vt_tensor *x) {
    if (!x) return NULL;
    if (vt_check_f32(op->name, x)) return NULL;
    unary_params p = {kind, p0, p1};
    return vt_op_run(op, &x, 1, &p, sizeof p, VT_F32, x->ndim, x->shape);
}

vt_tensor *vt_affine(vt_tensor *x, float alpha, float beta) { return unary(&op_affine, VT_U_AFFINE, alpha, beta, x); }
vt_tensor *vt_clamp(vt_tensor *x, float lo, float hi) { return unary(&op_clamp, VT_U_CLAMP, lo, hi, x); }
vt_tensor *vt_abs(vt_tensor *x) { return unary(&op_abs, VT_U_ABS, 0, 0, x); }
vt_tensor *vt_square(vt_tensor *x) { return unary(&op_square, VT_U_SQUARE, 0, 0, x); }
vt_tensor *vt_sqrt(vt_tensor *x) { return unary(&op_sqrt, VT_U_SQRT, 0, 0, x); }
vt_tensor *vt_exp(vt_tensor *x) { return unary(&op_exp, VT_U_EXP, 0, 0, x); }
vt_tensor *vt_log(vt_tensor *x) { return unary(&op_log, VT_U_LOG, 0, 0, x); }

// ---- accumulate --------------------------------------------------------------------------
vt_err (*vt_cuda_accumulate_hook)(vt_tensor *dst, const vt_tensor *src) = NULL;

vt_err vt_accumulate(vt_tensor *dst, const vt_tensor *src) {
    if (dst->numel != src->numel || dst->dtype != src->dtype || dst->device != src->device) {
        char a[VT_SHAPE_BUF], b[VT_SHAPE_BUF];
        return vt_error(VT_ERR_SHAPE, "accumulate: %s %s into %s %s", vt_dtype_name(src->dtype),
                        vt_shape_str(src, a, sizeof a), vt_dtype_name(dst->dtype), vt_shape_str(dst, b, sizeof b));
    }
    if (dst->device == VT_CUDA) {
        if (!vt_cuda_accumulate_hook) return vt_error(VT_ERR_DEVICE, "accumulate: CUDA backend not initialised");
        return vt_cuda_accumulate_hook(dst, src);
    }
    if (dst->dtype != VT_F32) return vt_error(VT_ERR_DTYPE, "accumulate: cpu gradients are f32");
    float *d = vt_f32(dst);
    const float *s = vt_f32(src);
#pragma omp parallel for if (dst->numel > 65536)
    for (int64_t i = 0; i < dst->numel; i++) d[i] += s[i];
    return VT_OK;
}
