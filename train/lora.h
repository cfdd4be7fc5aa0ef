// lora.h — LoRA adapters of the video UNet as files: the one place where LoRA names are
// converted between dialects, loading, and the peft-compatible export.
//
// Two spellings of one LoRA weight exist:
//   peft (what save_pretrained writes for get_peft_model(LatentDiffusion), VADER's layout and
//   the names vt_unet3d_lora_param gives):
//     base_model.model.model.diffusion_model.<path>.lora_A.weight
//   state-dict (the fixtures' weights / grad.* entries, a LatentDiffusion state dict with the
//   LoRA layers injected):
//     model.diffusion_model.<path>.lora_A.weight
// vt_lora_state_name / vt_lora_peft_name convert; everything else calls them.
#pragma once
#include "core/vt.h"
#include "core/models/unet3d.h"
#include "train/file_writer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VT_LORA_PEFT_PREFIX "base_model.model."

// peft name -> state-dict name (a pointer into peft_name: the prefix stripped; names without
// the prefix are returned unchanged).
const char *vt_lora_state_name(const char *peft_name);
// state-dict name -> peft name into buf (returns buf, or NULL if it does not fit).
char *vt_lora_peft_name(const char *state_name, char *buf, size_t n);

// Target module names ("to_q", "to_k", "to_v", "to_out" / "to_out.0") -> VT_LORA_* bits.
// VT_ERR_CONFIG naming the unknown one.
vt_err vt_lora_targets_from_names(char *const *names, int n, unsigned *bits);

// Copies every LoRA weight of u from store, which may use either spelling (peft tried
// first). Strict: a missing or mis-shaped weight is VT_ERR_KEY naming both spellings.
vt_err vt_lora_load(vt_unet3d *u, vt_weights *store);
// Same from a safetensors file (peft export or state dict).
vt_err vt_lora_load_file(vt_unet3d *u, const char *path);

// Writes the LoRA weights with peft names (atomic), metadata: format "pt", lora_rank,
// lora_alpha, target_modules (comma separated), base_model "VideoCrafter2", step, and any
// extra pairs given.
vt_err vt_lora_save(const vt_unet3d *u, const char *path, int rank, double alpha, char *const *targets,
                    int n_targets, int64_t step, int n_extra, const char *const *extra_keys,
                    const char *const *extra_vals);
// The same file as a job for train/file_writer.h (the LoRA weights snapshotted now), or NULL
// (error set).
vt_st_job *vt_lora_save_job(const vt_unet3d *u, const char *path, int rank, double alpha, char *const *targets,
                            int n_targets, int64_t step, int n_extra, const char *const *extra_keys,
                            const char *const *extra_vals);

// All LoRA parameters of u into a malloc'd array (borrowed tensors); *n gets the count.
vt_tensor **vt_lora_params(const vt_unet3d *u, int *n);

#ifdef __cplusplus
}
#endif
