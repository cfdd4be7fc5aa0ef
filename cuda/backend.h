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
// Free and total bytes of the current device (cudaMemGetInfo).
vt_err vt_cuda_mem_info(size_t *free_bytes, size_t *total_bytes);

// Optimiser kernels (cuda/optim.cu) on device pointers, f32, n elements.
// AdamW as train/adamw.c's CPU loop (bit-identical arithmetic).
vt_err vt_cuda_adamw_f32(float *w, float *m, float *v, const float *g, int64_t n, float b1, float b2,
                         float step_size, float bc2_sqrt, float eps, float decay);
// *out = sum of g^2 (double accumulation, deterministic order), read back to the host.
vt_err vt_cuda_sumsq_f32(const float *g, int64_t n, double *out);
// g *= s
vt_err vt_cuda_scale_f32(float *g, int64_t n, float s);

#ifdef __cplusplus
}
#endif
