// param_list.h — what the VAE decoder and OpenCLIP builders share: asking the weight store for
// PREFIX+NAME with an exact shape and remembering every tensor (to count and free them).
// Internal to core/models (static inline: no symbols of its own).
#pragma once
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include "../weights.h"

typedef struct vt_param_list {
    vt_tensor ***list;  // points at the owner's array pointer
    int *n, *cap;
    int64_t *n_params;
    vt_weights *w;
    const char *prefix;
    int failed;
} vt_param_list;

// PREFIX + name with shape (ndim, shape); NULL (error set, naming the key) if missing or
// mis-shaped. The tensor is owned by the list.
static inline vt_tensor *vt_param_get(vt_param_list *pl, const char *name, int ndim, const int64_t *shape) {
    if (pl->failed) return NULL;
    char key[512];
    snprintf(key, sizeof key, "%s%s", pl->prefix, name);
    vt_tensor *t = vt_weights_get(pl->w, key, ndim, shape);
    if (!t) {
        pl->failed = 1;
        return NULL;
    }
    if (*pl->n == *pl->cap) {
        int cap = *pl->cap ? 2 * *pl->cap : 64;
        vt_tensor **nl = (vt_tensor **)realloc(*pl->list, (size_t)cap * sizeof *nl);
        if (!nl) {
            vt_release(t);
            pl->failed = 1;
            vt_error(VT_ERR_OOM, "model build: out of host memory at %s", key);
            return NULL;
        }
        *pl->list = nl;
        *pl->cap = cap;
    }
    (*pl->list)[(*pl->n)++] = t;
    *pl->n_params += t->numel;
    return t;
}

// printf-style name
static inline vt_tensor *vt_param_getf(vt_param_list *pl, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static inline vt_tensor *vt_param_getf(vt_param_list *pl, int ndim, const int64_t *shape, const char *fmt, ...) {
    char name[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return vt_param_get(pl, name, ndim, shape);
}

static inline void vt_param_list_free(vt_tensor **list, int n) {
    for (int i = 0; i < n; i++) vt_release(list[i]);
    free(list);
}
