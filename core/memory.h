// memory.h — where tensor bytes live.
//  * vt_storage: a refcounted block of bytes on one device. Tensors and views share one.
//  * The CPU allocator caches freed blocks by size so repeated forwards (the no-grad DDIM
//    steps) reuse the same buffers instead of going back to malloc; it counts current and
//    peak bytes so tests and the memory plan can read them.
//  * vt_mmap: read-only file mappings for weights; a storage can borrow bytes from one.
//  * vt_arena: a bump allocator for scratch memory that is released all at once.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vt_device { VT_CPU = 0, VT_CUDA = 1 } vt_device;
#define VT_NUM_DEVICES 2
const char *vt_device_name(vt_device d);

typedef struct vt_storage vt_storage;
struct vt_storage {
    void *data;
    size_t nbytes;
    vt_device device;
    int refcount;
    // Called when the refcount drops to zero; frees data (or releases what it borrows from).
    void (*release)(vt_storage *s);
    void *owner;  // borrowed-from object (an mmap), or NULL
};

// New storage of nbytes from the device's allocator (contents uninitialised). NULL + error on OOM.
vt_storage *vt_storage_new(vt_device device, size_t nbytes);
// Storage borrowing bytes owned by someone else; release_owner (may be NULL) is called with
// owner when the storage dies.
vt_storage *vt_storage_borrow(vt_device device, void *data, size_t nbytes, void *owner,
                              void (*release_owner)(void *owner));
void vt_storage_retain(vt_storage *s);
void vt_storage_release(vt_storage *s);

// CPU allocator statistics (bytes handed out to live storages).
typedef struct vt_mem_stats {
    size_t current, peak, cached;  // cached: freed blocks kept for reuse
    uint64_t n_alloc, n_reuse;
} vt_mem_stats;
vt_mem_stats vt_mem_stats_get(vt_device device);
void vt_mem_reset_peak(vt_device device);
// Returns every cached block to the system.
void vt_mem_trim(vt_device device);
// Device allocator hooks (the CUDA backend installs its own at init).
typedef struct vt_allocator {
    void *(*alloc)(size_t nbytes);
    void (*free)(void *p, size_t nbytes);
} vt_allocator;
void vt_set_device_allocator(vt_device device, vt_allocator a);

// Read-only mapping of a whole file (refcounted: storages borrowing from it keep it alive).
typedef struct vt_mmap {
    void *data;
    size_t size;
    int refcount;
    char *path;
} vt_mmap;
vt_mmap *vt_mmap_open(const char *path);  // NULL + VT_ERR_IO naming the path
void vt_mmap_retain(vt_mmap *m);
void vt_mmap_release(vt_mmap *m);

// Bump allocator: allocations are 64-byte aligned and all freed by vt_arena_reset/free.
typedef struct vt_arena {
    char *base;
    size_t size, used, peak;
} vt_arena;
vt_err vt_arena_init(vt_arena *a, size_t size);
void *vt_arena_alloc(vt_arena *a, size_t nbytes);  // NULL + VT_ERR_OOM when full
size_t vt_arena_mark(const vt_arena *a);
void vt_arena_reset(vt_arena *a, size_t mark);
void vt_arena_free(vt_arena *a);

#ifdef __cplusplus
}
#endif
