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

static float dot_int8_input(const Int8Input *in, const int8_t *w, int n) {
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
    __m512 acc = _mm512_setzero_ps();
    float tail = 0.0f;
    for (int b = 0; b < n; b += Q16_BLOCK) {
        int e = b + Q16_BLOCK < n ? b + Q16_BLOCK : n, i = b;
        __m512i sums = _mm512_setzero_si512();  /* 16 products of at most 127 * 32767 per lane: no overflow */
        for (; i + 32 <= e; i += 32)
            sums = _mm512_dpwssd_epi32(sums, _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(w + i))),
                                       _mm512_loadu_si512((const void *)(in->q + i)));
        float scale = in->scales[b / Q16_BLOCK];
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_set1_ps(scale), acc);
        for (; i < e; i++) tail += (float)w[i] * in->q[i] * scale;
    }
    return _mm512_reduce_add_ps(acc) + tail;
#else
    __m256 acc = _mm256_setzero_ps();
    float tail = 0.0f;
    for (int b = 0; b < n; b += Q16_BLOCK) {
        int e = b + Q16_BLOCK < n ? b + Q16_BLOCK : n, i = b;
        /* per lane, two products of at most 127 * 32767 per step, 8 steps a block, two sums: no overflow */
        __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
        for (; i + 32 <= e; i += 32) {
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + i))),
                                                        _mm256_loadu_si256((const __m256i *)(in->q + i))));
            s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + i + 16))),
                                                        _mm256_loadu_si256((const __m256i *)(in->q + i + 16))));
        }
        float scale = in->scales[b / Q16_BLOCK];
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(s0, s1)), _mm256_set1_ps(scale), acc);
        for (; i < e; i++) tail += (float)w[i] * in->q[i] * scale;
    }
    return hsum256(acc) + tail;
#endif
}

/* sum x[i] * e4m3(w[i]) / 256: each byte becomes the float16 with the same exponent and
   mantissa bits (e4m3's bias 7 vs float16's 15 is the 2^8; subnormals map to subnormals),
   and F16C converts 8 of those (AVX-512: 16) to float at once. */
static float dot_fp8_over_256(const float *x, const uint8_t *w, int n) {
    float acc = 0.0f;
    int i = 0;
#ifdef __AVX512F__
    const __m256i sign = _mm256_set1_epi16(0x80), rest = _mm256_set1_epi16(0x7F);
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        __m256i b0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(w + i)));
        __m256i b1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(w + i + 16)));
        __m256i h0 = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(b0, sign), 8), _mm256_slli_epi16(_mm256_and_si256(b0, rest), 7));
        __m256i h1 = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(b1, sign), 8), _mm256_slli_epi16(_mm256_and_si256(b1, rest), 7));
        a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(h0), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_cvtph_ps(h1), _mm512_loadu_ps(x + i + 16), a1);
    }
    acc = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
#else
    /* the byte in the high half of a 16-bit lane, shifted right by one with its sign: sign,
       exponent and mantissa land where float16 keeps them; the mask clears the sign's copy */
    const __m128i zero = _mm_setzero_si128(), keep = _mm_set1_epi16((short)0xBFFF);
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        __m128i bytes = _mm_loadu_si128((const __m128i *)(w + i));
        __m128i h0 = _mm_and_si128(_mm_srai_epi16(_mm_unpacklo_epi8(zero, bytes), 1), keep);
        __m128i h1 = _mm_and_si128(_mm_srai_epi16(_mm_unpackhi_epi8(zero, bytes), 1), keep);
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(h0), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(h1), _mm256_loadu_ps(x + i + 8), a1);
    }
    acc = hsum256(_mm256_add_ps(a0, a1));
#endif
    for (; i < n; i++) acc += fp8_e4m3_to_float(w[i]) * 0.00390625f * x[i];
    return acc;
}

static float dot_bf16(const float *x, const uint16_t *w, int n) {
    float acc = 0.0f;
    int i = 0;
#ifdef __AVX512F__
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        __m512 w0 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + i))), 16));
        __m512 w1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + i + 16))), 16));
        a0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + i + 16), a1);
    }
    acc = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
#else
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(bf16x8_load(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(bf16x8_load(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    }
    acc = hsum256(_mm256_add_ps(a0, a1));
#endif
    for (; i < n; i++) acc += bf16_to_float(w[i]) * x[i];
    return acc;
}

/* bf16 weights against a bf16 row: with AVX512-BF16, vdpbf16ps multiplies 32 pairs per
   instruction into float32 sums (bf16 products are exact in float32) with no widening of
   the weights. On a 2-core Zen 4 host: the 0.5B model's 272 MB bf16 lm_head 10.5 -> 9.3-9.9
   ms; a bf16 0.5B pane 24.3 -> 29.2 tok/s, and three panes' bf16 parents 10.3 / 10.7 ->
   12.9 / 12.6 (one benchmark run each). The products are the same; the sums run in
   another order, and the instruction reads a subnormal bf16 (below 1e-38) as zero. */
static float dot_bf16_bf16(const uint16_t *x, const uint16_t *w, int n) {
    float acc = 0.0f;
    int i = 0;
#if defined(__AVX512BF16__)
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512((const void *)(x + i)), (__m512bh)_mm512_loadu_si512((const void *)(w + i)));
        a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512((const void *)(x + i + 32)),
                              (__m512bh)_mm512_loadu_si512((const void *)(w + i + 32)));
    }
    for (; i + 32 <= n; i += 32)
        a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512((const void *)(x + i)), (__m512bh)_mm512_loadu_si512((const void *)(w + i)));
    acc = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
#endif
    for (; i < n; i++) acc += bf16_to_float(w[i]) * bf16_to_float(x[i]);
    return acc;
}

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
    for (int o = 0; o < out; o++)
        for (int m = 0; m < rows; m++)
            y[(long)m * out + o] = float_to_bf16(dot_int8_input(&inputs[m], w + (long)o * in, in) * bf16_to_float(scale[o]));
    for (int m = 0; m < rows; m++) int8_input_free(&inputs[m]);
    free(xf);
}

void fp8_gemv(const uint16_t *x, const uint8_t *w, const float *scale, uint16_t *y, int rows, int in, int out, int threads) {
    float *xf = rows_to_float(x, (long)rows * in);
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int o = 0; o < out; o++)
        for (int m = 0; m < rows; m++)
            y[(long)m * out + o] = float_to_bf16(dot_fp8_over_256(xf + (long)m * in, w + (long)o * in, in) * 256.0f * scale[o]);
    free(xf);
}

/* bf16 weights: no scale (the argument is ignored). */
void bf16_gemv(const uint16_t *x, const uint16_t *w, const void *scale, uint16_t *y, int rows, int in, int out, int threads) {
#if defined(__AVX512BF16__)
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int o = 0; o < out; o++)
        for (int m = 0; m < rows; m++)
            y[(long)m * out + o] = float_to_bf16(dot_bf16_bf16(x + (long)m * in, w + (long)o * in, in));
#else
    float *xf = rows_to_float(x, (long)rows * in);
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int o = 0; o < out; o++)
        for (int m = 0; m < rows; m++)
            y[(long)m * out + o] = float_to_bf16(dot_bf16(xf + (long)m * in, w + (long)o * in, in));
    free(xf);
#endif
}
