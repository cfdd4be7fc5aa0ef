// vader-fixture — checks one PyTorch fixture case against vader's CPU reference:
//
//     vader-fixture PATH/NAME [--tol T] [--verbose] [--segments] [--acts-report-only]
//                   [--device cpu|cuda] [--skip-without-gpu]
//
// --device cuda moves the models and f32 inputs to the GPU and compares the results (copied
// back) with the same tolerance: the CUDA kernels are fp32 (no TF32), so 1e-4 holds there too.
// --skip-without-gpu: exit 77 (ctest's SKIP_RETURN_CODE) when --device cuda finds no GPU or
// the build has no CUDA backend.
// reads NAME.json, NAME.weights.safetensors and NAME.io.safetensors, detects the model from
// the json's "model" string, runs the forward and the vector-Jacobian products the io file
// holds, and prints one line per tensor: "name  rel_err  OK/FAIL" (rel_err = max|a-b| /
// max|b|). Exit status 0 when every checked tensor is within tolerance, 1 when one is not,
// 2 when the check could not run (the error names the file / key / shape).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/models/fixture_checks.h"
#ifdef VADER_HAVE_CUDA
#include "cuda/backend.h"
#endif

#define EXIT_SKIP 77

static void usage(FILE *f) {
    fprintf(f,
            "usage: vader-fixture PATH/NAME [--tol T] [--verbose] [--segments] [--acts-report-only]\n"
            "  PATH/NAME    fixture prefix: NAME.json, NAME.weights.safetensors, NAME.io.safetensors\n"
            "  --tol T      relative error allowed, max|a-b|/max|b| (default: the json's \"tolerance\", else 1e-4)\n"
            "  --verbose    progress and model sizes on stderr\n"
            "  --segments   run blocks as checkpoint segments (gradients must not change)\n"
            "  --acts-report-only  act.* entries are printed but do not fail the run\n"
            "  --device D   cpu (default) or cuda: models and inputs on the GPU, compared on the host\n"
            "  --skip-without-gpu  with --device cuda: exit 77 (skipped) when no GPU is usable\n"
            "known models:");
    for (const vt_fixture_kind *k = vt_fixture_kinds; k->model_contains; k++)
        fprintf(f, " \"%s\" (%s)", k->model_contains, k->name);
    fprintf(f, "\n");
}

int main(int argc, char **argv) {
    vt_fixture_opts opt = vt_fixture_opts_default();
    const char *prefix = NULL;
    int skip_without_gpu = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tol") && i + 1 < argc) {
            char *end;
            opt.tol = strtod(argv[++i], &end);
            opt.tol_given = 1;
            if (*end || !(opt.tol >= 0)) {
                fprintf(stderr, "vader-fixture: bad --tol %s\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--verbose") || !strcmp(argv[i], "-v")) {
            opt.verbose = 1;
        } else if (!strcmp(argv[i], "--segments")) {
            opt.segments = 1;
        } else if (!strcmp(argv[i], "--device") && i + 1 < argc) {
            const char *d = argv[++i];
            if (!strcmp(d, "cpu")) opt.device = VT_CPU;
            else if (!strcmp(d, "cuda")) opt.device = VT_CUDA;
            else {
                fprintf(stderr, "vader-fixture: bad --device %s (cpu or cuda)\n", d);
                return 2;
            }
        } else if (!strcmp(argv[i], "--skip-without-gpu")) {
            skip_without_gpu = 1;
        } else if (!strcmp(argv[i], "--acts-report-only")) {
            opt.acts_checked = 0;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] == '-' || prefix) {
            usage(stderr);
            return 2;
        } else {
            prefix = argv[i];
        }
    }
    if (!prefix) {
        usage(stderr);
        return 2;
    }
    if (opt.device == VT_CUDA) {
#ifdef VADER_HAVE_CUDA
        if (vt_cuda_device_count() == 0) {
            fprintf(stderr, "vader-fixture: --device cuda: no GPU%s\n", skip_without_gpu ? " (skipped)" : "");
            return skip_without_gpu ? EXIT_SKIP : 2;
        }
        if (vt_cuda_init(0)) {
            fprintf(stderr, "vader-fixture: %s: %s\n", vt_err_name(vt_error_code()), vt_error_message());
            return 2;
        }
#else
        fprintf(stderr, "vader-fixture: --device cuda: this build has no CUDA backend%s\n",
                skip_without_gpu ? " (skipped)" : "");
        return skip_without_gpu ? EXIT_SKIP : 2;
#endif
    }
    // accept PATH/NAME.json (or .io/.weights.safetensors) as well as the bare prefix
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", prefix);
    const char *suffixes[] = {".json", ".io.safetensors", ".weights.safetensors"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(buf), s = strlen(suffixes[i]);
        if (n > s && !strcmp(buf + n - s, suffixes[i])) buf[n - s] = 0;
    }
    vt_fixture_report rep = {0};
    vt_err e = vt_fixture_run(buf, &opt, &rep);
    if (!e || rep.n) vt_fixture_report_print(&rep, &opt, stdout);
    int rc = rep.n_fail ? 1 : 0;
    if (e) {
        fprintf(stderr, "vader-fixture: %s: %s\n", vt_err_name(e), vt_error_message());
        rc = 2;
    } else if (rep.n == 0) {
        fprintf(stderr, "vader-fixture: %s: nothing was compared\n", buf);
        rc = 2;
    }
    vt_fixture_report_free(&rep);
    return rc;
}
