// shape.c — reshape (a recorded view), permute, concat, slice, repeat_interleave, embedding
// lookup, row gather and nearest x2 upsample. CPU reference kernels.
#include "ops_internal.h"
#include <string.h>

// ---- reshape -----------------------------------------------------------------------------
// The output shares the input's storage; the op exists so the tape carries the gradient
// (reshaped back) to the input.
static vt_err reshape_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    (void)n;
    // vt_op_run allocated fresh storage; point the output at the input's bytes instead.
    vt_storage_release(out->storage);
    vt_storage_retain(in[0]->storage);
    out->storage = in[0]->storage;
    out->offset = in[0]->offset;
    return VT_OK;
}

static vt_err reshape_backward_cpu(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    if (!n->need[0]) return VT_OK;
    gin[0] = vt_view((vt_tensor *)gout, n->in_ndim[0], n->in_shape[0]);
    return gin[0] ? VT_OK : vt_error_code();
}

static const vt_op op_reshape = {"reshape", {reshape_forward_cpu, reshape_forward_cpu}, {reshape_backward_cpu, reshape_backward_cpu}, 0, 0};

vt_tensor *vt_reshape(vt_tensor *x, int ndim, const int64_t *shape) {
    if (!x) return NULL;
    if (ndim < 0 || ndim > VT_MAX_DIMS || vt_dim_prod(ndim, shape) != x->numel) {
        char a[VT_SHAPE_BUF], b[VT_SHAPE_BUF];
        vt_error(VT_ERR_SHAPE, "reshape: cannot reshape %s to %s", vt_shape_str(x, a, sizeof a),
                 vt_shape_str_raw(ndim < 0 ? 0 : ndim > VT_MAX_DIMS ? VT_MAX_DIMS : ndim, shape, b, sizeof b));
        return NULL;
    }
    // vt_op_run allocates the output; for a view that would be wasted, so the op runs on a
    // 0-element placeholder (the forward points it at x's bytes) and the shape is set after.
    int64_t zero = 0;
    vt_tensor *out = vt_op_run(&op_reshape, &x, 1, NULL, 0, x->dtype, 1, &zero);
    if (!out) return NULL;
    out->ndim = ndim;
    for (int i = 0; i < VT_MAX_DIMS; i++) out->shape[i] = i < ndim ? shape[i] : 0;
    out->numel = x->numel;
    return out;
}
