// test_models_vae_clip.cpp — the VAE decoder and the OpenCLIP towers against the PyTorch
// fixtures (through the same check functions vader-fixture runs), checkpoint segments,
// per-frame video decoding, full-size builds from the manifests and strict key checking.
#include "testutil.h"
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <cjson/cJSON.h>
#include "core/fixture.h"
#include "core/models/fixture_checks.h"
#include "core/models/openclip.h"
#include "core/models/vae_decoder.h"
#include "core/safetensors.h"

namespace {

void RunFixture(const std::string &name, int segments) {
    vt_fixture_opts opt = vt_fixture_opts_default();
    opt.segments = segments;
    vt_fixture_report rep = {};
    std::string prefix = SharedPath("fixtures/" + name);
    ASSERT_VT_OK(vt_fixture_run(prefix.c_str(), &opt, &rep));
    vt_fixture_report_print(&rep, &opt, stdout);
    EXPECT_GT(rep.n, 0);
    EXPECT_EQ(rep.n_fail, 0);
    for (int i = 0; i < rep.n; i++) {
        EXPECT_TRUE(rep.r[i].ok) << rep.r[i].name << " " << rep.r[i].note;
        EXPECT_LE(rep.r[i].rel_err, 1e-4) << rep.r[i].name;
    }
    vt_fixture_report_free(&rep);
}

bool ReportHas(const vt_fixture_report &rep, const char *name) {
    for (int i = 0; i < rep.n; i++)
        if (!strcmp(rep.r[i].name, name)) return true;
    return false;
}

}  // namespace

TEST(VaeDecoder, MatchesFixture) { RunFixture("vc2_vae_decoder_tiny", 0); }
TEST(VaeDecoder, MatchesFixtureWithSegments) { RunFixture("vc2_vae_decoder_tiny", 1); }
TEST(OpenClip, MatchesFixture) { RunFixture("openclip_tiny", 0); }
TEST(OpenClip, MatchesFixtureWithSegments) { RunFixture("openclip_tiny", 1); }

TEST(VaeDecoder, FixtureReportCoversOutputsGradientsAndActivations) {
    vt_fixture_opts opt = vt_fixture_opts_default();
    vt_fixture_report rep = {};
    std::string prefix = SharedPath("fixtures/vc2_vae_decoder_tiny");
    ASSERT_VT_OK(vt_fixture_run(prefix.c_str(), &opt, &rep));
    EXPECT_TRUE(ReportHas(rep, "out"));
    EXPECT_TRUE(ReportHas(rep, "grad.z"));
    EXPECT_TRUE(ReportHas(rep, "act.decoder.mid.attn_1"));
    EXPECT_TRUE(ReportHas(rep, "act.decoder.up.0.block.1"));
    EXPECT_STREQ(rep.model, "vae_decoder");
    vt_fixture_report_free(&rep);
}

// An upstream-made video case with another config (tests/fixtures,
// scripts/make_lvdm_variant_fixtures.py): z [B, 3, T, h, w] through post_quant_conv 3 -> 8,
// attention in the up blocks of level 0 only (resolution 18: lvdm's curr_res 4, 8, 16), act.*
// in the folded [(B*T), C, h, w] layout.
TEST(VaeDecoder, VideoVariantFixtureMatches) {
    vt_fixture_opts opt = vt_fixture_opts_default();
    vt_fixture_report rep = {};
    std::string prefix = std::string(VADER_SOURCE_DIR) + "/tests/fixtures/vc2_vae_video_attn_tiny";
    ASSERT_VT_OK(vt_fixture_run(prefix.c_str(), &opt, &rep));
    for (int i = 0; i < rep.n; i++) EXPECT_TRUE(rep.r[i].ok) << rep.r[i].name << " " << rep.r[i].note;
    EXPECT_TRUE(ReportHas(rep, "act.decoder.up.0.attn.1"));
    EXPECT_TRUE(ReportHas(rep, "grad.z"));
    EXPECT_EQ(rep.n_fail, 0);
    vt_fixture_report_free(&rep);
}

TEST(VaeDecoder, ConfigFromJsonReadsEmbedDimAndRejectsMissingOptions) {
    cJSON *o = cJSON_Parse("{\"z_channels\": 8, \"embed_dim\": 3, \"resamp_with_conv\": false}");
    ASSERT_NE(o, nullptr);
    vt_vae_config c = vt_vae_config_videocrafter2();
    ASSERT_VT_OK(vt_vae_config_from_json(o, &c));
    cJSON_Delete(o);
    EXPECT_EQ(vt_vae_latent_channels(&c), 3);
    EXPECT_EQ(c.resamp_with_conv, 0);
    c = vt_vae_config_videocrafter2();
    EXPECT_EQ(vt_vae_latent_channels(&c), 4);  // embed_dim unset: z_channels
    o = cJSON_Parse("{\"attn_type\": \"linear\"}");
    EXPECT_NE(vt_vae_config_from_json(o, &c), VT_OK);
    EXPECT_NE(std::strstr(vt_error_message(), "attn_type"), nullptr) << vt_error_message();
    cJSON_Delete(o);
}

TEST(Fixture, DetectsModelKinds) {
    const vt_fixture_kind *k = vt_fixture_detect("lvdm AutoencoderKL decode path (VideoCrafter2 family)");
    ASSERT_NE(k, nullptr);
    EXPECT_STREQ(k->name, "vae_decoder");
    k = vt_fixture_detect("open_clip.CLIP (ViT-H-14 layout, tiny)");
    ASSERT_NE(k, nullptr);
    EXPECT_STREQ(k->name, "openclip");
    EXPECT_EQ(vt_fixture_detect("some other network"), nullptr);
    EXPECT_EQ(vt_error_code(), VT_ERR_CONFIG);
    vt_error_clear();
}

// The tiny fixture's decoder (d NULL with the error set when the fixture or its config fails).
struct TinyVae {
    vt_fixture *fx = nullptr;
    vt_vae_decoder *d = nullptr;
    TinyVae() {
        fx = vt_fixture_open(SharedPath("fixtures/vc2_vae_decoder_tiny").c_str());
        if (!fx) return;
        vt_vae_config cfg = vt_vae_config_videocrafter2();
        if (vt_vae_config_from_json(vt_fixture_json(fx, "config"), &cfg) != VT_OK) return;
        d = vt_vae_decoder_build(fx->weights, "first_stage_model.", &cfg);
    }
    ~TinyVae() {
        vt_vae_decoder_free(d);
        vt_fixture_free(fx);
    }
};

// decode_first_stage_2DAE: [B, 4, T, h, w] decoded frame by frame equals decoding each frame,
// and the gradient reaches every frame of z.
TEST(VaeDecoder, VideoDecodesPerFrame) {
    Releaser R;
    TinyVae m;
    vt_vae_decoder *d = m.d;
    ASSERT_VT(d);
    d->segments = 1;
    vt_tensor *z = R(RandN({1, 4, 3, 4, 4}, 11));
    vt_requires_grad(z, 1);
    vt_tape *t = vt_tape_begin();
    vt_tensor *y = R(vt_vae_decode_video(d, z));
    vt_tape_end(t);
    ASSERT_VT(y);
    ASSERT_TRUE(vt_shape_eq(y, 5, std::vector<int64_t>{1, 3, 3, 8, 8}.data()));
    for (int64_t f = 0; f < 3; f++) {
        vt_tensor *zf = R(vt_slice(z, 2, f, 1));
        vt_tensor *z4 = R(vt_reshape(zf, 4, std::vector<int64_t>{1, 4, 4, 4}.data()));
        vt_tensor *yf = R(vt_vae_decode(d, z4));
        vt_tensor *ys = R(vt_slice(y, 2, f, 1));
        ASSERT_VT(yf);
        ASSERT_VT(ys);
        EXPECT_EQ(RelErr(ys, yf), 0.0) << "frame " << f;
    }
    ASSERT_VT_OK(vt_backward(t, y, nullptr));
    ASSERT_NE(z->grad, nullptr);
    for (int64_t f = 0; f < 3; f++) {
        double s = 0;
        for (int64_t i = 0; i < 16 * 4; i++) {
            int64_t c = i / 16, p = i % 16;
            s += std::fabs(vt_f32(z->grad)[(c * 3 + f) * 16 + p]);
        }
        EXPECT_GT(s, 0.0) << "frame " << f;
    }
    vt_tape_free(t);
}

// Shape-only weights of shared/manifests/NAME (no values), freed at scope exit (also when an
// assertion returns early): the full-size build tests.
struct ManifestWeights {
    vt_weights *w;
    explicit ManifestWeights(const char *name)
        : w(vt_weights_from_manifest(SharedPath(std::string("manifests/") + name).c_str(), 0, 0)) {}
    ~ManifestWeights() { vt_weights_free(w); }
};

// The full VideoCrafter2 decoder from the shape-only manifest: every key used exactly once.
TEST(VaeDecoder, FullSizeBuildsFromManifest) {
    ManifestWeights mw("videocrafter2_vae_decoder.txt");
    vt_weights *w = mw.w;
    ASSERT_VT(w);
    vt_vae_config cfg = vt_vae_config_videocrafter2();
    vt_vae_decoder *d = vt_vae_decoder_build(w, "first_stage_model.", &cfg);
    ASSERT_NE(d, nullptr) << vt_error_message();
    EXPECT_EQ(vt_weights_finish(w, ""), VT_OK) << vt_error_message();
    printf("VideoCrafter2 VAE decoder: %lld parameters\n", (long long)d->n_params);
    EXPECT_EQ(d->n_params, 49490199);
    EXPECT_EQ(d->n_params, vt_weights_count_params(w, "first_stage_model."));
    vt_vae_decoder_free(d);
}

// open_clip ViT-H-14 (HPSv2 layout) from the manifest: both towers, every key used once.
TEST(OpenClip, FullSizeBuildsFromManifest) {
    ManifestWeights mw("openclip_vit_h_14.txt");
    vt_weights *w = mw.w;
    ASSERT_VT(w);
    vt_openclip_config cfg = vt_openclip_config_vit_h_14();
    // the text tower alone first (what VideoCrafter2 conditions on), freed before the vision one
    vt_openclip *text = vt_openclip_build(w, "", &cfg, VT_OPENCLIP_TEXT);
    ASSERT_NE(text, nullptr) << vt_error_message();
    EXPECT_EQ(text->text->transformer.layers, 24);
    EXPECT_EQ(text->text->transformer.heads, 16);
    int64_t n_text = text->n_params_text;
    vt_openclip_free(text);
    vt_mem_trim(VT_CPU);  // hand the text tower's 1.4 GB back before the vision tower's 2.5 GB
    vt_openclip *vis = vt_openclip_build(w, "", &cfg, VT_OPENCLIP_VISION);
    ASSERT_NE(vis, nullptr) << vt_error_message();
    EXPECT_EQ(vis->visual->transformer.heads, 16);
    EXPECT_EQ(vis->visual->grid, 16);
    int64_t n_vis = vis->n_params_visual, n_all = vis->n_params;  // vision + logit_scale
    vt_openclip_free(vis);
    vt_mem_trim(VT_CPU);
    EXPECT_EQ(vt_weights_finish(w, ""), VT_OK) << vt_error_message();
    printf("open_clip ViT-H-14: text tower %lld, vision tower %lld, total %lld parameters\n", (long long)n_text,
           (long long)n_vis, (long long)(n_text + n_all));
    EXPECT_EQ(n_text + n_all, 986109441);
}

// Config inference: layers / widths / context / patch from the weight shapes alone.
TEST(OpenClip, InfersConfigFromWeights) {
    vt_fixture *fx = vt_fixture_open(SharedPath("fixtures/openclip_tiny").c_str());
    ASSERT_NE(fx, nullptr) << vt_error_message();
    vt_openclip *m = vt_openclip_build(fx->weights, "", nullptr, VT_OPENCLIP_TEXT | VT_OPENCLIP_VISION);
    ASSERT_NE(m, nullptr) << vt_error_message();
    EXPECT_EQ(m->cfg.text.layers, 3);
    EXPECT_EQ(m->cfg.text.width, 64);
    EXPECT_EQ(m->cfg.text.context_length, 77);
    EXPECT_EQ(m->cfg.vision.layers, 2);
    EXPECT_EQ(m->cfg.vision.patch_size, 8);
    EXPECT_EQ(m->cfg.vision.image_size, 32);
    EXPECT_EQ(m->cfg.embed_dim, 32);
    EXPECT_NE(m->logit_scale, nullptr);
    vt_openclip_free(m);
    vt_fixture_free(fx);
}

// A json config is open_clip's: text heads it does not name are CLIPTextCfg's 8 (not
// width / 64), mlp_ratio is read, and options the towers do not implement are refused by name.
TEST(OpenClip, ConfigJsonFollowsOpenClipDefaults) {
    cJSON *o = cJSON_Parse("{\"embed_dim\": 32, \"text_cfg\": {\"width\": 64, \"layers\": 2}, "
                           "\"vision_cfg\": {\"image_size\": [40, 40], \"patch_size\": 16, \"mlp_ratio\": 2.0}}");
    ASSERT_NE(o, nullptr);
    vt_openclip_config c = {};
    ASSERT_VT_OK(vt_openclip_config_from_json(o, &c));
    EXPECT_EQ(c.text.heads, 8);
    EXPECT_EQ(c.vision.image_size, 40);
    EXPECT_DOUBLE_EQ(c.vision.mlp_ratio, 2.0);
    cJSON_Delete(o);
    const char *refused[] = {"{\"text_cfg\": {\"no_causal_mask\": true}}", "{\"vision_cfg\": {\"pool_type\": \"avg\"}}",
                             "{\"vision_cfg\": {\"ls_init_value\": 0.1}}", "{\"vision_cfg\": {\"layers\": [3, 4, 6, 3]}}",
                             "{\"vision_cfg\": {\"image_size\": [32, 48]}}"};
    const char *named[] = {"no_causal_mask", "pool_type", "ls_init_value", "layers", "image_size"};
    for (int i = 0; i < 5; i++) {
        o = cJSON_Parse(refused[i]);
        ASSERT_NE(o, nullptr);
        c = vt_openclip_config{};
        EXPECT_NE(vt_openclip_config_from_json(o, &c), VT_OK) << refused[i];
        EXPECT_NE(std::strstr(vt_error_message(), named[i]), nullptr) << vt_error_message();
        cJSON_Delete(o);
    }
}

// The activation hook names every block after its checkpoint module, in order.
TEST(OpenClip, HookNamesBlocksByCheckpointKey) {
    vt_fixture *fx = vt_fixture_open(SharedPath("fixtures/openclip_tiny").c_str());
    ASSERT_NE(fx, nullptr) << vt_error_message();
    vt_openclip *m = vt_openclip_build(fx->weights, "", nullptr, VT_OPENCLIP_TEXT | VT_OPENCLIP_VISION);
    ASSERT_NE(m, nullptr) << vt_error_message();
    std::vector<std::string> names;
    m->hook = [](void *u, const char *name, vt_tensor *) { ((std::vector<std::string> *)u)->push_back(name); };
    m->hook_user = &names;
    const int64_t ts[2] = {1, 4}, is[4] = {1, 3, 32, 32};
    vt_tensor *tokens = vt_zeros(VT_I64, VT_CPU, 2, ts);
    vt_tensor *image = vt_zeros(VT_F32, VT_CPU, 4, is);
    vt_release(vt_openclip_encode_text(m, tokens));
    vt_release(vt_openclip_encode_image(m, image));
    std::vector<std::string> want = {"transformer.resblocks.0", "transformer.resblocks.1", "transformer.resblocks.2",
                                     "visual.transformer.resblocks.0", "visual.transformer.resblocks.1"};
    EXPECT_EQ(names, want);
    vt_release(tokens);
    vt_release(image);
    vt_openclip_free(m);
    vt_fixture_free(fx);
}

// A weight of the wrong shape fails the build with an error naming the key.
TEST(VaeDecoder, MisShapedKeyIsNamed) {
    vt_safetensors *st = vt_st_open(SharedPath("fixtures/vc2_vae_decoder_tiny.weights.safetensors").c_str());
    ASSERT_NE(st, nullptr) << vt_error_message();
    std::vector<std::string> names;
    std::vector<vt_tensor *> ts;
    const char *bad = "first_stage_model.decoder.mid.block_2.conv1.weight";
    for (int i = 0; i < st->n; i++) {
        names.push_back(st->entries[i].name);
        vt_tensor *t = vt_st_tensor(st, &st->entries[i]);
        if (names.back() == bad) {
            vt_tensor *u = vt_view(t, 4, std::vector<int64_t>{64, 64, 9, 1}.data());
            vt_release(t);
            t = u;
        }
        ts.push_back(t);
    }
    std::string path = TempDir() + "/bad.safetensors";
    std::vector<const char *> cn;
    for (auto &n : names) cn.push_back(n.c_str());
    ASSERT_VT_OK(vt_st_write(path.c_str(), (int)ts.size(), cn.data(), ts.data(), 0, nullptr, nullptr));
    for (auto *t : ts) vt_release(t);
    vt_st_close(st);
    vt_weights *w = vt_weights_open1(path.c_str());
    ASSERT_NE(w, nullptr) << vt_error_message();
    vt_vae_config cfg = vt_vae_config_videocrafter2();
    cfg.ch = 32;
    cfg.n_levels = 2;
    cfg.ch_mult[0] = 1;
    cfg.ch_mult[1] = 2;
    cfg.num_res_blocks = 1;
    vt_vae_decoder *d = vt_vae_decoder_build(w, "first_stage_model.", &cfg);
    EXPECT_EQ(d, nullptr);
    EXPECT_EQ(vt_error_code(), VT_ERR_KEY);
    EXPECT_NE(std::string(vt_error_message()).find(bad), std::string::npos) << vt_error_message();
    vt_error_clear();
    vt_vae_decoder_free(d);
    vt_weights_free(w);
    std::remove(path.c_str());
}

// Checkpoint segments keep only block inputs on the tape: far fewer saved bytes, same gradient.
TEST(VaeDecoder, SegmentsSaveLessAndGiveTheSameGradient) {
    Releaser R;
    TinyVae m;
    vt_vae_decoder *d = m.d;
    ASSERT_VT(d);
    size_t saved[2];
    vt_tensor *grad[2];
    for (int seg = 0; seg < 2; seg++) {
        d->segments = seg;
        vt_tensor *z = R(RandN({1, 4, 8, 8}, 5));
        vt_requires_grad(z, 1);
        vt_tape *t = vt_tape_begin();
        vt_tensor *y = R(vt_vae_decode(d, z));
        vt_tape_end(t);
        ASSERT_VT(y);
        saved[seg] = vt_tape_stats_get(t).saved_bytes;
        ASSERT_VT_OK(vt_backward(t, y, nullptr));
        grad[seg] = R(vt_retain(z->grad));
        vt_tape_free(t);
    }
    printf("saved on the tape: %zu bytes plain, %zu with segments\n", saved[0], saved[1]);
    EXPECT_LT(saved[1] * 2, saved[0]);
    EXPECT_EQ(RelErr(grad[1], grad[0]), 0.0);
}

// model.dtype bf16 / fp16 on the VAE decoder: every conv kernel 16-bit (norms and biases f32);
// the decode and the latent's gradient track the f32 decoder within the format's precision and
// differ from it (the convs really round their input).
TEST(VaeDecoder, HalfPrecisionWeightsTrackFp32) {
    Releaser R;
    for (vt_dtype dt : {VT_BF16, VT_F16}) {
        SCOPED_TRACE(vt_dtype_name(dt));
        TinyVae m;
        vt_vae_decoder *d = m.d;
        ASSERT_VT(d);
        vt_tensor *y[2], *g[2];
        for (int half = 0; half < 2; half++) {
            if (half) {
                ASSERT_VT_OK(vt_vae_decoder_set_weight_dtype(d, dt));
                int n16 = 0;
                for (int i = 0; i < d->n_tensors; i++) {
                    EXPECT_EQ(d->tensors[i]->dtype, d->tensors[i]->ndim >= 2 ? dt : VT_F32) << i;
                    n16 += d->tensors[i]->ndim >= 2;
                }
                EXPECT_GT(n16, 10);
            }
            vt_tensor *z = R(RandN({1, 4, 8, 8}, 5));
            vt_requires_grad(z, 1);
            vt_tape *t = vt_tape_begin();
            y[half] = R(vt_vae_decode(d, z));
            vt_tape_end(t);
            ASSERT_VT(y[half]);
            ASSERT_VT_OK(vt_backward(t, y[half], nullptr));
            g[half] = R(vt_retain(z->grad));
            vt_tape_free(t);
        }
        const double tol = dt == VT_BF16 ? 3e-2 : 4e-3;
        EXPECT_GT(RelErr(y[1], y[0]), 1e-6) << "the weights were not rounded";
        EXPECT_LT(RelErr(y[1], y[0]), tol);
        EXPECT_LT(RelErr(g[1], g[0]), 2 * tol);
    }
}
