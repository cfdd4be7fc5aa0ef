// dist_nccl.cu — NCCL communicator and the two collectives the trainer needs on the GPU
// (gradient average, weight broadcast). See dist_nccl.h; the MPI side is train/dist.c.
#include <nccl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cuda/check.cuh"
#include "cuda/dist_nccl.h"

static_assert(VT_NCCL_ID_BYTES == NCCL_UNIQUE_ID_BYTES, "ncclUniqueId size changed");
static_assert(NCCL_VERSION_CODE >= NCCL_VERSION(2, 14, 0), "ncclAvg and ncclInProgress need NCCL >= 2.14");

struct vt_nccl {
    ncclComm_t comm;  // NULL once aborted
    cudaStream_t stream;
    int rank, world, device;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_us(long us) {
    struct timespec ts = {0, us * 1000L};
    nanosleep(&ts, nullptr);
}

extern "C" vt_err vt_nccl_unique_id(unsigned char id[VT_NCCL_ID_BYTES]) {
    ncclUniqueId uid;
    VT_NCCL_CHECK(ncclGetUniqueId(&uid));
    memcpy(id, uid.internal, VT_NCCL_ID_BYTES);
    return VT_OK;
}

extern "C" vt_err vt_nccl_create(vt_nccl **out, const unsigned char id[VT_NCCL_ID_BYTES], int world, int rank,
                                 int device) {
    *out = nullptr;
    if (world < 1 || rank < 0 || rank >= world || device < 0)
        return vt_error(VT_ERR_ARG, "nccl: rank %d of %d on device %d", rank, world, device);
    VT_CUDA_CHECK(cudaSetDevice(device));
    vt_nccl *c = (vt_nccl *)calloc(1, sizeof *c);
    if (!c) return vt_error(VT_ERR_OOM, "nccl: communicator state");
    c->rank = rank;
    c->world = world;
    c->device = device;
    cudaError_t ce = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (ce != cudaSuccess) {
        free(c);
        return vt_error(VT_ERR_DEVICE, "nccl: cudaStreamCreate on device %d: %s", device, cudaGetErrorString(ce));
    }
    ncclUniqueId uid;
    memcpy(uid.internal, id, VT_NCCL_ID_BYTES);
    ncclResult_t r = ncclCommInitRank(&c->comm, world, uid, rank);
    if (r != ncclSuccess) {
        cudaStreamDestroy(c->stream);
        free(c);
        return vt_error(VT_ERR_DEVICE, "nccl: ncclCommInitRank (rank %d of %d, device %d): %s", rank, world, device,
                        ncclGetErrorString(r));
    }
    *out = c;
    return VT_OK;
}

// Waits for the collective just enqueued on c->stream: done, failed (async NCCL error) or
// past the deadline. The stream is non-blocking, so the caller's work on the legacy default
// stream is ordered by the event recorded before the collective (see enqueue_after_default).
static vt_err wait_collective(vt_nccl *c, const char *what, double timeout_s) {
    double t0 = now_s();
    long us = 10;
    for (;;) {
        cudaError_t q = cudaStreamQuery(c->stream);
        if (q == cudaSuccess) return VT_OK;
        if (q != cudaErrorNotReady) {
            vt_nccl_abort(c);
            return vt_error(VT_ERR_DEVICE, "%s: CUDA error while waiting: %s", what, cudaGetErrorString(q));
        }
        ncclResult_t async = ncclSuccess;
        VT_NCCL_CHECK(ncclCommGetAsyncError(c->comm, &async));
        if (async != ncclSuccess && async != ncclInProgress) {
            vt_nccl_abort(c);
            return vt_error(VT_ERR_DEVICE, "%s failed: %s", what, ncclGetErrorString(async));
        }
        if (timeout_s > 0 && now_s() - t0 > timeout_s) {
            vt_nccl_abort(c);
            return vt_error(VT_ERR_DEVICE, "%s timed out after %g s waiting for peers", what, timeout_s);
        }
        sleep_us(us);
        if (us < 1000) us *= 2;
    }
}

// The gradients were written on the legacy default stream: make c->stream wait for them.
static vt_err enqueue_after_default(vt_nccl *c) {
    cudaEvent_t ev;
    VT_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    cudaError_t e = cudaEventRecord(ev, cudaStreamLegacy);
    if (e == cudaSuccess) e = cudaStreamWaitEvent(c->stream, ev, 0);
    cudaEventDestroy(ev);
    VT_CUDA_CHECK(e);
    return VT_OK;
}

static vt_err usable(const vt_nccl *c, const char *what) {
    if (!c) return vt_error(VT_ERR_ARG, "%s: no NCCL communicator", what);
    if (!c->comm) return vt_error(VT_ERR_DEVICE, "%s: the NCCL communicator was aborted by an earlier failure", what);
    return VT_OK;
}

extern "C" vt_err vt_nccl_allreduce_avg(vt_nccl *c, float *dev_buf, size_t n, double timeout_s) {
    vt_err e = usable(c, "all-reduce");
    if (e) return e;
    if (n == 0) return VT_OK;
    VT_CUDA_CHECK(cudaSetDevice(c->device));
    e = enqueue_after_default(c);
    if (e) return e;
    VT_NCCL_CHECK(ncclAllReduce(dev_buf, dev_buf, n, ncclFloat32, ncclAvg, c->comm, c->stream));
    return wait_collective(c, "all-reduce", timeout_s);
}

extern "C" vt_err vt_nccl_broadcast(vt_nccl *c, void *dev_buf, size_t nbytes, int root, double timeout_s) {
    vt_err e = usable(c, "broadcast");
    if (e) return e;
    if (nbytes == 0) return VT_OK;
    VT_CUDA_CHECK(cudaSetDevice(c->device));
    e = enqueue_after_default(c);
    if (e) return e;
    VT_NCCL_CHECK(ncclBroadcast(dev_buf, dev_buf, nbytes, ncclUint8, root, c->comm, c->stream));
    return wait_collective(c, "broadcast", timeout_s);
}

extern "C" void vt_nccl_abort(vt_nccl *c) {
    if (!c || !c->comm) return;
    (void)ncclCommAbort(c->comm);  // best effort: we are already failing
    c->comm = nullptr;
}

extern "C" vt_err vt_nccl_destroy(vt_nccl *c) {
    if (!c) return VT_OK;
    ncclResult_t r = ncclSuccess;
    if (c->comm) r = ncclCommDestroy(c->comm);
    cudaStreamDestroy(c->stream);
    free(c);
    if (r != ncclSuccess) return vt_error(VT_ERR_DEVICE, "nccl: ncclCommDestroy: %s", ncclGetErrorString(r));
    return VT_OK;
}
