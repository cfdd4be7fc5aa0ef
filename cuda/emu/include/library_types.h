// library_types.h (CUDA emulator) — the data-type enum cuBLAS takes, values as in the toolkit.
#pragma once
typedef enum cudaDataType_t {
    CUDA_R_32F = 0,
    CUDA_R_64F = 1,
    CUDA_R_16F = 2,
    CUDA_R_16BF = 14,
} cudaDataType_t;
typedef cudaDataType_t cudaDataType;
