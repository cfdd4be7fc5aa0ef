// action_reward.c — the action reward: VideoMAE (Kinetics-400 classifier, HF
// VideoMAEForVideoClassification layout, core/models/videomae.h) scores a whole clip, reward =
// log-probability (or probability) of a target class, loss = the cross-entropy -log p.
//
// VADER-VideoCrafter's actpred_loss_fn / ActPredScorer, which this follows where options say so:
//   - loss = outputs.loss of VideoMAEForVideoClassification(labels = [target]) = -log softmax[target]
//     (mean over the batch); the logged reward is the softmax probability of the target.
//   - frames: the decoded frames as they are (decode_frame "alt" / "all"), the model built with
//     from_pretrained(num_frames = that count): the position table is made for T/2 tubelets
//     (frames: native here). T must then be a multiple of tubelet_size (2): the Conv3d would
//     silently drop a trailing odd frame, so an odd count is an error here.
//   - preprocessing per frame: clamp(x / 2 + 0.5, 0, 1) -> Resize((224, 224)) bilinear with
//     antialias -> Normalize(ImageNet mean / std) (resize: square here).
// The defaults instead give the classifier what it was trained on (frames: resample, resize:
// processor):
//   - frames resampled to the config's num_frames (16) by uniform index sampling over the whole
//     clip, as transformers' VideoMAE example sample_frame_indices with the clip as the segment:
//     i_k = min(floor(k * T / (N - 1)), T - 1), k = 0..N-1 (numpy linspace(0, T, N), clipped,
//     truncated). T == N keeps every frame once; T < N repeats frames; T > N skips evenly.
//     Each chosen frame is a slice on the tape, so a repeated frame gets both gradients.
//   - VideoMAEImageProcessor (MCG-NJU preprocessor_config.json): shortest edge to 224, the other
//     int(224 * long / short), bilinear with antialias (torch's antialias filter is PIL's
//     triangle filter), centre crop 224 at ((h' - 224) // 2, (w' - 224) // 2), rescale to
//     [0, 1] (here: x / 2 + 0.5, clamped), Normalize(mean [0.485, 0.456, 0.406],
//     std [0.229, 0.224, 0.225]).
// log p is log(softmax(logits)): exact in fp32 down to about -87 (a target probability under
// 1e-38 reads as -inf).
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "core/models/videomae.h"
#include "core/ops.h"
#include "kinetics400_labels.h"
#include "reward_internal.h"

static const float imagenet_mean[3] = {0.485f, 0.456f, 0.406f};
static const float imagenet_std[3] = {0.229f, 0.224f, 0.225f};

typedef struct action_impl {
    vt_videomae *model;
    int target;          // class id
    int reward_prob;     // reward = p instead of log p
    int native_frames;   // frames: native (VADER) instead of resample
    int square_resize;   // resize: square (VADER) instead of processor
    char target_name[128];
} action_impl;

// ---- labels --------------------------------------------------------------------------------
typedef struct label_table {
    const char **names;  // [n] or NULL (ids only)
    int n;
} label_table;

// Case-insensitive, '_' == ' ' (config files often carry playing_guitar).
static int label_eq(const char *a, const char *b) {
    for (; *a && *b; a++, b++) {
        int ca = *a == '_' ? ' ' : tolower((unsigned char)*a), cb = *b == '_' ? ' ' : tolower((unsigned char)*b);
        if (ca != cb) return 0;
    }
    return *a == *b;
}

// Levenshtein distance on lower-cased strings (for the "did you mean" list).
static int edit_distance(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    if (na > 127) na = 127;
    if (nb > 127) nb = 127;
    int row[128];
    for (size_t j = 0; j <= nb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= na; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= nb; j++) {
            int up = row[j];
            int cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            int best = diag + cost;
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[nb];
}

// "class" option -> id: a decimal id, or a label name. Errors list the closest names.
static vt_err resolve_class(const label_table *lt, int num_labels, const char *s, int *id, char *name, size_t nn) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end != s && !*end && !errno) {
        if (v < 0 || v >= num_labels)
            return vt_error(VT_ERR_CONFIG, "reward action: class %ld out of range (the classifier has %d classes, 0..%d)",
                            v, num_labels, num_labels - 1);
        *id = (int)v;
        snprintf(name, nn, "%s", lt->names ? lt->names[v] : s);
        return VT_OK;
    }
    if (!lt->names)
        return vt_error(VT_ERR_CONFIG,
                        "reward action: class \"%s\": the classifier has %d classes and no label names (the "
                        "Kinetics-400 names need 400; a config with id2label gives others); give an id 0..%d",
                        s, num_labels, num_labels - 1);
    for (int i = 0; i < lt->n; i++)
        if (label_eq(lt->names[i], s)) {
            *id = i;
            snprintf(name, nn, "%s", lt->names[i]);
            return VT_OK;
        }
    // the 5 nearest names, plus every name containing the text
    int best[5] = {-1, -1, -1, -1, -1}, bd[5] = {1 << 30, 1 << 30, 1 << 30, 1 << 30, 1 << 30};
    for (int i = 0; i < lt->n; i++) {
        int d = edit_distance(s, lt->names[i]);
        for (int k = 0; k < 5; k++)
            if (d < bd[k]) {
                for (int m = 4; m > k; m--) best[m] = best[m - 1], bd[m] = bd[m - 1];
                best[k] = i, bd[k] = d;
                break;
            }
    }
    char list[1024] = "";
    for (int k = 0; k < 5 && best[k] >= 0; k++) {
        size_t l = strlen(list);
        snprintf(list + l, sizeof list - l, "%s\"%s\" (%d)", k ? ", " : "", lt->names[best[k]], best[k]);
    }
    return vt_error(VT_ERR_CONFIG, "reward action: unknown class \"%s\"; closest: %s (%d classes: a name or an id 0..%d)",
                    s, list, lt->n, lt->n - 1);
}

// ---- preprocessing -------------------------------------------------------------------------
// x [b, T, 3, h, w] -> [b, N, 3, h, w], frames i_k = min(floor(k * T / (N - 1)), T - 1).
static vt_tensor *resample_frames(vt_tensor *x, int N) {
    int64_t T = x->shape[1];
    if (T == N) return vt_retain(x);
    vt_tensor **parts = calloc((size_t)N, sizeof *parts);
    if (!parts) {
        vt_error(VT_ERR_OOM, "reward action: out of host memory");
        return NULL;
    }
    vt_tensor *y = NULL;
    int n = 0;
    double step = N > 1 ? (double)T / (double)(N - 1) : 0.0;
    for (int k = 0; k < N; k++) {
        int64_t i = (int64_t)((double)k * step);
        if (k == N - 1 && N > 1) i = T;  // linspace ends exactly at T
        if (i > T - 1) i = T - 1;
        if (!(parts[n++] = vt_slice(x, 1, i, 1))) goto done;
    }
    y = vt_concat(parts, N, 1);
done:
    for (int k = 0; k < n; k++) vt_release(parts[k]);
    free(parts);
    return y;
}

// f [n, 3, h, w] in [-1, 1] -> normalised [n, 3, S, S] (see the file comment for both modes)
static vt_tensor *preprocess_frames(vt_tensor *f, int S, int square) {
    int64_t h = f->shape[2], w = f->shape[3], H = S, W = S;
    if (!square) {
        if (h <= w) W = (int64_t)S * w / h;
        else H = (int64_t)S * h / w;
    }
    vt_tensor *a = vt_affine(f, 0.5f, 0.5f);
    vt_tensor *u = vt_clamp(a, 0.0f, 1.0f);
    vt_release(a);
    vt_tensor *rs = h == H && w == W ? vt_retain(u) : vt_resize_bilinear(u, (int)H, (int)W, 1);
    vt_release(u);
    vt_tensor *c = rs;
    if (H != S || W != S) {
        vt_tensor *cy = vt_slice(rs, 2, (H - S) / 2, S);
        c = vt_slice(cy, 3, (W - S) / 2, S);
        vt_release(cy);
        vt_release(rs);
    }
    vt_tensor *n = vt_normalize_channels(c, imagenet_mean, imagenet_std);
    vt_release(c);
    return n;
}

// ---- forward -------------------------------------------------------------------------------
static vt_err action_forward(vt_reward *r, vt_tensor *frames, const char *const *prompts, vt_tensor **reward,
                             vt_tensor **loss) {
    (void)prompts;
    char s[VT_SHAPE_BUF];
    action_impl *a = r->impl;
    const vt_videomae_config *c = &a->model->cfg;
    a->model->segments = r->segments;
    if (frames->ndim != 5)
        return vt_error(VT_ERR_SHAPE, "reward action: frames %s, expected a clip [b, 3, t, h, w]",
                        vt_shape_str(frames, s, sizeof s));
    int64_t B = frames->shape[0], T = frames->shape[2], h = frames->shape[3], w = frames->shape[4];
    int64_t N = a->native_frames ? T : c->num_frames;
    if (a->native_frames && (T < c->tubelet_size || T % c->tubelet_size))
        return vt_error(VT_ERR_SHAPE,
                        "reward action: %lld frames (%s) with frames: native, which needs a positive multiple of the "
                        "tubelet size %d (decode an even number of frames, or use frames: resample to resample to %d)",
                        (long long)T, vt_shape_str(frames, s, sizeof s), c->tubelet_size, c->num_frames);
    vt_tensor *bt = vt_permute(frames, 5, (const int[]){0, 2, 1, 3, 4});  // [b, T, 3, h, w]
    vt_tensor *sel = bt ? (a->native_frames ? vt_retain(bt) : resample_frames(bt, (int)N)) : NULL;
    vt_release(bt);
    vt_tensor *flat = vt_reshape(sel, 4, (int64_t[]){B * N, 3, h, w});
    vt_release(sel);
    vt_tensor *pre = flat ? preprocess_frames(flat, c->image_size, a->square_resize) : NULL;
    vt_release(flat);
    vt_tensor *px = vt_reshape(pre, 5, (int64_t[]){B, N, 3, c->image_size, c->image_size});
    vt_release(pre);
    vt_reward_hook(r, "pixel_values", px);
    a->model->hook = r->hook;
    a->model->hook_user = r->hook_user;
    vt_tensor *logits = px ? vt_videomae_forward(a->model, px) : NULL;
    vt_release(px);
    vt_tensor *p = vt_softmax(logits);
    vt_release(logits);
    vt_tensor *pt = vt_slice(p, 1, a->target, 1);
    vt_release(p);
    vt_tensor *prob = vt_reshape(pt, 1, (int64_t[]){B});
    vt_release(pt);
    vt_tensor *logp = vt_log(prob);
    *loss = vt_scale(logp, -1.0f);  // cross-entropy of the target class
    if (a->reward_prob) {
        *reward = prob;
        vt_release(logp);
    } else {
        *reward = logp;
        vt_release(prob);
    }
    if (!*reward || !*loss) {
        vt_clear(reward);
        vt_clear(loss);
        return vt_error_context("reward action: ");
    }
    return VT_OK;
}

static vt_err action_to_device(vt_reward *r, vt_device dev) {
    return vt_videomae_to_device(((action_impl *)r->impl)->model, dev);
}

// the encoder's linears at model.dtype (the patch embedding and the head stay f32: < 2% of it)
static vt_err action_set_weight_dtype(vt_reward *r, vt_dtype dt) {
    return vt_vit_stack_set_weight_dtype(&((action_impl *)r->impl)->model->encoder, dt);
}

static void action_destroy(vt_reward *r) {
    action_impl *a = r->impl;
    if (!a) return;
    vt_videomae_free(a->model);
    free(a);
    r->impl = NULL;
}

// option "key" among two words -> 0 (first, the default) / 1 (second)
static vt_err option_choice(const vt_reward_options *o, const char *key, const char *v0, const char *v1, int *out) {
    const char *s = vt_reward_option(o, key);
    *out = 0;
    if (!s || !strcmp(s, v0)) return VT_OK;
    if (!strcmp(s, v1)) {
        *out = 1;
        return VT_OK;
    }
    return vt_error(VT_ERR_CONFIG, "reward action: option %s = \"%s\" (valid: %s, %s)", key, s, v0, v1);
}

vt_reward *vt_reward_new_action(vt_weights *w, const vt_reward_options *o) {
    vt_reward *r = vt_reward_alloc("action");
    action_impl *a = r ? calloc(1, sizeof *a) : NULL;
    const char **names = NULL;
    if (!a) {
        free(r);
        vt_error(VT_ERR_OOM, "reward action: out of host memory");
        return NULL;
    }
    r->impl = a;
    r->forward = action_forward;
    r->destroy = action_destroy;
    r->to_device = action_to_device;
    r->set_weight_dtype = action_set_weight_dtype;
    r->video = 1;
    if (option_choice(o, "reward", "log_prob", "prob", &a->reward_prob) ||
        option_choice(o, "frames", "resample", "native", &a->native_frames) ||
        option_choice(o, "resize", "processor", "square", &a->square_resize))
        goto fail;
    const char *cls = vt_reward_option(o, "class");
    if (!cls || !cls[0]) {
        vt_error(VT_ERR_CONFIG, "reward action: needs option class (a Kinetics-400 name such as \"playing guitar\", or an id)");
        goto fail;
    }
    const char *prefix = vt_reward_option(o, "prefix");
    prefix = prefix ? prefix : "";
    vt_videomae_config cfg;
    memset(&cfg, 0, sizeof cfg);
    if (o && o->config && vt_videomae_config_from_json(o->config, &cfg)) goto fail;
    // image_size / num_frames are not in the weights (the position table is computed): options
    // override the config (VADER passes num_frames to from_pretrained the same way)
    const char *ints[2] = {"image_size", "num_frames"};
    int *dst[2] = {&cfg.image_size, &cfg.num_frames};
    for (int i = 0; i < 2; i++) {
        const char *v = vt_reward_option(o, ints[i]);
        if (!v) continue;
        char *end;
        long n = strtol(v, &end, 10);
        if (end == v || *end || n < 1 || n > 4096) {
            vt_error(VT_ERR_CONFIG, "reward action: option %s = \"%s\" is not a positive integer", ints[i], v);
            goto fail;
        }
        *dst[i] = (int)n;
    }
    a->model = vt_videomae_build(w, prefix, &cfg);
    if (!a->model || vt_weights_finish(w, prefix)) {
        vt_error_context("reward action: ");
        goto fail;
    }
    int L = a->model->cfg.num_labels;
    // label names: the config's id2label, else the Kinetics-400 list for a 400-way head
    label_table lt = {NULL, 0};
    const cJSON *id2label = o && o->config ? cJSON_GetObjectItemCaseSensitive(o->config, "id2label") : NULL;
    if (cJSON_IsObject(id2label) && cJSON_GetArraySize(id2label) == L) {
        names = calloc((size_t)L, sizeof *names);
        if (!names) {
            vt_error(VT_ERR_OOM, "reward action: out of host memory");
            goto fail;
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, id2label) {
            char *end;
            long id = strtol(it->string, &end, 10);
            if (*end || id < 0 || id >= L || !cJSON_IsString(it)) {
                vt_error(VT_ERR_CONFIG, "reward action: config id2label entry \"%s\" is not an id 0..%d with a name",
                         it->string, L - 1);
                goto fail;
            }
            names[id] = it->valuestring;
        }
        for (int i = 0; i < L; i++)
            if (!names[i]) {
                vt_error(VT_ERR_CONFIG, "reward action: config id2label has no name for id %d", i);
                goto fail;
            }
        lt.names = names;
        lt.n = L;
    } else if (L == VT_KINETICS400_N) {
        lt.names = (const char **)vt_kinetics400_labels;
        lt.n = L;
    }
    if (resolve_class(&lt, L, cls, &a->target, a->target_name, sizeof a->target_name)) goto fail;
    free(names);
    return r;
fail:
    free(names);
    vt_reward_free(r);
    return NULL;
}
