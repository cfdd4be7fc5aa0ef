// vae_decoder.h — the decode path of lvdm's AutoencoderKL (VideoCrafter2 first_stage_model):
// post_quant_conv, then the Decoder (conv_in, mid.block_1 / attn_1 / block_2, up.N-1 .. up.0,
// norm_out, swish, conv_out). Module fields mirror the checkpoint keys under the prefix
// ("first_stage_model." in the full checkpoint), so "decoder.up.1.block.0.conv1.weight" is
// vae->up[1].block[0].conv1.w.
//
// Everything runs on the tape: gradients flow back to the latent z (the weights are frozen).
// With vae->segments set, each ResnetBlock and the mid AttnBlock is a checkpoint segment
// (vt_segment): backward recomputes it instead of keeping its activations.
#pragma once
#include "../weights.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VT_VAE_MAX_LEVELS 8

// The decoder's part of lvdm's ddconfig. resolution only matters when attn_resolutions is
// non-empty (it sets the spatial size at which up blocks get attention).
typedef struct vt_vae_config {
    int z_channels, ch, out_ch, num_res_blocks, resolution;
    int embed_dim;         // latent channels: post_quant_conv is embed_dim -> z_channels (0: z_channels)
    int resamp_with_conv;  // Upsample has its 3x3 conv (lvdm default 1)
    int n_levels;  // len(ch_mult)
    int ch_mult[VT_VAE_MAX_LEVELS];
    int n_attn;
    int attn_resolutions[VT_VAE_MAX_LEVELS];
    float scale_factor;  // latents are divided by it before post_quant_conv (0.18215)
} vt_vae_config;

// VideoCrafter2's decoder: z 4, ch 128, ch_mult [1, 2, 4, 4], 2 res blocks, no attention in
// up blocks, out 3, scale_factor 0.18215.
vt_vae_config vt_vae_config_videocrafter2(void);
// Reads the config from a JSON object text (lvdm ddconfig fields: z_channels, ch, ch_mult,
// num_res_blocks, attn_resolutions, out_ch, resolution, resamp_with_conv, and AutoencoderKL's
// embed_dim); missing fields keep the values already in *c. VT_ERR_CONFIG naming the field on
// a bad value or on an option this decoder does not have (attn_type other than "vanilla",
// use_linear_attn, tanh_out, give_pre_end).
struct cJSON;
vt_err vt_vae_config_from_json(const struct cJSON *config, vt_vae_config *c);

typedef struct vt_vae_conv { vt_tensor *w, *b; } vt_vae_conv;          // Conv2d weight [O, C, k, k], bias [O]
typedef struct vt_vae_norm { vt_tensor *w, *b; } vt_vae_norm;          // GroupNorm / LayerNorm affine [C]

// ResnetBlock (temb_channels 0): x + conv2(swish(norm2(conv1(swish(norm1(x))))))
typedef struct vt_vae_resblock {
    int in_ch, out_ch;
    vt_vae_norm norm1, norm2;
    vt_vae_conv conv1, conv2;
    vt_vae_conv nin_shortcut;  // 1x1, only when in_ch != out_ch (else NULL)
} vt_vae_resblock;

// AttnBlock: single-head self-attention over H*W positions with 1x1-conv q, k, v, proj_out.
typedef struct vt_vae_attnblock {
    int ch;
    vt_vae_norm norm;
    vt_vae_conv q, k, v, proj_out;
} vt_vae_attnblock;

typedef struct vt_vae_level {
    int n_block;
    vt_vae_resblock *block;   // num_res_blocks + 1
    vt_vae_attnblock *attn;   // n_block entries when this level has attention, else NULL
    int has_upsample;         // every level but 0
    vt_vae_conv upsample;         // up.i.upsample.conv
} vt_vae_level;

// Called with each submodule's forward output (state-dict names without the prefix:
// "post_quant_conv", "decoder.conv_in", "decoder.mid.block_1", "decoder.up.1.upsample", ...).
// The tensor is borrowed; retain it to keep it.
typedef void (*vt_act_hook)(void *user, const char *name, vt_tensor *t);

typedef struct vt_vae_decoder {
    vt_vae_config cfg;
    vt_vae_conv post_quant_conv;
    vt_vae_conv conv_in;
    vt_vae_resblock mid_block_1, mid_block_2;
    vt_vae_attnblock mid_attn_1;
    vt_vae_level up[VT_VAE_MAX_LEVELS];
    vt_vae_norm norm_out;
    vt_vae_conv conv_out;
    int segments;        // run ResnetBlocks / AttnBlock as checkpoint segments
    vt_act_hook hook;    // optional activation hook (debugging, fixture act.* entries)
    void *hook_user;
    // every weight tensor, for freeing and counting
    vt_tensor **tensors;
    int n_tensors, cap_tensors;
    int64_t n_params;
} vt_vae_decoder;

// Builds the decoder from weights under prefix ("first_stage_model." or ""). Every tensor is
// asked for with its exact shape: a missing or mis-shaped key fails naming the key.
vt_vae_decoder *vt_vae_decoder_build(vt_weights *w, const char *prefix, const vt_vae_config *cfg);
void vt_vae_decoder_free(vt_vae_decoder *d);
// Moves every weight (and the tables it keeps) to dev in place; see vt_tensors_to_device.
vt_err vt_vae_decoder_to_device(vt_vae_decoder *d, vt_device dev);
// Stores the conv kernels (every weight of 2 or more dims; norms and biases stay f32) as dt in
// place; see vt_unet3d_set_weight_dtype.
vt_err vt_vae_decoder_set_weight_dtype(vt_vae_decoder *d, vt_dtype dt);
int64_t vt_vae_decoder_n_params(const vt_vae_decoder *d);

// Channels of the latent the decoder takes (embed_dim, z_channels when unset).
int vt_vae_latent_channels(const vt_vae_config *c);
// One latent frame z [B, embed_dim, h, w] -> [B, out_ch, h * 2^(L-1), w * 2^(L-1)]:
// decoder(post_quant_conv(z / scale_factor)). Output not clamped.
vt_tensor *vt_vae_decode(vt_vae_decoder *d, vt_tensor *z);
// VideoCrafter2 decode_first_stage_2DAE: z [B, embed_dim, T, h, w] decoded frame by frame and
// stacked back: [B, out_ch, T, H, W].
vt_tensor *vt_vae_decode_video(vt_vae_decoder *d, vt_tensor *z);

#ifdef __cplusplus
}
#endif
