/* qkv: the elementwise work of one memory-efficient attention block, fused (see native.py).
 *
 * C on _simd.h's vectors (no Python, no torch headers; one build per instruction set): VW keys per step,
 * bf16 converted on load/store, float32 arithmetic. Conventions follow blocks.py: a tile is N heads x R rows x K keys,
 * row-major, scores in log2 units; row r of a tile is query qs + r / G. Masked entries (-inf in the
 * scores, outside the row's visible key interval, or False in a bool mask) get weights of exactly 0.
 * Loops over rows are OpenMP parallel when built with -fopenmp (on torch's own libgomp, see native.py).
 * Where these kernels are used is routing.py's table (per CPU class, from the benchmarks), not this file.
 */
#include "_simd.h"

/* The build's variant, checked by the loader against the one it asked for. */
const char *qkv_variant(void) { return QKV_VARIANT; }

/* 2**x in float32 (relative error ~2e-7); exactly 0 for x < -126 (and -inf). */
static inline float fexp2(float x) {
    float xc = x < -126.0f ? -126.0f : (x > 127.0f ? 127.0f : x);
    float t = xc + 12582912.0f; /* 1.5 * 2**23: rounds to the nearest integer */
    float n = t - 12582912.0f;
    float f = xc - n; /* [-0.5, 0.5] */
    float p = 1.535336188319500e-4f;
    p = p * f + 1.339887440266574e-3f;
    p = p * f + 9.618437357674640e-3f;
    p = p * f + 5.550332471162809e-2f;
    p = p * f + 2.402264791363012e-1f;
    p = p * f + 6.931472028550421e-1f;
    p = p * f + 1.0f;
    union { uint32_t u; float f; } sc;
    sc.u = (uint32_t)((int32_t)n + 127) << 23;
    float r = p * sc.f;
    return x < -126.0f ? 0.0f : r;
}

/* Visible keys of tile row r, as columns [*c0, *c1) of the tile. iv: NULL (all keys) or
 * {p0, G, causal, window (0: none), length, ks}: row r is the query at key position p = p0 + r / G. */
static void row_interval(const int64_t *iv, long r, long K, long *c0, long *c1) {
    if (!iv) {
        *c0 = 0;
        *c1 = K;
        return;
    }
    int64_t p = iv[0] + r / iv[1], lo = 0, hi = iv[4];
    if (iv[2] && p + 1 < hi) hi = p + 1;
    if (iv[3]) {
        if (p - iv[3] + 1 > lo) lo = p - iv[3] + 1;
        if (!iv[2] && p + iv[3] < hi) hi = p + iv[3];
    }
    lo -= iv[5];
    hi -= iv[5];
    *c0 = lo < 0 ? 0 : (lo > K ? K : lo);
    *c1 = hi < *c0 ? *c0 : (hi > K ? K : hi);
}

/* In the loops below a chunk of VW keys inside [c0, c1) takes the unmasked path; only the edges of the
 * visible interval (and a tail past K) compute lane masks. */

/* A bool mask row (one byte per key, nonzero = may attend) as lanes; all lanes without a mask. */
QKV_INLINE vmask mask_bits(const uint8_t *mk, long c, vmask k) { return mk ? vm_bytes(mk, c, k) : k; }

/* Forward row: returns the row max over [c0, c1) where the mask allows (-inf if nothing). */
QKV_INLINE float vrow_max(const void *s, int dt, long c0, long c1, const uint8_t *mk) {
    vf m = vset1(-__builtin_inff());
    for (long c = c0 & ~(long)(VW - 1); c < c1; c += VW) {
        if (c >= c0 && c + VW <= c1 && !mk) {
            m = vmax(m, vloadu(s, dt, c));
        } else {
            vmask k = mask_bits(mk, c, vm_lanes(c, c0, c1));
            m = vmask_max(m, k, vload(s, dt, c, k));
        }
    }
    return vreduce_max(m);
}

/* p = 2**(s - sub) on [c0, c1) where the mask allows, 0 elsewhere in [0, K), stored in pdt; returns the sum. */
QKV_INLINE float vrow_exp2(const void *s, int dt, void *p, int pdt, long K, long c0, long c1, float sub,
                           const uint8_t *mk) {
    vf acc = vzero(), b = vset1(sub);
    for (long c = 0; c < K; c += VW) {
        vf e;
        if (c >= c0 && c + VW <= c1 && !mk) {
            e = vexp2(vsub(vloadu(s, dt, c), b), pdt == DT_F32);
            vstoreu(p, pdt, c, e);
        } else {
            vmask t = vm_lanes(c, 0, K), k = mask_bits(mk, c, vm_lanes(c, c0, c1));
            e = vmaskz(k, vexp2(vsub(vload(s, dt, c, k), b), pdt == DT_F32));
            vstore(p, pdt, c, e, t);
        }
        acc = vadd(acc, e);
    }
    return vreduce_add(acc);
}

QKV_INLINE void vrow_grad(const void *s, const void *dp, int dt, void *pr, void *dr, int odt, long K, long c0,
                          long c1, float lse, float delta, const uint8_t *mk) {
    vf b = vset1(lse), d = vset1(delta);
    for (long c = 0; c < K; c += VW) {
        if (c >= c0 && c + VW <= c1 && !mk) {
            vf e = vexp2(vsub(vloadu(s, dt, c), b), odt == DT_F32);
            vf g = vmul(e, vsub(vloadu(dp, dt, c), d));
            if (pr) vstoreu(pr, odt, c, e);
            vstoreu(dr, odt, c, g);
        } else {
            vmask t = vm_lanes(c, 0, K), k = mask_bits(mk, c, vm_lanes(c, c0, c1));
            vf e = vmaskz(k, vexp2(vsub(vload(s, dt, c, k), b), odt == DT_F32));
            vf g = vmul(e, vsub(vload(dp, dt, c, k), d));
            if (pr) vstore(pr, odt, c, e, t);
            vstore(dr, odt, c, g, t);
        }
    }
}


/* The bool mask row of tile row r of head n, or NULL. mk points at the block's (0, 0) entry; ms holds the
 * mask's strides in bytes over (batch, kv head, query, group) (0 where broadcast) and H_kv, G: head n is
 * (n / H_kv, n % H_kv), row r is (r / G, r % G). Keys are contiguous (stride 1). */
static inline const uint8_t *mask_row(const uint8_t *mk, const int64_t *ms, long n, long r) {
    if (!mk) return NULL;
    return mk + (n / ms[4]) * ms[0] + (n % ms[4]) * ms[1] + (r / ms[5]) * ms[2] + (r % ms[5]) * ms[3];
}

/* One online-softmax step of the forward pass, per head n and row r:
 *   m' = max(m, max_c s), p = 2**(s - m'), l = l * 2**(m - m') + sum p, acc *= 2**(m - m') (unless first).
 * s, p: (N, R, K) with head strides s_hs, p_hs; m, l: (N, R) head stride st_hs; acc: head/row strides. */
int qkv_forward_tile(long N, long R, long K, const void *s, int s_dt, long s_hs, void *p, int p_dt, long p_hs,
                     float *m, float *l, long st_hs, float *acc, long acc_hs, long acc_rs, long Ev, int first,
                     const int64_t *iv, const uint8_t *mk, const int64_t *ms, int nt) {
    long isz = s_dt == DT_BF16 ? 2 : 4, osz = p_dt == DT_BF16 ? 2 : 4;
#pragma omp parallel for collapse(2) schedule(static) num_threads(nt) if (nt > 1)
    for (long n = 0; n < N; n++)
        for (long r = 0; r < R; r++) {
            const char *sr = (const char *)s + (n * s_hs + r * K) * isz;
            char *pr = (char *)p + (n * p_hs + r * K) * osz;
            long c0, c1;
            row_interval(iv, r, K, &c0, &c1);
            float *mr = m + n * st_hs + r, *lr = l + n * st_hs + r;
            const uint8_t *mrow = mask_row(mk, ms, n, r);
            float mo = *mr;
            float mn = s_dt == DT_BF16 ? vrow_max(sr, DT_BF16, c0, c1, mrow) : vrow_max(sr, DT_F32, c0, c1, mrow);
            mn = mn > mo ? mn : mo;
            if (mn == -__builtin_inff()) { /* nothing visible yet: zero weights, state unchanged */
                memset(pr, 0, (size_t)K * osz);
                continue;
            }
            float sum;
            if (s_dt == DT_BF16)
                sum = p_dt == DT_BF16 ? vrow_exp2(sr, DT_BF16, pr, DT_BF16, K, c0, c1, mn, mrow)
                                      : vrow_exp2(sr, DT_BF16, pr, DT_F32, K, c0, c1, mn, mrow);
            else
                sum = p_dt == DT_BF16 ? vrow_exp2(sr, DT_F32, pr, DT_BF16, K, c0, c1, mn, mrow)
                                      : vrow_exp2(sr, DT_F32, pr, DT_F32, K, c0, c1, mn, mrow);
            float alpha = fexp2(mo - mn);
            *lr = *lr * alpha + sum;
            *mr = mn;
            if (!first && alpha != 1.0f) {
                float *a = acc + n * acc_hs + r * acc_rs;
                for (long e = 0; e < Ev; e++) a[e] *= alpha;
            }
        }
    return 0;
}

/* The backward pass's weights and score gradients of one tile, per head n and row r:
 *   p = 2**(s - lse), ds = p * (dp - delta)
 * s, dp: (N, R, K) rows of K with head stride s_hs (both); lse, delta: (N, R) head stride st_hs;
 * p_out (may be NULL), ds_out: contiguous (N, R, K) in out_dt. */
int qkv_backward_tile(long N, long R, long K, const void *s, const void *dp, int in_dt, long s_hs,
                      const float *lse, const float *delta, long st_hs, void *p_out, void *ds_out, int out_dt,
                      const int64_t *iv, const uint8_t *mk, const int64_t *ms, int nt) {
    long isz = in_dt == DT_BF16 ? 2 : 4, osz = out_dt == DT_BF16 ? 2 : 4;
#pragma omp parallel for collapse(2) schedule(static) num_threads(nt) if (nt > 1)
    for (long n = 0; n < N; n++)
        for (long r = 0; r < R; r++) {
            long c0, c1, so = (n * s_hs + r * K) * isz, oo = (n * R * K + r * K) * osz;
            row_interval(iv, r, K, &c0, &c1);
            float b = lse[n * st_hs + r], d = delta[n * st_hs + r];
            const char *sr = (const char *)s + so, *dpr = (const char *)dp + so;
            char *po = p_out ? (char *)p_out + oo : NULL, *dso = (char *)ds_out + oo;
            const uint8_t *mrow = mask_row(mk, ms, n, r);
            if (in_dt == DT_BF16)
                if (out_dt == DT_BF16) vrow_grad(sr, dpr, DT_BF16, po, dso, DT_BF16, K, c0, c1, b, d, mrow);
                else vrow_grad(sr, dpr, DT_BF16, po, dso, DT_F32, K, c0, c1, b, d, mrow);
            else if (out_dt == DT_BF16) vrow_grad(sr, dpr, DT_F32, po, dso, DT_BF16, K, c0, c1, b, d, mrow);
            else vrow_grad(sr, dpr, DT_F32, po, dso, DT_F32, K, c0, c1, b, d, mrow);
        }
    return 0;
}

/* Row r of head n of a tensor of dtype dt with {head, row} element strides hs, rs. */
QKV_INLINE char *row_at(const void *base, int dt, long hs, long rs, long n, long r) {
    return (char *)base + (n * hs + r * rs) * (dt == DT_BF16 ? 2 : 4);
}

/* out[n * R + r] = sum_e a[n][r][e] * b[n][r][e] in float32: rows of E elements of dtypes adt, bdt with
 * {head, row} element strides (the backward pass's delta = rowsum(dO * O), one pass and no float32 copy). */
int qkv_rowdot(long N, long R, long E, const void *a, int adt, long a_hs, long a_rs, const void *b, int bdt,
               long b_hs, long b_rs, float *out, int nt) {
#pragma omp parallel for collapse(2) schedule(static) num_threads(nt) if (nt > 1)
    for (long n = 0; n < N; n++)
        for (long r = 0; r < R; r++) {
            const char *ar = row_at(a, adt, a_hs, a_rs, n, r), *br = row_at(b, bdt, b_hs, b_rs, n, r);
            vf acc = vzero();
            for (long c = 0; c < E; c += VW) acc = vfmadd(vload_part(ar, adt, c, E), vload_part(br, bdt, c, E), acc);
            out[n * R + r] = vreduce_add(acc);
        }
    return 0;
}

/* dst[n][r][:] = scale * src[n][r][:], converted from sdt to ddt: rows of E elements with {head, row} element
 * strides (block copies of the queries with their scale, gradients and outputs cast on the way out). */
int qkv_scale_rows(long N, long R, long E, const void *src, int sdt, long s_hs, long s_rs, void *dst, int ddt,
                   long d_hs, long d_rs, float scale, int nt) {
    vf sc = vset1(scale);
#pragma omp parallel for collapse(2) schedule(static) num_threads(nt) if (nt > 1)
    for (long n = 0; n < N; n++)
        for (long r = 0; r < R; r++) {
            const char *sr = row_at(src, sdt, s_hs, s_rs, n, r);
            char *dr = row_at(dst, ddt, d_hs, d_rs, n, r);
            scale_row(dr, ddt, E, sr, sdt, E, sc);
        }
    return 0;
}

/* acc (N, R, E) float32 with head/row strides = part (contiguous (N, R, E), dtype dt) if first, else += part. */
int qkv_accumulate(long N, long R, long E, float *acc, long acc_hs, long acc_rs, const void *part, int dt,
                   int first, int nt) {
#pragma omp parallel for collapse(2) schedule(static) num_threads(nt) if (nt > 1)
    for (long n = 0; n < N; n++)
        for (long r = 0; r < R; r++) {
            float *a = acc + n * acc_hs + r * acc_rs;
            long off = (n * R + r) * E;
            if (dt == DT_BF16) {
                const uint16_t *b = (const uint16_t *)part + off;
                if (first)
                    for (long e = 0; e < E; e++) a[e] = bf2f(b[e]);
                else
                    for (long e = 0; e < E; e++) a[e] += bf2f(b[e]);
            } else {
                const float *b = (const float *)part + off;
                if (first)
                    memcpy(a, b, (size_t)E * sizeof(float));
                else
                    for (long e = 0; e < E; e++) a[e] += b[e];
            }
        }
    return 0;
}

/* dst[n, b, a] = scale * src[n, a, b] for a < A, b < B: unit last strides, head/row strides given. */
int qkv_transpose(long N, long A, long B, const void *src, int sdt, long s_hs, long s_rs, void *dst, int ddt,
                  long d_hs, long d_rs, float scale, int nt) {
    long isz = sdt == DT_BF16 ? 2 : 4, osz = ddt == DT_BF16 ? 2 : 4;
#pragma omp parallel for collapse(2) schedule(static) num_threads(nt) if (nt > 1)
    for (long n = 0; n < N; n++)
        for (long a0 = 0; a0 < A; a0 += VW)
            for (long b0 = 0; b0 < B; b0 += VW) {
                long na = A - a0 < VW ? A - a0 : VW, nb = B - b0 < VW ? B - b0 : VW;
                const char *sp = (const char *)src + (n * s_hs + a0 * s_rs + b0) * isz;
                char *dp = (char *)dst + (n * d_hs + b0 * d_rs + a0) * osz;
                vf r[VW], sc = vset1(scale);
                vmask kb = vm_lanes(0, 0, nb), ka = vm_lanes(0, 0, na);
                for (long i = 0; i < VW; i++) r[i] = i < na ? vload(sp + i * s_rs * isz, sdt, 0, kb) : vzero();
                vtranspose(r);
                for (long j = 0; j < nb; j++) vstore(dp + j * d_rs * osz, ddt, 0, vmul(r[j], sc), ka);
            }
    return 0;
}
