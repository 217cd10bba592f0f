/* The merge's two passes over a bf16 tensor pair, one read of the pair each
   (merging/slerp_kernel.py says what the torch version cost). Built with
   -ffp-contract=off: s0*a + s1*b is two rounded products and a rounded sum, as
   mergekit computes it, never a fused multiply-add. Vector paths: AVX2 (simd.h), and
   AVX-512 beside it for the sums. */
#include <string.h>

#define SUM_BLOCK 4096  /* float32 partial sums per block, added up in float64 */

/* sums[0] += a.a, sums[1] += b.b, sums[2] += a.b over n elements. */
void slerp_sums(const uint16_t *a, const uint16_t *b, long n, double *sums) {
    double aa = 0.0, bb = 0.0, ab = 0.0;
    for (long start = 0; start < n; start += SUM_BLOCK) {
        long end = start + SUM_BLOCK < n ? start + SUM_BLOCK : n, i = start;
        float faa = 0.0f, fbb = 0.0f, fab = 0.0f;
#ifdef __AVX512F__
        __m512 vaa = _mm512_setzero_ps(), vbb = _mm512_setzero_ps(), vab = _mm512_setzero_ps();
        for (; i + 16 <= end; i += 16) {
            __m512 va = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(a + i))), 16));
            __m512 vb = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(b + i))), 16));
            vaa = _mm512_add_ps(vaa, _mm512_mul_ps(va, va));
            vbb = _mm512_add_ps(vbb, _mm512_mul_ps(vb, vb));
            vab = _mm512_add_ps(vab, _mm512_mul_ps(va, vb));
        }
        faa = _mm512_reduce_add_ps(vaa), fbb = _mm512_reduce_add_ps(vbb), fab = _mm512_reduce_add_ps(vab);
#else
        /* two sums per quantity: 16 lanes, as on AVX-512, so each lane adds as few products */
        __m256 vaa[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()}, vbb[2] = {vaa[0], vaa[0]}, vab[2] = {vaa[0], vaa[0]};
        for (; i + 16 <= end; i += 16)
            for (int k = 0; k < 2; k++) {
                __m256 va = bf16x8_load(a + i + 8 * k), vb = bf16x8_load(b + i + 8 * k);
                vaa[k] = _mm256_add_ps(vaa[k], _mm256_mul_ps(va, va));
                vbb[k] = _mm256_add_ps(vbb[k], _mm256_mul_ps(vb, vb));
                vab[k] = _mm256_add_ps(vab[k], _mm256_mul_ps(va, vb));
            }
        faa = hsum256(_mm256_add_ps(vaa[0], vaa[1])), fbb = hsum256(_mm256_add_ps(vbb[0], vbb[1]));
        fab = hsum256(_mm256_add_ps(vab[0], vab[1]));
#endif
        for (; i < end; i++) {
            float x = bf16_to_float(a[i]), y = bf16_to_float(b[i]);
            faa += x * x, fbb += y * y, fab += x * y;
        }
        aa += faa, bb += fbb, ab += fab;
    }
    sums[0] += aa, sums[1] += bb, sums[2] += ab;
}

/* out = bf16(s0 * a + s1 * b), each product and the sum rounded to float32: one AVX2 path
   for both targets, narrowing 8 lanes at a time (simd.h). */
void slerp_combine(const uint16_t *a, const uint16_t *b, long n, float s0, float s1, uint16_t *out) {
    long i = 0;
    const __m256 v0 = _mm256_set1_ps(s0), v1 = _mm256_set1_ps(s1);
    for (; i + 8 <= n; i += 8)
        bf16x8_store(out + i, _mm256_add_ps(_mm256_mul_ps(bf16x8_load(a + i), v0), _mm256_mul_ps(bf16x8_load(b + i), v1)));
    for (; i < n; i++) out[i] = float_to_bf16(bf16_to_float(a[i]) * s0 + bf16_to_float(b[i]) * s1);
}
