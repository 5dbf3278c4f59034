/* The sparse engine's kernels (see kernels.py, which builds and loads this file).
 *
 * One call runs a compiled program (sparsity/sparse/program.py) over a batch, input by input. Every
 * activation of one input lives in one float workspace, channels last (h, w, c). A step is a row of
 * int64 fields in the order of kernels.FIELDS.
 *
 * CONV (a dense layer is a 1x1 convolution of a 1x1 input) lists the nonzero values of its input position by
 * position, then computes each output position in registers: blocks of up to 64 output channels (four
 * 16-float vectors, GCC vector extensions: AVX-512, AVX2 or SSE, whatever the target has), each nonzero input
 * the kernel window reaches adding its value times its row of weights. Weights are laid out
 * [kh][kw][cin][cpad] with cpad the output channels rounded up to 16 (zero columns), so every row is whole
 * vectors. The epilogue adds the bias and a fused residual operand, applies the ReLU-family activation and
 * counts each channel's positions on, in the same pass. Work grows with the nonzero inputs.
 */
#include <math.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#include <stdint.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64), aligned(4)));
typedef int32_t i16 __attribute__((vector_size(64), aligned(4)));

enum { CONV, MAXPOOL, AVGPOOL, ADD, ACT, AFFINE, PERMUTE };
enum { NONE, RELU, CLIP, THRESHOLD };
enum {
    OP, SRC, DST, RES, H, W, CIN, HO, WO, COUT, KH, KW, SH, SW, PT, PL, DH, DW,
    GROUPS, WEIGHTS, BIAS, ACT_, LAYER, UNITS, UNIT_MAP, EXTRA, CPAD, NFIELDS
};

static inline float activate(float v, int64_t act, float param) {
    switch (act) {
    case RELU: return v > 0.0f ? v : 0.0f;
    case CLIP: return v <= 0.0f ? 0.0f : (v < param ? v : param);
    case THRESHOLD: return v > param ? v : 0.0f;
    default: return v;
    }
}

/* o = acc (+ bias) (+ res), activated in place; each channel's on counted. One simple loop per case, so the
 * compiler vectorises each. */
static inline void finish(float *o, const float *acc, const float *restrict bias,
                          const float *restrict res, int64_t c, int64_t act, float param,
                          int32_t *restrict counts) {
    int64_t k0 = 0;
    if (act == RELU || act == NONE) { /* 16 lanes at a time, one pass: sum, mask, count, store */
        const v16 zero = {0};
        for (; k0 + 16 <= c; k0 += 16) {
            v16 v = *(const v16 *)(acc + k0);
            if (bias) v += *(const v16 *)(bias + k0);
            if (res) v += *(const v16 *)(res + k0);
            if (act == RELU) {
                i16 on = v > zero;
                v = (v16)((i16)v & on);
                *(i16 *)(counts + k0) -= on;
            }
            *(v16 *)(o + k0) = v;
        }
    }
    for (int64_t k = k0; k < c; k++) o[k] = acc[k] + (bias ? bias[k] : 0.0f) + (res ? res[k] : 0.0f);
    switch (act) {
    case RELU:
        for (int64_t k = k0; k < c; k++) {
            float v = o[k] > 0.0f ? o[k] : 0.0f;
            o[k] = v;
            counts[k] += v > 0.0f;
        }
        break;
    case CLIP:
        for (int64_t k = 0; k < c; k++) {
            float v = o[k] > 0.0f ? o[k] : 0.0f;
            v = v < param ? v : param;
            o[k] = v;
            counts[k] += v > 0.0f;
        }
        break;
    case THRESHOLD:
        for (int64_t k = 0; k < c; k++) {
            float v = o[k] > param ? o[k] : 0.0f;
            o[k] = v;
            counts[k] += v != 0.0f;
        }
        break;
    default:
        break;
    }
}

/* Up to four vectors of accumulators (one block of 64 output channels) over a list of contributions: weight row
 * rows[j] (rows of cpad floats from wts + block) times vals[j]. The accumulators stay in registers. */
#define ACCUMULATE(NV)                                                                   \
    for (int64_t j = 0; j < n; j++) {                                                    \
        const float *row = w0 + (int64_t)rows[j] * cpad;                                 \
        v16 v = (v16){0} + vals[j];                                                      \
        a0 += v * *(const v16 *)(row);                                                   \
        if (NV > 1) a1 += v * *(const v16 *)(row + 16);                                  \
        if (NV > 2) a2 += v * *(const v16 *)(row + 32);                                  \
        if (NV > 3) a3 += v * *(const v16 *)(row + 48);                                  \
    }

/* acc[0:cpad] = the sum over j of vals[j] times weight row rows[j] (the gathered convolution and the dense
 * layer both). */
static inline void accumulate(const int32_t *rows, const float *vals, int64_t n, const float *wts, int64_t cpad,
                              float *acc) {
    for (int64_t block = 0; block < cpad; block += 64) {
        v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        const float *w0 = wts + block;
        int64_t nv = (cpad - block) / 16;
        if (nv >= 4) {
            nv = 4;
            ACCUMULATE(4)
        } else if (nv == 3) {
            ACCUMULATE(3)
        } else if (nv == 2) {
            ACCUMULATE(2)
        } else {
            ACCUMULATE(1)
        }
        *(v16 *)(acc + block) = a0;
        if (nv > 1) *(v16 *)(acc + block + 16) = a1;
        if (nv > 2) *(v16 *)(acc + block + 32) = a2;
        if (nv > 3) *(v16 *)(acc + block + 48) = a3;
    }
}

static void report(const int32_t *counts, int64_t c, const int64_t *s, const int64_t *ints, int64_t *on,
                   int64_t *nonzero) {
    int64_t total = 0;
    const int64_t *map = s[UNIT_MAP] >= 0 ? ints + s[UNIT_MAP] : 0;
    for (int64_t k = 0; k < c; k++) {
        total += counts[k];
        on[s[UNITS] + (map ? map[k] : k)] = counts[k];
    }
    nonzero[s[LAYER]] += total;
}

/* The nonzero values of x[0:n] and their indexes; returns how many. With AVX-512, 16 at a time by a
 * compressing store. */
static int32_t list_nonzero(const float *x, int64_t n, int32_t *idx, float *val) {
    int32_t count = 0;
    int64_t i = 0;
#ifdef __AVX512F__
    const __m512i step = _mm512_set1_epi32(16);
    __m512i at = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __mmask16 on = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
        _mm512_mask_compressstoreu_ps(val + count, on, v);
        _mm512_mask_compressstoreu_epi32(idx + count, on, at);
        count += __builtin_popcount(on);
        at = _mm512_add_epi32(at, step);
    }
#endif
    for (; i < n; i++) {
        float v = x[i];
        idx[count] = (int32_t)i;
        val[count] = v;
        count += v != 0.0f;
    }
    return count;
}

/* scratch: rows and values of the contributions, the nonzero lists, an accumulator, counts */
typedef struct {
    int32_t *rows;  /* a gathered convolution's list for one output position: weight rows and values */
    float *vals;
    int32_t *idx;   /* per input position, its nonzero channels */
    float *val;     /* and their values */
    int32_t *cnt;   /* per input position, how many */
    float *acc;     /* an output position's channels, or a scatter's padded accumulator */
    int32_t *counts;
    const float *zeros;
} scratch_t;

/* Write output position (oy, ox) of a convolution. (Measured and dropped: writing each 2x2 window's maximum
 * here instead of the whole output, fusing the max pooling, was 5-10% slower than the separate pooling step.) */
static inline void emit(const int64_t *s, float *out, int64_t oy, int64_t ox, const float *acc, const float *bias,
                        const float *res, int64_t act, float param, scratch_t *sc) {
    int64_t cout = s[COUT], q = oy * s[WO] + ox;
    finish(out + q * cout, acc, bias, res ? res + q * cout : 0, cout, act, param, sc->counts);
}
/* The nonzero inputs the window of output position (oy, ox) reaches, as one list of (weight row, value): the
 * row is (tap * cin + input channel), rows of cpad floats. Each position's list is copied eight entries at a time
 * without a branch (the lists have room to read past their ends). Returns the list's length. */
static inline int64_t window(const int64_t *s, const scratch_t *sc, int64_t oy, int64_t ox, int32_t *rows,
                             float *vals) {
    int64_t h = s[H], w = s[W], cin = s[CIN], kh = s[KH], kw = s[KW];
    int64_t n = 0;
    for (int64_t ky = 0; ky < kh; ky++) {
        int64_t y = oy * s[SH] - s[PT] + ky * s[DH];
        if (y < 0 || y >= h) continue;
        for (int64_t kx = 0; kx < kw; kx++) {
            int64_t x = ox * s[SW] - s[PL] + kx * s[DW];
            if (x < 0 || x >= w) continue;
            int64_t p = y * w + x;
            int32_t c = sc->cnt[p], base = (int32_t)((ky * kw + kx) * cin);
            const int32_t *idx = sc->idx + p * cin;
            const float *val = sc->val + p * cin;
            if (c <= 8) {
                for (int t = 0; t < 8; t++) {
                    rows[n + t] = base + idx[t];
                    vals[n + t] = val[t];
                }
            } else {
                for (int32_t t = 0; t < c; t++) {
                    rows[n + t] = base + idx[t];
                    vals[n + t] = val[t];
                }
            }
            n += c;
        }
    }
    return n;
}

static void conv(const int64_t *s, float *ws, const float *weights, float param, const int64_t *ints,
                 int64_t *on, int64_t *nonzero, scratch_t *sc) {
    int64_t h = s[H], w = s[W], cin = s[CIN], ho = s[HO], wo = s[WO], cout = s[COUT], cpad = s[CPAD];
    int64_t kh = s[KH], kw = s[KW], sh = s[SH], sw = s[SW], pt = s[PT], pl = s[PL], dh = s[DH], dw = s[DW];
    int64_t groups = s[GROUPS], act = s[ACT_];
    const float *in = ws + s[SRC];
    float *out = ws + s[DST];
    const float *wts = weights + s[WEIGHTS];
    const float *bias = s[BIAS] >= 0 ? weights + s[BIAS] : 0;
    const float *res = s[RES] >= 0 ? ws + s[RES] : 0;
    int32_t *counts = sc->counts;
    memset(counts, 0, sizeof(int32_t) * cout);
    /* the nonzero inputs, position by position */
    int64_t cv = cpad / 16, nnz = 0;
    for (int64_t p = 0; p < h * w; p++) {
        sc->cnt[p] = list_nonzero(in + p * cin, cin, sc->idx + p * cin, sc->val + p * cin);
        nnz += sc->cnt[p];
    }
    /* scatter (stride 1) when this input has few nonzeros per position, else gather; decided input by input.
     * Measured on the default CNN (one thread, aligned memory, one image): conv1, 0.25 nonzeros a position, 2
     * vectors of outputs: the scatter several times faster; conv2, 2.7 a position, 4 vectors: scatter 12.5 us
     * (about 2 cycles a vector read-modify-write: the store port's bound), gather 14-15 (also with two sets of
     * accumulators, or with fused multiply-adds: the gather's cost is its per-position bookkeeping) */
    int scatter = groups == 1 && sh == 1 && sw == 1 && nnz * cv <= 12 * h * w;
    if (scatter) {
        int64_t ah = h + (kh - 1) * dh, aw = w + (kw - 1) * dw;
        float *acc = sc->acc;
        memset(acc, 0, sizeof(float) * ah * aw * cpad);
        for (int64_t y = 0, p = 0; y < h; y++)
        for (int64_t x = 0; x < w; x++, p++) { /* no division in this loop: its cost showed */
            for (int32_t j = 0; j < sc->cnt[p]; j++) {
                int64_t ci = sc->idx[p * cin + j];
                v16 v = (v16){0} + sc->val[p * cin + j];
                for (int64_t ky = 0; ky < kh; ky++) {
                    for (int64_t kx = 0; kx < kw; kx++) {
                        const float *row = wts + ((ky * kw + kx) * cin + ci) * cpad;
                        float *a = acc + ((y + (kh - 1 - ky) * dh) * aw + x + (kw - 1 - kx) * dw) * cpad;
                        for (int64_t k = 0; k < cpad; k += 16) *(v16 *)(a + k) += v * *(const v16 *)(row + k);
                    }
                }
            }
        }
        for (int64_t oy = 0; oy < ho; oy++) {
            int64_t ay = oy + (kh - 1) * dh - pt;
            for (int64_t ox = 0; ox < wo; ox++) {
                int64_t ax = ox + (kw - 1) * dw - pl;
                const float *a = (ay >= 0 && ay < ah && ax >= 0 && ax < aw) ? acc + (ay * aw + ax) * cpad : sc->zeros;
                emit(s, out, oy, ox, a, bias, res, act, param, sc);
            }
        }
    } else if (groups == 1) {
        /* per output position: the nonzero inputs its window reaches gathered into one list of (weight row, value),
         * copied eight at a time without a branch (the lists have room to read past their ends), then one loop of
         * multiply-adds into registers: one unpredictable loop end per position instead of one per tap */
        for (int64_t oy = 0; oy < ho; oy++) {
            for (int64_t ox = 0; ox < wo; ox++) {
                int64_t n = window(s, sc, oy, ox, sc->rows, sc->vals);
                accumulate(sc->rows, sc->vals, n, wts, cpad, sc->acc);
                emit(s, out, oy, ox, sc->acc, bias, res, act, param, sc);
            }
        }
    } else { /* grouped: each input channel reaches its group's output channels only */
        int64_t cin_g = cin / groups, cout_g = cout / groups;
        int32_t *rows = sc->rows;
        float *vals = sc->vals;
        for (int64_t oy = 0; oy < ho; oy++) {
            for (int64_t ox = 0; ox < wo; ox++) {
                int64_t n = window(s, sc, oy, ox, rows, vals);
                float *acc = sc->acc;
                memset(acc, 0, sizeof(float) * cout);
                for (int64_t j = 0; j < n; j++) {
                    int64_t ci = rows[j] % cin;
                    const float *row = wts + (int64_t)rows[j] * cpad;
                    float *a = acc + (ci / cin_g) * cout_g;
                    for (int64_t k = 0; k < cout_g; k++) a[k] += vals[j] * row[k];
                }
                emit(s, out, oy, ox, acc, bias, res, act, param, sc);
            }
        }
    }
    if (act != NONE && s[LAYER] >= 0) report(counts, cout, s, ints, on, nonzero);
}

static void dense(const int64_t *s, float *ws, const float *weights, float param, const int64_t *ints,
                  int64_t *on, int64_t *nonzero, scratch_t *sc) {
    int64_t cin = s[CIN], cout = s[COUT], cpad = s[CPAD], act = s[ACT_];
    const float *in = ws + s[SRC];
    const float *wts = weights + s[WEIGHTS];
    int64_t n = list_nonzero(in, cin, sc->idx, sc->vals);
    accumulate(sc->idx, sc->vals, n, wts, cpad, sc->acc);
    memset(sc->counts, 0, sizeof(int32_t) * cout);
    finish(ws + s[DST], sc->acc, s[BIAS] >= 0 ? weights + s[BIAS] : 0, s[RES] >= 0 ? ws + s[RES] : 0, cout, act,
           param, sc->counts);
    if (act != NONE && s[LAYER] >= 0) report(sc->counts, cout, s, ints, on, nonzero);
}

static void pool(const int64_t *s, float *ws, int average) {
    int64_t h = s[H], w = s[W], c = s[CIN], ho = s[HO], wo = s[WO];
    int64_t kh = s[KH], kw = s[KW], sh = s[SH], sw = s[SW], pt = s[PT], pl = s[PL];
    int include_pad = s[EXTRA] == 1;
    const float *in = ws + s[SRC];
    float *out = ws + s[DST];
    for (int64_t oy = 0; oy < ho; oy++) {
        for (int64_t ox = 0; ox < wo; ox++) {
            float *o = out + (oy * wo + ox) * c;
            for (int64_t k = 0; k < c; k++) o[k] = average ? 0.0f : -INFINITY;
            int64_t count = 0;
            for (int64_t ky = 0; ky < kh; ky++) {
                int64_t y = oy * sh - pt + ky;
                if (y < 0 || y >= h) continue;
                for (int64_t kx = 0; kx < kw; kx++) {
                    int64_t x = ox * sw - pl + kx;
                    if (x < 0 || x >= w) continue;
                    count++;
                    const float *i = in + (y * w + x) * c;
                    if (average)
                        for (int64_t k = 0; k < c; k++) o[k] += i[k];
                    else
                        for (int64_t k = 0; k < c; k++) o[k] = o[k] > i[k] ? o[k] : i[k];
                }
            }
            if (average) {
                float scale = 1.0f / (float)(include_pad ? kh * kw : count);
                for (int64_t k = 0; k < c; k++) o[k] *= scale;
            }
        }
    }
}

static void elementwise(const int64_t *s, float *ws, const float *weights, float param, const int64_t *ints,
                        int64_t *on, int64_t *nonzero, scratch_t *sc) {
    int64_t op = s[OP], n = s[HO] * s[WO], c = s[COUT], act = s[ACT_];
    const float *in = ws + s[SRC];
    float *out = ws + s[DST];
    int32_t *counts = sc->counts;
    memset(counts, 0, sizeof(int32_t) * c);
    for (int64_t p = 0; p < n; p++) {
        const float *i = in + p * c;
        float *o = out + p * c;
        if (op == ADD) {
            const float *r = ws + s[RES] + p * c;
            for (int64_t k = 0; k < c; k++) o[k] = i[k] + r[k];
        } else if (op == AFFINE) {
            const float *scale = weights + s[WEIGHTS], *shift = weights + s[BIAS];
            for (int64_t k = 0; k < c; k++) o[k] = i[k] * scale[k] + shift[k];
        } else {
            memmove(o, i, sizeof(float) * c);
        }
        finish(o, o, 0, 0, c, act, param, counts);
    }
    if (act != NONE && s[LAYER] >= 0) report(counts, c, s, ints, on, nonzero);
}

/* A program and one thread's memory for it (kernels.py fills it once per program and thread). */
typedef struct {
    const int64_t *code;
    int64_t n_steps;
    const float *fparams;
    const float *weights;
    const int64_t *ints;
    int64_t n_in, output, classes, softmax, n_units, n_layers;
    float *ws;
    int32_t *rows;
    float *vals;
    int32_t *idx;
    float *val;
    int32_t *cnt;
    float *acc;
    int32_t *counts;
    const float *zeros;
} program_t;

/* Run the program on n inputs of x (n x n_in): class scores (n x classes), each unit's positions on
 * (n x n_units) and each layer's nonzero count (n x n_layers). Returns 0. */
int64_t sparse_run(const program_t *pr, const float *x, int64_t n, float *scores, int64_t *on, int64_t *nonzero) {
    scratch_t sc = {pr->rows, pr->vals, pr->idx, pr->val, pr->cnt, pr->acc, pr->counts, pr->zeros};
    const int64_t *code = pr->code, *ints = pr->ints;
    const float *fparams = pr->fparams, *weights = pr->weights;
    float *ws = pr->ws;
    int64_t n_steps = pr->n_steps, n_in = pr->n_in, output = pr->output, classes = pr->classes;
    int64_t softmax = pr->softmax, n_units = pr->n_units, n_layers = pr->n_layers;
    for (int64_t item = 0; item < n; item++) {
        memcpy(ws, x + item * n_in, sizeof(float) * n_in);
        int64_t *item_on = on + item * n_units;
        int64_t *item_nonzero = nonzero + item * n_layers;
        memset(item_on, 0, sizeof(int64_t) * n_units);
        memset(item_nonzero, 0, sizeof(int64_t) * n_layers);
        for (int64_t i = 0; i < n_steps; i++) {
            const int64_t *s = code + i * NFIELDS;
            float param = fparams[i];
            switch (s[OP]) {
            case CONV:
                if (s[H] == 1 && s[W] == 1 && s[KH] == 1 && s[KW] == 1 && s[GROUPS] == 1 && s[HO] == 1 && s[WO] == 1)
                    dense(s, ws, weights, param, ints, item_on, item_nonzero, &sc);
                else
                    conv(s, ws, weights, param, ints, item_on, item_nonzero, &sc);
                break;
            case MAXPOOL: pool(s, ws, 0); break;
            case AVGPOOL: pool(s, ws, 1); break;
            case PERMUTE: {
                const int64_t *index = ints + s[EXTRA];
                float *dst = ws + s[DST];
                const float *src = ws + s[SRC];
                for (int64_t j = 0; j < s[COUT]; j++) dst[j] = src[index[j]];
                break;
            }
            default: elementwise(s, ws, weights, param, ints, item_on, item_nonzero, &sc);
            }
        }
        const float *logits = ws + output;
        float *sc_out = scores + item * classes;
        if (softmax) {
            float top = logits[0], total = 0.0f;
            for (int64_t k = 1; k < classes; k++) top = logits[k] > top ? logits[k] : top;
            for (int64_t k = 0; k < classes; k++) {
                sc_out[k] = expf(logits[k] - top);
                total += sc_out[k];
            }
            for (int64_t k = 0; k < classes; k++) sc_out[k] /= total;
        } else {
            memcpy(sc_out, logits, sizeof(float) * classes);
        }
    }
    return 0;
}

int64_t sparse_abi(void) { return NFIELDS; }
