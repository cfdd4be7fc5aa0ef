// train_testutil.h — helpers of the training suites (test_trainer, test_train_eval,
// test_bench_memplan, test_sample, test_h5log, ...): a config from YAML plus `--set` strings,
// one trainer run, and a column of rewards.h5.
#pragma once
#include <string>
#include <vector>
#include "testutil.h"
#include "train/config.h"
#include "train/trainer.h"

// yaml (default: the embedded tiny CPU preset, named `name` in messages) with sets applied in
// order; ok is false, and vt_error_message() says why, when the load or a set fails.
struct TestConfig {
    vt_config c{};
    bool ok = false;
    explicit TestConfig(const std::vector<std::string> &sets, const char *yaml = vt_config_default_yaml,
                        const char *name = "tiny");
    ~TestConfig() { vt_config_free(&c); }
    TestConfig(const TestConfig &) = delete;
    TestConfig &operator=(const TestConfig &) = delete;
};

// base followed by extra (a suite's fixed sets, then a case's own).
std::vector<std::string> Concat(std::vector<std::string> base, const std::vector<std::string> &extra);

// Creates a trainer for c (options: resume, stop_at, max_bad_steps; 0 keeps the config's),
// runs it and frees it; *st gets its stats.
vt_err RunTrainer(const vt_config *c, const char *resume = nullptr, int stop_at = 0, vt_trainer_stats *st = nullptr,
                  int max_bad_steps = 0);

// The dataset at path ("/train/loss", "/eval/step", ...) of an HDF5 file as doubles; empty when
// the file or the dataset is absent.
std::vector<double> H5Column(const std::string &h5, const std::string &path);
