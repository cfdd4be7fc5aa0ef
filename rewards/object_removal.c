// object_removal.c — the object_removal reward: YOLOS (core/models/yolos.h) detection
// confidence of a target class, minimised (VADER-VideoCrafter's objectDetection_loss_fn with
// hustvl/yolos-base or yolos-tiny).
//
// Preprocessing (VADER): clamp(x / 2 + 0.5, 0, 1) -> Resize((height, height * w // h)) bilinear,
// antialias off (VADER passes antialias=False; height 512) -> ImageNet normalisation.
// confidence c[n, d] = softmax(logits[n, d])[target] per detection token d, aggregated per frame:
//   max    max_d c (default; the gradient goes to the most confident token, as torch.max)
//   mean   mean_d c
//   vader  VADER's post-processing: transformers' post_process_object_detection(threshold)
//          keeps the tokens whose best real class (no-object excluded) scores > threshold; the
//          mean of c over those labelled target (0 when there is none)
// reward = -confidence, per-sample loss = confidence. Videos: frames "mean" (default, VADER
// averages its images) or "max" (the worst frame) over t (reward.h's frame_max).
// Options: target (COCO name as in the config's id2label, or an id; default "book", VADER's),
// aggregation, frames, threshold (0.2), height (512), antialias (false), prefix (""),
// config (a YolosConfig json file, when opts->config is not given), random_weights (true: no
// checkpoint, random weights of the config, or of a tiny built-in one), seed (0).
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/models/yolos.h"
#include "core/ops.h"
#include "reward_internal.h"

static const float imagenet_mean[3] = {0.485f, 0.456f, 0.406f};
static const float imagenet_std[3] = {0.229f, 0.224f, 0.225f};

// COCO detection id2label of the hustvl/yolos-* configs ("N/A": ids no class uses).
static const char *const coco_labels[91] = {
    "N/A", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "N/A", "backpack", "umbrella", "N/A", "N/A", "handbag", "tie",
    "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "chair", "couch", "potted plant", "bed", "N/A", "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop",
    "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush"};

enum { AGG_MAX = 0, AGG_MEAN, AGG_VADER };

typedef struct object_removal_impl {
    vt_yolos *model;
    int target, aggregation, height, antialias;
    float threshold;
    uint64_t seed;  // random_weights
} object_removal_impl;

// ---- labels ----------------------------------------------------------------------------------
// The label of id i: the config's id2label when given, else COCO's.
static const char *label_of(const cJSON *id2label, int i) {
    if (id2label) {
        char k[16];
        snprintf(k, sizeof k, "%d", i);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(id2label, k);
        return cJSON_IsString(v) ? v->valuestring : NULL;
    }
    return i >= 0 && i < 91 ? coco_labels[i] : NULL;
}

// target: a label (case-insensitive, "_" for " " accepted) or an id in [0, num_labels).
static vt_err resolve_target(const char *s, const cJSON *id2label, int num_labels, int *id) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end != s && !*end && !errno) {
        if (v < 0 || v >= num_labels)
            return vt_error(VT_ERR_CONFIG, "reward object_removal: target id %ld outside [0, %d)", v, num_labels);
        *id = (int)v;
        return VT_OK;
    }
    for (int i = 0; i < num_labels; i++) {
        const char *l = label_of(id2label, i);
        if (!l || !strcmp(l, "N/A")) continue;
        size_t n = strlen(l);
        int same = strlen(s) == n;
        for (size_t j = 0; same && j < n; j++) {
            char a = (char)tolower((unsigned char)s[j]), b = (char)tolower((unsigned char)l[j]);
            same = a == b || (a == '_' && b == ' ');
        }
        if (same) {
            *id = i;
            return VT_OK;
        }
    }
    char list[4096] = "";
    size_t used = 0;
    for (int i = 0; i < num_labels && used + 1 < sizeof list; i++) {
        const char *l = label_of(id2label, i);
        if (!l || !strcmp(l, "N/A")) continue;
        int w = snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "", l);
        if (w < 0) break;
        used += (size_t)w;
    }
    return vt_error(VT_ERR_CONFIG, "reward object_removal: unknown target class \"%s\" (valid: %s; or an id 0..%d)", s,
                    list, num_labels - 1);
}

// ---- forward ---------------------------------------------------------------------------------
// VADER: clamp(x/2 + 0.5) -> Resize((H, H * w // h), bilinear, antialias off) -> ImageNet normalise
static vt_tensor *preprocess(const object_removal_impl *o, vt_tensor *frames) {
    int64_t h = frames->shape[2], w = frames->shape[3];
    int64_t H = o->height, W = (int64_t)o->height * w / h;
    int p = o->model->cfg.patch_size;
    if (W < p) {
        vt_error(VT_ERR_SHAPE,
                 "reward object_removal: frames %lldx%lld resize to %lldx%lld, narrower than one %d-pixel patch "
                 "(raise option height or use wider frames)",
                 (long long)h, (long long)w, (long long)H, (long long)W, p);
        return NULL;
    }
    vt_tensor *a = vt_affine(frames, 0.5f, 0.5f);
    vt_tensor *u = vt_clamp(a, 0.0f, 1.0f);
    vt_release(a);
    vt_tensor *rs = h == H && w == W ? vt_retain(u) : vt_resize_bilinear(u, (int)H, (int)W, o->antialias);
    vt_release(u);
    vt_tensor *n = vt_normalize_channels(rs, imagenet_mean, imagenet_std);
    vt_release(rs);
    return n;
}

// Per-row weights [N, D] of the aggregation (constants: the selection is not differentiated,
// as torch.max / VADER's index selection): max -> one-hot of the first maximum; vader -> 1/count
// on the kept tokens. prob [N, D, K + 1] (for vader), conf [N, D].
static vt_tensor *aggregation_weights(const object_removal_impl *o, vt_tensor *prob, vt_tensor *conf) {
    vt_tensor *pc = prob->device == VT_CPU ? vt_retain(prob) : vt_to_device(prob, VT_CPU);
    vt_tensor *cc = conf->device == VT_CPU ? vt_retain(conf) : vt_to_device(conf, VT_CPU);
    int64_t N = conf->shape[0], D = conf->shape[1], K1 = prob->shape[2];
    vt_tensor *wt = pc && cc ? vt_new_f32(2, (int64_t[]){N, D}) : NULL;
    for (int64_t n = 0; wt && n < N; n++) {
        const float *c = vt_f32(cc) + n * D;
        float *wr = vt_f32(wt) + n * D;
        if (o->aggregation == AGG_MAX) {
            int64_t best = 0;
            for (int64_t d = 1; d < D; d++)
                if (c[d] > c[best]) best = d;
            wr[best] = 1.0f;
        } else {
            int64_t cnt = 0;
            for (int64_t d = 0; d < D; d++) {
                const float *pr = vt_f32(pc) + (n * D + d) * K1;
                int64_t lab = 0;
                for (int64_t k = 1; k < K1 - 1; k++)
                    if (pr[k] > pr[lab]) lab = k;
                if (lab == o->target && pr[lab] > o->threshold) {
                    wr[d] = 1.0f;
                    cnt++;
                }
            }
            for (int64_t d = 0; cnt && d < D; d++) wr[d] /= (float)cnt;
        }
    }
    vt_release(pc);
    vt_release(cc);
    if (!wt) return NULL;
    if (conf->device == VT_CPU) return wt;
    vt_tensor *dw = vt_to_device(wt, conf->device);
    vt_release(wt);
    return dw;
}

static vt_err object_removal_forward(vt_reward *r, vt_tensor *frames, const char *const *prompts, vt_tensor **reward,
                                     vt_tensor **loss) {
    (void)prompts;
    object_removal_impl *o = r->impl;
    o->model->segments = r->segments;
    vt_tensor *pix = preprocess(o, frames);
    if (!pix) return vt_error_context("reward object_removal: ");
    vt_reward_hook(r, "pixel_values", pix);
    vt_tensor *logits = NULL, *boxes = NULL;
    // boxes only for the debugging hook (the fixtures compare them); the reward needs none
    vt_err e = vt_yolos_forward(o->model, pix, &logits, r->hook ? &boxes : NULL);
    vt_release(pix);
    if (e) return vt_error_context("reward object_removal: ");
    vt_reward_hook(r, "logits", logits);
    vt_reward_hook(r, "pred_boxes", boxes);
    vt_release(boxes);
    int64_t N = logits->shape[0], D = logits->shape[1];
    vt_tensor *prob = vt_softmax(logits);
    vt_release(logits);
    vt_reward_hook(r, "probabilities", prob);
    vt_tensor *ct = vt_slice(prob, 2, o->target, 1);  // [N, D, 1]
    vt_tensor *conf = vt_reshape(ct, 2, (int64_t[]){N, D});
    vt_release(ct);
    vt_tensor *c = NULL;
    if (conf && o->aggregation == AGG_MEAN) {
        c = vt_mean_dim(conf, 1, 0);
    } else if (conf) {
        vt_tensor *wt = aggregation_weights(o, prob, conf);
        vt_tensor *wc = vt_mul(conf, wt);
        vt_release(wt);
        c = vt_sum_dim(wc, 1, 0);
        vt_release(wc);
    }
    vt_release(prob);
    vt_release(conf);
    vt_reward_hook(r, "confidence", c);
    *loss = c;
    *reward = vt_scale(c, -1.0f);
    if (!*reward || !*loss) {
        vt_clear(reward);
        vt_clear(loss);
        return vt_error_context("reward object_removal: ");
    }
    return VT_OK;
}

static vt_err object_removal_to_device(vt_reward *r, vt_device dev) {
    return vt_yolos_to_device(((object_removal_impl *)r->impl)->model, dev);
}

// the patch embedding and the encoder's linears at model.dtype (the detection heads stay f32)
static vt_err object_removal_set_weight_dtype(vt_reward *r, vt_dtype dt) {
    vt_yolos *m = ((object_removal_impl *)r->impl)->model;
    if (vt_tensors_to_dtype(&m->patch_w, 1, dt) || vt_vit_stack_set_weight_dtype(&m->encoder, dt))
        return vt_error_code();
    return VT_OK;
}

static void object_removal_destroy(vt_reward *r) {
    object_removal_impl *o = r->impl;
    if (!o) return;
    vt_yolos_free(o->model);
    free(o);
    r->impl = NULL;
}

// ---- options ---------------------------------------------------------------------------------
static vt_err option_bool(const vt_reward_options *opts, const char *key, int *v) {
    const char *s = vt_reward_option(opts, key);
    if (!s) return VT_OK;
    if (!strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "yes")) *v = 1;
    else if (!strcmp(s, "false") || !strcmp(s, "0") || !strcmp(s, "no")) *v = 0;
    else return vt_error(VT_ERR_CONFIG, "reward object_removal: option %s = \"%s\" is not true / false", key, s);
    return VT_OK;
}

static cJSON *read_json(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        vt_error(VT_ERR_IO, "reward object_removal: cannot open config %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? 2 * cap : 65536;
            char *nb = realloc(buf, cap);
            if (!nb) break;
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (!got) break;
    }
    fclose(f);
    cJSON *j = NULL;
    if (buf) {
        buf[n] = 0;
        j = cJSON_Parse(buf);
    }
    free(buf);
    if (!j) vt_error(VT_ERR_CONFIG, "reward object_removal: config %s is not valid JSON", path);
    return j;
}

// Option values that need no model (shared with vt_reward_object_removal_check).
static vt_err parse_options(const vt_reward_options *opts, object_removal_impl *o, int *frame_max, int *random) {
    o->height = 512;
    o->threshold = 0.2f;
    float height = 512.0f, seed = 0.0f;
    vt_err e;
    if ((e = option_bool(opts, "antialias", &o->antialias)) || (e = option_bool(opts, "random_weights", random)) ||
        (e = vt_reward_option_float(opts, "object_removal", "threshold", &o->threshold)) ||
        (e = vt_reward_option_float(opts, "object_removal", "height", &height)) ||
        (e = vt_reward_option_float(opts, "object_removal", "seed", &seed)))
        return e;
    if (height < 1 || height > 8192 || height != (float)(int)height)
        return vt_error(VT_ERR_CONFIG, "reward object_removal: option height = %g must be an integer in [1, 8192]",
                        height);
    if (seed < 0 || seed != (float)(int64_t)seed)
        return vt_error(VT_ERR_CONFIG, "reward object_removal: option seed = %g must be a non-negative integer", seed);
    o->height = (int)height;
    o->seed = (uint64_t)seed;
    const char *agg = vt_reward_option(opts, "aggregation");
    if (!agg || !strcmp(agg, "max")) o->aggregation = AGG_MAX;
    else if (!strcmp(agg, "mean")) o->aggregation = AGG_MEAN;
    else if (!strcmp(agg, "vader")) o->aggregation = AGG_VADER;
    else return vt_error(VT_ERR_CONFIG, "reward object_removal: aggregation \"%s\" (valid: max, mean, vader)", agg);
    const char *fr = vt_reward_option(opts, "frames");
    *frame_max = 0;
    if (fr && !strcmp(fr, "max")) *frame_max = 1;
    else if (fr && strcmp(fr, "mean"))
        return vt_error(VT_ERR_CONFIG, "reward object_removal: frames \"%s\" (valid: mean, max)", fr);
    return VT_OK;
}

vt_err vt_reward_object_removal_check(const vt_reward_options *opts) {
    object_removal_impl o;
    memset(&o, 0, sizeof o);
    int frame_max = 0, random = 0, id = 0;
    if (parse_options(opts, &o, &frame_max, &random)) return vt_error_code();
    // class names are checked against COCO unless a config (its own id2label) is given
    const char *target = vt_reward_option(opts, "target");
    if (target && !vt_reward_option(opts, "config")) return resolve_target(target, NULL, 91, &id);
    return VT_OK;
}

// The random model of `random_weights: true` without a config: 2 layers of width 32, 16-pixel
// patches, a 64x96 position grid, 10 detection tokens, the 91 COCO labels, mid embeddings on.
static vt_yolos_config tiny_random_config(void) {
    vt_yolos_config c = vt_yolos_config_empty();
    c.hidden_size = 32;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 2;
    c.intermediate_size = 64;
    c.image_size[0] = 64;
    c.image_size[1] = 96;
    c.patch_size = 16;
    c.num_detection_tokens = 10;
    c.num_labels = 91;
    c.use_mid_position_embeddings = 1;
    c.layer_norm_eps = 1e-12f;
    return c;
}

vt_reward *vt_reward_new_object_removal(vt_weights *w, const vt_reward_options *opts) {
    vt_reward *r = vt_reward_alloc("object_removal");
    object_removal_impl *o = r ? calloc(1, sizeof *o) : NULL;
    cJSON *own_json = NULL;
    if (!o) {
        free(r);
        vt_error(VT_ERR_OOM, "reward object_removal: out of host memory");
        return NULL;
    }
    r->impl = o;
    r->forward = object_removal_forward;
    r->destroy = object_removal_destroy;
    r->to_device = object_removal_to_device;
    r->set_weight_dtype = object_removal_set_weight_dtype;
    int random = 0;
    if (parse_options(opts, o, &r->frame_max, &random)) goto fail;
    // the model's config: opts->config (a parsed json), else option config (a file)
    const cJSON *cj = opts ? opts->config : NULL;
    const char *cpath = vt_reward_option(opts, "config");
    if (!cj && cpath) {
        if (!(own_json = read_json(cpath))) goto fail;
        cj = own_json;
    }
    vt_yolos_config cfg = vt_yolos_config_empty();
    if (cj && vt_yolos_config_from_json(cj, &cfg)) goto fail;
    const char *prefix = vt_reward_option(opts, "prefix");
    prefix = prefix ? prefix : "";
    if (w) {
        o->model = vt_yolos_build(w, prefix, &cfg);
        if (!o->model || vt_weights_finish(w, prefix)) goto fail;
    } else if (opts && opts->checkpoint && opts->checkpoint[0]) {
        if (!(r->weights = vt_weights_open1(opts->checkpoint))) goto fail;
        o->model = vt_yolos_build(r->weights, prefix, &cfg);
        if (!o->model || vt_weights_finish(r->weights, prefix)) goto fail;
    } else if (random) {
        if (!cj) cfg = tiny_random_config();
        o->model = vt_yolos_build_random(&cfg, o->seed);
        if (!o->model) goto fail;
    } else {
        vt_error(VT_ERR_CONFIG,
                 "reward object_removal: needs a checkpoint (hustvl/yolos-base or yolos-tiny as safetensors, "
                 "scripts/convert_hf.py) or options.random_weights: true");
        goto fail;
    }
    const cJSON *id2label = cj ? cJSON_GetObjectItemCaseSensitive(cj, "id2label") : NULL;
    if (!cJSON_IsObject(id2label)) {
        id2label = NULL;
        if (o->model->cfg.num_labels != 91) {
            const char *t = vt_reward_option(opts, "target");
            char *end;
            if (!t || (strtol(t, &end, 10), *end)) {
                vt_error(VT_ERR_CONFIG,
                         "reward object_removal: the model has %d labels, not COCO's 91: give its config (id2label) "
                         "or the target as an id",
                         o->model->cfg.num_labels);
                goto fail;
            }
        }
    }
    const char *target = vt_reward_option(opts, "target");
    if (resolve_target(target ? target : "book", id2label, o->model->cfg.num_labels, &o->target)) goto fail;
    cJSON_Delete(own_json);
    return r;
fail:
    cJSON_Delete(own_json);
    if (strncmp(vt_error_message(), "reward object_removal", 21)) vt_error_context("reward object_removal: ");
    vt_reward_free(r);
    return NULL;
}
