// The kernels' bodies, included once per instruction set by kernels.c with KERNEL_TARGET (a function
// attribute) and KERNEL(name) (a name suffix) defined. Plain scalar loops: the compiler vectorises them
// for the target; the reductions opt into reassociation explicitly.

// The polynomials of the scalar exp and erf here (Cephes' e^r − 1 − r over r² for |r| ≤ ln 2 / 2, and
// Abramowitz & Stegun 7.1.26's erf polynomial in t = 1 / (1 + 0.3275911·|x|)) and of the vector GELU's
// rational erf below.
#ifndef VITMSN_POLYNOMIALS
#define VITMSN_POLYNOMIALS
#define EXP_POLYNOMIAL(r) \
    (((((1.9875691500e-4f * (r) + 1.3981999507e-3f) * (r) + 8.3334519073e-3f) * (r) + 4.1665795894e-2f) * (r) + 1.6666665459e-1f) * (r) + 5.0000001201e-1f)
#define ERF_POLYNOMIAL(t) ((((1.061405429f * (t) - 1.453152027f) * (t) + 1.421413741f) * (t) - 0.284496736f) * (t) + 0.254829592f)
// GELU's erf(z) = z·N(z²)/D(z²) on |z| ≤ 4 (scripts/fit_gelu_erf.py: a minimax fit, largest error 3.7e-7
// evaluated in f32 with FMA and 4.3e-7 without, against 5.6e-7 for erf_one's A&S), with no exp: the A&S GELU
// epilogue was 7 % of an int8 ViT-S forward. z is clamped to ±4, where the ratio rounds to at least 1 with
// or without FMA, and the ratio to [-1, 1]: GELU is exactly 0 below x = -4√2 and exactly x above 4√2.
#define GELU_ERF_NUMERATOR(s) \
    ((((((-1.366516944e-08f * (s) + 4.780204108e-06f) * (s) + 3.826808243e-04f) * (s) + 3.839550540e-03f) * (s) + 5.433250219e-02f) * (s) + 1.847117990e-01f) * (s) + 1.128379226e+00f)
#define GELU_ERF_DENOMINATOR(s) \
    (((((6.400608254e-05f * (s) + 1.309568062e-03f) * (s) + 1.545352023e-02f) * (s) + 1.138266549e-01f) * (s) + 4.970301092e-01f) * (s) + 1.0f)
#endif

KERNEL_TARGET static inline float KERNEL(exp_one)(float input) {
    float x = input < -87.3f ? -87.3f : (input > 88.3f ? 88.3f : input);
    // n = round(x·log2 e) by the 1.5·2²³ shifter; r = x − n·ln 2 in two parts; e^r by Cephes' polynomial.
    const float shifter = 12582912.0f;
    float shifted = x * 1.44269504f + shifter;
    float n = shifted - shifter;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float er = EXP_POLYNOMIAL(r) * r * r + r + 1.0f;
    uint32_t bits;
    memcpy(&bits, &shifted, 4);
    bits = (bits - 0x4B400000u + 127u) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return er * scale;
}

// Abramowitz & Stegun 7.1.26, the form PyTorch's vectorised CPU GELU uses.
KERNEL_TARGET static inline float KERNEL(erf_one)(float x) {
    float ax = fabsf(x);
    float t = 1.0f / (1.0f + 0.3275911f * ax);
    return copysignf(1.0f - ERF_POLYNOMIAL(t) * t * KERNEL(exp_one)(-ax * ax), x);
}

typedef float KERNEL(vf) __attribute__((vector_size(GEMM_VW * 4), aligned(4)));

// Exact-erf GELU, 0.5·x·(1 + erf(x/√2)), on a vector by the rational erf above. Every GELU (activate's and
// the GEMM epilogues') runs this one function, so fused and separate activations agree bit for bit at any
// optimisation level (a scalar twin differed at -O0, where only one of the two got FMAs).
__attribute__((always_inline)) KERNEL_TARGET static inline KERNEL(vf) KERNEL(gelu_vector)(KERNEL(vf) v) {
#pragma clang fp contract(fast)
    typedef KERNEL(vf) vf;
    const vf one = (vf){0} + 1.0f;
    vf z = __builtin_elementwise_min(__builtin_elementwise_max(v * 0.70710678118654752f, -4.0f * one), 4.0f * one), s = z * z;
    vf erf = __builtin_elementwise_min(__builtin_elementwise_max(z * GELU_ERF_NUMERATOR(s) / GELU_ERF_DENOMINATOR(s), -one), one);
    vf half = 0.5f * v;
    return half * erf + half;
}

KERNEL_TARGET static void KERNEL(gelu)(float *restrict x, size_t n) {
    typedef KERNEL(vf) vf;
    size_t i = 0;
    for (; i + GEMM_VW <= n; i += GEMM_VW) {
        vf v;
        memcpy(&v, x + i, sizeof v);
        v = KERNEL(gelu_vector)(v);
        memcpy(x + i, &v, sizeof v);
    }
    if (i < n) {  // the tail in a zero-padded vector
        vf v = {0};
        memcpy(&v, x + i, (n - i) * sizeof(float));
        v = KERNEL(gelu_vector)(v);
        memcpy(x + i, &v, (n - i) * sizeof(float));
    }
}

KERNEL_TARGET static inline float KERNEL(sigmoid_one)(float x) { return 1.0f / (1.0f + KERNEL(exp_one)(-x)); }

KERNEL_TARGET static void KERNEL(activate)(vitmsn_activation kind, float *restrict x, size_t n) {
    switch (kind) {
    case VITMSN_GELU:
        KERNEL(gelu)(x, n);
        break;
    case VITMSN_GELU_TANH:
        for (size_t i = 0; i < n; i++) {
            float v = x[i];
            float inner = 0.7978845608028654f * (v + 0.044715f * v * v * v);
            float tanh_inner = 1.0f - 2.0f / (KERNEL(exp_one)(2.0f * inner) + 1.0f);
            x[i] = 0.5f * v * (1.0f + tanh_inner);
        }
        break;
    case VITMSN_QUICK_GELU:
        for (size_t i = 0; i < n; i++) x[i] = x[i] * KERNEL(sigmoid_one)(1.702f * x[i]);
        break;
    case VITMSN_RELU:
        for (size_t i = 0; i < n; i++) x[i] = x[i] < 0.0f ? 0.0f : x[i];  // NaN stays NaN, as torch.relu
        break;
    case VITMSN_SILU:
        for (size_t i = 0; i < n; i++) x[i] = x[i] * KERNEL(sigmoid_one)(x[i]);
        break;
    }
}

// row[i] = exp(row[i] − m), m the larger of `maximum` and the row's maximum; returns the sum and m.
KERNEL_TARGET static inline float KERNEL(exp_below_maximum)(float *restrict row, size_t cols, float *maximum) {
    // The maximum in vectors (fmaxf's NaN rule: a NaN score is passed over, as by `row[i] > m`): a scalar
    // loop runs one dependent compare per element and took most of the softmax's time.
    typedef float vf __attribute__((vector_size(GEMM_VW * 4), aligned(4)));
    vf mv = (vf){0} + *maximum;
    size_t j = 0;
    for (; j + GEMM_VW <= cols; j += GEMM_VW) mv = __builtin_elementwise_max(mv, *(const vf *)(row + j));
    float m = __builtin_reduce_max(mv);
    for (; j < cols; j++) m = fmaxf(m, row[j]);
    float total = 0.0f;
    {
#pragma clang fp reassociate(on)
        for (size_t i = 0; i < cols; i++) {
            row[i] = KERNEL(exp_one)(row[i] - m);
            total += row[i];
        }
    }
    *maximum = m;
    return total;
}

KERNEL_TARGET static void KERNEL(softmax_rows)(float *restrict x, size_t rows, size_t cols) {
    for (size_t r = 0; r < rows; r++) {
        float maximum = -INFINITY;
        float inverse = 1.0f / KERNEL(exp_below_maximum)(x + r * cols, cols, &maximum);
        for (size_t i = 0; i < cols; i++) x[r * cols + i] *= inverse;
    }
}

KERNEL_TARGET static void KERNEL(exp)(const float *restrict x, float *restrict y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = KERNEL(exp_one)(x[i]);
}

KERNEL_TARGET static void KERNEL(erf)(const float *restrict x, float *restrict y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = KERNEL(erf_one)(x[i]);
}

// grad[i] *= act'(x[i]), x the activation's input.
KERNEL_TARGET static void KERNEL(activation_backward)(vitmsn_activation kind, const float *restrict x, float *restrict grad, size_t n) {
    switch (kind) {
    case VITMSN_GELU:
        // d/dx 0.5·x·(1 + erf(x/√2)) = 0.5·(1 + erf(x/√2)) + x·φ(x)
        for (size_t i = 0; i < n; i++) {
            float v = x[i];
            float cdf = 0.5f * (1.0f + KERNEL(erf_one)(v * 0.70710678118654752f));
            float pdf = 0.3989422804014327f * KERNEL(exp_one)(-0.5f * v * v);
            grad[i] *= cdf + v * pdf;
        }
        break;
    case VITMSN_GELU_TANH:
        for (size_t i = 0; i < n; i++) {
            float v = x[i];
            float inner = 0.7978845608028654f * (v + 0.044715f * v * v * v);
            float t = 1.0f - 2.0f / (KERNEL(exp_one)(2.0f * inner) + 1.0f);
            float dinner = 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * v * v);
            grad[i] *= 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * dinner;
        }
        break;
    case VITMSN_QUICK_GELU:
        for (size_t i = 0; i < n; i++) {
            float s = KERNEL(sigmoid_one)(1.702f * x[i]);
            grad[i] *= s + 1.702f * x[i] * s * (1.0f - s);
        }
        break;
    case VITMSN_RELU:
        for (size_t i = 0; i < n; i++) grad[i] = x[i] > 0.0f ? grad[i] : 0.0f;
        break;
    case VITMSN_SILU:
        for (size_t i = 0; i < n; i++) {
            float s = KERNEL(sigmoid_one)(x[i]);
            grad[i] *= s * (1.0f + x[i] * (1.0f - s));
        }
        break;
    }
}

// One key block of an online softmax over `rows` rows of `cols` scores: each row's running maximum and sum
// take in the block, the scores become exp(s − new maximum), and rescale[r] = exp(old − new maximum), the
// factor for what was summed before (0 for the first block).
KERNEL_TARGET static void KERNEL(online_softmax)(
    float *restrict x, size_t rows, size_t cols, float *restrict row_max, float *restrict row_sum, float *restrict rescale, int first
) {
    for (size_t r = 0; r < rows; r++) {
        float maximum = first ? -INFINITY : row_max[r];
        float total = KERNEL(exp_below_maximum)(x + r * cols, cols, &maximum);
        rescale[r] = first ? 0.0f : KERNEL(exp_one)(row_max[r] - maximum);
        row_sum[r] = first ? total : row_sum[r] * rescale[r] + total;
        row_max[r] = maximum;
    }
}
