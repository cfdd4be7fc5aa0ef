// flops.c — the FLOP count of a VADER step (see flops.h for the conventions).
#include "flops.h"
#include <stdio.h>
#include <string.h>
#include "train/tiny_models.h"

#define CONTEXT_TOKENS 77

vt_flops_vit vt_flops_reward_tower(vt_cfg_reward_kind kind, int *known) {
    vt_flops_vit v;
    memset(&v, 0, sizeof v);
    int k = 1;
    switch (kind) {
    case VT_CFG_REWARD_AESTHETIC:  // CLIP ViT-L/14 image tower (the MLP head is negligible)
        v = (vt_flops_vit){224, 14, 1024, 24, 4096, 0, 0, 0, 0};
        break;
    case VT_CFG_REWARD_HPS:
    case VT_CFG_REWARD_HPSV21:
    case VT_CFG_REWARD_PICKSCORE:  // ViT-H-14: vision 1280 x 32, text 1024 x 24
        v = (vt_flops_vit){224, 14, 1280, 32, 5120, CONTEXT_TOKENS, 1024, 24, 4096};
        break;
    case VT_CFG_REWARD_COLOR:
        break;
    default:
        k = 0;
        break;
    }
    if (known) *known = k;
    return v;
}

// One pre-LN transformer layer on `tok` tokens of sequences of `seq`: q, k, v, out
// projections (4 W^2 per token), the MLP (2 W mlp), and attention (q k^T and p v: 2 x seq x W
// per token, 2 FLOPs each).
static double vit_layer(double tok, double seq, double W, double mlp, double *attn) {
    double a = 4 * tok * seq * W;
    if (attn) *attn += a;
    return 2 * tok * 4 * W * W + 2 * tok * 2 * W * mlp + a;
}

double vt_flops_vit_vision(const vt_flops_vit *v, int64_t n, double *attn) {
    if (attn) *attn = 0;
    if (v->width <= 0 || n <= 0) return 0;
    double g = v->image_size / v->patch_size, seq = g * g + 1, tok = (double)n * seq, W = v->width;
    double f = 2 * (double)n * g * g * 3 * v->patch_size * v->patch_size * W;  // patch embedding conv
    double a = 0;
    for (int l = 0; l < v->layers; l++) f += vit_layer(tok, seq, W, v->mlp, &a);
    if (attn) *attn = a;
    return f;
}

double vt_flops_vit_text(const vt_flops_vit *v, int64_t m) {
    if (v->text_width <= 0 || m <= 0) return 0;
    double tok = (double)m * v->text_ctx, f = 0;
    for (int l = 0; l < v->text_layers; l++) f += vit_layer(tok, v->text_ctx, v->text_width, v->text_mlp, NULL);
    return f;
}

// lvdm ResnetBlock (no temb): conv1 3x3 in->out, conv2 3x3 out->out, 1x1 shortcut when in != out.
static double vae_res(double px, double in, double out) {
    double f = 2 * px * 9 * in * out + 2 * px * 9 * out * out;
    if (in != out) f += 2 * px * in * out;
    return f;
}

// AttnBlock: 1x1 q, k, v, proj_out and single-head attention over the px positions.
static double vae_attn(double px, double C, double *attn) {
    double a = 4 * px * px * C;
    *attn += a;
    return 2 * px * 4 * C * C + a;
}

double vt_flops_vae_decode(const vt_vae_config *c, int64_t n, int64_t h, int64_t w, double *attn) {
    double a = 0, px = (double)(h * w), z = c->z_channels;
    int L = c->n_levels;
    double ch = (double)c->ch * c->ch_mult[L - 1];
    double f = 2 * px * z * z;           // post_quant_conv 1x1
    f += 2 * px * 9 * z * ch;            // conv_in
    f += 2 * vae_res(px, ch, ch);        // mid.block_1, mid.block_2
    f += vae_attn(px, ch, &a);           // mid.attn_1
    for (int i = L - 1; i >= 0; i--) {   // up.L-1 .. up.0, num_res_blocks + 1 blocks each
        double out = (double)c->ch * c->ch_mult[i];
        int res = c->resolution >> i, has_attn = 0;
        for (int k = 0; k < c->n_attn; k++) has_attn |= c->attn_resolutions[k] == res;
        for (int j = 0; j <= c->num_res_blocks; j++) {
            f += vae_res(px, ch, out);
            ch = out;
            if (has_attn) f += vae_attn(px, ch, &a);
        }
        if (i) {  // nearest 2x then a 3x3 conv at the new size
            px *= 4;
            f += 2 * px * 9 * ch * ch;
        }
    }
    f += 2 * px * 9 * ch * c->out_ch;    // conv_out
    if (attn) *attn = a * (double)n;
    return f * (double)n;
}

static int frames_per_video(const vt_config *cfg) {
    int T = cfg->model.frames;
    switch (cfg->memory.decode_frames) {
    case VT_CFG_DECODE_FML: return T > 2 ? 3 : T;
    case VT_CFG_DECODE_ALT: return (T + 1) / 2;
    case VT_CFG_DECODE_ALL: return T;
    default: return 1;
    }
}

// DDIM steps on the tape: the K window plus, for rand / specific windows that end before the
// last step, the steps after it (frozen LoRA, but the gradient passes through them). rand
// draws the window's end uniformly from K-1..S-1: the expected count, rounded.
static int taped_steps(const vt_config *cfg) {
    int S = cfg->sampler.steps, K = cfg->sampler.backprop_steps;
    if (K <= 0) return 0;
    switch (cfg->sampler.backprop_mode) {
    case VT_CFG_BACKPROP_SPECIFIC: return S - cfg->sampler.backprop_step;
    case VT_CFG_BACKPROP_RAND: return K + (S - K + 1) / 2;
    default: return K;
    }
}

vt_err vt_step_flops_count(const vt_config *cfg, const vt_unet3d_config *unet, const vt_vae_config *vae,
                           vt_step_flops *o) {
    memset(o, 0, sizeof *o);
    vt_unet3d_config uc = unet ? *unet : cfg->model.unet ? vt_unet3d_config_videocrafter2() : vt_tiny_unet_config();
    vt_vae_config vc = vae ? *vae : cfg->model.vae ? vt_vae_config_videocrafter2() : vt_tiny_vae_config();
    int64_t B = cfg->data.batch_size, T = cfg->model.frames, h = cfg->model.height / 8, w = cfg->model.width / 8;
    int S = cfg->sampler.steps, A = cfg->optim.accumulation > 0 ? cfg->optim.accumulation : 1;
    if (B < 1 || T < 1 || h < 1 || w < 1 || S < 1) return vt_error(VT_ERR_CONFIG, "flops: empty shapes in the config");
    int cfg_pair = cfg->sampler.guidance_scale != 1.0;
    int64_t NB = cfg_pair ? 2 * B : B;  // the CFG pair runs as one UNet call of batch 2B
    int tape = taped_steps(cfg), grad = tape > 0, ck = cfg->memory.checkpointing;
    o->micro_batches = A;
    o->unet_forwards = S * (cfg_pair ? 2 : 1);
    o->taped_steps = tape;
    o->frames_decoded = (int)B * frames_per_video(cfg);

    // UNet: each of the S sampling steps evaluates the UNet on the CFG pair (vt_unet3d_flops:
    // convolutions incl. the temporal ones, attention projections, scores and values, GEGLU
    // feed-forward, time / fps embeddings). The taped steps' backward computes input
    // gradients only (frozen weights): the forward's GEMM work once more, attention twice.
    // With checkpointing every ResBlock and transformer block is re-run once in the backward.
    double un_attn = 0, un = vt_unet3d_flops(&uc, NB, T, h, w, CONTEXT_TOKENS, &un_attn);
    o->unet_forward = S * un;
    o->unet_backward = tape * (un + un_attn);
    o->unet_recompute = ck ? tape * un : 0;

    // VAE decode of the chosen frames (every frame of every video in the micro-batch), on the
    // tape when there is a gradient: backward like the UNet's, recompute with checkpointing.
    int64_t nf = o->frames_decoded;
    double va = 0, vf = vt_flops_vae_decode(&vc, nf, h, w, &va);
    o->vae_forward = vf;
    o->vae_backward = grad ? vf + va : 0;
    o->vae_recompute = grad && ck ? vf : 0;

    // Reward: every module's vision tower on the decoded frames (on the tape: backward and
    // recompute as above) and its text tower on the B prompts (no tape). The towers are the
    // released reward models whatever weights the run loads.
    for (int m = 0; m < cfg->reward.n_modules; m++) {
        vt_flops_vit v = vt_flops_reward_tower(cfg->reward.modules[m].kind, NULL);
        double ra = 0, rv = vt_flops_vit_vision(&v, nf, &ra);
        o->reward_forward += rv + vt_flops_vit_text(&v, B);
        o->reward_backward += grad ? rv + ra : 0;
        o->reward_recompute += grad && ck ? rv : 0;
    }
    double *terms[] = {&o->unet_forward, &o->unet_backward, &o->unet_recompute, &o->vae_forward, &o->vae_backward,
                       &o->vae_recompute, &o->reward_forward, &o->reward_backward, &o->reward_recompute};
    for (size_t i = 0; i < sizeof terms / sizeof terms[0]; i++) {
        *terms[i] *= A;
        o->total += *terms[i];
    }
    return VT_OK;
}

void vt_step_flops_format(const vt_step_flops *f, char *buf, size_t n) {
    const struct {
        const char *name;
        double v;
    } rows[] = {{"unet forward", f->unet_forward},     {"unet backward", f->unet_backward},
                {"unet recompute", f->unet_recompute}, {"vae forward", f->vae_forward},
                {"vae backward", f->vae_backward},     {"vae recompute", f->vae_recompute},
                {"reward forward", f->reward_forward}, {"reward backward", f->reward_backward},
                {"reward recompute", f->reward_recompute}};
    size_t k = 0;
    int w = snprintf(buf, n, "FLOPs per optimisation step: %.4g TFLOP (%d micro-batch(es); %d UNet forwards, %d taped "
                     "steps, %d frames decoded per micro-batch)\n", f->total / 1e12, f->micro_batches,
                     f->unet_forwards, f->taped_steps, f->frames_decoded);
    if (w > 0) k = (size_t)w < n ? (size_t)w : n;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0] && k < n; i++) {
        w = snprintf(buf + k, n - k, "  %-17s %12.4g TFLOP  %5.1f%%\n", rows[i].name, rows[i].v / 1e12,
                     f->total > 0 ? 100 * rows[i].v / f->total : 0.0);
        if (w > 0) k += (size_t)w < n - k ? (size_t)w : n - k;
    }
}
