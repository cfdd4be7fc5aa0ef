// test_train_eval.cpp — the trainer's evaluation on held-out prompts (train/eval.h) and the
// optim.max_bad_steps field: /eval rows and columns, sample frames, a resumed run rewriting
// the evaluations after its step to the same values as an uninterrupted run, and the run
// stopping after optim.max_bad_steps non-finite steps.
#include <sys/stat.h>
#include <cstdio>
#include <string>
#include <vector>
#include "train_testutil.h"
#include "media_decode.h"
#include "train/eval.h"

namespace {

struct Cfg : TestConfig {
    explicit Cfg(const std::string &dir, const std::vector<std::string> &sets = {})
        : TestConfig(Concat({"model.height=32", "model.width=32", "model.frames=2", "memory.decode_frames=1",
                             "optim.steps=3", "output.checkpoint_every=2", "output.eval_every=1",
                             "data.eval_prompts=[a cat on a sofa, a tree]", "output.dir=" + dir},
                            sets)) {}
};

TEST(TrainEval, MaxBadStepsIsAConfigField) {
    vt_config c{};
    ASSERT_VT_OK(vt_config_load_string(&c, vt_config_default_yaml, "tiny"));
    EXPECT_EQ(c.optim.max_bad_steps, 5);
    ASSERT_VT_OK(vt_config_set(&c, "optim.max_bad_steps=3"));
    EXPECT_EQ(c.optim.max_bad_steps, 3);
    EXPECT_NE(vt_config_set(&c, "optim.max_bad_steps=0"), VT_OK);
    EXPECT_NE(std::string(vt_error_message()).find("optim.max_bad_steps"), std::string::npos) << vt_error_message();
    EXPECT_NE(vt_config_set(&c, "optim.max_bad_steps=many"), VT_OK);
    char *y = vt_config_dump(&c);
    ASSERT_NE(y, nullptr);
    EXPECT_NE(std::string(y).find("max_bad_steps: 3"), std::string::npos) << y;
    vt_config back{};
    ASSERT_VT_OK(vt_config_load_string(&back, y, "dump"));
    EXPECT_EQ(back.optim.max_bad_steps, 3);
    free(y);
    vt_config_free(&back);
    vt_config_free(&c);
}

TEST(TrainEval, RunStopsAfterMaxBadSteps) {
    std::string dir = TempDir() + "/nan";
    Cfg c(dir, {"sampler.guidance_scale=1e38", "optim.steps=6", "optim.max_bad_steps=3", "output.eval_every=0"});
    ASSERT_TRUE(c.ok) << vt_error_message();
    vt_trainer_stats s{};
    EXPECT_EQ(RunTrainer(&c.c, nullptr, 0, &s), VT_ERR_NUMERIC);
    EXPECT_NE(std::string(vt_error_message()).find("3 steps in a row"), std::string::npos) << vt_error_message();
    EXPECT_EQ(s.skipped, 3);
}

TEST(TrainEval, EvalRowsSamplesAndResume) {
    std::string a = TempDir() + "/full", b = TempDir() + "/resumed";
    Cfg ca(a), cb(b);
    ASSERT_TRUE(ca.ok && cb.ok) << vt_error_message();
    const char **cols = nullptr;
    int n = vt_eval_columns(&ca.c, &cols);
    ASSERT_EQ(n, 5);
    EXPECT_STREQ(cols[0], "step");
    EXPECT_STREQ(cols[3], "reward/color_mean");
    EXPECT_STREQ(cols[4], "reward/color_std");
    free(cols);

    ASSERT_VT_OK(RunTrainer(&ca.c));
    std::string h5 = a + "/rewards.h5";
    EXPECT_EQ(H5Column(h5, "/eval/step"), (std::vector<double>{1, 2, 3}));
    auto m = H5Column(h5, "/eval/reward_mean"), sd = H5Column(h5, "/eval/reward_std");
    auto cm = H5Column(h5, "/eval/reward/color_mean");
    ASSERT_EQ(m.size(), 3u);
    ASSERT_EQ(sd.size(), 3u);
    for (int i = 0; i < 3; i++) {
        EXPECT_TRUE(m[i] > 0 && m[i] < 1) << m[i];
        EXPECT_GT(sd[i], 0.0);       // two different prompts
        EXPECT_DOUBLE_EQ(cm[i], m[i]);  // one module of weight 1
    }
    // sample frames of the decoded frame (decode_frames 1) of every eval prompt
    media::Png png;
    ASSERT_EQ(media::DecodePng(media::ReadFile(a + "/samples/step-000003/1/frame-001.png"), &png), "");
    EXPECT_EQ(png.w, 32);
    EXPECT_EQ(media::ReadFile(a + "/samples/step-000002/0/prompt.txt").size(), std::string("a cat on a sofa\n").size());

    // 3 steps, then resume from the state of step 2: the evaluation of step 3 is redone and
    // every row equals the uninterrupted run's (the eval RNG is not the training RNG)
    ASSERT_VT_OK(RunTrainer(&cb.c, nullptr, 3));
    EXPECT_EQ(H5Column(b + "/rewards.h5", "/eval/step").size(), 3u);
    ASSERT_EQ(std::remove((b + "/state-000003.safetensors").c_str()), 0);
    ASSERT_VT_OK(RunTrainer(&cb.c, "auto"));
    EXPECT_EQ(H5Column(b + "/rewards.h5", "/eval/step"), (std::vector<double>{1, 2, 3}));
    EXPECT_EQ(H5Column(b + "/rewards.h5", "/eval/reward_mean"), m);
    EXPECT_EQ(H5Column(b + "/rewards.h5", "/eval/reward_std"), sd);
}

TEST(TrainEval, NoEvalPromptsMeansNoEvaluation) {
    std::string dir = TempDir() + "/noeval";
    Cfg c(dir, {"data.eval_prompts=[]", "optim.steps=1"});
    ASSERT_TRUE(c.ok) << vt_error_message();
    ASSERT_VT_OK(RunTrainer(&c.c));
    EXPECT_TRUE(H5Column(dir + "/rewards.h5", "/eval/step").empty());
    struct stat st;
    EXPECT_NE(stat((dir + "/samples").c_str(), &st), 0);
}

}  // namespace
