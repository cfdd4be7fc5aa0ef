// resize.cu — bilinear / bicubic resize (antialias off or on) of [N, C, H, W], forward and
// backward side by side, under the op names of core/ops/resize.c. The per-axis tap tables are
// built on the host by the CPU's own vt_resize_table_build (same float arithmetic, so the same
// weights) and uploaded. As on the CPU the forward applies the W table then the H table, an
// axis whose size does not change is skipped, and the backward applies the transposes (H then
// W). The transposes are gathers over an inverse (CSR) table built on the host: input i sums
// the w * g of the taps that read it, in the CPU scatter's (output, tap) order, with no atomics.
#include "cuda/common.cuh"
#include "core/ops/params.h"
#include <stdlib.h>
#include <string.h>

// One axis on the device: forward taps idx / w [out, K], or the transpose as CSR: the taps
// reading input i are start[i] .. start[i + 1] of (src output, weight).
struct resize_dev_table {
    int64_t in = 0, out = 0, K = 0;
    vt_tensor *idx = nullptr, *w = nullptr, *start = nullptr, *src = nullptr, *wt = nullptr;
    ~resize_dev_table() {
        vt_release(idx);
        vt_release(w);
        vt_release(start);
        vt_release(src);
        vt_release(wt);
    }
};

static vt_err upload(vt_tensor **dst, vt_dtype dt, const void *host, int64_t n) {
    *dst = vt_cuda_scratch(dt, n);
    if (!*dst) return vt_error_code();
    if (n) VT_CUDA_CHECK(cudaMemcpy(vt_data(*dst), host, (size_t)n * vt_dtype_size(dt), cudaMemcpyHostToDevice));
    return VT_OK;
}

// Builds the axis table in -> out on the host and uploads it (transpose: as CSR).
static vt_err resize_table_to_device(const vt_resize_params *p, int64_t in, int64_t out, int transpose,
                                     resize_dev_table *d) {
    vt_resize_table t;
    memset(&t, 0, sizeof t);
    if (vt_resize_table_build(&t, in, out, p->mode, p->antialias)) return vt_error_code();
    d->in = in;
    d->out = t.out;
    d->K = t.K;
    vt_err e = VT_OK;
    if (!transpose) {
        e = upload(&d->idx, VT_I64, t.idx, t.out * t.K);
        if (e == VT_OK) e = upload(&d->w, VT_F32, t.w, t.out * t.K);
        vt_resize_table_free(&t);
        return e;
    }
    // CSR of the nonzero taps by input position, (o, k) ascending within each input
    const int64_t nt = t.out * t.K;
    int64_t *start = (int64_t *)calloc((size_t)in + 1, sizeof(int64_t));
    int64_t *fill = (int64_t *)calloc((size_t)in + 1, sizeof(int64_t));
    int64_t *src = (int64_t *)malloc((size_t)(nt ? nt : 1) * sizeof(int64_t));
    float *wt = (float *)malloc((size_t)(nt ? nt : 1) * sizeof(float));
    if (!start || !fill || !src || !wt) {
        e = vt_error(VT_ERR_OOM, "resize: out of host memory for the transposed %lld x %lld table", (long long)t.out,
                     (long long)t.K);
    } else {
        for (int64_t q = 0; q < nt; q++)
            if (t.w[q] != 0.0f) start[t.idx[q] + 1]++;
        for (int64_t i = 0; i < in; i++) start[i + 1] += start[i];
        memcpy(fill, start, (size_t)in * sizeof(int64_t));
        for (int64_t q = 0; q < nt; q++) {
            if (t.w[q] == 0.0f) continue;
            const int64_t at = fill[t.idx[q]]++;
            src[at] = q / t.K;
            wt[at] = t.w[q];
        }
        e = upload(&d->start, VT_I64, start, in + 1);
        if (e == VT_OK) e = upload(&d->src, VT_I64, src, start[in]);
        if (e == VT_OK) e = upload(&d->wt, VT_F32, wt, start[in]);
    }
    free(start);
    free(fill);
    free(src);
    free(wt);
    vt_resize_table_free(&t);
    return e;
}

// ---- forward: the two axis passes --------------------------------------------------------
// x [rows, in] -> y [rows, out], y[r, o] = sum_k w[o, k] x[r, idx[o, k]]
__global__ void resize_w_kernel(const float *x, float *y, const int64_t *idx, const float *w, long long in,
                                long long out, long long K, long long n) {
    VT_GRID_STRIDE(e, n) {
        const long long r = e / out, o = e % out;
        const float *xr = x + r * in;
        float s = 0.0f;
        for (long long k = 0; k < K; k++) s += w[o * K + k] * xr[idx[o * K + k]];
        y[e] = s;
    }
}

// x [planes, in, width] -> y [planes, out, width] (zero taps skipped, as on the CPU)
__global__ void resize_h_kernel(const float *x, float *y, const int64_t *idx, const float *w, long long in,
                                long long out, long long width, long long K, long long n) {
    VT_GRID_STRIDE(e, n) {
        const long long c = e % width, o = e / width % out, p = e / (width * out);
        float s = 0.0f;
        for (long long k = 0; k < K; k++) {
            const float wk = w[o * K + k];
            if (wk == 0.0f) continue;
            s += wk * x[(p * in + idx[o * K + k]) * width + c];
        }
        y[e] = s;
    }
}

// ---- backward: the transposed passes as gathers ------------------------------------------
// g [rows, out] -> gx [rows, in], gx[r, i] = sum over taps reading i of w g[r, o]
__global__ void resize_w_t_kernel(const float *g, float *gx, const int64_t *start, const int64_t *src,
                                  const float *wt, long long in, long long out, long long n) {
    VT_GRID_STRIDE(e, n) {
        const long long r = e / in, i = e % in;
        const float *gr = g + r * out;
        float s = 0.0f;
        for (long long q = start[i]; q < start[i + 1]; q++) s += wt[q] * gr[src[q]];
        gx[e] = s;
    }
}

// g [planes, out, width] -> gx [planes, in, width]
__global__ void resize_h_t_kernel(const float *g, float *gx, const int64_t *start, const int64_t *src,
                                  const float *wt, long long in, long long out, long long width, long long n) {
    VT_GRID_STRIDE(e, n) {
        const long long c = e % width, i = e / width % in, p = e / (width * in);
        float s = 0.0f;
        for (long long q = start[i]; q < start[i + 1]; q++) s += wt[q] * g[(p * out + src[q]) * width + c];
        gx[e] = s;
    }
}

static vt_err resize_w(const resize_dev_table &t, int64_t rows, const float *x, float *y) {
    const int64_t n = rows * t.out;
    if (n == 0) return VT_OK;
    resize_w_kernel<<<vt_grid_1d(n), 256>>>(x, y, vt_i64(t.idx), vt_f32(t.w), t.in, t.out, t.K, n);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

static vt_err resize_h(const resize_dev_table &t, int64_t planes, int64_t width, const float *x, float *y) {
    const int64_t n = planes * t.out * width;
    if (n == 0) return VT_OK;
    resize_h_kernel<<<vt_grid_1d(n), 256>>>(x, y, vt_i64(t.idx), vt_f32(t.w), t.in, t.out, width, t.K, n);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

static vt_err resize_w_t(const resize_dev_table &t, int64_t rows, const float *g, float *gx) {
    const int64_t n = rows * t.in;
    if (n == 0) return VT_OK;
    resize_w_t_kernel<<<vt_grid_1d(n), 256>>>(g, gx, vt_i64(t.start), vt_i64(t.src), vt_f32(t.wt), t.in, t.out, n);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

static vt_err resize_h_t(const resize_dev_table &t, int64_t planes, int64_t width, const float *g, float *gx) {
    const int64_t n = planes * t.in * width;
    if (n == 0) return VT_OK;
    resize_h_t_kernel<<<vt_grid_1d(n), 256>>>(g, gx, vt_i64(t.start), vt_i64(t.src), vt_f32(t.wt), t.in, t.out, width,
                                              n);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

// x [N, C, H, W] -> tmp [N*C, H, ow] (W axis) -> out [N*C, oh, ow] (H axis)
static vt_err resize_forward_cuda(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const vt_resize_params *p = (const vt_resize_params *)n->params;
    const vt_tensor *x = in[0];
    const int64_t planes = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    const float *xs = vt_f32(x);
    float *y = vt_f32(out);
    const int dw = W != p->ow, dh = H != p->oh;
    if (!dw && !dh) {
        if (out->numel) VT_CUDA_CHECK(cudaMemcpyAsync(y, xs, vt_nbytes(x), cudaMemcpyDeviceToDevice));
        return VT_OK;
    }
    resize_dev_table tw, th;
    if ((dw && resize_table_to_device(p, W, p->ow, 0, &tw)) || (dh && resize_table_to_device(p, H, p->oh, 0, &th)))
        return vt_error_code();
    if (dw && dh) {
        vt_tensor *tmp = vt_cuda_scratch(VT_F32, planes * H * p->ow);
        if (!tmp) return vt_error_code();
        vt_err e = resize_w(tw, planes * H, xs, vt_f32(tmp));
        if (e == VT_OK) e = resize_h(th, planes, p->ow, vt_f32(tmp), y);
        vt_release(tmp);
        return e;
    }
    return dw ? resize_w(tw, planes * H, xs, y) : resize_h(th, planes, W, xs, y);
}

// gout [N*C, oh, ow] -> g_tmp [N*C, H, ow] (H^T) -> gx [N*C, H, W] (W^T); nothing saved
static vt_err resize_backward_cuda(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const vt_resize_params *p = (const vt_resize_params *)n->params;
    if (!n->need[0]) return VT_OK;
    const int64_t *s = n->in_shape[0];
    const int64_t planes = s[0] * s[1], H = s[2], W = s[3];
    gin[0] = vt_empty(VT_F32, VT_CUDA, 4, s);
    if (!gin[0]) return vt_error_code();
    const float *g = vt_f32(gout);
    float *gx = vt_f32(gin[0]);
    const int dw = W != p->ow, dh = H != p->oh;
    if (!dw && !dh) {
        if (gout->numel) VT_CUDA_CHECK(cudaMemcpyAsync(gx, g, vt_nbytes(gout), cudaMemcpyDeviceToDevice));
        return VT_OK;
    }
    resize_dev_table tw, th;
    if ((dw && resize_table_to_device(p, W, p->ow, 1, &tw)) || (dh && resize_table_to_device(p, H, p->oh, 1, &th)))
        return vt_error_code();
    if (dw && dh) {
        vt_tensor *tmp = vt_cuda_scratch(VT_F32, planes * H * p->ow);
        if (!tmp) return vt_error_code();
        vt_err e = resize_h_t(th, planes, p->ow, g, vt_f32(tmp));
        if (e == VT_OK) e = resize_w_t(tw, planes * H, vt_f32(tmp), gx);
        vt_release(tmp);
        return e;
    }
    return dw ? resize_w_t(tw, planes * H, g, gx) : resize_h_t(th, planes, W, g, gx);
}

extern "C" vt_err vt_cuda_register_resize(void) {
    if (vt_register_kernels("resize_bilinear", VT_CUDA, resize_forward_cuda, resize_backward_cuda) ||
        vt_register_kernels("resize_bicubic", VT_CUDA, resize_forward_cuda, resize_backward_cuda))
        return vt_error_code();
    return VT_OK;
}
