/* A prompt's new positions attending to a kept KV cache and to themselves, with AVX512-BF16
   (inference/attention.py says when and what it measured). The cache is float32 holding
   bf16 values (every key and value was rounded to bf16 where it was computed), so its bf16
   copy is exact and vdpbf16ps's products are exact in float32: the scores are float32
   sums, as in float32 attention. The probabilities are rounded to bf16 for the values'
   product, as in a bf16 model's attention; the output is rounded to bf16.
   Layout: 16 query rows of one head at a time, one per float lane; a key or a value pair
   is broadcast against them, so neither the cache nor the scores are transposed. */
#if defined(__AVX512BF16__)
int kept_attention_available(void) { return 1; }

/* Two rows of 16 floats -> 16 lanes each holding the pair (a[l], b[l]) as bf16, a low. */
static inline __m512i bf16_pairs(__m512 a, __m512 b) {
    __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(a));
    __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(b));
    return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}

/* One kv head's keys as bf16 rows ([end][d]: word t of a row is the pair of dims 2t, 2t+1)
   and its values as pairs of rows ([end/2][d] words: rows 2s and 2s+1 of dim i). */
static void pack_head(const float *keys, const float *values, uint16_t *kb, uint32_t *vw, int end, int d) {
    for (int j = 0; j < end; j++)
        for (int i = 0; i < d; i += 16)
            _mm256_storeu_si256((__m256i *)(kb + (long)j * d + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(keys + (long)j * d + i)));
    for (int s = 0; 2 * s < end; s++)
        for (int i = 0; i < d; i += 16) {
            __m512 a = _mm512_loadu_ps(values + (long)2 * s * d + i);
            __m512 b = 2 * s + 1 < end ? _mm512_loadu_ps(values + (long)(2 * s + 1) * d + i) : _mm512_setzero_ps();
            _mm512_storeu_si512(vw + (long)s * d + i, bf16_pairs(a, b));
        }
}

/* Query rows r0..r0+15 (fewer at the end) of query head h. q: [n][heads][d] bf16;
   out: [n][heads * d] bf16. Row r sits at position + r and sees keys 0..position + r. */
static void attend_tile(const uint16_t *q, const uint16_t *kb, const uint32_t *vw, uint16_t *out, float *scores, int r0, int n,
                        int h, int heads, int d, int position, float scaling) {
    const int rows = n - r0 < 16 ? n - r0 : 16, end = position + r0 + rows, words = d / 2;
    __m512i qp[64];  /* d <= 128: lane l holds row r0 + l's pair t */
    for (int t = 0; t < words; t++) {
        uint32_t lane[16] = {0};
        for (int l = 0; l < rows; l++) memcpy(&lane[l], q + ((long)(r0 + l) * heads + h) * d + 2 * t, 4);
        qp[t] = _mm512_loadu_si512(lane);
    }
    /* Scores, scaled and masked as they are stored (lane l sees keys up to position + r0 + l; a
       padding lane, as the last row), and their maximum. Eight keys at a time: eight independent
       sums keep vdpbf16ps's pipeline full, and each key's sum still runs over t in order. */
    const uint32_t *kw = (const uint32_t *)kb;
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i last = _mm512_add_epi32(_mm512_set1_epi32(position + r0), _mm512_min_epi32(lane, _mm512_set1_epi32(rows - 1)));
    const __m512 scale = _mm512_set1_ps(scaling), minus_inf = _mm512_set1_ps(-INFINITY);
    __m512 top = minus_inf;
#define KEEP(k, a) do { \
        __m512 s_ = _mm512_mask_blend_ps(_mm512_cmpgt_epi32_mask(_mm512_set1_epi32(j + (k)), last), _mm512_mul_ps((a), scale), minus_inf); \
        _mm512_storeu_ps(scores + (long)(j + (k)) * 16, s_); \
        top = _mm512_max_ps(top, s_); \
    } while (0)
#define DOT(k, a) a = _mm512_dpbf16_ps(a, qt, (__m512bh)_mm512_set1_epi32((int)kw[(long)(j + (k)) * words + t]))
    int j = 0;
    for (; j + 8 <= end; j += 8) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (int t = 0; t < words; t++) {
            const __m512bh qt = (__m512bh)qp[t];
            DOT(0, a0); DOT(1, a1); DOT(2, a2); DOT(3, a3); DOT(4, a4); DOT(5, a5); DOT(6, a6); DOT(7, a7);
        }
        KEEP(0, a0); KEEP(1, a1); KEEP(2, a2); KEEP(3, a3); KEEP(4, a4); KEEP(5, a5); KEEP(6, a6); KEEP(7, a7);
    }
    for (; j < end; j++) {
        __m512 a0 = _mm512_setzero_ps();
        for (int t = 0; t < words; t++) {
            const __m512bh qt = (__m512bh)qp[t];
            DOT(0, a0);
        }
        KEEP(0, a0);
    }
#undef DOT
#undef KEEP
    /* Probabilities, summed in key order, and packed once as bf16 pairs of keys 2s, 2s + 1 for
       the values' product (not once per 16 dims). */
    uint32_t *pairs = (uint32_t *)scores;  /* pair s overwrites scores 2s and 2s + 1 only after reading them */
    __m512 sum = _mm512_setzero_ps();
    for (int s = 0; 2 * s < end; s++) {
        __m512 p0 = exp16(_mm512_sub_ps(_mm512_loadu_ps(scores + (long)2 * s * 16), top)), p1 = _mm512_setzero_ps();
        p0 = _mm512_mask_blend_ps(_mm512_cmpgt_epi32_mask(_mm512_set1_epi32(2 * s), last), p0, _mm512_setzero_ps());
        sum = _mm512_add_ps(sum, p0);
        if (2 * s + 1 < end) {
            p1 = exp16(_mm512_sub_ps(_mm512_loadu_ps(scores + (long)(2 * s + 1) * 16), top));
            p1 = _mm512_mask_blend_ps(_mm512_cmpgt_epi32_mask(_mm512_set1_epi32(2 * s + 1), last), p1, _mm512_setzero_ps());
            sum = _mm512_add_ps(sum, p1);
        }
        _mm512_storeu_si512(pairs + (long)s * 16, bf16_pairs(p0, p1));
    }
    /* out[l][i] = sum_j p[j][l] v[j][i] / sum[l], 16 dims at a time, two keys per vdpbf16ps */
    float result[16][16];
    for (int i0 = 0; i0 < d; i0 += 16) {
        __m512 acc[16];
        for (int i = 0; i < 16; i++) acc[i] = _mm512_setzero_ps();
        for (int s = 0; 2 * s < end; s++) {
            const __m512bh pp = (__m512bh)_mm512_loadu_si512(pairs + (long)s * 16);
            const uint32_t *v = vw + (long)s * d + i0;
            for (int i = 0; i < 16; i++) acc[i] = _mm512_dpbf16_ps(acc[i], pp, (__m512bh)_mm512_set1_epi32((int)v[i]));
        }
        for (int i = 0; i < 16; i++) _mm512_storeu_ps(result[i], _mm512_div_ps(acc[i], sum));
        for (int l = 0; l < rows; l++)
            for (int i = 0; i < 16; i++) out[(long)(r0 + l) * heads * d + (long)h * d + i0 + i] = float_to_bf16(result[i][l]);
    }
}

/* q [n][heads][d] bf16 at positions position..position+n-1; keys, values: [kv_heads][capacity][d]
   float32 holding positions 0..position+n-1; out [n][heads * d] bf16. d: a multiple of 32, <= 128. */
void kept_attention(const uint16_t *q, const float *keys, const float *values, uint16_t *out, int n, int heads, int kv_heads, int d,
                    int capacity, int position, float scaling, int threads) {
    const int end = position + n, tiles = (n + 15) / 16, group = heads / kv_heads;
    uint16_t *kb = malloc((size_t)kv_heads * end * d * sizeof *kb);
    uint32_t *vw = malloc((size_t)kv_heads * ((end + 1) / 2) * d * sizeof *vw);
    #pragma omp parallel num_threads(threads)
    {
        #pragma omp for schedule(static)
        for (int g = 0; g < kv_heads; g++)
            pack_head(keys + (long)g * capacity * d, values + (long)g * capacity * d, kb + (long)g * end * d,
                      vw + (long)g * ((end + 1) / 2) * d, end, d);
        float *scores = malloc((size_t)end * 16 * sizeof *scores);
        #pragma omp for schedule(dynamic)
        for (int item = 0; item < heads * tiles; item++) {
            const int h = item / tiles, g = h / group;
            attend_tile(q, kb + (long)g * end * d, vw + (long)g * ((end + 1) / 2) * d, out, scores, (item % tiles) * 16, n, h, heads, d,
                        position, scaling);
        }
        free(scores);
    }
    free(kb);
    free(vw);
}
#else
int kept_attention_available(void) { return 0; }
void kept_attention(const uint16_t *q, const float *keys, const float *values, uint16_t *out, int n, int heads, int kv_heads, int d,
                    int capacity, int position, float scaling, int threads) {}
#endif
