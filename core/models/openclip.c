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

vt_err vt_openclip_config_from_json(const cJSON *o, vt_openclip_config *c) {
    if (!o || !cJSON_IsObject(o)) return vt_error(VT_ERR_CONFIG, "open_clip config: not a JSON object");
    vt_err e;
    if ((e = jint(o, "embed_dim", &c->embed_dim)) || (e = jint(o, "quick_gelu", &c->quick_gelu))) return e;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "text_cfg");
    if (cJSON_IsObject(t)) {
        if ((e = jint(t, "context_length", &c->text.context_length)) || (e = jint(t, "vocab_size", &c->text.vocab_size)) ||
            (e = jint(t, "width", &c->text.width)) || (e = jint(t, "heads", &c->text.heads)) ||
            (e = jint(t, "layers", &c->text.layers)))
            return vt_error_context("text_cfg: ");
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "vision_cfg");
    if (cJSON_IsObject(v)) {
        if ((e = jint(v, "image_size", &c->vision.image_size)) || (e = jint(v, "patch_size", &c->vision.patch_size)) ||
            (e = jint(v, "width", &c->vision.width)) || (e = jint(v, "head_width", &c->vision.head_width)) ||
            (e = jint(v, "layers", &c->vision.layers)))
            return vt_error_context("vision_cfg: ");
    }
    return VT_OK;
}

// ---- config inference from shapes --------------------------------------------------------
static int shape_of(vt_weights *w, const char *prefix, const char *name, int64_t *shape) {
    char key[512];
    int nd = 0;
    snprintf(key, sizeof key, "%s%s", prefix, name);
    if (!vt_weights_shape(w, key, &nd, shape)) return 0;
    return nd;
}

static int count_layers(vt_weights *w, const char *prefix, const char *tower) {
    char key[512];
    int n = 0;
    for (;; n++) {
        snprintf(key, sizeof key, "%s%stransformer.resblocks.%d.ln_1.weight", prefix, tower, n);
        if (!vt_weights_has(w, key)) return n;
    }
}

static vt_err infer_config(vt_weights *w, const char *prefix, vt_openclip_config *c, int towers) {
    int64_t s[VT_MAX_DIMS];
    if (towers & VT_OPENCLIP_TEXT) {
        if (shape_of(w, prefix, "token_embedding.weight", s) == 2) {
            if (!c->text.vocab_size) c->text.vocab_size = (int)s[0];
            if (!c->text.width) c->text.width = (int)s[1];
        }
        if (shape_of(w, prefix, "positional_embedding", s) == 2 && !c->text.context_length)
            c->text.context_length = (int)s[0];
        if (shape_of(w, prefix, "text_projection", s) == 2 && !c->embed_dim) c->embed_dim = (int)s[1];
        if (!c->text.layers) c->text.layers = count_layers(w, prefix, "");
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
        if (shape_of(w, prefix, "visual.conv1.weight", s) == 4) {
            if (!c->vision.width) c->vision.width = (int)s[0];
            if (!c->vision.patch_size) c->vision.patch_size = (int)s[2];
        }
        if (shape_of(w, prefix, "visual.positional_embedding", ps) == 2 && !c->vision.image_size && c->vision.patch_size) {
            int g = (int)lround(sqrt((double)(ps[0] - 1)));
            c->vision.image_size = g * c->vision.patch_size;
        }
        if (shape_of(w, prefix, "visual.proj", s) == 2 && !c->embed_dim) c->embed_dim = (int)s[1];
        if (!c->vision.layers) c->vision.layers = count_layers(w, prefix, "visual.");
        if (!c->vision.head_width) c->vision.head_width = 64;
        if (c->vision.width <= 0 || c->vision.layers <= 0 || c->vision.patch_size <= 0 || c->vision.head_width <= 0 ||
            c->vision.width % c->vision.head_width || c->vision.image_size % c->vision.patch_size || c->embed_dim <= 0)
            return vt_error(VT_ERR_CONFIG,
                            "open_clip vision tower (prefix \"%s\"): width %d, head_width %d, layers %d, image %d, "
                            "patch %d, embed_dim %d (from config and weight shapes)",
                            prefix, c->vision.width, c->vision.head_width, c->vision.layers, c->vision.image_size,
                            c->vision.patch_size, c->embed_dim);
    }
    return VT_OK;
}

// ---- building ----------------------------------------------------------------------------
static void get_ln(vt_param_list *pl, vt_clip_ln *ln, const char *name, int64_t W) {
    ln->w = vt_param_getf(pl, 1, (int64_t[]){W}, "%s.weight", name);
    ln->b = vt_param_getf(pl, 1, (int64_t[]){W}, "%s.bias", name);
}

static void get_linear(vt_param_list *pl, vt_clip_linear *l, const char *name, int64_t out, int64_t in) {
    l->w = vt_param_getf(pl, 2, (int64_t[]){out, in}, "%s.weight", name);
    l->b = vt_param_getf(pl, 1, (int64_t[]){out}, "%s.bias", name);
}

// Zero-copy view of rows [r0, r0 + n) of a row-major [R, C] (or [R]) tensor.
static vt_tensor *row_view(vt_tensor *t, int64_t r0, int64_t n) {
    if (!t) return NULL;
    int64_t cols = t->ndim == 2 ? t->shape[1] : 1;
    size_t off = t->offset + (size_t)(r0 * cols) * vt_dtype_size(t->dtype);
    if (t->ndim == 2) return vt_view_storage(t->storage, off, t->dtype, 2, (int64_t[]){n, cols});
    return vt_view_storage(t->storage, off, t->dtype, 1, (int64_t[]){n});
}

static void block_release_views(vt_clip_block *b) {
    vt_clip_linear *l[3] = {&b->q, &b->k, &b->v};
    for (int i = 0; i < 3; i++) {
        vt_clear(&l[i]->w);
        vt_clear(&l[i]->b);
    }
}

static int get_transformer(vt_param_list *pl, vt_clip_transformer *tr, const char *tower, int W, int heads,
                           int layers, int causal, int quick_gelu) {
    tr->width = W;
    tr->heads = heads;
    tr->layers = layers;
    tr->causal = causal;
    tr->quick_gelu = quick_gelu;
    tr->resblocks = calloc((size_t)layers, sizeof *tr->resblocks);
    if (!tr->resblocks) {
        vt_error(VT_ERR_OOM, "open_clip build: out of host memory");
        return pl->failed = 1;
    }
    char k[256];
    for (int i = 0; i < layers && !pl->failed; i++) {
        vt_clip_block *b = &tr->resblocks[i];
        b->heads = heads;
        b->causal = causal;
        b->quick_gelu = quick_gelu;
        snprintf(k, sizeof k, "%stransformer.resblocks.%d.ln_1", tower, i);
        get_ln(pl, &b->ln_1, k, W);
        snprintf(k, sizeof k, "%stransformer.resblocks.%d.attn.in_proj_weight", tower, i);
        b->in_proj_weight = vt_param_get(pl, k, 2, (int64_t[]){3 * (int64_t)W, W});
        snprintf(k, sizeof k, "%stransformer.resblocks.%d.attn.in_proj_bias", tower, i);
        b->in_proj_bias = vt_param_get(pl, k, 1, (int64_t[]){3 * (int64_t)W});
        if (!pl->failed) {
            // nn.MultiheadAttention packs q, k, v as consecutive row blocks of in_proj
            vt_clip_linear *qkv[3] = {&b->q, &b->k, &b->v};
            for (int j = 0; j < 3; j++) {
                qkv[j]->w = row_view(b->in_proj_weight, (int64_t)j * W, W);
                qkv[j]->b = row_view(b->in_proj_bias, (int64_t)j * W, W);
                if (!qkv[j]->w || !qkv[j]->b) pl->failed = 1;
            }
        }
        snprintf(k, sizeof k, "%stransformer.resblocks.%d.attn.out_proj", tower, i);
        get_linear(pl, &b->out_proj, k, W, W);
        snprintf(k, sizeof k, "%stransformer.resblocks.%d.ln_2", tower, i);
        get_ln(pl, &b->ln_2, k, W);
        snprintf(k, sizeof k, "%stransformer.resblocks.%d.mlp.c_fc", tower, i);
        get_linear(pl, &b->c_fc, k, 4 * (int64_t)W, W);
        snprintf(k, sizeof k, "%stransformer.resblocks.%d.mlp.c_proj", tower, i);
        get_linear(pl, &b->c_proj, k, W, 4 * (int64_t)W);
    }
    return pl->failed;
}

static void free_transformer(vt_clip_transformer *tr) {
    if (!tr->resblocks) return;
    for (int i = 0; i < tr->layers; i++) block_release_views(&tr->resblocks[i]);
    free(tr->resblocks);
    tr->resblocks = NULL;
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
            get_transformer(&pl, &t->transformer, "", c->text.width, c->text.heads, c->text.layers, 1, c->quick_gelu);
            get_ln(&pl, &t->ln_final, "ln_final", W);
            t->text_projection = vt_param_get(&pl, "text_projection", 2, (int64_t[]){W, E});
        }
        m->n_params_text = m->n_params;
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
            v->grid = c->vision.image_size / c->vision.patch_size;
            v->width = c->vision.width;
            v->conv1 = vt_param_get(&pl, "visual.conv1.weight", 4, (int64_t[]){W, 3, p, p});
            v->class_embedding = vt_param_get(&pl, "visual.class_embedding", 1, (int64_t[]){W});
            v->positional_embedding = vt_param_get(&pl, "visual.positional_embedding", 2,
                                                   (int64_t[]){(int64_t)v->grid * v->grid + 1, W});
            get_ln(&pl, &v->ln_pre, "visual.ln_pre", W);
            get_transformer(&pl, &v->transformer, "visual.", c->vision.width, c->vision.width / c->vision.head_width,
                            c->vision.layers, 0, c->quick_gelu);
            get_ln(&pl, &v->ln_post, "visual.ln_post", W);
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
    if (m->text) free_transformer(&m->text->transformer);
    if (m->visual) free_transformer(&m->visual->transformer);
    free(m->text);
    free(m->visual);
    vt_param_list_free(m->tensors, m->n_tensors);
    free(m);
}

// ---- forward -----------------------------------------------------------------------------
static vt_tensor *ln(const vt_clip_ln *l, vt_tensor *x) { return vt_layer_norm(x, l->w, l->b, CLIP_LN_EPS); }

// x [B, L, W] -> x + attn(ln_1(x)) -> + mlp(ln_2(.))
static vt_tensor *block_forward(const vt_clip_block *b, vt_tensor *x) {
    if (!x) return NULL;
    int64_t W = vt_dim(x, -1);
    vt_tensor *h = ln(&b->ln_1, x);
    vt_tensor *q = vt_linear(h, b->q.w, b->q.b);
    vt_tensor *k = vt_linear(h, b->k.w, b->k.b);
    vt_tensor *v = vt_linear(h, b->v.w, b->v.b);
    vt_release(h);
    vt_tensor *a = vt_attention(q, k, v, b->heads, 1.0f / sqrtf((float)(W / b->heads)), b->causal);
    vt_release(q);
    vt_release(k);
    vt_release(v);
    vt_tensor *o = vt_linear(a, b->out_proj.w, b->out_proj.b);
    vt_release(a);
    vt_tensor *x1 = vt_add(x, o);
    vt_release(o);
    h = ln(&b->ln_2, x1);
    vt_tensor *f = vt_linear(h, b->c_fc.w, b->c_fc.b);
    vt_release(h);
    vt_tensor *g = b->quick_gelu ? vt_quick_gelu(f) : vt_gelu(f);
    vt_release(f);
    vt_tensor *p = vt_linear(g, b->c_proj.w, b->c_proj.b);
    vt_release(g);
    vt_tensor *y = vt_add(x1, p);
    vt_release(x1);
    vt_release(p);
    return y;
}

static vt_tensor *block_segment(void *ctx, vt_tensor *const *in, int n_in) {
    (void)n_in;
    return block_forward((const vt_clip_block *)ctx, in[0]);
}

// Runs blocks [0, n) of tr on x (released).
static vt_tensor *transformer_forward(vt_openclip *m, const vt_clip_transformer *tr, const char *tower,
                                      vt_tensor *x, int n) {
    char name[128];
    for (int i = 0; i < n && x; i++) {
        const vt_clip_block *b = &tr->resblocks[i];
        vt_tensor *y = m->segments ? vt_segment(block_segment, (void *)b, &x, 1) : block_forward(b, x);
        vt_release(x);
        x = y;
        if (m->hook && x) {
            snprintf(name, sizeof name, "%stransformer.resblocks.%d", tower, i);
            m->hook(m->hook_user, name, x);
        }
    }
    return x;
}

static int check_tokens(const vt_openclip *m, const vt_tensor *tokens, const char *fn) {
    char s[VT_SHAPE_BUF];
    if (!m || !m->text) {
        vt_error(VT_ERR_ARG, "%s: the text tower was not built", fn);
        return 1;
    }
    if (!tokens) return 1;
    if (tokens->dtype != VT_I64 || tokens->ndim != 2 || tokens->shape[1] > m->text->context_length ||
        tokens->shape[1] < 1) {
        vt_error(VT_ERR_SHAPE, "%s: tokens %s %s, expected i64 [B, <= %d]", fn, vt_dtype_name(tokens->dtype),
                 vt_shape_str(tokens, s, sizeof s), m->text->context_length);
        return 1;
    }
    const int64_t *id = vt_i64(tokens);
    for (int64_t i = 0; i < tokens->numel; i++)
        if (id[i] < 0 || id[i] >= m->text->vocab_size) {
            vt_error(VT_ERR_ARG, "%s: token id %lld at %lld outside the vocabulary [0, %d)", fn, (long long)id[i],
                     (long long)i, m->text->vocab_size);
            return 1;
        }
    return 0;
}

// token_embedding[tokens] + positional_embedding[:L], then n_blocks blocks, then ln_final
static vt_tensor *text_forward(vt_openclip *m, const vt_tensor *tokens, int n_blocks) {
    vt_openclip_text *t = m->text;
    int64_t L = tokens->shape[1];
    vt_tensor *e = vt_embedding(t->token_embedding, tokens);
    vt_tensor *pos = L == t->context_length ? vt_retain(t->positional_embedding)
                                            : row_view(t->positional_embedding, 0, L);
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
    const int64_t *id = vt_i64(tokens);
    for (int64_t b = 0; b < B; b++) {
        int64_t best = 0;
        for (int64_t j = 1; j < L; j++)
            if (id[b * L + j] > id[b * L + best]) best = j;
        vt_i64(idx)[b] = best;
    }
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
    int64_t B = image->shape[0], W = v->width, G2 = (int64_t)v->grid * v->grid;
    vt_tensor *p = vt_conv2d(image, v->conv1, NULL, v->patch_size, 0);  // [B, W, g, g]
    vt_tensor *pr = vt_reshape(p, 3, (int64_t[]){B, W, G2});
    vt_release(p);
    vt_tensor *pt = vt_permute(pr, 3, (const int[]){0, 2, 1});  // [B, g*g, W], row-major patches
    vt_release(pr);
    vt_tensor *ce = vt_view(v->class_embedding, 3, (int64_t[]){1, 1, W});
    vt_tensor *cls = vt_repeat_interleave(ce, 0, B);  // [B, 1, W]
    vt_release(ce);
    vt_tensor *parts[2] = {cls, pt};
    vt_tensor *x = cls && pt ? vt_concat(parts, 2, 1) : NULL;  // [B, 1 + g*g, W]
    vt_release(cls);
    vt_release(pt);
    vt_tensor *xp = vt_add(x, v->positional_embedding);
    vt_release(x);
    x = ln(&v->ln_pre, xp);
    vt_release(xp);
    x = transformer_forward(m, &v->transformer, "visual.", x, v->transformer.layers);
    // ln_post is per token, so pooling token 0 first gives the same result for less work
    vt_tensor *x0 = vt_slice(x, 1, 0, 1);
    vt_release(x);
    vt_tensor *x0r = vt_reshape(x0, 2, (int64_t[]){B, W});
    vt_release(x0);
    vt_tensor *pooled = ln(&v->ln_post, x0r);
    vt_release(x0r);
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
