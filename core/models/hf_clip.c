// hf_clip.c — transformers CLIPModel vision / text towers (see hf_clip.h). Tokens are [B, L, W].
#include "hf_clip.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../ops.h"
#include "param_list.h"

#define HF_CLIP_LEGACY_EOS 2  // eos_token_id of configs written before transformers PR #24773
#define HF_CLIP_EOS 49407     // transformers' CLIPTextConfig default

static void tower_empty(vt_hf_clip_tower_config *t) {
    memset(t, 0, sizeof *t);
    t->quick_gelu = -1;
}

vt_hf_clip_config vt_hf_clip_config_empty(void) {
    vt_hf_clip_config c;
    memset(&c, 0, sizeof c);
    tower_empty(&c.vision);
    tower_empty(&c.text);
    return c;
}

static void tower_set(vt_hf_clip_tower_config *t, int hidden, int heads, int inter, int layers, int quick) {
    t->hidden_size = hidden;
    t->num_attention_heads = heads;
    t->intermediate_size = inter;
    t->num_hidden_layers = layers;
    t->quick_gelu = quick;
    t->layer_norm_eps = 1e-5f;
}

static vt_hf_clip_config known(int vw, int vh, int vi, int vl, int tw, int th, int ti, int tl, int proj, int quick) {
    vt_hf_clip_config c = vt_hf_clip_config_empty();
    tower_set(&c.vision, vw, vh, vi, vl, quick);
    c.vision.image_size = 224;
    c.vision.patch_size = 14;
    tower_set(&c.text, tw, th, ti, tl, quick);
    c.text.vocab_size = 49408;
    c.text.max_position_embeddings = 77;
    c.projection_dim = proj;
    return c;
}

vt_hf_clip_config vt_hf_clip_config_vit_l_14(void) { return known(1024, 16, 4096, 24, 768, 12, 3072, 12, 768, 1); }
vt_hf_clip_config vt_hf_clip_config_vit_h_14(void) { return known(1280, 16, 5120, 32, 1024, 16, 4096, 24, 1024, 0); }

// ---- config json ---------------------------------------------------------------------------
static vt_err tower_from_json(const cJSON *o, vt_hf_clip_tower_config *t, const char *which) {
    if (!o || cJSON_IsNull(o)) return VT_OK;
    if (!cJSON_IsObject(o)) return vt_error(VT_ERR_CONFIG, "CLIP config: %s is not an object", which);
    vt_err e;
    if ((e = vt_hf_config_int(o, "CLIP", "hidden_size", &t->hidden_size)) || (e = vt_hf_config_int(o, "CLIP", "num_attention_heads", &t->num_attention_heads)) ||
        (e = vt_hf_config_int(o, "CLIP", "intermediate_size", &t->intermediate_size)) ||
        (e = vt_hf_config_int(o, "CLIP", "num_hidden_layers", &t->num_hidden_layers)) || (e = vt_hf_config_int(o, "CLIP", "image_size", &t->image_size)) ||
        (e = vt_hf_config_int(o, "CLIP", "patch_size", &t->patch_size)) || (e = vt_hf_config_int(o, "CLIP", "vocab_size", &t->vocab_size)) ||
        (e = vt_hf_config_int(o, "CLIP", "max_position_embeddings", &t->max_position_embeddings)) ||
        (e = vt_hf_config_int(o, "CLIP", "eos_token_id", &t->eos_token_id)))
        return vt_error_context("%s: ", which);
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(o, "hidden_act");
    if (cJSON_IsString(act)) {
        if (!strcmp(act->valuestring, "quick_gelu")) t->quick_gelu = 1;
        else if (!strcmp(act->valuestring, "gelu")) t->quick_gelu = 0;
        else
            return vt_error(VT_ERR_CONFIG, "CLIP config: %s.hidden_act \"%s\" (supported: quick_gelu, gelu)", which,
                            act->valuestring);
    }
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(o, "layer_norm_eps");
    if (cJSON_IsNumber(eps)) t->layer_norm_eps = (float)eps->valuedouble;
    return VT_OK;
}

vt_err vt_hf_clip_config_from_json(const cJSON *o, vt_hf_clip_config *c) {
    if (!o || !cJSON_IsObject(o)) return vt_error(VT_ERR_CONFIG, "CLIP config: not a JSON object");
    vt_err e;
    if ((e = vt_hf_config_int(o, "CLIP", "projection_dim", &c->projection_dim))) return e;
    if ((e = tower_from_json(cJSON_GetObjectItemCaseSensitive(o, "vision_config"), &c->vision, "vision_config")))
        return e;
    return tower_from_json(cJSON_GetObjectItemCaseSensitive(o, "text_config"), &c->text, "text_config");
}

// ---- config inference from shapes ----------------------------------------------------------


// Shared part of both towers: hidden from `hidden_key` dim hidden_dim, mlp width from fc1.
static vt_err infer_tower(vt_weights *w, const char *prefix, const char *tower, vt_hf_clip_tower_config *t,
                          int *proj_dim, const char *proj_key) {
    int64_t s[VT_MAX_DIMS];
    char name[256];
    snprintf(name, sizeof name, "%s.encoder.layers.", tower);
    if (!t->num_hidden_layers) t->num_hidden_layers = vt_weights_count_indexed(w, prefix, name, ".layer_norm1.weight");
    snprintf(name, sizeof name, "%s.encoder.layers.0.mlp.fc1.weight", tower);
    if (vt_weights_ndim_at(w, prefix, name, s) == 2) {
        if (!t->intermediate_size) t->intermediate_size = (int)s[0];
        if (!t->hidden_size) t->hidden_size = (int)s[1];
    }
    if (vt_weights_ndim_at(w, prefix, proj_key, s) == 2 && !*proj_dim) *proj_dim = (int)s[0];
    if (!t->num_attention_heads && t->hidden_size) {
        // the released CLIP widths: ViT-H / bigG use 80 / 104 wide heads, the rest 64
        if (t->hidden_size == 1280 || t->hidden_size == 1664) t->num_attention_heads = 16;
        else t->num_attention_heads = t->hidden_size >= 64 ? t->hidden_size / 64 : 1;
    }
    if (t->quick_gelu < 0) t->quick_gelu = 1;
    if (!(t->layer_norm_eps > 0)) t->layer_norm_eps = 1e-5f;
    if (t->hidden_size <= 0 || t->num_hidden_layers <= 0 || t->intermediate_size <= 0 || t->num_attention_heads <= 0 ||
        t->hidden_size % t->num_attention_heads || *proj_dim <= 0)
        return vt_error(VT_ERR_CONFIG,
                        "CLIP %s (prefix \"%s\"): hidden_size %d, num_attention_heads %d, intermediate_size %d, "
                        "num_hidden_layers %d, projection_dim %d (from config and weight shapes)",
                        tower, prefix, t->hidden_size, t->num_attention_heads, t->intermediate_size,
                        t->num_hidden_layers, *proj_dim);
    return VT_OK;
}

// A tower whose embedding table is absent is another architecture: name the key.
static vt_err need_key(vt_weights *w, const char *prefix, const char *name) {
    char key[512];
    snprintf(key, sizeof key, "%s%s", prefix, name);
    if (vt_weights_has(w, key)) return VT_OK;
    return vt_error(VT_ERR_KEY, "missing key %s (not a transformers CLIPModel checkpoint under prefix \"%s\"?)", key,
                    prefix);
}

static vt_err infer_config(vt_weights *w, const char *prefix, vt_hf_clip_config *c, int towers) {
    int64_t s[VT_MAX_DIMS];
    if ((towers & VT_HF_CLIP_VISION) && need_key(w, prefix, "vision_model.embeddings.patch_embedding.weight"))
        return vt_error_code();
    if ((towers & VT_HF_CLIP_TEXT) && need_key(w, prefix, "text_model.embeddings.token_embedding.weight"))
        return vt_error_code();
    if (towers & VT_HF_CLIP_VISION) {
        vt_hf_clip_tower_config *v = &c->vision;
        if (vt_weights_ndim_at(w, prefix, "vision_model.embeddings.patch_embedding.weight", s) == 4) {
            if (!v->hidden_size) v->hidden_size = (int)s[0];
            if (!v->patch_size) v->patch_size = (int)s[2];
        }
        if (vt_weights_ndim_at(w, prefix, "vision_model.embeddings.position_embedding.weight", s) == 2 && !v->image_size &&
            v->patch_size) {
            int g = (int)lround(sqrt((double)(s[0] - 1)));
            v->image_size = g * v->patch_size;
        }
        if (infer_tower(w, prefix, "vision_model", v, &c->projection_dim, "visual_projection.weight")) return vt_error_code();
        if (v->patch_size <= 0 || v->image_size <= 0 || v->image_size % v->patch_size)
            return vt_error(VT_ERR_CONFIG, "CLIP vision_model (prefix \"%s\"): image_size %d, patch_size %d", prefix,
                            v->image_size, v->patch_size);
    }
    if (towers & VT_HF_CLIP_TEXT) {
        vt_hf_clip_tower_config *t = &c->text;
        if (vt_weights_ndim_at(w, prefix, "text_model.embeddings.token_embedding.weight", s) == 2) {
            if (!t->vocab_size) t->vocab_size = (int)s[0];
            if (!t->hidden_size) t->hidden_size = (int)s[1];
        }
        if (vt_weights_ndim_at(w, prefix, "text_model.embeddings.position_embedding.weight", s) == 2 && !t->max_position_embeddings)
            t->max_position_embeddings = (int)s[0];
        if (!t->eos_token_id) t->eos_token_id = HF_CLIP_EOS;
        if (infer_tower(w, prefix, "text_model", t, &c->projection_dim, "text_projection.weight")) return vt_error_code();
        if (t->vocab_size <= 0 || t->max_position_embeddings <= 0)
            return vt_error(VT_ERR_CONFIG, "CLIP text_model (prefix \"%s\"): vocab_size %d, max_position_embeddings %d",
                            prefix, t->vocab_size, t->max_position_embeddings);
    }
    return VT_OK;
}

// ---- building --------------------------------------------------------------------------------
static const vt_vit_block_keys hf_clip_layer_keys = {
    .ln_1 = "layer_norm1",
    .ln_2 = "layer_norm2",
    .q = "self_attn.q_proj",
    .k = "self_attn.k_proj",
    .v = "self_attn.v_proj",
    .out_proj = "self_attn.out_proj",
    .fc = "mlp.fc1",
    .proj = "mlp.fc2",
};

// tower "vision_model" or "text_model": its encoder.layers.N.*
static void get_encoder(vt_param_list *pl, vt_vit_stack *enc, const char *tower, const vt_hf_clip_tower_config *t,
                        int causal) {
    char block_prefix[64];
    snprintf(block_prefix, sizeof block_prefix, "%s.encoder.layers.", tower);
    *enc = (vt_vit_stack){t->hidden_size, t->num_attention_heads, t->num_hidden_layers, causal, t->quick_gelu,
                          t->layer_norm_eps, NULL};
    vt_vit_stack_get(pl, enc, block_prefix, &hf_clip_layer_keys, t->intermediate_size);
}

// The position_ids buffers older transformers saved with the weights: accepted, not used.
static void ignore_position_ids(vt_weights *w, const char *prefix, const char *tower) {
    char key[512];
    snprintf(key, sizeof key, "%s%s.embeddings.position_ids", prefix, tower);
    vt_weights_mark_used(w, key);
}

vt_hf_clip *vt_hf_clip_build(vt_weights *w, const char *prefix, const vt_hf_clip_config *cfg, int towers) {
    if (!w || !(towers & (VT_HF_CLIP_TEXT | VT_HF_CLIP_VISION))) {
        vt_error(VT_ERR_ARG, "CLIP build: no weights or no tower asked for");
        return NULL;
    }
    prefix = prefix ? prefix : "";
    vt_hf_clip *m = calloc(1, sizeof *m);
    if (!m) {
        vt_error(VT_ERR_OOM, "CLIP build: out of host memory");
        return NULL;
    }
    m->cfg = cfg ? *cfg : vt_hf_clip_config_empty();
    if (infer_config(w, prefix, &m->cfg, towers)) {
        free(m);
        return NULL;
    }
    const vt_hf_clip_config *c = &m->cfg;
    vt_param_list pl = {&m->tensors, &m->n_tensors, &m->cap_tensors, &m->n_params, w, prefix, 0};
    int64_t E = c->projection_dim;
    if (towers & VT_HF_CLIP_VISION) {
        vt_hf_clip_vision *v = m->vision = calloc(1, sizeof *v);
        if (!v) {
            vt_error(VT_ERR_OOM, "CLIP build: out of host memory");
            pl.failed = 1;
        } else {
            const vt_hf_clip_tower_config *t = &c->vision;
            int64_t W = t->hidden_size, p = t->patch_size;
            v->image_size = t->image_size;
            v->patch_size = t->patch_size;
            v->grid = t->image_size / t->patch_size;
            v->hidden = t->hidden_size;
            v->eps = t->layer_norm_eps;
            v->patch_embedding =
                vt_param_get(&pl, "vision_model.embeddings.patch_embedding.weight", 4, (int64_t[]){W, 3, p, p});
            v->class_embedding = vt_param_get(&pl, "vision_model.embeddings.class_embedding", 1, (int64_t[]){W});
            v->position_embedding = vt_param_get(&pl, "vision_model.embeddings.position_embedding.weight", 2,
                                                 (int64_t[]){(int64_t)v->grid * v->grid + 1, W});
            vt_vit_get_ln(&pl, &v->pre_layrnorm, "vision_model.pre_layrnorm", W);
            get_encoder(&pl, &v->encoder, "vision_model", t, 0);
            vt_vit_get_ln(&pl, &v->post_layernorm, "vision_model.post_layernorm", W);
            v->visual_projection = vt_param_get(&pl, "visual_projection.weight", 2, (int64_t[]){E, W});
            ignore_position_ids(w, prefix, "vision_model");
        }
    }
    if ((towers & VT_HF_CLIP_TEXT) && !pl.failed) {
        m->text_first = m->n_tensors;
        vt_hf_clip_text *x = m->text = calloc(1, sizeof *x);
        if (!x) {
            vt_error(VT_ERR_OOM, "CLIP build: out of host memory");
            pl.failed = 1;
        } else {
            const vt_hf_clip_tower_config *t = &c->text;
            int64_t W = t->hidden_size;
            x->vocab_size = t->vocab_size;
            x->max_positions = t->max_position_embeddings;
            x->hidden = t->hidden_size;
            x->eos_token_id = t->eos_token_id;
            x->eps = t->layer_norm_eps;
            x->token_embedding =
                vt_param_get(&pl, "text_model.embeddings.token_embedding.weight", 2, (int64_t[]){t->vocab_size, W});
            x->position_embedding = vt_param_get(&pl, "text_model.embeddings.position_embedding.weight", 2,
                                                 (int64_t[]){t->max_position_embeddings, W});
            get_encoder(&pl, &x->encoder, "text_model", t, 1);
            vt_vit_get_ln(&pl, &x->final_layer_norm, "text_model.final_layer_norm", W);
            x->text_projection = vt_param_get(&pl, "text_projection.weight", 2, (int64_t[]){E, W});
            ignore_position_ids(w, prefix, "text_model");
        }
        m->text_count = m->n_tensors - m->text_first;
    }
    char key[512];
    snprintf(key, sizeof key, "%slogit_scale", prefix);
    if (!pl.failed && vt_weights_has(w, key)) {
        int nd = 0;
        int64_t s[VT_MAX_DIMS];
        vt_weights_shape(w, key, &nd, s);
        // [] in transformers; [1] in some exports
        m->logit_scale = nd == 0 ? vt_param_get(&pl, "logit_scale", 0, (int64_t[]){1})
                                 : vt_param_get(&pl, "logit_scale", 1, (int64_t[]){1});
    }
    if (pl.failed) {
        vt_error_context("CLIP build (prefix \"%s\"): ", prefix);
        vt_hf_clip_free(m);
        return NULL;
    }
    return m;
}

void vt_hf_clip_free(vt_hf_clip *m) {
    if (!m) return;
    if (m->vision) vt_vit_stack_free(&m->vision->encoder);
    if (m->text) vt_vit_stack_free(&m->text->encoder);
    free(m->vision);
    free(m->text);
    vt_param_list_free(m->tensors, m->n_tensors);
    free(m);
}

vt_err vt_hf_clip_to_device(vt_hf_clip *m, vt_device dev) {
    if (!m) return vt_error(VT_ERR_ARG, "hf_clip to_device: NULL model");
    if (vt_vit_model_to_device(m->tensors, m->n_tensors, (vt_vit_stack *const[]){m->vision ? &m->vision->encoder : NULL, m->text ? &m->text->encoder : NULL}, 2, NULL, 0, dev)) return vt_error_context("hf_clip to %s: ", vt_device_name(dev));
    return VT_OK;
}

vt_err vt_hf_clip_set_image_weight_dtype(vt_hf_clip *m, vt_dtype dt) {
    if (!m || !m->vision) return VT_OK;
    vt_tensor *ws[2] = {m->vision->patch_embedding, m->vision->visual_projection};
    if (vt_tensors_to_dtype(ws, 2, dt) || vt_vit_stack_set_weight_dtype(&m->vision->encoder, dt))
        return vt_error_context("CLIP vision tower to %s: ", vt_dtype_name(dt));
    return VT_OK;
}

void vt_hf_clip_drop_text(vt_hf_clip *m) {
    if (!m || !m->text) return;
    for (int i = 0; i < m->text_count; i++) vt_release(m->tensors[m->text_first + i]);
    memmove(m->tensors + m->text_first, m->tensors + m->text_first + m->text_count,
            (size_t)(m->n_tensors - m->text_first - m->text_count) * sizeof *m->tensors);
    m->n_tensors -= m->text_count;
    m->text_count = 0;
    vt_vit_stack_free(&m->text->encoder);
    free(m->text);
    m->text = NULL;
}

// ---- forward ---------------------------------------------------------------------------------
// Runs every layer of enc on x (released); tower "vision_model" or "text_model" names the hook's layers.
static vt_tensor *encoder_forward(vt_hf_clip *m, const vt_vit_stack *enc, const char *tower, vt_tensor *x) {
    char hook_prefix[64];
    snprintf(hook_prefix, sizeof hook_prefix, "%s.encoder.layers.", tower);
    return vt_vit_stack_forward(enc, x, enc->layers, m->segments, m->hook, m->hook_user, hook_prefix);
}

vt_tensor *vt_hf_clip_encode_image(vt_hf_clip *m, vt_tensor *pixel_values) {
    char s[VT_SHAPE_BUF];
    if (!m || !m->vision) {
        vt_error(VT_ERR_ARG, "CLIP encode_image: the vision tower was not built");
        return NULL;
    }
    if (!pixel_values) return NULL;
    vt_hf_clip_vision *v = m->vision;
    if (pixel_values->ndim != 4 || pixel_values->shape[1] != 3 || pixel_values->shape[2] != v->image_size ||
        pixel_values->shape[3] != v->image_size) {
        vt_error(VT_ERR_SHAPE, "CLIP encode_image: pixel_values %s, expected [B, 3, %d, %d]",
                 vt_shape_str(pixel_values, s, sizeof s), v->image_size, v->image_size);
        return NULL;
    }
    vt_tensor *xp = vt_vit_patch_embed(pixel_values, v->patch_embedding, v->class_embedding, v->position_embedding,
                                       v->patch_size, v->grid);
    vt_tensor *x = vt_layer_norm(xp, v->pre_layrnorm.w, v->pre_layrnorm.b, v->eps);
    vt_release(xp);
    x = encoder_forward(m, &v->encoder, "vision_model", x);
    vt_tensor *x0 = vt_vit_class_token(x);  // pooled = last_hidden_state[:, 0]
    vt_tensor *pooled = vt_layer_norm(x0, v->post_layernorm.w, v->post_layernorm.b, v->eps);
    vt_release(x0);
    vt_tensor *y = vt_linear(pooled, v->visual_projection, NULL);
    vt_release(pooled);
    if (!y) vt_error_context("CLIP encode_image: ");
    return y;
}

vt_tensor *vt_hf_clip_encode_text(vt_hf_clip *m, const vt_tensor *ids) {
    char s[VT_SHAPE_BUF];
    if (!m || !m->text) {
        vt_error(VT_ERR_ARG, "CLIP encode_text: no text tower (not built, or freed after the prompts were cached)");
        return NULL;
    }
    if (!ids) return NULL;
    vt_hf_clip_text *t = m->text;
    if (ids->dtype != VT_I64 || ids->ndim != 2 || ids->shape[1] < 1 || ids->shape[1] > t->max_positions) {
        vt_error(VT_ERR_SHAPE, "CLIP encode_text: input_ids %s %s, expected i64 [B, <= %d]", vt_dtype_name(ids->dtype),
                 vt_shape_str(ids, s, sizeof s), t->max_positions);
        return NULL;
    }
    int64_t B = ids->shape[0], L = ids->shape[1];
    vt_device dev = t->token_embedding->device;
    vt_tensor *ids_host = vt_on_device(ids, VT_CPU);  // token ids are read on the host
    if (!ids_host) return NULL;
    const int64_t *id = vt_i64(ids_host);
    for (int64_t i = 0; i < ids->numel; i++)
        if (id[i] < 0 || id[i] >= t->vocab_size) {
            vt_error(VT_ERR_ARG, "CLIP encode_text: token id %lld at %lld outside the vocabulary [0, %d)",
                     (long long)id[i], (long long)i, t->vocab_size);
            vt_release(ids_host);
            return NULL;
        }
    vt_tensor *idx = vt_zeros(VT_I64, VT_CPU, 1, (int64_t[]){B});
    if (!idx) {
        vt_release(ids_host);
        return NULL;
    }
    for (int64_t b = 0; b < B; b++) {
        const int64_t *r = id + b * L;
        int64_t pos = 0;
        if (t->eos_token_id == HF_CLIP_LEGACY_EOS) {  // argmax (first maximum)
            for (int64_t j = 1; j < L; j++)
                if (r[j] > r[pos]) pos = j;
        } else {  // first eos_token_id (0 when there is none, as torch's argmax of all-false)
            for (int64_t j = 0; j < L; j++)
                if (r[j] == t->eos_token_id) {
                    pos = j;
                    break;
                }
        }
        vt_i64(idx)[b] = pos;
    }
    vt_release(ids_host);
    idx = vt_move_to(idx, dev);
    vt_tensor *ids_dev = vt_on_device(ids, dev);
    vt_tensor *e = ids_dev ? vt_embedding(t->token_embedding, ids_dev) : NULL;
    vt_release(ids_dev);
    vt_tensor *pos = L == t->max_positions
                         ? vt_retain(t->position_embedding)
                         : vt_vit_row_view(t->position_embedding, 0, L);
    vt_tensor *x = vt_add(e, pos);
    vt_release(e);
    vt_release(pos);
    x = encoder_forward(m, &t->encoder, "text_model", x);
    // final_layer_norm is per token: pool first, normalise the pooled rows only
    vt_tensor *pooled = vt_gather_rows(x, idx);
    vt_release(x);
    vt_release(idx);
    vt_tensor *pn = vt_layer_norm(pooled, t->final_layer_norm.w, t->final_layer_norm.b, t->eps);
    vt_release(pooled);
    vt_tensor *y = vt_linear(pn, t->text_projection, NULL);
    vt_release(pn);
    if (!y) vt_error_context("CLIP encode_text: ");
    return y;
}
