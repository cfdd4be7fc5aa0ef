// memplan.c — the memory plan (see memplan.h).
#include "memplan.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "core/models/openclip.h"
#include "core/models/unet3d.h"
#include "core/models/vae_decoder.h"
#include "core/weights.h"
#include "cuda/device_query.h"
#include "train/flops.h"
#include "train/lora.h"
#include "train/tiny_models.h"

#define CONTEXT_TOKENS 77
#define MB (1024.0 * 1024.0)
#define GB (1024.0 * 1024.0 * 1024.0)

// ---- parameter counts -----------------------------------------------------------------------
static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static vt_weights *open_header(const char *path) {
    return ends_with(path, ".txt") ? vt_weights_from_manifest(path, 0, 0) : vt_weights_open1(path);
}

// Parameters in the store at path: keys under the first prefix present (or all), skipping
// keys that contain `skip` (NULL: none). -1 + error when the file cannot be opened.
// only (may be NULL): count just the keys containing it
static int64_t count_file(const char *path, const char *probe_key, const char *prefix, const char *skip, const char *only) {
    vt_weights *w = open_header(path);
    if (!w) return -1;
    const char *pre = probe_key && vt_weights_has(w, probe_key) ? prefix : "";
    int64_t n = 0;
    for (int i = 0; i < vt_weights_n_keys(w); i++) {
        const char *k = vt_weights_key(w, i);
        if (strncmp(k, pre, strlen(pre)) != 0 || (skip && strstr(k, skip)) || (only && !strstr(k, only))) continue;
        int nd = 0;
        int64_t shape[8], e = 1;
        if (!vt_weights_shape(w, k, &nd, shape)) continue;
        for (int d = 0; d < nd; d++) e *= shape[d];
        n += e;
    }
    vt_weights_free(w);
    return n;
}

// LoRA parameters (r x (in + out) per targeted projection) of every attention of the UNet,
// init_attn included: the structure of vt_unet3d_add_lora's visit. *merged gets the elements of
// the targeted weights themselves (in x out each: the copy vt_unet3d_lora_merge makes).
static int64_t lora_params(const vt_unet3d_config *c, int rank, unsigned targets, int64_t *merged) {
    int64_t n = 0, m = 0;
    int dh = c->num_head_channels;
    // one attention: query dim q, key/value input dim kv, inner width
    #define ATTN(q, kv, inner)                                                                       \
        n += (targets & VT_LORA_TO_Q ? (int64_t)rank * ((q) + (inner)) : 0) +                         \
             (targets & VT_LORA_TO_K ? (int64_t)rank * ((kv) + (inner)) : 0) +                        \
             (targets & VT_LORA_TO_V ? (int64_t)rank * ((kv) + (inner)) : 0) +                        \
             (targets & VT_LORA_TO_OUT ? (int64_t)rank * ((inner) + (q)) : 0);                        \
        m += (targets & VT_LORA_TO_Q ? (int64_t)(q) * (inner) : 0) +                                  \
             (targets & VT_LORA_TO_K ? (int64_t)(kv) * (inner) : 0) +                                 \
             (targets & VT_LORA_TO_V ? (int64_t)(kv) * (inner) : 0) +                                 \
             (targets & VT_LORA_TO_OUT ? (int64_t)(inner) * (q) : 0)
    if (c->addition_attention) {
        int inner = c->init_attn_heads * dh;
        for (int d = 0; d < c->transformer_depth; d++) {
            ATTN(inner, inner, inner);
            ATTN(inner, c->temporal_selfatt_only ? inner : c->context_dim, inner);
        }
    }
    int ds = 1;
    for (int level = 0; level < c->n_levels; level++) {
        int ch = c->channel_mult[level] * c->model_channels, att = 0;
        for (int i = 0; i < c->n_attention_resolutions; i++) att |= c->attention_resolutions[i] == ds;
        // input blocks (num_res_blocks) + output blocks (num_res_blocks + 1) at this level
        int blocks = att ? 2 * c->num_res_blocks + 1 : 0;
        if (level == c->n_levels - 1) blocks += 1;  // middle block
        int heads, dh;
        vt_unet3d_heads(c, ch, &heads, &dh);
        int inner = heads * dh, tkv = c->temporal_selfatt_only ? inner : c->context_dim;
        for (int b = 0; b < blocks; b++) {
            for (int d = 0; d < c->transformer_depth; d++) {
                ATTN(inner, inner, inner);
                ATTN(inner, c->context_dim, inner);
            }
            for (int d = 0; c->temporal_attention && d < vt_unet3d_temporal_depth(c); d++) {
                ATTN(inner, inner, inner);
                ATTN(inner, tkv, inner);
            }
        }
        ds *= 2;
    }
    #undef ATTN
    *merged = m;
    return n;
}

// The released reward models' sizes (used when a reward has no checkpoint): ViT-H-14 text +
// vision (HPSv2, PickScore's CLIP-H), CLIP ViT-L/14 vision + the aesthetic head. *image gets the
// image tower's part (what stays resident; its GEMM weights at model.dtype).
static int64_t reward_nominal(vt_cfg_reward_kind k, int64_t *image) {
    switch (k) {
    case VT_CFG_REWARD_HPS:
    case VT_CFG_REWARD_HPSV21:
    case VT_CFG_REWARD_PICKSCORE: *image = 632076800; return 986109441;
    case VT_CFG_REWARD_AESTHETIC: *image = 303179776 + 919681; return *image;
    default: *image = 0; return 0;
    }
}

// The CLIP-family rewards: 16-bit image towers (rewards/reward.h vt_reward_set_weight_dtype),
// and for the prompt-conditioned ones a text tower freed once the prompts are cached.
static int reward_is_clip(vt_cfg_reward_kind k) {
    return k == VT_CFG_REWARD_HPS || k == VT_CFG_REWARD_HPSV21 || k == VT_CFG_REWARD_PICKSCORE ||
           k == VT_CFG_REWARD_AESTHETIC;
}

// Every reward tower with weights follows model.dtype (VideoMAE, V-JEPA 2 and YOLOS: their
// encoders' linears, nearly all of them); colour has none.
static int reward_weights_16bit(vt_cfg_reward_kind k) {
    return reward_is_clip(k) || k == VT_CFG_REWARD_ACTION || k == VT_CFG_REWARD_TEMPORAL ||
           k == VT_CFG_REWARD_OBJECT_REMOVAL;
}

// ---- activation model -----------------------------------------------------------------------
// Counted in elements; every block is described by the token count n (B' T h w at its level)
// and its widths. Constants: tensors of the block's size that the CPU reference ops keep.
typedef struct act_acc {
    double skips;         // input-block outputs held for the output blocks (no-grad)
    double work;          // largest no-grad working set of one block
    double saved_full;    // every op's saved tensors
    double saved_ckpt;    // segment inputs + ops outside segments
    double seg_in;        // the segment inputs among them (kept in memory.saved_dtype)
    double recompute;     // largest segment tape + its gradients
} act_acc;

static double dmax(double a, double b) { return a > b ? a : b; }

// Frozen Linear / Conv ops keep no input (core/ops linear_saved_needed / conv_saved_needed):
// what a block holds is its norms' and nonlinearities' inputs and the attention's q, k, v, o.
// ResBlock (+ TemporalConvBlock): the two GroupNorm+SiLU inputs (in + out), the temporal conv
// block's four (4 out).
static void res_block(act_acc *a, double n, double in, double out, int temporal) {
    double full = n * (in + out + (temporal ? 4 * out : 0));
    a->saved_full += full;
    a->saved_ckpt += n * in;                        // segment input
    a->seg_in += n * in;
    a->work = dmax(a->work, n * (2 * in + 3 * out));
    a->recompute = dmax(a->recompute, full + n * (in + 2 * out));
}

// Spatial or temporal transformer of width C, one checkpoint segment as a whole (its input x
// kept; unet3d_blocks.c): the GroupNorm's input (C; proj_in / proj_out are frozen), one
// BasicTransformerBlock per depth (nested segments when depth > 1: their inputs, C each):
// LayerNorm inputs (3 C), attn1: the LoRA q / k / v input and q, k, v, o (5 C), attn2 (cross:
// q's input, q, o: 3 C), GEGLU's input (8 C) ~ 19 C; to_out with LoRA keeps its input (+1 C per
// attention); with relative positions (use_relative_position: attention from recorded matmul /
// permute / softmax ops, unet3d_blocks.c) the scaled and permuted q, k, v copies (~10 C).
static void transformer(act_acc *a, double n, double C, int depth, int temporal, int relpos, int lora_out) {
    double blk = n * C * (19 + 2 * lora_out + (temporal && relpos ? 10 : 0));
    a->saved_full += n * C + depth * blk;
    a->saved_ckpt += n * C;
    a->seg_in += n * C;
    a->work = dmax(a->work, n * C * 15);
    a->recompute = dmax(a->recompute, blk + n * C + (depth > 1 ? depth * n * C : 0));
}

static void unet_acts(const vt_unet3d_config *c, double N, double T, double h, double w, int lora_out, act_acc *a) {
    memset(a, 0, sizeof *a);
    double px = h * w, nf = N * T, mc = c->model_channels, ch = mc;
    double chans[64];
    int nc = 0, ds = 1, tc = c->temporal_conv;
    // conv_in, the down / upsample convs and the concat keep nothing (frozen convs)
    a->skips += nf * px * mc;
    chans[nc++] = mc;
    if (c->addition_attention)
        transformer(a, nf * px, c->init_attn_heads * c->num_head_channels, c->transformer_depth, 1,
                    c->use_relative_position, lora_out);
    for (int level = 0; level < c->n_levels; level++) {
        int att = 0;
        for (int i = 0; i < c->n_attention_resolutions; i++) att |= c->attention_resolutions[i] == ds;
        for (int i = 0; i < c->num_res_blocks; i++) {
            double out = c->channel_mult[level] * mc;
            res_block(a, nf * px, ch, out, tc);
            ch = out;
            if (att) {
                transformer(a, nf * px, ch, c->transformer_depth, 0, 0, lora_out);
                if (c->temporal_attention)
                    transformer(a, nf * px, ch, vt_unet3d_temporal_depth(c), 1, c->use_relative_position, lora_out);
            }
            a->skips += nf * px * ch;
            if (nc < 64) chans[nc++] = ch;
        }
        if (level != c->n_levels - 1) {
            px /= 4;
            a->skips += nf * px * ch;
            if (nc < 64) chans[nc++] = ch;
            ds *= 2;
        }
    }
    res_block(a, nf * px, ch, ch, tc);
    transformer(a, nf * px, ch, c->transformer_depth, 0, 0, lora_out);
    if (c->temporal_attention)
        transformer(a, nf * px, ch, vt_unet3d_temporal_depth(c), 1, c->use_relative_position, lora_out);
    res_block(a, nf * px, ch, ch, tc);
    for (int level = c->n_levels - 1; level >= 0; level--) {
        int att = 0;
        for (int i = 0; i < c->n_attention_resolutions; i++) att |= c->attention_resolutions[i] == ds;
        for (int i = 0; i <= c->num_res_blocks; i++) {
            double out = c->channel_mult[level] * mc, skip = nc > 0 ? chans[--nc] : 0;
            res_block(a, nf * px, ch + skip, out, tc);
            ch = out;
            if (att) {
                transformer(a, nf * px, ch, c->transformer_depth, 0, 0, lora_out);
                if (c->temporal_attention)
                    transformer(a, nf * px, ch, vt_unet3d_temporal_depth(c), 1, c->use_relative_position, lora_out);
            }
            if (level && i == c->num_res_blocks) {
                px *= 4;
                ds /= 2;
            }
        }
    }
    a->saved_full += nf * px * ch;  // out: norm+silu (the conv is frozen)
    a->saved_ckpt += nf * px * ch;
}

// VAE decoder on n frames (frozen convs keep no input): ResnetBlocks save their two
// GroupNorm+SiLU inputs, segment input 1; the attention q, k, v, out + the norm's input.
static void vae_acts(const vt_vae_config *c, double n, double h, double w, act_acc *a) {
    memset(a, 0, sizeof *a);
    double px = h * w, ch = (double)c->ch * c->ch_mult[c->n_levels - 1];
    #define VRES(in, out)                                                                  \
        do {                                                                               \
            double f_ = n * px * ((in) + (out));                                           \
            a->saved_full += f_;                                                           \
            a->saved_ckpt += n * px * (in);                                                \
            a->seg_in += n * px * (in);                                                    \
            a->work = dmax(a->work, n * px * ((in) + 3 * (out)));                          \
            a->recompute = dmax(a->recompute, f_ + n * px * ((in) + 2 * (out)));           \
        } while (0)
    VRES(ch, ch);
    a->saved_full += n * px * ch * 5;  // mid attention
    a->saved_ckpt += n * px * ch;
    a->seg_in += n * px * ch;
    VRES(ch, ch);
    for (int i = c->n_levels - 1; i >= 0; i--) {
        double out = (double)c->ch * c->ch_mult[i];
        for (int j = 0; j <= c->num_res_blocks; j++) {
            VRES(ch, out);
            ch = out;
        }
        if (i) {
            px *= 4;
            a->work = dmax(a->work, n * px * ch * 2);
        }
    }
    #undef VRES
    a->saved_full += n * px * (ch + c->out_ch);  // norm_out+swish; the frames
    a->saved_ckpt += n * px * (ch + c->out_ch);
}

// A reward vision tower on n frames (frozen linears keep no input): per layer 2 LayerNorm
// inputs, the attention's q, k, v, o, the GELU's input (mlp): 6 W + mlp per token; segment
// input W. Preprocessing: the frames
// clamped / resized to 224 (a few 3 x 224 x 224 copies).
static void reward_acts(const vt_flops_vit *v, double n, int ckpt, double *saved, double *seg_in, double *recompute) {
    *saved = 0;
    *seg_in = 0;
    *recompute = 0;
    if (v->width <= 0) return;
    double g = v->image_size / v->patch_size, tok = n * (g * g + 1), W = v->width;
    double layer = tok * (6 * W + v->mlp);
    *seg_in = ckpt ? v->layers * tok * W : 0;
    *saved = n * 6 * 3 * v->image_size * v->image_size + (ckpt ? *seg_in : v->layers * layer);
    *recompute = ckpt ? layer + tok * W * 3 : tok * W * 3;
}

int vt_memplan_on_cuda(const vt_config *cfg) {
    if (cfg->device == VT_CFG_DEVICE_CUDA) return 1;
    return cfg->device == VT_CFG_DEVICE_AUTO && vt_cuda_device_count() > 0;
}

vt_err vt_memplan_run_dtype(const vt_config *cfg, int on_cuda, vt_cfg_dtype *dtype, const char **notice) {
    if (notice) *notice = NULL;
    const vt_cfg_dtype want = cfg->model.dtype;
    if (want != VT_CFG_DTYPE_AUTO) {
        *dtype = want;
        return VT_OK;
    }
    // auto: bf16 weights where they pay (the GPU: half the memory, tensor-core GEMMs); fp32 on
    // the CPU, whose GEMMs would convert them on every call
    *dtype = on_cuda ? VT_CFG_DTYPE_BF16 : VT_CFG_DTYPE_FP32;
    if (notice && on_cuda)
        *notice = "model.dtype auto: bf16 frozen UNet / VAE / reward image-tower weights on the GPU (activations, "
                  "LoRA and AdamW in fp32)";
    return VT_OK;
}

vt_cfg_dtype vt_memplan_saved_dtype(const vt_config *cfg, int on_cuda) {
    // auto as model.dtype: bf16 on the GPU (half the bytes the taped steps hold), fp32 (exact
    // segment gradients) on the CPU
    if (cfg->memory.saved_dtype != VT_CFG_DTYPE_AUTO) return cfg->memory.saved_dtype;
    return on_cuda ? VT_CFG_DTYPE_BF16 : VT_CFG_DTYPE_FP32;
}

vt_dtype vt_memplan_weight_dtype(vt_cfg_dtype d) {
    return d == VT_CFG_DTYPE_BF16 ? VT_BF16 : d == VT_CFG_DTYPE_FP16 ? VT_F16 : VT_F32;
}

vt_err vt_memplan_compute(const vt_config *cfg, vt_memplan *p) {
    memset(p, 0, sizeof *p);
    // bytes per element: the UNet / VAE GEMM weights at the run's model.dtype; activations (the
    // kernels have no 16-bit activations yet), the text tower and the rewards in fp32
    vt_cfg_dtype dt;
    if (vt_memplan_run_dtype(cfg, vt_memplan_on_cuda(cfg), &dt, NULL)) {
        vt_error_clear();
        dt = VT_CFG_DTYPE_FP32;
    }
    const int wb = 4, gw = dt == VT_CFG_DTYPE_FP32 ? 4 : 2;
    const int sb = vt_memplan_saved_dtype(cfg, vt_memplan_on_cuda(cfg)) == VT_CFG_DTYPE_FP32 ? 4 : 2;
    p->act_bytes = wb;
    p->weight_bytes = gw;
    p->saved_bytes = sb;
    vt_unet3d_config uc = cfg->model.unet ? vt_unet3d_config_videocrafter2() : vt_tiny_unet_config();
    vt_vae_config vc = cfg->model.vae ? vt_vae_config_videocrafter2() : vt_tiny_vae_config();
    // parameter counts
    if (cfg->model.unet) {
        p->n_unet = count_file(cfg->model.unet, "model.diffusion_model.out.2.weight", "model.diffusion_model.", NULL, NULL);
    } else {  // the tiny presets are fixed: counted once per process
        static int64_t tiny_unet = 0;
        if (!tiny_unet) {
            vt_unet3d *u = vt_unet3d_build_random(&uc, 1);
            tiny_unet = u ? vt_unet3d_n_params(u) : 0;
            vt_unet3d_free(u);
        }
        p->n_unet = tiny_unet ? tiny_unet : -1;
    }
    if (cfg->model.vae) {
        p->n_vae = count_file(cfg->model.vae, "first_stage_model.post_quant_conv.weight", "first_stage_model.", "encoder.", NULL);
    } else {
        static int64_t tiny_vae = 0;
        if (!tiny_vae) {
            vt_vae_decoder *d = vt_vae_decoder_build_random(&vc, 1);
            tiny_vae = d ? vt_vae_decoder_n_params(d) : 0;
            vt_vae_decoder_free(d);
        }
        p->n_vae = tiny_vae ? tiny_vae : -1;
    }
    int text_width = 32;
    if (cfg->model.text) {
        p->n_text = count_file(cfg->model.text, "cond_stage_model.model.token_embedding.weight", "cond_stage_model.model.",
                               "visual.", NULL);
        text_width = 1024;
    } else {
        static int64_t tiny_text = 0;
        vt_openclip_config oc = vt_tiny_text_config();
        if (!tiny_text) {
            vt_openclip *m = vt_openclip_text_build_random(&oc, 1);
            tiny_text = m ? m->n_params : 0;
            vt_openclip_free(m);
        }
        p->n_text = tiny_text ? tiny_text : -1;
        text_width = oc.text.width;
    }
    if (p->n_unet < 0 || p->n_vae < 0 || p->n_text < 0) return vt_error_context("memory plan: ");
    double w_reward_text = 0;
    for (int m = 0; m < cfg->reward.n_modules; m++) {
        const vt_config_reward *r = &cfg->reward.modules[m];
        int64_t img = 0, n = reward_nominal(r->kind, &img);
        if (r->checkpoint && !strchr(r->checkpoint, ',')) {
            const char *skip = r->kind == VT_CFG_REWARD_AESTHETIC ? "text_model." : NULL;
            n = count_file(r->checkpoint, NULL, "", skip, NULL);
            if (n < 0) return vt_error_context("memory plan: reward.%d: ", m);
            // the image tower: open_clip visual.*, transformers vision_model.* + visual_projection
            img = !reward_is_clip(r->kind) ? n
                  : r->kind == VT_CFG_REWARD_HPS || r->kind == VT_CFG_REWARD_HPSV21
                      ? count_file(r->checkpoint, NULL, "", NULL, "visual.")
                      : count_file(r->checkpoint, NULL, "", skip, "vision_model.") +
                            count_file(r->checkpoint, NULL, "", skip, "visual_projection");
            if (r->kind == VT_CFG_REWARD_AESTHETIC) img = n;  // the head rides along (f32, tiny)
        }
        p->n_reward += n;
        p->w_reward += (double)img * (reward_weights_16bit(r->kind) ? gw : wb);
        w_reward_text += (double)(n - img) * wb;  // freed after the prompts are cached
    }
    unsigned targets = 0;
    if (vt_lora_targets_from_names(cfg->lora.targets, cfg->lora.n_targets, &targets)) return vt_error_code();
    int64_t n_merged = 0;
    p->n_lora = lora_params(&uc, cfg->lora.rank, targets, &n_merged);

    p->w_unet = (double)p->n_unet * gw;  // norms and biases are a few parts in 10^4 of either
    p->w_vae = (double)p->n_vae * gw;
    p->w_text = (double)p->n_text * wb;
    p->w_reward_text = w_reward_text;
    p->lora = (double)p->n_lora * 4 * 4;
    double B = cfg->data.batch_size, T = cfg->model.frames, h = cfg->model.height / 8, w = cfg->model.width / 8;
    double N = cfg->sampler.guidance_scale != 1.0 ? 2 * B : B;
    int n_prompts = cfg->data.n_prompts > 0 ? cfg->data.n_prompts : 1000;
    double latent = B * 4 * T * h * w;
    // contexts (fp32 on the host), the CFG pair's contexts, x, noise, x_prev, pred_x0, eps
    p->contexts = (double)(n_prompts + 1) * CONTEXT_TOKENS * text_width * 4 + 2 * N * CONTEXT_TOKENS * text_width * wb +
                  8 * latent * wb;
    // the text tower only encodes the prompts at set-up (on the device, for speed) and is freed
    // before the first step (vt_trainer_create): it counts towards the set-up peak alone
    p->resident = p->w_unet + p->w_vae + p->w_reward + p->lora + p->contexts;
    p->setup = p->resident + p->w_text + p->w_reward_text;

    vt_step_flops f;
    if (vt_step_flops_count(cfg, &uc, &vc, &f)) return vt_error_code();
    int tape = f.taped_steps, ck = cfg->memory.checkpointing;
    act_acc ua;
    unet_acts(&uc, N, T, h, w, (targets & VT_LORA_TO_OUT) != 0, &ua);
    p->sampling = (ua.skips + ua.work) * wb;
    // the untaped steps' merged LoRA weights (vt_vader_step's nograd_fast: fp32 weights and no
    // LoRA dropout only); the cached text K/V are a few MiB even at full size
    if (gw == 4 && cfg->lora.dropout <= 0) p->sampling += (double)n_merged * 4;
    p->taped_ckpt = tape * ((ua.saved_ckpt - ua.seg_in) * wb + ua.seg_in * sb);
    p->taped_seg_in = tape * ua.seg_in * sb;
    p->taped_full = tape * ua.saved_full * wb;
    p->taped = ck ? p->taped_ckpt : p->taped_full;
    act_acc va;
    double nfr = f.frames_decoded;
    vae_acts(&vc, nfr, h, w, &va);
    double grad = tape > 0;
    p->decode_ckpt = (va.saved_ckpt - va.seg_in) * wb + va.seg_in * sb;
    p->decode_full = va.saved_full * wb;
    p->decode = grad ? (ck ? p->decode_ckpt : p->decode_full) : va.work * wb;
    double rsave = 0, rrec = 0;
    for (int m = 0; m < cfg->reward.n_modules; m++) {
        vt_flops_vit v = vt_flops_reward_tower(cfg->reward.modules[m].kind, NULL);
        double s, si, r;
        reward_acts(&v, nfr, ck, &s, &si, &r);
        rsave += s - si + si * sb / wb;
        rrec = dmax(rrec, r);
    }
    p->reward = rsave * wb;
    // backward: the largest recompute (with checkpointing) or gradient working set, plus the
    // gradient of x and its double-buffer through the DDIM steps
    double rec = ck ? dmax(dmax(ua.recompute, va.recompute), rrec) : dmax(ua.work, va.work);
    p->backward = grad ? (rec + 4 * N * 4 * T * h * w) * wb : 0;
    double ph_sample = p->sampling;
    // the taped forward holds the input blocks' outputs for the output blocks too (as sampling)
    double ph_fwd = p->taped + (grad ? (ua.skips + ua.work) * wb : 0);
    double ph_bwd = p->taped + p->decode + p->reward + p->backward;
    double act = ph_sample;
    p->peak_phase = "sampling";
    if (ph_fwd > act) act = ph_fwd, p->peak_phase = "taped forward";
    if (ph_bwd > act) act = ph_bwd, p->peak_phase = grad ? "decode + reward + backward" : "decode + reward";
    p->peak = p->step_peak = p->resident + act;
    if (p->setup > p->peak) p->peak = p->setup, p->peak_phase = "set-up (text tower encoding the prompts)";
    return VT_OK;
}

static const char *human(double b, char *buf, size_t n);

size_t vt_memplan_device_memory(const vt_config *cfg, int cuda_device, char *source, size_t n) {
    char tmp[8];
    if (!source) source = tmp, n = sizeof tmp;
    snprintf(source, n, "unknown");
    if (vt_memplan_on_cuda(cfg)) {
        size_t free_b = 0, total_b = 0;
        if (vt_cuda_device_count() == 0) {
            snprintf(source, n, "no GPU visible");
            return 0;
        }
        if (vt_cuda_device_mem_info(cuda_device, &free_b, &total_b)) {
            snprintf(source, n, "CUDA device %d (%s)", cuda_device, vt_error_message());
            vt_error_clear();
            return 0;
        }
        char a[32];
        snprintf(source, n, "the free memory of CUDA device %d (cudaMemGetInfo; %s total)", cuda_device,
                 human((double)total_b, a, sizeof a));
        return free_b;
    }
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        unsigned long long kb = 0;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
        fclose(f);
        if (kb) {
            snprintf(source, n, "MemAvailable in /proc/meminfo");
            return (size_t)kb * 1024;
        }
    }
    long pages = sysconf(_SC_PHYS_PAGES), ps = sysconf(_SC_PAGESIZE);
    if (pages > 0 && ps > 0) {
        snprintf(source, n, "physical memory (sysconf)");
        return (size_t)pages * (size_t)ps;
    }
    return 0;
}

static const char *human(double b, char *buf, size_t n) {
    if (b >= GB) snprintf(buf, n, "%.2f GiB", b / GB);
    else snprintf(buf, n, "%.1f MiB", b / MB);
    return buf;
}

void vt_memplan_format(const vt_memplan *p, char *buf, size_t n) {
    char a[16][32];
    snprintf(buf, n,
             "memory plan (%s UNet / VAE weights, %s activations, %s saved segment inputs): predicted peak %s (during %s)\n"
             "  frozen weights     unet %s, vae %s, reward image towers %s (text towers %s: freed once the prompts are encoded)\n"
             "  lora + adamw       %s (%lld params)\n"
             "  contexts, latents  %s\n"
             "  sampling forward   %s (no-grad UNet working set)\n"
             "  taped steps        %s (checkpointing: %s, without: %s)\n"
             "  vae decode         %s\n"
             "  reward activations %s\n"
             "  backward working   %s\n",
             p->weight_bytes == 4 ? "fp32" : "16-bit", p->act_bytes == 4 ? "fp32" : "16-bit",
             p->saved_bytes == 4 ? "fp32" : "16-bit", human(p->peak, a[0], 32), p->peak_phase, human(p->w_unet, a[1], 32),
             human(p->w_vae, a[2], 32), human(p->w_reward, a[4], 32), human(p->w_text + p->w_reward_text, a[3], 32),
             human(p->lora, a[5], 32), (long long)p->n_lora, human(p->contexts, a[6], 32), human(p->sampling, a[7], 32),
             human(p->taped, a[8], 32), human(p->taped_ckpt, a[9], 32), human(p->taped_full, a[10], 32),
             human(p->decode, a[11], 32), human(p->reward, a[12], 32), human(p->backward, a[13], 32));
}

size_t vt_memplan_parse_size(const char *s) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || v <= 0) return 0;
    double m = 1;
    switch (*end) {
    case 'k': case 'K': m = 1024.0; end++; break;
    case 'm': case 'M': m = MB; end++; break;
    case 'g': case 'G': m = GB; end++; break;
    case 't': case 'T': m = GB * 1024.0; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'I') end++;
    if (*end == 'b' || *end == 'B') end++;
    if (*end) return 0;
    return (size_t)(v * m);
}

vt_err vt_memplan_check(const vt_config *cfg, int cuda_device, size_t limit, FILE *log, vt_memplan *out) {
    vt_cfg_dtype dt;
    const char *notice = NULL;
    if (vt_memplan_run_dtype(cfg, vt_memplan_on_cuda(cfg), &dt, &notice)) return vt_error_code();
    if (notice && log) fprintf(log, "%s\n", notice);
    vt_memplan p;
    if (vt_memplan_compute(cfg, &p)) return vt_error_code();
    if (out) *out = p;
    char src[256] = "--memory-limit";
    if (!limit) limit = vt_memplan_device_memory(cfg, cuda_device, src, sizeof src);
    if (log) {
        char buf[2048];
        vt_memplan_format(&p, buf, sizeof buf);
        fputs(buf, log);
    }
    if (!limit || p.peak <= (double)limit) return VT_OK;
    // what to change, largest saving first
    char a[8][32], advice[1024];
    size_t k = 0;
    advice[0] = 0;
    #define ADVISE(...)                                                                   \
        do {                                                                               \
            int w_ = snprintf(advice + k, sizeof advice - k, __VA_ARGS__);                 \
            if (w_ > 0) k += (size_t)w_ < sizeof advice - k ? (size_t)w_ : sizeof advice - k - 1; \
        } while (0)
    if (p.weight_bytes == 4)
        ADVISE("; model.dtype: bf16 (UNet / VAE weights %s -> %s)", human(p.w_unet + p.w_vae, a[6], 32),
               human((p.w_unet + p.w_vae) / 2, a[7], 32));
    if (cfg->memory.checkpointing && p.saved_bytes == 4)
        ADVISE("; memory.saved_dtype: bf16 (taped steps %s -> %s)", human(p.taped, a[6], 32),
               human(p.taped - p.taped_seg_in / 2, a[7], 32));
    if (!cfg->memory.checkpointing && p.taped_full > p.taped_ckpt)
        ADVISE("; memory.checkpointing: true (taped steps %s -> %s)", human(p.taped_full, a[0], 32),
               human(p.taped_ckpt, a[1], 32));
    if (cfg->sampler.backprop_steps > 1 || cfg->sampler.backprop_mode != VT_CFG_BACKPROP_LAST)
        ADVISE("; sampler.backprop_steps: 1 with backprop_mode last (taped steps now %s)", human(p.taped, a[2], 32));
    if (cfg->memory.decode_frames != VT_CFG_DECODE_RANDOM && cfg->memory.decode_frames != VT_CFG_DECODE_INDEX)
        ADVISE("; memory.decode_frames: \"-1\" (one frame; decode + reward now %s)", human(p.decode + p.reward, a[3], 32));
    if (cfg->data.batch_size > 1) ADVISE("; data.batch_size: 1 (with optim.accumulation for the same batch)");
    ADVISE("; or a smaller model.height/width/frames (now %dx%d x %d)", cfg->model.width, cfg->model.height,
           cfg->model.frames);
    #undef ADVISE
    return vt_error(VT_ERR_OOM,
                    "memory plan: this run needs about %s (peak during %s: weights %s, taped steps %s, decode + reward "
                    "%s, backward %s) but %s allows %s. Change: %s",
                    human(p.peak, a[0], 32), p.peak_phase,
                    human(p.w_unet + p.w_vae + p.w_reward, a[1], 32), human(p.taped, a[2], 32),
                    human(p.decode + p.reward, a[3], 32), human(p.backward, a[4], 32), src, human((double)limit, a[5], 32),
                    advice + 2);
}
