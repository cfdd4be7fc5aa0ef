// fixture_unet.c — the fixture check of lvdm's UNetModel (vc2_unet_*): out = unet(x,
// timesteps, context, fps); grad.x, grad.context and grad.<weight key> (attention projection
// weights, named without the model.diffusion_model. prefix) = d sum(out * grad_out) / d X;
// the act.* top-level module outputs when the io file has them.
#include <stdlib.h>
#include <string.h>
#include "fixture_checks.h"
#include "unet3d.h"

vt_err vt_fixture_check_unet(vt_fixture *fx, const vt_fixture_opts *opt, vt_fixture_report *rep) {
    // the json holds UNetModel(**config) kwargs: what it leaves out has lvdm's default
    vt_unet3d_config cfg = vt_unet3d_config_lvdm_defaults();
    const cJSON *jc = vt_fixture_json(fx, "config");
    if (!jc) return vt_error(VT_ERR_CONFIG, "%s: no \"config\" object", fx->name);
    if (vt_unet3d_config_from_json(jc, &cfg)) return vt_error_context("%s: ", fx->name);
    const char *prefix = "model.diffusion_model.";
    const cJSON *jp = vt_fixture_json(fx, "weight_prefix");
    if (cJSON_IsString(jp)) prefix = jp->valuestring;
    vt_unet3d *u = vt_unet3d_build(fx->weights, prefix, &cfg);
    if (!u) return vt_error_context("%s: ", fx->name);
    if (opt->device != VT_CPU && vt_unet3d_to_device(u, opt->device)) {
        vt_unet3d_free(u);
        return vt_error_context("%s: ", fx->name);
    }
    if (opt->verbose)
        fprintf(stderr, "unet3d: %lld parameters, mc %d, %d levels\n", (long long)vt_unet3d_n_params(u),
                cfg.model_channels, cfg.n_levels);
    vt_unet3d_set_checkpoint(u, opt->segments);

    vt_err e = VT_OK;
    const char **gnames = NULL;
    int n_grads = vt_fixture_io_names(fx, "grad.", &gnames);
    vt_tensor **gtargets = calloc((size_t)n_grads + 1, sizeof *gtargets);
    const char **handled = calloc((size_t)n_grads + 1, sizeof *handled);
    int n_handled = 0;
    vt_tensor *x = vt_fixture_input(fx, "x"), *ts = vt_fixture_input(fx, "timesteps");
    vt_tensor *ctx = vt_fixture_input(fx, "context");
    vt_tensor *fps = vt_fixture_io_has(fx, "fps") ? vt_fixture_input(fx, "fps") : NULL;
    vt_tensor *gout = n_grads ? vt_fixture_input(fx, "grad_out") : NULL;
    vt_tensor *out = NULL;
    vt_tape *tape = NULL;
    if (!gtargets || !handled || !x || !ts || !ctx || (vt_fixture_io_has(fx, "fps") && !fps) || (n_grads && !gout)) {
        e = vt_error_code() ? vt_error_code() : vt_error(VT_ERR_OOM, "unet3d fixture: out of host memory");
        goto done;
    }
    // which tensors the gradients are asked for: inputs x / context or weights by key
    for (int i = 0; i < n_grads; i++) {
        const char *what = gnames[i] + 5;
        vt_tensor *t = strcmp(what, "x") == 0 ? x : strcmp(what, "context") == 0 ? ctx : vt_unet3d_param(u, what);
        if (!t) continue;  // reported as unsupported below
        vt_requires_grad(t, 1);
        gtargets[i] = t;
        handled[n_handled++] = gnames[i];
    }
    vt_fixture_act_ctx ac = {fx, opt, rep};
    vt_unet3d_set_act_hook(u, vt_fixture_compare_act, &ac);
    tape = vt_tape_begin();
    out = vt_unet3d_forward(u, x, ts, ctx, fps, 0);
    vt_tape_end(tape);
    vt_unet3d_set_act_hook(u, NULL, NULL);
    if (!out) {
        e = vt_error_code();
        goto done;
    }
    vt_fixture_compare(fx, opt, rep, "out", out, 1);
    if (n_handled) {
        e = vt_backward(tape, out, gout);
        for (int i = 0; !e && i < n_grads; i++)
            if (gtargets[i]) vt_fixture_compare(fx, opt, rep, gnames[i], gtargets[i]->grad, 1);
    }
    if (!e) vt_fixture_report_unsupported_grads(fx, rep, handled, n_handled);
    if (!e) vt_fixture_report_unvisited_acts(fx, rep);
done:
    vt_tape_free(tape);
    vt_release(out);
    for (int i = 0; gtargets && i < n_grads; i++)
        if (gtargets[i]) {
            vt_zero_grad(gtargets[i]);
            vt_requires_grad(gtargets[i], 0);
        }
    vt_release(x);
    vt_release(ts);
    vt_release(ctx);
    vt_release(fps);
    vt_release(gout);
    free(gtargets);
    free(handled);
    free(gnames);
    vt_unet3d_free(u);
    return e;
}
