// unet3d_blocks.c — the UNet3D's modules (lvdm openaimodel3d.py / attention.py /
// modules/networks/ae_modules): Linear(+LoRA), CrossAttention, BasicTransformerBlock,
// SpatialTransformer, TemporalTransformer, TemporalConvBlock and ResBlock; building from the
// weight store and forward on the tape (backward is the ops' own).
#include "unet3d_internal.h"
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Temporaries of one forward function, released together at its end (NULL-safe, so ops can
// be chained and the result checked once).
#define SCOPE_MAX 40
typedef struct scope {
    vt_tensor *t[SCOPE_MAX];
    int n;
} scope;
static vt_tensor *keep(scope *s, vt_tensor *t) {
    if (s->n < SCOPE_MAX) s->t[s->n++] = t;
    else vt_error(VT_ERR_INTERNAL, "unet3d: scope overflow");  // a bug: visible in tests
    return t;
}
static void scope_end(scope *s) {
    for (int i = 0; i < s->n; i++) vt_release(s->t[i]);
    s->n = 0;
}

// ---- building ---------------------------------------------------------------------------------
// Module paths: vsnprintf so that a long path is cut rather than warned about (keys are short).
static void path_fmt(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void path_fmt(char *out, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, n, fmt, ap);
    va_end(ap);
}

static char *dup_path(unet_builder *b, const char *path) {
    char *p = strdup(path);
    if (!p) {
        b->failed = 1;
        vt_error(VT_ERR_OOM, "unet3d build: out of host memory");
    }
    return p;
}

// kernel_dims: 0 nn.Linear [out, in]; 1 Conv1d kernel 1 [out, in, 1]; 2 Conv2d 1x1 [out, in, 1, 1].
// The weight is kept as an [out, in] view (the map is the same).
int unet_build_linear(unet_builder *b, unet_linear *l, int in, int out, int bias, int kernel_dims, const char *path) {
    memset(l, 0, sizeof *l);
    l->in = in;
    l->out = out;
    int64_t shape[4] = {out, in, 1, 1};
    l->w = unet_get(b, 2 + kernel_dims, shape, "%s.weight", path);
    if (l->w && kernel_dims) {
        // replace the registered tensor by its matrix view (the registry owns one reference)
        vt_tensor *v = vt_view(l->w, 2, shape);
        if (!v) {
            b->failed = 1;
            return 0;
        }
        b->params[b->n_params - 1].t = v;
        vt_release(l->w);
        l->w = v;
    }
    if (bias) l->b = unet_get(b, 1, (int64_t[]){out}, "%s.bias", path);
    l->path = dup_path(b, path);
    l->site = b->n_sites++;
    return !b->failed;
}

static void build_norm(unet_builder *b, unet_norm *n, int ch, const char *path) {
    n->w = unet_get(b, 1, (int64_t[]){ch}, "%s.weight", path);
    n->b = unet_get(b, 1, (int64_t[]){ch}, "%s.bias", path);
}

// max_rel >= 0: lvdm's CrossAttention(relative_position=True, temporal_length=max_rel), whose
// RelativePosition modules come after to_out in the state dict.
static void build_attention(unet_builder *b, unet_attention *a, int query_dim, int context_dim, int heads, int d_head,
                            int max_rel, const char *path) {
    char p[400];
    int inner = heads * d_head;
    a->heads = heads;
    a->d_head = d_head;
    path_fmt(p, sizeof p, "%s.to_q", path);
    unet_build_linear(b, &a->to_q, query_dim, inner, 0, 0, p);
    path_fmt(p, sizeof p, "%s.to_k", path);
    unet_build_linear(b, &a->to_k, context_dim, inner, 0, 0, p);
    path_fmt(p, sizeof p, "%s.to_v", path);
    unet_build_linear(b, &a->to_v, context_dim, inner, 0, 0, p);
    path_fmt(p, sizeof p, "%s.to_out.0", path);
    unet_build_linear(b, &a->to_out, inner, query_dim, 1, 0, p);
    a->max_rel = max_rel;
    if (max_rel >= 0) {
        int64_t shape[2] = {2 * (int64_t)max_rel + 1, d_head};
        a->rel_k = unet_get(b, 2, shape, "%s.relative_position_k.embeddings_table", path);
        a->rel_v = unet_get(b, 2, shape, "%s.relative_position_v.embeddings_table", path);
    }
}

static void build_tblock(unet_builder *b, unet_tblock *t, int dim, int heads, int d_head, int context_dim, int causal,
                         int max_rel, const char *path) {
    char p[400];
    path_fmt(p, sizeof p, "%s.norm1", path);
    build_norm(b, &t->norm1, dim, p);
    path_fmt(p, sizeof p, "%s.norm2", path);
    build_norm(b, &t->norm2, dim, p);
    path_fmt(p, sizeof p, "%s.norm3", path);
    build_norm(b, &t->norm3, dim, p);
    path_fmt(p, sizeof p, "%s.attn1", path);
    build_attention(b, &t->attn1, dim, dim, heads, d_head, max_rel, p);
    t->cross = context_dim > 0;
    t->causal = causal;
    path_fmt(p, sizeof p, "%s.attn2", path);
    build_attention(b, &t->attn2, dim, t->cross ? context_dim : dim, heads, d_head, max_rel, p);
    path_fmt(p, sizeof p, "%s.ff.net.0.proj", path);
    unet_build_linear(b, &t->ff_proj, dim, 8 * dim, 1, 0, p);  // GEGLU: 2 x (4 dim)
    path_fmt(p, sizeof p, "%s.ff.net.2", path);
    unet_build_linear(b, &t->ff_out, 4 * dim, dim, 1, 0, p);
}

// o->context_dim 0: attn2 is self-attention (TemporalTransformer with only_self_att).
int unet_build_transformer(unet_builder *b, unet_transformer *t, int channels, int heads, int d_head,
                           const unet_tr_opts *o, const char *path) {
    char p[400];
    memset(t, 0, sizeof *t);
    t->temporal = o->temporal;
    t->cross = o->context_dim > 0;
    t->channels = channels;
    t->inner = heads * d_head;
    t->depth = o->depth;
    int depth = o->depth;
    path_fmt(p, sizeof p, "%s.norm", path);
    build_norm(b, &t->norm, channels, p);
    // not use_linear: Conv1d (temporal) / Conv2d 1x1 (spatial) kernel-1 projections
    int kd = o->use_linear ? 0 : (o->temporal ? 1 : 2);
    path_fmt(p, sizeof p, "%s.proj_in", path);
    unet_build_linear(b, &t->proj_in, channels, t->inner, 1, kd, p);
    t->blocks = calloc((size_t)depth, sizeof *t->blocks);
    if (!t->blocks) {
        b->failed = 1;
        return 0;
    }
    for (int i = 0; i < depth; i++) {
        path_fmt(p, sizeof p, "%s.transformer_blocks.%d", path, i);
        build_tblock(b, &t->blocks[i], t->inner, heads, d_head, o->context_dim, o->causal, o->temporal ? o->max_rel : -1,
                     p);
    }
    path_fmt(p, sizeof p, "%s.proj_out", path);
    unet_build_linear(b, &t->proj_out, t->inner, channels, 1, kd, p);
    return !b->failed;
}

int unet_build_resblock(unet_builder *b, unet_resblock *r, int in_ch, int out_ch, int emb_dim, int tconv,
                        const char *path) {
    char p[400];
    memset(r, 0, sizeof *r);
    r->in_ch = in_ch;
    r->out_ch = out_ch;
    path_fmt(p, sizeof p, "%s.in_layers.0", path);
    build_norm(b, &r->in_norm, in_ch, p);
    r->in_conv.w = unet_get(b, 4, (int64_t[]){out_ch, in_ch, 3, 3}, "%s.in_layers.2.weight", path);
    r->in_conv.b = unet_get(b, 1, (int64_t[]){out_ch}, "%s.in_layers.2.bias", path);
    path_fmt(p, sizeof p, "%s.emb_layers.1", path);
    unet_build_linear(b, &r->emb, emb_dim, out_ch, 1, 0, p);
    path_fmt(p, sizeof p, "%s.out_layers.0", path);
    build_norm(b, &r->out_norm, out_ch, p);
    r->out_conv.w = unet_get(b, 4, (int64_t[]){out_ch, out_ch, 3, 3}, "%s.out_layers.3.weight", path);
    r->out_conv.b = unet_get(b, 1, (int64_t[]){out_ch}, "%s.out_layers.3.bias", path);
    if (in_ch != out_ch) {
        r->skip.w = unet_get(b, 4, (int64_t[]){out_ch, in_ch, 1, 1}, "%s.skip_connection.weight", path);
        r->skip.b = unet_get(b, 1, (int64_t[]){out_ch}, "%s.skip_connection.bias", path);
    }
    r->has_tconv = tconv;
    if (tconv) {
        for (int k = 0; k < 4; k++) {
            path_fmt(p, sizeof p, "%s.temopral_conv.conv%d.0", path, k + 1);  // sic: upstream spelling
            build_norm(b, &r->tconv.norm[k], out_ch, p);
            int ci = k == 0 ? 2 : 3;  // conv1 has no Dropout before its conv
            r->tconv.conv[k].w = unet_get(b, 5, (int64_t[]){out_ch, out_ch, 3, 1, 1},
                                          "%s.temopral_conv.conv%d.%d.weight", path, k + 1, ci);
            r->tconv.conv[k].b = unet_get(b, 1, (int64_t[]){out_ch}, "%s.temopral_conv.conv%d.%d.bias", path, k + 1, ci);
            r->tconv.site[k] = b->n_sites++;
        }
    }
    return !b->failed;
}

// Tensors are owned by the builder's registry; modules only free what they allocated.
void unet_free_linear(unet_linear *l) {
    free(l->path);
    vt_release(l->lora_A);
    vt_release(l->lora_B);
    vt_release(l->w_merged);
    l->path = NULL;
    l->lora_A = l->lora_B = l->w_merged = NULL;
}

static void free_attention(unet_attention *a) {
    vt_clear(&a->k_ctx);
    vt_clear(&a->v_ctx);
    unet_free_linear(&a->to_q);
    unet_free_linear(&a->to_k);
    unet_free_linear(&a->to_v);
    unet_free_linear(&a->to_out);
}

void unet_free_transformer(unet_transformer *t) {
    unet_free_linear(&t->proj_in);
    unet_free_linear(&t->proj_out);
    for (int i = 0; t->blocks && i < t->depth; i++) {
        free_attention(&t->blocks[i].attn1);
        free_attention(&t->blocks[i].attn2);
        unet_free_linear(&t->blocks[i].ff_proj);
        unet_free_linear(&t->blocks[i].ff_out);
    }
    free(t->blocks);
    t->blocks = NULL;
}

void unet_free_resblock(unet_resblock *r) { unet_free_linear(&r->emb); }

// ---- layout -------------------------------------------------------------------------------
// [(B*T), C, H, W] (row b*T + t) -> [B, C, T, H, W]
vt_tensor *unet_unfold(vt_tensor *x, int B) {
    if (!x) return NULL;
    int64_t BT = x->shape[0], T = BT / B;
    vt_tensor *r = vt_reshape(x, 5, (int64_t[]){B, T, x->shape[1], x->shape[2], x->shape[3]});
    vt_tensor *p = vt_permute(r, 5, (int[]){0, 2, 1, 3, 4});
    vt_release(r);
    return p;
}

// [B, C, T, H, W] -> [(B*T), C, H, W]
vt_tensor *unet_fold(vt_tensor *x) {
    if (!x) return NULL;
    vt_tensor *p = vt_permute(x, 5, (int[]){0, 2, 1, 3, 4});
    vt_tensor *r = p ? vt_reshape(p, 4, (int64_t[]){x->shape[0] * x->shape[2], x->shape[1], x->shape[3], x->shape[4]})
                     : NULL;
    vt_release(p);
    return r;
}

// ---- Linear + LoRA ------------------------------------------------------------------------
// x [..., in] -> [..., out]. Without LoRA dropout the fused vt_linear_lora; with it peft's
// base(x) + scale * B(A(dropout(x))).
vt_tensor *unet_linear_forward(const unet_frame *f, const unet_linear *l, vt_tensor *x) {
    // untaped: one GEMM with W + scale B A instead of three (the rank-r pair is GEMM-inefficient)
    if (l->w_merged && f->nograd) return vt_linear(x, l->w_merged, l->b);
    if (!l->lora_A) return vt_linear(x, l->w, l->b);
    if (f->p_lora <= 0.0f) return vt_linear_lora(x, l->w, l->b, l->lora_A, l->lora_B, l->lora_scale);
    scope s = {0};
    vt_tensor *y = keep(&s, vt_linear(x, l->w, l->b));
    vt_tensor *xd = keep(&s, vt_dropout(x, f->p_lora, vt_hash64(f->seed, (uint64_t)l->site)));
    vt_tensor *xa = keep(&s, vt_linear(xd, l->lora_A, NULL));
    vt_tensor *xab = keep(&s, vt_linear(xa, l->lora_B, NULL));
    vt_tensor *out = y && xab ? vt_axpby(l->lora_scale, xab, 1.0f, y) : NULL;
    scope_end(&s);
    return out;
}

// ---- CrossAttention -----------------------------------------------------------------------
// lvdm RelativePosition(length_q, length_k): index [Lq, Lk] (i64 on dev) of row
// clamp(j - i, -max_rel, max_rel) + max_rel of the embeddings table: distances beyond
// temporal_length share the end rows (any T works; T > temporal_length + 1 clamps).
static vt_tensor *relpos_index(int64_t Lq, int64_t Lk, int max_rel, vt_device dev) {
    vt_tensor *ids = vt_empty(VT_I64, VT_CPU, 2, (int64_t[]){Lq, Lk});
    if (!ids) return NULL;
    for (int64_t i = 0; i < Lq; i++)
        for (int64_t j = 0; j < Lk; j++) {
            int64_t d = j - i;
            d = d < -max_rel ? -max_rel : d > max_rel ? max_rel : d;
            vt_i64(ids)[i * Lk + j] = d + max_rel;
        }
    return vt_move_to(ids, dev);
}

// lvdm's causal mask as an additive constant [L, L]: 0 where key j <= query i, else -FLT_MAX
// (upstream: sim.masked_fill_(~mask, -finfo.max); s + (-FLT_MAX) rounds to -FLT_MAX for any
// score of sane size, so the softmax is the same, exactly 0 on masked keys).
static vt_tensor *causal_bias(int64_t L, vt_device dev) {
    vt_tensor *m = vt_zeros(VT_F32, VT_CPU, 2, (int64_t[]){L, L});
    if (!m) return NULL;
    for (int64_t i = 0; i < L; i++)
        for (int64_t j = i + 1; j < L; j++) vt_f32(m)[i * L + j] = -FLT_MAX;
    return vt_move_to(m, dev);
}

// Multi-head attention with lvdm's relative positions (CrossAttention.forward with
// relative_position, attention.py), per head h with E_k / E_v the gathered tables [Lq, Lk, d]:
//   sim[i, j] = (q_i . k_j) * scale + (q_i . E_k[i, j]) * scale   (then the causal mask)
//   out_i     = sum_j p[i, j] v_j + sum_j p[i, j] E_v[i, j],  p = softmax_j(sim)
// This mirrors upstream's plain einsum path, the only one it has for relative positions: a
// CrossAttention with relative_position never takes efficient_forward (xformers is bound
// only when relative_position is off and temporal_length is None), so VADER-VideoCrafter's
// xformers install does not change it. Built from recorded ops (matmul, embedding, permute,
// softmax), so the backward (LoRA, inputs, tables if they ask) is theirs. The score term is
// batched over the query position i: q [Lq, (N H), d] @ E_k^T [Lq, d, Lk]; the value term
// likewise p [Lq, (N H), Lk] @ E_v [Lq, Lk, d]. q [N, Lq, H*d], k, v [N, Lk, H*d] -> [N, Lq, H*d].
static vt_tensor *relpos_attention(const unet_attention *a, vt_tensor *q, vt_tensor *k, vt_tensor *v, float scale,
                                   int causal) {
    int64_t N = q->shape[0], Lq = q->shape[1], Lk = k->shape[1], H = a->heads, d = a->d_head;
    if (causal && Lq != Lk) {
        vt_error(VT_ERR_SHAPE, "unet3d: causal attention needs as many keys as queries (%lld, %lld)", (long long)Lk,
                 (long long)Lq);
        return NULL;
    }
    scope s = {0};
    vt_device dev = q->device;
    vt_tensor *ids = keep(&s, relpos_index(Lq, Lk, a->max_rel, dev));
    vt_tensor *q4 = keep(&s, vt_reshape(q, 4, (int64_t[]){N, Lq, H, d}));
    vt_tensor *qs = keep(&s, vt_scale(q4, scale));
    // scores: q k^T [N, H, Lq, Lk] + the relative term brought to the same layout
    vt_tensor *qh = keep(&s, vt_permute(qs, 4, (int[]){0, 2, 1, 3}));
    vt_tensor *k4 = keep(&s, vt_reshape(k, 4, (int64_t[]){N, Lk, H, d}));
    vt_tensor *kt = keep(&s, vt_permute(k4, 4, (int[]){0, 2, 3, 1}));
    vt_tensor *s1 = keep(&s, vt_matmul(qh, kt));
    vt_tensor *qp = keep(&s, vt_permute(qs, 4, (int[]){1, 0, 2, 3}));
    vt_tensor *qi = keep(&s, vt_reshape(qp, 3, (int64_t[]){Lq, N * H, d}));
    vt_tensor *ek = keep(&s, vt_embedding(a->rel_k, ids));  // [Lq, Lk, d]
    vt_tensor *ekt = keep(&s, vt_permute(ek, 3, (int[]){0, 2, 1}));
    vt_tensor *s2 = keep(&s, vt_matmul(qi, ekt));  // [Lq, (N H), Lk]
    vt_tensor *s24 = keep(&s, vt_reshape(s2, 4, (int64_t[]){Lq, N, H, Lk}));
    vt_tensor *s2h = keep(&s, vt_permute(s24, 4, (int[]){1, 2, 0, 3}));
    vt_tensor *sc = keep(&s, vt_add(s1, s2h));
    if (causal) sc = keep(&s, vt_add(sc, keep(&s, causal_bias(Lq, dev))));
    vt_tensor *p = keep(&s, vt_softmax(sc));  // [N, H, Lq, Lk]
    // values: p v [N, H, Lq, d] + p E_v
    vt_tensor *v4 = keep(&s, vt_reshape(v, 4, (int64_t[]){N, Lk, H, d}));
    vt_tensor *vh = keep(&s, vt_permute(v4, 4, (int[]){0, 2, 1, 3}));
    vt_tensor *o1 = keep(&s, vt_matmul(p, vh));
    vt_tensor *o1t = keep(&s, vt_permute(o1, 4, (int[]){0, 2, 1, 3}));  // [N, Lq, H, d]
    vt_tensor *pp = keep(&s, vt_permute(p, 4, (int[]){2, 0, 1, 3}));
    vt_tensor *pi = keep(&s, vt_reshape(pp, 3, (int64_t[]){Lq, N * H, Lk}));
    vt_tensor *ev = keep(&s, vt_embedding(a->rel_v, ids));  // [Lq, Lk, d]
    vt_tensor *o2 = keep(&s, vt_matmul(pi, ev));             // [Lq, (N H), d]
    vt_tensor *o24 = keep(&s, vt_reshape(o2, 4, (int64_t[]){Lq, N, H, d}));
    vt_tensor *o2t = keep(&s, vt_permute(o24, 4, (int[]){1, 0, 2, 3}));
    vt_tensor *o = keep(&s, vt_add(o1t, o2t));
    vt_tensor *out = vt_reshape(o, 3, (int64_t[]){N, Lq, H * d});
    scope_end(&s);
    return out;
}

// x [N, Lq, Cq], ctx [Nc, Lk, Ck] -> [N, Lq, Cq]; softmax(q k^T d_head^-0.5) v per head
// (+ relative positions when the module has them). Self-attention: ctx = x. Cross-attention: ctx
// is the text context of each sample, Nc = B, while x holds N = B*T frames (row b*T + t) or
// B*H*W pixels (temporal): every row of sample b attends to the same keys, so k and v are
// projected once per sample, not per row (lvdm repeats the context), and q is seen as
// [B, (N/B)*Lq, C] (the rows of a sample are consecutive; each query attends independently, so
// this is the same attention). The tape carries the rows' gradients into the shared k, v
// (summed by the attention's backward GEMMs) and on to ctx / LoRA. Relative positions index the
// query position, so there the projected k, v are repeated to N rows instead.
static vt_tensor *attention_forward(const unet_frame *f, const unet_attention *a, vt_tensor *x, vt_tensor *ctx,
                                    int causal) {
    scope s = {0};
    const int64_t N = x->shape[0], Lq = x->shape[1];
    int64_t Nc = ctx->shape[0];
    if (Nc < 1 || N % Nc != 0) {
        char s1[VT_SHAPE_BUF], s2[VT_SHAPE_BUF];
        vt_error(VT_ERR_SHAPE, "unet3d attention: context %s does not divide the batch of x %s",
                 vt_shape_str(ctx, s1, sizeof s1), vt_shape_str(x, s2, sizeof s2));
        return NULL;
    }
    vt_tensor *q = keep(&s, unet_linear_forward(f, &a->to_q, x));  // [N, Lq, inner]
    vt_tensor *k, *v;                                               // [Nc, Lk, inner]
    if (a->k_ctx && f->kv_ctx && ctx == f->kv_ctx) {  // the context's K/V, cached for the sampling loop
        k = keep(&s, vt_retain(a->k_ctx));
        v = keep(&s, vt_retain(a->v_ctx));
    } else {
        k = keep(&s, unet_linear_forward(f, &a->to_k, ctx));
        v = keep(&s, unet_linear_forward(f, &a->to_v, ctx));
    }
    if (Nc != N && (a->rel_k || causal)) {  // position terms need one row of keys per row of queries
        k = keep(&s, vt_repeat_interleave(k, 0, N / Nc));
        v = keep(&s, vt_repeat_interleave(v, 0, N / Nc));
        Nc = N;
    }
    if (q && Nc != N) q = keep(&s, vt_reshape(q, 3, (int64_t[]){Nc, N / Nc * Lq, q->shape[2]}));
    float scale = (float)(1.0 / sqrt((double)a->d_head));
    vt_tensor *o = keep(&s, !(q && k && v) ? NULL
                            : a->rel_k    ? relpos_attention(a, q, k, v, scale, causal)
                                          : vt_attention(q, k, v, a->heads, scale, causal));
    if (o && Nc != N) o = keep(&s, vt_reshape(o, 3, (int64_t[]){N, Lq, o->shape[2]}));
    vt_tensor *out = o ? unet_linear_forward(f, &a->to_out, o) : NULL;
    scope_end(&s);
    return out;
}

// ---- BasicTransformerBlock ----------------------------------------------------------------
// x [N, L, C], ctx [B, Lc, Dc] (cross; N = B*T) -> [N, L, C]
static vt_tensor *tblock_forward(const unet_frame *f, const unet_tblock *t, vt_tensor *x, vt_tensor *ctx) {
    scope s = {0};
    vt_tensor *h = keep(&s, vt_layer_norm(x, t->norm1.w, t->norm1.b, 1e-5f));
    vt_tensor *a = keep(&s, h ? attention_forward(f, &t->attn1, h, h, t->causal) : NULL);
    vt_tensor *x1 = keep(&s, vt_add(a, x));
    h = keep(&s, vt_layer_norm(x1, t->norm2.w, t->norm2.b, 1e-5f));
    // lvdm hands the causal mask to attn2 too (self-attention in a temporal block)
    a = keep(&s, h ? attention_forward(f, &t->attn2, h, t->cross ? ctx : h, t->causal && !t->cross) : NULL);
    vt_tensor *x2 = keep(&s, vt_add(a, x1));
    h = keep(&s, vt_layer_norm(x2, t->norm3.w, t->norm3.b, 1e-5f));
    vt_tensor *p = keep(&s, h ? unet_linear_forward(f, &t->ff_proj, h) : NULL);
    vt_tensor *g = keep(&s, vt_geglu(p));
    vt_tensor *o = keep(&s, g ? unet_linear_forward(f, &t->ff_out, g) : NULL);
    vt_tensor *out = vt_add(o, x2);
    scope_end(&s);
    return out;
}

static vt_tensor *tblock_segment_fn(void *ctx, vt_tensor *const *in, int n_in) {
    const unet_seg *sg = ctx;
    return tblock_forward(sg->f, sg->module, in[0], n_in > 1 ? in[1] : NULL);
}

// nested: a segment of its own inside the transformer's segment (depth > 1, see
// unet_transformer_forward); otherwise inline.
static vt_tensor *tblock_run(const unet_frame *f, const unet_tblock *t, vt_tensor *x, vt_tensor *ctx, int nested) {
    if (!x || (t->cross && !ctx)) return NULL;
    if (!nested) return tblock_forward(f, t, x, ctx);
    vt_tensor *in[2] = {x, ctx};
    return unet_segment(f, t, tblock_segment_fn, in, t->cross ? 2 : 1);
}

// ---- Spatial / Temporal transformer -------------------------------------------------------
// The text context of a temporal cross-attention: lvdm repeats each frame's context
// 't l d -> (t r) l d' with r = HW / T and pairs the copies with the sample's HW pixel rows, so
// pixel p reads frame p / r's context. The frames of a sample share one context, so every pixel
// row of sample b reads context[b]: ctx [B, L, D] serves the [(B*HW), T, C] tokens as it is
// (attention_forward shares it over a sample's rows). Upstream's shape rule is kept.
static vt_tensor *temporal_context(vt_tensor *ctx, int64_t T, int64_t HW) {
    if (!ctx) return NULL;
    if (HW % T) {
        vt_error(VT_ERR_SHAPE, "unet3d: temporal cross-attention needs H*W (%lld) to be a multiple of the %lld frames "
                 "(lvdm repeats each frame's context H*W/T times)", (long long)HW, (long long)T);
        return NULL;
    }
    return vt_retain(ctx);
}

// Spatial: x [(B*T), C, H, W] -> GroupNorm -> tokens [(B*T), H*W, C] (token y*W + x).
// Temporal: x unfolded to [B, C, T, H, W] -> GroupNorm over (C/32, T, H, W) per sample ->
// tokens [(B*H*W), T, C] (row b*H*W + y*W + x). Both: proj_in, blocks, proj_out, + x.
static vt_tensor *transformer_body(const unet_frame *f, const unet_transformer *t, vt_tensor *x, vt_tensor *context) {
    if (!x) return NULL;
    scope s = {0};
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t B = f->B, T = N / B;
    vt_tensor *tok;
    if (!t->temporal) {
        vt_tensor *h = keep(&s, vt_group_norm(x, 32, t->norm.w, t->norm.b, 1e-6f));
        vt_tensor *p = keep(&s, vt_permute(h, 4, (int[]){0, 2, 3, 1}));
        tok = keep(&s, vt_reshape(p, 3, (int64_t[]){N, H * W, C}));
    } else {
        vt_tensor *x5 = keep(&s, unet_unfold(x, f->B));
        vt_tensor *h = keep(&s, vt_group_norm(x5, 32, t->norm.w, t->norm.b, 1e-6f));
        vt_tensor *p = keep(&s, vt_permute(h, 5, (int[]){0, 3, 4, 2, 1}));
        tok = keep(&s, vt_reshape(p, 3, (int64_t[]){B * H * W, T, C}));
        context = t->cross ? keep(&s, temporal_context(context, T, H * W)) : NULL;
    }
    vt_tensor *h = tok && (!t->cross || context) ? unet_linear_forward(f, &t->proj_in, tok) : NULL;
    for (int i = 0; h && i < t->depth; i++) {
        vt_tensor *nh = tblock_run(f, &t->blocks[i], h, context, f->checkpoint && t->depth > 1);
        vt_release(h);
        h = nh;
    }
    keep(&s, h);
    vt_tensor *o = keep(&s, h ? unet_linear_forward(f, &t->proj_out, h) : NULL);
    vt_tensor *back;
    if (!t->temporal) {
        vt_tensor *r = keep(&s, vt_reshape(o, 4, (int64_t[]){N, H, W, C}));
        back = keep(&s, vt_permute(r, 4, (int[]){0, 3, 1, 2}));
    } else {
        vt_tensor *r = keep(&s, vt_reshape(o, 5, (int64_t[]){B, H, W, T, C}));
        vt_tensor *p = keep(&s, vt_permute(r, 5, (int[]){0, 3, 4, 1, 2}));  // [B, T, C, H, W]
        back = keep(&s, vt_reshape(p, 4, (int64_t[]){N, C, H, W}));
    }
    vt_tensor *out = vt_add(back, x);
    scope_end(&s);
    return out;
}

static vt_tensor *transformer_segment_fn(void *ctx, vt_tensor *const *in, int n_in) {
    const unet_seg *sg = ctx;
    return transformer_body(sg->f, sg->module, in[0], n_in > 1 ? in[1] : NULL);
}

// With checkpointing, the whole transformer (GroupNorm, the token permutes, proj_in, blocks,
// proj_out, residual) is one segment that keeps only x (and the context): lvdm checkpoints
// each BasicTransformerBlock alone, which leaves the GroupNorm input, the permuted tokens,
// the block input and proj_out's input on the tape, 4 activations of x's size per
// transformer instead of 1 (the taped step's largest term at full size). The recompute
// re-runs the norm and the two 1x1 projections, a few % of the block's FLOPs. Deeper
// transformers nest a segment per block so the recompute still holds one block's tape.
vt_tensor *unet_transformer_forward(const unet_frame *f, const unet_transformer *t, vt_tensor *x, vt_tensor *context) {
    if (!f->checkpoint || !x || (t->cross && !context)) return transformer_body(f, t, x, context);
    vt_tensor *in[2] = {x, context};
    return unet_segment(f, t, transformer_segment_fn, in, t->cross ? 2 : 1);
}

// ---- TemporalConvBlock --------------------------------------------------------------------
// x [B, C, T, H, W] -> x + conv4(conv3(conv2(conv1(x)))), conv_k = Conv3d(3,1,1) pad (1,0,0)
// of SiLU(GroupNorm(32, eps 1e-5)), Dropout(p) before conv2..4.
static vt_tensor *tconv_forward(const unet_frame *f, const unet_tconv *c, vt_tensor *x) {
    scope s = {0};
    vt_tensor *y = x;
    vt_tensor *out = NULL;
    for (int k = 0; y && k < 4; k++) {
        vt_tensor *h = keep(&s, vt_group_norm_silu(y, 32, c->norm[k].w, c->norm[k].b, 1e-5f));
        if (k > 0 && f->p_tconv > 0.0f) h = keep(&s, vt_dropout(h, f->p_tconv, vt_hash64(f->seed, (uint64_t)c->site[k])));
        if (k < 3) y = keep(&s, h ? vt_conv_time(h, c->conv[k].w, c->conv[k].b, 1) : NULL);
        else out = h ? vt_conv_time_add(h, c->conv[k].w, c->conv[k].b, 1, x) : NULL;  // x + conv4(...)
    }
    scope_end(&s);
    return out;
}

// ---- ResBlock -----------------------------------------------------------------------------
// x [(B*T), Cin, H, W], emb [(B*T), E] -> [(B*T), Cout, H, W]:
// h = conv(SiLU(GN(x))) + Linear(SiLU(emb)); h = conv(SiLU(GN(h))); h = skip(x) + h;
// then the temporal conv on the unfolded [B, C, T, H, W].
vt_tensor *unet_resblock_forward(const unet_frame *f, const unet_resblock *r, vt_tensor *x, vt_tensor *emb) {
    if (!x || !emb) return NULL;
    scope s = {0};
    int64_t N = x->shape[0];
    vt_tensor *h = keep(&s, vt_group_norm_silu(x, 32, r->in_norm.w, r->in_norm.b, 1e-5f));
    h = keep(&s, h ? vt_conv2d(h, r->in_conv.w, r->in_conv.b, 1, 1) : NULL);
    vt_tensor *e = keep(&s, vt_silu(emb));
    e = keep(&s, e ? unet_linear_forward(f, &r->emb, e) : NULL);
    e = keep(&s, vt_reshape(e, 4, (int64_t[]){N, r->out_ch, 1, 1}));
    h = keep(&s, vt_add(h, e));
    // out_layers.2 Dropout(0) between the SiLU and the conv: identity
    h = keep(&s, vt_group_norm_silu(h, 32, r->out_norm.w, r->out_norm.b, 1e-5f));
    vt_tensor *sk = r->skip.w ? keep(&s, vt_conv2d(x, r->skip.w, r->skip.b, 1, 0)) : x;
    vt_tensor *out = h ? vt_conv2d_add(h, r->out_conv.w, r->out_conv.b, 1, 1, sk) : NULL;  // skip(x) + conv(h)
    if (out && r->has_tconv) {
        keep(&s, out);
        vt_tensor *u5 = keep(&s, unet_unfold(out, f->B));
        vt_tensor *t5 = keep(&s, u5 ? tconv_forward(f, &r->tconv, u5) : NULL);
        out = unet_fold(t5);
    }
    scope_end(&s);
    return out;
}
