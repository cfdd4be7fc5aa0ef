// nccl.h (CUDA emulator) — NCCL's types so cuda/dist_nccl.cu compiles; every call fails with
// ncclInvalidUsage ("not available in the CUDA emulator"): multi-process runs go through MPI.
#pragma once
#include <stddef.h>
#include "cuda_runtime.h"

#define NCCL_UNIQUE_ID_BYTES 128
#define NCCL_VERSION(X, Y, Z) ((X) * 10000 + (Y) * 100 + (Z))
#define NCCL_VERSION_CODE NCCL_VERSION(2, 21, 0)

typedef enum {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
    ncclRemoteError = 6,
    ncclInProgress = 7,
} ncclResult_t;
typedef enum { ncclSum = 0, ncclProd = 1, ncclMax = 2, ncclMin = 3, ncclAvg = 4 } ncclRedOp_t;
typedef enum { ncclUint8 = 1, ncclFloat32 = 7, ncclFloat = 7 } ncclDataType_t;
typedef struct {
    char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;
struct ncclComm;
typedef struct ncclComm *ncclComm_t;

static inline const char *ncclGetErrorString(ncclResult_t) { return "NCCL is not available in the CUDA emulator"; }
static inline ncclResult_t ncclGetUniqueId(ncclUniqueId *) { return ncclInvalidUsage; }
static inline ncclResult_t ncclCommInitRank(ncclComm_t *c, int, ncclUniqueId, int) {
    *c = NULL;
    return ncclInvalidUsage;
}
static inline ncclResult_t ncclCommDestroy(ncclComm_t) { return ncclInvalidUsage; }
static inline ncclResult_t ncclCommAbort(ncclComm_t) { return ncclInvalidUsage; }
static inline ncclResult_t ncclCommGetAsyncError(ncclComm_t, ncclResult_t *r) {
    *r = ncclInvalidUsage;
    return ncclInvalidUsage;
}
static inline ncclResult_t ncclAllReduce(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t,
                                         cudaStream_t) {
    return ncclInvalidUsage;
}
static inline ncclResult_t ncclBroadcast(const void *, void *, size_t, ncclDataType_t, int, ncclComm_t,
                                         cudaStream_t) {
    return ncclInvalidUsage;
}
