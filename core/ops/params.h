// params.h — parameter structs of ops whose kernels exist on more than one backend (the CPU
// file and the cuda/ file read the same node->params bytes).
#pragma once
#include <stdint.h>

// add / sub / mul with broadcasting
typedef enum vt_binary_kind { VT_BIN_ADD = 0, VT_BIN_SUB = 1, VT_BIN_MUL = 2 } vt_binary_kind;
typedef struct vt_binary_params { int kind; } vt_binary_params;

// a x + b y
typedef struct vt_axpby_params { float a, b; } vt_axpby_params;

// elementwise unary family (affine, clamp, abs, square, sqrt, exp, log)
typedef enum vt_unary_kind { VT_U_AFFINE, VT_U_CLAMP, VT_U_ABS, VT_U_SQUARE, VT_U_SQRT, VT_U_EXP, VT_U_LOG } vt_unary_kind;
typedef struct vt_unary_params { int kind; float p0, p1; } vt_unary_params;
