// vader-train — fine-tunes the video UNet's LoRA with VADER.
//   vader-train [CONFIG] [--set a.b=c]... [--resume DIR|auto] [--steps N] [--max-bad-steps N]
//               [--random-weights]
// With no CONFIG the embedded tiny CPU config (configs/tiny-cpu.yaml) runs.
// Under an MPI launcher (`mpirun -np N vader-train CONFIG`) every process is one rank of a
// data-parallel job (train/dist.h, README "Multi-GPU runs"); an error on any rank ends the
// whole job through vt_dist_abort with that rank's message.
// Hidden debugging flags (tests/mpi): --debug-fail STEP:RANK:MODE (MODE error, kill or hang:
// rank RANK fails at the start of optimisation step STEP), --debug-dump-lora PREFIX (every rank
// writes its LoRA to PREFIX.rankR.safetensors at the end).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "train/config.h"
#include "train/memplan.h"
#include "train/models.h"
#include "train/dist.h"
#include "train/trainer.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: vader-train [CONFIG] [--set a.b=c]... [--resume DIR|auto] [--steps N] [--max-bad-steps N]\n"
            "                   [--memory-limit SIZE] [--random-weights] [--print-config]\n"
            "  CONFIG            YAML training config (default: the embedded configs/tiny-cpu.yaml)\n"
            "  --set a.b=c       override one config field (YAML value), repeatable\n"
            "  --resume DIR|auto continue from the latest state-STEP.safetensors in DIR (auto: output.dir)\n"
            "                    or from that state file\n"
            "  --steps N         stop after N optimisation steps in total (the LR schedule still spans\n"
            "                    optim.steps); a checkpoint is written at the stop\n"
            "  --max-bad-steps N stop after N steps in a row with a non-finite loss or gradient: the same as\n"
            "                    --set optim.max_bad_steps=N (default 5)\n"
            "  --random-weights  = --set model.random_weights=true: checkpoints the config names but that\n"
            "                    are absent become the full-size shapes with random values (shared/manifests)\n"
            "  --print-config    print the resolved config and exit\n"
            "  --memory-limit S  memory the run may use (bytes, or with K/M/G suffix); default: the\n"
            "                    device's (CPU: MemAvailable). A run whose planned peak exceeds it is refused\n");
}

static int parse_debug_fail(const char *s, vt_train_options *o) {
    char mode[16] = "";
    if (sscanf(s, "%d:%d:%15s", &o->debug_fail_step, &o->debug_fail_rank, mode) != 3 || o->debug_fail_step < 1)
        return -1;
    o->debug_fail_mode = strcmp(mode, "error") == 0 ? 1 : strcmp(mode, "kill") == 0 ? 2 : strcmp(mode, "hang") == 0 ? 3 : 0;
    return o->debug_fail_mode ? 0 : -1;
}

// A config that failed to load or validate: under a launcher with several ranks the job is
// ended through MPI (the other ranks may already wait in a collective), otherwise exit 1.
static int fail_before_dist(const char *msg) {
    vt_dist_launch l;
    if (vt_dist_launch_from_env(&l, NULL) == VT_OK && l.launched && l.world > 1) {
        vt_dist d;
        if (vt_dist_init(&d, VT_DIST_MPI) == VT_OK) vt_dist_abort(&d, 1, "vader-train: %s", msg);
        vt_dist_abort(NULL, 1, "vader-train: %s", msg);
    }
    fprintf(stderr, "vader-train: %s\n", msg);
    return 1;
}

int main(int argc, char **argv) {
    const char *config_path = NULL;
    vt_train_options opt = vt_train_options_default();
    opt.progress = stdout;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    int n_sets = 0, print_config = 0, random_weights = 0;
    const char *dump_lora = NULL;
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
        } else if (strcmp(a, "--memory-limit") == 0 && i + 1 < argc) {
            if (!(opt.memory_limit = vt_memplan_parse_size(argv[++i]))) {
                fprintf(stderr, "vader-train: --memory-limit %s: expected a size such as 8G or 512M\n", argv[i]);
                free(sets);
                return 2;
            }
        } else if (strcmp(a, "--debug-fail") == 0 && i + 1 < argc) {
            if (parse_debug_fail(argv[++i], &opt)) {
                fprintf(stderr, "vader-train: --debug-fail %s: expected STEP:RANK:error|kill|hang\n", argv[i]);
                free(sets);
                return 2;
            }
        } else if (strcmp(a, "--debug-dump-lora") == 0 && i + 1 < argc) {
            dump_lora = argv[++i];
        } else if (strcmp(a, "--random-weights") == 0) {
            random_weights = 1;
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
    if (!e && random_weights) cfg.model.random_weights = true;
    if (!e) e = vt_config_validate(&cfg);
    if (!e) {  // absent checkpoints -> manifests (model.random_weights); said once, by rank 0
        vt_dist_launch l;
        int quiet = vt_dist_launch_from_env(&l, NULL) == VT_OK && l.launched && l.rank > 0;
        e = vt_vc2_random_weight_fallback(&cfg, quiet ? NULL : stderr);
    }
    if (e) {
        vt_config_free(&cfg);
        return fail_before_dist(vt_error_message());
    }
    if (print_config) {
        char *y = vt_config_dump(&cfg);
        if (y) fputs(y, stdout);
        free(y);
        vt_config_free(&cfg);
        return 0;
    }
    // join the job (a single process without a launcher); from here on an error on any rank
    // ends every rank through vt_dist_abort
    vt_dist dist;
    vt_dist_backend want = VT_DIST_AUTO;
    e = vt_dist_backend_parse(vt_cfg_dist_name(cfg.dist.backend), &want);
    // a CPU run needs no NCCL communicator even where GPUs are visible
    if (!e && want == VT_DIST_AUTO && cfg.device == VT_CFG_DEVICE_CPU) want = VT_DIST_MPI;
    if (!e) e = vt_dist_init(&dist, want);
    if (e) {
        char msg[2048];
        snprintf(msg, sizeof msg, "dist.backend %s: %s", vt_cfg_dist_name(cfg.dist.backend), vt_error_message());
        vt_config_free(&cfg);
        return fail_before_dist(msg);
    }
    const char *env_timeout = getenv("VADER_DIST_TIMEOUT");
    if (!env_timeout || !*env_timeout) dist.timeout_s = cfg.dist.timeout;  // $VADER_DIST_TIMEOUT wins
    opt.dist = &dist;
    if (dist.rank != 0) opt.progress = NULL;
    vt_trainer *t = vt_trainer_create(&cfg, &opt);
    if (!t) {
        if (dist.world > 1) vt_dist_abort(&dist, 1, "vader-train: %s", vt_error_message());
        fprintf(stderr, "vader-train: %s\n", vt_error_message());
        vt_config_free(&cfg);
        return 1;
    }
    int micro = 0, global = 0;
    vt_trainer_batch(t, &micro, &global);
    if (dist.rank == 0)
        printf("vader-train: %s, %d steps of %d prompts (%d rank%s x %d micro-batches x %d), %dx%d x %d frames, "
               "DDIM %d (K %d), output %s\n",
               config_path ? config_path : "tiny-cpu (embedded)", cfg.optim.steps, global, dist.world,
               dist.world == 1 ? "" : "s", cfg.optim.accumulation, micro, cfg.model.width, cfg.model.height,
               cfg.model.frames, cfg.sampler.steps, cfg.sampler.backprop_steps, cfg.output.dir);
    if (dist.world > 1 && dist.rank == 0)
        printf("vader-train: data parallel over %d ranks (%s backend, %s launcher), collective timeout %g s\n",
               dist.world, vt_dist_backend_name(dist.backend), dist.launcher, dist.timeout_s);
    fflush(stdout);
    e = vt_trainer_run(t);
    if (!e && dump_lora) {
        char path[4096];
        snprintf(path, sizeof path, "%s.rank%d.safetensors", dump_lora, dist.rank);
        e = vt_trainer_save_lora(t, path);
    }
    if (e && dist.world > 1) vt_dist_abort(&dist, 1, "vader-train: %s", vt_error_message());
    vt_trainer_stats s = vt_trainer_get_stats(t);
    if (e) fprintf(stderr, "vader-train: %s\n", vt_error_message());
    else if (dist.rank == 0)
        printf("vader-train: done, %lld steps (%lld skipped), reward %.5f -> %.5f; outputs in %s\n", (long long)s.step,
               (long long)s.skipped, s.first_reward, s.last_reward, cfg.output.dir);
    vt_trainer_free(t);
    vt_config_free(&cfg);
    if (!e && (e = vt_dist_finalize(&dist))) fprintf(stderr, "vader-train: %s\n", vt_error_message());
    return e ? 1 : 0;
}
