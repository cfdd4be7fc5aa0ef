// fixture_vae.c — the fixture check of the AutoencoderKL decode path (vc2_vae_decoder_*):
// out = decoder(post_quant_conv(z / scale_factor)), grad.z = d sum(out * grad_out) / d z,
// and the act.* block outputs when the io file has them.
#include <stdlib.h>
#include <string.h>
#include "fixture_checks.h"
#include "vae_decoder.h"

vt_err vt_fixture_check_vae(vt_fixture *fx, const vt_fixture_opts *opt, vt_fixture_report *rep) {
    vt_vae_config cfg = vt_vae_config_videocrafter2();
    const cJSON *jc = vt_fixture_json(fx, "config");
    if (!jc) return vt_error(VT_ERR_CONFIG, "%s: no \"config\" object", fx->name);
    if (vt_vae_config_from_json(jc, &cfg)) return vt_error_context("%s: ", fx->name);
    double sf;
    if (vt_fixture_json(fx, "scale_factor")) {
        if (vt_fixture_json_double(fx, "scale_factor", &sf)) return vt_error_code();
        cfg.scale_factor = (float)sf;
    }
    // the fixture keeps the checkpoint's names; accept a bare decoder state dict as well
    const char *prefix = vt_weights_has(fx->weights, "first_stage_model.post_quant_conv.weight") ? "first_stage_model."
                                                                                                 : "";
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
done:
    vt_release(z);
    vt_release(gout);
    vt_vae_decoder_free(d);
    return e;
}
