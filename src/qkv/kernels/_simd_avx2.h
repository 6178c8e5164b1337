/* _simd.h for AVX2 + FMA: 8 float32 lanes, lane masks as all-ones lanes. AVX2 has masked float32 loads and
 * stores but none for 16-bit elements, so a partial bfloat16 row goes through a small stack buffer. */
#if !(defined(__AVX2__) && defined(__FMA__))
#error "QKV_SIMD_AVX2 needs -mavx2 -mfma"
#endif
#include <immintrin.h>

#define QKV_VARIANT "avx2"
#define VW 8
#define TILE_ROWS 6 /* 6 x 2 vectors: 12 accumulators + 2 loads + 1 broadcast of the 16 ymm registers */
#define TILE_VECS 2

typedef __m256 vf;
typedef __m256 vmask;

QKV_INLINE vmask vm_lanes(long c, long c0, long c1) {
    __m256i i = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)c));
    __m256i ge = _mm256_cmpgt_epi32(i, _mm256_set1_epi32((int)(c0 - 1)));
    __m256i lt = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)c1), i);
    return _mm256_castsi256_ps(_mm256_and_si256(ge, lt));
}
QKV_INLINE vmask vm_and(vmask a, vmask b) { return _mm256_and_ps(a, b); }
QKV_INLINE int vm_bits(vmask k) { return _mm256_movemask_ps(k); }
QKV_INLINE vmask vm_bytes(const uint8_t *mk, long c, vmask k) {
    int bits = vm_bits(k);
    uint64_t b = 0;
    if (bits == 0xFF)
        memcpy(&b, mk + c, 8);
    else
        for (int i = 0; i < 8; i++)
            if (bits >> i & 1) b |= (uint64_t)mk[c + i] << (8 * i);
    __m256i w = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)b));
    __m256i zero = _mm256_cmpeq_epi32(w, _mm256_setzero_si256());
    return _mm256_andnot_ps(_mm256_castsi256_ps(zero), k);
}

QKV_X86_ARITH(_mm256)
QKV_INLINE vf vmaskz(vmask k, vf v) { return _mm256_and_ps(k, v); }
QKV_INLINE vf vmaskz_mul(vmask k, vf a, vf b) { return _mm256_and_ps(k, _mm256_mul_ps(a, b)); }
QKV_INLINE vf vmask_max(vf m, vmask k, vf x) { return _mm256_blendv_ps(m, _mm256_max_ps(m, x), k); }

QKV_INLINE float vreduce_max(vf v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}
QKV_INLINE float vreduce_add(vf v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

QKV_INLINE vf bf16_widen(__m128i h) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); }

QKV_INLINE __m128i bf16_round(vf v) { /* round to nearest even; NaN -> 0x7FC0 */
    __m256i u = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb), 16);
    __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    r = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(r), _mm256_castsi256_ps(_mm256_set1_epi32(0x7FC0)),
                                             nan));
    __m256i packed = _mm256_packus_epi32(r, r); /* per 128-bit half: r0..3 r0..3 | r4..7 r4..7 */
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));
}

QKV_INLINE vf vload_bf16(const uint16_t *p) { return bf16_widen(_mm_loadu_si128((const __m128i *)p)); }
QKV_INLINE void vstore_bf16(uint16_t *p, vf v) { _mm_storeu_si128((__m128i *)p, bf16_round(v)); }
QKV_UNMASKED_ROWS

QKV_INLINE vf vload(const void *row, int dt, long c, vmask k) {
    int bits = vm_bits(k);
    if (bits == 0xFF) return vloadu(row, dt, c);
    if (dt == DT_F32) return _mm256_maskload_ps((const float *)row + c, _mm256_castps_si256(k));
    uint16_t h[8] = {0};
    for (int i = 0; i < 8; i++)
        if (bits >> i & 1) h[i] = ((const uint16_t *)row)[c + i];
    return bf16_widen(_mm_loadu_si128((const __m128i *)h));
}

QKV_INLINE void vstore(void *row, int dt, long c, vf v, vmask k) {
    int bits = vm_bits(k);
    if (bits == 0xFF) {
        vstoreu(row, dt, c, v);
    } else if (dt == DT_F32) {
        _mm256_maskstore_ps((float *)row + c, _mm256_castps_si256(k), v);
    } else {
        uint16_t h[8];
        _mm_storeu_si128((__m128i *)h, bf16_round(v));
        for (int i = 0; i < 8; i++)
            if (bits >> i & 1) ((uint16_t *)row)[c + i] = h[i];
    }
}

QKV_INLINE vmask vm_ge(vf x, float t) { return _mm256_cmp_ps(x, _mm256_set1_ps(t), _CMP_GE_OQ); }
QKV_INLINE vf vround(vf x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
QKV_INLINE vf vldexp(vf p, vf n) { /* p * 2**n: n + 127 into the exponent field */
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* 8 x 8 transpose in registers. */
static inline void vtranspose(vf r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int j = 0; j < 2; j++) { /* 128-bit half H of u[4j + k]: column 4H + k of rows 4j..4j+3 */
        u[4 * j] = _mm256_shuffle_ps(t[4 * j], t[4 * j + 2], 0x44);
        u[4 * j + 1] = _mm256_shuffle_ps(t[4 * j], t[4 * j + 2], 0xEE);
        u[4 * j + 2] = _mm256_shuffle_ps(t[4 * j + 1], t[4 * j + 3], 0x44);
        u[4 * j + 3] = _mm256_shuffle_ps(t[4 * j + 1], t[4 * j + 3], 0xEE);
    }
    for (int k = 0; k < 4; k++) {
        r[k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x20);
        r[4 + k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x31);
    }
}
