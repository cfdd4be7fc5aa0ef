// adamw.h — AdamW as torch.optim.AdamW (decoupled weight decay, bias-corrected moments),
// global gradient-norm clipping as torch.nn.utils.clip_grad_norm_, and learning-rate
// schedules (constant, linear warmup, warmup + cosine). State is fp32 on the parameters'
// device (cpu for now).
#pragma once
#include "core/vt.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vt_adamw {
    int n;                 // parameters
    vt_tensor **params;    // borrowed (retained) LoRA parameters
    vt_tensor **m, **v;    // first and second moments, fp32
    int64_t step;          // optimisation steps taken
    float beta1, beta2, eps, weight_decay;
} vt_adamw;

vt_err vt_adamw_init(vt_adamw *o, vt_tensor *const *params, int n, float beta1, float beta2, float eps,
                     float weight_decay);
void vt_adamw_free(vt_adamw *o);
// One update with learning rate lr from each parameter's ->grad (parameters without a
// gradient are skipped, as torch does).
vt_err vt_adamw_step(vt_adamw *o, float lr);

// sqrt(sum of squared gradients) over params (double accumulation); scales every gradient by
// max_norm / (norm + 1e-6) when that is < 1. Returns the norm before clipping (NaN/Inf if a
// gradient is not finite). max_norm <= 0 only measures. Gradients on the GPU are reduced and
// scaled there (cuda/optim.cu); a device failure returns NaN with the error set.
double vt_clip_grad_norm(vt_tensor *const *params, int n, double max_norm);

typedef enum vt_lr_schedule { VT_LR_CONSTANT = 0, VT_LR_WARMUP, VT_LR_COSINE } vt_lr_schedule;
// Learning rate at optimisation step `step` (0-based): warmup ramps linearly from lr/warmup
// to lr over `warmup` steps; cosine then decays to 0 at total_steps.
float vt_lr_at(vt_lr_schedule s, float lr, int64_t step, int64_t warmup, int64_t total_steps);

#ifdef __cplusplus
}
#endif
