// reward.c — the reward registry, option handling, the video / per-frame forward wrapper, the
// weighted sum of modules and the built-in colour reward (see reward.h).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/ops.h"
#include "reward_internal.h"

const float vt_reward_clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
const float vt_reward_clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};

// ---- registry ------------------------------------------------------------------------------
typedef struct reward_kind {
    const char *name;
    const char *keys;  // valid option keys, comma-separated ("*" suffix: a prefix family)
    int needs_weights;
} reward_kind;

static const reward_kind kinds[] = {
    {"aesthetic", "target, scale, head, prefix, head_prefix", 1},
    {"hps", "prefix", 1},
    {"hpsv21", "prefix", 1},
    {"pickscore", "prefix", 1},
    {"color", "rgb", 0},
    {"temporal", "frames, image_size, heads, pred_heads, prefix, seed, mask, blocks, aspect, temporal_scale, ratio", 1},
    // needs_weights 0: it opens its checkpoint itself, or builds random weights (random_weights)
    {"object_removal", "target, aggregation, frames, threshold, height, antialias, prefix, config, random_weights, seed",
     0},
    {"aesthetic_hps", "aesthetic.*, hps.*, aesthetic.checkpoint, hps.checkpoint", 0},
    {"action", "class, reward, frames, resize, prefix, image_size, num_frames", 1},
};
#define N_KINDS (int)(sizeof kinds / sizeof kinds[0])

const char *vt_reward_names(void) {
    return "aesthetic, hps, hpsv21, pickscore, color, aesthetic_hps, action, temporal, object_removal";
}

static const reward_kind *find_kind(const char *name) {
    for (int i = 0; name && i < N_KINDS; i++)
        if (!strcmp(kinds[i].name, name)) return &kinds[i];
    vt_error(VT_ERR_CONFIG, "unknown reward \"%s\" (valid: %s)", name ? name : "(null)", vt_reward_names());
    return NULL;
}

const char *vt_reward_option(const vt_reward_options *o, const char *key) {
    if (!o) return NULL;
    for (int i = 0; i < o->n_kv; i++)
        if (o->kv[i].key && !strcmp(o->kv[i].key, key)) return o->kv[i].value;
    return NULL;
}

// Every key must be in the kind's list (exact, or under a "family.*" prefix).
static vt_err check_keys(const reward_kind *k, const vt_reward_options *o) {
    if (!o) return VT_OK;
    for (int i = 0; i < o->n_kv; i++) {
        const char *key = o->kv[i].key ? o->kv[i].key : "";
        int ok = 0;
        const char *p = k->keys;
        while (*p && !ok) {
            size_t n = strcspn(p, ",");
            if (n >= 2 && p[n - 1] == '*' && !strncmp(key, p, n - 1) && key[n - 1]) ok = 1;
            else if (strlen(key) == n && !strncmp(key, p, n)) ok = 1;
            p += n;
            while (*p == ',' || *p == ' ') p++;
        }
        if (!ok) return vt_error(VT_ERR_CONFIG, "reward %s: unknown option \"%s\" (valid: %s)", k->name, key, k->keys);
    }
    return VT_OK;
}

vt_err vt_reward_option_float(const vt_reward_options *o, const char *module, const char *key, float *v) {
    const char *s = vt_reward_option(o, key);
    if (!s) return VT_OK;
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    while (*end == ' ') end++;
    if (end == s || *end || errno || d != d)
        return vt_error(VT_ERR_CONFIG, "reward %s: option %s = \"%s\" is not a number", module, key, s);
    *v = (float)d;
    return VT_OK;
}

const char *vt_reward_shared_file(const char *rel, char *buf, size_t n) {
    const char *dirs[2] = {getenv("VADER_SHARED"), VADER_SHARED_DIR};
    for (int i = 0; i < 2; i++) {
        if (!dirs[i] || !dirs[i][0]) continue;
        snprintf(buf, n, "%s/%s", dirs[i], rel);
        FILE *f = fopen(buf, "rb");
        if (f) {
            fclose(f);
            return buf;
        }
    }
    return NULL;
}

vt_reward *vt_reward_alloc(const char *name) {
    vt_reward *r = calloc(1, sizeof *r);
    if (!r) {
        vt_error(VT_ERR_OOM, "reward %s: out of host memory", name);
        return NULL;
    }
    snprintf(r->name, sizeof r->name, "%s", name);
    return r;
}

vt_err vt_reward_open_tokenizer(vt_reward *r, const vt_reward_options *o) {
    char buf[4096];
    const char *path = o && o->tokenizer ? o->tokenizer
                                         : vt_reward_shared_file("tokenizer/bpe_simple_vocab_16e6.txt.gz", buf, sizeof buf);
    if (!path)
        return vt_error(VT_ERR_IO,
                        "reward %s: no CLIP tokenizer (tokenizer/bpe_simple_vocab_16e6.txt.gz not under $VADER_SHARED "
                        "or %s; give options.tokenizer)",
                        r->name, VADER_SHARED_DIR);
    r->tokenizer = vt_tokenizer_open(path);
    if (!r->tokenizer) return vt_error_context("reward %s: ", r->name);
    return VT_OK;
}

vt_tensor *vt_reward_tokenize(vt_reward *r, const char *const *prompts, int64_t n, int context) {
    if (!prompts) {
        vt_error(VT_ERR_ARG, "reward %s: needs one prompt per sample, got none", r->name);
        return NULL;
    }
    vt_tensor *t = vt_zeros(VT_I64, VT_CPU, 2, (int64_t[]){n, context});
    if (!t) return NULL;
    for (int64_t i = 0; i < n; i++) {
        if (!prompts[i]) {
            vt_release(t);
            vt_error(VT_ERR_ARG, "reward %s: prompt %lld is NULL", r->name, (long long)i);
            return NULL;
        }
        if (vt_tokenize(r->tokenizer, prompts[i], vt_i64(t) + i * context, context)) {
            vt_release(t);
            vt_error_context("reward %s: prompt %lld: ", r->name, (long long)i);
            return NULL;
        }
    }
    vt_reward_hook(r, "tokens", t);
    return t;
}

// aesthetic_hps: VADER's aesthetic_hps_loss_fn, loss (1.5 * aesthetic + hps) / 2, reward
// (aesthetic + 15 * hps) / 2.
static vt_reward *new_aesthetic_hps(vt_weights *w, const vt_reward_options *o) {
    const char *names[2] = {"aesthetic", "hps"};
    vt_reward *parts[2] = {NULL, NULL};
    for (int p = 0; p < 2; p++) {
        vt_reward_kv kv[16];
        int n = 0;
        size_t pl = strlen(names[p]);
        vt_reward_options sub = {NULL, o ? o->tokenizer : NULL, NULL, kv, 0};
        for (int i = 0; o && i < o->n_kv; i++) {
            const char *k = o->kv[i].key;
            if (strncmp(k, names[p], pl) || k[pl] != '.') continue;
            if (!strcmp(k + pl + 1, "checkpoint")) {
                sub.checkpoint = o->kv[i].value;
            } else if (n < 16) {
                kv[n].key = k + pl + 1;
                kv[n++].value = o->kv[i].value;
            }
        }
        sub.n_kv = n;
        parts[p] = w ? vt_reward_create_from_weights(names[p], w, &sub) : vt_reward_create(names[p], &sub);
        if (!parts[p]) {
            vt_reward_free(parts[0]);
            vt_error_context("aesthetic_hps: ");
            return NULL;
        }
    }
    const float lw[2] = {0.75f, 0.5f}, rw[2] = {0.5f, 7.5f};
    return vt_reward_combine("aesthetic_hps", parts, lw, rw, 2);
}

static vt_reward *create(const char *name, vt_weights *w, int own, const vt_reward_options *o) {
    const reward_kind *k = find_kind(name);
    if (!k || check_keys(k, o)) {
        if (own) vt_weights_free(w);
        return NULL;
    }
    vt_reward *r = NULL;
    if (!strcmp(name, "aesthetic")) r = vt_reward_new_aesthetic(w, o);
    else if (!strcmp(name, "hps") || !strcmp(name, "hpsv21")) r = vt_reward_new_hps(w, o);
    else if (!strcmp(name, "pickscore")) r = vt_reward_new_pickscore(w, o);
    else if (!strcmp(name, "color")) r = vt_reward_new_color(o);
    else if (!strcmp(name, "action")) r = vt_reward_new_action(w, o);
    else if (!strcmp(name, "temporal")) r = vt_reward_new_temporal(w, o);
    else if (!strcmp(name, "object_removal")) r = vt_reward_new_object_removal(w, o);
    else r = new_aesthetic_hps(own ? NULL : w, o);
    if (!r) {
        if (own) vt_weights_free(w);
        return NULL;
    }
    snprintf(r->name, sizeof r->name, "%s", name);
    if (own) r->weights = w;
    return r;
}

// Splits "a.safetensors,b.safetensors" and opens them as one store.
static vt_weights *open_checkpoints(const char *name, const char *list) {
    char buf[8192];
    const char *paths[16];
    int n = 0;
    snprintf(buf, sizeof buf, "%s", list);
    for (char *s = strtok(buf, ","); s && n < 16; s = strtok(NULL, ",")) {
        while (*s == ' ') s++;
        if (*s) paths[n++] = s;
    }
    if (!n) {
        vt_error(VT_ERR_CONFIG, "reward %s: empty checkpoint list", name);
        return NULL;
    }
    // a manifest (.txt, shared/manifests): the checkpoint's shapes with deterministic random
    // values (model.random_weights, train/models.h vt_vc2_random_weight_fallback)
    size_t len = strlen(paths[0]);
    vt_weights *w = n == 1 && len > 4 && !strcmp(paths[0] + len - 4, ".txt")
                        ? vt_weights_from_manifest(paths[0], 1, vt_hash64(0x7265776172640000ull, len))
                        : vt_weights_open(paths, n);
    if (!w) vt_error_context("reward %s: ", name);
    return w;
}

vt_reward *vt_reward_create(const char *name, const vt_reward_options *o) {
    const reward_kind *k = find_kind(name);
    if (!k) return NULL;
    if (!k->needs_weights) return create(name, NULL, 0, o);
    if (!o || !o->checkpoint || !o->checkpoint[0]) {
        vt_error(VT_ERR_CONFIG, "reward %s: needs a checkpoint (safetensors with the model's weights)", name);
        return NULL;
    }
    vt_weights *w = open_checkpoints(name, o->checkpoint);
    if (!w) return NULL;
    return create(name, w, 1, o);
}

vt_reward *vt_reward_create_from_weights(const char *name, vt_weights *w, const vt_reward_options *o) {
    const reward_kind *k = find_kind(name);
    if (!k) return NULL;
    if (k->needs_weights && !w) {
        vt_error(VT_ERR_ARG, "reward %s: no weights", name);
        return NULL;
    }
    return create(name, w, 0, o);
}

void vt_reward_free(vt_reward *r) {
    if (!r) return;
    if (r->destroy) r->destroy(r);
    for (int i = 0; i < r->n_cached; i++) {
        free(r->cached_prompts[i]);
        vt_release(r->cached_embeds[i]);
    }
    free(r->cached_prompts);
    free(r->cached_embeds);
    for (int i = 0; i < r->n_parts; i++) vt_reward_free(r->parts[i]);
    free(r->parts);
    free(r->loss_weights);
    free(r->reward_weights);
    vt_tokenizer_free(r->tokenizer);
    vt_weights_free(r->weights);
    free(r);
}

// ---- weighted sum -----------------------------------------------------------------------------
// out = sum_i c[i] * x[i] (x[i] released)
static vt_tensor *weighted_sum(vt_tensor **x, const float *c, int n) {
    vt_tensor *acc = NULL;
    for (int i = 0; i < n; i++) {
        vt_tensor *t = acc ? vt_axpby(c[i], x[i], 1.0f, acc) : vt_scale(x[i], c[i]);
        vt_release(acc);
        acc = t;
    }
    for (int i = 0; i < n; i++) vt_release(x[i]);
    return acc;
}

static vt_err combined_forward(vt_reward *r, vt_tensor *frames, const char *const *prompts, vt_tensor **reward,
                               vt_tensor **loss) {
    vt_tensor *rw[16] = {0}, *ls[16] = {0};
    vt_err e = VT_OK;
    for (int i = 0; i < r->n_parts && !e; i++) {
        vt_reward *p = r->parts[i];
        p->hook = r->hook;
        p->hook_user = r->hook_user;
        p->segments = r->segments;
        e = p->forward(p, frames, prompts, &rw[i], &ls[i]);
    }
    if (e) {
        for (int i = 0; i < r->n_parts; i++) {
            vt_release(rw[i]);
            vt_release(ls[i]);
        }
        return vt_error_context("reward %s: ", r->name);
    }
    *reward = weighted_sum(rw, r->reward_weights, r->n_parts);
    *loss = weighted_sum(ls, r->loss_weights, r->n_parts);
    if (!*reward || !*loss) {
        vt_clear(reward);
        vt_clear(loss);
        return vt_error_code();
    }
    return VT_OK;
}

vt_reward *vt_reward_combine(const char *name, vt_reward **parts, const float *lw, const float *rw, int n) {
    vt_reward *r = NULL;
    if (n < 1 || n > 16 || !parts || !lw) {
        vt_error(VT_ERR_ARG, "reward combine: %d parts (1..16, with loss weights)", n);
        goto fail;
    }
    for (int i = 0; i < n; i++)
        if (!parts[i] || parts[i]->video) {
            // a sum scores frames; a clip module (action) cannot share its forward
            vt_error(VT_ERR_ARG, "reward combine: part %d is %s", i, parts[i] ? "a clip (video) module" : "NULL");
            goto fail;
        }
    r = vt_reward_alloc(name ? name : "sum");
    if (!r) goto fail;
    r->parts = malloc((size_t)n * sizeof *r->parts);
    r->loss_weights = malloc((size_t)n * sizeof(float));
    r->reward_weights = malloc((size_t)n * sizeof(float));
    if (!r->parts || !r->loss_weights || !r->reward_weights) {
        vt_error(VT_ERR_OOM, "reward combine: out of host memory");
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        r->parts[i] = parts[i];
        r->loss_weights[i] = lw[i];
        r->reward_weights[i] = rw ? rw[i] : lw[i];
        r->needs_prompts |= parts[i]->needs_prompts;
    }
    r->n_parts = n;
    r->forward = combined_forward;
    return r;
fail:
    if (r) {
        free(r->parts);
        r->parts = NULL;
        vt_reward_free(r);
    }
    for (int i = 0; parts && i < n && i < 16; i++) vt_reward_free(parts[i]);
    return NULL;
}

// ---- forward wrapper ----------------------------------------------------------------------------
// frame_max: per video, the frame with the largest loss (first of equals); loss [B, T], reward
// [B, T] -> that frame's loss [B] and reward [B]. The choice is a constant one-hot weight (the
// gradient flows to the chosen frame, as torch.max).
static vt_err worst_frame(vt_tensor *loss, vt_tensor *reward, vt_tensor **loss_out, vt_tensor **reward_out) {
    int64_t B = loss->shape[0], T = loss->shape[1];
    vt_tensor *lc = loss->device == VT_CPU ? vt_retain(loss) : vt_to_device(loss, VT_CPU);
    vt_tensor *oh = lc ? vt_new_f32(2, (int64_t[]){B, T}) : NULL;
    for (int64_t b = 0; oh && b < B; b++) {
        const float *l = vt_f32(lc) + b * T;
        int64_t best = 0;
        for (int64_t t = 1; t < T; t++)
            if (l[t] > l[best]) best = t;
        vt_f32(oh)[b * T + best] = 1.0f;
    }
    vt_release(lc);
    if (oh && loss->device != VT_CPU) {
        vt_tensor *d = vt_to_device(oh, loss->device);
        vt_release(oh);
        oh = d;
    }
    if (!oh) return vt_error_code() ? vt_error_code() : vt_error(VT_ERR_OOM, "out of memory");
    vt_tensor *wl = vt_mul(loss, oh), *wr = vt_mul(reward, oh);
    vt_release(oh);
    *loss_out = vt_sum_dim(wl, 1, 0);
    *reward_out = vt_sum_dim(wr, 1, 0);
    vt_release(wl);
    vt_release(wr);
    if (!*loss_out || !*reward_out) {
        vt_clear(loss_out);
        vt_clear(reward_out);
        return vt_error_code();
    }
    return VT_OK;
}

vt_err vt_reward_forward(vt_reward *r, vt_tensor *frames, const char *const *prompts, vt_tensor **reward,
                         vt_tensor **loss) {
    char s[VT_SHAPE_BUF];
    if (!r || !reward || !loss) return vt_error(VT_ERR_ARG, "reward forward: NULL module or outputs");
    *reward = *loss = NULL;
    if (!frames) return vt_error_code() ? vt_error_code() : vt_error(VT_ERR_ARG, "reward %s: no frames", r->name);
    if (frames->dtype != VT_F32 || (frames->ndim != 4 && frames->ndim != 5) || frames->shape[1] != 3)
        return vt_error(VT_ERR_SHAPE, "reward %s: frames %s %s, expected f32 [n, 3, h, w] or [b, 3, t, h, w]",
                        r->name, vt_dtype_name(frames->dtype), vt_shape_str(frames, s, sizeof s));
    if (r->needs_prompts && !prompts)
        return vt_error(VT_ERR_ARG, "reward %s: needs one prompt per sample, got none", r->name);
    vt_tensor *per_reward = NULL, *per_loss = NULL;
    vt_err e;
    if (r->video) {
        // whole clips; [n, 3, h, w] is one clip of n frames: [1, 3, n, h, w]
        vt_tensor *clip = NULL;
        if (frames->ndim == 4) {
            vt_tensor *p = vt_permute(frames, 4, (const int[]){1, 0, 2, 3});
            clip = vt_reshape(p, 5, (int64_t[]){1, 3, frames->shape[0], frames->shape[2], frames->shape[3]});
            vt_release(p);
        } else {
            clip = vt_retain(frames);
        }
        e = clip ? r->forward(r, clip, prompts, &per_reward, &per_loss) : vt_error_code();
        vt_release(clip);
        if (e) return e;
        *reward = per_reward;
    } else if (frames->ndim == 4) {
        e = r->forward(r, frames, prompts, &per_reward, &per_loss);
        if (e) return e;
        *reward = per_reward;
    } else {
        int64_t B = frames->shape[0], T = frames->shape[2], H = frames->shape[3], W = frames->shape[4];
        const char **rep = NULL;
        if (prompts) {
            rep = malloc((size_t)(B * T) * sizeof *rep);
            if (!rep) return vt_error(VT_ERR_OOM, "reward %s: out of host memory", r->name);
            for (int64_t i = 0; i < B * T; i++) rep[i] = prompts[i / T];
        }
        // [b, 3, t, h, w] -> [(b t), 3, h, w], frame-major within a video as lvdm's rearrange
        vt_tensor *p = vt_permute(frames, 5, (const int[]){0, 2, 1, 3, 4});
        vt_tensor *f = vt_reshape(p, 4, (int64_t[]){B * T, 3, H, W});
        vt_release(p);
        e = f ? r->forward(r, f, rep, &per_reward, &per_loss) : vt_error_code();
        vt_release(f);
        free(rep);
        if (e) return e;
        vt_tensor *rr = vt_reshape(per_reward, 2, (int64_t[]){B, T});
        vt_release(per_reward);
        if (r->frame_max) {
            vt_tensor *lr = vt_reshape(per_loss, 2, (int64_t[]){B, T});
            vt_release(per_loss);
            per_loss = NULL;
            e = rr && lr ? worst_frame(lr, rr, &per_loss, reward) : vt_error_code();
            vt_release(lr);
            vt_release(rr);
            if (e) {
                vt_release(per_loss);
                vt_clear(reward);
                return vt_error_context("reward %s: ", r->name);
            }
        } else {
            *reward = vt_mean_dim(rr, 1, 0);
            vt_release(rr);
        }
    }
    *loss = vt_mean(per_loss);
    vt_release(per_loss);
    if (!*reward || !*loss) {
        vt_clear(reward);
        vt_clear(loss);
        return vt_error_context("reward %s: ", r->name);
    }
    return VT_OK;
}

vt_err vt_reward_to_device(vt_reward *r, vt_device dev) {
    if (!r) return vt_error(VT_ERR_ARG, "reward to_device: NULL module");
    for (int i = 0; i < r->n_parts; i++)
        if (vt_reward_to_device(r->parts[i], dev)) return vt_error_code();
    if (r->to_device && r->to_device(r, dev)) return vt_error_context("reward %s to %s: ", r->name, vt_device_name(dev));
    if (vt_tensors_to_device(r->cached_embeds, r->n_cached, dev))
        return vt_error_context("reward %s: cached prompt embeddings to %s: ", r->name, vt_device_name(dev));
    return VT_OK;
}

vt_err vt_reward_set_weight_dtype(vt_reward *r, vt_dtype dt) {
    if (!r) return vt_error(VT_ERR_ARG, "reward weight dtype: NULL module");
    for (int i = 0; i < r->n_parts; i++)
        if (vt_reward_set_weight_dtype(r->parts[i], dt)) return vt_error_code();
    if (r->set_weight_dtype && r->set_weight_dtype(r, dt)) return vt_error_context("reward %s: ", r->name);
    return VT_OK;
}

// ---- prompt cache --------------------------------------------------------------------------
static int cache_find(const vt_reward *r, const char *p) {
    for (int i = 0; i < r->n_cached; i++)
        if (!strcmp(r->cached_prompts[i], p)) return i;
    return -1;
}

// Encodes prompts[0..n) (distinct, none cached) and keeps each row.
static vt_err cache_encode(vt_reward *r, const char *const *prompts, int n) {
    if (r->n_cached + n > r->cap_cached) {
        int cap = r->cap_cached ? r->cap_cached : 16;
        while (cap < r->n_cached + n) cap *= 2;
        char **np = realloc(r->cached_prompts, (size_t)cap * sizeof *np);
        if (np) r->cached_prompts = np;
        vt_tensor **ne = np ? realloc(r->cached_embeds, (size_t)cap * sizeof *ne) : NULL;
        if (!ne) return vt_error(VT_ERR_OOM, "reward %s: out of host memory caching %d prompts", r->name, cap);
        r->cached_embeds = ne;
        r->cap_cached = cap;
    }
    vt_tape *tok = vt_nograd_begin();  // constants: no gradient flows into the text side
    vt_tensor *e = r->encode_text(r, prompts, n);
    vt_err err = e ? VT_OK : vt_error_context("reward %s: caching prompts: ", r->name);
    for (int i = 0; !err && i < n; i++) {
        vt_tensor *row = vt_slice(e, 0, i, 1);
        char *p = row ? strdup(prompts[i]) : NULL;
        if (!p) {
            vt_release(row);
            err = row ? vt_error(VT_ERR_OOM, "reward %s: out of host memory caching a prompt", r->name) : vt_error_code();
            break;
        }
        r->cached_prompts[r->n_cached] = p;
        r->cached_embeds[r->n_cached++] = row;
    }
    vt_nograd_end(tok);
    vt_release(e);
    return err;
}

vt_err vt_reward_cache_prompts(vt_reward *r, const char *const *prompts, int n) {
    if (!r) return vt_error(VT_ERR_ARG, "reward cache: NULL module");
    for (int i = 0; i < r->n_parts; i++)
        if (vt_reward_cache_prompts(r->parts[i], prompts, n)) return vt_error_code();
    if (!r->encode_text || n <= 0) return VT_OK;
    if (!prompts) return vt_error(VT_ERR_ARG, "reward %s: cache: no prompts", r->name);
    enum { CHUNK = 16 };  // prompts encoded per call
    const char *todo[CHUNK];
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (!prompts[i]) return vt_error(VT_ERR_ARG, "reward %s: cache: prompt %d is NULL", r->name, i);
        int dup = cache_find(r, prompts[i]) >= 0;
        for (int j = 0; j < k && !dup; j++) dup = !strcmp(todo[j], prompts[i]);
        if (!dup) {
            if (r->text_dropped)
                return vt_error(VT_ERR_ARG, "reward %s: prompt \"%s\" cannot be cached: the text tower was freed",
                                r->name, prompts[i]);
            todo[k++] = prompts[i];
        }
        if (k == CHUNK || (i == n - 1 && k > 0)) {
            if (cache_encode(r, todo, k)) return vt_error_code();
            k = 0;
        }
    }
    return VT_OK;
}

vt_err vt_reward_drop_text_tower(vt_reward *r) {
    if (!r) return vt_error(VT_ERR_ARG, "reward drop text: NULL module");
    for (int i = 0; i < r->n_parts; i++)
        if (vt_reward_drop_text_tower(r->parts[i])) return vt_error_code();
    if (r->drop_text && !r->text_dropped) {
        r->drop_text(r);
        r->text_dropped = 1;
    }
    return VT_OK;
}

vt_tensor *vt_reward_text_embeds(vt_reward *r, const char *const *prompts, int n) {
    if (!prompts) {
        vt_error(VT_ERR_ARG, "reward %s: needs one prompt per sample, got none", r->name);
        return NULL;
    }
    vt_tensor *rows[64], **rp = n <= 64 ? rows : malloc((size_t)n * sizeof *rp);
    if (!rp) {
        vt_error(VT_ERR_OOM, "reward %s: out of host memory", r->name);
        return NULL;
    }
    int all = 1;
    for (int i = 0; i < n && all; i++) {
        int c = prompts[i] ? cache_find(r, prompts[i]) : -1;
        if (c < 0) all = 0;
        else rp[i] = r->cached_embeds[c];
    }
    vt_tensor *te = NULL;
    if (all) {
        te = vt_concat(rp, n, 0);
    } else if (!r->text_dropped) {
        vt_tape *tok = vt_nograd_begin();
        te = r->encode_text(r, prompts, n);  // the whole batch, as without a cache
        vt_nograd_end(tok);
    } else {
        for (int i = 0; i < n; i++)
            if (!prompts[i] || cache_find(r, prompts[i]) < 0) {
                vt_error(VT_ERR_ARG,
                         "reward %s: prompt \"%s\" is not among the cached prompts and the text tower was freed "
                         "(vt_reward_cache_prompts every prompt of the run first)",
                         r->name, prompts[i] ? prompts[i] : "(null)");
                break;
            }
    }
    if (rp != rows) free(rp);
    vt_reward_hook(r, "text_embeds", te);
    return te;
}

// ---- color -------------------------------------------------------------------------------------
// The tiny CPU run's reward (shared/fixtures/vader_step_tiny): img = (clamp(x, -1, 1) + 1) / 2,
// reward = mean over (h, w) of sum_c img_c * rgb_c, loss = -reward.
typedef struct color_impl {
    vt_tensor *rgb;  // [1, 3, 1, 1]
} color_impl;

static vt_err color_forward(vt_reward *r, vt_tensor *frames, const char *const *prompts, vt_tensor **reward,
                            vt_tensor **loss) {
    (void)prompts;
    color_impl *c = r->impl;
    int64_t N = frames->shape[0], HW = frames->shape[2] * frames->shape[3];
    vt_tensor *cl = vt_clamp(frames, -1.0f, 1.0f);
    vt_tensor *img = vt_affine(cl, 0.5f, 0.5f);
    vt_release(cl);
    vt_tensor *w = vt_mul(img, c->rgb);
    vt_release(img);
    vt_tensor *s = vt_sum_dim(w, 1, 0);  // [N, h, w]
    vt_release(w);
    vt_tensor *s2 = vt_reshape(s, 2, (int64_t[]){N, HW});
    vt_release(s);
    *reward = vt_mean_dim(s2, 1, 0);
    vt_release(s2);
    *loss = vt_scale(*reward, -1.0f);
    if (!*reward || !*loss) {
        vt_clear(reward);
        vt_clear(loss);
        return vt_error_context("reward color: ");
    }
    return VT_OK;
}

static void color_destroy(vt_reward *r) {
    color_impl *c = r->impl;
    if (c) vt_release(c->rgb);
    free(c);
    r->impl = NULL;
}

static vt_err color_to_device(vt_reward *r, vt_device dev) {
    color_impl *c = r->impl;
    return vt_tensors_to_device(&c->rgb, 1, dev);
}

vt_reward *vt_reward_new_color(const vt_reward_options *o) {
    float rgb[3] = {0.7f, -0.2f, 0.5f};
    const char *s = vt_reward_option(o, "rgb");
    if (s) {
        // "r,g,b" or "[r, g, b]"
        const char *p = s;
        while (*p == ' ' || *p == '[') p++;
        for (int i = 0; i < 3; i++) {
            char *end;
            errno = 0;
            double d = strtod(p, &end);
            if (end == p || errno) {
                vt_error(VT_ERR_CONFIG, "reward color: option rgb = \"%s\" is not three numbers", s);
                return NULL;
            }
            rgb[i] = (float)d;
            p = end;
            while (*p == ' ') p++;
            if (i < 2) {
                if (*p != ',') {
                    vt_error(VT_ERR_CONFIG, "reward color: option rgb = \"%s\" is not three numbers", s);
                    return NULL;
                }
                p++;
            }
        }
        while (*p == ' ' || *p == ']') p++;
        if (*p) {
            vt_error(VT_ERR_CONFIG, "reward color: option rgb = \"%s\" is not three numbers", s);
            return NULL;
        }
    }
    vt_reward *r = vt_reward_alloc("color");
    if (!r) return NULL;
    color_impl *c = calloc(1, sizeof *c);
    if (c) c->rgb = vt_from_f32(4, (int64_t[]){1, 3, 1, 1}, rgb);
    if (!c || !c->rgb) {
        free(c);
        free(r);
        vt_error(VT_ERR_OOM, "reward color: out of host memory");
        return NULL;
    }
    r->impl = c;
    r->forward = color_forward;
    r->destroy = color_destroy;
    r->to_device = color_to_device;
    return r;
}
