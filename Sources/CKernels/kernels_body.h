// The kernels' bodies, included once per instruction set by kernels.c with KERNEL_TARGET (a function
// attribute) and KERNEL(name) (a name suffix) defined. Plain scalar loops: the compiler vectorises them
// for the target; the reductions opt into reassociation explicitly.

// The polynomials shared by the scalar kernels here and the vector GELU of gemm_body.h, written once for a
// float or a vector of floats: Cephes' e^r − 1 − r over r² for |r| ≤ ln 2 / 2, and Abramowitz & Stegun 7.1.26's
// erf polynomial in t = 1 / (1 + 0.3275911·|x|).
#ifndef VITMSN_POLYNOMIALS
#define VITMSN_POLYNOMIALS
#define EXP_POLYNOMIAL(r) \
    (((((1.9875691500e-4f * (r) + 1.3981999507e-3f) * (r) + 8.3334519073e-3f) * (r) + 4.1665795894e-2f) * (r) + 1.6666665459e-1f) * (r) + 5.0000001201e-1f)
#define ERF_POLYNOMIAL(t) ((((1.061405429f * (t) - 1.453152027f) * (t) + 1.421413741f) * (t) - 0.284496736f) * (t) + 0.254829592f)
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

KERNEL_TARGET static inline float KERNEL(sigmoid_one)(float x) { return 1.0f / (1.0f + KERNEL(exp_one)(-x)); }

KERNEL_TARGET static void KERNEL(activate)(vitmsn_activation kind, float *restrict x, size_t n) {
    switch (kind) {
    case VITMSN_GELU:
        for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + KERNEL(erf_one)(x[i] * 0.70710678118654752f));
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
    float m = *maximum;
    for (int lane = 0; lane < GEMM_VW; lane++) m = fmaxf(m, mv[lane]);
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
