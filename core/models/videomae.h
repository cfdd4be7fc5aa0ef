// videomae.h — VideoMAE video classifier in the Hugging Face transformers
// VideoMAEForVideoClassification layout (MCG-NJU/videomae-base-finetuned-kinetics: ViT-B,
// 16 frames at 224, tubelets 2 x 16 x 16, Kinetics-400 head), the action reward's model.
//
//  videomae.embeddings.patch_embeddings.projection.{weight [W, 3, kt, p, p], bias [W]}
//  videomae.encoder.layer.N.layernorm_before / layernorm_after   LayerNorm, eps layer_norm_eps
//  videomae.encoder.layer.N.attention.attention.{query,key,value}.weight [W, W]; the query and
//      value biases are q_bias / v_bias in the released checkpoints and query.bias / value.bias
//      in the state dict of transformers >= 5 (its loader renames them): both are accepted.
//      key has no bias.
//  videomae.encoder.layer.N.attention.output.dense, intermediate.dense (W -> I, exact GELU),
//      output.dense (I -> W)
//  fc_norm.{weight, bias} (use_mean_pooling: nn.LayerNorm default eps 1e-5, not layer_norm_eps)
//      or videomae.layernorm.* (no mean pooling: the class-free first token is taken)
//  classifier.{weight [L, W], bias [L]}
//
// forward (transformers' VideoMAEForVideoClassification.forward, eval):
//   pixel_values [B, T, 3, S, S] (the HF layout) -> Conv3d(kernel = stride = (kt, p, p)) with
//   patches in (t, h, w) order -> + sinusoid table -> layers (pre-LN ViT block of vit_block.h) ->
//   mean over tokens -> fc_norm -> classifier -> logits [B, L].
// The Conv3d is a Conv2d: with kernel = stride the kt frames of a tubelet are kt * 3 input
// channels ([B, T, 3, S, S] reshaped to [B T/kt, kt*3, S, S], weight permuted to [W, kt, 3, p, p]).
// The position table is fixed, not a parameter: get_sinusoid_encoding_table(n, W) of
// transformers, row pos, column j: angle = pos / 10000^(2 floor(j/2) / W), sin for even j,
// cos for odd j, computed in float64 and rounded to float32. It is made for the token count of
// the input (T/kt * (S/p)^2): a model built with num_frames = T (as VADER's ActPredScorer does
// with from_pretrained(num_frames=T)) uses the first rows of the 16-frame table.
#pragma once
#include "../weights.h"
#include "vit_block.h"

#ifdef __cplusplus
extern "C" {
#endif

// VideoMAEConfig fields; zero fields are inferred from the weights (hidden_size, patch_size,
// tubelet_size, intermediate_size, num_hidden_layers, num_labels) or defaulted
// (num_attention_heads = hidden / 64, image_size 224, num_frames 16, layer_norm_eps 1e-12).
typedef struct vt_videomae_config {
    int hidden_size, num_attention_heads, intermediate_size, num_hidden_layers;
    int image_size, patch_size, num_frames, tubelet_size, num_labels;
    float layer_norm_eps;
} vt_videomae_config;

// Reads a transformers VideoMAEConfig json; fields it lacks keep the values in *c.
struct cJSON;
vt_err vt_videomae_config_from_json(const struct cJSON *config, vt_videomae_config *c);

typedef struct vt_videomae {
    vt_videomae_config cfg;
    int mean_pooling;         // fc_norm (1) or videomae.layernorm + first token (0)
    vt_tensor *patch_w2d;     // [W, kt*3, p, p]: the Conv3d weight as a Conv2d over stacked frames
    vt_tensor *patch_b;       // [W]
    vt_vit_stack encoder;     // videomae.encoder.layer.N.*
    vt_clip_ln final_norm;    // fc_norm or videomae.layernorm
    float final_eps;
    vt_clip_linear classifier;
    vt_tensor *pos_table;     // cached sinusoid table [n_pos, W] (made on first use)
    int segments;             // run each layer as a checkpoint segment
    vt_act_hook hook;         // optional: "videomae.encoder.layer.N", "logits"
    void *hook_user;
    vt_tensor **tensors;
    int n_tensors, cap_tensors;
    int64_t n_params;
} vt_videomae;

// Builds from weights under prefix ("" for a VideoMAEForVideoClassification state dict);
// cfg may be NULL (all inferred). Every tensor is asked for with its exact shape; the caller
// ends the build with vt_weights_finish(w, prefix).
vt_videomae *vt_videomae_build(vt_weights *w, const char *prefix, const vt_videomae_config *cfg);
void vt_videomae_free(vt_videomae *m);
// Moves every weight (and the tables it keeps) to dev in place; see vt_tensors_to_device.
vt_err vt_videomae_to_device(vt_videomae *m, vt_device dev);

// The fixed sinusoid table [n_position, d_hid] (transformers' get_sinusoid_encoding_table).
vt_tensor *vt_videomae_sinusoid_table(int64_t n_position, int64_t d_hid);

// pixel_values [B, T, 3, S, S] (normalised; T a multiple of tubelet_size, S = image_size) ->
// logits [B, num_labels]. Errors name the shape that does not fit.
vt_tensor *vt_videomae_forward(vt_videomae *m, vt_tensor *pixel_values);

#ifdef __cplusplus
}
#endif
