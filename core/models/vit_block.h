// vit_block.h — the pre-LN transformer block of the CLIP towers, shared by open_clip
// (openclip.h) and transformers' CLIPModel (hf_clip.h):
//
//   x += out_proj(MHA(ln_1(x)))          q, k, v from three linears (HF) or one packed in_proj
//   x += proj(act(fc(ln_2(x))))          act = exact GELU or quick_gelu (x * sigmoid(1.702 x))
//
// Each model keeps its checkpoint's key names: it describes them in a vt_vit_block_keys and
// the stack is built from those, so the fields here are layout-neutral.
#pragma once
#include "../weights.h"
#include "vae_decoder.h"  // vt_act_hook

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vt_clip_ln { vt_tensor *w, *b; } vt_clip_ln;          // LayerNorm [W]
typedef struct vt_clip_linear { vt_tensor *w, *b; } vt_clip_linear;  // [out, in], [out]

typedef struct vt_vit_block {
    int heads, causal, quick_gelu;  // copied from the stack (a checkpoint segment's whole context)
    float eps;
    vt_clip_ln ln_1, ln_2;
    vt_tensor *in_proj_weight, *in_proj_bias;  // [3W, W], [3W] when packed (owned by the model)
    vt_clip_linear q, k, v;                    // packed: views of in_proj rows 0..W-1, W..2W-1, 2W..
    vt_clip_linear out_proj;
    vt_clip_linear fc, proj;  // mlp: [I, W], [W, I]
    int packed;               // q, k, v are views owned by the block (released by vt_vit_stack_free)
} vt_vit_block;

// A tower's stack of blocks; heads, causal mask, activation and eps are the same for all.
typedef struct vt_vit_stack {
    int width, heads, layers, causal, quick_gelu;
    float eps;  // LayerNorm eps
    vt_vit_block *blocks;
} vt_vit_stack;

// Key names of one block, relative to "TOWER_PREFIX + index + .": a LayerNorm or Linear stem
// gets ".weight" / ".bias" appended. in_proj_weight / in_proj_bias are full names (open_clip's
// nn.MultiheadAttention); when they are NULL, q / k / v name three linears instead.
typedef struct vt_vit_block_keys {
    const char *ln_1, *ln_2;
    const char *in_proj_weight, *in_proj_bias;
    const char *q, *k, *v;
    const char *out_proj, *fc, *proj;
} vt_vit_block_keys;

struct cJSON;
// Optional integer field `name` of an HF config object: absent or null leaves *v as it is; a
// non-integer is VT_ERR_CONFIG "<model> config: <name> must be an integer".
vt_err vt_hf_config_int(const struct cJSON *o, const char *model, const char *name, int *v);

struct vt_param_list;
// LayerNorm NAME.weight / NAME.bias [W]; Linear NAME.weight [out, in] / NAME.bias [out].
void vt_vit_get_ln(struct vt_param_list *pl, vt_clip_ln *ln, const char *name, int64_t W);
void vt_vit_get_linear(struct vt_param_list *pl, vt_clip_linear *l, const char *name, int64_t out, int64_t in);

// Fills s->blocks[0..s->layers) (width, heads, layers, causal, quick_gelu, eps already set in
// *s) from the keys "block_prefix N . keys->*", mlp width `mlp`. Sets pl->failed on error.
void vt_vit_stack_get(struct vt_param_list *pl, vt_vit_stack *s, const char *block_prefix,
                      const vt_vit_block_keys *keys, int64_t mlp);
// Frees the blocks array and the q / k / v views (the weights belong to the param list).
void vt_vit_stack_free(vt_vit_stack *s);
// Moves a model to dev: the model's own tensors (list[0..n)) plus the q / k / v row views the
// stacks own, in one vt_tensors_to_device call so the views stay views of the moved in_proj.
// extra[0..n_extra) are further owned tensors (NULL entries allowed).
vt_err vt_vit_model_to_device(vt_tensor **list, int n, vt_vit_stack *const *stacks, int n_stacks,
                              vt_tensor **extra, int n_extra, vt_device dev);

// The stack's frozen GEMM weights (q / k / v with their packed in_proj, out_proj, fc, proj:
// every vt_linear weight; biases and LayerNorms stay f32) converted in place to dt
// (core/tensor.h vt_tensors_to_dtype: the q / k / v row views stay views of the new in_proj).
// The linears then round their input to dt and accumulate in f32 (core/ops.h).
vt_err vt_vit_stack_set_weight_dtype(vt_vit_stack *s, vt_dtype dt);

// Runs blocks [0, n) on x [B, L, W] (released), each as a checkpoint segment when `segments`;
// hook (optional) sees every block output as "hook_prefix N".
vt_tensor *vt_vit_stack_forward(const vt_vit_stack *s, vt_tensor *x, int n, int segments, vt_act_hook hook,
                                void *hook_user, const char *hook_prefix);

// The same with rotary position embeddings (V-JEPA 2's 3-D RoPE, vjepa2.h) applied to q and k
// of every block: q' = q * rope_cos + swap(q) * rope_sin, where swap exchanges the channels of
// each pair (2i, 2i+1) of the merged [.., heads * d] layout and rope_sin carries the sign
// (-sin on even channels). rope_cos / rope_sin [L, W] or [B, L, W] (constants, no gradient;
// built by vt_vjepa2_rope_tables); both NULL: plain attention. The head dim must be even.
vt_tensor *vt_vit_stack_forward_rope(const vt_vit_stack *s, vt_tensor *x, int n, int segments, vt_tensor *rope_cos,
                                     vt_tensor *rope_sin, vt_act_hook hook, void *hook_user, const char *hook_prefix);
// x [B, L, W] -> x * cos + swap_pairs(x) * sin (the rotation above); W even.
vt_tensor *vt_vit_rope_apply(vt_tensor *x, vt_tensor *rope_cos, vt_tensor *rope_sin);

// Zero-copy view of rows [r0, r0 + n) of a row-major [R, C] (or [R]) tensor.
vt_tensor *vt_vit_row_view(vt_tensor *t, int64_t r0, int64_t n);

// image [B, 3, g*p, g*p] -> [class_embedding; conv(image, patch_w, stride p) patches] +
// positional_embedding: [B, 1 + g*g, W] (patches row-major, as flatten(2).transpose(1, 2)).
vt_tensor *vt_vit_patch_embed(vt_tensor *image, vt_tensor *patch_w, vt_tensor *class_embedding,
                              vt_tensor *positional_embedding, int patch_size, int grid);
// x [B, L, W] (released) -> x[:, 0] [B, W]: the class token both towers pool.
vt_tensor *vt_vit_class_token(vt_tensor *x);

#ifdef __cplusplus
}
#endif
