// safetensors.c — reading (mmap + validated cJSON header) and atomic writing of .safetensors
// files (see safetensors.h). Format: 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__":
// {str: str}}, then the data section; offsets are relative to the data section.
#include "safetensors.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; vader assumes a little-endian host"
#endif

// A header is a few hundred bytes per tensor; 100 MB is far beyond any real checkpoint and
// keeps a corrupt length from making us parse (or allocate for) gigabytes.
#define ST_MAX_HEADER ((uint64_t)100 * 1024 * 1024)
// Integers in the header arrive as JSON numbers (doubles): above 2^53 they are not exact.
#define ST_MAX_INT 9007199254740992.0

// ---- dtype names ---------------------------------------------------------------------------
static const char *st_dtype_str(vt_dtype dt) {
    switch (dt) {
    case VT_F32: return "F32";
    case VT_BF16: return "BF16";
    case VT_F16: return "F16";
    case VT_I64: return "I64";
    }
    return NULL;
}

static int st_dtype_parse(const char *s, vt_dtype *dt) {
    static const struct { const char *name; vt_dtype dt; } k[] = {
        {"F32", VT_F32}, {"BF16", VT_BF16}, {"F16", VT_F16}, {"I64", VT_I64}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (strcmp(s, k[i].name) == 0) {
            *dt = k[i].dt;
            return 1;
        }
    return 0;
}

// ---- reader --------------------------------------------------------------------------------
static void st_free_fields(vt_safetensors *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) free(f->entries[i].name);
    free(f->entries);
    free(f->by_name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->metadata_json);
    free(f->path);
}

void vt_st_close(vt_safetensors *f) {
    if (!f) return;
    vt_mmap_release(f->map);
    st_free_fields(f);
    free(f);
}

// Non-negative integral JSON number below 2^53 into *out.
static int st_json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double v = j->valuedouble;
    if (!isfinite(v) || v < 0 || v >= ST_MAX_INT || v != floor(v)) return 0;
    *out = (uint64_t)v;
    return 1;
}

// qsort has no context argument and the reader may run on several threads: a small merge
// sort on index arrays instead.
typedef int (*st_cmp_fn)(const vt_st_entry *e, int a, int b);
static int st_cmp_name_e(const vt_st_entry *e, int a, int b) { return strcmp(e[a].name, e[b].name); }
static int st_cmp_begin_e(const vt_st_entry *e, int a, int b) {
    if (e[a].begin != e[b].begin) return e[a].begin < e[b].begin ? -1 : 1;
    if (e[a].end != e[b].end) return e[a].end < e[b].end ? -1 : 1;
    return 0;
}
static void st_msort(const vt_st_entry *e, int *idx, int *tmp, int n, st_cmp_fn cmp) {
    if (n < 2) return;
    int h = n / 2;
    st_msort(e, idx, tmp, h, cmp);
    st_msort(e, idx + h, tmp, n - h, cmp);
    int i = 0, j = h, k = 0;
    while (i < h && j < n) tmp[k++] = cmp(e, idx[j], idx[i]) < 0 ? idx[j++] : idx[i++];
    while (i < h) tmp[k++] = idx[i++];
    while (j < n) tmp[k++] = idx[j++];
    memcpy(idx, tmp, (size_t)n * sizeof *idx);
}

static vt_err st_parse_metadata(vt_safetensors *f, const cJSON *meta) {
    if (!cJSON_IsObject(meta))
        return vt_error(VT_ERR_FORMAT, "%s: \"__metadata__\" is not a JSON object", f->path);
    int n = cJSON_GetArraySize(meta);
    f->meta_keys = calloc((size_t)n + 1, sizeof *f->meta_keys);
    f->meta_vals = calloc((size_t)n + 1, sizeof *f->meta_vals);
    if (!f->meta_keys || !f->meta_vals) return vt_error(VT_ERR_OOM, "%s: out of memory for metadata", f->path);
    for (const cJSON *m = meta->child; m; m = m->next) {
        if (!cJSON_IsString(m))
            return vt_error(VT_ERR_FORMAT, "%s: metadata value of '%s' is not a string", f->path, m->string);
        f->meta_keys[f->n_meta] = strdup(m->string);
        f->meta_vals[f->n_meta] = strdup(m->valuestring);
        f->n_meta++;
        if (!f->meta_keys[f->n_meta - 1] || !f->meta_vals[f->n_meta - 1])
            return vt_error(VT_ERR_OOM, "%s: out of memory for metadata", f->path);
    }
    f->metadata_json = cJSON_PrintUnformatted(meta);
    if (!f->metadata_json) return vt_error(VT_ERR_OOM, "%s: out of memory for metadata", f->path);
    return VT_OK;
}

static vt_err st_parse_entry(vt_safetensors *f, const cJSON *j, vt_st_entry *e, uint64_t data_size) {
    const char *p = f->path, *name = j->string;
    if (!cJSON_IsObject(j)) return vt_error(VT_ERR_FORMAT, "%s: tensor '%s': entry is not a JSON object", p, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(j, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
    if (!cJSON_IsString(dt)) return vt_error(VT_ERR_FORMAT, "%s: tensor '%s': no \"dtype\" string", p, name);
    if (!st_dtype_parse(dt->valuestring, &e->dtype))
        return vt_error(VT_ERR_DTYPE, "%s: tensor '%s': dtype %.32s is not supported (vader reads F32, BF16, F16, I64)",
                        p, name, dt->valuestring);
    if (!cJSON_IsArray(sh)) return vt_error(VT_ERR_FORMAT, "%s: tensor '%s': no \"shape\" array", p, name);
    int nd = cJSON_GetArraySize(sh);
    if (nd > VT_MAX_DIMS)
        return vt_error(VT_ERR_FORMAT, "%s: tensor '%s': %d dims (vader supports at most %d)", p, name, nd, VT_MAX_DIMS);
    e->ndim = nd;
    uint64_t numel = 1;
    int overflow = 0, has_zero = 0;
    int d = 0;
    for (const cJSON *x = sh->child; x; x = x->next, d++) {
        uint64_t v;
        if (!st_json_uint(x, &v))
            return vt_error(VT_ERR_FORMAT, "%s: tensor '%s': shape entry %d is not a non-negative integer", p, name, d);
        e->shape[d] = (int64_t)v;
        if (v == 0) has_zero = 1;
        if (__builtin_mul_overflow(numel, v, &numel)) overflow = 1;
    }
    uint64_t nbytes = 0;
    if (has_zero) overflow = 0, numel = 0;  // an empty dim makes the whole tensor empty
    if (overflow || __builtin_mul_overflow(numel, (uint64_t)vt_dtype_size(e->dtype), &nbytes)) {
        char b[VT_SHAPE_BUF];
        return vt_error(VT_ERR_FORMAT, "%s: tensor '%s': shape %s is too large", p, name,
                        vt_shape_str_raw(nd, e->shape, b, sizeof b));
    }
    uint64_t be[2];
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !st_json_uint(off->child, &be[0]) ||
        !st_json_uint(off->child->next, &be[1]))
        return vt_error(VT_ERR_FORMAT, "%s: tensor '%s': \"data_offsets\" is not a pair of non-negative integers", p, name);
    if (be[0] > be[1] || be[1] > data_size)
        return vt_error(VT_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] outside the data section of %llu bytes",
                        p, name, (unsigned long long)be[0], (unsigned long long)be[1], (unsigned long long)data_size);
    if (be[1] - be[0] != nbytes) {
        char b[VT_SHAPE_BUF];
        return vt_error(VT_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] span %llu bytes but %s %s needs %llu",
                        p, name, (unsigned long long)be[0], (unsigned long long)be[1],
                        (unsigned long long)(be[1] - be[0]), dt->valuestring,
                        vt_shape_str_raw(nd, e->shape, b, sizeof b), (unsigned long long)nbytes);
    }
    e->begin = (size_t)be[0];
    e->end = (size_t)be[1];
    e->name = strdup(name);
    if (!e->name) return vt_error(VT_ERR_OOM, "%s: out of memory", p);
    return VT_OK;
}

// Validates the header at data[0..size) (the whole file) into f. f->path is set.
static vt_err st_parse(vt_safetensors *f, const unsigned char *data, size_t size) {
    const char *p = f->path;
    if (size < 8)
        return vt_error(VT_ERR_FORMAT, "%s: %zu bytes is too short for a safetensors file (8-byte header length missing)",
                        p, size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | data[i];
    if (hlen > ST_MAX_HEADER)
        return vt_error(VT_ERR_FORMAT, "%s: header length %llu exceeds the %llu-byte limit (corrupt or not safetensors)",
                        p, (unsigned long long)hlen, (unsigned long long)ST_MAX_HEADER);
    if (hlen > size - 8)
        return vt_error(VT_ERR_FORMAT, "%s: header length %llu runs past the end of the file (%zu bytes): truncated?",
                        p, (unsigned long long)hlen, size);
    if (hlen < 2) return vt_error(VT_ERR_FORMAT, "%s: header of %llu bytes cannot hold a JSON object", p, (unsigned long long)hlen);
    f->data_start = 8 + (size_t)hlen;
    uint64_t data_size = size - f->data_start;

    const char *hdr = (const char *)data + 8, *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
    if (!root) {
        size_t at = end && end >= hdr ? (size_t)(end - hdr) : 0;
        return vt_error(VT_ERR_FORMAT, "%s: header is not valid JSON (near byte %zu of %llu)", p, at,
                        (unsigned long long)hlen);
    }
    vt_err err = VT_OK;
    // Only whitespace (the writer's padding) may follow the JSON value.
    for (const char *q = end; q && q < hdr + hlen; q++)
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r' && *q != 0) {
            err = vt_error(VT_ERR_FORMAT, "%s: trailing bytes after the JSON header (at byte %zu)", p, (size_t)(q - hdr));
            goto done;
        }
    if (!cJSON_IsObject(root)) {
        err = vt_error(VT_ERR_FORMAT, "%s: header is not a JSON object", p);
        goto done;
    }
    int n = 0;
    for (const cJSON *j = root->child; j; j = j->next)
        if (strcmp(j->string, "__metadata__") != 0) n++;
    f->entries = calloc((size_t)n + 1, sizeof *f->entries);
    f->by_name = calloc((size_t)n + 1, sizeof *f->by_name);
    int *tmp = calloc((size_t)n + 1, sizeof *tmp);
    int *by_begin = calloc((size_t)n + 1, sizeof *by_begin);
    if (!f->entries || !f->by_name || !tmp || !by_begin) {
        free(tmp);
        free(by_begin);
        err = vt_error(VT_ERR_OOM, "%s: out of memory for %d tensor entries", p, n);
        goto done;
    }
    int seen_meta = 0;
    for (const cJSON *j = root->child; j; j = j->next) {
        if (strcmp(j->string, "__metadata__") == 0) {
            if (seen_meta++) {
                err = vt_error(VT_ERR_FORMAT, "%s: \"__metadata__\" appears twice", p);
                break;
            }
            if ((err = st_parse_metadata(f, j)) != VT_OK) break;
            continue;
        }
        if ((err = st_parse_entry(f, j, &f->entries[f->n], data_size)) != VT_OK) break;
        f->by_name[f->n] = f->n;
        by_begin[f->n] = f->n;
        f->n++;
    }
    if (err == VT_OK) {
        st_msort(f->entries, f->by_name, tmp, f->n, st_cmp_name_e);
        for (int i = 1; i < f->n && err == VT_OK; i++)
            if (strcmp(f->entries[f->by_name[i - 1]].name, f->entries[f->by_name[i]].name) == 0)
                err = vt_error(VT_ERR_FORMAT, "%s: tensor '%s' appears twice in the header", p,
                               f->entries[f->by_name[i]].name);
    }
    if (err == VT_OK) {
        // Sorted by (begin, end), any overlap shows between neighbours among non-empty tensors.
        st_msort(f->entries, by_begin, tmp, f->n, st_cmp_begin_e);
        const vt_st_entry *prev = NULL;
        for (int i = 0; i < f->n && err == VT_OK; i++) {
            const vt_st_entry *e = &f->entries[by_begin[i]];
            if (e->begin == e->end) continue;
            if (prev && prev->end > e->begin)
                err = vt_error(VT_ERR_FORMAT, "%s: tensors '%s' [%zu, %zu] and '%s' [%zu, %zu] overlap", p, prev->name,
                               prev->begin, prev->end, e->name, e->begin, e->end);
            prev = e;
        }
    }
    free(tmp);
    free(by_begin);
done:
    cJSON_Delete(root);
    return err;
}

vt_safetensors *vt_st_open(const char *path) {
    if (!path) {
        vt_error(VT_ERR_ARG, "vt_st_open: NULL path");
        return NULL;
    }
    vt_mmap *m = vt_mmap_open(path);
    if (!m) return NULL;
    vt_safetensors *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        vt_mmap_release(m);
        vt_error(VT_ERR_OOM, "%s: out of memory", path);
        return NULL;
    }
    f->map = m;
    if (st_parse(f, m->data, m->size) != VT_OK) {
        vt_st_close(f);
        return NULL;
    }
    return f;
}

vt_safetensors *vt_st_parse_buffer(const void *data, size_t size, const char *label) {
    vt_safetensors *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(label ? label : "<buffer>"))) {
        free(f);
        vt_error(VT_ERR_OOM, "out of memory");
        return NULL;
    }
    if (st_parse(f, data, size) != VT_OK) {
        vt_st_close(f);
        return NULL;
    }
    return f;
}

const vt_st_entry *vt_st_find(const vt_safetensors *f, const char *name) {
    if (!f || !name) return NULL;
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const vt_st_entry *e = &f->entries[f->by_name[mid]];
        int c = strcmp(name, e->name);
        if (c == 0) return e;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

static void st_release_map(void *owner) { vt_mmap_release(owner); }

vt_tensor *vt_st_tensor(vt_safetensors *f, const vt_st_entry *e) {
    if (!f || !e) {
        vt_error(VT_ERR_ARG, "vt_st_tensor: NULL file or entry");
        return NULL;
    }
    if (!f->map) {
        vt_error(VT_ERR_ARG, "%s: tensor '%s': no mapping (header-only parse)", f->path, e->name);
        return NULL;
    }
    size_t nbytes = e->end - e->begin;
    char *src = (char *)f->map->data + f->data_start + e->begin;
    // Files from other writers may leave data unaligned for its dtype: copy those instead of
    // handing out misaligned float pointers.
    if ((uintptr_t)src % vt_dtype_size(e->dtype) != 0) {
        vt_tensor *t = vt_empty(e->dtype, VT_CPU, e->ndim, e->shape);
        if (!t) {
            vt_error_context("%s: tensor '%s': ", f->path, e->name);
            return NULL;
        }
        memcpy(vt_data(t), src, nbytes);
        return t;
    }
    vt_mmap_retain(f->map);
    vt_storage *s = vt_storage_borrow(VT_CPU, src, nbytes, f->map, st_release_map);
    if (!s) {
        vt_mmap_release(f->map);
        vt_error_context("%s: tensor '%s': ", f->path, e->name);
        return NULL;
    }
    vt_tensor *t = vt_view_storage(s, 0, e->dtype, e->ndim, e->shape);
    vt_storage_release(s);
    if (!t) vt_error_context("%s: tensor '%s': ", f->path, e->name);
    return t;
}

vt_tensor *vt_st_get(vt_safetensors *f, const char *name) {
    const vt_st_entry *e = vt_st_find(f, name);
    if (!e) {
        vt_error(VT_ERR_KEY, "%s: no tensor '%s'", f ? f->path : "(null)", name ? name : "(null)");
        return NULL;
    }
    return vt_st_tensor(f, e);
}

const char *vt_st_metadata(const vt_safetensors *f, const char *key) {
    if (!f || !key) return NULL;
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_vals[i];
    return NULL;
}

// ---- writer --------------------------------------------------------------------------------
typedef struct st_buf {
    char *p;
    size_t n, cap;
    int oom;
} st_buf;

static void sb_put(st_buf *b, const char *s, size_t k) {
    if (b->oom) return;
    if (b->n + k + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + k + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, k);
    b->n += k;
    b->p[b->n] = 0;
}
static void sb_str(st_buf *b, const char *s) { sb_put(b, s, strlen(s)); }
static void sb_fmt(st_buf *b, const char *fmt, unsigned long long v) {
    char tmp[32];
    int k = snprintf(tmp, sizeof tmp, fmt, v);
    sb_put(b, tmp, (size_t)k);
}
// A JSON string literal (names are arbitrary bytes; UTF-8 passes through unchanged).
static void sb_json_str(st_buf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *q = (const unsigned char *)s; *q; q++) {
        if (*q == '"' || *q == '\\') {
            char esc[2] = {'\\', (char)*q};
            sb_put(b, esc, 2);
        } else if (*q < 0x20) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\u%04x", *q);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, (const char *)q, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static vt_err st_write_check(const char *path, int n, const char *const *names, vt_tensor *const *tensors, int n_meta,
                             const char *const *meta_keys, const char *const *meta_vals) {
    if (!path || !*path) return vt_error(VT_ERR_ARG, "vt_st_write: empty path");
    if (n < 0 || (n > 0 && (!names || !tensors)) || n_meta < 0 || (n_meta > 0 && (!meta_keys || !meta_vals)))
        return vt_error(VT_ERR_ARG, "%s: vt_st_write: bad tensor or metadata arrays", path);
    for (int i = 0; i < n; i++) {
        if (!names[i] || !tensors[i]) return vt_error(VT_ERR_ARG, "%s: tensor %d has no name or is NULL", path, i);
        if (strcmp(names[i], "__metadata__") == 0)
            return vt_error(VT_ERR_ARG, "%s: \"__metadata__\" is reserved and cannot name a tensor", path);
        if (tensors[i]->device != VT_CPU)
            return vt_error(VT_ERR_DEVICE, "%s: tensor '%s' is on %s (copy it to the cpu first)", path, names[i],
                            vt_device_name(tensors[i]->device));
        if (!st_dtype_str(tensors[i]->dtype))
            return vt_error(VT_ERR_DTYPE, "%s: tensor '%s' has an unknown dtype %d", path, names[i], (int)tensors[i]->dtype);
        for (int j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0)
                return vt_error(VT_ERR_ARG, "%s: tensor name '%s' given twice", path, names[i]);
    }
    for (int i = 0; i < n_meta; i++) {
        if (!meta_keys[i] || !meta_vals[i]) return vt_error(VT_ERR_ARG, "%s: metadata entry %d is NULL", path, i);
        for (int j = 0; j < i; j++)
            if (strcmp(meta_keys[i], meta_keys[j]) == 0)
                return vt_error(VT_ERR_ARG, "%s: metadata key '%s' given twice", path, meta_keys[i]);
    }
    return VT_OK;
}

// fsync of the directory makes the rename itself durable; best effort (some filesystems refuse).
static void st_sync_dir(const char *path) {
    char *copy = strdup(path);
    if (!copy) return;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(copy);
}

vt_err vt_st_write(const char *path, int n, const char *const *names, vt_tensor *const *tensors, int n_meta,
                   const char *const *meta_keys, const char *const *meta_vals) {
    vt_err err = st_write_check(path, n, names, tensors, n_meta, meta_keys, meta_vals);
    if (err != VT_OK) return err;

    // Data goes in order of decreasing dtype size (i64, f32, then 16-bit types), each group in
    // the given order: with the data section 8-byte aligned every tensor is then aligned for
    // its dtype and zero-copy, with no holes (which other readers reject). Header keys keep
    // the given order.
    size_t *offs = calloc((size_t)n + 1, sizeof *offs);
    int *order = calloc((size_t)n + 1, sizeof *order);
    if (!offs || !order) {
        free(offs);
        free(order);
        return vt_error(VT_ERR_OOM, "%s: out of memory", path);
    }
    size_t off = 0;
    int k = 0;
    for (size_t sz = 8; sz >= 1; sz /= 2)
        for (int i = 0; i < n; i++)
            if (vt_dtype_size(tensors[i]->dtype) == sz) {
                order[k++] = i;
                offs[i] = off;
                off += vt_nbytes(tensors[i]);
            }

    st_buf h = {0};
    sb_str(&h, "{");
    if (n_meta > 0) {
        sb_str(&h, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) sb_str(&h, ",");
            sb_json_str(&h, meta_keys[i]);
            sb_str(&h, ":");
            sb_json_str(&h, meta_vals[i]);
        }
        sb_str(&h, "}");
    }
    for (int i = 0; i < n; i++) {
        const vt_tensor *t = tensors[i];
        if (i || n_meta > 0) sb_str(&h, ",");
        sb_json_str(&h, names[i]);
        sb_str(&h, ":{\"dtype\":\"");
        sb_str(&h, st_dtype_str(t->dtype));
        sb_str(&h, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) sb_fmt(&h, d ? ",%llu" : "%llu", (unsigned long long)t->shape[d]);
        sb_fmt(&h, "],\"data_offsets\":[%llu,", offs[i]);
        sb_fmt(&h, "%llu]}", offs[i] + vt_nbytes(t));
    }
    sb_str(&h, "}");
    // Pad with spaces (JSON whitespace) so the data section starts 8-byte aligned.
    while (!h.oom && (8 + h.n) % 8 != 0) sb_str(&h, " ");
    free(offs);
    if (h.oom || k != n) {
        free(h.p);
        free(order);
        return vt_error(VT_ERR_OOM, "%s: out of memory for the header", path);
    }

    size_t plen = strlen(path) + 32;
    char *tmp = malloc(plen);
    if (!tmp) {
        free(h.p);
        free(order);
        return vt_error(VT_ERR_OOM, "%s: out of memory", path);
    }
    snprintf(tmp, plen, "%s.tmp.%ld", path, (long)getpid());
    FILE *fp = fopen(tmp, "wbx");
    if (!fp && errno == EEXIST) {  // a leftover of a crashed run of this pid: ours to replace
        unlink(tmp);
        fp = fopen(tmp, "wbx");
    }
    if (!fp) {
        err = vt_error(VT_ERR_IO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        free(tmp);
        free(h.p);
        free(order);
        return err;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.n >> (8 * i));
    int ok = fwrite(len8, 1, 8, fp) == 8 && fwrite(h.p, 1, h.n, fp) == h.n;
    for (int j = 0; ok && j < n; j++) {
        size_t nb = vt_nbytes(tensors[order[j]]);
        vt_tensor *h = nb ? vt_on_device(tensors[order[j]], VT_CPU) : NULL;  // GPU tensors: a host copy
        if (nb && (!h || fwrite(vt_data(h), 1, nb, fp) != nb)) ok = 0;
        vt_release(h);
    }
    int saved = errno;
    if (ok && fflush(fp) != 0) ok = 0, saved = errno;
    if (ok && fsync(fileno(fp)) != 0) ok = 0, saved = errno;
    if (fclose(fp) != 0 && ok) ok = 0, saved = errno;
    if (ok && rename(tmp, path) != 0) ok = 0, saved = errno;
    if (!ok) {
        err = vt_error(VT_ERR_IO, "%s: write failed: %s", path, strerror(saved));
        unlink(tmp);
    } else {
        st_sync_dir(path);
    }
    free(tmp);
    free(h.p);
    free(order);
    return err;
}
