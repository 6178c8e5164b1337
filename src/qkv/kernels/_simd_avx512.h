/* _simd.h for AVX-512 (F, BW, VL): 16 float32 lanes, masks in k registers. With AVX512-BF16 the rounding to
 * bfloat16 is vcvtneps2bf16; without it, the same round-to-nearest-even in integer instructions. */
#if !(defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__FMA__))
#error "QKV_SIMD_AVX512 needs -mavx512f -mavx512bw -mavx512vl -mfma"
#endif
#include <immintrin.h>

#ifdef __AVX512BF16__
#define QKV_VARIANT "avx512_bf16"
#else
#define QKV_VARIANT "avx512"
#endif
#define VW 16
#define TILE_ROWS 4
#define TILE_VECS 4

typedef __m512 vf;
typedef __mmask16 vmask;

QKV_INLINE vmask vm_lanes(long c, long c0, long c1) {
    long lo = c0 - c, hi = c1 - c;
    lo = lo < 0 ? 0 : (lo > 16 ? 16 : lo);
    hi = hi < 0 ? 0 : (hi > 16 ? 16 : hi);
    return (vmask)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}
QKV_INLINE vmask vm_and(vmask a, vmask b) { return a & b; }
QKV_INLINE vmask vm_bytes(const uint8_t *mk, long c, vmask k) {
    return k & _mm_cmpneq_epi8_mask(_mm_maskz_loadu_epi8(k, mk + c), _mm_setzero_si128());
}

QKV_X86_ARITH(_mm512)
QKV_INLINE vf vmaskz(vmask k, vf v) { return _mm512_maskz_mov_ps(k, v); }
QKV_INLINE vf vmaskz_mul(vmask k, vf a, vf b) { return _mm512_maskz_mul_ps(k, a, b); }
QKV_INLINE vf vmask_max(vf m, vmask k, vf x) { return _mm512_mask_max_ps(m, k, m, x); }
QKV_INLINE float vreduce_max(vf v) { return _mm512_reduce_max_ps(v); }
QKV_INLINE float vreduce_add(vf v) { return _mm512_reduce_add_ps(v); }

QKV_INLINE vf bf16_widen(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }

QKV_INLINE __m256i bf16_round(vf v) {
#ifdef __AVX512BF16__
    return (__m256i)_mm512_cvtneps_pbh(v);
#else
    __m512i u = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb), 16);
    r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
    return _mm512_cvtepi32_epi16(r);
#endif
}

#ifdef __AVX512BF16__
/* Products of bfloat16 pairs: a lane holds two bfloat16 values, element 2i in its low half. */
#define QKV_BF16_DOT 1
QKV_INLINE vf vdot_bf16(vf c, vf a, vf b) { return _mm512_dpbf16_ps(c, (__m512bh)a, (__m512bh)b); }
QKV_INLINE vf vpair_bf16(vf lo, vf hi) {
    __m512i l = _mm512_cvtepu16_epi32(bf16_round(lo)), h = _mm512_cvtepu16_epi32(bf16_round(hi));
    return _mm512_castsi512_ps(_mm512_or_si512(l, _mm512_slli_epi32(h, 16)));
}
QKV_INLINE void vstore_half_bf16(float *w, vf v, int hi) {
    __m512i x = _mm512_cvtepu16_epi32(bf16_round(v));
    _mm512_mask_storeu_epi16(w, hi ? 0xAAAAAAAAu : 0x55555555u, hi ? _mm512_slli_epi32(x, 16) : x);
}
#endif

QKV_INLINE vf vload_bf16(const uint16_t *p) { return bf16_widen(_mm256_loadu_si256((const __m256i *)p)); }
QKV_INLINE void vstore_bf16(uint16_t *p, vf v) { _mm256_storeu_si256((__m256i *)p, bf16_round(v)); }
QKV_UNMASKED_ROWS

QKV_INLINE vf vload(const void *row, int dt, long c, vmask k) {
    if (dt == DT_BF16) return bf16_widen(_mm256_maskz_loadu_epi16(k, (const uint16_t *)row + c));
    return _mm512_maskz_loadu_ps(k, (const float *)row + c);
}

QKV_INLINE void vstore(void *row, int dt, long c, vf v, vmask k) {
    if (dt == DT_BF16)
        _mm256_mask_storeu_epi16((uint16_t *)row + c, k, bf16_round(v));
    else
        _mm512_mask_storeu_ps((float *)row + c, k, v);
}

QKV_INLINE vmask vm_ge(vf x, float t) { return _mm512_cmp_ps_mask(x, _mm512_set1_ps(t), _CMP_GE_OQ); }
QKV_INLINE vf vround(vf x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
QKV_INLINE vf vldexp(vf p, vf n) { return _mm512_scalef_ps(p, n); } /* p * 2**n */

/* 16 x 16 transpose in registers. */
static inline void vtranspose(vf r[16]) {
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
