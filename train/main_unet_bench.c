// vader-unet_bench — CPU timing of the VideoCrafter2 UNet3D forward and backward (not a test).
// Builds the lvdm layout with random weights at a mid-size config (default: mc 64, mult
// [1, 2, 4, 4], d_head 32, context 1024 x 77 tokens, 1 x 4 frames of a 16 x 16 latent), adds
// LoRA r 4 on to_q/to_k/to_v as VADER does, and times forward (no tape), forward on the tape
// and backward (LoRA gradients + input gradient, frozen weights get none). GFLOP/s use the
// model's GEMM-like FLOP count (vt_unet3d_flops); backward work = forward work + the attention
// part again (dQ, dK, dV, dP) and, with --checkpoint, one more forward for the recompute.
//
// Usage: vader-unet_bench [--mc N] [--frames T] [--size HW] [--batch B] [--ctx L] [--iters N]
//                         [--full] [--checkpoint]
//   --full   the real VideoCrafter2 widths (mc 320, d_head 64): slow on a CPU
#include "core/vt.h"
#include "core/models/unet3d.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static vt_tensor *randn(int nd, const int64_t *shape, uint64_t seed) {
    vt_tensor *t = vt_empty(VT_F32, VT_CPU, nd, shape);
    if (!t) return NULL;
    vt_rng r;
    vt_rng_seed(&r, seed);
    vt_fill_normal(t, &r, 0, 1);
    return t;
}

static int arg_int(int argc, char **argv, int *i, int *dst) {
    if (*i + 1 >= argc) return 0;
    char *end;
    long v = strtol(argv[++*i], &end, 10);
    if (*end || v < 1) return 0;
    *dst = (int)v;
    return 1;
}

int main(int argc, char **argv) {
    vt_unet3d_config c = vt_unet3d_config_videocrafter2();
    c.model_channels = 64;
    c.num_head_channels = 32;
    int T = 4, HW = 16, B = 1, L = 77, iters = 3, checkpoint = 0;
    for (int i = 1; i < argc; i++) {
        int ok = 1;
        if (!strcmp(argv[i], "--mc")) ok = arg_int(argc, argv, &i, &c.model_channels);
        else if (!strcmp(argv[i], "--frames")) ok = arg_int(argc, argv, &i, &T);
        else if (!strcmp(argv[i], "--size")) ok = arg_int(argc, argv, &i, &HW);
        else if (!strcmp(argv[i], "--batch")) ok = arg_int(argc, argv, &i, &B);
        else if (!strcmp(argv[i], "--ctx")) ok = arg_int(argc, argv, &i, &L);
        else if (!strcmp(argv[i], "--iters")) ok = arg_int(argc, argv, &i, &iters);
        else if (!strcmp(argv[i], "--checkpoint")) checkpoint = 1;
        else if (!strcmp(argv[i], "--full")) {
            c.model_channels = 320;
            c.num_head_channels = 64;
        } else ok = 0;
        if (!ok) {
            fprintf(stderr,
                    "usage: vader-unet_bench [--mc N] [--frames T] [--size HW] [--batch B] [--ctx L] [--iters N] "
                    "[--full] [--checkpoint]\n");
            return 2;
        }
    }
    vt_unet3d *u = vt_unet3d_build_random(&c, 1);
    if (!u) {
        fprintf(stderr, "vader-unet_bench: %s\n", vt_error_message());
        return 2;
    }
    vt_unet3d_lora_config lc = {4, 4.0f, VT_LORA_TO_Q | VT_LORA_TO_K | VT_LORA_TO_V, 2};
    if (vt_unet3d_add_lora(u, &lc)) {
        fprintf(stderr, "vader-unet_bench: %s\n", vt_error_message());
        return 2;
    }
    vt_unet3d_set_checkpoint(u, checkpoint);
    vt_tensor *x = randn(5, (int64_t[]){B, c.in_channels, T, HW, HW}, 3);
    vt_tensor *ctx = randn(3, (int64_t[]){B, L, c.context_dim}, 4);
    vt_tensor *gout = randn(5, (int64_t[]){B, c.out_channels, T, HW, HW}, 5);
    vt_tensor *ts = vt_empty(VT_I64, VT_CPU, 1, (int64_t[]){B});
    vt_tensor *fps = vt_empty(VT_I64, VT_CPU, 1, (int64_t[]){B});
    if (!x || !ctx || !gout || !ts || !fps) {
        fprintf(stderr, "vader-unet_bench: %s\n", vt_error_message());
        return 2;
    }
    for (int b = 0; b < B; b++) {
        vt_i64(ts)[b] = 500 + b;
        vt_i64(fps)[b] = 24;
    }
    vt_requires_grad(x, 1);
    double attn = 0, fwd = vt_unet3d_flops(&c, B, T, HW, HW, L, &attn);
    double bwd = fwd + attn + (checkpoint ? fwd : 0);
    printf("unet3d: mc %d, d_head %d, x [%d, %d, %d, %d, %d], context [%d, %d, %d], %.1f M params, LoRA r %d "
           "(%d tensors)%s\n",
           c.model_channels, c.num_head_channels, B, c.in_channels, T, HW, HW, B, L, c.context_dim,
           vt_unet3d_n_params(u) / 1e6, lc.rank, vt_unet3d_n_lora(u), checkpoint ? ", checkpoint segments" : "");
    printf("forward %.2f GFLOP (attention %.2f), backward %.2f GFLOP\n", fwd / 1e9, attn / 1e9, bwd / 1e9);
    double best_nograd = 1e30, best_f = 1e30, best_b = 1e30;
    for (int it = 0; it < iters; it++) {
        double t0 = now();
        vt_tensor *o = vt_unet3d_forward(u, x, ts, ctx, fps, (uint64_t)it);
        double t1 = now();
        if (!o) {
            fprintf(stderr, "vader-unet_bench: %s\n", vt_error_message());
            return 1;
        }
        vt_release(o);
        vt_tape *tape = vt_tape_begin();
        double t2 = now();
        o = vt_unet3d_forward(u, x, ts, ctx, fps, (uint64_t)it);
        double t3 = now();
        vt_tape_end(tape);
        size_t saved = vt_tape_stats_get(tape).saved_bytes;
        vt_err e = o ? vt_backward(tape, o, gout) : vt_error_code();
        double t4 = now();
        vt_release(o);
        vt_tape_free(tape);
        vt_unet3d_release_segments(u);
        if (e) {
            fprintf(stderr, "vader-unet_bench: %s\n", vt_error_message());
            return 1;
        }
        vt_zero_grad(x);
        for (int i = 0; i < vt_unet3d_n_lora(u); i++) vt_zero_grad(vt_unet3d_lora_param(u, i, NULL));
        printf("iter %d: forward %.1f ms (no tape), %.1f ms (tape, %.1f MB saved), backward %.1f ms\n", it,
               (t1 - t0) * 1e3, (t3 - t2) * 1e3, saved / 1048576.0, (t4 - t3) * 1e3);
        if (t1 - t0 < best_nograd) best_nograd = t1 - t0;
        if (t3 - t2 < best_f) best_f = t3 - t2;
        if (t4 - t3 < best_b) best_b = t4 - t3;
    }
    printf("best: forward %.1f ms (%.1f GFLOP/s), forward on tape %.1f ms, backward %.1f ms (%.1f GFLOP/s), "
           "forward+backward %.1f ms (%.1f GFLOP/s)\n",
           best_nograd * 1e3, fwd / best_nograd / 1e9, best_f * 1e3, best_b * 1e3, bwd / best_b / 1e9,
           (best_f + best_b) * 1e3, (fwd + bwd) / (best_f + best_b) / 1e9);
    vt_release(x);
    vt_release(ctx);
    vt_release(gout);
    vt_release(ts);
    vt_release(fps);
    vt_unet3d_free(u);
    return 0;
}
