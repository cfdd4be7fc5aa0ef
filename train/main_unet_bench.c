// vader-unet_bench — CPU timing of the VideoCrafter2 UNet3D forward and backward (not a test).
// Builds the lvdm layout with random weights at a mid-size config (default preset "mid": mc 64,
// mult [1, 2, 4, 4], d_head 32, context 1024 x 77 tokens, 1 x 4 frames of a 16 x 16 latent),
// adds LoRA r 4 on to_q/to_k/to_v as VADER does, and times forward (no tape), forward on the
// tape and backward (LoRA gradients + input gradient, frozen weights get none). The forward
// without tape is an untaped sampling step as vt_vader_step runs it: LoRA merged into the weights
// and the context's cross-attention K/V projected once, both before the timed reps (once per
// optimisation step in training; --no-fast: the LoRA branch and the projections in every forward). GFLOP/s use the
// model's GEMM-like FLOP count (vt_unet3d_flops); backward work = forward work + the attention
// part again (dQ, dK, dV, dP) and, with --checkpoint, one more forward for the recompute.
//
// Every run starts with one untimed forward+backward (warm-up; its tensors are what --save-io
// writes), then --reps timed repetitions; min and median are reported.
//
// Usage: vader-unet_bench [--config mid|tiny|full|FIXTURE.json] [--mc N] [--frames T] [--size HW]
//                         [--batch B] [--ctx L] [--reps N] [--threads N] [--checkpoint] [--no-fast]
//                         [--save-weights PATH] [--save-io PATH] [--json OUT]
//   --config        preset, or an lvdm config: a JSON file with a "config" object (the fixtures'
//                   NAME.json) or a bare config object; --mc overrides model_channels
//   --full          = --config full (the real VideoCrafter2 widths: mc 320, d_head 64; slow)
//   --iters N       = --reps N
//   --threads N     omp_set_num_threads + openblas_set_num_threads (default: the environment)
//   --save-weights  the random weights (model.diffusion_model.* keys) and the LoRA parameters
//                   (peft names) as one safetensors file. lora_B is filled with N(0, 0.1^2)
//                   instead of peft's zeros so that the LoRA branch and d/dA are exercised.
//   --save-io       x, timesteps, context, fps, grad_out, out, grad.x and grad.<LoRA name> of the
//                   warm-up run (fixture io layout)
//   --json          config, shapes, per-rep times and min / median in ms
#include "core/vt.h"
#include "core/models/unet3d.h"
#include "train/bench_util.h"
#include <cblas.h>
#include <cjson/cJSON.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX "model.diffusion_model."

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

static int arg_str(int argc, char **argv, int *i, const char **dst) {
    if (*i + 1 >= argc) return 0;
    *dst = argv[++*i];
    return 1;
}

// ---- configs --------------------------------------------------------------------------------
static int load_config(const char *spec, vt_unet3d_config *c) {
    *c = vt_unet3d_config_videocrafter2();
    if (!strcmp(spec, "mid")) {
        c->model_channels = 64;
        c->num_head_channels = 32;
        return 0;
    }
    if (!strcmp(spec, "full")) return 0;
    if (!strcmp(spec, "tiny")) {  // the vc2_unet_tiny fixture's config
        c->model_channels = 32;
        c->n_attention_resolutions = 2;
        c->attention_resolutions[0] = 2;
        c->attention_resolutions[1] = 1;
        c->num_res_blocks = 1;
        c->n_levels = 2;
        c->channel_mult[0] = 1;
        c->channel_mult[1] = 2;
        c->num_head_channels = 16;
        c->context_dim = 24;
        return 0;
    }
    FILE *f = fopen(spec, "rb");
    if (!f) {
        fprintf(stderr, "vader-unet_bench: --config %s: not a preset (mid, tiny, full) nor a readable file\n", spec);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t got = buf ? fread(buf, 1, (size_t)n, f) : 0;
    fclose(f);
    if (!buf || got != (size_t)n) {
        free(buf);
        fprintf(stderr, "vader-unet_bench: cannot read %s\n", spec);
        return 1;
    }
    buf[n] = 0;
    cJSON *root = cJSON_Parse(buf);
    free(buf);
    if (!root) {
        fprintf(stderr, "vader-unet_bench: %s: not valid JSON\n", spec);
        return 1;
    }
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(root, "config");
    vt_err e = vt_unet3d_config_from_json(cfg ? cfg : root, c);
    cJSON_Delete(root);
    if (e) {
        fprintf(stderr, "vader-unet_bench: %s: %s\n", spec, vt_error_message());
        return 1;
    }
    return 0;
}

// ---- the model's state-dict keys (for --save-weights) ----------------------------------------
// The walk below lists the lvdm key names from the config; each one is then looked up in the
// model (vt_unet3d_param), and the parameter count must equal vt_unet3d_n_params, so a key the
// walk invents or forgets is an error rather than a silently different file.
typedef struct keylist {
    char **k;
    int n, cap;
    int oom;
} keylist;

static void key(keylist *kl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void key(keylist *kl, const char *fmt, ...) {
    if (kl->oom) return;
    if (kl->n == kl->cap) {
        int cap = kl->cap ? 2 * kl->cap : 256;
        char **nk = realloc(kl->k, (size_t)cap * sizeof *nk);
        if (!nk) {
            kl->oom = 1;
            return;
        }
        kl->k = nk;
        kl->cap = cap;
    }
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (!(kl->k[kl->n] = strdup(buf))) {
        kl->oom = 1;
        return;
    }
    kl->n++;
}

static void keys_wb(keylist *kl, const char *path) {
    key(kl, "%s.weight", path);
    key(kl, "%s.bias", path);
}

static void keys_transformer(keylist *kl, const char *path, int depth) {
    char p[400];
    keys_wb(kl, (snprintf(p, sizeof p, "%s.norm", path), p));
    keys_wb(kl, (snprintf(p, sizeof p, "%s.proj_in", path), p));
    for (int d = 0; d < depth; d++) {
        for (int a = 1; a <= 2; a++) {
            key(kl, "%s.transformer_blocks.%d.attn%d.to_q.weight", path, d, a);
            key(kl, "%s.transformer_blocks.%d.attn%d.to_k.weight", path, d, a);
            key(kl, "%s.transformer_blocks.%d.attn%d.to_v.weight", path, d, a);
            keys_wb(kl, (snprintf(p, sizeof p, "%s.transformer_blocks.%d.attn%d.to_out.0", path, d, a), p));
        }
        keys_wb(kl, (snprintf(p, sizeof p, "%s.transformer_blocks.%d.ff.net.0.proj", path, d), p));
        keys_wb(kl, (snprintf(p, sizeof p, "%s.transformer_blocks.%d.ff.net.2", path, d), p));
        for (int n = 1; n <= 3; n++) keys_wb(kl, (snprintf(p, sizeof p, "%s.transformer_blocks.%d.norm%d", path, d, n), p));
    }
    keys_wb(kl, (snprintf(p, sizeof p, "%s.proj_out", path), p));
}

static void keys_resblock(keylist *kl, const char *path, int in_ch, int out_ch, int tconv) {
    static const char *const sub[] = {"in_layers.0", "in_layers.2", "emb_layers.1", "out_layers.0", "out_layers.3"};
    char p[400];
    for (int i = 0; i < 5; i++) keys_wb(kl, (snprintf(p, sizeof p, "%s.%s", path, sub[i]), p));
    if (in_ch != out_ch) keys_wb(kl, (snprintf(p, sizeof p, "%s.skip_connection", path), p));
    if (!tconv) return;
    for (int k = 1; k <= 4; k++) {
        keys_wb(kl, (snprintf(p, sizeof p, "%s.temopral_conv.conv%d.0", path, k), p));
        keys_wb(kl, (snprintf(p, sizeof p, "%s.temopral_conv.conv%d.%d", path, k, k == 1 ? 2 : 3), p));
    }
}

static int has_attn(const vt_unet3d_config *c, int ds) {
    for (int i = 0; i < c->n_attention_resolutions; i++)
        if (c->attention_resolutions[i] == ds) return 1;
    return 0;
}

static void keys_attn(keylist *kl, const vt_unet3d_config *c, const char *block) {
    char p[400];
    keys_transformer(kl, (snprintf(p, sizeof p, "%s.1", block), p), c->transformer_depth);
    if (c->temporal_attention)
        keys_transformer(kl, (snprintf(p, sizeof p, "%s.2", block), p), vt_unet3d_temporal_depth(c));
}

static void unet_keys(keylist *kl, const vt_unet3d_config *c) {
    int mc = c->model_channels, chans[64], nch = 0, ch = mc, ds = 1, blk = 0;
    char p[400];
    keys_wb(kl, "time_embed.0");
    keys_wb(kl, "time_embed.2");
    if (c->fps_cond) {
        keys_wb(kl, "fps_embedding.0");
        keys_wb(kl, "fps_embedding.2");
    }
    keys_wb(kl, "input_blocks.0.0");
    if (c->addition_attention) keys_transformer(kl, "init_attn.0", c->transformer_depth);
    chans[nch++] = mc;
    for (int l = 0; l < c->n_levels; l++) {
        for (int r = 0; r < c->num_res_blocks; r++) {
            snprintf(p, sizeof p, "input_blocks.%d", ++blk);
            char rp[420];
            snprintf(rp, sizeof rp, "%s.0", p);
            keys_resblock(kl, rp, ch, c->channel_mult[l] * mc, c->temporal_conv);
            ch = c->channel_mult[l] * mc;
            if (has_attn(c, ds)) keys_attn(kl, c, p);
            chans[nch++] = ch;
        }
        if (l != c->n_levels - 1) {
            keys_wb(kl, (snprintf(p, sizeof p, "input_blocks.%d.0.op", ++blk), p));
            chans[nch++] = ch;
            ds *= 2;
        }
    }
    keys_resblock(kl, "middle_block.0", ch, ch, c->temporal_conv);
    keys_attn(kl, c, "middle_block");
    keys_resblock(kl, "middle_block.3", ch, ch, c->temporal_conv);
    blk = 0;
    for (int l = c->n_levels - 1; l >= 0; l--) {
        for (int r = 0; r <= c->num_res_blocks; r++, blk++) {
            int in_ch = ch + chans[--nch];
            snprintf(p, sizeof p, "output_blocks.%d", blk);
            char rp[420];
            snprintf(rp, sizeof rp, "%s.0", p);
            keys_resblock(kl, rp, in_ch, c->channel_mult[l] * mc, c->temporal_conv);
            ch = c->channel_mult[l] * mc;
            int attn = has_attn(c, ds);
            if (attn) keys_attn(kl, c, p);
            if (l && r == c->num_res_blocks) {
                snprintf(rp, sizeof rp, "%s.%d.conv", p, attn ? 1 + (c->temporal_attention ? 2 : 1) : 1);
                keys_wb(kl, rp);
                ds /= 2;
            }
        }
    }
    keys_wb(kl, "out.0");
    keys_wb(kl, "out.2");
}

static int save_weights(const char *path, vt_unet3d *u, const vt_unet3d_config *c) {
    keylist kl = {0};
    unet_keys(&kl, c);
    int nl = vt_unet3d_n_lora(u), n = kl.n + nl, rc = 1;
    char **names = calloc((size_t)n, sizeof *names);
    vt_tensor **ts = calloc((size_t)n, sizeof *ts), **views = calloc((size_t)n, sizeof *views);
    int n_views = 0;
    if (kl.oom || !names || !ts || !views) {
        fprintf(stderr, "vader-unet_bench: out of memory listing the weights\n");
        goto done;
    }
    int64_t total = 0;
    for (int i = 0; i < kl.n; i++) {
        ts[i] = vt_unet3d_param(u, kl.k[i]);
        if (!ts[i]) {
            fprintf(stderr, "vader-unet_bench: --save-weights: the model has no key %s\n", kl.k[i]);
            goto done;
        }
        total += ts[i]->numel;
        int kd = vt_bench_proj_conv_dims(kl.k[i], c);
        if (kd && ts[i]->ndim == 2) {  // a kernel-1 conv the model keeps as a matrix: checkpoint shape
            int64_t sh[4] = {ts[i]->shape[0], ts[i]->shape[1], 1, 1};
            if (!(ts[i] = views[n_views++] = vt_view(ts[i], 2 + kd, sh))) goto done;
        }
        size_t len = strlen(PREFIX) + strlen(kl.k[i]) + 1;
        if (!(names[i] = malloc(len))) goto done;
        snprintf(names[i], len, "%s%s", PREFIX, kl.k[i]);
    }
    if (total != vt_unet3d_n_params(u)) {
        fprintf(stderr, "vader-unet_bench: --save-weights: %d keys hold %lld values, the model has %lld\n", kl.n,
                (long long)total, (long long)vt_unet3d_n_params(u));
        goto done;
    }
    for (int i = 0; i < nl; i++) {
        const char *nm;
        ts[kl.n + i] = vt_unet3d_lora_param(u, i, &nm);
        if (!(names[kl.n + i] = strdup(nm))) goto done;
    }
    if (vt_st_write(path, n, (const char *const *)names, ts, 0, NULL, NULL)) {
        fprintf(stderr, "vader-unet_bench: %s\n", vt_error_message());
        goto done;
    }
    printf("wrote %s: %d weights (%.1f M values) + %d LoRA tensors\n", path, kl.n, total / 1e6, nl);
    rc = 0;
done:
    for (int i = 0; i < kl.n; i++) free(kl.k[i]);
    free(kl.k);
    if (names)
        for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    free(ts);
    for (int i = 0; i < n_views; i++) vt_release(views[i]);
    free(views);
    return rc;
}

// ---- timing statistics ---------------------------------------------------------------------
static void json_series(FILE *f, const char *name, const double *v, int n, int last) {
    double mn, md = vt_bench_median(v, n, &mn);
    fprintf(f, "  \"%s\": {\"min\": %.4f, \"median\": %.4f, \"reps\": [", name, mn * 1e3, md * 1e3);
    for (int i = 0; i < n; i++) fprintf(f, "%s%.4f", i ? ", " : "", v[i] * 1e3);
    fprintf(f, "]}%s\n", last ? "" : ",");
}

static void json_int_list(FILE *f, const char *name, const int *v, int n) {
    fprintf(f, "    \"%s\": [", name);
    for (int i = 0; i < n; i++) fprintf(f, "%s%d", i ? ", " : "", v[i]);
    fprintf(f, "],\n");
}

static void write_config_json(FILE *f, const vt_unet3d_config *c) {
    fprintf(f, "  \"config\": {\n    \"in_channels\": %d,\n    \"out_channels\": %d,\n    \"model_channels\": %d,\n",
            c->in_channels, c->out_channels, c->model_channels);
    json_int_list(f, "attention_resolutions", c->attention_resolutions, c->n_attention_resolutions);
    fprintf(f, "    \"num_res_blocks\": %d,\n", c->num_res_blocks);
    json_int_list(f, "channel_mult", c->channel_mult, c->n_levels);
    fprintf(f,
            "    \"num_head_channels\": %d,\n    \"transformer_depth\": %d,\n    \"context_dim\": %d,\n"
            "    \"use_linear\": %s,\n    \"temporal_conv\": %s,\n    \"temporal_attention\": %s,\n"
            "    \"temporal_selfatt_only\": %s,\n    \"addition_attention\": %s,\n    \"fps_cond\": %s\n  },\n",
            c->num_head_channels, c->transformer_depth, c->context_dim, c->use_linear ? "true" : "false",
            c->temporal_conv ? "true" : "false", c->temporal_attention ? "true" : "false",
            c->temporal_selfatt_only ? "true" : "false", c->addition_attention ? "true" : "false",
            c->fps_cond ? "true" : "false");
}

static void usage(void) {
    fprintf(stderr,
            "usage: vader-unet_bench [--config mid|tiny|full|FILE.json] [--mc N] [--frames T] [--size HW] "
            "[--batch B] [--ctx L] [--reps N] [--threads N] [--checkpoint] [--no-fast] [--full] [--save-weights PATH] "
            "[--save-io PATH] [--json OUT]\n");
}

int main(int argc, char **argv) {
    const char *config = "mid", *save_w = NULL, *save_io = NULL, *json_out = NULL;
    int mc = 0, T = 4, HW = 16, B = 1, L = 77, reps = 3, threads = 0, checkpoint = 0, fast = 1;
    for (int i = 1; i < argc; i++) {
        int ok = 1;
        if (!strcmp(argv[i], "--config")) ok = arg_str(argc, argv, &i, &config);
        else if (!strcmp(argv[i], "--mc")) ok = arg_int(argc, argv, &i, &mc);
        else if (!strcmp(argv[i], "--frames")) ok = arg_int(argc, argv, &i, &T);
        else if (!strcmp(argv[i], "--size")) ok = arg_int(argc, argv, &i, &HW);
        else if (!strcmp(argv[i], "--batch")) ok = arg_int(argc, argv, &i, &B);
        else if (!strcmp(argv[i], "--ctx")) ok = arg_int(argc, argv, &i, &L);
        else if (!strcmp(argv[i], "--iters") || !strcmp(argv[i], "--reps")) ok = arg_int(argc, argv, &i, &reps);
        else if (!strcmp(argv[i], "--threads")) ok = arg_int(argc, argv, &i, &threads);
        else if (!strcmp(argv[i], "--save-weights")) ok = arg_str(argc, argv, &i, &save_w);
        else if (!strcmp(argv[i], "--save-io")) ok = arg_str(argc, argv, &i, &save_io);
        else if (!strcmp(argv[i], "--json")) ok = arg_str(argc, argv, &i, &json_out);
        else if (!strcmp(argv[i], "--checkpoint")) checkpoint = 1;
        else if (!strcmp(argv[i], "--no-fast")) fast = 0;
        else if (!strcmp(argv[i], "--full")) config = "full";
        else ok = 0;
        if (!ok) {
            usage();
            return 2;
        }
    }
    vt_unet3d_config c;
    if (load_config(config, &c)) return 2;
    if (mc) c.model_channels = mc;
    int down = vt_unet3d_downsampling(&c);
    if (HW % down) {
        fprintf(stderr, "vader-unet_bench: --size %d is not a multiple of the downsampling factor %d\n", HW, down);
        return 2;
    }
    if (threads) {
        omp_set_num_threads(threads);
        openblas_set_num_threads(threads);
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
    {  // lora_B = N(0, 0.1^2) instead of zeros: the LoRA branch contributes and dA is non-zero
        vt_rng r;
        vt_rng_seed(&r, 6);
        for (int i = 1; i < vt_unet3d_n_lora(u); i += 2) vt_fill_normal(vt_unet3d_lora_param(u, i, NULL), &r, 0, 0.1f);
    }
    vt_unet3d_set_checkpoint(u, checkpoint);
    if (save_w && save_weights(save_w, u, &c)) return 1;
    vt_tensor *x = randn(5, (int64_t[]){B, c.in_channels, T, HW, HW}, 3);
    vt_tensor *ctx = randn(3, (int64_t[]){B, L, c.context_dim}, 4);
    vt_tensor *gout = randn(5, (int64_t[]){B, c.out_channels, T, HW, HW}, 5);
    vt_tensor *ts = vt_empty(VT_I64, VT_CPU, 1, (int64_t[]){B});
    vt_tensor *fps = vt_empty(VT_I64, VT_CPU, 1, (int64_t[]){B});
    double *t_fwd = calloc((size_t)reps, sizeof(double)), *t_tape = calloc((size_t)reps, sizeof(double));
    double *t_bwd = calloc((size_t)reps, sizeof(double)), *t_fb = calloc((size_t)reps, sizeof(double));
    double *c_fwd = calloc((size_t)reps, sizeof(double)), *c_fb = calloc((size_t)reps, sizeof(double));
    if (!x || !ctx || !gout || !ts || !fps || !t_fwd || !t_tape || !t_bwd || !t_fb || !c_fwd || !c_fb) {
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
    int nthreads = threads ? threads : omp_get_max_threads();
    printf("unet3d (%s): mc %d, d_head %d, x [%d, %d, %d, %d, %d], context [%d, %d, %d], %.1f M params, LoRA r %d "
           "(%d tensors)%s, %d threads\n",
           config, c.model_channels, c.num_head_channels, B, c.in_channels, T, HW, HW, B, L, c.context_dim,
           vt_unet3d_n_params(u) / 1e6, lc.rank, vt_unet3d_n_lora(u), checkpoint ? ", checkpoint segments" : "",
           nthreads);
    printf("forward %.2f GFLOP (attention %.2f), backward %.2f GFLOP\n", fwd / 1e9, attn / 1e9, bwd / 1e9);
    double merge_ms = 0;
    if (fast) {  // what vt_vader_step does before its untaped steps
        double t0 = vt_bench_now_s();
        if (vt_unet3d_lora_merge(u) || vt_unet3d_cache_context(u, ctx)) {
            fprintf(stderr, "vader-unet_bench: %s\n", vt_error_message());
            return 1;
        }
        merge_ms = (vt_bench_now_s() - t0) * 1e3;
        printf("untaped forward: LoRA merged, context K/V cached (%.1f ms, once per optimisation step)\n", merge_ms);
    } else {
        printf("untaped forward: LoRA branch and context K/V projections in every forward (--no-fast)\n");
    }
    // rep -1: untimed warm-up (and the --save-io run)
    for (int it = -1; it < reps; it++) {
        double c0 = vt_bench_cpu_s(), t0 = vt_bench_now_s();
        vt_tensor *o = vt_unet3d_forward(u, x, ts, ctx, fps, (uint64_t)(it + 1));
        double t1 = vt_bench_now_s(), c1 = vt_bench_cpu_s();
        if (!o) {
            fprintf(stderr, "vader-unet_bench: %s\n", vt_error_message());
            return 1;
        }
        vt_release(o);
        vt_tape *tape = vt_tape_begin();
        double c2 = vt_bench_cpu_s(), t2 = vt_bench_now_s();
        o = vt_unet3d_forward(u, x, ts, ctx, fps, (uint64_t)(it + 1));
        double t3 = vt_bench_now_s();
        vt_tape_end(tape);
        size_t saved = vt_tape_stats_get(tape).saved_bytes;
        vt_err e = o ? vt_backward(tape, o, gout) : vt_error_code();
        double t4 = vt_bench_now_s(), c4 = vt_bench_cpu_s();
        vt_tape_free(tape);
        vt_unet3d_release_segments(u);
        if (e) {
            fprintf(stderr, "vader-unet_bench: %s\n", vt_error_message());
            return 1;
        }
        if (it < 0 && save_io) {
            int nl = vt_unet3d_n_lora(u), n = 8 + nl;
            const char **names = calloc((size_t)n, sizeof *names);
            char **owned = calloc((size_t)nl, sizeof *owned);
            vt_tensor **tv = calloc((size_t)n, sizeof *tv);
            if (!names || !owned || !tv) return 2;
            const char *fixed[] = {"x", "timesteps", "context", "fps", "grad_out", "out", "grad.x"};
            vt_tensor *ft[] = {x, ts, ctx, fps, gout, o, x->grad};
            int k = 0;
            for (; k < 7; k++) {
                names[k] = fixed[k];
                tv[k] = ft[k];
            }
            for (int i = 0; i < nl; i++) {
                const char *nm;
                vt_tensor *p = vt_unet3d_lora_param(u, i, &nm);
                size_t len = strlen(nm) + 6;
                if (!(owned[i] = malloc(len))) return 2;
                snprintf(owned[i], len, "grad.%s", nm);
                names[k] = owned[i];
                tv[k++] = p->grad;
            }
            vt_err we = vt_st_write(save_io, k, names, tv, 0, NULL, NULL);
            for (int i = 0; i < nl; i++) free(owned[i]);
            free(owned);
            free(names);
            free(tv);
            if (we) {
                fprintf(stderr, "vader-unet_bench: %s\n", vt_error_message());
                return 1;
            }
            printf("wrote %s\n", save_io);
        }
        vt_release(o);
        vt_zero_grad(x);
        for (int i = 0; i < vt_unet3d_n_lora(u); i++) vt_zero_grad(vt_unet3d_lora_param(u, i, NULL));
        if (it < 0) continue;
        printf("rep %d: forward %.1f ms (no tape), %.1f ms (tape, %.1f MB saved), backward %.1f ms\n", it,
               (t1 - t0) * 1e3, (t3 - t2) * 1e3, saved / 1048576.0, (t4 - t3) * 1e3);
        fflush(stdout);
        t_fwd[it] = t1 - t0;
        t_tape[it] = t3 - t2;
        t_bwd[it] = t4 - t3;
        t_fb[it] = t4 - t2;
        c_fwd[it] = c1 - c0;
        c_fb[it] = c4 - c2;
    }
    double mn_f, mn_t, mn_b, mn_fb;
    double md_f = vt_bench_median(t_fwd, reps, &mn_f), md_fb = vt_bench_median(t_fb, reps, &mn_fb);
    vt_bench_median(t_tape, reps, &mn_t);
    vt_bench_median(t_bwd, reps, &mn_b);
    printf("min: forward %.1f ms (%.1f GFLOP/s), forward on tape %.1f ms, backward %.1f ms (%.1f GFLOP/s), "
           "forward+backward %.1f ms (%.1f GFLOP/s)\n",
           mn_f * 1e3, fwd / mn_f / 1e9, mn_t * 1e3, mn_b * 1e3, bwd / mn_b / 1e9, mn_fb * 1e3,
           (fwd + bwd) / mn_fb / 1e9);
    printf("median: forward %.1f ms, forward+backward %.1f ms (%d reps)\n", md_f * 1e3, md_fb * 1e3, reps);
    if (json_out) {
        FILE *f = fopen(json_out, "w");
        if (!f) {
            fprintf(stderr, "vader-unet_bench: cannot write %s\n", json_out);
            return 1;
        }
        fprintf(f, "{\n  \"preset\": \"%s\",\n", config);
        write_config_json(f, &c);
        fprintf(f,
                "  \"shape\": {\"batch\": %d, \"frames\": %d, \"size\": %d, \"ctx\": %d},\n"
                "  \"lora\": {\"rank\": %d, \"alpha\": %g, \"targets\": [\"to_q\", \"to_k\", \"to_v\"]},\n"
                "  \"checkpoint\": %s,\n  \"fast\": %s,\n  \"merge_ms\": %.3f,\n  \"threads\": %d,\n  \"n_params\": %lld,\n"
                "  \"gflop_forward\": %.6f,\n  \"gflop_backward\": %.6f,\n",
                B, T, HW, L, lc.rank, (double)lc.alpha, checkpoint ? "true" : "false", fast ? "true" : "false", merge_ms,
                nthreads,
                (long long)vt_unet3d_n_params(u), fwd / 1e9, bwd / 1e9);
        json_series(f, "forward_ms", t_fwd, reps, 0);
        json_series(f, "forward_tape_ms", t_tape, reps, 0);
        json_series(f, "backward_ms", t_bwd, reps, 0);
        json_series(f, "forward_backward_ms", t_fb, reps, 0);
        json_series(f, "forward_cpu_ms", c_fwd, reps, 0);
        json_series(f, "forward_backward_cpu_ms", c_fb, reps, 1);
        fprintf(f, "}\n");
        if (fclose(f)) {
            fprintf(stderr, "vader-unet_bench: error writing %s\n", json_out);
            return 1;
        }
    }
    free(t_fwd);
    free(t_tape);
    free(t_bwd);
    free(t_fb);
    free(c_fwd);
    free(c_fb);
    vt_release(x);
    vt_release(ctx);
    vt_release(gout);
    vt_release(ts);
    vt_release(fps);
    vt_unet3d_free(u);
    return 0;
}
