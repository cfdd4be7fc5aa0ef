// memplan.h — the memory plan (DESIGN.md "Memory plan"): before a run starts, the peak it will
// need, computed from the config and the model shapes alone, and a refusal naming what to
// change when it does not fit the device.
//
// Terms (bytes; weights at their run dtype: fp32 on the CPU, model.dtype (bf16 by default) on
// the GPU; activations likewise; LoRA, its gradients and AdamW state always fp32):
//   resident     frozen weights of the UNet, VAE decoder, text tower (kept for the run) and
//                reward models, + LoRA params, grads, AdamW m and v, + the prompt contexts
//   sampling     the largest live activation set of one no-grad UNet forward on the CFG pair:
//                the skip connections held for the output blocks + the biggest block's
//                working set (flash-style attention: no score matrices)
//   taped        what the taped steps keep for the backward: with checkpointing the segment
//                inputs (every ResBlock / transformer block) and the few ops outside
//                segments, without it every op's saved tensors
//   decode       the VAE decode of the chosen frames on the tape (the same two regimes)
//   reward       the reward towers' saved activations on the decoded frames
//   backward     the largest segment's recompute (its full tape) + gradient buffers
// peak = resident + max(sampling, taped + the forward working set, taped + decode + reward +
// backward). The per-op constants are estimates of what the CPU reference ops save (counted in
// tensors of the block's activation size); tests hold the prediction within 30% of the CPU
// allocator's measured peak on the tiny config.
#pragma once
#include <stdio.h>
#include "train/config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vt_memplan {
    double w_unet, w_vae, w_text, w_reward;  // frozen weights
    double lora;                             // LoRA params + grads + AdamW m, v
    double contexts;                         // prompt contexts (+ x, noise: a few latents)
    double resident;                         // sum of the above
    double sampling;                         // no-grad UNet forward working set
    double taped_ckpt, taped_full;           // taped steps' saved tensors with / without checkpointing
    double taped;                            // the one the config uses
    double decode_ckpt, decode_full, decode; // VAE decode saved tensors (+ output frames)
    double reward;                           // reward towers' saved activations (+ preprocessing)
    double backward;                         // largest recompute + gradient working set
    double peak;
    const char *peak_phase;                  // "sampling", "taped forward", "backward"
    int64_t n_unet, n_vae, n_text, n_reward, n_lora;  // parameter counts
    int act_bytes;                           // bytes per activation element
} vt_memplan;

// Computes the plan for cfg. Parameter counts come from the checkpoints / manifests named by
// the config (their headers only), the tiny presets when the config names none, and the
// released reward models' sizes when a reward has no checkpoint. The tiny models are built
// (random, a few MB) to count them.
vt_err vt_memplan_compute(const vt_config *cfg, vt_memplan *p);

// The memory a run may use on the config's device: the CPU's MemAvailable (/proc/meminfo,
// else sysconf physical pages); 0 when unknown (a GPU without a limit given). *source names
// where it came from.
size_t vt_memplan_device_memory(const vt_config *cfg, const char **source);

// Plan + check: limit (bytes; 0 = vt_memplan_device_memory). Refuses (VT_ERR_OOM) a run whose
// predicted peak exceeds the limit with a message naming the largest terms and what to change
// (memory.decode_frames, sampler.backprop_steps, memory.checkpointing, memory.offload,
// model.height/width/frames, data.batch_size). The plan goes to log when not NULL.
vt_err vt_memplan_check(const vt_config *cfg, size_t limit, FILE *log, vt_memplan *out);

// Human-readable plan (one term a line) into buf.
void vt_memplan_format(const vt_memplan *p, char *buf, size_t n);
// "--memory-limit" values: bytes with an optional K/M/G/T suffix (powers of 1024). 0 on error.
size_t vt_memplan_parse_size(const char *s);

#ifdef __cplusplus
}
#endif
