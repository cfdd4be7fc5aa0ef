// openclip.c — open_clip text and vision towers (see openclip.h). Tokens are [B, L, W].
#include "openclip.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../ops.h"
#include "param_list.h"

#define CLIP_LN_EPS 1e-5f     // open_clip LayerNorm default
#define CLIP_NORM_EPS 1e-12f  // torch.nn.functional.normalize default

vt_openclip_config vt_openclip_config_vit_h_14(void) {
    vt_openclip_config c;
    memset(&c, 0, sizeof c);
    c.embed_dim = 1024;
    c.text.context_length = 77;
    c.text.vocab_size = 49408;
    c.text.width = 1024;
    c.text.heads = 16;
    c.text.layers = 24;
    c.vision.image_size = 224;
    c.vision.patch_size = 14;
    c.vision.width = 1280;
    c.vision.head_width = 80;
    c.vision.layers = 32;
    return c;
}

static vt_err jint(const cJSON *o, const char *name, int *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!it || cJSON_IsNull(it)) return VT_OK;
    if (cJSON_IsBool(it)) {
        *v = cJSON_IsTrue(it);
        return VT_OK;
    }
    if (!cJSON_IsNumber(it) || it->valuedouble != (double)(int)it->valuedouble)
        return vt_error(VT_ERR_CONFIG, "open_clip config: %s must be an integer", name);
    *v = (int)it->valuedouble;
    return VT_OK;
}

static vt_err jnum(const cJSON *o, const char *name, double *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!it || cJSON_IsNull(it)) return VT_OK;
    if (!cJSON_IsNumber(it) || !(it->valuedouble > 0))
        return vt_error(VT_ERR_CONFIG, "open_clip config: %s must be a positive number", name);
    *v = it->valuedouble;
    return VT_OK;
}

// open_clip accepts image_size as an int or an [h, w] pair; only square images are built here.
static vt_err jsize(const cJSON *o, const char *name, int *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    if (cJSON_IsArray(it)) {
        const cJSON *h = cJSON_GetArrayItem(it, 0), *w = cJSON_GetArrayItem(it, 1);
        if (cJSON_GetArraySize(it) != 2 || !cJSON_IsNumber(h) || !cJSON_IsNumber(w) || h->valueint != w->valueint)
            return vt_error(VT_ERR_CONFIG, "open_clip config: %s must be one size or a square [s, s] (non-square "
                                           "images are not implemented)", name);
        *v = h->valueint;
        return VT_OK;
    }
    return jint(o, name, v);
}

// Options of open_clip's CLIPTextCfg / CLIPVisionCfg that change what is computed and that
// these towers do not implement: a config setting one away from its default is refused by
// name instead of being silently computed the default way. Kind: 'b' bool (default false),
// 'n' null default, 's' a string default.
typedef struct unsupported_opt {
    const char *name;
    char kind;
    const char *def;
} unsupported_opt;

static const unsupported_opt text_unsupported[] = {
    {"ls_init_value", 'n', NULL},     {"embed_cls", 'b', NULL},        {"no_causal_mask", 'b', NULL},
    {"final_ln_after_pool", 'b', NULL}, {"pool_type", 's', "argmax"}, {"proj_bias", 'b', NULL},
    {"proj_type", 's', "linear"},     {"act_kwargs", 'n', NULL},       {"norm_kwargs", 'n', NULL},
    {"block_type", 's', "default"},   {"qk_norm", 'b', NULL},          {"scaled_cosine_attn", 'b', NULL},
    {"scale_heads", 'b', NULL},       {"scale_attn_inner", 'b', NULL}, {"scale_attn", 'b', NULL},
    {"scale_fc", 'b', NULL},          {"hf_model_name", 'n', NULL},    {NULL, 0, NULL},
};
static const unsupported_opt vision_unsupported[] = {
    {"ls_init_value", 'n', NULL},     {"attentional_pool", 'b', NULL}, {"no_ln_pre", 'b', NULL},
    {"pos_embed_type", 's', "learnable"}, {"final_ln_after_pool", 'b', NULL}, {"pool_type", 's', "tok"},
    {"act_kwargs", 'n', NULL},        {"norm_kwargs", 'n', NULL},      {"block_type", 's', "default"},
    {"qk_norm", 'b', NULL},           {"scaled_cosine_attn", 'b', NULL}, {"scale_heads", 'b', NULL},
    {"scale_attn_inner", 'b', NULL},  {"scale_attn", 'b', NULL},       {"scale_fc", 'b', NULL},
    {"timm_model_name", 'n', NULL},   {"global_average_pool", 'b', NULL}, {NULL, 0, NULL},
};

static vt_err refuse_unsupported(const cJSON *o, const unsupported_opt *opts, const char *where) {
    for (const unsupported_opt *u = opts; u->name; u++) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, u->name);
        if (!it || cJSON_IsNull(it)) continue;
        int is_default = u->kind == 'b'   ? cJSON_IsFalse(it) || (cJSON_IsNumber(it) && it->valuedouble == 0)
                         : u->kind == 's' ? cJSON_IsString(it) && strcmp(it->valuestring, u->def) == 0
                                          : 0;
        if (!is_default)
            return vt_error(VT_ERR_CONFIG, "open_clip config: %s.%s = %s is not implemented (only the default, %s)",
                            where, u->name, cJSON_IsString(it) ? it->valuestring : cJSON_IsTrue(it) ? "true" : "set",
                            u->kind == 'b' ? "false" : u->kind == 's' ? u->def : "null");
    }
    return VT_OK;
}

vt_err vt_openclip_config_from_json(const cJSON *o, vt_openclip_config *c) {
    if (!o || !cJSON_IsObject(o)) return vt_error(VT_ERR_CONFIG, "open_clip config: not a JSON object");
    vt_err e;
    if ((e = jint(o, "embed_dim", &c->embed_dim)) || (e = jint(o, "quick_gelu", &c->quick_gelu))) return e;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "text_cfg");
    if (cJSON_IsObject(t)) {
        if ((e = jint(t, "context_length", &c->text.context_length)) || (e = jint(t, "vocab_size", &c->text.vocab_size)) ||
            (e = jint(t, "width", &c->text.width)) || (e = jint(t, "heads", &c->text.heads)) ||
            (e = jint(t, "layers", &c->text.layers)) || (e = jnum(t, "mlp_ratio", &c->text.mlp_ratio)) ||
            (e = refuse_unsupported(t, text_unsupported, "text_cfg")))
            return vt_error_context("text_cfg: ");
    }
    // the head count is not in any weight's shape: open_clip's CLIPTextCfg default applies
    if (!c->text.heads) c->text.heads = 8;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "vision_cfg");
    if (cJSON_IsObject(v)) {
        const cJSON *layers = cJSON_GetObjectItemCaseSensitive(v, "layers");
        if (cJSON_IsArray(layers))
            return vt_error(VT_ERR_CONFIG, "open_clip config: vision_cfg.layers is a list (ModifiedResNet vision "
                                           "tower): not implemented, only the ViT tower");
        if ((e = jsize(v, "image_size", &c->vision.image_size)) || (e = jint(v, "patch_size", &c->vision.patch_size)) ||
            (e = jint(v, "width", &c->vision.width)) || (e = jint(v, "head_width", &c->vision.head_width)) ||
            (e = jint(v, "layers", &c->vision.layers)) || (e = jnum(v, "mlp_ratio", &c->vision.mlp_ratio)) ||
            (e = refuse_unsupported(v, vision_unsupported, "vision_cfg")))
            return vt_error_context("vision_cfg: ");
    }
    return VT_OK;
}

// ---- config inference from shapes --------------------------------------------------------


static vt_err infer_config(vt_weights *w, const char *prefix, vt_openclip_config *c, int towers) {
    int64_t s[VT_MAX_DIMS];
    if (towers & VT_OPENCLIP_TEXT) {
        if (vt_weights_ndim_at(w, prefix, "token_embedding.weight", s) == 2) {
            if (!c->text.vocab_size) c->text.vocab_size = (int)s[0];
            if (!c->text.width) c->text.width = (int)s[1];
        }
        if (vt_weights_ndim_at(w, prefix, "positional_embedding", s) == 2 && !c->text.context_length)
            c->text.context_length = (int)s[0];
        if (vt_weights_ndim_at(w, prefix, "text_projection", s) == 2 && !c->embed_dim) c->embed_dim = (int)s[1];
        if (!c->text.layers) c->text.layers = vt_weights_count_indexed(w, prefix, "transformer.resblocks.", ".ln_1.weight");
        if (!c->text.heads && c->text.width) c->text.heads = c->text.width / 64 > 0 ? c->text.width / 64 : 1;
        if (c->text.width <= 0 || c->text.layers <= 0 || c->text.context_length <= 0 || c->text.vocab_size <= 0 ||
            c->text.heads <= 0 || c->text.width % c->text.heads || c->embed_dim <= 0)
            return vt_error(VT_ERR_CONFIG,
                            "open_clip text tower (prefix \"%s\"): width %d, heads %d, layers %d, context %d, vocab %d, "
                            "embed_dim %d (from config and weight shapes)",
                            prefix, c->text.width, c->text.heads, c->text.layers, c->text.context_length,
                            c->text.vocab_size, c->embed_dim);
    }
    if (towers & VT_OPENCLIP_VISION) {
        int64_t ps[VT_MAX_DIMS];
        if (vt_weights_ndim_at(w, prefix, "visual.conv1.weight", s) == 4) {
            if (!c->vision.width) c->vision.width = (int)s[0];
            if (!c->vision.patch_size) c->vision.patch_size = (int)s[2];
        }
        if (vt_weights_ndim_at(w, prefix, "visual.positional_embedding", ps) == 2 && !c->vision.image_size && c->vision.patch_size) {
            int g = (int)lround(sqrt((double)(ps[0] - 1)));
            c->vision.image_size = g * c->vision.patch_size;
        }
        if (vt_weights_ndim_at(w, prefix, "visual.proj", s) == 2 && !c->embed_dim) c->embed_dim = (int)s[1];
        if (!c->vision.layers) c->vision.layers = vt_weights_count_indexed(w, prefix, "visual.transformer.resblocks.", ".ln_1.weight");
        if (!c->vision.head_width) c->vision.head_width = 64;
        if (c->vision.width <= 0 || c->vision.layers <= 0 || c->vision.patch_size <= 0 || c->vision.head_width <= 0 ||
            c->vision.width % c->vision.head_width || c->vision.image_size < c->vision.patch_size || c->embed_dim <= 0)
            return vt_error(VT_ERR_CONFIG,
                            "open_clip vision tower (prefix \"%s\"): width %d, head_width %d, layers %d, image %d, "
                            "patch %d, embed_dim %d (from config and weight shapes)",
                            prefix, c->vision.width, c->vision.head_width, c->vision.layers, c->vision.image_size,
                            c->vision.patch_size, c->embed_dim);
    }
    return VT_OK;
}

// ---- building ----------------------------------------------------------------------------
// nn.MultiheadAttention's packed in_proj, mlp c_fc / c_proj
static const vt_vit_block_keys openclip_block_keys = {
    .ln_1 = "ln_1",
    .ln_2 = "ln_2",
    .in_proj_weight = "attn.in_proj_weight",
    .in_proj_bias = "attn.in_proj_bias",
    .out_proj = "attn.out_proj",
    .fc = "mlp.c_fc",
    .proj = "mlp.c_proj",
};

// The MLP width: int(width * mlp_ratio) as open_clip computes it when the config names the
// ratio; otherwise read from block 0's c_fc (4 * width in every released CLIP).
static int64_t mlp_width(vt_weights *w, const char *prefix, const char *tower, int W, double ratio) {
    if (ratio > 0) return (int64_t)((double)W * ratio);
    char name[96];
    int64_t s[VT_MAX_DIMS];
    snprintf(name, sizeof name, "%stransformer.resblocks.0.mlp.c_fc.weight", tower);
    if (vt_weights_ndim_at(w, prefix, name, s) == 2 && s[1] == W && s[0] > 0) return s[0];
    return 4 * (int64_t)W;
}

// tower "" or "visual.": its transformer.resblocks.N.*
static void get_transformer(vt_param_list *pl, vt_vit_stack *tr, const char *tower, int W, int heads, int layers,
                            int causal, int quick_gelu, int64_t mlp) {
    char block_prefix[64];
    snprintf(block_prefix, sizeof block_prefix, "%stransformer.resblocks.", tower);
    *tr = (vt_vit_stack){W, heads, layers, causal, quick_gelu, CLIP_LN_EPS, NULL};
    vt_vit_stack_get(pl, tr, block_prefix, &openclip_block_keys, mlp);
}

vt_openclip *vt_openclip_build(vt_weights *w, const char *prefix, const vt_openclip_config *cfg, int towers) {
    if (!w || !(towers & (VT_OPENCLIP_TEXT | VT_OPENCLIP_VISION))) {
        vt_error(VT_ERR_ARG, "open_clip build: no weights or no tower asked for");
        return NULL;
    }
    prefix = prefix ? prefix : "";
    vt_openclip *m = calloc(1, sizeof *m);
    if (!m) {
        vt_error(VT_ERR_OOM, "open_clip build: out of host memory");
        return NULL;
    }
    if (cfg) m->cfg = *cfg;
    if (infer_config(w, prefix, &m->cfg, towers)) {
        free(m);
        return NULL;
    }
    const vt_openclip_config *c = &m->cfg;
    vt_param_list pl = {&m->tensors, &m->n_tensors, &m->cap_tensors, &m->n_params, w, prefix, 0};
    int64_t E = c->embed_dim;
    if (towers & VT_OPENCLIP_TEXT) {
        vt_openclip_text *t = m->text = calloc(1, sizeof *t);
        if (!t) {
            vt_error(VT_ERR_OOM, "open_clip build: out of host memory");
            pl.failed = 1;
        } else {
            int64_t W = c->text.width;
            t->context_length = c->text.context_length;
            t->vocab_size = c->text.vocab_size;
            t->width = c->text.width;
            t->token_embedding = vt_param_get(&pl, "token_embedding.weight", 2, (int64_t[]){c->text.vocab_size, W});
            t->positional_embedding =
                vt_param_get(&pl, "positional_embedding", 2, (int64_t[]){c->text.context_length, W});
            get_transformer(&pl, &t->transformer, "", c->text.width, c->text.heads, c->text.layers, 1, c->quick_gelu,
                            mlp_width(w, prefix, "", c->text.width, c->text.mlp_ratio));
            vt_vit_get_ln(&pl, &t->ln_final, "ln_final", W);
            t->text_projection = vt_param_get(&pl, "text_projection", 2, (int64_t[]){W, E});
        }
        m->n_params_text = m->n_params;
        m->n_tensors_text = m->n_tensors;
    }
    if ((towers & VT_OPENCLIP_VISION) && !pl.failed) {
        vt_openclip_vision *v = m->visual = calloc(1, sizeof *v);
        if (!v) {
            vt_error(VT_ERR_OOM, "open_clip build: out of host memory");
            pl.failed = 1;
        } else {
            int64_t W = c->vision.width, p = c->vision.patch_size;
            v->image_size = c->vision.image_size;
            v->patch_size = c->vision.patch_size;
            // open_clip: grid = image_size // patch_size; the strided conv1 drops the remainder
            v->grid = c->vision.image_size / c->vision.patch_size;
            v->width = c->vision.width;
            v->conv1 = vt_param_get(&pl, "visual.conv1.weight", 4, (int64_t[]){W, 3, p, p});
            v->class_embedding = vt_param_get(&pl, "visual.class_embedding", 1, (int64_t[]){W});
            v->positional_embedding = vt_param_get(&pl, "visual.positional_embedding", 2,
                                                   (int64_t[]){(int64_t)v->grid * v->grid + 1, W});
            vt_vit_get_ln(&pl, &v->ln_pre, "visual.ln_pre", W);
            get_transformer(&pl, &v->transformer, "visual.", c->vision.width, c->vision.width / c->vision.head_width,
                            c->vision.layers, 0, c->quick_gelu,
                            mlp_width(w, prefix, "visual.", c->vision.width, c->vision.mlp_ratio));
            vt_vit_get_ln(&pl, &v->ln_post, "visual.ln_post", W);
            v->proj = vt_param_get(&pl, "visual.proj", 2, (int64_t[]){W, E});
        }
        m->n_params_visual = m->n_params - m->n_params_text;
    }
    char key[512];
    snprintf(key, sizeof key, "%slogit_scale", prefix);
    if (!pl.failed && vt_weights_has(w, key)) m->logit_scale = vt_param_get(&pl, "logit_scale", 0, (int64_t[]){1});
    if (pl.failed) {
        vt_error_context("open_clip build (prefix \"%s\"): ", prefix);
        vt_openclip_free(m);
        return NULL;
    }
    return m;
}

void vt_openclip_free(vt_openclip *m) {
    if (!m) return;
    if (m->text) vt_vit_stack_free(&m->text->transformer);
    if (m->visual) vt_vit_stack_free(&m->visual->transformer);
    free(m->text);
    free(m->visual);
    vt_param_list_free(m->tensors, m->n_tensors);
    free(m);
}

vt_err vt_openclip_to_device(vt_openclip *m, vt_device dev) {
    if (!m) return vt_error(VT_ERR_ARG, "openclip to_device: NULL model");
    if (vt_vit_model_to_device(m->tensors, m->n_tensors, (vt_vit_stack *const[]){m->text ? &m->text->transformer : NULL, m->visual ? &m->visual->transformer : NULL}, 2, NULL, 0, dev)) return vt_error_context("openclip to %s: ", vt_device_name(dev));
    return VT_OK;
}

vt_err vt_openclip_set_image_weight_dtype(vt_openclip *m, vt_dtype dt) {
    if (!m || !m->visual) return VT_OK;
    if (vt_tensors_to_dtype(&m->visual->conv1, 1, dt) || vt_vit_stack_set_weight_dtype(&m->visual->transformer, dt))
        return vt_error_context("open_clip image tower to %s: ", vt_dtype_name(dt));
    return VT_OK;
}

void vt_openclip_drop_text(vt_openclip *m) {
    if (!m || !m->text) return;
    // the text tower's tensors are the first n_tensors_text of the list (built first)
    for (int i = 0; i < m->n_tensors_text; i++) vt_release(m->tensors[i]);
    memmove(m->tensors, m->tensors + m->n_tensors_text, (size_t)(m->n_tensors - m->n_tensors_text) * sizeof *m->tensors);
    m->n_tensors -= m->n_tensors_text;
    m->n_tensors_text = 0;
    m->n_params -= m->n_params_text;
    m->n_params_text = 0;
    vt_vit_stack_free(&m->text->transformer);
    free(m->text);
    m->text = NULL;
}

// ---- forward -----------------------------------------------------------------------------
static vt_tensor *ln(const vt_clip_ln *l, vt_tensor *x) { return vt_layer_norm(x, l->w, l->b, CLIP_LN_EPS); }

// Runs blocks [0, n) of tr on x (released); tower "" or "visual." names the hook's blocks.
static vt_tensor *transformer_forward(vt_openclip *m, const vt_vit_stack *tr, const char *tower, vt_tensor *x,
                                      int n) {
    char hook_prefix[64];
    snprintf(hook_prefix, sizeof hook_prefix, "%stransformer.resblocks.", tower);
    return vt_vit_stack_forward(tr, x, n, m->segments, m->hook, m->hook_user, hook_prefix);
}

static int check_tokens(const vt_openclip *m, const vt_tensor *tokens, const char *fn) {
    char s[VT_SHAPE_BUF];
    if (!m || !m->text) {
        vt_error(VT_ERR_ARG, "%s: no text tower (not built, or freed after the prompts were cached)", fn);
        return 1;
    }
    if (!tokens) return 1;
    if (tokens->dtype != VT_I64 || tokens->ndim != 2 || tokens->shape[1] > m->text->context_length ||
        tokens->shape[1] < 1) {
        vt_error(VT_ERR_SHAPE, "%s: tokens %s %s, expected i64 [B, <= %d]", fn, vt_dtype_name(tokens->dtype),
                 vt_shape_str(tokens, s, sizeof s), m->text->context_length);
        return 1;
    }
    vt_tensor *host = vt_on_device(tokens, VT_CPU);  // token ids are read on the host
    if (!host) return 1;
    const int64_t *id = vt_i64(host);
    for (int64_t i = 0; i < tokens->numel; i++)
        if (id[i] < 0 || id[i] >= m->text->vocab_size) {
            vt_error(VT_ERR_ARG, "%s: token id %lld at %lld outside the vocabulary [0, %d)", fn, (long long)id[i],
                     (long long)i, m->text->vocab_size);
            vt_release(host);
            return 1;
        }
    vt_release(host);
    return 0;
}

// token_embedding[tokens] + positional_embedding[:L], then n_blocks blocks, then ln_final
static vt_tensor *text_forward(vt_openclip *m, const vt_tensor *tokens, int n_blocks) {
    vt_openclip_text *t = m->text;
    int64_t L = tokens->shape[1];
    vt_tensor *tok = vt_on_device(tokens, t->token_embedding->device);
    vt_tensor *e = tok ? vt_embedding(t->token_embedding, tok) : NULL;
    vt_release(tok);
    vt_tensor *pos = L == t->context_length ? vt_retain(t->positional_embedding)
                                            : vt_vit_row_view(t->positional_embedding, 0, L);
    vt_tensor *x = vt_add(e, pos);
    vt_release(e);
    vt_release(pos);
    x = transformer_forward(m, &t->transformer, "", x, n_blocks);
    vt_tensor *y = ln(&t->ln_final, x);
    vt_release(x);
    return y;
}

vt_tensor *vt_openclip_encode_text_penultimate(vt_openclip *m, const vt_tensor *tokens) {
    if (check_tokens(m, tokens, "open_clip penultimate")) return NULL;
    vt_tensor *y = text_forward(m, tokens, m->text->transformer.layers - 1);
    if (!y) vt_error_context("open_clip penultimate: ");
    return y;
}

vt_tensor *vt_openclip_encode_text(vt_openclip *m, const vt_tensor *tokens) {
    if (check_tokens(m, tokens, "open_clip encode_text")) return NULL;
    int64_t B = tokens->shape[0], L = tokens->shape[1];
    // EOT pooling: the EOT id is the largest in the vocabulary, so argmax finds it (first max)
    vt_tensor *idx = vt_zeros(VT_I64, VT_CPU, 1, (int64_t[]){B});
    if (!idx) return NULL;
    vt_tensor *host = vt_on_device(tokens, VT_CPU);
    if (!host) {
        vt_release(idx);
        return NULL;
    }
    const int64_t *id = vt_i64(host);
    for (int64_t b = 0; b < B; b++) {
        int64_t best = 0;
        for (int64_t j = 1; j < L; j++)
            if (id[b * L + j] > id[b * L + best]) best = j;
        vt_i64(idx)[b] = best;
    }
    vt_release(host);
    idx = vt_move_to(idx, m->text->token_embedding->device);
    vt_tensor *x = text_forward(m, tokens, m->text->transformer.layers);
    vt_tensor *pooled = vt_gather_rows(x, idx);
    vt_release(x);
    vt_release(idx);
    vt_tensor *y = vt_matmul(pooled, m->text->text_projection);
    vt_release(pooled);
    if (!y) vt_error_context("open_clip encode_text: ");
    return y;
}

vt_tensor *vt_openclip_encode_image(vt_openclip *m, vt_tensor *image) {
    char s[VT_SHAPE_BUF];
    if (!m || !m->visual) {
        vt_error(VT_ERR_ARG, "open_clip encode_image: the vision tower was not built");
        return NULL;
    }
    if (!image) return NULL;
    vt_openclip_vision *v = m->visual;
    if (image->ndim != 4 || image->shape[1] != 3 || image->shape[2] != v->image_size ||
        image->shape[3] != v->image_size) {
        vt_error(VT_ERR_SHAPE, "open_clip encode_image: image %s, expected [B, 3, %d, %d]",
                 vt_shape_str(image, s, sizeof s), v->image_size, v->image_size);
        return NULL;
    }
    vt_tensor *xp = vt_vit_patch_embed(image, v->conv1, v->class_embedding, v->positional_embedding,
                                       v->patch_size, v->grid);
    vt_tensor *x = ln(&v->ln_pre, xp);
    vt_release(xp);
    x = transformer_forward(m, &v->transformer, "visual.", x, v->transformer.layers);
    // ln_post is per token, so pooling token 0 first gives the same result for less work
    vt_tensor *x0 = vt_vit_class_token(x);
    vt_tensor *pooled = ln(&v->ln_post, x0);
    vt_release(x0);
    vt_tensor *y = vt_matmul(pooled, v->proj);
    vt_release(pooled);
    if (!y) vt_error_context("open_clip encode_image: ");
    return y;
}

vt_tensor *vt_openclip_hps_score(vt_tensor *image_embed, vt_tensor *text_embed, vt_tensor **image_features,
                                 vt_tensor **text_features) {
    vt_tensor *fi = vt_l2_normalize(image_embed, CLIP_NORM_EPS);
    vt_tensor *ft = vt_l2_normalize(text_embed, CLIP_NORM_EPS);
    vt_tensor *prod = vt_mul(fi, ft);
    vt_tensor *score = vt_sum_dim(prod, -1, 0);
    vt_release(prod);
    if (image_features) *image_features = vt_retain(fi);
    if (text_features) *text_features = vt_retain(ft);
    vt_release(fi);
    vt_release(ft);
    return score;
}
