// tensor.h — the vader tensor: dtype, device, up to 5 dims, contiguous row-major, refcounted.
// Video activations are [b, c, t, h, w] as in lvdm; spatial layers see [(b t), c, h, w] and
// temporal ones [(b h w), t, c] through explicit ops (see ops.h).
//
// Ownership: every function returning vt_tensor* returns a new reference (refcount 1 for a
// fresh tensor) that the caller releases with vt_release. Functions taking tensors borrow them.
// A NULL input to an op yields NULL (the error stays set), so model code can chain ops and
// check once; vt_release(NULL) is a no-op.
#pragma once
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include "error.h"
#include "memory.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VT_MAX_DIMS 5

typedef enum vt_dtype { VT_F32 = 0, VT_BF16, VT_F16, VT_I64 } vt_dtype;
size_t vt_dtype_size(vt_dtype dt);
const char *vt_dtype_name(vt_dtype dt);

typedef struct vt_tensor vt_tensor;
struct vt_tensor {
    vt_dtype dtype;
    vt_device device;
    int ndim;
    int64_t shape[VT_MAX_DIMS];
    int64_t numel;
    vt_storage *storage;
    size_t offset;  // bytes into storage
    int refcount;
    // autograd (see tape.h)
    int requires_grad;   // leaf parameter/input that wants a gradient, or result of such
    vt_tensor *grad;     // accumulated gradient of a leaf (owned), NULL until backward
    uint64_t tape_id;    // tape that produced this tensor (0: none / leaf)
    int node;            // node index on that tape
};

// Constructors: contiguous tensors on the device's allocator.
vt_tensor *vt_empty(vt_dtype dt, vt_device dev, int ndim, const int64_t *shape);
vt_tensor *vt_zeros(vt_dtype dt, vt_device dev, int ndim, const int64_t *shape);
vt_tensor *vt_full(vt_device dev, int ndim, const int64_t *shape, float value);  // f32
// Shape literal for C callers: vt_new_f32(VT_DIMS(2, 3, 4)) passes ndim, shape.
#ifndef __cplusplus
#define VT_DIMS(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), ((const int64_t[]){__VA_ARGS__})
#endif
vt_tensor *vt_new_f32(int ndim, const int64_t *shape);  // cpu f32, zero-filled
vt_tensor *vt_from_f32(int ndim, const int64_t *shape, const float *data);  // cpu copy
// A tensor viewing existing storage (retained).
vt_tensor *vt_view_storage(vt_storage *s, size_t offset, vt_dtype dt, int ndim, const int64_t *shape);
// Same bytes, new shape (numel must agree). Not recorded on a tape: use vt_reshape for that.
vt_tensor *vt_view(vt_tensor *t, int ndim, const int64_t *shape);
// Deep copy (same dtype/device), not recorded.
vt_tensor *vt_clone(const vt_tensor *t);
// Converts dtype (f32/bf16/f16 among each other; i64 -> f32), not recorded. Same dtype: clone.
vt_tensor *vt_to_dtype(const vt_tensor *t, vt_dtype dt);
// Copies to another device (not recorded).
vt_tensor *vt_to_device(const vt_tensor *t, vt_device dev);
// t itself (a new reference) when it is already on dev, else a copy on dev. Not recorded:
// for constants (tokens, index tensors, host-built tables), never for tensors needing a gradient.
vt_tensor *vt_on_device(const vt_tensor *t, vt_device dev);
// Consumes t: returns t when it is on dev, else a copy on dev (t released; on failure NULL + error).
vt_tensor *vt_move_to(vt_tensor *t, vt_device dev);
// Moves tensors in place: each tensor keeps its identity (every holder of the pointer sees the
// device tensor; names, requires_grad and shape stay), its storage is replaced by a device copy
// of the byte range the given tensors use. Tensors sharing one storage (a packed in_proj and its
// q / k / v row views) share one device storage afterwards, at the same relative offsets, so
// views stay views. An accumulated ->grad moves too. NULL entries and duplicates are allowed.
vt_err vt_tensors_to_device(vt_tensor *const *ts, int n, vt_device dev);
// Converts tensors in place to dt (f32 <-> bf16 / f16, round to nearest even): each tensor keeps
// its identity (every holder of the pointer sees the new dtype; shape, device, name stay) and
// gets a new storage holding the converted values (on its device; device tensors are converted
// through the host). Given tensors whose bytes overlap (a packed in_proj and its q / k / v row
// views) share one new storage, so views stay views; tensors that merely share a storage (the
// zero-copy views of one checkpoint mapping) are converted apart. For frozen weights (the low-precision GEMM weights of
// model.dtype): a tensor that requires a gradient, has one, or sits on a tape is refused, and so
// is i64. Tensors already of dtype dt are left alone; NULL entries are allowed.
vt_err vt_tensors_to_dtype(vt_tensor *const *ts, int n, vt_dtype dt);
// Copies src's bytes into dst (same dtype and numel; any devices). Not recorded.
vt_err vt_copy_into(vt_tensor *dst, const vt_tensor *src);
// Detached alias: same storage, no autograd history, requires_grad = 0.
vt_tensor *vt_detach(vt_tensor *t);

vt_tensor *vt_retain(vt_tensor *t);
void vt_release(vt_tensor *t);
// Releases *t and sets it to NULL.
static inline void vt_clear(vt_tensor **t) {
    vt_release(*t);
    *t = NULL;
}

static inline void *vt_data(const vt_tensor *t) { return (char *)t->storage->data + t->offset; }
static inline float *vt_f32(const vt_tensor *t) { return (float *)vt_data(t); }
static inline int64_t *vt_i64(const vt_tensor *t) { return (int64_t *)vt_data(t); }
static inline size_t vt_nbytes(const vt_tensor *t) { return (size_t)t->numel * vt_dtype_size(t->dtype); }
// Negative dims count from the end. Returns the size of dim d.
int64_t vt_dim(const vt_tensor *t, int d);
int64_t vt_dim_prod(int ndim, const int64_t *shape);
int vt_same_shape(const vt_tensor *a, const vt_tensor *b);
int vt_shape_eq(const vt_tensor *t, int ndim, const int64_t *shape);
// "[2, 4, 8, 8]" into a caller buffer (for error messages); returns buf.
char *vt_shape_str(const vt_tensor *t, char *buf, size_t n);
char *vt_shape_str_raw(int ndim, const int64_t *shape, char *buf, size_t n);
#define VT_SHAPE_BUF 96

// bf16 / f16 scalar conversions (round to nearest even). The bf16 pair is inline: the CPU GEMM
// ops convert whole weights and activations with it (ops.h, "low-precision weights").
static inline float vt_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t vt_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    return (uint16_t)(u >> 16);
}
float vt_f16_to_f32(uint16_t h);
uint16_t vt_f32_to_f16(float f);

// Fills with a deterministic pseudo-random normal / uniform stream (tests, init).
typedef struct vt_rng { uint64_t s[4]; } vt_rng;
void vt_rng_seed(vt_rng *r, uint64_t seed);
uint64_t vt_rng_u64(vt_rng *r);
float vt_rng_uniform(vt_rng *r);  // [0, 1)
float vt_rng_normal(vt_rng *r);
void vt_fill_normal(vt_tensor *t, vt_rng *r, float mean, float std);
void vt_fill_uniform(vt_tensor *t, vt_rng *r, float lo, float hi);
// Counter-based hash (splitmix64): the same (seed, index) always gives the same bits, so a
// dropout mask is reproduced exactly when a checkpoint segment recomputes its forward.
static inline uint64_t vt_hash64(uint64_t seed, uint64_t index) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * (index + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Max |a - b| / max |b| (the fixtures' relative error). Both f32 cpu, same numel.
double vt_rel_err(const vt_tensor *a, const vt_tensor *b);

#ifdef __cplusplus
}
#endif
