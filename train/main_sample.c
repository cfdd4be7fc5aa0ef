// vader-sample — videos from VideoCrafter2 with (or without) a VADER LoRA.
//   vader-sample [CONFIG] [--lora PATH] [--prompt "..."]... [--out DIR] [--seed N] [--set a.b=c]...
// Models as vader-train builds them from CONFIG (checkpoints, manifests with random weights,
// or the tiny random preset; no CONFIG: the embedded tiny-cpu.yaml). Each prompt i gets
// DIR/i/frame-000.png ... (every frame decoded), DIR/i/video.gif, DIR/i/prompt.txt and, when
// ffmpeg is on PATH, DIR/i/video.mp4. Same seed, same files.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "train/config.h"
#include "train/models.h"
#include "train/sample.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: vader-sample [CONFIG] [--lora PATH] [--prompt TEXT]... [--out DIR] [--seed N] [--set a.b=c]...\n"
            "  CONFIG         YAML config whose model.*, sampler.*, lora.* are used (default: the embedded\n"
            "                 configs/tiny-cpu.yaml)\n"
            "  --lora PATH    LoRA safetensors (peft names, e.g. a vader-train lora-STEP.safetensors); its rank,\n"
            "                 alpha and targets must match lora.* of the config (default: lora.checkpoint, or none)\n"
            "  --prompt TEXT  a prompt, repeatable (default: data.eval_prompts, else data.prompts)\n"
            "  --out DIR      output folder (default: OUTPUT_DIR/videos, OUTPUT_DIR = output.dir)\n"
            "  --seed N       sampling seed (default: the config's seed); prompt i uses a seed derived from N and i\n"
            "  --set a.b=c    override one config field, repeatable\n");
}

int main(int argc, char **argv) {
    const char *config_path = NULL, *lora = NULL, *out = NULL;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets), **prompts = calloc((size_t)argc + 1, sizeof *prompts);
    int n_sets = 0, n_prompts = 0, have_seed = 0, rc = 1;
    unsigned long long seed = 0;
    vt_config cfg;
    memset(&cfg, 0, sizeof cfg);
    vt_sampler *s = NULL;
    if (!sets || !prompts) goto done;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            rc = 0;
            goto done;
        } else if (strcmp(a, "--set") == 0 && more) {
            sets[n_sets++] = argv[++i];
        } else if (strncmp(a, "--set=", 6) == 0) {
            sets[n_sets++] = a + 6;
        } else if (strcmp(a, "--lora") == 0 && more) {
            lora = argv[++i];
        } else if (strcmp(a, "--prompt") == 0 && more) {
            prompts[n_prompts++] = argv[++i];
        } else if (strcmp(a, "--out") == 0 && more) {
            out = argv[++i];
        } else if (strcmp(a, "--seed") == 0 && more) {
            char *end;
            seed = strtoull(argv[++i], &end, 0);
            if (*end || !argv[i][0]) {
                fprintf(stderr, "vader-sample: --seed %s: not a number\n", argv[i]);
                rc = 2;
                goto done;
            }
            have_seed = 1;
        } else if (a[0] == '-' || config_path) {
            fprintf(stderr, "vader-sample: unexpected argument %s\n", a);
            usage(stderr);
            rc = 2;
            goto done;
        } else {
            config_path = a;
        }
    }
    vt_err e = config_path ? vt_config_load(&cfg, config_path)
                           : vt_config_load_string(&cfg, vt_config_default_yaml, "configs/tiny-cpu.yaml (embedded)");
    for (int i = 0; !e && i < n_sets; i++) e = vt_config_set(&cfg, sets[i]);
    if (!e) e = vt_config_validate(&cfg);
    if (!e) e = vt_vc2_random_weight_fallback(&cfg, stderr);  // absent checkpoints -> manifests
    if (e) {
        fprintf(stderr, "vader-sample: %s\n", vt_error_message());
        goto done;
    }
    if (!have_seed) seed = cfg.seed;
    if (n_prompts == 0) {
        char **src = cfg.data.n_eval_prompts ? cfg.data.eval_prompts : cfg.data.prompts;
        int n = cfg.data.n_eval_prompts ? cfg.data.n_eval_prompts : cfg.data.n_prompts;
        for (int i = 0; i < n && i < argc; i++) prompts[n_prompts++] = src[i];
    }
    if (n_prompts == 0) {
        fprintf(stderr, "vader-sample: no prompts: give --prompt TEXT (the config has no data.prompts / eval_prompts)\n");
        rc = 2;
        goto done;
    }
    char outdir[4096];
    if (out) snprintf(outdir, sizeof outdir, "%s", out);
    else snprintf(outdir, sizeof outdir, "%s/videos", cfg.output.dir);
    printf("vader-sample: %s, %dx%d x %d frames, DDIM %d (eta %g, guidance %g), %s, seed %llu\n",
           config_path ? config_path : "tiny-cpu (embedded)", cfg.model.width, cfg.model.height, cfg.model.frames,
           cfg.sampler.steps, cfg.sampler.eta, cfg.sampler.guidance_scale,
           lora ? lora : cfg.lora.checkpoint ? cfg.lora.checkpoint : "no LoRA", seed);
    if (!(s = vt_sampler_create(&cfg, lora))) {
        fprintf(stderr, "vader-sample: %s\n", vt_error_message());
        goto done;
    }
    int ffmpeg = vt_have_ffmpeg();
    if (!ffmpeg) printf("vader-sample: ffmpeg is not on PATH: no MP4 (PNG frames and GIF only)\n");
    for (int i = 0; i < n_prompts; i++) {
        char dir[4200], path[4300];
        snprintf(dir, sizeof dir, "%s/%d", outdir, i);
        vt_tensor *frames = vt_sampler_sample(s, prompts[i], vt_sample_prompt_seed(seed, i));
        e = frames ? VT_OK : vt_error_code();
        if (!e) e = vt_frames_write_pngs(frames, 0, dir);
        if (!e) e = vt_frames_write_gif(frames, 0, dir, cfg.model.fps);
        if (!e) {
            snprintf(path, sizeof path, "%s/prompt.txt", dir);
            FILE *f = fopen(path, "w");
            if (f) {
                fprintf(f, "%s\n", prompts[i]);
                fclose(f);
            }
        }
        int mp4 = 0;
        if (!e && ffmpeg) {
            if (vt_frames_write_mp4(dir, cfg.model.fps) == VT_OK) mp4 = 1;
            else fprintf(stderr, "vader-sample: note: %s\n", vt_error_message());
        }
        if (e) {
            fprintf(stderr, "vader-sample: prompt %d: %s\n", i, vt_error_message());
            vt_release(frames);
            goto done;
        }
        printf("vader-sample: [%d] \"%s\" -> %s/ (%d PNG frames, video.gif%s)\n", i, prompts[i], dir,
               (int)frames->shape[2], mp4 ? ", video.mp4" : "");
        vt_release(frames);
    }
    rc = 0;
done:
    vt_sampler_free(s);
    vt_config_free(&cfg);
    free(sets);
    free(prompts);
    return rc;
}
