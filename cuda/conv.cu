// conv.cu — conv2d and conv_time on cuDNN (legacy convolution API: forward, backward data,
// backward filter), bias and its gradient by small kernels, under the op names of
// core/ops/conv.c. As on the CPU both ops are one 2-D convolution over [N, C, H, W] planes:
// conv_time is x [B, C, T, H*W] with kernel (kt, 1), padding (pad, 0), so cuDNN sees the same
// descriptors. Saved: w, and x when dw is wanted (the save mask, core/ops/conv.c
// conv_saved_needed: NULL in its slot otherwise); nothing extra. An optional residual (input 3,
// vt_conv2d_add / vt_conv_time_add) is added with the bias in one pass after the convolution:
// y = conv + (b + r) as the CPU's GEMM accumulates onto b + r; its gradient is a copy of g.
//
// Precision: the convolution descriptor asks for CUDNN_FMA_MATH, so FP32 convolutions never run
// on TF32 tensor cores (CUDNN_DEFAULT_MATH would allow TF32 on Ampere and later). Algorithms
// come from cuDNN's heuristics (the *_v7 queries), tried in order with the direct / GEMM-based
// ones first: one that does not support the descriptor or whose workspace cannot be allocated
// is skipped.
//
// A frozen bf16 / f16 weight (ops.h, "low-precision weights"): the legacy API wants x, w and y
// of one type, so x (backward: g) is rounded to w's dtype in scratch and cuDNN runs on bf16 /
// f16 tensors with f32 compute (tensor-op math: no conversion is left to cuDNN); its output y
// (dx) comes out in w's dtype and is widened to f32 by the bias / residual pass (dx by a cast).
// That rounds the output once more than the CPU, which accumulates in f32 and stores f32:
// within bf16 (f16) tolerance of the CPU reference. No dw: such a weight is frozen.
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

// cuDNN's type of the data tensors: f32, or a frozen weight's bf16 / f16 (x and y then the same)
static cudnnDataType_t conv_data_type(vt_dtype dt) {
    return dt == VT_BF16 ? CUDNN_DATA_BFLOAT16 : dt == VT_F16 ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT;
}

// x, w, y descriptors of data type dt (the weight's), the convolution's compute type f32
static vt_err conv_descs_init(const vt_conv_params *p, vt_dtype dt, conv_descs *d) {
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
    const cudnnDataType_t t = conv_data_type(dt);
    VT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(d->x, CUDNN_TENSOR_NCHW, t, (int)p->N, (int)p->C, (int)p->H, (int)p->W));
    VT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(d->y, CUDNN_TENSOR_NCHW, t, (int)p->N, (int)p->O, (int)p->OH, (int)p->OW));
    VT_CUDNN_CHECK(cudnnSetFilter4dDescriptor(d->w, t, CUDNN_TENSOR_NCHW, (int)p->O, (int)p->C, p->kh, p->kw));
    VT_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(d->c, p->ph, p->pw, p->sh, p->sw, 1, 1, CUDNN_CROSS_CORRELATION,
                                                   CUDNN_DATA_FLOAT));
    // f32: FMA (no TF32). bf16 / f16: tensor cores on data already in that type, f32 accumulate.
    VT_CUDNN_CHECK(cudnnSetConvolutionMathType(d->c, dt == VT_F32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH));
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

// ---- the three cuDNN passes ----------------------------------------------------------------
// One runner (conv_pass) over per-pass entry points overloaded on the pass's perf struct /
// algorithm type. Operands in the runner's order: forward y = conv(x, w) is (x, w) -> y; backward
// data dx is (w, dy) -> dx; backward filter dw is (x, dy) -> dw.
static cudnnStatus_t conv_heuristics(cudnnHandle_t h, const conv_descs &d, int n, int *count,
                                     cudnnConvolutionFwdAlgoPerf_t *perf) {
    return cudnnGetConvolutionForwardAlgorithm_v7(h, d.x, d.w, d.c, d.y, n, count, perf);
}
static cudnnStatus_t conv_heuristics(cudnnHandle_t h, const conv_descs &d, int n, int *count,
                                     cudnnConvolutionBwdDataAlgoPerf_t *perf) {
    return cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w, d.y, d.c, d.x, n, count, perf);
}
static cudnnStatus_t conv_heuristics(cudnnHandle_t h, const conv_descs &d, int n, int *count,
                                     cudnnConvolutionBwdFilterAlgoPerf_t *perf) {
    return cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.x, d.y, d.c, d.w, n, count, perf);
}
static cudnnStatus_t conv_ws_size(cudnnHandle_t h, const conv_descs &d, cudnnConvolutionFwdAlgo_t a, size_t *bytes) {
    return cudnnGetConvolutionForwardWorkspaceSize(h, d.x, d.w, d.c, d.y, a, bytes);
}
static cudnnStatus_t conv_ws_size(cudnnHandle_t h, const conv_descs &d, cudnnConvolutionBwdDataAlgo_t a,
                                  size_t *bytes) {
    return cudnnGetConvolutionBackwardDataWorkspaceSize(h, d.w, d.y, d.c, d.x, a, bytes);
}
static cudnnStatus_t conv_ws_size(cudnnHandle_t h, const conv_descs &d, cudnnConvolutionBwdFilterAlgo_t a,
                                  size_t *bytes) {
    return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d.x, d.y, d.c, d.w, a, bytes);
}
// alpha 1, beta 0 (float also for bf16 / f16 data: cuDNN's scaling type of non-double data)
static const float conv_one = 1.0f, conv_zero = 0.0f;
static cudnnStatus_t conv_exec(cudnnHandle_t h, const conv_descs &d, cudnnConvolutionFwdAlgo_t a, const void *x,
                               const void *w, void *y, void *ws, size_t bytes) {
    return cudnnConvolutionForward(h, &conv_one, d.x, x, d.w, w, d.c, a, ws, bytes, &conv_zero, d.y, y);
}
static cudnnStatus_t conv_exec(cudnnHandle_t h, const conv_descs &d, cudnnConvolutionBwdDataAlgo_t a, const void *w,
                               const void *dy, void *dx, void *ws, size_t bytes) {
    return cudnnConvolutionBackwardData(h, &conv_one, d.w, w, d.y, dy, d.c, a, ws, bytes, &conv_zero, d.x, dx);
}
static cudnnStatus_t conv_exec(cudnnHandle_t h, const conv_descs &d, cudnnConvolutionBwdFilterAlgo_t a, const void *x,
                               const void *dy, void *dw, void *ws, size_t bytes) {
    return cudnnConvolutionBackwardFilter(h, &conv_one, d.x, x, d.y, dy, d.c, a, ws, bytes, &conv_zero, d.w, dw);
}

// Runs one pass with the heuristics' algorithms in order (exact ones first, then the rest) until
// one runs; an algorithm that fails (not supported for the descriptors, workspace not available)
// is skipped. perf_t is the pass's cuDNN perf struct, max_algos its algorithm count.
template <typename perf_t, int max_algos>
static vt_err conv_pass(const char *pass, cudnnHandle_t h, const conv_descs &d, const void *in0, const void *in1,
                        void *out) {
    perf_t perf[max_algos];
    int count = 0;
    VT_CUDNN_CHECK(conv_heuristics(h, d, max_algos, &count, perf));
    cudnnStatus_t last = CUDNN_STATUS_NOT_SUPPORTED;
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < count; i++) {
            if (perf[i].status != CUDNN_STATUS_SUCCESS || conv_algo_exact(perf[i].algo) != (round == 0)) continue;
            size_t bytes = 0;
            if (conv_ws_size(h, d, perf[i].algo, &bytes) != CUDNN_STATUS_SUCCESS) continue;
            vt_tensor *ws;
            if (!conv_workspace(bytes, &ws)) continue;
            last = conv_exec(h, d, perf[i].algo, in0, in1, out, ws ? vt_data(ws) : nullptr, bytes);
            vt_release(ws);
            if (last == CUDNN_STATUS_SUCCESS) return VT_OK;
            // A refused algorithm can leave a (non-sticky) launch error behind; clear it, or the
            // next VT_CUDA_CHECK_LAUNCH (the bias kernel, an unrelated op) would report it as its own.
            (void)cudaGetLastError();
        }
    return vt_error(VT_ERR_DEVICE, "conv %s: no cuDNN algorithm ran (last status: %s)", pass, cudnnGetErrorString(last));
}

// A scratch tensor released on every return path
struct conv_scratch {
    vt_tensor *t = nullptr;
    ~conv_scratch() { vt_release(t); }
};

// ---- bias and residual -------------------------------------------------------------------
// y [N, O, L] = src + (b[o] + r[i]) (b or r NULL: that term absent); src is y itself (f32) or
// the bf16 / f16 convolution output, widened here
template <typename T>
__global__ void conv_bias_add_kernel(float *y, const T *src, const float *b, const float *r, long long O, long long L,
                                     long long total) {
    VT_GRID_STRIDE(i, total) {
        const float bo = b ? b[i / L % O] : 0.0f;
        y[i] = vt_ld(src + i) + (r ? bo + r[i] : bo);
    }
}

// out = conv (+ b) (+ r), conv in out itself (low == NULL) or in the low-precision scratch low
static vt_err conv_bias_add(const vt_conv_params *p, vt_tensor *out, const vt_tensor *low, const vt_tensor *b,
                            const vt_tensor *r) {
    float *y = vt_f32(out);
    const float *pb = b ? vt_f32(b) : nullptr, *pr = r ? vt_f32(r) : nullptr;
    const long long O = p->O, L = p->OH * p->OW, total = out->numel;
    const unsigned grid = vt_grid_1d(total);
    if (!low)
        conv_bias_add_kernel<<<grid, 256>>>(y, (const float *)y, pb, pr, O, L, total);
    else if (low->dtype == VT_BF16)
        conv_bias_add_kernel<<<grid, 256>>>(y, (const __nv_bfloat16 *)vt_data(low), pb, pr, O, L, total);
    else
        conv_bias_add_kernel<<<grid, 256>>>(y, (const __half *)vt_data(low), pb, pr, O, L, total);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

// g [N, O, L] -> db[o] = sum_{n, l} g (double accumulation); one block per o
__global__ void conv_bias_grad_kernel(const float *g, float *db, long long N, long long O, long long L) {
    const long long o = blockIdx.x, NL = N * L;
    double s = 0;
    for (long long k = threadIdx.x; k < NL; k += blockDim.x) s += g[(k / L * O + o) * L + k % L];
    s = vt_block_sum(s);
    if (threadIdx.x == 0) db[o] = (float)s;
}

// ---- fallback for 16-bit weights ---------------------------------------------------------
// cuDNN may have no bf16 / f16 algorithm for a shape (few input channels: the UNet's first conv
// has 4). Then the pass runs in f32 on the operands widened from their rounded 16-bit values:
// exactly the CPU reference's computation, only slower.
static vt_tensor *conv_widen(const vt_tensor *t) {
    vt_tensor *f = vt_empty(VT_F32, VT_CUDA, t->ndim, t->shape);
    if (f && vt_cuda_cast(vt_data(f), VT_F32, vt_data(t), t->dtype, t->numel)) vt_clear(&f);
    return f;
}

// The pass in f32 on widened copies of the rounded activation a (x forward, g backward data)
// and the weight w, into the f32 out; the pass takes them as (a, w) forward and (w, a) backward
// data (w_first).
template <typename perf_t, int max_algos>
static vt_err conv_pass_widened(const char *pass, cudnnHandle_t h, const vt_conv_params *p, const vt_tensor *a,
                                const vt_tensor *w, bool w_first, void *out) {
    conv_scratch a32, w32;
    conv_descs d32;
    a32.t = conv_widen(a);
    w32.t = a32.t ? conv_widen(w) : nullptr;
    if (!w32.t || conv_descs_init(p, VT_F32, &d32)) return vt_error_code();
    const void *in0 = w_first ? vt_data(w32.t) : vt_data(a32.t), *in1 = w_first ? vt_data(a32.t) : vt_data(w32.t);
    return conv_pass<perf_t, max_algos>(pass, h, d32, in0, in1, out);
}

// ---- forward ----------------------------------------------------------------------------
// x [N, C, H, W], w [O, C, kh, kw], b [O] or NULL, r [N, O, OH, OW] or NULL -> y [N, O, OH, OW]
// A bf16 / f16 w: cuDNN on round_w(x) into a low-precision y, widened by the bias pass.
static vt_err conv_forward_cuda(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const vt_conv_params *p = (const vt_conv_params *)n->params;
    const vt_tensor *w = in[1];
    const vt_dtype dt = w->dtype;
    conv_scratch xl, yl;  // x rounded to w's dtype, the convolution's output in it
    if (out->numel == 0) return VT_OK;
    if (in[0]->numel == 0 || w->numel == 0) {  // empty reduction (C == 0): y = b
        VT_CUDA_CHECK(cudaMemsetAsync(vt_data(out), 0, vt_nbytes(out)));
    } else {
        cudnnHandle_t h;
        if (vt_cuda_cudnn(&h)) return vt_error_code();
        conv_descs d;
        if (conv_descs_init(p, dt, &d)) return vt_error_code();
        const void *x = vt_data(in[0]);
        void *y = vt_data(out);
        if (dt != VT_F32) {
            xl.t = vt_cuda_rounded(in[0], dt);
            yl.t = xl.t ? vt_empty(dt, VT_CUDA, out->ndim, out->shape) : nullptr;
            if (!yl.t) return vt_error_code();
            x = vt_data(xl.t);
            y = vt_data(yl.t);
        }
        if (conv_pass<cudnnConvolutionFwdAlgoPerf_t, CUDNN_CONVOLUTION_FWD_ALGO_COUNT>("forward", h, d, x, vt_data(w), y)) {
            if (dt == VT_F32) return vt_error_code();
            vt_error_clear();  // no 16-bit algorithm: f32 on the widened rounded operands, into out
            vt_clear(&yl.t);
            if (conv_pass_widened<cudnnConvolutionFwdAlgoPerf_t, CUDNN_CONVOLUTION_FWD_ALGO_COUNT>(
                    "forward (f32 fallback)", h, p, xl.t, w, false, vt_data(out)))
                return vt_error_code();
        }
    }
    if (yl.t || in[2] || in[3]) return conv_bias_add(p, out, yl.t, in[2], in[3]);
    return VT_OK;
}

// ---- backward ----------------------------------------------------------------------------
// g [N, O, OH, OW]; saved x [N, C, H, W], w [O, C, kh, kw]
// dx = conv^T(g, w) (cuDNN backward data); dw = sum_n g_n (x) x_n (backward filter); db = sum g;
// dr = g. A bf16 / f16 w: dx = conv^T(round_w(g), w) in w's dtype, widened; no dw (frozen).
static vt_err conv_backward_cuda(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const vt_conv_params *p = (const vt_conv_params *)n->params;
    const vt_tensor *xt = n->saved[0], *wt = n->saved[1];  // xt: NULL unless dw needs it
    const vt_dtype dt = wt->dtype;
    if (n->need[1] && dt != VT_F32)
        return vt_error(VT_ERR_INTERNAL, "conv backward: a %s weight is frozen (no weight gradient)",
                        vt_dtype_name(dt));
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
    if (!(n->need[0] || n->need[1]) || vt_dim_prod(n->in_ndim[0], n->in_shape[0]) == 0 || wt->numel == 0)
        return VT_OK;
    cudnnHandle_t h;
    if (vt_cuda_cudnn(&h)) return vt_error_code();
    conv_descs d;
    if (conv_descs_init(p, dt, &d)) return vt_error_code();
    if (n->need[0]) {
        conv_scratch gl, dxl;  // g rounded to w's dtype, dx in it
        const void *g = vt_data(gout);
        void *dx = vt_data(gin[0]);
        if (dt != VT_F32) {
            gl.t = vt_cuda_rounded(gout, dt);
            dxl.t = gl.t ? vt_empty(dt, VT_CUDA, n->in_ndim[0], n->in_shape[0]) : nullptr;
            if (!dxl.t) return vt_error_code();
            g = vt_data(gl.t);
            dx = vt_data(dxl.t);
        }
        if (conv_pass<cudnnConvolutionBwdDataAlgoPerf_t, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT>("backward data", h, d,
                                                                                              vt_data(wt), g, dx)) {
            if (dt == VT_F32) return vt_error_code();
            vt_error_clear();  // as in the forward: f32 on the widened rounded operands, into dx
            vt_clear(&dxl.t);
            if (conv_pass_widened<cudnnConvolutionBwdDataAlgoPerf_t, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT>(
                    "backward data (f32 fallback)", h, p, gl.t, wt, true, vt_data(gin[0])))
                return vt_error_code();
        }
        if (dxl.t && vt_cuda_cast(vt_data(gin[0]), VT_F32, dx, dt, dxl.t->numel)) return vt_error_code();
    }
    if (n->need[1] &&
        conv_pass<cudnnConvolutionBwdFilterAlgoPerf_t, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT>(
            "backward filter", h, d, vt_data(xt), vt_data(gout), vt_data(gin[1])))
        return vt_error_code();
    return VT_OK;
}

extern "C" vt_err vt_cuda_register_conv(void) {
    if (vt_register_kernels("conv2d", VT_CUDA, conv_forward_cuda, conv_backward_cuda) ||
        vt_register_kernels("conv_time", VT_CUDA, conv_forward_cuda, conv_backward_cuda))
        return vt_error_code();
    return VT_OK;
}
