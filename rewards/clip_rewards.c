// clip_rewards.c — the CLIP-family rewards: aesthetic (HF CLIP ViT-L/14 + LAION MLP head),
// HPSv2 / v2.1 (open_clip ViT-H-14) and PickScore (HF CLIP-H), with VADER-VideoCrafter's
// preprocessing on the tape (see reward.h for the formulas).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/models/hf_clip.h"
#include "core/models/openclip.h"
#include "core/ops.h"
#include "reward_internal.h"

#define NORM_EPS 1e-12f  // torch.nn.functional.normalize's; VADER divides by the norm itself

// ---- preprocessing -------------------------------------------------------------------------
// clamp(x / 2 + 0.5, 0, 1): frames in [-1, 1] to [0, 1]
static vt_tensor *to_unit(vt_tensor *frames) {
    vt_tensor *a = vt_affine(frames, 0.5f, 0.5f);
    vt_tensor *c = vt_clamp(a, 0.0f, 1.0f);
    vt_release(a);
    return c;
}

// aesthetic_loss_fn / hps_loss_fn: torchvision Resize((S, S)) on a tensor (bilinear, antialias
// on since torchvision 0.17) then Normalize.
static vt_tensor *preprocess_square(vt_tensor *frames, int S) {
    vt_tensor *u = to_unit(frames);
    vt_tensor *rs = vt_resize_bilinear(u, S, S, 1);
    vt_release(u);
    vt_tensor *n = vt_normalize_channels(rs, vt_reward_clip_mean, vt_reward_clip_std);
    vt_release(rs);
    return n;
}

// pick_score_loss_fn: x255, shorter side to S (other side = side * S // shorter, integer),
// bicubic antialias, centre crop S x S at (h'//2 - S//2, w'//2 - S//2), x 1/255, normalise.
// The x255 / x1/255 pair is kept so the rounding follows the reference.
static vt_tensor *preprocess_pickscore(vt_tensor *frames, int S) {
    int64_t h = frames->shape[2], w = frames->shape[3], H, W;
    if (h < w) {
        H = S;
        W = w * H / h;
    } else {
        W = S;
        H = h * W / w;
    }
    int64_t y0 = H / 2 - S / 2, x0 = W / 2 - S / 2;
    vt_tensor *u = to_unit(frames);
    vt_tensor *u255 = vt_scale(u, 255.0f);
    vt_release(u);
    vt_tensor *rs = vt_resize_bicubic(u255, (int)H, (int)W, 1);
    vt_release(u255);
    vt_tensor *cy = vt_slice(rs, 2, y0, S);
    vt_release(rs);
    vt_tensor *cx = vt_slice(cy, 3, x0, S);
    vt_release(cy);
    vt_tensor *r = vt_scale(cx, 0.00392156862745098f);  // the CLIP image processor's rescale_factor
    vt_release(cx);
    vt_tensor *n = vt_normalize_channels(r, vt_reward_clip_mean, vt_reward_clip_std);
    vt_release(r);
    return n;
}

// sum(a * b, -1) of two [n, E] tensors -> [n]
static vt_tensor *row_dot(vt_tensor *a, vt_tensor *b) {
    vt_tensor *p = vt_mul(a, b);
    vt_tensor *s = vt_sum_dim(p, -1, 0);
    vt_release(p);
    return s;
}

// ---- aesthetic head ----------------------------------------------------------------------------
#define HEAD_LAYERS 5
static const int head_index[HEAD_LAYERS] = {0, 2, 4, 6, 7};  // nn.Sequential positions (Dropouts between)

struct vt_aesthetic_head {
    vt_tensor *w[HEAD_LAYERS], *b[HEAD_LAYERS];
};

void vt_aesthetic_head_free(vt_aesthetic_head *h) {
    if (!h) return;
    for (int i = 0; i < HEAD_LAYERS; i++) {
        vt_release(h->w[i]);
        vt_release(h->b[i]);
    }
    free(h);
}

vt_aesthetic_head *vt_aesthetic_head_build(vt_weights *w, const char *prefix, int embed_dim) {
    prefix = prefix ? prefix : "";
    vt_aesthetic_head *h = calloc(1, sizeof *h);
    if (!h) {
        vt_error(VT_ERR_OOM, "aesthetic head: out of host memory");
        return NULL;
    }
    char key[512];
    int64_t in = embed_dim;
    for (int i = 0; i < HEAD_LAYERS; i++) {
        int nd = 0;
        int64_t s[VT_MAX_DIMS];
        snprintf(key, sizeof key, "%slayers.%d.weight", prefix, head_index[i]);
        if (!vt_weights_shape(w, key, &nd, s) || nd != 2) {
            // let the store name the key (missing) or both shapes (wrong rank)
            int64_t want[2] = {i == HEAD_LAYERS - 1 ? 1 : (nd == 2 ? s[0] : 1), in > 0 ? in : 1};
            h->w[i] = vt_weights_get(w, key, 2, want);
            if (!h->w[i]) goto fail;
            vt_error(VT_ERR_KEY, "key %s: expected a 2-d Linear weight", key);
            goto fail;
        }
        int64_t out = i == HEAD_LAYERS - 1 ? 1 : s[0];  // the head ends in one score
        if (in <= 0) in = s[1];
        h->w[i] = vt_weights_get(w, key, 2, (int64_t[]){out, in});
        snprintf(key, sizeof key, "%slayers.%d.bias", prefix, head_index[i]);
        h->b[i] = h->w[i] ? vt_weights_get(w, key, 1, (int64_t[]){out}) : NULL;
        if (!h->b[i]) goto fail;
        in = out;
    }
    return h;
fail:
    vt_error_context("aesthetic head (LAION MLP, prefix \"%s\"): ", prefix);
    vt_aesthetic_head_free(h);
    return NULL;
}

vt_tensor *vt_aesthetic_head_forward(const vt_aesthetic_head *h, vt_tensor *x) {
    if (!h || !x) return NULL;
    vt_tensor *y = vt_retain(x);
    for (int i = 0; i < HEAD_LAYERS && y; i++) {  // Linear layers only: the upstream head has no activations
        vt_tensor *t = vt_linear(y, h->w[i], h->b[i]);
        vt_release(y);
        y = t;
    }
    if (!y) return NULL;
    vt_tensor *r = vt_reshape(y, 1, (int64_t[]){y->shape[0]});  // squeeze(1)
    vt_release(y);
    return r;
}

// ---- aesthetic ---------------------------------------------------------------------------------
typedef struct aesthetic_impl {
    vt_hf_clip *clip;
    vt_aesthetic_head *head;
    vt_weights *head_weights;  // owned when the head came from its own file
    float target, scale;
    int maximise;  // target "none": loss = -reward * scale
} aesthetic_impl;

static vt_err aesthetic_forward(vt_reward *r, vt_tensor *frames, const char *const *prompts, vt_tensor **reward,
                                vt_tensor **loss) {
    (void)prompts;
    aesthetic_impl *a = r->impl;
    a->clip->segments = r->segments;
    vt_tensor *pix = preprocess_square(frames, a->clip->vision->image_size);
    vt_reward_hook(r, "pixel_values", pix);
    vt_tensor *emb = vt_hf_clip_encode_image(a->clip, pix);
    vt_release(pix);
    vt_reward_hook(r, "image_embeds", emb);
    vt_tensor *en = vt_l2_normalize(emb, NORM_EPS);
    vt_release(emb);
    vt_reward_hook(r, "image_features", en);
    *reward = vt_aesthetic_head_forward(a->head, en);
    vt_release(en);
    if (a->maximise) {
        *loss = vt_scale(*reward, -a->scale);
    } else {
        vt_tensor *d = vt_affine(*reward, 1.0f, -a->target);
        vt_tensor *ad = vt_abs(d);
        vt_release(d);
        *loss = vt_scale(ad, a->scale);
        vt_release(ad);
    }
    if (!*reward || !*loss) {
        vt_clear(reward);
        vt_clear(loss);
        return vt_error_context("reward aesthetic: ");
    }
    return VT_OK;
}

static vt_err aesthetic_to_device(vt_reward *r, vt_device dev) {
    aesthetic_impl *a = r->impl;
    if (vt_hf_clip_to_device(a->clip, dev)) return vt_error_code();
    if (vt_tensors_to_device(a->head->w, HEAD_LAYERS, dev)) return vt_error_code();
    return vt_tensors_to_device(a->head->b, HEAD_LAYERS, dev);
}

static vt_err aesthetic_set_weight_dtype(vt_reward *r, vt_dtype dt) {
    return vt_hf_clip_set_image_weight_dtype(((aesthetic_impl *)r->impl)->clip, dt);
}

static void aesthetic_destroy(vt_reward *r) {
    aesthetic_impl *a = r->impl;
    if (!a) return;
    vt_hf_clip_free(a->clip);
    vt_aesthetic_head_free(a->head);
    vt_weights_free(a->head_weights);
    free(a);
    r->impl = NULL;
}

// vt_weights_finish on "PREFIX+name" (the keys a module owns in a shared store).
static vt_err finish_under(vt_weights *w, const char *prefix, const char *name) {
    char key[512];
    snprintf(key, sizeof key, "%s%s", prefix, name);
    return vt_weights_finish(w, key);
}

vt_reward *vt_reward_new_aesthetic(vt_weights *w, const vt_reward_options *o) {
    vt_reward *r = vt_reward_alloc("aesthetic");
    aesthetic_impl *a = r ? calloc(1, sizeof *a) : NULL;
    if (!a) {
        free(r);
        vt_error(VT_ERR_OOM, "reward aesthetic: out of host memory");
        return NULL;
    }
    r->impl = a;
    r->forward = aesthetic_forward;
    r->destroy = aesthetic_destroy;
    r->to_device = aesthetic_to_device;
    r->set_weight_dtype = aesthetic_set_weight_dtype;
    a->target = 10.0f;
    a->scale = 0.1f;
    const char *t = vt_reward_option(o, "target");
    if (t && (!strcmp(t, "none") || !strcmp(t, "null") || !strcmp(t, "~"))) a->maximise = 1;
    else if (vt_reward_option_float(o, "aesthetic", "target", &a->target)) goto fail;
    if (vt_reward_option_float(o, "aesthetic", "scale", &a->scale)) goto fail;
    const char *prefix = vt_reward_option(o, "prefix");
    const char *head_prefix = vt_reward_option(o, "head_prefix");
    prefix = prefix ? prefix : "";
    head_prefix = head_prefix ? head_prefix : "";

    vt_hf_clip_config cfg = vt_hf_clip_config_empty();
    if (o && o->config && vt_hf_clip_config_from_json(o->config, &cfg)) goto fail;
    a->clip = vt_hf_clip_build(w, prefix, &cfg, VT_HF_CLIP_VISION);
    if (!a->clip || finish_under(w, prefix, "vision_model.") || finish_under(w, prefix, "visual_projection."))
        goto fail;
    // the head: in the checkpoint (layers.*), else its own file (option head, or shared/weights)
    char key[512], buf[4096];
    snprintf(key, sizeof key, "%slayers.0.weight", head_prefix);
    vt_weights *hw = w;
    if (!vt_weights_has(w, key)) {
        const char *path = vt_reward_option(o, "head");
        if (!path) path = vt_reward_shared_file("weights/aesthetic_mlp_sac_logos_ava1_l14.safetensors", buf, sizeof buf);
        if (!path) {
            vt_error(VT_ERR_KEY,
                     "no aesthetic head: %s not in the checkpoint, no option head, no "
                     "weights/aesthetic_mlp_sac_logos_ava1_l14.safetensors in the shared folder",
                     key);
            goto fail;
        }
        hw = a->head_weights = vt_weights_open1(path);
        if (!hw) goto fail;
    }
    a->head = vt_aesthetic_head_build(hw, head_prefix, a->clip->cfg.projection_dim);
    if (!a->head || finish_under(hw, head_prefix, "layers.")) goto fail;
    return r;
fail:
    vt_error_context("reward aesthetic: ");
    vt_reward_free(r);
    return NULL;
}

// ---- HPSv2 -------------------------------------------------------------------------------------
typedef struct hps_impl {
    vt_openclip *clip;
} hps_impl;

static vt_err hps_to_device(vt_reward *r, vt_device dev) {
    return vt_openclip_to_device(((hps_impl *)r->impl)->clip, dev);
}

static vt_err hps_set_weight_dtype(vt_reward *r, vt_dtype dt) {
    return vt_openclip_set_image_weight_dtype(((hps_impl *)r->impl)->clip, dt);
}

static vt_tensor *hps_encode_text(vt_reward *r, const char *const *prompts, int n) {
    hps_impl *h = r->impl;
    if (!h->clip->text) {
        vt_error(VT_ERR_ARG, "reward %s: the text tower was freed", r->name);
        return NULL;
    }
    vt_tensor *tokens = vt_reward_tokenize(r, prompts, n, h->clip->text->context_length);
    vt_tensor *te = tokens ? vt_openclip_encode_text(h->clip, tokens) : NULL;
    vt_release(tokens);
    return te;
}

static void hps_drop_text(vt_reward *r) { vt_openclip_drop_text(((hps_impl *)r->impl)->clip); }

static vt_err hps_forward(vt_reward *r, vt_tensor *frames, const char *const *prompts, vt_tensor **reward,
                          vt_tensor **loss) {
    hps_impl *h = r->impl;
    h->clip->segments = r->segments;
    int64_t n = frames->shape[0];
    vt_tensor *te = vt_reward_text_embeds(r, prompts, (int)n);  // cached, or encoded now
    if (!te) return vt_error_context("reward %s: ", r->name);
    vt_tensor *pix = preprocess_square(frames, h->clip->visual->image_size);
    vt_reward_hook(r, "pixel_values", pix);
    vt_tensor *ie = vt_openclip_encode_image(h->clip, pix);
    vt_release(pix);
    vt_reward_hook(r, "image_embeds", ie);
    vt_tensor *fi = NULL, *ft = NULL;
    *reward = ie && te ? vt_openclip_hps_score(ie, te, &fi, &ft) : NULL;
    vt_release(ie);
    vt_release(te);
    vt_reward_hook(r, "image_features", fi);
    vt_reward_hook(r, "text_features", ft);
    vt_release(fi);
    vt_release(ft);
    *loss = vt_affine(*reward, -1.0f, 1.0f);  // 1 - score
    if (!*reward || !*loss) {
        vt_clear(reward);
        vt_clear(loss);
        return vt_error_context("reward %s: ", r->name);
    }
    return VT_OK;
}

static void hps_destroy(vt_reward *r) {
    hps_impl *h = r->impl;
    if (!h) return;
    vt_openclip_free(h->clip);
    free(h);
    r->impl = NULL;
}

vt_reward *vt_reward_new_hps(vt_weights *w, const vt_reward_options *o) {
    vt_reward *r = vt_reward_alloc("hps");
    hps_impl *h = r ? calloc(1, sizeof *h) : NULL;
    if (!h) {
        free(r);
        vt_error(VT_ERR_OOM, "reward hps: out of host memory");
        return NULL;
    }
    r->impl = h;
    r->forward = hps_forward;
    r->destroy = hps_destroy;
    r->to_device = hps_to_device;
    r->set_weight_dtype = hps_set_weight_dtype;
    r->encode_text = hps_encode_text;
    r->drop_text = hps_drop_text;
    r->needs_prompts = 1;
    const char *prefix = vt_reward_option(o, "prefix");
    prefix = prefix ? prefix : "";
    // HPSv2 is open_clip ViT-H-14 (exact GELU); without a config, the ViT-H-14 head layout
    // (text 16 heads, vision head width 80) when the widths are ViT-H-14's, shapes fill in the rest
    vt_openclip_config cfg;
    memset(&cfg, 0, sizeof cfg);
    const char *anchors[2] = {"token_embedding.weight", "visual.conv1.weight"};
    for (int i = 0; i < 2; i++) {
        char key[512];
        snprintf(key, sizeof key, "%s%s", prefix, anchors[i]);
        if (!vt_weights_has(w, key)) {
            vt_error(VT_ERR_KEY, "missing key %s (not an open_clip / HPSv2 checkpoint under prefix \"%s\"?)", key,
                     prefix);
            goto fail;
        }
    }
    if (o && o->config) {
        if (vt_openclip_config_from_json(o->config, &cfg)) goto fail;
    } else {
        char key[512];
        int nd = 0;
        int64_t s[VT_MAX_DIMS];
        snprintf(key, sizeof key, "%stoken_embedding.weight", prefix);
        if (vt_weights_shape(w, key, &nd, s) && nd == 2 && s[1] == 1024) cfg.text.heads = 16;
        snprintf(key, sizeof key, "%svisual.conv1.weight", prefix);
        if (vt_weights_shape(w, key, &nd, s) && nd == 4 && s[0] == 1280) cfg.vision.head_width = 80;
    }
    h->clip = vt_openclip_build(w, prefix, &cfg, VT_OPENCLIP_TEXT | VT_OPENCLIP_VISION);
    if (!h->clip || vt_weights_finish(w, prefix) || vt_reward_open_tokenizer(r, o)) {
        goto fail;
    }
    return r;
fail:
    vt_error_context("reward hps: ");
    vt_reward_free(r);
    return NULL;
}

// ---- PickScore ---------------------------------------------------------------------------------
typedef struct pickscore_impl {
    vt_hf_clip *clip;
    float logit_scale_exp;
} pickscore_impl;

static vt_err pickscore_to_device(vt_reward *r, vt_device dev) {
    return vt_hf_clip_to_device(((pickscore_impl *)r->impl)->clip, dev);
}

static vt_err pickscore_forward(vt_reward *r, vt_tensor *frames, const char *const *prompts, vt_tensor **reward,
                                vt_tensor **loss) {
    pickscore_impl *p = r->impl;
    p->clip->segments = r->segments;
    int64_t n = frames->shape[0];
    vt_tensor *te = vt_reward_text_embeds(r, prompts, (int)n);  // cached, or encoded now
    if (!te) return vt_error_context("reward pickscore: ");
    vt_tensor *pix = preprocess_pickscore(frames, p->clip->vision->image_size);
    vt_reward_hook(r, "pixel_values", pix);
    vt_tensor *ie = vt_hf_clip_encode_image(p->clip, pix);
    vt_release(pix);
    vt_reward_hook(r, "image_embeds", ie);
    vt_tensor *fi = vt_l2_normalize(ie, NORM_EPS);
    vt_tensor *ft = vt_l2_normalize(te, NORM_EPS);
    vt_release(ie);
    vt_release(te);
    vt_reward_hook(r, "image_features", fi);
    vt_reward_hook(r, "text_features", ft);
    vt_tensor *cos = row_dot(fi, ft);
    vt_release(fi);
    vt_release(ft);
    *reward = vt_scale(cos, p->logit_scale_exp);
    vt_release(cos);
    vt_tensor *d = vt_affine(*reward, -0.01f, 1.0f);  // 1 - score / 100
    *loss = vt_abs(d);
    vt_release(d);
    if (!*reward || !*loss) {
        vt_clear(reward);
        vt_clear(loss);
        return vt_error_context("reward pickscore: ");
    }
    return VT_OK;
}

static vt_err pickscore_set_weight_dtype(vt_reward *r, vt_dtype dt) {
    return vt_hf_clip_set_image_weight_dtype(((pickscore_impl *)r->impl)->clip, dt);
}

static vt_tensor *pickscore_encode_text(vt_reward *r, const char *const *prompts, int n) {
    pickscore_impl *p = r->impl;
    if (!p->clip->text) {
        vt_error(VT_ERR_ARG, "reward pickscore: the text tower was freed");
        return NULL;
    }
    vt_tensor *tokens = vt_reward_tokenize(r, prompts, n, p->clip->text->max_positions);
    vt_tensor *te = tokens ? vt_hf_clip_encode_text(p->clip, tokens) : NULL;
    vt_release(tokens);
    return te;
}

static void pickscore_drop_text(vt_reward *r) { vt_hf_clip_drop_text(((pickscore_impl *)r->impl)->clip); }

static void pickscore_destroy(vt_reward *r) {
    pickscore_impl *p = r->impl;
    if (!p) return;
    vt_hf_clip_free(p->clip);
    free(p);
    r->impl = NULL;
}

vt_reward *vt_reward_new_pickscore(vt_weights *w, const vt_reward_options *o) {
    vt_reward *r = vt_reward_alloc("pickscore");
    pickscore_impl *p = r ? calloc(1, sizeof *p) : NULL;
    if (!p) {
        free(r);
        vt_error(VT_ERR_OOM, "reward pickscore: out of host memory");
        return NULL;
    }
    r->impl = p;
    r->forward = pickscore_forward;
    r->destroy = pickscore_destroy;
    r->to_device = pickscore_to_device;
    r->set_weight_dtype = pickscore_set_weight_dtype;
    r->encode_text = pickscore_encode_text;
    r->drop_text = pickscore_drop_text;
    r->needs_prompts = 1;
    const char *prefix = vt_reward_option(o, "prefix");
    prefix = prefix ? prefix : "";
    // PickScore_v1 (laion CLIP-H): exact GELU unless a config says otherwise
    vt_hf_clip_config cfg = vt_hf_clip_config_empty();
    cfg.vision.quick_gelu = cfg.text.quick_gelu = 0;
    if (o && o->config && vt_hf_clip_config_from_json(o->config, &cfg)) goto fail;
    p->clip = vt_hf_clip_build(w, prefix, &cfg, VT_HF_CLIP_VISION | VT_HF_CLIP_TEXT);
    if (!p->clip || vt_weights_finish(w, prefix) || vt_reward_open_tokenizer(r, o)) goto fail;
    if (!p->clip->logit_scale) {
        vt_error(VT_ERR_KEY, "missing key %slogit_scale (PickScore scales the cosine by its exp)", prefix);
        goto fail;
    }
    p->logit_scale_exp = expf(vt_f32(p->clip->logit_scale)[0]);
    return r;
fail:
    vt_error_context("reward pickscore: ");
    vt_reward_free(r);
    return NULL;
}
