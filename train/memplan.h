// memplan.h — the memory plan (DESIGN.md "Memory plan"): before a run starts, the peak it will
// need, computed from the config and the model shapes alone, and a refusal naming what to
// change when it does not fit the device.
//
// Terms (bytes; frozen weights and activations at the dtype the run really computes in, which
// is fp32 on both backends today (vt_memplan_run_dtype: the CUDA kernels are f32 only; bf16 /
// fp16 model.dtype values are refused on the GPU until they are implemented); LoRA, its
// gradients and AdamW state always fp32):
//   resident     frozen weights of the UNet, VAE decoder, text tower (kept for the run) and
//                reward models, + LoRA params, grads, AdamW m and v, + the prompt contexts
//   sampling     the largest live activation set of one no-grad UNet forward on the CFG pair:
//                the skip connections held for the output blocks + the biggest block's
//                working set (flash-style attention: no score matrices), + the merged LoRA
//                weights of the untaped steps (fp32 weights, no LoRA dropout)
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

// Whether the run of cfg computes on the GPU: device cuda, or device auto with a GPU visible
// (as the trainer's device choice; never for device cpu or a build without CUDA and device auto).
int vt_memplan_on_cuda(const vt_config *cfg);

// The dtype frozen weights and activations really have in a run of cfg (on the GPU or not):
// fp32 on both backends today. model.dtype auto resolves to it; bf16 / fp16 on a GPU run are
// refused (VT_ERR_CONFIG naming the fix: the CUDA kernels are f32 only, and a run that silently
// computed in fp32 would need twice the memory and time the user planned for); on a CPU run
// (the field is a GPU setting) they resolve to fp32. *notice (when not NULL) gets a one-line
// note when the resolved dtype is not the one the config names, else NULL.
vt_err vt_memplan_run_dtype(const vt_config *cfg, int on_cuda, vt_cfg_dtype *dtype, const char **notice);

// Computes the plan for cfg. Parameter counts come from the checkpoints / manifests named by
// the config (their headers only), the tiny presets when the config names none, and the
// released reward models' sizes when a reward has no checkpoint. The tiny models are built
// (random, a few MB) to count them.
vt_err vt_memplan_compute(const vt_config *cfg, vt_memplan *p);

// The memory a run may use on the config's device: on a GPU run the free memory of CUDA device
// cuda_device (cudaMemGetInfo through cuda/device_query.h; the device the run will use), on the
// CPU MemAvailable (/proc/meminfo, else sysconf physical pages); 0 when unknown (no GPU
// visible, a build without CUDA). source (n bytes, may be NULL) names where it came from.
size_t vt_memplan_device_memory(const vt_config *cfg, int cuda_device, char *source, size_t n);

// Plan + check: limit (bytes; 0 = vt_memplan_device_memory of cuda_device; --memory-limit of
// vader-train / vader-bench overrides it). Refuses a config whose model.dtype the run cannot
// honour (vt_memplan_run_dtype: VT_ERR_CONFIG) and (VT_ERR_OOM) a run whose predicted peak
// exceeds the limit with a message naming the largest terms and what to change
// (memory.decode_frames, sampler.backprop_steps, memory.checkpointing, memory.offload,
// model.height/width/frames, data.batch_size). The plan (and the dtype notice) go to log when
// not NULL.
vt_err vt_memplan_check(const vt_config *cfg, int cuda_device, size_t limit, FILE *log, vt_memplan *out);

// Human-readable plan (one term a line) into buf.
void vt_memplan_format(const vt_memplan *p, char *buf, size_t n);
// "--memory-limit" values: bytes with an optional K/M/G/T suffix (powers of 1024). 0 on error.
size_t vt_memplan_parse_size(const char *s);

#ifdef __cplusplus
}
#endif
