// Inference attention for one (batch, head), included once per instruction set after gemm_body.h, whose
// packing and register tile it runs: context = mask · softmax(scale · Q Kᵀ) V, Q, K, V and the context
// being column slices of (S, ld) token rows. Kᵀ and V are packed once; then each tile of GEMM_MR queries
// has its scores, softmax and context computed while its MR × S scores stay in L1, instead of S-row
// blocks going through L2 between three passes. Every sum runs in the order the separate GEMM calls run
// it, so the result is theirs bit for bit.

static size_t KERNEL(attention_padded)(size_t n) { return (n + GEMM_NR - 1) / GEMM_NR * GEMM_NR; }

static size_t KERNEL(attention_scratch_count)(size_t s, size_t hd) {
    return hd * KERNEL(attention_padded)(s) + s * KERNEL(attention_padded)(hd) + GEMM_MR * (KERNEL(attention_padded)(s) + hd);
}

// Query rows are read in place (packing them into a k-major sliver, or the probabilities likewise, measured
// slower: the scalar transposes cost more than the kernel's address arithmetic saves).
KERNEL_TARGET static void KERNEL(attention_head)(
    const float *restrict q, const float *restrict k, const float *restrict v, float *restrict out, size_t ld,
    size_t s, size_t hd, float scale, float mask, float *restrict scratch
) {
    const size_t s_pad = KERNEL(attention_padded)(s), hd_pad = KERNEL(attention_padded)(hd);
    float *restrict keys = scratch;                     // Kᵀ (hd × S) in NR-key panels, one K block (hd ≤ GEMM_KC)
    float *restrict values = keys + hd * s_pad;         // V (S × hd) in NR-column panels, K blocks of S
    float *restrict scores = values + s * hd_pad;       // MR rows of S scores, then probabilities
    float *restrict ragged = scores + GEMM_MR * s_pad;  // a last tile's query rows, zero-padded to MR
    KERNEL(gemm_pack_b)(k, ld, 1, hd, s, 0, s_pad / GEMM_NR, keys);
    KERNEL(gemm_pack_b)(v, ld, 0, s, hd, 0, hd_pad / GEMM_NR, values);
    const size_t kc = KERNEL(gemm_k_block)(s);
    const vitmsn_epilogue plain = {1.0f, 0.0f, 0, -1};
    float tile[GEMM_MR * GEMM_NR] __attribute__((aligned(64)));
    for (size_t r0 = 0; r0 < s; r0 += GEMM_MR) {
        const size_t height = s - r0 < GEMM_MR ? s - r0 : GEMM_MR;
        const float *rows = q + r0 * ld;
        size_t rs = ld;
        if (height < GEMM_MR) {  // rows past S are not read: the tile's missing ones are zeros
            for (size_t i = 0; i < GEMM_MR; i++)
                for (size_t d = 0; d < hd; d++) ragged[i * hd + d] = i < height ? rows[i * ld + d] : 0.0f;
            rows = ragged, rs = hd;
        }
        // scores (MR, S) = scale · Q_tile Kᵀ, whole panels (keys past S score 0 and are ignored)
        for (size_t p = 0; p < s_pad / GEMM_NR; p++)
            KERNEL(gemm_micro)(hd, rows, rs, 1, keys + p * hd * GEMM_NR, scores + p * GEMM_NR, s_pad, 1, scale, 0, 1, 0, tile);
        for (size_t i = 0; i < height; i++) {
            float *row = scores + i * s_pad, maximum = -INFINITY;
            float inverse = 1.0f / KERNEL(exp_below_maximum)(row, s, &maximum);
            for (size_t j = 0; j < s; j++) row[j] *= inverse;
            if (mask != 1.0f) for (size_t j = 0; j < s; j++) row[j] *= mask;
        }
        // context (height, hd) = P V, K blocks of S in order
        for (size_t p = 0; p < hd_pad / GEMM_NR; p++) {
            const size_t c0 = p * GEMM_NR, cols = hd - c0 < GEMM_NR ? hd - c0 : GEMM_NR;
            float *ct = out + r0 * ld + c0;
            const int direct = height == GEMM_MR && cols == GEMM_NR;
            for (size_t k0 = 0; k0 < s; k0 += kc) {
                const size_t kcb = s - k0 < kc ? s - k0 : kc;
                KERNEL(gemm_micro)(kcb, scores + k0, s_pad, 1, values + k0 * hd_pad + p * kcb * GEMM_NR, ct, ld, direct, 1.0f, 0, k0 == 0, 0, tile);
                if (!direct) KERNEL(gemm_merge)(tile, ct, ld, height, cols, &plain, 0, k0 == 0, k0 + kcb == s);
            }
        }
    }
}
