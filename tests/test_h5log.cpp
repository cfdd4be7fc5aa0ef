// test_h5log.cpp — rewards.h5: rows land in extendible datasets, are readable after every
// append (flushed), survive a resume that truncates to the steps already done, and an
// unwritable directory is a clear error.
#include "train_testutil.h"
#include "train/h5log.h"
#include <cstring>

TEST(H5Log, AppendFlushResume) {
    std::string path = TempDir() + "/rewards.h5";
    const char *cols[] = {"step", "loss", "reward/color_mean"};
    const char *ecols[] = {"step", "reward_mean"};
    vt_h5log *l = vt_h5log_open(path.c_str(), cols, 3, ecols, 2, "seed: 1\n", 0, 0);
    ASSERT_NE(l, nullptr) << vt_error_message();
    for (int i = 0; i < 5; i++) {
        double row[3] = {(double)i, 1.0 / (i + 1), 0.1 * i};
        ASSERT_VT_OK(vt_h5log_append(l, 0, row));
        // flushed: another reader sees the row already
        EXPECT_EQ(H5Column(path, "/train/loss").size(), (size_t)i + 1);
    }
    double erow[2] = {4, 0.5};
    ASSERT_VT_OK(vt_h5log_append(l, 1, erow));
    vt_h5log_close(l);
    auto loss = H5Column(path, "/train/loss");
    ASSERT_EQ(loss.size(), 5u);
    EXPECT_DOUBLE_EQ(loss[3], 0.25);
    EXPECT_EQ(H5Column(path, "/train/reward/color_mean").size(), 5u);
    // resume from step 3: rows 3, 4 are dropped and rewritten
    l = vt_h5log_open(path.c_str(), cols, 3, ecols, 2, "seed: 1\n", 1, 3);
    ASSERT_NE(l, nullptr) << vt_error_message();
    double row[3] = {3, 42, 0};
    ASSERT_VT_OK(vt_h5log_append(l, 0, row));
    vt_h5log_close(l);
    loss = H5Column(path, "/train/loss");
    ASSERT_EQ(loss.size(), 4u);
    EXPECT_DOUBLE_EQ(loss[3], 42.0);
    EXPECT_EQ(H5Column(path, "/eval/reward_mean").size(), 1u);
}

TEST(H5Log, UnwritableDirectoryIsAClearError) {
    const char *cols[] = {"step"};
    vt_h5log *l = vt_h5log_open("/nonexistent-dir/rewards.h5", cols, 1, cols, 1, nullptr, 0, 0);
    EXPECT_EQ(l, nullptr);
    EXPECT_NE(std::strstr(vt_error_message(), "/nonexistent-dir/rewards.h5"), nullptr) << vt_error_message();
}
