// ddim.h — the DDIM sampler as VideoCrafter2 (lvdm DDIMSampler) runs it: the 1000-step
// "linear" schedule (linspace of sqrt(beta), squared, in float64), uniform DDIM timesteps,
// eta-sigmas, eps prediction, VideoCrafter2's use_scale (scale_arr from 1.0 down to scale_b
// over mid_step steps), and classifier-free guidance e = e_u + s (e_c - e_u).
#pragma once
#include "core/vt.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VT_DDPM_STEPS 1000

typedef struct vt_ddim_schedule {
    int steps;                             // DDIM steps: opt.steps when it divides 1000, else
                                           // lvdm's ceil(1000 / (1000 // opt.steps))
    double eta;
    double alphas_cumprod[VT_DDPM_STEPS];  // DDPM schedule
    double scale_arr[VT_DDPM_STEPS];       // use_scale factors (1 when use_scale is off)
    int64_t *timesteps;                    // [S] ascending: 1, 1 + c, ...
    double *alphas, *alphas_prev, *sigmas, *scale, *scale_prev;  // [S], indexed like timesteps
} vt_ddim_schedule;

typedef struct vt_ddim_options {
    int steps;              // S; exactly S steps when S divides 1000 (lvdm's uniform spacing;
                            // otherwise lvdm's count, see vt_ddim_schedule.steps)
    double eta;             // 1.0 in VADER
    double linear_start;    // 0.00085
    double linear_end;      // 0.012
    int use_scale;          // VideoCrafter2: 1
    double scale_a, scale_b;  // 1.0, 0.7
    int mid_step;           // 400
} vt_ddim_options;

vt_ddim_options vt_ddim_default_options(int steps, double eta);
vt_err vt_ddim_init(vt_ddim_schedule *s, const vt_ddim_options *opt);
void vt_ddim_free(vt_ddim_schedule *s);

// One DDIM update at schedule index `index` (the i-th step of sampling uses index S-1-i):
//   pred_x0 = (x - sqrt(1 - a) e) / sqrt(a) / scale[index]
//   x_prev  = sqrt(a_prev) scale_prev[index] pred_x0 + sqrt(1 - a_prev - sigma^2) e + sigma noise
// on the tape when one is active (gradients to x and e). noise may be NULL when sigma is 0.
// Returns x_prev; *pred_x0_out (optional) receives pred_x0.
vt_tensor *vt_ddim_step(const vt_ddim_schedule *s, int index, vt_tensor *x, vt_tensor *e, vt_tensor *noise,
                        vt_tensor **pred_x0_out);

// Classifier-free guidance: e_u + scale (e_c - e_u)  (= (1 - s) e_u + s e_c)
vt_tensor *vt_cfg_combine(vt_tensor *e_cond, vt_tensor *e_uncond, float scale);

#ifdef __cplusplus
}
#endif
