// vjepa2.c — V-JEPA 2 encoder, predictor, 3-D RoPE tables and the V-JEPA mask generators
// (see vjepa2.h).
#include "vjepa2.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../ops.h"
#include "param_list.h"

vt_vjepa2_config vt_vjepa2_config_vitl_256(void) {
    vt_vjepa2_config c = {1024, 16, 24, 384, 12, 12, 10, 16, 2, 256, 4096, 1536, 1e-6f};
    return c;
}

// ---- config ------------------------------------------------------------------------------
static vt_err json_int(const cJSON *o, const char *name, int *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!it) return VT_OK;
    if (!cJSON_IsNumber(it) || it->valuedouble != (double)(int)it->valuedouble || it->valuedouble < 1)
        return vt_error(VT_ERR_CONFIG, "VJEPA2Config: %s must be a positive integer", name);
    *v = (int)it->valuedouble;
    return VT_OK;
}

static vt_err json_num(const cJSON *o, const char *name, double *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!it) return VT_OK;
    if (!cJSON_IsNumber(it) || !(it->valuedouble > 0))
        return vt_error(VT_ERR_CONFIG, "VJEPA2Config: %s must be a positive number", name);
    *v = it->valuedouble;
    return VT_OK;
}

vt_err vt_vjepa2_config_from_json(const cJSON *o, vt_vjepa2_config *c) {
    *c = vt_vjepa2_config_vitl_256();
    if (!o) return VT_OK;
    if (!cJSON_IsObject(o)) return vt_error(VT_ERR_CONFIG, "VJEPA2Config: not a json object");
    double mlp_ratio = 4.0, pred_mlp_ratio = 4.0, eps = c->eps;
    vt_err e = VT_OK;
    if (!e) e = json_int(o, "hidden_size", &c->hidden_size);
    if (!e) e = json_int(o, "num_attention_heads", &c->heads);
    if (!e) e = json_int(o, "num_hidden_layers", &c->layers);
    if (!e) e = json_int(o, "pred_hidden_size", &c->pred_hidden_size);
    if (!e) e = json_int(o, "pred_num_attention_heads", &c->pred_heads);
    if (!e) e = json_int(o, "pred_num_hidden_layers", &c->pred_layers);
    if (!e) e = json_int(o, "pred_num_mask_tokens", &c->pred_num_mask_tokens);
    if (!e) e = json_int(o, "patch_size", &c->patch_size);
    if (!e) e = json_int(o, "tubelet_size", &c->tubelet_size);
    if (!e) e = json_int(o, "crop_size", &c->crop_size);
    if (!e) e = json_num(o, "mlp_ratio", &mlp_ratio);
    if (!e) e = json_num(o, "pred_mlp_ratio", &pred_mlp_ratio);
    if (!e) e = json_num(o, "layer_norm_eps", &eps);
    if (e) return e;
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(o, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "gelu")))
        return vt_error(VT_ERR_CONFIG, "VJEPA2Config: hidden_act must be \"gelu\" (the exact GELU)");
    c->mlp = (int)(c->hidden_size * mlp_ratio);  // python int(): truncation
    c->pred_mlp = (int)(c->pred_hidden_size * pred_mlp_ratio);
    c->eps = (float)eps;
    return VT_OK;
}

// Missing config: everything but the head counts and crop size from the shapes.
vt_err vt_vjepa2_infer_config(vt_weights *w, const char *prefix, vt_vjepa2_config *c) {
    char key[512];
    int nd = 0;
    int64_t s[VT_MAX_DIMS];
    *c = vt_vjepa2_config_vitl_256();
#define SHAPE(name) (snprintf(key, sizeof key, "%s%s", prefix, name), vt_weights_shape(w, key, &nd, s))
    if (!SHAPE("encoder.embeddings.patch_embeddings.proj.weight") || nd != 5)
        return vt_error(VT_ERR_KEY, "V-JEPA 2: key %s missing or not a Conv3d weight [W, 3, ts, p, p]", key);
    c->hidden_size = (int)s[0];
    c->tubelet_size = (int)s[2];
    c->patch_size = (int)s[3];
    if (!SHAPE("predictor.embeddings.predictor_embeddings.weight") || nd != 2)
        return vt_error(VT_ERR_KEY, "V-JEPA 2: key %s missing or not a Linear weight", key);
    c->pred_hidden_size = (int)s[0];
    if (!SHAPE("predictor.embeddings.mask_tokens") || nd != 4)
        return vt_error(VT_ERR_KEY, "V-JEPA 2: key %s missing or not [n, 1, 1, P]", key);
    c->pred_num_mask_tokens = (int)s[0];
    if (!SHAPE("encoder.layer.0.mlp.fc1.weight") || nd != 2)
        return vt_error(VT_ERR_KEY, "V-JEPA 2: key %s missing", key);
    c->mlp = (int)s[0];
    if (!SHAPE("predictor.layer.0.mlp.fc1.weight") || nd != 2)
        return vt_error(VT_ERR_KEY, "V-JEPA 2: key %s missing", key);
    c->pred_mlp = (int)s[0];
    int n = 0;
    while (snprintf(key, sizeof key, "%sencoder.layer.%d.norm1.weight", prefix, n), vt_weights_shape(w, key, &nd, s)) n++;
    c->layers = n;
    n = 0;
    while (snprintf(key, sizeof key, "%spredictor.layer.%d.norm1.weight", prefix, n), vt_weights_shape(w, key, &nd, s))
        n++;
    c->pred_layers = n;
#undef SHAPE
    // the released widths: ViT-L 1024 / 16, ViT-H 1280 / 16, ViT-g 1408 / 22; predictor 384 / 12
    c->heads = c->hidden_size == 1280 ? 16 : c->hidden_size % 64 == 0 ? c->hidden_size / 64 : 1;
    c->pred_heads = c->pred_hidden_size % 32 == 0 ? c->pred_hidden_size / 32 : 1;
    return VT_OK;
}

// ---- build -------------------------------------------------------------------------------
static const vt_vit_block_keys k_layer_keys = {
    "norm1", "norm2", NULL, NULL, "attention.query", "attention.key", "attention.value", "attention.proj",
    "mlp.fc1", "mlp.fc2",
};

void vt_vjepa2_free(vt_vjepa2 *m) {
    if (!m) return;
    vt_vit_stack_free(&m->encoder);
    vt_vit_stack_free(&m->predictor);
    vt_param_list_free(m->params, m->n_tensors);
    free(m);
}

vt_err vt_vjepa2_to_device(vt_vjepa2 *m, vt_device dev) {
    if (!m) return vt_error(VT_ERR_ARG, "vjepa2 to_device: NULL model");
    if (vt_vit_model_to_device(m->params, m->n_tensors, (vt_vit_stack *const[]){&m->encoder, &m->predictor}, 2, NULL, 0, dev)) return vt_error_context("vjepa2 to %s: ", vt_device_name(dev));
    return VT_OK;
}

vt_vjepa2 *vt_vjepa2_build(vt_weights *w, const char *prefix, const vt_vjepa2_config *cfg) {
    if (!w) {
        vt_error(VT_ERR_ARG, "V-JEPA 2 build: no weights");
        return NULL;
    }
    prefix = prefix ? prefix : "";
    vt_vjepa2 *m = calloc(1, sizeof *m);
    if (!m) {
        vt_error(VT_ERR_OOM, "V-JEPA 2 build: out of host memory");
        return NULL;
    }
    if (cfg) {
        m->cfg = *cfg;
    } else if (vt_vjepa2_infer_config(w, prefix, &m->cfg)) {
        free(m);
        return NULL;
    }
    const vt_vjepa2_config *c = &m->cfg;
    if (c->hidden_size % c->heads || c->pred_hidden_size % c->pred_heads || (c->hidden_size / c->heads) % 2 ||
        (c->pred_hidden_size / c->pred_heads) % 2 || c->crop_size % c->patch_size) {
        vt_error(VT_ERR_CONFIG,
                 "V-JEPA 2: widths %d / %d with %d / %d heads, crop %d, patch %d (need even head dims and a "
                 "crop size divisible by the patch size)",
                 c->hidden_size, c->pred_hidden_size, c->heads, c->pred_heads, c->crop_size, c->patch_size);
        free(m);
        return NULL;
    }
    vt_param_list pl = {&m->params, &m->n_tensors, &m->cap, &m->n_params, w, prefix, 0};
    int64_t W = c->hidden_size, P = c->pred_hidden_size, p = c->patch_size;
    m->patch_w = vt_param_get(&pl, "encoder.embeddings.patch_embeddings.proj.weight", 5,
                              (int64_t[]){W, 3, c->tubelet_size, p, p});
    m->patch_b = vt_param_get(&pl, "encoder.embeddings.patch_embeddings.proj.bias", 1, (int64_t[]){W});
    m->encoder = (vt_vit_stack){(int)W, c->heads, c->layers, 0, 0, c->eps, NULL};
    if (!pl.failed) vt_vit_stack_get(&pl, &m->encoder, "encoder.layer.", &k_layer_keys, c->mlp);
    if (!pl.failed) vt_vit_get_ln(&pl, &m->enc_norm, "encoder.layernorm", W);
    if (!pl.failed) vt_vit_get_linear(&pl, &m->pred_embed, "predictor.embeddings.predictor_embeddings", P, W);
    m->mask_tokens = vt_param_get(&pl, "predictor.embeddings.mask_tokens", 4,
                                  (int64_t[]){c->pred_num_mask_tokens, 1, 1, P});
    m->predictor = (vt_vit_stack){(int)P, c->pred_heads, c->pred_layers, 0, 0, c->eps, NULL};
    if (!pl.failed) vt_vit_stack_get(&pl, &m->predictor, "predictor.layer.", &k_layer_keys, c->pred_mlp);
    if (!pl.failed) vt_vit_get_ln(&pl, &m->pred_norm, "predictor.layernorm", P);
    if (!pl.failed) vt_vit_get_linear(&pl, &m->pred_proj, "predictor.proj", W, P);
    if (pl.failed) {
        vt_error_context("V-JEPA 2 (prefix \"%s\"): ", prefix);
        vt_vjepa2_free(m);
        return NULL;
    }
    return m;
}

// ---- RoPE --------------------------------------------------------------------------------
vt_err vt_vjepa2_rope_tables(const vt_vjepa2_config *cfg, int heads, int D, const int64_t *ids, int64_t L,
                             vt_tensor **cos_out, vt_tensor **sin_out) {
    *cos_out = *sin_out = NULL;
    const int64_t HD = (int64_t)heads * D, g = cfg->crop_size / cfg->patch_size;
    const int s = 2 * ((D / 3) / 2), half = s / 2;
    vt_tensor *ct = vt_empty(VT_F32, VT_CPU, 2, (int64_t[]){L, HD});
    vt_tensor *st = ct ? vt_empty(VT_F32, VT_CPU, 2, (int64_t[]){L, HD}) : NULL;
    float *omega = malloc((size_t)(half > 0 ? half : 1) * sizeof *omega);
    if (!ct || !st || !omega) {
        vt_release(ct);
        vt_release(st);
        free(omega);
        return vt_error_code() ? vt_error_code() : vt_error(VT_ERR_OOM, "V-JEPA 2 rope: out of host memory");
    }
    // torch, in float32: omega = 1 / 10000 ** (arange(s/2) / (s/2))
    for (int i = 0; i < half; i++) omega[i] = 1.0f / powf(10000.0f, (float)i / ((float)s / 2.0f));
    float *cv = vt_f32(ct), *sv = vt_f32(st);
    for (int64_t l = 0; l < L; l++) {
        int64_t id = ids ? ids[l] : l;
        int64_t pos[3] = {id / (g * g), (id % (g * g)) / g, id % g};  // frame, row, column
        float *cr = cv + l * HD, *sr = sv + l * HD;
        for (int j = 0; j < D; j++) {
            int sec = s ? j / s : 3;
            float cj = 1.0f, sj = 0.0f;
            if (sec < 3) {
                float f = (float)pos[sec] * omega[(j % s) % half];
                cj = cosf(f);
                sj = sinf(f);
                if (j % 2 == 0) sj = -sj;  // (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin)
            }
            for (int h = 0; h < heads; h++) {
                cr[(int64_t)h * D + j] = cj;
                sr[(int64_t)h * D + j] = sj;
            }
        }
    }
    free(omega);
    *cos_out = ct;
    *sin_out = st;
    return VT_OK;
}

// ---- forward -----------------------------------------------------------------------------
vt_tensor *vt_vjepa2_patch_embed(const vt_vjepa2 *m, vt_tensor *x) {
    if (!x) return NULL;
    const vt_vjepa2_config *c = &m->cfg;
    char s[VT_SHAPE_BUF];
    int64_t ts = c->tubelet_size, p = c->patch_size;
    if (x->ndim != 5 || x->shape[1] != 3 || x->shape[2] % ts || x->shape[3] % p || x->shape[4] % p) {
        vt_error(VT_ERR_SHAPE, "V-JEPA 2: pixel values %s, expected [B, 3, T, H, W] with T a multiple of %lld and H, W "
                 "of %lld", vt_shape_str(x, s, sizeof s), (long long)ts, (long long)p);
        return NULL;
    }
    int64_t B = x->shape[0], T = x->shape[2] / ts, H = x->shape[3], Wd = x->shape[4], O = c->hidden_size;
    int64_t gh = H / p, gw = Wd / p;
    // Conv3d with stride = kernel = (ts, p, p) is a conv2d of stride p per tubelet whose input
    // channels are (c, kt) pairs: [B, 3, T, ts, HW] -> [B, T, 3, ts, HW] -> [(B T), 3 ts, H, W]
    vt_tensor *a = vt_reshape(x, 5, (int64_t[]){B, 3, T, ts, H * Wd});
    vt_tensor *b = vt_permute(a, 5, (const int[]){0, 2, 1, 3, 4});
    vt_release(a);
    vt_tensor *f = vt_reshape(b, 4, (int64_t[]){B * T, 3 * ts, H, Wd});
    vt_release(b);
    vt_tensor *wv = vt_view(m->patch_w, 4, (int64_t[]){O, 3 * ts, p, p});
    vt_tensor *y = vt_conv2d(f, wv, m->patch_b, (int)p, 0);  // [(B T), O, gh, gw]
    vt_release(f);
    vt_release(wv);
    vt_tensor *yr = vt_reshape(y, 4, (int64_t[]){B, T, O, gh * gw});
    vt_release(y);
    vt_tensor *yp = vt_permute(yr, 4, (const int[]){0, 1, 3, 2});  // [B, T, gh gw, O]
    vt_release(yr);
    vt_tensor *out = vt_reshape(yp, 3, (int64_t[]){B, T * gh * gw, O});
    vt_release(yp);
    return out;
}

vt_tensor *vt_vjepa2_gather_tokens(vt_tensor *x, const int64_t *ids, int64_t K) {
    if (!x) return NULL;
    int64_t B = x->shape[0], N = x->shape[1], D = x->shape[2];
    for (int64_t k = 0; k < K; k++)
        if (ids[k] < 0 || ids[k] >= N) {
            vt_error(VT_ERR_ARG, "V-JEPA 2: token id %lld (position %lld) out of range for %lld tokens", (long long)ids[k],
                     (long long)k, (long long)N);
            return NULL;
        }
    vt_tensor *rows = vt_empty(VT_I64, VT_CPU, 2, (int64_t[]){B, K});
    if (!rows) return NULL;
    for (int64_t b = 0; b < B; b++)
        for (int64_t k = 0; k < K; k++) vt_i64(rows)[b * K + k] = b * N + ids[k];
    rows = vt_move_to(rows, x->device);
    if (!rows) return NULL;
    vt_tensor *flat = vt_reshape(x, 2, (int64_t[]){B * N, D});
    vt_tensor *out = vt_embedding(flat, rows);  // [B, K, D], gradient scattered back into x
    vt_release(flat);
    vt_release(rows);
    return out;
}

// x [B, L, width] through a stack with RoPE at ids (NULL: 0..L-1), then the final LayerNorm.
static vt_tensor *run_stack(const vt_vjepa2 *m, const vt_vit_stack *st, const vt_clip_ln *ln, vt_tensor *x,
                            const int64_t *ids, const char *hook_prefix) {
    if (!x) return NULL;
    vt_tensor *rc = NULL, *rs = NULL;
    if (vt_vjepa2_rope_tables(&m->cfg, st->heads, st->width / st->heads, ids, x->shape[1], &rc, &rs)) {
        vt_release(x);
        return NULL;
    }
    rc = vt_move_to(rc, x->device);
    rs = vt_move_to(rs, x->device);
    vt_tensor *y = vt_vit_stack_forward_rope(st, x, st->layers, m->segments, rc, rs, m->hook, m->hook_user, hook_prefix);
    vt_release(rc);
    vt_release(rs);
    vt_tensor *out = vt_layer_norm(y, ln->w, ln->b, m->cfg.eps);
    vt_release(y);
    return out;
}

vt_tensor *vt_vjepa2_encode(const vt_vjepa2 *m, vt_tensor *pixel_values, const int64_t *keep, int64_t n_keep) {
    vt_tensor *x = vt_vjepa2_patch_embed(m, pixel_values);
    if (x && keep) {
        vt_tensor *xk = vt_vjepa2_gather_tokens(x, keep, n_keep);
        vt_release(x);
        x = xk;
    }
    return run_stack(m, &m->encoder, &m->enc_norm, x, keep, "encoder.layer.");
}

vt_tensor *vt_vjepa2_predict(const vt_vjepa2 *m, vt_tensor *context, const int64_t *ctx, int64_t Kc,
                             const int64_t *tgt, int64_t Kt, int mask_index) {
    if (!context) return NULL;
    char s[VT_SHAPE_BUF];
    const vt_vjepa2_config *c = &m->cfg;
    if (context->ndim != 3 || context->shape[1] != Kc || context->shape[2] != c->hidden_size || Kt < 1) {
        vt_error(VT_ERR_SHAPE, "V-JEPA 2 predictor: context %s for %lld context ids (width %d), %lld targets",
                 vt_shape_str(context, s, sizeof s), (long long)Kc, c->hidden_size, (long long)Kt);
        return NULL;
    }
    int64_t B = context->shape[0], P = c->pred_hidden_size, L = Kc + Kt;
    int64_t *ids = malloc((size_t)L * sizeof *ids);
    if (!ids) {
        vt_error(VT_ERR_OOM, "V-JEPA 2 predictor: out of host memory");
        return NULL;
    }
    memcpy(ids, ctx, (size_t)Kc * sizeof *ids);
    memcpy(ids + Kc, tgt, (size_t)Kt * sizeof *ids);
    vt_tensor *h = vt_linear(context, m->pred_embed.w, m->pred_embed.b);  // [B, Kc, P]
    int mi = ((mask_index % c->pred_num_mask_tokens) + c->pred_num_mask_tokens) % c->pred_num_mask_tokens;
    vt_tensor *tok = vt_view_storage(m->mask_tokens->storage,
                                     m->mask_tokens->offset + (size_t)(mi * P) * vt_dtype_size(m->mask_tokens->dtype),
                                     m->mask_tokens->dtype, 3, (int64_t[]){1, 1, P});
    vt_tensor *t1 = vt_repeat_interleave(tok, 1, Kt);
    vt_release(tok);
    vt_tensor *tb = vt_repeat_interleave(t1, 0, B);  // [B, Kt, P]
    vt_release(t1);
    vt_tensor *parts[2] = {h, tb};
    vt_tensor *x = h && tb ? vt_concat(parts, 2, 1) : NULL;
    vt_release(h);
    vt_release(tb);
    vt_tensor *y = run_stack(m, &m->predictor, &m->pred_norm, x, ids, "predictor.layer.");
    free(ids);
    vt_tensor *yt = vt_slice(y, 1, Kc, Kt);
    vt_release(y);
    vt_tensor *out = vt_linear(yt, m->pred_proj.w, m->pred_proj.b);
    vt_release(yt);
    return out;
}

// ---- masks -------------------------------------------------------------------------------
void vt_vjepa2_mask_free(vt_vjepa2_mask *m) {
    if (!m) return;
    free(m->ctx);
    free(m->tgt);
    memset(m, 0, sizeof *m);
}

// From a 0/1 "masked" flag per token.
static vt_err mask_from_flags(vt_vjepa2_mask *m, const unsigned char *masked, int64_t N) {
    memset(m, 0, sizeof *m);
    int64_t nt = 0;
    for (int64_t i = 0; i < N; i++) nt += masked[i] != 0;
    if (nt == 0 || nt == N)
        return vt_error(VT_ERR_ARG, "V-JEPA 2 mask: %lld of %lld tokens masked (need a non-empty context and target)",
                        (long long)nt, (long long)N);
    m->ctx = malloc((size_t)(N - nt) * sizeof *m->ctx);
    m->tgt = malloc((size_t)nt * sizeof *m->tgt);
    if (!m->ctx || !m->tgt) {
        vt_vjepa2_mask_free(m);
        return vt_error(VT_ERR_OOM, "V-JEPA 2 mask: out of host memory");
    }
    for (int64_t i = 0; i < N; i++) {
        if (masked[i]) m->tgt[m->n_tgt++] = i;
        else m->ctx[m->n_ctx++] = i;
    }
    return VT_OK;
}

vt_err vt_vjepa2_mask_from_target(vt_vjepa2_mask *m, const int64_t *tgt, int64_t n, int64_t N) {
    memset(m, 0, sizeof *m);
    unsigned char *f = calloc((size_t)(N > 0 ? N : 1), 1);
    if (!f) return vt_error(VT_ERR_OOM, "V-JEPA 2 mask: out of host memory");
    for (int64_t i = 0; i < n; i++) {
        if (tgt[i] < 0 || tgt[i] >= N) {
            free(f);
            return vt_error(VT_ERR_ARG, "V-JEPA 2 mask: target id %lld out of range for %lld tokens", (long long)tgt[i],
                            (long long)N);
        }
        f[tgt[i]] = 1;
    }
    vt_err e = mask_from_flags(m, f, N);
    free(f);
    return e;
}

vt_err vt_vjepa2_mask_multiblock(vt_vjepa2_mask *m, int t, int g, int n_blocks, float spatial_scale,
                                 float temporal_scale, float aspect_lo, float aspect_hi, uint64_t seed) {
    memset(m, 0, sizeof *m);
    if (t < 1 || g < 2 || n_blocks < 1 || !(spatial_scale > 0 && spatial_scale <= 1) ||
        !(temporal_scale > 0 && temporal_scale <= 1) || !(aspect_lo > 0 && aspect_lo <= aspect_hi))
        return vt_error(VT_ERR_ARG,
                        "V-JEPA 2 multi-block mask: grid %d x %d x %d, %d blocks, spatial scale %g, temporal scale %g, "
                        "aspect [%g, %g] (need g >= 2, scales in (0, 1], 0 < aspect_lo <= aspect_hi)",
                        t, g, g, n_blocks, (double)spatial_scale, (double)temporal_scale, (double)aspect_lo,
                        (double)aspect_hi);
    int64_t N = (int64_t)t * g * g;
    unsigned char *f = malloc((size_t)N);
    if (!f) return vt_error(VT_ERR_OOM, "V-JEPA 2 mask: out of host memory");
    vt_rng rng;
    vt_rng_seed(&rng, seed);
    // one block size for all blocks of the mask (V-JEPA samples it once per mask generator)
    int bt = (int)((float)t * temporal_scale);
    if (bt < 1) bt = 1;
    int keep = (int)((float)(g * g) * spatial_scale);
    if (keep < 1) keep = 1;
    float ar = aspect_lo + vt_rng_uniform(&rng) * (aspect_hi - aspect_lo);
    int bh = (int)lroundf(sqrtf((float)keep * ar)), bw = (int)lroundf(sqrtf((float)keep / ar));
    bh = bh < 1 ? 1 : bh > g - 1 ? g - 1 : bh;
    bw = bw < 1 ? 1 : bw > g - 1 ? g - 1 : bw;
    vt_err e = VT_ERR_ARG;
    for (int attempt = 0; attempt < 100 && e; attempt++) {
        memset(f, 0, (size_t)N);
        for (int k = 0; k < n_blocks; k++) {
            int t0 = (int)(vt_rng_u64(&rng) % (uint64_t)(t - bt + 1));
            int y0 = (int)(vt_rng_u64(&rng) % (uint64_t)(g - bh + 1));
            int x0 = (int)(vt_rng_u64(&rng) % (uint64_t)(g - bw + 1));
            for (int tt = t0; tt < t0 + bt; tt++)
                for (int yy = y0; yy < y0 + bh; yy++)
                    for (int xx = x0; xx < x0 + bw; xx++) f[((int64_t)tt * g + yy) * g + xx] = 1;
        }
        int64_t nt = 0;
        for (int64_t i = 0; i < N; i++) nt += f[i];
        if (nt > 0 && nt < N) e = mask_from_flags(m, f, N);
    }
    free(f);
    if (e)
        return vt_error(VT_ERR_ARG,
                        "V-JEPA 2 multi-block mask: %d blocks of %d x %d x %d cover the whole %d x %d x %d grid in 100 "
                        "tries (use fewer blocks or a smaller scale)",
                        n_blocks, bt, bh, bw, t, g, g);
    return VT_OK;
}

vt_err vt_vjepa2_mask_tube(vt_vjepa2_mask *m, int t, int g, float ratio, uint64_t seed) {
    memset(m, 0, sizeof *m);
    int G = g * g, n = (int)lroundf(ratio * (float)G);
    if (t < 1 || g < 1 || n < 1 || n >= G)
        return vt_error(VT_ERR_ARG, "V-JEPA 2 tube mask: ratio %g masks %d of %d positions (need 1 .. %d)", (double)ratio,
                        n, G, G - 1);
    int *perm = malloc((size_t)G * sizeof *perm);
    unsigned char *f = calloc((size_t)t * G, 1);
    if (!perm || !f) {
        free(perm);
        free(f);
        return vt_error(VT_ERR_OOM, "V-JEPA 2 mask: out of host memory");
    }
    vt_rng rng;
    vt_rng_seed(&rng, seed);
    for (int i = 0; i < G; i++) perm[i] = i;
    for (int i = G - 1; i > 0; i--) {  // Fisher-Yates
        int j = (int)(vt_rng_u64(&rng) % (uint64_t)(i + 1));
        int tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    for (int k = 0; k < n; k++)
        for (int tt = 0; tt < t; tt++) f[(int64_t)tt * G + perm[k]] = 1;
    vt_err e = mask_from_flags(m, f, (int64_t)t * G);
    free(perm);
    free(f);
    return e;
}
