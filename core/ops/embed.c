// embed.c — the sinusoidal timestep embedding of lvdm (plain computation, no tape node).
#include "ops_internal.h"
#include <math.h>

// t [B] (i64 or f32, cpu) -> [B, dim]:
//   half = dim / 2, freq_i = exp(-ln(max_period) * i / half)   (i < half, float32 as torch)
//   out[b, i] = cos(t_b freq_i), out[b, half + i] = sin(t_b freq_i), out[b, dim-1] = 0 if dim odd
vt_tensor *vt_timestep_embedding(const vt_tensor *t, int dim, float max_period) {
    if (!t) return NULL;
    char s[VT_SHAPE_BUF];
    if (t->ndim != 1 || (t->dtype != VT_I64 && t->dtype != VT_F32) || t->device != VT_CPU) {
        vt_error(VT_ERR_SHAPE, "timestep_embedding: t %s %s on %s, expected [B] i64 or f32 on cpu",
                 vt_dtype_name(t->dtype), vt_shape_str(t, s, sizeof s), vt_device_name(t->device));
        return NULL;
    }
    if (dim < 1 || !(max_period > 0)) {
        vt_error(VT_ERR_ARG, "timestep_embedding: dim %d / max_period %g (need dim >= 1, max_period > 0)", dim,
                 (double)max_period);
        return NULL;
    }
    const int64_t B = t->shape[0];
    const int half = dim / 2;
    vt_tensor *out = vt_zeros(VT_F32, VT_CPU, 2, (int64_t[]){B, dim});
    if (!out) return NULL;
    // torch: exp(-math.log(max_period) * arange(half, float32) / half), each step in float32
    const float c = (float)(-log((double)max_period));
    float *o = vt_f32(out);
    for (int64_t b = 0; b < B; b++) {
        const float tb = t->dtype == VT_I64 ? (float)vt_i64(t)[b] : vt_f32(t)[b];
        float *row = o + b * dim;
        for (int i = 0; i < half; i++) {
            const float freq = expf(((float)i * c) / (float)half);
            const float arg = tb * freq;
            row[i] = cosf(arg);
            row[half + i] = sinf(arg);
        }
    }
    return out;
}
