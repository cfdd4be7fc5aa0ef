// memory.c — storages, the caching CPU allocator, mmap and arenas (see memory.h).
#include "memory.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

const char *vt_device_name(vt_device d) { return d == VT_CPU ? "cpu" : d == VT_CUDA ? "cuda" : "?"; }

// ---- caching allocator -------------------------------------------------------------------
// Freed blocks are kept in a small table keyed by exact size: a DDIM loop frees and allocates
// the same sizes every step, so exact-size reuse catches nearly all of them.
#define VT_CACHE_SLOTS 512
typedef struct cached_block { void *p; size_t n; } cached_block;
typedef struct dev_alloc {
    pthread_mutex_t lock;
    vt_allocator a;
    cached_block cache[VT_CACHE_SLOTS];
    int n_cached;
    vt_mem_stats st;
} dev_alloc;

static void *cpu_alloc(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64) != 0) return NULL;
    return p;
}
static void cpu_free(void *p, size_t n) { (void)n; free(p); }

static dev_alloc g_alloc[VT_NUM_DEVICES] = {
    {PTHREAD_MUTEX_INITIALIZER, {cpu_alloc, cpu_free}, {{0, 0}}, 0, {0, 0, 0, 0, 0}},
    {PTHREAD_MUTEX_INITIALIZER, {NULL, NULL}, {{0, 0}}, 0, {0, 0, 0, 0, 0}},
};

void vt_set_device_allocator(vt_device device, vt_allocator a) { g_alloc[device].a = a; }

static void *dev_alloc_bytes(vt_device device, size_t n) {
    dev_alloc *d = &g_alloc[device];
    void *p = NULL;
    pthread_mutex_lock(&d->lock);
    for (int i = d->n_cached - 1; i >= 0; i--) {
        if (d->cache[i].n == n) {
            p = d->cache[i].p;
            d->cache[i] = d->cache[--d->n_cached];
            d->st.cached -= n;
            d->st.n_reuse++;
            break;
        }
    }
    if (!p && d->a.alloc) {
        p = d->a.alloc(n);
        if (!p && d->n_cached) {  // out of memory: give the cache back and try once more
            for (int i = 0; i < d->n_cached; i++) d->a.free(d->cache[i].p, d->cache[i].n);
            d->n_cached = 0;
            d->st.cached = 0;
            p = d->a.alloc(n);
        }
        if (p) d->st.n_alloc++;
    }
    if (p) {
        d->st.current += n;
        if (d->st.current > d->st.peak) d->st.peak = d->st.current;
    }
    pthread_mutex_unlock(&d->lock);
    return p;
}

static void dev_free_bytes(vt_device device, void *p, size_t n) {
    dev_alloc *d = &g_alloc[device];
    pthread_mutex_lock(&d->lock);
    d->st.current -= n;
    if (d->n_cached < VT_CACHE_SLOTS) {
        d->cache[d->n_cached++] = (cached_block){p, n};
        d->st.cached += n;
    } else {
        d->a.free(p, n);
    }
    pthread_mutex_unlock(&d->lock);
}

vt_mem_stats vt_mem_stats_get(vt_device device) {
    pthread_mutex_lock(&g_alloc[device].lock);
    vt_mem_stats s = g_alloc[device].st;
    pthread_mutex_unlock(&g_alloc[device].lock);
    return s;
}

void vt_mem_reset_peak(vt_device device) {
    pthread_mutex_lock(&g_alloc[device].lock);
    g_alloc[device].st.peak = g_alloc[device].st.current;
    pthread_mutex_unlock(&g_alloc[device].lock);
}

void vt_mem_trim(vt_device device) {
    dev_alloc *d = &g_alloc[device];
    pthread_mutex_lock(&d->lock);
    for (int i = 0; i < d->n_cached; i++) d->a.free(d->cache[i].p, d->cache[i].n);
    d->n_cached = 0;
    d->st.cached = 0;
    pthread_mutex_unlock(&d->lock);
}

// ---- storages ----------------------------------------------------------------------------
static void storage_release_owned(vt_storage *s) { dev_free_bytes(s->device, s->data, s->nbytes); }

vt_storage *vt_storage_new(vt_device device, size_t nbytes) {
    if (!g_alloc[device].a.alloc) {
        vt_error(VT_ERR_DEVICE, "no allocator for device %s (backend not initialised or not built)",
                 vt_device_name(device));
        return NULL;
    }
    vt_storage *s = malloc(sizeof *s);
    if (!s) { vt_error(VT_ERR_OOM, "out of host memory for a storage header"); return NULL; }
    s->data = dev_alloc_bytes(device, nbytes);
    if (!s->data) {
        free(s);
        vt_error(VT_ERR_OOM, "out of %s memory allocating %zu bytes", vt_device_name(device), nbytes);
        return NULL;
    }
    s->nbytes = nbytes;
    s->device = device;
    s->refcount = 1;
    s->release = storage_release_owned;
    s->owner = NULL;
    return s;
}

typedef struct borrow_owner { void *owner; void (*release_owner)(void *); } borrow_owner;
static void storage_release_borrowed(vt_storage *s) {
    borrow_owner *b = s->owner;
    if (b) {
        if (b->release_owner) b->release_owner(b->owner);
        free(b);
    }
}

vt_storage *vt_storage_borrow(vt_device device, void *data, size_t nbytes, void *owner,
                              void (*release_owner)(void *owner)) {
    vt_storage *s = malloc(sizeof *s);
    borrow_owner *b = malloc(sizeof *b);
    if (!s || !b) {
        free(s);
        free(b);
        vt_error(VT_ERR_OOM, "out of host memory for a storage header");
        return NULL;
    }
    b->owner = owner;
    b->release_owner = release_owner;
    *s = (vt_storage){data, nbytes, device, 1, storage_release_borrowed, b};
    return s;
}

void vt_storage_retain(vt_storage *s) {
    if (s) __atomic_add_fetch(&s->refcount, 1, __ATOMIC_RELAXED);
}

void vt_storage_release(vt_storage *s) {
    if (!s) return;
    if (__atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) == 0) {
        s->release(s);
        free(s);
    }
}

// ---- mmap --------------------------------------------------------------------------------
vt_mmap *vt_mmap_open(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        vt_error(VT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        vt_error(VT_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        vt_error(VT_ERR_IO, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    vt_mmap *m = calloc(1, sizeof *m);
    if (!m) { close(fd); vt_error(VT_ERR_OOM, "out of host memory"); return NULL; }
    m->size = (size_t)st.st_size;
    m->refcount = 1;
    m->path = strdup(path);
    if (m->size > 0) {
        m->data = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m->data == MAP_FAILED) {
            vt_error(VT_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
            close(fd);
            free(m->path);
            free(m);
            return NULL;
        }
    }
    close(fd);
    return m;
}

void vt_mmap_retain(vt_mmap *m) {
    if (m) __atomic_add_fetch(&m->refcount, 1, __ATOMIC_RELAXED);
}

void vt_mmap_release(vt_mmap *m) {
    if (!m) return;
    if (__atomic_sub_fetch(&m->refcount, 1, __ATOMIC_ACQ_REL) == 0) {
        if (m->size > 0) munmap(m->data, m->size);
        free(m->path);
        free(m);
    }
}

// ---- arena -------------------------------------------------------------------------------
vt_err vt_arena_init(vt_arena *a, size_t size) {
    a->base = NULL;
    if (posix_memalign((void **)&a->base, 64, size ? size : 64) != 0)
        return vt_error(VT_ERR_OOM, "arena: cannot reserve %zu bytes", size);
    a->size = size;
    a->used = a->peak = 0;
    return VT_OK;
}

void *vt_arena_alloc(vt_arena *a, size_t nbytes) {
    size_t start = (a->used + 63) & ~(size_t)63;
    if (start + nbytes > a->size) {
        vt_error(VT_ERR_OOM, "arena full: %zu of %zu bytes used, %zu more asked", a->used, a->size, nbytes);
        return NULL;
    }
    a->used = start + nbytes;
    if (a->used > a->peak) a->peak = a->used;
    return a->base + start;
}

size_t vt_arena_mark(const vt_arena *a) { return a->used; }
void vt_arena_reset(vt_arena *a, size_t mark) { a->used = mark; }
void vt_arena_free(vt_arena *a) {
    free(a->base);
    a->base = NULL;
    a->size = a->used = 0;
}
