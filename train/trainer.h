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
// Determinism: micro-batch g of optimisation step s (g counts micro-batches over all ranks:
// g = rank x accumulation + micro) draws its prompts, x_T, DDIM noise, decoded frames and rand
// window from its own stream, seeded from (vt_dist_seed(seed, g), s); dropout masks come from
// hash(seed, s, g). The streams are a function of (seed, step, g) alone, so a resumed run
// reproduces the uninterrupted one bit for bit on the CPU, whatever the number of ranks, and
// one process with accumulation A x N draws exactly what N ranks with accumulation A draw.
// Data parallel (opt.dist with more than one rank, train/DIST.md): the config is checked to be
// the same on every rank, rank 0's LoRA, AdamW state and counters (its resume state) are
// broadcast, the LoRA gradients are averaged with one all-reduce per optimisation step (after
// accumulation, before clipping), the logged scalars are reduced over ranks, and rank 0 alone
// writes rewards.h5, checkpoints and progress.
// A step whose loss or gradient norm is not finite is skipped (no update), counted and
// logged; optim.max_bad_steps (or opt->max_bad_steps) such steps in a row stop the run with
// VT_ERR_NUMERIC.
#pragma once
#include <stdio.h>
#include "core/vt.h"
#include "train/config.h"
#include "train/dist.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vt_train_options {
    const char *resume;   // NULL, "auto" (latest state-*.safetensors in output.dir) or a directory / state file
    int stop_at;          // stop once this many optimisation steps are done (0: optim.steps); the
                          // LR schedule still runs over optim.steps
    int max_bad_steps;    // non-finite steps in a row before giving up (0: optim.max_bad_steps)
    FILE *progress;       // progress lines (NULL: none; only rank 0 prints)
    size_t memory_limit;  // bytes the memory plan may use (0: the device's, train/memplan.h)
    vt_dist *dist;        // data-parallel job (NULL: a single process); owned by the caller
    // Failure injection for the multi-rank tests (vader-train --debug-fail STEP:RANK:MODE):
    // at the start of optimisation step debug_fail_step (1-based) rank debug_fail_rank
    // returns an error (mode 1), kills itself with SIGKILL (2) or hangs (3). 0: off.
    int debug_fail_step, debug_fail_rank, debug_fail_mode;
} vt_train_options;

static inline vt_train_options vt_train_options_default(void) {
    vt_train_options o = {NULL, 0, 0, NULL, 0, NULL, 0, 0, 0};
    return o;
}

typedef struct vt_trainer vt_trainer;

// Checks and builds everything (no sampling yet). NULL + error naming the config field / file.
// The memory plan (train/memplan.h) runs first: a run that does not fit opt->memory_limit (or
// the device) is refused before anything is built, naming what to change.
vt_trainer *vt_trainer_create(const vt_config *cfg, const vt_train_options *opt);
// Phase timing (vader_step.h vt_step_timing): accumulated into tm from now on (NULL: off).
struct vt_step_timing;
void vt_trainer_set_timing(vt_trainer *t, struct vt_step_timing *tm);
// Runs until optim.steps (or opt->stop_at). Returns VT_OK or the error that stopped it.
vt_err vt_trainer_run(vt_trainer *t);
void vt_trainer_free(vt_trainer *t);
// Writes this rank's current LoRA (peft names) to path, on any rank (debugging, tests).
vt_err vt_trainer_save_lora(const vt_trainer *t, const char *path);
// Per-rank micro-batch size and the samples per optimisation step over all ranks.
void vt_trainer_batch(const vt_trainer *t, int *micro_batch, int *global_batch);

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
