// models.c — see models.h (moved out of trainer.c so vader-sample builds the same models).
#include "train/models.h"
#include "train/memplan.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "core/weights.h"
#include "train/tiny_models.h"

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static vt_weights *open_store(const char *path, uint64_t seed) {
    // a manifest (.txt) gives the full-size shapes with deterministic random values
    return ends_with(path, ".txt") ? vt_weights_from_manifest(path, 1, seed) : vt_weights_open1(path);
}

static vt_err build(const vt_config *c, vt_vc2_models *m) {
    uint64_t seed = c->seed;
    if (c->model.unet) {
        vt_weights *w = open_store(c->model.unet, vt_hash64(seed, 1));
        if (!w) return vt_error_context("model.unet: ");
        const char *prefix = vt_weights_has(w, "model.diffusion_model.out.2.weight") ? "model.diffusion_model." : "";
        vt_unet3d_config uc = vt_unet3d_config_videocrafter2();
        m->unet = vt_unet3d_build(w, prefix, &uc);
        vt_weights_free(w);
        if (!m->unet) return vt_error_context("model.unet: %s: ", c->model.unet);
    } else {
        vt_unet3d_config uc = vt_tiny_unet_config();
        m->unet = vt_unet3d_build_random(&uc, vt_hash64(seed, 1));
        if (!m->unet) return vt_error_context("tiny random unet: ");
    }
    if (c->model.vae) {
        vt_weights *w = open_store(c->model.vae, vt_hash64(seed, 2));
        if (!w) return vt_error_context("model.vae: ");
        const char *prefix = vt_weights_has(w, "first_stage_model.post_quant_conv.weight") ? "first_stage_model." : "";
        vt_vae_config vc = vt_vae_config_videocrafter2();
        m->vae = vt_vae_decoder_build(w, prefix, &vc);
        vt_weights_free(w);
        if (!m->vae) return vt_error_context("model.vae: %s: ", c->model.vae);
    } else {
        vt_vae_config vc = vt_tiny_vae_config();
        m->vae = vt_vae_decoder_build_random(&vc, vt_hash64(seed, 2));
        if (!m->vae) return vt_error_context("tiny random vae: ");
    }
    if (c->model.text) {
        vt_weights *w = open_store(c->model.text, vt_hash64(seed, 3));
        if (!w) return vt_error_context("model.text: ");
        const char *prefix = vt_weights_has(w, "cond_stage_model.model.token_embedding.weight") ? "cond_stage_model.model." : "";
        m->clip = vt_openclip_build(w, prefix, NULL, VT_OPENCLIP_TEXT);
        vt_weights_free(w);
        if (!m->clip) return vt_error_context("model.text: %s: ", c->model.text);
    } else {
        vt_openclip_config oc = vt_tiny_text_config();
        m->clip = vt_openclip_text_build_random(&oc, vt_hash64(seed, 3));
        if (!m->clip) return vt_error_context("tiny random text tower: ");
    }
    const vt_unet3d_config *uc = vt_unet3d_get_config(m->unet);
    if (m->clip->text->width != uc->context_dim)
        return vt_error(VT_ERR_CONFIG, "model.text: text width %d does not match the UNet's context_dim %d",
                        m->clip->text->width, uc->context_dim);
    int ds = vt_unet3d_downsampling(uc), lh = c->model.height / 8, lw = c->model.width / 8;
    if (lh % ds || lw % ds)
        return vt_error(VT_ERR_CONFIG, "model.height/width: %dx%d pixels give a %dx%d latent, which must be a multiple of %d "
                        "(8 x %d) for this UNet", c->model.height, c->model.width, lh, lw, ds, ds);
    return VT_OK;
}

vt_err vt_vc2_models_build(const vt_config *cfg, vt_vc2_models *m) {
    memset(m, 0, sizeof *m);
    vt_err e = build(cfg, m);
    if (e) vt_vc2_models_free(m);
    return e;
}

void vt_vc2_models_free(vt_vc2_models *m) {
    if (!m) return;
    vt_unet3d_free(m->unet);
    vt_vae_decoder_free(m->vae);
    vt_openclip_free(m->clip);
    memset(m, 0, sizeof *m);
}

static const char *shared_dir(void) {
    const char *d = getenv("VADER_SHARED");
    return d && *d ? d : VADER_SHARED_DIR;
}

vt_tokenizer *vt_vc2_tokenizer_open(void) {
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer/bpe_simple_vocab_16e6.txt.gz", shared_dir());
    vt_tokenizer *t = vt_tokenizer_open(path);
    if (!t) vt_error_context("tokenizer: ");
    return t;
}

vt_err vt_vc2_models_apply_dtype(vt_vc2_models *m, const vt_config *cfg, int on_cuda) {
    vt_cfg_dtype d;
    if (vt_memplan_run_dtype(cfg, on_cuda, &d, NULL)) return vt_error_code();
    const vt_dtype dt = vt_memplan_weight_dtype(d);
    if (dt == VT_F32) return VT_OK;
    if ((m->unet && vt_unet3d_set_weight_dtype(m->unet, dt)) || (m->vae && vt_vae_decoder_set_weight_dtype(m->vae, dt)))
        return vt_error_context("model.dtype %s: ", vt_cfg_dtype_name(d));
    return VT_OK;
}

// ---- random weights for absent checkpoints ---------------------------------------------------

// *path (owned by the config) -> the shared manifest `name` when *path is NULL (only if
// when_unset) or names no readable file.
static vt_err substitute(char **path, int when_unset, const char *field, const char *name, FILE *log) {
    if (*path ? access(*path, R_OK) == 0 : !when_unset) return VT_OK;
    char m[4200];
    snprintf(m, sizeof m, "%s/manifests/%s", shared_dir(), name);
    if (access(m, R_OK) != 0)
        return vt_error(VT_ERR_IO, "%s: %s is absent and so is the manifest %s for random weights (set VADER_SHARED)",
                        field, *path ? *path : "(not set)", m);
    if (log)
        fprintf(log, "vader: %s: %s absent: full-size random weights from %s (model.random_weights)\n", field,
                *path ? *path : "no checkpoint", m);
    char *dup = strdup(m);
    if (!dup) return vt_error(VT_ERR_OOM, "%s: out of host memory", field);
    free(*path);
    *path = dup;
    return VT_OK;
}

vt_err vt_vc2_random_weight_fallback(vt_config *c, FILE *log) {
    if (!c->model.random_weights) return VT_OK;
    if (substitute(&c->model.unet, 0, "model.unet", "videocrafter2_unet.txt", log) ||
        substitute(&c->model.vae, 0, "model.vae", "videocrafter2_vae_decoder.txt", log) ||
        substitute(&c->model.text, 0, "model.text", "openclip_vit_h_14.txt", log))
        return vt_error_code();
    for (int m = 0; m < c->reward.n_modules; m++) {
        vt_config_reward *r = &c->reward.modules[m];
        if (r->kind != VT_CFG_REWARD_HPS && r->kind != VT_CFG_REWARD_HPSV21) continue;
        if (r->checkpoint && strchr(r->checkpoint, ',')) continue;  // a list: opened as given
        char field[64];
        snprintf(field, sizeof field, "reward.%d.checkpoint", m);
        if (substitute(&r->checkpoint, 1, field, "openclip_vit_h_14.txt", log)) return vt_error_code();
    }
    return VT_OK;
}

// ---- reward modules --------------------------------------------------------------------------
vt_err vt_rewards_apply_dtype(vt_reward *const *rewards, int n, const vt_config *cfg, int on_cuda) {
    vt_cfg_dtype d;
    if (vt_memplan_run_dtype(cfg, on_cuda, &d, NULL)) return vt_error_code();
    const vt_dtype dt = vt_memplan_weight_dtype(d);
    if (dt == VT_F32) return VT_OK;
    for (int m = 0; m < n; m++)
        if (rewards[m] && vt_reward_set_weight_dtype(rewards[m], dt))
            return vt_error_context("reward.%d: model.dtype %s: ", m, vt_cfg_dtype_name(d));
    return VT_OK;
}

vt_err vt_rewards_cache_run_prompts(vt_reward *const *rewards, int n, const vt_config *cfg,
                                    const char *const *prompts, int n_prompts) {
    for (int m = 0; m < n; m++) {
        if (!rewards[m]) continue;
        if (vt_reward_cache_prompts(rewards[m], prompts, n_prompts) ||
            vt_reward_cache_prompts(rewards[m], (const char *const *)cfg->data.eval_prompts, cfg->data.n_eval_prompts) ||
            vt_reward_drop_text_tower(rewards[m]))
            return vt_error_context("reward.%d: ", m);
    }
    return VT_OK;
}
