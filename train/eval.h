// eval.h — evaluation on held-out prompts during training (output.eval_every > 0 and
// data.eval_prompts set). An evaluation samples every eval prompt as training samples (the
// same sampler, memory.decode_frames decoded) but with no tape, no dropout, and x_T / DDIM
// noise from an RNG seeded the same at every evaluation (vt_hash64(seed ^ EVAL, 0)), so the
// curve compares the LoRA at different steps on the same noise; it does not touch the
// training RNG (a resumed run stays identical). Prompts go in micro-batches of
// data.batch_size. The rewards are those of training (weighted sum of the modules, and each
// module); one row goes to /eval of rewards.h5:
//   step, reward_mean, reward_std, reward/<module>_mean, reward/<module>_std
// With write_samples, the decoded frames of the first VT_EVAL_SAMPLE_PROMPTS prompts go to
// OUTPUT_DIR/samples/step-NNNNNN/<prompt index>/frame-<frame index>.png (+ prompt.txt).
#pragma once
#include <stdio.h>
#include "core/vt.h"
#include "core/models/openclip.h"
#include "core/models/unet3d.h"
#include "core/models/vae_decoder.h"
#include "core/tokenizer.h"
#include "rewards/reward.h"
#include "train/config.h"
#include "train/ddim.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VT_EVAL_SAMPLE_PROMPTS 4

typedef struct vt_evaluator vt_evaluator;

// The /eval columns for cfg (malloc'd array of borrowed names; the count, -1 on OOM).
int vt_eval_columns(const vt_config *cfg, const char ***cols);
// Encodes the eval prompts. Returns NULL with no error set (vt_error_code() == VT_OK) when
// evaluation is off (eval_every 0 or no eval prompts). rewards: cfg->reward.n_modules modules
// (borrowed; they must outlive the evaluator).
vt_evaluator *vt_evaluator_create(const vt_config *cfg, vt_openclip *clip, vt_tokenizer *tok, vt_reward *const *rewards);
// 1 when an evaluation is due after optimisation step `step`.
int vt_evaluator_due(const vt_evaluator *ev, int64_t step);
// Runs one evaluation; row gets the /eval columns' values.
vt_err vt_evaluator_run(vt_evaluator *ev, vt_unet3d *unet, vt_vae_decoder *vae, const vt_ddim_schedule *sched,
                        int64_t step, int write_samples, double *row);
void vt_evaluator_free(vt_evaluator *ev);

#ifdef __cplusplus
}
#endif
