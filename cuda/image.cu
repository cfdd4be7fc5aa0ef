// image.cu — reward preprocessing: per-channel normalisation and cosine similarity, forward and
// backward side by side, under the op names of core/ops/image.c (resize is in resize.cu; the
// timestep embedding is a host-only function, not an op). Same formulas as the CPU kernels,
// row sums in double.
#include "cuda/common.cuh"
#include "core/ops/params.h"
#include <math.h>

// ---- normalize_channels ------------------------------------------------------------------
// x [N, C, HW] -> y = (x - mean[c]) / std[c]   (the params struct travels by value)
__global__ void normalize_forward_kernel(vt_normalize_params p, const float *x, float *y, long long HW, long long n) {
    VT_GRID_STRIDE(e, n) {
        const int c = (int)(e / HW % p.C);
        y[e] = (x[e] - p.mean[c]) / p.std[c];
    }
}

// g [N, C, HW] -> dx = g / std[c]
__global__ void normalize_backward_kernel(vt_normalize_params p, const float *g, float *dx, long long HW, long long n) {
    VT_GRID_STRIDE(e, n) dx[e] = g[e] / p.std[(int)(e / HW % p.C)];
}

static vt_err normalize_forward_cuda(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const vt_normalize_params *p = (const vt_normalize_params *)n->params;
    if (out->numel == 0) return VT_OK;
    normalize_forward_kernel<<<vt_grid_1d(out->numel), 256>>>(*p, vt_f32(in[0]), vt_f32(out),
                                                              out->shape[2] * out->shape[3], out->numel);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

static vt_err normalize_backward_cuda(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const vt_normalize_params *p = (const vt_normalize_params *)n->params;
    if (!n->need[0]) return VT_OK;
    gin[0] = vt_empty(VT_F32, VT_CUDA, gout->ndim, gout->shape);
    if (!gin[0]) return vt_error_code();
    if (gout->numel == 0) return VT_OK;
    normalize_backward_kernel<<<vt_grid_1d(gout->numel), 256>>>(*p, vt_f32(gout), vt_f32(gin[0]),
                                                                gout->shape[2] * gout->shape[3], gout->numel);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

// ---- cosine_similarity -------------------------------------------------------------------
// Row sums x.x, y.y, x.y of a, b [M, D] in double; every thread of the block gets them.
__device__ void cosine_row_sums(const float *x, const float *y, long long D, double *xx, double *yy, double *xy) {
    double sxx = 0, syy = 0, sxy = 0;
    for (long long i = threadIdx.x; i < D; i += blockDim.x) {
        const double a = x[i], b = y[i];
        sxx += a * a;
        syy += b * b;
        sxy += a * b;
    }
    *xx = vt_block_sum(sxx);
    *yy = vt_block_sum(syy);
    *xy = vt_block_sum(sxy);
}

// a, b [M, D] -> out [M] = x.y / (max(|x|, eps) max(|y|, eps)); one block per row
__global__ void cosine_forward_kernel(const float *a, const float *b, float *out, long long D, float eps) {
    const long long off = (long long)blockIdx.x * D;
    double xx, yy, xy;
    cosine_row_sums(a + off, b + off, D, &xx, &yy, &xy);
    if (threadIdx.x == 0) {
        const double na = fmax(sqrt(xx), (double)eps), nb = fmax(sqrt(yy), (double)eps);
        out[blockIdx.x] = (float)(xy / (na * nb));
    }
}

// g [M]; saved a, b [M, D] -> da = g (b / (na nb) - cos / (na |a|) a), db symmetric (0 / 0
// terms of a zero row dropped as on the CPU); either output may be NULL
__global__ void cosine_backward_kernel(const float *g, const float *a, const float *b, float *da, float *db,
                                       long long D, float eps) {
    const long long off = (long long)blockIdx.x * D;
    const float *x = a + off, *y = b + off;
    double xx, yy, xy;
    cosine_row_sums(x, y, D, &xx, &yy, &xy);
    const double ra = sqrt(xx), rb = sqrt(yy);
    const double na = fmax(ra, (double)eps), nb = fmax(rb, (double)eps);
    const double cs = xy / (na * nb), gm = g[blockIdx.x];
    const double ka = ra > 0 ? cs / (na * ra) : 0, kb = rb > 0 ? cs / (nb * rb) : 0;
    for (long long i = threadIdx.x; i < D; i += blockDim.x) {
        if (da) da[off + i] = (float)(gm * (y[i] / (na * nb) - ka * x[i]));
        if (db) db[off + i] = (float)(gm * (x[i] / (na * nb) - kb * y[i]));
    }
}

static vt_err cosine_forward_cuda(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const vt_cosine_params *p = (const vt_cosine_params *)n->params;
    const int64_t D = vt_dim(in[0], -1), M = out->numel;
    if (M == 0) return VT_OK;
    unsigned grid = 0;
    if (vt_cuda_rows_grid("cosine_similarity", M, &grid)) return vt_error_code();
    cosine_forward_kernel<<<grid, 256>>>(vt_f32(in[0]), vt_f32(in[1]), vt_f32(out), D, p->eps);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

// saved: a, b (the save mask's inputs 0, 1)
static vt_err cosine_backward_cuda(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const vt_cosine_params *p = (const vt_cosine_params *)n->params;
    const vt_tensor *a = n->saved[0], *b = n->saved[1];
    const int64_t D = vt_dim(a, -1), M = gout->numel;
    for (int i = 0; i < 2; i++) {
        if (!n->need[i]) continue;
        gin[i] = vt_empty(VT_F32, VT_CUDA, n->in_ndim[i], n->in_shape[i]);
        if (!gin[i]) return vt_error_code();
    }
    if (M == 0 || D == 0) return VT_OK;
    unsigned grid = 0;
    if (vt_cuda_rows_grid("cosine_similarity", M, &grid)) return vt_error_code();
    cosine_backward_kernel<<<grid, 256>>>(vt_f32(gout), vt_f32(a), vt_f32(b), gin[0] ? vt_f32(gin[0]) : nullptr,
                                          gin[1] ? vt_f32(gin[1]) : nullptr, D, p->eps);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

extern "C" vt_err vt_cuda_register_image(void) {
    if (vt_register_kernels("normalize_channels", VT_CUDA, normalize_forward_cuda, normalize_backward_cuda) ||
        vt_register_kernels("cosine_similarity", VT_CUDA, cosine_forward_cuda, cosine_backward_cuda))
        return vt_error_code();
    return VT_OK;
}
