/* Weight-only GEMV kernels for decode (inference/cpu_kernels.py says why and what they measured).
   Each has an AVX2 + FMA + F16C path (simd.h) and, where it pays, an AVX-512 one beside it. */
#include <stdlib.h>
#include <float.h>
#include <math.h>
#include <string.h>

/* e4m3fn byte -> float without float denormals (slow on x86): normal numbers are rebuilt
   by moving exponent and mantissa into float32 position and adding the bias difference
   (127 - 7); subnormals (exponent 0) are m * 2^-9. */
static inline float fp8_e4m3_to_float(uint8_t b) {
    uint32_t em = b & 0x7Fu;
    uint32_t bits = ((uint32_t)(b & 0x80u) << 24) | ((em << 20) + (120u << 23));
    float normal;
    memcpy(&normal, &bits, sizeof normal);
    float sub = (float)em * 0.001953125f * ((b & 0x80u) ? -1.0f : 1.0f);
    return (em >> 3) ? normal : sub;
}

/* int8 weights against one activation row. The row is first rounded to int16 per block
   of 256 (scale: the block's largest magnitude / 32767, so each element is off by at most
   1/65534 of it: finer than bf16 for the block's large values); then AVX512-VNNI's
   vpdpwssd multiplies 32 weights per instruction, AVX2's vpmaddwd 16, with no float
   widening. Widening int8 to float ran at 27 GB/s of weights where bf16 ran at ~40, so
   int8 could not beat bf16 by the 2x its bytes allow on a 0.5B model (1.0-1.3x measured). */
#define Q16_BLOCK 256
typedef struct { int16_t *q; float *scales; } Int8Input;

static Int8Input int8_input(const float *x, int n) {
    Int8Input in;
    in.q = malloc((size_t)n * sizeof *in.q);
    in.scales = malloc((size_t)(n / Q16_BLOCK + 1) * sizeof *in.scales);
    for (int b = 0; b < n; b += Q16_BLOCK) {
        int e = b + Q16_BLOCK < n ? b + Q16_BLOCK : n;
        float top = 0.0f;
        /* a NaN or an infinity makes the block's scale non-finite and the output NaN (torch: NaN or +-inf) */
        for (int i = b; i < e; i++) top = fabsf(x[i]) > top || x[i] != x[i] ? fabsf(x[i]) : top;
        float inv = top > 0.0f && top <= FLT_MAX ? 32767.0f / top : 0.0f;
        in.scales[b / Q16_BLOCK] = top / 32767.0f;
        for (int i = b; i < e; i++) in.q[i] = (int16_t)lrintf(x[i] * inv);
    }
    return in;
}

static void int8_input_free(Int8Input *in) { free(in->q); free(in->scales); }

/* Each kernel below multiplies one weight row by `G` activation rows at once (G is a
   constant where a group is called, so its loops unroll and each row's sums stay in
   registers): the weights are loaded and widened once for the group instead of once per
   row. Each row's sums run in the order they run for a row alone, so a row's value does
   not depend on the rows beside it (inference/scheduler.py batches replies). */
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define MAX_GROUP 8

/* Rows m..m+G-1 of `rows` through `call`, G the largest of `widest`, 4, 2, 1 that fits. */
#define IN_GROUPS(rows, widest, call)                                     \
    for (int m = 0, G; m < (rows); m += G) {                              \
        const int left = (rows) - m;                                      \
        if ((widest) >= 8 && left >= 8) { G = 8; call(8); }               \
        else if (left >= 4) { G = 4; call(4); }                           \
        else if (left >= 2) { G = 2; call(2); }                           \
        else { G = 1; call(1); }                                          \
    }

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define INT8_GROUP 8
/* _mm512_dpwssd_epi32 as GCC 12 compiles it copies its sum to another register and back
   each time: two moves per product, which halved the group's speed. */
static inline __m512i dpwssd(__m512i sum, __m512i a, const void *b) {
    __asm__("vpdpwssd %2, %1, %0" : "+v"(sum) : "v"(a), "m"(*(const __m512i *)b));
    return sum;
}
#else
#define INT8_GROUP 4  /* an AVX2 row holds its sums and its float total: 16 ymm registers in all */
#endif

ALWAYS_INLINE void int8_group(const Int8Input *in, const int G, const int8_t *w, int n, float *out) {
    float tail[MAX_GROUP];
    for (int g = 0; g < G; g++) tail[g] = 0.0f;
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
    __m512 acc[MAX_GROUP];
    for (int g = 0; g < G; g++) acc[g] = _mm512_setzero_ps();
    for (int b = 0; b < n; b += Q16_BLOCK) {
        int e = b + Q16_BLOCK < n ? b + Q16_BLOCK : n, i = b;
        __m512i sums[MAX_GROUP];  /* 16 products of at most 127 * 32767 per lane: no overflow */
        for (int g = 0; g < G; g++) sums[g] = _mm512_setzero_si512();
        for (; i + 32 <= e; i += 32) {
            const __m512i wide = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(w + i)));
            for (int g = 0; g < G; g++) sums[g] = dpwssd(sums[g], wide, in[g].q + i);
        }
        for (int g = 0; g < G; g++) acc[g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums[g]), _mm512_set1_ps(in[g].scales[b / Q16_BLOCK]), acc[g]);
        for (int g = 0; g < G; g++)
            for (int k = i; k < e; k++) tail[g] += (float)w[k] * in[g].q[k] * in[g].scales[b / Q16_BLOCK];
    }
    for (int g = 0; g < G; g++) out[g] = _mm512_reduce_add_ps(acc[g]) + tail[g];
#else
    __m256 acc[MAX_GROUP];
    for (int g = 0; g < G; g++) acc[g] = _mm256_setzero_ps();
    for (int b = 0; b < n; b += Q16_BLOCK) {
        int e = b + Q16_BLOCK < n ? b + Q16_BLOCK : n, i = b;
        /* per lane, two products of at most 127 * 32767 per vpmaddwd, 16 a block: no overflow */
        __m256i sums[MAX_GROUP];
        for (int g = 0; g < G; g++) sums[g] = _mm256_setzero_si256();
        for (; i + 32 <= e; i += 32) {
            const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + i)));
            const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + i + 16)));
            for (int g = 0; g < G; g++)
                sums[g] = _mm256_add_epi32(sums[g], _mm256_add_epi32(_mm256_madd_epi16(w0, _mm256_loadu_si256((const __m256i *)(in[g].q + i))),
                                                                     _mm256_madd_epi16(w1, _mm256_loadu_si256((const __m256i *)(in[g].q + i + 16)))));
        }
        for (int g = 0; g < G; g++) acc[g] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[g]), _mm256_set1_ps(in[g].scales[b / Q16_BLOCK]), acc[g]);
        for (int g = 0; g < G; g++)
            for (int k = i; k < e; k++) tail[g] += (float)w[k] * in[g].q[k] * in[g].scales[b / Q16_BLOCK];
    }
    for (int g = 0; g < G; g++) out[g] = hsum256(acc[g]) + tail[g];
#endif
}

/* out[m] = in[m] . w, for `rows` rows rounded by int8_input. */
static void dots_int8(const Int8Input *in, int rows, const int8_t *w, int n, float *out) {
#define INT8_CALL(g) int8_group(in + m, g, w, n, out + m)
    IN_GROUPS(rows, INT8_GROUP, INT8_CALL)
#undef INT8_CALL
}

/* sum x[i] * e4m3(w[i]) / 256 for G rows of x (stride n): each byte becomes the float16
   with the same exponent and mantissa bits (e4m3's bias 7 vs float16's 15 is the 2^8;
   subnormals map to subnormals), and F16C converts 8 of those (AVX-512: 16) to float at once. */
#ifdef __AVX512F__
#define FLOAT_GROUP 8
#else
#define FLOAT_GROUP 4  /* a row of a float kernel holds two sums */
#endif

ALWAYS_INLINE void fp8_group(const float *x, const int G, const uint8_t *w, int n, float *out) {
    int i = 0;
#ifdef __AVX512F__
    const __m256i sign = _mm256_set1_epi16(0x80), rest = _mm256_set1_epi16(0x7F);
    __m512 a0[MAX_GROUP], a1[MAX_GROUP];
    for (int g = 0; g < G; g++) a0[g] = a1[g] = _mm512_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        __m256i b0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(w + i)));
        __m256i b1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(w + i + 16)));
        const __m512 w0 = _mm512_cvtph_ps(_mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(b0, sign), 8), _mm256_slli_epi16(_mm256_and_si256(b0, rest), 7)));
        const __m512 w1 = _mm512_cvtph_ps(_mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(b1, sign), 8), _mm256_slli_epi16(_mm256_and_si256(b1, rest), 7)));
        for (int g = 0; g < G; g++) {
            a0[g] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + (long)g * n + i), a0[g]);
            a1[g] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + (long)g * n + i + 16), a1[g]);
        }
    }
    for (int g = 0; g < G; g++) out[g] = _mm512_reduce_add_ps(_mm512_add_ps(a0[g], a1[g]));
#else
    /* the byte in the high half of a 16-bit lane, shifted right by one with its sign: sign,
       exponent and mantissa land where float16 keeps them; the mask clears the sign's copy */
    const __m128i zero = _mm_setzero_si128(), keep = _mm_set1_epi16((short)0xBFFF);
    __m256 a0[MAX_GROUP], a1[MAX_GROUP];
    for (int g = 0; g < G; g++) a0[g] = a1[g] = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        __m128i bytes = _mm_loadu_si128((const __m128i *)(w + i));
        const __m256 w0 = _mm256_cvtph_ps(_mm_and_si128(_mm_srai_epi16(_mm_unpacklo_epi8(zero, bytes), 1), keep));
        const __m256 w1 = _mm256_cvtph_ps(_mm_and_si128(_mm_srai_epi16(_mm_unpackhi_epi8(zero, bytes), 1), keep));
        for (int g = 0; g < G; g++) {
            a0[g] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + (long)g * n + i), a0[g]);
            a1[g] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + (long)g * n + i + 8), a1[g]);
        }
    }
    for (int g = 0; g < G; g++) out[g] = hsum256(_mm256_add_ps(a0[g], a1[g]));
#endif
    for (int g = 0; g < G; g++)
        for (int k = i; k < n; k++) out[g] += fp8_e4m3_to_float(w[k]) * 0.00390625f * x[(long)g * n + k];
}

/* out[m] = sum_i x[m, i] * e4m3(w[i]) / 256 for `rows` rows of x (stride n). */
static void dots_fp8_over_256(const float *x, int rows, const uint8_t *w, int n, float *out) {
#define FP8_CALL(g) fp8_group(x + (long)m * n, g, w, n, out + m)
    IN_GROUPS(rows, FLOAT_GROUP, FP8_CALL)
#undef FP8_CALL
}

#if !defined(__AVX512BF16__)
/* bf16 weights against G float rows (stride n). */
ALWAYS_INLINE void bf16_group(const float *x, const int G, const uint16_t *w, int n, float *out) {
    int i = 0;
#ifdef __AVX512F__
    __m512 a0[MAX_GROUP], a1[MAX_GROUP];
    for (int g = 0; g < G; g++) a0[g] = a1[g] = _mm512_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        const __m512 w0 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + i))), 16));
        const __m512 w1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + i + 16))), 16));
        for (int g = 0; g < G; g++) {
            a0[g] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + (long)g * n + i), a0[g]);
            a1[g] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + (long)g * n + i + 16), a1[g]);
        }
    }
    for (int g = 0; g < G; g++) out[g] = _mm512_reduce_add_ps(_mm512_add_ps(a0[g], a1[g]));
#else
    __m256 a0[MAX_GROUP], a1[MAX_GROUP];
    for (int g = 0; g < G; g++) a0[g] = a1[g] = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        const __m256 w0 = bf16x8_load(w + i), w1 = bf16x8_load(w + i + 8);
        for (int g = 0; g < G; g++) {
            a0[g] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + (long)g * n + i), a0[g]);
            a1[g] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + (long)g * n + i + 8), a1[g]);
        }
    }
    for (int g = 0; g < G; g++) out[g] = hsum256(_mm256_add_ps(a0[g], a1[g]));
#endif
    for (int g = 0; g < G; g++)
        for (int k = i; k < n; k++) out[g] += bf16_to_float(w[k]) * x[(long)g * n + k];
}

static void dots_bf16(const float *x, int rows, const uint16_t *w, int n, float *out) {
#define BF16_CALL(g) bf16_group(x + (long)m * n, g, w, n, out + m)
    IN_GROUPS(rows, FLOAT_GROUP, BF16_CALL)
#undef BF16_CALL
}
#endif

/* bf16 weights against G bf16 rows (stride n): with AVX512-BF16, vdpbf16ps multiplies 32
   pairs per instruction into float32 sums (bf16 products are exact in float32) with no
   widening of the weights. On a 2-core Zen 4 host: the 0.5B model's 272 MB bf16 lm_head
   10.5 -> 9.3-9.9 ms; a bf16 0.5B pane 24.3 -> 29.2 tok/s, and three panes' bf16 parents
   10.3 / 10.7 -> 12.9 / 12.6 (one benchmark run each). The products are the same; the sums
   run in another order, and the instruction reads a subnormal bf16 (below 1e-38) as zero. */
#if defined(__AVX512BF16__)
ALWAYS_INLINE void bf16_bf16_group(const uint16_t *x, const int G, const uint16_t *w, int n, float *out) {
    int i = 0;
    __m512 a0[MAX_GROUP], a1[MAX_GROUP];
    for (int g = 0; g < G; g++) a0[g] = a1[g] = _mm512_setzero_ps();
    for (; i + 64 <= n; i += 64) {
        const __m512bh w0 = (__m512bh)_mm512_loadu_si512((const void *)(w + i)), w1 = (__m512bh)_mm512_loadu_si512((const void *)(w + i + 32));
        for (int g = 0; g < G; g++) {
            a0[g] = _mm512_dpbf16_ps(a0[g], (__m512bh)_mm512_loadu_si512((const void *)(x + (long)g * n + i)), w0);
            a1[g] = _mm512_dpbf16_ps(a1[g], (__m512bh)_mm512_loadu_si512((const void *)(x + (long)g * n + i + 32)), w1);
        }
    }
    for (; i + 32 <= n; i += 32) {
        const __m512bh w0 = (__m512bh)_mm512_loadu_si512((const void *)(w + i));
        for (int g = 0; g < G; g++) a0[g] = _mm512_dpbf16_ps(a0[g], (__m512bh)_mm512_loadu_si512((const void *)(x + (long)g * n + i)), w0);
    }
    for (int g = 0; g < G; g++) out[g] = _mm512_reduce_add_ps(_mm512_add_ps(a0[g], a1[g]));
    for (int g = 0; g < G; g++)
        for (int k = i; k < n; k++) out[g] += bf16_to_float(w[k]) * bf16_to_float(x[(long)g * n + k]);
}

static void dots_bf16_bf16(const uint16_t *x, int rows, const uint16_t *w, int n, float *out) {
#define BF16_BF16_CALL(g) bf16_bf16_group(x + (long)m * n, g, w, n, out + m)
    IN_GROUPS(rows, 8, BF16_BF16_CALL)
#undef BF16_BF16_CALL
}
#endif

static float *rows_to_float(const uint16_t *x, long n) {
    float *xf = malloc(n * sizeof *xf);
    for (long i = 0; i < n; i++) xf[i] = bf16_to_float(x[i]);
    return xf;
}

/* y[m, o] = bf16(scale[o] * sum_i x[m, i] * w[o, i])   x: rows x in (bf16), w: out x in;
   `threads` cores share the output rows. */
void int8_gemv(const uint16_t *x, const int8_t *w, const uint16_t *scale, uint16_t *y, int rows, int in, int out, int threads) {
    float *xf = rows_to_float(x, (long)rows * in);
    Int8Input inputs[rows];
    for (int m = 0; m < rows; m++) inputs[m] = int8_input(xf + (long)m * in, in);
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int o = 0; o < out; o++) {
        float v[rows];
        dots_int8(inputs, rows, w + (long)o * in, in, v);
        for (int m = 0; m < rows; m++) y[(long)m * out + o] = float_to_bf16(v[m] * bf16_to_float(scale[o]));
    }
    for (int m = 0; m < rows; m++) int8_input_free(&inputs[m]);
    free(xf);
}

void fp8_gemv(const uint16_t *x, const uint8_t *w, const float *scale, uint16_t *y, int rows, int in, int out, int threads) {
    float *xf = rows_to_float(x, (long)rows * in);
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int o = 0; o < out; o++) {
        float v[rows];
        dots_fp8_over_256(xf, rows, w + (long)o * in, in, v);
        for (int m = 0; m < rows; m++) y[(long)m * out + o] = float_to_bf16(v[m] * 256.0f * scale[o]);
    }
    free(xf);
}

/* bf16 weights: no scale (the argument is ignored). */
void bf16_gemv(const uint16_t *x, const uint16_t *w, const void *scale, uint16_t *y, int rows, int in, int out, int threads) {
#if !defined(__AVX512BF16__)
    float *xf = rows_to_float(x, (long)rows * in);
#endif
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int o = 0; o < out; o++) {
        float v[rows];
#if defined(__AVX512BF16__)
        dots_bf16_bf16(x, rows, w + (long)o * in, in, v);
#else
        dots_bf16(xf, rows, w + (long)o * in, in, v);
#endif
        for (int m = 0; m < rows; m++) y[(long)m * out + o] = float_to_bf16(v[m]);
    }
#if !defined(__AVX512BF16__)
    free(xf);
#endif
}
