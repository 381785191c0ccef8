// The int8 GEMM's bodies, included once per instruction set by kernels.c with KERNEL(name), QGEMM_TARGET and
// QGEMM_KIND (0 portable, 1 AVX2, 2 AVX-512 VNNI) defined.
//
// C = epilogue(sa[r] · sb[c] · Σ_k (qa[r][k] − za[r]) · qb[k][c]): B (weights) symmetric, 8-bit in [-127, 127]
// or 7-bit in [-63, 63]; A (activations) unsigned with a zero point per row, 8-bit (qa in [0, 255]) or 7-bit
// (qa in [0, 127]). The sums are exact in int32 (Σ qa·qb − za·Σ qb, the column sums kept with B), so every
// build gives the same sums. B is packed once per weight into panels of 16 columns, each k-group of four
// bytes of a column adjacent: [panel][k/4][16 columns][4]. One 4-byte group of an A row, broadcast, meets a
// whole panel row of groups; K is padded to a multiple of 8 so that groups come in pairs.
//
// The bits: VNNI's vpdpbusd sums four products straight into int32 and never saturates, so it and the
// portable kernel take 8 bits of both. AVX2's vpmaddubsw multiplies unsigned × signed bytes and adds pairs
// into int16 with saturation, and its widening to int32 (vpmaddwd by ones) takes a multiply port too. So
// AVX2 runs 7-bit weights: a pair of 8-bit activations is then at most 2·255·63 = 32130 and fits. Three
// k-groups' pairs then add in int16 before one widening, 4 multiplies per 96 products (two groups take 4.5,
// single ones 6), when the six weights of each int16 lane (k ≡ {h, h+1, h+4, h+5, h+8, h+9} mod 12 of a
// column, h = 0 or 2) have same-sign sums of at most 128 (a "lane sum", so the lane holds at most 255 · 128 = 32640): the 7-bit
// quantiser fits every lane to that, moving a few weights by a level (vitmsn_quantize_rows). A 7-bit
// checkpoint fitted to two-group lanes (k ≡ {h, h+1, h+4, h+5} mod 8, before the three) adds pairs of groups;
// weights that fit neither (8-bit ones, or 7-bit ones from before any fitting) widen each group on its own.
// 7-bit activations would make every two-group lane fit, but changed 0.57 % of a Fashion-MNIST classifier's
// labels against 0.39 % for 8-bit ones.
// 8-bit weights from a VNNI machine's checkpoint meet 7-bit activations on AVX2: 2·127·127 = 32258 fits.

#define QGEMM_NR 16

#if QGEMM_KIND == 1
#include <immintrin.h>
#define QGEMM_MR 4
#define QGEMM_PANELS 1
#define QGEMM_TILE_SUMS (QGEMM_MR * QGEMM_NR)
#define QGEMM_MC 16
// Adds `count` (1 to 3, a constant once inlined) k-groups from g on to MR rows × 16 columns: their vpmaddubsw
// pairs add in int16, then one vpmaddwd by ones widens the sum to int32.
QGEMM_TARGET static inline __attribute__((always_inline)) void KERNEL(qgemm_groups)(
    __m256i acc[QGEMM_MR][2], const uint8_t *const *rows, const int8_t *restrict b, size_t g, int count
) {
    const __m256i ones = _mm256_set1_epi16(1);
#pragma clang loop unroll(full)
    for (int i = 0; i < QGEMM_MR; i++) {
        const int8_t *bi = b + g * 64;
        // Three groups' B in registers would spill accumulators, so each row reads it from L1 (the empty asm keeps
        // the compiler from hoisting the loads): 1.03–1.06× on the products alone.
        if (count == 3) __asm__ volatile("" : "+r"(bi));
        __m256i p[2];
        for (int s = 0; s < count; s++) {
            int32_t group;
            memcpy(&group, rows[i] + 4 * (g + s), 4);
            const __m256i a = _mm256_set1_epi32(group);
            for (int h = 0; h < 2; h++) {
                const __m256i product = _mm256_maddubs_epi16(a, _mm256_load_si256((const __m256i *)(bi + s * 64 + h * 32)));
                p[h] = s == 0 ? product : _mm256_add_epi16(p[h], product);
            }
        }
        acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(p[0], ones));
        acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(p[1], ones));
    }
}

// Σ over k of MR rows × 16 columns in 8 ymm accumulators; the 4 × 8 int32 tile goes to `tile`. `span` k-groups
// (1 to 3, as the lanes allow) add in int16 before each widening; a remainder of fewer goes last.
QGEMM_TARGET static void KERNEL(qgemm_micro)(
    size_t k4, const uint8_t *const *rows, const int8_t *restrict b, size_t panels, size_t height, int span, int mr, size_t np, int32_t *restrict tile
) {
    (void)panels, (void)height, (void)mr, (void)np;
    __m256i acc[QGEMM_MR][2];
    for (int i = 0; i < QGEMM_MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
    size_t g = 0;
    if (span == 3)
        for (; g + 3 <= k4; g += 3) KERNEL(qgemm_groups)(acc, rows, b, g, 3);
    if (span >= 2)
        for (; g + 2 <= k4; g += 2) KERNEL(qgemm_groups)(acc, rows, b, g, 2);
    for (; g < k4; g++) KERNEL(qgemm_groups)(acc, rows, b, g, 1);
    for (int i = 0; i < QGEMM_MR; i++) {
        _mm256_storeu_si256((__m256i *)(tile + i * QGEMM_NR), acc[i][0]);
        _mm256_storeu_si256((__m256i *)(tile + i * QGEMM_NR + 8), acc[i][1]);
    }
}

// The register-only rate of the three-group mix above (what the kernel runs on fitted 7-bit weights): 4 rows ×
// 2 columns of independent chains, three vpmaddubsw, two vpaddw, a vpmaddwd by ones and a vpaddd per 96
// products, no memory traffic. Returns the operations done (2 a product).
QGEMM_TARGET static double KERNEL(int8_peak_loop)(size_t iterations, int32_t *sink) {
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i b[3][2] = {{_mm256_set1_epi8(3), _mm256_set1_epi8(-5)}, {_mm256_set1_epi8(7), _mm256_set1_epi8(-2)}, {_mm256_set1_epi8(9), _mm256_set1_epi8(-11)}};
    __m256i acc[QGEMM_MR][2], a[QGEMM_MR];
    for (int i = 0; i < QGEMM_MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_si256(), a[i] = _mm256_set1_epi32(0x01020304 + i);
    for (size_t it = 0; it < iterations; it++) {
#pragma clang loop unroll(full)
        for (int i = 0; i < QGEMM_MR; i++) {
            for (int h = 0; h < 2; h++) {
                __m256i p = _mm256_add_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(a[i], b[0][h]), _mm256_maddubs_epi16(a[i], b[1][h])), _mm256_maddubs_epi16(a[i], b[2][h]));
                acc[i][h] = _mm256_add_epi32(acc[i][h], _mm256_madd_epi16(p, ones));
            }
            __asm__ volatile("" : "+x"(a[i]));  // an unknown row each time, as the kernel's broadcasts are
        }
    }
    int32_t total = 0;
    for (int i = 0; i < QGEMM_MR; i++) total += _mm256_extract_epi32(_mm256_add_epi32(acc[i][0], acc[i][1]), 0);
    *sink = total;
    return 2.0 * QGEMM_MR * 3 * 64 * (double)iterations;
}
#elif QGEMM_KIND == 2
#include <immintrin.h>
// Two register tiles, chosen at run time (vitmsn_qgemm_tile): 12 rows × two panels, and 8 rows × three. Each
// holds 24 accumulators, enough independent chains to cover vpdpbusd's latency on two ports. The wide one
// loads 11 vectors per 24 vpdpbusd (8 broadcasts of A, 3 panel rows of B) instead of 14, which pays where
// two vpdpbusd issue a cycle (Intel; on an Ice Lake, GEMMs 1.04–1.27×, the forward 1.06–1.21×) and not where one
// does (Zen 4: GEMMs 0.88–1.03×).
#define QGEMM_MR 12  // the taller tile's rows, and the most rows or tile sums either holds
#define QGEMM_PANELS 3
#define QGEMM_TILE_SUMS (24 * QGEMM_NR)
#define QGEMM_MC 24
// One zmm is a panel row: vpdpbusd adds four a·b products per column into int32 (no saturation). The tile's
// `height` rows × `panels` panels go to `tile`, `stride` int32 apart a row.
QGEMM_TARGET static inline __attribute__((always_inline)) void KERNEL(qgemm_vnni_tile)(
    size_t k4, const uint8_t *const *rows, const int8_t *restrict b, const size_t panels, const int height, const size_t stride, int32_t *restrict tile
) {
    const size_t panel_bytes = k4 * 64;
    __m512i acc[QGEMM_MR][QGEMM_PANELS];
    for (int i = 0; i < height; i++) for (size_t j = 0; j < panels; j++) acc[i][j] = _mm512_setzero_si512();
    for (size_t g = 0; g < k4; g++) {
        __m512i bv[QGEMM_PANELS];
        for (size_t j = 0; j < panels; j++) bv[j] = _mm512_load_si512((const void *)(b + j * panel_bytes + g * 64));
#pragma clang loop unroll(full)
        for (int i = 0; i < height; i++) {
            int32_t group;
            memcpy(&group, rows[i] + 4 * g, 4);
            __m512i a = _mm512_set1_epi32(group);
            for (size_t j = 0; j < panels; j++) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], a, bv[j]);
        }
    }
    for (int i = 0; i < height; i++)
        for (size_t j = 0; j < panels; j++) _mm512_storeu_si512((void *)(tile + i * stride + j * QGEMM_NR), acc[i][j]);
}

// A tile of the `mr` × `np` shape, or of its last panels. A short last tile (197 = 16 · 12 + 5 rows) runs at
// half height: the sums of rows it repeats are wasted work.
#define QGEMM_VNNI_HEIGHT(h)                                                                                      \
    (panels == np ? KERNEL(qgemm_vnni_tile)(k4, rows, b, np, h, np * QGEMM_NR, tile)                              \
     : panels == 1 ? KERNEL(qgemm_vnni_tile)(k4, rows, b, 1, h, np * QGEMM_NR, tile)                              \
                   : KERNEL(qgemm_vnni_tile)(k4, rows, b, 2, h, np * QGEMM_NR, tile))
QGEMM_TARGET static inline __attribute__((always_inline)) void KERNEL(qgemm_micro)(
    size_t k4, const uint8_t *const *rows, const int8_t *restrict b, size_t panels, size_t height, int span, const int mr, const size_t np, int32_t *restrict tile
) {
    (void)span;
    if (height <= (size_t)mr / 2) QGEMM_VNNI_HEIGHT(mr / 2);
    else QGEMM_VNNI_HEIGHT(mr);
}
#undef QGEMM_VNNI_HEIGHT

// The register-only rate of the tile's vpdpbusd chains (MR rows × two panels), no memory traffic. Returns the
// operations done (2 a product).
QGEMM_TARGET static double KERNEL(int8_peak_loop)(size_t iterations, int32_t *sink) {
    const __m512i b0 = _mm512_set1_epi8(3), b1 = _mm512_set1_epi8(-5);
    __m512i acc[QGEMM_MR][2], a[QGEMM_MR];
    for (int i = 0; i < QGEMM_MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_si512(), a[i] = _mm512_set1_epi32(0x01020304 + i);
    for (size_t it = 0; it < iterations; it++) {
#pragma clang loop unroll(full)
        for (int i = 0; i < QGEMM_MR; i++) {
            acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], a[i], b0);
            acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], a[i], b1);
        }
    }
    int32_t total = 0;
    for (int i = 0; i < QGEMM_MR; i++) total += _mm512_reduce_add_epi32(_mm512_add_epi32(acc[i][0], acc[i][1]));
    *sink = total;
    return 2.0 * QGEMM_MR * 2 * 64 * (double)iterations;
}
#else
#define QGEMM_MR 4
#define QGEMM_PANELS 1
#define QGEMM_TILE_SUMS (QGEMM_MR * QGEMM_NR)
#define QGEMM_MC 16
// Plain loops over the same layout; the compiler vectorises the 16 columns.
QGEMM_TARGET static void KERNEL(qgemm_micro)(
    size_t k4, const uint8_t *const *rows, const int8_t *restrict b, size_t panels, size_t height, int span, int mr, size_t np, int32_t *restrict tile
) {
    (void)panels, (void)height, (void)span, (void)mr, (void)np;
    for (int i = 0; i < QGEMM_MR; i++) {
        int32_t acc[QGEMM_NR] = {0};
        for (size_t g = 0; g < k4; g++) {
            const uint8_t *a = rows[i] + 4 * g;
            const int8_t *bg = b + g * 64;
            for (int j = 0; j < QGEMM_NR; j++)
                acc[j] += a[0] * bg[4 * j] + a[1] * bg[4 * j + 1] + a[2] * bg[4 * j + 2] + a[3] * bg[4 * j + 3];
        }
        memcpy(tile + i * QGEMM_NR, acc, sizeof acc);
    }
}

// The register-only rate of int32 multiply-adds in the vectors the compiler makes of the loop above: 16
// chains of a·x + y, with x made opaque each iteration so that none folds away. Returns the operations done
// (2 a product).
QGEMM_TARGET static double KERNEL(int8_peak_loop)(size_t iterations, int32_t *sink) {
    typedef uint32_t vu __attribute__((vector_size(64)));
    enum { chains = 16 };
    vu acc[chains];
    const vu y = (vu){0} + 1;
    uint32_t multiplier = 3;
    for (int i = 0; i < chains; i++) acc[i] = (vu){0} + (uint32_t)i;
    for (size_t it = 0; it < iterations; it++) {
        __asm__ volatile("" : "+r"(multiplier));
        const vu x = (vu){0} + multiplier;
#pragma clang loop unroll(full)
        for (int i = 0; i < chains; i++) acc[i] = acc[i] * x + y;
    }
    vu total = (vu){0};
    for (int i = 0; i < chains; i++) total += acc[i];
    uint32_t lanes = 0;
    for (int j = 0; j < 16; j++) lanes += total[j];
    *sink = (int32_t)lanes;
    return 2.0 * chains * 16 * (double)iterations;
}
#endif

typedef int32_t KERNEL(vi) __attribute__((vector_size(GEMM_VW * 4), aligned(4)));

// x at 1/inverse per level, clamped to [-levels, levels] (NaN to -levels), rounded to nearest even.
QGEMM_TARGET static inline int8_t KERNEL(quantize_one)(float x, float inverse, float levels) {
    float v = x * inverse;
    v = v >= -levels ? (v <= levels ? v : levels) : -levels;
    return (int8_t)(int32_t)nearbyintf(v);
}

// Weights: rows of `cols` floats to integers in [-levels, levels] with one scale each: q = round(x / s),
// s = max|x| / levels (0 for a zero row), rows padded with zeros to a multiple of 8. Round to nearest even,
// as cvtps does.
QGEMM_TARGET static void KERNEL(quantize_rows)(const float *restrict x, size_t ldx, size_t rows, size_t cols, int8_t *restrict q, size_t ldq, float *restrict scales, float levels) {
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * ldx;
        int8_t *qr = q + r * ldq;
        float largest = 0;
        for (size_t j = 0; j < cols; j++) largest = fmaxf(largest, fabsf(xr[j]));
        float scale = largest / levels, inverse = largest > 0 ? levels / largest : 0.0f;
        scales[r] = scale;
        for (size_t j = 0; j < cols; j++) qr[j] = KERNEL(quantize_one)(xr[j], inverse, levels);
        for (size_t j = cols; j < (cols + 7) / 8 * 8; j++) qr[j] = 0;
    }
}

// Lane by lane, a where `mask` is set, else b. As v < lo ? v : lo (or >) it is one vminps (vmaxps), where
// fminf's rule costs a compare and a blend more; a NaN v is passed over, as by fminf, if lo holds none.
QGEMM_TARGET static inline __attribute__((always_inline)) KERNEL(vf) KERNEL(select)(KERNEL(vi) mask, KERNEL(vf) a, KERNEL(vf) b) {
    return (KERNEL(vf))((mask & (KERNEL(vi))a) | (~mask & (KERNEL(vi))b));
}

// Activations: rows to unsigned integers in [0, L] (L = 255 or 127) with a scale and zero point each,
// x ≈ s·(q − z): s = (max − min) / L over the row and 0 (so 0 is exact), z = round(−min / s),
// q = clamp(round(x / s) + z, 0, L); padded with zeros (B's padding is zero, so padding adds nothing).
QGEMM_TARGET static void KERNEL(quantize_rows_unsigned)(const float *restrict x, size_t ldx, size_t rows, size_t cols, uint8_t *restrict q, size_t ldq, float *restrict scales, int32_t *restrict zero_points, float levels) {
    typedef KERNEL(vf) vf;
    typedef KERNEL(vi) vi;
    typedef uint8_t vb __attribute__((vector_size(GEMM_VW), aligned(1)));
    enum { chains = 4 };  // independent min and max chains: one waits on each compare's latency
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * ldx;
        uint8_t *qr = q + r * ldq;
        vf lo_v[chains] = {{0}}, hi_v[chains] = {{0}};
        size_t j = 0;
        for (; j + chains * GEMM_VW <= cols; j += chains * GEMM_VW)
            for (int c = 0; c < chains; c++) {
                vf v = *(const vf *)(xr + j + c * GEMM_VW);
                lo_v[c] = KERNEL(select)(v < lo_v[c], v, lo_v[c]), hi_v[c] = KERNEL(select)(v > hi_v[c], v, hi_v[c]);
            }
        for (; j + GEMM_VW <= cols; j += GEMM_VW) {
            vf v = *(const vf *)(xr + j);
            lo_v[0] = KERNEL(select)(v < lo_v[0], v, lo_v[0]), hi_v[0] = KERNEL(select)(v > hi_v[0], v, hi_v[0]);
        }
        for (int c = 1; c < chains; c++)
            lo_v[0] = __builtin_elementwise_min(lo_v[0], lo_v[c]), hi_v[0] = __builtin_elementwise_max(hi_v[0], hi_v[c]);
        float lo = __builtin_reduce_min(lo_v[0]), hi = __builtin_reduce_max(hi_v[0]);  // the lanes started at 0, so both include it
        for (size_t t = j; t < cols; t++) lo = fminf(lo, xr[t]), hi = fmaxf(hi, xr[t]);
        float scale = (hi - lo) / levels, inverse = hi > lo ? levels / (hi - lo) : 0.0f;
        float zero = nearbyintf(-lo * inverse);
        scales[r] = scale;
        zero_points[r] = (int32_t)zero;
        for (j = 0; j + GEMM_VW <= cols; j += GEMM_VW) {
            vf v = __builtin_elementwise_roundeven(*(const vf *)(xr + j) * inverse) + zero;
            v = __builtin_elementwise_min(__builtin_elementwise_max(v, (vf){0}), (vf){0} + levels);  // NaN becomes 0
            *(vb *)(qr + j) = __builtin_convertvector(__builtin_convertvector(v, vi), vb);
        }
        for (; j < cols; j++) {
            float v = nearbyintf(xr[j] * inverse) + zero;
            v = v >= 0.0f ? (v <= levels ? v : levels) : 0.0f;
            qr[j] = (uint8_t)(int32_t)v;
        }
        for (j = cols; j < (cols + 7) / 8 * 8; j++) qr[j] = 0;
    }
}

// Rows of a tile's int32 sums into GEMM_VW columns of C: sa·sb·(sum − za·Σqb) (·alpha) + bias, then GELU
// (gelu) or + beta·C (accumulate), which the epilogue never combines. The column vectors stay in registers
// across the rows; a short tail (width < GEMM_VW) goes through `spare`.
QGEMM_TARGET static inline __attribute__((always_inline)) void KERNEL(qgemm_store_vectors)(
    const int32_t *restrict tile, size_t ld_tile, size_t rows, size_t width, float *restrict c, size_t ldc, const float *restrict a_scale,
    const int32_t *restrict a_zero, KERNEL(vf) scale, KERNEL(vi) sum, KERNEL(vf) offset, float alpha, float beta, const int gelu, const int accumulate
) {
#pragma clang fp contract(off)
    typedef KERNEL(vf) vf;
    typedef KERNEL(vi) vi;
    for (size_t r = 0; r < rows; r++) {
        vi corrected = *(const vi *)(tile + r * ld_tile) - a_zero[r] * sum;
        vf value = __builtin_convertvector(corrected, vf) * ((a_scale[r] * alpha) * scale) + offset;
        if (gelu) value = KERNEL(gelu_vector)(value);
        float *restrict cr = c + r * ldc;
        if (width == GEMM_VW) {
            if (accumulate) value = beta * *(const vf *)cr + value;
            *(vf *)cr = value;
        } else {
            float spare[GEMM_VW];
            memcpy(spare, &value, sizeof value);
            for (size_t j = 0; j < width; j++) cr[j] = accumulate ? beta * cr[j] + spare[j] : spare[j];
        }
    }
}

// A tile of int32 sums (rows × cols, cols ≤ QGEMM_PANELS · 16) into C, one column vector at a time. No
// contraction, so every build rounds alike.
QGEMM_TARGET static void KERNEL(qgemm_store)(
    const int32_t *restrict tile, size_t ld_tile, size_t rows, size_t cols, float *restrict c, size_t ldc, const float *restrict a_scale,
    const int32_t *restrict a_zero, const float *restrict b_scale, const int32_t *restrict b_sum, const float *restrict bias, const vitmsn_epilogue *ep
) {
    typedef KERNEL(vf) vf;
    typedef KERNEL(vi) vi;
    const int gelu = ep->activation == VITMSN_GELU, accumulate = ep->beta != 0.0f;
    for (size_t j = 0; j < cols; j += GEMM_VW) {
        const size_t width = cols - j < GEMM_VW ? cols - j : GEMM_VW;
        vf scale, offset = (vf){0};
        vi sum;
        if (width == GEMM_VW) {
            scale = *(const vf *)(b_scale + j), sum = *(const vi *)(b_sum + j);
            if (bias) offset = *(const vf *)(bias + j);
        } else  // lanes past `width` repeat the first, and are not written
            for (size_t l = 0; l < GEMM_VW; l++) {
                const size_t jj = j + (l < width ? l : 0);
                scale[l] = b_scale[jj], sum[l] = b_sum[jj], offset[l] = bias ? bias[jj] : 0.0f;
            }
        const int32_t *t = tile + j;
        float *cj = c + j;
        // constant flags, so that each mode gets a row loop of its own with no branch in it
        if (gelu) KERNEL(qgemm_store_vectors)(t, ld_tile, rows, width, cj, ldc, a_scale, a_zero, scale, sum, offset, ep->alpha, 0, 1, 0);
        else if (accumulate) KERNEL(qgemm_store_vectors)(t, ld_tile, rows, width, cj, ldc, a_scale, a_zero, scale, sum, offset, ep->alpha, ep->beta, 0, 1);
        else KERNEL(qgemm_store_vectors)(t, ld_tile, rows, width, cj, ldc, a_scale, a_zero, scale, sum, offset, ep->alpha, 0, 0, 0);
    }
    if (ep->activation >= 0 && !gelu)
        for (size_t r = 0; r < rows; r++) KERNEL(activate)((vitmsn_activation)ep->activation, c + r * ldc, cols);
}

#ifndef QGEMM_BLOCK_BYTES
// The bytes of packed B that every row block of a call meets before the next panels: a block stays in L2 (with
// A's rows) while the rows go by. Without it a call of many rows (a batch of 8, split by rows) read all of B
// from L3 or memory again for each row block. On an Ice Lake, 384 KB ran ViT-B's batch-8 int8 forward 1.12×
// faster (fastest runs; 1.22× on paired medians) and ViT-S's level; 128 KB to 1 MB all gained, 384 KB most
// on the products alone. A part of a batch-1 call (split by panels) holds less B than this.
#define QGEMM_BLOCK_BYTES (384 * 1024)
#endif

// C[m0..m1, n0..n1) of the int8 product in tiles of mr rows × np panels; n0 a multiple of 16. Panels in blocks
// of QGEMM_BLOCK_BYTES (in L2); within one, rows in blocks of QGEMM_MC (in L1), each meeting every panel of the
// block in turn (np at a time); every sum runs over the whole K in registers.
QGEMM_TARGET static inline __attribute__((always_inline)) void KERNEL(qgemm_tiled)(const vitmsn_qgemm_call *g, const int mr, const size_t np) {
    const size_t k4 = (g->k + 7) / 8 * 2;  // even: the kernels take k-groups in pairs
    const size_t p_begin = g->n0 / QGEMM_NR, p_end = (g->n1 + QGEMM_NR - 1) / QGEMM_NR;
    const size_t fitting = QGEMM_BLOCK_BYTES / (k4 * 64) / np * np, block_panels = fitting > np ? fitting : np;
    const size_t ld_tile = np * QGEMM_NR;
    int32_t tile[QGEMM_TILE_SUMS] __attribute__((aligned(64)));
    const int span = g->a_max * g->b_triple_lane_sum <= 32767 ? 3 : g->a_max * g->b_pair_lane_sum <= 32767 ? 2 : 1;
    for (size_t b0 = p_begin; b0 < p_end; b0 += block_panels) {
        const size_t b1 = p_end - b0 < block_panels ? p_end : b0 + block_panels;
        for (size_t r0 = g->m0; r0 < g->m1; r0 += QGEMM_MC) {
            const size_t r1 = g->m1 - r0 < QGEMM_MC ? g->m1 : r0 + QGEMM_MC;
            for (size_t p = b0; p < b1; p += np) {
                const size_t panels = b1 - p < np ? b1 - p : np;
                const int8_t *panel = g->packed_b + p * k4 * 64;
                size_t c0 = p * QGEMM_NR, cols = (g->n1 < c0 + panels * QGEMM_NR ? g->n1 : c0 + panels * QGEMM_NR) - c0;
                for (size_t t = r0; t < r1; t += (size_t)mr) {
                    size_t height = r1 - t < (size_t)mr ? r1 - t : (size_t)mr;
                    const uint8_t *rows[QGEMM_MR];  // a short last tile repeats its first row, whose sums are dropped
                    for (size_t i = 0; i < (size_t)mr; i++) rows[i] = g->a + (t + (i < height ? i : 0)) * g->lda;
                    float *ct = g->c + t * g->ldc + c0;
                    for (size_t i = 0; i < height; i++) __builtin_prefetch(ct + i * g->ldc, 1, 3);  // C arrives during the sums
                    KERNEL(qgemm_micro)(k4, rows, panel, panels, height, span, mr, np, tile);
                    KERNEL(qgemm_store)(tile, ld_tile, height, cols, ct, g->ldc, g->a_scale + t, g->a_zero + t, g->b_scale + c0, g->b_sum + c0,
                                        g->epilogue.bias ? g->epilogue.bias + c0 : 0, &g->epilogue);
                }
            }
        }
    }
}

QGEMM_TARGET static void KERNEL(qgemm)(const vitmsn_qgemm_call *g) {
#if QGEMM_KIND == 2
    if (qgemm_wide_tile) KERNEL(qgemm_tiled)(g, 8, 3);
    else KERNEL(qgemm_tiled)(g, 12, 2);
#else
    KERNEL(qgemm_tiled)(g, QGEMM_MR, QGEMM_PANELS);
#endif
}

// Inference attention for one (batch, head) on this int8 kernel, as dynamic quantisation treats a Linear: each
// product's right operand is quantised symmetric per output column (a key's hd values for the scores, a head
// channel's S values for the context) and its left one unsigned per row (a query; a row of probabilities).
// The probabilities go in as levels round(255 · exp(s − max)), the largest exactly 255, so a row's resolution
// is 1/255 of its own largest entry; dividing by the levels' sum (and the head mask) joins the row's scale.
#ifndef QATTENTION_ROWS
#define QATTENTION_ROWS 24  // query rows scored at a time (two VNNI tiles): their scores stay in L1

// The scratch of one head, carved from `base` in 64-byte pieces (base 0 only measures); returns its bytes.
typedef struct {
    int8_t *k_row, *k_packed, *v_packed;  // one key quantised; K and V quantised and packed
    float *v_inverse, *k_scale, *v_scale, *q_scale, *scores, *p_scale;
    int32_t *k_sum, *v_sum, *q_zero, *p_zero;
    uint8_t *q_raw, *p_raw;                        // Q's rows, and a block's probability rows, quantised
} qattention_scratch;

static size_t qattention_layout(size_t s, size_t hd, char *base, qattention_scratch *t) {
    const size_t hs = vitmsn_qgemm_row_stride(hd), ss = vitmsn_qgemm_row_stride(s), rows = QATTENTION_ROWS;
    size_t used = 0;
#define QATTENTION_PIECE(field, count) \
    (t->field = (void *)(base ? base + used : 0), used += ((count) * sizeof *t->field + 63) / 64 * 64)
    QATTENTION_PIECE(k_row, hs);
    QATTENTION_PIECE(k_packed, vitmsn_qgemm_packed_bytes(hd, s));
    QATTENTION_PIECE(v_inverse, hd);
    QATTENTION_PIECE(v_packed, vitmsn_qgemm_packed_bytes(s, hd));
    QATTENTION_PIECE(k_scale, s);
    QATTENTION_PIECE(v_scale, hd);
    QATTENTION_PIECE(k_sum, s);
    QATTENTION_PIECE(v_sum, hd);
    QATTENTION_PIECE(q_raw, s * hs);
    QATTENTION_PIECE(q_scale, s);
    QATTENTION_PIECE(q_zero, s);
    QATTENTION_PIECE(scores, rows * s);
    QATTENTION_PIECE(p_raw, rows * ss);
    QATTENTION_PIECE(p_scale, rows);
    QATTENTION_PIECE(p_zero, rows);
#undef QATTENTION_PIECE
    return used;
}
#endif

// Symmetric quantisation of a vector of floats at 1/inverse per level, clamped to ±levels (NaN to -levels).
QGEMM_TARGET static inline KERNEL(vi) KERNEL(qattention_round)(KERNEL(vf) x, KERNEL(vf) inverse, float levels) {
    typedef KERNEL(vf) vf;
    vf v = __builtin_elementwise_roundeven(x * inverse);
    v = __builtin_elementwise_min(__builtin_elementwise_max(v, (vf){0} - levels), (vf){0} + levels);
    return __builtin_convertvector(v, KERNEL(vi));
}

// K (S rows of hd, ld apart) as the scores' right operand: a scale per key (its largest |value| / levels),
// straight into vitmsn_qgemm_pack_b's layout ([key/16][dim/4][key%16][4]), and each key's Σq.
QGEMM_TARGET static void KERNEL(qattention_pack_keys)(
    const float *k, size_t ld, size_t s, size_t hd, float levels, int8_t *packed, float *scales, int32_t *sums, int8_t *row
) {
    typedef KERNEL(vf) vf;
    const size_t k4 = vitmsn_qgemm_row_stride(hd) / 4;
    memset(packed, 0, vitmsn_qgemm_packed_bytes(hd, s));
    memset(row, 0, 4 * k4);
    for (size_t j = 0; j < s; j++) {
        const float *x = k + j * ld;
        vf largest_v = (vf){0};
        size_t d = 0;
        for (; d + GEMM_VW <= hd; d += GEMM_VW) largest_v = __builtin_elementwise_max(largest_v, __builtin_elementwise_abs(*(const vf *)(x + d)));
        float largest = __builtin_reduce_max(largest_v);
        for (; d < hd; d++) largest = fmaxf(largest, fabsf(x[d]));
        const float inverse = largest > 0 ? levels / largest : 0.0f;
        scales[j] = largest / levels;
        KERNEL(vi) total_v = (KERNEL(vi)){0};
        for (d = 0; d + GEMM_VW <= hd; d += GEMM_VW) {
            KERNEL(vi) q = KERNEL(qattention_round)(*(const vf *)(x + d), (vf){0} + inverse, levels);
            total_v += q;
            typedef int8_t vb __attribute__((vector_size(GEMM_VW), aligned(1)));
            *(vb *)(row + d) = __builtin_convertvector(q, vb);
        }
        int32_t total = __builtin_reduce_add(total_v);
        for (; d < hd; d++) row[d] = KERNEL(quantize_one)(x[d], inverse, levels), total += row[d];
        sums[j] = total;
        int8_t *column = packed + j / 16 * k4 * 64 + j % 16 * 4;
        for (size_t g = 0; g < k4; g++) memcpy(column + g * 64, row + 4 * g, 4);
    }
}

// V (S rows of hd, ld apart) as the context's right operand: a scale per channel (its largest |value| over the
// keys / levels), straight into the packed layout ([channel/16][key/4][channel%16][4]), and each channel's Σq.
QGEMM_TARGET static void KERNEL(qattention_pack_values)(
    const float *v, size_t ld, size_t s, size_t hd, float levels, int8_t *packed, float *scales, int32_t *sums, float *inverse
) {
    typedef KERNEL(vf) vf;
    const size_t k4 = vitmsn_qgemm_row_stride(s) / 4;
    memset(packed, 0, vitmsn_qgemm_packed_bytes(s, hd));
    for (size_t d = 0; d < hd; d++) inverse[d] = 0, sums[d] = 0;
    for (size_t j = 0; j < s; j++) {  // each channel's largest |value| into `inverse`, for now
        const float *x = v + j * ld;
        size_t d = 0;
        for (; d + GEMM_VW <= hd; d += GEMM_VW)
            *(vf *)(inverse + d) = __builtin_elementwise_max(*(vf *)(inverse + d), __builtin_elementwise_abs(*(const vf *)(x + d)));
        for (; d < hd; d++) inverse[d] = fmaxf(inverse[d], fabsf(x[d]));
    }
    for (size_t d = 0; d < hd; d++) scales[d] = inverse[d] / levels, inverse[d] = inverse[d] > 0 ? levels / inverse[d] : 0.0f;
    // Four keys' bytes of a channel make one int32 lane of the packed row, so GEMM_VW channels of four keys
    // are one vector store.
    const size_t vector_end = hd / GEMM_VW * GEMM_VW;
    for (size_t j0 = 0; j0 < s; j0 += 4) {
        for (size_t d = 0; d < vector_end; d += GEMM_VW) {
            KERNEL(vi) word = (KERNEL(vi)){0};
            for (size_t jj = 0; jj < 4 && j0 + jj < s; jj++) {
                KERNEL(vi) q = KERNEL(qattention_round)(*(const vf *)(v + (j0 + jj) * ld + d), *(const vf *)(inverse + d), levels);
                *(KERNEL(vi) *)(sums + d) += q;
                word |= (q & 0xff) << (int32_t)(8 * jj);
            }
            memcpy(packed + d / 16 * k4 * 64 + j0 / 4 * 64 + d % 16 * 4, &word, sizeof word);
        }
        for (size_t jj = 0; jj < 4 && j0 + jj < s; jj++)
            for (size_t d = vector_end; d < hd; d++) {
                const int8_t q = KERNEL(quantize_one)(v[(j0 + jj) * ld + d], inverse[d], levels);
                packed[d / 16 * k4 * 64 + j0 / 4 * 64 + d % 16 * 4 + jj] = q, sums[d] += q;
            }
    }
}

// A row of scores to the levels round(255 · exp(score − its maximum)) (the maximum, exactly 1, is 255), as
// unsigned bytes zero-padded to `padded`; returns their sum, by which the context is divided, so that each
// row's quantised probabilities still sum to 1. The exponentials are left in `scores`.
QGEMM_TARGET static int32_t KERNEL(qattention_probabilities)(float *restrict scores, size_t s, size_t padded, uint8_t *restrict q) {
    float maximum = -INFINITY;
    KERNEL(exp_below_maximum)(scores, s, &maximum);
    int32_t total = 0;
    for (size_t j = 0; j < s; j++) {
        q[j] = (uint8_t)(int32_t)__builtin_roundevenf(scores[j] * 255.0f);
        total += q[j];
    }
    for (size_t j = s; j < padded; j++) q[j] = 0;
    return total;
}

QGEMM_TARGET static void KERNEL(qattention_head)(
    const float *restrict q, const float *restrict k, const float *restrict v, float *restrict out, size_t ld,
    size_t s, size_t hd, float scale, float mask, void *scratch
) {
    const float levels = QGEMM_KIND == 1 ? 63.0f : 127.0f;  // AVX2's 7-bit weights (see the top of this file)
    const size_t hs = vitmsn_qgemm_row_stride(hd), ss = vitmsn_qgemm_row_stride(s);
    qattention_scratch t;
    qattention_layout(s, hd, scratch, &t);
    KERNEL(qattention_pack_keys)(k, ld, s, hd, levels, t.k_packed, t.k_scale, t.k_sum, t.k_row);
    KERNEL(qattention_pack_values)(v, ld, s, hd, levels, t.v_packed, t.v_scale, t.v_sum, t.v_inverse);
    // AVX2 adds k-groups in int16 only as far as the lanes allow: unfitted 7-bit values, so at most 6·63 a lane
    const int lanes[2] = {QGEMM_KIND == 1 ? 4 * 63 : 0, QGEMM_KIND == 1 ? 6 * 63 : 0};
    KERNEL(quantize_rows_unsigned)(q, ld, s, hd, t.q_raw, hs, t.q_scale, t.q_zero, 255.0f);
    vitmsn_qgemm_call scored = {
        .m = s, .n = s, .k = hd, .a = t.q_raw, .lda = hs, .a_scale = t.q_scale, .a_zero = t.q_zero, .a_max = 255,
        .packed_b = (const signed char *)t.k_packed, .b_scale = t.k_scale, .b_sum = t.k_sum, .b_max = (int)levels,
        .b_pair_lane_sum = lanes[0], .b_triple_lane_sum = lanes[1], .ldc = s, .epilogue = {scale, 0.0f, 0, -1}, .n0 = 0, .n1 = s};
    vitmsn_qgemm_call context = {
        .n = hd, .k = s, .a = t.p_raw, .lda = ss, .a_scale = t.p_scale, .a_zero = t.p_zero, .a_max = 255,
        .packed_b = (const signed char *)t.v_packed, .b_scale = t.v_scale, .b_sum = t.v_sum, .b_max = (int)levels,
        .b_pair_lane_sum = lanes[0], .b_triple_lane_sum = lanes[1], .ldc = ld, .epilogue = {1.0f, 0.0f, 0, -1}, .n0 = 0, .n1 = hd};
    memset(t.p_zero, 0, QATTENTION_ROWS * sizeof *t.p_zero);
    for (size_t r0 = 0; r0 < s; r0 += QATTENTION_ROWS) {
        const size_t height = s - r0 < QATTENTION_ROWS ? s - r0 : QATTENTION_ROWS;
        // scores (height, S) = scale · Q_rows Kᵀ, written from row 0 of the block
        scored.c = t.scores - r0 * s, scored.m0 = r0, scored.m1 = r0 + height;
        KERNEL(qgemm)(&scored);
        for (size_t i = 0; i < height; i++)
            t.p_scale[i] = mask / (float)KERNEL(qattention_probabilities)(t.scores + i * s, s, ss, t.p_raw + i * ss);
        // context (height, hd) = P V
        context.m = height, context.m0 = 0, context.m1 = height, context.c = out + r0 * ld;
        KERNEL(qgemm)(&context);
    }
}
#undef QGEMM_MR
#undef QGEMM_PANELS
#undef QGEMM_TILE_SUMS
#undef QGEMM_MC
