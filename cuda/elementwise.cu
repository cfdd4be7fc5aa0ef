// elementwise.cu — CUDA kernels of the elementwise family (add/sub/mul with broadcasting,
// axpby, the unary family), forward and backward side by side, registered under the same op
// names as core/ops/elementwise.c. f32 for now (bf16 activations come with the GEMM work).
#include "cuda/check.cuh"
#include "cuda/common.cuh"
#include "core/tape.h"
#include "core/ops/params.h"

// Broadcast strides of an input seen through the (VT_MAX_DIMS right-aligned) output shape.
struct bcast_desc {
    long long out_shape[VT_MAX_DIMS];
    long long sa[VT_MAX_DIMS], sb[VT_MAX_DIMS];
};

static void pad_shape(int nd, const int64_t *s, long long *o) {
    for (int i = 0; i < VT_MAX_DIMS; i++) o[i] = 1;
    for (int i = 0; i < nd; i++) o[VT_MAX_DIMS - nd + i] = s[i];
}

static void bcast_strides(int nd, const int64_t *s, long long *st) {
    long long p[VT_MAX_DIMS];
    pad_shape(nd, s, p);
    long long acc = 1;
    for (int i = VT_MAX_DIMS - 1; i >= 0; i--) {
        st[i] = p[i] == 1 ? 0 : acc;
        acc *= p[i];
    }
}

__device__ inline void bcast_index(const bcast_desc &d, long long i, long long *ia, long long *ib) {
    long long a = 0, b = 0;
    for (int k = VT_MAX_DIMS - 1; k >= 0; k--) {
        long long idx = i % d.out_shape[k];
        i /= d.out_shape[k];
        a += idx * d.sa[k];
        b += idx * d.sb[k];
    }
    *ia = a;
    *ib = b;
}

// out [broadcast shape] = a op b
__global__ void binary_forward_kernel(int kind, bcast_desc d, const float *a, const float *b, float *out, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        long long ia, ib;
        bcast_index(d, i, &ia, &ib);
        float x = a[ia], y = b[ib];
        out[i] = kind == VT_BIN_ADD ? x + y : kind == VT_BIN_SUB ? x - y : x * y;
    }
}

// gin_which [its own shape] += dout/dinput * g, reduced over broadcast dims with atomics
// (gin zeroed first). which = 0 for a, 1 for b.
__global__ void binary_backward_kernel(int kind, int which, bcast_desc d, const float *g, const float *a,
                                       const float *b, float *gin, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        long long ia, ib;
        bcast_index(d, i, &ia, &ib);
        float v = g[i];
        if (kind == VT_BIN_MUL) v *= which == 0 ? b[ib] : a[ia];
        else if (kind == VT_BIN_SUB && which == 1) v = -v;
        atomicAdd(&gin[which == 0 ? ia : ib], v);
    }
}

static bcast_desc make_desc(int ond, const int64_t *oshape, int and_, const int64_t *ashape, int bnd,
                            const int64_t *bshape) {
    bcast_desc d;
    pad_shape(ond, oshape, d.out_shape);
    bcast_strides(and_, ashape, d.sa);
    bcast_strides(bnd, bshape, d.sb);
    return d;
}

static vt_err binary_forward_cuda(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const vt_binary_params *p = (const vt_binary_params *)n->params;
    bcast_desc d = make_desc(out->ndim, out->shape, in[0]->ndim, in[0]->shape, in[1]->ndim, in[1]->shape);
    binary_forward_kernel<<<vt_grid_1d(out->numel), 256>>>(p->kind, d, vt_f32(in[0]), vt_f32(in[1]), vt_f32(out), out->numel);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

static vt_err binary_backward_cuda(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const vt_binary_params *p = (const vt_binary_params *)n->params;
    bcast_desc d = make_desc(gout->ndim, gout->shape, n->in_ndim[0], n->in_shape[0], n->in_ndim[1], n->in_shape[1]);
    const float *a = p->kind == VT_BIN_MUL ? vt_f32(n->saved[0]) : nullptr;
    const float *b = p->kind == VT_BIN_MUL ? vt_f32(n->saved[1]) : nullptr;
    for (int i = 0; i < 2; i++) {
        if (!n->need[i]) continue;
        gin[i] = vt_empty(VT_F32, VT_CUDA, n->in_ndim[i], n->in_shape[i]);
        if (!gin[i]) return vt_error_code();
        VT_CUDA_CHECK(cudaMemsetAsync(vt_data(gin[i]), 0, vt_nbytes(gin[i])));
        binary_backward_kernel<<<vt_grid_1d(gout->numel), 256>>>(p->kind, i, d, vt_f32(gout), a, b, vt_f32(gin[i]),
                                                                 gout->numel);
        VT_CUDA_CHECK_LAUNCH();
    }
    return VT_OK;
}

// ---- axpby -------------------------------------------------------------------------------
__global__ void axpby_kernel(float a, const float *x, float b, const float *y, float *out, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        out[i] = a * x[i] + (y ? b * y[i] : 0.0f);
}

static vt_err axpby_forward_cuda(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const vt_axpby_params *p = (const vt_axpby_params *)n->params;
    axpby_kernel<<<vt_grid_1d(out->numel), 256>>>(p->a, vt_f32(in[0]), p->b, vt_f32(in[1]), vt_f32(out), out->numel);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

static vt_err axpby_backward_cuda(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const vt_axpby_params *p = (const vt_axpby_params *)n->params;
    for (int i = 0; i < 2; i++) {
        if (!n->need[i]) continue;
        gin[i] = vt_empty(VT_F32, VT_CUDA, gout->ndim, gout->shape);
        if (!gin[i]) return vt_error_code();
        axpby_kernel<<<vt_grid_1d(gout->numel), 256>>>(i == 0 ? p->a : p->b, vt_f32(gout), 0.0f, nullptr,
                                                       vt_f32(gin[i]), gout->numel);
        VT_CUDA_CHECK_LAUNCH();
    }
    return VT_OK;
}

// ---- unary family ------------------------------------------------------------------------
__device__ inline float unary_f(vt_unary_params p, float x) {
    switch (p.kind) {
    case VT_U_AFFINE: return p.p0 * x + p.p1;
    case VT_U_CLAMP: return fminf(fmaxf(x, p.p0), p.p1);
    case VT_U_ABS: return fabsf(x);
    case VT_U_SQUARE: return x * x;
    case VT_U_SQRT: return sqrtf(x);
    case VT_U_EXP: return expf(x);
    case VT_U_LOG: return logf(x);
    }
    return 0.0f;
}

__device__ inline float unary_df(vt_unary_params p, float x) {
    switch (p.kind) {
    case VT_U_AFFINE: return p.p0;
    case VT_U_CLAMP: return (x >= p.p0 && x <= p.p1) ? 1.0f : 0.0f;
    case VT_U_ABS: return x > 0 ? 1.0f : x < 0 ? -1.0f : 0.0f;
    case VT_U_SQUARE: return 2 * x;
    case VT_U_SQRT: return 0.5f / sqrtf(x);
    case VT_U_EXP: return expf(x);
    case VT_U_LOG: return 1.0f / x;
    }
    return 0.0f;
}

__global__ void unary_forward_kernel(vt_unary_params p, const float *x, float *out, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        out[i] = unary_f(p, x[i]);
}

__global__ void unary_backward_kernel(vt_unary_params p, const float *g, const float *x, float *gin, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        gin[i] = g[i] * unary_df(p, x ? x[i] : 0.0f);
}

static vt_err unary_forward_cuda(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const vt_unary_params *p = (const vt_unary_params *)n->params;
    unary_forward_kernel<<<vt_grid_1d(out->numel), 256>>>(*p, vt_f32(in[0]), vt_f32(out), out->numel);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

static vt_err unary_backward_cuda(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const vt_unary_params *p = (const vt_unary_params *)n->params;
    if (!n->need[0]) return VT_OK;
    gin[0] = vt_empty(VT_F32, VT_CUDA, gout->ndim, gout->shape);
    if (!gin[0]) return vt_error_code();
    const float *x = n->n_saved ? vt_f32(n->saved[0]) : nullptr;
    unary_backward_kernel<<<vt_grid_1d(gout->numel), 256>>>(*p, vt_f32(gout), x, vt_f32(gin[0]), gout->numel);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

// ---- cast (core/ops/cast.c): f32 <-> bf16 / f16 through vt_cuda_cast; same dtype: a copy --
static vt_err cast_into(vt_tensor *dst, const vt_tensor *src) {
    if (dst->dtype == src->dtype) {
        if (src->numel) VT_CUDA_CHECK(cudaMemcpyAsync(vt_data(dst), vt_data(src), vt_nbytes(src), cudaMemcpyDeviceToDevice));
        return VT_OK;
    }
    return vt_cuda_cast(vt_data(dst), dst->dtype, vt_data(src), src->dtype, src->numel);
}

static vt_err cast_forward_cuda(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    (void)n;
    return cast_into(out, in[0]);
}

// straight-through: gin = gout as f32
static vt_err cast_backward_cuda(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    if (!n->need[0]) return VT_OK;
    gin[0] = vt_empty(VT_F32, VT_CUDA, gout->ndim, gout->shape);
    if (!gin[0]) return vt_error_code();
    return cast_into(gin[0], gout);
}

extern "C" vt_err vt_cuda_register_elementwise(void) {
    if (vt_register_kernels("cast", VT_CUDA, cast_forward_cuda, cast_backward_cuda) != VT_OK) return vt_error_code();
    static const char *binary_ops[] = {"add", "sub", "mul"};
    for (const char *name : binary_ops)
        if (vt_register_kernels(name, VT_CUDA, binary_forward_cuda, binary_backward_cuda) != VT_OK) return vt_error_code();
    static const char *unary_ops[] = {"affine", "clamp", "abs", "square", "sqrt", "exp", "log"};
    for (const char *name : unary_ops)
        if (vt_register_kernels(name, VT_CUDA, unary_forward_cuda, unary_backward_cuda) != VT_OK) return vt_error_code();
    return vt_register_kernels("axpby", VT_CUDA, axpby_forward_cuda, axpby_backward_cuda);
}
