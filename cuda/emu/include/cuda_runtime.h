// cuda_runtime.h (CUDA emulator) — what cuda/*.cu needs of the CUDA runtime, for a host C++
// compiler. Kernels become plain functions; each launch (rewritten from `k<<<g, b, s>>>(...)` by
// cuda/emu/rewrite.cmake into vt_emu_launch) runs every block in turn, the threads of a block as
// fibers on one host thread, so __syncthreads and warp shuffles are real rendezvous points: a
// thread runs until it reaches one, and a missing barrier shows up as a read of data not yet
// written. "Device" memory is host memory obtained from cudaMalloc (cuda/emu/runtime.cpp), so
// the tests can read it only through cudaMemcpy as on a GPU (it is checked there).
//
// Not emulated: real parallelism inside a warp (lanes run one after another between
// rendezvous), performance, streams (everything is synchronous), multiple devices.
#pragma once
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- CUDA C++ qualifiers on the host ------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
// Blocks run one at a time, so a function-local static is one block's shared memory. They all
// live in one section, which the emulator fills with 0xff (NaN) before every block: a read of a
// slot the block has not written yet gives NaN, not a value left by an earlier block or launch.
#define __shared__ static __attribute__((section("vt_emu_shared")))

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
// The running fiber's coordinates, set by the scheduler at every switch (runtime.cpp).
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

// ---- errors, streams, events --------------------------------------------------------------
typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevice = 101,
    cudaErrorNoDevice = 100,
    cudaErrorNotReady = 600,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchFailure = 719,
} cudaError_t;

#ifndef VT_EMU_STREAM_T
#define VT_EMU_STREAM_T
struct CUstream_st;
typedef struct CUstream_st *cudaStream_t;
#endif
struct CUevent_st;
typedef struct CUevent_st *cudaEvent_t;
#define cudaStreamLegacy ((cudaStream_t)0x1)
#define cudaStreamNonBlocking 0x1
#define cudaEventDisableTiming 0x2

typedef enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
} cudaMemcpyKind;

enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaMalloc(void **p, size_t n);
cudaError_t cudaFree(void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s = 0);
cudaError_t cudaMemset(void *p, int v, size_t n);
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s = 0);
cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamQuery(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = 0);
cudaError_t cudaEventDestroy(cudaEvent_t e);

// ---- kernel launches ----------------------------------------------------------------------
struct vt_emu_cfg {
    dim3 grid, block;
    size_t smem;
    vt_emu_cfg(dim3 g, dim3 b, size_t s = 0, cudaStream_t = 0) : grid(g), block(b), smem(s) {}
};
// Runs body(ctx) as every thread of every block of the launch; launch-configuration errors
// become the sticky cudaGetLastError, as on a GPU. key identifies the kernel (its address) for
// cudaFuncSetAttribute.
void vt_emu_run(const char *name, const void *key, const vt_emu_cfg &cfg, void (*body)(void *), void *ctx);
cudaError_t vt_emu_set_max_dynamic_smem(const void *key, int bytes);
// The block's dynamic shared memory (`extern __shared__ T name[]`, rewritten).
void *vt_emu_dyn_smem(void);

// The arguments are converted to the kernel's parameter types once, as a launch copies them.
template <typename... P, typename... A>
void vt_emu_launch(const char *name, const vt_emu_cfg &cfg, void (*kernel)(P...), A &&...args) {
    struct call {
        void (*kernel)(P...);
        std::tuple<typename std::decay<P>::type...> args;
        static void run(void *p) {
            call *c = (call *)p;
            std::apply(c->kernel, c->args);
        }
    } c{kernel, {std::forward<A>(args)...}};
    vt_emu_run(name, (const void *)kernel, cfg, call::run, &c);
}

template <typename... P> cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
    return vt_emu_set_max_dynamic_smem((const void *)kernel, value);
}

// ---- device-side intrinsics ---------------------------------------------------------------
void __syncthreads(void);
void __syncwarp(unsigned mask = 0xffffffffu);
// One rendezvous of the warp's lanes in mask: every lane deposits 8 bytes and gets those of
// lane src_lane (its own when src_lane is outside the warp's lanes). vt_emu_lane: the running
// thread's lane (linear thread index mod 32).
uint64_t vt_emu_warp_exchange(unsigned mask, uint64_t mine, int src_lane);
int vt_emu_lane(void);

template <typename T> T vt_emu_shuffle(unsigned mask, T v, int src_lane) {
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    bits = vt_emu_warp_exchange(mask, bits, src_lane);
    T r;
    memcpy(&r, &bits, sizeof(T));
    return r;
}
template <typename T> T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    const int lane = vt_emu_lane();
    int src = lane ^ lane_mask;
    if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;  // outside this lane's segment
    return vt_emu_shuffle(mask, v, src);
}
template <typename T> T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
    const int lane = vt_emu_lane();
    return vt_emu_shuffle(mask, v, (lane & ~(width - 1)) + (src_lane & (width - 1)));
}
template <typename T> T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = vt_emu_lane();
    const int src = lane + (int)delta;
    return vt_emu_shuffle(mask, v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}

// Atomics: the fibers of a launch share one host thread, so a plain read-modify-write is atomic.
template <typename T> T atomicAdd(T *p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}
template <typename T> T atomicMax(T *p, T v) {
    T old = *p;
    if (v > old) *p = v;
    return old;
}
template <typename T> T atomicMin(T *p, T v) {
    T old = *p;
    if (v < old) *p = v;
    return old;
}
template <typename T> T atomicExch(T *p, T v) {
    T old = *p;
    *p = v;
    return old;
}
template <typename T> T atomicCAS(T *p, T cmp, T v) {
    T old = *p;
    if (old == cmp) *p = v;
    return old;
}
template <typename T> T __ldg(const T *p) { return *p; }
static inline void __threadfence(void) {}

// CUDA's overloaded min / max (float ones as fminf / fmaxf) and the fast-math spellings
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline float min(float a, float b) { return fminf(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long max(long a, long b) { return a > b ? a : b; }
static inline long min(long a, long b) { return a < b ? a : b; }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }
