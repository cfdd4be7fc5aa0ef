// unet3d_internal.h — module structs of the UNet3D (one per lvdm nn.Module kind), shared by
// unet3d_blocks.c (ResBlock, TemporalConvBlock, transformers) and unet3d.c (the model).
// Not a public header.
#pragma once
#include "unet3d.h"
#include "../vt.h"

// Parameter builder: asks the store for PREFIX + path + name with a shape and registers the
// tensor under its name (without the prefix). shape_only: the tensor is released right away.
typedef struct unet_param {
    char *name;     // state-dict key without the prefix
    vt_tensor *t;   // NULL in shape-only builds
} unet_param;

typedef struct unet_builder {
    vt_weights *w;
    const char *prefix;
    int shape_only;
    int failed;  // an allocation failed (missing keys are collected, not failures)
    unet_param *params;
    int n_params, cap_params;
    int64_t n_values;
    int n_sites;  // dropout sites handed out so far
    uint64_t seed;  // w == NULL: random weights from this seed (benchmarks)
} unet_builder;

vt_tensor *unet_get(unet_builder *b, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

// nn.Linear (or a kernel-1 Conv1d / Conv2d seen as a matrix): w [out, in], b [out] or NULL;
// optional LoRA A [r, in], B [out, r].
typedef struct unet_linear {
    vt_tensor *w, *b;
    int in, out;
    vt_tensor *lora_A, *lora_B;
    float lora_scale;
    vt_tensor *w_merged;  // W + scale B A while the LoRA is merged (vt_unet3d_lora_merge), else NULL
    char *path;  // module path without the prefix (LoRA names)
    int site;    // dropout site of the LoRA branch
} unet_linear;

typedef struct unet_conv { vt_tensor *w, *b; } unet_conv;  // Conv2d / Conv3d (k, 1, 1)
typedef struct unet_norm { vt_tensor *w, *b; } unet_norm;  // GroupNorm / LayerNorm affine

// CrossAttention: q from x, k/v from the context (or x); heads * d_head = inner. With lvdm's
// relative_position (temporal only): rel_k / rel_v = relative_position_k / _v.embeddings_table
// [2 max_rel + 1, d_head], else NULL.
typedef struct unet_attention {
    unet_linear to_q, to_k, to_v, to_out;
    int heads, d_head;
    vt_tensor *rel_k, *rel_v;
    int max_rel;               // lvdm's max_relative_position = temporal_length
    vt_tensor *k_ctx, *v_ctx;  // cross-attention: to_k / to_v of the cached context [B, L, inner], or NULL
} unet_attention;

// BasicTransformerBlock: attn1 (self), attn2 (cross on context, or self), GEGLU feed-forward.
typedef struct unet_tblock {
    unet_norm norm1, norm2, norm3;
    unet_attention attn1, attn2;
    unet_linear ff_proj, ff_out;  // ff.net.0.proj [8 dim, dim], ff.net.2 [dim, 4 dim]
    int cross;                    // attn2 attends to the text context
    int causal;                   // both attentions masked to keys <= the query (temporal only)
} unet_tblock;

// How a transformer is built: what lvdm's SpatialTransformer / TemporalTransformer arguments
// decide beyond the sizes.
typedef struct unet_tr_opts {
    int temporal;
    int depth;        // BasicTransformerBlocks
    int context_dim;  // > 0: attn2 is cross-attention on the text context of that width
    int use_linear;   // Linear projections, else kernel-1 Conv1d (temporal) / Conv2d (spatial)
    int causal;       // temporal self-attention with a causal mask
    int max_rel;      // >= 0: relative-position tables of 2 max_rel + 1 rows in attn1 and attn2; -1: none
} unet_tr_opts;

// SpatialTransformer (per frame, tokens = h*w pixels) or TemporalTransformer (per pixel,
// tokens = the t frames; with a context, pixel p of a sample reads frame p / (h*w/t)'s copy).
typedef struct unet_transformer {
    int temporal;
    int cross;  // attn2 on the text context
    int channels, inner;
    unet_norm norm;  // GroupNorm(32, eps 1e-6)
    unet_linear proj_in, proj_out;
    int depth;
    unet_tblock *blocks;
} unet_transformer;

// TemporalConvBlock: 4 x [GroupNorm, SiLU, (Dropout for 2..4), Conv3d (3,1,1) pad (1,0,0)].
typedef struct unet_tconv {
    unet_norm norm[4];
    unet_conv conv[4];
    int site[4];
} unet_tconv;

// ResBlock (no up/down, no scale-shift) + optional temporal conv.
typedef struct unet_resblock {
    int in_ch, out_ch;
    unet_norm in_norm, out_norm;
    unet_conv in_conv, out_conv, skip;  // skip.w NULL when in_ch == out_ch
    unet_linear emb;                     // emb_layers.1
    int has_tconv;
    unet_tconv tconv;
} unet_resblock;

typedef enum unet_layer_kind { UNET_RES, UNET_SPATIAL, UNET_TEMPORAL, UNET_DOWN, UNET_UP, UNET_CONV } unet_layer_kind;
typedef struct unet_layer {
    unet_layer_kind kind;
    unet_resblock *res;
    unet_transformer *tr;
    unet_conv conv;  // DOWN (stride 2), UP (after nearest x2), CONV (input_blocks.0)
} unet_layer;

// TimestepEmbedSequential
#define UNET_MAX_LAYERS 4
typedef struct unet_block {
    int n;
    unet_layer layers[UNET_MAX_LAYERS];
} unet_block;

// What one forward call shares with its segments (kept until vt_unet3d_release_segments).
typedef struct unet_frame {
    vt_unet3d *u;          // for the segment pool
    int B;                 // batch (x is folded as [(B*T), ...])
    uint64_t seed;         // dropout seed of the call
    float p_tconv, p_lora;
    int checkpoint;
    // A forward with no tape and no LoRA dropout (the untaped DDIM steps, plain sampling): it
    // may use the merged LoRA weights and, when its context is kv_ctx, the cached text K/V.
    int nograd;
    const vt_tensor *kv_ctx;
} unet_frame;

// Per-segment closure: the module and the call it belongs to.
typedef struct unet_seg {
    const unet_frame *f;
    const void *module;
} unet_seg;

// ---- building (unet3d_blocks.c) -----------------------------------------------------------
int unet_build_linear(unet_builder *b, unet_linear *l, int in, int out, int bias, int kernel_dims,
                      const char *path);
int unet_build_resblock(unet_builder *b, unet_resblock *r, int in_ch, int out_ch, int emb_dim, int tconv,
                        const char *path);
int unet_build_transformer(unet_builder *b, unet_transformer *t, int channels, int heads, int d_head,
                           const unet_tr_opts *o, const char *path);
void unet_free_linear(unet_linear *l);
void unet_free_resblock(unet_resblock *r);
void unet_free_transformer(unet_transformer *t);

// ---- forward (unet3d_blocks.c) -------------------------------------------------------------
// Linear with the optional LoRA branch (and its dropout).
vt_tensor *unet_linear_forward(const unet_frame *f, const unet_linear *l, vt_tensor *x);
// x [(B*T), Cin, H, W], emb [(B*T), E] -> [(B*T), Cout, H, W]
vt_tensor *unet_resblock_forward(const unet_frame *f, const unet_resblock *r, vt_tensor *x, vt_tensor *emb);
// x [(B*T), C, H, W], context [B, L, D] (once per sample, not per frame; ignored by temporal
// ones) -> same shape as x
vt_tensor *unet_transformer_forward(const unet_frame *f, const unet_transformer *t, vt_tensor *x, vt_tensor *context);
// fn(in) of module as a checkpoint segment of the call f (its closure kept by unet_keep).
vt_tensor *unet_segment(const unet_frame *f, const void *module, vt_segment_fn fn, vt_tensor *const *in, int n_in);
// Keeps p (malloc'd) until vt_unet3d_release_segments: segment closures and frames must
// outlive the backward. Returns p, or NULL (p freed, error set) when out of memory.
void *unet_keep(vt_unet3d *u, void *p);

// [(B*T), C, H, W] <-> [B, C, T, H, W]
vt_tensor *unet_unfold(vt_tensor *x, int B);
vt_tensor *unet_fold(vt_tensor *x);
