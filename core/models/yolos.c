// yolos.c — transformers YolosForObjectDetection (see yolos.h). Tokens are [B, L, W].
#include "yolos.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../ops.h"
#include "param_list.h"

#define YOLOS_MID_KEY "vit.encoder.interpolation.mid_position_embeddings"
#define YOLOS_RELEASED_HEIGHT 800  // every hustvl checkpoint's config image_size[0]
#define YOLOS_MID_KEY_OLD "vit.encoder.mid_position_embeddings"  // transformers before the interpolation module

// ---- config --------------------------------------------------------------------------------
vt_yolos_config vt_yolos_config_empty(void) {
    vt_yolos_config c;
    memset(&c, 0, sizeof c);
    c.use_mid_position_embeddings = -1;
    return c;
}

static vt_yolos_config known(int W, int heads, int inter, int ih, int iw, int mid) {
    vt_yolos_config c = vt_yolos_config_empty();
    c.hidden_size = W;
    c.num_hidden_layers = 12;
    c.num_attention_heads = heads;
    c.intermediate_size = inter;
    c.image_size[0] = ih;
    c.image_size[1] = iw;
    c.patch_size = 16;
    c.num_detection_tokens = 100;
    c.num_labels = 91;
    c.use_mid_position_embeddings = mid;
    c.layer_norm_eps = 1e-12f;
    return c;
}

vt_yolos_config vt_yolos_config_base(void) { return known(768, 12, 3072, 800, 1344, 1); }
vt_yolos_config vt_yolos_config_tiny(void) { return known(192, 3, 768, 800, 1333, 0); }

vt_err vt_yolos_config_from_json(const cJSON *o, vt_yolos_config *c) {
    if (!o || !cJSON_IsObject(o)) return vt_error(VT_ERR_CONFIG, "YOLOS config: not a JSON object");
    vt_err e;
    if ((e = vt_hf_config_int(o, "YOLOS", "hidden_size", &c->hidden_size)) || (e = vt_hf_config_int(o, "YOLOS", "num_hidden_layers", &c->num_hidden_layers)) ||
        (e = vt_hf_config_int(o, "YOLOS", "num_attention_heads", &c->num_attention_heads)) ||
        (e = vt_hf_config_int(o, "YOLOS", "intermediate_size", &c->intermediate_size)) || (e = vt_hf_config_int(o, "YOLOS", "patch_size", &c->patch_size)) ||
        (e = vt_hf_config_int(o, "YOLOS", "num_detection_tokens", &c->num_detection_tokens)) || (e = vt_hf_config_int(o, "YOLOS", "num_labels", &c->num_labels)))
        return e;
    const cJSON *is = cJSON_GetObjectItemCaseSensitive(o, "image_size");
    if (cJSON_IsNumber(is)) {
        c->image_size[0] = c->image_size[1] = (int)is->valuedouble;
    } else if (cJSON_IsArray(is) && cJSON_GetArraySize(is) == 2 && cJSON_IsNumber(cJSON_GetArrayItem(is, 0)) &&
               cJSON_IsNumber(cJSON_GetArrayItem(is, 1))) {
        c->image_size[0] = (int)cJSON_GetArrayItem(is, 0)->valuedouble;
        c->image_size[1] = (int)cJSON_GetArrayItem(is, 1)->valuedouble;
    } else if (is && !cJSON_IsNull(is)) {
        return vt_error(VT_ERR_CONFIG, "YOLOS config: image_size must be a number or [height, width]");
    }
    const cJSON *id2label = cJSON_GetObjectItemCaseSensitive(o, "id2label");
    if (cJSON_IsObject(id2label)) c->num_labels = cJSON_GetArraySize(id2label);
    const cJSON *mid = cJSON_GetObjectItemCaseSensitive(o, "use_mid_position_embeddings");
    if (cJSON_IsBool(mid)) c->use_mid_position_embeddings = cJSON_IsTrue(mid);
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(o, "layer_norm_eps");
    if (cJSON_IsNumber(eps)) c->layer_norm_eps = (float)eps->valuedouble;
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(o, "hidden_act");
    if (cJSON_IsString(act) && strcmp(act->valuestring, "gelu"))
        return vt_error(VT_ERR_CONFIG, "YOLOS config: hidden_act \"%s\" (supported: gelu)", act->valuestring);
    const cJSON *qkv = cJSON_GetObjectItemCaseSensitive(o, "qkv_bias");
    if (cJSON_IsFalse(qkv)) return vt_error(VT_ERR_CONFIG, "YOLOS config: qkv_bias false is not supported");
    return VT_OK;
}

// ---- config inference from shapes ----------------------------------------------------------

static vt_err infer_config(vt_weights *w, const char *prefix, vt_yolos_config *c) {
    int64_t s[VT_MAX_DIMS];
    char key[512];
    if (vt_weights_ndim_at(w, prefix, "vit.embeddings.patch_embeddings.projection.weight", s) != 4)
        return vt_error(VT_ERR_KEY,
                        "missing key %svit.embeddings.patch_embeddings.projection.weight (not a transformers "
                        "YolosForObjectDetection checkpoint under prefix \"%s\"?)",
                        prefix, prefix);
    if (!c->hidden_size) c->hidden_size = (int)s[0];
    if (!c->patch_size) c->patch_size = (int)s[2];
    if (!c->num_detection_tokens && vt_weights_ndim_at(w, prefix, "vit.embeddings.detection_tokens", s) == 3)
        c->num_detection_tokens = (int)s[1];
    if (!c->num_hidden_layers)
        for (int n = 0;; n++) {
            snprintf(key, sizeof key, "%svit.encoder.layer.%d.layernorm_before.weight", prefix, n);
            if (!vt_weights_has(w, key)) {
                c->num_hidden_layers = n;
                break;
            }
        }
    if (!c->intermediate_size && vt_weights_ndim_at(w, prefix, "vit.encoder.layer.0.intermediate.dense.weight", s) == 2)
        c->intermediate_size = (int)s[0];
    if (!c->num_labels && vt_weights_ndim_at(w, prefix, "class_labels_classifier.layers.2.weight", s) == 2)
        c->num_labels = (int)s[0] - 1;
    if (c->use_mid_position_embeddings < 0) {
        snprintf(key, sizeof key, "%s" YOLOS_MID_KEY, prefix);
        int has = vt_weights_has(w, key);
        snprintf(key, sizeof key, "%s" YOLOS_MID_KEY_OLD, prefix);
        c->use_mid_position_embeddings = has || vt_weights_has(w, key);
    }
    if (!c->image_size[0] && c->patch_size > 0 && c->num_detection_tokens > 0 &&
        vt_weights_ndim_at(w, prefix, "vit.embeddings.position_embeddings", s) == 3) {
        // the table's length gives the grid only up to its shape: the released models' grid is
        // 800 pixels high (800 / p rows: [800, 1344] base, [800, 1333] tiny / small), else square
        int64_t G = s[1] - 1 - c->num_detection_tokens, p = c->patch_size, rows = YOLOS_RELEASED_HEIGHT / p;
        int64_t g = (int64_t)llround(sqrt((double)(G > 0 ? G : 0)));
        if (G > 0 && rows > 0 && G % rows == 0) {
            c->image_size[0] = (int)(rows * p);
            c->image_size[1] = (int)(G / rows * p);
        } else if (g > 0 && g * g == G) {
            c->image_size[0] = c->image_size[1] = (int)(g * p);
        } else {
            return vt_error(VT_ERR_CONFIG,
                            "YOLOS (prefix \"%s\"): the position table holds %lld patch rows, neither %lld rows "
                            "(800 pixels) of patches nor a square grid: give the config (image_size [height, width])",
                            prefix, (long long)G, (long long)rows);
        }
    }
    if (!c->num_attention_heads && c->hidden_size)
        c->num_attention_heads = c->hidden_size == 192 ? 3 : (c->hidden_size >= 64 ? c->hidden_size / 64 : 1);
    if (!(c->layer_norm_eps > 0)) c->layer_norm_eps = 1e-12f;
    if (c->hidden_size <= 0 || c->num_hidden_layers <= 0 || c->num_attention_heads <= 0 ||
        c->hidden_size % c->num_attention_heads || c->intermediate_size <= 0 || c->patch_size <= 0 ||
        c->num_detection_tokens <= 0 || c->num_labels <= 0 || c->image_size[0] < c->patch_size ||
        c->image_size[1] < c->patch_size)
        return vt_error(VT_ERR_CONFIG,
                        "YOLOS (prefix \"%s\"): hidden_size %d, num_attention_heads %d, num_hidden_layers %d, "
                        "intermediate_size %d, patch_size %d, image_size [%d, %d], num_detection_tokens %d, "
                        "num_labels %d (from config and weight shapes)",
                        prefix, c->hidden_size, c->num_attention_heads, c->num_hidden_layers, c->intermediate_size,
                        c->patch_size, c->image_size[0], c->image_size[1], c->num_detection_tokens, c->num_labels);
    return VT_OK;
}

// ---- building --------------------------------------------------------------------------------
static const vt_vit_block_keys yolos_layer_keys = {
    .ln_1 = "layernorm_before",
    .ln_2 = "layernorm_after",
    .q = "attention.attention.query",
    .k = "attention.attention.key",
    .v = "attention.attention.value",
    .out_proj = "attention.output.dense",
    .fc = "intermediate.dense",
    .proj = "output.dense",
};

static void get_mlp(vt_param_list *pl, vt_yolos_mlp *m, const char *name, int64_t W, int64_t out) {
    char k[128];
    for (int i = 0; i < 3; i++) {
        snprintf(k, sizeof k, "%s.layers.%d", name, i);
        vt_vit_get_linear(pl, &m->layers[i], k, i == 2 ? out : W, W);
    }
}

static int64_t grid_rows(const vt_yolos_config *c) {
    return (int64_t)(c->image_size[0] / c->patch_size) * (c->image_size[1] / c->patch_size);
}

static vt_yolos *build(vt_weights *w, const char *prefix, const vt_yolos_config *cfg, int infer) {
    prefix = prefix ? prefix : "";
    vt_yolos *m = calloc(1, sizeof *m);
    if (!m) {
        vt_error(VT_ERR_OOM, "YOLOS build: out of host memory");
        return NULL;
    }
    m->cfg = cfg ? *cfg : vt_yolos_config_empty();
    if (infer && infer_config(w, prefix, &m->cfg)) {
        free(m);
        return NULL;
    }
    const vt_yolos_config *c = &m->cfg;
    vt_param_list pl = {&m->tensors, &m->n_tensors, &m->cap_tensors, &m->n_params, w, prefix, 0};
    int64_t W = c->hidden_size, p = c->patch_size, D = c->num_detection_tokens, S = 1 + grid_rows(c) + D;
    m->cls_token = vt_param_get(&pl, "vit.embeddings.cls_token", 3, (int64_t[]){1, 1, W});
    m->detection_tokens = vt_param_get(&pl, "vit.embeddings.detection_tokens", 3, (int64_t[]){1, D, W});
    m->position_embeddings = vt_param_get(&pl, "vit.embeddings.position_embeddings", 3, (int64_t[]){1, S, W});
    m->patch_w = vt_param_get(&pl, "vit.embeddings.patch_embeddings.projection.weight", 4, (int64_t[]){W, 3, p, p});
    m->patch_b = vt_param_get(&pl, "vit.embeddings.patch_embeddings.projection.bias", 1, (int64_t[]){W});
    if (c->use_mid_position_embeddings > 0 && c->num_hidden_layers > 1) {
        char key[512];
        snprintf(key, sizeof key, "%s" YOLOS_MID_KEY_OLD, prefix);
        const char *name = vt_weights_has(w, key) ? YOLOS_MID_KEY_OLD : YOLOS_MID_KEY;
        m->mid_position_embeddings =
            vt_param_get(&pl, name, 4, (int64_t[]){c->num_hidden_layers - 1, 1, S, W});
    }
    m->encoder = (vt_vit_stack){(int)W, c->num_attention_heads, c->num_hidden_layers, 0, 0, c->layer_norm_eps, NULL};
    if (!pl.failed) vt_vit_stack_get(&pl, &m->encoder, "vit.encoder.layer.", &yolos_layer_keys, c->intermediate_size);
    vt_vit_get_ln(&pl, &m->layernorm, "vit.layernorm", W);
    get_mlp(&pl, &m->class_head, "class_labels_classifier", W, c->num_labels + 1);
    get_mlp(&pl, &m->box_head, "bbox_predictor", W, 4);
    if (pl.failed) {
        vt_error_context("YOLOS build (prefix \"%s\"): ", prefix);
        vt_yolos_free(m);
        return NULL;
    }
    return m;
}

vt_yolos *vt_yolos_build(vt_weights *w, const char *prefix, const vt_yolos_config *cfg) {
    if (!w) {
        vt_error(VT_ERR_ARG, "YOLOS build: no weights");
        return NULL;
    }
    return build(w, prefix, cfg, 1);
}

vt_yolos *vt_yolos_build_random(const vt_yolos_config *cfg, uint64_t seed) {
    const vt_yolos_config *c = cfg;
    if (!c || c->hidden_size <= 0 || c->num_hidden_layers <= 0 || c->num_attention_heads <= 0 ||
        c->hidden_size % c->num_attention_heads || c->intermediate_size <= 0 || c->patch_size <= 0 ||
        c->num_detection_tokens <= 0 || c->num_labels <= 0 || c->image_size[0] < c->patch_size ||
        c->image_size[1] < c->patch_size || !(c->layer_norm_eps > 0)) {
        vt_error(VT_ERR_CONFIG, "random YOLOS: the config is incomplete (every size must be set)");
        return NULL;
    }
    // an empty store in collect mode hands out zero tensors of the asked shapes
    vt_weights *w = vt_weights_from_manifest("/dev/null", 0, 0);
    if (!w) return NULL;
    vt_weights_collect_errors(w, 1);
    vt_yolos_config cc = *c;
    if (cc.use_mid_position_embeddings < 0) cc.use_mid_position_embeddings = 0;
    vt_yolos *m = build(w, "", &cc, 0);
    vt_weights_free(w);
    vt_error_clear();
    if (!m) {
        vt_error(VT_ERR_CONFIG, "random YOLOS: the config could not be built");
        return NULL;
    }
    const vt_tensor *embeds[4] = {m->cls_token, m->detection_tokens, m->position_embeddings,
                                  m->mid_position_embeddings};
    for (int i = 0; i < m->n_tensors; i++) {
        vt_tensor *t = m->tensors[i];
        vt_rng r;
        vt_rng_seed(&r, vt_hash64(seed, (uint64_t)i));
        int embed = 0;
        for (int j = 0; j < 4; j++) embed |= t == embeds[j];
        if (embed) vt_fill_normal(t, &r, 0.0f, 0.02f);
        else if (t->ndim >= 2) vt_fill_normal(t, &r, 0.0f, (float)(1.0 / sqrt((double)t->numel / (double)t->shape[0])));
    }
    vt_clip_ln *lns[1] = {&m->layernorm};
    for (int i = 0; i < m->encoder.layers; i++) {
        for (int64_t j = 0; j < m->encoder.blocks[i].ln_1.w->numel; j++) vt_f32(m->encoder.blocks[i].ln_1.w)[j] = 1.0f;
        for (int64_t j = 0; j < m->encoder.blocks[i].ln_2.w->numel; j++) vt_f32(m->encoder.blocks[i].ln_2.w)[j] = 1.0f;
    }
    for (int64_t j = 0; j < lns[0]->w->numel; j++) vt_f32(lns[0]->w)[j] = 1.0f;
    return m;
}

static void clear_cache(vt_yolos *m) {
    vt_clear(&m->pos_cache);
    if (m->mid_cache)
        for (int i = 0; i < m->cfg.num_hidden_layers - 1; i++) vt_clear(&m->mid_cache[i]);
    free(m->mid_cache);
    m->mid_cache = NULL;
    m->cache_gh = m->cache_gw = 0;
}

void vt_yolos_free(vt_yolos *m) {
    if (!m) return;
    clear_cache(m);
    vt_vit_stack_free(&m->encoder);
    vt_param_list_free(m->tensors, m->n_tensors);
    free(m);
}

vt_err vt_yolos_to_device(vt_yolos *m, vt_device dev) {
    if (!m) return vt_error(VT_ERR_ARG, "yolos to_device: NULL model");
    if ((clear_cache(m), vt_vit_model_to_device(m->tensors, m->n_tensors, (vt_vit_stack *const[]){&m->encoder}, 1, NULL, 0, dev))) return vt_error_context("yolos to %s: ", vt_device_name(dev));
    return VT_OK;
}

// ---- position embeddings -------------------------------------------------------------------
// table [S, W] (rows cls, G0 patches of the config grid gh0 x gw0, D detection) -> [1, 1 + gh*gw
// + D, W] with the patch rows bicubic-interpolated to gh x gw (transformers'
// InterpolateInitialPositionEmbeddings / InterpolateMidPositionEmbeddings). No tape.
static vt_tensor *interpolate_table(vt_tensor *table, int gh0, int gw0, int gh, int gw, int64_t D) {
    int64_t S = table->shape[0], W = table->shape[1], G0 = (int64_t)gh0 * gw0, G = (int64_t)gh * gw;
    vt_tensor *cls = vt_vit_row_view(table, 0, 1);
    vt_tensor *pat = vt_vit_row_view(table, 1, G0);
    vt_tensor *det = vt_vit_row_view(table, S - D, D);
    vt_tensor *pt = vt_permute(pat, 2, (const int[]){1, 0});  // [W, G0]
    vt_tensor *img = vt_reshape(pt, 4, (int64_t[]){1, W, gh0, gw0});
    vt_tensor *rs = vt_resize_bicubic(img, gh, gw, 0);  // [1, W, gh, gw]
    vt_tensor *flat = vt_reshape(rs, 2, (int64_t[]){W, G});
    vt_tensor *pn = vt_permute(flat, 2, (const int[]){1, 0});  // [G, W] row-major grid
    vt_tensor *parts[3] = {cls, pn, det};
    vt_tensor *all = cls && pn && det ? vt_concat(parts, 3, 0) : NULL;
    vt_tensor *out = vt_reshape(all, 3, (int64_t[]){1, 1 + G + D, W});
    vt_release(cls);
    vt_release(pat);
    vt_release(det);
    vt_release(pt);
    vt_release(img);
    vt_release(rs);
    vt_release(flat);
    vt_release(pn);
    vt_release(all);
    return out;
}

static vt_err update_cache(vt_yolos *m, int gh, int gw, vt_device dev) {
    if (m->pos_cache && m->cache_gh == gh && m->cache_gw == gw && m->pos_cache->device == dev) return VT_OK;
    clear_cache(m);
    const vt_yolos_config *c = &m->cfg;
    int gh0 = c->image_size[0] / c->patch_size, gw0 = c->image_size[1] / c->patch_size;
    int64_t W = c->hidden_size, D = c->num_detection_tokens, S = 1 + (int64_t)gh0 * gw0 + D;
    int n_mid = m->mid_position_embeddings ? c->num_hidden_layers - 1 : 0;
    vt_tape *tk = vt_nograd_begin();
    vt_tensor *t = vt_view(m->position_embeddings, 2, (int64_t[]){S, W});
    vt_tensor *pc = t ? interpolate_table(t, gh0, gw0, gh, gw, D) : NULL;
    vt_release(t);
    m->pos_cache = pc && pc->device != dev ? vt_to_device(pc, dev) : vt_retain(pc);
    vt_release(pc);
    if (n_mid && m->pos_cache) {
        m->mid_cache = calloc((size_t)n_mid, sizeof *m->mid_cache);
        vt_tensor *all = m->mid_cache ? vt_view(m->mid_position_embeddings, 2, (int64_t[]){n_mid * S, W}) : NULL;
        for (int i = 0; all && i < n_mid; i++) {
            vt_tensor *rows = vt_vit_row_view(all, (int64_t)i * S, S);
            vt_tensor *mc = rows ? interpolate_table(rows, gh0, gw0, gh, gw, D) : NULL;
            vt_release(rows);
            m->mid_cache[i] = mc && mc->device != dev ? vt_to_device(mc, dev) : vt_retain(mc);
            vt_release(mc);
            if (!m->mid_cache[i]) break;
        }
        vt_release(all);
    }
    vt_nograd_end(tk);
    int ok = m->pos_cache != NULL;
    for (int i = 0; ok && i < n_mid; i++) ok = m->mid_cache && m->mid_cache[i];
    if (!ok) {
        clear_cache(m);
        return vt_error_code() ? vt_error_context("YOLOS position embeddings (grid %dx%d): ", gh, gw)
                               : vt_error(VT_ERR_OOM, "YOLOS position embeddings: out of memory");
    }
    m->cache_gh = gh;
    m->cache_gw = gw;
    return VT_OK;
}

// ---- forward ---------------------------------------------------------------------------------
// x [B, D, W] -> layers[2](relu(layers[1](relu(layers[0](x)))))  (YolosMLPPredictionHead)
static vt_tensor *mlp_forward(const vt_yolos_mlp *h, vt_tensor *x) {
    vt_tensor *y = vt_retain(x);
    for (int i = 0; i < 3 && y; i++) {
        vt_tensor *l = vt_linear(y, h->layers[i].w, h->layers[i].b);
        vt_release(y);
        y = l;
        if (i < 2 && y) {
            vt_tensor *r = vt_clamp(y, 0.0f, INFINITY);  // ReLU (gradient 0 below 0)
            vt_release(y);
            y = r;
        }
    }
    return y;
}

// image [B, 3, H, W] -> [cls, patches, detection tokens] + position embeddings [B, 1 + G + D, W]
static vt_tensor *embed(vt_yolos *m, vt_tensor *image, int gh, int gw) {
    int64_t B = image->shape[0], W = m->cfg.hidden_size, D = m->cfg.num_detection_tokens, G = (int64_t)gh * gw;
    vt_tensor *p = vt_conv2d(image, m->patch_w, m->patch_b, m->cfg.patch_size, 0);  // [B, W, gh, gw]
    vt_tensor *pr = vt_reshape(p, 3, (int64_t[]){B, W, G});
    vt_release(p);
    vt_tensor *pt = vt_permute(pr, 3, (const int[]){0, 2, 1});  // [B, G, W]
    vt_release(pr);
    vt_tensor *cls = vt_repeat_interleave(m->cls_token, 0, B);         // [B, 1, W]
    vt_tensor *det = vt_repeat_interleave(m->detection_tokens, 0, B);  // [B, D, W]
    vt_tensor *parts[3] = {cls, pt, det};
    vt_tensor *x = cls && pt && det ? vt_concat(parts, 3, 1) : NULL;
    vt_release(cls);
    vt_release(pt);
    vt_release(det);
    (void)D;
    vt_tensor *y = vt_add(x, m->pos_cache);
    vt_release(x);
    return y;
}

vt_err vt_yolos_forward(vt_yolos *m, vt_tensor *pixel_values, vt_tensor **logits, vt_tensor **boxes) {
    char s[VT_SHAPE_BUF];
    if (!m || !logits) return vt_error(VT_ERR_ARG, "YOLOS forward: NULL model or output");
    *logits = NULL;
    if (boxes) *boxes = NULL;
    if (!pixel_values) return vt_error_code() ? vt_error_code() : vt_error(VT_ERR_ARG, "YOLOS forward: no input");
    const vt_yolos_config *c = &m->cfg;
    int p = c->patch_size;
    if (pixel_values->ndim != 4 || pixel_values->shape[1] != 3 || pixel_values->shape[0] < 1 ||
        pixel_values->shape[2] < p || pixel_values->shape[3] < p)
        return vt_error(VT_ERR_SHAPE, "YOLOS forward: pixel_values %s, expected [B, 3, H, W] with H, W >= %d (the patch size)",
                        vt_shape_str(pixel_values, s, sizeof s), p);
    int gh = (int)(pixel_values->shape[2] / p), gw = (int)(pixel_values->shape[3] / p);
    if (update_cache(m, gh, gw, pixel_values->device)) return vt_error_code();
    vt_tensor *x = embed(m, pixel_values, gh, gw);
    char name[64];
    for (int i = 0; i < c->num_hidden_layers && x; i++) {
        vt_vit_stack one = m->encoder;
        one.blocks = m->encoder.blocks + i;
        one.layers = 1;
        x = vt_vit_stack_forward(&one, x, 1, m->segments, NULL, NULL, "");
        if (x && m->mid_cache && i < c->num_hidden_layers - 1) {
            vt_tensor *y = vt_add(x, m->mid_cache[i]);
            vt_release(x);
            x = y;
        }
        if (x && m->hook) {
            snprintf(name, sizeof name, "vit.encoder.layer.%d", i);
            m->hook(m->hook_user, name, x);
        }
    }
    vt_tensor *h = vt_layer_norm(x, m->layernorm.w, m->layernorm.b, c->layer_norm_eps);
    vt_release(x);
    int64_t L = h ? h->shape[1] : 0, D = c->num_detection_tokens;
    vt_tensor *det = h ? vt_slice(h, 1, L - D, D) : NULL;  // [B, D, W]
    vt_release(h);
    *logits = det ? mlp_forward(&m->class_head, det) : NULL;
    if (boxes && *logits) {
        vt_tensor *b = mlp_forward(&m->box_head, det);
        *boxes = vt_sigmoid(b);
        vt_release(b);
        if (!*boxes) vt_clear(logits);
    }
    vt_release(det);
    if (!*logits) return vt_error_context("YOLOS forward (input %s): ", vt_shape_str(pixel_values, s, sizeof s));
    return VT_OK;
}
