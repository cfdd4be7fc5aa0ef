// vader_step.h — one VADER training step (VADER-VideoCrafter train_t2v_lora.py): DDIM sampling
// with classifier-free guidance from x_T, the autograd tape kept only for the steps that need
// it (truncated backprop), the chosen latent frames decoded by the VAE, a differentiable
// reward, and the loss backpropagated into the UNet's LoRA parameters.
//
// Truncated backprop. The taped window is K consecutive DDIM steps [start, end] (i counts
// sampling steps 0..S-1, index = S-1-i is the schedule index):
//   last:     end = S-1
//   rand:     end uniform in K-1..S-1 (drawn from the step's rng)
//   specific: start = backprop_step (as the config's validation reads it)
// Steps before start run in no-grad mode (nothing recorded, buffers reused): x entering step
// start is a constant. Steps in the window run on the tape with the LoRA parameters requiring
// grad. Steps after the window (rand / specific with end < S-1) also run on the tape, so the
// gradient reaches the window through x, but with the LoRA parameters frozen: the LoRA gets
// gradient only from the K window steps. With checkpointing each UNet block (and each VAE
// block) is a checkpoint segment, so a taped step costs the memory of its block inputs.
//
// CFG: e = e_u + s (e_c - e_u); the conditional and unconditional UNet calls run as one call
// on a batch of 2B (cond first); guidance 1 runs the conditional call only.
//
// Decoding (VADER decode_frame): "-1" one random frame, "fml" frames 0, T/2, T-1, "alt"
// frames 0, 2, 4, ..., "all", or frame N; frames [B, 3, F, H, W] = decoder(post_quant_conv(
// samples[:, :, idx] / 0.18215)).
#pragma once
#include "core/vt.h"
#include "core/models/unet3d.h"
#include "core/models/vae_decoder.h"
#include "core/models/openclip.h"
#include "core/tokenizer.h"
#include "train/config.h"
#include "train/ddim.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VT_VADER_MAX_FRAMES 64

// A reward on the tape: frames [B, 3, F, H, W] in [-1, 1] (not clamped) -> scalar loss to
// minimise; *reward gets the per-sample reward [B] (new reference, may be detached).
typedef vt_tensor *(*vt_vader_reward_fn)(void *user, vt_tensor *frames, vt_tensor **reward);

// The colour reward (fixtures, tiny runs): img = (clamp(frames, -1, 1) + 1) / 2,
// reward[b] = mean over (frame, h, w) of sum_c img[b, c] rgb[c]; loss = -mean_b reward.
// user: const float rgb[3] or NULL for the default [0.7, -0.2, 0.5].
vt_tensor *vt_color_reward(void *user, vt_tensor *frames, vt_tensor **reward);
extern const float vt_color_reward_rgb[3];

// Wall time of the phases of VADER steps, accumulated (+=) when vt_vader_step_args.timing is
// non-NULL (vader-bench); nothing is timed otherwise. The trainer adds the optimizer and
// all-reduce phases and each optimisation step's total.
#define VT_STEP_TIMING_MAX_STEPS 256
typedef struct vt_step_timing {
    double nograd_s;     // sampling steps before the taped window (no tape)
    double taped_fwd_s;  // steps on the tape: UNet forwards + DDIM updates
    double decode_s;     // VAE decode of the chosen frames
    double reward_s;     // reward forward
    double backward_s;   // backward (segment recompute included)
    double optimizer_s;  // gradient clipping + AdamW (trainer)
    double allreduce_s;  // gradient all-reduce across ranks (trainer)
    int nograd_steps, taped_steps, vader_steps;
    int n_step_s;                                // optimisation steps recorded below
    double step_s[VT_STEP_TIMING_MAX_STEPS];     // wall time of each optimisation step (trainer)
} vt_step_timing;

typedef struct vt_vader_step_args {
    vt_unet3d *unet;
    vt_vae_decoder *vae;
    const vt_ddim_schedule *sched;
    vt_tensor *x_T;             // [B, C, T, h, w]
    vt_tensor *context;         // [B, L, D]
    vt_tensor *uncond_context;  // [B, L, D] (unused when guidance == 1)
    const vt_tensor *fps;       // i64 [B] or NULL (16)
    vt_tensor *const *noise;    // S tensors like x_T (noise.i of step i), or NULL: drawn from rng
    vt_rng *rng;                // noise, random frame, rand window (required unless all given)
    float guidance;
    int batch_cfg;              // cond and uncond as one UNet call of batch 2B
    int K;                      // steps in the taped window, 0 = no gradient at all
    vt_cfg_backprop backprop_mode;
    int backprop_step;          // first step of the window for specific
    vt_cfg_decode decode;
    int decode_index;           // for VT_CFG_DECODE_INDEX
    int checkpointing;          // UNet and VAE blocks as checkpoint segments
    vt_dtype saved_dtype;       // the segments' saved activation inputs (vt_tape_set_saved_dtype;
                                // VT_F32 default: exact)
    int nograd_fast;            // untaped steps on merged LoRA weights and the context's K/V
                                // projected once (vt_unet3d_lora_merge / cache_context; only
                                // with LoRA dropout 0, where it is the same function)
    uint64_t dropout_seed;      // seeds of the UNet calls' dropout masks (when dropout is on)
    vt_vader_reward_fn reward;
    void *reward_user;
    float loss_scale;           // the backward starts from d(loss_scale * loss): 1 / accumulation
    int backward;               // run the backward (LoRA ->grad accumulates)
    int record_steps;           // keep every step's x_prev / pred_x0 in the result
    int start_step;             // resume sampling at this step: x_T is then the x entering it
                                // (tests: the truncated gradient holds that x constant)
    vt_step_timing *timing;     // phase times accumulate here when non-NULL
} vt_vader_step_args;

// Fills the defaults: guidance 12, batch_cfg on, K 1, last, decode "-1", checkpointing on,
// nograd_fast on, colour reward, loss_scale 1, backward on.
void vt_vader_step_args_default(vt_vader_step_args *a);
// The defaults, then the models, the schedule and the inputs every step needs.
void vt_vader_step_args_init(vt_vader_step_args *a, vt_unet3d *unet, vt_vae_decoder *vae, const vt_ddim_schedule *sched,
                             vt_tensor *x_T, vt_tensor *context, vt_tensor *uncond_context, const vt_tensor *fps);
// The step options of a run config: guidance, K, backprop mode and step (sampler), decode
// frames / index and checkpointing (memory).
void vt_vader_step_args_from_config(vt_vader_step_args *a, const vt_config *c);

typedef struct vt_vader_step_result {
    vt_tensor *samples;  // [B, C, T, h, w] final latents (detached)
    vt_tensor *frames;   // [B, 3, F, H, W] decoded frames (detached)
    vt_tensor *reward;   // [B] (detached)
    double loss;         // unscaled
    int window_start, window_end;  // taped LoRA window (sampling step numbers), -1 when K == 0
    int n_frames;
    int frame_index[VT_VADER_MAX_FRAMES];
    int n_steps;
    vt_tensor **x_prev, **pred_x0;  // [S] each, when record_steps
    double seconds;
} vt_vader_step_result;

// Runs one step. On error the result holds nothing (and no gradient is left half-accumulated
// beyond what the backward had written). The LoRA parameters' requires_grad flags are restored.
vt_err vt_vader_step(const vt_vader_step_args *a, vt_vader_step_result *r);
void vt_vader_step_result_free(vt_vader_step_result *r);

// The frames decoded for T latent frames: fills idx (up to max) and returns the count, or -1 +
// VT_ERR_CONFIG (an index out of range). rng is used only for "-1".
int vt_vader_decode_frames(vt_cfg_decode mode, int index, int T, vt_rng *rng, int *idx, int max);

// Text conditioning as VideoCrafter2's FrozenOpenCLIPEmbedder (penultimate layer), no tape:
// prompts -> [n, context_length, width]. An empty string gives the unconditional context.
vt_tensor *vt_vader_encode_prompts(vt_openclip *clip, vt_tokenizer *tok, const char *const *prompts, int n);

#ifdef __cplusplus
}
#endif
