// trainer.h — the VADER training loop behind vader-train.
//
// vt_trainer_create checks everything that can be checked before any compute (config
// validation, checkpoint and prompt files, reward names, K vs steps, frames vs the model's
// temporal length, latent size vs the UNet, a writable output dir), builds the models (from
// checkpoints, from manifests with random weights, or the tiny random preset), adds LoRA
// (A Kaiming-uniform, B zero, or lora.checkpoint) and the AdamW state, and restores a
// checkpoint when resuming. vt_trainer_run then runs optimisation steps:
//   for each of optim.accumulation micro-batches: batch_size prompts drawn from the prompt
//   list, x_T ~ N(0, 1), one VADER step (train/vader_step.h) with loss / accumulation;
//   global grad-norm clipping, LR schedule, AdamW; one rewards.h5 row (flushed), a progress
//   line; lora-STEP.safetensors + state-STEP.safetensors every output.checkpoint_every steps
//   and at the end (atomic writes).
// Determinism: one RNG seeded from `seed` draws, in a fixed order, the prompts, x_T, the DDIM
// noise, the decoded frames and the rand window; dropout masks come from hash(seed, step).
// The RNG state is part of state-STEP, so a resumed run reproduces the uninterrupted one
// bit for bit on the CPU.
// A step whose loss or gradient norm is not finite is skipped (no update), counted and
// logged; optim.max_bad_steps (or opt->max_bad_steps) such steps in a row stop the run with
// VT_ERR_NUMERIC.
#pragma once
#include <stdio.h>
#include "core/vt.h"
#include "train/config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vt_train_options {
    const char *resume;   // NULL, "auto" (latest state-*.safetensors in output.dir) or a directory / state file
    int stop_at;          // stop once this many optimisation steps are done (0: optim.steps); the
                          // LR schedule still runs over optim.steps
    int max_bad_steps;    // non-finite steps in a row before giving up (0: optim.max_bad_steps)
    FILE *progress;       // progress lines (NULL: none)
} vt_train_options;

static inline vt_train_options vt_train_options_default(void) {
    vt_train_options o = {NULL, 0, 0, NULL};
    return o;
}

typedef struct vt_trainer vt_trainer;

// Checks and builds everything (no sampling yet). NULL + error naming the config field / file.
vt_trainer *vt_trainer_create(const vt_config *cfg, const vt_train_options *opt);
// Runs until optim.steps (or opt->stop_at). Returns VT_OK or the error that stopped it.
vt_err vt_trainer_run(vt_trainer *t);
void vt_trainer_free(vt_trainer *t);

// After run: optimisation steps done, skipped steps, first / last logged mean reward.
typedef struct vt_trainer_stats {
    int64_t step;
    int64_t skipped;
    double first_reward, last_reward;
} vt_trainer_stats;
vt_trainer_stats vt_trainer_get_stats(const vt_trainer *t);

// The rewards.h5 columns of /train (step, reward_mean, reward_std, loss, grad_norm, lr,
// step_time_s, peak_mem_bytes, skipped, reward/<module>_mean, reward/<module>_std ...).
int vt_trainer_train_columns(const vt_config *cfg, const char ***cols);

#ifdef __cplusplus
}
#endif
