// lora.c — LoRA names, loading and peft export (see lora.h).
#include "lora.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/safetensors.h"
#include "core/weights.h"

const char *vt_lora_state_name(const char *peft_name) {
    size_t n = strlen(VT_LORA_PEFT_PREFIX);
    return strncmp(peft_name, VT_LORA_PEFT_PREFIX, n) == 0 ? peft_name + n : peft_name;
}

char *vt_lora_peft_name(const char *state_name, char *buf, size_t n) {
    int k = snprintf(buf, n, "%s%s", VT_LORA_PEFT_PREFIX, state_name);
    return k < 0 || (size_t)k >= n ? NULL : buf;
}

vt_err vt_lora_targets_from_names(char *const *names, int n, unsigned *bits) {
    *bits = 0;
    for (int i = 0; i < n; i++) {
        const char *s = names[i];
        if (strcmp(s, "to_q") == 0) *bits |= VT_LORA_TO_Q;
        else if (strcmp(s, "to_k") == 0) *bits |= VT_LORA_TO_K;
        else if (strcmp(s, "to_v") == 0) *bits |= VT_LORA_TO_V;
        else if (strcmp(s, "to_out") == 0 || strcmp(s, "to_out.0") == 0) *bits |= VT_LORA_TO_OUT;
        else
            return vt_error(VT_ERR_CONFIG, "lora.targets: unknown module \"%s\" (known: to_q, to_k, to_v, to_out.0)", s);
    }
    if (!*bits) return vt_error(VT_ERR_CONFIG, "lora.targets: empty (need at least one of to_q, to_k, to_v, to_out.0)");
    return VT_OK;
}

vt_err vt_lora_load(vt_unet3d *u, vt_weights *store) {
    int n = vt_unet3d_n_lora(u);
    for (int i = 0; i < n; i++) {
        const char *peft;
        vt_tensor *dst = vt_unet3d_lora_param(u, i, &peft);
        const char *state = vt_lora_state_name(peft);
        const char *key = vt_weights_has(store, peft) ? peft : vt_weights_has(store, state) ? state : NULL;
        if (!key)
            return vt_error(VT_ERR_KEY, "lora load: missing %s (or %s)", peft, state);
        vt_tensor *src = vt_weights_get(store, key, dst->ndim, dst->shape);
        if (!src) return vt_error_context("lora load: ");
        vt_err e = vt_copy_into(dst, src);  // dst may live on the GPU
        vt_release(src);
        if (e) return vt_error_context("lora load %s: ", key);
    }
    return VT_OK;
}

vt_err vt_lora_load_file(vt_unet3d *u, const char *path) {
    vt_weights *w = vt_weights_open1(path);
    if (!w) return vt_error_context("lora %s: ", path);
    vt_err e = vt_lora_load(u, w);
    vt_weights_free(w);
    return e ? vt_error_context("%s: ", path) : VT_OK;
}

vt_tensor **vt_lora_params(const vt_unet3d *u, int *n) {
    *n = vt_unet3d_n_lora(u);
    vt_tensor **p = calloc((size_t)*n + 1, sizeof *p);
    if (!p) {
        vt_error(VT_ERR_OOM, "lora params: out of host memory");
        return NULL;
    }
    for (int i = 0; i < *n; i++) p[i] = vt_unet3d_lora_param(u, i, NULL);
    return p;
}

vt_st_job *vt_lora_save_job(const vt_unet3d *u, const char *path, int rank, double alpha, char *const *targets,
                            int n_targets, int64_t step, int n_extra, const char *const *extra_keys,
                            const char *const *extra_vals) {
    vt_st_job *j = vt_st_job_new(path);
    if (!j) return NULL;
    vt_err e = VT_OK;
    for (int i = 0; i < vt_unet3d_n_lora(u) && !e; i++) {
        const char *name;
        vt_tensor *t = vt_unet3d_lora_param(u, i, &name);
        e = vt_st_job_add(j, name, t);
    }
    char srank[32], salpha[64], sstep[32], stargets[256] = "";
    snprintf(srank, sizeof srank, "%d", rank);
    snprintf(salpha, sizeof salpha, "%.17g", alpha);
    snprintf(sstep, sizeof sstep, "%lld", (long long)step);
    for (int i = 0; i < n_targets; i++) {
        size_t l = strlen(stargets);
        snprintf(stargets + l, sizeof stargets - l, "%s%s", i ? "," : "", targets[i]);
    }
    const char *mk[6] = {"format", "lora_rank", "lora_alpha", "target_modules", "base_model", "step"};
    const char *mv[6] = {"pt", srank, salpha, stargets, "VideoCrafter2", sstep};
    for (int i = 0; i < 6 && !e; i++) e = vt_st_job_meta(j, mk[i], mv[i]);
    for (int i = 0; i < n_extra && !e; i++) e = vt_st_job_meta(j, extra_keys[i], extra_vals[i]);
    if (e) {
        vt_error_context("lora save: ");
        vt_st_job_free(j);
        return NULL;
    }
    return j;
}

vt_err vt_lora_save(const vt_unet3d *u, const char *path, int rank, double alpha, char *const *targets,
                    int n_targets, int64_t step, int n_extra, const char *const *extra_keys,
                    const char *const *extra_vals) {
    vt_st_job *j = vt_lora_save_job(u, path, rank, alpha, targets, n_targets, step, n_extra, extra_keys, extra_vals);
    vt_err e = j ? vt_st_job_write(j) : vt_error_code();
    vt_st_job_free(j);
    return e ? vt_error_context("lora save: ") : VT_OK;
}
