// shape.c — reshape (a recorded view), permute, concat, slice, repeat_interleave, embedding
// lookup, row gather and nearest x2 upsample. CPU reference kernels.
#include "ops_internal.h"
#include "params.h"
#include <stdio.h>
#include <string.h>

// ---- reshape -----------------------------------------------------------------------------
// The output shares the input's storage; the op exists so the tape carries the gradient
// (reshaped back) to the input.
static vt_err reshape_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    (void)n;
    // vt_op_run allocated fresh storage; point the output at the input's bytes instead.
    vt_storage_release(out->storage);
    vt_storage_retain(in[0]->storage);
    out->storage = in[0]->storage;
    out->offset = in[0]->offset;
    return VT_OK;
}

static vt_err reshape_backward_cpu(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    if (!n->need[0]) return VT_OK;
    gin[0] = vt_view((vt_tensor *)gout, n->in_ndim[0], n->in_shape[0]);
    return gin[0] ? VT_OK : vt_error_code();
}

static const vt_op op_reshape = {"reshape", {reshape_forward_cpu, reshape_forward_cpu}, {reshape_backward_cpu, reshape_backward_cpu}, 0, 0, NULL};

vt_tensor *vt_reshape(vt_tensor *x, int ndim, const int64_t *shape) {
    if (!x) return NULL;
    if (ndim < 0 || ndim > VT_MAX_DIMS || vt_dim_prod(ndim, shape) != x->numel) {
        char a[VT_SHAPE_BUF], b[VT_SHAPE_BUF];
        vt_error(VT_ERR_SHAPE, "reshape: cannot reshape %s to %s", vt_shape_str(x, a, sizeof a),
                 vt_shape_str_raw(ndim < 0 ? 0 : ndim > VT_MAX_DIMS ? VT_MAX_DIMS : ndim, shape, b, sizeof b));
        return NULL;
    }
    // vt_op_run allocates the output; for a view that would be wasted, so the op runs on a
    // 0-element placeholder (the forward points it at x's bytes) and the shape is set after.
    int64_t zero = 0;
    vt_tensor *out = vt_op_run(&op_reshape, &x, 1, NULL, 0, x->dtype, 1, &zero);
    if (!out) return NULL;
    out->ndim = ndim;
    for (int i = 0; i < VT_MAX_DIMS; i++) out->shape[i] = i < ndim ? shape[i] : 0;
    out->numel = x->numel;
    return out;
}

// ---- helpers -----------------------------------------------------------------------------
// The copy ops work on any dtype (element size es bytes): they move ids and bf16 data too.
// Gradients exist only for f32 on the CPU.

// Normalises a possibly negative dim; -1 (and an error naming op) when out of range.
static int norm_dim(const char *op, const vt_tensor *x, int dim) {
    int d = dim < 0 ? dim + x->ndim : dim;
    if (d < 0 || d >= x->ndim) {
        char s[VT_SHAPE_BUF];
        vt_error(VT_ERR_SHAPE, "%s: dim %d out of range for %s", op, dim, vt_shape_str(x, s, sizeof s));
        return -1;
    }
    return d;
}

// x seen as [outer, shape[d], inner] around dim d.
static void split_at(int ndim, const int64_t *shape, int d, int64_t *outer, int64_t *inner) {
    *outer = 1;
    *inner = 1;
    for (int i = 0; i < d; i++) *outer *= shape[i];
    for (int i = d + 1; i < ndim; i++) *inner *= shape[i];
}

// ---- permute -----------------------------------------------------------------------------
typedef vt_permute_params permute_params;

// src [in_shape] -> dst [in_shape[perm[0]], ..., in_shape[perm[nd-1]]]
static void permute_copy(size_t es, const void *src, int nd, const int64_t *in_shape, const int *perm, void *dst) {
    if (nd == 0) {
        memcpy(dst, src, es);
        return;
    }
    int64_t in_st[VT_MAX_DIMS], st[VT_MAX_DIMS], os[VT_MAX_DIMS], acc = 1;
    for (int i = nd - 1; i >= 0; i--) {
        in_st[i] = acc;
        acc *= in_shape[i];
    }
    for (int i = 0; i < nd; i++) {
        os[i] = in_shape[perm[i]];
        st[i] = in_st[perm[i]];
    }
    const int64_t inner = os[nd - 1], outer = inner ? acc / inner : 0, ls = st[nd - 1];
#pragma omp parallel for if (acc > 65536)
    for (int64_t o = 0; o < outer; o++) {
        int64_t rem = o, off = 0;
        for (int d = nd - 2; d >= 0; d--) {
            off += (rem % os[d]) * st[d];
            rem /= os[d];
        }
        if (es == 4) {
            const uint32_t *s = (const uint32_t *)src + off;
            uint32_t *t = (uint32_t *)dst + o * inner;
            for (int64_t i = 0; i < inner; i++) t[i] = s[i * ls];
        } else {
            const char *s = (const char *)src + off * es;
            char *t = (char *)dst + o * inner * es;
            for (int64_t i = 0; i < inner; i++) memcpy(t + i * es, s + i * ls * es, es);
        }
    }
}

static vt_err permute_forward_cpu(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const permute_params *p = (const permute_params *)n->params;
    permute_copy(vt_dtype_size(in[0]->dtype), vt_data(in[0]), p->ndim, in[0]->shape, p->perm, vt_data(out));
    return VT_OK;
}

// gout [out shape] -> dx = gout permuted by the inverse permutation
static vt_err permute_backward_cpu(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    if (!n->need[0]) return VT_OK;
    const permute_params *p = (const permute_params *)n->params;
    int inv[VT_MAX_DIMS];
    for (int i = 0; i < p->ndim; i++) inv[p->perm[i]] = i;
    gin[0] = vt_empty(VT_F32, VT_CPU, n->in_ndim[0], n->in_shape[0]);
    if (!gin[0]) return vt_error_code();
    permute_copy(sizeof(float), vt_data(gout), p->ndim, gout->shape, inv, vt_data(gin[0]));
    return VT_OK;
}

static const vt_op op_permute = {"permute", {permute_forward_cpu, NULL}, {permute_backward_cpu, NULL}, 0, 0, NULL};

vt_tensor *vt_permute(vt_tensor *x, int ndim, const int *perm) {
    if (!x) return NULL;
    char s[VT_SHAPE_BUF];
    int ok = ndim == x->ndim && perm != NULL;
    unsigned seen = 0;
    for (int i = 0; ok && i < ndim; i++) {
        ok = perm[i] >= 0 && perm[i] < ndim && !(seen & (1u << perm[i]));
        if (ok) seen |= 1u << perm[i];
    }
    if (!ok) {
        char ps[64] = "";
        size_t len = 0;
        for (int i = 0; perm && i < ndim && i < VT_MAX_DIMS && len < sizeof ps; i++)
            len += (size_t)snprintf(ps + len, sizeof ps - len, "%s%d", i ? ", " : "", perm[i]);
        vt_error(VT_ERR_SHAPE, "permute: (%s) is not a permutation of the %d dims of %s", ps, x->ndim,
                 vt_shape_str(x, s, sizeof s));
        return NULL;
    }
    permute_params p = {ndim, {0}};
    int64_t shape[VT_MAX_DIMS];
    for (int i = 0; i < ndim; i++) {
        p.perm[i] = perm[i];
        shape[i] = x->shape[perm[i]];
    }
    return vt_op_run(&op_permute, &x, 1, &p, sizeof p, x->dtype, ndim, shape);
}

// ---- concat ------------------------------------------------------------------------------
// inputs [outer, n_i, inner] -> out [outer, sum n_i, inner]
typedef vt_concat_params concat_params;

static vt_err concat_forward_cpu(vt_node *nd, vt_tensor *const *in, vt_tensor *out) {
    const concat_params *p = (const concat_params *)nd->params;
    const size_t es = vt_dtype_size(out->dtype);
    int64_t total = 0;
    for (int i = 0; i < p->n; i++) total += p->sizes[i];
    char *dst = vt_data(out);
    for (int64_t o = 0; o < p->outer; o++) {
        int64_t off = 0;
        for (int i = 0; i < p->n; i++) {
            const size_t run = (size_t)(p->sizes[i] * p->inner) * es;
            memcpy(dst + (size_t)((o * total + off) * p->inner) * es, (const char *)vt_data(in[i]) + o * run, run);
            off += p->sizes[i];
        }
    }
    return VT_OK;
}

// gout [outer, sum n_i, inner] -> dx_i = gout[:, off_i : off_i + n_i, :]
static vt_err concat_backward_cpu(vt_node *nd, const vt_tensor *gout, vt_tensor **gin) {
    const concat_params *p = (const concat_params *)nd->params;
    int64_t total = 0;
    for (int i = 0; i < p->n; i++) total += p->sizes[i];
    int64_t off = 0;
    for (int i = 0; i < p->n; off += p->sizes[i], i++) {
        if (!nd->need[i]) continue;
        gin[i] = vt_empty(VT_F32, VT_CPU, nd->in_ndim[i], nd->in_shape[i]);
        if (!gin[i]) return vt_error_code();
        const int64_t run = p->sizes[i] * p->inner;
        for (int64_t o = 0; o < p->outer; o++)
            memcpy(vt_f32(gin[i]) + o * run, vt_f32(gout) + (o * total + off) * p->inner, (size_t)run * sizeof(float));
    }
    return VT_OK;
}

static const vt_op op_concat = {"concat", {concat_forward_cpu, NULL}, {concat_backward_cpu, NULL}, 0, 0, NULL};

vt_tensor *vt_concat(vt_tensor *const *xs, int n, int dim) {
    if (n < 1 || !xs) {
        vt_error(VT_ERR_ARG, "concat: no inputs");
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (!xs[i]) return NULL;
    int d = norm_dim("concat", xs[0], dim);
    if (d < 0) return NULL;
    char s1[VT_SHAPE_BUF], s2[VT_SHAPE_BUF];
    for (int i = 1; i < n; i++) {
        int ok = xs[i]->ndim == xs[0]->ndim && xs[i]->dtype == xs[0]->dtype;
        for (int j = 0; ok && j < xs[0]->ndim; j++) ok = j == d || xs[i]->shape[j] == xs[0]->shape[j];
        if (!ok) {
            vt_error(VT_ERR_SHAPE, "concat: input %d %s %s does not match input 0 %s %s outside dim %d", i,
                     vt_dtype_name(xs[i]->dtype), vt_shape_str(xs[i], s1, sizeof s1), vt_dtype_name(xs[0]->dtype),
                     vt_shape_str(xs[0], s2, sizeof s2), dim);
            return NULL;
        }
    }
    if (n > VT_MAX_INPUTS) {
        // More inputs than a tape node holds: concatenate groups, then the groups' results.
        vt_tensor *parts[VT_MAX_INPUTS] = {0};
        int np = 0, per = (n + VT_MAX_INPUTS - 1) / VT_MAX_INPUTS;
        vt_tensor *res = NULL;
        for (int i = 0; i < n; i += per) {
            parts[np] = vt_concat(xs + i, n - i < per ? n - i : per, d);
            if (!parts[np++]) goto done;
        }
        res = vt_concat(parts, np, d);
    done:
        for (int i = 0; i < np; i++) vt_release(parts[i]);
        return res;
    }
    concat_params p = {n, 0, 0, {0}};
    split_at(xs[0]->ndim, xs[0]->shape, d, &p.outer, &p.inner);
    int64_t shape[VT_MAX_DIMS];
    for (int j = 0; j < xs[0]->ndim; j++) shape[j] = xs[0]->shape[j];
    shape[d] = 0;
    for (int i = 0; i < n; i++) {
        p.sizes[i] = xs[i]->shape[d];
        shape[d] += xs[i]->shape[d];
    }
    return vt_op_run(&op_concat, xs, n, &p, sizeof p, xs[0]->dtype, xs[0]->ndim, shape);
}

// ---- slice -------------------------------------------------------------------------------
// x [outer, n, inner] -> out [outer, len, inner] = x[:, start : start + len, :]
typedef vt_slice_params slice_params;

static vt_err slice_forward_cpu(vt_node *nd, vt_tensor *const *in, vt_tensor *out) {
    const slice_params *p = (const slice_params *)nd->params;
    const size_t es = vt_dtype_size(out->dtype), run = (size_t)(p->len * p->inner) * es;
    const char *src = vt_data(in[0]);
    char *dst = vt_data(out);
    for (int64_t o = 0; o < p->outer; o++)
        memcpy(dst + o * run, src + (size_t)((o * p->n + p->start) * p->inner) * es, run);
    return VT_OK;
}

// gout [outer, len, inner] -> dx [outer, n, inner]: gout in the slice, zero elsewhere
static vt_err slice_backward_cpu(vt_node *nd, const vt_tensor *gout, vt_tensor **gin) {
    if (!nd->need[0]) return VT_OK;
    const slice_params *p = (const slice_params *)nd->params;
    gin[0] = vt_zeros(VT_F32, VT_CPU, nd->in_ndim[0], nd->in_shape[0]);
    if (!gin[0]) return vt_error_code();
    const int64_t run = p->len * p->inner;
    for (int64_t o = 0; o < p->outer; o++)
        memcpy(vt_f32(gin[0]) + (o * p->n + p->start) * p->inner, vt_f32(gout) + o * run, (size_t)run * sizeof(float));
    return VT_OK;
}

static const vt_op op_slice = {"slice", {slice_forward_cpu, NULL}, {slice_backward_cpu, NULL}, 0, 0, NULL};

vt_tensor *vt_slice(vt_tensor *x, int dim, int64_t start, int64_t len) {
    if (!x) return NULL;
    int d = norm_dim("slice", x, dim);
    if (d < 0) return NULL;
    if (start < 0 || len < 0 || start + len > x->shape[d]) {
        char s[VT_SHAPE_BUF];
        vt_error(VT_ERR_SHAPE, "slice: [%lld, %lld) out of range for dim %d of %s", (long long)start,
                 (long long)(start + len), dim, vt_shape_str(x, s, sizeof s));
        return NULL;
    }
    slice_params p = {0, x->shape[d], 0, start, len};
    split_at(x->ndim, x->shape, d, &p.outer, &p.inner);
    int64_t shape[VT_MAX_DIMS];
    for (int j = 0; j < x->ndim; j++) shape[j] = x->shape[j];
    shape[d] = len;
    return vt_op_run(&op_slice, &x, 1, &p, sizeof p, x->dtype, x->ndim, shape);
}

// ---- repeat_interleave -------------------------------------------------------------------
// x [outer, n, inner] -> out [outer, n r, inner], out[o, i r + k, :] = x[o, i, :]
typedef vt_repeat_params repeat_params;

static vt_err repeat_forward_cpu(vt_node *nd, vt_tensor *const *in, vt_tensor *out) {
    const repeat_params *p = (const repeat_params *)nd->params;
    const size_t es = vt_dtype_size(out->dtype), run = (size_t)p->inner * es;
    const char *src = vt_data(in[0]);
    char *dst = vt_data(out);
    for (int64_t o = 0; o < p->outer; o++)
        for (int64_t i = 0; i < p->n; i++)
            for (int64_t k = 0; k < p->r; k++)
                memcpy(dst + ((o * p->n + i) * p->r + k) * run, src + (o * p->n + i) * run, run);
    return VT_OK;
}

// gout [outer, n r, inner] -> dx[o, i, :] = sum_k gout[o, i r + k, :]
static vt_err repeat_backward_cpu(vt_node *nd, const vt_tensor *gout, vt_tensor **gin) {
    if (!nd->need[0]) return VT_OK;
    const repeat_params *p = (const repeat_params *)nd->params;
    gin[0] = vt_zeros(VT_F32, VT_CPU, nd->in_ndim[0], nd->in_shape[0]);
    if (!gin[0]) return vt_error_code();
    const float *g = vt_f32(gout);
    float *dx = vt_f32(gin[0]);
    for (int64_t o = 0; o < p->outer; o++)
        for (int64_t i = 0; i < p->n; i++) {
            float *dst = dx + (o * p->n + i) * p->inner;
            for (int64_t k = 0; k < p->r; k++) {
                const float *src = g + ((o * p->n + i) * p->r + k) * p->inner;
                for (int64_t c = 0; c < p->inner; c++) dst[c] += src[c];
            }
        }
    return VT_OK;
}

static const vt_op op_repeat = {"repeat_interleave", {repeat_forward_cpu, NULL}, {repeat_backward_cpu, NULL}, 0, 0, NULL};

vt_tensor *vt_repeat_interleave(vt_tensor *x, int dim, int64_t r) {
    if (!x) return NULL;
    int d = norm_dim("repeat_interleave", x, dim);
    if (d < 0) return NULL;
    if (r < 1) {
        vt_error(VT_ERR_ARG, "repeat_interleave: repeats %lld < 1", (long long)r);
        return NULL;
    }
    repeat_params p = {0, x->shape[d], 0, r};
    split_at(x->ndim, x->shape, d, &p.outer, &p.inner);
    int64_t shape[VT_MAX_DIMS];
    for (int j = 0; j < x->ndim; j++) shape[j] = x->shape[j];
    shape[d] *= r;
    return vt_op_run(&op_repeat, &x, 1, &p, sizeof p, x->dtype, x->ndim, shape);
}

// ---- embedding ---------------------------------------------------------------------------
// weight [V, D], ids i64 [M] (flattened) -> out [M, D] = weight[ids[m], :]
typedef vt_embedding_params embedding_params;

static vt_err embedding_forward_cpu(vt_node *nd, vt_tensor *const *in, vt_tensor *out) {
    const embedding_params *p = (const embedding_params *)nd->params;
    const float *w = vt_f32(in[0]);
    const int64_t *ids = vt_i64(in[1]);
    float *o = vt_f32(out);
    for (int64_t m = 0; m < p->M; m++) memcpy(o + m * p->D, w + ids[m] * p->D, (size_t)p->D * sizeof(float));
    return VT_OK;
}

// gout [M, D], saved ids [M] -> dweight [V, D], dweight[ids[m], :] += gout[m, :] (in order:
// repeated ids sum deterministically)
static vt_err embedding_backward_cpu(vt_node *nd, const vt_tensor *gout, vt_tensor **gin) {
    if (!nd->need[0]) return VT_OK;
    const embedding_params *p = (const embedding_params *)nd->params;
    gin[0] = vt_zeros(VT_F32, VT_CPU, 2, (int64_t[]){p->V, p->D});
    if (!gin[0]) return vt_error_code();
    const int64_t *ids = vt_i64(nd->saved[0]);
    const float *g = vt_f32(gout);
    float *dw = vt_f32(gin[0]);
    for (int64_t m = 0; m < p->M; m++)
        for (int64_t c = 0; c < p->D; c++) dw[ids[m] * p->D + c] += g[m * p->D + c];
    return VT_OK;
}

static const vt_op op_embedding = {"embedding", {embedding_forward_cpu, NULL}, {embedding_backward_cpu, NULL}, 0x2, 0, NULL};

// Nonzero (+ error naming op, the index and the bound) unless every idx[i] is in [0, bound).
static int check_indices(const char *op, const char *what, const vt_tensor *idx, int64_t bound, const char *bound_name) {
    if (idx->device != VT_CPU) return 0;  // device kernels check their own
    const int64_t *v = vt_i64(idx);
    for (int64_t i = 0; i < idx->numel; i++)
        if (v[i] < 0 || v[i] >= bound) {
            vt_error(VT_ERR_ARG, "%s: %s %lld (at position %lld) out of range for %s = %lld", op, what,
                     (long long)v[i], (long long)i, bound_name, (long long)bound);
            return 1;
        }
    return 0;
}

vt_tensor *vt_embedding(vt_tensor *weight, const vt_tensor *ids) {
    if (!weight || !ids) return NULL;
    if (vt_check_f32("embedding", weight)) return NULL;
    char s1[VT_SHAPE_BUF], s2[VT_SHAPE_BUF];
    if (weight->ndim != 2 || ids->dtype != VT_I64 || ids->ndim >= VT_MAX_DIMS) {
        vt_error(VT_ERR_SHAPE, "embedding: weight %s %s, ids %s %s (need weight [V, D], ids i64 [...] of at most %d dims)",
                 vt_dtype_name(weight->dtype), vt_shape_str(weight, s1, sizeof s1), vt_dtype_name(ids->dtype),
                 vt_shape_str(ids, s2, sizeof s2), VT_MAX_DIMS - 1);
        return NULL;
    }
    if (check_indices("embedding", "id", ids, weight->shape[0], "V")) return NULL;
    embedding_params p = {weight->shape[0], weight->shape[1], ids->numel};
    int64_t shape[VT_MAX_DIMS];
    for (int j = 0; j < ids->ndim; j++) shape[j] = ids->shape[j];
    shape[ids->ndim] = p.D;
    vt_tensor *in[2] = {weight, (vt_tensor *)ids};
    return vt_op_run(&op_embedding, in, 2, &p, sizeof p, VT_F32, ids->ndim + 1, shape);
}

// ---- gather_rows -------------------------------------------------------------------------
// x [B, L, D], index i64 [B] -> out [B, D] = x[b, index[b], :]
typedef vt_gather_params gather_params;

static vt_err gather_forward_cpu(vt_node *nd, vt_tensor *const *in, vt_tensor *out) {
    const gather_params *p = (const gather_params *)nd->params;
    const float *x = vt_f32(in[0]);
    const int64_t *idx = vt_i64(in[1]);
    for (int64_t b = 0; b < p->B; b++)
        memcpy(vt_f32(out) + b * p->D, x + (b * p->L + idx[b]) * p->D, (size_t)p->D * sizeof(float));
    return VT_OK;
}

// gout [B, D], saved index [B] -> dx [B, L, D]: gout at row index[b], zero elsewhere
static vt_err gather_backward_cpu(vt_node *nd, const vt_tensor *gout, vt_tensor **gin) {
    if (!nd->need[0]) return VT_OK;
    const gather_params *p = (const gather_params *)nd->params;
    gin[0] = vt_zeros(VT_F32, VT_CPU, 3, (int64_t[]){p->B, p->L, p->D});
    if (!gin[0]) return vt_error_code();
    const int64_t *idx = vt_i64(nd->saved[0]);
    for (int64_t b = 0; b < p->B; b++)
        memcpy(vt_f32(gin[0]) + (b * p->L + idx[b]) * p->D, vt_f32(gout) + b * p->D, (size_t)p->D * sizeof(float));
    return VT_OK;
}

static const vt_op op_gather_rows = {"gather_rows", {gather_forward_cpu, NULL}, {gather_backward_cpu, NULL}, 0x2, 0, NULL};

vt_tensor *vt_gather_rows(vt_tensor *x, const vt_tensor *index) {
    if (!x || !index) return NULL;
    if (vt_check_f32("gather_rows", x)) return NULL;
    char s1[VT_SHAPE_BUF], s2[VT_SHAPE_BUF];
    if (x->ndim != 3 || index->dtype != VT_I64 || index->ndim != 1 || index->shape[0] != x->shape[0]) {
        vt_error(VT_ERR_SHAPE, "gather_rows: x %s, index %s %s (need x [B, L, D], index i64 [B])",
                 vt_shape_str(x, s1, sizeof s1), vt_dtype_name(index->dtype), vt_shape_str(index, s2, sizeof s2));
        return NULL;
    }
    if (check_indices("gather_rows", "index", index, x->shape[1], "L")) return NULL;
    gather_params p = {x->shape[0], x->shape[1], x->shape[2]};
    vt_tensor *in[2] = {x, (vt_tensor *)index};
    return vt_op_run(&op_gather_rows, in, 2, &p, sizeof p, VT_F32, 2, (int64_t[]){p.B, p.D});
}
