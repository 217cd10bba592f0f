/* What both engines' vector paths share (core/native.py compiles this after bf16.h, in
   front of each source). Every build target has AVX2, FMA and F16C (an AVX-512 CPU has
   them too), so the code here runs on both; AVX-512 paths sit beside it where they pay. */
#if !(defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#error "the C kernels are built for AVX2 + FMA + F16C or AVX-512 (core/native.py); elsewhere torch runs"
#endif
#include <immintrin.h>

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* 8 bf16 -> 8 floats: the bits moved up 16 (bf16_to_float on 8 lanes). */
static inline __m256 bf16x8_load(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

/* float_to_bf16 on 8 lanes (round to nearest even, a NaN becomes 0x7FC0): each lane's
   bf16 bits in its low half. */
static inline __m256i bf16x8_bits(__m256 v) {
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), odd)), 16);
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x7FFFFFFF)), _mm256_set1_epi32(0x7F800000));
    return _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7FC0), nan);
}

/* bf16_to_float(float_to_bf16(v)) on 8 lanes. */
static inline __m256 bf16x8_round(__m256 v) { return _mm256_castsi256_ps(_mm256_slli_epi32(bf16x8_bits(v), 16)); }

static inline void bf16x8_store(uint16_t *p, __m256 v) {
    const __m256i b = bf16x8_bits(v);
    _mm_storeu_si128((__m128i *)p, _mm_packus_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1)));
}
