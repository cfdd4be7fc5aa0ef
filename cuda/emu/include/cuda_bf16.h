// cuda_bf16.h (CUDA emulator) — __nv_bfloat16 as 16 bits with the toolkit's round-to-nearest-even
// conversions, computed by core's vt_f32_to_bf16 / vt_bf16_to_f32 (the CPU backend's own).
#pragma once
#include "core/tensor.h"

struct __nv_bfloat16 {
    uint16_t __x;
};
static inline float __bfloat162float(__nv_bfloat16 h) { return vt_bf16_to_f32(h.__x); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{vt_f32_to_bf16(f)}; }
static inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
