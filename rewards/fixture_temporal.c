// fixture_temporal.c — the fixture check of V-JEPA 2 and the temporal reward (model string
// "VJEPA2Model", scripts/make_vjepa_fixture.py): transformers' forward (encoder_hidden_state,
// predictor_output on io hf_mask.*, mask token 1), then the reward with the io's fixed masks
// mask.G.context / mask.G.target: pixel_values, pred.G, target.G, reward, loss and
// grad.frames = d loss / d frames.
#include <stdlib.h>
#include <string.h>
#include "core/ops.h"
#include "fixture_rewards.h"
#include "temporal.h"

#define MAX_FIXTURE_MASKS 16

// io i64 [K] -> malloc'ed ids
static int64_t *io_ids(vt_fixture *fx, const char *name, int64_t *n) {
    vt_tensor *t = vt_fixture_io_raw(fx, name);
    if (!t) return NULL;
    int64_t *ids = NULL;
    if (t->dtype != VT_I64 || t->ndim != 1) {
        vt_error(VT_ERR_CONFIG, "%s: io %s must be i64 [K]", fx->name, name);
    } else if ((ids = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *ids))) {
        memcpy(ids, vt_i64(t), (size_t)t->numel * sizeof *ids);
        *n = t->numel;
    } else {
        vt_error(VT_ERR_OOM, "%s: out of host memory", fx->name);
    }
    vt_release(t);
    return ids;
}

// transformers' VJEPA2Model.forward on io pixel_values with hf_mask.{context, target}
static vt_err check_hf_forward(vt_fixture *fx, const vt_fixture_opts *opt, vt_fixture_report *rep, vt_vjepa2 *m) {
    int64_t nc = 0, nt = 0;
    int64_t *ctx = io_ids(fx, "hf_mask.context", &nc), *tgt = ctx ? io_ids(fx, "hf_mask.target", &nt) : NULL;
    vt_tensor *pv = tgt ? vt_fixture_input(fx, "pixel_values") : NULL;
    if (!pv) {
        free(ctx);
        free(tgt);
        return vt_error_code();
    }
    vt_tape *ng = vt_nograd_begin();
    vt_tensor *enc = vt_vjepa2_encode(m, pv, NULL, 0);
    vt_fixture_compare(fx, opt, rep, "encoder_hidden_state", enc, 1);
    vt_tensor *z = vt_vjepa2_gather_tokens(enc, ctx, nc);
    vt_tensor *p = vt_vjepa2_predict(m, z, ctx, nc, tgt, nt, 1);
    vt_fixture_compare(fx, opt, rep, "predictor_output", p, 1);
    vt_nograd_end(ng);
    vt_err e = enc && p ? VT_OK : vt_error_code();
    vt_release(enc);
    vt_release(z);
    vt_release(p);
    vt_release(pv);
    free(ctx);
    free(tgt);
    return e;
}

vt_err vt_fixture_check_temporal(vt_fixture *fx, const vt_fixture_opts *opt, vt_fixture_report *rep) {
    vt_reward *r = vt_fixture_reward_create(fx, opt, "temporal");
    if (!r) return vt_error_code();
    vt_err e = VT_OK;
    vt_vjepa2_mask masks[MAX_FIXTURE_MASKS];
    memset(masks, 0, sizeof masks);
    int n_masks = 0;
    vt_vjepa2 *m = vt_reward_temporal_model(r);
    m->segments = opt->segments;
    if ((e = check_hf_forward(fx, opt, rep, m))) goto done;
    for (; n_masks < MAX_FIXTURE_MASKS; n_masks++) {
        char cn[64], tn[64];
        snprintf(cn, sizeof cn, "mask.%d.context", n_masks);
        snprintf(tn, sizeof tn, "mask.%d.target", n_masks);
        if (!vt_fixture_io_has(fx, cn)) break;
        vt_vjepa2_mask *k = &masks[n_masks];
        k->ctx = io_ids(fx, cn, &k->n_ctx);
        k->tgt = k->ctx ? io_ids(fx, tn, &k->n_tgt) : NULL;
        if (!k->tgt) {
            e = vt_error_code();
            n_masks++;
            goto done;
        }
    }
    if (n_masks && (e = vt_reward_temporal_set_masks(r, masks, n_masks))) goto done;
    e = vt_fixture_reward_run(fx, opt, rep, r, NULL);
done:
    for (int i = 0; i < n_masks; i++) vt_vjepa2_mask_free(&masks[i]);
    vt_reward_free(r);
    return e;
}
