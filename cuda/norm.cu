// norm.cu — group norm, layer norm, group norm + SiLU and L2 normalisation, forward and backward
// side by side, under the op names of core/ops/norm.c. As there, group and layer norm share one
// kernel pair on x seen as [N, C, S] with statistics per (n, group) over Cg*S contiguous
// elements, the statistics are two-pass in double (mean, then centred squares; biased
// variance) and nothing beyond x and w is saved: the backward recomputes mean / rstd from x.
// group_norm_silu keeps the statistics it computed (packed f32, see below) besides x, w, b.
// One block per group / row with block reductions. (A group of a video UNet norm holds
// Cg * T*H*W elements with few groups: splitting a group over several blocks is the first
// performance step when it matters.)
#include "cuda/common.cuh"
#include "core/ops/params.h"

#define NORM_THREADS 256

// ---- statistics --------------------------------------------------------------------------
// (mean, rstd) in double -> group_norm_silu's saved f32 triple (mean_hi, mean_lo, rstd), as
// core/ops/norm.c packs it: mean_hi + mean_lo keeps x - mean exact for a large mean.
__device__ __forceinline__ void gns_pack_stats(float *st, double mean, double rstd) {
    st[0] = (float)mean;
    st[1] = (float)(mean - (double)st[0]);
    st[2] = (float)rstd;
}

// x [NG, M] (groups contiguous) -> mean, rstd [NG] in double (when not NULL) and / or the packed
// stats [NG, 3] (when not NULL): one block per group
template <typename T>
__global__ void norm_stats_kernel(const T *x, long long M, float eps, double *mean, double *rstd, float *packed) {
    const T *xg = x + (long long)blockIdx.x * M;
    double s = 0;
    for (long long i = threadIdx.x; i < M; i += blockDim.x) s += vt_ld(xg + i);
    const double mu = vt_block_sum(s) / (double)M;
    double ss = 0;
    for (long long i = threadIdx.x; i < M; i += blockDim.x) {
        const double d = vt_ld(xg + i) - mu;
        ss += d * d;
    }
    ss = vt_block_sum(ss);
    if (threadIdx.x == 0) {
        const double rs = 1.0 / sqrt(ss / (double)M + (double)eps);
        if (mean) {
            mean[blockIdx.x] = mu;
            rstd[blockIdx.x] = rs;
        }
        if (packed) gns_pack_stats(packed + 3 * (long long)blockIdx.x, mu, rs);
    }
}

// ---- group_norm / layer_norm -------------------------------------------------------------
// x [N, C, S], w, b [C] or NULL, mean / rstd [N*G] -> y [N, C, S] = (x - mean) rstd w[c] + b[c]
template <typename T>
__global__ void norm_forward_kernel(vt_norm_params p, const T *x, const float *w, const float *b, const double *mean,
                                    const double *rstd, T *y, long long total) {
    const long long Cg = p.C / p.G;
    VT_GRID_STRIDE(i, total) {
        const long long c = i / p.S % p.C, ng = i / (Cg * p.S);
        const double a = rstd[ng] * (w ? (double)w[c] : 1.0), sh = (b ? (double)b[c] : 0.0) - mean[ng] * a;
        vt_st(y + i, (float)(vt_ld(x + i) * a + sh));
    }
}

// The group norm backward's reduction and dx on group ng (one block, all threads call it), shared
// by group_norm and group_norm_silu: sg, sgx are this thread's partial sums of gy = g w[c] and
// gy xh, xh = (x - mean) rstd, over its elements of the group's M = Cg*S;
//   dx = rstd (gy - mean(gy) - xh mean(gy xh)).
// g may be dx itself (group_norm_silu parks gz there): each thread rereads only its own elements.
template <typename T>
__device__ void norm_group_backward_dx(const vt_norm_params &p, long long ng, const T *g, const T *x, const float *w,
                                       double mu, double rs, double sg, double sgx, T *dx) {
    const long long Cg = p.C / p.G, M = Cg * p.S, c0 = ng % p.G * Cg, base = ng * M;
    sg = vt_block_sum(sg) / (double)M;
    sgx = vt_block_sum(sgx) / (double)M;
    for (long long i = threadIdx.x; i < M; i += blockDim.x) {
        const double wc = w ? (double)w[c0 + i / p.S] : 1.0;
        const double xh = (vt_ld(x + base + i) - mu) * rs;
        vt_st(dx + base + i, (float)(rs * (vt_ld(g + base + i) * wc - sg - xh * sgx)));
    }
}

// g [N, C, S], saved x [N, C, S], w [C] or NULL -> dx; one block per group of M = Cg*S elements.
// xh = (x - mean) rstd, gy = g w[c]:  dx = rstd (gy - mean(gy) - xh mean(gy xh))
template <typename T>
__global__ void norm_backward_dx_kernel(vt_norm_params p, const T *g, const T *x, const float *w, const double *mean,
                                        const double *rstd, T *dx) {
    const long long Cg = p.C / p.G, M = Cg * p.S, ng = blockIdx.x, c0 = ng % p.G * Cg, base = ng * M;
    const double mu = mean[ng], rs = rstd[ng];
    double sg = 0, sgx = 0;
    for (long long i = threadIdx.x; i < M; i += blockDim.x) {
        const double wc = w ? (double)w[c0 + i / p.S] : 1.0;
        const double gy = vt_ld(g + base + i) * wc;
        sg += gy;
        sgx += gy * (vt_ld(x + base + i) - mu) * rs;
    }
    norm_group_backward_dx(p, ng, g, x, w, mu, rs, sg, sgx, dx);
}

// g, x [N, C, S] -> dw[c] = sum_{n,s} g xh, db[c] = sum_{n,s} g (either may be NULL); one block
// per channel. Only runs when a norm's affine parameters want gradients (frozen in VADER).
template <typename T>
__global__ void norm_backward_affine_kernel(vt_norm_params p, const T *g, const T *x, const double *mean,
                                            const double *rstd, float *dw, float *db) {
    const long long c = blockIdx.x, Cg = p.C / p.G, NS = p.N * p.S;
    double sw = 0, sb = 0;
    for (long long k = threadIdx.x; k < NS; k += blockDim.x) {
        const long long n = k / p.S, s = k % p.S, ng = n * p.G + c / Cg, off = (n * p.C + c) * p.S + s;
        const double gv = vt_ld(g + off);
        sw += gv * (vt_ld(x + off) - mean[ng]) * rstd[ng];
        sb += gv;
    }
    sw = vt_block_sum(sw);
    sb = vt_block_sum(sb);
    if (threadIdx.x == 0) {
        if (dw) dw[c] = (float)sw;
        if (db) db[c] = (float)sb;
    }
}

// mean / rstd [NG] of x into one scratch tensor (2 NG doubles, as f32 pairs)
static vt_err norm_stats(const vt_norm_params *p, const float *x, vt_tensor **stats, double **mean, double **rstd) {
    const int64_t NG = p->N * p->G, M = p->C / p->G * p->S;
    *stats = vt_cuda_scratch(VT_F32, 4 * NG);  // 2 * NG doubles
    if (!*stats) return vt_error_code();
    *mean = (double *)vt_data(*stats);
    *rstd = *mean + NG;
    if (NG == 0 || M == 0) return VT_OK;
    unsigned grid = 0;
    if (vt_cuda_rows_grid("norm", NG, &grid)) return vt_error_code();
    norm_stats_kernel<float><<<grid, NORM_THREADS>>>(x, M, p->eps, *mean, *rstd, nullptr);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

static vt_err norm_forward_cuda(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const vt_norm_params *p = (const vt_norm_params *)n->params;
    if (out->numel == 0) return VT_OK;
    vt_tensor *stats = NULL;
    double *mean, *rstd;
    vt_err e = norm_stats(p, vt_f32(in[0]), &stats, &mean, &rstd);
    if (e == VT_OK) {
        norm_forward_kernel<float><<<vt_grid_1d(out->numel), 256>>>(
            *p, vt_f32(in[0]), in[1] ? vt_f32(in[1]) : nullptr, in[2] ? vt_f32(in[2]) : nullptr, mean, rstd,
            vt_f32(out), out->numel);
        cudaError_t ce = cudaGetLastError();
        if (ce != cudaSuccess) e = vt_error(VT_ERR_DEVICE, "norm forward launch: %s", cudaGetErrorString(ce));
    }
    vt_release(stats);
    return e;
}

// The gradients the backward of group_norm / group_norm_silu fills, for the inputs that want one:
// dx like x, dw / db [C] zero-filled (they stay right when N*S == 0).
static vt_err norm_alloc_grads(vt_node *n, int64_t C, vt_tensor **gin) {
    const int64_t c_shape[1] = {C};
    for (int i = 0; i < 3; i++) {
        if (!n->need[i]) continue;
        gin[i] = i == 0 ? vt_empty(VT_F32, VT_CUDA, n->in_ndim[0], n->in_shape[0]) : vt_cuda_zeros(VT_F32, 1, c_shape);
        if (!gin[i]) return vt_error_code();
    }
    return VT_OK;
}

// saved: x [N, C, S], w [C] or NULL (the save mask's inputs 0, 1)
static vt_err norm_backward_cuda(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const vt_norm_params *p = (const vt_norm_params *)n->params;
    const float *x = vt_f32(n->saved[0]), *g = vt_f32(gout);
    const float *w = n->saved[1] ? vt_f32(n->saved[1]) : nullptr;
    if (norm_alloc_grads(n, p->C, gin)) return vt_error_code();
    if (gout->numel == 0) return VT_OK;
    vt_tensor *stats = NULL;
    double *mean, *rstd;
    vt_err e = norm_stats(p, x, &stats, &mean, &rstd);
    if (e == VT_OK && n->need[0]) {
        unsigned grid = 0;
        if ((e = vt_cuda_rows_grid("norm", p->N * p->G, &grid)) == VT_OK) {
            norm_backward_dx_kernel<float><<<grid, NORM_THREADS>>>(*p, g, x, w, mean, rstd, vt_f32(gin[0]));
            cudaError_t ce = cudaGetLastError();
            if (ce != cudaSuccess) e = vt_error(VT_ERR_DEVICE, "norm backward launch: %s", cudaGetErrorString(ce));
        }
    }
    if (e == VT_OK && (n->need[1] || n->need[2])) {
        unsigned grid = 0;
        if ((e = vt_cuda_rows_grid("norm", p->C, &grid)) == VT_OK) {
            norm_backward_affine_kernel<float><<<grid, NORM_THREADS>>>(*p, g, x, mean, rstd,
                                                                       n->need[1] ? vt_f32(gin[1]) : nullptr,
                                                                       n->need[2] ? vt_f32(gin[2]) : nullptr);
            cudaError_t ce = cudaGetLastError();
            if (ce != cudaSuccess) e = vt_error(VT_ERR_DEVICE, "norm backward launch: %s", cudaGetErrorString(ce));
        }
    }
    vt_release(stats);
    return e;
}

// ---- group_norm_silu ---------------------------------------------------------------------
// y = silu(z), z = (x - mean) rstd w[c] + b[c], as core/ops/norm.c: saves x, w, b and the packed
// stats [N, G, 3] (not the norm's output); the backward recomputes z from them. Forward and
// backward read the same rounded statistics, so both see one z.

// z of element v in channel c of group ng (the CPU's expression, in double then rounded)
__device__ __forceinline__ float gns_z(float v, const float *st, long long ng, const float *w, const float *b,
                                       long long c) {
    const double mu = (double)st[3 * ng] + st[3 * ng + 1], a = st[3 * ng + 2] * (w ? (double)w[c] : 1.0);
    return (float)(v * a + ((b ? (double)b[c] : 0.0) - mu * a));
}

// g silu'(z), with activation.cu's sigmoid (common.cuh)
__device__ __forceinline__ float gns_gz(float g, float z) { return g * vt_silu_grad(z); }

// x [N, C, S], w, b [C] or NULL, stats [N, G, 3] -> y [N, C, S] = silu(z)
template <typename T>
__global__ void gns_forward_kernel(vt_norm_params p, const T *x, const float *w, const float *b, const float *st, T *y,
                                   long long total) {
    const long long Cg = p.C / p.G;
    VT_GRID_STRIDE(i, total) {
        const long long c = i / p.S % p.C, ng = i / (Cg * p.S);
        const float z = gns_z(vt_ld(x + i), st, ng, w, b, c);
        vt_st(y + i, z * vt_sigmoid_stable(z));
    }
}

// g [N, C, S], saved x [N, C, S], w, b [C] or NULL, stats [N, G, 3] -> dx; one block per group of
// M = Cg*S elements. gz = g silu'(z), xh = (x - mean) rstd:
//   dx = rstd (gz w[c] - mean(gz w) - xh mean(gz w xh))
// The first pass parks gz in dx; norm_group_backward_dx turns it into dx in place.
template <typename T>
__global__ void gns_backward_dx_kernel(vt_norm_params p, const T *g, const T *x, const float *w, const float *b,
                                       const float *st, T *dx) {
    const long long Cg = p.C / p.G, M = Cg * p.S, ng = blockIdx.x, c0 = ng % p.G * Cg, base = ng * M;
    const double mu = (double)st[3 * ng] + st[3 * ng + 1], rs = st[3 * ng + 2];
    double sg = 0, sgx = 0;
    for (long long i = threadIdx.x; i < M; i += blockDim.x) {
        const long long c = c0 + i / p.S;
        const float xv = vt_ld(x + base + i), gz = gns_gz(vt_ld(g + base + i), gns_z(xv, st, ng, w, b, c));
        const double gy = (double)gz * (w ? (double)w[c] : 1.0);
        vt_st(dx + base + i, gz);
        sg += gy;
        sgx += gy * (xv - mu) * rs;
    }
    norm_group_backward_dx(p, ng, (const T *)dx, x, w, mu, rs, sg, sgx, dx);
}

// g, x [N, C, S] -> dw[c] = sum_{n,s} gz xh, db[c] = sum_{n,s} gz (either may be NULL); one block
// per channel, gz recomputed. Only runs when the affine parameters want gradients.
template <typename T>
__global__ void gns_backward_affine_kernel(vt_norm_params p, const T *g, const T *x, const float *w, const float *b,
                                           const float *st, float *dw, float *db) {
    const long long c = blockIdx.x, Cg = p.C / p.G, NS = p.N * p.S;
    double sw = 0, sb = 0;
    for (long long k = threadIdx.x; k < NS; k += blockDim.x) {
        const long long n = k / p.S, s = k % p.S, ng = n * p.G + c / Cg, off = (n * p.C + c) * p.S + s;
        const float xv = vt_ld(x + off), gz = gns_gz(vt_ld(g + off), gns_z(xv, st, ng, w, b, c));
        sw += (double)gz * (xv - ((double)st[3 * ng] + st[3 * ng + 1])) * st[3 * ng + 2];
        sb += gz;
    }
    sw = vt_block_sum(sw);
    sb = vt_block_sum(sb);
    if (threadIdx.x == 0) {
        if (dw) dw[c] = (float)sw;
        if (db) db[c] = (float)sb;
    }
}

// statistics into st [N, G, 3], then y
static vt_err gns_forward_launch(const vt_norm_params *p, const float *x, const float *w, const float *b, float *st,
                                 float *y, long long total) {
    if (total == 0) return VT_OK;
    unsigned grid = 0;
    if (vt_cuda_rows_grid("group_norm_silu", p->N * p->G, &grid)) return vt_error_code();
    norm_stats_kernel<float><<<grid, NORM_THREADS>>>(x, p->C / p->G * p->S, p->eps, nullptr, nullptr, st);
    VT_CUDA_CHECK_LAUNCH();
    gns_forward_kernel<float><<<vt_grid_1d(total), 256>>>(*p, x, w, b, st, y, total);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

static vt_err gns_forward_cuda(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const vt_norm_params *p = (const vt_norm_params *)n->params;
    const int64_t st_shape[3] = {p->N, p->G, 3};
    vt_tensor *stats = vt_empty(VT_F32, VT_CUDA, 3, st_shape);
    if (!stats) return vt_error_code();
    vt_err e = gns_forward_launch(p, vt_f32(in[0]), in[1] ? vt_f32(in[1]) : nullptr, in[2] ? vt_f32(in[2]) : nullptr,
                                  vt_f32(stats), vt_f32(out), out->numel);
    if (e == VT_OK && n->recording) n->saved[n->n_saved++] = stats;
    else vt_release(stats);
    return e;
}

// saved: x [N, C, S], w, b [C] or NULL (the save mask's inputs 0-2), stats [N, G, 3] (extra)
static vt_err gns_backward_cuda(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const vt_norm_params *p = (const vt_norm_params *)n->params;
    const float *x = vt_f32(n->saved[0]), *g = vt_f32(gout), *st = vt_f32(n->saved[3]);
    const float *w = n->saved[1] ? vt_f32(n->saved[1]) : nullptr, *b = n->saved[2] ? vt_f32(n->saved[2]) : nullptr;
    if (norm_alloc_grads(n, p->C, gin)) return vt_error_code();
    if (gout->numel == 0) return VT_OK;
    unsigned grid = 0;
    if (n->need[0]) {
        if (vt_cuda_rows_grid("group_norm_silu", p->N * p->G, &grid)) return vt_error_code();
        gns_backward_dx_kernel<float><<<grid, NORM_THREADS>>>(*p, g, x, w, b, st, vt_f32(gin[0]));
        VT_CUDA_CHECK_LAUNCH();
    }
    if (n->need[1] || n->need[2]) {
        if (vt_cuda_rows_grid("group_norm_silu", p->C, &grid)) return vt_error_code();
        gns_backward_affine_kernel<float><<<grid, NORM_THREADS>>>(*p, g, x, w, b, st,
                                                                  n->need[1] ? vt_f32(gin[1]) : nullptr,
                                                                  n->need[2] ? vt_f32(gin[2]) : nullptr);
        VT_CUDA_CHECK_LAUNCH();
    }
    return VT_OK;
}

// ---- l2_normalize ------------------------------------------------------------------------
// x [M, C] -> y = x / max(||x||, eps) per row (norm in double); one block per row
template <typename T> __global__ void l2n_forward_kernel(const T *x, T *y, long long C, float eps) {
    const T *xr = x + (long long)blockIdx.x * C;
    T *yr = y + (long long)blockIdx.x * C;
    double s = 0;
    for (long long i = threadIdx.x; i < C; i += blockDim.x) {
        const double v = vt_ld(xr + i);
        s += v * v;
    }
    const double nrm = sqrt(vt_block_sum(s)), d = nrm > eps ? nrm : (double)eps;
    for (long long i = threadIdx.x; i < C; i += blockDim.x) vt_st(yr + i, (float)(vt_ld(xr + i) / d));
}

// g, saved x [M, C]: ||x|| >= eps: dx = (g - y (g . y)) / ||x||, y = x / ||x||; below: dx = g / eps
template <typename T> __global__ void l2n_backward_kernel(const T *g, const T *x, T *dx, long long C, float eps) {
    const long long off = (long long)blockIdx.x * C;
    double s = 0;
    for (long long i = threadIdx.x; i < C; i += blockDim.x) {
        const double v = vt_ld(x + off + i);
        s += v * v;
    }
    const double nrm = sqrt(vt_block_sum(s));
    if (nrm >= eps) {
        double dot = 0;
        for (long long i = threadIdx.x; i < C; i += blockDim.x) dot += vt_ld(g + off + i) * (vt_ld(x + off + i) / nrm);
        dot = vt_block_sum(dot);
        for (long long i = threadIdx.x; i < C; i += blockDim.x)
            vt_st(dx + off + i, (float)((vt_ld(g + off + i) - vt_ld(x + off + i) / nrm * dot) / nrm));
    } else {
        for (long long i = threadIdx.x; i < C; i += blockDim.x)
            vt_st(dx + off + i, (float)(vt_ld(g + off + i) / (double)eps));
    }
}

static vt_err l2n_forward_cuda(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const vt_l2n_params *p = (const vt_l2n_params *)n->params;
    if (out->numel == 0) return VT_OK;
    unsigned grid = 0;
    if (vt_cuda_rows_grid("l2_normalize", p->M, &grid)) return vt_error_code();
    l2n_forward_kernel<float><<<grid, NORM_THREADS>>>(vt_f32(in[0]), vt_f32(out), p->C, p->eps);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

static vt_err l2n_backward_cuda(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const vt_l2n_params *p = (const vt_l2n_params *)n->params;
    if (!n->need[0]) return VT_OK;
    gin[0] = vt_empty(VT_F32, VT_CUDA, n->in_ndim[0], n->in_shape[0]);
    if (!gin[0]) return vt_error_code();
    if (gout->numel == 0) return VT_OK;
    unsigned grid = 0;
    if (vt_cuda_rows_grid("l2_normalize", p->M, &grid)) return vt_error_code();
    l2n_backward_kernel<float><<<grid, NORM_THREADS>>>(vt_f32(gout), vt_f32(n->saved[0]), vt_f32(gin[0]), p->C, p->eps);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

extern "C" vt_err vt_cuda_register_norm(void) {
    if (vt_register_kernels("group_norm", VT_CUDA, norm_forward_cuda, norm_backward_cuda) ||
        vt_register_kernels("layer_norm", VT_CUDA, norm_forward_cuda, norm_backward_cuda) ||
        vt_register_kernels("group_norm_silu", VT_CUDA, gns_forward_cuda, gns_backward_cuda) ||
        vt_register_kernels("l2_normalize", VT_CUDA, l2n_forward_cuda, l2n_backward_cuda))
        return vt_error_code();
    return VT_OK;
}
