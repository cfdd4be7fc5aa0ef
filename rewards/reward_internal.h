// reward_internal.h — what the reward modules share inside rewards/ (not installed API).
#pragma once
#include "reward.h"

// Constructors of the registry: build from a store (borrowed), options already validated
// against the module's key list.
vt_reward *vt_reward_new_aesthetic(vt_weights *w, const vt_reward_options *o);
vt_reward *vt_reward_new_hps(vt_weights *w, const vt_reward_options *o);
vt_reward *vt_reward_new_pickscore(vt_weights *w, const vt_reward_options *o);
vt_reward *vt_reward_new_color(const vt_reward_options *o);
vt_reward *vt_reward_new_action(vt_weights *w, const vt_reward_options *o);  // action_reward.c
vt_reward *vt_reward_new_temporal(vt_weights *w, const vt_reward_options *o);
// object_removal.c: w may be NULL (then opts->checkpoint, or options.random_weights).
vt_reward *vt_reward_new_object_removal(vt_weights *w, const vt_reward_options *o);

// A zeroed module with its name set (NULL + VT_ERR_OOM).
vt_reward *vt_reward_alloc(const char *name);
// Opens the CLIP BPE tokenizer (opts->tokenizer or the shared default) into r->tokenizer.
vt_err vt_reward_open_tokenizer(vt_reward *r, const vt_reward_options *o);
// tokens i64 [n, context] for n prompts (a NULL prompt is an error).
vt_tensor *vt_reward_tokenize(vt_reward *r, const char *const *prompts, int64_t n, int context);
// The text embeddings [n, E] of n prompts for a prompt-conditioned module's forward: cached rows
// (vt_reward_cache_prompts) or, while the tower is there, r->encode_text; a prompt neither cached
// nor encodable (tower dropped) is an error naming it. Calls the hook "text_embeds".
vt_tensor *vt_reward_text_embeds(vt_reward *r, const char *const *prompts, int n);
// Option parsing: *v keeps its value when the key is absent. Errors name the module and key.
vt_err vt_reward_option_float(const vt_reward_options *o, const char *module, const char *key, float *v);
// The shared folder's file rel ($VADER_SHARED, then the configured VADER_SHARED_DIR) into buf;
// returns buf, or NULL when neither holds a readable file.
const char *vt_reward_shared_file(const char *rel, char *buf, size_t n);

static inline void vt_reward_hook(vt_reward *r, const char *name, vt_tensor *t) {
    if (r->hook && t) r->hook(r->hook_user, name, t);
}

// CLIP image normalisation constants (OpenAI CLIP, used by every CLIP-family reward)
extern const float vt_reward_clip_mean[3], vt_reward_clip_std[3];
