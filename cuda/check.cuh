// check.cuh — a check macro around every CUDA / cuBLAS / cuDNN / NCCL call. Library code
// never exits: a failure sets the vader error (file, line, the call, the library's message)
// and returns it from the enclosing function, which must return vt_err.
#pragma once
#include <cuda_runtime.h>
#include "core/error.h"

#define VT_CUDA_CHECK(call)                                                                       \
    do {                                                                                          \
        cudaError_t vt_e_ = (call);                                                               \
        if (vt_e_ != cudaSuccess)                                                                 \
            return vt_error(VT_ERR_DEVICE, "%s:%d: %s: %s", __FILE__, __LINE__, #call,           \
                            cudaGetErrorString(vt_e_));                                           \
    } while (0)

// After a kernel launch: launch-configuration errors surface here.
#define VT_CUDA_CHECK_LAUNCH() VT_CUDA_CHECK(cudaGetLastError())

#define VT_CUBLAS_CHECK(call)                                                                     \
    do {                                                                                          \
        cublasStatus_t vt_s_ = (call);                                                            \
        if (vt_s_ != CUBLAS_STATUS_SUCCESS)                                                       \
            return vt_error(VT_ERR_DEVICE, "%s:%d: %s: cuBLAS status %d", __FILE__, __LINE__,    \
                            #call, (int)vt_s_);                                                   \
    } while (0)

#define VT_CUDNN_CHECK(call)                                                                      \
    do {                                                                                          \
        cudnnStatus_t vt_s_ = (call);                                                             \
        if (vt_s_ != CUDNN_STATUS_SUCCESS)                                                        \
            return vt_error(VT_ERR_DEVICE, "%s:%d: %s: %s", __FILE__, __LINE__, #call,           \
                            cudnnGetErrorString(vt_s_));                                          \
    } while (0)

#define VT_NCCL_CHECK(call)                                                                       \
    do {                                                                                          \
        ncclResult_t vt_r_ = (call);                                                              \
        if (vt_r_ != ncclSuccess)                                                                 \
            return vt_error(VT_ERR_DEVICE, "%s:%d: %s: %s", __FILE__, __LINE__, #call,           \
                            ncclGetErrorString(vt_r_));                                           \
    } while (0)

// Grid size for n elements at 256 threads a block, capped (kernels use grid-stride loops).
static inline unsigned vt_grid_1d(long long n) {
    long long b = (n + 255) / 256;
    return (unsigned)(b < 1 ? 1 : b > 65535LL * 16 ? 65535LL * 16 : b);
}
