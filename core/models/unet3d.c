// unet3d.c — the lvdm UNetModel (VideoCrafter2): config, building the block lists from the
// weight store, the forward over [(B*T), C, H, W], LoRA parameters. Modules: unet3d_blocks.c.
#include "unet3d_internal.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UNET_MAX_BLOCKS 64

struct vt_unet3d {
    vt_unet3d_config cfg;
    char *prefix;
    int emb_dim;  // 4 * model_channels
    unet_linear time_embed0, time_embed2, fps_embed0, fps_embed2;
    int has_init_attn;
    unet_transformer init_attn;
    int n_input, n_output;
    unet_block input[UNET_MAX_BLOCKS], middle, output[UNET_MAX_BLOCKS];
    unet_norm out_norm;
    unet_conv out_conv;
    // every weight, by key without the prefix (owns the tensors)
    unet_param *params;
    int n_params;
    int64_t n_values;
    // LoRA
    int n_lora;  // projections with LoRA
    unet_linear **lora;
    char **lora_names;  // 2 per projection: A, B
    int lora_merged;    // vt_unet3d_lora_merge: each LoRA projection has its w_merged
    vt_tensor *kv_ctx;  // vt_unet3d_cache_context: the context whose cross-attention K/V are kept
    // run settings
    int checkpoint;
    float p_tconv, p_lora;
    vt_unet3d_act_hook hook;
    void *hook_user;
    vt_device device;  // where the weights live (vt_unet3d_to_device)
    // closures of checkpointed forwards (segments recompute from them in backward)
    void **kept;
    int n_kept, cap_kept;
};

// ---- config -------------------------------------------------------------------------------
vt_unet3d_config vt_unet3d_config_videocrafter2(void) {
    vt_unet3d_config c = {0};
    c.in_channels = 4;
    c.out_channels = 4;
    c.model_channels = 320;
    c.n_attention_resolutions = 3;
    c.attention_resolutions[0] = 4;
    c.attention_resolutions[1] = 2;
    c.attention_resolutions[2] = 1;
    c.num_res_blocks = 2;
    c.n_levels = 4;
    c.channel_mult[0] = 1;
    c.channel_mult[1] = 2;
    c.channel_mult[2] = 4;
    c.channel_mult[3] = 4;
    c.num_head_channels = 64;
    c.num_heads = -1;
    c.transformer_depth = 1;
    c.temporal_transformer_depth = 1;
    c.context_dim = 1024;
    c.use_linear = 1;
    c.temporal_conv = 1;
    c.temporal_attention = 1;
    c.temporal_selfatt_only = 1;
    c.addition_attention = 1;
    c.init_attn_heads = 8;
    c.fps_cond = 1;
    c.use_checkpoint = 0;
    c.num_heads = -1;
    c.temporal_transformer_depth = 1;
    return c;
}

vt_unet3d_config vt_unet3d_config_lvdm_defaults(void) {
    vt_unet3d_config c = {0};
    c.n_levels = 4;
    for (int i = 0; i < 4; i++) c.channel_mult[i] = 1 << i;
    c.num_head_channels = -1;
    c.num_heads = -1;
    c.transformer_depth = 1;
    c.temporal_transformer_depth = 1;
    c.temporal_attention = 1;
    c.temporal_selfatt_only = 1;
    c.use_relative_position = 1;
    c.init_attn_heads = 8;
    return c;
}

static vt_err json_int(const cJSON *o, const char *name, int *dst, int lo) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v || cJSON_IsNull(v)) return VT_OK;
    if (cJSON_IsBool(v)) {
        *dst = cJSON_IsTrue(v);
        return VT_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo || v->valuedouble > 1e6)
        return vt_error(VT_ERR_CONFIG, "unet3d config: %s must be an integer >= %d", name, lo);
    *dst = (int)v->valuedouble;
    return VT_OK;
}

static vt_err json_int_list(const cJSON *o, const char *name, int *dst, int *n, int lo) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v) return VT_OK;
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) > VT_UNET3D_MAX_LEVELS)
        return vt_error(VT_ERR_CONFIG, "unet3d config: %s must be a list of at most %d integers", name,
                        VT_UNET3D_MAX_LEVELS);
    int k = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < lo)
            return vt_error(VT_ERR_CONFIG, "unet3d config: %s[%d] must be an integer >= %d", name, k, lo);
        dst[k++] = (int)e->valuedouble;
    }
    *n = k;
    return VT_OK;
}

// UNetModel options this implementation has only at lvdm's default: a config naming another
// value fails rather than silently computing something else.
typedef struct fixed_option {
    const char *name;
    int value;   // the one supported value (booleans as 0 / 1)
} fixed_option;
static const fixed_option fixed_options[] = {
    {"use_scale_shift_norm", 0}, {"resblock_updown", 0}, {"tempspatial_aware", 0}, {"use_image_attention", 0},
    {"use_fp16", 0},             {"conv_resample", 1},   {"dims", 2},
};

static vt_err check_fixed_options(const cJSON *o) {
    for (size_t i = 0; i < sizeof fixed_options / sizeof fixed_options[0]; i++) {
        const fixed_option *f = &fixed_options[i];
        int v = f->value;
        if (json_int(o, f->name, &v, 0)) return vt_error_code();
        if (v != f->value)
            return vt_error(VT_ERR_CONFIG, "unet3d config: %s = %d is not implemented (only %d)", f->name, v, f->value);
    }
    return VT_OK;
}

// json_int for fields where lvdm writes -1 (or null) for "unset"
static vt_err json_int_or_unset(const cJSON *o, const char *name, int *dst) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (cJSON_IsNumber(v) && v->valuedouble == -1.0) {
        *dst = -1;
        return VT_OK;
    }
    return json_int(o, name, dst, 1);
}

vt_err vt_unet3d_config_from_json(const cJSON *o, vt_unet3d_config *c) {
    if (!cJSON_IsObject(o)) return vt_error(VT_ERR_CONFIG, "unet3d config: not a JSON object");
    vt_err e = VT_OK;
    if ((e = json_int(o, "in_channels", &c->in_channels, 1)) || (e = json_int(o, "out_channels", &c->out_channels, 1)) ||
        (e = json_int(o, "model_channels", &c->model_channels, 1)) ||
        (e = json_int_list(o, "attention_resolutions", c->attention_resolutions, &c->n_attention_resolutions, 1)) ||
        (e = json_int(o, "num_res_blocks", &c->num_res_blocks, 1)) ||
        (e = json_int_list(o, "channel_mult", c->channel_mult, &c->n_levels, 1)) ||
        (e = json_int_or_unset(o, "num_head_channels", &c->num_head_channels)) ||
        (e = json_int_or_unset(o, "num_heads", &c->num_heads)) ||
        (e = json_int(o, "transformer_depth", &c->transformer_depth, 1)) ||
        (e = json_int(o, "temporal_transformer_depth", &c->temporal_transformer_depth, 1)) ||
        (e = json_int(o, "context_dim", &c->context_dim, 1)) || (e = json_int(o, "use_linear", &c->use_linear, 0)) ||
        (e = json_int(o, "use_checkpoint", &c->use_checkpoint, 0)) ||
        (e = json_int(o, "temporal_conv", &c->temporal_conv, 0)) ||
        (e = json_int(o, "temporal_attention", &c->temporal_attention, 0)) ||
        (e = json_int(o, "temporal_selfatt_only", &c->temporal_selfatt_only, 0)) ||
        (e = json_int(o, "use_causal_attention", &c->use_causal_attention, 0)) ||
        (e = json_int(o, "temporal_length", &c->temporal_length, 0)) ||
        (e = json_int(o, "use_relative_position", &c->use_relative_position, 0)) ||
        (e = json_int(o, "addition_attention", &c->addition_attention, 0)) ||
        (e = json_int(o, "fps_cond", &c->fps_cond, 0)) || (e = check_fixed_options(o)))
        return e;
    if (c->init_attn_heads <= 0) c->init_attn_heads = 8;
    return VT_OK;
}

int vt_unet3d_downsampling(const vt_unet3d_config *c) { return 1 << (c->n_levels - 1); }

void vt_unet3d_heads(const vt_unet3d_config *c, int channels, int *heads, int *d_head) {
    if (c->num_head_channels > 0) {
        *heads = channels / c->num_head_channels;
        *d_head = c->num_head_channels;
    } else {
        *heads = c->num_heads;
        *d_head = c->num_heads > 0 ? channels / c->num_heads : 0;
    }
}

int vt_unet3d_temporal_depth(const vt_unet3d_config *c) {
    return c->temporal_transformer_depth > 0 ? c->temporal_transformer_depth : 1;
}

static vt_err check_config(const vt_unet3d_config *c) {
    if (c->n_levels < 1 || c->n_levels > VT_UNET3D_MAX_LEVELS || c->num_res_blocks < 1 || c->model_channels < 1 ||
        c->in_channels < 1 || c->out_channels < 1 || c->transformer_depth < 1 || c->context_dim < 1)
        return vt_error(VT_ERR_CONFIG, "unet3d config: sizes must be positive (levels 1..%d)", VT_UNET3D_MAX_LEVELS);
    if (c->num_head_channels <= 0 && c->num_heads <= 0)
        return vt_error(VT_ERR_CONFIG, "unet3d config: either num_head_channels or num_heads must be set");
    // lvdm builds init_attn with d_head = num_head_channels whatever num_heads says
    if (c->addition_attention && c->num_head_channels <= 0)
        return vt_error(VT_ERR_CONFIG, "unet3d config: addition_attention needs num_head_channels (init_attn's d_head)");
    // lvdm asserts temporal_length is not None when a TemporalTransformer has relative positions
    if (c->use_relative_position && c->temporal_length < 1 && (c->temporal_attention || c->addition_attention))
        return vt_error(VT_ERR_CONFIG, "unet3d config: use_relative_position needs temporal_length >= 1 (the "
                        "relative_position tables have 2 * temporal_length + 1 rows)");
    if (c->model_channels % 32)
        return vt_error(VT_ERR_CONFIG, "unet3d config: model_channels %d is not a multiple of 32 (GroupNorm groups)",
                        c->model_channels);
    for (int l = 0; l < c->n_levels; l++) {
        int ch = c->channel_mult[l] * c->model_channels, heads, dh;
        vt_unet3d_heads(c, ch, &heads, &dh);
        if (ch % 32)
            return vt_error(VT_ERR_CONFIG, "unet3d config: channels %d (level %d) not a multiple of 32 (GroupNorm groups)",
                            ch, l);
        if (heads < 1 || dh < 1)
            return vt_error(VT_ERR_CONFIG, "unet3d config: %d channels (level %d) give %d heads of width %d", ch, l,
                            heads, dh);
    }
    if ((c->n_levels + 1) * (c->num_res_blocks + 2) > UNET_MAX_BLOCKS)
        return vt_error(VT_ERR_CONFIG, "unet3d config: too many blocks");
    return VT_OK;
}

// ---- building -----------------------------------------------------------------------------
// Random weights (benchmarks): matrices ~ N(0, 1/fan_in), 1-D weights (norm gains) 1, biases 0,
// so activations keep their scale through the network.
static vt_tensor *random_param(unet_builder *b, const char *name, int ndim, const int64_t *shape) {
    size_t len = strlen(name);
    int is_bias = len >= 5 && strcmp(name + len - 5, ".bias") == 0;
    if (is_bias) return vt_zeros(VT_F32, VT_CPU, ndim, shape);
    if (ndim == 1) return vt_full(VT_CPU, ndim, shape, 1.0f);
    vt_tensor *t = vt_empty(VT_F32, VT_CPU, ndim, shape);
    if (!t) return NULL;
    vt_rng r;
    vt_rng_seed(&r, vt_hash64(b->seed, (uint64_t)b->n_params));
    vt_fill_normal(t, &r, 0.0f, (float)(1.0 / sqrt((double)(t->numel / shape[0]))));
    return t;
}

vt_tensor *unet_get(unet_builder *b, int ndim, const int64_t *shape, const char *fmt, ...) {
    char name[400], key[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (b->failed) return NULL;
    snprintf(key, sizeof key, "%s%s", b->prefix, name);
    // collect mode: a missing / mis-shaped key is recorded and zeros come back
    vt_tensor *t = b->w ? vt_weights_get(b->w, key, ndim, shape) : random_param(b, name, ndim, shape);
    if (!t) {
        b->failed = 1;
        return NULL;
    }
    b->n_values += t->numel;
    if (b->shape_only) {
        vt_release(t);
        return NULL;
    }
    if (b->n_params == b->cap_params) {
        int cap = b->cap_params ? 2 * b->cap_params : 256;
        unet_param *np = realloc(b->params, (size_t)cap * sizeof *np);
        if (!np) {
            vt_release(t);
            b->failed = 1;
            vt_error(VT_ERR_OOM, "unet3d build: out of host memory at %s", key);
            return NULL;
        }
        b->params = np;
        b->cap_params = cap;
    }
    char *nm = strdup(name);
    if (!nm) {
        vt_release(t);
        b->failed = 1;
        vt_error(VT_ERR_OOM, "unet3d build: out of host memory at %s", key);
        return NULL;
    }
    b->params[b->n_params].name = nm;
    b->params[b->n_params].t = t;
    b->n_params++;
    return t;
}

static int in_attention(const vt_unet3d_config *c, int ds) {
    for (int i = 0; i < c->n_attention_resolutions; i++)
        if (c->attention_resolutions[i] == ds) return 1;
    return 0;
}

static int add_res(unet_builder *b, unet_block *blk, int in_ch, int out_ch, const vt_unet3d *u, const char *path) {
    unet_layer *L = &blk->layers[blk->n++];
    L->kind = UNET_RES;
    L->res = calloc(1, sizeof *L->res);
    if (!L->res) return b->failed = 1, 0;
    char p[256];
    snprintf(p, sizeof p, "%s.%d", path, blk->n - 1);
    return unet_build_resblock(b, L->res, in_ch, out_ch, u->emb_dim, u->cfg.temporal_conv, p);
}

// SpatialTransformer, then (temporal_attention) TemporalTransformer
// The transformer options of a temporal one: its attn2 reads the text only without
// temporal_selfatt_only; the causal mask applies to self-attention only (lvdm drops the mask
// in its cross-attention branch); relative positions in attn1 and attn2 alike (lvdm passes
// its CrossAttention partial as the block's attention class), the cross one included.
static unet_tr_opts temporal_opts(const vt_unet3d_config *c, int depth, int use_linear) {
    unet_tr_opts o = {1, depth, c->temporal_selfatt_only ? 0 : c->context_dim, use_linear, 0, -1};
    o.causal = c->use_causal_attention && c->temporal_selfatt_only;
    if (c->use_relative_position) o.max_rel = c->temporal_length;
    return o;
}

static int add_attn(unet_builder *b, unet_block *blk, int ch, const vt_unet3d *u, const char *path) {
    const vt_unet3d_config *c = &u->cfg;
    int heads, dh;
    vt_unet3d_heads(c, ch, &heads, &dh);
    char p[256];
    for (int temporal = 0; temporal <= c->temporal_attention; temporal++) {
        unet_layer *L = &blk->layers[blk->n++];
        L->kind = temporal ? UNET_TEMPORAL : UNET_SPATIAL;
        L->tr = calloc(1, sizeof *L->tr);
        if (!L->tr) return b->failed = 1, 0;
        snprintf(p, sizeof p, "%s.%d", path, blk->n - 1);
        // spatial: transformer_depth, cross on the text; temporal: temporal_transformer_depth
        unet_tr_opts o = {0, c->transformer_depth, c->context_dim, c->use_linear, 0, -1};
        if (temporal) o = temporal_opts(c, vt_unet3d_temporal_depth(c), c->use_linear);
        unet_build_transformer(b, L->tr, ch, heads, dh, &o, p);
    }
    return !b->failed;
}

static void add_conv(unet_builder *b, unet_block *blk, unet_layer_kind kind, int in_ch, int out_ch, const char *name) {
    unet_layer *L = &blk->layers[blk->n++];
    L->kind = kind;
    L->conv.w = unet_get(b, 4, (int64_t[]){out_ch, in_ch, 3, 3}, "%s.weight", name);
    L->conv.b = unet_get(b, 1, (int64_t[]){out_ch}, "%s.bias", name);
}

// Mirrors UNetModel.__init__: input blocks with their channel stack, middle, output blocks.
static void build_model(unet_builder *b, vt_unet3d *u) {
    const vt_unet3d_config *c = &u->cfg;
    int mc = c->model_channels, E = u->emb_dim;
    char p[256];
    unet_build_linear(b, &u->time_embed0, mc, E, 1, 0, "time_embed.0");
    unet_build_linear(b, &u->time_embed2, E, E, 1, 0, "time_embed.2");
    if (c->fps_cond) {
        unet_build_linear(b, &u->fps_embed0, mc, E, 1, 0, "fps_embedding.0");
        unet_build_linear(b, &u->fps_embed2, E, E, 1, 0, "fps_embedding.2");
    }
    int chans[UNET_MAX_BLOCKS], n_chans = 0;
    add_conv(b, &u->input[0], UNET_CONV, c->in_channels, mc, "input_blocks.0.0");
    u->n_input = 1;
    chans[n_chans++] = mc;
    if (c->addition_attention) {
        u->has_init_attn = 1;
        // lvdm: TemporalTransformer(depth=transformer_depth) without use_linear (Conv1d projections)
        unet_tr_opts o = temporal_opts(c, c->transformer_depth, 0);
        unet_build_transformer(b, &u->init_attn, mc, c->init_attn_heads, c->num_head_channels, &o, "init_attn.0");
    }
    int ch = mc, ds = 1;
    for (int level = 0; level < c->n_levels; level++) {
        for (int i = 0; i < c->num_res_blocks; i++) {
            unet_block *blk = &u->input[u->n_input];
            snprintf(p, sizeof p, "input_blocks.%d", u->n_input++);
            add_res(b, blk, ch, c->channel_mult[level] * mc, u, p);
            ch = c->channel_mult[level] * mc;
            if (in_attention(c, ds)) add_attn(b, blk, ch, u, p);
            chans[n_chans++] = ch;
        }
        if (level != c->n_levels - 1) {
            unet_block *blk = &u->input[u->n_input];
            snprintf(p, sizeof p, "input_blocks.%d.0.op", u->n_input++);
            add_conv(b, blk, UNET_DOWN, ch, ch, p);
            chans[n_chans++] = ch;
            ds *= 2;
        }
    }
    add_res(b, &u->middle, ch, ch, u, "middle_block");
    add_attn(b, &u->middle, ch, u, "middle_block");
    add_res(b, &u->middle, ch, ch, u, "middle_block");
    for (int level = c->n_levels - 1; level >= 0; level--) {
        for (int i = 0; i <= c->num_res_blocks; i++) {
            unet_block *blk = &u->output[u->n_output];
            snprintf(p, sizeof p, "output_blocks.%d", u->n_output++);
            int ich = chans[--n_chans];
            add_res(b, blk, ch + ich, c->channel_mult[level] * mc, u, p);
            ch = c->channel_mult[level] * mc;
            if (in_attention(c, ds)) add_attn(b, blk, ch, u, p);
            if (level && i == c->num_res_blocks) {
                char q[300];
                snprintf(q, sizeof q, "%s.%d.conv", p, blk->n);
                add_conv(b, blk, UNET_UP, ch, ch, q);
                ds /= 2;
            }
        }
    }
    u->out_norm.w = unet_get(b, 1, (int64_t[]){ch}, "out.0.weight");
    u->out_norm.b = unet_get(b, 1, (int64_t[]){ch}, "out.0.bias");
    u->out_conv.w = unet_get(b, 4, (int64_t[]){c->out_channels, ch, 3, 3}, "out.2.weight");
    u->out_conv.b = unet_get(b, 1, (int64_t[]){c->out_channels}, "out.2.bias");
}

static void free_block(unet_block *blk) {
    for (int i = 0; i < blk->n; i++) {
        unet_layer *L = &blk->layers[i];
        if (L->res) unet_free_resblock(L->res);
        if (L->tr) unet_free_transformer(L->tr);
        free(L->res);
        free(L->tr);
    }
    blk->n = 0;
}

void vt_unet3d_free(vt_unet3d *u) {
    if (!u) return;
    vt_unet3d_release_segments(u);
    vt_unet3d_cache_context(u, NULL);
    vt_unet3d_lora_unmerge(u);
    free(u->kept);
    unet_free_linear(&u->time_embed0);
    unet_free_linear(&u->time_embed2);
    unet_free_linear(&u->fps_embed0);
    unet_free_linear(&u->fps_embed2);
    if (u->has_init_attn) unet_free_transformer(&u->init_attn);
    for (int i = 0; i < u->n_input; i++) free_block(&u->input[i]);
    free_block(&u->middle);
    for (int i = 0; i < u->n_output; i++) free_block(&u->output[i]);
    for (int i = 0; i < u->n_params; i++) {
        free(u->params[i].name);
        vt_release(u->params[i].t);
    }
    free(u->params);
    for (int i = 0; i < 2 * u->n_lora; i++) free(u->lora_names[i]);
    free(u->lora_names);
    free(u->lora);
    free(u->prefix);
    free(u);
}

static vt_unet3d *build(vt_weights *w, const char *prefix, const vt_unet3d_config *cfg, int shape_only,
                        int64_t *n_values, uint64_t seed) {
    if (!cfg) {
        vt_error(VT_ERR_ARG, "unet3d build: NULL config");
        return NULL;
    }
    if (check_config(cfg)) return NULL;
    if (!prefix) prefix = "";
    vt_unet3d *u = calloc(1, sizeof *u);
    if (!u || !(u->prefix = strdup(prefix))) {
        free(u);
        vt_error(VT_ERR_OOM, "unet3d build: out of host memory");
        return NULL;
    }
    u->cfg = *cfg;
    if (u->cfg.init_attn_heads <= 0) u->cfg.init_attn_heads = 8;
    u->emb_dim = 4 * cfg->model_channels;
    u->checkpoint = cfg->use_checkpoint;
    unet_builder b = {.w = w, .prefix = prefix, .shape_only = shape_only, .seed = seed};
    if (w) vt_weights_collect_errors(w, 1);
    build_model(&b, u);
    if (w) vt_weights_collect_errors(w, 0);
    u->params = b.params;
    u->n_params = b.n_params;
    u->n_values = b.n_values;
    if (n_values) *n_values = b.n_values;
    vt_err e = b.failed ? vt_error_code() : VT_OK;
    // always finish: it clears the record (and lists unused keys under the prefix)
    vt_err ef = w ? vt_weights_finish(w, prefix) : VT_OK;
    if (e == VT_OK) e = ef;
    if (e != VT_OK) {
        vt_error_context("unet3d (prefix \"%s\"): ", prefix);
        vt_unet3d_free(u);
        return NULL;
    }
    return u;
}

vt_unet3d *vt_unet3d_build(vt_weights *w, const char *prefix, const vt_unet3d_config *cfg) {
    if (!w) {
        vt_error(VT_ERR_ARG, "unet3d build: NULL weights");
        return NULL;
    }
    return build(w, prefix, cfg, 0, NULL, 0);
}

vt_unet3d *vt_unet3d_build_random(const vt_unet3d_config *cfg, uint64_t seed) {
    return build(NULL, "model.diffusion_model.", cfg, 0, NULL, seed);
}

vt_err vt_unet3d_check_weights(vt_weights *w, const char *prefix, const vt_unet3d_config *cfg, int64_t *n_params) {
    if (!w) return vt_error(VT_ERR_ARG, "unet3d check: NULL weights");
    vt_unet3d *u = build(w, prefix, cfg, 1, n_params, 0);
    if (!u) return vt_error_code();
    vt_unet3d_free(u);
    return VT_OK;
}

const vt_unet3d_config *vt_unet3d_get_config(const vt_unet3d *u) { return &u->cfg; }
int64_t vt_unet3d_n_params(const vt_unet3d *u) { return u->n_values; }

int vt_unet3d_n_weights(const vt_unet3d *u) { return u->n_params; }

vt_tensor *vt_unet3d_weight(const vt_unet3d *u, int i, const char **name) {
    if (i < 0 || i >= u->n_params) return NULL;
    if (name) *name = u->params[i].name;
    return u->params[i].t;
}

vt_tensor *vt_unet3d_param(const vt_unet3d *u, const char *name) {
    for (int i = 0; i < u->n_params; i++)
        if (strcmp(u->params[i].name, name) == 0) return u->params[i].t;
    return NULL;
}

void vt_unet3d_set_checkpoint(vt_unet3d *u, int on) { u->checkpoint = on; }
void vt_unet3d_set_dropout(vt_unet3d *u, float temporal_conv_p, float lora_p) {
    u->p_tconv = temporal_conv_p;
    u->p_lora = lora_p;
}
float vt_unet3d_lora_dropout(const vt_unet3d *u) { return u ? u->p_lora : 0.0f; }
void vt_unet3d_set_act_hook(vt_unet3d *u, vt_unet3d_act_hook hook, void *user) {
    u->hook = hook;
    u->hook_user = user;
}

// ---- segment closures ---------------------------------------------------------------------
void *unet_keep(vt_unet3d *u, void *p) {
    if (!p) {
        vt_error(VT_ERR_OOM, "unet3d: out of host memory for a segment closure");
        return NULL;
    }
    if (u->n_kept == u->cap_kept) {
        int cap = u->cap_kept ? 2 * u->cap_kept : 64;
        void **nk = realloc(u->kept, (size_t)cap * sizeof *nk);
        if (!nk) {
            free(p);
            vt_error(VT_ERR_OOM, "unet3d: out of host memory for a segment closure");
            return NULL;
        }
        u->kept = nk;
        u->cap_kept = cap;
    }
    u->kept[u->n_kept++] = p;
    return p;
}

vt_tensor *unet_segment(const unet_frame *f, const void *module, vt_segment_fn fn, vt_tensor *const *in, int n_in) {
    unet_seg *sg = unet_keep(f->u, malloc(sizeof *sg));
    if (!sg) return NULL;
    sg->f = f;
    sg->module = module;
    return vt_segment(fn, sg, in, n_in);
}

void vt_unet3d_release_segments(vt_unet3d *u) {
    for (int i = 0; i < u->n_kept; i++) free(u->kept[i]);
    u->n_kept = 0;
}

// ---- forward ------------------------------------------------------------------------------
static vt_tensor *resblock_segment_fn(void *ctx, vt_tensor *const *in, int n_in) {
    (void)n_in;
    const unet_seg *sg = ctx;
    return unet_resblock_forward(sg->f, sg->module, in[0], in[1]);
}

// One TimestepEmbedSequential: h [(B*T), C, H, W] -> next h.
static vt_tensor *block_forward(const unet_frame *f, const unet_block *blk, vt_tensor *h,
                                vt_tensor *emb, vt_tensor *ctx) {
    vt_tensor *cur = vt_retain(h);
    for (int i = 0; cur && i < blk->n; i++) {
        const unet_layer *L = &blk->layers[i];
        vt_tensor *nx = NULL;
        switch (L->kind) {
        case UNET_RES:
            if (f->checkpoint) {
                vt_tensor *in[2] = {cur, emb};
                nx = unet_segment(f, L->res, resblock_segment_fn, in, 2);
            } else {
                nx = unet_resblock_forward(f, L->res, cur, emb);
            }
            break;
        case UNET_SPATIAL:
        case UNET_TEMPORAL: nx = unet_transformer_forward(f, L->tr, cur, ctx); break;
        case UNET_CONV: nx = vt_conv2d(cur, L->conv.w, L->conv.b, 1, 1); break;
        case UNET_DOWN: nx = vt_conv2d(cur, L->conv.w, L->conv.b, 2, 1); break;
        case UNET_UP: {
            vt_tensor *up = vt_upsample_nearest2x(cur);
            nx = vt_conv2d(up, L->conv.w, L->conv.b, 1, 1);
            vt_release(up);
            break;
        }
        }
        vt_release(cur);
        cur = nx;
    }
    return cur;
}

static void act(vt_unet3d *u, const char *fmt, int i, vt_tensor *t) {
    if (!u->hook || !t) return;
    char name[64];
    snprintf(name, sizeof name, fmt, i);
    u->hook(u->hook_user, name, t);
}

// emb = MLP(timestep_embedding(t)): Linear, SiLU, Linear -> [B, 4 mc]
static vt_tensor *embed_mlp(const unet_frame *f, const unet_linear *l0, const unet_linear *l2, const vt_tensor *t, int dim) {
    vt_tensor *th = vt_on_device(t, VT_CPU);  // the embedding is a host computation
    vt_tensor *te = th ? vt_move_to(vt_timestep_embedding(th, dim, 10000.0f), l0->w->device) : NULL;
    vt_release(th);
    vt_tensor *a = te ? unet_linear_forward(f, l0, te) : NULL;
    vt_tensor *s = vt_silu(a);
    vt_tensor *o = s ? unet_linear_forward(f, l2, s) : NULL;
    vt_release(te);
    vt_release(a);
    vt_release(s);
    return o;
}

static vt_err check_inputs(const vt_unet3d *u, const vt_tensor *x, const vt_tensor *ts, const vt_tensor *ctx,
                           const vt_tensor *fps) {
    const vt_unet3d_config *c = &u->cfg;
    char s1[VT_SHAPE_BUF], s2[VT_SHAPE_BUF];
    if (!x || !ts || !ctx) return vt_error(VT_ERR_ARG, "unet3d forward: x, timesteps and context are required");
    if (x->ndim != 5 || x->shape[1] != c->in_channels || x->dtype != VT_F32)
        return vt_error(VT_ERR_SHAPE, "unet3d forward: x %s (%s) must be f32 [B, %d, T, H, W]",
                        vt_shape_str(x, s1, sizeof s1), vt_dtype_name(x->dtype), c->in_channels);
    int64_t B = x->shape[0], H = x->shape[3], W = x->shape[4];
    int ds = vt_unet3d_downsampling(c);
    if (H % ds || W % ds || H == 0 || W == 0) {
        int64_t bad = H % ds || H == 0 ? H : W;
        int64_t lo = bad / ds * ds, hi = lo + ds;
        char allowed[128];
        if (lo > 0) snprintf(allowed, sizeof allowed, "%lld or %lld", (long long)lo, (long long)hi);
        else snprintf(allowed, sizeof allowed, "%lld", (long long)hi);
        return vt_error(VT_ERR_SHAPE,
                        "unet3d forward: latent size %lldx%lld: height and width must be multiples of %d (the UNet "
                        "downsamples %d times); allowed sizes are %d, %d, %d, ... (nearest: %s; latent = pixels / 8)",
                        (long long)H, (long long)W, ds, c->n_levels - 1, ds, 2 * ds, 3 * ds, allowed);
    }
    if (ts->ndim != 1 || ts->shape[0] != B)
        return vt_error(VT_ERR_SHAPE, "unet3d forward: timesteps %s must be [%lld]", vt_shape_str(ts, s1, sizeof s1),
                        (long long)B);
    if (fps && fps->numel != 1 && (fps->ndim != 1 || fps->shape[0] != B))
        return vt_error(VT_ERR_SHAPE, "unet3d forward: fps %s must be [%lld] or one value",
                        vt_shape_str(fps, s1, sizeof s1), (long long)B);
    if (ctx->ndim != 3 || ctx->shape[0] != B || ctx->shape[2] != c->context_dim)
        return vt_error(VT_ERR_SHAPE, "unet3d forward: context %s must be [%lld, L, %d] for x %s",
                        vt_shape_str(ctx, s1, sizeof s1), (long long)B, c->context_dim,
                        vt_shape_str(x, s2, sizeof s2));
    return VT_OK;
}

// fps as one value per sample on the host: NULL -> lvdm's default 16; one value -> repeated
// (lvdm: an int fps becomes full_like(timesteps, fps)); [B] -> itself.
static vt_tensor *fps_per_sample(const vt_tensor *fps, int64_t B) {
    if (fps && fps->ndim == 1 && fps->shape[0] == B) return vt_retain((vt_tensor *)fps);
    vt_tensor *one = fps ? vt_on_device(fps, VT_CPU) : NULL;
    if (one && one->dtype != VT_I64 && one->dtype != VT_F32) {
        vt_tensor *f32 = vt_to_dtype(one, VT_F32);
        vt_release(one);
        one = f32;
    }
    if (fps && !one) return NULL;
    vt_dtype dt = one ? one->dtype : VT_I64;
    vt_tensor *r = vt_empty(dt, VT_CPU, 1, (int64_t[]){B});
    for (int64_t i = 0; r && i < B; i++) {
        if (dt == VT_I64) vt_i64(r)[i] = one ? vt_i64(one)[0] : 16;
        else vt_f32(r)[i] = vt_f32(one)[0];
    }
    vt_release(one);
    return r;
}

vt_tensor *vt_unet3d_forward(vt_unet3d *u, vt_tensor *x, const vt_tensor *timesteps, vt_tensor *context,
                             const vt_tensor *fps, uint64_t seed) {
    if (!u) {
        vt_error(VT_ERR_ARG, "unet3d forward: NULL model");
        return NULL;
    }
    if (check_inputs(u, x, timesteps, context, fps)) return NULL;
    const vt_unet3d_config *c = &u->cfg;
    int64_t B = x->shape[0], T = x->shape[2];
    // the frame outlives this call when segments need it for their recompute
    const int nograd = vt_tape_current() == NULL && u->p_lora <= 0.0f;
    unet_frame local = {u,
                        (int)B,
                        seed,
                        u->p_tconv,
                        u->p_lora,
                        u->checkpoint && vt_tape_current() != NULL,
                        nograd,
                        nograd && context == u->kv_ctx ? context : NULL};
    unet_frame *f = &local;
    if (local.checkpoint) {
        f = unet_keep(u, malloc(sizeof *f));
        if (!f) return NULL;
        *f = local;
    }
    vt_tensor *out = NULL, *emb = NULL, *embr = NULL, *h = NULL, *fpsb = NULL;
    vt_tensor *hs[UNET_MAX_BLOCKS] = {0};
    int n_hs = 0;

    // embeddings: emb = time_embed(te(t)) (+ fps_embedding(te(fps))), repeated per frame
    emb = embed_mlp(f, &u->time_embed0, &u->time_embed2, timesteps, c->model_channels);
    act(u, "time_embed", 0, emb);
    if (emb && c->fps_cond) {
        fpsb = fps_per_sample(fps, B);
        if (!fpsb) goto done;
        vt_tensor *fe = embed_mlp(f, &u->fps_embed0, &u->fps_embed2, fpsb, c->model_channels);
        act(u, "fps_embedding", 0, fe);
        vt_tensor *sum = vt_add(emb, fe);
        vt_release(fe);
        vt_release(emb);
        emb = sum;
    }
    // the embedding per frame; the context stays per sample (cross-attention projects its keys
    // and values once per sample and shares them over the frames)
    embr = vt_repeat_interleave(emb, 0, T);
    h = unet_fold(x);
    if (!embr || !h) goto done;

    for (int i = 0; i < u->n_input; i++) {
        vt_tensor *nh = block_forward(f, &u->input[i], h, embr, context);
        vt_release(h);
        h = nh;
        act(u, "input_blocks.%d", i, h);
        if (i == 0 && u->has_init_attn) {
            nh = unet_transformer_forward(f, &u->init_attn, h, context);
            vt_release(h);
            h = nh;
            act(u, "init_attn", 0, h);
        }
        if (!h) goto done;
        hs[n_hs++] = vt_retain(h);
    }
    {
        vt_tensor *nh = block_forward(f, &u->middle, h, embr, context);
        vt_release(h);
        h = nh;
        act(u, "middle_block", 0, h);
    }
    for (int i = 0; h && i < u->n_output; i++) {
        vt_tensor *pair[2] = {h, hs[--n_hs]};
        vt_tensor *cat = vt_concat(pair, 2, 1);
        vt_release(h);
        vt_release(hs[n_hs]);
        hs[n_hs] = NULL;
        h = cat ? block_forward(f, &u->output[i], cat, embr, context) : NULL;
        vt_release(cat);
        act(u, "output_blocks.%d", i, h);
    }
    if (h) {
        vt_tensor *s = vt_group_norm_silu(h, 32, u->out_norm.w, u->out_norm.b, 1e-5f);
        vt_tensor *o = vt_conv2d(s, u->out_conv.w, u->out_conv.b, 1, 1);
        out = unet_unfold(o, (int)B);
        vt_release(s);
        vt_release(o);
    }
done:
    for (int i = 0; i < n_hs; i++) vt_release(hs[i]);
    vt_release(h);
    vt_release(emb);
    vt_release(embr);
    vt_release(fpsb);
    if (!out) vt_error_context("unet3d forward: ");
    return out;
}

// ---- LoRA ---------------------------------------------------------------------------------
typedef void (*linear_visit)(void *user, unet_linear *l, unsigned target);

static void visit_attention(unet_attention *a, linear_visit fn, void *user) {
    fn(user, &a->to_q, VT_LORA_TO_Q);
    fn(user, &a->to_k, VT_LORA_TO_K);
    fn(user, &a->to_v, VT_LORA_TO_V);
    fn(user, &a->to_out, VT_LORA_TO_OUT);
}

static void visit_transformer(unet_transformer *t, linear_visit fn, void *user) {
    for (int i = 0; i < t->depth; i++) {
        visit_attention(&t->blocks[i].attn1, fn, user);
        visit_attention(&t->blocks[i].attn2, fn, user);
    }
}

static void visit_block(unet_block *blk, linear_visit fn, void *user) {
    for (int i = 0; i < blk->n; i++)
        if (blk->layers[i].tr) visit_transformer(blk->layers[i].tr, fn, user);
}

// Every attention projection in module (state-dict) order.
static void visit_attention_linears(vt_unet3d *u, linear_visit fn, void *user) {
    if (u->has_init_attn) visit_transformer(&u->init_attn, fn, user);
    for (int i = 0; i < u->n_input; i++) visit_block(&u->input[i], fn, user);
    visit_block(&u->middle, fn, user);
    for (int i = 0; i < u->n_output; i++) visit_block(&u->output[i], fn, user);
}

typedef struct lora_add_ctx {
    vt_unet3d *u;
    const vt_unet3d_lora_config *cfg;
    int count_only, n, failed;
} lora_add_ctx;

static void lora_add_one(void *user, unet_linear *l, unsigned target) {
    lora_add_ctx *c = user;
    if (!(c->cfg->targets & target) || c->failed) return;
    if (c->count_only) {
        c->n++;
        return;
    }
    vt_unet3d *u = c->u;
    int r = c->cfg->rank;
    l->lora_A = vt_empty(VT_F32, VT_CPU, 2, (int64_t[]){r, l->in});
    l->lora_B = vt_zeros(VT_F32, VT_CPU, 2, (int64_t[]){l->out, r});
    size_t nlen = strlen(u->prefix) + strlen(l->path) + 40;
    char *na = malloc(nlen), *nb = malloc(nlen);
    if (!l->lora_A || !l->lora_B || !na || !nb) {
        free(na);
        free(nb);
        c->failed = 1;
        return;
    }
    // peft: kaiming_uniform_(A, a=sqrt(5)) -> bound = sqrt(6 / ((1 + 5) fan_in)) = 1/sqrt(fan_in)
    vt_rng rng;
    vt_rng_seed(&rng, vt_hash64(c->cfg->seed, (uint64_t)c->n));
    float bound = (float)(1.0 / sqrt((double)l->in));
    vt_fill_uniform(l->lora_A, &rng, -bound, bound);
    vt_requires_grad(l->lora_A, 1);
    vt_requires_grad(l->lora_B, 1);
    if (u->device != VT_CPU) {  // LoRA added after the model moved: put it next to the weights
        vt_tensor *ab[2] = {l->lora_A, l->lora_B};
        if (vt_tensors_to_device(ab, 2, u->device)) {
            c->failed = 1;
            return;
        }
    }
    l->lora_scale = c->cfg->alpha / (float)r;
    snprintf(na, nlen, "base_model.model.%s%s.lora_A.weight", u->prefix, l->path);
    snprintf(nb, nlen, "base_model.model.%s%s.lora_B.weight", u->prefix, l->path);
    u->lora[c->n] = l;
    u->lora_names[2 * c->n] = na;
    u->lora_names[2 * c->n + 1] = nb;
    c->n++;
    u->n_lora = c->n;
}

vt_err vt_unet3d_add_lora(vt_unet3d *u, const vt_unet3d_lora_config *cfg) {
    if (!u || !cfg || cfg->rank < 1 || !(cfg->targets & 15u))
        return vt_error(VT_ERR_ARG, "unet3d lora: need rank >= 1 and at least one target");
    if (u->n_lora) return vt_error(VT_ERR_ARG, "unet3d lora: the model already has LoRA");
    lora_add_ctx c = {u, cfg, 1, 0, 0};
    visit_attention_linears(u, lora_add_one, &c);
    u->lora = calloc((size_t)c.n + 1, sizeof *u->lora);
    u->lora_names = calloc(2 * (size_t)c.n + 1, sizeof *u->lora_names);
    if (!u->lora || !u->lora_names) return vt_error(VT_ERR_OOM, "unet3d lora: out of host memory");
    c.count_only = 0;
    c.n = 0;
    visit_attention_linears(u, lora_add_one, &c);
    if (c.failed) return vt_error(VT_ERR_OOM, "unet3d lora: out of host memory");
    return VT_OK;
}

int vt_unet3d_n_lora(const vt_unet3d *u) { return 2 * u->n_lora; }

vt_tensor *vt_unet3d_lora_param(const vt_unet3d *u, int i, const char **name) {
    if (i < 0 || i >= 2 * u->n_lora) return NULL;
    if (name) *name = u->lora_names[i];
    return i % 2 ? u->lora[i / 2]->lora_B : u->lora[i / 2]->lora_A;
}

vt_err vt_unet3d_lora_load(vt_unet3d *u, vt_weights *store) {
    vt_err e = VT_OK;
    for (int i = 0; i < 2 * u->n_lora && e == VT_OK; i++) {
        const char *name;
        vt_tensor *dst = vt_unet3d_lora_param(u, i, &name);
        vt_tensor *src = vt_weights_get(store, name, dst->ndim, dst->shape);
        if (!src) {
            e = vt_error_context("unet3d lora load: ");
            break;
        }
        e = vt_copy_into(dst, src);
        vt_release(src);
    }
    return e;
}

vt_err vt_unet3d_to_device(vt_unet3d *u, vt_device dev) {
    if (!u) return vt_error(VT_ERR_ARG, "unet3d to_device: NULL model");
    vt_unet3d_cache_context(u, NULL);  // derived tensors: rebuilt on demand where the model goes
    vt_unet3d_lora_unmerge(u);
    int n = u->n_params + 2 * u->n_lora;
    vt_tensor **all = malloc((size_t)(n ? n : 1) * sizeof *all);
    if (!all) return vt_error(VT_ERR_OOM, "unet3d to_device: out of host memory");
    for (int i = 0; i < u->n_params; i++) all[i] = u->params[i].t;
    for (int i = 0; i < 2 * u->n_lora; i++) all[u->n_params + i] = vt_unet3d_lora_param(u, i, NULL);
    vt_err e = vt_tensors_to_device(all, n, dev);
    free(all);
    if (e) return vt_error_context("unet3d to %s: ", vt_device_name(dev));
    u->device = dev;
    return VT_OK;
}

// A GEMM weight: "*.weight" of 2+ dims, not lvdm's relative_position_k / _v embeddings_table
static int unet_is_gemm_weight(const char *name, const vt_tensor *t) {
    size_t n = strlen(name);
    return t->ndim >= 2 && n > 7 && strcmp(name + n - 7, ".weight") == 0 && !strstr(name, "relative_position");
}

vt_err vt_unet3d_set_weight_dtype(vt_unet3d *u, vt_dtype dt) {
    if (!u) return vt_error(VT_ERR_ARG, "unet3d weight dtype: NULL model");
    vt_unet3d_cache_context(u, NULL);  // derived from the weights
    vt_unet3d_lora_unmerge(u);
    vt_err e = VT_OK;
    for (int i = 0; i < u->n_params && !e; i++)
        if (u->params[i].t && unet_is_gemm_weight(u->params[i].name, u->params[i].t))
            e = vt_tensors_to_dtype(&u->params[i].t, 1, dt);
    return e ? vt_error_context("unet3d weights to %s: ", vt_dtype_name(dt)) : VT_OK;
}

vt_device vt_unet3d_device(const vt_unet3d *u) { return u->device; }

// ---- untaped sampling: merged LoRA, cached text K/V ---------------------------------------
// W' = W + scale B A: an [out, r] x [r, in] product per projection, computed once; the forward
// then runs one GEMM where the LoRA branch takes x A^T (r columns: a GEMM that is all packing
// overhead) and (x A^T) B^T. fp32 weights only: rounding W + delta to bf16 / fp16 would lose
// most of a small LoRA delta (those keep the unmerged branch).
vt_err vt_unet3d_lora_merge(vt_unet3d *u) {
    if (!u) return vt_error(VT_ERR_ARG, "unet3d lora merge: NULL model");
    vt_unet3d_lora_unmerge(u);
    vt_tape *tok = vt_nograd_begin();
    vt_err e = VT_OK;
    for (int i = 0; i < u->n_lora && !e; i++) {
        unet_linear *l = u->lora[i];
        if (l->w->dtype != VT_F32) continue;
        vt_tensor *ba = vt_matmul(l->lora_B, l->lora_A);  // [out, in]
        l->w_merged = ba ? vt_axpby(l->lora_scale, ba, 1.0f, l->w) : NULL;
        vt_release(ba);
        if (!l->w_merged) e = vt_error_context("unet3d lora merge (%s): ", l->path);
    }
    vt_nograd_end(tok);
    if (e) {
        vt_unet3d_lora_unmerge(u);
        return e;
    }
    u->lora_merged = 1;
    return VT_OK;
}

void vt_unet3d_lora_unmerge(vt_unet3d *u) {
    if (!u) return;
    for (int i = 0; i < u->n_lora; i++) vt_clear(&u->lora[i]->w_merged);
    u->lora_merged = 0;
}

int vt_unet3d_lora_is_merged(const vt_unet3d *u) { return u && u->lora_merged; }

// Visits every cross-attention (the spatial transformers' attn2).
typedef vt_err (*cross_visit)(void *user, unet_attention *a);

static vt_err visit_cross_block(unet_block *blk, cross_visit fn, void *user) {
    vt_err e = VT_OK;
    for (int i = 0; i < blk->n && !e; i++) {
        unet_transformer *t = blk->layers[i].tr;
        if (!t || t->temporal) continue;
        for (int d = 0; d < t->depth && !e; d++)
            if (t->blocks[d].cross) e = fn(user, &t->blocks[d].attn2);
    }
    return e;
}

static vt_err visit_cross(vt_unet3d *u, cross_visit fn, void *user) {
    vt_err e = VT_OK;
    for (int i = 0; i < u->n_input && !e; i++) e = visit_cross_block(&u->input[i], fn, user);
    if (!e) e = visit_cross_block(&u->middle, fn, user);
    for (int i = 0; i < u->n_output && !e; i++) e = visit_cross_block(&u->output[i], fn, user);
    return e;
}

static vt_err kv_drop(void *user, unet_attention *a) {
    (void)user;
    vt_clear(&a->k_ctx);
    vt_clear(&a->v_ctx);
    return VT_OK;
}

// ctx [B, L, D] -> each cross-attention's k, v [B, L, inner], as an untaped forward makes them
// (merged weights when merged)
static vt_err kv_fill(void *user, unet_attention *a) {
    const unet_frame *f = user;
    vt_tensor *ctx = (vt_tensor *)f->kv_ctx;
    a->k_ctx = unet_linear_forward(f, &a->to_k, ctx);
    a->v_ctx = a->k_ctx ? unet_linear_forward(f, &a->to_v, ctx) : NULL;
    return a->v_ctx ? VT_OK : vt_error_code();
}

vt_err vt_unet3d_cache_context(vt_unet3d *u, vt_tensor *ctx) {
    if (!u) return vt_error(VT_ERR_ARG, "unet3d cache context: NULL model");
    visit_cross(u, kv_drop, NULL);
    vt_clear(&u->kv_ctx);
    if (!ctx) return VT_OK;
    if (ctx->ndim != 3 || ctx->shape[2] != u->cfg.context_dim) {
        char s1[VT_SHAPE_BUF];
        return vt_error(VT_ERR_SHAPE, "unet3d cache context: context %s must be [B, L, %d]",
                        vt_shape_str(ctx, s1, sizeof s1), u->cfg.context_dim);
    }
    unet_frame f = {u, (int)ctx->shape[0], 0, 0.0f, 0.0f, 0, 1, ctx};
    vt_tape *tok = vt_nograd_begin();
    vt_err e = visit_cross(u, kv_fill, &f);
    vt_nograd_end(tok);
    if (e) {
        visit_cross(u, kv_drop, NULL);
        return vt_error_context("unet3d cache context: ");
    }
    u->kv_ctx = vt_retain(ctx);
    return VT_OK;
}

// ---- FLOP count (benchmarks) --------------------------------------------------------------
typedef struct flop_acc {
    double total, attn;
} flop_acc;

// One Spatial (seq = H*W per frame, cross on L text tokens) or Temporal (seq = T per pixel,
// self only) transformer of `depth` blocks over ntok = B*T*H*W tokens of `ch` channels.
static void flops_transformer(flop_acc *a, const vt_unet3d_config *c, int temporal, double ntok, double ch,
                              double inner, int depth, double seq, double nctx, double lctx) {
    a->total += 2 * 2 * ntok * ch * inner;  // proj_in, proj_out
    for (int d = 0; d < depth; d++) {
        a->total += 2 * ntok * inner * inner * 4;  // attn1 q k v out
        double at1 = 4 * ntok * seq * inner;       // q k^T and p v
        double at2;
        if (temporal) {
            a->total += 2 * ntok * inner * inner * 4;
            at2 = 4 * ntok * seq * inner;
        } else {
            a->total += 2 * ntok * inner * inner * 2 + 2 * nctx * c->context_dim * inner * 2;
            at2 = 4 * ntok * lctx * inner;
        }
        if (temporal && c->use_relative_position) {  // q . E_k and p E_v: as many MACs as q k^T and p v
            at1 *= 2;
            at2 *= 2;
        }
        a->total += at1 + at2;
        a->attn += at1 + at2;
        a->total += 2 * ntok * inner * 8 * inner + 2 * ntok * 4 * inner * inner;  // GEGLU ff
    }
}

static void flops_res(flop_acc *a, const vt_unet3d_config *c, double npix, double in, double out, double nframes) {
    a->total += 2 * npix * out * in * 9 + 2 * npix * out * out * 9 + 2 * nframes * 4 * c->model_channels * out;
    if (in != out) a->total += 2 * npix * out * in;
    if (c->temporal_conv) a->total += 4 * 2 * npix * out * out * 3;
}

static void flops_attn(flop_acc *a, const vt_unet3d_config *c, double npix, double ch, double hw, double T, double nf,
                       double L) {
    int heads, dh;
    vt_unet3d_heads(c, (int)ch, &heads, &dh);
    // the text keys / values are projected once per sample (nf / T samples), not per frame
    flops_transformer(a, c, 0, npix, ch, (double)heads * dh, c->transformer_depth, hw, nf / T * L, L);
    if (c->temporal_attention)
        flops_transformer(a, c, 1, npix, ch, (double)heads * dh, vt_unet3d_temporal_depth(c), T, 0, 0);
}

double vt_unet3d_flops(const vt_unet3d_config *c, int64_t B, int64_t T, int64_t H, int64_t W, int64_t L, double *attn) {
    flop_acc a = {0, 0};
    double mc = c->model_channels, E = 4 * mc, nf = (double)(B * T), hw = (double)(H * W);
    a.total += 2 * B * (mc * E + E * E) * (c->fps_cond ? 2 : 1);
    a.total += 2 * nf * hw * mc * c->in_channels * 9;
    if (c->addition_attention)
        flops_transformer(&a, c, 1, nf * hw, mc, (double)c->init_attn_heads * c->num_head_channels,
                          c->transformer_depth, (double)T, 0, 0);
    double chans[UNET_MAX_BLOCKS];
    int n = 0;
    chans[n++] = mc;
    double ch = mc;
    int ds = 1;
    for (int level = 0; level < c->n_levels; level++) {
        for (int i = 0; i < c->num_res_blocks; i++) {
            double out = c->channel_mult[level] * mc;
            flops_res(&a, c, nf * hw, ch, out, nf);
            ch = out;
            if (in_attention(c, ds)) flops_attn(&a, c, nf * hw, ch, hw, (double)T, nf, (double)L);
            chans[n++] = ch;
        }
        if (level != c->n_levels - 1) {
            hw /= 4;
            a.total += 2 * nf * hw * ch * ch * 9;
            chans[n++] = ch;
            ds *= 2;
        }
    }
    flops_res(&a, c, nf * hw, ch, ch, nf);
    flops_attn(&a, c, nf * hw, ch, hw, (double)T, nf, (double)L);
    flops_res(&a, c, nf * hw, ch, ch, nf);
    for (int level = c->n_levels - 1; level >= 0; level--) {
        for (int i = 0; i <= c->num_res_blocks; i++) {
            double out = c->channel_mult[level] * mc;
            flops_res(&a, c, nf * hw, ch + chans[--n], out, nf);
            ch = out;
            if (in_attention(c, ds)) flops_attn(&a, c, nf * hw, ch, hw, (double)T, nf, (double)L);
            if (level && i == c->num_res_blocks) {
                hw *= 4;
                a.total += 2 * nf * hw * ch * ch * 9;
                ds /= 2;
            }
        }
    }
    a.total += 2 * nf * hw * c->out_channels * ch * 9;
    if (attn) *attn = a.attn;
    return a.total;
}
