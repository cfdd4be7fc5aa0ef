// dist_mpi_test.c — train/dist with real ranks (run by CTest under `mpirun -np 2`).
//   dist_mpi_test            all-reduce average, broadcast, scalar reductions, gather, barrier,
//                            gradient average through a flat buffer, config-hash mismatch;
//                            exits 0 when every rank passed.
//   dist_mpi_test die        rank 1 _exit(3)s before a collective: mpirun must end non-zero.
//   dist_mpi_test hang       rank 1 sleeps instead of joining a collective: rank 0's watchdog
//                            (VADER_DIST_TIMEOUT) must abort the job with "timed out".
//   dist_mpi_test error      rank 1 fails and calls vt_dist_abort: "rank 1: ..." and non-zero.
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "train/dist.h"

static int failures = 0;
static int g_rank = 0;

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "rank %d: FAIL %s:%d: ", g_rank, __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                                    \
            fprintf(stderr, "\n");                                           \
            failures++;                                                      \
        }                                                                    \
    } while (0)

// Any unexpected library error ends the job the way a program should.
#define OK(d, call)                                                                          \
    do {                                                                                     \
        vt_err e_ = (call);                                                                  \
        if (e_) vt_dist_abort((d), 2, "%s failed: %s", #call, vt_error_message());           \
    } while (0)

static void test_collectives(vt_dist *d) {
    const int r = d->rank, w = d->world;
    // all-reduce average: rank r holds (r + 1) * (i + 1) -> mean over ranks = (w + 1) / 2 * (i + 1)
    enum { N = 1000 };
    float *buf = malloc(N * sizeof *buf);
    for (int i = 0; i < N; i++) buf[i] = (float)((r + 1) * (i + 1));
    OK(d, vt_dist_allreduce_avg(d, buf, N, VT_CPU));
    for (int i = 0; i < N; i++) {
        float want = (float)(w + 1) / 2.0f * (float)(i + 1);
        if (fabsf(buf[i] - want) > 1e-5f * want) {
            CHECK(0, "all-reduce [%d] = %g, want %g", i, buf[i], want);
            break;
        }
    }
    free(buf);

    // broadcast from rank 0
    char text[32];
    snprintf(text, sizeof text, "weights of rank %d", r);
    OK(d, vt_dist_broadcast(d, text, sizeof text, VT_CPU));
    CHECK(strcmp(text, "weights of rank 0") == 0, "broadcast got '%s'", text);

    // scalars
    double v[3] = {r + 1.0, 10.0 * r, -r};
    OK(d, vt_dist_allreduce_f64(d, v, 3, VT_DIST_MEAN));
    CHECK(fabs(v[0] - (w + 1) / 2.0) < 1e-12, "scalar mean %g", v[0]);
    double s = r + 1.0;
    OK(d, vt_dist_allreduce_f64(d, &s, 1, VT_DIST_SUM));
    CHECK(s == w * (w + 1) / 2.0, "scalar sum %g", s);
    double mx = r, mn = r;
    OK(d, vt_dist_allreduce_f64(d, &mx, 1, VT_DIST_MAX));
    OK(d, vt_dist_allreduce_f64(d, &mn, 1, VT_DIST_MIN));
    CHECK(mx == w - 1 && mn == 0, "max %g min %g", mx, mn);

    // gather of variable-length results: rank r sends r + 1 copies of 'a' + r
    char mine[64];
    memset(mine, 'a' + r, (size_t)r + 1);
    vt_dist_gathered g;
    OK(d, vt_dist_gather(d, mine, (size_t)r + 1, &g));
    if (r == 0) {
        CHECK(g.n == w, "gather n %d", g.n);
        for (int k = 0; k < g.n; k++) {
            CHECK(g.sizes[k] == (size_t)k + 1, "gather size[%d] = %zu", k, g.sizes[k]);
            for (size_t j = 0; j < g.sizes[k]; j++)
                if (g.data[g.offsets[k] + j] != 'a' + k) CHECK(0, "gather data of rank %d", k);
        }
    } else {
        CHECK(g.n == 0 && g.data == NULL, "gather on rank %d should be empty", r);
    }
    vt_dist_gathered_free(&g);
    OK(d, vt_dist_barrier(d));

    // eval-style split and gather: 7 items shared over the ranks come back in order on rank 0
    int lo, hi;
    vt_dist_share(7, r, w, &lo, &hi);
    double items[8];
    for (int i = lo; i < hi; i++) items[i - lo] = 0.5 * i;
    double *all = NULL;
    int n_all = -1;
    OK(d, vt_dist_gather_f64(d, items, hi - lo, &all, &n_all));
    if (r == 0) {
        CHECK(n_all == 7, "gather_f64 gave %d items", n_all);
        for (int i = 0; i < n_all; i++)
            if (all[i] != 0.5 * i) CHECK(0, "gather_f64 item %d = %g", i, all[i]);
    } else {
        CHECK(all == NULL && n_all == 0, "gather_f64 on rank %d should be empty", r);
    }
    free(all);

    // gradients through a flat buffer: param 0 has grad r, param 1 has none on odd ranks
    const int64_t s3[1] = {3}, s2[1] = {2}, s5[1] = {5};
    vt_tensor *p0 = vt_new_f32(1, s3), *p1 = vt_new_f32(1, s2), *flat = vt_new_f32(1, s5);
    p0->grad = vt_full(VT_CPU, 1, s3, (float)r);
    if (r % 2 == 0) p1->grad = vt_full(VT_CPU, 1, s2, 4.0f);
    vt_tensor *params[2] = {p0, p1};
    OK(d, vt_dist_average_grads(d, params, 2, flat));
    int evens = (w + 1) / 2;
    for (int i = 0; i < 3; i++) CHECK(fabsf(vt_f32(p0->grad)[i] - (w - 1) / 2.0f) < 1e-6f, "grad0 %g", vt_f32(p0->grad)[i]);
    CHECK(p1->grad != NULL, "grad1 not created");
    if (p1->grad) CHECK(fabsf(vt_f32(p1->grad)[0] - 4.0f * evens / w) < 1e-6f, "grad1 %g", vt_f32(p1->grad)[0]);
    // initial weights from rank 0
    for (int i = 0; i < 3; i++) vt_f32(p0)[i] = (float)(100 * r + i);
    OK(d, vt_dist_broadcast_params(d, params, 2, flat));
    for (int i = 0; i < 3; i++) CHECK(vt_f32(p0)[i] == (float)i, "broadcast param %g", vt_f32(p0)[i]);
    vt_clear(&p0->grad);
    vt_clear(&p1->grad);
    vt_release(p0);
    vt_release(p1);
    vt_release(flat);

    // config hashes: equal passes; rank 1 differing is caught on every rank, naming rank 1
    uint64_t h = vt_dist_hash(VT_DIST_HASH_INIT, "lr: 1e-4\n", 9);
    OK(d, vt_dist_check_same(d, h, "config"));
    vt_err e = vt_dist_check_same(d, r == 1 ? h + 1 : h, "resolved config");
    CHECK(e == VT_ERR_CONFIG, "config mismatch not detected (%d)", (int)e);
    CHECK(strstr(vt_error_message(), "rank 1 has") != NULL, "message: %s", vt_error_message());
    CHECK(strstr(vt_error_message(), "resolved config differs") != NULL, "message: %s", vt_error_message());
    vt_error_clear();
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "collectives";
    vt_dist d;
    vt_err e = vt_dist_init(&d, VT_DIST_MPI);
    if (e) vt_dist_abort(NULL, 2, "vt_dist_init: %s", vt_error_message());
    g_rank = d.rank;
    if (d.world < 2) vt_dist_abort(&d, 2, "needs at least 2 ranks (mpirun -np 2), got %d", d.world);
    if (d.backend != VT_DIST_MPI) vt_dist_abort(&d, 2, "backend %s, expected mpi", vt_dist_backend_name(d.backend));

    if (strcmp(mode, "collectives") == 0) {
        test_collectives(&d);
        // Every rank must pass: reduce the failure counts.
        double f = failures;
        OK(&d, vt_dist_allreduce_f64(&d, &f, 1, VT_DIST_SUM));
        if (d.rank == 0) printf("dist_mpi_test: %d ranks, %s\n", d.world, f == 0 ? "all passed" : "FAILED");
        OK(&d, vt_dist_finalize(&d));
        return f == 0 ? 0 : 1;
    }
    // Failure modes: rank 1 misbehaves just before a collective that rank 0 enters.
    float x[4] = {1, 2, 3, 4};
    OK(&d, vt_dist_allreduce_avg(&d, x, 4, VT_CPU));  // one healthy step first
    if (d.rank == 1) {
        if (strcmp(mode, "die") == 0) _exit(3);
        if (strcmp(mode, "hang") == 0) sleep(120);  // rank 0's watchdog ends the job long before
        if (strcmp(mode, "error") == 0) vt_dist_abort(&d, 5, "reward model returned NaN");
    }
    OK(&d, vt_dist_allreduce_avg(&d, x, 4, VT_CPU));
    OK(&d, vt_dist_barrier(&d));
    fprintf(stderr, "rank %d: the job should not have got here (mode %s)\n", d.rank, mode);
    vt_dist_finalize(&d);
    return 0;
}
