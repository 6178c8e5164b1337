/* qkv: exact attention over short sequences, one whole head per pass (see short.py).
 *
 * For the sequence lengths a model trains on a CPU (the char GPT's 64), torch's math path spends more time
 * in its ~25 ops per layer (casts, copies of transposed operands, the mask, softmax and its backward, six
 * batched matmuls of 64 x 64 x 32) than in arithmetic, and its flash kernel is slower still. Here each head
 * is one task: its q, k, v (any batch/head/row strides, unit last stride, float32 or bfloat16) are laid out in
 * float32 scratch that stays in the core's L1/L2 where a product needs them transposed or converted (float32
 * rows that serve as they are are read in place), and every product is a register-tiled float32 micro-GEMM
 * (TILE_ROWS rows x TILE_VECS vectors of accumulators, per instruction set: _simd.h) that skips what the
 * causal mask hides. Forward: S = Q K^T, softmax rows of S * scale (their log-sum-exp kept, log2 units),
 * O = P V. Backward (per kv head, over its G query heads): P recomputed from the log-sum-exp, dP = dO V^T,
 * dS = P (dP - delta), dQ = dS K * scale, dK += dS^T Q * scale, dV += P^T dO.
 * Operands: with QKV_BF16_DOT (see _simd.h) and bfloat16 inputs the products take bfloat16 pairs (a 4-byte word
 * holds two values adjacent along the product's k; P and dS rounded to bfloat16 for the products after the
 * softmax), otherwise float32 words; the helpers below lay out either from the same calls.
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

/* c + a * b, or with pairs the dot products of the lanes' bfloat16 pairs. */
QKV_INLINE vf madd(int pairs, vf c, vf a, vf b) {
#if QKV_BF16_DOT
    if (pairs) return vdot_bf16(c, a, b);
#else
    (void)pairs;
#endif
    return vfmadd(a, b, c);
}

/* rows x (VW * nv) block of C (=|+=) A B over k in [k0, k1), A[r][k] at A[r * lda + k * ak] (a transposed
 * A costs nothing: its entries are broadcast one at a time): accumulators stay in registers. Entries are
 * 4-byte words (float32, or bfloat16 pairs with pairs). */
QKV_INLINE void tile(int rows, int nv, long k0, long k1, const float *A, long lda, long ak, const float *B, long ldb,
                     float *C, long ldc, int acc, int pairs) {
    vf c[TILE_ROWS][TILE_VECS];
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < nv; v++) c[r][v] = acc ? vloadf(C + r * ldc + VW * v) : vzero();
    for (long k = k0; k < k1; k++) {
        vf b[TILE_VECS];
        for (int v = 0; v < nv; v++) b[v] = vloadf(B + k * ldb + VW * v);
        for (int r = 0; r < rows; r++) {
            vf a = vset1(A[r * lda + k * ak]);
            for (int v = 0; v < nv; v++) c[r][v] = madd(pairs, c[r][v], a, b[v]);
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

/* C[r][c] (=|+=) sum_k A[r][k] B[k][c], r < M, c < N (a multiple of VW); B and C row-major, A[r][k] at
 * A[r * lda + k * ak], in words: with pairs k counts elements (K, kmode's bounds) and word k / 2 holds two, both
 * zero where outside K or masked. kmode says which A entries are zero (skipped); cmode ROW_CAUSAL computes only
 * the columns rows can see (the others are left as they are: the caller overwrites them). */
static void mm(long M, long N, long K, const float *A, long lda, long ak, const float *B, long ldb, float *C, long ldc,
               int acc, int cmode, int kmode, long off, int pairs) {
    pairs = QKV_BF16_DOT && pairs; /* a constant 0 where the variant has no dot products: one tile per shape */
    for (long r0 = 0; r0 < M; r0 += TILE_ROWS) {
        int rows = M - r0 < TILE_ROWS ? (int)(M - r0) : TILE_ROWS;
        long last = r0 + rows - 1, k0 = 0, k1 = K, n1 = N;
        if (kmode == ROW_CAUSAL) k1 = last + off + 1 < K ? last + off + 1 : K;
        if (kmode == COL_CAUSAL) k0 = r0 - off > 0 ? r0 - off : 0;
        if (k1 < k0) k1 = k0;
        if (pairs) k0 /= 2, k1 = (k1 + 1) / 2;
        if (cmode == ROW_CAUSAL) {
            n1 = upw(last + off + 1);
            n1 = n1 < 0 ? 0 : (n1 > N ? N : n1);
        }
        for (long c0 = 0; c0 < n1; c0 += VW * TILE_VECS) {
            int nv = (n1 - c0) / VW < TILE_VECS ? (int)((n1 - c0) / VW) : TILE_VECS;
            const float *a = A + r0 * lda, *b = B + c0;
            float *c = C + r0 * ldc + c0;
            switch (rows * 8 + nv) {
#define T(R, V)                                                         \
    case R * 8 + V:                                                     \
        if (pairs)                                                      \
            tile(R, V, k0, k1, a, lda, ak, b, ldb, c, ldc, acc, 1);     \
        else                                                            \
            tile(R, V, k0, k1, a, lda, ak, b, ldb, c, ldc, acc, 0);     \
        break;
                TILE_SHAPES
#undef T
            }
        }
    }
}

/* Asks for the cache lines of the row of bytes [row, row + bytes). The copies below read a head's rows a few
 * ahead of their use with it: the rows are short and far apart (other heads' rows, and in a fused projection the
 * other projections', lie between them), a pattern the hardware prefetchers do not follow; where the rows are
 * already in cache the requests cost a few instructions per row. */
static inline void prefetch_row(const void *row, long bytes) {
    for (uintptr_t a = (uintptr_t)row & ~(uintptr_t)63; a < (uintptr_t)row + bytes; a += 64)
        __builtin_prefetch((const void *)a, 0, 3);
}

/* dst[c][r] = src[r][c] for r < R (rows of src, stride src_rs, dtype dt), c < Cn; dst is float32 with
 * leading dimension ld (>= upw(R)); columns r in [R, upw(R)) of dst are zero. */
static void load_transposed(const void *src, int dt, long src_rs, long R, long Cn, float *dst, long ld) {
    long isz = dt == DT_BF16 ? 2 : 4;
    for (long r0 = 0; r0 < R; r0 += VW) {
        for (long r = r0 + VW; r < r0 + 2 * VW && r < R; r++) /* the next block's rows */
            prefetch_row((const char *)src + r * src_rs * isz, Cn * isz);
        for (long c0 = 0; c0 < Cn; c0 += VW) {
            vf t[VW];
            for (long i = 0; i < VW; i++)
                t[i] = r0 + i < R ? vload_part((const char *)src + (r0 + i) * src_rs * isz, dt, c0, Cn) : vzero();
            vtranspose(t);
            long nc = Cn - c0 < VW ? Cn - c0 : VW;
            for (long j = 0; j < nc; j++) vstoref(dst + (c0 + j) * ld + r0, t[j]);
        }
    }
}

static void store_rows(const float *src, long ld, long R, long Cn, float mul, void *dst, int dt, long dst_rs) {
    long osz = dt == DT_BF16 ? 2 : 4;
    for (long r = 0; r < R; r++)
        scale_row((char *)dst + r * dst_rs * osz, dt, Cn, src + r * ld, DT_F32, ld, vset1(mul)); /* src: ld >= Cn */
}

/* rows r < R of src (dtype dt, row stride src_rs, Cn columns) into float32 dst (R x ld), times mul, zero
 * padded to ld columns. */
static void load_rows(const void *src, int dt, long src_rs, long R, long Cn, float mul, float *dst, long ld) {
    long isz = dt == DT_BF16 ? 2 : 4;
    for (long r = 0; r < R; r++) {
        if (r + 4 < R) prefetch_row((const char *)src + (r + 4) * src_rs * isz, Cn * isz);
        scale_row(dst + r * ld, DT_F32, ld, (const char *)src + r * src_rs * isz, dt, Cn, vset1(mul));
    }
}

/* The products' B operands, ld in words (float32, or bfloat16 pairs with pairs; see the top of this file):
 * b_rows: k runs down src's rows (V in P V): load_rows, or with pairs, word c of row i pairs elements c of
 *         rows 2i and 2i + 1 (a zero row past R).
 * b_cols: k runs along src's rows (K^T in Q K^T): src transposed, or with pairs the transpose of src's rows
 *         read as words (two adjacent elements each: Cn, the row stride and the address even). */
static void b_rows(const void *src, int dt, long src_rs, long R, long Cn, float *dst, long ld, int pairs) {
    if (!pairs) {
        load_rows(src, dt, src_rs, R, Cn, 1.0f, dst, ld);
        return;
    }
#if QKV_BF16_DOT
    long isz = dt == DT_BF16 ? 2 : 4;
    for (long r = 0; r < R; r += 2) {
        const char *lo = (const char *)src + r * src_rs * isz, *hi = lo + src_rs * isz;
        for (long c = 0; c < ld; c += VW)
            vstoref(dst + r / 2 * ld + c, vpair_bf16(vload_part(lo, dt, c, Cn), r + 1 < R ? vload_part(hi, dt, c, Cn)
                                                                                         : vzero()));
    }
#endif
}

/* A b_rows operand read in place where it can be: float32 rows of whole vectors (Cn == ld: the products read
 * ld columns of every row, which past Cn would run beyond the last row's end); else b_rows into dst. *ldb is set
 * to its row stride in words. */
static const float *b_of(const void *src, int dt, long src_rs, long R, long Cn, float *dst, long ld, int pairs,
                         long *ldb) {
    if (!pairs && dt == DT_F32 && Cn == ld) {
        *ldb = src_rs;
        return (const float *)src;
    }
    b_rows(src, dt, src_rs, R, Cn, dst, ld, pairs);
    *ldb = ld;
    return dst;
}

static void b_cols(const void *src, int dt, long src_rs, long R, long Cn, float *dst, long ld, int pairs) {
    if (pairs)
        load_transposed(src, DT_F32, src_rs / 2, R, Cn / 2, dst, ld);
    else
        load_transposed(src, dt, src_rs, R, Cn, dst, ld);
}

/* Whether a tensor's rows can be read as words: an even address and even strides (bfloat16 elements). */
static int words_ok(const void *x, const int64_t *xs) {
    return (uintptr_t)x % 4 == 0 && xs[0] % 2 == 0 && xs[1] % 2 == 0 && xs[2] % 2 == 0;
}

/* Whether the products take bfloat16 pairs: bfloat16 inputs, a variant with the dot products, even head dims and a
 * positive scale (applied to the scores: the row maximum of the unscaled ones gives theirs) (the caller checks
 * words_ok of its inputs: b_cols and the A operands read them in place). */
static int use_pairs(int dt, long E, long Ev, float scale) {
    return QKV_BF16_DOT && dt == DT_BF16 && E % 2 == 0 && Ev % 2 == 0 && scale > 0;
}

/* An A operand whose k runs along src's rows (Q in Q K^T): in place as words with pairs (the caller checked
 * words_ok) and for float32 with mul 1 (the products read only its k < Cn), else load_rows into dst (ld words)
 * times mul; *lda is set to its row stride in words. */
static const float *a_of(const void *src, int dt, long src_rs, long R, long Cn, float mul, float *dst, long ld,
                         int pairs, long *lda) {
    if (pairs || (dt == DT_F32 && mul == 1.0f)) {
        *lda = pairs ? src_rs / 2 : src_rs;
        return (const float *)src;
    }
    load_rows(src, dt, src_rs, R, Cn, mul, dst, ld);
    *lda = ld;
    return dst;
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

/* One call's tensors and sizes (see qkv_short_forward / qkv_short_backward): o and lse are the forward's
 * outputs and the backward's inputs. The work of one head is a function of it and of pairs, which the loops
 * pass as a constant: each function is built twice, every pairs test decided at compile time (a variable
 * captured by the OpenMP loop would be tested at run time). post: Q is read as it is and the scale applied to
 * the scores (and dK), with pairs and for float32 with a positive scale (the row maximum of the unscaled
 * scores then gives the scaled ones'); otherwise Q's copy carries the scale. */
struct call {
    long H, G, L, S, E, Ev, Sp, Ep, Evp, off, isz;
    const void *q, *k, *v, *dout;
    const int64_t *qs, *ks, *vs, *os, *dos, *dqs, *dks, *dvs;
    void *o, *dq, *dk, *dv;
    float *lse;
    int dt, causal, post;
    float scale;
};

static struct call sizes(long H, long Hkv, long L, long S, long E, long Ev, int dt, float scale, int causal,
                         int pairs) {
    struct call c = {0};
    c.H = H, c.G = H / Hkv, c.L = L, c.S = S, c.E = E, c.Ev = Ev, c.Sp = upw(S), c.Ep = upw(E), c.Evp = upw(Ev);
    c.off = S - L, c.isz = dt == DT_BF16 ? 2 : 4, c.dt = dt, c.scale = scale, c.causal = causal;
    c.post = pairs || (dt == DT_F32 && scale > 0);
    return c;
}

/* Query head n = b * H + h of the forward, in scratch buf. */
QKV_INLINE void forward_head(const struct call *c, long n, float *buf, int pairs) {
    long L = c->L, S = c->S, E = c->E, Ev = c->Ev, Sp = c->Sp, Ep = c->Ep, Evp = c->Evp, off = c->off, isz = c->isz;
    int dt = c->dt, causal = c->causal, post = pairs || c->post; /* pairs: post, known when compiled */
    float c2 = c->scale * LOG2E, cs = post ? c2 : 1.0f; /* cs: the scores' factor to log2 units */
    float *Q = buf, *Kt = Q + L * Ep, *V = Kt + Ep * Sp, *P = V + Sp * Evp, *O = P + L * Sp, *Pw = O + L * Evp;
    long b = n / c->H, h = n % c->H, hk = h / c->G, lq, lv;
    const char *qh = head(c->q, c->qs, b, h, isz);
    const char *kh = head(c->k, c->ks, b, hk, isz);
    const char *vh = head(c->v, c->vs, b, hk, isz);
    const float *Qa = a_of(qh, dt, c->qs[2], L, E, post ? 1.0f : c2, Q, Ep, pairs, &lq);
    b_cols(kh, dt, c->ks[2], S, E, Kt, Sp, pairs);
    const float *Vb = b_of(vh, dt, c->vs[2], S, Ev, V, Evp, pairs, &lv);
    mm(L, Sp, E, Qa, lq, 1, Kt, Sp, P, Sp, 0, causal ? ROW_CAUSAL : NO_MASK, NO_MASK, off, pairs);
    float *lrow = c->lse + n * L;
    vf cv = vset1(cs);
    for (long i = 0; i < L; i++) {
        float *p = P + i * Sp, inv = 0.0f;
        long jm = visible(i, S, causal, off);
        if (jm == 0) {
            memset(p, 0, (size_t)Sp * sizeof(float));
            lrow[i] = __builtin_inff();
        } else {
            vf mx = vset1(-__builtin_inff()), sum = vzero();
            for (long j = 0; j < jm; j += VW) mx = vmask_max(mx, vm_lanes(j, 0, jm), vloadf(p + j));
            float m = vreduce_max(mx) * cs; /* in log2 units (cs > 0) */
            vf mv = vset1(m);
            long je = upw(jm); /* exponentials only where a key is visible; later columns are zeroed */
            for (long j = 0; j < je; j += VW) {
                vf x = vfmsub(vloadf(p + j), cv, mv);
                vf e = vmaskz(vm_lanes(j, 0, jm), vexp2(x, 1));
                vstoref(p + j, e);
                sum = vadd(sum, e);
            }
            zero_tail(p, je, Sp);
            float l = vreduce_add(sum);
            inv = 1.0f / l;
            lrow[i] = m + log2f(l);
        }
        /* normalised, in place up to the last visible key (zeros after it), or rounded into the bfloat16 rows
         * the product with V takes */
        long jn = upw(jm);
        if (pairs)
            scale_row((uint16_t *)Pw + i * Sp, DT_BF16, Sp, p, DT_F32, jn, vset1(inv));
        else
            scale_row(p, DT_F32, jn, p, DT_F32, jn, vset1(inv));
    }
    mm(L, Evp, S, pairs ? Pw : P, pairs ? Sp / 2 : Sp, 1, Vb, lv, O, Evp, 0, NO_MASK, causal ? ROW_CAUSAL : NO_MASK,
       off, pairs);
    store_rows(O, Evp, L, Ev, 1.0f, (char *)head(c->o, c->os, b, h, isz), dt, c->os[2]);
}

/* Forward. q (B, H, L, E), k (B, Hkv, S, E), v (B, Hkv, S, Ev), o (B, H, L, Ev): strides {batch, head, row}
 * in elements, unit last stride, one dtype dt. lse: (B, H, L) float32 contiguous, log2 units (+inf for a
 * row with no visible key). Returns nonzero if scratch could not be allocated. */
int qkv_short_forward(long B, long H, long Hkv, long L, long S, long E, long Ev, const void *q, const int64_t *qs,
                      const void *k, const int64_t *ks, const void *v, const int64_t *vs, void *o, const int64_t *os,
                      float *lse, int dt, float scale, int causal, int nt) {
    int pairs = use_pairs(dt, E, Ev, scale) && words_ok(q, qs) && words_ok(k, ks) && words_ok(v, vs);
    struct call c = sizes(H, Hkv, L, S, E, Ev, dt, scale, causal, pairs);
    c.q = q, c.qs = qs, c.k = k, c.ks = ks, c.v = v, c.vs = vs, c.o = o, c.os = os, c.lse = lse;
    size_t need = (size_t)(L * c.Ep + c.Ep * c.Sp + c.Sp * c.Evp + L * c.Sp + L * c.Evp + (pairs ? L * c.Sp / 2 : 0));
    int failed = 0;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (long n = 0; n < B * H; n++) {
        float *buf = scratch(need);
        if (!buf)
            failed = 1;
        else if (pairs)
            forward_head(&c, n, buf, 1);
        else
            forward_head(&c, n, buf, 0);
    }
    return failed;
}

/* kv head n = b * Hkv + hk of the backward, over its G query heads, in scratch buf. Rows of P and dS go, with
 * pairs, straight into the operands that take them (Pt, dSt: b_rows of P and dS for P^T dO and dS^T Q, a row
 * into one half of each word; dSr: bfloat16 rows of dS for dS K), otherwise into P and dS, which are those
 * operands. */
QKV_INLINE void backward_head(const struct call *c, long n, float *buf, int pairs) {
    long L = c->L, S = c->S, E = c->E, Ev = c->Ev, Sp = c->Sp, Ep = c->Ep, Evp = c->Evp, off = c->off, isz = c->isz;
    long Lh = (L + 1) / 2, Hkv = c->H / c->G; /* Lh: rows of a b_rows operand of L rows, with pairs */
    int dt = c->dt, causal = c->causal, post = pairs || c->post; /* pairs: post, known when compiled */
    float cs = post ? c->scale * LOG2E : LOG2E; /* the scores' factor to log2 units */
    float *Q = buf, *Kt = Q + L * Ep, *Kr = Kt + Ep * Sp, *Vt = Kr + Sp * Ep, *dO = Vt + Evp * Sp;
    float *P = dO + L * Evp, *dS = P + L * Sp, *dQ = dS + L * Sp, *dK = dQ + L * Ep;
    float *dV = dK + S * Ep, *delta = dV + S * Evp, *Qb = Q, *dOb = dO, *Pt = P, *dSt = dS, *dSr = dS;
    if (pairs) Qb = delta + L, dOb = Qb + Lh * Ep, Pt = dOb + Lh * Evp, dSt = Pt + Lh * Sp, dSr = dSt + Lh * Sp;
    long b = n / Hkv, hk = n % Hkv, lk;
    const char *kh = head(c->k, c->ks, b, hk, isz);
    const char *vh = head(c->v, c->vs, b, hk, isz);
    b_cols(kh, dt, c->ks[2], S, E, Kt, Sp, pairs);
    const float *Kb = b_of(kh, dt, c->ks[2], S, E, Kr, Ep, pairs, &lk);
    b_cols(vh, dt, c->vs[2], S, Ev, Vt, Sp, pairs);
    vf cv = vset1(cs);
    for (long g = 0; g < c->G; g++) {
        long h = hk * c->G + g, lq, ldo, lqb = Ep, ldob = Evp;
        const char *qh = head(c->q, c->qs, b, h, isz);
        const char *oh = head(c->o, c->os, b, h, isz);
        const char *dh = head(c->dout, c->dos, b, h, isz);
        const float *Qa = a_of(qh, dt, c->qs[2], L, E, post ? 1.0f : c->scale, Q, Ep, pairs, &lq);
        const float *dOa = a_of(dh, dt, c->dos[2], L, Ev, 1.0f, dO, Evp, pairs, &ldo);
        for (long i = 0; i < L; i++) { /* delta_i = dO_i . O_i */
            vf s = vzero();
            const char *orow = oh + i * c->os[2] * isz, *drow = dh + i * c->dos[2] * isz;
            for (long j = 0; j < Ev; j += VW)
                s = vfmadd(vload_part(drow, dt, j, Ev), vload_part(orow, dt, j, Ev), s);
            delta[i] = vreduce_add(s);
        }
        mm(L, Sp, E, Qa, lq, 1, Kt, Sp, P, Sp, 0, causal ? ROW_CAUSAL : NO_MASK, NO_MASK, off, pairs);
        mm(L, Sp, Ev, dOa, ldo, 1, Vt, Sp, dS, Sp, 0, causal ? ROW_CAUSAL : NO_MASK, NO_MASK, off, pairs);
        const float *lrow = c->lse + (b * c->H + h) * L;
        for (long i = 0; i <= L; i++) {
            float *p = P + i * Sp, *ds = dS + i * Sp, *pt = Pt + i / 2 * Sp, *dst = dSt + i / 2 * Sp;
            uint16_t *dsr = (uint16_t *)dSr + i * Sp;
            long jm = i < L ? visible(i, S, causal, off) : 0; /* 0 exactly where the forward stored lse = +inf */
            long je = upw(jm);
            if (i == L && !(pairs && L % 2)) break; /* row L: only the zero half of a last pair */
            vf lv = vset1(jm ? lrow[i] : 0.0f), dl = vset1(i < L ? delta[i] : 0.0f);
            for (long j = 0; j < Sp; j += VW) {
                vf e = vzero(), d = vzero();
                if (j < je) {
                    vmask kk = vm_lanes(j, 0, jm);
                    e = vmaskz(kk, vexp2(vfmsub(vloadf(p + j), cv, lv), 1));
                    d = vmaskz_mul(kk, e, vsub(vloadf(ds + j), dl));
                } else if (!pairs) { /* the products after this read masked columns: zeros */
                    zero_tail(p, j, Sp);
                    zero_tail(ds, j, Sp);
                    break;
                }
#if QKV_BF16_DOT
                if (pairs) {
                    vstore_half_bf16(pt + j, e, i % 2);
                    vstore_half_bf16(dst + j, d, i % 2);
                    if (i < L) vstoreu(dsr, DT_BF16, j, d);
                    continue;
                }
#endif
                vstoref(p + j, e);
                vstoref(ds + j, d);
            }
        }
        /* the B operands of dS^T Q and P^T dO: the copies made for the A operands, else the rows (b_of) */
        const float *Qr = Qa == Q ? Q : b_of(qh, dt, c->qs[2], L, E, Qb, Ep, pairs, &lqb);
        const float *dOr = dOa == dO ? dO : b_of(dh, dt, c->dos[2], L, Ev, dOb, Evp, pairs, &ldob);
        mm(L, Ep, S, dSr, pairs ? Sp / 2 : Sp, 1, Kb, lk, dQ, Ep, 0, NO_MASK, causal ? ROW_CAUSAL : NO_MASK, off,
           pairs);
        store_rows(dQ, Ep, L, E, c->scale, (char *)head(c->dq, c->dqs, b, h, isz), dt, c->dqs[2]);
        mm(S, Evp, L, Pt, 1, Sp, dOr, ldob, dV, Evp, g > 0, NO_MASK, causal ? COL_CAUSAL : NO_MASK, off, pairs);
        mm(S, Ep, L, dSt, 1, Sp, Qr, lqb, dK, Ep, g > 0, NO_MASK, causal ? COL_CAUSAL : NO_MASK, off, pairs);
    }
    store_rows(dK, Ep, S, E, post ? c->scale : 1.0f, (char *)head(c->dk, c->dks, b, hk, isz), dt,
               c->dks[2]);
    store_rows(dV, Evp, S, Ev, 1.0f, (char *)head(c->dv, c->dvs, b, hk, isz), dt, c->dvs[2]);
}

/* Backward. As the forward, plus o, dout (B, H, L, Ev) and the outputs dq (B, H, L, E), dk (B, Hkv, S, E),
 * dv (B, Hkv, S, Ev), all with {batch, head, row} strides, unit last stride, dtype dt. One task per kv
 * head: its G query heads' dK and dV contributions accumulate in float32 scratch. */
int qkv_short_backward(long B, long H, long Hkv, long L, long S, long E, long Ev, const void *q, const int64_t *qs,
                       const void *k, const int64_t *ks, const void *v, const int64_t *vs, const void *o,
                       const int64_t *os, const void *dout, const int64_t *dos, const float *lse, void *dq,
                       const int64_t *dqs, void *dk, const int64_t *dks, void *dv, const int64_t *dvs, int dt,
                       float scale, int causal, int nt) {
    int pairs = use_pairs(dt, E, Ev, scale) && words_ok(q, qs) && words_ok(k, ks) && words_ok(v, vs)
                && words_ok(dout, dos);
    struct call c = sizes(H, Hkv, L, S, E, Ev, dt, scale, causal, pairs);
    c.q = q, c.qs = qs, c.k = k, c.ks = ks, c.v = v, c.vs = vs, c.o = (void *)o, c.os = os, c.dout = dout;
    c.dos = dos, c.lse = (float *)lse, c.dq = dq, c.dqs = dqs, c.dk = dk, c.dks = dks, c.dv = dv, c.dvs = dvs;
    long Sp = c.Sp, Ep = c.Ep, Evp = c.Evp, Lh = (L + 1) / 2;
    size_t need = (size_t)(L * Ep + Ep * Sp + Sp * Ep + Evp * Sp + L * Evp + 2 * L * Sp + L * Ep + S * Ep + S * Evp + L);
    if (pairs) need += (size_t)(Lh * Ep + Lh * Evp + 2 * Lh * Sp + L * Sp / 2);
    int failed = 0;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (long n = 0; n < B * Hkv; n++) {
        float *buf = scratch(need);
        if (!buf)
            failed = 1;
        else if (pairs)
            backward_head(&c, n, buf, 1);
        else
            backward_head(&c, n, buf, 0);
    }
    return failed;
}
