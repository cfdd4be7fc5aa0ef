// weights.h — the weight store models are built from (stable-diffusion.cpp style: a module
// asks for its tensors by their checkpoint key and the store checks shape and dtype).
//
//  * vt_weights_open: one or more safetensors files (a key in two files is an error); values
//    are f32 on the cpu: F32 entries zero-copy views of the mapping (read-only: never write
//    into a weight), BF16 / F16 (and I64) entries converted copies.
//  * vt_weights_from_manifest: a shape-only store from shared/manifests/*.txt (lines
//    "KEY<TAB>[d0, d1]<TAB>float32", '#' comments): get() returns zero-filled (or, with
//    random_init, deterministic small random) tensors of the manifest's shapes, so the
//    full-size models can be built and checked without the real weights. random_init: element
//    i of key k is a function of (seed, hash(k), i) only — mean 0, std 0.02 (bounded by
//    +-0.07), except 1-d "*norm*.weight" / "*ln_*.weight" scales, which get mean 1.
//  * Strict checking: every get() marks the key used; a missing key or a wrong shape is an
//    error naming the file, the key and both shapes:
//      "unet.safetensors: key K: expected shape [320, 4, 3, 3], file has [320, 8, 3, 3]"
//      "unet.safetensors: missing key K (expected shape [320])"
//    vt_weights_finish lists every recorded problem plus every key never asked for:
//      "unet.safetensors: unexpected key K [320] (never used)"
//    With vt_weights_collect_errors on, get() records problems instead of failing, so one
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

// Tensor for key with exactly the given shape, as f32 on the cpu (new reference).
// NULL + VT_ERR_KEY if absent or mis-shaped. In "collect" mode (vt_weights_collect_errors)
// a problem is recorded, a zero tensor of the asked shape is returned, and building goes on.
vt_tensor *vt_weights_get(vt_weights *w, const char *key, int ndim, const int64_t *shape);
// Same without a shape check (for tensors whose shape defines the config), or NULL +
// VT_ERR_KEY (also recorded in collect mode; no zero tensor: there is no shape to give it).
vt_tensor *vt_weights_get_any(vt_weights *w, const char *key);
int vt_weights_has(const vt_weights *w, const char *key);
// Shape of a key without loading it (does not mark it used); returns 0 if absent.
int vt_weights_shape(const vt_weights *w, const char *key, int *ndim, int64_t *shape);
// Config inference helpers for loaders that read a model's shape from its checkpoint:
// ndim of prefix+name (its shape into `shape`), or -1 if absent.
int vt_weights_ndim_at(const vt_weights *w, const char *prefix, const char *name, int64_t *shape);
// Number of consecutive indices n = 0, 1, ... for which prefix + before + n + after is a key
// (the layer count of a stack such as "transformer.resblocks.%d.ln_1.weight").
int vt_weights_count_indexed(const vt_weights *w, const char *prefix, const char *before, const char *after);
// Marks a key used without loading it (keys a model deliberately ignores); no-op if absent.
void vt_weights_mark_used(vt_weights *w, const char *key);

// Collect mode: record every problem instead of failing at the first.
void vt_weights_collect_errors(vt_weights *w, int on);
// Ends a model build: fails (VT_ERR_KEY) listing every recorded problem plus every key under
// prefix that was never used (prefix "" or NULL = all keys). The message starts with the counts
// ("N weight problems (a missing, b mis-shaped, c never used)") and lists the first 20, then
// "... and M more". Clears the recorded problems (used marks stay, so one store can serve
// several models built one after the other, each finished with its own prefix).
vt_err vt_weights_finish(vt_weights *w, const char *prefix);
// Number of parameters (sum of numel) in the store, all (prefix NULL or "") or under prefix;
// keys in file order.
int64_t vt_weights_count_params(const vt_weights *w, const char *prefix);
int vt_weights_n_keys(const vt_weights *w);
const char *vt_weights_key(const vt_weights *w, int i);

#ifdef __cplusplus
}
#endif
