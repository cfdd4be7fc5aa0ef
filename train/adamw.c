// adamw.c — see adamw.h. Update order follows torch.optim.AdamW (single-tensor path):
//   p *= 1 - lr * wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
#include "adamw.h"
#include <math.h>
#include <stdlib.h>
#ifdef VADER_HAVE_CUDA
#include "cuda/backend.h"  // the same loops as kernels for parameters on the GPU (cuda/optim.cu)
#else
static vt_err device_unsupported(const char *what, vt_device d) {
    return vt_error(VT_ERR_DEVICE, "%s: tensors on %s, but this build has no CUDA backend", what, vt_device_name(d));
}
#endif

vt_err vt_adamw_init(vt_adamw *o, vt_tensor *const *params, int n, float beta1, float beta2, float eps,
                     float weight_decay) {
    *o = (vt_adamw){0};
    o->params = calloc((size_t)n, sizeof *o->params);
    o->m = calloc((size_t)n, sizeof *o->m);
    o->v = calloc((size_t)n, sizeof *o->v);
    if (n && (!o->params || !o->m || !o->v)) {
        vt_adamw_free(o);
        return vt_error(VT_ERR_OOM, "adamw: state for %d parameters", n);
    }
    o->n = n;
    o->beta1 = beta1;
    o->beta2 = beta2;
    o->eps = eps;
    o->weight_decay = weight_decay;
    for (int i = 0; i < n; i++) {
        if (params[i]->dtype != VT_F32) {
            vt_adamw_free(o);
            return vt_error(VT_ERR_DTYPE, "adamw: parameter %d must be f32", i);
        }
        o->params[i] = vt_retain(params[i]);
        // moments live next to their parameter (fp32 on the GPU too)
        o->m[i] = vt_zeros(VT_F32, params[i]->device, params[i]->ndim, params[i]->shape);
        o->v[i] = vt_zeros(VT_F32, params[i]->device, params[i]->ndim, params[i]->shape);
        if (!o->m[i] || !o->v[i]) {
            vt_adamw_free(o);
            return vt_error_code();
        }
    }
    return VT_OK;
}

void vt_adamw_free(vt_adamw *o) {
    for (int i = 0; i < o->n; i++) {
        if (o->params) vt_release(o->params[i]);
        if (o->m) vt_release(o->m[i]);
        if (o->v) vt_release(o->v[i]);
    }
    free(o->params);
    free(o->m);
    free(o->v);
    *o = (vt_adamw){0};
}

vt_err vt_adamw_step(vt_adamw *o, float lr) {
    o->step++;
    double bc1 = 1.0 - pow((double)o->beta1, (double)o->step);
    double bc2 = 1.0 - pow((double)o->beta2, (double)o->step);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float b1 = o->beta1, b2 = o->beta2, decay = 1.0f - lr * o->weight_decay;
    for (int i = 0; i < o->n; i++) {
        vt_tensor *p = o->params[i];
        if (!p->grad) continue;
        if (p->grad->numel != p->numel) return vt_error(VT_ERR_SHAPE, "adamw: gradient of parameter %d has the wrong size", i);
        if (p->device != VT_CPU || p->grad->device != VT_CPU || o->m[i]->device != VT_CPU) {
            if (p->grad->device != p->device || o->m[i]->device != p->device || o->v[i]->device != p->device)
                return vt_error(VT_ERR_DEVICE, "adamw: parameter %d, its gradient and moments are on different devices", i);
#ifdef VADER_HAVE_CUDA
            if (vt_cuda_adamw_f32(vt_f32(p), vt_f32(o->m[i]), vt_f32(o->v[i]), vt_f32(p->grad), p->numel, b1, b2,
                                  step_size, bc2_sqrt, o->eps, decay))
                return vt_error_context("adamw parameter %d: ", i);
            continue;
#else
            return device_unsupported("adamw", p->device);
#endif
        }
        float *w = vt_f32(p), *m = vt_f32(o->m[i]), *v = vt_f32(o->v[i]);
        const float *g = vt_f32(p->grad);
        for (int64_t k = 0; k < p->numel; k++) {
            w[k] *= decay;
            m[k] = b1 * m[k] + (1 - b1) * g[k];
            v[k] = b2 * v[k] + (1 - b2) * g[k] * g[k];
            w[k] -= step_size * m[k] / (sqrtf(v[k]) / bc2_sqrt + o->eps);
        }
    }
    return VT_OK;
}

double vt_clip_grad_norm(vt_tensor *const *params, int n, double max_norm) {
    double ss = 0;
    for (int i = 0; i < n; i++) {
        if (!params[i]->grad) continue;
        if (params[i]->grad->device != VT_CPU) {
#ifdef VADER_HAVE_CUDA
            double part = 0;
            if (vt_cuda_sumsq_f32(vt_f32(params[i]->grad), params[i]->grad->numel, &part)) return NAN;
            ss += part;
#else
            device_unsupported("grad norm", params[i]->grad->device);
            return NAN;
#endif
            continue;
        }
        const float *g = vt_f32(params[i]->grad);
        for (int64_t k = 0; k < params[i]->grad->numel; k++) ss += (double)g[k] * g[k];
    }
    double norm = sqrt(ss);
    if (max_norm > 0 && isfinite(norm)) {
        double coef = max_norm / (norm + 1e-6);
        if (coef < 1.0) {
            for (int i = 0; i < n; i++) {
                if (!params[i]->grad) continue;
                if (params[i]->grad->device != VT_CPU) {
#ifdef VADER_HAVE_CUDA
                    if (vt_cuda_scale_f32(vt_f32(params[i]->grad), params[i]->grad->numel, (float)coef)) return NAN;
#endif
                    continue;
                }
                float *g = vt_f32(params[i]->grad);
                for (int64_t k = 0; k < params[i]->grad->numel; k++) g[k] *= (float)coef;
            }
        }
    }
    return norm;
}

float vt_lr_at(vt_lr_schedule s, float lr, int64_t step, int64_t warmup, int64_t total) {
    if (s == VT_LR_CONSTANT) return lr;
    if (warmup > 0 && step < warmup) return lr * (float)(step + 1) / (float)warmup;
    if (s == VT_LR_WARMUP) return lr;
    int64_t span = total - warmup;
    if (span <= 0) return lr;
    double progress = (double)(step - warmup) / (double)span;
    if (progress > 1) progress = 1;
    return (float)(lr * 0.5 * (1.0 + cos(M_PI * progress)));
}
