// test_optim.cpp — AdamW against torch.optim.AdamW, gradient clipping against
// torch.nn.utils.clip_grad_norm_ (values recorded from torch 2.x, see comments), LR schedules,
// and the DDIM schedule's closed forms.
#include "testutil.h"
#include "train/adamw.h"
#include "train/ddim.h"
#include <cmath>

TEST(AdamW, MatchesTorchThreeSteps) {
    // torch: p = [0.5, -1, 2, 0.1]; AdamW(lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01);
    // grads [0.3,-0.2,1,0], [0.1,0.4,-0.5,2], [-1,0.2,0.3,-0.1]
    const float init[4] = {0.5f, -1.0f, 2.0f, 0.1f};
    const float grads[3][4] = {{0.3f, -0.2f, 1.0f, 0.0f}, {0.1f, 0.4f, -0.5f, 2.0f}, {-1.0f, 0.2f, 0.3f, -0.1f}};
    const float expect[4] = {0.352002174f, -0.985651612f, 1.83099747f, -0.0287301932f};
    const int64_t shape[1] = {4};
    vt_tensor *p = vt_from_f32(1, shape, init);
    vt_adamw o;
    ASSERT_VT_OK(vt_adamw_init(&o, &p, 1, 0.9f, 0.99f, 1e-8f, 0.01f));
    for (auto &g : grads) {
        vt_zero_grad(p);
        p->grad = vt_from_f32(1, shape, g);
        ASSERT_VT_OK(vt_adamw_step(&o, 0.1f));
    }
    for (int i = 0; i < 4; i++) EXPECT_NEAR(vt_f32(p)[i], expect[i], 2e-6) << i;
    vt_adamw_free(&o);
    vt_release(p);
}

TEST(AdamW, SkipsParametersWithoutGradient) {
    const int64_t shape[1] = {2};
    const float init[2] = {1.0f, 2.0f};
    vt_tensor *p = vt_from_f32(1, shape, init);
    vt_adamw o;
    ASSERT_VT_OK(vt_adamw_init(&o, &p, 1, 0.9f, 0.999f, 1e-8f, 0.1f));
    ASSERT_VT_OK(vt_adamw_step(&o, 1.0f));
    EXPECT_EQ(vt_f32(p)[0], 1.0f);  // no decay either, as torch skips grad-less params
    vt_adamw_free(&o);
    vt_release(p);
}

TEST(ClipGradNorm, MatchesTorch) {
    // torch: grads [3, 4, 0] and [12, 0]; clip_grad_norm_(max_norm=1) returns 13 and scales
    // by 1 / (13 + 1e-6)
    const int64_t s3[1] = {3}, s2[1] = {2};
    const float g0[3] = {3, 4, 0}, g1[2] = {12, 0};
    vt_tensor *a = vt_new_f32(1, s3), *b = vt_new_f32(1, s2);
    a->grad = vt_from_f32(1, s3, g0);
    b->grad = vt_from_f32(1, s2, g1);
    vt_tensor *ps[2] = {a, b};
    EXPECT_DOUBLE_EQ(vt_clip_grad_norm(ps, 2, 1.0), 13.0);
    EXPECT_NEAR(vt_f32(a->grad)[0], 0.230769217f, 1e-7);
    EXPECT_NEAR(vt_f32(b->grad)[0], 0.923076868f, 1e-7);
    // below the limit nothing changes
    EXPECT_NEAR(vt_clip_grad_norm(ps, 2, 10.0), 1.0, 1e-6);
    EXPECT_NEAR(vt_f32(b->grad)[0], 0.923076868f, 1e-7);
    vt_release(a);
    vt_release(b);
}

TEST(LrSchedule, ConstantWarmupCosine) {
    EXPECT_FLOAT_EQ(vt_lr_at(VT_LR_CONSTANT, 1e-3f, 50, 10, 100), 1e-3f);
    EXPECT_FLOAT_EQ(vt_lr_at(VT_LR_WARMUP, 1.0f, 0, 10, 100), 0.1f);
    EXPECT_FLOAT_EQ(vt_lr_at(VT_LR_WARMUP, 1.0f, 9, 10, 100), 1.0f);
    EXPECT_FLOAT_EQ(vt_lr_at(VT_LR_WARMUP, 1.0f, 50, 10, 100), 1.0f);
    EXPECT_FLOAT_EQ(vt_lr_at(VT_LR_COSINE, 1.0f, 10, 10, 110), 1.0f);
    EXPECT_NEAR(vt_lr_at(VT_LR_COSINE, 1.0f, 60, 10, 110), 0.5f, 1e-6);
    EXPECT_NEAR(vt_lr_at(VT_LR_COSINE, 1.0f, 110, 10, 110), 0.0f, 1e-6);
}

TEST(Ddim, ScheduleClosedForms) {
    vt_ddim_options o = vt_ddim_default_options(25, 1.0);
    vt_ddim_schedule s;
    ASSERT_VT_OK(vt_ddim_init(&s, &o));
    // beta_0 = linear_start, alphas_cumprod[0] = 1 - 0.00085
    EXPECT_NEAR(s.alphas_cumprod[0], 1 - 0.00085, 1e-12);
    EXPECT_EQ(s.timesteps[0], 1);
    EXPECT_EQ(s.timesteps[24], 961);
    EXPECT_DOUBLE_EQ(s.alphas_prev[0], (double)(float)s.alphas_cumprod[0]);
    EXPECT_DOUBLE_EQ(s.scale_arr[0], 1.0);
    EXPECT_DOUBLE_EQ(s.scale_arr[399], 0.7);
    EXPECT_DOUBLE_EQ(s.scale_arr[999], 0.7);
    // eta 0 gives deterministic DDIM
    vt_ddim_free(&s);
    o.eta = 0;
    ASSERT_VT_OK(vt_ddim_init(&s, &o));
    for (int i = 0; i < 25; i++) EXPECT_EQ(s.sigmas[i], 0.0);
    vt_ddim_free(&s);
    o.steps = 0;
    EXPECT_NE(vt_ddim_init(&s, &o), VT_OK);
    EXPECT_NE(std::string(vt_error_message()).find("sampler.steps"), std::string::npos);
}

TEST(Ddim, StepGradientsMatchFiniteDifferences) {
    vt_ddim_options o = vt_ddim_default_options(4, 1.0);
    vt_ddim_schedule s;
    ASSERT_VT_OK(vt_ddim_init(&s, &o));
    Releaser R;
    vt_tensor *x = R(RandN({1, 4, 2, 3, 3}, 1)), *e = R(RandN({1, 4, 2, 3, 3}, 2)), *nz = R(RandN({1, 4, 2, 3, 3}, 3));
    vt_requires_grad(x, 1);
    vt_requires_grad(e, 1);
    for (int idx = 0; idx < 4; idx++)
        ExpectGradsMatch([&](auto &in) { return vt_ddim_step(&s, idx, in[0], in[1], in[2], nullptr); }, {x, e, nz});
    vt_ddim_free(&s);
}

#include "core/fixture.h"

// The schedule arrays of the upstream oracle (lvdm DDIMSampler, VideoCrafter2 use_scale).
TEST(Ddim, ScheduleMatchesVaderStepFixture) {
    vt_fixture *f = vt_fixture_open(SharedPath("fixtures/vader_step_tiny").c_str());
    ASSERT_NE(f, nullptr) << vt_error_message();
    int64_t S = 0;
    double eta = 0;
    ASSERT_VT_OK(vt_fixture_json_int(f, "case.S", &S));
    ASSERT_VT_OK(vt_fixture_json_double(f, "case.eta", &eta));
    vt_ddim_options o = vt_ddim_default_options((int)S, eta);
    vt_ddim_schedule s;
    ASSERT_VT_OK(vt_ddim_init(&s, &o));
    auto check = [&](const char *name, const double *ours, int n) {
        vt_tensor *ref = vt_fixture_io(f, name);
        ASSERT_NE(ref, nullptr) << vt_error_message();
        ASSERT_EQ(ref->numel, n) << name;
        for (int i = 0; i < n; i++) EXPECT_NEAR(ours[i], vt_f32(ref)[i], 1e-6 * std::fabs(vt_f32(ref)[i]) + 1e-9) << name << "[" << i << "]";
        vt_release(ref);
    };
    check("schedule.alphas_cumprod", s.alphas_cumprod, VT_DDPM_STEPS);
    check("schedule.scale_arr", s.scale_arr, VT_DDPM_STEPS);
    check("ddim.alphas", s.alphas, (int)S);
    check("ddim.alphas_prev", s.alphas_prev, (int)S);
    check("ddim.sigmas", s.sigmas, (int)S);
    check("ddim.scale_arr", s.scale, (int)S);
    check("ddim.scale_arr_prev", s.scale_prev, (int)S);
    vt_tensor *ts = vt_fixture_io_raw(f, "ddim.timesteps");
    ASSERT_NE(ts, nullptr) << vt_error_message();
    for (int i = 0; i < S; i++) EXPECT_EQ(vt_i64(ts)[i], s.timesteps[i]);
    vt_release(ts);
    vt_ddim_free(&s);
    vt_fixture_free(f);
}
