// vader-bench — times VADER training steps at a given config (a program, not a test).
//
//   vader-bench [CONFIG] [--set a.b=c]... [--steps N] [--warmup N] [--threads N] [--json OUT]
//               [--device-peak-tflops X] [--memory-limit SIZE] [--dry-run] [--no-dropout]
//               [--lora-b-std S] [--save-weights PATH] [--save-io PATH]
//
// CONFIG is a vader-train YAML (default: the embedded tiny CPU config). The models are built as
// vader-train builds them: the tiny random preset when the config names no checkpoints, the
// full-size shapes with random values when model.unet / vae / text name shared/manifests/*.txt
// (with model.random_weights: true), or real checkpoints. Each optimisation step is what the
// trainer does: optim.accumulation micro-batches of data.batch_size prompts, one VADER step each
// (train/vader_step.h), gradient clipping and AdamW. --warmup steps (default 1) run first,
// untimed; then --steps (default 3) timed steps.
//
// Printed: s/step (min, median), the per-phase breakdown (vt_step_timing: no-grad sampling
// steps, taped steps' forward, decode, reward, backward, optimizer, all-reduce), the step's FLOP
// count (train/flops.h) and achieved GFLOP/s with the fraction of the device's peak
// (--device-peak-tflops; default: 67 for device cuda (the H100 SXM's fp32 rate: the CUDA kernels
// are fp32 without TF32), on the CPU the rate of a 1024^3 OpenBLAS sgemm measured here), and the
// memory plan's predicted peak next to the measured one (the CPU allocator's peak over the timed
// run).
//
//   --dry-run         FLOP count and memory plan only (no models built: any size on any machine)
//   --no-dropout      eval mode (the trainer trains with temporal-conv dropout 0.1 and the
//                     config's LoRA dropout); the PyTorch comparison uses this
//   --lora-b-std S    lora_B ~ N(0, S^2) instead of zeros (so d/dA is not zero in comparisons)
//   --save-weights P  the models' weights as one safetensors file: model.diffusion_model.*,
//                     first_stage_model.* (decoder + post_quant_conv), and the LoRA parameters
//                     (peft names), as they are before the first step
//   --save-io P       the first step's inputs and outputs (x_T, context, uncond_context, fps,
//                     noise.I for every DDIM step, frame_index, loss, reward, frames, grad.<LoRA
//                     name>: d loss / d LoRA before the optimizer update)
//   --device D        = --set device=D (auto: cuda when a GPU is visible, as vader-train
//                     chooses). device: cuda (builds with the CUDA backend) moves the
//                     models, reward modules and prompt contexts to the GPU as the trainer does;
//                     the phase timings then wait for the GPU at each phase boundary
//                     (vt_cuda_synchronize), and the measured memory is the CUDA allocator's peak
#include <cblas.h>
#include <cjson/cJSON.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/safetensors.h"
#include "core/vt.h"
#include "core/weights.h"
#include "rewards/reward.h"
#include "train/adamw.h"
#include "train/bench_util.h"
#include "train/config.h"
#include "train/ddim.h"
#include "train/flops.h"
#include "train/lora.h"
#include "train/memplan.h"
#include "train/models.h"
#include "train/tiny_models.h"
#include "train/vader_step.h"
#ifdef VADER_HAVE_CUDA
#include "cuda/backend.h"
#endif

#define MAX_REWARDS 8
#define MAX_B 64
#define TEMPORAL_CONV_DROPOUT 0.1f

// GFLOP/s of a 1024^3 sgemm with the current threads (best of 5): the CPU's practical peak.
static double sgemm_gflops(void) {
    const int n = 1024;
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        return 0;
    }
    for (int i = 0; i < n * n; i++) a[i] = (float)(i % 7) * 0.1f, b[i] = (float)(i % 5) * 0.1f;
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = vt_bench_now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = vt_bench_now_s() - t0;
        if (dt < best) best = dt;
    }
    free(a), free(b), free(c);
    return 2.0 * n * n * n / best / 1e9;
}

// ---- models (as the trainer builds them) ----------------------------------------------------
typedef struct bench {
    vt_config cfg;
    vt_vc2_models m;  // train/models.h: built as vader-train builds them
    vt_tokenizer *tok;
    vt_ddim_schedule sched;
    vt_tensor **params;
    int n_params;
    vt_adamw adam;
    int adam_ready;
    vt_reward *rewards[MAX_REWARDS];
    vt_tensor **prompt_ctx, *uncond_ctx;
    int n_prompts;
    int64_t n_text_params;  // the text tower, freed once the contexts are encoded
    vt_rng rng;
    vt_device dev;  // VT_CUDA for device: cuda (models moved as the trainer moves them)
} bench;

static vt_err build(bench *b) {
    const vt_config *c = &b->cfg;
    uint64_t seed = c->seed;
    if (vt_vc2_models_build(c, &b->m)) return vt_error_code();
    unsigned targets = 0;
    if (vt_lora_targets_from_names(c->lora.targets, c->lora.n_targets, &targets)) return vt_error_code();
    vt_unet3d_lora_config lc = {c->lora.rank, (float)c->lora.alpha, targets, vt_hash64(seed, 16)};
    if (vt_unet3d_add_lora(b->m.unet, &lc)) return vt_error_code();
    if (c->lora.checkpoint && vt_lora_load_file(b->m.unet, c->lora.checkpoint)) return vt_error_code();
    if (!(b->params = vt_lora_params(b->m.unet, &b->n_params))) return vt_error_code();
    if (vt_adamw_init(&b->adam, b->params, b->n_params, (float)c->optim.beta1, (float)c->optim.beta2, (float)c->optim.eps,
                      (float)c->optim.weight_decay))
        return vt_error_code();
    b->adam_ready = 1;
    vt_ddim_options dopt = vt_ddim_default_options(c->sampler.steps, c->sampler.eta);
    if (vt_ddim_init(&b->sched, &dopt)) return vt_error_code();
    // rewards: the config's checkpoints (with model.random_weights, an hps reward without one
    // was given the ViT-H-14 manifest by vt_vc2_random_weight_fallback)
    for (int m = 0; m < c->reward.n_modules; m++) {
        const vt_config_reward *rm = &c->reward.modules[m];
        vt_reward_kv kv[32];
        int n = rm->n_options < 32 ? rm->n_options : 32;
        for (int i = 0; i < n; i++) kv[i].key = rm->options[i].key, kv[i].value = rm->options[i].value;
        vt_reward_options o = {rm->checkpoint, NULL, NULL, kv, n};
        const char *name = vt_cfg_reward_name(rm->kind);
        b->rewards[m] = vt_reward_create(name, &o);
        if (!b->rewards[m]) return vt_error_context("reward.%d (%s): ", m, name);
        b->rewards[m]->segments = c->memory.checkpointing;
    }
    // prompt contexts, as the trainer computes them once
    if (!(b->tok = vt_vc2_tokenizer_open())) return vt_error_code();
    if (c->data.n_prompts < 1) return vt_error(VT_ERR_CONFIG, "vader-bench: data.prompts: give the prompts inline");
    b->n_prompts = c->data.n_prompts;
    if (!(b->prompt_ctx = calloc((size_t)b->n_prompts, sizeof *b->prompt_ctx))) return vt_error(VT_ERR_OOM, "contexts");
    for (int i = 0; i < b->n_prompts; i++) {
        const char *p = c->data.prompts[i];
        if (!(b->prompt_ctx[i] = vt_vader_encode_prompts(b->m.clip, b->tok, &p, 1))) return vt_error_code();
    }
    const char *empty = "";
    if (!(b->uncond_ctx = vt_vader_encode_prompts(b->m.clip, b->tok, &empty, 1))) return vt_error_code();
    // as the trainer, the text tower is done once the contexts exist (here: never uploaded)
    b->n_text_params = b->m.clip->n_params;
    vt_openclip_free(b->m.clip);
    b->m.clip = NULL;
    vt_rng_seed(&b->rng, seed);
    if (vt_vc2_models_apply_dtype(&b->m, c, b->dev != VT_CPU) ||
        vt_rewards_apply_dtype(b->rewards, MAX_REWARDS, c, b->dev != VT_CPU))
        return vt_error_code();
    // as the trainer: the rewards' prompt embeddings cached, their text towers freed (here on the
    // host, before the upload: the bench's few prompts)
    if (vt_rewards_cache_run_prompts(b->rewards, MAX_REWARDS, c, (const char *const *)c->data.prompts, c->data.n_prompts))
        return vt_error_code();
    if (b->dev != VT_CPU) {  // as the trainer: models (LoRA added) and reward modules onto the device
        if (vt_unet3d_to_device(b->m.unet, b->dev) || vt_vae_decoder_to_device(b->m.vae, b->dev))
            return vt_error_context("device: ");
        for (int m = 0; m < MAX_REWARDS; m++)
            if (b->rewards[m] && vt_reward_to_device(b->rewards[m], b->dev)) return vt_error_context("reward.%d device: ", m);
        for (int i = 0; i < b->n_prompts; i++)
            if (!(b->prompt_ctx[i] = vt_move_to(b->prompt_ctx[i], b->dev))) return vt_error_code();
        if (!(b->uncond_ctx = vt_move_to(b->uncond_ctx, b->dev))) return vt_error_code();
    }
    return VT_OK;
}

// Waits for the device's queued work (GPU runs, timing only); the CPU needs nothing.
static void bench_sync(const bench *b) {
#ifdef VADER_HAVE_CUDA
    if (b->dev == VT_CUDA) vt_cuda_synchronize();
#else
    (void)b;
#endif
}

static void bench_free(bench *b) {
    for (int m = 0; m < MAX_REWARDS; m++) {
        vt_reward_free(b->rewards[m]);
    }
    for (int i = 0; b->prompt_ctx && i < b->n_prompts; i++) vt_release(b->prompt_ctx[i]);
    free(b->prompt_ctx);
    vt_release(b->uncond_ctx);
    if (b->adam_ready) vt_adamw_free(&b->adam);
    free(b->params);
    vt_vc2_models_free(&b->m);
    vt_tokenizer_free(b->tok);
    vt_ddim_free(&b->sched);
}

// ---- reward: weighted sum of the modules (as the trainer) -----------------------------------
typedef struct reward_ctx {
    bench *b;
    const char *const *prompts;
} reward_ctx;

static vt_tensor *reward_sum(void *user, vt_tensor *frames, vt_tensor **reward) {
    reward_ctx *rc = user;
    const vt_config *c = &rc->b->cfg;
    vt_tensor *loss = NULL, *rsum = NULL;
    *reward = NULL;
    for (int m = 0; m < c->reward.n_modules; m++) {
        vt_tensor *r = NULL, *l = NULL;
        if (vt_reward_forward(rc->b->rewards[m], frames, rc->prompts, &r, &l)) {
            vt_release(loss);
            vt_release(rsum);
            return NULL;
        }
        float wgt = (float)c->reward.modules[m].weight;
        vt_tensor *wl = vt_scale(l, wgt);
        vt_tensor *nl = loss ? vt_add(loss, wl) : vt_retain(wl);
        vt_tape *tk = vt_nograd_begin();
        vt_tensor *rd = vt_detach(r);
        vt_tensor *wr = vt_scale(rd, wgt);
        vt_tensor *nr = rsum ? vt_add(rsum, wr) : vt_retain(wr);
        vt_nograd_end(tk);
        vt_release(r), vt_release(l), vt_release(wl), vt_release(rd), vt_release(wr);
        vt_release(loss), vt_release(rsum);
        loss = nl;
        rsum = nr;
    }
    *reward = rsum;
    return loss;
}

// ---- --save-weights ------------------------------------------------------------------------
typedef struct named {
    const char **names;
    char **owned;
    vt_tensor **ts;
    int n, cap;
} named;

static void add_named(named *s, const char *name, vt_tensor *t) {
    if (!t) return;
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 512;
        s->names = realloc(s->names, (size_t)s->cap * sizeof *s->names);
        s->owned = realloc(s->owned, (size_t)s->cap * sizeof *s->owned);
        s->ts = realloc(s->ts, (size_t)s->cap * sizeof *s->ts);
        if (!s->names || !s->owned || !s->ts) abort();
    }
    s->owned[s->n] = strdup(name);
    s->names[s->n] = s->owned[s->n];
    s->ts[s->n++] = t;
}

static void add_conv(named *s, const char *pre, const char *name, const vt_vae_conv *c) {
    char k[256];
    snprintf(k, sizeof k, "%s%s.weight", pre, name);
    add_named(s, k, c->w);
    snprintf(k, sizeof k, "%s%s.bias", pre, name);
    add_named(s, k, c->b);
}
static void add_norm(named *s, const char *pre, const char *name, const vt_vae_norm *c) {
    add_conv(s, pre, name, (const vt_vae_conv *)c);
}
static void add_res(named *s, const char *pre, const char *name, const vt_vae_resblock *r) {
    char k[200];
    const char *parts[4] = {"norm1", "conv1", "norm2", "conv2"};
    snprintf(k, sizeof k, "%s.%s", name, parts[0]), add_norm(s, pre, k, &r->norm1);
    snprintf(k, sizeof k, "%s.%s", name, parts[1]), add_conv(s, pre, k, &r->conv1);
    snprintf(k, sizeof k, "%s.%s", name, parts[2]), add_norm(s, pre, k, &r->norm2);
    snprintf(k, sizeof k, "%s.%s", name, parts[3]), add_conv(s, pre, k, &r->conv2);
    if (r->nin_shortcut.w) snprintf(k, sizeof k, "%s.nin_shortcut", name), add_conv(s, pre, k, &r->nin_shortcut);
}
static void add_attn(named *s, const char *pre, const char *name, const vt_vae_attnblock *a) {
    char k[200];
    snprintf(k, sizeof k, "%s.norm", name), add_norm(s, pre, k, &a->norm);
    snprintf(k, sizeof k, "%s.q", name), add_conv(s, pre, k, &a->q);
    snprintf(k, sizeof k, "%s.k", name), add_conv(s, pre, k, &a->k);
    snprintf(k, sizeof k, "%s.v", name), add_conv(s, pre, k, &a->v);
    snprintf(k, sizeof k, "%s.proj_out", name), add_conv(s, pre, k, &a->proj_out);
}

static int save_weights(const char *path, bench *b) {
    named s = {0};
    char k[512];
    int64_t total = 0;
    const vt_unet3d_config *uc = vt_unet3d_get_config(b->m.unet);
    int nw = vt_unet3d_n_weights(b->m.unet), n_views = 0;
    vt_tensor **views = calloc((size_t)nw + 1, sizeof *views);
    if (!views) return 1;
    for (int i = 0; i < nw; i++) {
        const char *nm;
        vt_tensor *t = vt_unet3d_weight(b->m.unet, i, &nm);
        int kd = vt_bench_proj_conv_dims(nm, uc);
        if (t && kd && t->ndim == 2) {  // checkpoint shape [out, in, 1(, 1)]
            int64_t sh[4] = {t->shape[0], t->shape[1], 1, 1};
            if (!(t = views[n_views++] = vt_view(t, 2 + kd, sh))) return 1;
        }
        snprintf(k, sizeof k, "model.diffusion_model.%s", nm);
        add_named(&s, k, t);
    }
    const char *fp = "first_stage_model.";
    const vt_vae_decoder *d = b->m.vae;
    add_conv(&s, fp, "post_quant_conv", &d->post_quant_conv);
    add_conv(&s, fp, "decoder.conv_in", &d->conv_in);
    add_res(&s, fp, "decoder.mid.block_1", &d->mid_block_1);
    add_attn(&s, fp, "decoder.mid.attn_1", &d->mid_attn_1);
    add_res(&s, fp, "decoder.mid.block_2", &d->mid_block_2);
    for (int i = 0; i < d->cfg.n_levels; i++) {
        const vt_vae_level *lv = &d->up[i];
        for (int j = 0; j < lv->n_block; j++) {
            snprintf(k, sizeof k, "decoder.up.%d.block.%d", i, j);
            add_res(&s, fp, k, &lv->block[j]);
            if (lv->attn) snprintf(k, sizeof k, "decoder.up.%d.attn.%d", i, j), add_attn(&s, fp, k, &lv->attn[j]);
        }
        if (lv->has_upsample) snprintf(k, sizeof k, "decoder.up.%d.upsample.conv", i), add_conv(&s, fp, k, &lv->upsample);
    }
    add_norm(&s, fp, "decoder.norm_out", &d->norm_out);
    add_conv(&s, fp, "decoder.conv_out", &d->conv_out);
    int n_model = s.n;
    for (int i = 0; i < n_model; i++) total += s.ts[i]->numel;
    if (total != vt_unet3d_n_params(b->m.unet) + vt_vae_decoder_n_params(d))
        fprintf(stderr, "vader-bench: --save-weights: note: %lld values written, the models have %lld\n", (long long)total,
                (long long)(vt_unet3d_n_params(b->m.unet) + vt_vae_decoder_n_params(d)));
    for (int i = 0; i < b->n_params; i++) {
        const char *nm;
        vt_tensor *t = vt_unet3d_lora_param(b->m.unet, i, &nm);
        add_named(&s, nm, t);
    }
    vt_err e = vt_st_write(path, s.n, s.names, s.ts, 0, NULL, NULL);
    if (e) fprintf(stderr, "vader-bench: --save-weights %s: %s\n", path, vt_error_message());
    else printf("weights: %d tensors (%d LoRA) -> %s\n", s.n, b->n_params, path);
    for (int i = 0; i < s.n; i++) free(s.owned[i]);
    free(s.owned), free(s.names), free(s.ts);
    for (int i = 0; i < n_views; i++) vt_release(views[i]);
    free(views);
    return e ? 1 : 0;
}

// ---- one optimisation step ------------------------------------------------------------------
typedef struct step_io {
    named s;           // tensors to save (retained)
} step_io;

static vt_err opt_step(bench *b, vt_step_timing *tm, int dropout, named *io) {
    const vt_config *c = &b->cfg;
    int B = c->data.batch_size, A = c->optim.accumulation, S = c->sampler.steps;
    int T = c->model.frames, lh = c->model.height / 8, lw = c->model.width / 8;
    double t0 = vt_bench_now_s();
    vt_err e = VT_OK;
    for (int i = 0; i < b->n_params; i++) vt_zero_grad(b->params[i]);
    vt_unet3d_set_dropout(b->m.unet, dropout ? TEMPORAL_CONV_DROPOUT : 0.0f, dropout ? (float)c->lora.dropout : 0.0f);
    vt_tensor *fps = vt_empty(VT_I64, VT_CPU, 1, (int64_t[]){B});
    for (int i = 0; fps && i < B; i++) vt_i64(fps)[i] = c->model.fps;
    for (int micro = 0; micro < A && !e; micro++) {
        const char *prompts[MAX_B];
        vt_tensor *rows[MAX_B], *urows[MAX_B];
        for (int i = 0; i < B; i++) {
            int k = (int)(vt_rng_u64(&b->rng) % (uint64_t)b->n_prompts);
            prompts[i] = c->data.prompts[k];
            rows[i] = b->prompt_ctx[k];
            urows[i] = b->uncond_ctx;
        }
        vt_tape *tk = vt_nograd_begin();
        vt_tensor *ctx = B == 1 ? vt_retain(rows[0]) : vt_concat(rows, B, 0);
        vt_tensor *uctx = B == 1 ? vt_retain(urows[0]) : vt_concat(urows, B, 0);
        vt_nograd_end(tk);
        vt_tensor *x_T = vt_new_f32(5, (int64_t[]){B, 4, T, lh, lw});
        if (x_T) vt_fill_normal(x_T, &b->rng, 0.0f, 1.0f);
        if (x_T && b->dev != VT_CPU) x_T = vt_move_to(x_T, b->dev);  // drawn on the host: same values as a CPU run
        vt_tensor **noise = NULL;
        if (io && micro == 0) {  // explicit noise, so it can be saved
            noise = calloc((size_t)S, sizeof *noise);
            for (int i = 0; noise && i < S; i++)
                if ((noise[i] = vt_new_f32(5, x_T->shape))) vt_fill_normal(noise[i], &b->rng, 0.0f, 1.0f);
        }
        reward_ctx rc = {b, prompts};
        vt_vader_step_args a;
        vt_vader_step_args_init(&a, b->m.unet, b->m.vae, &b->sched, x_T, ctx, uctx, fps);
        vt_vader_step_args_from_config(&a, c);
        a.saved_dtype = vt_memplan_weight_dtype(vt_memplan_saved_dtype(c, b->dev != VT_CPU));  // auto: per device
        a.noise = noise;
        a.rng = &b->rng;
        a.dropout_seed = vt_hash64(c->seed ^ 0xD0D0ull, (uint64_t)micro);
        a.reward = reward_sum;
        a.reward_user = &rc;
        a.loss_scale = 1.0f / (float)A;
        a.timing = tm;
        vt_vader_step_result r = {0};
        if (!ctx || !uctx || !x_T || !fps) e = vt_error_code();
        if (!e) e = vt_vader_step(&a, &r);
        if (!e && io && micro == 0) {
            char k[64];
            add_named(io, "x_T", vt_retain(x_T));
            add_named(io, "context", vt_retain(ctx));
            add_named(io, "uncond_context", vt_retain(uctx));
            add_named(io, "fps", vt_retain(fps));
            for (int i = 0; i < S; i++) snprintf(k, sizeof k, "noise.%d", i), add_named(io, k, vt_retain(noise[i]));
            vt_tensor *fi = vt_empty(VT_I64, VT_CPU, 1, (int64_t[]){r.n_frames});
            for (int j = 0; fi && j < r.n_frames; j++) vt_i64(fi)[j] = r.frame_index[j];
            add_named(io, "frame_index", fi);
            float lv = (float)r.loss;
            add_named(io, "loss", vt_from_f32(0, NULL, &lv));
            add_named(io, "reward", vt_retain(r.reward));
            add_named(io, "frames", vt_retain(r.frames));
            add_named(io, "samples", vt_retain(r.samples));
        }
        vt_vader_step_result_free(&r);
        for (int i = 0; noise && i < S; i++) vt_release(noise[i]);
        free(noise);
        vt_release(ctx), vt_release(uctx), vt_release(x_T);
    }
    vt_release(fps);
    vt_unet3d_set_dropout(b->m.unet, 0.0f, 0.0f);
    if (!e && io)
        for (int i = 0; i < b->n_params; i++) {
            const char *nm;
            char k[512];
            vt_tensor *p = vt_unet3d_lora_param(b->m.unet, i, &nm);
            snprintf(k, sizeof k, "grad.%s", nm);
            add_named(io, k, p->grad ? vt_retain(p->grad) : vt_zeros(VT_F32, VT_CPU, p->ndim, p->shape));
        }
    if (e) return e;
    if (tm) bench_sync(b);
    double t_opt = vt_bench_now_s();
    vt_clip_grad_norm(b->params, b->n_params, c->optim.grad_clip);
    e = vt_adamw_step(&b->adam, (float)c->optim.lr);
    for (int i = 0; i < b->n_params; i++) vt_zero_grad(b->params[i]);
    if (tm) {
        bench_sync(b);
        tm->optimizer_s += vt_bench_now_s() - t_opt;
        // all-reduce: single process here (the MPI / NCCL path adds its time on the dist branch)
        if (tm->n_step_s < VT_STEP_TIMING_MAX_STEPS) tm->step_s[tm->n_step_s++] = vt_bench_now_s() - t0;
    }
    return e;
}

static void usage(FILE *f) {
    fprintf(f, "usage: vader-bench [CONFIG] [--set a.b=c]... [--steps N] [--warmup N] [--threads N] [--json OUT]\n"
               "                   [--device-peak-tflops X] [--memory-limit SIZE] [--dry-run] [--no-dropout]\n"
               "                   [--lora-b-std S] [--save-weights PATH] [--save-io PATH] [--device cpu|cuda|auto]\n"
               "(see the header of train/main_bench.c)\n");
}

int main(int argc, char **argv) {
    const char *config_path = NULL, *json = NULL, *save_w = NULL, *save_io = NULL;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    int n_sets = 0, steps = 3, warmup = 1, threads = 0, dry = 0, dropout = 1;
    double peak_tflops = 0, lora_b_std = 0;
    size_t mem_limit = 0;
    if (!sets) return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--set") && more) sets[n_sets++] = argv[++i];
        else if (!strcmp(a, "--steps") && more) steps = atoi(argv[++i]);
        else if (!strcmp(a, "--warmup") && more) warmup = atoi(argv[++i]);
        else if (!strcmp(a, "--threads") && more) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--json") && more) json = argv[++i];
        else if (!strcmp(a, "--device-peak-tflops") && more) peak_tflops = atof(argv[++i]);
        else if (!strcmp(a, "--memory-limit") && more) mem_limit = vt_memplan_parse_size(argv[++i]);
        else if (!strcmp(a, "--dry-run")) dry = 1;
        else if (!strcmp(a, "--no-dropout")) dropout = 0;
        else if (!strcmp(a, "--lora-b-std") && more) lora_b_std = atof(argv[++i]);
        else if (!strcmp(a, "--save-weights") && more) save_w = argv[++i];
        else if (!strcmp(a, "--save-io") && more) save_io = argv[++i];
        else if (!strcmp(a, "--device") && more) {  // = --set device=X
            static char dset[64];
            snprintf(dset, sizeof dset, "device=%s", argv[++i]);
            sets[n_sets++] = dset;
        }
        else if (a[0] == '-' || config_path) {
            fprintf(stderr, "vader-bench: unexpected argument %s\n", a);
            usage(stderr);
            return 2;
        } else config_path = a;
    }
    if (steps < 1 || warmup < 0 || steps > VT_STEP_TIMING_MAX_STEPS) {
        fprintf(stderr, "vader-bench: --steps must be 1..%d and --warmup >= 0\n", VT_STEP_TIMING_MAX_STEPS);
        return 2;
    }
    if (threads > 0) {
        omp_set_num_threads(threads);
        openblas_set_num_threads(threads);
    }
    bench b;
    memset(&b, 0, sizeof b);
    vt_err e = config_path ? vt_config_load(&b.cfg, config_path)
                           : vt_config_load_string(&b.cfg, vt_config_default_yaml, "configs/tiny-cpu.yaml (embedded)");
    for (int i = 0; !e && i < n_sets; i++) e = vt_config_set(&b.cfg, sets[i]);
    free(sets);
    if (!e) e = vt_config_validate(&b.cfg);
    if (!e) e = vt_vc2_random_weight_fallback(&b.cfg, stderr);  // absent checkpoints -> manifests
    if (!e && b.cfg.data.batch_size > MAX_B) e = vt_error(VT_ERR_CONFIG, "data.batch_size: at most %d", MAX_B);
    if (e) {
        fprintf(stderr, "vader-bench: %s\n", vt_error_message());
        vt_config_free(&b.cfg);
        return 1;
    }
    // device auto: the GPU when one is visible (and built), as vader-train chooses
    if (b.cfg.device == VT_CFG_DEVICE_AUTO) b.cfg.device = vt_memplan_on_cuda(&b.cfg) ? VT_CFG_DEVICE_CUDA : VT_CFG_DEVICE_CPU;
    const vt_config *c = &b.cfg;
    int cuda = c->device == VT_CFG_DEVICE_CUDA;
    printf("vader-bench: %s, %dx%d x %d frames, batch %d x %d, DDIM %d (K %d, %s), CFG %.3g, decode %s, checkpointing %s, "
           "device %s, %d OpenMP threads\n",
           config_path ? config_path : "tiny-cpu (embedded)", c->model.width, c->model.height, c->model.frames,
           c->data.batch_size, c->optim.accumulation, c->sampler.steps, c->sampler.backprop_steps,
           vt_cfg_backprop_name(c->sampler.backprop_mode), c->sampler.guidance_scale,
           vt_cfg_decode_name(c->memory.decode_frames), c->memory.checkpointing ? "on" : "off", vt_cfg_device_name(c->device),
           omp_get_max_threads());

    // FLOPs and the memory plan (no models needed)
    vt_step_flops fl;
    vt_memplan plan;
    char buf[4096];
    if (vt_step_flops_count(c, NULL, NULL, &fl) || vt_memplan_compute(c, &plan)) {
        fprintf(stderr, "vader-bench: %s\n", vt_error_message());
        vt_config_free(&b.cfg);
        return 1;
    }
    vt_step_flops_format(&fl, buf, sizeof buf);
    fputs(buf, stdout);
    vt_memplan_format(&plan, buf, sizeof buf);
    fputs(buf, stdout);
    {  // model.dtype as the run resolves it (a refusal is reported by vt_memplan_check below)
        vt_cfg_dtype dt;
        const char *notice = NULL;
        if (vt_memplan_run_dtype(c, cuda, &dt, &notice)) printf("note: %s\n", vt_error_message()), vt_error_clear();
        else if (notice) printf("%s\n", notice);
    }
    const char *peak_src = "--device-peak-tflops";
    if (peak_tflops <= 0) {
        // the CUDA kernels compute in fp32 without TF32 (cuBLAS default math, cuDNN FMA math):
        // the fraction of peak is against the H100 SXM's fp32 CUDA-core rate, not its bf16 one
        if (cuda) peak_tflops = 67, peak_src = "H100 SXM fp32 (no tensor cores: the CUDA kernels are fp32)";
        else peak_tflops = sgemm_gflops() / 1e3, peak_src = "OpenBLAS sgemm 1024^3 measured";
    }
    printf("device peak: %.4g TFLOP/s (%s)\n", peak_tflops, peak_src);
    int rc = 0;
    vt_step_timing tm;
    memset(&tm, 0, sizeof tm);
    double step_cpu_s[VT_STEP_TIMING_MAX_STEPS];  // process CPU seconds of each timed step
    int n_cpu = 0;
    size_t measured_peak = 0;
    if (dry) goto report;
    {
        char src[256] = "--memory-limit";
        size_t lim = mem_limit ? mem_limit : vt_memplan_device_memory(c, 0, src, sizeof src);
        printf("memory limit: %.2f GiB (%s)\n", (double)lim / 1073741824.0, lim ? src : "unknown: not checked");
        if (vt_memplan_check(c, 0, lim, NULL, NULL)) {
            fprintf(stderr, "vader-bench: %s\n", vt_error_message());
            rc = 1;
            goto out;
        }
        b.dev = VT_CPU;
        if (cuda) {
#ifdef VADER_HAVE_CUDA
            if (vt_cuda_device_count() == 0 || vt_cuda_init(0)) {
                fprintf(stderr, "vader-bench: device: cuda: %s\n",
                        vt_cuda_device_count() == 0 ? "no GPU is visible" : vt_error_message());
                rc = 1;
                goto out;
            }
            b.dev = VT_CUDA;
#else
            fprintf(stderr, "vader-bench: device: cuda, but this build has no CUDA backend\n");
            rc = 1;
            goto out;
#endif
        }
        double tb = vt_bench_now_s();
        if (build(&b)) {
            fprintf(stderr, "vader-bench: %s\n", vt_error_message());
            rc = 1;
            goto out;
        }
        if (lora_b_std > 0) {
            vt_rng r;
            vt_rng_seed(&r, vt_hash64(c->seed, 77));
            for (int i = 1; i < b.n_params; i += 2) vt_fill_normal(b.params[i], &r, 0.0f, (float)lora_b_std);
        }
        printf("models built in %.1f s (unet %.1fM, vae %.1fM, text %.1fM params; %d LoRA tensors)\n", vt_bench_now_s() - tb,
               vt_unet3d_n_params(b.m.unet) / 1e6, vt_vae_decoder_n_params(b.m.vae) / 1e6, b.n_text_params / 1e6, b.n_params);
        if (save_w && save_weights(save_w, &b)) {
            rc = 1;
            goto out;
        }
        vt_mem_reset_peak(VT_CPU);
        if (b.dev != VT_CPU) vt_mem_reset_peak(b.dev);
        for (int it = 0; it < warmup + steps; it++) {
            int timed = it >= warmup;
            named io = {0};
            double t0 = vt_bench_now_s(), c0 = vt_bench_cpu_s();
            e = opt_step(&b, timed ? &tm : NULL, dropout, save_io && it == 0 ? &io : NULL);
            if (timed && n_cpu < VT_STEP_TIMING_MAX_STEPS) step_cpu_s[n_cpu++] = vt_bench_cpu_s() - c0;
            if (e) {
                fprintf(stderr, "vader-bench: step %d: %s\n", it, vt_error_message());
                rc = 1;
                goto out;
            }
            printf("%s step %d: %.3f s\n", timed ? "timed" : "warm-up", it, vt_bench_now_s() - t0);
            fflush(stdout);
            if (save_io && it == 0) {
                if (vt_st_write(save_io, io.n, io.names, io.ts, 0, NULL, NULL)) {
                    fprintf(stderr, "vader-bench: --save-io %s: %s\n", save_io, vt_error_message());
                    rc = 1;
                }
                for (int i = 0; i < io.n; i++) vt_release(io.ts[i]), free(io.owned[i]);
                free(io.owned), free(io.names), free(io.ts);
                if (rc) goto out;
                printf("io of step 0 -> %s\n", save_io);
            }
        }
        measured_peak = vt_mem_stats_get(b.dev).peak;  // the run's device (GPU: the CUDA allocator's peak)
    }
report:;
    int n = tm.n_step_s;
    double tmin = 0, tmed = 0;
    if (n > 0) {
        tmed = vt_bench_median(tm.step_s, n, &tmin);
        double per[7] = {tm.nograd_s / n, tm.taped_fwd_s / n, tm.decode_s / n, tm.reward_s / n,
                         tm.backward_s / n, tm.optimizer_s / n, tm.allreduce_s / n};
        const char *names[7] = {"no-grad sampling", "taped forward", "vae decode", "reward", "backward", "optimizer",
                                "all-reduce"};
        double sum = 0, mean = 0;
        for (int i = 0; i < n; i++) mean += tm.step_s[i] / n;
        printf("s/step: min %.4f, median %.4f, mean %.4f over %d steps\nphases (mean per step):\n", tmin, tmed, mean, n);
        for (int i = 0; i < 7; i++) {
            sum += per[i];
            printf("  %-17s %9.4f s  %5.1f%%%s\n", names[i], per[i], mean > 0 ? 100 * per[i] / mean : 0.0,
                   i == 0   ? (tm.nograd_steps ? "" : "  (no such steps)")
                   : i == 6 ? "  (single process)"
                            : "");
        }
        printf("  %-17s %9.4f s  %5.1f%%\n", "other", mean - sum, mean > 0 ? 100 * (mean - sum) / mean : 0.0);
        double rate = fl.total / tmin;
        printf("achieved: %.4g GFLOP/s (best step) = %.2f%% of the device peak %.4g TFLOP/s\n", rate / 1e9,
               100 * rate / (peak_tflops * 1e12), peak_tflops);
        // the timed steps only: set-up (the text tower's encoding) is before the measurement
        printf("memory: predicted step peak %.1f MiB, measured %s allocator peak %.1f MiB (ratio %.3f)\n", plan.step_peak / 1048576.0,
               b.dev == VT_CUDA ? "CUDA device" : "CPU", measured_peak / 1048576.0,
               measured_peak ? plan.step_peak / (double)measured_peak : 0.0);
    } else {
        printf("dry run: predicted peak %.1f MiB; %.4g TFLOP per step\n", plan.peak / 1048576.0, fl.total / 1e12);
    }
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "config", config_path ? config_path : "tiny-cpu (embedded)");
        char *yaml = vt_config_dump(c);
        cJSON_AddStringToObject(j, "config_yaml", yaml ? yaml : "");
        free(yaml);
        cJSON_AddStringToObject(j, "device", vt_cfg_device_name(c->device));
        {  // the model configs (lvdm field names), for the PyTorch comparison
            vt_unet3d_config uc = c->model.unet ? vt_unet3d_config_videocrafter2() : vt_tiny_unet_config();
            vt_vae_config vc = c->model.vae ? vt_vae_config_videocrafter2() : vt_tiny_vae_config();
            cJSON *u = cJSON_AddObjectToObject(j, "unet_config");
            cJSON_AddNumberToObject(u, "in_channels", uc.in_channels);
            cJSON_AddNumberToObject(u, "out_channels", uc.out_channels);
            cJSON_AddNumberToObject(u, "model_channels", uc.model_channels);
            cJSON_AddItemToObject(u, "attention_resolutions", cJSON_CreateIntArray(uc.attention_resolutions, uc.n_attention_resolutions));
            cJSON_AddNumberToObject(u, "num_res_blocks", uc.num_res_blocks);
            cJSON_AddItemToObject(u, "channel_mult", cJSON_CreateIntArray(uc.channel_mult, uc.n_levels));
            cJSON_AddNumberToObject(u, "num_head_channels", uc.num_head_channels);
            cJSON_AddNumberToObject(u, "transformer_depth", uc.transformer_depth);
            cJSON_AddNumberToObject(u, "context_dim", uc.context_dim);
            cJSON_AddBoolToObject(u, "use_linear", uc.use_linear);
            cJSON_AddBoolToObject(u, "temporal_conv", uc.temporal_conv);
            cJSON_AddBoolToObject(u, "temporal_attention", uc.temporal_attention);
            cJSON_AddBoolToObject(u, "addition_attention", uc.addition_attention);
            cJSON_AddBoolToObject(u, "fps_cond", uc.fps_cond);
            cJSON *v = cJSON_AddObjectToObject(j, "vae_config");
            cJSON_AddNumberToObject(v, "z_channels", vc.z_channels);
            cJSON_AddNumberToObject(v, "ch", vc.ch);
            cJSON_AddNumberToObject(v, "out_ch", vc.out_ch);
            cJSON_AddNumberToObject(v, "num_res_blocks", vc.num_res_blocks);
            cJSON_AddNumberToObject(v, "resolution", vc.resolution);
            cJSON_AddItemToObject(v, "ch_mult", cJSON_CreateIntArray(vc.ch_mult, vc.n_levels));
            cJSON_AddItemToObject(v, "attn_resolutions", cJSON_CreateIntArray(vc.attn_resolutions, vc.n_attn));
            cJSON_AddNumberToObject(v, "scale_factor", vc.scale_factor);
        }
        cJSON_AddNumberToObject(j, "threads", omp_get_max_threads());
        cJSON_AddNumberToObject(j, "steps", n);
        cJSON_AddNumberToObject(j, "warmup", warmup);
        cJSON *ts = cJSON_AddArrayToObject(j, "step_s");
        for (int i = 0; i < n; i++) cJSON_AddItemToArray(ts, cJSON_CreateNumber(tm.step_s[i]));
        cJSON *tc = cJSON_AddArrayToObject(j, "step_cpu_s");  // process CPU time, all threads
        for (int i = 0; i < n_cpu; i++) cJSON_AddItemToArray(tc, cJSON_CreateNumber(step_cpu_s[i]));
        cJSON_AddNumberToObject(j, "s_per_step_min", tmin);
        cJSON_AddNumberToObject(j, "s_per_step_median", tmed);
        cJSON *ph = cJSON_AddObjectToObject(j, "phases_s_per_step");
        double dn = n > 0 ? n : 1;
        cJSON_AddNumberToObject(ph, "nograd_sampling", tm.nograd_s / dn);
        cJSON_AddNumberToObject(ph, "taped_forward", tm.taped_fwd_s / dn);
        cJSON_AddNumberToObject(ph, "decode", tm.decode_s / dn);
        cJSON_AddNumberToObject(ph, "reward", tm.reward_s / dn);
        cJSON_AddNumberToObject(ph, "backward", tm.backward_s / dn);
        cJSON_AddNumberToObject(ph, "optimizer", tm.optimizer_s / dn);
        cJSON_AddNumberToObject(ph, "allreduce", tm.allreduce_s / dn);
        cJSON *f = cJSON_AddObjectToObject(j, "flops");
        cJSON_AddNumberToObject(f, "total", fl.total);
        cJSON_AddNumberToObject(f, "unet_forward", fl.unet_forward);
        cJSON_AddNumberToObject(f, "unet_backward", fl.unet_backward);
        cJSON_AddNumberToObject(f, "unet_recompute", fl.unet_recompute);
        cJSON_AddNumberToObject(f, "vae_forward", fl.vae_forward);
        cJSON_AddNumberToObject(f, "vae_backward", fl.vae_backward);
        cJSON_AddNumberToObject(f, "vae_recompute", fl.vae_recompute);
        cJSON_AddNumberToObject(f, "reward_forward", fl.reward_forward);
        cJSON_AddNumberToObject(f, "reward_backward", fl.reward_backward);
        cJSON_AddNumberToObject(f, "reward_recompute", fl.reward_recompute);
        cJSON_AddNumberToObject(f, "unet_forwards", fl.unet_forwards);
        cJSON_AddNumberToObject(f, "taped_steps", fl.taped_steps);
        cJSON_AddNumberToObject(j, "achieved_tflops", tmin > 0 ? fl.total / tmin / 1e12 : 0);
        cJSON_AddNumberToObject(j, "device_peak_tflops", peak_tflops);
        cJSON_AddStringToObject(j, "device_peak_source", peak_src);
        cJSON_AddNumberToObject(j, "fraction_of_peak", tmin > 0 ? fl.total / tmin / (peak_tflops * 1e12) : 0);
        cJSON *m = cJSON_AddObjectToObject(j, "memory");
        cJSON_AddNumberToObject(m, "predicted_peak_bytes", plan.peak);
        cJSON_AddNumberToObject(m, "predicted_step_peak_bytes", plan.step_peak);
        cJSON_AddNumberToObject(m, "measured_peak_bytes", (double)measured_peak);
        cJSON_AddStringToObject(m, "measured_by", b.dev == VT_CUDA ? "CUDA device allocator peak (vt_mem_stats)"
                                                                   : "CPU allocator peak (vt_mem_stats)");
        cJSON_AddStringToObject(m, "predicted_peak_phase", plan.peak_phase);
        cJSON_AddNumberToObject(m, "weights_bytes", plan.w_unet + plan.w_vae + plan.w_reward);  // resident (text freed)
        cJSON_AddNumberToObject(m, "lora_adamw_bytes", plan.lora);
        cJSON_AddNumberToObject(m, "sampling_bytes", plan.sampling);
        cJSON_AddNumberToObject(m, "taped_bytes", plan.taped);
        cJSON_AddNumberToObject(m, "taped_checkpointed_bytes", plan.taped_ckpt);
        cJSON_AddNumberToObject(m, "taped_full_bytes", plan.taped_full);
        cJSON_AddNumberToObject(m, "decode_bytes", plan.decode);
        cJSON_AddNumberToObject(m, "reward_bytes", plan.reward);
        cJSON_AddNumberToObject(m, "backward_bytes", plan.backward);
        char *txt = cJSON_Print(j);
        FILE *fo = fopen(json, "w");
        if (!fo || !txt || fputs(txt, fo) < 0) {
            fprintf(stderr, "vader-bench: --json %s: cannot write\n", json);
            rc = 1;
        }
        if (fo) fclose(fo);
        free(txt);
        cJSON_Delete(j);
    }
out:
    bench_free(&b);
    vt_config_free(&b.cfg);
    return rc;
}
