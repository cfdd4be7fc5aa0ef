// dist_nccl.h — the NCCL half of train/dist (present only when the build has
// VADER_HAVE_CUDA). MPI-free on purpose: train/dist.c makes the unique id on rank 0, broadcasts
// its bytes over MPI and then creates the communicator here. Every collective runs on the
// communicator's own stream and is waited for by polling the stream and
// ncclCommGetAsyncError against a deadline, so a dead or stuck peer becomes an error (and the
// communicator is aborted) instead of a hang.
#pragma once
#include <stddef.h>
#include "core/vt.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VT_NCCL_ID_BYTES 128  // == NCCL_UNIQUE_ID_BYTES (checked in dist_nccl.cu)

typedef struct vt_nccl vt_nccl;

// A fresh ncclUniqueId (call on rank 0 only, then broadcast the bytes to every rank).
vt_err vt_nccl_unique_id(unsigned char id[VT_NCCL_ID_BYTES]);
// Selects `device` and joins the communicator of `world` ranks identified by id.
vt_err vt_nccl_create(vt_nccl **out, const unsigned char id[VT_NCCL_ID_BYTES], int world, int rank,
                      int device);
// In-place average (ncclAvg) of n f32 values in device memory. timeout_s <= 0 waits forever.
// A timeout or an asynchronous NCCL error aborts the communicator and returns VT_ERR_DEVICE;
// the message names `what` ("all-reduce timed out after 300 s waiting for peers").
vt_err vt_nccl_allreduce_avg(vt_nccl *c, float *dev_buf, size_t n, double timeout_s);
// In-place broadcast of nbytes of device memory from root.
vt_err vt_nccl_broadcast(vt_nccl *c, void *dev_buf, size_t nbytes, int root, double timeout_s);
// Aborts the communicator (never blocks on peers) and frees it. NULL is a no-op.
void vt_nccl_abort(vt_nccl *c);
// Orderly teardown (all ranks); frees c. NULL is a no-op.
vt_err vt_nccl_destroy(vt_nccl *c);

#ifdef __cplusplus
}
#endif
