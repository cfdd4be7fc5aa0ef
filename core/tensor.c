// tensor.c — tensor construction, views, conversions, RNG (see tensor.h).
#include "tensor.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t vt_dtype_size(vt_dtype dt) {
    switch (dt) {
    case VT_F32: return 4;
    case VT_BF16: return 2;
    case VT_F16: return 2;
    case VT_I64: return 8;
    }
    return 0;
}

const char *vt_dtype_name(vt_dtype dt) {
    switch (dt) {
    case VT_F32: return "f32";
    case VT_BF16: return "bf16";
    case VT_F16: return "f16";
    case VT_I64: return "i64";
    }
    return "?";
}

int64_t vt_dim_prod(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

static vt_err check_shape(int ndim, const int64_t *shape) {
    char b[VT_SHAPE_BUF];
    if (ndim < 0 || ndim > VT_MAX_DIMS)
        return vt_error(VT_ERR_SHAPE, "tensor with %d dims (at most %d)", ndim, VT_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0)
            return vt_error(VT_ERR_SHAPE, "negative dimension in shape %s",
                            vt_shape_str_raw(ndim, shape, b, sizeof b));
    return VT_OK;
}

static vt_tensor *tensor_header(vt_dtype dt, vt_device dev, int ndim, const int64_t *shape) {
    if (check_shape(ndim, shape) != VT_OK) return NULL;
    vt_tensor *t = calloc(1, sizeof *t);
    if (!t) { vt_error(VT_ERR_OOM, "out of host memory for a tensor header"); return NULL; }
    t->dtype = dt;
    t->device = dev;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->numel = vt_dim_prod(ndim, shape);
    t->refcount = 1;
    t->node = -1;
    return t;
}

vt_tensor *vt_empty(vt_dtype dt, vt_device dev, int ndim, const int64_t *shape) {
    vt_tensor *t = tensor_header(dt, dev, ndim, shape);
    if (!t) return NULL;
    t->storage = vt_storage_new(dev, (size_t)t->numel * vt_dtype_size(dt));
    if (!t->storage) {
        char b[VT_SHAPE_BUF];
        vt_error_context("tensor %s %s: ", vt_dtype_name(dt), vt_shape_str(t, b, sizeof b));
        free(t);
        return NULL;
    }
    return t;
}

vt_tensor *vt_zeros(vt_dtype dt, vt_device dev, int ndim, const int64_t *shape) {
    if (dev != VT_CPU) {
        vt_tensor *c = vt_zeros(dt, VT_CPU, ndim, shape);
        vt_tensor *d = c ? vt_to_device(c, dev) : NULL;
        vt_release(c);
        return d;
    }
    vt_tensor *t = vt_empty(dt, dev, ndim, shape);
    if (t) memset(vt_data(t), 0, vt_nbytes(t));
    return t;
}

vt_tensor *vt_full(vt_device dev, int ndim, const int64_t *shape, float value) {
    vt_tensor *t = vt_empty(VT_F32, VT_CPU, ndim, shape);
    if (!t) return NULL;
    float *p = vt_f32(t);
    for (int64_t i = 0; i < t->numel; i++) p[i] = value;
    if (dev == VT_CPU) return t;
    vt_tensor *d = vt_to_device(t, dev);
    vt_release(t);
    return d;
}

vt_tensor *vt_new_f32(int ndim, const int64_t *shape) { return vt_zeros(VT_F32, VT_CPU, ndim, shape); }

vt_tensor *vt_from_f32(int ndim, const int64_t *shape, const float *data) {
    vt_tensor *t = vt_empty(VT_F32, VT_CPU, ndim, shape);
    if (t) memcpy(vt_data(t), data, vt_nbytes(t));
    return t;
}

vt_tensor *vt_view_storage(vt_storage *s, size_t offset, vt_dtype dt, int ndim, const int64_t *shape) {
    vt_tensor *t = tensor_header(dt, s->device, ndim, shape);
    if (!t) return NULL;
    if (offset + (size_t)t->numel * vt_dtype_size(dt) > s->nbytes) {
        char b[VT_SHAPE_BUF];
        vt_error(VT_ERR_SHAPE, "view %s at byte %zu exceeds a storage of %zu bytes",
                 vt_shape_str(t, b, sizeof b), offset, s->nbytes);
        free(t);
        return NULL;
    }
    vt_storage_retain(s);
    t->storage = s;
    t->offset = offset;
    return t;
}

vt_tensor *vt_view(vt_tensor *t, int ndim, const int64_t *shape) {
    if (!t) return NULL;
    if (check_shape(ndim, shape) != VT_OK) return NULL;
    if (vt_dim_prod(ndim, shape) != t->numel) {
        char a[VT_SHAPE_BUF], b[VT_SHAPE_BUF];
        vt_error(VT_ERR_SHAPE, "view: cannot view %s as %s (element counts differ)",
                 vt_shape_str(t, a, sizeof a), vt_shape_str_raw(ndim, shape, b, sizeof b));
        return NULL;
    }
    return vt_view_storage(t->storage, t->offset, t->dtype, ndim, shape);
}

vt_tensor *vt_clone(const vt_tensor *t) {
    if (!t) return NULL;
    if (t->device != VT_CPU) return vt_to_device(t, t->device);
    vt_tensor *c = vt_empty(t->dtype, t->device, t->ndim, t->shape);
    if (c) memcpy(vt_data(c), vt_data(t), vt_nbytes(t));
    return c;
}

vt_tensor *vt_detach(vt_tensor *t) {
    if (!t) return NULL;
    return vt_view_storage(t->storage, t->offset, t->dtype, t->ndim, t->shape);
}

vt_tensor *vt_retain(vt_tensor *t) {
    if (t) __atomic_add_fetch(&t->refcount, 1, __ATOMIC_RELAXED);
    return t;
}

void vt_release(vt_tensor *t) {
    if (!t) return;
    if (__atomic_sub_fetch(&t->refcount, 1, __ATOMIC_ACQ_REL) == 0) {
        vt_release(t->grad);
        vt_storage_release(t->storage);
        free(t);
    }
}

// ---- dtype conversion --------------------------------------------------------------------
float vt_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0) {
        if (man == 0) u = sign;
        else {  // subnormal: normalise
            exp = 127 - 15 + 1;
            while (!(man & 0x400u)) { man <<= 1; exp--; }
            man &= 0x3ffu;
            u = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t vt_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    int32_t exp = (int32_t)((u >> 23) & 0xffu) - 127 + 15;
    uint32_t man = u & 0x7fffffu;
    if (((u >> 23) & 0xffu) == 0xffu) return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00u);  // overflow to inf
    if (exp <= 0) {                                    // subnormal or zero
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1u))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)exp << 10) | (man >> 13);
    uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;  // carries into exp correctly
    return (uint16_t)h;
}

vt_tensor *vt_to_dtype(const vt_tensor *t, vt_dtype dt) {
    if (!t) return NULL;
    if (t->device != VT_CPU) {
        vt_error(VT_ERR_DTYPE, "vt_to_dtype: only cpu tensors (got %s)", vt_device_name(t->device));
        return NULL;
    }
    if (t->dtype == dt) return vt_clone(t);
    if (dt == VT_I64) {
        vt_error(VT_ERR_DTYPE, "vt_to_dtype: cannot convert %s to i64", vt_dtype_name(t->dtype));
        return NULL;
    }
    vt_tensor *o = vt_empty(dt, VT_CPU, t->ndim, t->shape);
    if (!o) return NULL;
    const void *src = vt_data(t);
    void *dst = vt_data(o);
    for (int64_t i = 0; i < t->numel; i++) {
        float v;
        switch (t->dtype) {
        case VT_F32: v = ((const float *)src)[i]; break;
        case VT_BF16: v = vt_bf16_to_f32(((const uint16_t *)src)[i]); break;
        case VT_F16: v = vt_f16_to_f32(((const uint16_t *)src)[i]); break;
        default: v = (float)((const int64_t *)src)[i]; break;
        }
        switch (dt) {
        case VT_F32: ((float *)dst)[i] = v; break;
        case VT_BF16: ((uint16_t *)dst)[i] = vt_f32_to_bf16(v); break;
        case VT_F16: ((uint16_t *)dst)[i] = vt_f32_to_f16(v); break;
        default: break;
        }
    }
    return o;
}

// Device copies go through a hook the CUDA backend installs (cuda/), so core stays CUDA-free.
vt_err (*vt_device_copy_hook)(void *dst, vt_device ddev, const void *src, vt_device sdev, size_t n) = NULL;

vt_tensor *vt_to_device(const vt_tensor *t, vt_device dev) {
    if (!t) return NULL;
    vt_tensor *o = vt_empty(t->dtype, dev, t->ndim, t->shape);
    if (!o) return NULL;
    if (dev == VT_CPU && t->device == VT_CPU) {
        memcpy(vt_data(o), vt_data(t), vt_nbytes(t));
        return o;
    }
    if (!vt_device_copy_hook) {
        vt_release(o);
        vt_error(VT_ERR_DEVICE, "copy %s -> %s: the CUDA backend is not initialised",
                 vt_device_name(t->device), vt_device_name(dev));
        return NULL;
    }
    if (vt_device_copy_hook(vt_data(o), dev, vt_data(t), t->device, vt_nbytes(t)) != VT_OK) {
        vt_release(o);
        return NULL;
    }
    return o;
}

vt_tensor *vt_on_device(const vt_tensor *t, vt_device dev) {
    if (!t) return NULL;
    if (t->device == dev) return vt_retain((vt_tensor *)t);
    return vt_to_device(t, dev);
}

vt_tensor *vt_move_to(vt_tensor *t, vt_device dev) {
    if (!t || t->device == dev) return t;
    vt_tensor *d = vt_to_device(t, dev);
    vt_release(t);
    return d;
}

static vt_err copy_bytes_any(void *dst, vt_device ddev, const void *src, vt_device sdev, size_t n) {
    if (ddev == VT_CPU && sdev == VT_CPU) {
        memcpy(dst, src, n);
        return VT_OK;
    }
    if (!vt_device_copy_hook)
        return vt_error(VT_ERR_DEVICE, "copy %s -> %s: the CUDA backend is not initialised", vt_device_name(sdev),
                        vt_device_name(ddev));
    return vt_device_copy_hook(dst, ddev, src, sdev, n);
}

vt_err vt_copy_into(vt_tensor *dst, const vt_tensor *src) {
    if (!dst || !src) return vt_error(VT_ERR_ARG, "copy_into: NULL tensor");
    if (dst->dtype != src->dtype || dst->numel != src->numel) {
        char a[VT_SHAPE_BUF], b[VT_SHAPE_BUF];
        return vt_error(VT_ERR_SHAPE, "copy_into: %s %s from %s %s", vt_dtype_name(dst->dtype),
                        vt_shape_str(dst, a, sizeof a), vt_dtype_name(src->dtype), vt_shape_str(src, b, sizeof b));
    }
    return copy_bytes_any(vt_data(dst), dst->device, vt_data(src), src->device, vt_nbytes(dst));
}

vt_err vt_tensors_to_device(vt_tensor *const *ts, int n, vt_device dev) {
    for (int i = 0; i < n; i++) {
        vt_tensor *t = ts[i];
        if (!t) continue;
        if (t->grad && t->grad->device != dev) {
            vt_tensor *g = vt_to_device(t->grad, dev);
            if (!g) return vt_error_context("move to %s: gradient: ", vt_device_name(dev));
            vt_release(t->grad);
            t->grad = g;
        }
        if (t->storage->device == dev) continue;
        // the byte range every tensor of this storage uses (views of a packed weight share it)
        vt_storage *s = t->storage;
        size_t lo = t->offset, hi = t->offset + vt_nbytes(t);
        for (int j = i + 1; j < n; j++)
            if (ts[j] && ts[j]->storage == s) {
                if (ts[j]->offset < lo) lo = ts[j]->offset;
                if (ts[j]->offset + vt_nbytes(ts[j]) > hi) hi = ts[j]->offset + vt_nbytes(ts[j]);
            }
        lo &= ~(size_t)63;  // keep each view's alignment relative to the (aligned) new block
        vt_storage *ns = vt_storage_new(dev, hi - lo);
        if (!ns) return vt_error_context("move %zu bytes to %s: ", hi - lo, vt_device_name(dev));
        vt_err e = copy_bytes_any(ns->data, dev, (const char *)s->data + lo, s->device, hi - lo);
        if (e) {
            vt_storage_release(ns);
            return e;
        }
        for (int j = i; j < n; j++) {
            vt_tensor *u = ts[j];
            if (!u || u->storage != s) continue;
            vt_storage_retain(ns);
            u->storage = ns;
            u->offset -= lo;
            u->device = dev;
            vt_storage_release(s);  // no new storage is made inside this loop: s's address stays unique
        }
        vt_storage_release(ns);
    }
    return VT_OK;
}

static int byte_ranges_overlap(const vt_tensor *a, const vt_tensor *b) {
    return a->storage == b->storage && a->offset < b->offset + vt_nbytes(b) && b->offset < a->offset + vt_nbytes(a);
}

vt_err vt_tensors_to_dtype(vt_tensor *const *ts, int n, vt_dtype dt) {
    if (dt == VT_I64) return vt_error(VT_ERR_DTYPE, "convert weights: i64 is not a weight dtype");
    char s1[VT_SHAPE_BUF];
    for (int i = 0; i < n; i++) {
        vt_tensor *t = ts[i];
        if (!t || t->dtype == dt) continue;
        if (t->dtype == VT_I64)
            return vt_error(VT_ERR_DTYPE, "convert weights: tensor %d %s is i64", i, vt_shape_str(t, s1, sizeof s1));
        if (t->requires_grad || t->grad || t->tape_id)
            return vt_error(VT_ERR_ARG, "convert weights: tensor %d %s is trainable or recorded (only frozen weights "
                            "change dtype)", i, vt_shape_str(t, s1, sizeof s1));
    }
    for (int i = 0; i < n; i++) {
        vt_tensor *t = ts[i];
        if (!t || t->dtype == dt) continue;
        // the cluster of t: the given tensors whose bytes overlap t's (a packed in_proj and its
        // q / k / v row views), converted as one range so the views stay views of it
        const vt_dtype from = t->dtype;
        size_t lo = t->offset, hi = t->offset + vt_nbytes(t);
        for (int j = i + 1; j < n; j++)
            if (ts[j] && ts[j]->dtype == from && byte_ranges_overlap(ts[j], t)) {
                if (ts[j]->offset < lo) lo = ts[j]->offset;
                if (ts[j]->offset + vt_nbytes(ts[j]) > hi) hi = ts[j]->offset + vt_nbytes(ts[j]);
            }
        const size_t es = vt_dtype_size(from), ns = vt_dtype_size(dt);
        if ((hi - lo) % es || (lo - t->offset) % es)
            return vt_error(VT_ERR_INTERNAL, "convert weights: tensor %d %s: views not on element boundaries", i,
                            vt_shape_str(t, s1, sizeof s1));
        const int64_t count = (int64_t)((hi - lo) / es);
        // the range as a flat tensor on the host (a view of the storage on the CPU), converted
        // there, then placed on the tensors' device
        vt_tensor *flat = vt_view_storage(t->storage, lo, from, 1, &count);
        vt_tensor *host = flat ? vt_on_device(flat, VT_CPU) : NULL;
        vt_release(flat);
        vt_tensor *conv = host ? vt_to_dtype(host, dt) : NULL;
        vt_release(host);
        vt_tensor *placed = conv ? vt_move_to(conv, t->device) : NULL;
        if (!placed) return vt_error_context("convert weights to %s: tensor %d %s: ", vt_dtype_name(dt), i,
                                             vt_shape_str(t, s1, sizeof s1));
        vt_storage *old = t->storage;
        for (int j = i; j < n; j++) {
            vt_tensor *u = ts[j];
            if (!u || u->dtype != from || u->storage != old || u->offset < lo || u->offset + vt_nbytes(u) > hi) continue;
            vt_storage_retain(placed->storage);
            u->offset = placed->offset + (u->offset - lo) / es * ns;
            u->storage = placed->storage;
            u->dtype = dt;
            vt_storage_release(old);  // old's address stays unique: no storage is made in this loop
        }
        vt_release(placed);
    }
    return VT_OK;
}

// ---- shapes ------------------------------------------------------------------------------
int64_t vt_dim(const vt_tensor *t, int d) { return t->shape[d < 0 ? d + t->ndim : d]; }

int vt_same_shape(const vt_tensor *a, const vt_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

int vt_shape_eq(const vt_tensor *t, int ndim, const int64_t *shape) {
    if (t->ndim != ndim) return 0;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return 0;
    return 1;
}

char *vt_shape_str_raw(int ndim, const int64_t *shape, char *buf, size_t n) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

char *vt_shape_str(const vt_tensor *t, char *buf, size_t n) {
    if (!t) {
        snprintf(buf, n, "(null)");
        return buf;
    }
    return vt_shape_str_raw(t->ndim, t->shape, buf, n);
}

// ---- RNG: xoshiro256** seeded by splitmix64 ------------------------------------------------
static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void vt_rng_seed(vt_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = vt_hash64(seed, (uint64_t)i);
}

uint64_t vt_rng_u64(vt_rng *r) {
    uint64_t *s = r->s;
    uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return res;
}

float vt_rng_uniform(vt_rng *r) { return (float)(vt_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

float vt_rng_normal(vt_rng *r) {
    // Box-Muller on two 53-bit uniforms; u1 in (0, 1] so the log is finite.
    double u1 = ((double)(vt_rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(vt_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void vt_fill_normal(vt_tensor *t, vt_rng *r, float mean, float std) {
    float *p = vt_f32(t);
    for (int64_t i = 0; i < t->numel; i++) p[i] = mean + std * vt_rng_normal(r);
}

void vt_fill_uniform(vt_tensor *t, vt_rng *r, float lo, float hi) {
    float *p = vt_f32(t);
    for (int64_t i = 0; i < t->numel; i++) p[i] = lo + (hi - lo) * vt_rng_uniform(r);
}

double vt_rel_err(const vt_tensor *a, const vt_tensor *b) {
    const float *pa = vt_f32(a), *pb = vt_f32(b);
    double num = 0, den = 0;
    for (int64_t i = 0; i < b->numel; i++) {
        double d = fabs((double)pa[i] - (double)pb[i]);
        if (d > num || isnan(d)) num = isnan(d) ? INFINITY : d;
        if (fabs((double)pb[i]) > den) den = fabs((double)pb[i]);
    }
    if (den == 0) return num;
    return num / den;
}
