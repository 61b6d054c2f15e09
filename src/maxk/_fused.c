/* Fused CPU kernels for the max@k reward transforms at small N (see maxk/_fused.py).
 *
 * One pass per row (group): sort the N rewards in descending order, accumulate the same sums as the eager
 * path in maxk/estimators.py, and write each result straight to the sample's own position. No temporaries
 * and no per-operation dispatch: at N = 8 this replaces the sort / multiply / cumulative-sum / multiply-add
 * / scatter tensor ops (a dozen more for the off-policy weights), whose cost is their dispatch, not their
 * arithmetic. The arithmetic and its
 * order are those of the eager path; compiled with -ffp-contract=off so that delta = 0 reproduces maxk
 * bit for bit.
 *
 * Weights are per descending position q (length n), already scaled, in the data's type:
 *   maxk:      out(q) = sum_{q' <= q} b[q'] v[q'] + own[q] v[q]
 *   offpolicy: p[q] = sum_{q' > q} d[q'],  x = wb + wb d + we p,  own = wab + wab_f d + wf p
 *              out(q) = sum_{q' <= q} x[q'] v[q'] + own[q] v[q] + d[q] sum_{q' <= q} wf[q'] v[q']
 */
#include <stdint.h>

#define MAXK_FUSED_MAX_N 16

int maxk_fused_max_n(void) { return MAXK_FUSED_MAX_N; }

#define DEFINE_KERNELS(T, SUF)                                                                        \
    /* v = x sorted descending (ties in input order), idx[q] = the input position of v[q]. Insertion   \
     * sort (N <= 16: cheaper than a general sort's set-up). A NaN compares false and never moves, so  \
     * the order is still a permutation and the NaN reaches the output, which the caller checks. */    \
    static void sort_desc_##SUF(const T *x, int64_t n, T *v, int64_t *idx) {                          \
        for (int64_t i = 0; i < n; ++i) {                                                             \
            T xi = x[i];                                                                              \
            int64_t j = i;                                                                            \
            for (; j > 0 && v[j - 1] < xi; --j) {                                                     \
                v[j] = v[j - 1];                                                                      \
                idx[j] = idx[j - 1];                                                                  \
            }                                                                                         \
            v[j] = xi;                                                                                \
            idx[j] = i;                                                                               \
        }                                                                                             \
    }                                                                                                 \
                                                                                                      \
    double maxk_rt_##SUF(const T *r, T *out, int64_t rows, int64_t n, const T *own, const T *b) {     \
        int64_t idx[MAXK_FUSED_MAX_N];                                                                \
        T v[MAXK_FUSED_MAX_N];                                                                        \
        double total = 0;                                                                             \
        for (int64_t row = 0; row < rows; ++row) {                                                    \
            T *y = out + row * n;                                                                     \
            sort_desc_##SUF(r + row * n, n, v, idx);                                                  \
            T acc = 0, row_sum = 0;                                                                   \
            for (int64_t q = 0; q < n; ++q) {                                                         \
                acc += b[q] * v[q];                                                                   \
                row_sum += (y[idx[q]] = acc + own[q] * v[q]);                                         \
            }                                                                                         \
            total += row_sum; /* one dependent add per row, not per element */                        \
        }                                                                                             \
        return total;                                                                                 \
    }                                                                                                 \
                                                                                                      \
    /* delta is clamped to [lo, hi] here (a NaN stays NaN). Both kernels return the sum of their      \
     * output, which is finite exactly when every output is (up to overflow of the sum itself). */    \
    double maxk_offpolicy_rt_##SUF(const T *r, const T *delta, T *out, int64_t rows, int64_t n, T lo,   \
                                 T hi, const T *wb, const T *we, const T *wf, const T *wab,           \
                                 const T *wab_f) {                                                    \
        int64_t idx[MAXK_FUSED_MAX_N];                                                                \
        T v[MAXK_FUSED_MAX_N];                                                                        \
        double total = 0;                                                                             \
        for (int64_t row = 0; row < rows; ++row) {                                                    \
            const T *dl = delta + row * n;                                                            \
            T *y = out + row * n;                                                                     \
            sort_desc_##SUF(r + row * n, n, v, idx);                                                  \
            T dsum = 0; /* the sum of the clamped deltas, in sorted order as the eager cumsum */      \
            for (int64_t q = 0; q < n; ++q) {                                                         \
                T dq = dl[idx[q]];                                                                    \
                dq = dq < lo ? lo : dq;                                                               \
                dsum += dq > hi ? hi : dq;                                                            \
            }                                                                                         \
            T c = 0, s1 = 0, s2 = 0, row_sum = 0;                                                     \
            for (int64_t q = 0; q < n; ++q) {                                                         \
                T d = dl[idx[q]];                                                                     \
                d = d < lo ? lo : d;                                                                  \
                d = d > hi ? hi : d;                                                                  \
                T p = dsum - (c += d);                                                                \
                s1 += (wb[q] + wb[q] * d + we[q] * p) * v[q];                                         \
                s2 += wf[q] * v[q];                                                                   \
                T own = wab[q] + wab_f[q] * d + wf[q] * p;                                            \
                row_sum += (y[idx[q]] = s1 + own * v[q] + d * s2);                                    \
            }                                                                                         \
            total += row_sum;                                                                         \
        }                                                                                             \
        return total;                                                                                 \
    }

DEFINE_KERNELS(float, f32)
DEFINE_KERNELS(double, f64)
