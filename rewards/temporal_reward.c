// temporal_reward.c — the temporal-consistency reward: V-JEPA 2's masked-prediction loss on the
// decoded video, negated (see temporal.h for the formulas and options).
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/ops.h"
#include "reward_internal.h"
#include "temporal.h"

#define MAX_MASKS 16
#define TARGET_LN_EPS 1e-5f  // F.layer_norm's default, as V-JEPA normalises its targets

static const float k_imagenet_mean[3] = {0.485f, 0.456f, 0.406f};
static const float k_imagenet_std[3] = {0.229f, 0.224f, 0.225f};

typedef struct temporal_impl {
    vt_vjepa2 *model;
    int frames;  // frames fed to V-JEPA (0: as decoded)
    int crop;
    // mask generation
    int tube;  // 0: multi-block, 1: tube
    int n_gen, blocks[MAX_MASKS];
    float scale[MAX_MASKS], aspect_lo, aspect_hi, temporal_scale, ratio;
    uint64_t seed;
    vt_vjepa2_mask masks[MAX_MASKS];
    int n_masks, fixed;
    int mask_t, mask_g;  // grid the generated masks were made for
} temporal_impl;

// ---- preprocessing -------------------------------------------------------------------------
// frames [b, 3, t, h, w] -> [b, 3, F, h, w]: frame i = round(i (t - 1) / (F - 1)) (uniform over the clip)
static vt_tensor *resample_frames(vt_tensor *x, int F) {
    int64_t t = x->shape[2];
    if (F == t) return vt_retain(x);
    vt_tensor **parts = calloc((size_t)F, sizeof *parts);
    if (!parts) {
        vt_error(VT_ERR_OOM, "reward temporal: out of host memory");
        return NULL;
    }
    int ok = 1;
    for (int i = 0; i < F; i++) {
        int64_t src = F > 1 ? (int64_t)lround((double)i * (double)(t - 1) / (double)(F - 1)) : 0;
        parts[i] = vt_slice(x, 2, src, 1);
        ok &= parts[i] != NULL;
    }
    vt_tensor *y = ok ? vt_concat(parts, F, 2) : NULL;
    for (int i = 0; i < F; i++) vt_release(parts[i]);
    free(parts);
    return y;
}

// [b, 3, F, h, w] in [-1, 1] -> [b, 3, F, crop, crop] (VJEPA2VideoProcessor on [0, 1] frames)
static vt_tensor *preprocess(vt_tensor *x, int crop) {
    int64_t b = x->shape[0], F = x->shape[2], h = x->shape[3], w = x->shape[4];
    int64_t S = (int64_t)crop * 256 / 224, nh, nw;  // the processor's shortest_edge
    if (h <= w) {
        nh = S;
        nw = S * w / h;
    } else {
        nw = S;
        nh = S * h / w;
    }
    vt_tensor *p = vt_permute(x, 5, (const int[]){0, 2, 1, 3, 4});
    vt_tensor *f = vt_reshape(p, 4, (int64_t[]){b * F, 3, h, w});
    vt_release(p);
    vt_tensor *a = vt_affine(f, 0.5f, 0.5f);
    vt_release(f);
    vt_tensor *u = vt_clamp(a, 0.0f, 1.0f);
    vt_release(a);
    vt_tensor *rs = vt_resize_bilinear(u, (int)nh, (int)nw, 1);
    vt_release(u);
    vt_tensor *cy = vt_slice(rs, 2, (nh - crop) / 2, crop);
    vt_release(rs);
    vt_tensor *cx = vt_slice(cy, 3, (nw - crop) / 2, crop);
    vt_release(cy);
    vt_tensor *n = vt_normalize_channels(cx, k_imagenet_mean, k_imagenet_std);
    vt_release(cx);
    vt_tensor *n5 = vt_reshape(n, 5, (int64_t[]){b, F, 3, crop, crop});
    vt_release(n);
    vt_tensor *out = vt_permute(n5, 5, (const int[]){0, 2, 1, 3, 4});
    vt_release(n5);
    return out;
}

// ---- masks ---------------------------------------------------------------------------------
static void free_masks(temporal_impl *t) {
    for (int i = 0; i < t->n_masks; i++) vt_vjepa2_mask_free(&t->masks[i]);
    t->n_masks = 0;
}

static vt_err ensure_masks(temporal_impl *t, int T, int g) {
    int64_t N = (int64_t)T * g * g;
    if (t->fixed) {
        for (int i = 0; i < t->n_masks; i++) {
            const vt_vjepa2_mask *m = &t->masks[i];
            for (int64_t k = 0; k < m->n_ctx; k++)
                if (m->ctx[k] >= N) goto bad;
            for (int64_t k = 0; k < m->n_tgt; k++)
                if (m->tgt[k] >= N) goto bad;
            continue;
        bad:
            return vt_error(VT_ERR_ARG, "reward temporal: mask %d has token ids beyond the %lld tokens of a %d x %d x %d grid",
                            i, (long long)N, T, g, g);
        }
        return VT_OK;
    }
    if (t->n_masks && t->mask_t == T && t->mask_g == g) return VT_OK;
    free_masks(t);
    int n = t->tube ? 1 : t->n_gen;
    for (int i = 0; i < n; i++) {
        uint64_t s = vt_hash64(t->seed, (uint64_t)i);
        vt_err e = t->tube ? vt_vjepa2_mask_tube(&t->masks[i], T, g, t->ratio, s)
                           : vt_vjepa2_mask_multiblock(&t->masks[i], T, g, t->blocks[i], t->scale[i], t->temporal_scale,
                                                       t->aspect_lo, t->aspect_hi, s);
        if (e) {
            free_masks(t);
            return vt_error_context("reward temporal: mask %d: ", i);
        }
        t->n_masks = i + 1;
    }
    t->mask_t = T;
    t->mask_g = g;
    return VT_OK;
}

vt_err vt_reward_temporal_set_masks(vt_reward *r, const vt_vjepa2_mask *masks, int n) {
    if (!r || strcmp(r->name, "temporal") || !r->impl) return vt_error(VT_ERR_ARG, "set masks: not a temporal reward");
    if (n < 0 || n > MAX_MASKS) return vt_error(VT_ERR_ARG, "reward temporal: %d masks (at most %d)", n, MAX_MASKS);
    temporal_impl *t = r->impl;
    free_masks(t);
    t->fixed = n > 0;
    for (int i = 0; i < n; i++) {
        vt_vjepa2_mask *d = &t->masks[i];
        const vt_vjepa2_mask *s = &masks[i];
        if (s->n_ctx < 1 || s->n_tgt < 1) {
            free_masks(t);
            t->fixed = 0;
            return vt_error(VT_ERR_ARG, "reward temporal: mask %d has an empty context or target", i);
        }
        d->ctx = malloc((size_t)s->n_ctx * sizeof *d->ctx);
        d->tgt = malloc((size_t)s->n_tgt * sizeof *d->tgt);
        t->n_masks = i + 1;
        if (!d->ctx || !d->tgt) {
            free_masks(t);
            t->fixed = 0;
            return vt_error(VT_ERR_OOM, "reward temporal: out of host memory");
        }
        memcpy(d->ctx, s->ctx, (size_t)s->n_ctx * sizeof *d->ctx);
        memcpy(d->tgt, s->tgt, (size_t)s->n_tgt * sizeof *d->tgt);
        d->n_ctx = s->n_ctx;
        d->n_tgt = s->n_tgt;
    }
    return VT_OK;
}

vt_vjepa2 *vt_reward_temporal_model(vt_reward *r) {
    if (!r || strcmp(r->name, "temporal") || !r->impl) return NULL;
    return ((temporal_impl *)r->impl)->model;
}

// ---- forward -------------------------------------------------------------------------------
// mean |a - b| over all but the first dim: [B, ...] -> [B]
static vt_tensor *l1_per_sample(vt_tensor *a, vt_tensor *b) {
    if (!a || !b) return NULL;
    vt_tensor *d = vt_sub(a, b);
    vt_tensor *ad = vt_abs(d);
    vt_release(d);
    vt_tensor *f = vt_reshape(ad, 2, (int64_t[]){a->shape[0], a->numel / a->shape[0]});
    vt_release(ad);
    vt_tensor *m = vt_mean_dim(f, 1, 0);
    vt_release(f);
    return m;
}

static vt_err temporal_forward(vt_reward *r, vt_tensor *frames, const char *const *prompts, vt_tensor **reward,
                               vt_tensor **loss) {
    (void)prompts;
    temporal_impl *t = r->impl;
    vt_vjepa2 *m = t->model;
    const vt_vjepa2_config *c = &m->cfg;
    char s[VT_SHAPE_BUF];
    if (frames->ndim != 5)
        return vt_error(VT_ERR_SHAPE, "reward temporal: frames %s; V-JEPA 2 scores a video [b, 3, t, h, w]",
                        vt_shape_str(frames, s, sizeof s));
    int64_t T = frames->shape[2];
    int F = t->frames ? t->frames : (int)T;
    if (F % c->tubelet_size)
        return vt_error(VT_ERR_CONFIG,
                        "reward temporal: %d frames, but V-JEPA 2 embeds tubelets of %d frames: decode a multiple of "
                        "%d frames or set the option frames (the clip is then resampled uniformly)",
                        F, c->tubelet_size, c->tubelet_size);
    int g = t->crop / c->patch_size, Tt = F / c->tubelet_size;
    vt_err e = ensure_masks(t, Tt, g);
    if (e) return e;
    m->segments = r->segments;
    m->hook = r->hook;
    m->hook_user = r->hook_user;
    vt_tensor *fr = resample_frames(frames, F);
    vt_tensor *pv = fr ? preprocess(fr, t->crop) : NULL;
    vt_release(fr);
    if (!pv) return vt_error_context("reward temporal: ");
    vt_reward_hook(r, "pixel_values", pv);
    // the target branch: the full clip, no tape (V-JEPA's stop-gradient)
    vt_tape *ng = vt_nograd_begin();
    vt_tensor *full = vt_vjepa2_encode(m, pv, NULL, 0);
    vt_tensor *h = vt_layer_norm(full, NULL, NULL, TARGET_LN_EPS);
    vt_release(full);
    vt_nograd_end(ng);
    vt_tensor *sum = NULL;
    char name[32];
    for (int i = 0; i < t->n_masks && h; i++) {
        const vt_vjepa2_mask *mk = &t->masks[i];
        vt_tensor *z = vt_vjepa2_encode(m, pv, mk->ctx, mk->n_ctx);
        vt_tensor *p = vt_vjepa2_predict(m, z, mk->ctx, mk->n_ctx, mk->tgt, mk->n_tgt, i);
        vt_release(z);
        ng = vt_nograd_begin();
        vt_tensor *tg = vt_vjepa2_gather_tokens(h, mk->tgt, mk->n_tgt);
        vt_nograd_end(ng);
        snprintf(name, sizeof name, "pred.%d", i);
        vt_reward_hook(r, name, p);
        snprintf(name, sizeof name, "target.%d", i);
        vt_reward_hook(r, name, tg);
        vt_tensor *l = l1_per_sample(p, tg);
        vt_release(p);
        vt_release(tg);
        vt_tensor *acc = sum ? vt_add(sum, l) : vt_retain(l);
        vt_release(sum);
        vt_release(l);
        sum = acc;
        if (!sum) break;
    }
    vt_release(h);
    vt_release(pv);
    *loss = sum ? vt_scale(sum, 1.0f / (float)t->n_masks) : NULL;
    vt_release(sum);
    *reward = vt_scale(*loss, -1.0f);
    if (!*reward || !*loss) {
        vt_clear(reward);
        vt_clear(loss);
        return vt_error_context("reward temporal: ");
    }
    return VT_OK;
}

static vt_err temporal_to_device(vt_reward *r, vt_device dev) {
    return vt_vjepa2_to_device(((temporal_impl *)r->impl)->model, dev);
}

// the encoder's and predictor's linears at model.dtype (embeddings and norms stay f32)
static vt_err temporal_set_weight_dtype(vt_reward *r, vt_dtype dt) {
    vt_vjepa2 *m = ((temporal_impl *)r->impl)->model;
    if (vt_vit_stack_set_weight_dtype(&m->encoder, dt) || vt_vit_stack_set_weight_dtype(&m->predictor, dt))
        return vt_error_code();
    return VT_OK;
}

static void temporal_destroy(vt_reward *r) {
    temporal_impl *t = r->impl;
    if (!t) return;
    free_masks(t);
    vt_vjepa2_free(t->model);
    free(t);
    r->impl = NULL;
}

// ---- options -------------------------------------------------------------------------------
static vt_err option_int(const vt_reward_options *o, const char *key, int lo, int *v) {
    float f = (float)*v;
    vt_err e = vt_reward_option_float(o, "temporal", key, &f);
    if (e) return e;
    if (f != floorf(f) || f < (float)lo || f > 1e6f)
        return vt_error(VT_ERR_CONFIG, "reward temporal: option %s = %g must be an integer >= %d", key, (double)f, lo);
    *v = (int)f;
    return VT_OK;
}

// "8x0.15,2x0.7" -> counts and scales
static vt_err parse_blocks(const char *s, temporal_impl *t) {
    const char *p = s;
    t->n_gen = 0;
    while (*p) {
        char *end;
        errno = 0;
        long n = strtol(p, &end, 10);
        if (end == p || *end != 'x' || n < 1 || n > 1000 || t->n_gen == MAX_MASKS) goto bad;
        p = end + 1;
        double sc = strtod(p, &end);
        if (end == p || errno || !(sc > 0 && sc <= 1)) goto bad;
        t->blocks[t->n_gen] = (int)n;
        t->scale[t->n_gen++] = (float)sc;
        p = end;
        while (*p == ' ') p++;
        if (*p == ',') p++;
        while (*p == ' ') p++;
    }
    if (t->n_gen) return VT_OK;
bad:
    return vt_error(VT_ERR_CONFIG,
                    "reward temporal: option blocks = \"%s\" must be COUNTxSCALE[,COUNTxSCALE...] (at most %d masks, "
                    "scale in (0, 1]), e.g. \"8x0.15,2x0.7\"",
                    s, MAX_MASKS);
}

vt_reward *vt_reward_new_temporal(vt_weights *w, const vt_reward_options *o) {
    vt_reward *r = vt_reward_alloc("temporal");
    temporal_impl *t = r ? calloc(1, sizeof *t) : NULL;
    if (!t) {
        free(r);
        vt_error(VT_ERR_OOM, "reward temporal: out of host memory");
        return NULL;
    }
    r->impl = t;
    r->forward = temporal_forward;
    r->destroy = temporal_destroy;
    r->to_device = temporal_to_device;
    r->set_weight_dtype = temporal_set_weight_dtype;
    r->video = 1;
    t->aspect_lo = 0.75f;
    t->aspect_hi = 1.5f;
    t->temporal_scale = 1.0f;
    t->ratio = 0.9f;
    const char *prefix = vt_reward_option(o, "prefix");
    prefix = prefix ? prefix : "";
    vt_vjepa2_config cfg;
    int have_cfg = o && o->config;
    int heads = 0, pred_heads = 0, image_size = 0, seed = 0;
    vt_err e = have_cfg ? vt_vjepa2_config_from_json(o->config, &cfg) : VT_OK;
    if (!e) e = option_int(o, "frames", 0, &t->frames);
    if (!e) e = option_int(o, "image_size", 0, &image_size);
    if (!e) e = option_int(o, "heads", 0, &heads);
    if (!e) e = option_int(o, "pred_heads", 0, &pred_heads);
    if (!e) e = option_int(o, "seed", 0, &seed);
    if (!e) e = vt_reward_option_float(o, "temporal", "temporal_scale", &t->temporal_scale);
    if (!e) e = vt_reward_option_float(o, "temporal", "ratio", &t->ratio);
    const char *mask = vt_reward_option(o, "mask");
    if (!e && mask && strcmp(mask, "multiblock") && strcmp(mask, "tube"))
        e = vt_error(VT_ERR_CONFIG, "reward temporal: option mask = \"%s\" (valid: multiblock, tube)", mask);
    t->tube = mask && !strcmp(mask, "tube");
    const char *blocks = vt_reward_option(o, "blocks");
    if (!e) e = parse_blocks(blocks ? blocks : "8x0.15,2x0.7", t);
    const char *aspect = vt_reward_option(o, "aspect");
    if (!e && aspect && (sscanf(aspect, "%f , %f", &t->aspect_lo, &t->aspect_hi) != 2 || !(t->aspect_lo > 0) ||
                         t->aspect_lo > t->aspect_hi))
        e = vt_error(VT_ERR_CONFIG, "reward temporal: option aspect = \"%s\" must be \"LO,HI\" with 0 < LO <= HI", aspect);
    if (!e && t->frames % 2 && t->frames)
        e = vt_error(VT_ERR_CONFIG, "reward temporal: option frames = %d must be even (tubelets of 2 frames)", t->frames);
    if (e) {
        vt_reward_free(r);
        return NULL;
    }
    t->seed = (uint64_t)seed;
    if (have_cfg) {
        if (heads) cfg.heads = heads;
        if (pred_heads) cfg.pred_heads = pred_heads;
        if (image_size) cfg.crop_size = image_size;
        t->model = vt_vjepa2_build(w, prefix, &cfg);
    } else {
        // shapes first, then the head counts / crop size the options give
        if (!vt_vjepa2_infer_config(w, prefix, &cfg)) {
            if (heads) cfg.heads = heads;
            if (pred_heads) cfg.pred_heads = pred_heads;
            if (image_size) cfg.crop_size = image_size;
            t->model = vt_vjepa2_build(w, prefix, &cfg);
        }
    }
    if (!t->model) {
        vt_error_context("reward temporal: ");
        vt_reward_free(r);
        return NULL;
    }
    t->crop = t->model->cfg.crop_size;
    return r;
}
