// test_weights.cpp — the weight store (f16 / bf16 conversion, strict and collecting checks,
// the messages naming file, key and shapes), manifest stores of the full-size models, and the
// fixture reader every model test builds on.
#include "testutil.h"
#include "core/fixture.h"
#include "core/weights.h"
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>

namespace {

// Writes {name: tensor} to dir/file and returns the path.
std::string WriteFile(const std::string &dir, const std::string &file, const std::vector<std::string> &names,
                      const std::vector<vt_tensor *> &ts) {
    std::string p = dir + "/" + file;
    std::vector<const char *> cn;
    for (auto &n : names) cn.push_back(n.c_str());
    EXPECT_EQ(vt_st_write(p.c_str(), (int)ts.size(), cn.data(), ts.data(), 0, nullptr, nullptr), VT_OK)
        << vt_error_message();
    return p;
}

bool Has(const char *msg, const std::string &s) { return strstr(msg, s.c_str()) != nullptr; }

}  // namespace

TEST(Weights, ConvertsHalfTypesAndKeepsF32ZeroCopy) {
    Releaser R;
    std::string dir = TempDir();
    const float vals[6] = {1.5f, -2.25f, 0.0f, 1024.0f, -0.125f, 3.0f};
    int64_t sh[2] = {2, 3};
    vt_tensor *f32 = R(vt_from_f32(2, sh, vals));
    vt_tensor *bf = R(vt_to_dtype(f32, VT_BF16));
    vt_tensor *h = R(vt_to_dtype(f32, VT_F16));
    ASSERT_VT(bf);
    ASSERT_VT(h);
    std::string p = WriteFile(dir, "w.safetensors", {"a.f32", "a.bf16", "a.f16"}, {f32, bf, h});
    vt_weights *w = vt_weights_open1(p.c_str());
    ASSERT_VT(w);
    EXPECT_EQ(vt_weights_n_keys(w), 3);
    EXPECT_STREQ(vt_weights_key(w, 1), "a.bf16");
    EXPECT_EQ(vt_weights_count_params(w, nullptr), 18);
    EXPECT_EQ(vt_weights_count_params(w, "a.f1"), 6);
    for (const char *k : {"a.f32", "a.bf16", "a.f16"}) {
        vt_tensor *t = R(vt_weights_get(w, k, 2, sh));
        ASSERT_VT(t);
        EXPECT_EQ(t->dtype, VT_F32);
        EXPECT_EQ(t->device, VT_CPU);
        for (int i = 0; i < 6; i++) EXPECT_EQ(vt_f32(t)[i], vals[i]) << k << " " << i;
    }
    // f32 is a view of the mapping (borrowed storage), not a copy
    vt_tensor *z = R(vt_weights_get_any(w, "a.f32"));
    ASSERT_VT(z);
    EXPECT_NE(z->storage->owner, nullptr);
    EXPECT_EQ(vt_weights_finish(w, ""), VT_OK) << vt_error_message();
    vt_weights_free(w);  // tensors stay valid after the store is gone
    EXPECT_EQ(vt_f32(z)[3], 1024.0f);
}

TEST(Weights, StrictErrorsNameFileKeyAndShapes) {
    Releaser R;
    std::string dir = TempDir();
    vt_tensor *a = R(RandN({320, 8, 3, 3}, 1));
    std::string p = WriteFile(dir, "unet.safetensors", {"model.diffusion_model.x.weight"}, {a});
    vt_weights *w = vt_weights_open1(p.c_str());
    ASSERT_VT(w);
    int64_t want[4] = {320, 4, 3, 3};
    EXPECT_EQ(vt_weights_get(w, "model.diffusion_model.x.weight", 4, want), nullptr);
    EXPECT_EQ(vt_error_code(), VT_ERR_KEY);
    EXPECT_TRUE(Has(vt_error_message(), "unet.safetensors: key model.diffusion_model.x.weight: expected shape "
                                        "[320, 4, 3, 3], file has [320, 8, 3, 3]"))
        << vt_error_message();
    EXPECT_EQ(vt_weights_get(w, "model.diffusion_model.y.bias", 1, want), nullptr);
    EXPECT_EQ(vt_error_code(), VT_ERR_KEY);
    EXPECT_TRUE(Has(vt_error_message(), "unet.safetensors: missing key model.diffusion_model.y.bias")) << vt_error_message();
    EXPECT_EQ(vt_weights_get_any(w, "nope"), nullptr);
    EXPECT_TRUE(Has(vt_error_message(), "missing key nope"));
    int nd = 0;
    int64_t shape[VT_MAX_DIMS];
    EXPECT_TRUE(vt_weights_shape(w, "model.diffusion_model.x.weight", &nd, shape));
    EXPECT_EQ(nd, 4);
    EXPECT_EQ(shape[1], 8);
    EXPECT_FALSE(vt_weights_shape(w, "nope", &nd, shape));
    EXPECT_TRUE(vt_weights_has(w, "model.diffusion_model.x.weight"));
    EXPECT_FALSE(vt_weights_has(w, "nope"));
    vt_weights_free(w);
}

TEST(Weights, CollectModeListsEveryProblem) {
    Releaser R;
    std::string dir = TempDir();
    vt_tensor *a = R(RandN({2, 3}, 1)), *b = R(RandN({4}, 2)), *c = R(RandN({5}, 3)), *d = R(RandN({1}, 4));
    std::string p = WriteFile(dir, "m.safetensors", {"net.a", "net.b", "net.c", "other.d"}, {a, b, c, d});
    vt_weights *w = vt_weights_open1(p.c_str());
    ASSERT_VT(w);
    vt_weights_collect_errors(w, 1);
    int64_t s23[2] = {2, 3}, s7[1] = {7}, s9[2] = {9, 9};
    vt_tensor *ta = R(vt_weights_get(w, "net.a", 2, s23));
    ASSERT_VT(ta);
    EXPECT_EQ(RelErr(ta, a), 0.0);
    vt_tensor *tb = R(vt_weights_get(w, "net.b", 1, s7));  // mis-shaped: zeros of the asked shape
    ASSERT_VT(tb);
    EXPECT_EQ(tb->shape[0], 7);
    EXPECT_EQ(vt_f32(tb)[6], 0.0f);
    vt_tensor *tm = R(vt_weights_get(w, "net.missing", 2, s9));
    ASSERT_VT(tm);
    EXPECT_EQ(tm->numel, 81);
    // net.c never used; other.d outside the prefix
    EXPECT_EQ(vt_weights_finish(w, "net."), VT_ERR_KEY);
    std::string msg = vt_error_message();
    EXPECT_TRUE(Has(msg.c_str(), "3 weight problems (1 missing, 1 mis-shaped, 1 never used under net.)")) << msg;
    EXPECT_TRUE(Has(msg.c_str(), "m.safetensors: key net.b: expected shape [7], file has [4]")) << msg;
    EXPECT_TRUE(Has(msg.c_str(), "m.safetensors: missing key net.missing (expected shape [9, 9])")) << msg;
    EXPECT_TRUE(Has(msg.c_str(), "unexpected key net.c [5] (never used)")) << msg;
    EXPECT_FALSE(Has(msg.c_str(), "other.d")) << msg;
    // the record is cleared; what is still unused is reported again
    EXPECT_EQ(vt_weights_finish(w, "net."), VT_ERR_KEY);
    EXPECT_TRUE(Has(vt_error_message(), "1 weight problem (0 missing, 0 mis-shaped, 1 never used")) << vt_error_message();
    vt_weights_mark_used(w, "net.c");
    EXPECT_EQ(vt_weights_finish(w, "net."), VT_OK);
    EXPECT_EQ(vt_weights_finish(w, nullptr), VT_ERR_KEY);
    EXPECT_TRUE(Has(vt_error_message(), "unexpected key other.d")) << vt_error_message();
    vt_weights_free(w);
}

TEST(Weights, FinishCapsTheList) {
    Releaser R;
    std::string dir = TempDir();
    std::vector<std::string> names;
    std::vector<vt_tensor *> ts;
    for (int i = 0; i < 30; i++) {
        names.push_back("k" + std::to_string(i));
        ts.push_back(R(RandN({2}, (uint64_t)i)));
    }
    std::string p = WriteFile(dir, "many.safetensors", names, ts);
    vt_weights *w = vt_weights_open1(p.c_str());
    ASSERT_VT(w);
    EXPECT_EQ(vt_weights_finish(w, ""), VT_ERR_KEY);
    std::string msg = vt_error_message();
    EXPECT_TRUE(Has(msg.c_str(), "30 weight problems")) << msg;
    EXPECT_TRUE(Has(msg.c_str(), "... and 10 more")) << msg;
    EXPECT_TRUE(Has(msg.c_str(), "unexpected key k19 ")) << msg;
    EXPECT_FALSE(Has(msg.c_str(), "unexpected key k20 ")) << msg;
    vt_weights_free(w);
}

TEST(Weights, SeveralFilesAndDuplicateKeys) {
    Releaser R;
    std::string dir = TempDir();
    vt_tensor *a = R(RandN({2}, 1)), *b = R(RandN({3}, 2));
    std::string p1 = WriteFile(dir, "one.safetensors", {"x"}, {a});
    std::string p2 = WriteFile(dir, "two.safetensors", {"y"}, {b});
    std::string p3 = WriteFile(dir, "three.safetensors", {"x"}, {b});
    const char *ok[] = {p1.c_str(), p2.c_str()};
    vt_weights *w = vt_weights_open(ok, 2);
    ASSERT_VT(w);
    int64_t s3[1] = {3}, s2[1] = {2};
    vt_tensor *ty = R(vt_weights_get(w, "y", 1, s3));
    ASSERT_VT(ty);
    EXPECT_EQ(RelErr(ty, b), 0.0);
    EXPECT_EQ(vt_weights_get(w, "x", 1, s3), nullptr);
    EXPECT_TRUE(Has(vt_error_message(), "one.safetensors: key x: expected shape [3], file has [2]")) << vt_error_message();
    EXPECT_EQ(vt_weights_get(w, "z", 1, s2), nullptr);
    EXPECT_TRUE(Has(vt_error_message(), "one.safetensors+two.safetensors: missing key z")) << vt_error_message();
    vt_weights_free(w);
    const char *dup[] = {p1.c_str(), p3.c_str()};
    EXPECT_EQ(vt_weights_open(dup, 2), nullptr);
    EXPECT_TRUE(Has(vt_error_message(), "key x is in both one.safetensors and three.safetensors")) << vt_error_message();
    EXPECT_EQ(vt_weights_open1((dir + "/absent.safetensors").c_str()), nullptr);
    EXPECT_EQ(vt_error_code(), VT_ERR_IO);
}

// The parameter count in a manifest's header comment ("...; 1413284420 parameters").
static int64_t HeaderCount(const std::string &path) {
    std::ifstream f(path);
    std::string first;
    std::getline(f, first);
    size_t e = first.rfind(" parameters");
    size_t b = first.rfind(' ', e - 1);
    return std::stoll(first.substr(b + 1, e - b - 1));
}

TEST(Weights, ManifestStores) {
    std::string unet = SharedPath("manifests/videocrafter2_unet.txt");
    vt_weights *w = vt_weights_from_manifest(unet.c_str(), 0, 0);
    ASSERT_VT(w);
    EXPECT_EQ(vt_weights_count_params(w, nullptr), 1413284420);
    EXPECT_EQ(vt_weights_count_params(w, "model.diffusion_model."), 1413284420);
    EXPECT_EQ(vt_weights_count_params(w, "model.diffusion_model.time_embed."), 1280 * 320 + 1280 + 1280 * 1280 + 1280);
    EXPECT_EQ(vt_weights_n_keys(w), 1484);
    EXPECT_STREQ(vt_weights_key(w, 0), "model.diffusion_model.time_embed.0.weight");
    int64_t sh[4] = {320, 4, 3, 3};
    vt_tensor *t = vt_weights_get(w, "model.diffusion_model.input_blocks.0.0.weight", 4, sh);
    ASSERT_VT(t);
    double s = 0;
    for (int64_t i = 0; i < t->numel; i++) s += std::fabs(vt_f32(t)[i]);
    EXPECT_EQ(s, 0.0);
    vt_release(t);
    sh[1] = 8;
    EXPECT_EQ(vt_weights_get(w, "model.diffusion_model.input_blocks.0.0.weight", 4, sh), nullptr);
    EXPECT_TRUE(Has(vt_error_message(), "videocrafter2_unet.txt: key model.diffusion_model.input_blocks.0.0.weight: "
                                        "expected shape [320, 8, 3, 3], file has [320, 4, 3, 3]"))
        << vt_error_message();
    vt_weights_free(w);
    for (const char *m : {"videocrafter2_unet.txt", "videocrafter2_vae_decoder.txt", "openclip_vit_h_14.txt"}) {
        std::string path = SharedPath(std::string("manifests/") + m);
        vt_weights *mw = vt_weights_from_manifest(path.c_str(), 0, 0);
        ASSERT_VT(mw) << m;
        EXPECT_EQ(vt_weights_count_params(mw, ""), HeaderCount(path)) << m;
        vt_weights_free(mw);
    }
}

TEST(Weights, ManifestRandomInitIsDeterministic) {
    std::string clip = SharedPath("manifests/openclip_vit_h_14.txt");
    vt_weights *w1 = vt_weights_from_manifest(clip.c_str(), 1, 42);
    vt_weights *w2 = vt_weights_from_manifest(clip.c_str(), 1, 42);
    vt_weights *w3 = vt_weights_from_manifest(clip.c_str(), 1, 43);
    ASSERT_VT(w1);
    ASSERT_VT(w2);
    ASSERT_VT(w3);
    Releaser R;
    int64_t sh[2] = {3840, 1280};
    const char *k = "visual.transformer.resblocks.0.attn.in_proj_weight";
    vt_tensor *a = R(vt_weights_get(w1, k, 2, sh));
    vt_tensor *b = R(vt_weights_get(w2, k, 2, sh));
    vt_tensor *c = R(vt_weights_get(w3, k, 2, sh));
    ASSERT_VT(a);
    ASSERT_VT(b);
    ASSERT_VT(c);
    EXPECT_EQ(0, memcmp(vt_data(a), vt_data(b), vt_nbytes(a)));
    EXPECT_NE(0, memcmp(vt_data(a), vt_data(c), vt_nbytes(a)));
    double m = 0, m2 = 0, mx = 0;
    for (int64_t i = 0; i < a->numel; i++) {
        double v = vt_f32(a)[i];
        m += v;
        m2 += v * v;
        mx = std::max(mx, std::fabs(v));
    }
    m /= (double)a->numel;
    double sd = std::sqrt(m2 / (double)a->numel - m * m);
    EXPECT_NEAR(m, 0.0, 1e-3);
    EXPECT_NEAR(sd, 0.02, 1e-3);
    EXPECT_LT(mx, 0.07);
    // another key differs; a norm scale is centred on 1
    int64_t s1[1] = {1280};
    vt_tensor *bias = R(vt_weights_get(w1, "visual.transformer.resblocks.0.attn.in_proj_bias", 1, sh));
    ASSERT_VT(bias);
    EXPECT_NE(0, memcmp(vt_data(bias), vt_data(a), 1280 * 4));
    vt_tensor *ln = R(vt_weights_get(w1, "visual.ln_pre.weight", 1, s1));
    ASSERT_VT(ln);
    double lm = 0;
    for (int64_t i = 0; i < ln->numel; i++) lm += vt_f32(ln)[i];
    EXPECT_NEAR(lm / 1280.0, 1.0, 5e-3);
    // 0-d key
    vt_tensor *ls = R(vt_weights_get(w1, "logit_scale", 0, nullptr));
    ASSERT_VT(ls);
    EXPECT_EQ(ls->numel, 1);
    vt_weights_free(w1);
    vt_weights_free(w2);
    vt_weights_free(w3);
}

TEST(Weights, BadManifests) {
    std::string dir = TempDir();
    struct Case {
        const char *text, *expect;
    } cases[] = {
        {"# c\nk\t[1, 2]\n", "bad.txt:2: expected KEY<TAB>[shape]<TAB>dtype"},
        {"k\t[1, x]\tfloat32\n", "bad.txt:1: key k: bad dimension"},
        {"k\t[1, 2, 3, 4, 5, 6]\tfloat32\n", "more than 5 dims"},
        {"k\t[1]\tfloat64\n", "unknown dtype 'float64'"},
        {"k\t[1]\tfloat32\nk\t[2]\tfloat32\n", "key k is in both"},
        {"k\t[-1]\tfloat32\n", "bad dimension"},
    };
    for (auto &c : cases) {
        std::string p = dir + "/bad.txt";
        std::ofstream(p) << c.text;
        vt_weights *w = vt_weights_from_manifest(p.c_str(), 0, 0);
        EXPECT_EQ(w, nullptr) << c.text;
        vt_weights_free(w);
        EXPECT_TRUE(Has(vt_error_message(), c.expect)) << c.text << " -> " << vt_error_message();
    }
    std::string p = dir + "/good.txt";
    std::ofstream(p) << "# header\n\nscalar\t[]\tfloat32\nv\t[3]\tbfloat16\r\n";
    vt_weights *w = vt_weights_from_manifest(p.c_str(), 0, 0);
    ASSERT_VT(w);
    EXPECT_EQ(vt_weights_n_keys(w), 2);
    EXPECT_EQ(vt_weights_count_params(w, ""), 4);
    vt_weights_free(w);
    EXPECT_EQ(vt_weights_from_manifest((dir + "/absent.txt").c_str(), 0, 0), nullptr);
    EXPECT_EQ(vt_error_code(), VT_ERR_IO);
}

// ---- fixtures ---------------------------------------------------------------------------------
static const char *kFixtures[] = {"vc2_unet_tiny", "vc2_vae_decoder_tiny", "openclip_tiny", "vader_step_tiny"};

TEST(Fixture, EveryCaseOpensAndMatchesItsIoTable) {
    for (const char *name : kFixtures) {
        vt_fixture *f = vt_fixture_open(SharedPath(std::string("fixtures/") + name).c_str());
        ASSERT_VT(f) << name;
        EXPECT_STREQ(f->name, name);
        const cJSON *io = vt_fixture_json(f, "io");
        ASSERT_TRUE(cJSON_IsObject(io)) << name;
        int n_grad = 0;
        for (const cJSON *e = io->child; e; e = e->next) {
            ASSERT_TRUE(vt_fixture_io_has(f, e->string)) << name << " " << e->string;
            if (strncmp(e->string, "grad.", 5) == 0) n_grad++;
            const cJSON *shape = cJSON_GetArrayItem(e, 0), *dtype = cJSON_GetArrayItem(e, 1);
            vt_tensor *raw = vt_fixture_io_raw(f, e->string);
            ASSERT_VT(raw);
            EXPECT_EQ(raw->ndim, cJSON_GetArraySize(shape)) << e->string;
            for (int d = 0; d < raw->ndim; d++)
                EXPECT_EQ(raw->shape[d], (int64_t)cJSON_GetArrayItem(shape, d)->valuedouble) << e->string;
            EXPECT_STREQ(raw->dtype == VT_I64 ? "int64" : "float32", dtype->valuestring) << e->string;
            vt_tensor *t = vt_fixture_io(f, e->string);
            ASSERT_VT(t);
            EXPECT_EQ(t->dtype, VT_F32);
            EXPECT_EQ(t->numel, raw->numel);
            if (raw->dtype == VT_I64) {
                for (int64_t i = 0; i < t->numel; i++) EXPECT_EQ((int64_t)vt_f32(t)[i], vt_i64(raw)[i]);
            }
            vt_release(raw);
            vt_release(t);
        }
        EXPECT_EQ(vt_fixture_io_names(f, "", nullptr), f->io->n);
        const char **names = nullptr;
        int ng = vt_fixture_io_names(f, "grad.", &names);
        EXPECT_EQ(ng, n_grad) << name;
        EXPECT_GT(ng, 0) << name;
        for (int i = 0; i < ng; i++) EXPECT_EQ(strncmp(names[i], "grad.", 5), 0);
        free(names);
        EXPECT_EQ(vt_fixture_io(f, "no.such.tensor"), nullptr);
        EXPECT_EQ(vt_error_code(), VT_ERR_KEY);
        EXPECT_TRUE(Has(vt_error_message(), "no io tensor 'no.such.tensor'")) << vt_error_message();
        // every weight, asked for with its own shape, leaves nothing unused
        vt_weights *w = f->weights;
        for (int i = 0; i < vt_weights_n_keys(w); i++) {
            int nd;
            int64_t sh[VT_MAX_DIMS];
            const char *k = vt_weights_key(w, i);
            ASSERT_TRUE(vt_weights_shape(w, k, &nd, sh));
            vt_tensor *t = vt_weights_get(w, k, nd, sh);
            ASSERT_VT(t) << k;
            vt_release(t);
        }
        EXPECT_EQ(vt_weights_finish(w, ""), VT_OK) << vt_error_message();
        vt_fixture_free(f);
    }
}

TEST(Fixture, JsonPaths) {
    vt_fixture *f = vt_fixture_open(SharedPath("fixtures/vc2_unet_tiny").c_str());
    ASSERT_VT(f);
    int64_t v = 0;
    ASSERT_VT_OK(vt_fixture_json_int(f, "config.model_channels", &v));
    EXPECT_EQ(v, 32);
    ASSERT_VT_OK(vt_fixture_json_int(f, "config.fps_cond", &v));  // true
    EXPECT_EQ(v, 1);
    int64_t mult[8];
    int n = 0;
    ASSERT_VT_OK(vt_fixture_json_ints(f, "config.channel_mult", mult, 8, &n));
    ASSERT_EQ(n, 2);
    EXPECT_EQ(mult[0], 1);
    EXPECT_EQ(mult[1], 2);
    EXPECT_EQ(vt_fixture_json_ints(f, "config.channel_mult", mult, 1, &n), VT_ERR_CONFIG);
    ASSERT_VT_OK(vt_fixture_json_int(f, "config.attention_resolutions.1", &v));
    EXPECT_EQ(v, 1);
    ASSERT_VT_OK(vt_fixture_json_int(f, "io.x.0.4", &v));  // io table: x -> [[2, 4, 4, 8, 8], "float32"]
    EXPECT_EQ(v, 8);
    const char *s = nullptr;
    ASSERT_VT_OK(vt_fixture_json_str(f, "io.x.1", &s));
    EXPECT_STREQ(s, "float32");
    EXPECT_EQ(vt_fixture_json_int(f, "config.nope", &v), VT_ERR_CONFIG);
    EXPECT_TRUE(Has(vt_error_message(), "vc2_unet_tiny: json config.nope is absent")) << vt_error_message();
    EXPECT_EQ(vt_fixture_json_int(f, "model", &v), VT_ERR_CONFIG);
    EXPECT_EQ(vt_fixture_json(f, "config.channel_mult.5"), nullptr);
    EXPECT_EQ(vt_fixture_json(f, "config.channel_mult.x"), nullptr);
    vt_fixture_free(f);

    // keys containing dots: io.grad.z in the VAE case
    f = vt_fixture_open(SharedPath("fixtures/vc2_vae_decoder_tiny").c_str());
    ASSERT_VT(f);
    ASSERT_VT_OK(vt_fixture_json_int(f, "io.grad.z.0.1", &v));
    EXPECT_EQ(v, 4);
    double d = 0;
    ASSERT_VT_OK(vt_fixture_json_double(f, "scale_factor", &d));
    EXPECT_DOUBLE_EQ(d, 0.18215);
    vt_fixture_free(f);

    EXPECT_EQ(vt_fixture_open(SharedPath("fixtures/no_such_case").c_str()), nullptr);
    EXPECT_EQ(vt_error_code(), VT_ERR_IO);
    EXPECT_TRUE(Has(vt_error_message(), "fixture no_such_case: ")) << vt_error_message();
}

// model.dtype's in-place conversion of frozen weights: identity kept, values rounded to nearest
// even, a storage of its own (a view of the old storage elsewhere keeps its values), trainable
// tensors and i64 refused with a message.
TEST(Weights, ConvertsFrozenTensorsInPlace) {
    Releaser R;
    const float vals[6] = {1.0f + 1.0f / 1024, -3.3f, 0.0f, 65504.0f, 1e-3f, 7.0f};
    int64_t sh[2] = {2, 3};
    vt_tensor *t = R(vt_from_f32(2, sh, vals));
    const int64_t flat[1] = {6};
    vt_tensor *alias = R(vt_view(t, 1, flat));  // another holder of the f32 storage
    ASSERT_VT(alias);
    for (vt_dtype dt : {VT_BF16, VT_F16}) {
        SCOPED_TRACE(vt_dtype_name(dt));
        vt_tensor *w = R(vt_from_f32(2, sh, vals));
        vt_tensor *list[3] = {w, nullptr, w};  // NULL entries and repeats are fine
        ASSERT_EQ(vt_tensors_to_dtype(list, 3, dt), VT_OK) << vt_error_message();
        EXPECT_EQ(w->dtype, dt);
        EXPECT_EQ(w->ndim, 2);
        EXPECT_EQ(w->shape[1], 3);
        const uint16_t *h = (const uint16_t *)vt_data(w);
        for (int i = 0; i < 6; i++) {
            float want = dt == VT_BF16 ? vt_bf16_to_f32(vt_f32_to_bf16(vals[i])) : vt_f16_to_f32(vt_f32_to_f16(vals[i]));
            float got = dt == VT_BF16 ? vt_bf16_to_f32(h[i]) : vt_f16_to_f32(h[i]);
            EXPECT_EQ(got, want) << i;
        }
        // rounding happened: 1 + 2^-10 is not a bf16 value
        if (dt == VT_BF16) {
            EXPECT_EQ(vt_bf16_to_f32(h[0]), 1.0f);
        }
        // back to f32: the 16-bit values exactly
        vt_storage *s16 = w->storage;
        ASSERT_EQ(vt_tensors_to_dtype(&w, 1, dt), VT_OK);  // already dt: untouched
        EXPECT_EQ(w->storage, s16);
        ASSERT_EQ(vt_tensors_to_dtype(&w, 1, VT_F32), VT_OK) << vt_error_message();
        EXPECT_EQ(w->dtype, VT_F32);
        EXPECT_EQ(vt_f32(w)[1], dt == VT_BF16 ? vt_bf16_to_f32(vt_f32_to_bf16(-3.3f)) : vt_f16_to_f32(vt_f32_to_f16(-3.3f)));
    }
    // converting t leaves the alias (same old storage) as it was
    ASSERT_EQ(vt_tensors_to_dtype(&t, 1, VT_BF16), VT_OK);
    EXPECT_EQ(alias->dtype, VT_F32);
    EXPECT_EQ(vt_f32(alias)[1], -3.3f);
    EXPECT_NE(alias->storage, t->storage);
    // a packed weight and its row views, given together: one new storage, views at their rows;
    // a tensor that only shares the storage (no overlap) is converted apart
    {
        float big[4 * 6];
        for (int i = 0; i < 24; i++) big[i] = 1.0f + (float)i / 300.0f;
        const int64_t bs[2] = {4, 6}, rs[2] = {1, 6};
        vt_tensor *whole = R(vt_from_f32(2, bs, big));
        vt_tensor *packed = R(vt_view_storage(whole->storage, 0, VT_F32, 2, (const int64_t[]){3, 6}));
        vt_tensor *rows[3], *other = R(vt_view_storage(whole->storage, 3 * 6 * 4, VT_F32, 2, rs));  // row 3
        for (int r = 0; r < 3; r++) rows[r] = R(vt_view_storage(whole->storage, (size_t)r * 6 * 4, VT_F32, 2, rs));
        vt_tensor *list[5] = {rows[1], packed, rows[0], other, rows[2]};  // views first: the cluster still forms
        ASSERT_EQ(vt_tensors_to_dtype(list, 5, VT_BF16), VT_OK) << vt_error_message();
        for (int r = 0; r < 3; r++) {
            EXPECT_EQ(rows[r]->storage, packed->storage) << r;
            EXPECT_EQ(rows[r]->offset, packed->offset + (size_t)r * 6 * 2) << r;
            EXPECT_EQ(rows[r]->dtype, VT_BF16);
            for (int c = 0; c < 6; c++)
                EXPECT_EQ(vt_bf16_to_f32(((const uint16_t *)vt_data(rows[r]))[c]),
                          vt_bf16_to_f32(vt_f32_to_bf16(big[r * 6 + c])));
        }
        EXPECT_NE(other->storage, packed->storage);
        EXPECT_EQ(vt_bf16_to_f32(((const uint16_t *)vt_data(other))[5]), vt_bf16_to_f32(vt_f32_to_bf16(big[23])));
        EXPECT_EQ(whole->dtype, VT_F32);  // not given: as it was
        EXPECT_EQ(vt_f32(whole)[7], big[7]);
    }
    // refusals name what is wrong
    vt_tensor *p = R(vt_from_f32(2, sh, vals));
    p->requires_grad = 1;
    EXPECT_EQ(vt_tensors_to_dtype(&p, 1, VT_BF16), VT_ERR_ARG);
    EXPECT_TRUE(Has(vt_error_message(), "frozen")) << vt_error_message();
    EXPECT_EQ(p->dtype, VT_F32);
    const int64_t four[1] = {4};
    vt_tensor *ids = R(vt_empty(VT_I64, VT_CPU, 1, four));
    EXPECT_EQ(vt_tensors_to_dtype(&ids, 1, VT_BF16), VT_ERR_DTYPE);
    EXPECT_TRUE(Has(vt_error_message(), "i64")) << vt_error_message();
    vt_tensor *q = R(vt_from_f32(2, sh, vals));
    EXPECT_EQ(vt_tensors_to_dtype(&q, 1, VT_I64), VT_ERR_DTYPE);
    vt_error_clear();
}
