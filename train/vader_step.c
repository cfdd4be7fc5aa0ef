// vader_step.c — one VADER training step (see vader_step.h).
#include "vader_step.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef VADER_HAVE_CUDA
#include "cuda/backend.h"
#endif
#include "train/memplan.h"

// VADER's colour-reward fixture uses this projection (vader_step_tiny.json "reward").
const float vt_color_reward_rgb[3] = {0.7f, -0.2f, 0.5f};

void vt_vader_step_args_default(vt_vader_step_args *a) {
    memset(a, 0, sizeof *a);
    a->guidance = 12.0f;
    a->batch_cfg = 1;
    a->K = 1;
    a->backprop_mode = VT_CFG_BACKPROP_LAST;
    a->decode = VT_CFG_DECODE_RANDOM;
    a->checkpointing = 1;
    a->nograd_fast = 1;
    a->reward = vt_color_reward;
    a->loss_scale = 1.0f;
    a->backward = 1;
}

void vt_vader_step_args_init(vt_vader_step_args *a, vt_unet3d *unet, vt_vae_decoder *vae, const vt_ddim_schedule *sched,
                             vt_tensor *x_T, vt_tensor *context, vt_tensor *uncond_context, const vt_tensor *fps) {
    vt_vader_step_args_default(a);
    a->unet = unet;
    a->vae = vae;
    a->sched = sched;
    a->x_T = x_T;
    a->context = context;
    a->uncond_context = uncond_context;
    a->fps = fps;
}

void vt_vader_step_args_from_config(vt_vader_step_args *a, const vt_config *c) {
    a->guidance = (float)c->sampler.guidance_scale;
    a->K = c->sampler.backprop_steps;
    a->backprop_mode = c->sampler.backprop_mode;
    a->backprop_step = c->sampler.backprop_step;
    a->decode = c->memory.decode_frames;
    a->decode_index = c->memory.decode_index;
    a->checkpointing = c->memory.checkpointing;
    // memory.saved_dtype auto resolves per backend: the caller that knows the device sets it
    // (vt_memplan_saved_dtype); as named otherwise
    a->saved_dtype = vt_memplan_weight_dtype(c->memory.saved_dtype == VT_CFG_DTYPE_AUTO ? VT_CFG_DTYPE_FP32
                                                                                          : c->memory.saved_dtype);
}

// frames [B, 3, F, H, W] -> loss [] = -mean_b reward, reward [B]
vt_tensor *vt_color_reward(void *user, vt_tensor *frames, vt_tensor **reward) {
    *reward = NULL;
    if (!frames) return NULL;
    if (frames->ndim != 5 || frames->shape[1] != 3) {
        char s[VT_SHAPE_BUF];
        vt_error(VT_ERR_SHAPE, "colour reward: frames %s must be [B, 3, F, H, W]", vt_shape_str(frames, s, sizeof s));
        return NULL;
    }
    const float *rgb = user ? (const float *)user : vt_color_reward_rgb;
    int64_t B = frames->shape[0];
    vt_tensor *w = vt_move_to(vt_from_f32(4, (int64_t[]){3, 1, 1, 1}, rgb), frames->device);
    vt_tensor *c = vt_clamp(frames, -1.0f, 1.0f);
    vt_tensor *img = vt_affine(c, 0.5f, 0.5f);
    vt_tensor *wi = vt_mul(img, w);
    vt_tensor *s = vt_sum_dim(wi, 1, 0);  // [B, F, H, W]
    vt_tensor *flat = s ? vt_reshape(s, 2, (int64_t[]){B, s->numel / B}) : NULL;
    vt_tensor *r = vt_mean_dim(flat, 1, 0);  // [B]
    vt_tensor *m = vt_mean(r);
    vt_tensor *loss = vt_scale(m, -1.0f);
    vt_release(w);
    vt_release(c);
    vt_release(img);
    vt_release(wi);
    vt_release(s);
    vt_release(flat);
    vt_release(m);
    if (!loss) {
        vt_release(r);
        vt_error_context("colour reward: ");
        return NULL;
    }
    *reward = vt_detach(r);
    vt_release(r);
    return loss;
}

int vt_vader_decode_frames(vt_cfg_decode mode, int index, int T, vt_rng *rng, int *idx, int max) {
    int n = 0;
    switch (mode) {
    case VT_CFG_DECODE_RANDOM:
        if (!rng) {
            vt_error(VT_ERR_ARG, "decode_frames \"-1\": no rng for the random frame");
            return -1;
        }
        idx[n] = (int)(vt_rng_uniform(rng) * (float)T);
        if (idx[n] >= T) idx[n] = T - 1;
        n++;
        break;
    case VT_CFG_DECODE_FML:
        idx[n++] = 0;
        if (T > 2) idx[n++] = T / 2;
        if (T > 1) idx[n++] = T - 1;
        break;
    case VT_CFG_DECODE_ALT:
        for (int t = 0; t < T && n < max; t += 2) idx[n++] = t;
        break;
    case VT_CFG_DECODE_ALL:
        for (int t = 0; t < T && n < max; t++) idx[n++] = t;
        break;
    case VT_CFG_DECODE_INDEX:
        if (index < 0 || index >= T) {
            vt_error(VT_ERR_CONFIG, "memory.decode_frames: frame %d out of range for %d frames (0..%d)", index, T, T - 1);
            return -1;
        }
        idx[n++] = index;
        break;
    }
    return n;
}

void vt_vader_step_result_free(vt_vader_step_result *r) {
    if (!r) return;
    vt_release(r->samples);
    vt_release(r->frames);
    vt_release(r->reward);
    for (int i = 0; i < r->n_steps; i++) {
        if (r->x_prev) vt_release(r->x_prev[i]);
        if (r->pred_x0) vt_release(r->pred_x0[i]);
    }
    free(r->x_prev);
    free(r->pred_x0);
    memset(r, 0, sizeof *r);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// A phase boundary's time stamp (only taken when timing): on the GPU the queued kernels are
// waited for first, so each phase is charged its own device time.
static double phase_now(vt_device dev) {
#ifdef VADER_HAVE_CUDA
    if (dev == VT_CUDA) vt_cuda_synchronize();
#else
    (void)dev;
#endif
    return now_s();
}

static vt_tensor *filled_i64(int64_t n, int64_t v) {
    vt_tensor *t = vt_empty(VT_I64, VT_CPU, 1, (int64_t[]){n});
    if (t)
        for (int64_t i = 0; i < n; i++) vt_i64(t)[i] = v;
    return t;
}

// e for one DDIM step: the guided eps prediction at DDPM timestep t.
static vt_tensor *guided_eps(const vt_vader_step_args *a, vt_tensor *x, int64_t t, vt_tensor *ctx2, vt_tensor *fps2,
                             uint64_t seed) {
    int64_t B = x->shape[0];
    vt_unet3d *u = a->unet;
    if (a->guidance == 1.0f) {
        vt_tensor *ts = filled_i64(B, t);
        vt_tensor *e = ts ? vt_unet3d_forward(u, x, ts, a->context, a->fps, seed) : NULL;
        vt_release(ts);
        return e;
    }
    if (a->batch_cfg) {
        vt_tensor *pair[2] = {x, x};
        vt_tensor *x2 = vt_concat(pair, 2, 0);
        vt_tensor *ts = filled_i64(2 * B, t);
        vt_tensor *out = x2 && ts ? vt_unet3d_forward(u, x2, ts, ctx2, fps2, seed) : NULL;
        vt_tensor *ec = vt_slice(out, 0, 0, B), *eu = vt_slice(out, 0, B, B);
        vt_tensor *e = ec && eu ? vt_cfg_combine(ec, eu, a->guidance) : NULL;
        vt_release(x2);
        vt_release(ts);
        vt_release(out);
        vt_release(ec);
        vt_release(eu);
        return e;
    }
    vt_tensor *ts = filled_i64(B, t);
    vt_tensor *ec = ts ? vt_unet3d_forward(u, x, ts, a->context, a->fps, seed) : NULL;
    vt_tensor *eu = ec ? vt_unet3d_forward(u, x, ts, a->uncond_context, a->fps, vt_hash64(seed, 1)) : NULL;
    vt_tensor *e = eu ? vt_cfg_combine(ec, eu, a->guidance) : NULL;
    vt_release(ts);
    vt_release(ec);
    vt_release(eu);
    return e;
}

static void set_lora_grad(vt_unet3d *u, int on) {
    int n = vt_unet3d_n_lora(u);
    for (int i = 0; i < n; i++) {
        vt_tensor *p = vt_unet3d_lora_param(u, i, NULL);
        p->requires_grad = on;
    }
}

static vt_err check_args(const vt_vader_step_args *a) {
    char s1[VT_SHAPE_BUF], s2[VT_SHAPE_BUF];
    if (!a->unet || !a->vae || !a->sched || !a->x_T || !a->context || !a->reward)
        return vt_error(VT_ERR_ARG, "vader step: unet, vae, schedule, x_T, context and reward are required");
    if (a->x_T->ndim != 5) return vt_error(VT_ERR_SHAPE, "vader step: x_T %s must be [B, C, T, h, w]", vt_shape_str(a->x_T, s1, sizeof s1));
    int64_t B = a->x_T->shape[0];
    if (a->context->ndim != 3 || a->context->shape[0] != B)
        return vt_error(VT_ERR_SHAPE, "vader step: context %s must be [%lld, L, D] for x_T %s",
                        vt_shape_str(a->context, s1, sizeof s1), (long long)B, vt_shape_str(a->x_T, s2, sizeof s2));
    if (a->guidance != 1.0f && (!a->uncond_context || !vt_same_shape(a->uncond_context, a->context)))
        return vt_error(VT_ERR_SHAPE, "vader step: uncond_context must be given with the shape of context %s",
                        vt_shape_str(a->context, s1, sizeof s1));
    int S = a->sched->steps;
    if (a->K < 0 || a->K > S) return vt_error(VT_ERR_CONFIG, "sampler.backprop_steps: K = %d must be in 0..%d (sampler.steps)", a->K, S);
    if (a->K > 0 && a->backprop_mode == VT_CFG_BACKPROP_SPECIFIC &&
        (a->backprop_step < 0 || a->backprop_step + a->K > S))
        return vt_error(VT_ERR_CONFIG, "sampler.backprop_step: %d must be in 0..%d (the taped steps are "
                        "backprop_step .. backprop_step + K - 1 of %d)", a->backprop_step, S - a->K, S);
    if (!a->noise && !a->rng) return vt_error(VT_ERR_ARG, "vader step: neither noise nor an rng given");
    if (a->start_step < 0 || a->start_step >= S)
        return vt_error(VT_ERR_ARG, "vader step: start_step %d out of 0..%d", a->start_step, S - 1);
    return VT_OK;
}

vt_err vt_vader_step(const vt_vader_step_args *a, vt_vader_step_result *r) {
    memset(r, 0, sizeof *r);
    if (check_args(a)) return vt_error_code();
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const vt_ddim_schedule *sc = a->sched;
    int S = sc->steps, K = a->K;
    int64_t B = a->x_T->shape[0];
    int T = (int)a->x_T->shape[2];
    // the taped window [start, end]
    int end = S - 1;
    if (K > 0 && a->backprop_mode == VT_CFG_BACKPROP_RAND) {
        if (!a->rng) return vt_error(VT_ERR_ARG, "vader step: backprop_mode rand needs an rng");
        end = K - 1 + (int)(vt_rng_uniform(a->rng) * (float)(S - K + 1));
        if (end > S - 1) end = S - 1;
    } else if (K > 0 && a->backprop_mode == VT_CFG_BACKPROP_SPECIFIC) {
        end = a->backprop_step + K - 1;
    }
    int start = K > 0 ? end - K + 1 : S;
    r->window_start = K > 0 ? start : -1;
    r->window_end = K > 0 ? end : -1;

    vt_err e = VT_OK;
    vt_tape *tape = NULL;
    vt_tensor *x = vt_retain(a->x_T), *ctx2 = NULL, *fps2 = NULL, *z = NULL, *frames = NULL, *loss = NULL;
    vt_tensor *reward = NULL;
    vt_tensor *zs[VT_VADER_MAX_FRAMES] = {0};
    int was_ckpt_vae = a->vae->segments;
    vt_unet3d_set_checkpoint(a->unet, a->checkpointing);
    a->vae->segments = a->checkpointing;
    if (a->record_steps) {
        r->x_prev = calloc((size_t)S, sizeof *r->x_prev);
        r->pred_x0 = calloc((size_t)S, sizeof *r->pred_x0);
        if (!r->x_prev || !r->pred_x0) {
            e = vt_error(VT_ERR_OOM, "vader step: out of host memory");
            goto done;
        }
        r->n_steps = S;
    }
    if (a->guidance != 1.0f && a->batch_cfg) {
        vt_tape *tok = vt_nograd_begin();
        vt_tensor *pair[2] = {a->context, a->uncond_context};
        ctx2 = vt_concat(pair, 2, 0);
        fps2 = vt_empty(VT_I64, VT_CPU, 1, (int64_t[]){2 * B});  // fps is host data (the embedding's input)
        vt_tensor *fps_host = a->fps ? vt_on_device(a->fps, VT_CPU) : NULL;
        if (fps2 && (!a->fps || fps_host))
            for (int64_t b = 0; b < 2 * B; b++) vt_i64(fps2)[b] = fps_host ? vt_i64(fps_host)[b % B] : 16;
        else vt_clear(&fps2);
        vt_release(fps_host);
        vt_nograd_end(tok);
        if (!ctx2 || !fps2) {
            e = vt_error_code();
            goto done;
        }
    }

    // The untaped steps (all before the window) share one merged copy of the LoRA weights and
    // one projection of the context's K/V: the LoRA cannot change inside a step. Dropped at the
    // first taped step, which runs the LoRA branch on the tape (its gradients) and so frees the
    // copies' memory before the taped activations need it.
    int fast = a->nograd_fast && a->start_step < start && vt_unet3d_lora_dropout(a->unet) <= 0.0f;
    if (fast) {
        e = vt_unet3d_lora_merge(a->unet);
        if (!e) e = vt_unet3d_cache_context(a->unet, ctx2 ? ctx2 : a->context);
        if (e) goto done;
    }

    vt_step_timing *tm = a->timing;
    double tp = tm ? phase_now(a->x_T->device) : 0;
    for (int i = a->start_step; i < S; i++) {
        int index = S - 1 - i;
        int taped = i >= start;
        if (taped && fast) {
            vt_unet3d_cache_context(a->unet, NULL);
            vt_unet3d_lora_unmerge(a->unet);
            fast = 0;
        }
        if (tm) tp = phase_now(a->x_T->device);
        vt_tensor *noise = NULL;
        if (a->noise) noise = vt_retain(a->noise[i]);
        else if ((noise = vt_new_f32(x->ndim, x->shape))) vt_fill_normal(noise, a->rng, 0.0f, 1.0f);
        noise = vt_move_to(noise, x->device);  // drawn on the host: CPU and GPU runs see the same noise
        if (!noise) {
            e = vt_error_code() ? vt_error_code() : vt_error(VT_ERR_ARG, "vader step: noise %d missing", i);
            goto done;
        }
        if (taped && !tape && (tape = vt_tape_begin()) && vt_tape_set_saved_dtype(tape, a->saved_dtype)) {
            e = vt_error_context("vader step: ");
            vt_release(noise);
            goto done;
        }
        set_lora_grad(a->unet, taped && i <= end);
        vt_tape *tok = taped ? NULL : vt_nograd_begin();
        vt_tensor *eps = guided_eps(a, x, sc->timesteps[index], ctx2, fps2, vt_hash64(a->dropout_seed, (uint64_t)i));
        vt_tensor *pred = NULL;
        vt_tensor *xn = eps ? vt_ddim_step(sc, index, x, eps, noise, &pred) : NULL;
        if (!taped) vt_nograd_end(tok);
        vt_release(eps);
        vt_release(noise);
        vt_release(x);
        x = xn;
        if (!xn) {
            vt_release(pred);
            e = vt_error_code();
            vt_error_context("vader step %d/%d (t = %lld): ", i, S, (long long)sc->timesteps[index]);
            goto done;
        }
        if (a->record_steps) {
            r->x_prev[i] = vt_detach(xn);
            r->pred_x0[i] = vt_detach(pred);
        }
        vt_release(pred);
        if (tm) {
            double dt = phase_now(a->x_T->device) - tp;
            if (taped) tm->taped_fwd_s += dt, tm->taped_steps++;
            else tm->nograd_s += dt, tm->nograd_steps++;
        }
    }
    set_lora_grad(a->unet, 1);

    // decode the chosen frames on the tape (when there is one) and score them
    {
        vt_tape *tok = tape ? NULL : vt_nograd_begin();
        int n = vt_vader_decode_frames(a->decode, a->decode_index, T, a->rng, r->frame_index, VT_VADER_MAX_FRAMES);
        if (n > 0) {
            r->n_frames = n;
            for (int j = 0; j < n; j++) zs[j] = vt_slice(x, 2, r->frame_index[j], 1);
            z = n == 1 ? vt_retain(zs[0]) : vt_concat(zs, n, 2);
            if (tm) tp = phase_now(a->x_T->device);
            frames = vt_vae_decode_video(a->vae, z);
            if (tm) tm->decode_s += phase_now(a->x_T->device) - tp, tp = phase_now(a->x_T->device);
            loss = frames ? a->reward(a->reward_user, frames, &reward) : NULL;
            if (tm) tm->reward_s += phase_now(a->x_T->device) - tp;
        }
        if (!tape) vt_nograd_end(tok);
        if (!loss) {
            e = vt_error_code();
            vt_error_context("vader step decode/reward: ");
            goto done;
        }
    }
    if (tape) vt_tape_end(tape);
    {
        vt_tensor *lh = vt_on_device(loss, VT_CPU);
        if (!lh) {
            e = vt_error_code();
            goto done;
        }
        r->loss = vt_f32(lh)[0];
        vt_release(lh);
    }
    if (tape && a->backward && K > 0) {
        if (tm) tp = phase_now(a->x_T->device);
        vt_tensor *gout = a->loss_scale != 1.0f ? vt_full(loss->device, loss->ndim, loss->shape, a->loss_scale) : NULL;
        if (a->loss_scale != 1.0f && !gout) e = vt_error_code();
        else if (loss->requires_grad) e = vt_backward(tape, loss, gout);
        vt_release(gout);
        if (tm) tm->backward_s += phase_now(a->x_T->device) - tp;
        if (e) {
            vt_error_context("vader step backward: ");
            goto done;
        }
    }
    if (tm) tm->vader_steps++;
    r->samples = vt_detach(x);
    r->frames = vt_detach(frames);
    r->reward = vt_retain(reward);
done:
    vt_unet3d_cache_context(a->unet, NULL);
    vt_unet3d_lora_unmerge(a->unet);
    set_lora_grad(a->unet, 1);
    if (tape && vt_tape_current() == tape) vt_tape_end(tape);
    vt_tape_free(tape);
    vt_unet3d_release_segments(a->unet);
    a->vae->segments = was_ckpt_vae;
    for (int j = 0; j < VT_VADER_MAX_FRAMES; j++) vt_release(zs[j]);
    vt_release(x);
    vt_release(ctx2);
    vt_release(fps2);
    vt_release(z);
    vt_release(frames);
    vt_release(loss);
    vt_release(reward);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    r->seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (e) {
        vt_vader_step_result_free(r);
        return e;
    }
    return VT_OK;
}

vt_tensor *vt_vader_encode_prompts(vt_openclip *clip, vt_tokenizer *tok, const char *const *prompts, int n) {
    if (!clip || !clip->text || !tok || n < 1) {
        vt_error(VT_ERR_ARG, "encode prompts: need a text tower, a tokenizer and at least one prompt");
        return NULL;
    }
    int L = clip->text->context_length;
    vt_tensor *ids = vt_empty(VT_I64, VT_CPU, 2, (int64_t[]){n, L});
    if (!ids) return NULL;
    for (int i = 0; i < n; i++)
        if (vt_tokenize(tok, prompts[i], vt_i64(ids) + (size_t)i * L, L)) {
            vt_release(ids);
            vt_error_context("encode prompt %d: ", i);
            return NULL;
        }
    vt_tape *tk = vt_nograd_begin();
    vt_tensor *c = vt_openclip_encode_text_penultimate(clip, ids);
    vt_nograd_end(tk);
    vt_release(ids);
    return c;
}
