// safetensors.h — reading and writing .safetensors files.
// Reader: the file is mmapped; the JSON header is parsed with cJSON and every entry's dtype,
// shape and data_offsets are validated against the file size (and against each other: no
// overlaps) before anything is handed out. Tensors are zero-copy views of the mapping.
// Writer: writes to PATH.tmp.PID, fsyncs, renames over PATH (atomic: a crash never leaves a
// half-written file where a good one was).
#pragma once
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vt_st_entry {
    char *name;
    vt_dtype dtype;      // F32, BF16, F16, I64 (other safetensors dtypes are rejected by name)
    int ndim;
    int64_t shape[VT_MAX_DIMS];
    size_t begin, end;   // byte offsets into the data section
} vt_st_entry;

typedef struct vt_safetensors {
    char *path;
    vt_mmap *map;
    size_t data_start;   // 8 + header length
    int n;
    vt_st_entry *entries;  // in file order
    char *metadata_json;   // the "__metadata__" object as JSON text, or NULL
} vt_safetensors;

// Opens and validates PATH. NULL + error naming the path and the fault.
vt_safetensors *vt_st_open(const char *path);
void vt_st_close(vt_safetensors *f);
// Entry by name, or NULL (no error set).
const vt_st_entry *vt_st_find(const vt_safetensors *f, const char *name);
// Zero-copy tensor of an entry (keeps the mapping alive).
vt_tensor *vt_st_tensor(vt_safetensors *f, const vt_st_entry *e);
// Metadata value for key, or NULL.
const char *vt_st_metadata(const vt_safetensors *f, const char *key);

// Atomic write of n named tensors (cpu, any vt dtype) with optional string metadata pairs
// (meta_keys/meta_vals, n_meta). Tensor names must be unique.
vt_err vt_st_write(const char *path, int n, const char *const *names, vt_tensor *const *tensors, int n_meta,
                   const char *const *meta_keys, const char *const *meta_vals);

#ifdef __cplusplus
}
#endif
