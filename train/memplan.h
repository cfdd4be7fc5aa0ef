// memplan.h — the memory plan (DESIGN.md "Memory plan"): before a run starts, the peak it will
// need, computed from the config and the model shapes alone, and a refusal naming what to
// change when it does not fit the device.
//
// Terms (bytes; the UNet / VAE GEMM weights at the run's model.dtype (vt_memplan_run_dtype:
// bf16 by default on a GPU); activations, text tower, rewards, LoRA, its gradients and AdamW
// state fp32):
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
#include "core/tensor.h"
#include "train/config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vt_memplan {
    double w_unet, w_vae, w_text, w_reward;  // frozen weights (w_reward: the resident image towers)
    double w_reward_text;                    // the rewards' text towers (set-up only: freed once cached)
    double lora;                             // LoRA params + grads + AdamW m, v
    double contexts;                         // prompt contexts (+ x, noise: a few latents)
    double resident;                         // what stays on the device all run: the above but text
    double setup;                            // resident + the text tower (freed after the prompts)
    double sampling;                         // no-grad UNet forward working set
    double taped_ckpt, taped_full;           // taped steps' saved tensors with / without checkpointing
    double taped;                            // the one the config uses
    double taped_seg_in;                     // the checkpointed taped steps' segment inputs
    double decode_ckpt, decode_full, decode; // VAE decode saved tensors (+ output frames)
    double reward;                           // reward towers' saved activations (+ preprocessing)
    double backward;                         // largest recompute + gradient working set
    double peak;                             // max(step_peak, setup)
    double step_peak;                        // resident + the step's largest phase
    const char *peak_phase;                  // "sampling", "taped forward", "backward"
    int64_t n_unet, n_vae, n_text, n_reward, n_lora;  // parameter counts
    int act_bytes;                           // bytes per activation element
    int weight_bytes;                        // bytes per UNet / VAE GEMM weight element (model.dtype)
    int saved_bytes;                         // bytes per saved segment input (memory.saved_dtype)
} vt_memplan;

// Whether the run of cfg computes on the GPU: device cuda, or device auto with a GPU visible
// (as the trainer's device choice; never for device cpu or a build without CUDA and device auto).
int vt_memplan_on_cuda(const vt_config *cfg);

// The dtype of the UNet's and VAE decoder's frozen GEMM weights (Linear and Conv kernels) in a
// run of cfg: model.dtype as named (fp32, bf16, fp16, on either backend; the ops round their
// input to the weight's dtype and accumulate in fp32), auto = bf16 on a GPU run and fp32 on the
// CPU. Activations, norms, biases, the text tower, the rewards, LoRA and AdamW stay fp32 (the
// kernels have no 16-bit activations yet). *notice (when not NULL) gets a one-line note when
// auto resolves to something the user may not expect, else NULL. Never fails today.
vt_err vt_memplan_run_dtype(const vt_config *cfg, int on_cuda, vt_cfg_dtype *dtype, const char **notice);
// VT_F32 / VT_BF16 / VT_F16 for a resolved model.dtype (or memory.saved_dtype)
vt_dtype vt_memplan_weight_dtype(vt_cfg_dtype d);
// memory.saved_dtype as a run resolves it: the dtype the checkpoint segments keep their
// activation inputs in between forward and backward (core/tape.h vt_tape_set_saved_dtype),
// auto = bf16 on a GPU run, fp32 on the CPU; fp32 / bf16 / fp16 as named on either backend.
vt_cfg_dtype vt_memplan_saved_dtype(const vt_config *cfg, int on_cuda);

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
// vader-train / vader-bench overrides it). Refuses (VT_ERR_OOM) a run whose predicted peak
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
