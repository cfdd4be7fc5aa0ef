// h5log.h — reward curves in HDF5 (rewards.h5). Schema (documented in configs/README.md):
//   /train/<column>   float64 [n_steps], extendible, chunked; one row per optimisation step.
//                     Columns are declared up front: step, reward_mean, reward_std, loss,
//                     grad_norm, lr, step_time_s, peak_mem_bytes, and one
//                     reward/<module>_mean / _std pair per reward module.
//   /eval/<column>    float64 [n_evals], same idea for held-out prompt evaluations (step,
//                     reward_mean, reward_std, reward/<module>_mean / _std: train/eval.h).
//   attributes on /: config (the resolved YAML), vader_version.
// Every append extends the datasets and calls H5Fflush, so a crash keeps the curve written so
// far. Rank 0 alone writes.
#pragma once
#include "core/vt.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vt_h5log vt_h5log;

// Creates (or, with resume, opens and truncates to `keep_rows` rows) PATH with the given
// columns in group "train" and "eval".
vt_h5log *vt_h5log_open(const char *path, const char *const *train_cols, int n_train, const char *const *eval_cols,
                        int n_eval, const char *config_yaml, int resume, int64_t keep_rows);
// Appends one row (values in column order) to "train" (which = 0) or "eval" (which = 1).
vt_err vt_h5log_append(vt_h5log *l, int which, const double *values);
// Drops the rows of group `which` whose first column (step) is more than max_step (a resumed
// run rewrites the evaluations after the step it resumes from).
vt_err vt_h5log_truncate_after(vt_h5log *l, int which, double max_step);
// Rows in group `which`.
int64_t vt_h5log_rows(const vt_h5log *l, int which);
void vt_h5log_close(vt_h5log *l);

#ifdef __cplusplus
}
#endif
