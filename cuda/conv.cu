// conv.cu — conv2d and conv_time on cuDNN (legacy convolution API: forward, backward data,
// backward filter), bias and its gradient by small kernels, under the op names of
// core/ops/conv.c. As on the CPU both ops are one 2-D convolution over [N, C, H, W] planes:
// conv_time is x [B, C, T, H*W] with kernel (kt, 1), padding (pad, 0), so cuDNN sees the same
// descriptors. Saved: x and w (the save mask); nothing extra. An optional residual (input 3,
// vt_conv2d_add / vt_conv_time_add) is added with the bias in one pass after the convolution:
// y = conv + (b + r) as the CPU's GEMM accumulates onto b + r; its gradient is a copy of g.
//
// Precision: the convolution descriptor asks for CUDNN_FMA_MATH, so FP32 convolutions never run
// on TF32 tensor cores (CUDNN_DEFAULT_MATH would allow TF32 on Ampere and later). Algorithms
// come from cuDNN's heuristics (the *_v7 queries), tried in order with the direct / GEMM-based
// ones first: one that does not support the descriptor or whose workspace cannot be allocated
// is skipped.
#include "cuda/common.cuh"
#include "core/ops/params.h"

// Descriptors of one convolution, destroyed on every return path.
struct conv_descs {
    cudnnTensorDescriptor_t x = nullptr, y = nullptr;
    cudnnFilterDescriptor_t w = nullptr;
    cudnnConvolutionDescriptor_t c = nullptr;
    ~conv_descs() {
        if (x) cudnnDestroyTensorDescriptor(x);
        if (y) cudnnDestroyTensorDescriptor(y);
        if (w) cudnnDestroyFilterDescriptor(w);
        if (c) cudnnDestroyConvolutionDescriptor(c);
    }
};

static vt_err conv_descs_init(const vt_conv_params *p, conv_descs *d) {
    const int64_t dims[] = {p->N, p->C, p->H, p->W, p->O, p->OH, p->OW};
    for (int64_t v : dims)
        if (v > 2147483647LL)
            return vt_error(VT_ERR_SHAPE, "conv: dimension %lld exceeds cuDNN's 32-bit sizes", (long long)v);
    // The legacy 4-D descriptors take int strides and the legacy convolutions refuse tensors of
    // 2^31 elements or more (CUDNN_STATUS_BAD_PARAM / NOT_SUPPORTED, which names nothing): say
    // which tensor is too large instead. The full-size shapes stay far below (conv_time of the
    // UNet: 2 x 320 x 16 x 64*64 = 42 M; the VAE's last level on 16 frames of 320 x 512: 335 M).
    const int64_t xn = p->N * p->C * p->H * p->W, yn = p->N * p->O * p->OH * p->OW;
    if (xn > 2147483647LL || yn > 2147483647LL)
        return vt_error(VT_ERR_SHAPE,
                        "conv: input [%lld, %lld, %lld, %lld] or output [%lld, %lld, %lld, %lld] has 2^31 elements or "
                        "more, beyond cuDNN's legacy convolution; decode / convolve fewer frames at once",
                        (long long)p->N, (long long)p->C, (long long)p->H, (long long)p->W, (long long)p->N,
                        (long long)p->O, (long long)p->OH, (long long)p->OW);
    VT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d->x));
    VT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d->y));
    VT_CUDNN_CHECK(cudnnCreateFilterDescriptor(&d->w));
    VT_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d->c));
    VT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(d->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)p->N, (int)p->C,
                                              (int)p->H, (int)p->W));
    VT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(d->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)p->N, (int)p->O,
                                              (int)p->OH, (int)p->OW));
    VT_CUDNN_CHECK(cudnnSetFilter4dDescriptor(d->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, (int)p->O, (int)p->C, p->kh,
                                              p->kw));
    VT_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(d->c, p->ph, p->pw, p->sh, p->sw, 1, 1, CUDNN_CROSS_CORRELATION,
                                                   CUDNN_DATA_FLOAT));
    VT_CUDNN_CHECK(cudnnSetConvolutionMathType(d->c, CUDNN_FMA_MATH));
    int n, c, h, w;  // cuDNN's output geometry must be the frontend's
    VT_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(d->c, d->x, d->w, &n, &c, &h, &w));
    if (n != p->N || c != p->O || h != p->OH || w != p->OW)
        return vt_error(VT_ERR_INTERNAL, "conv: cuDNN output [%d, %d, %d, %d] differs from [%lld, %lld, %lld, %lld]", n,
                        c, h, w, (long long)p->N, (long long)p->O, (long long)p->OH, (long long)p->OW);
    return VT_OK;
}

// Workspace of nbytes (NULL tensor for 0). Returns 0 and clears the error when it cannot be had,
// so the caller moves on to an algorithm that needs less.
static int conv_workspace(size_t nbytes, vt_tensor **ws) {
    *ws = NULL;
    if (nbytes == 0) return 1;
    *ws = vt_cuda_scratch(VT_F32, (int64_t)((nbytes + 3) / 4));
    if (!*ws) {
        vt_error_clear();
        return 0;
    }
    return 1;
}

// The FP32 reference path keeps to direct / GEMM-based algorithms: FFT and Winograd transforms
// lose a few more bits than the 1e-5 the CPU comparison allows. They stay a last resort.
static bool conv_algo_exact(cudnnConvolutionFwdAlgo_t a) {
    return a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM || a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ||
           a == CUDNN_CONVOLUTION_FWD_ALGO_GEMM || a == CUDNN_CONVOLUTION_FWD_ALGO_DIRECT;
}
static bool conv_algo_exact(cudnnConvolutionBwdDataAlgo_t a) {
    return a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 || a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
}
static bool conv_algo_exact(cudnnConvolutionBwdFilterAlgo_t a) {
    return a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 || a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 ||
           a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3;
}

// Runs `run(algo, workspace, bytes)` with the heuristics' algorithms in order (exact ones first,
// then the rest) until one runs; an algorithm that fails (not supported for the descriptors,
// workspace not available) is skipped. perf_t is the cuDNN perf struct of the pass, get_ws its
// workspace-size query.
template <typename perf_t, typename ws_fn, typename run_fn>
static vt_err conv_try_algos(const char *pass, const perf_t *perf, int count, ws_fn get_ws, run_fn run) {
    cudnnStatus_t last = CUDNN_STATUS_NOT_SUPPORTED;
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < count; i++) {
            if (perf[i].status != CUDNN_STATUS_SUCCESS || conv_algo_exact(perf[i].algo) != (round == 0)) continue;
            size_t bytes = 0;
            if (get_ws(perf[i].algo, &bytes) != CUDNN_STATUS_SUCCESS) continue;
            vt_tensor *ws;
            if (!conv_workspace(bytes, &ws)) continue;
            last = run(perf[i].algo, ws ? vt_data(ws) : nullptr, bytes);
            vt_release(ws);
            if (last == CUDNN_STATUS_SUCCESS) return VT_OK;
            // A refused algorithm can leave a (non-sticky) launch error behind; clear it, or the
            // next VT_CUDA_CHECK_LAUNCH (the bias kernel, an unrelated op) would report it as its own.
            (void)cudaGetLastError();
        }
    return vt_error(VT_ERR_DEVICE, "conv %s: no cuDNN algorithm ran (last status: %s)", pass, cudnnGetErrorString(last));
}

// ---- bias and residual -------------------------------------------------------------------
// y [N, O, L] += b[o] + r[i] (b or r NULL: that term absent)
__global__ void conv_bias_add_kernel(float *y, const float *b, const float *r, long long O, long long L,
                                     long long total) {
    VT_GRID_STRIDE(i, total) {
        const float bo = b ? b[i / L % O] : 0.0f;
        y[i] += r ? bo + r[i] : bo;
    }
}

// g [N, O, L] -> db[o] = sum_{n, l} g (double accumulation); one block per o
__global__ void conv_bias_grad_kernel(const float *g, float *db, long long N, long long O, long long L) {
    const long long o = blockIdx.x, NL = N * L;
    double s = 0;
    for (long long k = threadIdx.x; k < NL; k += blockDim.x) s += g[(k / L * O + o) * L + k % L];
    s = vt_block_sum(s);
    if (threadIdx.x == 0) db[o] = (float)s;
}

// ---- forward -----------------------------------------------------------------------------
// x [N, C, H, W], w [O, C, kh, kw], b [O] or NULL, r [N, O, OH, OW] or NULL -> y [N, O, OH, OW]
static vt_err conv_forward_cuda(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const vt_conv_params *p = (const vt_conv_params *)n->params;
    if (out->numel == 0) return VT_OK;
    if (in[0]->numel == 0 || in[1]->numel == 0) {  // empty reduction (C == 0): y = b
        VT_CUDA_CHECK(cudaMemsetAsync(vt_data(out), 0, vt_nbytes(out)));
    } else {
        cudnnHandle_t h;
        if (vt_cuda_cudnn(&h)) return vt_error_code();
        conv_descs d;
        if (conv_descs_init(p, &d)) return vt_error_code();
        cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        int count = 0;
        VT_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, d.x, d.w, d.c, d.y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                                              &count, perf));
        const float one = 1.0f, zero = 0.0f;
        const void *x = vt_data(in[0]), *w = vt_data(in[1]);
        void *y = vt_data(out);
        vt_err e = conv_try_algos(
            "forward", perf, count,
            [&](cudnnConvolutionFwdAlgo_t a, size_t *bytes) {
                return cudnnGetConvolutionForwardWorkspaceSize(h, d.x, d.w, d.c, d.y, a, bytes);
            },
            [&](cudnnConvolutionFwdAlgo_t a, void *ws, size_t bytes) {
                return cudnnConvolutionForward(h, &one, d.x, x, d.w, w, d.c, a, ws, bytes, &zero, d.y, y);
            });
        if (e) return e;
    }
    if (in[2] || in[3]) {
        conv_bias_add_kernel<<<vt_grid_1d(out->numel), 256>>>(vt_f32(out), in[2] ? vt_f32(in[2]) : nullptr,
                                                              in[3] ? vt_f32(in[3]) : nullptr, p->O, p->OH * p->OW,
                                                              out->numel);
        VT_CUDA_CHECK_LAUNCH();
    }
    return VT_OK;
}

// ---- backward ----------------------------------------------------------------------------
// g [N, O, OH, OW]; saved x [N, C, H, W], w [O, C, kh, kw]
// dx = conv^T(g, w) (cuDNN backward data); dw = sum_n g_n (x) x_n (backward filter); db = sum g;
// dr = g
static vt_err conv_backward_cuda(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const vt_conv_params *p = (const vt_conv_params *)n->params;
    const vt_tensor *xt = n->saved[0], *wt = n->saved[1];
    for (int i = 0; i < 3; i++) {
        if (!n->need[i]) continue;
        // zeros: an empty output (no pixel touched) leaves a zero gradient, as on the CPU
        gin[i] = vt_cuda_zeros(VT_F32, n->in_ndim[i], n->in_shape[i]);
        if (!gin[i]) return vt_error_code();
    }
    if (n->need[3]) {
        gin[3] = vt_empty(VT_F32, VT_CUDA, gout->ndim, gout->shape);
        if (!gin[3]) return vt_error_code();
        if (gout->numel) VT_CUDA_CHECK(cudaMemcpyAsync(vt_data(gin[3]), vt_data(gout), vt_nbytes(gout),
                                                       cudaMemcpyDeviceToDevice));
    }
    if (gout->numel == 0) return VT_OK;
    if (n->need[2]) {
        unsigned grid = 0;
        if (vt_cuda_rows_grid("conv", p->O, &grid)) return vt_error_code();
        conv_bias_grad_kernel<<<grid, 256>>>(vt_f32(gout), vt_f32(gin[2]), p->N, p->O, p->OH * p->OW);
        VT_CUDA_CHECK_LAUNCH();
    }
    if (!(n->need[0] || n->need[1]) || xt->numel == 0 || wt->numel == 0) return VT_OK;
    cudnnHandle_t h;
    if (vt_cuda_cudnn(&h)) return vt_error_code();
    conv_descs d;
    if (conv_descs_init(p, &d)) return vt_error_code();
    const float one = 1.0f, zero = 0.0f;
    const void *x = vt_data(xt), *w = vt_data(wt), *g = vt_data(gout);
    if (n->need[0]) {
        cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        int count = 0;
        VT_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w, d.y, d.c, d.x,
                                                                   CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &count, perf));
        void *dx = vt_data(gin[0]);
        vt_err e = conv_try_algos(
            "backward data", perf, count,
            [&](cudnnConvolutionBwdDataAlgo_t a, size_t *bytes) {
                return cudnnGetConvolutionBackwardDataWorkspaceSize(h, d.w, d.y, d.c, d.x, a, bytes);
            },
            [&](cudnnConvolutionBwdDataAlgo_t a, void *ws, size_t bytes) {
                return cudnnConvolutionBackwardData(h, &one, d.w, w, d.y, g, d.c, a, ws, bytes, &zero, d.x, dx);
            });
        if (e) return e;
    }
    if (n->need[1]) {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        int count = 0;
        VT_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
            h, d.x, d.y, d.c, d.w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &count, perf));
        void *dw = vt_data(gin[1]);
        vt_err e = conv_try_algos(
            "backward filter", perf, count,
            [&](cudnnConvolutionBwdFilterAlgo_t a, size_t *bytes) {
                return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d.x, d.y, d.c, d.w, a, bytes);
            },
            [&](cudnnConvolutionBwdFilterAlgo_t a, void *ws, size_t bytes) {
                return cudnnConvolutionBackwardFilter(h, &one, d.x, x, d.y, g, d.c, a, ws, bytes, &zero, d.w, dw);
            });
        if (e) return e;
    }
    return VT_OK;
}

extern "C" vt_err vt_cuda_register_conv(void) {
    if (vt_register_kernels("conv2d", VT_CUDA, conv_forward_cuda, conv_backward_cuda) ||
        vt_register_kernels("conv_time", VT_CUDA, conv_forward_cuda, conv_backward_cuda))
        return vt_error_code();
    return VT_OK;
}
