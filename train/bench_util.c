// bench_util.c — see bench_util.h.
#include "train/bench_util.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>

double vt_bench_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double vt_bench_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double vt_bench_median(const double *v, int n, double *min) {
    double *s = malloc((size_t)n * sizeof *s);
    if (!s) return *min = v[0];
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    *min = s[0];
    double m = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    return m;
}

int vt_bench_proj_conv_dims(const char *k, const vt_unet3d_config *c) {
    size_t n = strlen(k);
    int proj = (n > 15 && !strcmp(k + n - 15, ".proj_in.weight")) || (n > 16 && !strcmp(k + n - 16, ".proj_out.weight"));
    if (!proj) return 0;
    if (!strncmp(k, "init_attn.", 10)) return 1;
    if (c->use_linear) return 0;
    const char *dot = strstr(k, ".proj_");  // "...blocks.N.{1|2}.proj_*"
    return dot - k >= 2 && dot[-1] == '1' && dot[-2] == '.' ? 2 : 1;
}
