// fixture_vader_step.c — the fixture check of one whole VADER training step (vader_step_*):
// the DDIM schedule arrays, every sampling step's x_prev and pred_x0 for the given noise,
// the final samples, the decoded frames, the colour reward, the loss, and d loss / d every
// LoRA weight (grad.<state-dict name>). Everything that defines the case is read from the
// json (case: B, T, S, K, decode, guidance, eta, rank, alpha; unet_config; vae_config;
// schedule), so other cases of the same format are checked without code changes.
//
// The step itself is train/vader_step.c (this file only sets it up and compares): the
// vader_core library links against the train library for it.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "fixture_checks.h"
#include "unet3d.h"
#include "vae_decoder.h"
#include "train/ddim.h"
#include "train/lora.h"
#include "train/vader_step.h"

typedef struct step_case {
    int64_t S, K, backprop_step;
    double guidance, eta, rank, alpha;
    vt_cfg_decode decode;
    int decode_index;
    vt_cfg_backprop mode;
} step_case;

static vt_err read_case(vt_fixture *fx, step_case *c) {
    memset(c, 0, sizeof *c);
    const char *dec = NULL;
    if (vt_fixture_json_int(fx, "case.S", &c->S) || vt_fixture_json_int(fx, "case.K", &c->K) ||
        vt_fixture_json_double(fx, "case.guidance", &c->guidance) || vt_fixture_json_double(fx, "case.eta", &c->eta) ||
        vt_fixture_json_double(fx, "case.rank", &c->rank) || vt_fixture_json_double(fx, "case.alpha", &c->alpha))
        return vt_error_code();
    const cJSON *jd = vt_fixture_json(fx, "case.decode");
    char buf[32];
    if (cJSON_IsNumber(jd)) {
        snprintf(buf, sizeof buf, "%d", jd->valueint);
        dec = buf;
    } else if (vt_fixture_json_str(fx, "case.decode", &dec)) {
        return vt_error_code();
    }
    if (strcmp(dec, "-1") == 0) c->decode = VT_CFG_DECODE_RANDOM;
    else if (strcmp(dec, "fml") == 0) c->decode = VT_CFG_DECODE_FML;
    else if (strcmp(dec, "alt") == 0) c->decode = VT_CFG_DECODE_ALT;
    else if (strcmp(dec, "all") == 0) c->decode = VT_CFG_DECODE_ALL;
    else {
        // VADER decodes samples[:, :, N:N+1] for an integer N other than -1: a negative N counts
        // from the end as Python does ("-2" is frame T-2); resolved once T is known.
        char *end;
        long v = strtol(dec, &end, 10);
        if (*dec == '\0' || *end != '\0' || v < -VT_VADER_MAX_FRAMES || v > VT_VADER_MAX_FRAMES)
            return vt_error(VT_ERR_CONFIG, "%s: case.decode \"%s\" is none of -1, fml, alt, all or a frame index", fx->name, dec);
        c->decode = VT_CFG_DECODE_INDEX;
        c->decode_index = (int)v;
    }
    // a random frame ("-1") is reproducible when the fixture names the frame it drew
    int64_t fi;
    if (c->decode == VT_CFG_DECODE_RANDOM && vt_fixture_json(fx, "case.frame_index") &&
        vt_fixture_json_int(fx, "case.frame_index", &fi) == VT_OK) {
        c->decode = VT_CFG_DECODE_INDEX;
        c->decode_index = (int)fi;
    }
    c->mode = VT_CFG_BACKPROP_LAST;
    const char *mode = NULL;
    if (vt_fixture_json(fx, "case.backprop_mode") && vt_fixture_json_str(fx, "case.backprop_mode", &mode) == VT_OK &&
        strcmp(mode, "specific") == 0) {
        c->mode = VT_CFG_BACKPROP_SPECIFIC;
        if (vt_fixture_json_int(fx, "case.backprop_step", &c->backprop_step)) return vt_error_code();
    } else if (mode && strcmp(mode, "last") != 0) {
        return vt_error(VT_ERR_CONFIG, "%s: case.backprop_mode \"%s\" cannot be reproduced (last or specific)", fx->name, mode);
    }
    return VT_OK;
}

// The colour projection named in the json's "reward" text ("... rgb = [0.7, -0.2, 0.5] ..."):
// a case with other colours is checked with its own. Without one the default stays.
static vt_err read_reward_rgb(vt_fixture *fx, float rgb[3]) {
    memcpy(rgb, vt_color_reward_rgb, 3 * sizeof *rgb);
    const cJSON *r = vt_fixture_json(fx, "reward");
    if (!cJSON_IsString(r)) return VT_OK;
    const char *p = strstr(r->valuestring, "rgb = [");
    if (!p) return VT_OK;
    if (sscanf(p, "rgb = [%f , %f , %f ]", &rgb[0], &rgb[1], &rgb[2]) != 3)
        return vt_error(VT_ERR_CONFIG, "%s: reward: cannot read the three numbers of \"rgb = [...]\"", fx->name);
    return VT_OK;
}

static vt_err read_schedule(vt_fixture *fx, const step_case *c, vt_ddim_options *o) {
    *o = vt_ddim_default_options((int)c->S, c->eta);
    // only eps prediction and lvdm's "linear" betas are implemented: anything else is refused
    // by name rather than sampled the eps / linear way
    const char *str = NULL;
    if (vt_fixture_json(fx, "schedule.parameterization") &&
        (vt_fixture_json_str(fx, "schedule.parameterization", &str) || strcmp(str, "eps") != 0))
        return vt_error(VT_ERR_CONFIG, "%s: schedule.parameterization \"%s\" (only eps is implemented)", fx->name,
                        str ? str : "?");
    if (vt_fixture_json(fx, "schedule.beta") &&
        (vt_fixture_json_str(fx, "schedule.beta", &str) || !strstr(str, "linear") || strstr(str, "cosine")))
        return vt_error(VT_ERR_CONFIG, "%s: schedule.beta \"%s\" (only lvdm's linear betas are implemented)", fx->name,
                        str ? str : "?");
    const struct {
        const char *path;
        double *dst;
    } d[] = {{"schedule.linear_start", &o->linear_start}, {"schedule.linear_end", &o->linear_end},
             {"schedule.scale_a", &o->scale_a}, {"schedule.scale_b", &o->scale_b}};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        if (vt_fixture_json(fx, d[i].path) && vt_fixture_json_double(fx, d[i].path, d[i].dst)) return vt_error_code();
    int64_t v;
    if (vt_fixture_json(fx, "schedule.use_scale")) {
        if (vt_fixture_json_int(fx, "schedule.use_scale", &v)) return vt_error_code();
        o->use_scale = (int)v;
    }
    if (vt_fixture_json(fx, "schedule.mid_step")) {
        if (vt_fixture_json_int(fx, "schedule.mid_step", &v)) return vt_error_code();
        o->mid_step = (int)v;
    }
    if (vt_fixture_json(fx, "schedule.timesteps")) {
        if (vt_fixture_json_int(fx, "schedule.timesteps", &v)) return vt_error_code();
        if (v != VT_DDPM_STEPS)
            return vt_error(VT_ERR_CONFIG, "%s: schedule.timesteps %lld (only %d supported)", fx->name, (long long)v,
                            VT_DDPM_STEPS);
    }
    return VT_OK;
}

static vt_tensor *f32_of_doubles(const double *v, int n) {
    vt_tensor *t = vt_new_f32(1, (int64_t[]){n});
    if (t)
        for (int i = 0; i < n; i++) vt_f32(t)[i] = (float)v[i];
    return t;
}

static void compare_schedule(vt_fixture *fx, const vt_fixture_opts *opt, vt_fixture_report *rep, const vt_ddim_schedule *s) {
    int S = s->steps;
    double ts[VT_DDPM_STEPS];
    for (int i = 0; i < S; i++) ts[i] = (double)s->timesteps[i];
    const struct {
        const char *name;
        const double *v;
        int n;
    } a[] = {{"schedule.alphas_cumprod", s->alphas_cumprod, VT_DDPM_STEPS},
             {"schedule.scale_arr", s->scale_arr, VT_DDPM_STEPS},
             {"ddim.timesteps", ts, S},
             {"ddim.alphas", s->alphas, S},
             {"ddim.alphas_prev", s->alphas_prev, S},
             {"ddim.sigmas", s->sigmas, S},
             {"ddim.scale_arr", s->scale, S},
             {"ddim.scale_arr_prev", s->scale_prev, S}};
    for (size_t i = 0; i < sizeof a / sizeof a[0]; i++) {
        if (!vt_fixture_io_has(fx, a[i].name)) continue;
        vt_tensor *got = f32_of_doubles(a[i].v, a[i].n);
        vt_tensor *want = vt_fixture_input(fx, a[i].name);
        vt_tensor *wf = want && want->dtype != VT_F32 ? vt_to_dtype(want, VT_F32) : vt_retain(want);
        vt_fixture_report_add(rep, opt, a[i].name, got, wf, 1);
        vt_release(got);
        vt_release(want);
        vt_release(wf);
    }
}

// LoRA targets from the weights present (to_q / to_k / to_v / to_out.0 with a lora_A).
static unsigned lora_targets_in(vt_weights *w) {
    unsigned bits = 0;
    for (int i = 0; i < vt_weights_n_keys(w); i++) {
        const char *k = vt_weights_key(w, i);
        if (!strstr(k, ".lora_A.")) continue;
        if (strstr(k, ".to_q.lora_A.")) bits |= VT_LORA_TO_Q;
        if (strstr(k, ".to_k.lora_A.")) bits |= VT_LORA_TO_K;
        if (strstr(k, ".to_v.lora_A.")) bits |= VT_LORA_TO_V;
        if (strstr(k, ".to_out.0.lora_A.")) bits |= VT_LORA_TO_OUT;
    }
    return bits;
}

vt_err vt_fixture_check_vader_step(vt_fixture *fx, const vt_fixture_opts *opt, vt_fixture_report *rep) {
    step_case c;
    if (read_case(fx, &c)) return vt_error_context("%s: ", fx->name);
    // the json holds UNetModel(**config) kwargs: what it leaves out has lvdm's default
    vt_unet3d_config ucfg = vt_unet3d_config_lvdm_defaults();
    vt_vae_config vcfg = vt_vae_config_videocrafter2();
    const cJSON *ju = vt_fixture_json(fx, "unet_config"), *jv = vt_fixture_json(fx, "vae_config");
    if (!ju || !jv) return vt_error(VT_ERR_CONFIG, "%s: no \"unet_config\" / \"vae_config\" object", fx->name);
    if (vt_unet3d_config_from_json(ju, &ucfg) || vt_vae_config_from_json(jv, &vcfg))
        return vt_error_context("%s: ", fx->name);
    double sf;
    if (vt_fixture_json(fx, "scale_factor")) {
        if (vt_fixture_json_double(fx, "scale_factor", &sf)) return vt_error_code();
        vcfg.scale_factor = (float)sf;
    }
    vt_ddim_options dopt;
    if (read_schedule(fx, &c, &dopt)) return vt_error_context("%s: ", fx->name);
    vt_ddim_schedule sched;
    if (vt_ddim_init(&sched, &dopt)) return vt_error_context("%s: ", fx->name);
    compare_schedule(fx, opt, rep, &sched);

    vt_err e = VT_OK;
    vt_unet3d *u = NULL;
    vt_vae_decoder *vae = NULL;
    vt_tensor *x_T = NULL, *ctx = NULL, *uctx = NULL, *fps = NULL, **noise = NULL, *loss_t = NULL;
    const char **handled = NULL;
    int n_handled = 0;
    vt_vader_step_result res = {0};
    // the LoRA weights sit under the UNet's prefix: not the UNet's own keys
    for (int i = 0; i < vt_weights_n_keys(fx->weights); i++)
        if (strstr(vt_weights_key(fx->weights, i), ".lora_")) vt_weights_mark_used(fx->weights, vt_weights_key(fx->weights, i));
    u = vt_unet3d_build(fx->weights, "model.diffusion_model.", &ucfg);
    if (!u) {
        e = vt_error_code();
        goto done;
    }
    const char *vprefix = "first_stage_model.";
    vae = vt_vae_decoder_build(fx->weights, vprefix, &vcfg);
    if (!vae || (e = vt_weights_finish(fx->weights, vprefix))) {
        e = vt_error_code();
        goto done;
    }
    unsigned targets = lora_targets_in(fx->weights);
    vt_unet3d_lora_config lc = {(int)c.rank, (float)c.alpha, targets ? targets : VT_LORA_TO_Q | VT_LORA_TO_K | VT_LORA_TO_V, 0};
    if ((e = vt_unet3d_add_lora(u, &lc)) || (e = vt_lora_load(u, fx->weights))) goto done;
    if (opt->device != VT_CPU && ((e = vt_unet3d_to_device(u, opt->device)) || (e = vt_vae_decoder_to_device(vae, opt->device))))
        goto done;

    x_T = vt_fixture_input(fx, "x_T");
    ctx = vt_fixture_input(fx, "context");
    uctx = vt_fixture_io_has(fx, "uncond_context") ? vt_fixture_input(fx, "uncond_context") : NULL;
    fps = vt_fixture_io_has(fx, "fps") ? vt_fixture_input(fx, "fps") : NULL;
    noise = calloc((size_t)sched.steps + 1, sizeof *noise);
    handled = calloc((size_t)vt_unet3d_n_lora(u) + 1, sizeof *handled);
    if (!x_T || !ctx || !noise || !handled || (c.guidance != 1.0 && !uctx)) {
        e = vt_error_code() ? vt_error_code() : vt_error(VT_ERR_OOM, "vader step fixture: out of host memory");
        goto done;
    }
    for (int i = 0; i < sched.steps; i++) {
        char name[32];
        snprintf(name, sizeof name, "noise.%d", i);
        if (!(noise[i] = vt_fixture_input(fx, name))) {
            e = vt_error_code();
            goto done;
        }
    }
    if (opt->verbose)
        fprintf(stderr, "vader step: unet %lld parameters, %d LoRA tensors, S %lld, K %lld, guidance %g\n",
                (long long)vt_unet3d_n_params(u), vt_unet3d_n_lora(u), (long long)sched.steps, (long long)c.K, c.guidance);

    int T = (int)x_T->shape[2];
    if (c.decode == VT_CFG_DECODE_INDEX && c.decode_index < 0) {
        if (c.decode_index + T < 0) {
            e = vt_error(VT_ERR_CONFIG, "case.decode %d: no such frame among %d", c.decode_index, T);
            goto done;
        }
        c.decode_index += T;
    }
    float rgb[3];
    if ((e = read_reward_rgb(fx, rgb))) goto done;

    vt_vader_step_args a;
    vt_vader_step_args_init(&a, u, vae, &sched, x_T, ctx, uctx, fps);
    a.reward_user = rgb;
    a.noise = noise;
    a.guidance = (float)c.guidance;
    a.K = (int)c.K;
    a.backprop_mode = c.mode;
    a.backprop_step = (int)c.backprop_step;
    a.decode = c.decode;
    a.decode_index = c.decode_index;
    a.checkpointing = opt->segments;
    a.record_steps = 1;
    if (c.decode == VT_CFG_DECODE_RANDOM) {
        // the fixture's random frame is not named: sample once without a backward, decode every
        // frame, and take the one whose decode matches best (the sampling does not depend on it)
        vt_tensor *want = vt_fixture_input(fx, "frames");
        want = want ? vt_move_to(want, VT_CPU) : NULL;  // compared on the host
        double best = INFINITY;
        int best_t = 0;
        a.decode = VT_CFG_DECODE_ALL;
        a.backward = 0;
        if (want && !(e = vt_vader_step(&a, &res))) {
            for (int t = 0; t < res.n_frames; t++) {
                vt_tensor *ft = vt_slice(res.frames, 2, t, 1);
                vt_tensor *fh = ft ? vt_on_device(ft, VT_CPU) : NULL;
                double err = fh && vt_same_shape(fh, want) ? vt_rel_err(fh, want) : INFINITY;
                if (err < best) best = err, best_t = res.frame_index[t];
                vt_release(ft);
                vt_release(fh);
            }
            vt_vader_step_result_free(&res);
        }
        vt_release(want);
        if (e) goto done;
        a.decode = VT_CFG_DECODE_INDEX;
        a.decode_index = best_t;
        a.backward = 1;
        if (opt->verbose) fprintf(stderr, "vader step: decode -1 matched frame %d\n", best_t);
    }
    if ((e = vt_vader_step(&a, &res))) goto done;

    for (int i = 0; i < res.n_steps; i++) {
        char name[48];
        snprintf(name, sizeof name, "step.%d.x_prev", i);
        if (vt_fixture_io_has(fx, name)) vt_fixture_compare(fx, opt, rep, name, res.x_prev[i], 1);
        snprintf(name, sizeof name, "step.%d.pred_x0", i);
        if (vt_fixture_io_has(fx, name)) vt_fixture_compare(fx, opt, rep, name, res.pred_x0[i], 1);
    }
    vt_fixture_compare(fx, opt, rep, "samples", res.samples, 1);
    vt_fixture_compare(fx, opt, rep, "frames", res.frames, 1);
    vt_fixture_compare(fx, opt, rep, "reward", res.reward, 1);
    loss_t = vt_full(VT_CPU, 0, NULL, (float)res.loss);
    vt_fixture_compare(fx, opt, rep, "loss", loss_t, 1);
    char **gnames = calloc((size_t)vt_unet3d_n_lora(u) + 1, sizeof *gnames);
    for (int i = 0; gnames && i < vt_unet3d_n_lora(u); i++) {
        const char *peft;
        vt_tensor *p = vt_unet3d_lora_param(u, i, &peft);
        size_t len = strlen(peft) + 8;
        if (!(gnames[i] = malloc(len))) break;
        snprintf(gnames[i], len, "grad.%s", vt_lora_state_name(peft));
        if (!vt_fixture_io_has(fx, gnames[i])) continue;
        handled[n_handled++] = gnames[i];
        vt_tensor *g = p->grad ? vt_retain(p->grad) : vt_zeros(VT_F32, VT_CPU, p->ndim, p->shape);
        vt_fixture_compare(fx, opt, rep, gnames[i], g, 1);
        vt_release(g);
    }
    vt_fixture_report_unsupported_grads(fx, rep, handled, n_handled);
    for (int i = 0; gnames && i < vt_unet3d_n_lora(u); i++) free(gnames[i]);
    free(gnames);
done:
    vt_vader_step_result_free(&res);
    for (int i = 0; noise && i < sched.steps; i++) vt_release(noise[i]);
    free(noise);
    free(handled);
    vt_release(x_T);
    vt_release(ctx);
    vt_release(uctx);
    vt_release(fps);
    vt_release(loss_t);
    vt_unet3d_free(u);
    vt_vae_decoder_free(vae);
    vt_ddim_free(&sched);
    if (e) vt_error_context("%s: ", fx->name);
    return e;
}
