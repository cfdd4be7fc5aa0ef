// cast.c — dtype conversion as an op: f32 <-> bf16 / f16 (round to nearest even, the same
// converters as vt_to_dtype), on every backend through the op registry (cuda/linear.cu's
// vt_cuda_cast). What it is for: the checkpoint segments' saved inputs (tape.h
// vt_tape_set_saved_dtype) are packed and widened with it on the tensor's own device.
// Backward is straight-through (d cast(x) / dx = 1): gin = gout as f32, gradients being f32.
#include "ops_internal.h"
#include <string.h>

static int castable(vt_dtype dt) { return dt == VT_F32 || dt == VT_BF16 || dt == VT_F16; }

static vt_err cast_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    (void)n;
    const vt_tensor *x = in[0];
    const void *src = vt_data(x);
    void *dst = vt_data(out);
    #pragma omp parallel for schedule(static) if (x->numel > (1 << 16))
    for (int64_t i = 0; i < x->numel; i++) {
        float v = x->dtype == VT_F32    ? ((const float *)src)[i]
                  : x->dtype == VT_BF16 ? vt_bf16_to_f32(((const uint16_t *)src)[i])
                                        : vt_f16_to_f32(((const uint16_t *)src)[i]);
        if (out->dtype == VT_F32) ((float *)dst)[i] = v;
        else if (out->dtype == VT_BF16) ((uint16_t *)dst)[i] = vt_f32_to_bf16(v);
        else ((uint16_t *)dst)[i] = vt_f32_to_f16(v);
    }
    return VT_OK;
}

static vt_err cast_backward_cpu(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    if (!n->need[0]) return VT_OK;
    gin[0] = vt_to_dtype(gout, VT_F32);
    return gin[0] ? VT_OK : vt_error_code();
}

static const vt_op op_cast = {"cast", {cast_forward_cpu, NULL}, {cast_backward_cpu, NULL}, 0, 0, NULL};

vt_tensor *vt_cast(vt_tensor *x, vt_dtype dt) {
    if (!x) return NULL;
    if (!castable(x->dtype) || !castable(dt)) {
        vt_error(VT_ERR_DTYPE, "cast: %s -> %s (f32, bf16 and f16 only)", vt_dtype_name(x->dtype), vt_dtype_name(dt));
        return NULL;
    }
    return vt_op_run(&op_cast, &x, 1, NULL, 0, dt, x->ndim, x->shape);
}
