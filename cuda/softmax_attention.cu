// softmax_attention.cu — softmax over the last dim and fused multi-head attention, forward and
// backward side by side, under the op names of core/ops/attention.c.
//
// Attention is flash-style: a block owns a tile of query rows of one (batch, head), walks the
// keys a tile at a time with an online softmax (running max m, running sum l, the accumulator
// rescaled by exp(m_old - m_new)), and never holds more than a [BQ, BK] block of scores. The
// forward saves exactly what the CPU op saves: q, k, v (save mask) and lse [B, H, Lq] =
// m + log l per query row. The backward recomputes probabilities P = exp(s - lse) blockwise:
//   query side (per query tile):  D_i = sum_j P_ij dP_ij (dP = dO V^T), then
//                                 dQ_i = scale sum_j P_ij (dP_ij - D_i) k_j
//   key side (per key tile):      dV_j = sum_i P_ij dO_i,  dK_j = scale sum_i dS_ij q_i
// D_i = rowsum(P * dP) equals rowsum(dO * O) but needs no saved output (as on the CPU). No
// atomics: every gradient element is owned by one thread, so results are deterministic.
// f32 throughout (scores, softmax and accumulators); head dims up to 256.
#include "cuda/common.cuh"
#include "core/ops/params.h"
#include <math.h>

// ---- softmax -----------------------------------------------------------------------------
#define SOFTMAX_THREADS 256

// x [M, n] -> y [M, n] = exp(x - max) / sum exp(x - max) per row (sum in double, as on the CPU);
// one block per row
template <typename T> __global__ void softmax_forward_kernel(const T *x, T *y, long long n) {
    const T *xr = x + (long long)blockIdx.x * n;
    T *yr = y + (long long)blockIdx.x * n;
    float mx = -INFINITY;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) {
        const float v = vt_ld(xr + j);
        mx = v > mx ? v : mx;
    }
    mx = vt_block_max(mx);
    double s = 0;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) {
        const float e = expf(vt_ld(xr + j) - mx);
        vt_st(yr + j, e);
        s += e;
    }
    const float inv = (float)(1.0 / vt_block_sum(s));
    for (long long j = threadIdx.x; j < n; j += blockDim.x) vt_st(yr + j, vt_ld(yr + j) * inv);  // own elements
}

// g [M, n], saved y [M, n] -> dx = y (g - sum_j g_j y_j)
template <typename T> __global__ void softmax_backward_kernel(const T *g, const T *y, T *dx, long long n) {
    const long long off = (long long)blockIdx.x * n;
    double dot = 0;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) dot += (double)vt_ld(g + off + j) * vt_ld(y + off + j);
    const float fd = (float)vt_block_sum(dot);
    for (long long j = threadIdx.x; j < n; j += blockDim.x)
        vt_st(dx + off + j, vt_ld(y + off + j) * (vt_ld(g + off + j) - fd));
}

static vt_err softmax_forward_cuda(vt_node *nd, vt_tensor *const *in, vt_tensor *out) {
    (void)nd;
    const int64_t n = vt_dim(out, -1), M = n ? out->numel / n : 0;
    if (M == 0) return VT_OK;
    unsigned grid = 0;
    if (vt_cuda_rows_grid("softmax", M, &grid)) return vt_error_code();
    softmax_forward_kernel<float><<<grid, SOFTMAX_THREADS>>>(vt_f32(in[0]), vt_f32(out), n);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

static vt_err softmax_backward_cuda(vt_node *nd, const vt_tensor *gout, vt_tensor **gin) {
    if (!nd->need[0]) return VT_OK;
    const vt_tensor *y = nd->saved[0];  // save_output: the probabilities
    gin[0] = vt_empty(VT_F32, VT_CUDA, y->ndim, y->shape);
    if (!gin[0]) return vt_error_code();
    const int64_t n = vt_dim(y, -1), M = n ? y->numel / n : 0;
    if (M == 0) return VT_OK;
    unsigned grid = 0;
    if (vt_cuda_rows_grid("softmax", M, &grid)) return vt_error_code();
    softmax_backward_kernel<float><<<grid, SOFTMAX_THREADS>>>(vt_f32(gout), vt_f32(y), vt_f32(gin[0]), n);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

// ---- attention: tiles --------------------------------------------------------------------
// DMAX: compile-time bound on the head dim d (<= DMAX; columns past d are zero in shared
// memory and skipped). Shared rows are padded to DMAX + 1 floats so that threads of a warp
// reading one column of different rows hit different banks.
#define ATTN_THREADS 128
template <int DMAX> struct attn_cfg {
    static constexpr int BQ = 16;                                                     // query rows / tile
    static constexpr int BK = DMAX >= 256 ? 8 : DMAX >= 128 ? 16 : DMAX >= 64 ? 32 : 64;  // keys / tile
    static constexpr int BKV = 16;                                                    // keys / key-side block
    static constexpr int DP = DMAX + 1;
    static constexpr int REG = BQ * DMAX / ATTN_THREADS;  // per-thread accumulators, query tile
    static constexpr int REGKV = BKV * DMAX / ATTN_THREADS;  // per-thread accumulators, key tile
    static_assert(BQ * DMAX % ATTN_THREADS == 0 && BKV * DMAX % ATTN_THREADS == 0, "tile / thread mismatch");
};

// Tile loads: rows [r0, r0 + rows) of src (row stride C, head offset applied) into dst
// [rows][DP]; rows past nrows and columns past d are zero.
template <int DMAX>
__device__ __forceinline__ void attn_load_tile(float *dst, int rows, const float *src, long long r0, long long nrows,
                                               long long C, int d) {
    for (int e = threadIdx.x; e < rows * DMAX; e += ATTN_THREADS) {
        const int r = e / DMAX, c = e % DMAX;
        const long long i = r0 + r;
        dst[r * attn_cfg<DMAX>::DP + c] = i < nrows && c < d ? src[i * C + c] : 0.0f;
    }
}

// Key j visible to query i (both in range): all keys, or j <= i when causal (top-left aligned).
__device__ __forceinline__ bool attn_visible(const vt_attention_params &p, long long i, long long j) {
    return i < p.Lq && j < p.Lk && !(p.causal && j > i);
}

__device__ __forceinline__ float attn_dot(const float *a, const float *b, int d) {
    float s = 0.0f;
    for (int c = 0; c < d; c++) s += a[c] * b[c];
    return s;
}

// Last key (exclusive) that any query row in [i0, i0 + rows) sees.
__device__ __forceinline__ long long attn_key_end(const vt_attention_params &p, long long i0, int rows) {
    if (!p.causal) return p.Lk;
    long long last = i0 + rows < p.Lq ? i0 + rows : p.Lq;  // one past the tile's last real row
    return last < p.Lk ? last : p.Lk;
}

// ---- attention forward -------------------------------------------------------------------
// q [B, Lq, H*d], k, v [B, Lk, H*d] -> o [B, Lq, H*d], lse [B, H, Lq] (NULL: not kept).
// grid (B*H, ceil(Lq / BQ)); shared Q [BQ][DP], K, V [BK][DP], S [BQ][BK]
template <int DMAX>
__global__ void __launch_bounds__(ATTN_THREADS)
    attn_forward_kernel(vt_attention_params p, const float *q, const float *k, const float *v, float *o, float *lse) {
    using cfg = attn_cfg<DMAX>;
    constexpr int BQ = cfg::BQ, BK = cfg::BK, DP = cfg::DP;
    extern __shared__ float smem[];
    float *Qs = smem, *Ks = Qs + BQ * DP, *Vs = Ks + BK * DP, *Ss = Vs + BK * DP;
    __shared__ float m_s[BQ], l_s[BQ], a_s[BQ];  // running max, running sum, rescale of this tile
    const long long C = p.H * p.d, bh = blockIdx.x, b = bh / p.H, h = bh % p.H;
    const long long i0 = (long long)blockIdx.y * BQ;
    const int d = (int)p.d, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const float *qb = q + b * p.Lq * C + h * p.d, *kb = k + b * p.Lk * C + h * p.d, *vb = v + b * p.Lk * C + h * p.d;

    attn_load_tile<DMAX>(Qs, BQ, qb, i0, p.Lq, C, d);
    if (tid < BQ) {
        m_s[tid] = -INFINITY;
        l_s[tid] = 0.0f;
    }
    float acc[cfg::REG];
#pragma unroll
    for (int t = 0; t < cfg::REG; t++) acc[t] = 0.0f;
    const long long kend = attn_key_end(p, i0, BQ);
    __syncthreads();
    for (long long j0 = 0; j0 < kend; j0 += BK) {
        attn_load_tile<DMAX>(Ks, BK, kb, j0, p.Lk, C, d);
        attn_load_tile<DMAX>(Vs, BK, vb, j0, p.Lk, C, d);
        __syncthreads();
        // scores, masked ones -inf (key index fastest: a warp reads K rows, one Q row)
        for (int e = tid; e < BQ * BK; e += ATTN_THREADS) {
            const int r = e / BK, jj = e % BK;
            const long long i = i0 + r, j = j0 + jj;
            // rows past Lq are padding: give them key 0..kend so their state stays finite
            const bool vis = i < p.Lq ? attn_visible(p, i, j) : j < p.Lk;
            Ss[e] = vis ? attn_dot(Qs + r * DP, Ks + jj * DP, d) * p.scale : -INFINITY;
        }
        __syncthreads();
        // online softmax: one warp per row
        for (int r = warp; r < BQ; r += ATTN_THREADS / 32) {
            float mx = -INFINITY;
            for (int jj = lane; jj < BK; jj += 32) mx = fmaxf(mx, Ss[r * BK + jj]);
            mx = vt_warp_max(mx);
            const float m_old = m_s[r], m_new = fmaxf(m_old, mx);
            float sum = 0.0f;
            for (int jj = lane; jj < BK; jj += 32) {
                const float s = Ss[r * BK + jj];
                const float pv = s == -INFINITY ? 0.0f : expf(s - m_new);
                Ss[r * BK + jj] = pv;
                sum += pv;
            }
            sum = vt_warp_sum(sum);
            if (lane == 0) {
                const float alpha = m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
                a_s[r] = alpha;
                l_s[r] = l_s[r] * alpha + sum;
                m_s[r] = m_new;
            }
        }
        __syncthreads();
        // O = O alpha + P V (column fastest: a warp reads one P row, consecutive V columns)
#pragma unroll
        for (int t = 0; t < cfg::REG; t++) {
            const int e = tid + t * ATTN_THREADS, r = e / DMAX, c = e % DMAX;
            float a = acc[t] * a_s[r];
            for (int jj = 0; jj < BK; jj++) a += Ss[r * BK + jj] * Vs[jj * DP + c];
            acc[t] = a;
        }
        __syncthreads();  // the next tile overwrites K, V, S
    }
    float *ob = o + b * p.Lq * C + h * p.d;
#pragma unroll
    for (int t = 0; t < cfg::REG; t++) {
        const int e = tid + t * ATTN_THREADS, r = e / DMAX, c = e % DMAX;
        const long long i = i0 + r;
        if (i < p.Lq && c < d) ob[i * C + c] = acc[t] / l_s[r];
    }
    if (lse && tid < BQ && i0 + tid < p.Lq) lse[bh * p.Lq + i0 + tid] = m_s[tid] + logf(l_s[tid]);
}

// ---- attention backward, query side ------------------------------------------------------
// g = dO [B, Lq, H*d], saved q, k, v, lse -> Dv [B*H, Lq] (row sums of P * dP) and, when dq is
// not NULL, dq [B, Lq, H*d]. grid (B*H, ceil(Lq / BQ)); shared Q, dO [BQ][DP], K, V [BK][DP],
// W [BQ][BK] (P * dP in pass 1, dS in pass 2)
template <int DMAX>
__global__ void __launch_bounds__(ATTN_THREADS)
    attn_backward_q_kernel(vt_attention_params p, const float *q, const float *k, const float *v, const float *g,
                           const float *lse, float *Dv, float *dq) {
    using cfg = attn_cfg<DMAX>;
    constexpr int BQ = cfg::BQ, BK = cfg::BK, DP = cfg::DP;
    extern __shared__ float smem[];
    float *Qs = smem, *Gs = Qs + BQ * DP, *Ks = Gs + BQ * DP, *Vs = Ks + BK * DP, *Ws = Vs + BK * DP;
    __shared__ float L_s[BQ], D_s[BQ];
    const long long C = p.H * p.d, bh = blockIdx.x, b = bh / p.H, h = bh % p.H;
    const long long i0 = (long long)blockIdx.y * BQ;
    const int d = (int)p.d, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const long long qo = b * p.Lq * C + h * p.d, ko = b * p.Lk * C + h * p.d;

    attn_load_tile<DMAX>(Qs, BQ, q + qo, i0, p.Lq, C, d);
    attn_load_tile<DMAX>(Gs, BQ, g + qo, i0, p.Lq, C, d);
    if (tid < BQ) {
        L_s[tid] = i0 + tid < p.Lq ? lse[bh * p.Lq + i0 + tid] : 0.0f;
        D_s[tid] = 0.0f;
    }
    const long long kend = attn_key_end(p, i0, BQ);
    for (int pass = 0; pass < (dq ? 2 : 1); pass++) {
        float acc[cfg::REG];
#pragma unroll
        for (int t = 0; t < cfg::REG; t++) acc[t] = 0.0f;
        for (long long j0 = 0; j0 < kend; j0 += BK) {
            __syncthreads();  // previous readers of K, V, W (and the initial loads) are done
            attn_load_tile<DMAX>(Ks, BK, k + ko, j0, p.Lk, C, d);
            attn_load_tile<DMAX>(Vs, BK, v + ko, j0, p.Lk, C, d);
            __syncthreads();
            for (int e = tid; e < BQ * BK; e += ATTN_THREADS) {
                const int r = e / BK, jj = e % BK;
                float w = 0.0f;
                if (attn_visible(p, i0 + r, j0 + jj)) {
                    const float pv = expf(attn_dot(Qs + r * DP, Ks + jj * DP, d) * p.scale - L_s[r]);
                    const float dp = attn_dot(Gs + r * DP, Vs + jj * DP, d);
                    w = pass == 0 ? pv * dp : pv * (dp - D_s[r]);
                }
                Ws[e] = w;
            }
            __syncthreads();
            if (pass == 0) {
                for (int r = warp; r < BQ; r += ATTN_THREADS / 32) {
                    float s = 0.0f;
                    for (int jj = lane; jj < BK; jj += 32) s += Ws[r * BK + jj];
                    s = vt_warp_sum(s);
                    if (lane == 0) D_s[r] += s;
                }
            } else {
#pragma unroll
                for (int t = 0; t < cfg::REG; t++) {
                    const int e = tid + t * ATTN_THREADS, r = e / DMAX, c = e % DMAX;
                    float a = acc[t];
                    for (int jj = 0; jj < BK; jj++) a += Ws[r * BK + jj] * Ks[jj * DP + c];
                    acc[t] = a;
                }
            }
        }
        __syncthreads();  // D_s complete before pass 2 / the write below
        if (pass == 1) {
            float *dqb = dq + qo;
#pragma unroll
            for (int t = 0; t < cfg::REG; t++) {
                const int e = tid + t * ATTN_THREADS, r = e / DMAX, c = e % DMAX;
                const long long i = i0 + r;
                if (i < p.Lq && c < d) dqb[i * C + c] = acc[t] * p.scale;
            }
        }
    }
    if (tid < BQ && i0 + tid < p.Lq) Dv[bh * p.Lq + i0 + tid] = D_s[tid];
}

// ---- attention backward, key side --------------------------------------------------------
// g = dO, saved q, k, v, lse, Dv (from the query side; unused when dk is NULL) -> dk, dv
// [B, Lk, H*d] (either may be NULL). grid (B*H, ceil(Lk / BKV)); shared K, V [BKV][DP],
// Q, dO [BK][DP] (query tiles of BK rows), P, dS [BK][BKV]
template <int DMAX>
__global__ void __launch_bounds__(ATTN_THREADS)
    attn_backward_kv_kernel(vt_attention_params p, const float *q, const float *k, const float *v, const float *g,
                            const float *lse, const float *Dv, float *dk, float *dv) {
    using cfg = attn_cfg<DMAX>;
    constexpr int BQ = cfg::BK, BKV = cfg::BKV, DP = cfg::DP;
    extern __shared__ float smem[];
    float *Ks = smem, *Vs = Ks + BKV * DP, *Qs = Vs + BKV * DP, *Gs = Qs + BQ * DP, *Ps = Gs + BQ * DP,
          *Ds = Ps + BQ * BKV;
    __shared__ float L_s[BQ], D_s[BQ];
    const long long C = p.H * p.d, bh = blockIdx.x, b = bh / p.H, h = bh % p.H;
    const long long j0 = (long long)blockIdx.y * BKV;
    const int d = (int)p.d, tid = threadIdx.x;
    const long long qo = b * p.Lq * C + h * p.d, ko = b * p.Lk * C + h * p.d;

    attn_load_tile<DMAX>(Ks, BKV, k + ko, j0, p.Lk, C, d);
    attn_load_tile<DMAX>(Vs, BKV, v + ko, j0, p.Lk, C, d);
    float adk[cfg::REGKV], adv[cfg::REGKV];
#pragma unroll
    for (int t = 0; t < cfg::REGKV; t++) adk[t] = adv[t] = 0.0f;
    // causal: only queries i >= j0 see a key of this tile
    for (long long i0 = p.causal ? j0 : 0; i0 < p.Lq; i0 += BQ) {
        __syncthreads();  // previous readers of Q, dO, P, dS (and the initial loads) are done
        attn_load_tile<DMAX>(Qs, BQ, q + qo, i0, p.Lq, C, d);
        attn_load_tile<DMAX>(Gs, BQ, g + qo, i0, p.Lq, C, d);
        if (tid < BQ) {
            const bool in = i0 + tid < p.Lq;
            L_s[tid] = in ? lse[bh * p.Lq + i0 + tid] : 0.0f;
            D_s[tid] = in && dk ? Dv[bh * p.Lq + i0 + tid] : 0.0f;
        }
        __syncthreads();
        for (int e = tid; e < BQ * BKV; e += ATTN_THREADS) {
            const int r = e / BKV, jj = e % BKV;
            float pv = 0.0f, ds = 0.0f;
            if (attn_visible(p, i0 + r, j0 + jj)) {
                pv = expf(attn_dot(Qs + r * DP, Ks + jj * DP, d) * p.scale - L_s[r]);
                if (dk) ds = pv * (attn_dot(Gs + r * DP, Vs + jj * DP, d) - D_s[r]);
            }
            Ps[e] = pv;
            Ds[e] = ds;
        }
        __syncthreads();
#pragma unroll
        for (int t = 0; t < cfg::REGKV; t++) {
            const int e = tid + t * ATTN_THREADS, jj = e / DMAX, c = e % DMAX;
            float sv = adv[t], sk = adk[t];
            for (int r = 0; r < BQ; r++) {
                sv += Ps[r * BKV + jj] * Gs[r * DP + c];
                sk += Ds[r * BKV + jj] * Qs[r * DP + c];
            }
            adv[t] = sv;
            adk[t] = sk;
        }
    }
#pragma unroll
    for (int t = 0; t < cfg::REGKV; t++) {
        const int e = tid + t * ATTN_THREADS, jj = e / DMAX, c = e % DMAX;
        const long long j = j0 + jj;
        if (j >= p.Lk || c >= d) continue;
        if (dv) dv[ko + j * C + c] = adv[t];
        if (dk) dk[ko + j * C + c] = adk[t] * p.scale;
    }
}

// ---- attention launchers -----------------------------------------------------------------
// Dynamic shared memory above the 48 KiB default needs the kernel's opt-in.
static vt_err attn_smem_optin(const void *kernel, size_t bytes) {
    if (bytes > 48 * 1024)
        VT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return VT_OK;
}

static vt_err attn_grid(const vt_attention_params *p, int64_t rows, int tile, dim3 *grid) {
    const int64_t bh = p->B * p->H, tiles = (rows + tile - 1) / tile;
    if (bh > 2147483647LL || tiles > 65535)
        return vt_error(VT_ERR_SHAPE, "attention: %lld batch-heads / %lld row tiles exceed one CUDA grid", (long long)bh,
                        (long long)tiles);
    *grid = dim3((unsigned)bh, (unsigned)tiles, 1);
    return VT_OK;
}

template <int DMAX> static vt_err attn_forward_launch(const vt_attention_params *p, const float *q, const float *k,
                                                      const float *v, float *o, float *lse) {
    using cfg = attn_cfg<DMAX>;
    const size_t smem = sizeof(float) * (cfg::BQ * cfg::DP + 2 * cfg::BK * cfg::DP + cfg::BQ * cfg::BK);
    dim3 grid;
    if (attn_grid(p, p->Lq, cfg::BQ, &grid) || attn_smem_optin((const void *)attn_forward_kernel<DMAX>, smem))
        return vt_error_code();
    attn_forward_kernel<DMAX><<<grid, ATTN_THREADS, smem>>>(*p, q, k, v, o, lse);
    VT_CUDA_CHECK_LAUNCH();
    return VT_OK;
}

template <int DMAX>
static vt_err attn_backward_launch(const vt_attention_params *p, const float *q, const float *k, const float *v,
                                   const float *g, const float *lse, float *Dv, float *dq, float *dk, float *dv) {
    using cfg = attn_cfg<DMAX>;
    if (dq || dk) {  // D is needed by dq and dk; dq itself only when asked
        const size_t smem = sizeof(float) * (2 * cfg::BQ * cfg::DP + 2 * cfg::BK * cfg::DP + cfg::BQ * cfg::BK);
        dim3 grid;
        if (attn_grid(p, p->Lq, cfg::BQ, &grid) || attn_smem_optin((const void *)attn_backward_q_kernel<DMAX>, smem))
            return vt_error_code();
        attn_backward_q_kernel<DMAX><<<grid, ATTN_THREADS, smem>>>(*p, q, k, v, g, lse, Dv, dq);
        VT_CUDA_CHECK_LAUNCH();
    }
    if (dk || dv) {
        const size_t smem = sizeof(float) * (2 * cfg::BKV * cfg::DP + 2 * cfg::BK * cfg::DP + 2 * cfg::BK * cfg::BKV);
        dim3 grid;
        if (attn_grid(p, p->Lk, cfg::BKV, &grid) || attn_smem_optin((const void *)attn_backward_kv_kernel<DMAX>, smem))
            return vt_error_code();
        attn_backward_kv_kernel<DMAX><<<grid, ATTN_THREADS, smem>>>(*p, q, k, v, g, lse, Dv, dk, dv);
        VT_CUDA_CHECK_LAUNCH();
    }
    return VT_OK;
}

static int attn_dmax(int64_t d) { return d <= 32 ? 32 : d <= 64 ? 64 : d <= 128 ? 128 : d <= 256 ? 256 : 0; }

// q [B, Lq, H*d], k, v [B, Lk, H*d] -> out [B, Lq, H*d]; extra saved: lse [B, H, Lq]
static vt_err attention_forward_cuda(vt_node *n, vt_tensor *const *in, vt_tensor *out) {
    const vt_attention_params *p = (const vt_attention_params *)n->params;
    const int dmax = attn_dmax(p->d);
    if (!dmax)
        return vt_error(VT_ERR_SHAPE, "attention: head dim %lld > 256 has no CUDA kernel", (long long)p->d);
    const int64_t lse_shape[3] = {p->B, p->H, p->Lq};
    vt_tensor *lse = n->recording ? vt_empty(VT_F32, VT_CUDA, 3, lse_shape) : NULL;
    if (n->recording && !lse) return vt_error_code();
    vt_err e = VT_OK;
    if (out->numel > 0) {
        const float *q = vt_f32(in[0]), *k = vt_f32(in[1]), *v = vt_f32(in[2]);
        float *o = vt_f32(out), *l = lse ? vt_f32(lse) : nullptr;
        e = dmax == 32    ? attn_forward_launch<32>(p, q, k, v, o, l)
            : dmax == 64  ? attn_forward_launch<64>(p, q, k, v, o, l)
            : dmax == 128 ? attn_forward_launch<128>(p, q, k, v, o, l)
                          : attn_forward_launch<256>(p, q, k, v, o, l);
    }
    if (e != VT_OK) {
        vt_release(lse);
        return e;
    }
    if (lse) n->saved[n->n_saved++] = lse;
    return VT_OK;
}

// gout [B, Lq, H*d]; saved q, k, v (inputs), lse -> dq, dk, dv
static vt_err attention_backward_cuda(vt_node *n, const vt_tensor *gout, vt_tensor **gin) {
    const vt_attention_params *p = (const vt_attention_params *)n->params;
    const int dmax = attn_dmax(p->d);
    if (!dmax)
        return vt_error(VT_ERR_SHAPE, "attention: head dim %lld > 256 has no CUDA kernel", (long long)p->d);
    for (int i = 0; i < 3; i++) {
        if (!n->need[i]) continue;
        // zeros: dk / dv rows no query sees and empty shapes stay zero
        gin[i] = vt_cuda_zeros(VT_F32, n->in_ndim[i], n->in_shape[i]);
        if (!gin[i]) return vt_error_code();
    }
    if (gout->numel == 0) return VT_OK;
    const float *q = vt_f32(n->saved[0]), *k = vt_f32(n->saved[1]), *v = vt_f32(n->saved[2]);
    const float *lse = vt_f32(n->saved[3]), *g = vt_f32(gout);
    float *dq = gin[0] ? vt_f32(gin[0]) : nullptr, *dk = gin[1] ? vt_f32(gin[1]) : nullptr;
    float *dv = gin[2] ? vt_f32(gin[2]) : nullptr;
    vt_tensor *D = NULL;
    if (dq || dk) {
        D = vt_cuda_scratch(VT_F32, p->B * p->H * p->Lq);
        if (!D) return vt_error_code();
    }
    float *Dv = D ? vt_f32(D) : nullptr;
    vt_err e = dmax == 32    ? attn_backward_launch<32>(p, q, k, v, g, lse, Dv, dq, dk, dv)
               : dmax == 64  ? attn_backward_launch<64>(p, q, k, v, g, lse, Dv, dq, dk, dv)
               : dmax == 128 ? attn_backward_launch<128>(p, q, k, v, g, lse, Dv, dq, dk, dv)
                             : attn_backward_launch<256>(p, q, k, v, g, lse, Dv, dq, dk, dv);
    vt_release(D);
    return e;
}

extern "C" vt_err vt_cuda_register_softmax_attention(void) {
    if (vt_register_kernels("softmax", VT_CUDA, softmax_forward_cuda, softmax_backward_cuda) ||
        vt_register_kernels("attention", VT_CUDA, attention_forward_cuda, attention_backward_cuda))
        return vt_error_code();
    return VT_OK;
}
