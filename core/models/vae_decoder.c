// vae_decoder.c — lvdm AutoencoderKL decode path (see vae_decoder.h). Layout [N, C, H, W].
#include "vae_decoder.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../ops.h"
#include "param_list.h"

// lvdm Normalize(): GroupNorm(32 groups, eps 1e-6, affine)
#define VAE_GROUPS 32
#define VAE_GN_EPS 1e-6f

vt_vae_config vt_vae_config_videocrafter2(void) {
    vt_vae_config c;
    memset(&c, 0, sizeof c);
    c.z_channels = 4;
    c.ch = 128;
    c.out_ch = 3;
    c.num_res_blocks = 2;
    c.resolution = 256;
    c.n_levels = 4;
    c.ch_mult[0] = 1;
    c.ch_mult[1] = 2;
    c.ch_mult[2] = 4;
    c.ch_mult[3] = 4;
    c.n_attn = 0;
    c.embed_dim = 0;  // = z_channels
    c.resamp_with_conv = 1;
    c.scale_factor = 0.18215f;
    return c;
}

int vt_vae_latent_channels(const vt_vae_config *c) { return c->embed_dim > 0 ? c->embed_dim : c->z_channels; }

static vt_err json_int(const cJSON *o, const char *name, int *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!it) return VT_OK;
    if (cJSON_IsBool(it)) {
        *v = cJSON_IsTrue(it);
        return VT_OK;
    }
    if (!cJSON_IsNumber(it) || it->valuedouble != (double)(int)it->valuedouble)
        return vt_error(VT_ERR_CONFIG, "vae config: %s must be an integer", name);
    *v = (int)it->valuedouble;
    return VT_OK;
}

static vt_err json_int_list(const cJSON *o, const char *name, int *v, int *n, int max) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!it) return VT_OK;
    if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) > max)
        return vt_error(VT_ERR_CONFIG, "vae config: %s must be a list of at most %d integers", name, max);
    int k = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, it) {
        if (!cJSON_IsNumber(e)) return vt_error(VT_ERR_CONFIG, "vae config: %s[%d] is not a number", name, k);
        v[k++] = (int)e->valuedouble;
    }
    *n = k;
    return VT_OK;
}

// Decoder options only supported at lvdm's default (a config asking for more fails by name).
static vt_err check_fixed_options(const cJSON *o) {
    const char *flags[] = {"use_linear_attn", "tanh_out", "give_pre_end"};
    for (int i = 0; i < 3; i++) {
        int v = 0;
        if (json_int(o, flags[i], &v)) return vt_error_code();
        if (v) return vt_error(VT_ERR_CONFIG, "vae config: %s = true is not implemented", flags[i]);
    }
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(o, "attn_type");
    if (at && !(cJSON_IsString(at) && strcmp(at->valuestring, "vanilla") == 0))
        return vt_error(VT_ERR_CONFIG, "vae config: attn_type \"%s\" is not implemented (only \"vanilla\")",
                        cJSON_IsString(at) ? at->valuestring : "?");
    return VT_OK;
}

vt_err vt_vae_config_from_json(const cJSON *o, vt_vae_config *c) {
    if (!o || !cJSON_IsObject(o)) return vt_error(VT_ERR_CONFIG, "vae config: not a JSON object");
    vt_err e;
    if ((e = check_fixed_options(o)) || (e = json_int(o, "embed_dim", &c->embed_dim)) ||
        (e = json_int(o, "resamp_with_conv", &c->resamp_with_conv)) || (e = json_int(o, "z_channels", &c->z_channels)) ||
        (e = json_int(o, "ch", &c->ch)) ||
        (e = json_int(o, "out_ch", &c->out_ch)) || (e = json_int(o, "num_res_blocks", &c->num_res_blocks)) ||
        (e = json_int(o, "resolution", &c->resolution)) ||
        (e = json_int_list(o, "ch_mult", c->ch_mult, &c->n_levels, VT_VAE_MAX_LEVELS)) ||
        (e = json_int_list(o, "attn_resolutions", c->attn_resolutions, &c->n_attn, VT_VAE_MAX_LEVELS)))
        return e;
    const cJSON *sf = cJSON_GetObjectItemCaseSensitive(o, "scale_factor");
    if (cJSON_IsNumber(sf)) c->scale_factor = (float)sf->valuedouble;
    return VT_OK;
}

static vt_err config_check(const vt_vae_config *c) {
    if (c->z_channels <= 0 || c->ch <= 0 || c->out_ch <= 0 || c->num_res_blocks < 0 || c->n_levels <= 0 ||
        c->n_levels > VT_VAE_MAX_LEVELS || c->scale_factor == 0.0f || c->embed_dim < 0)
        return vt_error(VT_ERR_CONFIG,
                        "vae config: z_channels %d, ch %d, out_ch %d, num_res_blocks %d, %d levels, scale_factor %g",
                        c->z_channels, c->ch, c->out_ch, c->num_res_blocks, c->n_levels, (double)c->scale_factor);
    for (int i = 0; i < c->n_levels; i++)
        if (c->ch_mult[i] <= 0 || (c->ch * c->ch_mult[i]) % VAE_GROUPS)
            return vt_error(VT_ERR_CONFIG, "vae config: ch %d * ch_mult[%d] %d is not a positive multiple of %d groups",
                            c->ch, i, c->ch_mult[i], VAE_GROUPS);
    return VT_OK;
}

// ---- building ----------------------------------------------------------------------------
static void get_conv(vt_param_list *pl, vt_vae_conv *c, const char *name, int64_t out, int64_t in, int k) {
    c->w = vt_param_getf(pl, 4, (int64_t[]){out, in, k, k}, "%s.weight", name);
    c->b = vt_param_getf(pl, 1, (int64_t[]){out}, "%s.bias", name);
}

static void get_norm(vt_param_list *pl, vt_vae_norm *n, const char *name, int64_t ch) {
    n->w = vt_param_getf(pl, 1, (int64_t[]){ch}, "%s.weight", name);
    n->b = vt_param_getf(pl, 1, (int64_t[]){ch}, "%s.bias", name);
}

static void get_resblock(vt_param_list *pl, vt_vae_resblock *b, const char *name, int in, int out) {
    char k[256];
    b->in_ch = in;
    b->out_ch = out;
    snprintf(k, sizeof k, "%s.norm1", name);
    get_norm(pl, &b->norm1, k, in);
    snprintf(k, sizeof k, "%s.conv1", name);
    get_conv(pl, &b->conv1, k, out, in, 3);
    snprintf(k, sizeof k, "%s.norm2", name);
    get_norm(pl, &b->norm2, k, out);
    snprintf(k, sizeof k, "%s.conv2", name);
    get_conv(pl, &b->conv2, k, out, out, 3);
    if (in != out) {
        snprintf(k, sizeof k, "%s.nin_shortcut", name);
        get_conv(pl, &b->nin_shortcut, k, out, in, 1);
    }
}

static void get_attnblock(vt_param_list *pl, vt_vae_attnblock *a, const char *name, int ch) {
    char k[256];
    a->ch = ch;
    snprintf(k, sizeof k, "%s.norm", name);
    get_norm(pl, &a->norm, k, ch);
    snprintf(k, sizeof k, "%s.q", name);
    get_conv(pl, &a->q, k, ch, ch, 1);
    snprintf(k, sizeof k, "%s.k", name);
    get_conv(pl, &a->k, k, ch, ch, 1);
    snprintf(k, sizeof k, "%s.v", name);
    get_conv(pl, &a->v, k, ch, ch, 1);
    snprintf(k, sizeof k, "%s.proj_out", name);
    get_conv(pl, &a->proj_out, k, ch, ch, 1);
}

static int level_has_attn(const vt_vae_config *c, int level) {
    // lvdm: curr_res = resolution // 2^(L-1) at level L-1 (floor), doubled by each upsample:
    // level i is at (resolution >> (L-1)) << (L-1-i), not resolution >> i when the division
    // rounds (resolution 18, 3 levels: 4, 8, 16)
    int top = c->n_levels - 1;
    int res = (c->resolution >> top) << (top - level);
    for (int i = 0; i < c->n_attn; i++)
        if (c->attn_resolutions[i] == res) return 1;
    return 0;
}

vt_vae_decoder *vt_vae_decoder_build(vt_weights *w, const char *prefix, const vt_vae_config *cfg) {
    if (!w || !cfg) {
        vt_error(VT_ERR_ARG, "vae decoder build: NULL weights or config");
        return NULL;
    }
    if (config_check(cfg)) return NULL;
    vt_vae_decoder *d = calloc(1, sizeof *d);
    if (!d) {
        vt_error(VT_ERR_OOM, "vae decoder build: out of host memory");
        return NULL;
    }
    d->cfg = *cfg;
    vt_param_list pl = {&d->tensors, &d->n_tensors, &d->cap_tensors, &d->n_params, w, prefix ? prefix : "", 0};
    // AutoencoderKL's embed_dim is not part of the decoder's ddconfig: unset, the
    // post_quant_conv weight's shape says it (z_channels when that key is absent too)
    if (d->cfg.embed_dim <= 0) {
        char key[300];
        int nd = 0;
        int64_t s[VT_MAX_DIMS];
        snprintf(key, sizeof key, "%spost_quant_conv.weight", pl.prefix);
        if (vt_weights_shape(w, key, &nd, s) && nd == 4) d->cfg.embed_dim = (int)s[1];
    }
    const vt_vae_config *c = &d->cfg;
    int L = c->n_levels;
    get_conv(&pl, &d->post_quant_conv, "post_quant_conv", c->z_channels, vt_vae_latent_channels(c), 1);
    int block_in = c->ch * c->ch_mult[L - 1];
    get_conv(&pl, &d->conv_in, "decoder.conv_in", block_in, c->z_channels, 3);
    get_resblock(&pl, &d->mid_block_1, "decoder.mid.block_1", block_in, block_in);
    get_attnblock(&pl, &d->mid_attn_1, "decoder.mid.attn_1", block_in);
    get_resblock(&pl, &d->mid_block_2, "decoder.mid.block_2", block_in, block_in);
    char k[256];
    for (int i = L - 1; i >= 0 && !pl.failed; i--) {
        vt_vae_level *lv = &d->up[i];
        int block_out = c->ch * c->ch_mult[i];
        lv->n_block = c->num_res_blocks + 1;
        lv->block = calloc((size_t)lv->n_block, sizeof *lv->block);
        int attn = level_has_attn(c, i);
        if (attn) lv->attn = calloc((size_t)lv->n_block, sizeof *lv->attn);
        if (!lv->block || (attn && !lv->attn)) {
            vt_error(VT_ERR_OOM, "vae decoder build: out of host memory");
            pl.failed = 1;
            break;
        }
        for (int j = 0; j < lv->n_block; j++) {
            snprintf(k, sizeof k, "decoder.up.%d.block.%d", i, j);
            get_resblock(&pl, &lv->block[j], k, block_in, block_out);
            block_in = block_out;
            if (attn) {
                snprintf(k, sizeof k, "decoder.up.%d.attn.%d", i, j);
                get_attnblock(&pl, &lv->attn[j], k, block_in);
            }
        }
        if (i != 0) {
            lv->has_upsample = 1;
            snprintf(k, sizeof k, "decoder.up.%d.upsample.conv", i);
            if (c->resamp_with_conv) get_conv(&pl, &lv->upsample, k, block_in, block_in, 3);
        }
    }
    get_norm(&pl, &d->norm_out, "decoder.norm_out", block_in);
    get_conv(&pl, &d->conv_out, "decoder.conv_out", c->out_ch, block_in, 3);
    if (pl.failed) {
        vt_error_context("vae decoder build (prefix \"%s\"): ", pl.prefix);
        vt_vae_decoder_free(d);
        return NULL;
    }
    return d;
}

void vt_vae_decoder_free(vt_vae_decoder *d) {
    if (!d) return;
    for (int i = 0; i < VT_VAE_MAX_LEVELS; i++) {
        free(d->up[i].block);
        free(d->up[i].attn);
    }
    vt_param_list_free(d->tensors, d->n_tensors);
    free(d);
}

vt_err vt_vae_decoder_to_device(vt_vae_decoder *d, vt_device dev) {
    if (!d) return vt_error(VT_ERR_ARG, "vae_decoder to_device: NULL model");
    if (vt_tensors_to_device(d->tensors, d->n_tensors, dev)) return vt_error_context("vae_decoder to %s: ", vt_device_name(dev));
    return VT_OK;
}

vt_err vt_vae_decoder_set_weight_dtype(vt_vae_decoder *d, vt_dtype dt) {
    if (!d) return vt_error(VT_ERR_ARG, "vae_decoder weight dtype: NULL model");
    vt_err e = VT_OK;
    for (int i = 0; i < d->n_tensors && !e; i++)
        if (d->tensors[i] && d->tensors[i]->ndim >= 2) e = vt_tensors_to_dtype(&d->tensors[i], 1, dt);
    return e ? vt_error_context("vae_decoder weights to %s: ", vt_dtype_name(dt)) : VT_OK;
}

int64_t vt_vae_decoder_n_params(const vt_vae_decoder *d) { return d ? d->n_params : 0; }

// ---- forward -----------------------------------------------------------------------------
static void hook(vt_vae_decoder *d, const char *name, vt_tensor *t) {
    if (d->hook && t) d->hook(d->hook_user, name, t);
}

// swish(GroupNorm(x)), x [N, C, H, W] (one op: saves x, not the norm's output)
static vt_tensor *norm_swish(const vt_vae_norm *n, vt_tensor *x) {
    return vt_group_norm_silu(x, VAE_GROUPS, n->w, n->b, VAE_GN_EPS);
}

// x [N, in, H, W] -> [N, out, H, W]
static vt_tensor *resblock_forward(const vt_vae_resblock *b, vt_tensor *x) {
    vt_tensor *h = norm_swish(&b->norm1, x);
    vt_tensor *h1 = vt_conv2d(h, b->conv1.w, b->conv1.b, 1, 1);
    vt_release(h);
    h = norm_swish(&b->norm2, h1);
    vt_release(h1);
    // Dropout sits here upstream; the decoder's dropout is 0.
    vt_tensor *sc = b->nin_shortcut.w ? vt_conv2d(x, b->nin_shortcut.w, b->nin_shortcut.b, 1, 0) : vt_retain(x);
    vt_tensor *y = vt_conv2d_add(h, b->conv2.w, b->conv2.b, 1, 1, sc);  // shortcut(x) + conv2(h)
    vt_release(h);
    vt_release(sc);
    return y;
}

// 1x1 conv on channels-last tokens: t [N, L, C] -> [N, L, O] (weight [O, C, 1, 1] seen as [O, C])
static vt_tensor *conv1x1_tokens(const vt_vae_conv *c, vt_tensor *t) {
    vt_tensor *w2 = vt_view(c->w, 2, (int64_t[]){c->w->shape[0], c->w->shape[1]});
    vt_tensor *y = vt_linear(t, w2, c->b);
    vt_release(w2);
    return y;
}

// x [N, C, H, W]: x + proj_out(attention(q, k, v)) with one head of width C over H*W tokens.
static vt_tensor *attnblock_forward(const vt_vae_attnblock *a, vt_tensor *x) {
    if (!x) return NULL;
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    vt_tensor *h = vt_group_norm(x, VAE_GROUPS, a->norm.w, a->norm.b, VAE_GN_EPS);
    vt_tensor *hp = vt_permute(h, 4, (const int[]){0, 2, 3, 1});  // [N, H, W, C]
    vt_release(h);
    vt_tensor *tok = vt_reshape(hp, 3, (int64_t[]){N, H * W, C});
    vt_release(hp);
    vt_tensor *q = conv1x1_tokens(&a->q, tok);
    vt_tensor *k = conv1x1_tokens(&a->k, tok);
    vt_tensor *v = conv1x1_tokens(&a->v, tok);
    vt_release(tok);
    vt_tensor *o = vt_attention(q, k, v, 1, 1.0f / sqrtf((float)C), 0);
    vt_release(q);
    vt_release(k);
    vt_release(v);
    vt_tensor *p = conv1x1_tokens(&a->proj_out, o);
    vt_release(o);
    vt_tensor *p4 = vt_reshape(p, 4, (int64_t[]){N, H, W, C});
    vt_release(p);
    vt_tensor *pc = vt_permute(p4, 4, (const int[]){0, 3, 1, 2});  // [N, C, H, W]
    vt_release(p4);
    vt_tensor *y = vt_add(x, pc);
    vt_release(pc);
    return y;
}

static vt_tensor *resblock_segment(void *ctx, vt_tensor *const *in, int n_in) {
    (void)n_in;
    return resblock_forward((const vt_vae_resblock *)ctx, in[0]);
}
static vt_tensor *attnblock_segment(void *ctx, vt_tensor *const *in, int n_in) {
    (void)n_in;
    return attnblock_forward((const vt_vae_attnblock *)ctx, in[0]);
}

// Runs a block and releases its input; as a checkpoint segment when d->segments.
static vt_tensor *run_resblock(vt_vae_decoder *d, const vt_vae_resblock *b, vt_tensor *x) {
    vt_tensor *y = d->segments ? vt_segment(resblock_segment, (void *)b, &x, 1) : resblock_forward(b, x);
    vt_release(x);
    return y;
}
static vt_tensor *run_attnblock(vt_vae_decoder *d, const vt_vae_attnblock *a, vt_tensor *x) {
    vt_tensor *y = d->segments ? vt_segment(attnblock_segment, (void *)a, &x, 1) : attnblock_forward(a, x);
    vt_release(x);
    return y;
}

vt_tensor *vt_vae_decode(vt_vae_decoder *d, vt_tensor *z) {
    if (!d || !z) return NULL;
    const vt_vae_config *c = &d->cfg;
    char s[VT_SHAPE_BUF];
    if (z->ndim != 4 || z->shape[1] != vt_vae_latent_channels(c)) {
        vt_error(VT_ERR_SHAPE, "vae decode: latent %s, expected [B, %d, h, w]", vt_shape_str(z, s, sizeof s),
                 vt_vae_latent_channels(c));
        return NULL;
    }
    // lvdm decode(): z = 1 / scale_factor * z
    vt_tensor *x = vt_scale(z, 1.0f / c->scale_factor);
    vt_tensor *h = vt_conv2d(x, d->post_quant_conv.w, d->post_quant_conv.b, 1, 0);
    vt_release(x);
    hook(d, "post_quant_conv", h);
    x = vt_conv2d(h, d->conv_in.w, d->conv_in.b, 1, 1);
    vt_release(h);
    hook(d, "decoder.conv_in", x);
    x = run_resblock(d, &d->mid_block_1, x);
    hook(d, "decoder.mid.block_1", x);
    x = run_attnblock(d, &d->mid_attn_1, x);
    hook(d, "decoder.mid.attn_1", x);
    x = run_resblock(d, &d->mid_block_2, x);
    hook(d, "decoder.mid.block_2", x);
    char name[96];
    for (int i = c->n_levels - 1; i >= 0 && x; i--) {
        const vt_vae_level *lv = &d->up[i];
        for (int j = 0; j < lv->n_block; j++) {
            x = run_resblock(d, &lv->block[j], x);
            snprintf(name, sizeof name, "decoder.up.%d.block.%d", i, j);
            hook(d, name, x);
            if (lv->attn) {
                x = run_attnblock(d, &lv->attn[j], x);
                snprintf(name, sizeof name, "decoder.up.%d.attn.%d", i, j);
                hook(d, name, x);
            }
        }
        if (lv->has_upsample) {
            h = vt_upsample_nearest2x(x);
            vt_release(x);
            x = lv->upsample.w ? vt_conv2d(h, lv->upsample.w, lv->upsample.b, 1, 1) : vt_retain(h);
            vt_release(h);
            snprintf(name, sizeof name, "decoder.up.%d.upsample", i);
            hook(d, name, x);
        }
    }
    h = norm_swish(&d->norm_out, x);
    vt_release(x);
    x = vt_conv2d(h, d->conv_out.w, d->conv_out.b, 1, 1);
    vt_release(h);
    if (!x) vt_error_context("vae decode: ");
    return x;
}

vt_tensor *vt_vae_decode_video(vt_vae_decoder *d, vt_tensor *z) {
    if (!d || !z) return NULL;
    char s[VT_SHAPE_BUF];
    if (z->ndim != 5) {
        vt_error(VT_ERR_SHAPE, "vae decode video: latent %s, expected [B, C, T, h, w]", vt_shape_str(z, s, sizeof s));
        return NULL;
    }
    int64_t B = z->shape[0], C = z->shape[1], T = z->shape[2], h = z->shape[3], w = z->shape[4];
    vt_tensor **frames = calloc((size_t)T, sizeof *frames);
    if (!frames) {
        vt_error(VT_ERR_OOM, "vae decode video: out of host memory");
        return NULL;
    }
    vt_tensor *out = NULL;
    int ok = 1;
    for (int64_t t = 0; t < T && ok; t++) {
        vt_tensor *zt = vt_slice(z, 2, t, 1);
        vt_tensor *z4 = vt_reshape(zt, 4, (int64_t[]){B, C, h, w});
        vt_release(zt);
        vt_tensor *x = vt_vae_decode(d, z4);
        vt_release(z4);
        if (!x) {
            ok = 0;
            break;
        }
        frames[t] = vt_reshape(x, 5, (int64_t[]){B, x->shape[1], 1, x->shape[2], x->shape[3]});
        vt_release(x);
        ok = frames[t] != NULL;
    }
    if (ok) out = T == 1 ? vt_retain(frames[0]) : vt_concat(frames, (int)T, 2);
    for (int64_t t = 0; t < T; t++) vt_release(frames[t]);
    free(frames);
    return out;
}
