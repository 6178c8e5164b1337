/* qkv: exact attention over short sequences, one whole head per pass (see short.py).
 *
 * For the sequence lengths a model trains on a CPU (the char GPT's 64), torch's math path spends more time
 * in its ~25 ops per layer (casts, copies of transposed operands, the mask, softmax and its backward, six
 * batched matmuls of 64 x 64 x 32) than in arithmetic, and its flash kernel is slower still. Here each head
 * is one task: its q, k, v (any batch/head/row strides, unit last stride, float32 or bfloat16) are read into
 * float32 scratch that stays in the core's L1/L2, and every product is a register-tiled float32 micro-GEMM
 * (4 rows x 64 columns of accumulators) that skips what the causal mask hides. Forward: S = Q K^T (log2
 * units), softmax rows (their log-sum-exp kept), O = P V. Backward (per kv head, over its G query heads):
 * P recomputed from the log-sum-exp, dP = dO V^T, dS = P (dP - delta), dQ = dS K, dK += dS^T Q, dV += P^T dO.
 * Causal is lower-right aligned (key j visible to query i iff j <= i + S - L); a row with no visible key
 * gives zeros and zero gradients. Heads run in parallel (OpenMP on torch's threads, see native.py).
 */
#include "_simd.h"

#include <math.h>

#define LOG2E 1.4426950408889634f

static inline long up16(long x) { return (x + 15) & ~15L; }

/* Per-thread float32 scratch, grown on demand and kept (OpenMP's threads persist between calls). */
static _Thread_local float *scratch_buf;
static _Thread_local size_t scratch_cap;

static float *scratch(size_t n) {
    if (n > scratch_cap) {
        free(scratch_buf);
        scratch_buf = aligned_alloc(64, ((n * sizeof(float)) + 63) & ~(size_t)63);
        scratch_cap = scratch_buf ? n : 0;
    }
    return scratch_buf;
}

/* rows x (16 * nv) block of C (=|+=) A B over k in [k0, k1): accumulators stay in registers. */
static inline __attribute__((always_inline)) void tile(int rows, int nv, long k0, long k1, const float *A, long lda,
                                                       const float *B, long ldb, float *C, long ldc, int acc) {
    __m512 c[4][4];
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < nv; v++) c[r][v] = acc ? _mm512_loadu_ps(C + r * ldc + 16 * v) : _mm512_setzero_ps();
    for (long k = k0; k < k1; k++) {
        __m512 b[4];
        for (int v = 0; v < nv; v++) b[v] = _mm512_loadu_ps(B + k * ldb + 16 * v);
        for (int r = 0; r < rows; r++) {
            __m512 a = _mm512_set1_ps(A[r * lda + k]);
            for (int v = 0; v < nv; v++) c[r][v] = _mm512_fmadd_ps(a, b[v], c[r][v]);
        }
    }
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < nv; v++) _mm512_storeu_ps(C + r * ldc + 16 * v, c[r][v]);
}

#define NO_MASK 0
#define ROW_CAUSAL 1 /* row r: A[r][k] = 0 for k > r + off (columns: only c <= r + off are needed) */
#define COL_CAUSAL 2 /* row r: A[r][k] = 0 for k < r - off */

/* C[r][c] (=|+=) sum_k A[r][k] B[k][c], r < M, c < N (a multiple of 16), float32 row-major. kmode says which
 * A entries are zero (skipped); cmode ROW_CAUSAL computes only the columns rows can see (the others are
 * left as they are: the caller overwrites them). */
static void mm(long M, long N, long K, const float *A, long lda, const float *B, long ldb, float *C, long ldc,
               int acc, int cmode, int kmode, long off) {
    for (long r0 = 0; r0 < M; r0 += 4) {
        int rows = M - r0 < 4 ? (int)(M - r0) : 4;
        long last = r0 + rows - 1, k0 = 0, k1 = K, n1 = N;
        if (kmode == ROW_CAUSAL) k1 = last + off + 1 < K ? last + off + 1 : K;
        if (kmode == COL_CAUSAL) k0 = r0 - off > 0 ? r0 - off : 0;
        if (k1 < k0) k1 = k0;
        if (cmode == ROW_CAUSAL) {
            n1 = up16(last + off + 1);
            n1 = n1 < 0 ? 0 : (n1 > N ? N : n1);
        }
        for (long c0 = 0; c0 < n1; c0 += 64) {
            int nv = (n1 - c0) / 16 < 4 ? (int)((n1 - c0) / 16) : 4;
            const float *a = A + r0 * lda, *b = B + c0;
            float *c = C + r0 * ldc + c0;
            switch (rows * 4 + nv) { /* constant shapes, so each case unrolls into registers */
#define T(R, V) case R * 4 + V: tile(R, V, k0, k1, a, lda, b, ldb, c, ldc, acc); break;
                T(1, 1) T(1, 2) T(1, 3) T(1, 4) T(2, 1) T(2, 2) T(2, 3) T(2, 4)
                T(3, 1) T(3, 2) T(3, 3) T(3, 4) T(4, 1) T(4, 2) T(4, 3) T(4, 4)
#undef T
            }
        }
    }
}

/* dst[c][r] = src[r][c] for r < R (rows of src, stride src_rs, dtype dt), c < Cn; dst is float32 with
 * leading dimension ld (>= up16(R)); columns r in [R, up16(R)) of dst are zero. */
static void load_transposed(const void *src, int dt, long src_rs, long R, long Cn, float *dst, long ld) {
    long isz = dt == DT_BF16 ? 2 : 4;
    for (long r0 = 0; r0 < R; r0 += 16)
        for (long c0 = 0; c0 < Cn; c0 += 16) {
            __m512 t[16];
            __mmask16 kc = lanes(c0, 0, Cn);
            for (long i = 0; i < 16; i++)
                t[i] = r0 + i < R ? vload((const char *)src + (r0 + i) * src_rs * isz, dt, c0, kc) : _mm512_setzero_ps();
            transpose16(t);
            long nc = Cn - c0 < 16 ? Cn - c0 : 16;
            for (long j = 0; j < nc; j++) _mm512_storeu_ps(dst + (c0 + j) * ld + r0, t[j]);
        }
}

/* rows r < R of src (dtype dt, row stride src_rs, Cn columns) into float32 dst (R x ld), times mul, zero
 * padded to ld columns. */
static void load_rows(const void *src, int dt, long src_rs, long R, long Cn, float mul, float *dst, long ld) {
    long isz = dt == DT_BF16 ? 2 : 4;
    __m512 m = _mm512_set1_ps(mul);
    for (long r = 0; r < R; r++)
        for (long c = 0; c < ld; c += 16)
            _mm512_storeu_ps(dst + r * ld + c,
                             _mm512_mul_ps(vload((const char *)src + r * src_rs * isz, dt, c, lanes(c, 0, Cn)), m));
}

static void store_rows(const float *src, long ld, long R, long Cn, float mul, void *dst, int dt, long dst_rs) {
    long osz = dt == DT_BF16 ? 2 : 4;
    __m512 m = _mm512_set1_ps(mul);
    for (long r = 0; r < R; r++)
        for (long c = 0; c < Cn; c += 16)
            vstore((char *)dst + r * dst_rs * osz, dt, c, _mm512_mul_ps(_mm512_loadu_ps(src + r * ld + c), m),
                   lanes(c, 0, Cn));
}

/* Head (b, h) of a tensor with {batch, head, row} element strides st and elements of isz bytes. */
static inline const char *head(const void *base, const int64_t *st, long b, long h, long isz) {
    return (const char *)base + (b * st[0] + h * st[1]) * isz;
}

/* Keys visible to query row i: [0, visible(i)). */
static inline long visible(long i, long S, int causal, long off) {
    if (!causal) return S;
    long v = i + off + 1;
    return v < 0 ? 0 : (v > S ? S : v);
}

/* Forward. q (B, H, L, E), k (B, Hkv, S, E), v (B, Hkv, S, Ev), o (B, H, L, Ev): strides {batch, head, row}
 * in elements, unit last stride, one dtype dt. lse: (B, H, L) float32 contiguous, log2 units (+inf for a
 * row with no visible key). Returns nonzero if scratch could not be allocated. */
int qkv_short_forward(long B, long H, long Hkv, long L, long S, long E, long Ev, const void *q, const int64_t *qs,
                      const void *k, const int64_t *ks, const void *v, const int64_t *vs, void *o, const int64_t *os,
                      float *lse, int dt, float scale, int causal, int nt) {
    long G = H / Hkv, Sp = up16(S), Ep = up16(E), Evp = up16(Ev), off = S - L, isz = dt == DT_BF16 ? 2 : 4;
    size_t need = (size_t)(L * Ep + E * Sp + S * Evp + L * Sp + L * Evp);
    int failed = 0;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (long n = 0; n < B * H; n++) {
        float *buf = scratch(need);
        if (!buf) {
            failed = 1;
            continue;
        }
        float *Q = buf, *Kt = Q + L * Ep, *V = Kt + E * Sp, *P = V + S * Evp, *O = P + L * Sp;
        long b = n / H, h = n % H, hk = h / G;
        const char *qh = head(q, qs, b, h, isz);
        const char *kh = head(k, ks, b, hk, isz);
        const char *vh = head(v, vs, b, hk, isz);
        load_rows(qh, dt, qs[2], L, E, scale * LOG2E, Q, Ep);
        load_transposed(kh, dt, ks[2], S, E, Kt, Sp);
        load_rows(vh, dt, vs[2], S, Ev, 1.0f, V, Evp);
        mm(L, Sp, E, Q, Ep, Kt, Sp, P, Sp, 0, causal ? ROW_CAUSAL : NO_MASK, NO_MASK, off);
        float *lrow = lse + n * L;
        for (long i = 0; i < L; i++) {
            float *p = P + i * Sp;
            long jm = visible(i, S, causal, off);
            if (jm == 0) {
                memset(p, 0, (size_t)Sp * sizeof(float));
                lrow[i] = __builtin_inff();
                continue;
            }
            __m512 mx = _mm512_set1_ps(-__builtin_inff()), sum = _mm512_setzero_ps();
            for (long j = 0; j < jm; j += 16)
                mx = _mm512_mask_max_ps(mx, lanes(j, 0, jm), mx, _mm512_loadu_ps(p + j));
            float m = _mm512_reduce_max_ps(mx);
            __m512 mv = _mm512_set1_ps(m);
            for (long j = 0; j < Sp; j += 16) {
                __m512 e = _mm512_maskz_mov_ps(lanes(j, 0, jm), vexp2(_mm512_sub_ps(_mm512_loadu_ps(p + j), mv), 1));
                _mm512_storeu_ps(p + j, e);
                sum = _mm512_add_ps(sum, e);
            }
            float l = _mm512_reduce_add_ps(sum);
            __m512 inv = _mm512_set1_ps(1.0f / l);
            for (long j = 0; j < jm; j += 16) _mm512_storeu_ps(p + j, _mm512_mul_ps(_mm512_loadu_ps(p + j), inv));
            lrow[i] = m + log2f(l);
        }
        mm(L, Evp, S, P, Sp, V, Evp, O, Evp, 0, NO_MASK, causal ? ROW_CAUSAL : NO_MASK, off);
        store_rows(O, Evp, L, Ev, 1.0f, (char *)head(o, os, b, h, isz), dt, os[2]);
    }
    return failed;
}

/* Backward. As the forward, plus o, dout (B, H, L, Ev) and the outputs dq (B, H, L, E), dk (B, Hkv, S, E),
 * dv (B, Hkv, S, Ev), all with {batch, head, row} strides, unit last stride, dtype dt. One task per kv
 * head: its G query heads' dK and dV contributions accumulate in float32 scratch. */
int qkv_short_backward(long B, long H, long Hkv, long L, long S, long E, long Ev, const void *q, const int64_t *qs,
                       const void *k, const int64_t *ks, const void *v, const int64_t *vs, const void *o,
                       const int64_t *os, const void *dout, const int64_t *dos, const float *lse, void *dq,
                       const int64_t *dqs, void *dk, const int64_t *dks, void *dv, const int64_t *dvs, int dt,
                       float scale, int causal, int nt) {
    long G = H / Hkv, Sp = up16(S), Lp = up16(L), Ep = up16(E), Evp = up16(Ev), off = S - L;
    long isz = dt == DT_BF16 ? 2 : 4;
    size_t need = (size_t)(L * Ep + E * Sp + S * Ep + Ev * Sp + L * Evp + 2 * L * Sp + Sp * Lp + L * Ep + S * Ep +
                           S * Evp + Lp);
    int failed = 0;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (long n = 0; n < B * Hkv; n++) {
        float *buf = scratch(need);
        if (!buf) {
            failed = 1;
            continue;
        }
        float *Q = buf, *Kt = Q + L * Ep, *Kr = Kt + E * Sp, *Vt = Kr + S * Ep, *dO = Vt + Ev * Sp;
        float *P = dO + L * Evp, *dS = P + L * Sp, *T = dS + L * Sp, *dQ = T + Sp * Lp, *dK = dQ + L * Ep;
        float *dV = dK + S * Ep, *delta = dV + S * Evp;
        long b = n / Hkv, hk = n % Hkv;
        const char *kh = head(k, ks, b, hk, isz);
        const char *vh = head(v, vs, b, hk, isz);
        load_transposed(kh, dt, ks[2], S, E, Kt, Sp);
        load_rows(kh, dt, ks[2], S, E, 1.0f, Kr, Ep);
        load_transposed(vh, dt, vs[2], S, Ev, Vt, Sp);
        for (long g = 0; g < G; g++) {
            long h = hk * G + g;
            const char *qh = head(q, qs, b, h, isz);
            const char *oh = head(o, os, b, h, isz);
            const char *dh = head(dout, dos, b, h, isz);
            load_rows(qh, dt, qs[2], L, E, scale, Q, Ep);
            load_rows(dh, dt, dos[2], L, Ev, 1.0f, dO, Evp);
            for (long i = 0; i < L; i++) { /* delta_i = dO_i . O_i */
                __m512 s = _mm512_setzero_ps();
                const char *orow = oh + i * os[2] * isz;
                for (long c = 0; c < Ev; c += 16)
                    s = _mm512_fmadd_ps(_mm512_loadu_ps(dO + i * Evp + c), vload(orow, dt, c, lanes(c, 0, Ev)), s);
                delta[i] = _mm512_reduce_add_ps(s);
            }
            mm(L, Sp, E, Q, Ep, Kt, Sp, P, Sp, 0, causal ? ROW_CAUSAL : NO_MASK, NO_MASK, off);
            mm(L, Sp, Ev, dO, Evp, Vt, Sp, dS, Sp, 0, causal ? ROW_CAUSAL : NO_MASK, NO_MASK, off);
            const float *lrow = lse + (b * H + h) * L;
            __m512 l2e = _mm512_set1_ps(LOG2E);
            for (long i = 0; i < L; i++) {
                float *p = P + i * Sp, *ds = dS + i * Sp;
                long jm = visible(i, S, causal, off); /* 0 exactly where the forward stored lse = +inf */
                __m512 lv = _mm512_set1_ps(jm ? lrow[i] : 0.0f), dl = _mm512_set1_ps(delta[i]);
                for (long j = 0; j < Sp; j += 16) {
                    __mmask16 kk = lanes(j, 0, jm);
                    __m512 e = _mm512_maskz_mov_ps(kk, vexp2(_mm512_fmsub_ps(_mm512_loadu_ps(p + j), l2e, lv), 1));
                    _mm512_storeu_ps(p + j, e);
                    _mm512_storeu_ps(ds + j, _mm512_maskz_mul_ps(kk, e, _mm512_sub_ps(_mm512_loadu_ps(ds + j), dl)));
                }
            }
            mm(L, Ep, S, dS, Sp, Kr, Ep, dQ, Ep, 0, NO_MASK, causal ? ROW_CAUSAL : NO_MASK, off);
            store_rows(dQ, Ep, L, E, scale, (char *)head(dq, dqs, b, h, isz), dt, dqs[2]);
            load_transposed(P, DT_F32, Sp, L, Sp, T, Lp);
            mm(S, Evp, L, T, Lp, dO, Evp, dV, Evp, g > 0, NO_MASK, causal ? COL_CAUSAL : NO_MASK, off);
            load_transposed(dS, DT_F32, Sp, L, Sp, T, Lp);
            mm(S, Ep, L, T, Lp, Q, Ep, dK, Ep, g > 0, NO_MASK, causal ? COL_CAUSAL : NO_MASK, off);
        }
        store_rows(dK, Ep, S, E, 1.0f, (char *)head(dk, dks, b, hk, isz), dt, dks[2]);
        store_rows(dV, Evp, S, Ev, 1.0f, (char *)head(dv, dvs, b, hk, isz), dt, dvs[2]);
    }
    return failed;
}
