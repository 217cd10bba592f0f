/* A prompt's int8 or e4m3 weights times their row scales, widened in one pass for torch's
   GEMM (inference/cpu_kernels.py, `_widened`): float32, or bf16 rounded once from the
   float32 product. The values are torch's own widening's, bit for bit; torch took five
   passes over the block (widen, shift, mask, scale, round) where this takes one. */

static inline void store8(void *out, long at, int bf16, __m256 v) {
    if (bf16) bf16x8_store((uint16_t *)out + at, v);
    else _mm256_storeu_ps((float *)out + at, v);
}

static inline void store1(void *out, long at, int bf16, float v) {
    if (bf16) ((uint16_t *)out)[at] = float_to_bf16(v);
    else ((float *)out)[at] = v;
}

/* int8 rows times bf16 scales: the product of two 8-bit significands is exact in float32. */
void int8_widen(const int8_t *w, const uint16_t *scale, void *out, int rows, int in, int bf16, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int o = 0; o < rows; o++) {
        const float s = bf16_to_float(scale[o]);
        const __m256 vs = _mm256_set1_ps(s);
        const int8_t *row = w + (long)o * in;
        const long base = (long)o * in;
        int i = 0;
        for (; i + 8 <= in; i += 8)
            store8(out, base + i, bf16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(row + i)))), vs));
        for (; i < in; i++) store1(out, base + i, bf16, (float)row[i] * s);
    }
}

/* e4m3 rows times float32 scales: each byte becomes the float16 with its bits (its value
   / 256, as dot_fp8_over_256 reads it), times the scale * 256. */
void fp8_widen(const uint8_t *w, const float *scale, void *out, int rows, int in, int bf16, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int o = 0; o < rows; o++) {
        const __m128i zero = _mm_setzero_si128(), keep = _mm_set1_epi16((short)0xBFFF);
        const float s = scale[o] * 256.0f;
        const __m256 vs = _mm256_set1_ps(s);
        const uint8_t *row = w + (long)o * in;
        const long base = (long)o * in;
        int i = 0;
        for (; i + 16 <= in; i += 16) {
            __m128i bytes = _mm_loadu_si128((const __m128i *)(row + i));
            __m128i h0 = _mm_and_si128(_mm_srai_epi16(_mm_unpacklo_epi8(zero, bytes), 1), keep);
            __m128i h1 = _mm_and_si128(_mm_srai_epi16(_mm_unpackhi_epi8(zero, bytes), 1), keep);
            store8(out, base + i, bf16, _mm256_mul_ps(_mm256_cvtph_ps(h0), vs));
            store8(out, base + i + 8, bf16, _mm256_mul_ps(_mm256_cvtph_ps(h1), vs));
        }
        for (; i < in; i++) store1(out, base + i, bf16, fp8_e4m3_to_float(row[i]) * 0.00390625f * s);
    }
}
