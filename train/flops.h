// flops.h — the FLOP count of one VADER optimisation step, computed from the shapes alone and
// the same way for every config, so that achieved TFLOP/s (vader-bench) compare across runs,
// machines and backends.
//
// Conventions (train/flops.c explains each term):
//  * 2 FLOPs per multiply-add; GEMM-like work only (linears, convolutions, attention scores
//    and values); norms, activations, elementwise ops, resizes and the optimizer are not
//    counted (well under 1% of the step at every size that matters).
//  * A backward through frozen weights computes input gradients only (no weight-gradient
//    GEMMs), which costs what the forward GEMMs cost, except attention, whose backward
//    needs both dQ/dK (from dP) and dP/dV: twice its forward. LoRA work is negligible (rank
//    4..16 against widths of 320..1280) and not counted.
//  * Checkpoint segments re-run their forward once during the backward.
// For the paper's configuration (VideoCrafter2 at 320x512, 12 frames, DDIM 25 with CFG, K = 1,
// checkpointing, one frame decoded, HPSv2 ViT-H-14) the count is ~518 TFLOP, 475 of them in
// the 50 UNet forwards (the issue quotes 516 / 475).
#pragma once
#include "core/models/unet3d.h"
#include "core/models/vae_decoder.h"
#include "train/config.h"

#ifdef __cplusplus
extern "C" {
#endif

// A CLIP-style reward tower: the vision transformer that scores frames (on the tape) and the
// text transformer that encodes the prompt (no tape). Zero widths = no such tower.
typedef struct vt_flops_vit {
    int image_size, patch_size, width, layers, mlp;  // vision tower
    int text_ctx, text_width, text_layers, text_mlp;  // text tower (prompt features)
} vt_flops_vit;

// The tower of a reward kind at its released size (aesthetic: CLIP ViT-L/14 vision; hps,
// hpsv21, pickscore: ViT-H-14 vision + text; color: none). Kinds without a model here
// (object_removal, action, temporal) give zeros and *known = 0.
vt_flops_vit vt_flops_reward_tower(vt_cfg_reward_kind kind, int *known);

// GEMM FLOPs of one forward of a tower on n images (vision) and m prompts (text); *attn gets
// the attention part (scores and values) of the vision forward.
double vt_flops_vit_vision(const vt_flops_vit *v, int64_t n, double *attn);
double vt_flops_vit_text(const vt_flops_vit *v, int64_t m);
// One VAE decode (post_quant_conv + Decoder) of n latent frames of h x w; *attn the attention
// part (mid.attn_1 and any up-level attention).
double vt_flops_vae_decode(const vt_vae_config *c, int64_t n, int64_t h, int64_t w, double *attn);

typedef struct vt_step_flops {
    // counts
    int unet_forwards;      // single-batch UNet evaluations (2 per CFG step): 50 for the paper config
    int taped_steps;        // DDIM steps on the tape (K, or more for rand / specific windows)
    int frames_decoded;     // per micro-batch (B x frames per video)
    int micro_batches;      // optim.accumulation
    // FLOPs of one optimisation step (all micro-batches), by term
    double unet_forward;    // every sampling step's UNet call (CFG pair batched), taped or not
    double unet_backward;   // taped steps: input gradients (= forward) + attention again
    double unet_recompute;  // checkpointing: the taped steps' forward once more
    double vae_forward, vae_backward, vae_recompute;
    double reward_forward;  // vision tower on the decoded frames + text tower on the prompts
    double reward_backward, reward_recompute;
    double total;
} vt_step_flops;

// Counts one optimisation step of cfg with these model configs (NULL: VideoCrafter2's, or the
// tiny preset when the config has no checkpoint and random weights) and reward towers from the
// config's reward kinds. Context length 77.
vt_err vt_step_flops_count(const vt_config *cfg, const vt_unet3d_config *unet, const vt_vae_config *vae,
                           vt_step_flops *out);
// Multi-line breakdown ("  unet forward   50 x ...  475.1 TFLOP (92.0%)") into buf.
void vt_step_flops_format(const vt_step_flops *f, char *buf, size_t n);

#ifdef __cplusplus
}
#endif
