// yolos.h — YOLOS (hustvl/yolos-base, hustvl/yolos-tiny) in the Hugging Face transformers
// YolosForObjectDetection state-dict layout, the object_removal reward's detector.
//
//  vit.embeddings.{cls_token [1, 1, W], detection_tokens [1, D, W],
//                  position_embeddings [1, 1 + G + D, W], patch_embeddings.projection.{weight, bias}}
//  vit.encoder.layer.N.{layernorm_before, attention.attention.{query, key, value},
//                       attention.output.dense, layernorm_after, intermediate.dense, output.dense}
//  vit.encoder.interpolation.mid_position_embeddings [L - 1, 1, 1 + G + D, W]  (use_mid_position_embeddings;
//      transformers < 4.4x saved it as vit.encoder.mid_position_embeddings: both are read)
//  vit.layernorm, class_labels_classifier.layers.{0,1,2}, bbox_predictor.layers.{0,1,2}
// G = (image_size[0] / p) * (image_size[1] / p) for the config's image_size (yolos-base
// [800, 1344], yolos-tiny [800, 1333]).
//
// Forward (transformers' YolosModel): tokens [cls, patches (conv stride p, row-major), detection
// tokens] + position embeddings whose patch rows are bicubic-interpolated (align_corners False,
// no antialias) from the config's grid to the input's (H / p, W / p) grid — always, as
// transformers does, even at the same size; the layers are vit_block.h's pre-LN block (exact
// GELU); with mid position embeddings, layer i < L - 1 adds mid_position_embeddings[i]
// (interpolated the same way); vit.layernorm; the last D tokens go through the two 3-layer MLP
// heads (ReLU between): logits [B, D, num_labels + 1] (last = no object), boxes sigmoid
// [B, D, 4] (cx, cy, w, h). The interpolated tables are computed once per input grid (no tape:
// the weights are frozen) and cached.
#pragma once
#include "../weights.h"
#include "vit_block.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vt_yolos_config {
    int hidden_size, num_hidden_layers, num_attention_heads, intermediate_size;
    int image_size[2];     // the grid the position embeddings were trained for (H, W)
    int patch_size;
    int num_detection_tokens;
    int num_labels;        // real classes (the classifier has num_labels + 1 outputs)
    int use_mid_position_embeddings;  // -1: from the weights
    float layer_norm_eps;  // 1e-12 in every released config
} vt_yolos_config;

// Every field 0 / -1: inferred from the weight shapes (heads: hidden / 64, 3 for the 192-wide
// tiny; image_size: the position table's patch rows read as 800 / p rows, as every released
// checkpoint, else as a square grid, else the config must give it).
vt_yolos_config vt_yolos_config_empty(void);
// hustvl/yolos-base: 768 wide, 12 layers, 12 heads, mlp 3072, [800, 1344] / 16, 100 detection
// tokens, 91 COCO labels, mid position embeddings.
vt_yolos_config vt_yolos_config_base(void);
// hustvl/yolos-tiny: 192 wide, 12 layers, 3 heads, mlp 768, [800, 1333] / 16, 100 tokens, no mid.
vt_yolos_config vt_yolos_config_tiny(void);
// Reads a transformers YolosConfig json (fields it lacks keep the values in *c; hidden_act must
// be "gelu", qkv_bias true). num_labels comes from id2label when present.
struct cJSON;
vt_err vt_yolos_config_from_json(const struct cJSON *config, vt_yolos_config *c);

typedef struct vt_yolos_mlp {  // YolosMLPPredictionHead: 3 Linear layers, ReLU between
    vt_clip_linear layers[3];
} vt_yolos_mlp;

typedef struct vt_yolos {
    vt_yolos_config cfg;
    vt_tensor *cls_token;            // [1, 1, W]
    vt_tensor *detection_tokens;     // [1, D, W]
    vt_tensor *position_embeddings;  // [1, 1 + G + D, W]
    vt_tensor *patch_w, *patch_b;    // [W, 3, p, p], [W]
    vt_tensor *mid_position_embeddings;  // [L - 1, 1, 1 + G + D, W] or NULL
    vt_vit_stack encoder;
    vt_clip_ln layernorm;
    vt_yolos_mlp class_head, box_head;
    int segments;  // run each layer as a checkpoint segment
    vt_act_hook hook;  // optional: "vit.encoder.layer.N" outputs
    void *hook_user;
    // interpolated tables for the last input grid
    int cache_gh, cache_gw;
    vt_tensor *pos_cache;  // [1, 1 + gh*gw + D, W]
    vt_tensor **mid_cache; // L - 1 of [1, 1 + gh*gw + D, W]
    vt_tensor **tensors;
    int n_tensors, cap_tensors;
    int64_t n_params;
} vt_yolos;

// Builds from weights under prefix ("" for a YolosForObjectDetection state dict); cfg may be
// NULL (inferred). Every tensor is asked for with its exact shape; the caller ends the build
// with vt_weights_finish.
vt_yolos *vt_yolos_build(vt_weights *w, const char *prefix, const vt_yolos_config *cfg);
// The same layout with random weights (tests, tiny CPU runs): matrices N(0, 1/fan_in),
// embeddings N(0, 0.02^2), LayerNorm gains 1, biases 0; deterministic in seed.
vt_yolos *vt_yolos_build_random(const vt_yolos_config *cfg, uint64_t seed);
void vt_yolos_free(vt_yolos *m);
// Moves every weight (and the tables it keeps) to dev in place; see vt_tensors_to_device.
vt_err vt_yolos_to_device(vt_yolos *m, vt_device dev);

// pixel_values [B, 3, H, W] (normalised; H, W >= patch_size; rows / columns past the last whole
// patch are ignored as the stride-p convolution does) -> logits [B, D, num_labels + 1] and,
// when boxes is not NULL, pred_boxes [B, D, 4]. Recorded on the current tape.
vt_err vt_yolos_forward(vt_yolos *m, vt_tensor *pixel_values, vt_tensor **logits, vt_tensor **boxes);

#ifdef __cplusplus
}
#endif
