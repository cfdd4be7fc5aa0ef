// fixture_checks.c — the model table of the fixture runner and the report it prints.
#include "fixture_checks.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

// One line per model family; the first whose substring occurs in the json's "model" wins.
const vt_fixture_kind vt_fixture_kinds[] = {
    {"VADER training step", "vader_step", vt_fixture_check_vader_step},
    {"AutoencoderKL", "vae_decoder", vt_fixture_check_vae},
    {"VJEPA2Model", "temporal", vt_fixture_check_temporal},  // rewards/fixture_temporal.c (library vader)
    {"vader reward", "reward", vt_fixture_check_reward},  // rewards/fixture_rewards.c (library vader)
    {"open_clip", "openclip", vt_fixture_check_openclip},
    {"UNetModel", "unet3d", vt_fixture_check_unet},
    {NULL, NULL, NULL},
};

const vt_fixture_kind *vt_fixture_detect(const char *model) {
    for (const vt_fixture_kind *k = vt_fixture_kinds; model && k->model_contains; k++)
        if (strstr(model, k->model_contains)) return k;
    char known[256] = "";
    for (const vt_fixture_kind *k = vt_fixture_kinds; k->model_contains; k++) {
        size_t n = strlen(known);
        snprintf(known + n, sizeof known - n, "%s\"%s\"", n ? ", " : "", k->model_contains);
    }
    vt_error(VT_ERR_CONFIG, "fixture model \"%s\" is none of the known kinds (%s)", model ? model : "(none)", known);
    return NULL;
}

// ---- report ------------------------------------------------------------------------------
void vt_fixture_report_free(vt_fixture_report *rep) {
    if (!rep) return;
    free(rep->r);
    rep->r = NULL;
    rep->n = rep->cap = rep->n_fail = 0;
}

static vt_fixture_result *report_push(vt_fixture_report *rep, const char *name) {
    if (rep->n == rep->cap) {
        int cap = rep->cap ? 2 * rep->cap : 32;
        vt_fixture_result *r = realloc(rep->r, (size_t)cap * sizeof *r);
        if (!r) return NULL;
        rep->r = r;
        rep->cap = cap;
    }
    vt_fixture_result *e = &rep->r[rep->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    return e;
}

void vt_fixture_report_fail(vt_fixture_report *rep, const char *name, const char *note) {
    vt_fixture_result *e = report_push(rep, name);
    if (!e) {
        rep->n_fail++;
        return;
    }
    e->rel_err = INFINITY;
    e->checked = 1;
    e->ok = 0;
    snprintf(e->note, sizeof e->note, "%s", note ? note : "");
    rep->n_fail++;
}

void vt_fixture_report_add(vt_fixture_report *rep, const vt_fixture_opts *opt, const char *name,
                           const vt_tensor *got, const vt_tensor *want, int checked) {
    char n1[VT_SHAPE_BUF], n2[VT_SHAPE_BUF], note[160];
    if (!got || !want) {
        vt_fixture_report_fail(rep, name, !got ? "not computed" : "not in the io file");
        return;
    }
    if (!vt_same_shape(got, want)) {
        snprintf(note, sizeof note, "shape %s, expected %s", vt_shape_str(got, n1, sizeof n1),
                 vt_shape_str(want, n2, sizeof n2));
        vt_fixture_report_fail(rep, name, note);
        return;
    }
    vt_tensor *gh = vt_on_device(got, VT_CPU), *wh = vt_on_device(want, VT_CPU);  // compared on the host
    vt_tensor *a = !gh ? NULL : gh->dtype == VT_F32 ? vt_retain(gh) : vt_to_dtype(gh, VT_F32);
    vt_tensor *b = !wh ? NULL : wh->dtype == VT_F32 ? vt_retain(wh) : vt_to_dtype(wh, VT_F32);
    vt_release(gh);
    vt_release(wh);
    double err = a && b ? vt_rel_err(a, b) : INFINITY;
    vt_release(a);
    vt_release(b);
    vt_fixture_result *e = report_push(rep, name);
    int ok = err <= opt->tol;  // NaN compares false: fails
    if (e) {
        e->rel_err = err;
        e->checked = checked;
        e->ok = ok;
    }
    if (checked && !ok) rep->n_fail++;
    if (opt->verbose) fprintf(stderr, "  compared %s: %.3e\n", name, err);
}

void vt_fixture_compare(vt_fixture *fx, const vt_fixture_opts *opt, vt_fixture_report *rep, const char *name,
                        const vt_tensor *got, int checked) {
    if (!vt_fixture_io_has(fx, name)) {
        vt_fixture_report_fail(rep, name, "not in the io file");
        return;
    }
    vt_tensor *want = vt_fixture_io_raw(fx, name);
    if (!want) {
        vt_fixture_report_fail(rep, name, vt_error_message());
        return;
    }
    vt_fixture_report_add(rep, opt, name, got, want, checked);
    vt_release(want);
}

void vt_fixture_report_print(const vt_fixture_report *rep, const vt_fixture_opts *opt, FILE *f) {
    int w = 8;
    for (int i = 0; i < rep->n; i++) {
        int l = (int)strlen(rep->r[i].name);
        if (l > w) w = l;
    }
    for (int i = 0; i < rep->n; i++) {
        const vt_fixture_result *e = &rep->r[i];
        const char *verdict = e->ok ? "OK" : e->checked ? "FAIL" : "DIFF (not checked)";
        if (isinf(e->rel_err))
            fprintf(f, "%-*s  %9s  %s%s%s\n", w, e->name, "-", verdict, e->note[0] ? "  " : "", e->note);
        else
            fprintf(f, "%-*s  %9.3e  %s\n", w, e->name, e->rel_err, verdict);
    }
    fprintf(f, "%s: %d tensors, %d failed (tolerance %.1e)\n", rep->model[0] ? rep->model : "fixture", rep->n,
            rep->n_fail, rep->tol > 0 ? rep->tol : opt->tol);
}

void vt_fixture_report_unsupported_grads(vt_fixture *fx, vt_fixture_report *rep, const char *const *handled,
                                         int n_handled) {
    const char **names = NULL;
    int n = vt_fixture_io_names(fx, "grad.", &names);
    for (int i = 0; i < n; i++) {
        int ok = 0;
        for (int j = 0; j < n_handled; j++) ok |= strcmp(names[i], handled[j]) == 0;
        if (!ok) vt_fixture_report_fail(rep, names[i], "gradient not computed by this check");
    }
    free(names);
}


void vt_fixture_report_unvisited_acts(vt_fixture *fx, vt_fixture_report *rep) {
    const char **names = NULL;
    int n = vt_fixture_io_names(fx, "act.", &names);
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int j = 0; j < rep->n && !seen; j++) seen = strcmp(rep->r[j].name, names[i]) == 0;
        if (seen) continue;
        vt_fixture_result *e = report_push(rep, names[i]);
        if (!e) break;
        e->rel_err = INFINITY;  // checked = 0: reported, not failed
        snprintf(e->note, sizeof e->note, "no module output of that name here");
    }
    free(names);
}

static vt_device g_fixture_device = VT_CPU;
vt_device vt_fixture_device(void) { return g_fixture_device; }

vt_tensor *vt_fixture_input(vt_fixture *fx, const char *name) {
    vt_tensor *raw = vt_fixture_io_raw(fx, name);
    if (!raw) return NULL;
    // a private copy: the io tensors are read-only views of the mapped file
    vt_tensor *t = raw->dtype == VT_F32 || raw->dtype == VT_I64 ? vt_clone(raw) : vt_to_dtype(raw, VT_F32);
    vt_release(raw);
    if (t && t->dtype == VT_F32) t = vt_move_to(t, g_fixture_device);
    return t;
}

vt_err vt_fixture_run(const char *prefix, const vt_fixture_opts *opt, vt_fixture_report *rep) {
    vt_fixture *fx = vt_fixture_open(prefix);
    if (!fx) return vt_error_code();
    const char *model = NULL;
    vt_err e = vt_fixture_json_str(fx, "model", &model);
    const vt_fixture_kind *k = e ? NULL : vt_fixture_detect(model);
    if (!k) {
        e = vt_error_context("%s: ", prefix);
        vt_fixture_free(fx);
        return e;
    }
    snprintf(rep->model, sizeof rep->model, "%s", k->name);
    if (opt->verbose) fprintf(stderr, "%s: model \"%s\" -> %s check\n", prefix, model, k->name);
    // the case's own tolerance, when it states one and the caller did not choose
    vt_fixture_opts o = *opt;
    const cJSON *jt = vt_fixture_json(fx, "tolerance");
    if (!opt->tol_given && cJSON_IsNumber(jt) && jt->valuedouble >= 0) o.tol = jt->valuedouble;
    rep->tol = o.tol;
    g_fixture_device = opt->device;
    e = k->check(fx, &o, rep);
    g_fixture_device = VT_CPU;
    if (e) vt_error_context("%s (%s): ", prefix, k->name);
    vt_fixture_free(fx);
    return e;
}

void vt_fixture_compare_act(void *act_ctx, const char *name, vt_tensor *t) {
    vt_fixture_act_ctx *c = act_ctx;
    char key[200];
    snprintf(key, sizeof key, "act.%s", name);
    if (vt_fixture_io_has(c->fx, key)) vt_fixture_compare(c->fx, c->opt, c->rep, key, t, c->opt->acts_checked);
}
