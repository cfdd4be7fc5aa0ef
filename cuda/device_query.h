// device_query.h — what host code asks of the GPU before the CUDA backend is initialised (the
// memory plan, device selection), callable from every build: with the CUDA backend
// (VADER_HAVE_CUDA) these are cuda/device.cu's functions, without it inline stubs that answer
// "no GPU" without touching any CUDA library.
#pragma once
#include <stddef.h>
#include "core/error.h"

#ifdef VADER_HAVE_CUDA
#include "cuda/backend.h"  // vt_cuda_device_count

#ifdef __cplusplus
extern "C" {
#endif
// Free and total bytes of CUDA device `device` (cudaMemGetInfo). Makes `device` the current
// device first, so the context this creates is on the GPU the run will use, never on GPU 0 of
// a multi-GPU node by accident. VT_ERR_DEVICE (with the driver's reason) when it is not there.
vt_err vt_cuda_device_mem_info(int device, size_t *free_bytes, size_t *total_bytes);
#ifdef __cplusplus
}
#endif

#else  // no CUDA backend in this build

static inline int vt_cuda_device_count(void) { return 0; }
static inline vt_err vt_cuda_device_mem_info(int device, size_t *free_bytes, size_t *total_bytes) {
    *free_bytes = *total_bytes = 0;
    return vt_error(VT_ERR_DEVICE, "CUDA device %d: this build has no CUDA backend (configure with -DVADER_CUDA=ON)",
                    device);
}

#endif
