// fixture_vae.c — the fixture check of the AutoencoderKL decode path (vc2_vae_decoder_*):
// out = decoder(post_quant_conv(z / scale_factor)), grad.z = d sum(out * grad_out) / d z,
// and the act.* block outputs when the io file has them. z is one frame [B, C, h, w] or a
// video latent [B, C, T, h, w] (decode_first_stage_2DAE); a video's act.* entries are in
// decode_core's folded [(B*T), C, h, w] layout.
#include <stdlib.h>
#include <string.h>
#include "../ops.h"
#include "fixture_checks.h"
#include "vae_decoder.h"

// The weight prefix: the json's "weight_prefix", else the checkpoint's "first_stage_model."
// when the store has it, else none (a bare decoder state dict).
static const char *vae_prefix(vt_fixture *fx) {
    const cJSON *jp = vt_fixture_json(fx, "weight_prefix");
    if (cJSON_IsString(jp)) return jp->valuestring;
    return vt_weights_has(fx->weights, "first_stage_model.post_quant_conv.weight") ? "first_stage_model." : "";
}

// Config from the json: "config" (ddconfig) plus the top-level scale_factor / embed_dim
// (AutoencoderKL's arguments). Without an embed_dim anywhere, vt_vae_decoder_build takes
// post_quant_conv's input width in the store (lvdm: Conv2d(embed_dim, z_channels, 1)).
static vt_err vae_fixture_config(vt_fixture *fx, vt_vae_config *cfg) {
    const cJSON *jc = vt_fixture_json(fx, "config");
    if (!jc) return vt_error(VT_ERR_CONFIG, "%s: no \"config\" object", fx->name);
    if (vt_vae_config_from_json(jc, cfg)) return vt_error_context("%s: ", fx->name);
    double v;
    if (vt_fixture_json(fx, "scale_factor")) {
        if (vt_fixture_json_double(fx, "scale_factor", &v)) return vt_error_code();
        cfg->scale_factor = (float)v;
    }
    if (vt_fixture_json(fx, "embed_dim")) {
        if (vt_fixture_json_double(fx, "embed_dim", &v)) return vt_error_code();
        cfg->embed_dim = (int)v;
    }  // else: vt_vae_decoder_build reads it from post_quant_conv's shape
    return VT_OK;
}

// A video latent's activations: the decoder on the folded frames, without a tape (the checked
// output and gradient come from vt_vae_decode_video, the path VADER runs).
static void video_acts(vt_vae_decoder *d, vt_tensor *z) {
    int64_t B = z->shape[0], C = z->shape[1], T = z->shape[2], h = z->shape[3], w = z->shape[4];
    vt_tensor *p = vt_permute(z, 5, (const int[]){0, 2, 1, 3, 4});
    vt_tensor *zf = p ? vt_reshape(p, 4, (int64_t[]){B * T, C, h, w}) : NULL;
    vt_release(p);
    vt_release(zf ? vt_vae_decode(d, zf) : NULL);
    vt_release(zf);
}

vt_err vt_fixture_check_vae(vt_fixture *fx, const vt_fixture_opts *opt, vt_fixture_report *rep) {
    vt_vae_config cfg = vt_vae_config_videocrafter2();
    const char *prefix = vae_prefix(fx);
    if (vae_fixture_config(fx, &cfg)) return vt_error_code();
    vt_vae_decoder *d = vt_vae_decoder_build(fx->weights, prefix, &cfg);
    if (!d) return vt_error_code();
    vt_err e = vt_weights_finish(fx->weights, prefix);
    if (!e && opt->device != VT_CPU) e = vt_vae_decoder_to_device(d, opt->device);
    if (e) {
        vt_vae_decoder_free(d);
        return e;
    }
    if (opt->verbose)
        fprintf(stderr, "vae decoder: %lld parameters, %d levels, ch %d\n", (long long)d->n_params, cfg.n_levels, cfg.ch);
    d->segments = opt->segments;
    vt_fixture_act_ctx ac = {fx, opt, rep};
    d->hook = vt_fixture_compare_act;
    d->hook_user = &ac;

    vt_tensor *z = vt_fixture_input(fx, "z");
    int want_grad = vt_fixture_io_has(fx, "grad.z") && vt_fixture_io_has(fx, "grad_out");
    vt_tensor *gout = want_grad ? vt_fixture_input(fx, "grad_out") : NULL;
    if (!z || (want_grad && !gout)) {
        e = vt_error_code();
        goto done;
    }
    if (z->ndim == 5) {
        video_acts(d, z);
        d->hook = NULL;  // the per-frame decode below would report each frame against the folded acts
    }
    if (want_grad) vt_requires_grad(z, 1);
    vt_tape *tape = vt_tape_begin();
    vt_tensor *out = z->ndim == 5 ? vt_vae_decode_video(d, z) : vt_vae_decode(d, z);
    vt_tape_end(tape);
    d->hook = NULL;  // a segment's recompute in backward must not report again
    if (!out) {
        e = vt_error_code();
        vt_tape_free(tape);
        goto done;
    }
    vt_fixture_compare(fx, opt, rep, "out", out, 1);
    if (want_grad) {
        e = vt_backward(tape, out, gout);
        if (!e) vt_fixture_compare(fx, opt, rep, "grad.z", z->grad, 1);
    }
    vt_tape_free(tape);
    vt_release(out);
    const char *handled[] = {"grad.z"};
    if (!e) vt_fixture_report_unsupported_grads(fx, rep, handled, 1);
    if (!e) vt_fixture_report_unvisited_acts(fx, rep);
done:
    vt_release(z);
    vt_release(gout);
    vt_vae_decoder_free(d);
    return e;
}
