// unet3d.h — lvdm's UNetModel as VideoCrafter2 configures it (openaimodel3d.py): a 2-D UNet
// run per frame on [(b t), c, h, w], with a TemporalConvBlock after every ResBlock, a
// TemporalTransformer (self-attention over the frames of one pixel) after every
// SpatialTransformer, an extra TemporalTransformer (init_attn, 8 heads) after the first conv,
// and fps conditioning added to the timestep embedding.
//
// Modules mirror the checkpoint: the model is built from a weight store and a prefix
// ("model.diffusion_model."), every tensor asked for with its exact shape; a missing,
// mis-shaped or unused key is an error naming the key (all problems are listed at once).
//
// Autograd: the forward runs on the current tape. Frozen weights get no gradient unless
// marked (vt_unet3d_param + vt_requires_grad, as the fixture check does); LoRA A/B are
// fp32 leaves with requires_grad. With checkpointing on, every ResBlock (with its temporal
// conv) and every Spatial / Temporal transformer as a whole is a vt_segment (lvdm checkpoints
// each BasicTransformerBlock; the whole transformer keeps 1 activation on the tape instead of
// 4; depth > 1 nests a segment per block).
//
// Dropout (off by default = the fixtures' eval mode): temporal conv Dropout(p) before conv2..4
// (0.1 upstream, active during VADER training) and LoRA dropout on the LoRA branch input
// (peft's lora_dropout). Each dropout site has a fixed index; its mask seed is
// vt_hash64(forward seed, site index), so a segment recompute reproduces it exactly.
#pragma once
#include "../weights.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VT_UNET3D_MAX_LEVELS 8

typedef struct vt_unet3d_config {
    int in_channels, out_channels, model_channels;
    int n_attention_resolutions;
    int attention_resolutions[VT_UNET3D_MAX_LEVELS];  // downsampling factors ds with attention
    int num_res_blocks;
    int n_levels;  // len(channel_mult)
    int channel_mult[VT_UNET3D_MAX_LEVELS];
    int num_head_channels;  // d_head; heads = channels / num_head_channels; <= 0 (lvdm's -1): use num_heads
    int num_heads;          // with num_head_channels <= 0: heads fixed, d_head = channels / num_heads
    int transformer_depth;  // BasicTransformerBlocks per SpatialTransformer and in init_attn
    int temporal_transformer_depth;  // ... per block TemporalTransformer (lvdm default 1; <= 0 means 1)
    int context_dim;
    int use_linear;           // Linear proj_in/out in the block transformers (else 1x1 conv)
    int temporal_conv;        // TemporalConvBlock (key temopral_conv) after each ResBlock
    int temporal_attention;   // TemporalTransformer after each SpatialTransformer
    int temporal_selfatt_only;  // temporal attn2 is self-attention (VideoCrafter2); 0: cross-attention on
                                // the text, pixel p of a sample seeing frame p / (H*W/T)'s context
    int use_causal_attention;   // temporal self-attention masked to frames <= the query's (needs T = temporal_length)
    int temporal_length;        // lvdm's temporal_length (the causal mask and the relative-position tables read
                                // it; 0: unset, any T)
    int use_relative_position;  // lvdm RelativePosition in both attentions of every TemporalTransformer (init_attn
                                // included): learnt tables relative_position_k / _v .embeddings_table
                                // [2 temporal_length + 1, d_head] on the scores and the values (VideoCrafter2: off)
    int addition_attention;   // init_attn after input_blocks.0
    int init_attn_heads;      // 8 in lvdm (d_head = num_head_channels)
    int fps_cond;             // fps_embedding added to the time embedding
    int use_checkpoint;       // default for vt_unet3d.checkpoint
} vt_unet3d_config;

// VideoCrafter2 512 (v2.0): in/out 4, mc 320, attention at ds 4, 2, 1, 2 res blocks,
// mult [1, 2, 4, 4], d_head 64, depth 1, context 1024, linear projections, every temporal
// part on, fps conditioning (1,413,284,420 parameters).
vt_unet3d_config vt_unet3d_config_videocrafter2(void);
// lvdm UNetModel.__init__'s own defaults (channel_mult 1, 2, 4, 8, no temporal conv, temporal
// attention with relative positions, no init_attn, no fps conditioning, ...) with the required
// sizes left 0: the base for a json holding UNetModel(**config) kwargs (the fixture runner's),
// so that a field the json leaves out means what it means upstream.
vt_unet3d_config vt_unet3d_config_lvdm_defaults(void);
// Reads lvdm UNetModel params from a JSON object (in_channels, out_channels, model_channels,
// attention_resolutions, num_res_blocks, channel_mult, num_head_channels, num_heads,
// transformer_depth, temporal_transformer_depth, context_dim, use_linear, use_checkpoint,
// temporal_conv, temporal_attention, temporal_selfatt_only, use_causal_attention,
// temporal_length, use_relative_position, addition_attention, fps_cond, and the options below);
// missing fields keep *c's values (the base decides: vt_unet3d_config_lvdm_defaults for
// UNetModel kwargs, where use_relative_position is true; VideoCrafter2's preset has it false). Options this implementation does not have (
// use_scale_shift_norm, resblock_updown, tempspatial_aware, use_image_attention, dims != 2,
// conv_resample false, ...) are VT_ERR_CONFIG naming the field.
struct cJSON;
vt_err vt_unet3d_config_from_json(const struct cJSON *config, vt_unet3d_config *c);

// Total downsampling factor 2^(n_levels - 1): latent h and w must be multiples of it.
int vt_unet3d_downsampling(const vt_unet3d_config *c);
// Heads and d_head of the block transformers at `channels` (lvdm: num_head_channels, or
// num_heads when num_head_channels is -1); their inner width is heads * d_head.
void vt_unet3d_heads(const vt_unet3d_config *c, int channels, int *heads, int *d_head);
// Blocks per block TemporalTransformer (temporal_transformer_depth, 1 when unset).
int vt_unet3d_temporal_depth(const vt_unet3d_config *c);

typedef struct vt_unet3d vt_unet3d;

// Called with each top-level module's forward output (names as the fixtures' act.*:
// "time_embed", "fps_embedding", "input_blocks.0", "init_attn", "input_blocks.N",
// "middle_block", "output_blocks.N"); the tensor is borrowed (retain it to keep it).
typedef void (*vt_unet3d_act_hook)(void *user, const char *name, vt_tensor *t);

// Builds from weights under prefix. NULL + VT_ERR_KEY listing every missing / mis-shaped /
// unused key under the prefix.
vt_unet3d *vt_unet3d_build(vt_weights *w, const char *prefix, const vt_unet3d_config *cfg);
// Checks a store against cfg without keeping the tensors (each one is released as soon as it
// is checked: a full-size shape-only manifest store is checked in little memory); *n_params
// gets the parameter count. Same errors as vt_unet3d_build.
vt_err vt_unet3d_check_weights(vt_weights *w, const char *prefix, const vt_unet3d_config *cfg, int64_t *n_params);
// Random weights in the real layout (benchmarks, memory plans): matrices ~ N(0, 1/fan_in),
// norm gains 1, biases 0; names as under "model.diffusion_model.".
vt_unet3d *vt_unet3d_build_random(const vt_unet3d_config *cfg, uint64_t seed);
void vt_unet3d_free(vt_unet3d *u);
// Multiply-add FLOPs (2 per MAC) of one forward on x [B, C, T, H, W] with a context of L
// tokens: GEMM-like work only (linears, convolutions, attention scores and values);
// *attn gets the attention part (its backward costs twice its forward, the rest once: frozen
// weights get no weight-gradient GEMMs). Norms and elementwise ops are not counted.
double vt_unet3d_flops(const vt_unet3d_config *c, int64_t B, int64_t T, int64_t H, int64_t W, int64_t L, double *attn);
const vt_unet3d_config *vt_unet3d_get_config(const vt_unet3d *u);
int64_t vt_unet3d_n_params(const vt_unet3d *u);  // frozen weights (LoRA not counted)
// The weight for a state-dict key without the prefix ("out.2.weight"), borrowed, or NULL.
vt_tensor *vt_unet3d_param(const vt_unet3d *u, const char *name);
// Every weight in build order: count, and the i-th with its key (without the prefix), borrowed.
int vt_unet3d_n_weights(const vt_unet3d *u);
vt_tensor *vt_unet3d_weight(const vt_unet3d *u, int i, const char **name);

// Run settings (may change between forwards; a forward's values are captured for its
// segments' recompute).
void vt_unet3d_set_checkpoint(vt_unet3d *u, int on);
void vt_unet3d_set_dropout(vt_unet3d *u, float temporal_conv_p, float lora_p);
float vt_unet3d_lora_dropout(const vt_unet3d *u);  // the LoRA dropout p set above
void vt_unet3d_set_act_hook(vt_unet3d *u, vt_unet3d_act_hook hook, void *user);

// x [B, in_channels, T, H, W] f32, timesteps i64 [B], context [B, L, context_dim], fps i64 [B]
// or one value for all samples (NULL: 16, lvdm's default; VADER passes 24) -> eps [B, out_channels, T, H, W].
// seed: dropout masks of this call (ignored when every dropout p is 0).
vt_tensor *vt_unet3d_forward(vt_unet3d *u, vt_tensor *x, const vt_tensor *timesteps, vt_tensor *context,
                             const vt_tensor *fps, uint64_t seed);
// Frees the per-forward segment closures kept for checkpoint recompute. Call after the
// backward of every forward run with checkpointing (vt_unet3d_free does it too).
void vt_unet3d_release_segments(vt_unet3d *u);

// ---- LoRA (peft) ---------------------------------------------------------------------------
enum {
    VT_LORA_TO_Q = 1,
    VT_LORA_TO_K = 2,
    VT_LORA_TO_V = 4,
    VT_LORA_TO_OUT = 8,  // to_out.0
};
typedef struct vt_unet3d_lora_config {
    int rank;
    float alpha;       // scale = alpha / rank
    unsigned targets;  // VT_LORA_* bits; VADER: Q | K | V
    uint64_t seed;     // init of A
} vt_unet3d_lora_config;

// Adds LoRA to every targeted projection of every attention (init_attn included, as peft's
// name matching does): A [r, in] ~ U(-1/sqrt(in), 1/sqrt(in)) (peft's kaiming_uniform_(a=
// sqrt(5))), B [out, r] = 0, both fp32 with requires_grad. Only once per model.
vt_err vt_unet3d_add_lora(vt_unet3d *u, const vt_unet3d_lora_config *cfg);
// LoRA parameters in module order (A then B of each projection). Names are what peft's
// save_pretrained writes for get_peft_model(LatentDiffusion) as VADER does:
//   "base_model.model." + prefix + module path + ".lora_A.weight" / ".lora_B.weight", e.g.
//   base_model.model.model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.lora_A.weight
// Tensors are borrowed.
int vt_unet3d_n_lora(const vt_unet3d *u);
vt_tensor *vt_unet3d_lora_param(const vt_unet3d *u, int i, const char **name);
// Copies every LoRA parameter from a store holding the names above (strict: missing or
// mis-shaped -> VT_ERR_KEY naming the key).
vt_err vt_unet3d_lora_load(vt_unet3d *u, vt_weights *store);
// ---- untaped sampling (the DDIM steps before the taped window, plain sampling) ------------
// Both below apply only to forwards with no tape and LoRA dropout 0 (the no-grad fast path):
// forwards on a tape (taped steps, their segments' recompute) and forwards with LoRA dropout run
// the unmerged LoRA branch and project the context themselves, exactly as without them. They
// are snapshots: after changing the LoRA parameters (optimizer step, load) merge / cache again.
//
// Merges the LoRA into the weights: each LoRA projection gets W' = W + (alpha / r) B A as a
// separate fp32 tensor (W itself is untouched; fp32 weights only: a bf16 / fp16 W keeps the
// unmerged branch, which rounding W' would lose). Memory: one copy of every LoRA-targeted weight.
vt_err vt_unet3d_lora_merge(vt_unet3d *u);
void vt_unet3d_lora_unmerge(vt_unet3d *u);  // frees the merged weights (no-op if none)
int vt_unet3d_lora_is_merged(const vt_unet3d *u);
// Keeps every cross-attention's to_k / to_v of ctx [B, L, context_dim] (with the LoRA as it is
// now): the text context is the same for every DDIM step, so a sampling loop projects it once.
// Untaped forwards given exactly this ctx tensor (pointer; ctx is retained) use them. NULL drops
// the cache.
vt_err vt_unet3d_cache_context(vt_unet3d *u, vt_tensor *ctx);
// Moves every weight and LoRA parameter to dev in place (pointers, names and requires_grad
// stay; see vt_tensors_to_device); drops merged weights and the context cache. LoRA added later
// is created on dev. Inputs of forward may be on the host where they are host data by nature
// (timesteps, fps); x and context go on dev.
vt_err vt_unet3d_to_device(vt_unet3d *u, vt_device dev);
// Stores the frozen GEMM weights (Linear and Conv kernels: every "*.weight" of 2 or more dims
// except the relative-position tables, which are gathered, not multiplied) as dt (VT_BF16 /
// VT_F16, or VT_F32 back) in place: the linear / conv ops then round their input to dt and
// accumulate in f32 (core/ops.h). Norms, biases, tables and LoRA stay f32. Drops merged
// weights and the context cache (the merge needs f32 weights). Before or after to_device.
vt_err vt_unet3d_set_weight_dtype(vt_unet3d *u, vt_dtype dt);
vt_device vt_unet3d_device(const vt_unet3d *u);

#ifdef __cplusplus
}
#endif
