// cuda_fp16.h (CUDA emulator) — __half as 16 bits with round-to-nearest-even conversions,
// computed by core's vt_f32_to_f16 / vt_f16_to_f32 (the CPU backend's own).
#pragma once
#include "core/tensor.h"

struct __half {
    uint16_t __x;
};
static inline float __half2float(__half h) { return vt_f16_to_f32(h.__x); }
static inline __half __float2half_rn(float f) { return __half{vt_f32_to_f16(f)}; }
static inline __half __float2half(float f) { return __float2half_rn(f); }
