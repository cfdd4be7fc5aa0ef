// fixture.c — reading a reference case: json + weights + io safetensors (see fixture.h).
#include "fixture.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Fixture json files are a few tens of kB; anything past this is not one.
#define FX_MAX_JSON ((size_t)64 * 1024 * 1024)

static char *fx_path(const char *prefix, const char *suffix) {
    size_t n = strlen(prefix) + strlen(suffix) + 1;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s", prefix, suffix);
    return p;
}

static cJSON *fx_read_json(const char *path) {
    vt_mmap *m = vt_mmap_open(path);
    if (!m) return NULL;
    cJSON *j = NULL;
    if (m->size == 0 || m->size > FX_MAX_JSON) {
        vt_error(VT_ERR_FORMAT, "%s: %zu bytes is not a fixture json", path, m->size);
    } else {
        const char *end = NULL;
        j = cJSON_ParseWithLengthOpts(m->data, m->size, &end, 0);
        if (!j) {
            size_t at = end && end >= (const char *)m->data ? (size_t)(end - (const char *)m->data) : 0;
            vt_error(VT_ERR_FORMAT, "%s: not valid JSON (near byte %zu)", path, at);
        } else if (!cJSON_IsObject(j)) {
            vt_error(VT_ERR_FORMAT, "%s: not a JSON object", path);
            cJSON_Delete(j);
            j = NULL;
        }
    }
    vt_mmap_release(m);
    return j;
}

void vt_fixture_free(vt_fixture *f) {
    if (!f) return;
    cJSON_Delete(f->json);
    vt_weights_free(f->weights);
    vt_st_close(f->io);
    free(f->prefix);
    free(f);
}

vt_fixture *vt_fixture_open(const char *path_prefix) {
    if (!path_prefix || !*path_prefix) {
        vt_error(VT_ERR_ARG, "vt_fixture_open: empty path prefix");
        return NULL;
    }
    vt_fixture *f = calloc(1, sizeof *f);
    char *pj = fx_path(path_prefix, ".json");
    char *pw = fx_path(path_prefix, ".weights.safetensors");
    char *pi = fx_path(path_prefix, ".io.safetensors");
    if (!f || !pj || !pw || !pi || !(f->prefix = strdup(path_prefix))) {
        vt_error(VT_ERR_OOM, "out of memory opening fixture %s", path_prefix);
        goto fail;
    }
    const char *slash = strrchr(f->prefix, '/');
    f->name = slash ? slash + 1 : f->prefix;
    if (!(f->json = fx_read_json(pj)) || !(f->weights = vt_weights_open1(pw)) || !(f->io = vt_st_open(pi))) {
        vt_error_context("fixture %s: ", f->name);
        goto fail;
    }
    free(pj);
    free(pw);
    free(pi);
    return f;
fail:
    free(pj);
    free(pw);
    free(pi);
    vt_fixture_free(f);
    return NULL;
}

// ---- io -----------------------------------------------------------------------------------
int vt_fixture_io_has(const vt_fixture *f, const char *name) { return f && vt_st_find(f->io, name) != NULL; }

vt_tensor *vt_fixture_io_raw(vt_fixture *f, const char *name) {
    if (!f || !name) {
        vt_error(VT_ERR_ARG, "vt_fixture_io: NULL fixture or name");
        return NULL;
    }
    const vt_st_entry *e = vt_st_find(f->io, name);
    if (!e) {
        vt_error(VT_ERR_KEY, "fixture %s: no io tensor '%s' in %s", f->name, name, f->io->path);
        return NULL;
    }
    return vt_st_tensor(f->io, e);
}

vt_tensor *vt_fixture_io(vt_fixture *f, const char *name) {
    vt_tensor *t = vt_fixture_io_raw(f, name);
    if (t && t->dtype != VT_F32) {
        vt_tensor *c = vt_to_dtype(t, VT_F32);
        vt_release(t);
        if (!c) vt_error_context("fixture %s: io tensor '%s': ", f->name, name);
        t = c;
    }
    return t;
}

int vt_fixture_io_names(const vt_fixture *f, const char *prefix, const char ***names) {
    if (names) *names = NULL;
    if (!f) return 0;
    size_t pl = prefix ? strlen(prefix) : 0;
    int n = 0;
    for (int i = 0; i < f->io->n; i++)
        if (strncmp(f->io->entries[i].name, prefix ? prefix : "", pl) == 0) n++;
    if (!names) return n;
    const char **out = calloc((size_t)n + 1, sizeof *out);
    if (!out) {
        vt_error(VT_ERR_OOM, "out of memory");
        return 0;
    }
    int k = 0;
    for (int i = 0; i < f->io->n; i++)
        if (strncmp(f->io->entries[i].name, prefix ? prefix : "", pl) == 0) out[k++] = f->io->entries[i].name;
    *names = out;
    return n;
}

// ---- json ---------------------------------------------------------------------------------
const cJSON *vt_json_path(const cJSON *node, const char *path) {
    if (!node || !path) return NULL;
    while (*path) {
        const cJSON *next = NULL;
        size_t used = 0;
        if (cJSON_IsObject(node)) {
            // Longest key that matches the path up to a '.' or its end (keys may contain dots).
            for (const cJSON *c = node->child; c; c = c->next) {
                size_t k = c->string ? strlen(c->string) : 0;
                if (k > used && strncmp(path, c->string, k) == 0 && (path[k] == 0 || path[k] == '.')) {
                    next = c;
                    used = k;
                }
            }
        } else if (cJSON_IsArray(node)) {
            char *end;
            errno = 0;
            long idx = strtol(path, &end, 10);
            if (end == path || (*end && *end != '.') || idx < 0 || errno) return NULL;
            next = cJSON_GetArrayItem(node, (int)idx);
            used = (size_t)(end - path);
        }
        if (!next) return NULL;
        node = next;
        path += used;
        if (*path == '.') path++;
    }
    return node;
}

const cJSON *vt_fixture_json(const vt_fixture *f, const char *path) { return f ? vt_json_path(f->json, path) : NULL; }

static vt_err fx_json_err(const vt_fixture *f, const char *path, const char *what, const cJSON *j) {
    return vt_error(VT_ERR_CONFIG, "fixture %s: json %s %s", f ? f->name : "(null)", path ? path : "(null)",
                    j ? what : "is absent");
}

static int fx_int(const cJSON *j, int64_t *out) {
    if (cJSON_IsBool(j)) {
        *out = cJSON_IsTrue(j) ? 1 : 0;
        return 1;
    }
    if (!cJSON_IsNumber(j)) return 0;
    double v = j->valuedouble;
    if (!isfinite(v) || v != floor(v) || fabs(v) > 9007199254740992.0) return 0;
    *out = (int64_t)v;
    return 1;
}

vt_err vt_fixture_json_int(const vt_fixture *f, const char *path, int64_t *out) {
    const cJSON *j = vt_fixture_json(f, path);
    int64_t v;
    if (!j || !fx_int(j, &v)) return fx_json_err(f, path, "is not an integer", j);
    *out = v;
    return VT_OK;
}

vt_err vt_fixture_json_double(const vt_fixture *f, const char *path, double *out) {
    const cJSON *j = vt_fixture_json(f, path);
    if (!cJSON_IsNumber(j)) return fx_json_err(f, path, "is not a number", j);
    *out = j->valuedouble;
    return VT_OK;
}

vt_err vt_fixture_json_str(const vt_fixture *f, const char *path, const char **out) {
    const cJSON *j = vt_fixture_json(f, path);
    if (!cJSON_IsString(j)) return fx_json_err(f, path, "is not a string", j);
    *out = j->valuestring;
    return VT_OK;
}

vt_err vt_fixture_json_ints(const vt_fixture *f, const char *path, int64_t *out, int max, int *n) {
    const cJSON *j = vt_fixture_json(f, path);
    if (!cJSON_IsArray(j)) return fx_json_err(f, path, "is not an array", j);
    int k = cJSON_GetArraySize(j);
    if (k > max)
        return vt_error(VT_ERR_CONFIG, "fixture %s: json %s has %d entries (at most %d expected)", f->name, path, k, max);
    int i = 0;
    for (const cJSON *c = j->child; c; c = c->next, i++)
        if (!fx_int(c, &out[i])) return fx_json_err(f, path, "has a non-integer entry", j);
    if (n) *n = k;
    return VT_OK;
}
