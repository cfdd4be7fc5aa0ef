// tiny_models.c — tiny random-weight models (see tiny_models.h). The VAE decoder and the
// text tower are built from an empty weight store in "collect" mode, which hands out a zero
// tensor of the asked shape for every key; the weights are then filled here.
#include "tiny_models.h"
#include <math.h>
#include <string.h>
#include "core/weights.h"

vt_unet3d_config vt_tiny_unet_config(void) {
    vt_unet3d_config c = vt_unet3d_config_videocrafter2();
    c.model_channels = 32;
    c.n_attention_resolutions = 2;
    c.attention_resolutions[0] = 2;
    c.attention_resolutions[1] = 1;
    c.num_res_blocks = 1;
    c.n_levels = 2;
    c.channel_mult[0] = 1;
    c.channel_mult[1] = 2;
    c.num_head_channels = 16;
    c.transformer_depth = 1;
    c.context_dim = 32;
    c.use_checkpoint = 0;
    return c;
}

vt_vae_config vt_tiny_vae_config(void) {
    vt_vae_config c = vt_vae_config_videocrafter2();
    c.ch = 64;
    c.n_levels = 4;
    c.ch_mult[0] = 1;
    c.ch_mult[1] = 1;
    c.ch_mult[2] = 2;
    c.ch_mult[3] = 2;
    c.num_res_blocks = 1;
    c.n_attn = 0;
    c.resolution = 64;
    return c;
}

vt_openclip_config vt_tiny_text_config(void) {
    vt_openclip_config c;
    memset(&c, 0, sizeof c);
    c.embed_dim = 32;
    c.text.context_length = 77;
    c.text.vocab_size = 49408;
    c.text.width = 32;
    c.text.heads = 2;
    c.text.layers = 3;
    return c;
}

// An empty store whose get() returns zeros of the asked shape.
static vt_weights *empty_collect_store(void) {
    vt_weights *w = vt_weights_from_manifest("/dev/null", 0, 0);
    if (w) vt_weights_collect_errors(w, 1);
    return w;
}

// Matrices / kernels N(0, 1/fan_in); 1-d tensors zero (gains are set to 1 by the caller).
static void fill_random(vt_tensor **ts, int n, uint64_t seed) {
    for (int i = 0; i < n; i++) {
        vt_tensor *t = ts[i];
        if (t->ndim >= 2) {
            vt_rng r;
            vt_rng_seed(&r, vt_hash64(seed, (uint64_t)i));
            double fan_in = (double)t->numel / (double)t->shape[0];
            vt_fill_normal(t, &r, 0.0f, (float)(1.0 / sqrt(fan_in)));
        } else {
            memset(vt_data(t), 0, vt_nbytes(t));
        }
    }
}

static void set_ones(vt_tensor *t) {
    if (!t) return;
    for (int64_t i = 0; i < t->numel; i++) vt_f32(t)[i] = 1.0f;
}

vt_vae_decoder *vt_vae_decoder_build_random(const vt_vae_config *cfg, uint64_t seed) {
    vt_weights *w = empty_collect_store();
    if (!w) return NULL;
    vt_vae_decoder *d = vt_vae_decoder_build(w, "", cfg);
    vt_weights_free(w);
    vt_error_clear();
    if (!d) {
        vt_error(VT_ERR_CONFIG, "random VAE decoder: the config could not be built");
        return NULL;
    }
    fill_random(d->tensors, d->n_tensors, seed);
    vt_vae_resblock *mids[2] = {&d->mid_block_1, &d->mid_block_2};
    for (int i = 0; i < 2; i++) set_ones(mids[i]->norm1.w), set_ones(mids[i]->norm2.w);
    set_ones(d->mid_attn_1.norm.w);
    for (int l = 0; l < d->cfg.n_levels; l++)
        for (int b = 0; b < d->up[l].n_block; b++) {
            set_ones(d->up[l].block[b].norm1.w);
            set_ones(d->up[l].block[b].norm2.w);
            if (d->up[l].attn) set_ones(d->up[l].attn[b].norm.w);
        }
    set_ones(d->norm_out.w);
    return d;
}

vt_openclip *vt_openclip_text_build_random(const vt_openclip_config *cfg, uint64_t seed) {
    vt_weights *w = empty_collect_store();
    if (!w) return NULL;
    vt_openclip *m = vt_openclip_build(w, "", cfg, VT_OPENCLIP_TEXT);
    vt_weights_free(w);
    vt_error_clear();
    if (!m) {
        vt_error(VT_ERR_CONFIG, "random text tower: the config could not be built");
        return NULL;
    }
    fill_random(m->tensors, m->n_tensors, seed);
    vt_vit_stack *tr = &m->text->transformer;
    for (int i = 0; i < tr->layers; i++) {
        set_ones(tr->blocks[i].ln_1.w);
        set_ones(tr->blocks[i].ln_2.w);
    }
    set_ones(m->text->ln_final.w);
    return m;
}
