/* qkv: exact attention over short sequences, one whole head per pass (see short.py).
 *
 * For the sequence lengths a model trains on a CPU (the char GPT's 64), torch's math path spends more time
 * in its ~25 ops per layer (casts, copies of transposed operands, the mask, softmax and its backward, six
 * batched matmuls of 64 x 64 x 32) than in arithmetic, and its flash kernel is slower still. Here each head
 * is one task: its q, k, v (any batch/head/row strides, unit last stride, float32 or bfloat16) are read into
 * float32 scratch that stays in the core's L1/L2, and every product is a register-tiled float32 micro-GEMM
 * (TILE_ROWS rows x TILE_VECS vectors of accumulators, per instruction set: _simd.h) that skips what the
 * causal mask hides. Forward: S = Q K^T (log2
 * units), softmax rows (their log-sum-exp kept), O = P V. Backward (per kv head, over its G query heads):
 * P recomputed from the log-sum-exp, dP = dO V^T, dS = P (dP - delta), dQ = dS K, dK += dS^T Q, dV += P^T dO.
 * Causal is lower-right aligned (key j visible to query i iff j <= i + S - L); a row with no visible key
 * gives zeros and zero gradients. Heads run in parallel (OpenMP on torch's threads, see native.py).
 */
#include "_simd.h"

#include <math.h>

#define LOG2E 1.4426950408889634f

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

/* rows x (VW * nv) block of C (=|+=) A B over k in [k0, k1), A[r][k] at A[r * lda + k * ak] (a transposed
 * A costs nothing: its entries are broadcast one at a time): accumulators stay in registers. */
QKV_INLINE void tile(int rows, int nv, long k0, long k1, const float *A, long lda, long ak, const float *B, long ldb,
                     float *C, long ldc, int acc) {
    vf c[TILE_ROWS][TILE_VECS];
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < nv; v++) c[r][v] = acc ? vloadf(C + r * ldc + VW * v) : vzero();
    for (long k = k0; k < k1; k++) {
        vf b[TILE_VECS];
        for (int v = 0; v < nv; v++) b[v] = vloadf(B + k * ldb + VW * v);
        for (int r = 0; r < rows; r++) {
            vf a = vset1(A[r * lda + k * ak]);
            for (int v = 0; v < nv; v++) c[r][v] = vfmadd(a, b[v], c[r][v]);
        }
    }
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < nv; v++) vstoref(C + r * ldc + VW * v, c[r][v]);
}

/* Every (rows, vectors) shape of a tile up to TILE_ROWS x TILE_VECS, as constants: each unrolls into registers. */
#define TILE_ROW(R) T(R, 1) IF_VECS2(T(R, 2)) IF_VECS4(T(R, 3) T(R, 4))
#if TILE_VECS == 4
#define IF_VECS2(x) x
#define IF_VECS4(x) x
#elif TILE_VECS == 2
#define IF_VECS2(x) x
#define IF_VECS4(x)
#else
#define IF_VECS2(x)
#define IF_VECS4(x)
#endif
#if TILE_ROWS == 6
#define TILE_SHAPES TILE_ROW(1) TILE_ROW(2) TILE_ROW(3) TILE_ROW(4) TILE_ROW(5) TILE_ROW(6)
#else
#define TILE_SHAPES TILE_ROW(1) TILE_ROW(2) TILE_ROW(3) TILE_ROW(4)
#endif

#define NO_MASK 0
#define ROW_CAUSAL 1 /* row r: A[r][k] = 0 for k > r + off (columns: only c <= r + off are needed) */
#define COL_CAUSAL 2 /* row r: A[r][k] = 0 for k < r - off */

/* C[r][c] (=|+=) sum_k A[r][k] B[k][c], r < M, c < N (a multiple of VW), float32; B and C row-major, A[r][k]
 * at A[r * lda + k * ak]. kmode says which
 * A entries are zero (skipped); cmode ROW_CAUSAL computes only the columns rows can see (the others are
 * left as they are: the caller overwrites them). */
static void mm(long M, long N, long K, const float *A, long lda, long ak, const float *B, long ldb, float *C, long ldc,
               int acc, int cmode, int kmode, long off) {
    for (long r0 = 0; r0 < M; r0 += TILE_ROWS) {
        int rows = M - r0 < TILE_ROWS ? (int)(M - r0) : TILE_ROWS;
        long last = r0 + rows - 1, k0 = 0, k1 = K, n1 = N;
        if (kmode == ROW_CAUSAL) k1 = last + off + 1 < K ? last + off + 1 : K;
        if (kmode == COL_CAUSAL) k0 = r0 - off > 0 ? r0 - off : 0;
        if (k1 < k0) k1 = k0;
        if (cmode == ROW_CAUSAL) {
            n1 = upw(last + off + 1);
            n1 = n1 < 0 ? 0 : (n1 > N ? N : n1);
        }
        for (long c0 = 0; c0 < n1; c0 += VW * TILE_VECS) {
            int nv = (n1 - c0) / VW < TILE_VECS ? (int)((n1 - c0) / VW) : TILE_VECS;
            const float *a = A + r0 * lda, *b = B + c0;
            float *c = C + r0 * ldc + c0;
            switch (rows * 8 + nv) {
#define T(R, V) case R * 8 + V: tile(R, V, k0, k1, a, lda, ak, b, ldb, c, ldc, acc); break;
                TILE_SHAPES
#undef T
            }
        }
    }
}

/* dst[c][r] = src[r][c] for r < R (rows of src, stride src_rs, dtype dt), c < Cn; dst is float32 with
 * leading dimension ld (>= upw(R)); columns r in [R, upw(R)) of dst are zero. */
static void load_transposed(const void *src, int dt, long src_rs, long R, long Cn, float *dst, long ld) {
    long isz = dt == DT_BF16 ? 2 : 4;
    for (long r0 = 0; r0 < R; r0 += VW)
        for (long c0 = 0; c0 < Cn; c0 += VW) {
            vf t[VW];
            for (long i = 0; i < VW; i++)
                t[i] = r0 + i < R ? vload_part((const char *)src + (r0 + i) * src_rs * isz, dt, c0, Cn) : vzero();
            vtranspose(t);
            long nc = Cn - c0 < VW ? Cn - c0 : VW;
            for (long j = 0; j < nc; j++) vstoref(dst + (c0 + j) * ld + r0, t[j]);
        }
}

/* rows r < R of src (dtype dt, row stride src_rs, Cn columns) into float32 dst (R x ld), times mul, zero
 * padded to ld columns. */
static void load_rows(const void *src, int dt, long src_rs, long R, long Cn, float mul, float *dst, long ld) {
    long isz = dt == DT_BF16 ? 2 : 4;
    for (long r = 0; r < R; r++)
        scale_row(dst + r * ld, DT_F32, ld, (const char *)src + r * src_rs * isz, dt, Cn, vset1(mul));
}

static void store_rows(const float *src, long ld, long R, long Cn, float mul, void *dst, int dt, long dst_rs) {
    long osz = dt == DT_BF16 ? 2 : 4;
    for (long r = 0; r < R; r++)
        scale_row((char *)dst + r * dst_rs * osz, dt, Cn, src + r * ld, DT_F32, ld, vset1(mul)); /* src: ld >= Cn */
}

/* p[j] = 0 for j in [j0, j1), both multiples of VW. The products after the softmax read a row's masked columns
 * (the causal tiles take whole row blocks), so they must hold zeros, not what the previous head left. */
static inline void zero_tail(float *p, long j0, long j1) {
    for (long j = j0; j < j1; j += VW) vstoref(p + j, vzero());
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
    long G = H / Hkv, Sp = upw(S), Ep = upw(E), Evp = upw(Ev), off = S - L, isz = dt == DT_BF16 ? 2 : 4;
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
        mm(L, Sp, E, Q, Ep, 1, Kt, Sp, P, Sp, 0, causal ? ROW_CAUSAL : NO_MASK, NO_MASK, off);
        float *lrow = lse + n * L;
        for (long i = 0; i < L; i++) {
            float *p = P + i * Sp;
            long jm = visible(i, S, causal, off);
            if (jm == 0) {
                memset(p, 0, (size_t)Sp * sizeof(float));
                lrow[i] = __builtin_inff();
                continue;
            }
            vf mx = vset1(-__builtin_inff()), sum = vzero();
            for (long j = 0; j < jm; j += VW) mx = vmask_max(mx, vm_lanes(j, 0, jm), vloadf(p + j));
            float m = vreduce_max(mx);
            vf mv = vset1(m);
            long je = upw(jm); /* exponentials only where a key is visible; later columns are zeroed */
            for (long j = 0; j < je; j += VW) {
                vf e = vmaskz(vm_lanes(j, 0, jm), vexp2(vsub(vloadf(p + j), mv), 1));
                vstoref(p + j, e);
                sum = vadd(sum, e);
            }
            zero_tail(p, je, Sp);
            float l = vreduce_add(sum);
            vf inv = vset1(1.0f / l);
            for (long j = 0; j < jm; j += VW) vstoref(p + j, vmul(vloadf(p + j), inv));
            lrow[i] = m + log2f(l);
        }
        mm(L, Evp, S, P, Sp, 1, V, Evp, O, Evp, 0, NO_MASK, causal ? ROW_CAUSAL : NO_MASK, off);
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
    long G = H / Hkv, Sp = upw(S), Ep = upw(E), Evp = upw(Ev), off = S - L;
    long isz = dt == DT_BF16 ? 2 : 4;
    size_t need = (size_t)(L * Ep + E * Sp + S * Ep + Ev * Sp + L * Evp + 2 * L * Sp + L * Ep + S * Ep + S * Evp + L);
    int failed = 0;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (long n = 0; n < B * Hkv; n++) {
        float *buf = scratch(need);
        if (!buf) {
            failed = 1;
            continue;
        }
        float *Q = buf, *Kt = Q + L * Ep, *Kr = Kt + E * Sp, *Vt = Kr + S * Ep, *dO = Vt + Ev * Sp;
        float *P = dO + L * Evp, *dS = P + L * Sp, *dQ = dS + L * Sp, *dK = dQ + L * Ep;
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
                vf s = vzero();
                const char *orow = oh + i * os[2] * isz;
                for (long c = 0; c < Ev; c += VW)
                    s = vfmadd(vloadf(dO + i * Evp + c), vload_part(orow, dt, c, Ev), s);
                delta[i] = vreduce_add(s);
            }
            mm(L, Sp, E, Q, Ep, 1, Kt, Sp, P, Sp, 0, causal ? ROW_CAUSAL : NO_MASK, NO_MASK, off);
            mm(L, Sp, Ev, dO, Evp, 1, Vt, Sp, dS, Sp, 0, causal ? ROW_CAUSAL : NO_MASK, NO_MASK, off);
            const float *lrow = lse + (b * H + h) * L;
            vf l2e = vset1(LOG2E);
            for (long i = 0; i < L; i++) {
                float *p = P + i * Sp, *ds = dS + i * Sp;
                long jm = visible(i, S, causal, off); /* 0 exactly where the forward stored lse = +inf */
                vf lv = vset1(jm ? lrow[i] : 0.0f), dl = vset1(delta[i]);
                long je = upw(jm);
                for (long j = 0; j < je; j += VW) {
                    vmask kk = vm_lanes(j, 0, jm);
                    vf e = vmaskz(kk, vexp2(vfmsub(vloadf(p + j), l2e, lv), 1));
                    vstoref(p + j, e);
                    vstoref(ds + j, vmaskz_mul(kk, e, vsub(vloadf(ds + j), dl)));
                }
                zero_tail(p, je, Sp);
                zero_tail(ds, je, Sp);
            }
            mm(L, Ep, S, dS, Sp, 1, Kr, Ep, dQ, Ep, 0, NO_MASK, causal ? ROW_CAUSAL : NO_MASK, off);
            store_rows(dQ, Ep, L, E, scale, (char *)head(dq, dqs, b, h, isz), dt, dqs[2]);
            mm(S, Evp, L, P, 1, Sp, dO, Evp, dV, Evp, g > 0, NO_MASK, causal ? COL_CAUSAL : NO_MASK, off); /* P^T dO */
            mm(S, Ep, L, dS, 1, Sp, Q, Ep, dK, Ep, g > 0, NO_MASK, causal ? COL_CAUSAL : NO_MASK, off); /* dS^T Q */
        }
        store_rows(dK, Ep, S, E, 1.0f, (char *)head(dk, dks, b, hk, isz), dt, dks[2]);
        store_rows(dV, Evp, S, Ev, 1.0f, (char *)head(dv, dvs, b, hk, isz), dt, dvs[2]);
    }
    return failed;
}
