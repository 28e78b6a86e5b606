/* Fused multi-step LIF kernels for CPU (see models/lif_cpu.py): one memory pass forward, one backward.
 *
 * The paper's neuron (tau 2, decay_input, hard reset to 0, detached reset, ATan surrogate) over a flat
 * time-major x [T, N], float32 or bfloat16 bits. The arithmetic is spikingjelly 2.0's CPU op, operation for
 * operation in float32 (built with -ffp-contract=off: no fused multiply-adds, so every product and sum is
 * rounded where spikingjelly's is), so the results are bit-identical to it. N is cut into blocks shared
 * out over the threads of the caller's OpenMP team (torch's own); within a block the inner loops run over
 * contiguous elements and vectorize.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 1024 /* elements per block: T x BLOCK float32 of recomputed membrane stay in L1/L2 */

static inline float load(const void *a, int bf16, int64_t i) {
    if (bf16) {
        uint32_t u = (uint32_t)((const uint16_t *)a)[i] << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    return ((const float *)a)[i];
}

static inline void store(void *a, int bf16, int64_t i, float f) {
    if (bf16) { /* round to nearest even, NaN to the canonical quiet NaN: torch's rule */
        uint32_t u;
        memcpy(&u, &f, 4);
        uint16_t r = (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
        ((uint16_t *)a)[i] = f != f ? (uint16_t)0x7FC0 : r;
    } else {
        ((float *)a)[i] = f;
    }
}

/* H = V + (X - V) / tau, in spikingjelly's operation order (forward and backward's recompute). */
static inline float charge(float x, float v, float tau) { return (x - v) / tau + v; }

static inline int threads_for(int64_t work, int threads) { return work < (1 << 16) ? 1 : threads; }

/* spikes = LIF(x) from the membrane v0 [N] (NULL: 0); v_out [N] gets the final membrane (NULL: not kept). */
void lif_forward(const void *x, int bf16, const float *v0, void *spikes, float *v_out, int64_t T, int64_t N,
                 float tau, float threshold, int threads) {
    int64_t blocks = (N + BLOCK - 1) / BLOCK;
#pragma omp parallel for num_threads(threads_for(T * N, threads)) schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        int64_t b0 = b * BLOCK, m = N - b0 < BLOCK ? N - b0 : BLOCK;
        float local[BLOCK];
        float *restrict v = v_out ? v_out + b0 : local;
        for (int64_t i = 0; i < m; i++) v[i] = v0 ? v0[b0 + i] : 0.0f;
        for (int64_t t = 0; t < T; t++) {
            int64_t o = t * N + b0;
            if (bf16) {
                const uint16_t *restrict xt = (const uint16_t *)x + o;
                uint16_t *restrict st = (uint16_t *)spikes + o;
                for (int64_t i = 0; i < m; i++) {
                    float h = charge(load(xt, 1, i), v[i], tau);
                    int fired = h >= threshold;
                    st[i] = fired ? (uint16_t)0x3F80 : (uint16_t)0;
                    v[i] = fired ? 0.0f : h; /* hard reset to 0 */
                }
            } else {
                const float *restrict xt = (const float *)x + o;
                float *restrict st = (float *)spikes + o;
                for (int64_t i = 0; i < m; i++) {
                    float h = charge(xt[i], v[i], tau);
                    int fired = h >= threshold;
                    st[i] = fired ? 1.0f : 0.0f;
                    v[i] = fired ? 0.0f : h;
                }
            }
        }
    }
}

/* One block of the backward, specialised for the element type (bf16 a compile-time constant). */
static inline __attribute__((always_inline)) void backward_block(
    const void *x, const float *v0, const void *g, const float *g_v, void *gx, float *gv0, int64_t T, int64_t N,
    int64_t b0, int64_t m, float tau, float threshold, float k, float scale, float *restrict hs,
    float *restrict vv, const int bf16) {
    for (int64_t i = 0; i < m; i++) vv[i] = v0 ? v0[b0 + i] : 0.0f;
    for (int64_t t = 0; t < T; t++) { /* recompute the membrane trace H */
        int64_t o = t * N + b0;
        float *restrict ht = hs + t * BLOCK;
        for (int64_t i = 0; i < m; i++) {
            float h = charge(load(x, bf16, o + i), vv[i], tau);
            ht[i] = h;
            vv[i] = h >= threshold ? 0.0f : h;
        }
    }
    for (int64_t i = 0; i < m; i++) vv[i] = g_v ? g_v[b0 + i] : 0.0f; /* now the gradient carried through V */
    for (int64_t t = T - 1; t >= 0; t--) {
        int64_t o = t * N + b0;
        const float *restrict ht = hs + t * BLOCK;
        for (int64_t i = 0; i < m; i++) {
            float h = ht[i];
            float z = (h - threshold) * k;
            float sg = 1.0f / (z * z + 1.0f) * scale;
            float gh = sg * load(g, bf16, o + i) + (h >= threshold ? 0.0f : vv[i]); /* detached reset */
            float q = gh / tau;
            store(gx, bf16, o + i, q);
            vv[i] = gh - q;
        }
    }
    if (gv0)
        for (int64_t i = 0; i < m; i++) gv0[b0 + i] = vv[i];
}

/* Gradients of lif_forward: gx [T, N] for x, and (gv0 not NULL) gv0 [N] for the initial membrane, from the
 * spike gradients g [T, N] and the final-membrane gradient g_v [N] (NULL: zero). The membrane trace is
 * recomputed block by block from (x, v0), then swept in reverse time. The ATan surrogate is
 * 1 / (1 + (k (h - threshold))^2) * scale, with k = pi/2 alpha and scale = alpha / 2 (exactly 1 for the
 * paper's alpha 2). Returns 0, or -1 if a thread could not allocate its T x BLOCK scratch. */
int lif_backward(const void *x, int bf16, const float *v0, const void *g, const float *g_v, void *gx,
                 float *gv0, int64_t T, int64_t N, float tau, float threshold, float k, float scale, int threads) {
    int64_t blocks = (N + BLOCK - 1) / BLOCK;
    int failed = 0;
#pragma omp parallel num_threads(threads_for(T * N, threads)) reduction(| : failed)
    {
        float *hs = malloc(sizeof(float) * (size_t)(T > 0 ? T : 1) * BLOCK), vv[BLOCK];
        failed = hs == NULL;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks; b++) {
            int64_t b0 = b * BLOCK, m = N - b0 < BLOCK ? N - b0 : BLOCK;
            if (!hs) continue;
            if (bf16)
                backward_block(x, v0, g, g_v, gx, gv0, T, N, b0, m, tau, threshold, k, scale, hs, vv, 1);
            else
                backward_block(x, v0, g, g_v, gx, gv0, T, N, b0, m, tau, threshold, k, scale, hs, vv, 0);
        }
        free(hs);
    }
    return failed ? -1 : 0;
}
