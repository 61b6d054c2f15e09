/* Fused CPU kernels for the max@k reward transforms at small N (see maxk/_fused.py).
 *
 * At N = 8 the eager transforms in maxk/estimators.py (sort, multiply, cumulative sum, multiply-add,
 * scatter; a dozen more ops for the off-policy weights) cost their per-op dispatch, not their arithmetic.
 * Here the same sums run in one pass over blocks of LANES groups, the groups of a block side by side in
 * the lanes of every inner loop, so that the compiler vectorises across groups:
 *   1. sort each group in descending order with a sorting network (comparator pairs from
 *      maxk/_fused.py, proved there by the 0-1 principle), branch-free compare-exchanges carrying the
 *      input positions; a NaN compares false, is never swapped, and so still reaches the output, which
 *      the caller checks through the returned sum; the order among tied rewards does not matter (tied
 *      samples get equal results, up to rounding);
 *   2. accumulate the eager path's sums in its order of operations (compiled with -ffp-contract=off, so
 *      delta = 0 reproduces maxk bit for bit) and write each result to its sample's input position.
 *
 * Weights are per descending position q (length n), already scaled, in the data's type:
 *   maxk:      out(q) = sum_{q' <= q} b[q'] v[q'] + own[q] v[q]
 *   offpolicy: d = clamp(delta, lo, hi), p[q] = sum_{q' > q} d[q'],  x = wb + wb d + we p,
 *              own = wab + wab_f d + wf p,
 *              out(q) = sum_{q' <= q} x[q'] v[q'] + own[q] v[q] + d[q] sum_{q' <= q} wf[q'] v[q']
 * Both return the sum of their output: finite exactly when every output is (unless the sum overflows).
 */
#include <stdint.h>

#define MAXK_FUSED_MAX_N 16
#define LANES 8

int maxk_fused_max_n(void) { return MAXK_FUSED_MAX_N; }
int maxk_fused_abi(void) { return 2; } /* bump with any change of an argument list (maxk/_fused.py ABI) */

/* T: the data type; I: an index type of the same width (so compare-exchanges vectorise together). */
#define DEFINE_KERNELS(T, I, SUF)                                                                     \
    /* Rows row0 .. row0+m-1 (m <= LANES) into v[q][l], idx[q][l]: sorted descending per lane. */      \
    static void load_sorted_##SUF(const T *r, int64_t row0, int64_t m, int64_t n, const int32_t *net, \
                                  int64_t ncmp, T v[][LANES], I idx[][LANES]) {                       \
        for (int64_t i = 0; i < n; ++i)                                                               \
            for (int64_t l = 0; l < LANES; ++l) {                                                     \
                v[i][l] = l < m ? r[(row0 + l) * n + i] : (T)0;                                       \
                idx[i][l] = (I)i;                                                                     \
            }                                                                                         \
        for (int64_t c = 0; c < ncmp; ++c) {                                                          \
            T *restrict va = v[net[2 * c]], *restrict vb = v[net[2 * c + 1]];                                           \
            I *restrict ia = idx[net[2 * c]], *restrict ib = idx[net[2 * c + 1]];                                       \
            for (int64_t l = 0; l < LANES; ++l) {                                                     \
                T x = va[l], y = vb[l];                                                               \
                I ix = ia[l], iy = ib[l];                                                             \
                int swap = x < y; /* ties stay put: tied rewards get equal results anyway */          \
                va[l] = swap ? y : x;                                                                 \
                vb[l] = swap ? x : y;                                                                 \
                ia[l] = swap ? iy : ix;                                                               \
                ib[l] = swap ? ix : iy;                                                               \
            }                                                                                         \
        }                                                                                             \
    }                                                                                                 \
                                                                                                      \
    /* y[q][l] to the input position of each of the m rows; returns their sum. */                     \
    static double store_##SUF(T *out, int64_t row0, int64_t m, int64_t n, T y[][LANES],               \
                              I idx[][LANES]) {                                                       \
        double total = 0;                                                                             \
        for (int64_t l = 0; l < m; ++l) {                                                             \
            T row_sum = 0; /* one dependent add per row into the total, not one per element */        \
            for (int64_t q = 0; q < n; ++q) {                                                         \
                out[(row0 + l) * n + idx[q][l]] = y[q][l];                                            \
                row_sum += y[q][l];                                                                   \
            }                                                                                         \
            total += row_sum;                                                                         \
        }                                                                                             \
        return total;                                                                                 \
    }                                                                                                 \
                                                                                                      \
    double maxk_rt_##SUF(const T *r, T *out, int64_t rows, int64_t n, const int32_t *net,             \
                         int64_t ncmp, const T *own, const T *b) {                                    \
        T v[MAXK_FUSED_MAX_N][LANES], y[MAXK_FUSED_MAX_N][LANES];                                      \
        I idx[MAXK_FUSED_MAX_N][LANES];                                                               \
        double total = 0;                                                                             \
        for (int64_t row0 = 0; row0 < rows; row0 += LANES) {                                          \
            int64_t m = rows - row0 < LANES ? rows - row0 : LANES;                                    \
            load_sorted_##SUF(r, row0, m, n, net, ncmp, v, idx);                                      \
            T acc[LANES] = {0};                                                                       \
            for (int64_t q = 0; q < n; ++q)                                                           \
                for (int64_t l = 0; l < LANES; ++l) {                                                 \
                    acc[l] += b[q] * v[q][l];                                                         \
                    y[q][l] = acc[l] + own[q] * v[q][l];                                              \
                }                                                                                     \
            total += store_##SUF(out, row0, m, n, y, idx);                                            \
        }                                                                                             \
        return total;                                                                                 \
    }                                                                                                 \
                                                                                                      \
    double maxk_offpolicy_rt_##SUF(const T *r, const T *delta, T *out, int64_t rows, int64_t n,       \
                                   const int32_t *net, int64_t ncmp, T lo, T hi, const T *wb,         \
                                   const T *we, const T *wf, const T *wab, const T *wab_f) {          \
        T v[MAXK_FUSED_MAX_N][LANES], d[MAXK_FUSED_MAX_N][LANES], y[MAXK_FUSED_MAX_N][LANES];         \
        I idx[MAXK_FUSED_MAX_N][LANES];                                                               \
        double total = 0;                                                                             \
        for (int64_t row0 = 0; row0 < rows; row0 += LANES) {                                          \
            int64_t m = rows - row0 < LANES ? rows - row0 : LANES;                                    \
            load_sorted_##SUF(r, row0, m, n, net, ncmp, v, idx);                                      \
            for (int64_t q = 0; q < n; ++q) /* delta in sorted order, clamped (NaN stays NaN) */      \
                for (int64_t l = 0; l < LANES; ++l) {                                                 \
                    T x = l < m ? delta[(row0 + l) * n + idx[q][l]] : (T)0;                           \
                    x = x < lo ? lo : x;                                                              \
                    d[q][l] = x > hi ? hi : x;                                                        \
                }                                                                                     \
            T c[LANES] = {0}, s1[LANES] = {0}, s2[LANES] = {0};                                       \
            for (int64_t q = 0; q < n; ++q) /* c = the total, summed in order as the eager cumsum */   \
                for (int64_t l = 0; l < LANES; ++l) c[l] += d[q][l];                                  \
            T cd[LANES] = {0};                                                                        \
            for (int64_t q = 0; q < n; ++q)                                                           \
                for (int64_t l = 0; l < LANES; ++l) {                                                 \
                    cd[l] += d[q][l];                                                                 \
                    T p = c[l] - cd[l];                                                               \
                    s1[l] += (wb[q] + wb[q] * d[q][l] + we[q] * p) * v[q][l];                         \
                    s2[l] += wf[q] * v[q][l];                                                         \
                    T own = wab[q] + wab_f[q] * d[q][l] + wf[q] * p;                                  \
                    y[q][l] = s1[l] + own * v[q][l] + d[q][l] * s2[l];                                \
                }                                                                                     \
            total += store_##SUF(out, row0, m, n, y, idx);                                            \
        }                                                                                             \
        return total;                                                                                 \
    }

DEFINE_KERNELS(float, int32_t, f32)
DEFINE_KERNELS(double, int64_t, f64)
