// vjepa2.h — V-JEPA 2 (transformers' VJEPA2Model, facebook/vjepa2-vitl-fpc64-256 layout): a
// video ViT encoder and the masked-feature predictor, keys as in the HF state dict:
//
//   encoder.embeddings.patch_embeddings.proj.{weight [W, 3, ts, p, p], bias [W]}   Conv3d tubelets
//   encoder.layer.N.{norm1, attention.{query, key, value, proj}, norm2, mlp.{fc1, fc2}}.{weight, bias}
//   encoder.layernorm.{weight, bias}
//   predictor.embeddings.predictor_embeddings.{weight [P, W], bias}   encoder width -> predictor width
//   predictor.embeddings.mask_tokens [n_mask_tokens, 1, 1, P]
//   predictor.layer.N.* (as the encoder's, width P), predictor.layernorm, predictor.proj [W, P]
//
// Tokens: Conv3d with kernel = stride = (ts, p, p) over [B, 3, T, H, W], flattened in (t, h, w)
// order: id = t * g*g + h * g + w, g = crop_size / patch_size (the config's grid, also for the
// positions). There is no position embedding: each attention rotates q and k with a 3-D RoPE
// (rotate_queries_or_keys of modeling_vjepa2.py): head dim D, s = 2 * ((D / 3) / 2) channels
// each for the frame, row and column of the token, the rest (D - 3 s) unrotated; in a section
// channel j uses frequency omega[j mod s/2], omega_i = 10000^(-i / (s/2)), and the pairs
// (2i, 2i+1) rotate as (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin). Blocks are pre-LN with
// exact GELU, LayerNorm eps layer_norm_eps (1e-6).
//
// Predictor (VJEPA2Predictor): context features [B, Kc, W] -> Linear -> [B, Kc, P]; one
// learned mask token per target position [B, Kt, P] (mask_tokens[mask_index]); the blocks run
// on the concatenation with RoPE at the tokens' own ids; LayerNorm; the target rows; proj ->
// [B, Kt, W]. transformers sorts the tokens by id before the blocks and unsorts after; that
// permutation changes nothing (attention has no mask, RoPE depends on the ids), so it is not done.
// vader uses one context / target index list for every sample of a batch.
#pragma once
#include "vit_block.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vt_vjepa2_config {
    int hidden_size, heads, layers;          // encoder (1024, 16, 24)
    int pred_hidden_size, pred_heads, pred_layers;  // predictor (384, 12, 12)
    int pred_num_mask_tokens;                // 10
    int patch_size, tubelet_size, crop_size; // 16, 2, 256
    int mlp, pred_mlp;                       // int(hidden * mlp_ratio): 4096, 1536
    float eps;                               // layer_norm_eps 1e-6
} vt_vjepa2_config;

// facebook/vjepa2-vitl-fpc64-256
vt_vjepa2_config vt_vjepa2_config_vitl_256(void);
// From a transformers VJEPA2Config json object (missing fields: the ViT-L defaults). NULL + error
// on a bad value.
struct cJSON;
vt_err vt_vjepa2_config_from_json(const struct cJSON *j, vt_vjepa2_config *cfg);

typedef struct vt_vjepa2 {
    vt_vjepa2_config cfg;
    vt_tensor *patch_w, *patch_b;  // [W, 3, ts, p, p], [W]
    vt_vit_stack encoder, predictor;
    vt_clip_ln enc_norm, pred_norm;
    vt_clip_linear pred_embed, pred_proj;
    vt_tensor *mask_tokens;  // [n, 1, 1, P]
    int segments;            // blocks as checkpoint segments
    vt_act_hook hook;        // sees "encoder.layer.N" / "predictor.layer.N" outputs
    void *hook_user;
    vt_tensor **params;
    int n_tensors, cap;
    int64_t n_params;
} vt_vjepa2;

// Builds from w under prefix ("" for a VJEPA2Model state dict). cfg NULL: widths, depths, patch
// and tubelet sizes, mlp widths and the mask-token count from the shapes; heads hidden/64 (16 for
// 1280) and pred_hidden/32; crop size 256. Every key must exist with its shape (the error names it).
vt_vjepa2 *vt_vjepa2_build(vt_weights *w, const char *prefix, const vt_vjepa2_config *cfg);
void vt_vjepa2_free(vt_vjepa2 *m);
// Moves every weight (and the tables it keeps) to dev in place; see vt_tensors_to_device.
vt_err vt_vjepa2_to_device(vt_vjepa2 *m, vt_device dev);
// The config vt_vjepa2_build infers when given none (reads shapes only, marks nothing used).
vt_err vt_vjepa2_infer_config(vt_weights *w, const char *prefix, vt_vjepa2_config *cfg);

// RoPE tables of a token-id list for heads x D channels: cos, sin [L, heads * D] (sin with the
// pair sign folded in, see vit_block.h). ids NULL: 0..L-1. CPU f32 constants.
vt_err vt_vjepa2_rope_tables(const vt_vjepa2_config *cfg, int heads, int head_dim, const int64_t *ids, int64_t L,
                             vt_tensor **cos, vt_tensor **sin);

// pixel_values [B, 3, T, H, W] (normalised, T a multiple of tubelet_size) -> patch tokens
// [B, N, W], N = T/ts * H/p * W/p, in id order.
vt_tensor *vt_vjepa2_patch_embed(const vt_vjepa2 *m, vt_tensor *pixel_values);
// x [B, N, D] -> rows ids[0..K) of every sample [B, K, D] (differentiable gather).
vt_tensor *vt_vjepa2_gather_tokens(vt_tensor *x, const int64_t *ids, int64_t K);

// Encoder: pixel_values [B, 3, T, H, W] -> last_hidden_state [B, N, W] (after encoder.layernorm).
// keep NULL: all tokens; else only tokens keep[0..n_keep) enter the blocks (V-JEPA's context
// encoder on the visible tubelets, RoPE at their ids) -> [B, n_keep, W].
vt_tensor *vt_vjepa2_encode(const vt_vjepa2 *m, vt_tensor *pixel_values, const int64_t *keep, int64_t n_keep);
// Predictor: context [B, Kc, W] (encoder features of the tokens ctx[0..Kc)) -> predicted
// features of tokens tgt[0..Kt) [B, Kt, W], with mask token mask_index % n_mask_tokens
// (transformers' VJEPA2Model.forward uses 1; V-JEPA training uses the mask generator's index).
vt_tensor *vt_vjepa2_predict(const vt_vjepa2 *m, vt_tensor *context, const int64_t *ctx, int64_t Kc,
                             const int64_t *tgt, int64_t Kt, int mask_index);

// ---- masks ---------------------------------------------------------------------------------
// One mask: the context (visible) token ids and the target (masked) ids, both ascending,
// disjoint, together all N tokens.
typedef struct vt_vjepa2_mask {
    int64_t *ctx, *tgt;
    int64_t n_ctx, n_tgt;
} vt_vjepa2_mask;
void vt_vjepa2_mask_free(vt_vjepa2_mask *m);
// From a target list (any order, duplicates ignored) over N tokens: the context is the rest.
// Error if a target id is out of range or the context or the target is empty.
vt_err vt_vjepa2_mask_from_target(vt_vjepa2_mask *m, const int64_t *tgt, int64_t n, int64_t N);

// V-JEPA's multi-block 3-D mask on a [t, g, g] token grid, deterministic in seed: n_blocks boxes,
// each spanning max(1, int(t * temporal_scale)) frames and about spatial_scale * g * g positions
// (aspect ratio h/w uniform in [aspect_lo, aspect_hi], h, w in [1, g - 1]) at uniform offsets;
// target = their union, context = the rest. Positions are redrawn (up to 100 tries) while the
// context would be empty.
vt_err vt_vjepa2_mask_multiblock(vt_vjepa2_mask *m, int t, int g, int n_blocks, float spatial_scale,
                                 float temporal_scale, float aspect_lo, float aspect_hi, uint64_t seed);
// Tube masking: round(ratio * g * g) spatial positions (a seeded shuffle) masked in every frame.
vt_err vt_vjepa2_mask_tube(vt_vjepa2_mask *m, int t, int g, float ratio, uint64_t seed);

#ifdef __cplusplus
}
#endif
