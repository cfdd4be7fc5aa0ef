// dist.c — see dist.h. MPI parts compile when the build has VADER_HAVE_MPI, NCCL parts when it
// also has VADER_HAVE_CUDA (cuda/dist_nccl.cu).
#define _POSIX_C_SOURCE 200809L
#include "train/dist.h"
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if VADER_HAVE_MPI
#include <mpi.h>
#endif
#if VADER_HAVE_CUDA
#include "cuda/backend.h"
#include "cuda/dist_nccl.h"
#define DIST_HAVE_CUDA 1
#else
#define DIST_HAVE_CUDA 0
#endif

// Installed by the CUDA backend (core/tensor.c); NULL in a CPU-only process.
extern vt_err (*vt_device_copy_hook)(void *dst, vt_device ddev, const void *src, vt_device sdev, size_t n);

struct vt_dist_impl {
#if VADER_HAVE_MPI
    MPI_Comm comm;  // a duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN
    int mpi_owned;  // vt_dist_init called MPI_Init (so finalize calls MPI_Finalize)
#endif
#if VADER_HAVE_CUDA
    vt_nccl *nccl;
#endif
    int unused_;
};

const char *vt_dist_backend_name(vt_dist_backend b) {
    switch (b) {
    case VT_DIST_AUTO: return "auto";
    case VT_DIST_NONE: return "none";
    case VT_DIST_MPI: return "mpi";
    case VT_DIST_NCCL: return "nccl";
    }
    return "?";
}

vt_err vt_dist_backend_parse(const char *s, vt_dist_backend *out) {
    for (int b = VT_DIST_AUTO; b <= VT_DIST_NCCL; b++)
        if (s && strcmp(s, vt_dist_backend_name((vt_dist_backend)b)) == 0) {
            *out = (vt_dist_backend)b;
            return VT_OK;
        }
    return vt_error(VT_ERR_CONFIG, "dist backend '%s': expected auto, none, mpi or nccl", s ? s : "(null)");
}

// ---- launcher environment -----------------------------------------------------------------
static const char *plain_getenv(const char *name) { return getenv(name); }

// -1 when unset; -2 when set but not a non-negative integer.
static int env_int(const char *(*get)(const char *), const char *name) {
    const char *s = get(name);
    if (!s || !*s) return -1;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 0 || v > INT_MAX) return -2;
    return (int)v;
}

vt_err vt_dist_launch_from_env(vt_dist_launch *out, const char *(*getenv_fn)(const char *name)) {
    const char *(*get)(const char *) = getenv_fn ? getenv_fn : plain_getenv;
    static const struct {
        const char *launcher, *rank, *size, *local_rank, *local_size;
    } kinds[] = {
        {"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
         "OMPI_COMM_WORLD_LOCAL_SIZE"},
        {"mpich", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"},
    };
    *out = (vt_dist_launch){0, 0, 1, 0, 1, "none"};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        int size = env_int(get, kinds[k].size), rank = env_int(get, kinds[k].rank);
        if (size == -1 && rank == -1) continue;
        if (size < 1 || rank < 0 || rank >= size)
            return vt_error(VT_ERR_CONFIG, "launcher environment (%s): %s=%s %s=%s is not a valid rank and size",
                            kinds[k].launcher, kinds[k].rank, get(kinds[k].rank) ? get(kinds[k].rank) : "(unset)",
                            kinds[k].size, get(kinds[k].size) ? get(kinds[k].size) : "(unset)");
        int lr = env_int(get, kinds[k].local_rank), ls = env_int(get, kinds[k].local_size);
        if (lr == -2 || ls == -2 || (lr >= 0 && ls >= 0 && lr >= ls))
            return vt_error(VT_ERR_CONFIG, "launcher environment (%s): %s / %s are not a valid local rank and size",
                            kinds[k].launcher, kinds[k].local_rank, kinds[k].local_size);
        *out = (vt_dist_launch){1, rank, size, lr, ls, kinds[k].launcher};
        return VT_OK;
    }
    return VT_OK;
}

int vt_dist_gpu_for_rank(int local_rank, int ngpus) {
    if (ngpus <= 0) return -1;
    if (ngpus == 1) return 0;
    return local_rank < 0 ? 0 : local_rank % ngpus;
}

// ---- abort --------------------------------------------------------------------------------
void vt_dist_abort(const vt_dist *d, int code, const char *fmt, ...) {
    int rank = 0;
    if (d) {
        rank = d->rank;
    } else {
        vt_dist_launch l;
        if (vt_dist_launch_from_env(&l, NULL) == VT_OK) rank = l.rank;
    }
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "rank %d: %s\n", rank, msg);
    fflush(stderr);
    fflush(stdout);
    if (code == 0) code = 1;
#if VADER_HAVE_MPI
    int inited = 0, finalized = 0;
    if (MPI_Initialized(&inited) == MPI_SUCCESS && inited && MPI_Finalized(&finalized) == MPI_SUCCESS &&
        !finalized)
        MPI_Abort(MPI_COMM_WORLD, code);  // does not return; the exit below is a fallback
#endif
    exit(code);
}

// ---- MPI helpers --------------------------------------------------------------------------
#if VADER_HAVE_MPI
#define VT_MPI_CHECK(call)                                                                        \
    do {                                                                                          \
        int vt_mrc_ = (call);                                                                     \
        if (vt_mrc_ != MPI_SUCCESS) {                                                             \
            char vt_ms_[MPI_MAX_ERROR_STRING];                                                    \
            int vt_ml_ = 0;                                                                       \
            if (MPI_Error_string(vt_mrc_, vt_ms_, &vt_ml_) != MPI_SUCCESS) vt_ml_ = 0;            \
            vt_ms_[vt_ml_] = 0;                                                                   \
            return vt_error(VT_ERR_DEVICE, "%s:%d: %s: %s", __FILE__, __LINE__, #call, vt_ms_);  \
        }                                                                                         \
    } while (0)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Completes a nonblocking collective, polling MPI_Test against d->timeout_s.
static vt_err mpi_wait(vt_dist *d, MPI_Request *req, const char *what) {
    if (d->timeout_s <= 0) {
        VT_MPI_CHECK(MPI_Wait(req, MPI_STATUS_IGNORE));
        return VT_OK;
    }
    double t0 = now_s();
    long ns = 1000;
    for (;;) {
        int done = 0;
        VT_MPI_CHECK(MPI_Test(req, &done, MPI_STATUS_IGNORE));
        if (done) return VT_OK;
        if (now_s() - t0 > d->timeout_s) {
            vt_error(VT_ERR_DEVICE, "%s timed out after %g s waiting for peers", what, d->timeout_s);
            // The request cannot be cancelled: the communicator is unusable from here on.
            if (d->abort_on_timeout) vt_dist_abort(d, 1, "%s", vt_error_message());
            return VT_ERR_DEVICE;
        }
        struct timespec ts = {0, ns};
        nanosleep(&ts, NULL);
        if (ns < 1000000) ns *= 2;
    }
}

static MPI_Comm comm_of(const vt_dist *d) { return d->impl->comm; }
#endif

// Copies n bytes between host and a device (or host to host) through core's hook.
static vt_err copy_bytes(void *dst, vt_device ddev, const void *src, vt_device sdev, size_t n) {
    if (n == 0) return VT_OK;
    if (ddev == VT_CPU && sdev == VT_CPU) {
        memcpy(dst, src, n);
        return VT_OK;
    }
    if (!vt_device_copy_hook)
        return vt_error(VT_ERR_DEVICE, "dist: copy %s -> %s: the CUDA backend is not initialised",
                        vt_device_name(sdev), vt_device_name(ddev));
    return vt_device_copy_hook(dst, ddev, src, sdev, n);
}

// ---- init / finalize ----------------------------------------------------------------------
static double env_timeout(void) {
    const char *s = getenv("VADER_DIST_TIMEOUT");
    if (!s || !*s) return VT_DIST_DEFAULT_TIMEOUT_S;
    char *end = NULL;
    double v = strtod(s, &end);
    return (*end || v != v) ? VT_DIST_DEFAULT_TIMEOUT_S : v;
}

static int visible_gpus(void) {
#if VADER_HAVE_CUDA
    return vt_cuda_device_count();
#else
    return 0;
#endif
}

#if VADER_HAVE_MPI
// MPI_Init (unless the caller did), a private communicator with errors returned, rank/size
// checked against the launcher's, local rank/size from the launcher or from a shared-memory
// split.
static vt_err mpi_join(vt_dist *d, const vt_dist_launch *l) {
    int inited = 0;
    VT_MPI_CHECK(MPI_Initialized(&inited));
    if (!inited) {
        VT_MPI_CHECK(MPI_Init(NULL, NULL));
        d->impl->mpi_owned = 1;
    }
    VT_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &d->impl->comm));
    VT_MPI_CHECK(MPI_Comm_set_errhandler(d->impl->comm, MPI_ERRORS_RETURN));
    VT_MPI_CHECK(MPI_Comm_rank(d->impl->comm, &d->rank));
    VT_MPI_CHECK(MPI_Comm_size(d->impl->comm, &d->world));
    if (d->rank != l->rank || d->world != l->world)
        return vt_error(VT_ERR_CONFIG, "MPI says rank %d of %d but the %s launcher said rank %d of %d", d->rank,
                        d->world, l->launcher, l->rank, l->world);
    if (l->local_rank >= 0 && l->local_world >= 1) {
        d->local_rank = l->local_rank;
        d->local_world = l->local_world;
    } else {
        MPI_Comm node;
        VT_MPI_CHECK(MPI_Comm_split_type(d->impl->comm, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &node));
        VT_MPI_CHECK(MPI_Comm_rank(node, &d->local_rank));
        VT_MPI_CHECK(MPI_Comm_size(node, &d->local_world));
        VT_MPI_CHECK(MPI_Comm_free(&node));
    }
    return VT_OK;
}
#endif

#if VADER_HAVE_MPI && VADER_HAVE_CUDA
static vt_err nccl_join(vt_dist *d, int ngpus) {
    if (ngpus > 1 && d->local_world > ngpus)
        return vt_error(VT_ERR_CONFIG,
                        "nccl: %d ranks on this node but only %d GPUs visible (NCCL needs one GPU per rank): "
                        "run at most %d ranks per node or use the mpi backend",
                        d->local_world, ngpus, ngpus);
    unsigned char id[VT_NCCL_ID_BYTES] = {0};
    if (d->rank == 0) {
        vt_err e = vt_nccl_unique_id(id);
        if (e) return e;
    }
    MPI_Request req;
    VT_MPI_CHECK(MPI_Ibcast(id, VT_NCCL_ID_BYTES, MPI_BYTE, 0, comm_of(d), &req));
    vt_err e = mpi_wait(d, &req, "nccl id broadcast");
    if (e) return e;
    return vt_nccl_create(&d->impl->nccl, id, d->world, d->rank, d->device);
}
#endif

vt_err vt_dist_init(vt_dist *d, vt_dist_backend want) {
    memset(d, 0, sizeof *d);
    d->backend = VT_DIST_NONE;
    d->world = d->local_world = 1;
    d->timeout_s = env_timeout();
    d->abort_on_timeout = 1;
    d->launcher = "none";
    vt_dist_launch l;
    vt_err e = vt_dist_launch_from_env(&l, NULL);
    if (e) return e;
    d->launcher = l.launcher;
    if (l.launched) {
        d->rank = l.rank;  // until MPI confirms it: vt_dist_abort prints the right rank
        d->world = l.world;
    }
    int ngpus = visible_gpus();
    d->device = vt_dist_gpu_for_rank(l.launched ? (l.local_rank >= 0 ? l.local_rank : 0) : 0, ngpus);

    if (want == VT_DIST_NONE || !l.launched) {
        if (want == VT_DIST_NONE && l.launched && l.world > 1)
            return vt_error(VT_ERR_CONFIG,
                            "dist backend 'none' but the %s launcher started %d ranks: every rank would train "
                            "alone as rank 0; use backend auto, mpi or nccl, or run without mpirun",
                            l.launcher, l.world);
        d->rank = 0;
        d->world = 1;
        d->backend = VT_DIST_NONE;
        return VT_OK;
    }
#if !VADER_HAVE_MPI
    return vt_error(VT_ERR_CONFIG,
                    "started by the %s launcher (%d ranks) but this build has no MPI: install the MPI "
                    "development package (scripts/install-deps.sh) and rebuild",
                    l.launcher, l.world);
#else
    vt_dist_backend b = want;
    if (b == VT_DIST_AUTO) b = DIST_HAVE_CUDA && ngpus > 0 ? VT_DIST_NCCL : VT_DIST_MPI;
    if (b == VT_DIST_NCCL && !DIST_HAVE_CUDA)
        return vt_error(VT_ERR_CONFIG, "dist backend 'nccl' but this build has no CUDA: use 'mpi'");
    if (b == VT_DIST_NCCL && ngpus == 0)
        return vt_error(VT_ERR_CONFIG, "dist backend 'nccl' but no GPU is visible on this node: use 'mpi'");
    d->impl = calloc(1, sizeof *d->impl);
    if (!d->impl) return vt_error(VT_ERR_OOM, "dist state");
    d->impl->comm = MPI_COMM_NULL;
    e = mpi_join(d, &l);
    d->device = vt_dist_gpu_for_rank(d->local_rank, ngpus);
#if VADER_HAVE_CUDA
    if (!e && b == VT_DIST_NCCL) e = nccl_join(d, ngpus);
#endif
    if (e) {
        vt_error_context("rank %d of %d, dist backend %s: ", d->rank, d->world, vt_dist_backend_name(b));
        if (d->impl->comm != MPI_COMM_NULL) (void)MPI_Comm_free(&d->impl->comm);
        free(d->impl);
        d->impl = NULL;
        return e;
    }
    d->backend = b;
    return VT_OK;
#endif
}

vt_err vt_dist_finalize(vt_dist *d) {
    vt_err e = VT_OK;
    if (d->impl) {
#if VADER_HAVE_CUDA
        e = vt_nccl_destroy(d->impl->nccl);
        d->impl->nccl = NULL;
#endif
#if VADER_HAVE_MPI
        if (d->impl->comm != MPI_COMM_NULL) {
            int rc = MPI_Comm_free(&d->impl->comm);
            if (!e && rc != MPI_SUCCESS) e = vt_error(VT_ERR_DEVICE, "dist: MPI_Comm_free failed (%d)", rc);
        }
        if (d->impl->mpi_owned) {
            int rc = MPI_Finalize();
            if (!e && rc != MPI_SUCCESS) e = vt_error(VT_ERR_DEVICE, "dist: MPI_Finalize failed (%d)", rc);
        }
#endif
        free(d->impl);
        d->impl = NULL;
    }
    d->backend = VT_DIST_NONE;
    d->rank = 0;
    d->world = d->local_world = 1;
    return e;
}

// ---- collectives --------------------------------------------------------------------------
static vt_err check_ready(const vt_dist *d, const char *what) {
    if (!d) return vt_error(VT_ERR_ARG, "dist %s: no dist state", what);
    if (d->world > 1 && !d->impl) return vt_error(VT_ERR_ARG, "dist %s: not initialised (vt_dist_init)", what);
    return VT_OK;
}

#if VADER_HAVE_MPI
// MPI counts are int: big buffers go in chunks.
#define MPI_CHUNK ((size_t)1 << 30)

static vt_err mpi_allreduce_avg_host(vt_dist *d, float *buf, size_t n) {
    for (size_t off = 0; off < n; off += MPI_CHUNK) {
        int cnt = (int)(n - off < MPI_CHUNK ? n - off : MPI_CHUNK);
        MPI_Request req;
        VT_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, buf + off, cnt, MPI_FLOAT, MPI_SUM, comm_of(d), &req));
        vt_err e = mpi_wait(d, &req, "all-reduce");
        if (e) return e;
    }
    float s = 1.0f / (float)d->world;
    for (size_t i = 0; i < n; i++) buf[i] *= s;
    return VT_OK;
}

static vt_err mpi_broadcast_host(vt_dist *d, void *buf, size_t nbytes) {
    for (size_t off = 0; off < nbytes; off += MPI_CHUNK) {
        int cnt = (int)(nbytes - off < MPI_CHUNK ? nbytes - off : MPI_CHUNK);
        MPI_Request req;
        VT_MPI_CHECK(MPI_Ibcast((char *)buf + off, cnt, MPI_BYTE, 0, comm_of(d), &req));
        vt_err e = mpi_wait(d, &req, "broadcast");
        if (e) return e;
    }
    return VT_OK;
}

#if VADER_HAVE_CUDA
// A failed NCCL collective has aborted its communicator: nothing can continue, so with
// abort_on_timeout the job ends here (as for an MPI timeout).
static vt_err nccl_done(vt_dist *d, vt_err e) {
    if (e && d->abort_on_timeout) vt_dist_abort(d, 1, "%s", vt_error_message());
    return e;
}
#endif

// Runs a host collective on a device buffer through a host copy.
static vt_err staged(vt_dist *d, void *buf, size_t nbytes, vt_device dev, int avg) {
    void *h = malloc(nbytes ? nbytes : 1);
    if (!h) return vt_error(VT_ERR_OOM, "dist: %zu-byte host staging buffer", nbytes);
    vt_err e = copy_bytes(h, VT_CPU, buf, dev, nbytes);
    if (!e) e = avg ? mpi_allreduce_avg_host(d, h, nbytes / sizeof(float)) : mpi_broadcast_host(d, h, nbytes);
    if (!e) e = copy_bytes(buf, dev, h, VT_CPU, nbytes);
    free(h);
    return e;
}
#endif

vt_err vt_dist_allreduce_avg(vt_dist *d, float *buf, size_t n, vt_device dev) {
    vt_err e = check_ready(d, "all-reduce");
    if (e || d->world == 1 || n == 0) return e;
#if VADER_HAVE_MPI
#if VADER_HAVE_CUDA
    if (d->backend == VT_DIST_NCCL && dev == VT_CUDA)
        return nccl_done(d, vt_nccl_allreduce_avg(d->impl->nccl, buf, n, d->timeout_s));
#endif
    if (dev == VT_CPU) return mpi_allreduce_avg_host(d, buf, n);
    return staged(d, buf, n * sizeof(float), dev, 1);
#else
    (void)buf;
    (void)dev;
    return vt_error(VT_ERR_INTERNAL, "dist: %d ranks without MPI", d->world);
#endif
}

vt_err vt_dist_allreduce_avg_tensor(vt_dist *d, vt_tensor *flat) {
    if (!flat) return vt_error(VT_ERR_ARG, "dist all-reduce: NULL tensor");
    if (flat->dtype != VT_F32)
        return vt_error(VT_ERR_DTYPE, "dist all-reduce: %s tensor, expected f32", vt_dtype_name(flat->dtype));
    return vt_dist_allreduce_avg(d, vt_f32(flat), (size_t)flat->numel, flat->device);
}

vt_err vt_dist_broadcast(vt_dist *d, void *buf, size_t nbytes, vt_device dev) {
    vt_err e = check_ready(d, "broadcast");
    if (e || d->world == 1 || nbytes == 0) return e;
#if VADER_HAVE_MPI
#if VADER_HAVE_CUDA
    if (d->backend == VT_DIST_NCCL && dev == VT_CUDA)
        return nccl_done(d, vt_nccl_broadcast(d->impl->nccl, buf, nbytes, 0, d->timeout_s));
#endif
    if (dev == VT_CPU) return mpi_broadcast_host(d, buf, nbytes);
    return staged(d, buf, nbytes, dev, 0);
#else
    (void)buf;
    (void)dev;
    return vt_error(VT_ERR_INTERNAL, "dist: %d ranks without MPI", d->world);
#endif
}

vt_err vt_dist_barrier(vt_dist *d) {
    vt_err e = check_ready(d, "barrier");
    if (e || d->world == 1) return e;
#if VADER_HAVE_MPI
    MPI_Request req;
    VT_MPI_CHECK(MPI_Ibarrier(comm_of(d), &req));
    return mpi_wait(d, &req, "barrier");
#else
    return vt_error(VT_ERR_INTERNAL, "dist: %d ranks without MPI", d->world);
#endif
}

vt_err vt_dist_allreduce_f64(vt_dist *d, double *v, int n, vt_dist_op op) {
    vt_err e = check_ready(d, "scalar all-reduce");
    if (e) return e;
    if (n < 0) return vt_error(VT_ERR_ARG, "dist scalar all-reduce: n = %d", n);
    if (d->world == 1 || n == 0) return VT_OK;
#if VADER_HAVE_MPI
    MPI_Op mop = op == VT_DIST_MIN ? MPI_MIN : op == VT_DIST_MAX ? MPI_MAX : MPI_SUM;
    MPI_Request req;
    VT_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, mop, comm_of(d), &req));
    e = mpi_wait(d, &req, "scalar all-reduce");
    if (e) return e;
    if (op == VT_DIST_MEAN)
        for (int i = 0; i < n; i++) v[i] /= (double)d->world;
    return VT_OK;
#else
    (void)v;
    (void)op;
    return vt_error(VT_ERR_INTERNAL, "dist: %d ranks without MPI", d->world);
#endif
}

void vt_dist_gathered_free(vt_dist_gathered *g) {
    if (!g) return;
    free(g->sizes);
    free(g->offsets);
    free(g->data);
    memset(g, 0, sizeof *g);
}

vt_err vt_dist_gather(vt_dist *d, const void *data, size_t nbytes, vt_dist_gathered *out) {
    memset(out, 0, sizeof *out);
    vt_err e = check_ready(d, "gather");
    if (e) return e;
    if (nbytes > INT_MAX) return vt_error(VT_ERR_ARG, "dist gather: %zu bytes from one rank (at most INT_MAX)", nbytes);
    int root = d->rank == 0, n = d->world;
    if (root) {
        out->n = n;
        out->sizes = calloc((size_t)n, sizeof *out->sizes);
        out->offsets = calloc((size_t)n, sizeof *out->offsets);
        if (!out->sizes || !out->offsets) {
            vt_dist_gathered_free(out);
            return vt_error(VT_ERR_OOM, "dist gather: tables for %d ranks", n);
        }
    }
    if (n == 1) {
        out->sizes[0] = nbytes;
        out->data = malloc(nbytes ? nbytes : 1);
        if (!out->data) {
            vt_dist_gathered_free(out);
            return vt_error(VT_ERR_OOM, "dist gather: %zu bytes", nbytes);
        }
        if (nbytes) memcpy(out->data, data, nbytes);
        return VT_OK;
    }
#if VADER_HAVE_MPI
    // A rank 0 that cannot receive returns its error before the second collective; the
    // others then wait for it until the program aborts the job (the failure policy in dist.h).
    int mine = (int)nbytes;
    int *counts = NULL, *displs = NULL;
    unsigned char *buf = NULL;
    if (root) {
        counts = calloc((size_t)n, sizeof *counts);
        displs = calloc((size_t)n, sizeof *displs);
        if (!counts || !displs) e = vt_error(VT_ERR_OOM, "dist gather: tables for %d ranks", n);
    }
    MPI_Request req;
    if (!e) {
        int rc = MPI_Igather(&mine, 1, MPI_INT, counts, 1, MPI_INT, 0, comm_of(d), &req);
        e = rc == MPI_SUCCESS ? mpi_wait(d, &req, "gather") : vt_error(VT_ERR_DEVICE, "dist gather: MPI_Igather error %d", rc);
    }
    if (!e && root) {
        size_t total = 0;
        for (int r = 0; r < n; r++) {
            out->sizes[r] = (size_t)counts[r];
            out->offsets[r] = total;
            displs[r] = (int)(total < INT_MAX ? total : INT_MAX);
            total += (size_t)counts[r];
        }
        if (total > INT_MAX) e = vt_error(VT_ERR_ARG, "dist gather: %zu bytes in all (at most INT_MAX)", total);
        else if (!(buf = malloc(total ? total : 1))) e = vt_error(VT_ERR_OOM, "dist gather: %zu bytes", total);
    }
    if (!e) {
        int rc = MPI_Igatherv(data, mine, MPI_BYTE, buf, counts, displs, MPI_BYTE, 0, comm_of(d), &req);
        e = rc == MPI_SUCCESS ? mpi_wait(d, &req, "gather") : vt_error(VT_ERR_DEVICE, "dist gather: MPI_Igatherv error %d", rc);
    }
    free(counts);
    free(displs);
    if (!e && root) out->data = buf;
    else free(buf);
    if (e) vt_dist_gathered_free(out);
    return e;
#else
    return vt_error(VT_ERR_INTERNAL, "dist: %d ranks without MPI", d->world);
#endif
}

void vt_dist_share(int n, int rank, int world, int *begin, int *end) {
    if (n < 0) n = 0;
    if (world < 1) world = 1;
    if (rank < 0) rank = 0;
    if (rank >= world) rank = world - 1;
    int base = n / world, extra = n % world;
    *begin = rank * base + (rank < extra ? rank : extra);
    *end = *begin + base + (rank < extra ? 1 : 0);
}

vt_err vt_dist_gather_f64(vt_dist *d, const double *v, int n, double **all, int *n_all) {
    *all = NULL;
    *n_all = 0;
    if (n < 0) return vt_error(VT_ERR_ARG, "dist gather: n = %d", n);
    vt_dist_gathered g;
    vt_err e = vt_dist_gather(d, v, sizeof(double) * (size_t)n, &g);
    if (e || d->rank != 0) {
        vt_dist_gathered_free(&g);
        return e;
    }
    size_t total = 0;
    for (int r = 0; r < g.n; r++) total += g.sizes[r];
    double *out = malloc(total ? total : 1);
    if (!out) {
        vt_dist_gathered_free(&g);
        return vt_error(VT_ERR_OOM, "dist gather: %zu bytes", total);
    }
    if (total) memcpy(out, g.data, total);  // the ranks' parts are contiguous, in rank order
    vt_dist_gathered_free(&g);
    *all = out;
    *n_all = (int)(total / sizeof(double));
    return VT_OK;
}

uint64_t vt_dist_hash(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

vt_err vt_dist_check_same(vt_dist *d, uint64_t hash, const char *what) {
    vt_err e = check_ready(d, "config check");
    if (e || d->world == 1) return e;
#if VADER_HAVE_MPI
    uint64_t *all = calloc((size_t)d->world, sizeof *all);
    if (!all) return vt_error(VT_ERR_OOM, "dist config check: %d hashes", d->world);
    MPI_Request req;
    int rc = MPI_Iallgather(&hash, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, comm_of(d), &req);
    e = rc == MPI_SUCCESS ? mpi_wait(d, &req, "config check")
                          : vt_error(VT_ERR_DEVICE, "dist config check: MPI_Iallgather error %d", rc);
    if (!e) {
        // Every rank sees the same table, so every rank returns the same verdict and message.
        char msg[1024];
        size_t len = 0;
        int differ = 0;
        for (int r = 1; r < d->world; r++) {
            if (all[r] == all[0]) continue;
            if (!differ++)
                len += (size_t)snprintf(msg + len, sizeof msg - len, "rank 0 has %016llx", (unsigned long long)all[0]);
            if (len < sizeof msg - 64)
                len += (size_t)snprintf(msg + len, sizeof msg - len, ", rank %d has %016llx", r, (unsigned long long)all[r]);
            else if (len < sizeof msg - 4)
                len += (size_t)snprintf(msg + len, sizeof msg - len, ", ...");
        }
        if (differ)
            e = vt_error(VT_ERR_CONFIG, "%s differs between ranks (%d of %d differ from rank 0): %s; start every rank "
                         "with the same config and files", what ? what : "config", differ, d->world, msg);
    }
    free(all);
    return e;
#else
    (void)hash;
    (void)what;
    return vt_error(VT_ERR_INTERNAL, "dist: %d ranks without MPI", d->world);
#endif
}

// ---- flat buffers -------------------------------------------------------------------------
int64_t vt_dist_flat_numel(vt_tensor *const *ts, int n) {
    int64_t total = 0;
    for (int i = 0; i < n; i++)
        if (ts[i]) total += ts[i]->numel;
    return total;
}

static vt_err check_flat(const vt_tensor *flat, int64_t need, const char *what) {
    if (!flat) return vt_error(VT_ERR_ARG, "dist %s: NULL flat buffer", what);
    if (flat->dtype != VT_F32)
        return vt_error(VT_ERR_DTYPE, "dist %s: flat buffer is %s, expected f32", what, vt_dtype_name(flat->dtype));
    if (flat->numel != need)
        return vt_error(VT_ERR_SHAPE, "dist %s: flat buffer has %lld values, the tensors %lld", what,
                        (long long)flat->numel, (long long)need);
    return VT_OK;
}

static vt_err check_part(const vt_tensor *t, int i, const char *what) {
    if (t->dtype != VT_F32)
        return vt_error(VT_ERR_DTYPE, "dist %s: tensor %d is %s, expected f32", what, i, vt_dtype_name(t->dtype));
    return VT_OK;
}

vt_err vt_dist_pack(vt_tensor *const *ts, int n, vt_tensor *flat) {
    vt_err e = check_flat(flat, vt_dist_flat_numel(ts, n), "pack");
    if (e) return e;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        if (!ts[i]) continue;
        if ((e = check_part(ts[i], i, "pack"))) return e;
        e = copy_bytes((char *)vt_data(flat) + off, flat->device, vt_data(ts[i]), ts[i]->device, vt_nbytes(ts[i]));
        if (e) return e;
        off += vt_nbytes(ts[i]);
    }
    return VT_OK;
}

vt_err vt_dist_unpack(const vt_tensor *flat, vt_tensor *const *ts, int n) {
    vt_err e = check_flat(flat, vt_dist_flat_numel(ts, n), "unpack");
    if (e) return e;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        if (!ts[i]) continue;
        if ((e = check_part(ts[i], i, "unpack"))) return e;
        e = copy_bytes(vt_data(ts[i]), ts[i]->device, (const char *)vt_data(flat) + off, flat->device, vt_nbytes(ts[i]));
        if (e) return e;
        off += vt_nbytes(ts[i]);
    }
    return VT_OK;
}

vt_err vt_dist_pack_grads(vt_tensor *const *params, int n, vt_tensor *flat) {
    vt_err e = check_flat(flat, vt_dist_flat_numel(params, n), "pack gradients");
    if (e) return e;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const vt_tensor *p = params[i];
        if (!p) continue;
        size_t nb = (size_t)p->numel * sizeof(float);
        const vt_tensor *g = p->grad;
        vt_tensor *zeros = NULL;
        if (g && (g->dtype != VT_F32 || g->numel != p->numel))
            return vt_error(VT_ERR_SHAPE, "dist pack gradients: parameter %d has %lld values, its %s gradient %lld", i,
                            (long long)p->numel, vt_dtype_name(g->dtype), (long long)g->numel);
        if (!g) {
            g = zeros = vt_zeros(VT_F32, flat->device, p->ndim, p->shape);
            if (!zeros) return vt_error_context("dist pack gradients: ");
        }
        e = copy_bytes((char *)vt_data(flat) + off, flat->device, vt_data(g), g->device, nb);
        vt_release(zeros);
        if (e) return e;
        off += nb;
    }
    return VT_OK;
}

vt_err vt_dist_unpack_grads(const vt_tensor *flat, vt_tensor *const *params, int n) {
    vt_err e = check_flat(flat, vt_dist_flat_numel(params, n), "unpack gradients");
    if (e) return e;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        vt_tensor *p = params[i];
        if (!p) continue;
        size_t nb = (size_t)p->numel * sizeof(float);
        if (!p->grad) {
            p->grad = vt_empty(VT_F32, p->device, p->ndim, p->shape);
            if (!p->grad) return vt_error_context("dist unpack gradients: ");
        } else if (p->grad->dtype != VT_F32 || p->grad->numel != p->numel) {
            return vt_error(VT_ERR_SHAPE, "dist unpack gradients: parameter %d has %lld values, its %s gradient %lld",
                            i, (long long)p->numel, vt_dtype_name(p->grad->dtype), (long long)p->grad->numel);
        }
        e = copy_bytes(vt_data(p->grad), p->grad->device, (const char *)vt_data(flat) + off, flat->device, nb);
        if (e) return e;
        off += nb;
    }
    return VT_OK;
}

vt_err vt_dist_average_grads(vt_dist *d, vt_tensor *const *params, int n, vt_tensor *flat) {
    vt_err e = check_ready(d, "average gradients");
    if (e || d->world == 1) return e;
    if ((e = vt_dist_pack_grads(params, n, flat))) return e;
    if ((e = vt_dist_allreduce_avg_tensor(d, flat))) return e;
    return vt_dist_unpack_grads(flat, params, n);
}

vt_err vt_dist_broadcast_params(vt_dist *d, vt_tensor *const *params, int n, vt_tensor *flat) {
    vt_err e = check_ready(d, "broadcast parameters");
    if (e || d->world == 1) return e;
    if ((e = vt_dist_pack(params, n, flat))) return e;
    if ((e = vt_dist_broadcast(d, vt_data(flat), vt_nbytes(flat), flat->device))) return e;
    return vt_dist_unpack(flat, params, n);
}

// ---- helpers ------------------------------------------------------------------------------
uint64_t vt_dist_seed(uint64_t seed, int rank) {
    if (rank <= 0) return seed;
    // splitmix64 of (seed, rank) under a domain tag: no small rank maps back onto `seed`.
    return vt_hash64(seed ^ 0x6469737472616e6bull /* "distrank" */, (uint64_t)rank);
}

// "a, b, c": the v in [1, batch] with batch divisible by v * other ("none" if there is none).
static void list_valid(char *buf, size_t cap, int batch, int other) {
    size_t len = 0;
    int first = 1;
    buf[0] = 0;
    for (int v = 1; v <= batch && len < cap - 16; v++) {
        long long prod = (long long)v * other;
        if (batch % prod != 0) continue;
        len += (size_t)snprintf(buf + len, cap - len, "%s%d", first ? "" : ", ", v);
        first = 0;
    }
    if (first) snprintf(buf, cap, "none");
}

vt_err vt_dist_check_batch(int batch, int accum, int world, int *micro) {
    if (micro) *micro = 0;
    if (batch < 1) return vt_error(VT_ERR_CONFIG, "batch size %d: must be at least 1", batch);
    if (accum < 1) return vt_error(VT_ERR_CONFIG, "gradient accumulation steps %d: must be at least 1", accum);
    if (world < 1) return vt_error(VT_ERR_CONFIG, "world size %d: must be at least 1", world);
    long long per = (long long)world * accum;
    if (batch % per == 0) {
        if (micro) *micro = (int)(batch / per);
        return VT_OK;
    }
    char worlds[256], accums[256];
    list_valid(worlds, sizeof worlds, batch, accum);
    list_valid(accums, sizeof accums, batch, world);
    return vt_error(VT_ERR_CONFIG,
                    "batch size %d cannot be split over %d rank%s x %d accumulation step%s (%d / (%d x %d) is not a "
                    "whole number >= 1); world sizes that work with %d accumulation step%s: %s; accumulation steps "
                    "that work with %d rank%s: %s",
                    batch, world, world == 1 ? "" : "s", accum, accum == 1 ? "" : "s", batch, world, accum, accum,
                    accum == 1 ? "" : "s", worlds, world, world == 1 ? "" : "s", accums);
}
