// vit_block.c — the CLIP transformer block, its stack and the patch embedding (see vit_block.h).
#include "vit_block.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <cjson/cJSON.h>
#include "../ops.h"
#include "param_list.h"

// ---- building ------------------------------------------------------------------------------
void vt_vit_get_ln(vt_param_list *pl, vt_clip_ln *ln, const char *name, int64_t W) {
    ln->w = vt_param_getf(pl, 1, (int64_t[]){W}, "%s.weight", name);
    ln->b = vt_param_getf(pl, 1, (int64_t[]){W}, "%s.bias", name);
}

void vt_vit_get_linear(vt_param_list *pl, vt_clip_linear *l, const char *name, int64_t out, int64_t in) {
    l->w = vt_param_getf(pl, 2, (int64_t[]){out, in}, "%s.weight", name);
    l->b = vt_param_getf(pl, 1, (int64_t[]){out}, "%s.bias", name);
}

vt_tensor *vt_vit_row_view(vt_tensor *t, int64_t r0, int64_t n) {
    if (!t) return NULL;
    int64_t cols = t->ndim == 2 ? t->shape[1] : 1;
    size_t off = t->offset + (size_t)(r0 * cols) * vt_dtype_size(t->dtype);
    if (t->ndim == 2) return vt_view_storage(t->storage, off, t->dtype, 2, (int64_t[]){n, cols});
    return vt_view_storage(t->storage, off, t->dtype, 1, (int64_t[]){n});
}

// nn.MultiheadAttention packs q, k, v as consecutive row blocks of in_proj [3W, W].
static void split_in_proj(vt_param_list *pl, vt_vit_block *b, int64_t W) {
    b->packed = 1;
    vt_clip_linear *qkv[3] = {&b->q, &b->k, &b->v};
    for (int j = 0; j < 3; j++) {
        qkv[j]->w = vt_vit_row_view(b->in_proj_weight, (int64_t)j * W, W);
        qkv[j]->b = vt_vit_row_view(b->in_proj_bias, (int64_t)j * W, W);
        if (!qkv[j]->w || !qkv[j]->b) pl->failed = 1;
    }
}

// Block i: every key is "block_prefix i . keys->NAME"; tensors are asked for in checkpoint
// module order (ln_1, attention, ln_2, mlp).
static void block_get(vt_param_list *pl, vt_vit_block *b, const char *block_prefix, int i,
                      const vt_vit_block_keys *keys, int64_t W, int64_t mlp) {
    char k[256];
#define BKEY(name) (snprintf(k, sizeof k, "%s%d.%s", block_prefix, i, name), k)
    vt_vit_get_ln(pl, &b->ln_1, BKEY(keys->ln_1), W);
    if (keys->in_proj_weight) {
        b->in_proj_weight = vt_param_get(pl, BKEY(keys->in_proj_weight), 2, (int64_t[]){3 * W, W});
        b->in_proj_bias = vt_param_get(pl, BKEY(keys->in_proj_bias), 1, (int64_t[]){3 * W});
        if (!pl->failed) split_in_proj(pl, b, W);
    } else {
        vt_vit_get_linear(pl, &b->q, BKEY(keys->q), W, W);
        vt_vit_get_linear(pl, &b->k, BKEY(keys->k), W, W);
        vt_vit_get_linear(pl, &b->v, BKEY(keys->v), W, W);
    }
    vt_vit_get_linear(pl, &b->out_proj, BKEY(keys->out_proj), W, W);
    vt_vit_get_ln(pl, &b->ln_2, BKEY(keys->ln_2), W);
    vt_vit_get_linear(pl, &b->fc, BKEY(keys->fc), mlp, W);
    vt_vit_get_linear(pl, &b->proj, BKEY(keys->proj), W, mlp);
#undef BKEY
}

void vt_vit_stack_get(vt_param_list *pl, vt_vit_stack *s, const char *block_prefix, const vt_vit_block_keys *keys,
                      int64_t mlp) {
    s->blocks = calloc((size_t)s->layers, sizeof *s->blocks);
    if (!s->blocks) {
        vt_error(VT_ERR_OOM, "%s: out of host memory for %d blocks", block_prefix, s->layers);
        pl->failed = 1;
        return;
    }
    for (int i = 0; i < s->layers && !pl->failed; i++) {
        vt_vit_block *b = &s->blocks[i];
        b->heads = s->heads;
        b->causal = s->causal;
        b->quick_gelu = s->quick_gelu;
        b->eps = s->eps;
        block_get(pl, b, block_prefix, i, keys, s->width, mlp);
    }
}

void vt_vit_stack_free(vt_vit_stack *s) {
    if (!s->blocks) return;
    for (int i = 0; i < s->layers; i++) {
        vt_vit_block *b = &s->blocks[i];
        if (!b->packed) continue;
        vt_clip_linear *l[3] = {&b->q, &b->k, &b->v};
        for (int j = 0; j < 3; j++) {
            vt_clear(&l[j]->w);
            vt_clear(&l[j]->b);
        }
    }
    free(s->blocks);
    s->blocks = NULL;
}

vt_err vt_vit_stack_set_weight_dtype(vt_vit_stack *s, vt_dtype dt) {
    if (!s || !s->blocks) return VT_OK;
    for (int l = 0; l < s->layers; l++) {
        vt_vit_block *b = &s->blocks[l];
        // the packed in_proj with its three row views in one call (one cluster, see tensor.h)
        vt_tensor *ws[7] = {b->q.w, b->k.w, b->v.w, b->in_proj_weight, b->out_proj.w, b->fc.w, b->proj.w};
        if (vt_tensors_to_dtype(ws, 7, dt)) return vt_error_context("transformer block %d: ", l);
    }
    return VT_OK;
}

vt_err vt_vit_model_to_device(vt_tensor **list, int n, vt_vit_stack *const *stacks, int n_stacks,
                              vt_tensor **extra, int n_extra, vt_device dev) {
    size_t total = (size_t)n + (size_t)n_extra;
    for (int s = 0; s < n_stacks; s++)
        if (stacks[s] && stacks[s]->blocks) total += 6 * (size_t)stacks[s]->layers;
    vt_tensor **all = malloc((total ? total : 1) * sizeof *all);
    if (!all) return vt_error(VT_ERR_OOM, "move to %s: out of host memory", vt_device_name(dev));
    size_t k = 0;
    for (int i = 0; i < n; i++) all[k++] = list[i];
    for (int i = 0; i < n_extra; i++) all[k++] = extra[i];
    for (int s = 0; s < n_stacks; s++) {
        if (!stacks[s] || !stacks[s]->blocks) continue;
        for (int i = 0; i < stacks[s]->layers; i++) {
            vt_vit_block *b = &stacks[s]->blocks[i];
            vt_tensor *v[6] = {b->q.w, b->q.b, b->k.w, b->k.b, b->v.w, b->v.b};
            for (int j = 0; j < 6; j++) all[k++] = v[j];
        }
    }
    vt_err e = vt_tensors_to_device(all, (int)k, dev);
    free(all);
    return e;
}

// ---- forward -------------------------------------------------------------------------------
vt_tensor *vt_vit_rope_apply(vt_tensor *x, vt_tensor *rope_cos, vt_tensor *rope_sin) {
    if (!x || !rope_cos || !rope_sin) return NULL;
    int64_t B = x->shape[0], L = x->shape[1], W = x->shape[2];
    if (x->ndim != 3 || W % 2) {
        char s[VT_SHAPE_BUF];
        vt_error(VT_ERR_SHAPE, "rope: x %s, expected [B, L, W] with W even", vt_shape_str(x, s, sizeof s));
        return NULL;
    }
    // swap_pairs(x)[2i] = x[2i + 1], [2i + 1] = x[2i]: [B, L, W/2, 2] halves exchanged
    vt_tensor *xp = vt_reshape(x, 4, (int64_t[]){B, L, W / 2, 2});
    vt_tensor *ev = vt_slice(xp, 3, 0, 1), *od = vt_slice(xp, 3, 1, 1);
    vt_release(xp);
    vt_tensor *parts[2] = {od, ev};
    vt_tensor *sw = od && ev ? vt_concat(parts, 2, 3) : NULL;
    vt_release(ev);
    vt_release(od);
    vt_tensor *swr = vt_reshape(sw, 3, (int64_t[]){B, L, W});
    vt_release(sw);
    vt_tensor *a = vt_mul(x, rope_cos);
    vt_tensor *c = vt_mul(swr, rope_sin);
    vt_release(swr);
    vt_tensor *y = vt_add(a, c);
    vt_release(a);
    vt_release(c);
    return y;
}

// x [B, L, W] -> x + out_proj(attn(ln_1(x))) -> + proj(act(fc(ln_2(.)))); q and k rotated when
// rope_cos / rope_sin are given.
static vt_tensor *block_forward(const vt_vit_block *b, vt_tensor *x, vt_tensor *rope_cos, vt_tensor *rope_sin) {
    if (!x) return NULL;
    int64_t W = vt_dim(x, -1);
    vt_tensor *h = vt_layer_norm(x, b->ln_1.w, b->ln_1.b, b->eps);
    vt_tensor *q = vt_linear(h, b->q.w, b->q.b);
    vt_tensor *k = vt_linear(h, b->k.w, b->k.b);
    vt_tensor *v = vt_linear(h, b->v.w, b->v.b);
    vt_release(h);
    if (rope_cos) {
        vt_tensor *qr = vt_vit_rope_apply(q, rope_cos, rope_sin);
        vt_tensor *kr = vt_vit_rope_apply(k, rope_cos, rope_sin);
        vt_release(q);
        vt_release(k);
        q = qr;
        k = kr;
    }
    vt_tensor *a = vt_attention(q, k, v, b->heads, 1.0f / sqrtf((float)(W / b->heads)), b->causal);
    vt_release(q);
    vt_release(k);
    vt_release(v);
    vt_tensor *o = vt_linear(a, b->out_proj.w, b->out_proj.b);
    vt_release(a);
    vt_tensor *x1 = vt_add(x, o);
    vt_release(o);
    h = vt_layer_norm(x1, b->ln_2.w, b->ln_2.b, b->eps);
    vt_tensor *f = vt_linear(h, b->fc.w, b->fc.b);
    vt_release(h);
    vt_tensor *g = b->quick_gelu ? vt_quick_gelu(f) : vt_gelu(f);
    vt_release(f);
    vt_tensor *p = vt_linear(g, b->proj.w, b->proj.b);
    vt_release(g);
    vt_tensor *y = vt_add(x1, p);
    vt_release(x1);
    vt_release(p);
    return y;
}

// in: x, or x, rope_cos, rope_sin (constants saved with the segment's input)
static vt_tensor *block_segment(void *ctx, vt_tensor *const *in, int n_in) {
    return block_forward((const vt_vit_block *)ctx, in[0], n_in == 3 ? in[1] : NULL, n_in == 3 ? in[2] : NULL);
}

vt_tensor *vt_vit_stack_forward(const vt_vit_stack *s, vt_tensor *x, int n, int segments, vt_act_hook hook,
                                void *hook_user, const char *hook_prefix) {
    return vt_vit_stack_forward_rope(s, x, n, segments, NULL, NULL, hook, hook_user, hook_prefix);
}

vt_tensor *vt_vit_stack_forward_rope(const vt_vit_stack *s, vt_tensor *x, int n, int segments, vt_tensor *rope_cos,
                                     vt_tensor *rope_sin, vt_act_hook hook, void *hook_user, const char *hook_prefix) {
    char name[128];
    if (!rope_cos != !rope_sin) {
        vt_release(x);
        vt_error(VT_ERR_ARG, "vit stack: rope_cos and rope_sin must be given together");
        return NULL;
    }
    for (int i = 0; i < n && x; i++) {
        const vt_vit_block *b = &s->blocks[i];
        vt_tensor *in[3] = {x, rope_cos, rope_sin};
        vt_tensor *y = segments ? vt_segment(block_segment, (void *)b, in, rope_cos ? 3 : 1)
                                : block_forward(b, x, rope_cos, rope_sin);
        vt_release(x);
        x = y;
        if (hook && x) {
            snprintf(name, sizeof name, "%s%d", hook_prefix, i);
            hook(hook_user, name, x);
        }
    }
    return x;
}

vt_tensor *vt_vit_patch_embed(vt_tensor *image, vt_tensor *patch_w, vt_tensor *class_embedding,
                              vt_tensor *positional_embedding, int patch_size, int grid) {
    int64_t B = image->shape[0], W = patch_w->shape[0], G2 = (int64_t)grid * grid;
    vt_tensor *p = vt_conv2d(image, patch_w, NULL, patch_size, 0);  // [B, W, g, g]
    vt_tensor *pr = vt_reshape(p, 3, (int64_t[]){B, W, G2});
    vt_release(p);
    vt_tensor *pt = vt_permute(pr, 3, (const int[]){0, 2, 1});  // [B, g*g, W], row-major patches
    vt_release(pr);
    vt_tensor *ce = vt_view(class_embedding, 3, (int64_t[]){1, 1, W});
    vt_tensor *cls = vt_repeat_interleave(ce, 0, B);  // [B, 1, W]
    vt_release(ce);
    vt_tensor *parts[2] = {cls, pt};
    vt_tensor *x = cls && pt ? vt_concat(parts, 2, 1) : NULL;  // [B, 1 + g*g, W]
    vt_release(cls);
    vt_release(pt);
    vt_tensor *y = vt_add(x, positional_embedding);
    vt_release(x);
    return y;
}

vt_tensor *vt_vit_class_token(vt_tensor *x) {
    if (!x) return NULL;
    int64_t B = x->shape[0], W = x->shape[2];
    vt_tensor *x0 = vt_slice(x, 1, 0, 1);
    vt_release(x);
    vt_tensor *x0r = vt_reshape(x0, 2, (int64_t[]){B, W});
    vt_release(x0);
    return x0r;
}

vt_err vt_hf_config_int(const cJSON *o, const char *model, const char *name, int *v) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!it || cJSON_IsNull(it)) return VT_OK;
    if (!cJSON_IsNumber(it) || it->valuedouble != (double)(int)it->valuedouble)
        return vt_error(VT_ERR_CONFIG, "%s config: %s must be an integer", model, name);
    *v = (int)it->valuedouble;
    return VT_OK;
}
