/* qkv native kernels: shared AVX-512 helpers (F, BW, VL, BF16) of _blocks.c and _short.c.
 * float32 arithmetic on 16 lanes; bfloat16 converted on load and store (dt: DT_F32 or DT_BF16). */
#ifndef QKV_SIMD_H
#define QKV_SIMD_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DT_F32 0
#define DT_BF16 1

static inline float bf2f(uint16_t h) {
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}

#if !(defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512BF16__))
#error "qkv block kernels need AVX-512 (F, BW, VL, BF16): build with -march=native on such a CPU"
#endif
#include <immintrin.h>

/* Rows: 16 keys per step, converted on load/store, the visible interval and bool masks as lane masks. */

static inline __mmask16 lanes(long c, long c0, long c1) { /* lanes i with c0 <= c + i < c1 */
    long lo = c0 - c, hi = c1 - c;
    lo = lo < 0 ? 0 : (lo > 16 ? 16 : lo);
    hi = hi < 0 ? 0 : (hi > 16 ? 16 : hi);
    return (__mmask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

static inline __attribute__((always_inline)) __m512 vload(const void *row, int dt, long c, __mmask16 k) {
    if (dt == DT_BF16)
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, (const uint16_t *)row + c)), 16));
    return _mm512_maskz_loadu_ps(k, (const float *)row + c);
}

static inline __attribute__((always_inline)) void vstore(void *row, int dt, long c, __m512 v, __mmask16 k) {
    if (dt == DT_BF16)
        _mm256_mask_storeu_epi16((uint16_t *)row + c, k, (__m256i)_mm512_cvtneps_pbh(v));
    else
        _mm512_mask_storeu_ps((float *)row + c, k, v);
}

/* 2**x as fexp2 for x <= 127 (scores minus their row maximum or log-sum-exp are <= ~0): polynomials fitted
 * to relative error on [-0.5, 0.5], degree 5 (8e-8) for float32 results, degree 4 (3e-6) where the result is
 * stored as bfloat16 (whose rounding is 2e-3); scalef applies 2**n and gives 0 far below -126; lanes below
 * -126 (and -inf, whose NaN the polynomial would carry) are set to exactly 0. */
static inline __attribute__((always_inline)) __m512 vexp2(__m512 x, int precise) {
    __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-126.0f), _CMP_GE_OQ);
    __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(x, n), p;
    if (precise) {
        p = _mm512_set1_ps(1.3266979925354236e-3f);
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.675469395424727e-3f));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550742675406998e-2f));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022121576227418e-1f));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931469490692166e-1f));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.000000071065166f));
    } else {
        p = _mm512_set1_ps(9.560519830953837e-3f);
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5917122821504475e-2f));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4024981650208516e-1f));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931219575521044e-1f));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.999991904524186e-1f));
    }
    return _mm512_maskz_mov_ps(keep, _mm512_scalef_ps(p, n));
}

static inline __attribute__((always_inline)) __m512 vloadu(const void *row, int dt, long c) {
    if (dt == DT_BF16)
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)row + c))), 16));
    return _mm512_loadu_ps((const float *)row + c);
}

static inline __attribute__((always_inline)) void vstoreu(void *row, int dt, long c, __m512 v) {
    if (dt == DT_BF16)
        _mm256_storeu_si256((__m256i *)((uint16_t *)row + c), (__m256i)_mm512_cvtneps_pbh(v));
    else
        _mm512_storeu_ps((float *)row + c, v);
}

/* 16 x 16 float32 transpose in registers: r[i] holds row i; afterwards r[j] holds column j. */
static inline void transpose16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int j = 0; j < 4; j++) { /* u[4j + k], 128-bit lane L: column 4L + k of rows 4j..4j+3 */
        u[4 * j] = _mm512_shuffle_ps(t[4 * j], t[4 * j + 2], 0x44);
        u[4 * j + 1] = _mm512_shuffle_ps(t[4 * j], t[4 * j + 2], 0xEE);
        u[4 * j + 2] = _mm512_shuffle_ps(t[4 * j + 1], t[4 * j + 3], 0x44);
        u[4 * j + 3] = _mm512_shuffle_ps(t[4 * j + 1], t[4 * j + 3], 0xEE);
    }
    for (int k = 0; k < 4; k++) {
        __m512 a = _mm512_shuffle_f32x4(u[k], u[4 + k], 0x88), b = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0x88);
        __m512 c = _mm512_shuffle_f32x4(u[k], u[4 + k], 0xDD), d = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0xDD);
        r[k] = _mm512_shuffle_f32x4(a, b, 0x88);
        r[8 + k] = _mm512_shuffle_f32x4(a, b, 0xDD);
        r[4 + k] = _mm512_shuffle_f32x4(c, d, 0x88);
        r[12 + k] = _mm512_shuffle_f32x4(c, d, 0xDD);
    }
}

#endif
