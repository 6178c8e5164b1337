/* _simd.h in plain C: 8 float32 lanes as a small array, every operation a fixed-length loop the compiler
 * vectorises for whatever its target has (SSE2 on any x86-64, NEON on ARM), masks as 0 / -1 lanes. No
 * intrinsics, so it builds with any C11 compiler on any CPU: the variant every machine runs and tests. */
#define QKV_VARIANT "portable"
#define VW 8
#define TILE_ROWS 4
#define TILE_VECS 1

typedef struct { float v[8]; } vf;
typedef struct { int32_t v[8]; } vmask;

#define LANES for (int i = 0; i < 8; i++)

QKV_INLINE vmask vm_lanes(long c, long c0, long c1) {
    vmask m;
    LANES m.v[i] = -(int32_t)(c + i >= c0 && c + i < c1);
    return m;
}
QKV_INLINE vmask vm_and(vmask a, vmask b) {
    LANES a.v[i] &= b.v[i];
    return a;
}
QKV_INLINE vmask vm_bytes(const uint8_t *mk, long c, vmask k) {
    LANES k.v[i] = k.v[i] ? -(int32_t)(mk[c + i] != 0) : 0;
    return k;
}

QKV_INLINE vf vset1(float x) {
    vf r;
    LANES r.v[i] = x;
    return r;
}
QKV_INLINE vf vzero(void) { return vset1(0.0f); }
#define QKV_BINARY(name, expr) \
    QKV_INLINE vf name(vf a, vf b) {  \
        LANES a.v[i] = (expr);        \
        return a;                     \
    }
QKV_BINARY(vadd, a.v[i] + b.v[i])
QKV_BINARY(vsub, a.v[i] - b.v[i])
QKV_BINARY(vmul, a.v[i] * b.v[i])
QKV_BINARY(vmax, a.v[i] > b.v[i] ? a.v[i] : b.v[i])
#undef QKV_BINARY
QKV_INLINE vf vfmadd(vf a, vf b, vf c) {
    LANES a.v[i] = a.v[i] * b.v[i] + c.v[i];
    return a;
}
QKV_INLINE vf vfmsub(vf a, vf b, vf c) {
    LANES a.v[i] = a.v[i] * b.v[i] - c.v[i];
    return a;
}
QKV_INLINE vf vmaskz(vmask k, vf v) {
    LANES v.v[i] = k.v[i] ? v.v[i] : 0.0f;
    return v;
}
QKV_INLINE vf vmaskz_mul(vmask k, vf a, vf b) { return vmaskz(k, vmul(a, b)); }
QKV_INLINE vf vmask_max(vf m, vmask k, vf x) {
    LANES m.v[i] = k.v[i] && x.v[i] > m.v[i] ? x.v[i] : m.v[i];
    return m;
}
QKV_INLINE vf vloadf(const float *p) {
    vf r;
    memcpy(r.v, p, sizeof r.v);
    return r;
}
QKV_INLINE void vstoref(float *p, vf v) { memcpy(p, v.v, sizeof v.v); }
QKV_INLINE float vreduce_max(vf v) {
    float m = v.v[0];
    for (int i = 1; i < 8; i++) m = v.v[i] > m ? v.v[i] : m;
    return m;
}
QKV_INLINE float vreduce_add(vf v) {
    float s = 0.0f;
    LANES s += v.v[i];
    return s;
}

QKV_INLINE vf vload_bf16(const uint16_t *p) {
    vf r;
    LANES r.v[i] = bf2f(p[i]);
    return r;
}
QKV_INLINE void vstore_bf16(uint16_t *p, vf v) { LANES p[i] = f2bf(v.v[i]); }
QKV_UNMASKED_ROWS

QKV_INLINE vf vload(const void *row, int dt, long c, vmask k) {
    vf r;
    LANES r.v[i] = !k.v[i] ? 0.0f : dt == DT_BF16 ? bf2f(((const uint16_t *)row)[c + i]) : ((const float *)row)[c + i];
    return r;
}
QKV_INLINE void vstore(void *row, int dt, long c, vf v, vmask k) {
    LANES if (k.v[i]) {
        if (dt == DT_BF16)
            ((uint16_t *)row)[c + i] = f2bf(v.v[i]);
        else
            ((float *)row)[c + i] = v.v[i];
    }
}

QKV_INLINE vmask vm_ge(vf x, float t) {
    vmask m;
    LANES m.v[i] = -(int32_t)(x.v[i] >= t);
    return m;
}
QKV_INLINE vf vround(vf x) { /* nearest integer for |x| < 2**22 (1.5 * 2**23 added and taken away) */
    LANES x.v[i] = (x.v[i] + 12582912.0f) - 12582912.0f;
    return x;
}
QKV_INLINE vf vldexp(vf p, vf n) { /* n clamped first: converting an out-of-range float to int is undefined */
    LANES {
        float e = n.v[i] >= -127.0f ? (n.v[i] <= 127.0f ? n.v[i] : 127.0f) : -127.0f;
        union { uint32_t u; float f; } s;
        s.u = (uint32_t)((int32_t)e + 127) << 23;
        p.v[i] *= s.f;
    }
    return p;
}

static inline void vtranspose(vf r[8]) {
    for (int i = 0; i < 8; i++)
        for (int j = i + 1; j < 8; j++) {
            float t = r[i].v[j];
            r[i].v[j] = r[j].v[i];
            r[j].v[i] = t;
        }
}
#undef LANES
