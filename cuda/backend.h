// backend.h — the CUDA backend's C entry points (implemented in cuda/*.cu; present only when
// the build has VADER_HAVE_CUDA). core reaches the GPU through hooks these install.
#pragma once
#include "core/vt.h"

#ifdef __cplusplus
extern "C" {
#endif

// Number of usable CUDA devices (0 when no driver or no GPU; never an error).
int vt_cuda_device_count(void);
// Selects device, installs the allocator, copy and accumulate hooks and registers every CUDA
// kernel. VT_ERR_DEVICE (with the driver's reason) when there is no usable GPU.
vt_err vt_cuda_init(int device);
vt_err vt_cuda_synchronize(void);

#ifdef __cplusplus
}
#endif
