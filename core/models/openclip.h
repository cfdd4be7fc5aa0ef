// openclip.h — open_clip CLIP towers in the open_clip state-dict layout (ViT-H-14 for
// VideoCrafter2's text conditioner and for HPSv2).
//
//  text:   token_embedding.weight, positional_embedding, transformer.resblocks.N.*, ln_final,
//          text_projection
//  vision: visual.conv1.weight, visual.class_embedding, visual.positional_embedding,
//          visual.ln_pre, visual.transformer.resblocks.N.*, visual.ln_post, visual.proj
//
// A residual block (vit_block.h): x += out_proj(MHA(ln_1(x))); x += c_proj(GELU(c_fc(ln_2(x)))),
// with in_proj_weight [3W, W] rows q, k, v split by zero-copy views into three linears. Text
// attention is causal, vision attention is not. LayerNorm eps 1e-5; GELU exact (erf) unless
// the config says quick_gelu.
//
// The prefix selects the sub-tree: "" for an open_clip / HPSv2 state dict, and
// "cond_stage_model.model." for the VideoCrafter2 checkpoint (text tower only, no visual.*).
#pragma once
#include "../weights.h"
#include "vit_block.h"  // vt_vit_stack, vt_clip_ln, vt_act_hook

#ifdef __cplusplus
extern "C" {
#endif

// open_clip model config. Zero fields are inferred from the weights' shapes when building
// (width, layers, context_length, vocab_size, patch_size, image_size, embed_dim, mlp_ratio);
// without a json config heads default to width / 64 (open_clip's head_width default, and text
// heads 16 in ViT-H-14).
typedef struct vt_openclip_config {
    int embed_dim;
    int quick_gelu;  // OpenAI CLIP's x * sigmoid(1.702 x); open_clip ViT-H-14 uses exact GELU
    struct {
        int context_length, vocab_size, width, heads, layers;
        double mlp_ratio;  // c_fc width = int(width * mlp_ratio); 0: from the weights (4 in CLIP)
    } text;
    struct {
        int image_size, patch_size, width, head_width, layers;
        double mlp_ratio;
    } vision;
} vt_openclip_config;

// Reads {"embed_dim", "quick_gelu", "text_cfg": {...}, "vision_cfg": {...}} (open_clip's
// model config json); missing fields keep the values in *c, except text heads: a json config
// that does not name them gets open_clip's CLIPTextCfg default, 8 (it cannot be read from the
// weights' shapes). Options of open_clip that change the computation and are not implemented
// (layer scale, other pooling, no causal mask, ...) are VT_ERR_CONFIG naming the option.
struct cJSON;
vt_err vt_openclip_config_from_json(const struct cJSON *config, vt_openclip_config *c);
// ViT-H-14: embed 1024, text 77 x 1024 / 16 heads / 24 layers, vision 224 / 14, 1280 wide,
// head width 80, 32 layers.
vt_openclip_config vt_openclip_config_vit_h_14(void);

typedef struct vt_openclip_text {
    int context_length, vocab_size, width;
    vt_tensor *token_embedding;       // [V, W]
    vt_tensor *positional_embedding;  // [L, W]
    vt_vit_stack transformer;  // transformer.resblocks.N.*
    vt_clip_ln ln_final;
    vt_tensor *text_projection;       // [W, E]
} vt_openclip_text;

typedef struct vt_openclip_vision {
    int image_size, patch_size, grid, width;
    vt_tensor *conv1;                 // [W, 3, p, p], no bias
    vt_tensor *class_embedding;       // [W]
    vt_tensor *positional_embedding;  // [grid^2 + 1, W]
    vt_clip_ln ln_pre, ln_post;
    vt_vit_stack transformer;  // transformer.resblocks.N.*
    vt_tensor *proj;                  // [W, E]
} vt_openclip_vision;

typedef struct vt_openclip {
    vt_openclip_config cfg;
    vt_openclip_text *text;      // NULL when not built
    vt_openclip_vision *visual;  // NULL when not built
    vt_tensor *logit_scale;      // [] when present in the weights (HPS does not use it)
    int segments;                // run each residual block as a checkpoint segment
    vt_act_hook hook;            // optional: "transformer.resblocks.N", "visual.transformer..."
    void *hook_user;
    vt_tensor **tensors;
    int n_tensors, cap_tensors;
    int n_tensors_text;  // the text tower's tensors: tensors[0 .. n_tensors_text)
    int64_t n_params, n_params_text, n_params_visual;
} vt_openclip;

enum { VT_OPENCLIP_TEXT = 1, VT_OPENCLIP_VISION = 2 };

// Builds the towers in `towers` (VT_OPENCLIP_TEXT | VT_OPENCLIP_VISION) from weights under
// prefix. cfg may be NULL (everything inferred). logit_scale is taken when present.
vt_openclip *vt_openclip_build(vt_weights *w, const char *prefix, const vt_openclip_config *cfg, int towers);
void vt_openclip_free(vt_openclip *m);
// Moves every weight (and the tables it keeps) to dev in place; see vt_tensors_to_device.
vt_err vt_openclip_to_device(vt_openclip *m, vt_device dev);
// The image tower's frozen GEMM weights (conv1 and every block's linears) converted in place to
// dt (bf16 / f16: the ops round their input to dt, f32 accumulation; f32 back). The embeddings,
// LayerNorms, biases and visual.proj (a vt_matmul) stay f32; the text tower is left as it is.
// Call before vt_openclip_to_device so the upload is the 16-bit copy.
vt_err vt_openclip_set_image_weight_dtype(vt_openclip *m, vt_dtype dt);
// Frees the text tower (its weights and blocks): afterwards vt_openclip_encode_text fails naming
// the missing tower. For rewards that cached every prompt's text embedding (rewards/reward.h).
void vt_openclip_drop_text(vt_openclip *m);

// VideoCrafter2 conditioner (layer "penultimate"): tokens i64 [B, L] -> ln_final of the output
// of resblocks 0..layers-2 (the last block skipped), all L positions: [B, L, W].
vt_tensor *vt_openclip_encode_text_penultimate(vt_openclip *m, const vt_tensor *tokens);
// encode_text: all blocks, ln_final, row at argmax(tokens) (EOT), @ text_projection: [B, E].
vt_tensor *vt_openclip_encode_text(vt_openclip *m, const vt_tensor *tokens);
// encode_image: image [B, 3, S, S] (already normalised) -> [B, E].
vt_tensor *vt_openclip_encode_image(vt_openclip *m, vt_tensor *image);
// HPSv2 score per sample: <normalize(image_embed), normalize(text_embed)>, [B] x [B] -> [B].
// The normalised features are returned through the optional out pointers (new references).
vt_tensor *vt_openclip_hps_score(vt_tensor *image_embed, vt_tensor *text_embed, vt_tensor **image_features,
                                 vt_tensor **text_features);

#ifdef __cplusplus
}
#endif
