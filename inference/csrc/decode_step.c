/* One decoded token through every layer of a model in one call (decoder.py), for each family
   the lean loop runs: where the norms sit and how they scale, the activation, soft-capped
   attention scores and sliding windows come in Layer and Dims (core/architectures.py).

   The torch version of this step dispatched ~25 small ops per layer (norms, rotary
   embedding, cache writes, attention, residuals): about 3 ms of a SmolLM2 token on top of
   the matmuls. Here they are plain loops between the GEMV kernels of gemv.c.

   Values are rounded to bf16 wherever transformers' bf16 forward rounds them (norm
   output, weight product, each matmul, rotary terms, attention output, activations,
   residuals; attention scores stay float32, as the torch loop's decode keeps them), so the
   step computes what the torch loop computed up to float rounding:
   sums run in another order, exp is a polynomial of its own (as torch's vectorized exp),
   and the norm takes 1/sqrt of a double sum. The KV cache is float32, as in the torch
   loop. tests/test_decoder.py bounds the difference on the logits. The loops between the
   matmuls run 8 lanes at a time (AVX2 + FMA, on both targets): scalar, attention alone
   grew with the context to a large share of a small model's token. */

typedef struct {
    int kind;              /* 0: bf16, 1: int8 (bf16 row scale), 2: fp8 e4m3 (float32 row scale) */
    const void *weight;    /* [out, in] */
    const void *scale;     /* [out], NULL for bf16 */
    const uint16_t *bias;  /* [out] bf16, or NULL */
    int in, out;
} Linear;

typedef struct {
    const uint16_t *norms[4];   /* RMSNorm weights [hidden] before attention, after it, before the MLP, after it; NULL: none there */
    Linear qkv, o, gate_up, down;
    float *keys, *values;       /* this reply's cache: [kv_heads, capacity, head_dim] */
    int window;                 /* attends to this many positions back; 0: all */
} Layer;

typedef struct {
    int hidden, heads, kv_heads, head_dim, inter, capacity;
    float eps, scaling;
    float norm_offset;  /* 1: Gemma's norms, which scale by (1 + w) */
    int activation;     /* 0: silu, 1: gelu (tanh approximation) */
    float softcap;      /* attention scores become softcap * tanh(score / softcap); 0: not capped */
} Dims;

#include <omp.h>
#include <sched.h>
#include <stdatomic.h>

/* The step's threads meet here between its parts. Not OpenMP's barrier: libgomp spins
   only briefly, then sleeps on a futex, once it manages more threads than there are cores,
   and every thread that ever ran a parallel region keeps a team (the thread that loaded the
   model, each model's scheduler): a step off the main thread slept and woke at each of its
   meetings, ten a layer (docs/benchmarks.md). This one spins, then yields the core. */
#define SPINS_BEFORE_YIELD (1 << 10)
typedef struct { atomic_int arrived, phase; } Barrier;

static void meet(Barrier *b, int team) {
    if (team == 1) return;
    const int phase = atomic_load_explicit(&b->phase, memory_order_acquire);
    if (atomic_fetch_add_explicit(&b->arrived, 1, memory_order_acq_rel) == team - 1) {
        atomic_store_explicit(&b->arrived, 0, memory_order_relaxed);
        atomic_store_explicit(&b->phase, phase + 1, memory_order_release);  /* the others go on, seeing every write before it */
        return;
    }
    for (int spins = 0; atomic_load_explicit(&b->phase, memory_order_acquire) == phase; spins++) {
        if (spins < SPINS_BEFORE_YIELD) _mm_pause();
        else sched_yield();
    }
}

static inline float round_bf16(float f) { return bf16_to_float(float_to_bf16(f)); }

/* e^x: Cephes' expf (2^n times a degree-6 polynomial on [-ln2/2, ln2/2]), within a few float
   ulps of expf; a NaN stays NaN (the clamps take it as their second operand). One body for
   8 lanes and, where there is AVX-512, 16 (kept_attention.c): each lane the same value. */
#define EXP_LANES(name, vec, vint, P, round_nearest, as_float)                                                  \
    static inline vec name(vec x) {                                                                           \
        x = P##_min_ps(P##_set1_ps(88.0f), P##_max_ps(P##_set1_ps(-87.3365447504f), x));                       \
        vec n = round_nearest(P##_mul_ps(x, P##_set1_ps(1.44269504088896341f)),                               \
                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);                                 \
        x = P##_fnmadd_ps(n, P##_set1_ps(0.693359375f), x);                                                   \
        x = P##_fnmadd_ps(n, P##_set1_ps(-2.12194440e-4f), x);                                                \
        vec y = P##_set1_ps(1.9875691500e-4f);                                                                \
        y = P##_fmadd_ps(y, x, P##_set1_ps(1.3981999507e-3f));                                                \
        y = P##_fmadd_ps(y, x, P##_set1_ps(8.3334519073e-3f));                                                \
        y = P##_fmadd_ps(y, x, P##_set1_ps(4.1665795894e-2f));                                                \
        y = P##_fmadd_ps(y, x, P##_set1_ps(1.6666665459e-1f));                                                \
        y = P##_fmadd_ps(y, x, P##_set1_ps(5.0000001201e-1f));                                                \
        y = P##_fmadd_ps(y, P##_mul_ps(x, x), P##_add_ps(x, P##_set1_ps(1.0f)));                              \
        vint scale = P##_slli_epi32(P##_add_epi32(P##_cvtps_epi32(n), P##_set1_epi32(127)), 23);              \
        return P##_mul_ps(y, as_float(scale));                                                                \
    }
EXP_LANES(exp8, __m256, __m256i, _mm256, _mm256_round_ps, _mm256_castsi256_ps)
#if defined(__AVX512F__)
EXP_LANES(exp16, __m512, __m512i, _mm512, _mm512_roundscale_ps, _mm512_castsi512_ps)
#endif
#undef EXP_LANES

/* tanh on 8 lanes, as Cephes' tanhf: an odd polynomial below |x| 0.625 (where a soft-capped
   score mostly sits), (e^2|x| - 1) / (e^2|x| + 1) with x's sign above (saturating to +-1;
   1 - 2 / (e^2x + 1) lost 4 ulps to cancellation just above 0.625). */
static inline __m256 tanh8(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    __m256 e = exp8(_mm256_add_ps(_mm256_andnot_ps(sign, x), _mm256_andnot_ps(sign, x)));
    __m256 far = _mm256_div_ps(_mm256_sub_ps(e, one), _mm256_add_ps(e, one));
    far = _mm256_or_ps(_mm256_min_ps(one, far), _mm256_and_ps(sign, x));  /* x's sign back on; a NaN stays NaN */
    __m256 z = _mm256_mul_ps(x, x), p = _mm256_set1_ps(-5.70498872745e-3f);
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(2.06390887954e-2f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-5.37397155531e-2f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(1.33314422036e-1f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-3.33332819422e-1f));
    __m256 near = _mm256_fmadd_ps(_mm256_mul_ps(p, z), x, x);
    __m256 small = _mm256_cmp_ps(_mm256_andnot_ps(sign, x), _mm256_set1_ps(0.625f), _CMP_LT_OQ);
    return _mm256_blendv_ps(far, near, small);
}

static inline float tanh1(float x) {
    float lanes[8];
    _mm256_storeu_ps(lanes, tanh8(_mm256_set1_ps(x)));
    return lanes[0];
}

static inline float exp1(float x) {
    float lanes[8];
    _mm256_storeu_ps(lanes, exp8(_mm256_set1_ps(x)));
    return lanes[0];
}

static float dot(const float *a, const float *b, int n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), a1);
    }
    float s = hsum256(_mm256_add_ps(a0, a1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* y += p * x */
static void axpy(float *y, float p, const float *x, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(_mm256_set1_ps(p), _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += p * x[i];
}

/* res = bf16(res + h): a residual, rounded as the torch loop's bf16 add. */
static void add_rounded(float *res, const float *h, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(res + i, bf16x8_round(_mm256_add_ps(_mm256_loadu_ps(res + i), _mm256_loadu_ps(h + i))));
    for (; i < n; i++) res[i] = round_bf16(res[i] + h[i]);
}

/* A linear's input rows as its products read them: int8 weights multiply int16 blocks
   (gemv.c); with AVX512-BF16, bf16 weights multiply the rows as bf16 (x holds bf16 values:
   exact), in a buffer of the step's. Row m is made by one thread, read by all. */
#define MAX_ROWS 64  /* rows in one pass over the weights (a batch of replies, a short prompt); decode_batch splits more */
typedef struct { Int8Input q[MAX_ROWS]; uint16_t *xb; } Input;

static void input_row(const Linear *l, const float *x, int m, Input *in) {
    in->q[m] = l->kind == 1 ? int8_input(x + (long)m * l->in, l->in) : (Int8Input){NULL, NULL};
#if defined(__AVX512BF16__)
    if (l->kind == 0)
        for (long i = (long)m * l->in; i < (long)(m + 1) * l->in; i++) in->xb[i] = float_to_bf16(x[i]);
#endif
}

static void input_row_free(Input *in, int m) { int8_input_free(&in->q[m]); }

/* y[m, o] = bf16(scale[o] * w[o] . x[m]) (+ bias, rounded again: the torch loop adds it
   after), for `rows` rows of x: each weight row is read from memory once for all of them,
   and loaded and widened once per group of rows (gemv.c); each row's value is computed
   as for a row alone.
   Called by every thread of the step's team: the output rows are split between them, and
   the caller meets the others before reading y. */
static void linear(const Linear *l, const Input *in, const float *x, float *y, int rows) {
    #pragma omp for schedule(static) nowait
    for (int o = 0; o < l->out; o++) {
        float v[MAX_ROWS];
        if (l->kind == 1) {
            dots_int8(in->q, rows, (const int8_t *)l->weight + (long)o * l->in, l->in, v);
            for (int m = 0; m < rows; m++) v[m] *= bf16_to_float(((const uint16_t *)l->scale)[o]);
        } else if (l->kind == 2) {
            dots_fp8_over_256(x, rows, (const uint8_t *)l->weight + (long)o * l->in, l->in, v);
            for (int m = 0; m < rows; m++) v[m] = v[m] * 256.0f * ((const float *)l->scale)[o];
        } else {
#if defined(__AVX512BF16__)
            dots_bf16_bf16(in->xb, rows, (const uint16_t *)l->weight + (long)o * l->in, l->in, v);
#else
            dots_bf16(x, rows, (const uint16_t *)l->weight + (long)o * l->in, l->in, v);
#endif
        }
        for (int m = 0; m < rows; m++) {
            const float r = round_bf16(v[m]);
            y[(long)m * l->out + o] = l->bias ? round_bf16(r + bf16_to_float(l->bias[o])) : r;
        }
    }
}

/* out = bf16(w * bf16(x / rms(x))), as transformers' RMSNorm in bf16; with `offset` 1,
   bf16((x / rms(x)) * (1 + w)), as Gemma's. out may be x. */
static void rms_norm(const float *x, const uint16_t *w, float *out, int n, float eps, float offset) {
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();  /* float squares are exact in double */
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        s0 = _mm256_fmadd_pd(lo, lo, s0);
        s1 = _mm256_fmadd_pd(hi, hi, s1);
    }
    double lanes[4], sum = 0.0;
    _mm256_storeu_pd(lanes, _mm256_add_pd(s0, s1));
    for (int k = 0; k < 4; k++) sum += lanes[k];
    for (; i < n; i++) sum += (double)x[i] * x[i];
    float inv = 1.0f / sqrtf((float)(sum / n) + eps);
    const __m256 vinv = _mm256_set1_ps(inv);
    if (offset != 0.0f) {
        const __m256 voff = _mm256_set1_ps(offset);
        for (i = 0; i + 8 <= n; i += 8)
            _mm256_storeu_ps(out + i, bf16x8_round(_mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv),
                                                                _mm256_add_ps(voff, bf16x8_load(w + i)))));
        for (; i < n; i++) out[i] = round_bf16(x[i] * inv * (offset + bf16_to_float(w[i])));
        return;
    }
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, bf16x8_round(_mm256_mul_ps(bf16x8_load(w + i), bf16x8_round(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv)))));
    for (; i < n; i++) out[i] = round_bf16(bf16_to_float(w[i]) * round_bf16(x[i] * inv));
}

/* v*cos + rotate_half(v)*sin for one head; `sin` carries rotate_half's sign (decoder.rope). */
static void rotate(float *v, const uint16_t *cos, const uint16_t *sin, int d) {
    float rolled[d];
    for (int i = 0; i < d; i++) rolled[i] = v[(i + d / 2) % d];
    int i = 0;
    for (; i + 8 <= d; i += 8)
        _mm256_storeu_ps(v + i, bf16x8_round(_mm256_add_ps(bf16x8_round(_mm256_mul_ps(_mm256_loadu_ps(v + i), bf16x8_load(cos + i))),
                                                           bf16x8_round(_mm256_mul_ps(_mm256_loadu_ps(rolled + i), bf16x8_load(sin + i))))));
    for (; i < d; i++)
        v[i] = round_bf16(round_bf16(v[i] * bf16_to_float(cos[i])) + round_bf16(rolled[i] * bf16_to_float(sin[i])));
}

/* One query head against the cached positions start..end-1 of its kv head (`keys` and
   `values` point at position start), its scores soft-capped where `softcap` is not 0. */
static void attend(const float *q, const float *keys, const float *values, float *out, int end, int d, float scaling, float softcap) {
    float *w = malloc((size_t)end * sizeof *w);
    float top = -INFINITY, total = 0.0f;
    for (int j = 0; j < end; j++) w[j] = dot(q, keys + (long)j * d, d) * scaling;
    if (softcap != 0.0f) {
        int k = 0;
        const __m256 cap = _mm256_set1_ps(softcap);  /* divided, not times 1 / cap: the torch loop's rounding */
        for (; k + 8 <= end; k += 8) _mm256_storeu_ps(w + k, _mm256_mul_ps(cap, tanh8(_mm256_div_ps(_mm256_loadu_ps(w + k), cap))));
        for (; k < end; k++) w[k] = softcap * tanh1(w[k] / softcap);
    }
    for (int j = 0; j < end; j++) top = w[j] > top ? w[j] : top;
    int j = 0;
    __m256 sums = _mm256_setzero_ps();
    for (; j + 8 <= end; j += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(w + j), _mm256_set1_ps(top)));
        _mm256_storeu_ps(w + j, e);
        sums = _mm256_add_ps(sums, e);
    }
    total = hsum256(sums);
    for (; j < end; j++) total += (w[j] = exp1(w[j] - top));
    for (int i = 0; i < d; i++) out[i] = 0.0f;
    for (j = 0; j < end; j++) axpy(out, w[j] / total, values + (long)j * d, d);
    for (int i = 0; i < d; i++) out[i] = round_bf16(out[i]);
    free(w);
}

/* act = bf16(bf16(f(gate)) * up), f silu (activation 0) or gelu's tanh approximation (1). */
static void activate_times(const float *gate, const float *up, float *act, int n, int activation) {
    const __m256 one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f);
    const __m256 beta = _mm256_set1_ps(0.7978845608028654f), kappa = _mm256_set1_ps(0.044715f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i), f;
        if (activation == 1) {
            __m256 inner = _mm256_mul_ps(beta, _mm256_fmadd_ps(_mm256_mul_ps(kappa, g), _mm256_mul_ps(g, g), g));
            f = _mm256_mul_ps(_mm256_mul_ps(half, g), _mm256_add_ps(one, tanh8(inner)));
        } else {
            f = _mm256_div_ps(g, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
        }
        _mm256_storeu_ps(act + i, bf16x8_round(_mm256_mul_ps(bf16x8_round(f), _mm256_loadu_ps(up + i))));
    }
    for (; i < n; i++) {
        float g = gate[i];
        float f = activation == 1 ? 0.5f * g * (1.0f + tanh1(0.7978845608028654f * (g + 0.044715f * g * g * g)))
                                  : g / (1.0f + exp1(-g));
        act[i] = round_bf16(round_bf16(f) * up[i]);
    }
}

/* res += h, each row first through `norm` where the family has one there (Gemma2's
   norms after attention and after the MLP). */
static void add_block(float *res, float *h, const uint16_t *norm, int rows, int H, const Dims *dims) {
    for (int m = 0; m < rows; m++) {
        if (norm) rms_norm(h + (long)m * H, norm, h + (long)m * H, H, dims->eps, dims->norm_offset);
        add_rounded(res + (long)m * H, h + (long)m * H, H);
    }
}

/* One token of each of `rows` replies of one model through every layer, in one pass over
   the weights: continuous batching (inference/scheduler.py). Reply m has its own layers'
   cache pointers (seqs[m], capacity[m]) and position; x: [rows][hidden] bf16, updated in
   place; cos/sin: [rows][head_dim], the rotary rows of each reply's position. Row m's
   values are those of the same reply stepped alone (a batch of one).
   Rows may share a cache at consecutive positions, a prompt's tokens (decoder.prefill):
   every row's keys and values are written before any row attends, so each attends to
   the rows before it, as if decoded one after another. */
void decode_batch(const Layer *const *seqs, const int *capacity, int rows, int n_layers, const Dims *dims, uint16_t *x,
                  const uint16_t *cos, const uint16_t *sin, const int *positions, int threads) {
    const int H = dims->hidden, d = dims->head_dim, heads = dims->heads, kv = dims->kv_heads, group = heads / kv;
    if (rows > MAX_ROWS) {
        for (int k = 0; k < rows; k += MAX_ROWS)
            decode_batch(seqs + k, capacity + k, rows - k < MAX_ROWS ? rows - k : MAX_ROWS, n_layers, dims, x + (long)k * H,
                         cos + (long)k * d, sin + (long)k * d, positions + k, threads);
        return;
    }
    const int wide = (heads + 2 * kv) * d > 2 * dims->inter ? (heads + 2 * kv) * d : 2 * dims->inter;
    const int inner = dims->inter > H ? dims->inter : H;
    float *h = malloc((size_t)rows * H * sizeof *h), *res = malloc((size_t)rows * H * sizeof *res);
    float *mid = malloc((size_t)rows * wide * sizeof *mid), *att = malloc((size_t)rows * heads * d * sizeof *att);
    float *act = malloc((size_t)rows * inner * sizeof *act);
    for (long i = 0; i < (long)rows * H; i++) res[i] = bf16_to_float(x[i]);
    Input in = {.xb = malloc((size_t)rows * (wide > inner ? wide : inner) * sizeof *in.xb)};  /* the next linear's input */
    for (int m = 0; m < rows; m++) in.q[m] = (Int8Input){NULL, NULL};
    Barrier barrier = {0, 0};
    /* One parallel region for the whole step, its threads meeting between its parts (meet),
       instead of a team forked and joined ~5 times a layer. Between the products each thread
       takes whole rows, the same rows each time (a static schedule over the same count), so
       a part that reads only its own rows follows the one before without a meeting. */
    #pragma omp parallel num_threads(threads)
    {
    const int team = omp_get_num_threads();
    for (int n = 0; n < n_layers; n++) {
        const Layer *L = &seqs[0][n];  /* the weights: every reply's layers share them */
        const int qkv_out = L->qkv.out;
        #pragma omp for schedule(static) nowait
        for (int m = 0; m < rows; m++) {
            if (n > 0) {  /* the previous layer's end */
                input_row_free(&in, m);
                add_block(res + (long)m * H, h + (long)m * H, seqs[0][n - 1].norms[3], 1, H, dims);
            }
            rms_norm(res + (long)m * H, L->norms[0], h + (long)m * H, H, dims->eps, dims->norm_offset);
            input_row(&L->qkv, h, m, &in);
        }
        meet(&barrier, team);
        linear(&L->qkv, &in, h, mid, rows);  /* per row: [q heads | k heads | v heads] x d */
        meet(&barrier, team);
        #pragma omp for schedule(static) nowait
        for (int m = 0; m < rows; m++) {
            input_row_free(&in, m);
            const Layer *S = &seqs[m][n];
            const long cap = capacity[m];
            float *row = mid + (long)m * qkv_out;
            for (int head = 0; head < heads + kv; head++) rotate(row + (long)head * d, cos + (long)m * d, sin + (long)m * d, d);
            for (int g = 0; g < kv; g++) {
                memcpy(S->keys + ((long)g * cap + positions[m]) * d, row + (long)(heads + g) * d, d * sizeof(float));
                memcpy(S->values + ((long)g * cap + positions[m]) * d, row + (long)(heads + kv + g) * d, d * sizeof(float));
            }
        }
        meet(&barrier, team);
        #pragma omp for collapse(2) schedule(static) nowait
        for (int m = 0; m < rows; m++)
            for (int head = 0; head < heads; head++) {
                const Layer *S = &seqs[m][n];
                const long cap = capacity[m];
                int g = head / group, end = positions[m] + 1;
                int start = L->window > 0 && end > L->window ? end - L->window : 0;  /* a sliding layer sees its window */
                attend(mid + (long)m * qkv_out + (long)head * d, S->keys + ((long)g * cap + start) * d,
                       S->values + ((long)g * cap + start) * d, att + ((long)m * heads + head) * d, end - start, d, dims->scaling,
                       dims->softcap);
            }
        meet(&barrier, team);
        #pragma omp for schedule(static) nowait
        for (int m = 0; m < rows; m++) input_row(&L->o, att, m, &in);
        meet(&barrier, team);
        linear(&L->o, &in, att, h, rows);
        meet(&barrier, team);
        #pragma omp for schedule(static) nowait
        for (int m = 0; m < rows; m++) {
            input_row_free(&in, m);
            add_block(res + (long)m * H, h + (long)m * H, L->norms[1], 1, H, dims);
            rms_norm(res + (long)m * H, L->norms[2], h + (long)m * H, H, dims->eps, dims->norm_offset);
            input_row(&L->gate_up, h, m, &in);
        }
        meet(&barrier, team);
        linear(&L->gate_up, &in, h, mid, rows);  /* per row: [gate | up] */
        meet(&barrier, team);
        #pragma omp for schedule(static) nowait
        for (int m = 0; m < rows; m++) {
            input_row_free(&in, m);
            activate_times(mid + (long)m * 2 * dims->inter, mid + (long)m * 2 * dims->inter + dims->inter, act + (long)m * dims->inter,
                           dims->inter, dims->activation);
            input_row(&L->down, act, m, &in);
        }
        meet(&barrier, team);
        linear(&L->down, &in, act, h, rows);
        meet(&barrier, team);
    }
    #pragma omp for schedule(static)
    for (int m = 0; m < rows; m++) {  /* the last layer's end */
        input_row_free(&in, m);
        add_block(res + (long)m * H, h + (long)m * H, seqs[0][n_layers - 1].norms[3], 1, H, dims);
    }
    }
    free(in.xb);
    for (long i = 0; i < (long)rows * H; i++) x[i] = float_to_bf16(res[i]);
    free(h); free(res); free(mid); free(att); free(act);
}
