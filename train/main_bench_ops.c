// vader-bench_ops — micro-benchmark of the CPU reference ops (not a test): times linear,
// conv2d, conv_time, group norm and attention forward (+ backward) on UNet-like shapes and
// prints GFLOP/s next to the machine's raw OpenBLAS sgemm on the same GEMM size, so each op's
// figure reads as a fraction of what the BLAS can do here. The GEMM ops run once more with a bf16
// weight (ops.h, "low-precision weights"): the ratio is the CPU cost of the conversions.
// Usage: vader-bench_ops [--reps N]
#include "core/vt.h"
#include "core/ops/ops_internal.h"
#include "train/bench_util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static vt_tensor *randn(int nd, const int64_t *shape, uint64_t seed, float std) {
    vt_tensor *t = vt_empty(VT_F32, VT_CPU, nd, shape);
    if (!t) return NULL;
    vt_rng r;
    vt_rng_seed(&r, seed);
    vt_fill_normal(t, &r, 0, std);
    return t;
}

typedef vt_tensor *(*op_fn)(vt_tensor **in);
static vt_tensor *run_linear(vt_tensor **in) { return vt_linear(in[0], in[1], NULL); }
static vt_tensor *run_conv(vt_tensor **in) { return vt_conv2d(in[0], in[1], in[2], 1, 1); }
static vt_tensor *run_conv_time(vt_tensor **in) { return vt_conv_time(in[0], in[1], in[2], 1); }
static vt_tensor *run_gn(vt_tensor **in) { return vt_group_norm(in[0], 32, in[1], in[2], 1e-5f); }
static vt_tensor *run_attn(vt_tensor **in) { return vt_attention(in[0], in[1], in[2], 5, 0.125f, 0); }
static vt_tensor *run_attn8(vt_tensor **in) { return vt_attention(in[0], in[1], in[2], 8, 0.176777f, 0); }

// Times forward and forward+backward (gradient to input 0 only, as for frozen weights); the best
// times go to t[0], t[1] when t is not NULL.
static int bench_t(const char *name, op_fn fn, vt_tensor **in, double flops_fwd, double flops_bwd, int reps,
                   double *t) {
    double best_f = 1e30, best_b = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = vt_bench_now_s();
        vt_tensor *o = fn(in);
        double t1 = vt_bench_now_s();
        if (!o) {
            fprintf(stderr, "%s: %s\n", name, vt_error_message());
            return 1;
        }
        vt_release(o);
        if (t1 - t0 < best_f) best_f = t1 - t0;
        vt_requires_grad(in[0], 1);
        vt_tape *t = vt_tape_begin();
        t0 = vt_bench_now_s();
        o = fn(in);
        vt_tape_end(t);
        if (vt_backward(t, o, NULL) != VT_OK) {
            fprintf(stderr, "%s backward: %s\n", name, vt_error_message());
            return 1;
        }
        t1 = vt_bench_now_s();
        vt_release(o);
        vt_tape_free(t);
        vt_zero_grad(in[0]);
        vt_requires_grad(in[0], 0);
        if (t1 - t0 < best_b) best_b = t1 - t0;
    }
    printf("%-34s fwd %8.2f ms %7.1f GFLOP/s   fwd+bwd(x) %8.2f ms %7.1f GFLOP/s\n", name, best_f * 1e3,
           flops_fwd / best_f * 1e-9, best_b * 1e3, (flops_fwd + flops_bwd) / best_b * 1e-9);
    if (t) t[0] = best_f, t[1] = best_b;
    return 0;
}

static int bench(const char *name, op_fn fn, vt_tensor **in, double flops_fwd, double flops_bwd, int reps) {
    return bench_t(name, fn, in, flops_fwd, flops_bwd, reps, NULL);
}

// The op with an f32 weight (in[1]), then with the same weight in bf16: the CPU kernels widen w
// and round x / g in scratch copies, so the ratio is the conversions' overhead.
static int bench_bf16_weight(const char *name, op_fn fn, vt_tensor **in, double flops_fwd, double flops_bwd, int reps) {
    double t32[2], t16[2];
    vt_tensor *w = in[1];
    if (bench_t(name, fn, in, flops_fwd, flops_bwd, reps, t32)) return 1;
    in[1] = vt_to_dtype(w, VT_BF16);
    int rc = in[1] ? bench_t("  same, bf16 weight", fn, in, flops_fwd, flops_bwd, reps, t16) : 1;
    vt_release(in[1]);
    in[1] = w;
    if (!rc) printf("%-34s fwd x%.2f   fwd+bwd(x) x%.2f of the f32 weight's time\n", "  bf16 / f32", t16[0] / t32[0],
                    t16[1] / t32[1]);
    return rc;
}

int main(int argc, char **argv) {
    int reps = 3;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    // raw sgemm reference: M=4096 tokens (64x64 latent), K=N=320 channels
    {
        int64_t M = 4096, K = 320, N = 320;
        float *A = malloc(M * K * 4), *B = malloc(K * N * 4), *C = malloc(M * N * 4);
        for (int64_t i = 0; i < M * K; i++) A[i] = (float)(i % 7) * 0.1f;
        for (int64_t i = 0; i < K * N; i++) B[i] = (float)(i % 5) * 0.1f;
        double best = 1e30;
        for (int r = 0; r < reps + 2; r++) {
            double t0 = vt_bench_now_s();
            vt_sgemm(0, 1, M, N, K, 1.0f, A, K, B, K, 0.0f, C, N);
            double t = vt_bench_now_s() - t0;
            if (t < best) best = t;
        }
        printf("%-34s     %8.2f ms %7.1f GFLOP/s   (the ceiling for the GEMM-based ops)\n", "openblas sgemm 4096x320x320",
               best * 1e3, 2.0 * M * N * K / best * 1e-9);
        free(A);
        free(B);
        free(C);
    }
    int rc = 0;
    {  // linear: tokens [8, 512, 320] x W [320, 320]
        vt_tensor *in[2] = {randn(3, (int64_t[]){8, 512, 320}, 1, 1), randn(2, (int64_t[]){320, 320}, 2, 0.05f)};
        double f = 2.0 * 8 * 512 * 320 * 320;
        rc |= bench_bf16_weight("linear [8,512,320] x [320,320]", run_linear, in, f, f, reps);
        vt_release(in[0]);
        vt_release(in[1]);
    }
    {  // conv2d 3x3: [4, 320, 32, 32] -> 320
        vt_tensor *in[3] = {randn(4, (int64_t[]){4, 320, 32, 32}, 1, 1), randn(4, (int64_t[]){320, 320, 3, 3}, 2, 0.02f),
                            randn(1, (int64_t[]){320}, 3, 0.1f)};
        double f = 2.0 * 4 * 32 * 32 * 320 * 320 * 9;
        rc |= bench_bf16_weight("conv2d 3x3 [4,320,32,32]", run_conv, in, f, f, reps);
        for (int i = 0; i < 3; i++) vt_release(in[i]);
    }
    {  // conv2d 3x3 at a UNet's deepest levels: 4 frames of 2x2 and 8x8 pixels (samples batched)
        vt_tensor *in[3] = {randn(4, (int64_t[]){4, 256, 2, 2}, 1, 1), randn(4, (int64_t[]){256, 256, 3, 3}, 2, 0.02f),
                            randn(1, (int64_t[]){256}, 3, 0.1f)};
        double f = 2.0 * 4 * 2 * 2 * 256 * 256 * 9;
        rc |= bench("conv2d 3x3 [4,256,2,2]", run_conv, in, f, f, reps);
        for (int i = 0; i < 3; i++) vt_release(in[i]);
        vt_tensor *in8[3] = {randn(4, (int64_t[]){4, 256, 8, 8}, 1, 1), randn(4, (int64_t[]){256, 256, 3, 3}, 2, 0.02f),
                             randn(1, (int64_t[]){256}, 3, 0.1f)};
        f = 2.0 * 4 * 8 * 8 * 256 * 256 * 9;
        rc |= bench_bf16_weight("conv2d 3x3 [4,256,8,8]", run_conv, in8, f, f, reps);
        for (int i = 0; i < 3; i++) vt_release(in8[i]);
    }
    {  // temporal conv k=3: [1, 320, 8, 32, 32]
        vt_tensor *in[3] = {randn(5, (int64_t[]){1, 320, 8, 32, 32}, 1, 1), randn(5, (int64_t[]){320, 320, 3, 1, 1}, 2, 0.02f),
                            randn(1, (int64_t[]){320}, 3, 0.1f)};
        double f = 2.0 * 8 * 32 * 32 * 320 * 320 * 3;
        rc |= bench_bf16_weight("conv_time k3 [1,320,8,32,32]", run_conv_time, in, f, f, reps);
        for (int i = 0; i < 3; i++) vt_release(in[i]);
    }
    {  // group norm [8, 320, 32, 32]
        vt_tensor *in[3] = {randn(4, (int64_t[]){8, 320, 32, 32}, 1, 1), randn(1, (int64_t[]){320}, 2, 1),
                            randn(1, (int64_t[]){320}, 3, 1)};
        double f = 8.0 * 8 * 320 * 32 * 32;
        rc |= bench("group_norm [8,320,32,32]", run_gn, in, f, f, reps);
        for (int i = 0; i < 3; i++) vt_release(in[i]);
    }
    {  // temporal self-attention: 256 pixels x 16 frames, 8 heads x 32
        int64_t s[3] = {256, 16, 256};
        vt_tensor *in[3] = {randn(3, s, 1, 1), randn(3, s, 2, 1), randn(3, s, 3, 1)};
        double f = 4.0 * 256 * 16 * 16 * 256;
        rc |= bench("attention temporal [256,16,8x32]", run_attn8, in, f, 2 * f, reps);
        for (int i = 0; i < 3; i++) vt_release(in[i]);
    }
    {  // spatial self-attention: [4, 1024 tokens, 5 heads x 64]
        int64_t s[3] = {4, 1024, 320};
        vt_tensor *in[3] = {randn(3, s, 1, 1), randn(3, s, 2, 1), randn(3, s, 3, 1)};
        double f = 4.0 * 4 * 1024 * 1024 * 320;
        rc |= bench("attention [4,1024,5x64]", run_attn, in, f, 2 * f, reps);
        for (int i = 0; i < 3; i++) vt_release(in[i]);
    }
    return rc;
}
