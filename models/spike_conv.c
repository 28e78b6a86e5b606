/* Event-driven convolution kernels for spike inputs (see models/spike_conv.py).
 *
 * Layout: x [N, H*W, Cin] and y / grad_y [N, Ho*Wo, Cout] (channels-last), float32 or bfloat16 bits;
 * weights (and the weight-gradient accumulator) float32 [G, k, k, Cin/G, Cout/G]. Each image's nonzero
 * inputs are first listed per (pixel, group) (CSR); then every output pixel sums `value * weight row`
 * over the nonzero inputs under its window, up to 256 output channels at a time held in vector registers.
 * Built by models/spike_conv.py with the host compiler (-O3 -march=native, or the level models/cbuild.py
 * is given); plain C with GCC vector extensions and OpenMP, no other dependencies. The one intrinsics path
 * (AVX-512BW in gather) has a portable twin used on every other CPU (AVX2, SSE2, Arm); the tests run both.
 * Called through ctypes (the GIL is released); the images are shared out over the threads of torch's
 * OpenMP team.
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

#if defined(__AVX512BW__)
/* Appends the entries of channels ci .. ci+15 picked by mask m (float32 values `vals`, row offsets
 * channel x stride) at position c of the lists, with full 16-lane stores; returns the new end. */
static inline int64_t append16(int32_t *idx, float *val, int64_t c, __mmask16 m, __m512i vals, int64_t ci,
                               __m512i vstride) {
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i rows = _mm512_mullo_epi32(_mm512_add_epi32(_mm512_set1_epi32((int)ci), lanes), vstride);
    _mm512_storeu_si512((void *)(idx + c), _mm512_maskz_compress_epi32(m, rows));
    _mm512_storeu_si512((void *)(val + c), _mm512_maskz_compress_epi32(m, vals));
    return c + __builtin_popcount((unsigned)m);
}
#endif

/* The nonzero entries of one image x [P, groups * cin_g]: for pixel p and group g, entries
 * start[p*groups+g] .. start[p*groups+g+1] of idx (channel within the group times `stride`, the offset
 * of its weight row) and val (its value). With AVX-512 each 16 channels' nonzero entries are compressed
 * into the lists at once (full 16-lane stores: the lists have 16 entries of slack); otherwise zero blocks
 * of 16 channels are skipped with one test. */
static void gather(const void *x, int bf16, int64_t P, int64_t groups, int64_t cin_g, int64_t stride,
                   int32_t *start, int32_t *idx, float *val) {
    int64_t c = 0, C = groups * cin_g;
#if defined(__AVX512BW__)
    const __m512i vstride = _mm512_set1_epi32((int)stride);
#endif
    for (int64_t p = 0; p < P; p++) {
        for (int64_t g = 0; g < groups; g++) {
            start[p * groups + g] = (int32_t)c;
            int64_t ci = 0;
            if (bf16) {
                const uint16_t *r = (const uint16_t *)x + p * C + g * cin_g;
#if defined(__AVX512BW__)
                for (; ci + 16 <= cin_g; ci += 16) { /* 16 channels: compress the nonzero ones, no branches */
                    __m256i b = _mm256_loadu_si256((const __m256i *)(r + ci));
                    __mmask16 m = _mm256_test_epi16_mask(b, b);
                    __m512i f = _mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16); /* bf16 bits -> float32 */
                    c = append16(idx, val, c, m, f, ci, vstride);
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
                    c = append16(idx, val, c, _mm512_test_epi32_mask(v, v), v, ci, vstride);
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
    /* (entries: + slack for gather's 16-lane stores) */
    int64_t P = g->H * g->W, starts = P * g->groups + 2, entries = P * g->groups * g->cin_g + 18;
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

/* Output channels per pass: up to 16 vectors of 16 float32 accumulators held in registers (the rest of the
 * 32 vector registers hold the broadcast value); a pass walks each window's lists once. */
#define MAXV 16

/* The widest pass for the rest of a group's output channels: 256, 192, 128 or 64 of them, or, under 64,
 * all that are left (the generic path). */
static inline int64_t pass_width(int64_t rest) {
    return rest >= 16 * MAXV ? 16 * MAXV : rest >= 64 ? rest / 64 * 64 : rest;
}

/* acc[0 .. 16 nv) = sum over output pixel (oh, ow)'s window of value x weight row (nv a constant after
 * inlining: the loops unroll and a[] lives in registers). */
static inline __attribute__((always_inline)) void forward_pixel(const geom *q, const scratch *s, const float *w,
                                                                int64_t g, int64_t oh, int64_t ow, int64_t ob,
                                                                float *acc, const int nv) {
    v16 a[MAXV];
#pragma GCC unroll 16
    for (int u = 0; u < nv; u++) a[u] = (v16){0};
    FOR_WINDOW(q, s, w, g, oh, ow, ob, {
        const v16 *r = (const v16 *)(wb + s->idx[j]);
        const float *nx = wb + s->idx[j + 1]; /* the next row: start fetching it */
        __builtin_prefetch(nx); __builtin_prefetch(nx + 16); __builtin_prefetch(nx + 32); __builtin_prefetch(nx + 48);
        float v = s->val[j];
#pragma GCC unroll 16
        for (int u = 0; u < nv; u++) a[u] += v * r[u];
    })
    memcpy(acc, a, sizeof(v16) * (size_t)nv);
}

static void forward_image(const geom *q, const scratch *s, int64_t n, int thread, void *ctx) {
    (void)thread;
    const fwd_ctx *c = (const fwd_ctx *)ctx;
    const float *w = c->w;
    int64_t Cout = q->groups * q->cout_g;
    float acc[16 * MAXV];
    for (int64_t g = 0; g < q->groups; g++) {
        for (int64_t ob = 0, nb; ob < q->cout_g; ob += nb) {
            nb = pass_width(q->cout_g - ob);
            for (int64_t oh = 0; oh < q->Ho; oh++) {
                for (int64_t ow = 0; ow < q->Wo; ow++) {
                    switch (nb) {
                    case 256: forward_pixel(q, s, w, g, oh, ow, ob, acc, 16); break;
                    case 192: forward_pixel(q, s, w, g, oh, ow, ob, acc, 12); break;
                    case 128: forward_pixel(q, s, w, g, oh, ow, ob, acc, 8); break;
                    case 64: forward_pixel(q, s, w, g, oh, ow, ob, acc, 4); break;
                    default:
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

/* Weight rows wb + idx[j] (j0 <= j < j1) += value x the output gradient gr[0 .. 16 nv) (nv a constant after
 * inlining: gr lives in registers). */
static inline __attribute__((always_inline)) void weight_grad_rows(const scratch *s, float *wb, const float *gr,
                                                                   int32_t j0, int32_t j1, const int nv) {
    v16 gv[MAXV];
    memcpy(gv, gr, sizeof(v16) * (size_t)nv);
    for (int32_t j = j0; j < j1; j++) {
        v16 *r = (v16 *)(wb + s->idx[j]);
        float *nx = wb + s->idx[j + 1]; /* the next row: start fetching it */
        __builtin_prefetch(nx, 1); __builtin_prefetch(nx + 16, 1);
        __builtin_prefetch(nx + 32, 1); __builtin_prefetch(nx + 48, 1);
        float v = s->val[j];
#pragma GCC unroll 16
        for (int u = 0; u < nv; u++) r[u] += v * gv[u];
    }
}

static void weight_grad_image(const geom *q, const scratch *s, int64_t n, int thread, void *ctx) {
    const wgrad_ctx *c = (const wgrad_ctx *)ctx;
    int64_t k = q->k, Cout = q->groups * q->cout_g;
    float gr[16 * MAXV];
    for (int64_t g = 0; g < q->groups; g++) {
        for (int64_t ob = 0, nb; ob < q->cout_g; ob += nb) {
            nb = pass_width(q->cout_g - ob);
            /* tap by tap, so that one tap's [cin_g, nb] accumulator block stays in cache */
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
                            switch (nb) {
                            case 256: weight_grad_rows(s, wb, gr, j0, j1, 16); break;
                            case 192: weight_grad_rows(s, wb, gr, j0, j1, 12); break;
                            case 128: weight_grad_rows(s, wb, gr, j0, j1, 8); break;
                            case 64: weight_grad_rows(s, wb, gr, j0, j1, 4); break;
                            default:
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
