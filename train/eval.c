// eval.c — see eval.h.
#include "train/eval.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "train/png.h"
#include "train/sample.h"
#include "train/trainer.h"
#include "train/vader_step.h"

#define EVAL_MAX_REWARDS 8
#define EVAL_MAX_BATCH 64
#define EVAL_SEED_SALT 0xE7A15EEDull

struct vt_evaluator {
    const vt_config *cfg;  // borrowed (the trainer's copy)
    vt_reward *const *rewards;
    int n_prompts;
    vt_tensor **ctx;  // [1, L, D] per prompt
    vt_tensor *uncond;
};

int vt_eval_columns(const vt_config *cfg, const char ***cols) {
    const char **tc = NULL;
    int nt = vt_trainer_train_columns(cfg, &tc);
    if (nt < 0) return -1;
    const char **c = calloc((size_t)nt + 3, sizeof *c);
    if (!c) {
        free(tc);
        return -1;
    }
    int n = 0;
    c[n++] = "step";
    c[n++] = "reward_mean";
    c[n++] = "reward_std";
    for (int i = 0; i < nt; i++)
        if (strncmp(tc[i], "reward/", 7) == 0) c[n++] = tc[i];  // names live in trainer.c's static table
    free(tc);
    *cols = c;
    return n;
}

vt_evaluator *vt_evaluator_create(const vt_config *cfg, vt_openclip *clip, vt_tokenizer *tok, vt_reward *const *rewards) {
    vt_error_clear();
    if (cfg->output.eval_every <= 0 || cfg->data.n_eval_prompts <= 0) return NULL;
    if (cfg->reward.n_modules > EVAL_MAX_REWARDS) {
        vt_error(VT_ERR_CONFIG, "reward: at most %d modules", EVAL_MAX_REWARDS);
        return NULL;
    }
    vt_evaluator *ev = calloc(1, sizeof *ev);
    if (!ev || !(ev->ctx = calloc((size_t)cfg->data.n_eval_prompts, sizeof *ev->ctx))) {
        free(ev);
        vt_error(VT_ERR_OOM, "evaluator");
        return NULL;
    }
    ev->cfg = cfg;
    ev->rewards = rewards;
    ev->n_prompts = cfg->data.n_eval_prompts;
    vt_err e = VT_OK;
    for (int i = 0; !e && i < ev->n_prompts; i++) {
        const char *p = cfg->data.eval_prompts[i];
        if (!(ev->ctx[i] = vt_vader_encode_prompts(clip, tok, &p, 1))) e = vt_error_context("data.eval_prompts.%d: ", i);
    }
    const char *empty = "";
    if (!e && !(ev->uncond = vt_vader_encode_prompts(clip, tok, &empty, 1))) e = vt_error_code();
    if (e) {
        vt_evaluator_free(ev);
        return NULL;
    }
    return ev;
}

int vt_evaluator_due(const vt_evaluator *ev, int64_t step) {
    return ev && step > 0 && step % ev->cfg->output.eval_every == 0;
}

void vt_evaluator_free(vt_evaluator *ev) {
    if (!ev) return;
    for (int i = 0; ev->ctx && i < ev->n_prompts; i++) vt_release(ev->ctx[i]);
    free(ev->ctx);
    vt_release(ev->uncond);
    free(ev);
}

// ---- the reward of a batch (no tape: vt_sample_run runs without one) ----------------------
typedef struct eval_reward_ctx {
    const vt_config *cfg;
    vt_reward *const *mods;
    const char *const *prompts;
    vt_tensor *module_reward[EVAL_MAX_REWARDS];
} eval_reward_ctx;

static vt_tensor *eval_reward(void *user, vt_tensor *frames, vt_tensor **reward) {
    eval_reward_ctx *rc = user;
    *reward = NULL;
    vt_tensor *rsum = NULL;
    for (int m = 0; m < rc->cfg->reward.n_modules; m++) {
        const vt_config_reward *rm = &rc->cfg->reward.modules[m];
        vt_tensor *r = NULL, *l = NULL;
        if (vt_reward_forward(rc->mods[m], frames, rc->prompts, &r, &l)) {
            vt_error_context("eval reward %s: ", vt_cfg_reward_name(rm->kind));
            vt_release(rsum);
            return NULL;
        }
        vt_tensor *wr = vt_scale(r, (float)rm->weight);
        vt_tensor *nr = rsum ? vt_add(rsum, wr) : vt_retain(wr);
        vt_release(rc->module_reward[m]);
        rc->module_reward[m] = r;
        vt_release(l);
        vt_release(wr);
        vt_release(rsum);
        rsum = nr;
        if (!rsum) return NULL;
    }
    *reward = rsum;
    return vt_new_f32(1, (int64_t[]){1});  // no loss: nothing is optimised
}

static void mean_std(const double *v, int n, double *mean, double *std) {
    double s = 0, q = 0;
    for (int i = 0; i < n; i++) s += v[i];
    *mean = n ? s / n : NAN;
    for (int i = 0; i < n; i++) q += (v[i] - *mean) * (v[i] - *mean);
    *std = n > 1 ? sqrt(q / (n - 1)) : 0.0;
}

static vt_tensor *host_f32(vt_tensor *t) {
    if (!t) return NULL;
    if (t->device == VT_CPU && t->dtype == VT_F32) return vt_retain(t);
    vt_tensor *h = t->device != VT_CPU ? vt_to_device(t, VT_CPU) : vt_retain(t);
    vt_tensor *f = h && h->dtype != VT_F32 ? vt_to_dtype(h, VT_F32) : vt_retain(h);
    vt_release(h);
    return f;
}

// The decoded frames of video b as OUTPUT_DIR/samples/step-N/<prompt>/frame-<index>.png.
static vt_err write_samples_of(const vt_config *c, int64_t step, int prompt, const char *text,
                               const vt_vader_step_result *r, int b) {
    char dir[4200], path[4300];
    snprintf(dir, sizeof dir, "%s/samples/step-%06lld/%d", c->output.dir, (long long)step, prompt);
    if (vt_mkdir_p(dir)) return vt_error_code();
    vt_tensor *fr = host_f32(r->frames);
    if (!fr) return vt_error_code();
    int H = (int)fr->shape[3], W = (int)fr->shape[4];
    uint8_t *rgb = malloc((size_t)H * (size_t)W * 3);
    vt_err e = rgb ? VT_OK : vt_error(VT_ERR_OOM, "eval samples");
    for (int j = 0; !e && j < r->n_frames; j++) {
        vt_frames_to_rgb8(fr, b, j, rgb);
        snprintf(path, sizeof path, "%s/frame-%03d.png", dir, r->frame_index[j]);
        e = vt_png_write(path, W, H, rgb);
    }
    if (!e) {
        snprintf(path, sizeof path, "%s/prompt.txt", dir);
        FILE *f = fopen(path, "w");
        if (f) {
            fprintf(f, "%s\n", text);
            fclose(f);
        }
    }
    free(rgb);
    vt_release(fr);
    return e;
}

vt_err vt_evaluator_run(vt_evaluator *ev, vt_unet3d *unet, vt_vae_decoder *vae, const vt_ddim_schedule *sched,
                        int64_t step, int write_samples, double *row) {
    const vt_config *c = ev->cfg;
    int N = ev->n_prompts, nm = c->reward.n_modules;
    int B = c->data.batch_size < EVAL_MAX_BATCH ? c->data.batch_size : EVAL_MAX_BATCH;
    double *vals = calloc((size_t)N * (size_t)(nm + 1), sizeof *vals);
    if (!vals) return vt_error(VT_ERR_OOM, "eval");
    vt_rng rng;
    vt_rng_seed(&rng, vt_hash64(c->seed ^ EVAL_SEED_SALT, 0));
    eval_reward_ctx rc = {c, ev->rewards, NULL, {0}};
    vt_err e = VT_OK;
    for (int p0 = 0; p0 < N && !e; p0 += B) {
        int nb = N - p0 < B ? N - p0 : B;
        vt_tensor *rows[EVAL_MAX_BATCH], *urows[EVAL_MAX_BATCH];
        const char *prompts[EVAL_MAX_BATCH];
        for (int b = 0; b < nb; b++) {
            rows[b] = ev->ctx[p0 + b];
            urows[b] = ev->uncond;
            prompts[b] = c->data.eval_prompts[p0 + b];
        }
        vt_tape *tk = vt_nograd_begin();
        vt_tensor *ctx = nb == 1 ? vt_retain(rows[0]) : vt_concat(rows, nb, 0);
        vt_tensor *uctx = nb == 1 ? vt_retain(urows[0]) : vt_concat(urows, nb, 0);
        vt_nograd_end(tk);
        rc.prompts = prompts;
        vt_vader_step_result r;
        memset(&r, 0, sizeof r);
        if (!ctx || !uctx) e = vt_error_code();
        if (!e) e = vt_sample_run(unet, vae, sched, c, ctx, uctx, &rng, c->memory.decode_frames, c->memory.decode_index,
                                  eval_reward, &rc, &r);
        if (!e && (!r.reward || r.reward->numel != nb)) e = vt_error(VT_ERR_INTERNAL, "eval: no reward per prompt");
        vt_tensor *rh = e ? NULL : host_f32(r.reward);
        for (int b = 0; !e && b < nb; b++) {
            vals[p0 + b] = rh ? vt_f32(rh)[b] : NAN;
            for (int m = 0; m < nm; m++) {
                vt_tensor *mh = host_f32(rc.module_reward[m]);
                vals[(size_t)(m + 1) * (size_t)N + (size_t)(p0 + b)] = mh ? vt_f32(mh)[b] : NAN;
                vt_release(mh);
            }
            if (write_samples && p0 + b < VT_EVAL_SAMPLE_PROMPTS)
                e = write_samples_of(c, step, p0 + b, prompts[b], &r, b);
        }
        vt_release(rh);
        vt_vader_step_result_free(&r);
        vt_release(ctx);
        vt_release(uctx);
    }
    for (int m = 0; m < EVAL_MAX_REWARDS; m++) vt_release(rc.module_reward[m]);
    if (!e) {
        row[0] = (double)step;
        mean_std(vals, N, &row[1], &row[2]);
        for (int m = 0; m < nm; m++) mean_std(vals + (size_t)(m + 1) * (size_t)N, N, &row[3 + 2 * m], &row[4 + 2 * m]);
    }
    free(vals);
    return e ? vt_error_context("eval at step %lld: ", (long long)step) : VT_OK;
}
