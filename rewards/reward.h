// reward.h — the one interface of vader's reward modules (DESIGN.md "Rewards").
//
// A module takes decoded frames in [-1, 1] on the tape and prompts, and returns a reward per
// sample and a differentiable scalar loss (the VADER loss of that reward). Preprocessing
// (clamp, resize with antialias, centre crop, CLIP normalisation) is part of the module and is
// recorded on the tape like everything else, so d loss / d frames flows back to the VAE.
//
//   name        model (checkpoint layout)                    reward r[i]                 loss (mean over i)
//   aesthetic   CLIP ViT-L/14 vision (HF CLIPModel) + LAION    MLP(normalize(img_embed))   |r - target| * scale
//               aesthetic MLP head (layers.{0,2,4,6,7})                                    (target 10, scale 0.1;
//                                                                                           target "none": -r * scale)
//   hps         open_clip ViT-H-14 (HPSv2 state dict)          <norm(img), norm(txt)>      1 - r
//   hpsv21      same code, HPSv2.1 weights
//   pickscore   CLIP-H (HF CLIPModel, PickScore_v1)            exp(logit_scale) * cos      |1 - r / 100|
//   color       none                                           mean_{h,w} sum_c img_c rgb_c  -r
//   action      VideoMAE (HF VideoMAEForVideo-                 log p(class | clip)         -log p(class)
//               Classification, Kinetics-400)                 (reward: prob -> p)          (VADER's cross-entropy)
//   temporal    V-JEPA 2 (HF VJEPA2Model: encoder + predictor)    -L1(predicted, target         -r
//               on the whole video (temporal.h)                   features of masked tubelets)
//   object_removal YOLOS (HF YolosForObjectDetection,     -confidence of the target   confidence
//               hustvl/yolos-base / yolos-tiny)              class (rewards/object_removal.c:
//                                                            softmax, max / mean / vader over
//                                                            detection tokens, frames mean / max)
//   aesthetic_hps  weighted sum: 0.75 aesthetic + 0.5 hps (VADER's (1.5 a + h) / 2); reward
//               (a + 15 h) / 2 (VADER's log value)
// Preprocessing (VADER-VideoCrafter's loss functions, 224 = the tower's image_size):
//   aesthetic, hps: clamp(x / 2 + 0.5, 0, 1) -> Resize((224, 224)) bilinear antialias -> Normalize
//   object_removal: clamp(x / 2 + 0.5, 0, 1) -> Resize((512, 512 * w // h)) bilinear, no antialias
//              -> ImageNet mean / std (VADER's objectDetection_loss_fn)
//   pickscore: clamp(x/2+0.5) * 255 -> shorter side to 224, bicubic antialias -> centre crop 224
//              -> / 255 -> Normalize
//   color: img = (clamp(x, -1, 1) + 1) / 2
// All use the CLIP mean [0.48145466, 0.4578275, 0.40821073], std [0.26862954, 0.26130258,
// 0.27577711]. Prompts are tokenized with the CLIP BPE tokenizer (core/tokenizer.h): longer
// than 77 tokens is cut as open_clip / the HF CLIPTokenizer do ([SOT, 75 ids, EOT]).
//
// Frames: [n, 3, h, w] with n prompts (reward per frame), or a video [b, 3, t, h, w] with b
// prompts: the t frames of video j are scored with prompt j, reward[j] = mean over its frames,
// loss = mean over all b * t frames (VADER scores the decoded frames as one (b t) batch).
// Video modules (vt_reward.video: action) score each clip as a whole: [b, 3, t, h, w] gives
// reward [b] and loss = mean over the b clips; [n, 3, h, w] is taken as one clip of n frames.
// action: frames resampled to the classifier's 16 (or native, VADER), resized as
// VideoMAEImageProcessor (or square, VADER), ImageNet mean / std (rewards/action_reward.c).
#pragma once
#include "core/models/vae_decoder.h"  // vt_act_hook
#include "core/tokenizer.h"
#include "core/weights.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vt_reward_kv {
    const char *key, *value;
} vt_reward_kv;

typedef struct vt_reward_options {
    // safetensors file(s) with the model's weights, comma-separated (opened as one store).
    // aesthetic: the CLIP ViT-L/14 weights with or without the head (layers.*); without it the
    // head comes from option "head" or shared/weights/aesthetic_mlp_sac_logos_ava1_l14.safetensors.
    const char *checkpoint;
    // CLIP BPE merges file; NULL: $VADER_SHARED/tokenizer/bpe_simple_vocab_16e6.txt.gz, then the
    // shared folder the build was configured with.
    const char *tokenizer;
    // The model's config json (a cJSON object; transformers CLIPConfig for aesthetic /
    // pickscore, open_clip's model config for hps), or NULL: inferred from the weight shapes
    // with the head counts of the released CLIP widths (768: 12, 1024: 16, 1280: 16).
    const struct cJSON *config;
    // module options (strings as written in the config):
    //   aesthetic: target (10, or "none"), scale (0.1), head (path), prefix (CLIP key prefix, ""),
    //              head_prefix ("")
    //   hps, hpsv21, pickscore: prefix ("")
    //   color: rgb ("0.7,-0.2,0.5")
    //   action: class (Kinetics-400 name or id; required), reward (log_prob | prob),
    //           frames (resample | native), resize (processor | square), prefix (""),
    //           image_size (224), num_frames (16) (not in the weights; override the config)
    //   object_removal: target ("book"; COCO name or id), aggregation (max | mean | vader),
    //              frames (mean | max), threshold (0.2), height (512), antialias (false), prefix,
    //              config (YolosConfig json file), random_weights (false), seed (0)
    //   aesthetic_hps: aesthetic.KEY / hps.KEY (passed on), aesthetic.checkpoint, hps.checkpoint
    // An unknown key is an error listing the module's keys.
    const vt_reward_kv *kv;
    int n_kv;
} vt_reward_options;

typedef struct vt_reward vt_reward;

// Frames [n, 3, h, w] -> reward [n] and per-sample loss [n] (new references, on the tape).
typedef vt_err (*vt_reward_forward_fn)(vt_reward *r, vt_tensor *frames, const char *const *prompts,
                                       vt_tensor **reward, vt_tensor **loss);

struct vt_reward {
    char name[32];
    int needs_prompts;
    int video;  // forward takes whole clips [b, 3, t, h, w] (reward and loss [b]), not frames
    vt_reward_forward_fn forward;
    void (*destroy)(vt_reward *r);  // frees impl
    vt_err (*to_device)(vt_reward *r, vt_device dev);  // moves impl's tensors (NULL: none)
    void *impl;
    vt_weights *weights;     // owned when the module opened its checkpoint, else NULL
    vt_tokenizer *tokenizer; // owned; NULL for modules without prompts
    int segments;            // run the towers' blocks as checkpoint segments
    // Videos [b, 3, t, h, w]: 0 = reward and loss averaged over the frames (default); 1 = per
    // video the frame with the largest loss (object_removal's frames: max).
    int frame_max;
    // Optional debugging hook, called with the tensors the module computes: "pixel_values",
    // "tokens" (i64), "image_embeds", "text_embeds", "image_features", "text_features"
    // (names as in the fixtures). Borrowed tensors.
    vt_act_hook hook;
    void *hook_user;
    // 16-bit image-tower weights (vt_reward_set_weight_dtype; NULL: the module keeps f32)
    vt_err (*set_weight_dtype)(vt_reward *r, vt_dtype dt);
    // Prompt-conditioned modules: the text embeddings [n, E] of n prompts (no gradient), and
    // the tower's release (vt_reward_cache_prompts / vt_reward_drop_text_tower).
    vt_tensor *(*encode_text)(vt_reward *r, const char *const *prompts, int n);
    void (*drop_text)(vt_reward *r);
    char **cached_prompts;     // the cache: prompt i's embedding [1, E] on the module's device
    vt_tensor **cached_embeds;
    int n_cached, cap_cached;
    int text_dropped;
    // weighted sums (vt_reward_combine): the parts and their weights
    vt_reward **parts;
    float *loss_weights, *reward_weights;
    int n_parts;
};

// Valid names for vt_reward_create, comma-separated ("aesthetic, hps, hpsv21, pickscore,
// color, aesthetic_hps, action, temporal, object_removal").
const char *vt_reward_names(void);
// Builds a module by name, opening opts->checkpoint. An unknown name fails listing the valid
// names; a checkpoint of another architecture fails naming the key at fault.
vt_reward *vt_reward_create(const char *name, const vt_reward_options *opts);
// The same from a weight store the caller owns (must outlive the module); opts->checkpoint is
// ignored. The module's keys are checked strictly (vt_weights_finish on its prefixes).
vt_reward *vt_reward_create_from_weights(const char *name, vt_weights *w, const vt_reward_options *opts);
void vt_reward_free(vt_reward *r);
// Moves the module's weights (and the parts of a weighted sum) to dev in place; frames passed
// to forward must then be on dev. Tokens are made on the host and uploaded by the towers.
vt_err vt_reward_to_device(vt_reward *r, vt_device dev);

// The frozen GEMM weights of the module's image tower (HPS / PickScore / aesthetic: the CLIP
// vision tower's patch embedding and linears) converted in place to dt (bf16 / f16: their ops
// round the input to dt and accumulate in f32; core/ops.h); parts of a weighted sum too. Modules
// without (colour, action, temporal, object_removal) keep f32. Call before vt_reward_to_device.
vt_err vt_reward_set_weight_dtype(vt_reward *r, vt_dtype dt);

// Prompt-conditioned modules (hps, hpsv21, pickscore; the parts of a weighted sum): encodes the
// text embedding of every prompt not yet cached, once, and keeps it (a few KiB each) on the
// module's device; the forward then reads prompts from the cache (the same values up to the
// GEMMs' summation order). Other modules: nothing to do.
vt_err vt_reward_cache_prompts(vt_reward *r, const char *const *prompts, int n);
// Frees the text towers of those modules (most of their weights with HPS: open_clip ViT-H-14's
// text tower is ~354M parameters). Afterwards a forward with a prompt that was not cached fails
// naming the prompt. Other modules: nothing to do.
vt_err vt_reward_drop_text_tower(vt_reward *r);

// Weighted sum of modules (takes ownership of parts[0..n)): per-sample loss = sum_i
// loss_weights[i] * loss_i, reward = sum_i reward_weights[i] * reward_i (reward_weights NULL:
// the loss weights). prompts are given to every part. NULL + error on bad arguments (the parts
// are freed then too).
vt_reward *vt_reward_combine(const char *name, vt_reward **parts, const float *loss_weights,
                             const float *reward_weights, int n);

// Scores frames ([n, 3, h, w] or [b, 3, t, h, w], in [-1, 1], f32; may require grad) with
// prompts (n or b strings; may be NULL for modules without prompts). *reward gets [n] or [b],
// *loss the scalar [] loss (mean of the per-sample losses); both new references recorded on
// the current tape.
vt_err vt_reward_forward(vt_reward *r, vt_tensor *frames, const char *const *prompts, vt_tensor **reward,
                         vt_tensor **loss);

// The LAION aesthetic MLP head on its own (the real one: layers.0 [1024, 768], layers.2
// [128, 1024], layers.4 [64, 128], layers.6 [16, 64], layers.7 [1, 16]; Linear layers with no
// activation in between, the Dropouts at 1, 3, 5 hold no weights). Widths come from the
// weights; embed_dim > 0 is checked against layers.0 (0: any).
typedef struct vt_aesthetic_head vt_aesthetic_head;
vt_aesthetic_head *vt_aesthetic_head_build(vt_weights *w, const char *prefix, int embed_dim);
// embeds [n, E] -> [n]
vt_tensor *vt_aesthetic_head_forward(const vt_aesthetic_head *h, vt_tensor *embeds);
void vt_aesthetic_head_free(vt_aesthetic_head *h);

// object_removal's option values checked without building the model (config validation):
// aggregation, frames, numbers, and the target against the COCO labels (unless option config
// names a model config with its own id2label).
vt_err vt_reward_object_removal_check(const vt_reward_options *o);

// Option lookup shared by the modules: the value for key or NULL.
const char *vt_reward_option(const vt_reward_options *o, const char *key);

#ifdef __cplusplus
}
#endif
