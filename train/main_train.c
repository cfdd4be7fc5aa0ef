// vader-train — fine-tunes the video UNet's LoRA with VADER.
//   vader-train [CONFIG] [--set a.b=c]... [--resume DIR|auto] [--steps N] [--max-bad-steps N]
// With no CONFIG the embedded tiny CPU config (configs/tiny-cpu.yaml) runs.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "train/config.h"
#include "train/trainer.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: vader-train [CONFIG] [--set a.b=c]... [--resume DIR|auto] [--steps N] [--max-bad-steps N]\n"
            "  CONFIG            YAML training config (default: the embedded configs/tiny-cpu.yaml)\n"
            "  --set a.b=c       override one config field (YAML value), repeatable\n"
            "  --resume DIR|auto continue from the latest state-STEP.safetensors in DIR (auto: output.dir)\n"
            "                    or from that state file\n"
            "  --steps N         stop after N optimisation steps in total (the LR schedule still spans\n"
            "                    optim.steps); a checkpoint is written at the stop\n"
            "  --max-bad-steps N stop after N steps in a row with a non-finite loss or gradient: the same as\n"
            "                    --set optim.max_bad_steps=N (default 5)\n"
            "  --print-config    print the resolved config and exit\n");
}

int main(int argc, char **argv) {
    const char *config_path = NULL;
    vt_train_options opt = vt_train_options_default();
    opt.progress = stdout;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    int n_sets = 0, print_config = 0;
    char max_bad_set[128];
    if (!sets) return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            free(sets);
            return 0;
        } else if (strcmp(a, "--set") == 0 && i + 1 < argc) {
            sets[n_sets++] = argv[++i];
        } else if (strncmp(a, "--set=", 6) == 0) {
            sets[n_sets++] = a + 6;
        } else if (strcmp(a, "--resume") == 0 && i + 1 < argc) {
            opt.resume = argv[++i];
        } else if (strcmp(a, "--steps") == 0 && i + 1 < argc) {
            opt.stop_at = atoi(argv[++i]);
            if (opt.stop_at < 1) {
                fprintf(stderr, "vader-train: --steps %s: need a positive number\n", argv[i]);
                free(sets);
                return 2;
            }
        } else if (strcmp(a, "--max-bad-steps") == 0 && i + 1 < argc) {
            // shorthand for --set optim.max_bad_steps=N (typed and range-checked like the file)
            snprintf(max_bad_set, sizeof max_bad_set, "optim.max_bad_steps=%s", argv[++i]);
            sets[n_sets++] = max_bad_set;
        } else if (strcmp(a, "--print-config") == 0) {
            print_config = 1;
        } else if (a[0] == '-' || config_path) {
            fprintf(stderr, "vader-train: unexpected argument %s\n", a);
            usage(stderr);
            free(sets);
            return 2;
        } else {
            config_path = a;
        }
    }
    vt_config cfg;
    vt_err e = config_path ? vt_config_load(&cfg, config_path)
                           : vt_config_load_string(&cfg, vt_config_default_yaml, "configs/tiny-cpu.yaml (embedded)");
    for (int i = 0; !e && i < n_sets; i++) e = vt_config_set(&cfg, sets[i]);
    free(sets);
    if (!e) e = vt_config_validate(&cfg);
    if (e) {
        fprintf(stderr, "vader-train: %s\n", vt_error_message());
        vt_config_free(&cfg);
        return 1;
    }
    if (print_config) {
        char *y = vt_config_dump(&cfg);
        if (y) fputs(y, stdout);
        free(y);
        vt_config_free(&cfg);
        return 0;
    }
    printf("vader-train: %s, %d steps of %d x %d prompts, %dx%d x %d frames, DDIM %d (K %d), output %s\n",
           config_path ? config_path : "tiny-cpu (embedded)", cfg.optim.steps, cfg.optim.accumulation,
           cfg.data.batch_size, cfg.model.width, cfg.model.height, cfg.model.frames, cfg.sampler.steps,
           cfg.sampler.backprop_steps, cfg.output.dir);
    vt_trainer *t = vt_trainer_create(&cfg, &opt);
    if (!t) {
        fprintf(stderr, "vader-train: %s\n", vt_error_message());
        vt_config_free(&cfg);
        return 1;
    }
    e = vt_trainer_run(t);
    vt_trainer_stats s = vt_trainer_get_stats(t);
    if (e) fprintf(stderr, "vader-train: %s\n", vt_error_message());
    else
        printf("vader-train: done, %lld steps (%lld skipped), reward %.5f -> %.5f; outputs in %s\n", (long long)s.step,
               (long long)s.skipped, s.first_reward, s.last_reward, cfg.output.dir);
    vt_trainer_free(t);
    vt_config_free(&cfg);
    return e ? 1 : 0;
}
