// dist.h — data-parallel training across processes: one API, three backends.
//  * none: a single process (rank 0 of 1). Used whenever the program was not started by an MPI
//    launcher, so a plain `vader-train cfg.yaml` needs no mpirun and never calls MPI_Init.
//  * mpi:  collectives on CPU buffers with MPI (the CI path: `mpirun -np 2` on a CPU box).
//    Device (cuda) buffers are staged through host memory.
//  * nccl: device buffers go through NCCL (communicator bootstrapped over MPI: rank 0's
//    ncclUniqueId is broadcast with MPI_Bcast); host buffers (scalars, eval results, config
//    hashes) still go through MPI.
// Ranks come from the launcher's environment (Open MPI OMPI_COMM_WORLD_*, MPICH/Hydra
// PMI_RANK / PMI_SIZE / MPI_LOCALRANKID) and are confirmed by MPI after MPI_Init.
//
// Failure handling. Every collective waits with a deadline (timeout_s, default 300 s, or
// $VADER_DIST_TIMEOUT): a peer that died or hangs turns into the error "all-reduce timed out
// after N s waiting for peers" instead of a hang. With abort_on_timeout (the default) the
// collective then calls vt_dist_abort itself, because a collective left half-done cannot be
// recovered. Any other failure is returned as a vt_err; a program that gets one on any rank
// calls vt_dist_abort, which prints "rank R: <message>" and MPI_Abort's the whole job so every
// rank exits non-zero. vt_dist_abort is the only function in the library that ends the
// process.
//
// Every collective must be called by every rank, in the same order, with the same sizes.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "core/vt.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vt_dist_backend { VT_DIST_AUTO = 0, VT_DIST_NONE, VT_DIST_MPI, VT_DIST_NCCL } vt_dist_backend;
const char *vt_dist_backend_name(vt_dist_backend b);  // "auto", "none", "mpi", "nccl"
// Parses "auto" / "none" / "mpi" / "nccl" (config key dist.backend); VT_ERR_CONFIG otherwise.
vt_err vt_dist_backend_parse(const char *s, vt_dist_backend *out);

#define VT_DIST_DEFAULT_TIMEOUT_S 300.0

typedef struct vt_dist_impl vt_dist_impl;
typedef struct vt_dist {
    vt_dist_backend backend;  // resolved: NONE, MPI or NCCL (never AUTO after init)
    int rank, world;          // this process and the number of processes
    int local_rank, local_world;  // among the processes on this node
    int device;               // GPU index this rank should use (-1: no GPU visible)
    double timeout_s;         // watchdog for every collective; <= 0 waits forever
    int abort_on_timeout;     // 1 (default): a timed-out collective calls vt_dist_abort
    const char *launcher;     // "none", "openmpi" or "mpich"
    vt_dist_impl *impl;       // MPI communicator, NCCL communicator (private)
} vt_dist;

// What the launcher put in the environment (no MPI call). launched = 0 when none was found.
typedef struct vt_dist_launch {
    int launched;
    int rank, world, local_rank, local_world;  // -1 where the launcher did not say
    const char *launcher;
} vt_dist_launch;
// Reads a launch from `getenv_fn` (NULL: getenv), so tests can feed a fake environment.
// VT_ERR_CONFIG when the variables are present but malformed (rank >= size, not numbers).
vt_err vt_dist_launch_from_env(vt_dist_launch *out, const char *(*getenv_fn)(const char *name));

// Joins the job. want = AUTO picks NCCL when the program was launched, the build has CUDA
// and MPI and a GPU is visible; MPI when launched without GPUs; NONE when not launched. An
// explicit MPI or NCCL without a launcher is a single process (backend NONE, no MPI_Init);
// an explicit NONE under a launcher with more than one rank is VT_ERR_CONFIG (every process
// would think it is rank 0). VT_ERR_CONFIG too when the build lacks what `want` needs.
// The GPU index is local_rank (one GPU per rank on each node; with a single visible GPU,
// e.g. CUDA_VISIBLE_DEVICES set per rank, it is 0). NCCL needs at least local_world GPUs.
// timeout_s comes from $VADER_DIST_TIMEOUT (seconds) or the 300 s default.
// On error nothing is left initialised (but MPI, once initialised, stays so until exit;
// call vt_dist_abort to end the job).
vt_err vt_dist_init(vt_dist *d, vt_dist_backend want);
// Tears down NCCL, then MPI (MPI_Finalize only if vt_dist_init called MPI_Init). Collective.
vt_err vt_dist_finalize(vt_dist *d);
static inline int vt_dist_is_main(const vt_dist *d) { return d->rank == 0; }

// GPU index for a rank: local_rank when that many GPUs are visible, 0 when exactly one is
// visible, local_rank % ngpus otherwise (oversubscribed; NCCL refuses that); -1 when none.
int vt_dist_gpu_for_rank(int local_rank, int ngpus);

// Prints "rank R: <message>" to stderr and ends the whole job: MPI_Abort(code) when MPI is
// running (every rank of the job exits non-zero), exit(code) otherwise. code 0 becomes 1.
// d may be NULL (the rank is then taken from the launcher's environment, or 0).
__attribute__((noreturn, format(printf, 3, 4))) void vt_dist_abort(const vt_dist *d, int code, const char *fmt, ...);

// ---- collectives --------------------------------------------------------------------------
// In-place average over ranks of n f32 values at buf on dev (cpu or cuda). NCCL: cuda buffers
// with ncclAvg; MPI: MPI_Allreduce(SUM) then * 1/world. NONE: identity.
vt_err vt_dist_allreduce_avg(vt_dist *d, float *buf, size_t n, vt_device dev);
// The same on a contiguous f32 tensor (any shape).
vt_err vt_dist_allreduce_avg_tensor(vt_dist *d, vt_tensor *flat);
// In-place broadcast of nbytes at buf on dev from rank 0 (initial LoRA weights, seeds).
vt_err vt_dist_broadcast(vt_dist *d, void *buf, size_t nbytes, vt_device dev);
vt_err vt_dist_barrier(vt_dist *d);

typedef enum vt_dist_op { VT_DIST_SUM = 0, VT_DIST_MEAN, VT_DIST_MIN, VT_DIST_MAX } vt_dist_op;
// In-place reduction of n doubles on the host (logged reward mean, loss, timings).
vt_err vt_dist_allreduce_f64(vt_dist *d, double *v, int n, vt_dist_op op);

// Variable-length byte blobs gathered on rank 0 (eval prompts' results, in rank order).
typedef struct vt_dist_gathered {
    int n;              // ranks (0 on ranks other than 0)
    size_t *sizes;      // bytes from each rank
    size_t *offsets;    // where each rank's bytes start in data
    unsigned char *data;
} vt_dist_gathered;
// Every rank passes its nbytes at data; rank 0 gets all of them in out (free with
// vt_dist_gathered_free); other ranks get an empty out. At most INT_MAX bytes in all.
vt_err vt_dist_gather(vt_dist *d, const void *data, size_t nbytes, vt_dist_gathered *out);
void vt_dist_gathered_free(vt_dist_gathered *g);
// Items [*begin, *end) of n for `rank` of `world`: contiguous shares in rank order, sizes
// differing by at most one (the first n % world ranks get one more), so concatenating the
// shares in rank order gives 0..n-1 (evaluation prompts over ranks).
void vt_dist_share(int n, int rank, int world, int *begin, int *end);
// Gathers each rank's n doubles to rank 0 in rank order: *all (malloc'd, free it) and *n_all
// on rank 0; NULL and 0 on the other ranks. With vt_dist_share: eval rewards in prompt order.
vt_err vt_dist_gather_f64(vt_dist *d, const double *v, int n, double **all, int *n_all);

// All-gathers a hash (of the resolved config, the LoRA layout, ...) and returns
// VT_ERR_CONFIG on every rank if they differ, naming the ranks:
// "config differs between ranks: rank 0 has 0x..., rank 2 has 0x...".
vt_err vt_dist_check_same(vt_dist *d, uint64_t hash, const char *what);
// FNV-1a 64 of bytes, chained from h (start with VT_DIST_HASH_INIT).
#define VT_DIST_HASH_INIT 0xcbf29ce484222325ull
uint64_t vt_dist_hash(uint64_t h, const void *data, size_t n);

// ---- flat gradient buffers ----------------------------------------------------------------
// Total numel of n f32 tensors (NULL entries count 0).
int64_t vt_dist_flat_numel(vt_tensor *const *ts, int n);
// Copies ts[0..n) one after another into flat (f32, numel == vt_dist_flat_numel); tensors may
// be on any device, flat too. unpack copies back (shapes and order must not change between).
vt_err vt_dist_pack(vt_tensor *const *ts, int n, vt_tensor *flat);
vt_err vt_dist_unpack(const vt_tensor *flat, vt_tensor *const *ts, int n);
// The same for params[i]->grad, laid out by the parameters' sizes: a parameter without a
// gradient packs zeros (every rank contributes the same layout); unpack gives it a gradient
// (f32, on the parameter's device) so ranks stay identical after the average.
vt_err vt_dist_pack_grads(vt_tensor *const *params, int n, vt_tensor *flat);
vt_err vt_dist_unpack_grads(const vt_tensor *flat, vt_tensor *const *params, int n);
// pack_grads + allreduce_avg + unpack_grads through flat (reused across steps; on the device
// the backend wants: cuda for NCCL). The one all-reduce per optimisation step.
vt_err vt_dist_average_grads(vt_dist *d, vt_tensor *const *params, int n, vt_tensor *flat);
// Rank 0's parameter values to every rank (call once after the LoRA init).
vt_err vt_dist_broadcast_params(vt_dist *d, vt_tensor *const *params, int n, vt_tensor *flat);

// ---- helpers ------------------------------------------------------------------------------
// Per-rank seed: rank 0 keeps `seed` (a one-process run is unchanged), other ranks get
// well-mixed, distinct, deterministic seeds derived from (seed, rank).
uint64_t vt_dist_seed(uint64_t seed, int rank);
// Splits a global batch (samples per optimisation step) over `world` ranks and `accum`
// gradient-accumulation steps: *micro = batch / (world * accum) per rank and micro-step.
// VT_ERR_CONFIG when that is not a whole number >= 1, listing the world sizes (and
// accumulation steps) that would work. micro may be NULL.
vt_err vt_dist_check_batch(int batch, int accum, int world, int *micro);

#ifdef __cplusplus
}
#endif
