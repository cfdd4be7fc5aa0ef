// fixture_openclip.c — the fixture check of the open_clip towers (openclip_*): the
// VideoCrafter2 penultimate text conditioning, encode_image / encode_text, the HPS score and
// d sum(hps_score * grad_out) / d image (grad_out: ones when the io file has none).
#include <stdlib.h>
#include <string.h>
#include "fixture_checks.h"
#include "../tokenizer.h"
#include "openclip.h"

// The CLIP BPE merges file: next to the fixtures (PREFIX/../../tokenizer), under $VADER_SHARED,
// or in the shared folder the build was configured with. NULL when none is readable.
static vt_tokenizer *open_tokenizer(const vt_fixture *fx) {
    const char *rel = "tokenizer/bpe_simple_vocab_16e6.txt.gz";
    char path[4096];
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", fx->prefix);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    const char *env = getenv("VADER_SHARED");
    const char *cands[3] = {dir, env, VADER_SHARED_DIR};
    for (int i = 0; i < 3; i++) {
        if (!cands[i]) continue;
        snprintf(path, sizeof path, i == 0 ? "%s/../%s" : "%s/%s", cands[i], rel);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        fclose(f);
        vt_tokenizer *t = vt_tokenizer_open(path);
        if (t) return t;
        vt_error_clear();
    }
    return NULL;
}

// tokens = tokenize(prompts): ids must agree exactly (a relative error would let an id that is
// off by a few pass).
static void check_tokens(vt_fixture *fx, const vt_fixture_opts *opt, vt_fixture_report *rep, const vt_tensor *want) {
    const cJSON *prompts = vt_fixture_json(fx, "prompts");
    if (!cJSON_IsArray(prompts) || want->ndim != 2 || cJSON_GetArraySize(prompts) != want->shape[0]) return;
    vt_tokenizer *tok = open_tokenizer(fx);
    if (!tok) {
        if (opt->verbose) fprintf(stderr, "open_clip: no tokenizer file found, tokens not re-computed\n");
        return;
    }
    int64_t B = want->shape[0], L = want->shape[1];
    vt_tensor *got = vt_zeros(VT_I64, VT_CPU, 2, want->shape);
    int bad = got == NULL;
    for (int64_t b = 0; b < B && !bad; b++) {
        const cJSON *p = cJSON_GetArrayItem(prompts, (int)b);
        if (!cJSON_IsString(p) || vt_tokenize(tok, p->valuestring, vt_i64(got) + b * L, (int)L)) bad = 1;
    }
    vt_tokenizer_free(tok);
    if (bad) {
        vt_fixture_report_fail(rep, "tokens", vt_error_code() ? vt_error_message() : "prompts are not strings");
        vt_release(got);
        return;
    }
    int64_t differ = 0;
    for (int64_t i = 0; i < got->numel; i++) differ += vt_i64(got)[i] != vt_i64(want)[i];
    if (differ) {
        char note[96];
        snprintf(note, sizeof note, "%lld token ids differ", (long long)differ);
        vt_fixture_report_fail(rep, "tokens", note);
    } else {
        vt_fixture_report_add(rep, opt, "tokens", got, want, 1);
    }
    vt_release(got);
}

vt_err vt_fixture_check_openclip(vt_fixture *fx, const vt_fixture_opts *opt, vt_fixture_report *rep) {
    vt_openclip_config cfg;
    memset(&cfg, 0, sizeof cfg);
    const cJSON *jc = vt_fixture_json(fx, "config");
    if (jc && vt_openclip_config_from_json(jc, &cfg)) return vt_error_context("%s: ", fx->name);
    int towers = 0;
    if (vt_weights_has(fx->weights, "token_embedding.weight")) towers |= VT_OPENCLIP_TEXT;
    if (vt_weights_has(fx->weights, "visual.conv1.weight")) towers |= VT_OPENCLIP_VISION;
    vt_openclip *m = vt_openclip_build(fx->weights, "", &cfg, towers);
    if (!m) return vt_error_code();
    vt_err e = vt_weights_finish(fx->weights, "");
    if (!e && opt->device != VT_CPU) e = vt_openclip_to_device(m, opt->device);
    if (e) {
        vt_openclip_free(m);
        return e;
    }
    if (opt->verbose)
        fprintf(stderr, "open_clip: %lld parameters (text %lld, vision %lld)\n", (long long)m->n_params,
                (long long)m->n_params_text, (long long)m->n_params_visual);
    m->segments = opt->segments;
    vt_fixture_act_ctx ac = {fx, opt, rep};
    m->hook = vt_fixture_compare_act;
    m->hook_user = &ac;

    vt_tensor *tokens = NULL, *image = NULL, *gout = NULL, *ie = NULL, *te = NULL, *fi = NULL, *ft = NULL,
              *score = NULL;
    vt_tape *tape = NULL;
    int has_text = m->text && vt_fixture_io_has(fx, "tokens");
    int has_image = m->visual && vt_fixture_io_has(fx, "image");
    if (has_text) {
        tokens = vt_fixture_input(fx, "tokens");
        if (!tokens) goto fail;
        check_tokens(fx, opt, rep, tokens);
        if (vt_fixture_io_has(fx, "cond_penultimate")) {
            vt_tensor *cond = vt_openclip_encode_text_penultimate(m, tokens);
            if (!cond) goto fail;
            vt_fixture_compare(fx, opt, rep, "cond_penultimate", cond, 1);
            vt_release(cond);
        }
    }
    if (has_image) {
        image = vt_fixture_input(fx, "image");
        if (!image) goto fail;
        vt_requires_grad(image, 1);
    }
    tape = vt_tape_begin();
    if (has_image) ie = vt_openclip_encode_image(m, image);
    if (has_text) te = vt_openclip_encode_text(m, tokens);
    if (ie && te) score = vt_openclip_hps_score(ie, te, &fi, &ft);
    vt_tape_end(tape);
    m->hook = NULL;  // segment recomputes in backward must not report again
    if ((has_image && !ie) || (has_text && !te) || (ie && te && !score)) goto fail;
    if (ie) vt_fixture_compare(fx, opt, rep, "image_embed", ie, 1);
    if (te) vt_fixture_compare(fx, opt, rep, "text_embed", te, 1);
    if (score) {
        vt_fixture_compare(fx, opt, rep, "image_features", fi, 1);
        vt_fixture_compare(fx, opt, rep, "text_features", ft, 1);
        vt_fixture_compare(fx, opt, rep, "hps_score", score, 1);
        if (vt_fixture_io_has(fx, "grad.image")) {
            if (vt_fixture_io_has(fx, "grad_out") && !(gout = vt_fixture_input(fx, "grad_out"))) goto fail;
            if (vt_backward(tape, score, gout)) goto fail;
            vt_fixture_compare(fx, opt, rep, "grad.image", image->grad, 1);
        }
    }
    const char *handled[] = {"grad.image"};
    vt_fixture_report_unsupported_grads(fx, rep, handled, score ? 1 : 0);
    goto done;
fail:
    e = vt_error_code() ? vt_error_code() : VT_ERR_INTERNAL;
done:
    vt_tape_free(tape);
    vt_release(score);
    vt_release(fi);
    vt_release(ft);
    vt_release(ie);
    vt_release(te);
    vt_release(gout);
    vt_release(image);
    vt_release(tokens);
    vt_openclip_free(m);
    return e;
}
