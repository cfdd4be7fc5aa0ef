// weights.c — the weight store (see weights.h): keys from safetensors files or a shape
// manifest, a hash index over them, strict / collecting checks of what the models ask for.
#include "weights.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// finish() prints at most this many problems; the count of the rest follows.
#define W_MAX_LISTED 20

typedef enum w_kind { W_MISSING, W_SHAPE, W_UNUSED, W_OTHER, W_NKINDS } w_kind;

typedef struct w_entry {
    const char *key;           // owned by the file entry (or by keys_owned for a manifest)
    int file;                  // index into files / file_labels
    const vt_st_entry *st;     // NULL in a manifest store
    int ndim;
    int64_t shape[VT_MAX_DIMS];
    int used;
} w_entry;

struct vt_weights {
    char *label;               // "a.safetensors" or "a.safetensors+b.safetensors" (errors)
    int n_files;
    vt_safetensors **files;    // NULL for a manifest store
    char **file_labels;        // basenames
    int n;
    w_entry *e;                // in file order
    char **keys_owned;         // manifest keys
    int *ht;                   // open-addressing index into e (-1 empty)
    size_t ht_cap;             // power of two
    int manifest, random_init;
    uint64_t seed;
    int collect;
    char **problems;
    int n_problems, cap_problems;
    int n_kind[W_NKINDS];
};

// ---- helpers --------------------------------------------------------------------------------
static uint64_t w_hash_str(const char *s) {  // FNV-1a
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

static const char *w_basename(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static vt_err w_build_index(vt_weights *w) {
    size_t cap = 16;
    while (cap < 2 * (size_t)w->n + 1) cap *= 2;
    w->ht = malloc(cap * sizeof *w->ht);
    if (!w->ht) return vt_error(VT_ERR_OOM, "%s: out of memory for the key index", w->label);
    w->ht_cap = cap;
    for (size_t i = 0; i < cap; i++) w->ht[i] = -1;
    for (int i = 0; i < w->n; i++) {
        size_t h = (size_t)w_hash_str(w->e[i].key) & (cap - 1);
        while (w->ht[h] >= 0) {
            const w_entry *o = &w->e[w->ht[h]];
            if (strcmp(o->key, w->e[i].key) == 0)
                return vt_error(VT_ERR_KEY, "key %s is in both %s and %s", w->e[i].key, w->file_labels[o->file],
                                w->file_labels[w->e[i].file]);
            h = (h + 1) & (cap - 1);
        }
        w->ht[h] = i;
    }
    return VT_OK;
}

static w_entry *w_find(const vt_weights *w, const char *key) {
    if (!w->ht) return NULL;
    size_t h = (size_t)w_hash_str(key) & (w->ht_cap - 1);
    while (w->ht[h] >= 0) {
        w_entry *e = &w->e[w->ht[h]];
        if (strcmp(e->key, key) == 0) return e;
        h = (h + 1) & (w->ht_cap - 1);
    }
    return NULL;
}

static int w_under(const char *key, const char *prefix) {
    return !prefix || strncmp(key, prefix, strlen(prefix)) == 0;
}

static vt_err w_set_label(vt_weights *w) {
    size_t len = 1;
    for (int i = 0; i < w->n_files; i++) len += strlen(w->file_labels[i]) + 1;
    w->label = malloc(len);
    if (!w->label) return vt_error(VT_ERR_OOM, "out of memory");
    w->label[0] = 0;
    for (int i = 0; i < w->n_files; i++) {
        if (i) strcat(w->label, "+");
        strcat(w->label, w->file_labels[i]);
    }
    return VT_OK;
}

void vt_weights_free(vt_weights *w) {
    if (!w) return;
    for (int i = 0; i < w->n_files; i++) {
        if (w->files) vt_st_close(w->files[i]);
        free(w->file_labels[i]);
    }
    free(w->files);
    free(w->file_labels);
    if (w->keys_owned)
        for (int i = 0; i < w->n; i++) free(w->keys_owned[i]);
    free(w->keys_owned);
    free(w->e);
    free(w->ht);
    for (int i = 0; i < w->n_problems; i++) free(w->problems[i]);
    free(w->problems);
    free(w->label);
    free(w);
}

// ---- opening --------------------------------------------------------------------------------
vt_weights *vt_weights_open(const char *const *paths, int n_paths) {
    if (!paths || n_paths < 1) {
        vt_error(VT_ERR_ARG, "vt_weights_open: no files given");
        return NULL;
    }
    vt_weights *w = calloc(1, sizeof *w);
    if (!w || !(w->files = calloc((size_t)n_paths, sizeof *w->files)) ||
        !(w->file_labels = calloc((size_t)n_paths, sizeof *w->file_labels))) {
        vt_weights_free(w);
        vt_error(VT_ERR_OOM, "out of memory opening weights");
        return NULL;
    }
    int total = 0;
    for (int i = 0; i < n_paths; i++) {
        if (!paths[i]) {
            vt_error(VT_ERR_ARG, "vt_weights_open: path %d is NULL", i);
            vt_weights_free(w);
            return NULL;
        }
        w->files[i] = vt_st_open(paths[i]);
        w->file_labels[i] = strdup(w_basename(paths[i]));
        w->n_files = i + 1;
        if (!w->files[i] || !w->file_labels[i]) {
            if (w->files[i]) vt_error(VT_ERR_OOM, "out of memory");
            vt_weights_free(w);
            return NULL;
        }
        total += w->files[i]->n;
    }
    w->e = calloc((size_t)total + 1, sizeof *w->e);
    if (!w->e || w_set_label(w) != VT_OK) {
        vt_error(VT_ERR_OOM, "out of memory opening weights");
        vt_weights_free(w);
        return NULL;
    }
    for (int i = 0; i < n_paths; i++)
        for (int j = 0; j < w->files[i]->n; j++) {
            const vt_st_entry *s = &w->files[i]->entries[j];
            w_entry *e = &w->e[w->n++];
            e->key = s->name;
            e->file = i;
            e->st = s;
            e->ndim = s->ndim;
            memcpy(e->shape, s->shape, sizeof e->shape);
        }
    if (w_build_index(w) != VT_OK) {
        vt_weights_free(w);
        return NULL;
    }
    return w;
}

vt_weights *vt_weights_open1(const char *path) { return vt_weights_open(&path, 1); }

// One manifest line "KEY\t[d0, d1]\tDTYPE" into e (key strdup'ed). 0 + error on a bad line.
static vt_err w_parse_manifest_line(const char *path, int lineno, char *line, w_entry *e, char **key_out) {
    char *t1 = strchr(line, '\t');
    char *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
    if (!t1 || !t2 || t1 == line)
        return vt_error(VT_ERR_FORMAT, "%s:%d: expected KEY<TAB>[shape]<TAB>dtype", path, lineno);
    *t1 = 0;
    *t2 = 0;
    const char *dt = t2 + 1;
    if (strcmp(dt, "float32") && strcmp(dt, "float16") && strcmp(dt, "bfloat16") && strcmp(dt, "int64"))
        return vt_error(VT_ERR_FORMAT, "%s:%d: key %s: unknown dtype '%s'", path, lineno, line, dt);
    const char *s = t1 + 1;
    if (*s++ != '[') return vt_error(VT_ERR_FORMAT, "%s:%d: key %s: shape must start with '['", path, lineno, line);
    int nd = 0;
    while (*s == ' ') s++;
    if (*s != ']') {
        for (;;) {
            if (nd == VT_MAX_DIMS)
                return vt_error(VT_ERR_FORMAT, "%s:%d: key %s: more than %d dims", path, lineno, line, VT_MAX_DIMS);
            char *end;
            errno = 0;
            long long v = strtoll(s, &end, 10);
            if (end == s || v < 0 || errno)
                return vt_error(VT_ERR_FORMAT, "%s:%d: key %s: bad dimension in shape", path, lineno, line);
            e->shape[nd++] = v;
            s = end;
            while (*s == ' ') s++;
            if (*s == ']') break;
            if (*s++ != ',') return vt_error(VT_ERR_FORMAT, "%s:%d: key %s: bad shape", path, lineno, line);
            while (*s == ' ') s++;
        }
    }
    if (s[1] != 0) return vt_error(VT_ERR_FORMAT, "%s:%d: key %s: text after the shape", path, lineno, line);
    e->ndim = nd;
    *key_out = strdup(line);
    if (!*key_out) return vt_error(VT_ERR_OOM, "out of memory");
    e->key = *key_out;
    return VT_OK;
}

vt_weights *vt_weights_from_manifest(const char *manifest_path, int random_init, uint64_t seed) {
    if (!manifest_path) {
        vt_error(VT_ERR_ARG, "vt_weights_from_manifest: NULL path");
        return NULL;
    }
    FILE *fp = fopen(manifest_path, "r");
    if (!fp) {
        vt_error(VT_ERR_IO, "%s: cannot open: %s", manifest_path, strerror(errno));
        return NULL;
    }
    vt_weights *w = calloc(1, sizeof *w);
    if (!w || !(w->file_labels = calloc(1, sizeof *w->file_labels)) ||
        !(w->file_labels[0] = strdup(w_basename(manifest_path)))) {
        fclose(fp);
        vt_weights_free(w);
        vt_error(VT_ERR_OOM, "out of memory");
        return NULL;
    }
    w->n_files = 1;
    w->manifest = 1;
    w->random_init = random_init;
    w->seed = seed;
    int cap = 0, lineno = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    vt_err err = w_set_label(w);
    while (err == VT_OK && (len = getline(&line, &lcap, fp)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        const char *q = line;
        while (*q == ' ') q++;
        if (*q == 0 || *q == '#') continue;
        if (w->n == cap) {
            cap = cap ? 2 * cap : 256;
            w_entry *ne = realloc(w->e, (size_t)cap * sizeof *ne);
            char **nk = ne ? realloc(w->keys_owned, (size_t)cap * sizeof *nk) : NULL;
            if (ne) w->e = ne;
            if (nk) w->keys_owned = nk;
            if (!ne || !nk) {
                err = vt_error(VT_ERR_OOM, "%s: out of memory", manifest_path);
                break;
            }
        }
        w_entry *e = &w->e[w->n];
        memset(e, 0, sizeof *e);
        w->keys_owned[w->n] = NULL;
        err = w_parse_manifest_line(manifest_path, lineno, line, e, &w->keys_owned[w->n]);
        if (err == VT_OK) w->n++;
    }
    free(line);
    if (err == VT_OK && ferror(fp)) err = vt_error(VT_ERR_IO, "%s: read error", manifest_path);
    fclose(fp);
    if (err == VT_OK) err = w_build_index(w);
    if (err != VT_OK) {
        vt_weights_free(w);
        return NULL;
    }
    return w;
}

// ---- problems -------------------------------------------------------------------------------
static void w_record(vt_weights *w, w_kind kind, const char *msg) {
    w->n_kind[kind]++;
    if (w->n_problems == w->cap_problems) {
        int cap = w->cap_problems ? 2 * w->cap_problems : 16;
        char **np = realloc(w->problems, (size_t)cap * sizeof *np);
        if (!np) return;  // the count above still reports it
        w->problems = np;
        w->cap_problems = cap;
    }
    char *m = strdup(msg);
    if (m) w->problems[w->n_problems++] = m;
}

// Strict: sets VT_ERR_KEY and returns NULL. Collect: records the problem and returns zeros of
// the asked shape so building goes on.
static vt_tensor *w_problem(vt_weights *w, w_kind kind, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static vt_tensor *w_problem(vt_weights *w, w_kind kind, int ndim, const int64_t *shape, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!w->collect || !shape) {
        if (w->collect) w_record(w, kind, msg);
        vt_error(VT_ERR_KEY, "%s", msg);
        return NULL;
    }
    w_record(w, kind, msg);
    return vt_zeros(VT_F32, VT_CPU, ndim, shape);
}

// ---- loading --------------------------------------------------------------------------------
// Deterministic small values of a manifest key: element i of key k is a function of
// (seed, hash(k), i) only, so any subset of a model gets the same weights in any order.
// Irwin-Hall sum of four 16-bit uniforms: mean 0, std 1, cheap (no libm), bounded by +-3.5.
static void w_fill_random(vt_tensor *t, const char *key, uint64_t seed) {
    uint64_t ks = seed ^ w_hash_str(key);
    size_t kl = strlen(key);
    int is_norm_scale = t->ndim == 1 && kl > 7 && strcmp(key + kl - 7, ".weight") == 0 &&
                        (strstr(key, "norm") || strstr(key, "ln_"));
    float mean = is_norm_scale ? 1.0f : 0.0f, std = 0.02f;
    float *p = vt_f32(t);
    const float k = 1.7320508f / 65536.0f;
    int64_t n = t->numel;
#pragma omp parallel for if (n > (1 << 16)) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        uint64_t h = vt_hash64(ks, (uint64_t)i);
        uint32_t s = (uint32_t)(h & 0xffff) + (uint32_t)((h >> 16) & 0xffff) + (uint32_t)((h >> 32) & 0xffff) +
                     (uint32_t)(h >> 48);
        p[i] = mean + std * (((float)s - 131070.0f) * k);
    }
}

static vt_tensor *w_load(vt_weights *w, const w_entry *e) {
    if (w->manifest) {
        vt_tensor *t = vt_zeros(VT_F32, VT_CPU, e->ndim, e->shape);
        if (!t) {
            vt_error_context("%s: key %s: ", w->file_labels[e->file], e->key);
            return NULL;
        }
        if (w->random_init) w_fill_random(t, e->key, w->seed);
        return t;
    }
    vt_tensor *t = vt_st_tensor(w->files[e->file], e->st);
    if (t && t->dtype != VT_F32) {
        vt_tensor *c = vt_to_dtype(t, VT_F32);
        vt_release(t);
        t = c;
    }
    if (!t) vt_error_context("%s: key %s: ", w->file_labels[e->file], e->key);
    return t;
}

vt_tensor *vt_weights_get(vt_weights *w, const char *key, int ndim, const int64_t *shape) {
    if (!w || !key || ndim < 0 || ndim > VT_MAX_DIMS || (ndim > 0 && !shape)) {
        vt_error(VT_ERR_ARG, "vt_weights_get: bad arguments (key %s, %d dims)", key ? key : "(null)", ndim);
        return NULL;
    }
    static const int64_t no_dims[1] = {0};
    if (!shape) shape = no_dims;
    char want[VT_SHAPE_BUF], have[VT_SHAPE_BUF];
    w_entry *e = w_find(w, key);
    if (!e)
        return w_problem(w, W_MISSING, ndim, shape, "%s: missing key %s (expected shape %s)", w->label, key,
                         vt_shape_str_raw(ndim, shape, want, sizeof want));
    e->used = 1;
    int same = e->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = e->shape[i] == shape[i];
    if (!same)
        return w_problem(w, W_SHAPE, ndim, shape, "%s: key %s: expected shape %s, file has %s",
                         w->file_labels[e->file], key, vt_shape_str_raw(ndim, shape, want, sizeof want),
                         vt_shape_str_raw(e->ndim, e->shape, have, sizeof have));
    return w_load(w, e);
}

vt_tensor *vt_weights_get_any(vt_weights *w, const char *key) {
    if (!w || !key) {
        vt_error(VT_ERR_ARG, "vt_weights_get_any: NULL store or key");
        return NULL;
    }
    w_entry *e = w_find(w, key);
    if (!e) return w_problem(w, W_MISSING, 0, NULL, "%s: missing key %s", w->label, key);
    e->used = 1;
    return w_load(w, e);
}

int vt_weights_has(const vt_weights *w, const char *key) { return w && key && w_find(w, key) != NULL; }

int vt_weights_shape(const vt_weights *w, const char *key, int *ndim, int64_t *shape) {
    const w_entry *e = w && key ? w_find(w, key) : NULL;
    if (!e) return 0;
    if (ndim) *ndim = e->ndim;
    if (shape)
        for (int i = 0; i < e->ndim; i++) shape[i] = e->shape[i];
    return 1;
}

int vt_weights_ndim_at(const vt_weights *w, const char *prefix, const char *name, int64_t *shape) {
    char key[512];
    int nd = 0;
    snprintf(key, sizeof key, "%s%s", prefix ? prefix : "", name);
    return vt_weights_shape(w, key, &nd, shape) ? nd : -1;
}

int vt_weights_count_indexed(const vt_weights *w, const char *prefix, const char *before, const char *after) {
    char key[512];
    for (int n = 0;; n++) {
        snprintf(key, sizeof key, "%s%s%d%s", prefix ? prefix : "", before, n, after);
        if (!vt_weights_has(w, key)) return n;
    }
}

void vt_weights_mark_used(vt_weights *w, const char *key) {
    w_entry *e = w && key ? w_find(w, key) : NULL;
    if (e) e->used = 1;
}

void vt_weights_collect_errors(vt_weights *w, int on) {
    if (w) w->collect = on;
}

vt_err vt_weights_finish(vt_weights *w, const char *prefix) {
    if (!w) return vt_error(VT_ERR_ARG, "vt_weights_finish: NULL store");
    if (!prefix) prefix = "";
    int n_unused = 0;
    for (int i = 0; i < w->n; i++)
        if (!w->e[i].used && w_under(w->e[i].key, prefix)) n_unused++;
    int n_rec = 0;
    for (int k = 0; k < W_NKINDS; k++) n_rec += w->n_kind[k];
    int total = n_rec + n_unused;
    if (total == 0) return VT_OK;

    // The counts come first so they survive if the error buffer cuts the list.
    size_t cap = 512 + (size_t)W_MAX_LISTED * 320, len = 0;
    char *msg = malloc(cap);
    if (!msg) return vt_error(VT_ERR_KEY, "%s: %d weight problems (out of memory listing them)", w->label, total);
#define W_APPEND(...)                                                                   \
    do {                                                                                \
        if (len < cap) {                                                                \
            int k_ = snprintf(msg + len, cap - len, __VA_ARGS__);                       \
            len = k_ < 0 ? cap : (len + (size_t)k_ < cap ? len + (size_t)k_ : cap - 1); \
        }                                                                               \
    } while (0)
    W_APPEND("%s: %d weight problem%s (%d missing, %d mis-shaped, %d never used%s%s)", w->label, total,
             total == 1 ? "" : "s", w->n_kind[W_MISSING], w->n_kind[W_SHAPE], n_unused, *prefix ? " under " : "",
             prefix);
    int listed = 0;
    for (int i = 0; i < w->n_problems && listed < W_MAX_LISTED; i++, listed++) W_APPEND("\n  %s", w->problems[i]);
    for (int i = 0; i < w->n && listed < W_MAX_LISTED; i++) {
        const w_entry *e = &w->e[i];
        if (e->used || !w_under(e->key, prefix)) continue;
        char b[VT_SHAPE_BUF];
        W_APPEND("\n  %s: unexpected key %s %s (never used)", w->file_labels[e->file], e->key,
                 vt_shape_str_raw(e->ndim, e->shape, b, sizeof b));
        listed++;
    }
    if (total > listed) W_APPEND("\n  ... and %d more", total - listed);
#undef W_APPEND
    vt_error(VT_ERR_KEY, "%s", msg);
    free(msg);
    for (int i = 0; i < w->n_problems; i++) free(w->problems[i]);
    w->n_problems = 0;
    memset(w->n_kind, 0, sizeof w->n_kind);
    return VT_ERR_KEY;
}

int64_t vt_weights_count_params(const vt_weights *w, const char *prefix) {
    if (!w) return 0;
    int64_t s = 0;
    for (int i = 0; i < w->n; i++)
        if (w_under(w->e[i].key, prefix)) s += vt_dim_prod(w->e[i].ndim, w->e[i].shape);
    return s;
}

int vt_weights_n_keys(const vt_weights *w) { return w ? w->n : 0; }

const char *vt_weights_key(const vt_weights *w, int i) { return w && i >= 0 && i < w->n ? w->e[i].key : NULL; }
