// shape.cu — permute, concat, slice, repeat_interleave, embedding, gather_rows,
// upsample_nearest2x and the sum / mean reductions, forward and backward side by side, under
// the op names of core/ops/shape.c, upsample.c and reduce.c (reshape's CUDA entry lives in the
// op itself: it is a view). The copy ops move elements of any size (1, 2, 4 or 8 bytes: f32,
// bf16, i64 ids); gradients are f32. Index inputs (embedding ids, gather rows) stay on the
// GPU: the kernels check their range and report the first bad position through a flag read
// back after the launch (the CPU frontend checks only host tensors).
#include "cuda/common.cuh"
#include "core/ops/params.h"

// ---- element-size dispatch ---------------------------------------------------------------
// Calls f(T{}) with T the unsigned integer type of es bytes; VT_ERR_DTYPE for other sizes.
template <typename F> static vt_err by_elem_size(size_t es, F f) {
    switch (es) {
    case 1: return f(uint8_t{});
    case 2: return f(uint16_t{});
    case 4: return f(uint32_t{});
    case 8: return f(uint64_t{});
    }
    return vt_error(VT_ERR_DTYPE, "shape op: element size %zu not supported on CUDA", es);
}

// ---- permute -----------------------------------------------------------------------------
// out[o] = in[sum_d idx_d(o) st[d]]: out shape os[], st[d] = input stride of dim perm[d]
struct permute_desc {
    int nd;
    long long os[VT_MAX_DIMS], st[VT_MAX_DIMS];
};

template <typename T> __global__ void permute_kernel(permute_desc d, const T *src, T *dst, long long n) {
    VT_GRID_STRIDE(i, n) {
        long long rem = i, off = 0;
        for (int k = d.nd - 1; k >= 0; k--) {
            off += rem % d.os[k] * d.st[k];
            rem /= d.os[k];
        }
        dst[i] = src[off];
    }
}

// src [in_shape] -> dst [in_shape[perm[0]], ...] of element size es
static vt_err permute_copy(size_t es, const void *src, int nd, const int64_t *in_shape, const int *perm, void *dst,
                           int64_t n) {
    if (n == 0) return VT_OK;
    permute_desc d;
    d.nd = nd;
    long long in_st[VT_MAX_DIMS], acc = 1;
    for (int i = nd - 1; i >= 0; i--) {
        in_st[i] = acc;
        acc *= in_shape[i];
    }
    for (int i = 0; i < nd; i++) {
        d.os[i] = in_shape[perm[i]];
        d.st[i] = in_st[perm[i]];
    }
    return by_elem_size(es, [&](auto z) -> vt_err {
        using T = decltype(z);
        permute_kernel<T><<<vt_grid_1d(n), 256>>>(d, (const T *)src, (T *)dst, n);
        VT_CUDA_CHECK_LAUNCH();
        return VT_OK;
    });
}

static vt_err permute_forward_cuda(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const vt_permute_params *p = (const vt_permute_params *)n->params;
    return permute_copy(vt_dtype_size(in[0]->dtype), vt_data(in[0]), p->ndim, in[0]->shape, p->perm, vt_data(out),
                        out->numel);
}

// gout [out shape] -> dx = gout permuted by the inverse permutation
static vt_err permute_backward_cuda(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    if (!n->need[0]) return VT_OK;
    const vt_permute_params *p = (const vt_permute_params *)n->params;
    int inv[VT_MAX_DIMS];
    for (int i = 0; i < p->ndim; i++) inv[p->perm[i]] = i;
    gin[0] = vt_empty(VT_F32, VT_CUDA, n->in_ndim[0], n->in_shape[0]);
    if (!gin[0]) return vt_error_code();
    return permute_copy(sizeof(float), vt_data(gout), p->ndim, gout->shape, inv, vt_data(gin[0]), gout->numel);
}

// ---- strided row copies (concat, slice) --------------------------------------------------
// dst[o * dpitch + c] = src[o * spitch + c] for o < rows, c < run (elements of T)
template <typename T>
__global__ void copy_rows_kernel(T *dst, long long dpitch, const T *src, long long spitch, long long run, long long n) {
    VT_GRID_STRIDE(i, n) {
        const long long o = i / run, c = i % run;
        dst[o * dpitch + c] = src[o * spitch + c];
    }
}

// pitches and run in elements of size es
static vt_err copy_rows(size_t es, void *dst, int64_t dpitch, const void *src, int64_t spitch, int64_t rows,
                        int64_t run) {
    const int64_t n = rows * run;
    if (n == 0) return VT_OK;
    return by_elem_size(es, [&](auto z) -> vt_err {
        using T = decltype(z);
        copy_rows_kernel<T><<<vt_grid_1d(n), 256>>>((T *)dst, dpitch, (const T *)src, spitch, run, n);
        VT_CUDA_CHECK_LAUNCH();
        return VT_OK;
    });
}

// inputs [outer, n_i, inner] -> out [outer, sum n_i, inner]
static vt_err concat_forward_cuda(vt_node *nd, vt_tensor *const *in, vt_tensor *out) {
    const vt_concat_params *p = (const vt_concat_params *)nd->params;
    const size_t es = vt_dtype_size(out->dtype);
    int64_t total = 0, off = 0;
    for (int i = 0; i < p->n; i++) total += p->sizes[i];
    for (int i = 0; i < p->n; i++) {
        const int64_t run = p->sizes[i] * p->inner;
        if (copy_rows(es, (char *)vt_data(out) + (size_t)(off * p->inner) * es, total * p->inner, vt_data(in[i]), run,
                      p->outer, run))
            return vt_error_code();
        off += p->sizes[i];
    }
    return VT_OK;
}

// gout [outer, sum n_i, inner] -> dx_i = gout[:, off_i : off_i + n_i, :]
static vt_err concat_backward_cuda(vt_node *nd, const vt_tensor *gout, vt_tensor **gin) {
    const vt_concat_params *p = (const vt_concat_params *)nd->params;
    int64_t total = 0, off = 0;
    for (int i = 0; i < p->n; i++) total += p->sizes[i];
    for (int i = 0; i < p->n; off += p->sizes[i], i++) {
        if (!nd->need[i]) continue;
        gin[i] = vt_empty(VT_F32, VT_CUDA, nd->in_ndim[i], nd->in_shape[i]);
        if (!gin[i]) return vt_error_code();
        const int64_t run = p->sizes[i] * p->inner;
        if (copy_rows(sizeof(float), vt_data(gin[i]), run, vt_f32(gout) + off * p->inner, total * p->inner, p->outer,
                      run))
            return vt_error_code();
    }
    return VT_OK;
}

// x [outer, n, inner] -> out [outer, len, inner] = x[:, start : start + len, :]
static vt_err slice_forward_cuda(vt_node *nd, vt_tensor *const *in, vt_tensor *out) {
    const vt_slice_params *p = (const vt_slice_params *)nd->params;
    const size_t es = vt_dtype_size(out->dtype);
    return copy_rows(es, vt_data(out), p->len * p->inner, (const char *)vt_data(in[0]) + (size_t)(p->start * p->inner) * es,
                     p->n * p->inner, p->outer, p->len * p->inner);
}

// gout [outer, len, inner] -> dx [outer, n, inner]: gout in the slice, zero elsewhere
static vt_err slice_backward_cuda(vt_node *nd, const vt_tensor *gout, vt_tensor **gin) {
    if (!nd->need[0]) return VT_OK;
    const vt_slice_params *p = (const vt_slice_params *)nd->params;
    gin[0] = vt_cuda_zeros(VT_F32, nd->in_ndim[0], nd->in_shape[0]);
    if (!gin[0]) return vt_error_code();
    return copy_rows(sizeof(float), vt_f32(gin[0]) + p->start * p->inner, p->n * p->inner, vt_data(gout),
                     p->len * p->inner, p->outer, p->len * p->inner);
}

// ---- repeat_interleave -------------------------------------------------------------------
// x [outer, n, inner] -> out [outer, n r, inner], out[o, i r + k, c] = x[o, i, c]
template <typename T>
__global__ void repeat_forward_kernel(const T *x, T *out, long long r, long long inner, long long total) {
    VT_GRID_STRIDE(e, total) {
        const long long c = e % inner, row = e / inner;  // row = o * n r + i r + k
        out[e] = x[row / r * inner + c];                  // (o n + i) = row / r
    }
}

// g [outer, n r, inner] -> dx[o, i, c] = sum_k g[o, i r + k, c] (k in order, as on the CPU)
__global__ void repeat_backward_kernel(const float *g, float *dx, long long r, long long inner, long long total) {
    VT_GRID_STRIDE(e, total) {
        const long long c = e % inner, row = e / inner;  // row = o n + i
        float s = 0.0f;
        for (long long k = 0; k < r; k++) s += g[(row * r + k) * inner + c];
        dx[e] = s;
    }
}

static vt_err repeat_forward_cuda(vt_node *nd, vt_tensor *const *in, vt_tensor *out) {
    const vt_repeat_params *p = (const vt_repeat_params *)nd->params;
    if (out->numel == 0) return VT_OK;
    return by_elem_size(vt_dtype_size(out->dtype), [&](auto z) -> vt_err {
        using T = decltype(z);
        repeat_forward_kernel<T><<<vt_grid_1d(out->numel), 256>>>((const T *)vt_data(in[0]), (T *)vt_data(out), p->r,
                                                                  p->inner, out->numel);
        VT_CUDA_CHECK_LAUNCH();
        return VT_OK;
    });
}

static vt_err repeat_backward_cuda(vt_node *nd, const vt_tensor *gout, vt_tensor **gin) {
    if (!nd->need[0]) return VT_OK;
    const vt_repeat_params *p = (const vt_repeat_params *)nd->params;
    gin[0] = vt_empty(VT_F32, VT_CUDA, nd->in_ndim[0], nd->in_shape[0]);
    if (!gin[0]) return vt_error_code();
    if (gin[0]->numel == 0) return VT_OK;
    repeat_backward_kernel<<<vt_grid_1d(gin[0]->numel), 256>>>(vt_f32(gout), vt_f32(gin[0]), p->r, p->inner,
                                                               gin[0]->numel);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

// ---- index checks ------------------------------------------------------------------------
// bad[0] = 1 + the smallest position m with idx[m] outside [0, bound) (0: all in range)
__global__ void index_check_kernel(const int64_t *idx, long long n, long long bound, unsigned long long *bad) {
    VT_GRID_STRIDE(m, n)
        if (idx[m] < 0 || idx[m] >= bound) atomicMin(bad, (unsigned long long)m + 1);
}

// VT_ERR_ARG naming op, the index and its position unless every idx is in [0, bound).
static vt_err check_indices_cuda(const char *op, const char *what, const vt_tensor *idx, int64_t bound,
                                 const char *bound_name) {
    if (idx->numel == 0) return VT_OK;
    vt_tensor *flag = vt_cuda_scratch(VT_I64, 1);
    if (!flag) return vt_error_code();
    unsigned long long *bad = (unsigned long long *)vt_data(flag), h = 0;
    vt_err e = VT_OK;
    cudaError_t ce = cudaMemsetAsync(bad, 0xff, sizeof *bad);  // "none": the largest value
    if (ce == cudaSuccess) {
        index_check_kernel<<<vt_grid_1d(idx->numel), 256>>>(vt_i64(idx), idx->numel, bound, bad);
        ce = cudaGetLastError();
    }
    if (ce == cudaSuccess) ce = cudaMemcpy(&h, bad, sizeof h, cudaMemcpyDeviceToHost);
    if (ce != cudaSuccess) {
        e = vt_error(VT_ERR_DEVICE, "%s: index check: %s", op, cudaGetErrorString(ce));
    } else if (h != ~0ull) {
        int64_t v = 0;
        ce = cudaMemcpy(&v, vt_i64(idx) + (h - 1), sizeof v, cudaMemcpyDeviceToHost);
        e = vt_error(VT_ERR_ARG, "%s: %s %lld (at position %lld) out of range for %s = %lld", op, what,
                     ce == cudaSuccess ? (long long)v : -1LL, (long long)(h - 1), bound_name, (long long)bound);
    }
    vt_release(flag);
    return e;
}

// ---- embedding ---------------------------------------------------------------------------
// weight [V, D], ids [M] -> out [M, D] = weight[ids[m], :]
__global__ void embedding_forward_kernel(const float *w, const int64_t *ids, float *out, long long D, long long n) {
    VT_GRID_STRIDE(e, n) out[e] = w[ids[e / D] * D + e % D];
}

// g [M, D], ids [M] -> dweight [V, D] (zeroed) += g rows at ids (atomics: repeated ids add in
// an unspecified order, so the sum may differ from the CPU's in the last bits)
__global__ void embedding_backward_kernel(const float *g, const int64_t *ids, float *dw, long long D, long long n) {
    VT_GRID_STRIDE(e, n) atomicAdd(&dw[ids[e / D] * D + e % D], g[e]);
}

static vt_err embedding_forward_cuda(vt_node *nd, vt_tensor *const *in, vt_tensor *out) {
    const vt_embedding_params *p = (const vt_embedding_params *)nd->params;
    if (check_indices_cuda("embedding", "id", in[1], p->V, "V")) return vt_error_code();
    if (out->numel == 0) return VT_OK;
    embedding_forward_kernel<<<vt_grid_1d(out->numel), 256>>>(vt_f32(in[0]), vt_i64(in[1]), vt_f32(out), p->D,
                                                              out->numel);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

// saved: ids (the save mask's input 1)
static vt_err embedding_backward_cuda(vt_node *nd, const vt_tensor *gout, vt_tensor **gin) {
    if (!nd->need[0]) return VT_OK;
    const vt_embedding_params *p = (const vt_embedding_params *)nd->params;
    const int64_t shape[2] = {p->V, p->D};
    gin[0] = vt_cuda_zeros(VT_F32, 2, shape);
    if (!gin[0]) return vt_error_code();
    if (gout->numel == 0) return VT_OK;
    embedding_backward_kernel<<<vt_grid_1d(gout->numel), 256>>>(vt_f32(gout), vt_i64(nd->saved[0]), vt_f32(gin[0]),
                                                                p->D, gout->numel);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

// ---- gather_rows -------------------------------------------------------------------------
// x [B, L, D], index [B] -> out [B, D] = x[b, index[b], :]
__global__ void gather_forward_kernel(const float *x, const int64_t *idx, float *out, long long L, long long D,
                                      long long n) {
    VT_GRID_STRIDE(e, n) {
        const long long b = e / D;
        out[e] = x[(b * L + idx[b]) * D + e % D];
    }
}

// g [B, D] -> dx [B, L, D] (zeroed): g at row index[b] (distinct per b: no collisions)
__global__ void gather_backward_kernel(const float *g, const int64_t *idx, float *dx, long long L, long long D,
                                       long long n) {
    VT_GRID_STRIDE(e, n) {
        const long long b = e / D;
        dx[(b * L + idx[b]) * D + e % D] = g[e];
    }
}

static vt_err gather_forward_cuda(vt_node *nd, vt_tensor *const *in, vt_tensor *out) {
    const vt_gather_params *p = (const vt_gather_params *)nd->params;
    if (check_indices_cuda("gather_rows", "index", in[1], p->L, "L")) return vt_error_code();
    if (out->numel == 0) return VT_OK;
    gather_forward_kernel<<<vt_grid_1d(out->numel), 256>>>(vt_f32(in[0]), vt_i64(in[1]), vt_f32(out), p->L, p->D,
                                                           out->numel);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

// saved: index (the save mask's input 1)
static vt_err gather_backward_cuda(vt_node *nd, const vt_tensor *gout, vt_tensor **gin) {
    if (!nd->need[0]) return VT_OK;
    const vt_gather_params *p = (const vt_gather_params *)nd->params;
    const int64_t shape[3] = {p->B, p->L, p->D};
    gin[0] = vt_cuda_zeros(VT_F32, 3, shape);
    if (!gin[0]) return vt_error_code();
    if (gout->numel == 0) return VT_OK;
    gather_backward_kernel<<<vt_grid_1d(gout->numel), 256>>>(vt_f32(gout), vt_i64(nd->saved[0]), vt_f32(gin[0]), p->L,
                                                             p->D, gout->numel);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

// ---- upsample_nearest2x ------------------------------------------------------------------
// x [P, H, W] -> y [P, 2H, 2W], y[p, y, x] = x[p, y / 2, x / 2]
__global__ void upsample2x_forward_kernel(const float *x, float *y, long long H, long long W, long long n) {
    VT_GRID_STRIDE(e, n) {
        const long long ox = e % (2 * W), oy = e / (2 * W) % (2 * H), p = e / (4 * H * W);
        y[e] = x[(p * H + oy / 2) * W + ox / 2];
    }
}

// g [P, 2H, 2W] -> dx [P, H, W]: the four outputs of each input, summed as on the CPU
__global__ void upsample2x_backward_kernel(const float *g, float *dx, long long H, long long W, long long n) {
    VT_GRID_STRIDE(e, n) {
        const long long j = e % W, i = e / W % H, p = e / (H * W);
        const float *g0 = g + (p * 2 * H + 2 * i) * 2 * W, *g1 = g0 + 2 * W;
        dx[e] = (g0[2 * j] + g0[2 * j + 1]) + (g1[2 * j] + g1[2 * j + 1]);
    }
}

static vt_err upsample2x_forward_cuda(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    (void)n;
    if (out->numel == 0) return VT_OK;
    upsample2x_forward_kernel<<<vt_grid_1d(out->numel), 256>>>(vt_f32(in[0]), vt_f32(out), in[0]->shape[2],
                                                               in[0]->shape[3], out->numel);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

static vt_err upsample2x_backward_cuda(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    if (!n->need[0]) return VT_OK;
    gin[0] = vt_empty(VT_F32, VT_CUDA, n->in_ndim[0], n->in_shape[0]);
    if (!gin[0]) return vt_error_code();
    if (gin[0]->numel == 0) return VT_OK;
    upsample2x_backward_kernel<<<vt_grid_1d(gin[0]->numel), 256>>>(vt_f32(gout), vt_f32(gin[0]), n->in_shape[0][2],
                                                                   n->in_shape[0][3], gin[0]->numel);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

// ---- reduce (sum / mean) -----------------------------------------------------------------
// x [outer, n, inner] -> out [outer, inner] = scale * sum over n (double accumulation).
// inner == 1 (sum of everything, or of a last dim): one block per output, a block reduction
// over the contiguous n; otherwise one thread per output walking n with stride inner
// (coalesced across the threads).
__global__ void reduce_rows_kernel(const float *x, float *out, long long n, float scale) {
    const float *xr = x + (long long)blockIdx.x * n;
    double s = 0;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) s += xr[j];
    s = vt_block_sum(s);
    if (threadIdx.x == 0) out[blockIdx.x] = (float)(s * scale);
}

__global__ void reduce_strided_kernel(const float *x, float *out, long long n, long long inner, long long total,
                                      float scale) {
    VT_GRID_STRIDE(e, total) {
        const long long a = e / inner, c = e % inner;
        double s = 0;
        for (long long b = 0; b < n; b++) s += x[(a * n + b) * inner + c];
        out[e] = (float)(s * scale);
    }
}

// g [outer, inner] -> dx [outer, n, inner] = g broadcast over n, times scale
__global__ void reduce_backward_kernel(const float *g, float *dx, long long n, long long inner, long long total,
                                       float scale) {
    VT_GRID_STRIDE(e, total) dx[e] = g[e / (n * inner) * inner + e % inner] * scale;
}

static vt_err reduce_forward_cuda(vt_node *nd, vt_tensor *const *in, vt_tensor *out) {
    const vt_reduce_params *p = (const vt_reduce_params *)nd->params;
    const int64_t total = p->outer * p->inner;
    if (total == 0) return VT_OK;
    if (p->inner == 1) {
        unsigned grid = 0;
        if (vt_cuda_rows_grid("reduce", p->outer, &grid)) return vt_error_code();
        reduce_rows_kernel<<<grid, 256>>>(vt_f32(in[0]), vt_f32(out), p->n, p->scale);
    } else {
        reduce_strided_kernel<<<vt_grid_1d(total), 256>>>(vt_f32(in[0]), vt_f32(out), p->n, p->inner, total, p->scale);
    }
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

static vt_err reduce_backward_cuda(vt_node *nd, const vt_tensor *gout, vt_tensor **gin) {
    const vt_reduce_params *p = (const vt_reduce_params *)nd->params;
    if (!nd->need[0]) return VT_OK;
    gin[0] = vt_empty(VT_F32, VT_CUDA, nd->in_ndim[0], nd->in_shape[0]);
    if (!gin[0]) return vt_error_code();
    if (gin[0]->numel == 0) return VT_OK;
    reduce_backward_kernel<<<vt_grid_1d(gin[0]->numel), 256>>>(vt_f32(gout), vt_f32(gin[0]), p->n, p->inner,
                                                               gin[0]->numel, p->scale);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

extern "C" vt_err vt_cuda_register_shape(void) {
    struct {
        const char *name;
        vt_forward_fn f;
        vt_backward_fn b;
    } const ops[] = {
        {"permute", permute_forward_cuda, permute_backward_cuda},
        {"concat", concat_forward_cuda, concat_backward_cuda},
        {"slice", slice_forward_cuda, slice_backward_cuda},
        {"repeat_interleave", repeat_forward_cuda, repeat_backward_cuda},
        {"embedding", embedding_forward_cuda, embedding_backward_cuda},
        {"gather_rows", gather_forward_cuda, gather_backward_cuda},
        {"upsample_nearest2x", upsample2x_forward_cuda, upsample2x_backward_cuda},
        {"reduce", reduce_forward_cuda, reduce_backward_cuda},
    };
    for (const auto &o : ops)
        if (vt_register_kernels(o.name, VT_CUDA, o.f, o.b)) return vt_error_code();
    return VT_OK;
}
