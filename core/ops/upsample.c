// upsample.c — nearest-neighbour x2 upsampling (lvdm / diffusers Upsample before its conv).
// CPU reference kernels.
#include "ops_internal.h"

// x [P, H, W] (P = N*C planes) -> y [P, 2H, 2W], y[p, 2i + a, 2j + b] = x[p, i, j]
static vt_err upsample2x_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    (void)n;
    const vt_tensor *xt = in[0];
    const int64_t H = xt->shape[2], W = xt->shape[3], P = xt->shape[0] * xt->shape[1];
    const float *x = vt_f32(xt);
    float *y = vt_f32(out);
#pragma omp parallel for if (out->numel > 65536)
    for (int64_t p = 0; p < P; p++) {
        for (int64_t i = 0; i < H; i++) {
            const float *xr = x + (p * H + i) * W;
            float *y0 = y + (p * 2 * H + 2 * i) * 2 * W, *y1 = y0 + 2 * W;
            for (int64_t j = 0; j < W; j++) y0[2 * j] = y0[2 * j + 1] = y1[2 * j] = y1[2 * j + 1] = xr[j];
        }
    }
    return VT_OK;
}

// g [P, 2H, 2W] -> dx [P, H, W]: each input pixel collects the four outputs it was copied to.
static vt_err upsample2x_backward_cpu(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    if (!n->need[0]) return VT_OK;
    const int64_t H = n->in_shape[0][2], W = n->in_shape[0][3], P = n->in_shape[0][0] * n->in_shape[0][1];
    gin[0] = vt_empty(VT_F32, VT_CPU, n->in_ndim[0], n->in_shape[0]);
    if (!gin[0]) return vt_error_code();
    const float *g = vt_f32(gout);
    float *dx = vt_f32(gin[0]);
#pragma omp parallel for if (gout->numel > 65536)
    for (int64_t p = 0; p < P; p++) {
        for (int64_t i = 0; i < H; i++) {
            const float *g0 = g + (p * 2 * H + 2 * i) * 2 * W, *g1 = g0 + 2 * W;
            float *dr = dx + (p * H + i) * W;
            for (int64_t j = 0; j < W; j++) dr[j] = (g0[2 * j] + g0[2 * j + 1]) + (g1[2 * j] + g1[2 * j + 1]);
        }
    }
    return VT_OK;
}

static const vt_op op_upsample_nearest2x = {"upsample_nearest2x", {upsample2x_forward_cpu, NULL},
                                            {upsample2x_backward_cpu, NULL}, 0, 0, NULL};

vt_tensor *vt_upsample_nearest2x(vt_tensor *x) {
    if (!x) return NULL;
    if (vt_check_f32("upsample_nearest2x", x)) return NULL;
    if (x->ndim != 4) {
        char s1[VT_SHAPE_BUF];
        vt_error(VT_ERR_SHAPE, "upsample_nearest2x: input %s is not [N, C, H, W]", vt_shape_str(x, s1, sizeof s1));
        return NULL;
    }
    int64_t shape[4] = {x->shape[0], x->shape[1], 2 * x->shape[2], 2 * x->shape[3]};
    return vt_op_run(&op_upsample_nearest2x, &x, 1, NULL, 0, VT_F32, 4, shape);
}
