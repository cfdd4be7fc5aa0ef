// reduce.c — sum / mean over everything or over one dim. CPU reference kernels; sums are
// accumulated in double so long reductions (a whole video) stay accurate.
#include "ops_internal.h"
#include "params.h"

// View of x as [outer, n, inner] around dim d (all = one dim of everything).
typedef vt_reduce_params reduce_params;

static vt_err reduce_forward_cpu(vt_node *nd, vt_tensor *const *in, vt_tensor *out) {
    const reduce_params *p = (const reduce_params *)nd->params;
    const float *x = vt_f32(in[0]);
    float *o = vt_f32(out);
#pragma omp parallel for collapse(2) if (in[0]->numel > 65536)
    for (int64_t a = 0; a < p->outer; a++)
        for (int64_t c = 0; c < p->inner; c++) {
            double s = 0;
            for (int64_t b = 0; b < p->n; b++) s += x[(a * p->n + b) * p->inner + c];
            o[a * p->inner + c] = (float)(s * p->scale);
        }
    return VT_OK;
}

// The gradient broadcasts gout back over the reduced dim, times scale (1 or 1/n).
static vt_err reduce_backward_cpu(vt_node *nd, const vt_tensor *gout, vt_tensor **gin) {
    const reduce_params *p = (const reduce_params *)nd->params;
    if (!nd->need[0]) return VT_OK;
    gin[0] = vt_empty(VT_F32, VT_CPU, nd->in_ndim[0], nd->in_shape[0]);
    if (!gin[0]) return vt_error_code();
    const float *g = vt_f32(gout);
    float *d = vt_f32(gin[0]);
    for (int64_t a = 0; a < p->outer; a++)
        for (int64_t b = 0; b < p->n; b++)
            for (int64_t c = 0; c < p->inner; c++) d[(a * p->n + b) * p->inner + c] = g[a * p->inner + c] * p->scale;
    return VT_OK;
}

static const vt_op op_reduce = {"reduce", {reduce_forward_cpu, NULL}, {reduce_backward_cpu, NULL}, 0, 0, NULL};

static vt_tensor *reduce_all(vt_tensor *x, int mean) {
    if (!x) return NULL;
    if (vt_check_f32(mean ? "mean" : "sum", x)) return NULL;
    reduce_params p = {1, x->numel, 1, mean && x->numel ? 1.0f / (float)x->numel : 1.0f};
    return vt_op_run(&op_reduce, &x, 1, &p, sizeof p, VT_F32, 0, NULL);
}

static vt_tensor *reduce_dim(vt_tensor *x, int dim, int keepdim, int mean) {
    if (!x) return NULL;
    const char *name = mean ? "mean_dim" : "sum_dim";
    if (vt_check_f32(name, x)) return NULL;
    int d = dim < 0 ? dim + x->ndim : dim;
    if (d < 0 || d >= x->ndim) {
        char b[VT_SHAPE_BUF];
        vt_error(VT_ERR_SHAPE, "%s: dim %d out of range for %s", name, dim, vt_shape_str(x, b, sizeof b));
        return NULL;
    }
    reduce_params p = {1, x->shape[d], 1, 1.0f};
    for (int i = 0; i < d; i++) p.outer *= x->shape[i];
    for (int i = d + 1; i < x->ndim; i++) p.inner *= x->shape[i];
    if (mean && p.n) p.scale = 1.0f / (float)p.n;
    int64_t shape[VT_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (i == d) {
            if (keepdim) shape[nd++] = 1;
        } else {
            shape[nd++] = x->shape[i];
        }
    }
    return vt_op_run(&op_reduce, &x, 1, &p, sizeof p, VT_F32, nd, shape);
}

vt_tensor *vt_sum(vt_tensor *x) { return reduce_all(x, 0); }
vt_tensor *vt_mean(vt_tensor *x) { return reduce_all(x, 1); }
vt_tensor *vt_sum_dim(vt_tensor *x, int dim, int keepdim) { return reduce_dim(x, dim, keepdim, 0); }
vt_tensor *vt_mean_dim(vt_tensor *x, int dim, int keepdim) { return reduce_dim(x, dim, keepdim, 1); }
