// weights.h — the weight store models are built from (stable-diffusion.cpp style: a module
// asks for its tensors by their checkpoint key and the store checks shape and dtype).
//
//  * vt_weights_open: one or more safetensors files; values converted to f32 on load
//    (f16 / bf16 / f32 accepted).
//  * vt_weights_from_manifest: a shape-only store from shared/manifests/*.txt (lines
//    "KEY<TAB>[d0, d1]<TAB>float32", '#' comments): get() returns zero-filled (or, with
//    random_init, deterministic small random) tensors of the manifest's shapes, so the
//    full-size models can be built and checked without the real weights.
//  * Strict checking: every get() marks the key used; vt_weights_check_all_used lists every
//    key that was never asked for; a missing key or a wrong shape is an error naming the key,
//    the file and both shapes. vt_weights_report collects all problems before failing, so one
//    run lists every missing / unexpected / mis-shaped key.
#pragma once
#include "safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vt_weights vt_weights;

vt_weights *vt_weights_open(const char *const *paths, int n_paths);
vt_weights *vt_weights_open1(const char *path);
vt_weights *vt_weights_from_manifest(const char *manifest_path, int random_init, uint64_t seed);
void vt_weights_free(vt_weights *w);

// Tensor for PREFIX+NAME with exactly the given shape, as f32 on the cpu (new reference).
// NULL + VT_ERR_KEY if absent or mis-shaped. In "collect" mode (vt_weights_collect_errors)
// a problem is recorded, a zero tensor of the asked shape is returned, and building goes on.
vt_tensor *vt_weights_get(vt_weights *w, const char *key, int ndim, const int64_t *shape);
// Same without a shape check (for tensors whose shape defines the config), or NULL.
vt_tensor *vt_weights_get_any(vt_weights *w, const char *key);
int vt_weights_has(const vt_weights *w, const char *key);
// Shape of a key without loading it; returns 0 if absent.
int vt_weights_shape(const vt_weights *w, const char *key, int *ndim, int64_t *shape);

// Collect mode: record every problem instead of failing at the first.
void vt_weights_collect_errors(vt_weights *w, int on);
// Ends a model build: fails (VT_ERR_KEY) listing every recorded problem plus every key under
// prefix that was never used (prefix "" = all keys). Clears the record.
vt_err vt_weights_finish(vt_weights *w, const char *prefix);
// Number of keys / parameters in the store (all, or under prefix).
int64_t vt_weights_count_params(const vt_weights *w, const char *prefix);
int vt_weights_n_keys(const vt_weights *w);
const char *vt_weights_key(const vt_weights *w, int i);

#ifdef __cplusplus
}
#endif
