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
    vt_mmap *map;          // NULL for vt_st_parse_buffer
    size_t data_start;     // 8 + header length
    int n;
    vt_st_entry *entries;  // in file order
    int *by_name;          // entry indices sorted by name (vt_st_find bisects it)
    char *metadata_json;   // the "__metadata__" object as JSON text, or NULL
    int n_meta;            // "__metadata__" pairs, in file order
    char **meta_keys, **meta_vals;
} vt_safetensors;

// Opens and validates PATH: header length <= 100 MB and inside the file, a JSON object (only
// whitespace after it), every entry with a supported dtype, <= 5 non-negative dims and
// data_offsets inside the data section spanning exactly numel * dtype size bytes, unique
// names, no two non-empty tensors overlapping, "__metadata__" a string -> string object.
// NULL + error (VT_ERR_IO / VT_ERR_FORMAT / VT_ERR_DTYPE) naming the path, the tensor and the fault.
vt_safetensors *vt_st_open(const char *path);
// Validates a whole file image held in memory (label names it in errors). The result has no
// mapping: entries, names and metadata only (vt_st_tensor refuses). For the fuzzer and tools.
vt_safetensors *vt_st_parse_buffer(const void *data, size_t size, const char *label);
void vt_st_close(vt_safetensors *f);
// Entry by name, or NULL (no error set).
const vt_st_entry *vt_st_find(const vt_safetensors *f, const char *name);
// Zero-copy tensor of an entry in its file dtype (keeps the mapping alive; the bytes are
// read-only: never write into it). Data that is not aligned to its dtype is copied instead.
vt_tensor *vt_st_tensor(vt_safetensors *f, const vt_st_entry *e);
// vt_st_tensor of the entry called name; NULL + VT_ERR_KEY naming file and name if absent.
vt_tensor *vt_st_get(vt_safetensors *f, const char *name);
// Metadata value for key, or NULL.
const char *vt_st_metadata(const vt_safetensors *f, const char *key);

// Atomic write of n named tensors (cpu, any vt dtype) with optional string metadata pairs
// (meta_keys/meta_vals, n_meta). Tensor names (and metadata keys) must be unique. Header keys
// keep the given order ("__metadata__" first); the header is space-padded so the data section
// starts 8-byte aligned. On any failure the temp file is removed and an existing PATH is
// left untouched.
vt_err vt_st_write(const char *path, int n, const char *const *names, vt_tensor *const *tensors, int n_meta,
                   const char *const *meta_keys, const char *const *meta_vals);

#ifdef __cplusplus
}
#endif
