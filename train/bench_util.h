// bench_util.h — what the benchmark programs share (vader-bench, vader-unet_bench,
// vader-bench_ops): a monotonic clock, the min / median of a timing series, and the
// checkpoint layout of the UNet's kernel-1 projection weights (for --save-weights).
#pragma once
#include "core/models/unet3d.h"

#ifdef __cplusplus
extern "C" {
#endif

// Seconds on the monotonic clock (differences only).
double vt_bench_now_s(void);
// CPU seconds of this process, all threads (differences only). On a machine shared with other
// jobs a single-threaded run's CPU time is what the code costs; its wall time also holds the
// time the core spent on the others.
double vt_bench_cpu_s(void);

// Median of v[0..n) (n >= 1; v is not reordered); *min gets the smallest value.
double vt_bench_median(const double *v, int n, double *min);

// Kernel dims of a proj_in / proj_out weight that the checkpoint stores as a kernel-1
// convolution and the model keeps as a matrix: init_attn's (Conv1d) always, the blocks' without
// use_linear (Conv2d in spatial, Conv1d in temporal transformers). 1 or 2; 0 for a Linear.
int vt_bench_proj_conv_dims(const char *key, const vt_unet3d_config *c);

#ifdef __cplusplus
}
#endif
