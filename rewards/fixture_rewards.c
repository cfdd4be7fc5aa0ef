// fixture_rewards.c — the fixture check of the reward modules ("vader reward: NAME ..." cases,
// made by scripts/make_reward_fixtures.py): builds the module the json's "reward" names with
// its "options" from the fixture's weights (every key must be used), scores io "frames" with
// the json's "prompts", and compares reward, loss, the intermediates the module reports
// (pixel_values, tokens, image_embeds, ...) and grad.frames = d loss / d frames. The building
// and scoring steps are shared with fixture_temporal.c (fixture_rewards.h).
#include "fixture_rewards.h"
#include <stdlib.h>
#include "core/ops.h"

static void compare_hooked(void *user, const char *name, vt_tensor *t) {
    vt_fixture_act_ctx *c = user;
    if (!vt_fixture_io_has(c->fx, name)) return;
    if (t->dtype == VT_I64) {  // token ids must agree exactly
        vt_tensor *want = vt_fixture_io_raw(c->fx, name);
        int64_t differ = 0;
        if (want && want->dtype == VT_I64 && vt_same_shape(want, t)) {
            for (int64_t i = 0; i < t->numel; i++) differ += vt_i64(t)[i] != vt_i64(want)[i];
        } else {
            differ = -1;
        }
        vt_release(want);
        if (differ) {
            char note[96];
            snprintf(note, sizeof note, differ < 0 ? "shape or dtype differs" : "%lld ids differ", (long long)differ);
            vt_fixture_report_fail(c->rep, name, note);
        } else {
            vt_tensor *a = vt_to_dtype(t, VT_F32);
            vt_fixture_report_add(c->rep, c->opt, name, a, a, 1);
            vt_release(a);
        }
        return;
    }
    vt_fixture_compare(c->fx, c->opt, c->rep, name, t, 1);
}

vt_reward *vt_fixture_reward_create(vt_fixture *fx, const vt_fixture_opts *opt, const char *name) {
    vt_reward_kv kv[32];
    char numbuf[32][64];
    int n_kv = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, vt_fixture_json(fx, "options")) {
        if (n_kv == 32) break;
        kv[n_kv].key = it->string;
        if (cJSON_IsString(it)) {
            kv[n_kv].value = it->valuestring;
        } else if (cJSON_IsNumber(it)) {
            snprintf(numbuf[n_kv], sizeof numbuf[n_kv], "%.17g", it->valuedouble);
            kv[n_kv].value = numbuf[n_kv];
        } else {
            vt_error(VT_ERR_CONFIG, "%s: options.%s must be a string or a number", fx->name, it->string);
            return NULL;
        }
        n_kv++;
    }
    vt_reward_options o = {NULL, NULL, vt_fixture_json(fx, "config"), kv, n_kv};
    vt_reward *r = vt_reward_create_from_weights(name, fx->weights, &o);
    if (!r) {
        vt_error_context("%s: ", fx->name);
        return NULL;
    }
    vt_err e = vt_weights_finish(fx->weights, "");
    if (!e && opt->device != VT_CPU) e = vt_reward_to_device(r, opt->device);
    if (e) {
        vt_reward_free(r);
        return NULL;
    }
    r->segments = opt->segments;
    return r;
}

vt_err vt_fixture_reward_run(vt_fixture *fx, const vt_fixture_opts *opt, vt_fixture_report *rep, vt_reward *r,
                             const char *const *prompts) {
    vt_tensor *frames = vt_fixture_input(fx, "frames"), *reward = NULL, *loss = NULL;
    if (!frames) return vt_error_code();
    vt_requires_grad(frames, 1);
    vt_fixture_act_ctx hc = {fx, opt, rep};
    r->hook = compare_hooked;
    r->hook_user = &hc;
    vt_tape *tape = vt_tape_begin();
    vt_err e = vt_reward_forward(r, frames, prompts, &reward, &loss);
    vt_tape_end(tape);
    r->hook = NULL;
    if (e) goto done;
    vt_fixture_compare(fx, opt, rep, "reward", reward, 1);
    vt_fixture_compare(fx, opt, rep, "loss", loss, 1);
    if (vt_fixture_io_has(fx, "grad.frames")) {
        if ((e = vt_backward(tape, loss, NULL))) goto done;
        vt_fixture_compare(fx, opt, rep, "grad.frames", frames->grad, 1);
    }
    const char *handled[] = {"grad.frames"};
    vt_fixture_report_unsupported_grads(fx, rep, handled, 1);
done:
    vt_tape_free(tape);
    vt_release(reward);
    vt_release(loss);
    vt_release(frames);
    return e;
}

vt_err vt_fixture_check_reward(vt_fixture *fx, const vt_fixture_opts *opt, vt_fixture_report *rep) {
    const char *name = NULL;
    if (vt_fixture_json_str(fx, "reward", &name)) return vt_error_code();
    vt_reward *r = vt_fixture_reward_create(fx, opt, name);
    if (!r) return vt_error_code();
    vt_err e = VT_OK;
    const cJSON *jp = vt_fixture_json(fx, "prompts");
    int n_prompts = cJSON_IsArray(jp) ? cJSON_GetArraySize(jp) : 0;
    const char **prompts = n_prompts ? calloc((size_t)n_prompts, sizeof *prompts) : NULL;
    if (n_prompts && !prompts) e = vt_error(VT_ERR_OOM, "%s: out of host memory", fx->name);
    for (int i = 0; !e && i < n_prompts; i++) {
        const cJSON *p = cJSON_GetArrayItem(jp, i);
        if (!cJSON_IsString(p)) e = vt_error(VT_ERR_CONFIG, "%s: prompts.%d is not a string", fx->name, i);
        else prompts[i] = p->valuestring;
    }
    if (!e) e = vt_fixture_reward_run(fx, opt, rep, r, prompts);
    free(prompts);
    vt_reward_free(r);
    return e;
}
