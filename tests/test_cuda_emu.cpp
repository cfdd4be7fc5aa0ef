// test_cuda_emu.cpp — the CUDA emulator (cuda/emu) itself: barriers and shuffles give the
// results a GPU gives, and the faults it exists to catch are caught (a missing barrier, a
// barrier some threads never reach, a bad launch, a copy of the wrong kind). Only in
// -DVADER_CUDA=EMU builds; the kernels here are launched with vt_emu_launch, which is what the
// emulator's rewrite makes of `k<<<g, b>>>(...)` in cuda/*.cu.
#include <gtest/gtest.h>
#ifdef VADER_CUDA_EMU
#include <cuda_runtime.h>
#include <vector>

namespace {

// out[block] = sum of in[block * blockDim + t] over the block: a shuffle tree per warp, then
// the warp totals through shared memory (the shape of cuda/common.cuh's vt_block_sum).
__global__ void block_sum_kernel(const float *in, float *out) {
    __shared__ float part[32];
    float v = in[blockIdx.x * blockDim.x + threadIdx.x];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (lane == 0) part[w] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0;
        for (int i = 0; i < nw; i++) s += part[i];
        out[blockIdx.x] = s;
    }
}

// out[t] = what thread t + 1 wrote to shared memory, with or without the barrier between.
__global__ void neighbour_kernel(float *out, int with_barrier) {
    __shared__ float s[256];
    s[threadIdx.x] = (float)threadIdx.x;
    if (with_barrier) __syncthreads();
    out[threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}

// Lane 0 waits at __syncthreads while lanes 1..31 wait for it at a shuffle: never released.
__global__ void deadlock_kernel(float *out) {
    float v = (float)threadIdx.x;
    if (threadIdx.x == 0)
        __syncthreads();
    else
        v = __shfl_xor_sync(0xffffffffu, v, 1);
    out[threadIdx.x] = v;
}

__global__ void dyn_smem_kernel(float *out) {
    float *smem = (float *)vt_emu_dyn_smem();
    smem[threadIdx.x] = 1.0f;
    __syncthreads();
    out[threadIdx.x] = smem[blockDim.x - 1 - threadIdx.x];
}

float *DeviceCopy(const std::vector<float> &h) {
    void *d = nullptr;
    EXPECT_EQ(cudaMalloc(&d, h.size() * sizeof(float)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    return (float *)d;
}

std::vector<float> HostCopy(const float *d, size_t n) {
    std::vector<float> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
}

}  // namespace

TEST(CudaEmu, BlockSumOverShufflesAndSharedMemory) {
    const int blocks = 3, threads = 96;  // three warps a block
    std::vector<float> in(blocks * threads);
    for (size_t i = 0; i < in.size(); i++) in[i] = (float)(i % 7) - 2.5f;
    float *din = DeviceCopy(in), *dout = DeviceCopy(std::vector<float>(blocks));
    vt_emu_launch("block_sum_kernel", vt_emu_cfg(blocks, threads), block_sum_kernel, din, dout);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    std::vector<float> out = HostCopy(dout, blocks);
    for (int b = 0; b < blocks; b++) {
        float want = 0;
        for (int t = 0; t < threads; t++) want += in[b * threads + t];
        EXPECT_FLOAT_EQ(out[b], want) << "block " << b;
    }
    cudaFree(din);
    cudaFree(dout);
}

// The emulator's race check: without the barrier thread t reads its neighbour's slot before the
// neighbour has run, so it gets never-written shared memory (NaN) where a GPU would most often
// give the neighbour's value; with the barrier every thread sees its neighbour's write.
TEST(CudaEmu, MissingBarrierReadsUnwrittenSharedMemory) {
    const int n = 64;
    float *d = DeviceCopy(std::vector<float>(n));
    vt_emu_launch("neighbour_kernel", vt_emu_cfg(1, n), neighbour_kernel, d, 1);
    vt_emu_launch("neighbour_kernel", vt_emu_cfg(1, n), neighbour_kernel, d, 0);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    std::vector<float> out = HostCopy(d, n);
    int wrong = 0;
    for (int t = 0; t < n; t++) wrong += out[t] != (float)((t + 1) % n);
    EXPECT_EQ(wrong, n - 1) << "a missing __syncthreads went unnoticed (shared memory kept between launches?)";
    vt_emu_launch("neighbour_kernel", vt_emu_cfg(1, n), neighbour_kernel, d, 1);
    out = HostCopy(d, n);
    for (int t = 0; t < n; t++) EXPECT_EQ(out[t], (float)((t + 1) % n)) << t;
    cudaFree(d);
}

TEST(CudaEmu, DivergentBarrierIsReportedAsADeadlock) {
    float *d = DeviceCopy(std::vector<float>(32));
    vt_emu_launch("deadlock_kernel", vt_emu_cfg(1, 32), deadlock_kernel, d);
    EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // read once, as a launch error
    cudaFree(d);
}

TEST(CudaEmu, LaunchLimitsAreAGpusLimits) {
    float *d = DeviceCopy(std::vector<float>(2048));
    vt_emu_launch("neighbour_kernel", vt_emu_cfg(1, 2048), neighbour_kernel, d, 1);
    EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
    vt_emu_launch("neighbour_kernel", vt_emu_cfg(dim3(1, 70000), 32), neighbour_kernel, d, 1);
    EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
    // dynamic shared memory above 48 KiB only after cudaFuncSetAttribute
    const size_t big = 64 << 10;
    vt_emu_launch("dyn_smem_kernel", vt_emu_cfg(1, 128, big), dyn_smem_kernel, d);
    EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
    ASSERT_EQ(cudaFuncSetAttribute(dyn_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)big),
              cudaSuccess);
    vt_emu_launch("dyn_smem_kernel", vt_emu_cfg(1, 128, big), dyn_smem_kernel, d);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
    std::vector<float> out = HostCopy(d, 128);
    for (float v : out) EXPECT_EQ(v, 1.0f);
    cudaFree(d);
}

TEST(CudaEmu, CopiesCheckTheirKindAndBounds) {
    std::vector<float> host(16, 1.0f), other(16);
    float *d = DeviceCopy(host);
    EXPECT_EQ(cudaMemcpy(other.data(), host.data(), 64, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
    EXPECT_EQ(cudaMemcpy(other.data(), d, 64, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
    EXPECT_EQ(cudaMemcpy(other.data(), d, 65, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);  // past the end
    EXPECT_EQ(cudaMemcpy(other.data(), d, 64, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(other[15], 1.0f);
    EXPECT_EQ(cudaMemset(host.data(), 0, 4), cudaErrorInvalidValue);
    EXPECT_EQ(cudaFree(host.data()), cudaErrorInvalidValue);
    // fresh device memory reads as NaN, never as a convenient zero
    void *fresh = nullptr;
    ASSERT_EQ(cudaMalloc(&fresh, 16), cudaSuccess);
    float f[4];
    ASSERT_EQ(cudaMemcpy(f, fresh, 16, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_TRUE(f[0] != f[0]);
    cudaFree(fresh);
    cudaFree(d);
}

#else
TEST(CudaEmu, Skipped) { GTEST_SKIP() << "not an emulator build (-DVADER_CUDA=EMU): emulator tests skipped"; }
#endif
