/* Event-driven convolution kernels for spike inputs (see models/spike_conv.py).
 *
 * Layout: x [N, H*W, Cin] and y / grad_y [N, Ho*Wo, Cout] (channels-last), float32 or bfloat16 bits;
 * weights (and the weight-gradient accumulator) float32 [G, k, k, Cin/G, Cout/G]. Each image's nonzero
 * inputs are first listed per (pixel, group) (CSR); then every output pixel sums `value * weight row`
 * over the nonzero inputs under its window, in blocks of 64 output channels held in vector registers.
 * Built by models/spike_conv.py with the host compiler (-O3 -march=native); plain C with GCC vector
 * extensions and OpenMP, no other dependencies. Called through ctypes (the GIL is released); the images
 * are shared out over the threads of torch's OpenMP team.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512BW__)
#include <immintrin.h>
#endif

typedef float v16 __attribute__((vector_size(64), aligned(4)));

static inline float bf16_to_f32(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) { /* round to nearest even, as torch does */
    uint32_t u;
    if (f != f) return 0x7FC0;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/* The nonzero entries of one image x [P, groups * cin_g]: for pixel p and group g, entries
 * start[p*groups+g] .. start[p*groups+g+1] of idx (channel within the group times `stride`, the offset
 * of its weight row) and val (its value). Zero blocks of 16 channels are skipped with one test. */
static void gather(const void *x, int bf16, int64_t P, int64_t groups, int64_t cin_g, int64_t stride,
                   int32_t *start, int32_t *idx, float *val) {
    int64_t c = 0, C = groups * cin_g;
    for (int64_t p = 0; p < P; p++) {
        for (int64_t g = 0; g < groups; g++) {
            start[p * groups + g] = (int32_t)c;
            int64_t ci = 0;
            if (bf16) {
                const uint16_t *r = (const uint16_t *)x + p * C + g * cin_g;
#if defined(__AVX512BW__)
                for (; ci + 32 <= cin_g; ci += 32) { /* one test for 32 channels, then their set bits */
                    __m512i v = _mm512_loadu_si512((const void *)(r + ci));
                    uint32_t m = (uint32_t)_mm512_test_epi16_mask(v, v);
                    while (m) {
                        int e = __builtin_ctz(m);
                        m &= m - 1;
                        idx[c] = (int32_t)((ci + e) * stride); val[c] = bf16_to_f32(r[ci + e]); c++;
                    }
                }
#endif
                for (; ci + 16 <= cin_g; ci += 16) {
                    uint64_t w[4];
                    memcpy(w, r + ci, 32);
                    if (!(w[0] | w[1] | w[2] | w[3])) continue;
                    for (int e = 0; e < 16; e++)
                        if (r[ci + e]) { idx[c] = (int32_t)((ci + e) * stride); val[c] = bf16_to_f32(r[ci + e]); c++; }
                }
                for (; ci < cin_g; ci++)
                    if (r[ci]) { idx[c] = (int32_t)(ci * stride); val[c] = bf16_to_f32(r[ci]); c++; }
            } else {
                const uint32_t *r = (const uint32_t *)x + p * C + g * cin_g; /* bits: -0.0 is kept, harmless */
#if defined(__AVX512BW__)
                for (; ci + 16 <= cin_g; ci += 16) {
                    __m512i v = _mm512_loadu_si512((const void *)(r + ci));
                    uint32_t m = (uint32_t)_mm512_test_epi32_mask(v, v);
                    while (m) {
                        int e = __builtin_ctz(m);
                        m &= m - 1;
                        idx[c] = (int32_t)((ci + e) * stride); memcpy(&val[c], &r[ci + e], 4); c++;
                    }
                }
#endif
                for (; ci + 16 <= cin_g; ci += 16) {
                    uint64_t w[8];
                    memcpy(w, r + ci, 64);
                    if (!(w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7])) continue;
                    for (int e = 0; e < 16; e++)
                        if (r[ci + e]) { idx[c] = (int32_t)((ci + e) * stride); memcpy(&val[c], &r[ci + e], 4); c++; }
                }
                for (; ci < cin_g; ci++)
                    if (r[ci]) { idx[c] = (int32_t)(ci * stride); memcpy(&val[c], &r[ci], 4); c++; }
            }
        }
    }
    start[P * groups] = (int32_t)c;
}

/* Sampled density: the fraction of nonzero entries (nonzero bit patterns) in every `every`-th of the n
 * images of `per` entries each; what the Python side compares with its limit. */
double sc_density(const void *x, int bf16, int64_t n, int64_t per, int64_t every) {
    int64_t nz = 0, seen = 0;
    for (int64_t i = 0; i < n; i += every) {
        if (bf16) {
            const uint16_t *r = (const uint16_t *)x + i * per;
            for (int64_t j = 0; j < per; j++) nz += r[j] != 0;
        } else {
            const uint32_t *r = (const uint32_t *)x + i * per;
            for (int64_t j = 0; j < per; j++) nz += r[j] != 0;
        }
        seen += per;
    }
    return seen ? (double)nz / (double)seen : 0.0;
}

typedef struct {
    int64_t H, W, Ho, Wo, k, stride, pad, groups, cin_g, cout_g;
} geom;

typedef struct {
    int32_t *start, *idx;
    float *val;
} scratch;

/* Per-thread scratch, kept between calls and grown when a larger layer comes: a fresh allocation per
 * call would page-fault its memory in again every time (glibc maps large blocks anew). */
static __thread scratch tls_scratch;
static __thread int64_t tls_starts, tls_entries;

static int scratch_get(scratch *s, const geom *g) {
    int64_t P = g->H * g->W, starts = P * g->groups + 2, entries = P * g->groups * g->cin_g + 2;
    scratch *t = &tls_scratch;
    if (starts > tls_starts) {
        int32_t *p = realloc(t->start, sizeof(int32_t) * starts);
        if (!p) return 0;
        t->start = p;
        tls_starts = starts;
    }
    if (entries > tls_entries) {
        int32_t *i = realloc(t->idx, sizeof(int32_t) * entries);
        if (i) t->idx = i;
        float *v = i ? realloc(t->val, sizeof(float) * entries) : NULL;
        if (v) t->val = v;
        if (!i || !v) return 0;
        tls_entries = entries;
    }
    *s = *t;
    return 1;
}

/* Runs BODY for every nonzero input under output pixel (oh, ow)'s window in group g, with `wb` the row
 * block of its tap in a [G, k, k, cin_g, cout_g] array (plus ob) and j its entry (row offset s->idx[j],
 * value s->val[j]). */
#define FOR_WINDOW(q, s, arr, g, oh, ow, ob, BODY)                                                 \
    for (int64_t dh = 0; dh < (q)->k; dh++) {                                                     \
        int64_t ih = (oh) * (q)->stride + dh - (q)->pad;                                          \
        if (ih < 0 || ih >= (q)->H) continue;                                                     \
        for (int64_t dw = 0; dw < (q)->k; dw++) {                                                 \
            int64_t iw = (ow) * (q)->stride + dw - (q)->pad;                                      \
            if (iw < 0 || iw >= (q)->W) continue;                                                 \
            int64_t p = (ih * (q)->W + iw) * (q)->groups + (g);                                   \
            __typeof__(arr) wb = (arr) + (((g) * (q)->k + dh) * (q)->k + dw) * (q)->cin_g * (q)->cout_g + (ob); \
            for (int32_t j = (s)->start[p]; j < (s)->start[p + 1]; j++) BODY                      \
        }                                                                                          \
    }

static void store(void *y, int bf16, int64_t off, const float *a, int64_t nb) {
    if (bf16) {
        uint16_t *o = (uint16_t *)y + off;
        for (int64_t i = 0; i < nb; i++) o[i] = f32_to_bf16(a[i]);
    } else {
        memcpy((float *)y + off, a, sizeof(float) * nb);
    }
}

static void load(const void *src, int bf16, int64_t off, float *a, int64_t nb) {
    if (bf16) {
        const uint16_t *s = (const uint16_t *)src + off;
        for (int64_t i = 0; i < nb; i++) a[i] = bf16_to_f32(s[i]);
    } else {
        memcpy(a, (const float *)src + off, sizeof(float) * nb);
    }
}

/* Lists each image's nonzero inputs (gather), then calls fn for that image, for the n images on
 * `threads` threads of the caller's OpenMP team (torch's own, so the kernels never compete with spinning
 * torch workers for the cores); fn gets the thread's number for per-thread outputs. Returns 0, or -1 if
 * scratch memory could not be allocated. */
typedef void (*image_fn)(const geom *q, const scratch *s, int64_t n, int thread, void *ctx);

static int each_image(const void *x, int x_bf16, geom q, int64_t n, int threads, image_fn fn, void *ctx) {
    int failed = 0;
    int64_t P = q.H * q.W, C = q.groups * q.cin_g, esz = x_bf16 ? 2 : 4;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        scratch s;
        int thread = 0;
#ifdef _OPENMP
        thread = omp_get_thread_num();
#endif
        if (!scratch_get(&s, &q)) {
            failed = 1;
        } else {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < n; i++) {
                gather((const char *)x + i * P * C * esz, x_bf16, P, q.groups, q.cin_g, q.cout_g, s.start, s.idx,
                       s.val);
                fn(&q, &s, i, thread, ctx);
            }
        }
    }
    return failed ? -1 : 0;
}

typedef struct {
    const float *w;
    void *y;
    int y_bf16;
} fwd_ctx;

static void forward_image(const geom *q, const scratch *s, int64_t n, int thread, void *ctx) {
    (void)thread;
    const fwd_ctx *c = (const fwd_ctx *)ctx;
    const float *w = c->w;
    int64_t Cout = q->groups * q->cout_g;
    float acc[64];
    for (int64_t g = 0; g < q->groups; g++) {
        for (int64_t ob = 0; ob < q->cout_g; ob += 64) {
            int64_t nb = q->cout_g - ob < 64 ? q->cout_g - ob : 64;
            for (int64_t oh = 0; oh < q->Ho; oh++) {
                for (int64_t ow = 0; ow < q->Wo; ow++) {
                    if (nb == 64) {
                        v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
                        FOR_WINDOW(q, s, w, g, oh, ow, ob, {
                            const v16 *r = (const v16 *)(wb + s->idx[j]);
                            const float *nx = wb + s->idx[j + 1]; /* the next row: fetch it early */
                            __builtin_prefetch(nx); __builtin_prefetch(nx + 16);
                            __builtin_prefetch(nx + 32); __builtin_prefetch(nx + 48);
                            float v = s->val[j];
                            a0 += v * r[0]; a1 += v * r[1]; a2 += v * r[2]; a3 += v * r[3];
                        })
                        memcpy(acc, &a0, 64); memcpy(acc + 16, &a1, 64);
                        memcpy(acc + 32, &a2, 64); memcpy(acc + 48, &a3, 64);
                    } else {
                        for (int64_t o = 0; o < nb; o++) acc[o] = 0.0f;
                        FOR_WINDOW(q, s, w, g, oh, ow, ob, {
                            const float *r = wb + s->idx[j];
                            float v = s->val[j];
                            for (int64_t o = 0; o < nb; o++) acc[o] += v * r[o];
                        })
                    }
                    store(c->y, c->y_bf16, (n * q->Ho * q->Wo + oh * q->Wo + ow) * Cout + g * q->cout_g + ob, acc,
                          nb);
                }
            }
        }
    }
}

/* y = conv(x, w) for the n images, on `threads` threads. Returns 0, or -1 if scratch memory could not be
 * allocated. */
int sc_forward(const void *x, int x_bf16, const float *w, void *y, int y_bf16, int64_t n, int64_t threads,
               int64_t H, int64_t W, int64_t Ho, int64_t Wo, int64_t k, int64_t stride, int64_t pad,
               int64_t groups, int64_t cin_g, int64_t cout_g) {
    geom q = {H, W, Ho, Wo, k, stride, pad, groups, cin_g, cout_g};
    fwd_ctx c = {w, y, y_bf16};
    return each_image(x, x_bf16, q, n, (int)threads, forward_image, &c);
}

typedef struct {
    const void *gy;
    int gy_bf16;
    float *gw; /* one accumulator per thread */
} wgrad_ctx;

static void weight_grad_image(const geom *q, const scratch *s, int64_t n, int thread, void *ctx) {
    const wgrad_ctx *c = (const wgrad_ctx *)ctx;
    int64_t k = q->k, Cout = q->groups * q->cout_g;
    float gr[64];
    for (int64_t g = 0; g < q->groups; g++) {
        for (int64_t ob = 0; ob < q->cout_g; ob += 64) {
            int64_t nb = q->cout_g - ob < 64 ? q->cout_g - ob : 64;
            /* tap by tap, so that one tap's [cin_g, 64] accumulator block stays in L1 */
            for (int64_t dh = 0; dh < k; dh++) {
                for (int64_t dw = 0; dw < k; dw++) {
                    float *wb = c->gw + thread * q->groups * k * k * q->cin_g * q->cout_g +
                                ((g * k + dh) * k + dw) * q->cin_g * q->cout_g + ob;
                    for (int64_t oh = 0; oh < q->Ho; oh++) {
                        int64_t ih = oh * q->stride + dh - q->pad;
                        if (ih < 0 || ih >= q->H) continue;
                        for (int64_t ow = 0; ow < q->Wo; ow++) {
                            int64_t iw = ow * q->stride + dw - q->pad;
                            if (iw < 0 || iw >= q->W) continue;
                            int64_t p = (ih * q->W + iw) * q->groups + g;
                            int32_t j0 = s->start[p], j1 = s->start[p + 1];
                            if (j0 == j1) continue;
                            load(c->gy, c->gy_bf16, (n * q->Ho * q->Wo + oh * q->Wo + ow) * Cout + g * q->cout_g + ob,
                                 gr, nb);
                            if (nb == 64) {
                                v16 g0, g1, g2, g3;
                                memcpy(&g0, gr, 64); memcpy(&g1, gr + 16, 64);
                                memcpy(&g2, gr + 32, 64); memcpy(&g3, gr + 48, 64);
                                for (int32_t j = j0; j < j1; j++) {
                                    v16 *r = (v16 *)(wb + s->idx[j]);
                                    float *nx = wb + s->idx[j + 1]; /* the next row: fetch it early */
                                    __builtin_prefetch(nx, 1); __builtin_prefetch(nx + 16, 1);
                                    __builtin_prefetch(nx + 32, 1); __builtin_prefetch(nx + 48, 1);
                                    float v = s->val[j];
                                    r[0] += v * g0; r[1] += v * g1; r[2] += v * g2; r[3] += v * g3;
                                }
                            } else {
                                for (int32_t j = j0; j < j1; j++) {
                                    float *r = wb + s->idx[j];
                                    float v = s->val[j];
                                    for (int64_t o = 0; o < nb; o++) r[o] += v * gr[o];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/* gw[thread] += dL/dw over the n images, on `threads` threads (gw: one float32 accumulator per thread,
 * zeroed by the caller, summed by it). Returns 0 or -1. */
int sc_weight_grad(const void *x, int x_bf16, const void *gy, int gy_bf16, float *gw, int64_t n,
                   int64_t threads, int64_t H, int64_t W, int64_t Ho, int64_t Wo, int64_t k, int64_t stride,
                   int64_t pad, int64_t groups, int64_t cin_g, int64_t cout_g) {
    geom q = {H, W, Ho, Wo, k, stride, pad, groups, cin_g, cout_g};
    wgrad_ctx c = {gy, gy_bf16, gw};
    return each_image(x, x_bf16, q, n, (int)threads, weight_grad_image, &c);
}
