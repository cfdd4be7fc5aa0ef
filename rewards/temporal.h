// temporal.h — the temporal-consistency reward ("temporal", V-JEPA 2 masked prediction), the
// parts beyond the vt_reward interface (rewards/temporal_reward.c).
//
// A video [b, 3, t, h, w] in [-1, 1] is resampled to the frame count V-JEPA takes (options.frames;
// 0: t itself, which must then be a multiple of the tubelet size 2), preprocessed as
// VJEPA2VideoProcessor (clamp((x + 1) / 2, 0, 1); shortest edge int(crop * 256 / 224),
// bilinear antialias; centre crop at ((size - crop) // 2); ImageNet mean / std), and for each
// mask G (context C_G, target T_G token ids): the context encoder runs on the tokens C_G only,
// the predictor (mask token G) predicts the features of T_G, and the target is
// layer_norm(encoder(full clip))[T_G] (no affine, eps 1e-5), computed without the tape.
//   loss_i = mean_G mean |pred_G - target_G|   (V-JEPA's L1 loss)      reward_i = -loss_i
// Options (strings): frames (0), image_size (the crop size; config crop_size or 256), heads,
// pred_heads (config or hidden/64, pred_hidden/32), prefix (""), seed (0), mask (multiblock | tube),
// blocks ("8x0.15,2x0.7": count x spatial scale per mask, V-JEPA 2's two generators),
// aspect ("0.75,1.5"), temporal_scale (1.0), ratio (0.9, tube masking). The masks are drawn once
// (deterministic in the seed and the token grid) and reused on every call.
#pragma once
#include "core/models/vjepa2.h"
#include "reward.h"

#ifdef __cplusplus
extern "C" {
#endif

// Replaces the module's masks by copies of masks[0..n) (each over the grid of the next forward;
// checked there). n == 0 goes back to the generated masks.
vt_err vt_reward_temporal_set_masks(vt_reward *r, const vt_vjepa2_mask *masks, int n);
// The module's model (to inspect or hook), or NULL when r is not a temporal reward.
vt_vjepa2 *vt_reward_temporal_model(vt_reward *r);

#ifdef __cplusplus
}
#endif
