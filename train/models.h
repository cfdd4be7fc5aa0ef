// models.h — the VideoCrafter2 models as vader-train and vader-sample build them from a
// config: each of model.unet / model.vae / model.text from a safetensors checkpoint (prefix
// detected), from a manifest (.txt: the full-size shapes, deterministic random values from
// the seed) or, when not set, the tiny random preset (train/tiny_models.h); then the
// cross-model checks (text width vs the UNet's context_dim, latent size vs the UNet's
// downsampling). Weights depend only on the config's seed and paths.
#pragma once
#include "core/models/openclip.h"
#include "core/models/unet3d.h"
#include "core/models/vae_decoder.h"
#include "core/tokenizer.h"
#include "rewards/reward.h"
#include "train/config.h"
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vt_vc2_models {
    vt_unet3d *unet;
    vt_vae_decoder *vae;
    vt_openclip *clip;  // text tower
} vt_vc2_models;

// Builds all three (no LoRA). On error nothing is left allocated (m zeroed) and the message
// names the config field and file.
vt_err vt_vc2_models_build(const vt_config *cfg, vt_vc2_models *m);
void vt_vc2_models_free(vt_vc2_models *m);
// model.dtype (train/memplan.h vt_memplan_run_dtype, for a run on the GPU or not): the UNet's
// and VAE decoder's frozen GEMM weights converted in place (vt_unet3d_set_weight_dtype). Call
// after building (LoRA may be added before or after) and before the models move to the GPU,
// so the weights are converted once on the host and uploaded at their final size.
vt_err vt_vc2_models_apply_dtype(vt_vc2_models *m, const vt_config *cfg, int on_cuda);

// The reward modules' frozen image-tower GEMM weights at the run's model.dtype, as the UNet's
// (rewards/reward.h vt_reward_set_weight_dtype): before the upload. NULL entries are skipped.
vt_err vt_rewards_apply_dtype(vt_reward *const *rewards, int n, const vt_config *cfg, int on_cuda);
// Caches every prompt the run can score (prompts[0..n_prompts) and the config's eval prompts)
// in the prompt-conditioned reward modules and frees their text towers (vt_reward_cache_prompts,
// vt_reward_drop_text_tower): the towers' memory goes to the step. NULL entries are skipped.
vt_err vt_rewards_cache_run_prompts(vt_reward *const *rewards, int n, const vt_config *cfg,
                                    const char *const *prompts, int n_prompts);

// model.random_weights: true turns each checkpoint the config NAMES but that is absent into
// the full-size shapes with random values: model.unet / vae / text -> the shared folder's
// manifests/videocrafter2_unet.txt, videocrafter2_vae_decoder.txt, openclip_vit_h_14.txt, and
// an hps / hpsv21 reward -> manifests/openclip_vit_h_14.txt (also when it names none); one
// line per substitution goes to log (may be NULL). Unset model paths keep the tiny preset;
// present files are used as they are; a reward with no manifest (aesthetic, pickscore, ...)
// keeps its path and fails at creation naming it. Nothing changes when random_weights is
// false. So `vader-train configs/hps.yaml --random-weights` runs the paper's shapes anywhere.
vt_err vt_vc2_random_weight_fallback(vt_config *cfg, FILE *log);

// The CLIP BPE tokenizer from the shared folder ($VADER_SHARED or the build's default).
vt_tokenizer *vt_vc2_tokenizer_open(void);

#ifdef __cplusplus
}
#endif
