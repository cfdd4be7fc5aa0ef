// fixture_checks.h — checking a model against a PyTorch fixture (shared/fixtures, format in
// DESIGN.md): NAME.json (config, 'call', 'spec'), NAME.weights.safetensors, NAME.io.safetensors
// (inputs, outputs, grad_out cotangent, grad.* = d sum(out * grad_out) / d X, act.*).
//
// One check function per model family runs the forward (and the vector-Jacobian products) the
// json describes and compares every tensor it computes with the io file's entry of the same
// name; the fixture runner (train/main_fixture.c, program vader-fixture) and the tests call
// the same functions. The model family is detected from the json's "model" string through
// vt_fixture_kinds[] (one line per family: add a model by adding a line there).
#pragma once
#include <stdio.h>
#include "../fixture.h"
#include "../tape.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vt_fixture_opts {
    double tol;        // max |a - b| / max |b| allowed (1e-4 default)
    int verbose;       // progress on stderr
    int acts_checked;  // act.* entries count for pass/fail (otherwise reported only)
    int segments;      // run blocks as checkpoint segments (the gradients must not change)
    vt_device device;  // where models and floating-point inputs live (results are compared on the host)
    int tol_given;     // tol was chosen by the caller: a json "tolerance" does not replace it
} vt_fixture_opts;

static inline vt_fixture_opts vt_fixture_opts_default(void) {
    vt_fixture_opts o = {1e-4, 0, 1, 0, VT_CPU, 0};
    return o;
}

typedef struct vt_fixture_result {
    char name[160];
    double rel_err;  // INFINITY when missing / mis-shaped / not computed
    int checked;     // counts for pass / fail
    int ok;
    char note[160];  // why it failed when not a numerical difference
} vt_fixture_result;

typedef struct vt_fixture_report {
    vt_fixture_result *r;
    int n, cap;
    int n_fail;  // checked entries above tolerance (or missing)
    double tol;  // the tolerance the run used (vt_fixture_run sets it; 0: opt->tol)
    char model[64];
} vt_fixture_report;

void vt_fixture_report_free(vt_fixture_report *rep);
// Adds one line: compares got with want (f32 cpu, same shape) at opt->tol.
void vt_fixture_report_add(vt_fixture_report *rep, const vt_fixture_opts *opt, const char *name,
                           const vt_tensor *got, const vt_tensor *want, int checked);
// Adds a failed line without numbers (missing output, unsupported gradient, ...).
void vt_fixture_report_fail(vt_fixture_report *rep, const char *name, const char *note);
// Compares got with the io entry `name` (a missing io entry or got == NULL fails the line).
void vt_fixture_compare(vt_fixture *fx, const vt_fixture_opts *opt, vt_fixture_report *rep, const char *name,
                        const vt_tensor *got, int checked);
// "name  rel_err  OK/FAIL" per line, then a summary line.
void vt_fixture_report_print(const vt_fixture_report *rep, const vt_fixture_opts *opt, FILE *f);

// Fails a line for every io grad.* entry not in handled[] (a fixture asking for a gradient
// the check does not compute never passes silently).
void vt_fixture_report_unsupported_grads(vt_fixture *fx, vt_fixture_report *rep, const char *const *handled,
                                         int n_handled);
// An unchecked line for every io act.* entry no line of rep names: a module output the fixture
// recorded but this model does not report (debugging aids, so not a failure, but visible).
void vt_fixture_report_unvisited_acts(vt_fixture *fx, vt_fixture_report *rep);
// f32 (or i64) cpu copy of an io entry, or NULL + VT_ERR_KEY naming the fixture and entry.
vt_tensor *vt_fixture_input(vt_fixture *fx, const char *name);
// The device of the run in progress (vt_fixture_run sets it from opts.device): vt_fixture_input
// puts f32 inputs there (i64 ones, host data by nature, stay on the host), and each check moves
// its models there after building them.
vt_device vt_fixture_device(void);

// A check: runs the model the fixture describes and fills rep. Returns an error only when the
// check could not run (bad config, missing weights, ...); numerical failures are in rep.
typedef vt_err (*vt_fixture_check_fn)(vt_fixture *fx, const vt_fixture_opts *opt, vt_fixture_report *rep);

// The context of an activation hook (vt_act_hook) comparing every submodule output NAME with
// the io entry "act.NAME" when the fixture recorded it: hook = vt_fixture_compare_act,
// hook_user = &(vt_fixture_act_ctx){fx, opt, rep}.
typedef struct vt_fixture_act_ctx {
    vt_fixture *fx;
    const vt_fixture_opts *opt;
    vt_fixture_report *rep;
} vt_fixture_act_ctx;
void vt_fixture_compare_act(void *act_ctx, const char *name, vt_tensor *t);

vt_err vt_fixture_check_vae(vt_fixture *fx, const vt_fixture_opts *opt, vt_fixture_report *rep);
vt_err vt_fixture_check_openclip(vt_fixture *fx, const vt_fixture_opts *opt, vt_fixture_report *rep);
// rewards/fixture_rewards.c: "vader reward: NAME" cases (scripts/make_reward_fixtures.py)
vt_err vt_fixture_check_reward(vt_fixture *fx, const vt_fixture_opts *opt, vt_fixture_report *rep);
// rewards/fixture_temporal.c: V-JEPA 2 and the temporal reward (scripts/make_vjepa_fixture.py)
vt_err vt_fixture_check_temporal(vt_fixture *fx, const vt_fixture_opts *opt, vt_fixture_report *rep);
vt_err vt_fixture_check_unet(vt_fixture *fx, const vt_fixture_opts *opt, vt_fixture_report *rep);
// One VADER training step (core/models/fixture_vader_step.c, running train/vader_step.c).
vt_err vt_fixture_check_vader_step(vt_fixture *fx, const vt_fixture_opts *opt, vt_fixture_report *rep);

typedef struct vt_fixture_kind {
    const char *model_contains;  // substring of the json's "model" string
    const char *name;
    vt_fixture_check_fn check;
} vt_fixture_kind;
// Terminated by an entry with model_contains == NULL.
extern const vt_fixture_kind vt_fixture_kinds[];
// The kind whose substring occurs in model, or NULL + VT_ERR_CONFIG listing the known ones.
const vt_fixture_kind *vt_fixture_detect(const char *model);

// Opens PREFIX (PREFIX.json, .weights.safetensors, .io.safetensors), detects the model and
// runs its check into rep. A json number "tolerance" sets the tolerance unless opt->tol_given.
vt_err vt_fixture_run(const char *prefix, const vt_fixture_opts *opt, vt_fixture_report *rep);

#ifdef __cplusplus
}
#endif
