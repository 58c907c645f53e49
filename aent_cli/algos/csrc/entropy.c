/* Fused per-row entropy kernels for CPUs: full and clamped entropy of softmax(x / T), forward and
 * backward, one row (a vocabulary of logits) at a time so each pass reads the row from cache.
 *
 * Forward, per row:  y = x / T (fp32);  m = max y;  keep = all, or all but the `drop` lowest
 * (exact, as torch.kthvalue; tied tokens at the threshold: the lowest indices are kept);
 * z = sum_keep exp(y - m);  s = sum_keep exp(y - m) (y - m);  H = log z - s / z.
 * It stores per row: H, log Z = m + log z, mean = m + s / z, and the kept set as (thr, cut):
 * token i is kept iff y_i > thr, or y_i == thr and i < cut.
 * Backward, per row: dH/dx_i = g / T * p_i (mean - y_i) on kept tokens, 0 on dropped ones, with
 * p_i = exp(y_i - log Z).
 *
 * Selection (drop > 0) never sorts the row: fixed sample positions give sample quantiles that
 * bracket the threshold; one vectorised pass counts the tokens below each of NT of them (merged
 * with the max); the bracket holding the threshold is narrowed the same way while it is large, and
 * its few members are then collected and ranked. Counts are exact, so the result is exact whatever
 * the sample says; a poor sample only costs more passes.
 *
 * Portable C with GCC/Clang vector extensions (compiled with -O3 -march=native by
 * aent_cli/algos/entropy_native.py). Rows are independent: callers split rows across threads, each
 * with its own scratch buffer of scratch_floats(V) floats.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define LANES 16
#elif defined(__AVX__)
#define LANES 8
#else
#define LANES 4
#endif
#define NT 8 /* thresholds counted per pass */
#define EXP_FLOOR (-87.0f)

typedef float vf __attribute__((vector_size(LANES * 4)));
typedef int32_t vi __attribute__((vector_size(LANES * 4)));
typedef uint32_t vu __attribute__((vector_size(LANES * 4)));

static inline __attribute__((always_inline)) vf vload(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline __attribute__((always_inline)) void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline __attribute__((always_inline)) vf vsplat(float a) { return (vf){0} + a; }
static inline __attribute__((always_inline)) vf vselect(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }
static inline __attribute__((always_inline)) vf vmaxf(vf a, vf b) { return vselect(a > b, a, b); }

static inline __attribute__((always_inline)) float hsum(vf v) { float s = 0; for (int i = 0; i < LANES; i++) s += v[i]; return s; }
static inline __attribute__((always_inline)) float hmax(vf v) { float s = v[0]; for (int i = 1; i < LANES; i++) s = v[i] > s ? v[i] : s; return s; }
static inline __attribute__((always_inline)) int32_t hsumi(vi v) { int32_t s = 0; for (int i = 0; i < LANES; i++) s += v[i]; return s; }

/* exp for arguments <= 0 (Cephes' expf polynomial, ~1 ulp); arguments below EXP_FLOOR give 0. */
static inline __attribute__((always_inline)) vf vexp(vf x) {
    vi live = x >= vsplat(EXP_FLOOR);
    x = vselect(live, x, vsplat(EXP_FLOOR));
    const vf magic = vsplat(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    vf n = (x * vsplat(1.44269504088896341f) + magic) - magic;
    vf r = x - n * vsplat(0.693359375f) - n * vsplat(-2.12194440e-4f);
    vf r2 = r * r;
    vf p = vsplat(1.9875691500e-4f);
    p = p * r + vsplat(1.3981999507e-3f);
    p = p * r + vsplat(8.3334519073e-3f);
    p = p * r + vsplat(4.1665795894e-2f);
    p = p * r + vsplat(1.6666665459e-1f);
    p = p * r + vsplat(5.0000001201e-1f);
    p = p * r2 + r + vsplat(1.0f);
    vi scale = (__builtin_convertvector(n, vi) + 127) << 23;
    return vselect(live, p * (vf)scale, vsplat(0.0f));
}

/* ---------------------------------------------------------------------------------------------- */
/* Loading a row as fp32 y = x / T. fp32 input at T = 1 is used in place.                         */

enum { DTYPE_F32 = 0, DTYPE_BF16 = 1 };

static const float *load_row(const void *base, int dtype, int64_t row, int64_t V, float temperature, float *buf) {
    if (dtype == DTYPE_F32) {
        const float *x = (const float *)base + row * V;
        if (temperature == 1.0f) return x;
        for (int64_t i = 0; i < V; i++) buf[i] = x[i] / temperature;
        return buf;
    }
    const uint16_t *x = (const uint16_t *)base + row * V;
    for (int64_t i = 0; i < V; i++) {
        uint32_t bits = (uint32_t)x[i] << 16;
        float f;
        memcpy(&f, &bits, 4);
        buf[i] = temperature == 1.0f ? f : f / temperature;
    }
    return buf;
}

static inline __attribute__((always_inline)) uint16_t to_bf16(float f) { /* round to nearest even, as torch does */
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40); /* NaN stays NaN */
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

/* The tail of a row (V % LANES tokens) is loaded into a vector padded with `fill`. */
static inline __attribute__((always_inline)) vf load_tail(const float *y, int64_t n, float fill) {
    vf v = vsplat(fill);
    for (int64_t i = 0; i < n; i++) v[i] = y[i];
    return v;
}

static inline __attribute__((always_inline)) vi lane_index(void) {
    vi idx;
    for (int i = 0; i < LANES; i++) idx[i] = i;
    return idx;
}

/* Lanes of v (tokens base + lane) in the kept set (thr, cut): v > thr, or v == thr and index < cut. */
static inline __attribute__((always_inline)) vi kept_lanes(vf v, vf thr, vi lanes, int64_t base, vi cut) {
    return (v > thr) | ((v == thr) & ((lanes + (int32_t)base) < cut));
}

/* ---------------------------------------------------------------------------------------------- */
/* Selection                                                                                      */

static void sort_floats(float *a, int64_t n) { /* insertion sort: for the few values select_kth leaves */
    for (int64_t i = 1; i < n; i++) {
        float v = a[i];
        int64_t j = i - 1;
        while (j >= 0 && a[j] > v) { a[j + 1] = a[j]; j--; }
        a[j + 1] = v;
    }
}

/* k-th smallest (0-based) of a[0..n), reordering a (Hoare-partition quickselect, median of three). */
static float select_kth(float *a, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1;
    while (hi - lo > 16) {
        int64_t mid = lo + (hi - lo) / 2;
        float x = a[lo], y = a[mid], z = a[hi];
        float pivot = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot) i++;
            while (a[j] > pivot) j--;
            if (i <= j) { float t = a[i]; a[i] = a[j]; a[j] = t; i++; j--; }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return a[k];
    }
    sort_floats(a + lo, hi - lo + 1);
    return a[k];
}

static inline __attribute__((always_inline)) int64_t bin_of(float v, float lo, float scale, int64_t bins) {
    int64_t b = (int64_t)((v - lo) * scale);
    return b < 0 ? 0 : (b > bins - 1 ? bins - 1 : b);
}

/* The k-th smallest (0-based) of a[0..n), all in [lo, hi): values are binned by an increasing
 * function of their value, the bin holding rank k is kept and ranked the same way, so each round
 * touches only the survivors. `work` holds n floats and n + 1 bin counts (as int32). */
static float rank_in_range(float *a, int64_t n, int64_t k, float lo, float hi, float *work) {
    while (n > 64) {
        int64_t bins = n / 4;
        float scale = (float)bins / (hi - lo);
        int32_t *count = (int32_t *)(work + n);
        if (!(scale > 0.0f) || scale == INFINITY) break; /* lo == hi (ties) or a subnormal range */
        memset(count, 0, (bins + 1) * sizeof(int32_t));
        for (int64_t i = 0; i < n; i++) count[bin_of(a[i], lo, scale, bins)]++;
        int64_t b = 0, below = 0;
        while (below + count[b] <= k) below += count[b++];
        if (count[b] == n) break; /* no progress: the values are (nearly) equal */
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++)
            if (bin_of(a[i], lo, scale, bins) == b) work[m++] = a[i];
        memcpy(a, work, m * sizeof(float));
        lo = INFINITY, hi = -INFINITY; /* the survivors' own range (bin edges are only approximate) */
        for (int64_t i = 0; i < m; i++) { lo = a[i] < lo ? a[i] : lo; hi = a[i] > hi ? a[i] : hi; }
        hi = nextafterf(hi, INFINITY);
        n = m;
        k -= below;
    }
    return select_kth(a, n, k);
}

/* Counts #(y < t[j]) for j < NT in one pass over the row. */
#if defined(__AVX512F__)
static void count_below(const float *y, int64_t V, const float *t, int64_t *counts) {
    __m512 tv[NT];
    int64_t acc[NT];
    for (int j = 0; j < NT; j++) { tv[j] = _mm512_set1_ps(t[j]); acc[j] = 0; }
    int64_t i = 0, full = V - V % 16;
    for (; i < full; i += 16) { /* popcounts run on the scalar ports, beside the vector compares */
        __m512 v = _mm512_loadu_ps(y + i);
        for (int j = 0; j < NT; j++) acc[j] += __builtin_popcount((unsigned)_mm512_cmp_ps_mask(v, tv[j], _CMP_LT_OQ));
    }
    for (; i < V; i++)
        for (int j = 0; j < NT; j++) acc[j] += y[i] < t[j];
    for (int j = 0; j < NT; j++) counts[j] = acc[j];
}
#else
static void count_below(const float *y, int64_t V, const float *t, int64_t *counts) {
    vi acc[NT];
    vf tv[NT];
    for (int j = 0; j < NT; j++) { acc[j] = (vi){0}; tv[j] = vsplat(t[j]); }
    int64_t i = 0, full = V - V % LANES;
    for (; i < full; i += LANES) {
        vf v = vload(y + i);
        for (int j = 0; j < NT; j++) acc[j] -= (v < tv[j]);
    }
    for (int j = 0; j < NT; j++) counts[j] = hsumi(acc[j]);
    for (; i < V; i++)
        for (int j = 0; j < NT; j++) counts[j] += y[i] < t[j];
}
#endif

static float row_max_only(const float *y, int64_t V) {
    vf mx = vsplat(-INFINITY);
    int64_t i = 0, full = V - V % LANES;
    for (; i < full; i += LANES) mx = vmaxf(mx, vload(y + i));
    if (i < V) mx = vmaxf(mx, load_tail(y + i, V - i, -INFINITY));
    return hmax(mx);
}

/* Members of [lo, hi) in index order: values into vals, positions into pos; returns their number.
 * Both arrays need LANES entries of slack beyond the count (whole vectors are stored). */
#if defined(__AVX512F__)
static int64_t collect(const float *y, int64_t V, float lo, float hi, float *vals, int32_t *pos) {
    int64_t n = 0, i = 0, full = V - V % 16;
    __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
    __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), step = _mm512_set1_epi32(16);
    for (; i < full; i += 16, idx = _mm512_add_epi32(idx, step)) {
        __m512 v = _mm512_loadu_ps(y + i);
        __mmask16 in = _mm512_cmp_ps_mask(v, vlo, _CMP_GE_OQ) & _mm512_cmp_ps_mask(v, vhi, _CMP_LT_OQ);
        /* compress in registers, then a plain store (the memory form is slow on some CPUs); no
         * branch on the mask: members are spread at random, so a branch would mispredict often */
        _mm512_storeu_ps(vals + n, _mm512_maskz_compress_ps(in, v));
        _mm512_storeu_si512((void *)(pos + n), _mm512_maskz_compress_epi32(in, idx));
        n += __builtin_popcount((unsigned)in);
    }
    for (; i < V; i++)
        if (y[i] >= lo && y[i] < hi) { vals[n] = y[i]; pos[n] = (int32_t)i; n++; }
    return n;
}
#else
static int64_t collect(const float *y, int64_t V, float lo, float hi, float *vals, int32_t *pos) {
    int64_t n = 0, i = 0, full = V - V % LANES;
    vf vlo = vsplat(lo), vhi = vsplat(hi);
    for (; i < full; i += LANES) { /* members are rare: test a whole vector, then its lanes */
        vi in = (vload(y + i) >= vlo) & (vload(y + i) < vhi);
        uint64_t words[LANES / 2], flag = 0;
        memcpy(words, &in, sizeof words);
        for (int w = 0; w < LANES / 2; w++) flag |= words[w];
        if (!flag) continue;
        for (int64_t k = i; k < i + LANES; k++)
            if (y[k] >= lo && y[k] < hi) { vals[n] = y[k]; pos[n] = (int32_t)k; n++; }
    }
    for (; i < V; i++)
        if (y[i] >= lo && y[i] < hi) { vals[n] = y[i]; pos[n] = (int32_t)i; n++; }
    return n;
}
#endif

/* The sampled quantile points bracketing the target rank, spread around it: the lowest and highest
 * are selected, the few sample values between them sorted, and the rest read off. */
static void sample_thresholds(const float *y, const int32_t *sample_pos, int64_t n_sample, int64_t V, int64_t drop,
                              float *sample, float *t) {
    for (int64_t s = 0; s < n_sample; s++) sample[s] = y[sample_pos[s]];
    double q = (drop + 0.5) / (double)V, centre = q * n_sample - 0.5;
    double sigma = sqrt(n_sample * q * (1 - q)) + 1.0;
    static const double spread[NT] = {-3.5, -1.5, -0.6, -0.2, 0.2, 0.6, 1.5, 3.5};
    int64_t rank[NT];
    for (int j = 0; j < NT; j++) {
        int64_t r = (int64_t)llround(centre + spread[j] * sigma);
        rank[j] = r < 0 ? 0 : (r > n_sample - 1 ? n_sample - 1 : r);
    }
    int64_t first = rank[0], last = rank[NT - 1];
    select_kth(sample, n_sample, first); /* sample[0..first) <= sample[first] <= the rest */
    if (last > first) /* then sample[first..last) <= sample[last] <= the rest */
        select_kth(sample + first + 1, n_sample - first - 1, last - first - 1);
    sort_floats(sample + first + 1, last - first - 1);
    for (int j = 0; j < NT; j++) t[j] = sample[rank[j]];
}

/* Exact (thr, cut) for one row, and the row max. scratch: 5 (V + LANES) floats (members, their
 * positions, a copy to rank, and rank_in_range's work space). */
static void kept_threshold(const float *y, int64_t V, int64_t drop, const int32_t *sample_pos, int64_t n_sample,
                           int64_t small_band, float *scratch, float *row_max, float *thr_out, int64_t *cut_out,
                           int64_t *stats) {
    float *vals = scratch, *copy = scratch + 2 * (V + LANES);
    int32_t *pos = (int32_t *)(scratch + V + LANES);
    float lo = -INFINITY, hi = INFINITY; /* invariant: #(y < lo) = c_lo <= drop < c_hi = #(y < hi) */
    int64_t c_lo = 0, c_hi = V;
    *row_max = row_max_only(y, V); /* first: it streams the row into cache for the rest */
    if (V > 4 * small_band && n_sample >= 64) {
        stats[0]++;
        float t[NT];
        int64_t c[NT];
        sample_thresholds(y, sample_pos, n_sample, V, drop, copy, t);
        for (int round = 0; round < 48; round++) {
            count_below(y, V, t, c);
            stats[1]++;
            for (int j = 0; j < NT; j++) {
                if (c[j] <= drop && t[j] >= lo) { lo = t[j]; c_lo = c[j]; }
                if (c[j] > drop && t[j] < hi) { hi = t[j]; c_hi = c[j]; }
            }
            if (c_hi - c_lo <= small_band) break;
            /* narrow with points evenly spaced in value; infinite ends become the row's range */
            float a = lo, b = hi;
            if (a == -INFINITY) {
                a = INFINITY;
                for (int64_t i = 0; i < V; i++) a = y[i] < a ? y[i] : a;
                lo = a; /* nothing is below the minimum: c_lo stays 0 */
            }
            if (b == INFINITY) b = hi = nextafterf(*row_max, INFINITY); /* everything is below: c_hi stays V */
            int inside = 0;
            for (int j = 0; j < NT; j++) {
                t[j] = a + (b - a) * (float)(j + 1) / (NT + 1);
                inside |= t[j] > a && t[j] < b;
            }
            if (!inside) break; /* [lo, hi) is one value or a few adjacent floats (heavy ties): collect */
        }
    }
    int64_t n = collect(y, V, lo, hi, vals, pos);
    stats[2] += n;
    memcpy(copy, vals, n * sizeof(float)); /* ranked in a copy: vals and pos stay in index order */
    float value = lo > -INFINITY && hi < INFINITY ? rank_in_range(copy, n, drop - c_lo, lo, hi, copy + V + LANES)
                                                  : select_kth(copy, n, drop - c_lo);
    int64_t n_lt = c_lo, n_le = c_lo;
    for (int64_t i = 0; i < n; i++) { n_lt += vals[i] < value; n_le += vals[i] <= value; }
    int64_t kept_ties = n_le - drop, cut = V;
    if (kept_ties < n_le - n_lt) { /* keep the lowest-index ties: cut at the first dropped one */
        int64_t seen = 0;
        for (int64_t i = 0; i < n; i++)
            if (vals[i] == value && ++seen == kept_ties + 1) { cut = pos[i]; break; }
    }
    *thr_out = value;
    *cut_out = cut;
}

/* ---------------------------------------------------------------------------------------------- */
/* Public entry points (called through ctypes on a range of rows)                                 */

/* Per-thread scratch: 5 (V + LANES) floats for the selection (or a bf16 row's fp32 gradient), then
 * V for a converted row. */
#define ROW_BUFFER(scratch, V) ((scratch) + 5 * ((V) + LANES))
int64_t aent_scratch_floats(int64_t V) { return 6 * V + 5 * LANES; }

/* stats (3 counters, added to): rows that took the sampled path, counting passes, members ranked.
 * small_band: a bracket with at most this many tokens is collected and ranked (rows of at most
 * 4 small_band tokens are ranked whole). */
void aent_entropy_forward(const void *x, int dtype, int64_t row_begin, int64_t row_end, int64_t V, int64_t drop,
                          float temperature, const int32_t *sample_pos, int64_t n_sample, int64_t small_band,
                          float *scratch, float *entropy, float *log_z, float *mean, float *thr, int64_t *cut,
                          int64_t *stats) {
    for (int64_t r = row_begin; r < row_end; r++) {
        const float *y = load_row(x, dtype, r, V, temperature, ROW_BUFFER(scratch, V));
        float m, t = -INFINITY;
        int64_t c = V;
        if (drop > 0) kept_threshold(y, V, drop, sample_pos, n_sample, small_band, scratch, &m, &t, &c, stats);
        else m = row_max_only(y, V);
        vf vm = vsplat(m), vt = vsplat(t), z = vsplat(0.0f), s = vsplat(0.0f);
        vi idx = lane_index(), vcut = (vi){0} + (int32_t)c;
        int64_t i = 0, full = V - V % LANES;
        for (; i < full; i += LANES) {
            vf v = vload(y + i);
            vi keep = kept_lanes(v, vt, idx, i, vcut);
            vf d = v - vm;
            vf e = vselect(keep, vexp(d), vsplat(0.0f));
            z += e;
            s += e * d;
        }
        if (i < V) {
            vf v = load_tail(y + i, V - i, -INFINITY);
            vi keep = kept_lanes(v, vt, idx, i, vcut) & (idx < (int32_t)(V - i));
            vf d = vselect(keep, v - vm, vsplat(0.0f));
            vf e = vselect(keep, vexp(d), vsplat(0.0f));
            z += e;
            s += e * d;
        }
        float zz = hsum(z), ss = hsum(s);
        entropy[r] = logf(zz) - ss / zz;
        log_z[r] = m + logf(zz);
        mean[r] = m + ss / zz;
        thr[r] = t;
        cut[r] = c;
    }
}

/* grad_x = grad_out / T * p (mean - y) on kept tokens; written as fp32 or bf16 (the input's dtype). */
void aent_entropy_backward(const void *x, int dtype, int64_t row_begin, int64_t row_end, int64_t V, float temperature,
                           const float *grad_out, const float *log_z, const float *mean, const float *thr,
                           const int64_t *cut, float *scratch, void *grad) {
    float *gbuf = scratch; /* fp32 gradient of one row, before conversion to bf16 */
    for (int64_t r = row_begin; r < row_end; r++) {
        float g = grad_out[r] / temperature;
        float *out = dtype == DTYPE_F32 ? (float *)grad + r * V : gbuf;
        if (g == 0.0f) { /* e.g. padding positions: exactly zero */
            memset(out, 0, V * sizeof(float));
        } else {
            const float *y = load_row(x, dtype, r, V, temperature, ROW_BUFFER(scratch, V));
            vf vlz = vsplat(log_z[r]), vmean = vsplat(mean[r]), vg = vsplat(g), vt = vsplat(thr[r]);
            vi idx = lane_index(), vcut = (vi){0} + (int32_t)cut[r];
            int64_t i = 0, full = V - V % LANES;
            for (; i < V; i += LANES) { /* the tail is one padded vector, computed as the rest */
                vf v = i < full ? vload(y + i) : load_tail(y + i, V - i, -INFINITY);
                vf gi = vselect(kept_lanes(v, vt, idx, i, vcut), vexp(v - vlz) * (vmean - v) * vg, vsplat(0.0f));
                if (i < full) vstore(out + i, gi);
                else for (int64_t k = 0; k < V - i; k++) out[i + k] = gi[k];
            }
        }
        if (dtype == DTYPE_BF16) {
            uint16_t *dst = (uint16_t *)grad + r * V;
            for (int64_t i = 0; i < V; i++) dst[i] = to_bf16(out[i]);
        }
    }
}
