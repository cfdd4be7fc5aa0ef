// ddim.c — DDIM schedule and update (see ddim.h). The schedule is computed in float64 as
// lvdm does (register_schedule builds betas with torch float64) and rounded to float32 only
// where it multiplies tensors.
#include "ddim.h"
#include <math.h>
#include <stdlib.h>

vt_ddim_options vt_ddim_default_options(int steps, double eta) {
    vt_ddim_options o = {steps, eta, 0.00085, 0.012, 1, 1.0, 0.7, 400};
    return o;
}

vt_err vt_ddim_init(vt_ddim_schedule *s, const vt_ddim_options *o) {
    *s = (vt_ddim_schedule){0};
    if (o->steps < 1 || o->steps > VT_DDPM_STEPS)
        return vt_error(VT_ERR_CONFIG, "sampler.steps: %d, must be in 1..%d", o->steps, VT_DDPM_STEPS);
    if (!(o->eta >= 0)) return vt_error(VT_ERR_CONFIG, "sampler.eta: %g, must be >= 0", o->eta);
    if (o->use_scale && (o->mid_step < 1 || o->mid_step > VT_DDPM_STEPS))
        return vt_error(VT_ERR_CONFIG, "ddim mid_step %d out of 1..%d", o->mid_step, VT_DDPM_STEPS);
    s->eta = o->eta;
    // betas = linspace(sqrt(start), sqrt(end), 1000) ** 2
    double a = sqrt(o->linear_start), b = sqrt(o->linear_end), prod = 1.0;
    for (int i = 0; i < VT_DDPM_STEPS; i++) {
        double r = a + (b - a) * (double)i / (double)(VT_DDPM_STEPS - 1);
        prod *= 1.0 - r * r;
        s->alphas_cumprod[i] = prod;
    }
    // scale_arr = concat(linspace(scale_a, scale_b, mid_step), full(.., scale_b)): only the
    // first 1000 entries are ever indexed.
    for (int i = 0; i < VT_DDPM_STEPS; i++) {
        if (!o->use_scale) s->scale_arr[i] = 1.0;
        else if (i < o->mid_step)
            s->scale_arr[i] = o->mid_step == 1 ? o->scale_a
                                               : o->scale_a + (o->scale_b - o->scale_a) * (double)i / (double)(o->mid_step - 1);
        else s->scale_arr[i] = o->scale_b;
    }
    // lvdm's "uniform" DDIM timesteps: range(0, 1000, c) + 1 with c = 1000 // steps. That is
    // exactly `steps` entries only when steps divides 1000; otherwise lvdm samples with
    // ceil(1000 / c) steps (steps 6: c 166, 7 timesteps), and so do we, so that a run or a fixture
    // with such a step count sees the timesteps upstream uses.
    int c = VT_DDPM_STEPS / o->steps, S = (VT_DDPM_STEPS + c - 1) / c;
    if ((int64_t)(S - 1) * c + 1 >= VT_DDPM_STEPS)
        return vt_error(VT_ERR_CONFIG, "sampler.steps: %d gives the DDIM timestep %d (c = 1000 // %d = %d), past the "
                        "1000-step schedule (lvdm fails there too): use a step count that divides 1000",
                        o->steps, (S - 1) * c + 1, o->steps, c);
    s->steps = S;
    s->timesteps = malloc(sizeof(int64_t) * (size_t)S);
    s->alphas = malloc(sizeof(double) * (size_t)S * 5);
    if (!s->timesteps || !s->alphas) {
        vt_ddim_free(s);
        return vt_error(VT_ERR_OOM, "ddim schedule");
    }
    s->alphas_prev = s->alphas + S;
    s->sigmas = s->alphas + 2 * S;
    s->scale = s->alphas + 3 * S;
    s->scale_prev = s->alphas + 4 * S;
    for (int i = 0; i < S; i++) {
        int64_t t = (int64_t)i * c + 1;  // lvdm's "uniform" discretisation adds one
        s->timesteps[i] = t;
        // lvdm registers alphas_cumprod as float32 and builds the DDIM arrays in numpy from
        // those values ((1 - alphas) stays float32 there), so round the same way.
        s->alphas[i] = (float)s->alphas_cumprod[t];
        s->alphas_prev[i] = (float)(i ? s->alphas_cumprod[s->timesteps[i - 1]] : s->alphas_cumprod[0]);
        double one_minus_a = (float)(1.0f - (float)s->alphas[i]);
        s->sigmas[i] = o->eta * sqrt((1 - s->alphas_prev[i]) / one_minus_a * (1 - s->alphas[i] / s->alphas_prev[i]));
        s->scale[i] = s->scale_arr[t];
        s->scale_prev[i] = i ? s->scale_arr[s->timesteps[i - 1]] : s->scale_arr[0];
    }
    return VT_OK;
}

void vt_ddim_free(vt_ddim_schedule *s) {
    free(s->timesteps);
    free(s->alphas);
    s->timesteps = NULL;
    s->alphas = NULL;
}

vt_tensor *vt_ddim_step(const vt_ddim_schedule *s, int index, vt_tensor *x, vt_tensor *e, vt_tensor *noise,
                        vt_tensor **pred_x0_out) {
    if (pred_x0_out) *pred_x0_out = NULL;
    if (!x || !e) return NULL;
    if (index < 0 || index >= s->steps) {
        vt_error(VT_ERR_ARG, "ddim step index %d out of 0..%d", index, s->steps - 1);
        return NULL;
    }
    // Coefficients are float32, as the upstream sampler multiplies float32 tensors by
    // float32 scalars taken from float64 arrays.
    double a = s->alphas[index], ap = s->alphas_prev[index], sig = s->sigmas[index];
    float inv_sqrt_a = (float)(1.0 / sqrt(a)), sqrt_1ma = (float)sqrt(1.0 - a);
    float scale = (float)s->scale[index];
    float c_x0 = (float)(sqrt(ap) * s->scale_prev[index]);
    float c_dir = (float)sqrt(fmax(1.0 - ap - sig * sig, 0.0));
    // pred_x0 = (x - sqrt(1-a) e) / sqrt(a), then / scale
    vt_tensor *num = vt_axpby(1.0f, x, -sqrt_1ma, e);
    vt_tensor *p0 = vt_affine(num, inv_sqrt_a, 0.0f);
    vt_release(num);
    vt_tensor *pred = vt_affine(p0, 1.0f / scale, 0.0f);
    vt_release(p0);
    vt_tensor *xp = vt_axpby(c_x0, pred, c_dir, e);
    if (sig != 0.0 && noise) {
        vt_tensor *with_noise = vt_axpby(1.0f, xp, (float)sig, noise);
        vt_release(xp);
        xp = with_noise;
    }
    if (pred_x0_out) *pred_x0_out = pred;
    else vt_release(pred);
    return xp;
}

vt_tensor *vt_cfg_combine(vt_tensor *e_cond, vt_tensor *e_uncond, float scale) {
    return vt_axpby(scale, e_cond, 1.0f - scale, e_uncond);
}
