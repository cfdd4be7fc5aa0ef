// config.h — the training configuration: YAML (libyaml) into typed C structs with defaults.
//
// A config is built in three steps: vt_config_load / vt_config_load_string (defaults, then
// the YAML on top), any number of vt_config_set ("--set optim.lr=1e-4"), then
// vt_config_validate (cross-field checks). Typing and per-field ranges are checked while
// loading, so every such error names file:line:column and the field path, e.g.
//     configs/hps.yaml:12:5: optim.lr: expected a number, got "fast"
// Every field, its type, default and meaning is documented in configs/README.md.
//
// Strings are owned by the config (malloc'd, freed by vt_config_free); NULL means "not set"
// (an empty string or YAML null in the file also means "not set").
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vt_cfg_dtype { VT_CFG_DTYPE_AUTO = 0, VT_CFG_DTYPE_FP32, VT_CFG_DTYPE_BF16, VT_CFG_DTYPE_FP16 } vt_cfg_dtype;
// Which DDIM steps keep the tape (VADER's backprop_mode): the last K, K ending at a random
// step, or K ending at sampler.backprop_step.
typedef enum vt_cfg_backprop { VT_CFG_BACKPROP_LAST = 0, VT_CFG_BACKPROP_RAND, VT_CFG_BACKPROP_SPECIFIC } vt_cfg_backprop;
// Which frames the VAE decodes for the reward (VADER's decode_frame): "-1" one random frame,
// "fml" first/middle/last, "alt" every other frame, "all", or one fixed frame index.
typedef enum vt_cfg_decode {
    VT_CFG_DECODE_RANDOM = 0, VT_CFG_DECODE_FML, VT_CFG_DECODE_ALT, VT_CFG_DECODE_ALL, VT_CFG_DECODE_INDEX
} vt_cfg_decode;
typedef enum vt_cfg_schedule { VT_CFG_SCHED_CONSTANT = 0, VT_CFG_SCHED_WARMUP, VT_CFG_SCHED_COSINE } vt_cfg_schedule;
typedef enum vt_cfg_dist { VT_CFG_DIST_AUTO = 0, VT_CFG_DIST_NCCL, VT_CFG_DIST_MPI, VT_CFG_DIST_NONE } vt_cfg_dist;
typedef enum vt_cfg_device { VT_CFG_DEVICE_AUTO = 0, VT_CFG_DEVICE_CPU, VT_CFG_DEVICE_CUDA } vt_cfg_device;
typedef enum vt_cfg_reward_kind {
    VT_CFG_REWARD_AESTHETIC = 0,  // CLIP ViT-L/14 + LAION aesthetic MLP head
    VT_CFG_REWARD_HPS,            // HPSv2.0 (OpenCLIP ViT-H-14)
    VT_CFG_REWARD_HPSV21,         // HPSv2.1
    VT_CFG_REWARD_PICKSCORE,      // PickScore (CLIP-H)
    VT_CFG_REWARD_OBJECT_REMOVAL, // YOLOS detection score of options.target, minimised
    VT_CFG_REWARD_ACTION,         // VideoMAE Kinetics class probability of options.class
    VT_CFG_REWARD_TEMPORAL,       // V-JEPA feature similarity across frames
    VT_CFG_REWARD_COLOR,          // fixed RGB projection (tests, tiny runs)
    VT_CFG_REWARD_COUNT
} vt_cfg_reward_kind;

typedef struct vt_config_kv {
    char *key;
    char *value;  // the scalar's text as written ("book", "0.1", "true")
} vt_config_kv;

typedef struct vt_config_reward {
    vt_cfg_reward_kind kind;
    double weight;          // > 0; the losses of all modules are summed with these weights
    char *checkpoint;       // safetensors with the reward model's weights (NULL: module default)
    vt_config_kv *options;  // module-specific options, in file order, keys unique
    int n_options;
} vt_config_reward;

typedef struct vt_config {
    struct {
        char *unet, *vae, *text;  // checkpoint paths (safetensors)
        bool random_weights;      // build the models with random weights (no checkpoints)
        vt_cfg_dtype dtype;       // frozen weights / activations on the GPU
        int height, width;        // pixels
        int frames;
        int fps;                  // fps conditioning of the UNet
    } model;
    struct {
        int steps;                // DDIM steps
        double eta;
        double guidance_scale;    // classifier-free guidance
        int backprop_steps;       // K: steps that keep the tape
        vt_cfg_backprop backprop_mode;
        int backprop_step;        // with backprop_mode specific: index of the last taped step
    } sampler;
    struct {
        int rank;
        double alpha;             // scale = alpha / rank
        double dropout;
        char **targets;           // module names (last key components) that get LoRA
        int n_targets;
        char *checkpoint;         // initial LoRA weights (NULL: A random, B zero)
    } lora;
    struct {
        vt_config_reward *modules;
        int n_modules;
    } reward;
    struct {
        double lr, beta1, beta2, weight_decay, eps;
        double grad_clip;         // max global gradient norm, 0 = off
        int accumulation;         // micro-batches per optimisation step
        int steps;                // optimisation steps
        vt_cfg_schedule schedule;
        int warmup_steps;
        int max_bad_steps;        // non-finite loss / gradient steps in a row that stop the run
    } optim;
    struct {
        bool checkpointing;       // checkpoint segments (recompute in backward)
        vt_cfg_decode decode_frames;
        int decode_index;         // frame index when decode_frames == VT_CFG_DECODE_INDEX
        bool offload;             // refused when true (nothing the peak uses can live on the host)
        vt_cfg_dtype saved_dtype; // checkpoint segments' saved activation inputs (auto: bf16 on a GPU)
    } memory;
    struct {
        char *prompt_file;        // one prompt a line
        char **prompts;
        int n_prompts;
        char **eval_prompts;
        int n_eval_prompts;
        int batch_size;           // prompts per micro-batch per rank (unless global_batch_size)
        int global_batch_size;    // > 0: samples per optimisation step over all ranks and micro-
                                  // batches; the per-rank micro-batch is then
                                  // global_batch_size / (ranks x optim.accumulation)
    } data;
    struct {
        vt_cfg_dist backend;
        double timeout;           // seconds a collective may wait for peers (0: forever)
    } dist;
    struct {
        char *dir;
        int checkpoint_every, eval_every, log_every;  // in optimisation steps, 0 = never
    } output;
    uint64_t seed;
    vt_cfg_device device;
} vt_config;

// The YAML text of configs/tiny-cpu.yaml (train/config_default.c): vader-train's config when
// it is given none.
extern const char *vt_config_default_yaml;

// Fills cfg with the defaults (overwrites; does not free what cfg held).
vt_err vt_config_defaults(vt_config *cfg);
// Defaults, then the YAML file / text on top. cfg is overwritten (not freed first); on error
// cfg holds the defaults. name_for_errors prefixes messages (NULL: "<string>").
vt_err vt_config_load(vt_config *cfg, const char *path);
vt_err vt_config_load_string(vt_config *cfg, const char *yaml, const char *name_for_errors);
// One override "a.b=c": the value is YAML (numbers, true/false, flow lists "[a, b]", flow
// maps "{name: hps}"), typed and checked like the file. Paths: SECTION.FIELD, seed, device,
// reward (the whole list), reward.I (module I; I == count appends), reward.I.FIELD,
// reward.I.options.KEY. On error cfg is unchanged.
vt_err vt_config_set(vt_config *cfg, const char *assignment);
// Field ranges and cross-field checks (K <= steps, a prompt source, ...); messages start with
// the field path.
vt_err vt_config_validate(const vt_config *cfg);
// Deep copy into dst (overwritten).
vt_err vt_config_copy(vt_config *dst, const vt_config *src);
// Frees everything cfg owns and zeroes it (safe to call twice).
void vt_config_free(vt_config *cfg);
// The resolved config as YAML text (every field, fixed order) that loads back to the same
// config; malloc'd, NULL on allocation failure.
char *vt_config_dump(const vt_config *cfg);
// FNV-1a 64 of vt_config_dump: equal configs hash equal.
uint64_t vt_config_hash(const vt_config *cfg);

// Names of enum values as written in YAML.
const char *vt_cfg_reward_name(vt_cfg_reward_kind k);
const char *vt_cfg_backprop_name(vt_cfg_backprop m);
const char *vt_cfg_decode_name(vt_cfg_decode d);  // "-1", "fml", "alt", "all" ("index" for INDEX)
const char *vt_cfg_schedule_name(vt_cfg_schedule s);
const char *vt_cfg_dist_name(vt_cfg_dist d);
const char *vt_cfg_device_name(vt_cfg_device d);
const char *vt_cfg_dtype_name(vt_cfg_dtype d);
// A reward module's option (NULL if absent).
const char *vt_config_reward_option(const vt_config_reward *r, const char *key);

#ifdef __cplusplus
}
#endif
