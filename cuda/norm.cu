// norm.cu — group norm, layer norm and L2 normalisation, forward and backward side by side,
// under the op names of core/ops/norm.c. As there, group and layer norm share one kernel pair
// on x seen as [N, C, S] with statistics per (n, group) over Cg*S contiguous elements, the
// statistics are two-pass in double (mean, then centred squares; biased variance) and nothing
// beyond x and w is saved: the backward recomputes mean / rstd from x.
// One block per group / row with block reductions. (A group of a video UNet norm holds
// Cg * T*H*W elements with few groups: splitting a group over several blocks is the first
// performance step when it matters.)
#include "cuda/common.cuh"
#include "core/ops/params.h"

#define NORM_THREADS 256

// ---- statistics --------------------------------------------------------------------------
// x [NG, M] (groups contiguous) -> mean, rstd [NG] in double: one block per group
template <typename T> __global__ void norm_stats_kernel(const T *x, long long M, float eps, double *mean, double *rstd) {
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
        mean[blockIdx.x] = mu;
        rstd[blockIdx.x] = 1.0 / sqrt(ss / (double)M + (double)eps);
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
    sg = vt_block_sum(sg) / (double)M;
    sgx = vt_block_sum(sgx) / (double)M;
    for (long long i = threadIdx.x; i < M; i += blockDim.x) {
        const double wc = w ? (double)w[c0 + i / p.S] : 1.0;
        const double xh = (vt_ld(x + base + i) - mu) * rs;
        vt_st(dx + base + i, (float)(rs * (vt_ld(g + base + i) * wc - sg - xh * sgx)));
    }
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
    norm_stats_kernel<float><<<grid, NORM_THREADS>>>(x, M, p->eps, *mean, *rstd);
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

// saved: x [N, C, S], w [C] or NULL (the save mask's inputs 0, 1)
static vt_err norm_backward_cuda(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const vt_norm_params *p = (const vt_norm_params *)n->params;
    const float *x = vt_f32(n->saved[0]), *g = vt_f32(gout);
    const float *w = n->saved[1] ? vt_f32(n->saved[1]) : nullptr;
    const int64_t c_shape[1] = {p->C};
    for (int i = 0; i < 3; i++) {
        if (!n->need[i]) continue;
        gin[i] = i == 0 ? vt_empty(VT_F32, VT_CUDA, n->in_ndim[0], n->in_shape[0])
                        : vt_cuda_zeros(VT_F32, 1, c_shape);  // zeros: stays right when N*S == 0
        if (!gin[i]) return vt_error_code();
    }
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
        vt_register_kernels("l2_normalize", VT_CUDA, l2n_forward_cuda, l2n_backward_cuda))
        return vt_error_code();
    return VT_OK;
}
