/* Mamba's selective scan on the CPU, fused: forward and hand-written backward, one pass each.
 *
 * Loaded by dmlm/model/cscan.py (compiled once per machine into a cache folder, then called
 * through ctypes on fp32, contiguous, time-major tensors):
 *
 *   delta, x, y, g_delta, g_x: L x B x D      A, g_a_rows: (B x) D x N
 *   Bm, C, g_b, g_c:           L x B x N      states: L x B x D x N (NULL: keep none)
 *   last, g_last:              B x D x N
 *
 *   h_t = exp(delta_t A) h_{t-1} + delta_t x_t B_t,    y_t = C_t . h_t          (h_{-1} = 0)
 *
 * The PyTorch scan (mamba_scan.py) runs the same recurrence as about ten passes over
 * (L, B, D, N) tensors in memory; here each state stays in registers and exp is vectorised over
 * N (glibc's libmvec under -ffast-math). Every function works on the batch rows [b0, b1) only, so
 * the caller may split rows across threads: a row's results never depend on another's, and the
 * A gradient is kept per row (g_a_rows) and summed by the caller in a fixed order. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Per batch row, time outermost: the row's D x N state (24 KB at D 384, N 16) stays in the L1/L2
 * cache while each step reads and writes contiguous slices. Returns non-zero if out of memory. */
int scan_forward(const float *delta, const float *x, const float *A, const float *Bm, const float *C,
                 float *y, float *states, float *last, long L, long B, long D, long N, long b0, long b1)
{
    float *h = malloc(sizeof(float) * D * N); /* zeroed per row */
    if (!h)
        return 1;
    for (long b = b0; b < b1; b++) {
        memset(h, 0, sizeof(float) * D * N);
        for (long t = 0; t < L; t++) {
            const long row = t * B + b;
            const float *bt = Bm + row * N, *ct = C + row * N;
            for (long d = 0; d < D; d++) {
                const float dl = delta[row * D + d], u = dl * x[row * D + d];
                const float *a = A + d * N;
                float *hd = h + d * N, acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (long n = 0; n < N; n++) {
                    hd[n] = expf(dl * a[n]) * hd[n] + u * bt[n];
                    acc += ct[n] * hd[n];
                }
                y[row * D + d] = acc;
            }
            if (states)
                memcpy(states + row * D * N, h, sizeof(float) * D * N);
        }
        memcpy(last + b * D * N, h, sizeof(float) * D * N);
    }
    free(h);
    return 0;
}

/* g_b, g_c (rows [b0, b1)) must be zero on entry: they sum over channels d. */
int scan_backward(const float *delta, const float *x, const float *A, const float *Bm, const float *C,
                  const float *states, const float *gy, const float *g_last, float *g_delta, float *g_x,
                  float *g_a_rows, float *g_b, float *g_c, long L, long B, long D, long N, long b0, long b1)
{
    float *gh = malloc(sizeof(float) * D * N), *zeros = calloc((size_t)(D * N), sizeof(float)); /* zeros: h_{-1} */
    if (!gh || !zeros) {
        free(gh);
        free(zeros);
        return 1;
    }
    for (long b = b0; b < b1; b++) {
        float *ga = g_a_rows + b * D * N;
        if (g_last)
            memcpy(gh, g_last + b * D * N, sizeof(float) * D * N);
        else
            memset(gh, 0, sizeof(float) * D * N);
        for (long t = L - 1; t >= 0; t--) {
            const long row = t * B + b;
            const float *bt = Bm + row * N, *ct = C + row * N;
            const float *ht = states + row * D * N, *hp = t > 0 ? states + (row - B) * D * N : zeros;
            float *gbt = g_b + row * N, *gct = g_c + row * N;
            for (long d = 0; d < D; d++) {
                const float dl = delta[row * D + d], xv = x[row * D + d], u = dl * xv, gyt = gy[row * D + d];
                const float *a = A + d * N, *htd = ht + d * N, *hpd = hp + d * N;
                float *ghd = gh + d * N, *gad = ga + d * N, g_dA = 0.0f, g_u = 0.0f;
#pragma omp simd reduction(+ : g_dA, g_u)
                for (long n = 0; n < N; n++) {
                    const float g = ghd[n] + gyt * ct[n]; /* dL/dh_t */
                    const float decay = expf(dl * a[n]);
                    const float g_exp = g * decay * hpd[n]; /* dL/d(delta_t A) */
                    gct[n] += gyt * htd[n];
                    gbt[n] += g * u;
                    gad[n] += g_exp * dl;
                    g_dA += g_exp * a[n];
                    g_u += g * bt[n];
                    ghd[n] = g * decay; /* flows into h_{t-1} */
                }
                g_delta[row * D + d] = g_dA + g_u * xv;
                g_x[row * D + d] = g_u * dl;
            }
        }
    }
    free(gh);
    free(zeros);
    return 0;
}
