// test_object_removal.cpp — the YOLOS model (core/models/yolos.h) and the object_removal reward
// (rewards/object_removal.c): full-size hustvl/yolos-base and yolos-tiny built from
// transformers' state dicts (tests/manifests, every key used once), the older mid-position key,
// target-class resolution and its error, frame aggregation over videos, bad frame sizes, and a
// 2-step tiny CPU training run with a random YOLOS (tests/object_removal_tiny.yaml). The
// numerics against transformers are the vader-fixture cases object_removal_tiny and
// object_removal_vader_tiny (tests/CMakeLists.txt).
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include "core/models/yolos.h"
#include "rewards/reward.h"
#include "testutil.h"
#include "train/config.h"
#include "train/trainer.h"

namespace {

std::string TestsPath(const std::string &rel) {
    std::string f = __FILE__;
    return f.substr(0, f.find_last_of('/')) + "/" + rel;
}

using Pairs = std::vector<std::pair<std::string, std::string>>;

struct Kv {
    Pairs kv;
    std::vector<vt_reward_kv> raw;
    explicit Kv(Pairs p) : kv(std::move(p)) {}
    vt_reward_options opts() {
        raw.clear();
        for (auto &p : kv) raw.push_back({p.first.c_str(), p.second.c_str()});
        vt_reward_options o = {};
        o.kv = raw.data();
        o.n_kv = (int)raw.size();
        return o;
    }
};

vt_reward *RandomModule(Pairs p) {
    Kv kv(std::move(p));
    kv.kv.push_back({"random_weights", "true"});
    vt_reward_options o = kv.opts();
    return vt_reward_create("object_removal", &o);
}

void BuildFromManifest(const char *file, vt_yolos_config cfg, int mid, int64_t heads) {
    vt_weights *w = vt_weights_from_manifest(TestsPath(std::string("manifests/") + file).c_str(), 0, 0);
    ASSERT_VT(w);
    vt_yolos *m = vt_yolos_build(w, "", &cfg);
    ASSERT_VT(m);
    EXPECT_EQ(m->encoder.layers, 12);
    EXPECT_EQ(m->encoder.heads, heads);
    EXPECT_EQ(m->mid_position_embeddings != nullptr, mid != 0);
    EXPECT_EQ(m->n_params, vt_weights_count_params(w, ""));  // each key taken once
    vt_yolos_free(m);
    vt_mem_trim(VT_CPU);
    EXPECT_EQ(vt_weights_finish(w, ""), VT_OK) << vt_error_message();
    vt_weights_free(w);
}

}  // namespace

TEST(ObjectRemoval, YolosBaseBuildsFromManifest) { BuildFromManifest("yolos_base.txt", vt_yolos_config_base(), 1, 12); }
TEST(ObjectRemoval, YolosTinyBuildsFromManifest) { BuildFromManifest("yolos_tiny.txt", vt_yolos_config_tiny(), 0, 3); }

// Without a config everything comes from the shapes: the released checkpoints' grids are 800
// pixels high (50 rows of 16); a table that fits no grid asks for the config.
TEST(ObjectRemoval, ConfigIsInferredFromTheWeights) {
    vt_weights *w = vt_weights_from_manifest(TestsPath("manifests/yolos_base.txt").c_str(), 0, 0);
    ASSERT_VT(w);
    vt_yolos *m = vt_yolos_build(w, "", nullptr);
    ASSERT_VT(m);
    vt_yolos_config want = vt_yolos_config_base();
    EXPECT_EQ(m->cfg.hidden_size, want.hidden_size);
    EXPECT_EQ(m->cfg.num_attention_heads, want.num_attention_heads);
    EXPECT_EQ(m->cfg.num_hidden_layers, 12);
    EXPECT_EQ(m->cfg.image_size[0] / 16, 50);
    EXPECT_EQ(m->cfg.image_size[1] / 16, 84);
    EXPECT_EQ(m->cfg.num_detection_tokens, 100);
    EXPECT_EQ(m->cfg.num_labels, 91);
    EXPECT_EQ(m->cfg.use_mid_position_embeddings, 1);
    vt_yolos_free(m);
    vt_mem_trim(VT_CPU);
    vt_weights_free(w);
    vt_weights *t = vt_weights_from_manifest(TestsPath("manifests/yolos_tiny.txt").c_str(), 0, 0);
    ASSERT_VT(t);
    m = vt_yolos_build(t, "", nullptr);
    ASSERT_VT(m);
    EXPECT_EQ(m->cfg.num_attention_heads, 3);
    EXPECT_EQ(m->cfg.image_size[1] / 16, 83);
    EXPECT_EQ(m->cfg.use_mid_position_embeddings, 0);
    vt_yolos_free(m);
    vt_weights_free(t);
    // a table of 7 patch rows (plus cls and 2 detection tokens) fits no grid
    std::string path = TempDir() + "/odd.txt";
    std::ofstream(path) << "vit.embeddings.patch_embeddings.projection.weight\t[8, 3, 4, 4]\tfloat32\n"
                        << "vit.embeddings.detection_tokens\t[1, 2, 8]\tfloat32\n"
                        << "vit.embeddings.position_embeddings\t[1, 10, 8]\tfloat32\n"
                        << "vit.encoder.layer.0.layernorm_before.weight\t[8]\tfloat32\n"
                        << "vit.encoder.layer.0.intermediate.dense.weight\t[16, 8]\tfloat32\n"
                        << "class_labels_classifier.layers.2.weight\t[5, 8]\tfloat32\n";
    vt_weights *o = vt_weights_from_manifest(path.c_str(), 0, 0);
    ASSERT_VT(o);
    EXPECT_EQ(vt_yolos_build(o, "", nullptr), nullptr);
    EXPECT_NE(std::string(vt_error_message()).find("give the config (image_size [height, width])"), std::string::npos)
        << vt_error_message();
    vt_weights_free(o);
}

// Checkpoints saved by older transformers name the mid table vit.encoder.mid_position_embeddings.
TEST(ObjectRemoval, OldMidPositionKeyIsRead) {
    std::ifstream in(TestsPath("manifests/yolos_base.txt"));
    std::stringstream s;
    s << in.rdbuf();
    std::string text = s.str();
    const std::string from = "vit.encoder.interpolation.mid_position_embeddings";
    size_t at = text.find(from);
    ASSERT_NE(at, std::string::npos);
    text.replace(at, from.size(), "vit.encoder.mid_position_embeddings");
    std::string path = TempDir() + "/yolos_base_old.txt";
    std::ofstream(path) << text;
    vt_weights *w = vt_weights_from_manifest(path.c_str(), 0, 0);
    ASSERT_VT(w);
    vt_yolos_config cfg = vt_yolos_config_base();
    cfg.use_mid_position_embeddings = -1;  // detected from the key
    vt_yolos *m = vt_yolos_build(w, "", &cfg);
    ASSERT_VT(m);
    EXPECT_NE(m->mid_position_embeddings, nullptr);
    vt_yolos_free(m);
    vt_mem_trim(VT_CPU);
    EXPECT_EQ(vt_weights_finish(w, ""), VT_OK) << vt_error_message();
    vt_weights_free(w);
}

TEST(ObjectRemoval, UnknownClassListsTheValidOnes) {
    EXPECT_EQ(RandomModule({{"target", "unicorn"}}), nullptr);
    std::string m = vt_error_message();
    for (const char *want : {"unknown target class \"unicorn\"", "person", "teddy bear", "toothbrush", "book"})
        EXPECT_NE(m.find(want), std::string::npos) << want << " not in: " << m;
    EXPECT_EQ(m.find("N/A"), std::string::npos) << m;
    EXPECT_EQ(RandomModule({{"target", "91"}}), nullptr);
    EXPECT_NE(std::string(vt_error_message()).find("outside [0, 91)"), std::string::npos) << vt_error_message();
    EXPECT_EQ(RandomModule({{"target", "dog"}, {"aggregation", "median"}}), nullptr);
    EXPECT_NE(std::string(vt_error_message()).find("valid: max, mean, vader"), std::string::npos);
    EXPECT_EQ(RandomModule({{"target", "dog"}, {"colour", "red"}}), nullptr);
    EXPECT_NE(std::string(vt_error_message()).find("unknown option \"colour\""), std::string::npos);
    // no checkpoint and no random weights
    Kv kv(Pairs{{"target", "dog"}});
    vt_reward_options o = kv.opts();
    EXPECT_EQ(vt_reward_create("object_removal", &o), nullptr);
    EXPECT_NE(std::string(vt_error_message()).find("needs a checkpoint"), std::string::npos) << vt_error_message();
    // names are case-insensitive, '_' stands for ' ', ids work
    for (const char *t : {"Teddy_Bear", "88", "teddy bear"}) {
        vt_reward *r = RandomModule({{"target", t}});
        EXPECT_NE(r, nullptr) << t << ": " << vt_error_message();
        vt_reward_free(r);
    }
}

// Videos: frames "max" scores each video by its worst frame, "mean" by the average; both equal
// the per-frame scores of the same images; gradients reach the frames.
TEST(ObjectRemoval, VideoFrameAggregation) {
    const int64_t B = 2, T = 3, H = 40, W = 56;
    vt_tensor *video = RandU({B, 3, T, H, W}, 5, -1.1f, 1.1f);
    const int perm[5] = {0, 2, 1, 3, 4};
    const int64_t flat[4] = {B * T, 3, H, W};
    vt_tensor *p = vt_permute(video, 5, perm);
    vt_tensor *images = vt_reshape(p, 4, flat);
    vt_release(p);
    float per_frame[B * T];
    {
        vt_reward *r = RandomModule({{"target", "person"}, {"height", "48"}});
        ASSERT_VT(r);
        vt_tensor *rw = nullptr, *ls = nullptr;
        ASSERT_VT_OK(vt_reward_forward(r, images, nullptr, &rw, &ls));
        for (int i = 0; i < B * T; i++) {
            per_frame[i] = -vt_f32(rw)[i];
            EXPECT_GT(per_frame[i], 0.0f);
            EXPECT_LT(per_frame[i], 1.0f);
        }
        vt_release(rw);
        vt_release(ls);
        vt_reward_free(r);
    }
    for (const char *mode : {"max", "mean"}) {
        vt_reward *r = RandomModule({{"target", "person"}, {"height", "48"}, {"frames", mode}});
        ASSERT_VT(r);
        vt_tensor *v = vt_clone(video);
        vt_requires_grad(v, 1);
        vt_tape *tape = vt_tape_begin();
        vt_tensor *rw = nullptr, *ls = nullptr;
        ASSERT_VT_OK(vt_reward_forward(r, v, nullptr, &rw, &ls));
        vt_tape_end(tape);
        ASSERT_EQ(rw->numel, B);
        double loss = 0;
        for (int b = 0; b < B; b++) {
            float want = 0;
            for (int t = 0; t < T; t++) {
                float c = per_frame[b * T + t];
                want = !strcmp(mode, "max") ? (t ? std::fmax(want, c) : c) : want + c / T;
            }
            EXPECT_NEAR(-vt_f32(rw)[b], want, 1e-5) << mode << " video " << b;
            loss += want / B;
        }
        EXPECT_NEAR(vt_f32(ls)[0], loss, 1e-5) << mode;
        ASSERT_VT_OK(vt_backward(tape, ls, nullptr));
        ASSERT_NE(v->grad, nullptr);
        double g = 0;
        for (int64_t i = 0; i < v->grad->numel; i++) g += std::fabs(vt_f32(v->grad)[i]);
        EXPECT_TRUE(std::isfinite(g) && g > 0) << mode;
        vt_tape_free(tape);
        vt_release(rw);
        vt_release(ls);
        vt_release(v);
        vt_reward_free(r);
    }
    vt_release(images);
    vt_release(video);
}

// Frames the model cannot take are rejected with a message, never mis-indexed: a resize
// narrower than one patch, and a wrong channel count.
TEST(ObjectRemoval, BadFrameSizesAreRejected) {
    vt_reward *r = RandomModule({{"target", "person"}, {"height", "16"}});
    ASSERT_VT(r);
    vt_tensor *thin = RandU({1, 3, 64, 8}, 1, -1, 1);  // 16 x (16 * 8 / 64 = 2) pixels
    vt_tensor *rw = nullptr, *ls = nullptr;
    EXPECT_NE(vt_reward_forward(r, thin, nullptr, &rw, &ls), VT_OK);
    EXPECT_NE(std::string(vt_error_message()).find("narrower than one 16-pixel patch"), std::string::npos)
        << vt_error_message();
    vt_tensor *gray = RandU({1, 1, 32, 32}, 1, -1, 1);
    EXPECT_NE(vt_reward_forward(r, gray, nullptr, &rw, &ls), VT_OK);
    // odd sizes that leave a partial patch are fine (the stride-16 convolution drops it)
    vt_tensor *odd = RandU({2, 3, 23, 37}, 1, -1, 1);
    EXPECT_EQ(VT_OK, vt_reward_forward(r, odd, nullptr, &rw, &ls));
    vt_release(rw);
    vt_release(ls);
    vt_release(odd);
    vt_release(gray);
    vt_release(thin);
    vt_reward_free(r);
}

// The trainer checks the options before building anything.
TEST(ObjectRemoval, TrainerRejectsAnUnknownClassBeforeCompute) {
    vt_config c;
    ASSERT_EQ(vt_config_load(&c, TestsPath("object_removal_tiny.yaml").c_str()), VT_OK) << vt_error_message();
    std::string dir = "output.dir=" + TempDir() + "/object_removal_bad";
    ASSERT_EQ(vt_config_set(&c, dir.c_str()), VT_OK) << vt_error_message();
    ASSERT_EQ(vt_config_set(&c, "reward.0.options.target=unicorn"), VT_OK) << vt_error_message();
    vt_train_options o = vt_train_options_default();
    EXPECT_EQ(vt_trainer_create(&c, &o), nullptr);
    std::string m = vt_error_message();
    EXPECT_NE(m.find("reward.0.options: "), std::string::npos) << m;
    EXPECT_NE(m.find("unknown target class \"unicorn\""), std::string::npos) << m;
    vt_config_free(&c);
}

// 2 VADER steps on the tiny CPU preset with a tiny random YOLOS.
TEST(ObjectRemoval, TinyCpuTrainingRuns) {
    vt_config c;
    ASSERT_EQ(vt_config_load(&c, TestsPath("object_removal_tiny.yaml").c_str()), VT_OK) << vt_error_message();
    std::string dir = "output.dir=" + TempDir() + "/object_removal";
    ASSERT_EQ(vt_config_set(&c, dir.c_str()), VT_OK) << vt_error_message();
    vt_train_options o = vt_train_options_default();
    vt_trainer *t = vt_trainer_create(&c, &o);
    ASSERT_VT(t);
    EXPECT_EQ(VT_OK, vt_trainer_run(t));
    vt_trainer_stats s = vt_trainer_get_stats(t);
    EXPECT_EQ(s.step, 2);
    EXPECT_EQ(s.skipped, 0);
    EXPECT_LT(s.first_reward, 0.0);  // -confidence
    EXPECT_GT(s.first_reward, -1.0);
    vt_trainer_free(t);
    vt_config_free(&c);
}
