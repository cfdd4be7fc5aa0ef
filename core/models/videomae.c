// videomae.c — transformers VideoMAEForVideoClassification (see videomae.h). Tokens are [B, L, W].
#include "videomae.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../ops.h"
#include "param_list.h"

#define FC_NORM_EPS 1e-5f  // nn.LayerNorm(hidden_size): transformers does not pass layer_norm_eps

// ---- config --------------------------------------------------------------------------------
vt_err vt_videomae_config_from_json(const cJSON *o, vt_videomae_config *c) {
    if (!o || !cJSON_IsObject(o)) return vt_error(VT_ERR_CONFIG, "VideoMAE config: not a JSON object");
    vt_err e;
    if ((e = vt_hf_config_int(o, "VideoMAE", "hidden_size", &c->hidden_size)) || (e = vt_hf_config_int(o, "VideoMAE", "num_attention_heads", &c->num_attention_heads)) ||
        (e = vt_hf_config_int(o, "VideoMAE", "intermediate_size", &c->intermediate_size)) ||
        (e = vt_hf_config_int(o, "VideoMAE", "num_hidden_layers", &c->num_hidden_layers)) || (e = vt_hf_config_int(o, "VideoMAE", "image_size", &c->image_size)) ||
        (e = vt_hf_config_int(o, "VideoMAE", "patch_size", &c->patch_size)) || (e = vt_hf_config_int(o, "VideoMAE", "num_frames", &c->num_frames)) ||
        (e = vt_hf_config_int(o, "VideoMAE", "tubelet_size", &c->tubelet_size)))
        return e;
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(o, "layer_norm_eps");
    if (cJSON_IsNumber(eps)) c->layer_norm_eps = (float)eps->valuedouble;
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(o, "hidden_act");
    if (cJSON_IsString(act) && strcmp(act->valuestring, "gelu"))
        return vt_error(VT_ERR_CONFIG, "VideoMAE config: hidden_act \"%s\" (supported: gelu)", act->valuestring);
    const cJSON *id2label = cJSON_GetObjectItemCaseSensitive(o, "id2label");
    if (cJSON_IsObject(id2label)) c->num_labels = cJSON_GetArraySize(id2label);
    return VT_OK;
}

// ---- building ------------------------------------------------------------------------------

static int has_key(vt_weights *w, const char *prefix, const char *name) {
    char key[512];
    snprintf(key, sizeof key, "%s%s", prefix, name);
    return vt_weights_has(w, key);
}

static vt_err infer_config(vt_weights *w, const char *prefix, vt_videomae_config *c) {
    int64_t s[VT_MAX_DIMS];
    const char *patch = "videomae.embeddings.patch_embeddings.projection.weight";
    if (vt_weights_ndim_at(w, prefix, patch, s) != 5)
        return vt_error(VT_ERR_KEY, "missing key %s%s (a 5-d Conv3d weight; not a VideoMAE checkpoint under prefix \"%s\"?)",
                        prefix, patch, prefix);
    if (!c->hidden_size) c->hidden_size = (int)s[0];
    if (!c->tubelet_size) c->tubelet_size = (int)s[2];
    if (!c->patch_size) c->patch_size = (int)s[3];
    if (!c->num_hidden_layers)
        c->num_hidden_layers = vt_weights_count_indexed(w, prefix, "videomae.encoder.layer.", ".layernorm_before.weight");
    if (!c->intermediate_size && vt_weights_ndim_at(w, prefix, "videomae.encoder.layer.0.intermediate.dense.weight", s) == 2)
        c->intermediate_size = (int)s[0];
    if (!c->num_labels && vt_weights_ndim_at(w, prefix, "classifier.weight", s) == 2) c->num_labels = (int)s[0];
    if (!c->num_attention_heads) c->num_attention_heads = c->hidden_size >= 64 ? c->hidden_size / 64 : 1;
    if (!c->image_size) c->image_size = 224;
    if (!c->num_frames) c->num_frames = 16;
    if (!(c->layer_norm_eps > 0)) c->layer_norm_eps = 1e-12f;
    if (c->hidden_size <= 0 || c->num_attention_heads <= 0 || c->hidden_size % c->num_attention_heads ||
        c->num_hidden_layers <= 0 || c->intermediate_size <= 0 || c->num_labels <= 0 || c->patch_size <= 0 ||
        c->tubelet_size <= 0 || c->image_size % c->patch_size || c->num_frames % c->tubelet_size)
        return vt_error(VT_ERR_CONFIG,
                        "VideoMAE (prefix \"%s\"): hidden_size %d, num_attention_heads %d, intermediate_size %d, "
                        "num_hidden_layers %d, num_labels %d, image_size %d, patch_size %d, num_frames %d, "
                        "tubelet_size %d (from config and weight shapes)",
                        prefix, c->hidden_size, c->num_attention_heads, c->intermediate_size, c->num_hidden_layers,
                        c->num_labels, c->image_size, c->patch_size, c->num_frames, c->tubelet_size);
    return VT_OK;
}

// The query / value bias: q_bias (released checkpoints) or query.bias (transformers >= 5).
static vt_tensor *qv_bias(vt_param_list *pl, const char *layer, const char *old_name, const char *new_name, int64_t W) {
    char name[256];
    snprintf(name, sizeof name, "%sattention.attention.%s", layer, old_name);
    if (!has_key(pl->w, pl->prefix, name)) snprintf(name, sizeof name, "%sattention.attention.%s", layer, new_name);
    return vt_param_get(pl, name, 1, (int64_t[]){W});
}

static void layer_get(vt_param_list *pl, vt_vit_block *b, int i, int64_t W, int64_t I) {
    char layer[128], name[256];
    snprintf(layer, sizeof layer, "videomae.encoder.layer.%d.", i);
#define LKEY(n) (snprintf(name, sizeof name, "%s%s", layer, n), name)
    vt_vit_get_ln(pl, &b->ln_1, LKEY("layernorm_before"), W);
    b->q.w = vt_param_get(pl, LKEY("attention.attention.query.weight"), 2, (int64_t[]){W, W});
    b->q.b = qv_bias(pl, layer, "q_bias", "query.bias", W);
    b->k.w = vt_param_get(pl, LKEY("attention.attention.key.weight"), 2, (int64_t[]){W, W});
    b->k.b = NULL;  // VideoMAE's key projection has no bias
    b->v.w = vt_param_get(pl, LKEY("attention.attention.value.weight"), 2, (int64_t[]){W, W});
    b->v.b = qv_bias(pl, layer, "v_bias", "value.bias", W);
    vt_vit_get_linear(pl, &b->out_proj, LKEY("attention.output.dense"), W, W);
    vt_vit_get_ln(pl, &b->ln_2, LKEY("layernorm_after"), W);
    vt_vit_get_linear(pl, &b->fc, LKEY("intermediate.dense"), I, W);
    vt_vit_get_linear(pl, &b->proj, LKEY("output.dense"), W, I);
#undef LKEY
}

vt_videomae *vt_videomae_build(vt_weights *w, const char *prefix, const vt_videomae_config *cfg) {
    prefix = prefix ? prefix : "";
    vt_videomae *m = calloc(1, sizeof *m);
    if (!m) {
        vt_error(VT_ERR_OOM, "VideoMAE: out of host memory");
        return NULL;
    }
    if (cfg) m->cfg = *cfg;
    if (infer_config(w, prefix, &m->cfg)) {
        free(m);
        return NULL;
    }
    const vt_videomae_config *c = &m->cfg;
    int64_t W = c->hidden_size, I = c->intermediate_size, kt = c->tubelet_size, p = c->patch_size;
    vt_param_list pl = {&m->tensors, &m->n_tensors, &m->cap_tensors, &m->n_params, w, prefix, 0};
    vt_tensor *pw = vt_param_get(&pl, "videomae.embeddings.patch_embeddings.projection.weight", 5,
                                 (int64_t[]){W, 3, kt, p, p});
    m->patch_b = vt_param_get(&pl, "videomae.embeddings.patch_embeddings.projection.bias", 1, (int64_t[]){W});
    if (pw) {
        // [W, 3, kt, p, p] -> [W, kt, 3, p, p] -> [W, kt*3, p, p]: input channel kt_i * 3 + c, the
        // order of [B, T, 3, S, S] reshaped to [B T/kt, kt*3, S, S]. A constant (no tape).
        vt_tape *tk = vt_nograd_begin();
        vt_tensor *pp = vt_permute(pw, 5, (const int[]){0, 2, 1, 3, 4});
        m->patch_w2d = vt_reshape(pp, 4, (int64_t[]){W, kt * 3, p, p});
        vt_release(pp);
        vt_nograd_end(tk);
        if (!m->patch_w2d) pl.failed = 1;
    }
    m->encoder.width = (int)W;
    m->encoder.heads = c->num_attention_heads;
    m->encoder.layers = c->num_hidden_layers;
    m->encoder.causal = 0;
    m->encoder.quick_gelu = 0;
    m->encoder.eps = c->layer_norm_eps;
    m->encoder.blocks = pl.failed ? NULL : calloc((size_t)c->num_hidden_layers, sizeof *m->encoder.blocks);
    if (!pl.failed && !m->encoder.blocks) {
        vt_error(VT_ERR_OOM, "VideoMAE: out of host memory for %d layers", c->num_hidden_layers);
        pl.failed = 1;
    }
    for (int i = 0; i < c->num_hidden_layers && !pl.failed; i++) {
        vt_vit_block *b = &m->encoder.blocks[i];
        b->heads = c->num_attention_heads;
        b->eps = c->layer_norm_eps;
        layer_get(&pl, b, i, W, I);
    }
    m->mean_pooling = has_key(w, prefix, "fc_norm.weight") || !has_key(w, prefix, "videomae.layernorm.weight");
    if (m->mean_pooling) {
        vt_vit_get_ln(&pl, &m->final_norm, "fc_norm", W);
        m->final_eps = FC_NORM_EPS;
    } else {
        vt_vit_get_ln(&pl, &m->final_norm, "videomae.layernorm", W);
        m->final_eps = c->layer_norm_eps;
    }
    vt_vit_get_linear(&pl, &m->classifier, "classifier", c->num_labels, W);
    if (pl.failed) {
        vt_error_context("VideoMAE (prefix \"%s\"): ", prefix);
        vt_videomae_free(m);
        return NULL;
    }
    return m;
}

void vt_videomae_free(vt_videomae *m) {
    if (!m) return;
    vt_vit_stack_free(&m->encoder);
    vt_release(m->patch_w2d);
    vt_release(m->pos_table);
    vt_param_list_free(m->tensors, m->n_tensors);
    free(m);
}

vt_err vt_videomae_to_device(vt_videomae *m, vt_device dev) {
    if (!m) return vt_error(VT_ERR_ARG, "videomae to_device: NULL model");
    if (vt_vit_model_to_device(m->tensors, m->n_tensors, (vt_vit_stack *const[]){&m->encoder}, 1, (vt_tensor *[]){m->patch_w2d, m->pos_table}, 2, dev)) return vt_error_context("videomae to %s: ", vt_device_name(dev));
    return VT_OK;
}

// ---- forward -------------------------------------------------------------------------------
vt_tensor *vt_videomae_sinusoid_table(int64_t n, int64_t d) {
    vt_tensor *t = vt_empty(VT_F32, VT_CPU, 2, (int64_t[]){n, d});
    if (!t) return NULL;
    float *o = vt_f32(t);
    for (int64_t j = 0; j < d; j++) {
        // np.power(10000, 2 * (j // 2) / d) in float64, then pos / that
        double denom = pow(10000.0, (double)(2 * (j / 2)) / (double)d);
        for (int64_t pos = 0; pos < n; pos++) {
            double a = (double)pos / denom;
            o[pos * d + j] = (float)(j % 2 ? cos(a) : sin(a));
        }
    }
    return t;
}

// The cached table when it has at least n rows (a view of its first n), else a new one.
static vt_tensor *position_table(vt_videomae *m, int64_t n) {
    int64_t W = m->cfg.hidden_size;
    if (!m->pos_table || m->pos_table->shape[0] < n) {
        vt_release(m->pos_table);
        m->pos_table = vt_move_to(vt_videomae_sinusoid_table(n, W), m->patch_b->device);
        if (!m->pos_table) return NULL;
    }
    return vt_vit_row_view(m->pos_table, 0, n);
}

// pixel_values [B, T, 3, S, S] -> tubelet tokens + positions [B, T/kt * g*g, W]
static vt_tensor *embed(vt_videomae *m, vt_tensor *px) {
    const vt_videomae_config *c = &m->cfg;
    int64_t B = px->shape[0], T = px->shape[1], S = px->shape[3], kt = c->tubelet_size, W = c->hidden_size;
    int64_t g = S / c->patch_size, Tt = T / kt, L = Tt * g * g;
    vt_tensor *x = vt_reshape(px, 4, (int64_t[]){B * Tt, kt * 3, S, S});
    vt_tensor *p = vt_conv2d(x, m->patch_w2d, m->patch_b, c->patch_size, 0);  // [B Tt, W, g, g]
    vt_release(x);
    vt_tensor *pr = vt_reshape(p, 4, (int64_t[]){B, Tt, W, g * g});
    vt_release(p);
    vt_tensor *pt = vt_permute(pr, 4, (const int[]){0, 1, 3, 2});  // [B, Tt, g*g, W]: (t, h, w) order
    vt_release(pr);
    vt_tensor *tok = vt_reshape(pt, 3, (int64_t[]){B, L, W});
    vt_release(pt);
    vt_tensor *pos = tok ? position_table(m, L) : NULL;
    vt_tensor *y = pos ? vt_add(tok, pos) : NULL;
    vt_release(tok);
    vt_release(pos);
    return y;
}

vt_tensor *vt_videomae_forward(vt_videomae *m, vt_tensor *px) {
    char s[VT_SHAPE_BUF];
    if (!m || !px) return NULL;
    const vt_videomae_config *c = &m->cfg;
    if (px->ndim != 5 || px->shape[2] != 3 || px->shape[3] != c->image_size || px->shape[4] != c->image_size ||
        px->shape[1] < c->tubelet_size || px->shape[1] % c->tubelet_size) {
        vt_error(VT_ERR_SHAPE,
                 "VideoMAE: pixel_values %s, expected [B, T, 3, %d, %d] with T a positive multiple of tubelet_size %d",
                 vt_shape_str(px, s, sizeof s), c->image_size, c->image_size, c->tubelet_size);
        return NULL;
    }
    vt_tensor *x = embed(m, px);
    x = vt_vit_stack_forward(&m->encoder, x, m->encoder.layers, m->segments, m->hook, m->hook_user,
                             "videomae.encoder.layer.");
    vt_tensor *pooled;
    if (m->mean_pooling) {
        vt_tensor *mean = vt_mean_dim(x, 1, 0);  // [B, W]
        vt_release(x);
        pooled = vt_layer_norm(mean, m->final_norm.w, m->final_norm.b, m->final_eps);
        vt_release(mean);
    } else {
        vt_tensor *h = vt_layer_norm(x, m->final_norm.w, m->final_norm.b, m->final_eps);
        vt_release(x);
        pooled = vt_vit_class_token(h);
    }
    vt_tensor *logits = vt_linear(pooled, m->classifier.w, m->classifier.b);
    vt_release(pooled);
    if (!logits) {
        vt_error_context("VideoMAE: ");
        return NULL;
    }
    if (m->hook) m->hook(m->hook_user, "logits", logits);
    return logits;
}
