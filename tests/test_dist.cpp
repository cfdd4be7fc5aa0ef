// test_dist.cpp — train/dist in one process: launcher detection (fake environments), init
// without a launcher, collectives as identities on one rank, pack/unpack, per-rank seeds,
// batch validation, abort. The two-rank behaviour is tests/mpi/dist_mpi_test.c under mpirun.
#include "testutil.h"
#include "train/dist.h"
#include <cstdlib>
#include <map>
#include <set>
#include <string>

static std::map<std::string, std::string> g_env;
static const char *fake_getenv(const char *name) {
    auto it = g_env.find(name);
    return it == g_env.end() ? nullptr : it->second.c_str();
}

static bool launched_for_real() {
    vt_dist_launch l;
    return vt_dist_launch_from_env(&l, nullptr) == VT_OK && l.launched;
}

TEST(Dist, LaunchEnvNone) {
    g_env.clear();
    vt_dist_launch l;
    ASSERT_VT_OK(vt_dist_launch_from_env(&l, fake_getenv));
    EXPECT_EQ(l.launched, 0);
    EXPECT_EQ(l.rank, 0);
    EXPECT_EQ(l.world, 1);
    EXPECT_STREQ(l.launcher, "none");
}

TEST(Dist, LaunchEnvOpenMPI) {
    g_env = {{"OMPI_COMM_WORLD_RANK", "5"},
             {"OMPI_COMM_WORLD_SIZE", "8"},
             {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
             {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}};
    vt_dist_launch l;
    ASSERT_VT_OK(vt_dist_launch_from_env(&l, fake_getenv));
    EXPECT_EQ(l.launched, 1);
    EXPECT_EQ(l.rank, 5);
    EXPECT_EQ(l.world, 8);
    EXPECT_EQ(l.local_rank, 1);
    EXPECT_EQ(l.local_world, 4);
    EXPECT_STREQ(l.launcher, "openmpi");
}

TEST(Dist, LaunchEnvMPICHWithoutLocalRank) {
    g_env = {{"PMI_RANK", "2"}, {"PMI_SIZE", "3"}};
    vt_dist_launch l;
    ASSERT_VT_OK(vt_dist_launch_from_env(&l, fake_getenv));
    EXPECT_EQ(l.launched, 1);
    EXPECT_EQ(l.rank, 2);
    EXPECT_EQ(l.world, 3);
    EXPECT_EQ(l.local_rank, -1);  // MPI works it out after init
    EXPECT_STREQ(l.launcher, "mpich");
}

TEST(Dist, LaunchEnvMalformed) {
    vt_dist_launch l;
    g_env = {{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "2"}};
    EXPECT_EQ(vt_dist_launch_from_env(&l, fake_getenv), VT_ERR_CONFIG);
    EXPECT_NE(std::string(vt_error_message()).find("OMPI_COMM_WORLD_RANK=2"), std::string::npos) << vt_error_message();
    g_env = {{"PMI_RANK", "x"}, {"PMI_SIZE", "2"}};
    EXPECT_EQ(vt_dist_launch_from_env(&l, fake_getenv), VT_ERR_CONFIG);
    g_env = {{"OMPI_COMM_WORLD_SIZE", "2"}};  // size without rank
    EXPECT_EQ(vt_dist_launch_from_env(&l, fake_getenv), VT_ERR_CONFIG);
    g_env = {{"OMPI_COMM_WORLD_RANK", "0"},
             {"OMPI_COMM_WORLD_SIZE", "2"},
             {"OMPI_COMM_WORLD_LOCAL_RANK", "3"},
             {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}};
    EXPECT_EQ(vt_dist_launch_from_env(&l, fake_getenv), VT_ERR_CONFIG);
    vt_error_clear();
}

TEST(Dist, BackendNames) {
    vt_dist_backend b;
    for (const char *s : {"auto", "none", "mpi", "nccl"}) {
        ASSERT_VT_OK(vt_dist_backend_parse(s, &b));
        EXPECT_STREQ(vt_dist_backend_name(b), s);
    }
    EXPECT_EQ(vt_dist_backend_parse("gloo", &b), VT_ERR_CONFIG);
    EXPECT_NE(std::string(vt_error_message()).find("gloo"), std::string::npos);
    vt_error_clear();
}

TEST(Dist, GpuForRank) {
    EXPECT_EQ(vt_dist_gpu_for_rank(0, 0), -1);
    EXPECT_EQ(vt_dist_gpu_for_rank(3, 0), -1);
    EXPECT_EQ(vt_dist_gpu_for_rank(3, 1), 0);  // CUDA_VISIBLE_DEVICES set per rank
    EXPECT_EQ(vt_dist_gpu_for_rank(3, 8), 3);
    EXPECT_EQ(vt_dist_gpu_for_rank(9, 8), 1);
}

TEST(Dist, InitWithoutLauncherIsRankZeroOfOne) {
    if (launched_for_real()) GTEST_SKIP() << "running under an MPI launcher";
    for (vt_dist_backend want : {VT_DIST_AUTO, VT_DIST_NONE, VT_DIST_MPI, VT_DIST_NCCL}) {
        vt_dist d;
        ASSERT_VT_OK(vt_dist_init(&d, want));
        EXPECT_EQ(d.backend, VT_DIST_NONE) << vt_dist_backend_name(want);
        EXPECT_EQ(d.rank, 0);
        EXPECT_EQ(d.world, 1);
        EXPECT_EQ(d.local_rank, 0);
        EXPECT_EQ(d.local_world, 1);
        EXPECT_STREQ(d.launcher, "none");
        EXPECT_TRUE(vt_dist_is_main(&d));
        EXPECT_GT(d.timeout_s, 0.0);
        ASSERT_VT_OK(vt_dist_finalize(&d));
    }
}

TEST(Dist, TimeoutFromEnvironment) {
    if (launched_for_real()) GTEST_SKIP() << "running under an MPI launcher";
    setenv("VADER_DIST_TIMEOUT", "7.5", 1);
    vt_dist d;
    ASSERT_VT_OK(vt_dist_init(&d, VT_DIST_AUTO));
    EXPECT_DOUBLE_EQ(d.timeout_s, 7.5);
    ASSERT_VT_OK(vt_dist_finalize(&d));
    unsetenv("VADER_DIST_TIMEOUT");
    ASSERT_VT_OK(vt_dist_init(&d, VT_DIST_AUTO));
    EXPECT_DOUBLE_EQ(d.timeout_s, VT_DIST_DEFAULT_TIMEOUT_S);
    ASSERT_VT_OK(vt_dist_finalize(&d));
}

TEST(Dist, SingleRankCollectivesAreIdentities) {
    if (launched_for_real()) GTEST_SKIP() << "running under an MPI launcher";
    vt_dist d;
    ASSERT_VT_OK(vt_dist_init(&d, VT_DIST_AUTO));
    float buf[5] = {1.5f, -2.0f, 0.0f, 3.25f, 1e-7f};
    const float orig[5] = {1.5f, -2.0f, 0.0f, 3.25f, 1e-7f};
    ASSERT_VT_OK(vt_dist_allreduce_avg(&d, buf, 5, VT_CPU));
    for (int i = 0; i < 5; i++) EXPECT_EQ(buf[i], orig[i]);
    ASSERT_VT_OK(vt_dist_broadcast(&d, buf, sizeof buf, VT_CPU));
    for (int i = 0; i < 5; i++) EXPECT_EQ(buf[i], orig[i]);
    ASSERT_VT_OK(vt_dist_barrier(&d));
    for (vt_dist_op op : {VT_DIST_SUM, VT_DIST_MEAN, VT_DIST_MIN, VT_DIST_MAX}) {
        double v[2] = {0.25, -4.0};
        ASSERT_VT_OK(vt_dist_allreduce_f64(&d, v, 2, op));
        EXPECT_EQ(v[0], 0.25);
        EXPECT_EQ(v[1], -4.0);
    }
    ASSERT_VT_OK(vt_dist_check_same(&d, 1234, "config"));
    vt_dist_gathered g;
    const char msg[] = "prompt 0: 0.25";
    ASSERT_VT_OK(vt_dist_gather(&d, msg, sizeof msg, &g));
    ASSERT_EQ(g.n, 1);
    EXPECT_EQ(g.sizes[0], sizeof msg);
    EXPECT_EQ(g.offsets[0], 0u);
    EXPECT_STREQ((const char *)g.data, msg);
    vt_dist_gathered_free(&g);
    EXPECT_EQ(g.data, nullptr);
    ASSERT_VT_OK(vt_dist_gather(&d, nullptr, 0, &g));  // empty contribution
    EXPECT_EQ(g.sizes[0], 0u);
    vt_dist_gathered_free(&g);
    ASSERT_VT_OK(vt_dist_finalize(&d));
}

TEST(Dist, PackUnpackRoundTrip) {
    Releaser r;
    vt_tensor *a = r(RandN({2, 3}, 1)), *b = r(RandN({4}, 2)), *c = r(RandN({1, 2, 2}, 3));
    vt_tensor *ts[4] = {a, nullptr, b, c};
    ASSERT_EQ(vt_dist_flat_numel(ts, 4), 14);
    const int64_t n14[1] = {14};
    vt_tensor *flat = r(vt_new_f32(1, n14));
    ASSERT_VT_OK(vt_dist_pack(ts, 4, flat));
    EXPECT_EQ(vt_f32(flat)[0], vt_f32(a)[0]);
    EXPECT_EQ(vt_f32(flat)[6], vt_f32(b)[0]);
    EXPECT_EQ(vt_f32(flat)[13], vt_f32(c)[3]);
    vt_tensor *a2 = r(vt_clone(a)), *b2 = r(vt_clone(b)), *c2 = r(vt_clone(c));
    vt_tensor *out[4] = {r(vt_new_f32(2, a->shape)), nullptr, r(vt_new_f32(1, b->shape)), r(vt_new_f32(3, c->shape))};
    ASSERT_VT_OK(vt_dist_unpack(flat, out, 4));
    EXPECT_EQ(RelErr(out[0], a2), 0.0);
    EXPECT_EQ(RelErr(out[2], b2), 0.0);
    EXPECT_EQ(RelErr(out[3], c2), 0.0);

    const int64_t n13[1] = {13};
    vt_tensor *small = r(vt_new_f32(1, n13));
    EXPECT_EQ(vt_dist_pack(ts, 4, small), VT_ERR_SHAPE);
    EXPECT_NE(std::string(vt_error_message()).find("13"), std::string::npos) << vt_error_message();
    vt_error_clear();
}

TEST(Dist, PackGradsZerosForMissingAndUnpackCreates) {
    Releaser r;
    vt_tensor *p0 = r(RandN({3}, 4)), *p1 = r(RandN({2, 2}, 5));
    p0->grad = vt_full(VT_CPU, 1, p0->shape, 2.0f);
    vt_tensor *params[2] = {p0, p1};  // p1 has no gradient
    const int64_t n7[1] = {7};
    vt_tensor *flat = r(vt_full(VT_CPU, 1, n7, -1.0f));
    ASSERT_VT_OK(vt_dist_pack_grads(params, 2, flat));
    for (int i = 0; i < 3; i++) EXPECT_EQ(vt_f32(flat)[i], 2.0f);
    for (int i = 3; i < 7; i++) EXPECT_EQ(vt_f32(flat)[i], 0.0f);
    for (int i = 0; i < 7; i++) vt_f32(flat)[i] = (float)i;
    ASSERT_VT_OK(vt_dist_unpack_grads(flat, params, 2));
    ASSERT_NE(p1->grad, nullptr);
    EXPECT_TRUE(vt_same_shape(p1->grad, p1));
    for (int i = 0; i < 3; i++) EXPECT_EQ(vt_f32(p0->grad)[i], (float)i);
    for (int i = 0; i < 4; i++) EXPECT_EQ(vt_f32(p1->grad)[i], (float)(3 + i));
    vt_clear(&p0->grad);
    vt_clear(&p1->grad);
}

TEST(Dist, AverageGradsOneRankKeepsGradients) {
    if (launched_for_real()) GTEST_SKIP() << "running under an MPI launcher";
    vt_dist d;
    ASSERT_VT_OK(vt_dist_init(&d, VT_DIST_NONE));
    Releaser r;
    vt_tensor *p = r(RandN({5}, 6));
    p->grad = RandN({5}, 7);
    vt_tensor *want = r(vt_clone(p->grad));
    vt_tensor *params[1] = {p};
    const int64_t n5[1] = {5};
    vt_tensor *flat = r(vt_new_f32(1, n5));
    ASSERT_VT_OK(vt_dist_average_grads(&d, params, 1, flat));
    EXPECT_EQ(RelErr(p->grad, want), 0.0);
    vt_tensor *w = r(vt_clone(p));
    ASSERT_VT_OK(vt_dist_broadcast_params(&d, params, 1, flat));
    EXPECT_EQ(RelErr(p, w), 0.0);
    vt_clear(&p->grad);
    ASSERT_VT_OK(vt_dist_finalize(&d));
}

TEST(Dist, SeedsDifferPerRankAndAreDeterministic) {
    EXPECT_EQ(vt_dist_seed(42, 0), 42u);  // a one-process run keeps its seed
    std::set<uint64_t> seen;
    for (int rank = 0; rank < 256; rank++) {
        uint64_t s = vt_dist_seed(42, rank);
        EXPECT_EQ(s, vt_dist_seed(42, rank));
        EXPECT_TRUE(seen.insert(s).second) << "rank " << rank;
    }
    EXPECT_NE(vt_dist_seed(42, 1), vt_dist_seed(43, 1));
    // The streams themselves differ.
    vt_rng a, b;
    vt_rng_seed(&a, vt_dist_seed(7, 0));
    vt_rng_seed(&b, vt_dist_seed(7, 1));
    EXPECT_NE(vt_rng_u64(&a), vt_rng_u64(&b));
}

TEST(Dist, ShareSplitsContiguouslyInRankOrder) {
    for (int n : {0, 1, 5, 7, 16})
        for (int w : {1, 2, 3, 8}) {
            int next = 0, lo, hi;
            for (int r = 0; r < w; r++) {
                vt_dist_share(n, r, w, &lo, &hi);
                EXPECT_EQ(lo, next) << n << " over " << w << ", rank " << r;
                EXPECT_GE(hi - lo, n / w);
                EXPECT_LE(hi - lo, n / w + 1);
                next = hi;
            }
            EXPECT_EQ(next, n) << n << " over " << w;
        }
}

TEST(Dist, GatherF64OneRank) {
    vt_dist d;
    if (launched_for_real()) GTEST_SKIP() << "under a launcher";
    ASSERT_EQ(vt_dist_init(&d, VT_DIST_NONE), VT_OK);
    double v[3] = {1.5, -2, 3}, *all = nullptr;
    int n = 0;
    ASSERT_EQ(vt_dist_gather_f64(&d, v, 3, &all, &n), VT_OK) << vt_error_message();
    ASSERT_EQ(n, 3);
    for (int i = 0; i < 3; i++) EXPECT_EQ(all[i], v[i]);
    free(all);
    vt_dist_finalize(&d);
}

TEST(Dist, HashIsFnv1a) {
    EXPECT_EQ(vt_dist_hash(VT_DIST_HASH_INIT, "", 0), 0xcbf29ce484222325ull);
    EXPECT_EQ(vt_dist_hash(VT_DIST_HASH_INIT, "a", 1), 0xaf63dc4c8601ec8cull);
    EXPECT_NE(vt_dist_hash(VT_DIST_HASH_INIT, "lr: 1e-4", 8), vt_dist_hash(VT_DIST_HASH_INIT, "lr: 2e-4", 8));
}

TEST(Dist, BatchValidation) {
    int micro = -1;
    ASSERT_VT_OK(vt_dist_check_batch(8, 2, 2, &micro));
    EXPECT_EQ(micro, 2);
    ASSERT_VT_OK(vt_dist_check_batch(8, 1, 8, &micro));
    EXPECT_EQ(micro, 1);
    ASSERT_VT_OK(vt_dist_check_batch(1, 1, 1, nullptr));

    EXPECT_EQ(vt_dist_check_batch(8, 2, 3, &micro), VT_ERR_CONFIG);
    EXPECT_EQ(micro, 0);
    std::string m = vt_error_message();
    EXPECT_NE(m.find("batch size 8 cannot be split over 3 ranks x 2 accumulation steps"), std::string::npos) << m;
    EXPECT_NE(m.find("world sizes that work with 2 accumulation steps: 1, 2, 4"), std::string::npos) << m;
    EXPECT_NE(m.find("accumulation steps that work with 3 ranks: none"), std::string::npos) << m;

    EXPECT_EQ(vt_dist_check_batch(12, 4, 2, nullptr), VT_ERR_CONFIG);  // 12 / 8
    m = vt_error_message();
    EXPECT_NE(m.find("world sizes that work with 4 accumulation steps: 1, 3"), std::string::npos) << m;
    EXPECT_NE(m.find("accumulation steps that work with 2 ranks: 1, 2, 3, 6"), std::string::npos) << m;

    EXPECT_EQ(vt_dist_check_batch(4, 1, 8, nullptr), VT_ERR_CONFIG);  // more ranks than samples
    EXPECT_NE(std::string(vt_error_message()).find("1, 2, 4"), std::string::npos) << vt_error_message();
    EXPECT_EQ(vt_dist_check_batch(0, 1, 1, nullptr), VT_ERR_CONFIG);
    EXPECT_EQ(vt_dist_check_batch(4, 0, 1, nullptr), VT_ERR_CONFIG);
    EXPECT_EQ(vt_dist_check_batch(4, 1, 0, nullptr), VT_ERR_CONFIG);
    vt_error_clear();
}

TEST(DistDeathTest, AbortPrintsRankAndExitsNonZero) {
    if (launched_for_real()) GTEST_SKIP() << "running under an MPI launcher";
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    vt_dist d;
    ASSERT_VT_OK(vt_dist_init(&d, VT_DIST_NONE));
    EXPECT_EXIT(vt_dist_abort(&d, 3, "loss is %s", "nan"), testing::ExitedWithCode(3), "rank 0: loss is nan");
    EXPECT_EXIT(vt_dist_abort(nullptr, 0, "code 0"), testing::ExitedWithCode(1), "rank 0: code 0");
    ASSERT_VT_OK(vt_dist_finalize(&d));
}
