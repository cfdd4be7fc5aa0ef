// test_config.cpp — the YAML config loader: defaults, the sample configs, --set overrides,
// every error class with its file:line:column and field path, dump/hash, and garbage.
#include <gtest/gtest.h>
#include <dirent.h>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>
#include "train/config.h"

namespace {

std::string SourcePath(const std::string &rel) { return std::string(VADER_SOURCE_DIR) + "/" + rel; }

std::string ReadFile(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// RAII config: starts as the defaults.
struct Cfg {
    vt_config c;
    Cfg() { EXPECT_EQ(vt_config_defaults(&c), VT_OK); }
    ~Cfg() { vt_config_free(&c); }
    vt_err Load(const std::string &yaml, const char *name = "test.yaml") {
        vt_config_free(&c);
        return vt_config_load_string(&c, yaml.c_str(), name);
    }
};

// Loads yaml, expects failure with code and every needle in the message.
void ExpectLoadError(const std::string &yaml, vt_err code, std::vector<std::string> needles) {
    Cfg cfg;
    vt_err e = cfg.Load(yaml, "configs/x.yaml");
    ASSERT_NE(e, VT_OK) << "loaded:\n" << yaml;
    EXPECT_EQ(e, code) << vt_error_message();
    for (auto &n : needles) EXPECT_NE(strstr(vt_error_message(), n.c_str()), nullptr) << "message: " << vt_error_message() << "\nwanted: " << n;
}

// A minimal valid config on top of which single fields are varied.
const char *kBase =
    "model:\n"
    "  random_weights: true\n"
    "  height: 64\n"
    "  width: 64\n"
    "  frames: 4\n"
    "reward:\n"
    "  - name: color\n"
    "data:\n"
    "  prompts: [a cat]\n";

}  // namespace

TEST(Config, Defaults) {
    Cfg cfg;
    vt_config &c = cfg.c;
    EXPECT_EQ(c.model.height, 320);
    EXPECT_EQ(c.model.width, 512);
    EXPECT_EQ(c.model.frames, 12);
    EXPECT_EQ(c.model.fps, 24);
    EXPECT_FALSE(c.model.random_weights);
    EXPECT_EQ(c.model.unet, nullptr);
    EXPECT_EQ(c.sampler.steps, 25);
    EXPECT_DOUBLE_EQ(c.sampler.eta, 1.0);
    EXPECT_DOUBLE_EQ(c.sampler.guidance_scale, 12.0);
    EXPECT_EQ(c.sampler.backprop_steps, 1);
    EXPECT_EQ(c.sampler.backprop_mode, VT_CFG_BACKPROP_LAST);
    EXPECT_EQ(c.lora.rank, 16);
    EXPECT_DOUBLE_EQ(c.lora.alpha, 8.0);
    EXPECT_DOUBLE_EQ(c.lora.dropout, 0.01);
    ASSERT_EQ(c.lora.n_targets, 3);
    EXPECT_STREQ(c.lora.targets[0], "to_q");
    EXPECT_STREQ(c.lora.targets[1], "to_k");
    EXPECT_STREQ(c.lora.targets[2], "to_v");
    EXPECT_EQ(c.reward.n_modules, 0);
    EXPECT_DOUBLE_EQ(c.optim.lr, 2e-4);
    EXPECT_DOUBLE_EQ(c.optim.beta1, 0.9);
    EXPECT_DOUBLE_EQ(c.optim.beta2, 0.999);
    EXPECT_DOUBLE_EQ(c.optim.weight_decay, 1e-2);
    EXPECT_DOUBLE_EQ(c.optim.eps, 1e-8);
    EXPECT_DOUBLE_EQ(c.optim.grad_clip, 1.0);
    EXPECT_EQ(c.optim.accumulation, 1);
    EXPECT_EQ(c.optim.schedule, VT_CFG_SCHED_CONSTANT);
    EXPECT_TRUE(c.memory.checkpointing);
    EXPECT_EQ(c.memory.decode_frames, VT_CFG_DECODE_RANDOM);
    EXPECT_FALSE(c.memory.offload);
    EXPECT_EQ(c.data.batch_size, 1);
    EXPECT_EQ(c.data.global_batch_size, 0);
    EXPECT_EQ(c.dist.backend, VT_CFG_DIST_AUTO);
    EXPECT_DOUBLE_EQ(c.dist.timeout, 300.0);
    EXPECT_STREQ(c.output.dir, "out");
    EXPECT_EQ(c.seed, 20230211u);
    EXPECT_EQ(c.device, VT_CFG_DEVICE_AUTO);
    // the defaults alone are not a run: no reward, no prompts, no checkpoints
    EXPECT_NE(vt_config_validate(&c), VT_OK);
}

TEST(Config, EmptyDocumentIsDefaults) {
    Cfg a, b;
    ASSERT_EQ(b.Load(""), VT_OK) << vt_error_message();
    EXPECT_EQ(vt_config_hash(&a.c), vt_config_hash(&b.c));
    ASSERT_EQ(b.Load("# only a comment\n"), VT_OK) << vt_error_message();
    EXPECT_EQ(vt_config_hash(&a.c), vt_config_hash(&b.c));
    ASSERT_EQ(b.Load("model:\n"), VT_OK) << vt_error_message();
    EXPECT_EQ(vt_config_hash(&a.c), vt_config_hash(&b.c));
}

TEST(Config, EverySampleConfigLoadsAndValidates) {
    std::string dir = SourcePath("configs");
    DIR *d = opendir(dir.c_str());
    ASSERT_NE(d, nullptr) << dir;
    int n = 0;
    while (struct dirent *e = readdir(d)) {
        std::string name = e->d_name;
        if (name.size() < 5 || name.substr(name.size() - 5) != ".yaml") continue;
        std::string path = dir + "/" + name;
        vt_config c;
        ASSERT_EQ(vt_config_load(&c, path.c_str()), VT_OK) << vt_error_message();
        EXPECT_EQ(vt_config_validate(&c), VT_OK) << path << ": " << vt_error_message();
        // the dump loads back to the same config
        char *dump = vt_config_dump(&c);
        ASSERT_NE(dump, nullptr);
        vt_config again;
        ASSERT_EQ(vt_config_load_string(&again, dump, "dump"), VT_OK) << vt_error_message() << "\n" << dump;
        EXPECT_EQ(vt_config_hash(&c), vt_config_hash(&again)) << path;
        EXPECT_EQ(vt_config_validate(&again), VT_OK) << vt_error_message();
        free(dump);
        vt_config_free(&again);
        vt_config_free(&c);
        n++;
    }
    closedir(d);
    EXPECT_GE(n, 5);
}

TEST(Config, HpsFollowsVader) {
    vt_config c;
    ASSERT_EQ(vt_config_load(&c, SourcePath("configs/hps.yaml").c_str()), VT_OK) << vt_error_message();
    EXPECT_EQ(c.model.height, 320);
    EXPECT_EQ(c.model.width, 512);
    EXPECT_EQ(c.model.frames, 12);
    EXPECT_EQ(c.sampler.steps, 25);
    EXPECT_DOUBLE_EQ(c.sampler.eta, 1.0);
    EXPECT_DOUBLE_EQ(c.sampler.guidance_scale, 12.0);
    EXPECT_EQ(c.sampler.backprop_steps, 1);
    EXPECT_DOUBLE_EQ(c.optim.lr, 2e-4);
    EXPECT_EQ(c.lora.rank, 16);
    ASSERT_EQ(c.reward.n_modules, 1);
    EXPECT_EQ(c.reward.modules[0].kind, VT_CFG_REWARD_HPSV21);
    EXPECT_EQ(c.memory.decode_frames, VT_CFG_DECODE_RANDOM);
    vt_config_free(&c);
}

TEST(Config, EmbeddedDefaultEqualsTinyCpuYaml) {
    std::string file = ReadFile(SourcePath("configs/tiny-cpu.yaml"));
    ASSERT_FALSE(file.empty());
    EXPECT_EQ(std::string(vt_config_default_yaml), file)
        << "train/config_default.c is out of date with configs/tiny-cpu.yaml";
    Cfg cfg;
    ASSERT_EQ(cfg.Load(vt_config_default_yaml, "<default>"), VT_OK) << vt_error_message();
    EXPECT_EQ(vt_config_validate(&cfg.c), VT_OK) << vt_error_message();
    EXPECT_TRUE(cfg.c.model.random_weights);
    EXPECT_EQ(cfg.c.device, VT_CFG_DEVICE_CPU);
    EXPECT_EQ(cfg.c.sampler.steps, 4);
    EXPECT_EQ(cfg.c.reward.modules[0].kind, VT_CFG_REWARD_COLOR);
    EXPECT_EQ(cfg.c.memory.decode_frames, VT_CFG_DECODE_INDEX);
    EXPECT_EQ(cfg.c.memory.decode_index, 2);
}

TEST(Config, TypedValues) {
    Cfg cfg;
    ASSERT_EQ(cfg.Load(std::string(kBase) +
                       "sampler: {steps: 50, eta: 0, backprop_steps: 3, backprop_mode: specific, backprop_step: 10}\n"
                       "optim:\n  lr: 1e-4\n  schedule: cosine\n  warmup_steps: 5\n"
                       "memory:\n  decode_frames: fml\n  offload: yes\n"
                       "seed: 18446744073709551615\n"
                       "device: cuda\n"
                       "dist: {backend: nccl}\n"),
              VT_OK)
        << vt_error_message();
    vt_config &c = cfg.c;
    EXPECT_EQ(c.sampler.steps, 50);
    EXPECT_DOUBLE_EQ(c.sampler.eta, 0.0);
    EXPECT_EQ(c.sampler.backprop_mode, VT_CFG_BACKPROP_SPECIFIC);
    EXPECT_EQ(c.sampler.backprop_step, 10);
    EXPECT_DOUBLE_EQ(c.optim.lr, 1e-4);
    EXPECT_EQ(c.optim.schedule, VT_CFG_SCHED_COSINE);
    EXPECT_EQ(c.memory.decode_frames, VT_CFG_DECODE_FML);
    EXPECT_TRUE(c.memory.offload);
    EXPECT_EQ(c.seed, UINT64_MAX);
    EXPECT_EQ(c.device, VT_CFG_DEVICE_CUDA);
    EXPECT_EQ(c.dist.backend, VT_CFG_DIST_NCCL);
    // offload parses but is refused with why (nothing to move off the device at the peak)
    EXPECT_EQ(vt_config_validate(&c), VT_ERR_CONFIG);
    EXPECT_NE(std::string(vt_error_message()).find("memory.offload"), std::string::npos) << vt_error_message();
    c.memory.offload = false;
    EXPECT_EQ(vt_config_validate(&c), VT_OK) << vt_error_message();
}

TEST(Config, RewardModules) {
    Cfg cfg;
    ASSERT_EQ(cfg.Load("reward:\n"
                       "  - name: object_removal\n"
                       "    weight: 2.5\n"
                       "    checkpoint: w/yolos.safetensors\n"
                       "    options:\n"
                       "      target: book\n"
                       "      threshold: 0.2\n"
                       "  - {name: aesthetic, options: {target: 10}}\n"),
              VT_OK)
        << vt_error_message();
    ASSERT_EQ(cfg.c.reward.n_modules, 2);
    const vt_config_reward &r = cfg.c.reward.modules[0];
    EXPECT_EQ(r.kind, VT_CFG_REWARD_OBJECT_REMOVAL);
    EXPECT_DOUBLE_EQ(r.weight, 2.5);
    EXPECT_STREQ(r.checkpoint, "w/yolos.safetensors");
    EXPECT_STREQ(vt_config_reward_option(&r, "target"), "book");
    EXPECT_STREQ(vt_config_reward_option(&r, "threshold"), "0.2");
    EXPECT_EQ(vt_config_reward_option(&r, "nope"), nullptr);
    EXPECT_EQ(cfg.c.reward.modules[1].kind, VT_CFG_REWARD_AESTHETIC);
    EXPECT_DOUBLE_EQ(cfg.c.reward.modules[1].weight, 1.0);
    EXPECT_STREQ(vt_config_reward_option(&cfg.c.reward.modules[1], "target"), "10");
}

TEST(Config, Overrides) {
    Cfg cfg;
    ASSERT_EQ(cfg.Load(kBase), VT_OK) << vt_error_message();
    vt_config &c = cfg.c;
    ASSERT_EQ(vt_config_set(&c, "optim.lr=1e-4"), VT_OK) << vt_error_message();
    EXPECT_DOUBLE_EQ(c.optim.lr, 1e-4);
    ASSERT_EQ(vt_config_set(&c, "sampler.backprop_mode=rand"), VT_OK) << vt_error_message();
    EXPECT_EQ(c.sampler.backprop_mode, VT_CFG_BACKPROP_RAND);
    ASSERT_EQ(vt_config_set(&c, " lora.targets = [to_q, to_out.0]"), VT_OK) << vt_error_message();
    ASSERT_EQ(c.lora.n_targets, 2);
    EXPECT_STREQ(c.lora.targets[1], "to_out.0");
    ASSERT_EQ(vt_config_set(&c, "model.unet=/x/unet.safetensors"), VT_OK) << vt_error_message();
    EXPECT_STREQ(c.model.unet, "/x/unet.safetensors");
    ASSERT_EQ(vt_config_set(&c, "model.unet="), VT_OK) << vt_error_message();
    EXPECT_EQ(c.model.unet, nullptr);
    ASSERT_EQ(vt_config_set(&c, "memory.decode_frames=-1"), VT_OK) << vt_error_message();
    EXPECT_EQ(c.memory.decode_frames, VT_CFG_DECODE_RANDOM);
    ASSERT_EQ(vt_config_set(&c, "memory.decode_frames=3"), VT_OK) << vt_error_message();
    EXPECT_EQ(c.memory.decode_frames, VT_CFG_DECODE_INDEX);
    EXPECT_EQ(c.memory.decode_index, 3);
    ASSERT_EQ(vt_config_set(&c, "seed=42"), VT_OK) << vt_error_message();
    EXPECT_EQ(c.seed, 42u);
    ASSERT_EQ(vt_config_set(&c, "optim={accumulation: 4, steps: 7}"), VT_OK) << vt_error_message();
    EXPECT_EQ(c.optim.accumulation, 4);
    EXPECT_EQ(c.optim.steps, 7);
    EXPECT_DOUBLE_EQ(c.optim.lr, 1e-4);  // a section override merges
    ASSERT_EQ(vt_config_set(&c, "dist={backend: mpi, timeout: 2.5}"), VT_OK) << vt_error_message();
    EXPECT_EQ(c.dist.backend, VT_CFG_DIST_MPI);
    EXPECT_DOUBLE_EQ(c.dist.timeout, 2.5);
    ASSERT_EQ(vt_config_set(&c, "data.global_batch_size=16"), VT_OK) << vt_error_message();
    EXPECT_EQ(c.data.global_batch_size, 16);
    // reward modules: a field, an option, appending, replacing the list
    ASSERT_EQ(vt_config_set(&c, "reward.0.weight=0.5"), VT_OK) << vt_error_message();
    EXPECT_DOUBLE_EQ(c.reward.modules[0].weight, 0.5);
    ASSERT_EQ(vt_config_set(&c, "reward.0.options.scale=2"), VT_OK) << vt_error_message();
    EXPECT_STREQ(vt_config_reward_option(&c.reward.modules[0], "scale"), "2");
    ASSERT_EQ(vt_config_set(&c, "reward.1={name: hps, weight: 2}"), VT_OK) << vt_error_message();
    ASSERT_EQ(c.reward.n_modules, 2);
    EXPECT_EQ(c.reward.modules[1].kind, VT_CFG_REWARD_HPS);
    ASSERT_EQ(vt_config_set(&c, "reward.2.weight=3"), VT_OK) << vt_error_message();
    ASSERT_EQ(c.reward.n_modules, 3);
    ASSERT_NE(vt_config_validate(&c), VT_OK);  // module 2 has no name
    EXPECT_NE(strstr(vt_error_message(), "reward.2.name: not set"), nullptr) << vt_error_message();
    ASSERT_EQ(vt_config_set(&c, "reward.2.name=pickscore"), VT_OK) << vt_error_message();
    EXPECT_EQ(vt_config_validate(&c), VT_OK) << vt_error_message();
    ASSERT_EQ(vt_config_set(&c, "reward=[{name: aesthetic}]"), VT_OK) << vt_error_message();
    EXPECT_EQ(c.reward.n_modules, 1);
    EXPECT_EQ(c.reward.modules[0].kind, VT_CFG_REWARD_AESTHETIC);
    EXPECT_EQ(vt_config_validate(&c), VT_OK) << vt_error_message();
}

TEST(Config, OverrideErrorsLeaveConfigUnchanged) {
    Cfg cfg;
    ASSERT_EQ(cfg.Load(kBase), VT_OK) << vt_error_message();
    uint64_t h = vt_config_hash(&cfg.c);
    struct Case {
        const char *set;
        const char *needle;
    } cases[] = {
        {"optim.lr=fast", "--set optim.lr=fast: optim.lr: expected a number, got \"fast\""},
        {"sampler.backprop_mode=first", "sampler.backprop_mode: unknown value \"first\" (valid: last, rand, specific)"},
        {"model.frames=-3", "model.frames: expected an integer in [1, 4096], got \"-3\""},
        {"optim.bogus=1", "optim.bogus: unknown key (valid keys: lr, beta1"},
        {"bogus=1", "bogus: unknown key"},
        {"optim.lr", "expected PATH=VALUE"},
        {"=3", "empty path"},
        {"reward.5.weight=1", "reward.5.weight: no reward module 5 (there are 1; index 1 appends one)"},
        {"reward.0.bogus=1", "reward.0.bogus: unknown key"},
        {"reward.x=1", "expected reward.INDEX"},
        {"lora.targets=[a, [b]]", "lora.targets.1: expected a string, got a list"},
        {"optim.lr=[1", "malformed YAML"},
        {"memory.decode_frames=some", "memory.decode_frames: expected -1, fml, alt, all or a frame index >= 0"},
        {"reward.0.options.k=[1]", "expected a scalar option value"},
        {"optim={lr: 1, lr: 2}", "optim.lr: duplicate key"},
    };
    for (auto &k : cases) {
        EXPECT_NE(vt_config_set(&cfg.c, k.set), VT_OK) << k.set;
        EXPECT_NE(strstr(vt_error_message(), k.needle), nullptr) << k.set << " -> " << vt_error_message();
        EXPECT_EQ(vt_config_hash(&cfg.c), h) << k.set;
    }
}

TEST(Config, WrongTypes) {
    ExpectLoadError("optim:\n  lr: fast\n", VT_ERR_CONFIG, {"configs/x.yaml:2:7: optim.lr: expected a number, got \"fast\""});
    ExpectLoadError("model:\n  height: \"64\"\n", VT_ERR_CONFIG, {"configs/x.yaml:2:11: model.height: expected an integer"});
    ExpectLoadError("model:\n  height: 6.5\n", VT_ERR_CONFIG, {"configs/x.yaml:2:11: model.height: expected an integer in [8, 16384], got \"6.5\""});
    ExpectLoadError("model:\n  frames: -4\n", VT_ERR_CONFIG, {"configs/x.yaml:2:11: model.frames: expected an integer in [1, 4096], got \"-4\""});
    ExpectLoadError("optim:\n  accumulation: -1\n", VT_ERR_CONFIG, {"2:17: optim.accumulation: expected an integer >= 1"});
    ExpectLoadError("dist:\n  timeout: -5\n", VT_ERR_CONFIG, {"2:12: dist.timeout"});
    ExpectLoadError("data:\n  global_batch_size: -1\n", VT_ERR_CONFIG, {"2:22: data.global_batch_size"});
    ExpectLoadError("optim:\n  warmup_steps: -1\n", VT_ERR_CONFIG, {"2:17: optim.warmup_steps: expected an integer >= 0"});
    ExpectLoadError("optim:\n  lr: -1e-4\n", VT_ERR_CONFIG, {"2:7: optim.lr: expected a number > 0, got \"-1e-4\""});
    ExpectLoadError("optim:\n  beta2: 1\n", VT_ERR_CONFIG, {"2:10: optim.beta2: expected a number in [0, 1), got \"1\""});
    ExpectLoadError("optim:\n  lr: .inf\n", VT_ERR_CONFIG, {"optim.lr: expected a number"});
    ExpectLoadError("optim:\n  lr: nan\n", VT_ERR_CONFIG, {"optim.lr: expected a number"});
    ExpectLoadError("optim:\n  lr: 1e999\n", VT_ERR_CONFIG, {"optim.lr: expected a number"});
    ExpectLoadError("model:\n  steps: 99999999999999999999\n", VT_ERR_KEY, {"model.steps: unknown key"});
    ExpectLoadError("sampler:\n  steps: 99999999999999999999\n", VT_ERR_CONFIG, {"2:10: sampler.steps: expected an integer in [1, 1000]"});
    ExpectLoadError("model:\n  random_weights: maybe\n", VT_ERR_CONFIG, {"2:19: model.random_weights: expected true or false, got \"maybe\""});
    ExpectLoadError("model:\n  unet: [a, b]\n", VT_ERR_CONFIG, {"2:9: model.unet: expected a string, got a list"});
    ExpectLoadError("model: 3\n", VT_ERR_CONFIG, {"configs/x.yaml:1:8: model: expected a mapping, got \"3\""});
    ExpectLoadError("lora:\n  targets: to_q\n", VT_ERR_CONFIG, {"2:12: lora.targets: expected a list of strings, got \"to_q\""});
    ExpectLoadError("lora:\n  targets: [to_q, {a: 1}]\n", VT_ERR_CONFIG, {"2:19: lora.targets.1: expected a string, got a mapping"});
    ExpectLoadError("reward: {name: hps}\n", VT_ERR_CONFIG, {"1:9: reward: expected a list of reward modules, got a mapping"});
    ExpectLoadError("reward:\n  - hps\n", VT_ERR_CONFIG, {"2:5: reward.0: expected a mapping"});
    ExpectLoadError("reward:\n  - weight: 2\n", VT_ERR_CONFIG, {"2:5: reward.0: missing name (one of aesthetic, hps"});
    ExpectLoadError("reward:\n  - name: hps\n    weight: 0\n", VT_ERR_CONFIG, {"3:13: reward.0.weight: expected a number > 0, got \"0\""});
    ExpectLoadError("reward:\n  - name: hps\n    options: [1]\n", VT_ERR_CONFIG, {"3:14: reward.0.options: expected a mapping of options, got a list"});
    ExpectLoadError("reward:\n  - name: hps\n    options: {a: [1]}\n", VT_ERR_CONFIG, {"3:18: reward.0.options.a: expected a scalar option value, got a list"});
    ExpectLoadError("seed: -1\n", VT_ERR_CONFIG, {"1:7: seed: expected an integer in [0, 18446744073709551615], got \"-1\""});
    ExpectLoadError("memory:\n  decode_frames: -2\n", VT_ERR_CONFIG, {"2:18: memory.decode_frames: expected -1, fml, alt, all or a frame index >= 0, got \"-2\""});
    ExpectLoadError("- a\n- b\n", VT_ERR_CONFIG, {"configs/x.yaml:1:1: expected a mapping at the top level, got a list"});
    ExpectLoadError("just a string\n", VT_ERR_CONFIG, {"configs/x.yaml:1:1: expected a mapping at the top level"});
}

TEST(Config, UnknownEnumValueListsValidOnes) {
    ExpectLoadError("sampler:\n  backprop_mode: first\n", VT_ERR_CONFIG,
                    {"configs/x.yaml:2:18: sampler.backprop_mode: unknown value \"first\" (valid: last, rand, specific)"});
    ExpectLoadError("reward:\n  - name: clip\n", VT_ERR_CONFIG,
                    {"2:11: reward.0.name: unknown value \"clip\" (valid: aesthetic, hps, hpsv21, pickscore, object_removal, action, temporal, color)"});
    ExpectLoadError("device: tpu\n", VT_ERR_CONFIG, {"1:9: device: unknown value \"tpu\" (valid: auto, cpu, cuda)"});
    ExpectLoadError("dist:\n  backend: gloo\n", VT_ERR_CONFIG, {"2:12: dist.backend: unknown value \"gloo\" (valid: auto, nccl, mpi, none)"});
    ExpectLoadError("optim:\n  schedule: linear\n", VT_ERR_CONFIG, {"optim.schedule: unknown value \"linear\" (valid: constant, warmup, cosine)"});
}

TEST(Config, UnknownKeys) {
    ExpectLoadError("model:\n  height: 64\n  heigth: 64\n", VT_ERR_KEY,
                    {"configs/x.yaml:3:3: model.heigth: unknown key (valid keys: unet, vae, text, random_weights"});
    ExpectLoadError("modle:\n  height: 64\n", VT_ERR_KEY,
                    {"configs/x.yaml:1:1: modle: unknown key (valid keys: model, sampler, lora, reward, optim, memory, data, dist, output, seed, device)"});
    ExpectLoadError("reward:\n  - name: hps\n    wieght: 2\n", VT_ERR_KEY,
                    {"configs/x.yaml:3:5: reward.0.wieght: unknown key (valid keys: name, weight, checkpoint, options)"});
    ExpectLoadError("? [a]\n: 1\n", VT_ERR_KEY, {"configs/x.yaml:1:3: expected a key name, got a list"});
}

TEST(Config, DuplicateKeys) {
    ExpectLoadError("optim:\n  lr: 1e-4\n  steps: 3\n  lr: 2e-4\n", VT_ERR_KEY,
                    {"configs/x.yaml:4:3: optim.lr: duplicate key (first given at line 2)"});
    ExpectLoadError("seed: 1\nmodel: {}\nseed: 2\n", VT_ERR_KEY, {"configs/x.yaml:3:1: seed: duplicate key (first given at line 1)"});
    ExpectLoadError("reward:\n  - name: hps\n    options: {a: 1, a: 2}\n", VT_ERR_KEY,
                    {"3:21: reward.0.options.a: duplicate key (first given at line 3)"});
}

TEST(Config, TabsInIndentation) {
    ExpectLoadError("model:\n\theight: 64\n", VT_ERR_FORMAT, {"configs/x.yaml:2:1: a tab character in indentation"});
    ExpectLoadError("model:\n  \theight: 64\n", VT_ERR_FORMAT, {"configs/x.yaml:2:3: a tab character in indentation"});
    // tabs elsewhere are fine
    Cfg cfg;
    EXPECT_EQ(cfg.Load("model:\n  height:\t64\n"), VT_OK) << vt_error_message();
    EXPECT_EQ(cfg.c.model.height, 64);
}

TEST(Config, MalformedYaml) {
    ExpectLoadError("model:\n  height: [64\n", VT_ERR_FORMAT, {"configs/x.yaml:3:1: malformed YAML"});
    ExpectLoadError("model:\n  height: 64\n width: 3\n", VT_ERR_FORMAT, {"configs/x.yaml:3:", "malformed YAML"});
    ExpectLoadError("a: \"unterminated\n", VT_ERR_FORMAT, {"configs/x.yaml:", "malformed YAML"});
    ExpectLoadError("seed: *nope\n", VT_ERR_FORMAT, {"configs/x.yaml:1:7: malformed YAML"});
    ExpectLoadError("seed: 1\n---\nseed: 2\n", VT_ERR_FORMAT, {"configs/x.yaml:3:1: more than one YAML document"});
}

TEST(Config, Validate) {
    struct Case {
        const char *extra;
        const char *needle;
    } cases[] = {
        {"sampler: {steps: 4, backprop_steps: 5}\n", "sampler.backprop_steps: 5 is more than sampler.steps (4)"},
        {"sampler: {steps: 10, backprop_steps: 2, backprop_mode: specific, backprop_step: 9}\n", "sampler.backprop_step: 9 + sampler.backprop_steps (2)"},
        {"memory: {decode_frames: 4}\n", "memory.decode_frames: frame 4, but model.frames is 4"},
        {"optim: {schedule: warmup}\n", "optim.warmup_steps: schedule warmup needs warmup_steps >= 1"},
        {"optim: {schedule: cosine, steps: 10, warmup_steps: 11}\n", "optim.warmup_steps: 11 is more than optim.steps (10)"},
        {"lora: {targets: []}\n", "lora.targets: empty"},
        {"dist: {backend: nccl}\ndevice: cpu\n", "dist.backend: nccl needs device cuda"},
        {"output: {dir: null}\n", "output.dir: not set"},
    };
    for (auto &k : cases) {
        Cfg cfg;
        ASSERT_EQ(cfg.Load(std::string(kBase) + k.extra), VT_OK) << k.extra << vt_error_message();
        EXPECT_EQ(vt_config_validate(&cfg.c), VT_ERR_CONFIG) << k.extra;
        EXPECT_NE(strstr(vt_error_message(), k.needle), nullptr) << k.extra << " -> " << vt_error_message();
    }
    Cfg cfg;
    ASSERT_EQ(cfg.Load(kBase), VT_OK) << vt_error_message();
    EXPECT_EQ(vt_config_validate(&cfg.c), VT_OK) << vt_error_message();
    ASSERT_EQ(vt_config_set(&cfg.c, "model.random_weights=false"), VT_OK);
    EXPECT_NE(vt_config_validate(&cfg.c), VT_OK);
    EXPECT_NE(strstr(vt_error_message(), "model.unet: not set"), nullptr) << vt_error_message();
    ASSERT_EQ(vt_config_set(&cfg.c, "model.random_weights=true"), VT_OK);
    ASSERT_EQ(vt_config_set(&cfg.c, "data.prompt_file=p.txt"), VT_OK);
    EXPECT_NE(vt_config_validate(&cfg.c), VT_OK);
    EXPECT_NE(strstr(vt_error_message(), "data: both"), nullptr) << vt_error_message();
    ASSERT_EQ(vt_config_set(&cfg.c, "data.prompts=[]"), VT_OK);
    EXPECT_EQ(vt_config_validate(&cfg.c), VT_OK) << vt_error_message();
    ASSERT_EQ(vt_config_set(&cfg.c, "reward=[{name: object_removal}]"), VT_OK);
    EXPECT_NE(vt_config_validate(&cfg.c), VT_OK);
    EXPECT_NE(strstr(vt_error_message(), "reward.0.options.target"), nullptr) << vt_error_message();
    ASSERT_EQ(vt_config_set(&cfg.c, "reward=[{name: temporal}]"), VT_OK);
    EXPECT_NE(vt_config_validate(&cfg.c), VT_OK);
    EXPECT_NE(strstr(vt_error_message(), "memory.decode_frames: reward temporal scores a clip"), nullptr) << vt_error_message();
    ASSERT_EQ(vt_config_set(&cfg.c, "memory.decode_frames=alt"), VT_OK);
    EXPECT_EQ(vt_config_validate(&cfg.c), VT_OK) << vt_error_message();
    ASSERT_EQ(vt_config_set(&cfg.c, "reward="), VT_OK);
    EXPECT_NE(vt_config_validate(&cfg.c), VT_OK);
    EXPECT_NE(strstr(vt_error_message(), "reward: no reward modules"), nullptr) << vt_error_message();
    // a struct changed by hand is range-checked too
    Cfg hand;
    ASSERT_EQ(hand.Load(kBase), VT_OK);
    hand.c.lora.rank = 0;
    EXPECT_NE(vt_config_validate(&hand.c), VT_OK);
    EXPECT_NE(strstr(vt_error_message(), "lora.rank: expected an integer in [1, 65536], got 0"), nullptr) << vt_error_message();
    hand.c.lora.rank = 4;
    hand.c.optim.lr = 0;
    EXPECT_NE(vt_config_validate(&hand.c), VT_OK);
    EXPECT_NE(strstr(vt_error_message(), "optim.lr: expected a number > 0"), nullptr) << vt_error_message();
}

TEST(Config, FileErrors) {
    vt_config c;
    EXPECT_EQ(vt_config_load(&c, "/nonexistent/dir/x.yaml"), VT_ERR_IO);
    EXPECT_NE(strstr(vt_error_message(), "/nonexistent/dir/x.yaml"), nullptr);
    vt_config_free(&c);
    std::string path = ::testing::TempDir() + "vader_config_test.yaml";
    {
        std::ofstream f(path);
        f << "model:\n  random_weights: true\n\noptim:\n    lr: fast\n";
    }
    EXPECT_EQ(vt_config_load(&c, path.c_str()), VT_ERR_CONFIG);
    std::string want = path + ":5:9: optim.lr: expected a number, got \"fast\"";
    EXPECT_NE(strstr(vt_error_message(), want.c_str()), nullptr) << vt_error_message();
    vt_config_free(&c);
    vt_config_free(&c);  // twice is fine
    remove(path.c_str());
}

TEST(Config, DumpAndHash) {
    Cfg a, b;
    ASSERT_EQ(a.Load(std::string(kBase) + "output: {dir: \"a \\\"dir\\\"\\n\"}\n"), VT_OK) << vt_error_message();
    char *d = vt_config_dump(&a.c);
    ASSERT_NE(d, nullptr);
    EXPECT_NE(strstr(d, "sampler:\n  steps: 25\n"), nullptr) << d;
    EXPECT_NE(strstr(d, "reward:\n  - name: color\n    weight: 1\n"), nullptr) << d;
    EXPECT_NE(strstr(d, "  lr: 0.0002\n"), nullptr) << d;
    ASSERT_EQ(b.Load(d, "dump"), VT_OK) << vt_error_message() << d;
    EXPECT_STREQ(b.c.output.dir, "a \"dir\"\n");
    char *d2 = vt_config_dump(&b.c);
    EXPECT_STREQ(d, d2);
    free(d);
    free(d2);
    EXPECT_EQ(vt_config_hash(&a.c), vt_config_hash(&b.c));
    ASSERT_EQ(vt_config_set(&b.c, "optim.lr=3e-4"), VT_OK);
    EXPECT_NE(vt_config_hash(&a.c), vt_config_hash(&b.c));
    // copies are deep and equal
    vt_config c;
    ASSERT_EQ(vt_config_copy(&c, &a.c), VT_OK);
    EXPECT_EQ(vt_config_hash(&a.c), vt_config_hash(&c));
    EXPECT_NE(c.reward.modules, a.c.reward.modules);
    vt_config_free(&c);
}

TEST(Config, Unicode) {
    Cfg a;
    ASSERT_EQ(a.Load(std::string(kBase) + "data:\n  eval_prompts: [\"quote \\\" and \\\\ and\\ttab\", 'x: y', \"ünïcödé\"]\n"), VT_ERR_KEY)
        << "data given twice";
    ASSERT_EQ(a.Load("data:\n  prompts: [\"quote \\\" and \\\\ and\\ttab\", 'x: y', \"ünïcödé\"]\n"), VT_OK) << vt_error_message();
    ASSERT_EQ(a.c.data.n_prompts, 3);
    EXPECT_STREQ(a.c.data.prompts[0], "quote \" and \\ and\ttab");
    EXPECT_STREQ(a.c.data.prompts[1], "x: y");
    EXPECT_STREQ(a.c.data.prompts[2], "ünïcödé");
    char *d = vt_config_dump(&a.c);
    Cfg b;
    ASSERT_EQ(b.Load(d, "dump"), VT_OK) << vt_error_message() << d;
    EXPECT_EQ(vt_config_hash(&a.c), vt_config_hash(&b.c));
    free(d);
}

TEST(Config, NoCrashOnGarbage) {
    std::mt19937 rng(1234);
    const std::string alphabet = "abcdefghijklmnopqrstuvwxyz:-[]{},&*!|>'\"#%@`?.0123456789 \t\n\\~";
    const std::vector<std::string> seeds = {std::string(vt_config_default_yaml), kBase, "reward:\n  - {name: hps}\n"};
    for (int iter = 0; iter < 3000; iter++) {
        std::string s;
        if (iter % 2 == 0) {
            int n = (int)(rng() % 200);
            for (int i = 0; i < n; i++) s += alphabet[rng() % alphabet.size()];
        } else {
            s = seeds[rng() % seeds.size()];
            int edits = 1 + (int)(rng() % 6);
            for (int k = 0; k < edits && !s.empty(); k++) {
                size_t pos = rng() % s.size();
                switch (rng() % 3) {
                case 0: s[pos] = alphabet[rng() % alphabet.size()]; break;
                case 1: s.erase(pos, 1 + rng() % 8); break;
                default: s.insert(pos, 1, alphabet[rng() % alphabet.size()]); break;
                }
            }
        }
        vt_config c;
        vt_err e = vt_config_load_string(&c, s.c_str(), "garbage");
        if (e == VT_OK) {
            vt_config_validate(&c);
            char *d = vt_config_dump(&c);
            ASSERT_NE(d, nullptr);
            vt_config c2;
            ASSERT_EQ(vt_config_load_string(&c2, d, "dump"), VT_OK) << vt_error_message() << "\n" << d;
            EXPECT_EQ(vt_config_hash(&c), vt_config_hash(&c2));
            vt_config_free(&c2);
            free(d);
        } else {
            EXPECT_GT(strlen(vt_error_message()), 0u);
        }
        vt_config_set(&c, s.c_str());
        vt_config_free(&c);
    }
    // odd inputs
    vt_config c;
    EXPECT_EQ(vt_config_load_string(&c, nullptr, "x"), VT_ERR_ARG);
    vt_config_free(&c);
    EXPECT_EQ(vt_config_load_string(&c, "\xff\xfe\xfd", "x"), VT_ERR_FORMAT);
    vt_config_free(&c);
    EXPECT_NE(vt_config_load_string(&c, "a: &x [*x]\n", "x"), VT_OK);
    vt_config_free(&c);
    EXPECT_NE(vt_config_load_string(&c, "lora: {targets: &x [*x]}\n", "x"), VT_OK);
    vt_config_free(&c);
    std::string deep(100000, '[');
    EXPECT_EQ(vt_config_load_string(&c, deep.c_str(), "x"), VT_ERR_FORMAT);
    EXPECT_NE(strstr(vt_error_message(), "x:1:65: lists / mappings nested more than 64 deep"), nullptr) << vt_error_message();
    vt_config_free(&c);
    std::string deep_quoted = "data: {prompts: [\"" + std::string(1000, '[') + "\", '{{{{'' # [[['], eval_prompts: [\"]]\"]}\n";
    EXPECT_EQ(vt_config_load_string(&c, deep_quoted.c_str(), "x"), VT_OK) << vt_error_message();
    EXPECT_EQ(c.data.n_prompts, 2);
    vt_config_free(&c);
    EXPECT_EQ(vt_config_set(nullptr, "a=1"), VT_ERR_ARG);
    EXPECT_EQ(vt_config_validate(nullptr), VT_ERR_ARG);
    EXPECT_EQ(vt_config_dump(nullptr), nullptr);
}
