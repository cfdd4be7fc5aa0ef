// sample.h — videos from a (LoRA-adapted) VideoCrafter2: what vader-sample runs, and the
// sampling + frame output the trainer's evaluation shares.
//
// Sampling is the training sampler itself (vt_vader_step with K = 0: DDIM with classifier-
// free guidance, no tape, no backward), with dropout off and x_T and the DDIM noise drawn
// from one RNG. vader-sample seeds that RNG per prompt with vt_sample_prompt_seed(seed, i),
// so a prompt's video does not depend on the other prompts given.
//
// Frames in [-1, 1] become RGB8 as torchvision's save_image does:
//   u8 = (uint8) clamp((x + 1) / 2 * 255 + 0.5, 0, 255)   (truncation; NaN -> 0)
// Files of one video in DIR: frame-000.png, frame-001.png, ... (train/png.h), video.gif
// (train/gif.h, fps from model.fps) and, when ffmpeg is on PATH, video.mp4 (H.264, yuv420p)
// made by ffmpeg from the PNG frames.
#pragma once
#include <stdint.h>
#include <stdio.h>
#include "core/vt.h"
#include "train/config.h"
#include "train/ddim.h"
#include "train/vader_step.h"

#ifdef __cplusplus
extern "C" {
#endif

// One no-grad sampling run of B = ctx->shape[0] videos with the given models, as training
// samples: x_T ~ N(0, 1) [B, 4, model.frames, H/8, W/8] then the DDIM noise from rng,
// sampler.* of cfg (steps from sched, eta, guidance_scale), the UNet's dropout set to 0,
// fps conditioning model.fps; frames `decode` (index decode_index) decoded. reward may be
// NULL (no score); r as vt_vader_step fills it (r->frames [B, 3, F, H, W]).
vt_err vt_sample_run(vt_unet3d *unet, vt_vae_decoder *vae, const vt_ddim_schedule *sched, const vt_config *cfg,
                     vt_tensor *ctx, vt_tensor *uncond_ctx, vt_rng *rng, vt_cfg_decode decode, int decode_index,
                     vt_vader_reward_fn reward, void *reward_user, vt_vader_step_result *r);

typedef struct vt_sampler vt_sampler;

// Builds the models of cfg as vader-train does (train/models.h). With lora_path (or, when
// NULL, cfg->lora.checkpoint) adds LoRA adapters of lora.rank / lora.alpha / lora.targets
// and loads the file into them (peft or state-dict names): a key the adapters lack, a
// missing or mis-shaped key, or lora_rank / lora_alpha metadata that disagree with the
// config are VT_ERR_KEY / VT_ERR_CONFIG errors naming the key. Neither: the base model.
vt_sampler *vt_sampler_create(const vt_config *cfg, const char *lora_path);
// One video of prompt: frames [1, 3, model.frames, H, W] (cpu f32, all frames decoded).
vt_tensor *vt_sampler_sample(vt_sampler *s, const char *prompt, uint64_t seed);
void vt_sampler_free(vt_sampler *s);
// The seed of prompt i of a vader-sample run with --seed seed.
uint64_t vt_sample_prompt_seed(uint64_t seed, int i);

// Frame f of video b of frames [B, 3, F, H, W] (cpu f32) as H*W*3 RGB8 (rule above).
void vt_frames_to_rgb8(const vt_tensor *frames, int b, int f, uint8_t *rgb);
// Writes frame-NNN.png of every frame of video b into dir (created).
vt_err vt_frames_write_pngs(const vt_tensor *frames, int b, const char *dir);
// Writes dir/video.gif of video b at fps frames a second.
vt_err vt_frames_write_gif(const vt_tensor *frames, int b, const char *dir, int fps);
// 1 when an executable ffmpeg is on PATH.
int vt_have_ffmpeg(void);
// dir/video.mp4 from dir/frame-%03d.png with ffmpeg (VT_ERR_IO when ffmpeg fails).
vt_err vt_frames_write_mp4(const char *dir, int fps);
// mkdir -p
vt_err vt_mkdir_p(const char *path);

#ifdef __cplusplus
}
#endif
