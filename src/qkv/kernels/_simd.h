/* qkv native kernels: the vector layer under _blocks.c and _short.c.
 *
 * The kernels are written once against the small vocabulary below and compiled once per instruction-set
 * variant (see native.py), which picks one by defining QKV_SIMD_<VARIANT>:
 *   QKV_SIMD_AVX512    _simd_avx512.h    16 lanes, lane masks in k registers; with __AVX512BF16__ the
 *                                         float32 -> bfloat16 rounding is one instruction (the avx512_bf16
 *                                         build), otherwise integer round-to-nearest-even (the avx512 build)
 *   QKV_SIMD_AVX2      _simd_avx2.h      8 lanes (AVX2 + FMA), lane masks as all-ones lanes
 *   QKV_SIMD_PORTABLE  _simd_portable.h  8 lanes as plain C arrays the compiler vectorises for its target
 *                                         (SSE2 on any x86-64, NEON on ARM): the build every machine can run
 *
 * Every variant computes in float32 and keeps bfloat16 as storage only (widened on load, rounded to nearest
 * even on store), so they agree to float32 rounding; sums may be ordered differently. The one exception: where
 * a header defines QKV_BF16_DOT 1 (the avx512_bf16 build), _short.c multiplies bfloat16 inputs with the CPU's
 * bfloat16 dot products (exact products, float32 sums), rounding its softmax weights and their gradients to
 * bfloat16 for the products that take them, as torch's flash attention does for bfloat16.
 *
 * Vocabulary (VW lanes; TILE_ROWS x TILE_VECS is the register tile of _short.c's micro-GEMM):
 *   vf, vmask                 a vector of VW floats, a lane mask
 *   vm_lanes(c, c0, c1)       lanes i with c0 <= c + i < c1
 *   vm_and, vm_bytes(mk, c, k) lanes of k whose byte mk[c + i] is nonzero (reads only lanes in k)
 *   vzero, vset1, vadd, vsub, vmul, vmax, vfmadd(a, b, c) = a * b + c, vfmsub = a * b - c
 *   vmaskz(k, v), vmaskz_mul(k, a, b), vmask_max(m, k, x)   zero / keep lanes outside k
 *   vloadf, vstoref            float32, all lanes;  vload / vstore (row, dt, c, [v,] k): element c of a row of
 *                             dtype dt, lanes in k only (others read as 0, memory outside k untouched);
 *                             vloadu / vstoreu: all lanes (built here from each header's vload_bf16 /
 *                             vstore_bf16; the x86 headers' plain arithmetic from QKV_X86_ARITH)
 *   vload_part(row, dt, c, n), vstore_part(row, dt, c, n, v): elements [c, c + VW) of a row of n
 *   scale_row(dst, ddt, dn, src, sdt, sn, mul): a whole row, scaled and converted (built from the two above)
 *   vreduce_max, vreduce_add, vtranspose(r[VW]): r[i] row i -> r[j] column j
 *   vm_ge(x, t), vround (to nearest), vldexp(p, n) = p * 2**n for integral n in [-126, 127] (others: any
 *                             value; vexp2 masks those lanes), from which this file builds vexp2(x, precise)
 *   with QKV_BF16_DOT 1 only (vectors of VW lanes each holding two bfloat16, element 2i in the low half):
 *   vdot_bf16(c, a, b)         c + a[2i] * b[2i] + a[2i + 1] * b[2i + 1] per lane
 *   vpair_bf16(lo, hi)         lanes (bf16(lo[i]), bf16(hi[i])), rounded to nearest even
 *   vstore_half_bf16(w, v, hi) bf16(v[i]) into the low (hi 0) or high half of word w[i], the other half untouched
 */
#ifndef QKV_SIMD_H
#define QKV_SIMD_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DT_F32 0
#define DT_BF16 1

#define QKV_INLINE static inline __attribute__((always_inline))

static inline float bf2f(uint16_t h) {
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}

/* float32 -> bfloat16, rounded to nearest even (NaN stays a quiet NaN), as torch converts. */
static inline uint16_t f2bf(float f) {
    union { uint32_t u; float f; } v;
    v.f = f;
    if (f != f) return 0x7FC0;
    return (uint16_t)((v.u + 0x7FFFu + ((v.u >> 16) & 1u)) >> 16);
}

/* The float32 arithmetic of an x86 header whose intrinsics are named P##_op_ps (P: _mm256, _mm512). */
#define QKV_X86_ARITH(P)                                                                    \
    QKV_INLINE vf vzero(void) { return P##_setzero_ps(); }                                   \
    QKV_INLINE vf vset1(float x) { return P##_set1_ps(x); }                                  \
    QKV_INLINE vf vadd(vf a, vf b) { return P##_add_ps(a, b); }                              \
    QKV_INLINE vf vsub(vf a, vf b) { return P##_sub_ps(a, b); }                              \
    QKV_INLINE vf vmul(vf a, vf b) { return P##_mul_ps(a, b); }                              \
    QKV_INLINE vf vmax(vf a, vf b) { return P##_max_ps(a, b); }                              \
    QKV_INLINE vf vfmadd(vf a, vf b, vf c) { return P##_fmadd_ps(a, b, c); }                 \
    QKV_INLINE vf vfmsub(vf a, vf b, vf c) { return P##_fmsub_ps(a, b, c); }                 \
    QKV_INLINE vf vloadf(const float *p) { return P##_loadu_ps(p); }                         \
    QKV_INLINE void vstoref(float *p, vf v) { P##_storeu_ps(p, v); }

/* vloadu / vstoreu from each header's vloadf / vstoref and its all-lanes bfloat16 vload_bf16 / vstore_bf16. */
#define QKV_UNMASKED_ROWS                                                                              \
    QKV_INLINE vf vloadu(const void *row, int dt, long c) {                                            \
        return dt == DT_BF16 ? vload_bf16((const uint16_t *)row + c) : vloadf((const float *)row + c); \
    }                                                                                                  \
    QKV_INLINE void vstoreu(void *row, int dt, long c, vf v) {                                         \
        if (dt == DT_BF16)                                                                             \
            vstore_bf16((uint16_t *)row + c, v);                                                       \
        else                                                                                           \
            vstoref((float *)row + c, v);                                                              \
    }

#if defined(QKV_SIMD_AVX512)
#include "_simd_avx512.h"
#elif defined(QKV_SIMD_AVX2)
#include "_simd_avx2.h"
#elif defined(QKV_SIMD_PORTABLE)
#include "_simd_portable.h"
#else
#error "define QKV_SIMD_AVX512, QKV_SIMD_AVX2 or QKV_SIMD_PORTABLE (see native.py)"
#endif

#ifndef QKV_BF16_DOT
#define QKV_BF16_DOT 0
#endif

/* Rounds up to whole vectors. */
static inline long upw(long x) { return (x + VW - 1) & ~(long)(VW - 1); }

/* Elements [c, c + VW) of a row of n elements: plain whole-vector access where all are inside, masked at the end. */
QKV_INLINE vf vload_part(const void *row, int dt, long c, long n) {
    return c + VW <= n ? vloadu(row, dt, c) : vload(row, dt, c, vm_lanes(c, 0, n));
}
QKV_INLINE void vstore_part(void *row, int dt, long c, long n, vf v) {
    if (c + VW <= n)
        vstoreu(row, dt, c, v);
    else
        vstore(row, dt, c, v, vm_lanes(c, 0, n));
}

/* Elements [0, dn) of row dst (dtype ddt) = mul * elements of row src (dtype sdt, sn elements; zeros past them):
 * a scaled row copy with conversion, also a float32 scratch row zero-padded to whole vectors (dn > sn). */
QKV_INLINE void scale_row(void *dst, int ddt, long dn, const void *src, int sdt, long sn, vf mul) {
    for (long c = 0; c < dn; c += VW) vstore_part(dst, ddt, c, dn, vmul(vload_part(src, sdt, c, sn), mul));
}

/* 2**x for x <= 127 (scores minus their row maximum or log-sum-exp are <= ~0) as 2**n * p(x - n), n the
 * nearest integer; p fitted to relative error on [-0.5, 0.5], degree 5 (8e-8) for float32 results, degree 4
 * (3e-6) where the result is stored as bfloat16 (whose rounding is 2e-3). Lanes below -126 (and -inf, whose
 * NaN the polynomial would carry) are exactly 0. */
QKV_INLINE vf vexp2(vf x, int precise) {
    vf n = vround(x), f = vsub(x, n), p;
    if (precise) {
        p = vset1(1.3266979925354236e-3f);
        p = vfmadd(p, f, vset1(9.675469395424727e-3f));
        p = vfmadd(p, f, vset1(5.550742675406998e-2f));
        p = vfmadd(p, f, vset1(2.4022121576227418e-1f));
        p = vfmadd(p, f, vset1(6.931469490692166e-1f));
        p = vfmadd(p, f, vset1(1.000000071065166f));
    } else {
        p = vset1(9.560519830953837e-3f);
        p = vfmadd(p, f, vset1(5.5917122821504475e-2f));
        p = vfmadd(p, f, vset1(2.4024981650208516e-1f));
        p = vfmadd(p, f, vset1(6.931219575521044e-1f));
        p = vfmadd(p, f, vset1(9.999991904524186e-1f));
    }
    return vmaskz(vm_ge(x, -126.0f), vldexp(p, n));
}

#endif
