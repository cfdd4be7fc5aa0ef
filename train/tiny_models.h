// tiny_models.h — the tiny random-weight VideoCrafter2-family models of the CPU runs
// (model.random_weights: true with no checkpoints): the same modules and key layout as the
// full models, a few thousand times smaller, so a whole VADER training run takes minutes on
// two CPU cores. Weights: matrices and convolution kernels ~ N(0, 1/fan_in), norm gains 1,
// biases 0 (embeddings N(0, 1/width)), deterministic in the seed.
#pragma once
#include "core/models/openclip.h"
#include "core/models/unet3d.h"
#include "core/models/vae_decoder.h"

#ifdef __cplusplus
extern "C" {
#endif

// Temporal length the tiny preset allows (frames per video).
#define VT_TINY_TEMPORAL_LENGTH 16

// UNet: in/out 4, mc 32, mult [1, 2], attention at ds 1 and 2, one res block, d_head 16,
// context 32, every temporal part and fps conditioning on.
vt_unet3d_config vt_tiny_unet_config(void);
// VAE decoder: z 4, ch 32 (GroupNorm needs multiples of 32), ch_mult [1, 1, 2, 2] (x8 upsampling as the real one), 1 res block.
vt_vae_config vt_tiny_vae_config(void);
// Text tower: width 32 (= the tiny UNet's context_dim), 2 heads, 3 layers, 77 tokens,
// the CLIP vocabulary (49408) so the real tokenizer drives it.
vt_openclip_config vt_tiny_text_config(void);

// Random-weight builds of the real module layouts (any config, not only the tiny ones).
vt_vae_decoder *vt_vae_decoder_build_random(const vt_vae_config *cfg, uint64_t seed);
vt_openclip *vt_openclip_text_build_random(const vt_openclip_config *cfg, uint64_t seed);

#ifdef __cplusplus
}
#endif
