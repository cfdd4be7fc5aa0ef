// device.cu — CUDA device set-up: the allocator behind vt_storage (cached by core's
// allocator), host<->device copies, gradient accumulation, kernel registration.
#include "cuda/backend.h"
#include "cuda/check.cuh"
#include "cuda/device_query.h"
#include "cuda/common.cuh"

extern "C" {
extern vt_err (*vt_device_copy_hook)(void *dst, vt_device ddev, const void *src, vt_device sdev, size_t n);
extern vt_err (*vt_cuda_accumulate_hook)(vt_tensor *dst, const vt_tensor *src);
vt_err vt_cuda_register_elementwise(void);
vt_err vt_cuda_register_linear(void);
vt_err vt_cuda_register_activation(void);
vt_err vt_cuda_register_norm(void);
vt_err vt_cuda_register_softmax_attention(void);
vt_err vt_cuda_register_conv(void);
vt_err vt_cuda_register_shape(void);
vt_err vt_cuda_register_resize(void);
vt_err vt_cuda_register_image(void);
}

// ---- library handles (created on first use, after vt_cuda_init picked the device) ----------
// One cuBLAS and one cuDNN handle per process, on the legacy default stream, bound to the device
// current when they were created. Every op runs on the thread that called vt_cuda_init (the
// trainer, the tests and the programs are single-threaded on the GPU side; OpenMP threads run
// CPU ops only): a thread whose current device differs would get handles of another device, so
// a second host thread issuing ops needs its own cudaSetDevice first.
static cublasHandle_t g_cublas;
static cudnnHandle_t g_cudnn;

vt_err vt_cuda_cublas(cublasHandle_t *h) {
    if (!g_cublas) {
        VT_CUBLAS_CHECK(cublasCreate(&g_cublas));
        // FP32 GEMMs stay FP32 (no TF32): the CPU reference is matched at 1e-5.
        VT_CUBLAS_CHECK(cublasSetMathMode(g_cublas, CUBLAS_DEFAULT_MATH));
    }
    *h = g_cublas;
    return VT_OK;
}

vt_err vt_cuda_cudnn(cudnnHandle_t *h) {
    if (!g_cudnn) VT_CUDNN_CHECK(cudnnCreate(&g_cudnn));
    *h = g_cudnn;
    return VT_OK;
}

static void *cuda_alloc(size_t n) {
    void *p = nullptr;
    if (cudaMalloc(&p, n ? n : 256) != cudaSuccess) {
        (void)cudaGetLastError();  // clear the sticky-free OOM error; core reports OOM
        return nullptr;
    }
    return p;
}

static void cuda_free(void *p, size_t) { cudaFree(p); }

static vt_err cuda_copy(void *dst, vt_device ddev, const void *src, vt_device sdev, size_t n) {
    cudaMemcpyKind kind = ddev == VT_CUDA ? (sdev == VT_CUDA ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                          : (sdev == VT_CUDA ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
    VT_CUDA_CHECK(cudaMemcpy(dst, src, n, kind));
    return VT_OK;
}

// dst += src (f32): the tape's add-or-set on the GPU.
__global__ void accumulate_f32_kernel(float *dst, const float *src, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        dst[i] += src[i];
}

static vt_err cuda_accumulate(vt_tensor *dst, const vt_tensor *src) {
    if (dst->dtype != VT_F32) return vt_error(VT_ERR_DTYPE, "accumulate: cuda gradients are f32 for now");
    accumulate_f32_kernel<<<vt_grid_1d(dst->numel), 256>>>(vt_f32(dst), vt_f32(src), dst->numel);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

extern "C" int vt_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" vt_err vt_cuda_init(int device) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        return vt_error(VT_ERR_DEVICE, "no CUDA device: %s", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    if (device < 0 || device >= n) return vt_error(VT_ERR_DEVICE, "CUDA device %d asked, %d present", device, n);
    VT_CUDA_CHECK(cudaSetDevice(device));
    vt_set_device_allocator(VT_CUDA, vt_allocator{cuda_alloc, cuda_free});
    vt_device_copy_hook = cuda_copy;
    vt_cuda_accumulate_hook = cuda_accumulate;
    vt_err (*const reg[])(void) = {vt_cuda_register_elementwise, vt_cuda_register_linear,
                                   vt_cuda_register_activation,  vt_cuda_register_norm,
                                   vt_cuda_register_softmax_attention, vt_cuda_register_conv,
                                   vt_cuda_register_shape,       vt_cuda_register_resize,
                                   vt_cuda_register_image};
    for (auto r : reg)
        if (r() != VT_OK) return vt_error_code();
    return VT_OK;
}

extern "C" vt_err vt_cuda_synchronize(void) {
    VT_CUDA_CHECK(cudaDeviceSynchronize());
    return VT_OK;
}

extern "C" vt_err vt_cuda_mem_info(size_t *free_bytes, size_t *total_bytes) {
    VT_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
    return VT_OK;
}

extern "C" vt_err vt_cuda_device_mem_info(int device, size_t *free_bytes, size_t *total_bytes) {
    *free_bytes = *total_bytes = 0;
    const int n = vt_cuda_device_count();
    if (device < 0 || device >= n) return vt_error(VT_ERR_DEVICE, "CUDA device %d asked, %d present", device, n);
    VT_CUDA_CHECK(cudaSetDevice(device));
    VT_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
    return VT_OK;
}
