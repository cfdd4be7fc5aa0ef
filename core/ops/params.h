// params.h — parameter structs of ops whose kernels exist on more than one backend (the CPU
// file and the cuda/ file read the same node->params bytes).
#pragma once
#include <stdint.h>
#include "../tape.h"  // VT_MAX_DIMS, VT_MAX_INPUTS, vt_err

// add / sub / mul with broadcasting
typedef enum vt_binary_kind { VT_BIN_ADD = 0, VT_BIN_SUB = 1, VT_BIN_MUL = 2 } vt_binary_kind;
typedef struct vt_binary_params { int kind; } vt_binary_params;

// a x + b y
typedef struct vt_axpby_params { float a, b; } vt_axpby_params;

// elementwise unary family (affine, clamp, abs, square, sqrt, exp, log)
typedef enum vt_unary_kind { VT_U_AFFINE, VT_U_CLAMP, VT_U_ABS, VT_U_SQUARE, VT_U_SQRT, VT_U_EXP, VT_U_LOG } vt_unary_kind;
typedef struct vt_unary_params { int kind; float p0, p1; } vt_unary_params;

#ifdef __cplusplus
extern "C" {
#endif

// ---- linear / linear_lora (linear.c): y = x W^T + b + scale (x A^T) B^T --------------------
typedef struct vt_linear_params { float scale; int has_bias, has_lora; } vt_linear_params;

// ---- activations (activation.c) ------------------------------------------------------------
typedef enum vt_act_kind { VT_ACT_SILU, VT_ACT_SIGMOID, VT_ACT_GELU, VT_ACT_QUICK_GELU } vt_act_kind;
typedef struct vt_act_params { int kind; } vt_act_params;
// keep element i iff (vt_hash64(seed, i) >> 40) / 2^24 >= p; kept elements times scale
typedef struct vt_dropout_params { float p, scale; uint64_t seed; } vt_dropout_params;

// ---- group_norm / layer_norm / group_norm_silu (norm.c): x seen as [N, C, S], G groups -------
// (group_norm_silu's saved extra: stats [N, G, 3] f32 = mean_hi, mean_lo, rstd; see norm.c)
typedef struct vt_norm_params {
    int64_t N, C, S;
    int G;
    float eps;
} vt_norm_params;
// l2_normalize: x [M, C]
typedef struct vt_l2n_params { int64_t M, C; float eps; } vt_l2n_params;

// ---- attention (attention.c): q [B, Lq, H*d], k, v [B, Lk, H*d]; saved extra lse [B, H, Lq] --
typedef struct vt_attention_params { int64_t B, Lq, Lk, H, d; float scale; int causal; } vt_attention_params;

// ---- conv2d / conv_time (conv.c): input planes [N, C, H, W] -> [N, O, OH, OW] ---------------
typedef struct vt_conv_params {
    int64_t N, C, H, W;  // input planes
    int64_t O, OH, OW;   // output planes
    int kh, kw, sh, sw, ph, pw;
} vt_conv_params;

// ---- shape ops (shape.c, upsample.c) --------------------------------------------------------
typedef struct vt_permute_params { int ndim; int perm[VT_MAX_DIMS]; } vt_permute_params;
// inputs [outer, sizes[i], inner] -> [outer, sum sizes, inner]
typedef struct vt_concat_params { int n; int64_t outer, inner, sizes[VT_MAX_INPUTS]; } vt_concat_params;
// x [outer, n, inner] -> [outer, len, inner]
typedef struct vt_slice_params { int64_t outer, n, inner, start, len; } vt_slice_params;
// x [outer, n, inner] -> [outer, n r, inner]
typedef struct vt_repeat_params { int64_t outer, n, inner, r; } vt_repeat_params;
// weight [V, D], ids [M]
typedef struct vt_embedding_params { int64_t V, D, M; } vt_embedding_params;
// x [B, L, D], index [B]
typedef struct vt_gather_params { int64_t B, L, D; } vt_gather_params;

// ---- reduce (reduce.c): x [outer, n, inner] -> [outer, inner] = scale * sum over n ----------
typedef struct vt_reduce_params { int64_t outer, n, inner; float scale; } vt_reduce_params;

// ---- resize (resize.c) ----------------------------------------------------------------------
enum { VT_RESIZE_BILINEAR = 0, VT_RESIZE_BICUBIC = 1 };
typedef struct vt_resize_params { int oh, ow, mode, antialias; } vt_resize_params;
// One axis of a separable resize: out outputs, K taps each; idx/w are [out, K] (host memory).
typedef struct vt_resize_table {
    int64_t out, K;
    int64_t *idx;
    float *w;
} vt_resize_table;
// Builds the table of one axis (in -> out) exactly as the CPU kernels use it, so every backend
// applies the same weights. VT_ERR_OOM on failure; free with vt_resize_table_free.
vt_err vt_resize_table_build(vt_resize_table *t, int64_t in, int64_t out, int mode, int antialias);
void vt_resize_table_free(vt_resize_table *t);

// ---- image preprocessing (image.c) ----------------------------------------------------------
#define VT_NORMALIZE_MAX_C 31
typedef struct vt_normalize_params {
    int C;
    float mean[VT_NORMALIZE_MAX_C], std[VT_NORMALIZE_MAX_C];
} vt_normalize_params;
typedef struct vt_cosine_params { float eps; } vt_cosine_params;

#ifdef __cplusplus
}
#endif
