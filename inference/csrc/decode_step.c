/* One decoded token through every layer of a Llama-family model in one call (decoder.py).

   The torch version of this step dispatched ~25 small ops per layer (norms, rotary
   embedding, cache writes, attention, residuals): about 3 ms of a SmolLM2 token on top of
   the matmuls. Here they are plain loops between the GEMV kernels of gemv.c.

   Values are rounded to bf16 wherever transformers' bf16 forward rounds them (norm
   output, weight product, each matmul, rotary terms, attention output, activations,
   residuals), so the step computes what the torch loop computed up to float rounding:
   sums run in another order, exp is glibc's expf (torch uses its own vectorized exp),
   and the norm takes 1/sqrt of a double sum. The KV cache is float32, as in the torch
   loop. tests/test_decoder.py bounds the difference on the logits. */

typedef struct {
    int kind;              /* 0: bf16, 1: int8 (bf16 row scale), 2: fp8 e4m3 (float32 row scale) */
    const void *weight;    /* [out, in] */
    const void *scale;     /* [out], NULL for bf16 */
    const uint16_t *bias;  /* [out] bf16, or NULL */
    int in, out;
} Linear;

typedef struct {
    const uint16_t *ln1, *ln2;  /* RMSNorm weights [hidden] */
    Linear qkv, o, gate_up, down;
    float *keys, *values;       /* this reply's cache: [kv_heads, capacity, head_dim] */
} Layer;

typedef struct {
    int hidden, heads, kv_heads, head_dim, inter, capacity;
    float eps, scaling;
} Dims;

static inline float round_bf16(float f) { return bf16_to_float(float_to_bf16(f)); }

/* y[o] = bf16(scale[o] * w[o] . x) (+ bias, rounded again: the torch loop adds it after). */
static void linear(const Linear *l, const float *x, float *y, int threads) {
    Int8Input q = l->kind == 1 ? int8_input(x, l->in) : (Int8Input){x, NULL, NULL};
#if defined(__AVX512BF16__)
    uint16_t xb[l->kind == 0 ? l->in : 1];  /* x holds bf16 values (rounded where torch rounds): exact */
    if (l->kind == 0)
        for (int i = 0; i < l->in; i++) xb[i] = float_to_bf16(x[i]);
#endif
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int o = 0; o < l->out; o++) {
        float v;
        if (l->kind == 1)
            v = dot_int8_input(&q, (const int8_t *)l->weight + (long)o * l->in, l->in) * bf16_to_float(((const uint16_t *)l->scale)[o]);
        else if (l->kind == 2)
            v = dot_fp8_over_256(x, (const uint8_t *)l->weight + (long)o * l->in, l->in) * 256.0f * ((const float *)l->scale)[o];
        else
#if defined(__AVX512BF16__)
            v = dot_bf16_bf16(xb, (const uint16_t *)l->weight + (long)o * l->in, l->in);
#else
            v = dot_bf16(x, (const uint16_t *)l->weight + (long)o * l->in, l->in);
#endif
        v = round_bf16(v);
        y[o] = l->bias ? round_bf16(v + bf16_to_float(l->bias[o])) : v;
    }
    int8_input_free(&q);
}

/* out = bf16(w * bf16(x / rms(x))), as transformers' RMSNorm in bf16. */
static void rms_norm(const float *x, const uint16_t *w, float *out, int n, float eps) {
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += (double)x[i] * x[i];
    float inv = 1.0f / sqrtf((float)(sum / n) + eps);
    for (int i = 0; i < n; i++) out[i] = round_bf16(bf16_to_float(w[i]) * round_bf16(x[i] * inv));
}

/* v*cos + rotate_half(v)*sin for one head; `sin` carries rotate_half's sign (decoder.rope). */
static void rotate(float *v, const uint16_t *cos, const uint16_t *sin, int d) {
    float rolled[d];
    for (int i = 0; i < d; i++) rolled[i] = v[(i + d / 2) % d];
    for (int i = 0; i < d; i++)
        v[i] = round_bf16(round_bf16(v[i] * bf16_to_float(cos[i])) + round_bf16(rolled[i] * bf16_to_float(sin[i])));
}

/* One query head against the cached positions 0..end-1 of its kv head. */
static void attend(const float *q, const float *keys, const float *values, float *out, int end, int d, float scaling) {
    float *w = malloc((size_t)end * sizeof *w);
    float top = -INFINITY, total = 0.0f;
    for (int j = 0; j < end; j++) {
        float s = 0.0f;
        for (int i = 0; i < d; i++) s += q[i] * keys[(long)j * d + i];
        w[j] = s * scaling;
        top = w[j] > top ? w[j] : top;
    }
    for (int j = 0; j < end; j++) total += (w[j] = expf(w[j] - top));
    for (int i = 0; i < d; i++) out[i] = 0.0f;
    for (int j = 0; j < end; j++) {
        float p = w[j] / total;
        for (int i = 0; i < d; i++) out[i] += p * values[(long)j * d + i];
    }
    for (int i = 0; i < d; i++) out[i] = round_bf16(out[i]);
    free(w);
}

/* x: the token's hidden state [hidden], bf16, updated in place through all layers.
   cos/sin: the rotary row of `position` [head_dim] (bf16). */
void decode_step(const Layer *layers, int n_layers, const Dims *dims, uint16_t *x, const uint16_t *cos, const uint16_t *sin,
                 int position, int threads) {
    const int H = dims->hidden, d = dims->head_dim, heads = dims->heads, kv = dims->kv_heads, group = heads / kv;
    const int wide = (heads + 2 * kv) * d > 2 * dims->inter ? (heads + 2 * kv) * d : 2 * dims->inter;
    const long cap = dims->capacity;
    float *h = malloc((size_t)H * sizeof *h), *res = malloc((size_t)H * sizeof *res), *mid = malloc((size_t)wide * sizeof *mid);
    float *att = malloc((size_t)heads * d * sizeof *att), *act = malloc((size_t)(dims->inter > H ? dims->inter : H) * sizeof *act);
    for (int i = 0; i < H; i++) res[i] = bf16_to_float(x[i]);
    for (int n = 0; n < n_layers; n++) {
        const Layer *L = &layers[n];
        rms_norm(res, L->ln1, h, H, dims->eps);
        linear(&L->qkv, h, mid, threads);  /* [q heads | k heads | v heads] x d */
        for (int head = 0; head < heads + kv; head++) rotate(mid + (long)head * d, cos, sin, d);
        for (int g = 0; g < kv; g++) {
            memcpy(L->keys + ((long)g * cap + position) * d, mid + (long)(heads + g) * d, d * sizeof(float));
            memcpy(L->values + ((long)g * cap + position) * d, mid + (long)(heads + kv + g) * d, d * sizeof(float));
        }
        #pragma omp parallel for schedule(static) num_threads(threads)
        for (int head = 0; head < heads; head++) {
            int g = head / group;
            attend(mid + (long)head * d, L->keys + (long)g * cap * d, L->values + (long)g * cap * d, att + (long)head * d,
                   position + 1, d, dims->scaling);
        }
        linear(&L->o, att, h, threads);
        for (int i = 0; i < H; i++) res[i] = round_bf16(res[i] + h[i]);
        rms_norm(res, L->ln2, h, H, dims->eps);
        linear(&L->gate_up, h, mid, threads);  /* [gate | up] */
        for (int i = 0; i < dims->inter; i++) {
            float g = mid[i];
            act[i] = round_bf16(round_bf16(g / (1.0f + expf(-g))) * mid[dims->inter + i]);
        }
        linear(&L->down, act, h, threads);
        for (int i = 0; i < H; i++) res[i] = round_bf16(res[i] + h[i]);
    }
    for (int i = 0; i < H; i++) x[i] = float_to_bf16(res[i]);
    free(h); free(res); free(mid); free(att); free(act);
}
