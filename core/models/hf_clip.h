// hf_clip.h — CLIP towers in the Hugging Face transformers CLIPModel state-dict layout
// (openai/clip-vit-large-patch14 for the aesthetic reward, yuvalkirstain/PickScore_v1 = CLIP-H
// for PickScore).
//
//  vision: vision_model.embeddings.{patch_embedding.weight, class_embedding,
//          position_embedding.weight}, vision_model.pre_layrnorm (sic, HF's spelling),
//          vision_model.encoder.layers.N.*, vision_model.post_layernorm, visual_projection.weight
//  text:   text_model.embeddings.{token_embedding, position_embedding}.weight,
//          text_model.encoder.layers.N.*, text_model.final_layer_norm, text_projection.weight
//  layer:  (vit_block.h) x += self_attn.out_proj(MHA(layer_norm1(x)) with self_attn.{q,k,v}_proj);
//          x += mlp.fc2(act(mlp.fc1(layer_norm2(x)))); act = hidden_act of the tower config
//          ("quick_gelu" in openai CLIP, "gelu" (exact erf) in the laion CLIP-H of PickScore).
//  logit_scale [] is taken when present. Older checkpoints carry the non-persistent buffers
//  *.embeddings.position_ids (arange): they are accepted and ignored.
//
// encode_image = visual_projection(post_layernorm(encoder(pre_layrnorm(embeddings))[:, 0]))
// (CLIPModel.get_image_features); encode_text = text_projection(final_layer_norm(encoder with
// the causal mask)[eos]) where eos is argmax(ids) when the config's eos_token_id is 2 (the
// legacy configs) and the first position holding eos_token_id otherwise (transformers'
// CLIPTextTransformer). Padding after EOS does not change the pooled row (causal mask), so no
// attention mask is taken.
#pragma once
#include "../weights.h"
#include "vit_block.h"  // vt_vit_stack, vt_clip_ln, vt_act_hook

#ifdef __cplusplus
extern "C" {
#endif

// One tower's config (CLIPVisionConfig / CLIPTextConfig fields). Zero fields are inferred from
// the weight shapes: hidden_size, intermediate_size, num_hidden_layers, image_size,
// patch_size, vocab_size, max_position_embeddings; num_attention_heads defaults to
// hidden_size / 64 (16 for the 1280 / 1664 widths of ViT-H / bigG, whose heads are 80 / 104 wide);
// layer_norm_eps to 1e-5; hidden_act to quick_gelu (transformers' default).
typedef struct vt_hf_clip_tower_config {
    int hidden_size, num_attention_heads, intermediate_size, num_hidden_layers;
    int quick_gelu;  // -1: not set (quick_gelu); 0: gelu; 1: quick_gelu
    float layer_norm_eps;
    int image_size, patch_size;                 // vision
    int vocab_size, max_position_embeddings;    // text
    int eos_token_id;                           // text; 0: not set (transformers' 49407)
} vt_hf_clip_tower_config;

typedef struct vt_hf_clip_config {
    vt_hf_clip_tower_config vision, text;
    int projection_dim;
} vt_hf_clip_config;

// An empty config (every field inferred / defaulted).
vt_hf_clip_config vt_hf_clip_config_empty(void);
// openai/clip-vit-large-patch14: vision 1024 wide, 16 heads, 24 layers, mlp 4096, 224 / 14;
// text 768 wide, 12 heads, 12 layers, mlp 3072; projection 768; quick_gelu.
vt_hf_clip_config vt_hf_clip_config_vit_l_14(void);
// laion CLIP-ViT-H-14 in the HF layout (PickScore_v1): vision 1280 / 16 heads / 32 layers /
// 5120, text 1024 / 16 heads / 24 layers / 4096, projection 1024; gelu.
vt_hf_clip_config vt_hf_clip_config_vit_h_14(void);
// Reads a transformers CLIPConfig json ({"text_config": {...}, "vision_config": {...},
// "projection_dim"}); fields it lacks keep the values in *c.
struct cJSON;
vt_err vt_hf_clip_config_from_json(const struct cJSON *config, vt_hf_clip_config *c);

typedef struct vt_hf_clip_vision {
    int image_size, patch_size, grid, hidden;
    float eps;
    vt_tensor *patch_embedding;     // [W, 3, p, p], no bias
    vt_tensor *class_embedding;     // [W]
    vt_tensor *position_embedding;  // [grid^2 + 1, W]
    vt_clip_ln pre_layrnorm, post_layernorm;
    vt_vit_stack encoder;  // encoder.layers.N.*
    vt_tensor *visual_projection;   // [E, W] (Linear without bias)
} vt_hf_clip_vision;

typedef struct vt_hf_clip_text {
    int vocab_size, max_positions, hidden, eos_token_id;
    float eps;
    vt_tensor *token_embedding;     // [V, W]
    vt_tensor *position_embedding;  // [P, W]
    vt_vit_stack encoder;  // encoder.layers.N.*
    vt_clip_ln final_layer_norm;
    vt_tensor *text_projection;     // [E, W]
} vt_hf_clip_text;

typedef struct vt_hf_clip {
    vt_hf_clip_config cfg;
    vt_hf_clip_vision *vision;  // NULL when not built
    vt_hf_clip_text *text;      // NULL when not built
    vt_tensor *logit_scale;     // [] or NULL
    int segments;               // run each encoder layer as a checkpoint segment
    vt_act_hook hook;           // optional: "vision_model.encoder.layers.N", "text_model..."
    void *hook_user;
    vt_tensor **tensors;
    int n_tensors, cap_tensors;
    int text_first, text_count;  // the text tower's tensors: tensors[text_first .. + text_count)
    int64_t n_params;
} vt_hf_clip;

enum { VT_HF_CLIP_TEXT = 1, VT_HF_CLIP_VISION = 2 };

// Builds the towers asked for from weights under prefix ("" for a CLIPModel state dict).
// cfg may be NULL (everything inferred). Every tensor is asked for with its exact shape.
// The caller ends the build with vt_weights_finish on the prefixes it owns.
vt_hf_clip *vt_hf_clip_build(vt_weights *w, const char *prefix, const vt_hf_clip_config *cfg, int towers);
void vt_hf_clip_free(vt_hf_clip *m);
// Moves every weight (and the tables it keeps) to dev in place; see vt_tensors_to_device.
vt_err vt_hf_clip_to_device(vt_hf_clip *m, vt_device dev);
// The vision tower's frozen GEMM weights (patch embedding, every layer's linears, the visual
// projection) converted in place to dt (the ops round their input to dt, f32 accumulation);
// embeddings, LayerNorms and biases stay f32. Call before vt_hf_clip_to_device.
vt_err vt_hf_clip_set_image_weight_dtype(vt_hf_clip *m, vt_dtype dt);
// Frees the text tower; afterwards vt_hf_clip_encode_text fails naming it (rewards/reward.h).
void vt_hf_clip_drop_text(vt_hf_clip *m);

// pixel_values [B, 3, S, S] (already normalised) -> image_embeds [B, E] (get_image_features)
vt_tensor *vt_hf_clip_encode_image(vt_hf_clip *m, vt_tensor *pixel_values);
// input_ids i64 [B, L <= max_positions] -> text_embeds [B, E] (get_text_features)
vt_tensor *vt_hf_clip_encode_text(vt_hf_clip *m, const vt_tensor *input_ids);

#ifdef __cplusplus
}
#endif
