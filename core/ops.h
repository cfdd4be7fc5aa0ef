// ops.h — every differentiable op of vader. Each is declared once in the registry (tape.h's
// vt_op: forward, backward, what it saves) with a CPU reference kernel in core/ops/ (fp32,
// OpenBLAS for GEMM, OpenMP where it pays) and a CUDA kernel in cuda/.
//
// Conventions: ops return a new tensor or NULL with the error set (naming the op and the
// shapes). A NULL required input gives NULL, so calls can be chained and checked once.
// Optional inputs (bias, LoRA) are documented as "or NULL". All float ops take f32 on the CPU
// (the GEMM ops' weights also bf16 / f16, see "low-precision weights" below).
// Shapes in comments: [N, C, H, W] etc.; "..." means any leading dims.
#pragma once
#include "tape.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---- elementwise (core/ops/elementwise.c) ------------------------------------------------
// numpy broadcasting: b (or a) may have fewer dims or size-1 dims; backward reduces.
vt_tensor *vt_add(vt_tensor *a, vt_tensor *b);
vt_tensor *vt_sub(vt_tensor *a, vt_tensor *b);
vt_tensor *vt_mul(vt_tensor *a, vt_tensor *b);
// y = alpha * x + beta
vt_tensor *vt_affine(vt_tensor *x, float alpha, float beta);
static inline vt_tensor *vt_scale(vt_tensor *x, float s) { return vt_affine(x, s, 0.0f); }
// y = a * x + b * y  (two same-shape tensors, scalar weights: CFG, DDIM updates)
vt_tensor *vt_axpby(float a, vt_tensor *x, float b, vt_tensor *y);
vt_tensor *vt_clamp(vt_tensor *x, float lo, float hi);  // gradient 0 outside [lo, hi]
vt_tensor *vt_abs(vt_tensor *x);
vt_tensor *vt_square(vt_tensor *x);
vt_tensor *vt_sqrt(vt_tensor *x);
vt_tensor *vt_exp(vt_tensor *x);
vt_tensor *vt_log(vt_tensor *x);
// Accumulates src into dst in place (same shape): not an op, the tape's add-or-set helper.
vt_err vt_accumulate(vt_tensor *dst, const vt_tensor *src);

// ---- activations (core/ops/activation.c) -------------------------------------------------
vt_tensor *vt_silu(vt_tensor *x);
vt_tensor *vt_sigmoid(vt_tensor *x);
vt_tensor *vt_gelu(vt_tensor *x);  // exact: x * 0.5 * (1 + erf(x / sqrt 2))
vt_tensor *vt_quick_gelu(vt_tensor *x);  // x * sigmoid(1.702 x) (OpenAI CLIP)
// GEGLU: x [..., 2D] -> a * gelu(g) [..., D], a = first half, g = second half of the last dim
vt_tensor *vt_geglu(vt_tensor *x);
// x * mask / (1 - p) with mask ~ Bernoulli(1 - p) from vt_hash64(seed, element index), so a
// recompute with the same seed reproduces the mask. p == 0 returns a retained x.
vt_tensor *vt_dropout(vt_tensor *x, float p, uint64_t seed);

// ---- low-precision weights of the GEMM ops ------------------------------------------------
// vt_linear, vt_linear_lora (its base weight w; A, B stay f32), vt_conv2d(_add) and
// vt_conv_time(_add) take a weight w of dtype VT_BF16 or VT_F16 besides VT_F32. Such a weight
// must be frozen: one with requires_grad is refused (VT_ERR_DTYPE naming the op: low-precision
// weights are frozen only). x, bias, residual, A, B, the output and every gradient stay f32.
// Semantics, the same on every backend ("mixed precision, f32 accumulate"):
//   forward   y  = round_w(x) (*) w (+ b) (+ r): x rounded to w's dtype (nearest even, as
//                  vt_f32_to_bf16 / vt_f32_to_f16), products accumulated in f32;
//   backward  dx = the f32 op's dx of round_w(g) (linear: round_w(g) W), g rounded likewise;
//                  never a dw; db, dr (and dA, dB) as with an f32 w.
// linear_lora's LoRA branch reads the unrounded f32 x (and g), exactly as with an f32 w, so the
// LoRA gradients are full f32. The CPU kernels widen w to f32 (exact) and round x / g to w's
// dtype in scratch copies, then run the f32 code. CUDA: linear runs cublasGemmEx on bf16 / f16
// operands with f32 accumulation (the CPU's numbers up to summation order); conv runs cuDNN on
// bf16 / f16 tensors with f32 compute, whose output (y, dx) is itself rounded to w's dtype once
// before the f32 bias / residual pass: within bf16 (f16) tolerance of the CPU reference.

// x converted to dt (f32 <-> bf16 / f16, round to nearest even), on x's device; recorded with a
// straight-through gradient (gin = gout, f32). Same dtype: a copy. (core/ops/cast.c)
vt_tensor *vt_cast(vt_tensor *x, vt_dtype dt);

// ---- linear algebra (core/ops/linear.c) --------------------------------------------------
// x [..., in], w [out, in] (f32, or frozen bf16 / f16: see above), b [out] or NULL -> [..., out]
vt_tensor *vt_linear(vt_tensor *x, vt_tensor *w, vt_tensor *b);
// LoRA (peft): y = x W^T + b + scale * (x A^T) B^T; A [r, in], B [out, r]. W, b frozen
// (their grads are never computed unless they require grad); A, B usually require grad.
vt_tensor *vt_linear_lora(vt_tensor *x, vt_tensor *w, vt_tensor *b, vt_tensor *A, vt_tensor *B, float scale);
// a [..., m, k] @ b [..., k, n] (same leading dims) or b [k, n] shared -> [..., m, n]
vt_tensor *vt_matmul(vt_tensor *a, vt_tensor *b);

// ---- convolutions (core/ops/conv.c) ------------------------------------------------------
// x [N, C, H, W], w [O, C, kh, kw], b [O] or NULL; zero padding, stride, no dilation/groups.
// w f32, or frozen bf16 / f16 (see "low-precision weights" above), for all four conv entries.
vt_tensor *vt_conv2d(vt_tensor *x, vt_tensor *w, vt_tensor *b, int stride, int pad);
// Convolution over time only (lvdm's temporal Conv3d with kernel (kt,1,1), padding (pad,0,0)):
// x [B, C, T, H, W], w [O, C, kt, 1, 1], b [O] or NULL -> [B, O, T + 2 pad - kt + 1, H, W]
vt_tensor *vt_conv_time(vt_tensor *x, vt_tensor *w, vt_tensor *b, int pad);
// Residual forms: y = conv(x, w, b) + r, r of the output's shape (a ResBlock's skip + conv(h)).
// r is added in the conv's own output pass (no add op: one output-sized tensor and one pass
// less); r's gradient is the output's. A NULL r gives NULL.
vt_tensor *vt_conv2d_add(vt_tensor *x, vt_tensor *w, vt_tensor *b, int stride, int pad, vt_tensor *r);
vt_tensor *vt_conv_time_add(vt_tensor *x, vt_tensor *w, vt_tensor *b, int pad, vt_tensor *r);
// Conv1d kernel 1 weights [out, in, 1] as a linear map on channels-last tokens: use vt_linear
// with a vt_view of the weight.

// ---- normalisation (core/ops/norm.c) -----------------------------------------------------
// x [N, C, ...]: statistics per (n, group) over (C/groups, all trailing dims); w, b [C] or NULL.
vt_tensor *vt_group_norm(vt_tensor *x, int groups, vt_tensor *w, vt_tensor *b, float eps);
// silu(group_norm(x, groups, w, b, eps)) as one op: saves x and the statistics [N, groups] (not
// the norm's output), half the saved memory of the two-op chain.
vt_tensor *vt_group_norm_silu(vt_tensor *x, int groups, vt_tensor *w, vt_tensor *b, float eps);
// x [..., C], w, b [C] or NULL
vt_tensor *vt_layer_norm(vt_tensor *x, vt_tensor *w, vt_tensor *b, float eps);
// x [..., C] -> x / max(||x||_2, eps) along the last dim (torch.nn.functional.normalize)
vt_tensor *vt_l2_normalize(vt_tensor *x, float eps);

// ---- attention (core/ops/attention.c) ----------------------------------------------------
// softmax over the last dim
vt_tensor *vt_softmax(vt_tensor *x);
// Multi-head scaled dot-product attention on the merged layout (channel = head*d + j):
// q [B, Lq, H*d], k, v [B, Lk, H*d] -> [B, Lq, H*d]; softmax(q k^T * scale (+ causal mask:
// key j visible to query i iff j <= i)) v per head.
vt_tensor *vt_attention(vt_tensor *q, vt_tensor *k, vt_tensor *v, int heads, float scale, int causal);

// ---- shape (core/ops/shape.c) ------------------------------------------------------------
// Same data, new shape (a view; recorded so gradients flow).
vt_tensor *vt_reshape(vt_tensor *x, int ndim, const int64_t *shape);
// Copy with dims permuted: out.shape[i] = x.shape[perm[i]].
vt_tensor *vt_permute(vt_tensor *x, int ndim, const int *perm);
// Concatenate along dim (all other dims equal).
vt_tensor *vt_concat(vt_tensor *const *xs, int n, int dim);
// x[..., start:start+len, ...] along dim (a copy).
vt_tensor *vt_slice(vt_tensor *x, int dim, int64_t start, int64_t len);
// Each slice along dim repeated r times consecutively (torch.repeat_interleave).
vt_tensor *vt_repeat_interleave(vt_tensor *x, int dim, int64_t r);
// Rows of a table: weight [V, D], ids i64 [...] -> [..., D] (gradient to weight if it wants).
vt_tensor *vt_embedding(vt_tensor *weight, const vt_tensor *ids);
// x [B, L, D], index i64 [B] -> [B, D]: row index[b] of sample b (CLIP EOT pooling).
vt_tensor *vt_gather_rows(vt_tensor *x, const vt_tensor *index);
// Nearest-neighbour x2 upsample of [N, C, H, W] -> [N, C, 2H, 2W].
vt_tensor *vt_upsample_nearest2x(vt_tensor *x);

// ---- reductions (core/ops/reduce.c) ------------------------------------------------------
vt_tensor *vt_sum(vt_tensor *x);   // -> [] (0-d)
vt_tensor *vt_mean(vt_tensor *x);  // -> []
// over one dim; keepdim keeps it as size 1
vt_tensor *vt_sum_dim(vt_tensor *x, int dim, int keepdim);
vt_tensor *vt_mean_dim(vt_tensor *x, int dim, int keepdim);

// ---- embeddings and image preprocessing (core/ops/embed.c, core/ops/resize.c) ---------
// Sinusoidal timestep embedding (lvdm, no shift, cos half first): t [B] (i64 or f32) ->
// [B, dim]; freq_i = exp(-ln(max_period) * i / (dim/2)). Not differentiable (no tape node).
vt_tensor *vt_timestep_embedding(const vt_tensor *t, int dim, float max_period);
// [N, C, H, W] -> [N, C, oh, ow], torch.nn.functional.interpolate(align_corners=False)
// semantics; antialias as torch's antialias=True when downsampling.
vt_tensor *vt_resize_bilinear(vt_tensor *x, int oh, int ow, int antialias);
vt_tensor *vt_resize_bicubic(vt_tensor *x, int oh, int ow, int antialias);
// Per-channel (x - mean[c]) / std[c] for [N, C, H, W].
vt_tensor *vt_normalize_channels(vt_tensor *x, const float *mean, const float *std);
// Cosine similarity along the last dim: [..., D] x [..., D] -> [...]
vt_tensor *vt_cosine_similarity(vt_tensor *a, vt_tensor *b, float eps);

#ifdef __cplusplus
}
#endif
