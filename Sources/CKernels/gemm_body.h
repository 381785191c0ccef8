// The GEMM's bodies, included once per instruction set by gemm.c with KERNEL_TARGET, KERNEL(name),
// GEMM_VW (floats per vector), GEMM_MR × GEMM_NR (the register tile), GEMM_KC (the K block) and
// GEMM_K_UNROLL (the micro-kernel's k unrolling) defined.
//
// BLIS's loop structure: B is packed in K blocks of panels GEMM_NR columns wide (weights once, at load),
// A is packed per (row block, K block) into slivers GEMM_MR rows high, and the micro-kernel multiplies one
// sliver by one panel in registers. Every element of C sums its K block in k order in one accumulator and
// the K blocks in order, whatever part of C a call computes: results do not depend on the thread split.

#define GEMM_NV (GEMM_NR / GEMM_VW)

// Σ_k op(A)(i, k) · b[k][0..NR) for the MR rows of one tile, op(A)(i, k) = a[i·rs + k·ks] (a packed sliver,
// or A's rows read in place), into registers. A whole tile with a plain start (no beta) goes straight to C
// (first K block: alpha·acc + bias; later: C += alpha·acc; then GELU on the last block when `gelu`); any
// other goes to `tile` for gemm_merge.
__attribute__((always_inline)) KERNEL_TARGET static inline void KERNEL(gemm_micro)(
    size_t kc, const float *restrict a, size_t rs, size_t ks, const float *restrict b,
    float *restrict c, size_t ldc, int direct, float alpha, const float *restrict bias, int first, int gelu, float *restrict tile
) {
#pragma clang fp contract(fast)
    typedef KERNEL(vf) vf;
    vf acc[GEMM_MR][GEMM_NV];
#pragma clang loop unroll(full)
    for (int i = 0; i < GEMM_MR; i++)
#pragma clang loop unroll(full)
        for (int j = 0; j < GEMM_NV; j++) acc[i][j] = (vf){0};
#pragma clang loop unroll_count(GEMM_K_UNROLL)
    for (size_t k = 0; k < kc; k++) {
        vf bv[GEMM_NV];
#pragma clang loop unroll(full)
        for (int j = 0; j < GEMM_NV; j++) bv[j] = *(const vf *)(b + k * GEMM_NR + j * GEMM_VW);
#pragma clang loop unroll(full)
        for (int i = 0; i < GEMM_MR; i++) {
            float ai = a[i * rs + k * ks];
#pragma clang loop unroll(full)
            for (int j = 0; j < GEMM_NV; j++) acc[i][j] += ai * bv[j];
        }
    }
    if (!direct) {
#pragma clang loop unroll(full)
        for (int i = 0; i < GEMM_MR; i++)
#pragma clang loop unroll(full)
            for (int j = 0; j < GEMM_NV; j++) *(vf *)(tile + i * GEMM_NR + j * GEMM_VW) = acc[i][j];
        return;
    }
#pragma clang loop unroll(full)
    for (int i = 0; i < GEMM_MR; i++)
#pragma clang loop unroll(full)
        for (int j = 0; j < GEMM_NV; j++) {
            vf *cv = (vf *)(c + i * ldc + j * GEMM_VW);
            vf value = !first ? *cv + alpha * acc[i][j] : bias ? alpha * acc[i][j] + *(const vf *)(bias + j * GEMM_VW) : alpha * acc[i][j];
            *cv = gelu ? KERNEL(gelu_vector)(value) : value;
        }
}

// Writes a tile's `rows` × `cols` into C. The first K block starts C (alpha·acc + bias, plus beta·C when
// beta ≠ 0), later ones add alpha·acc, and the last applies the activation while the rows are in cache.
KERNEL_TARGET static void KERNEL(gemm_merge)(
    const float *restrict tile, float *restrict c, size_t ldc, size_t rows, size_t cols,
    const vitmsn_epilogue *ep, const float *bias, int first, int last
) {
#pragma clang fp contract(fast)
    const float alpha = ep->alpha, beta = ep->beta;
    for (size_t r = 0; r < rows; r++) {
        const float *restrict t = tile + r * GEMM_NR;
        float *restrict cr = c + r * ldc;
        if (!first) {
            for (size_t j = 0; j < cols; j++) cr[j] += alpha * t[j];
        } else if (beta == 0.0f) {
            if (bias) for (size_t j = 0; j < cols; j++) cr[j] = alpha * t[j] + bias[j];
            else for (size_t j = 0; j < cols; j++) cr[j] = alpha * t[j];
        } else {
            if (bias) for (size_t j = 0; j < cols; j++) cr[j] = beta * cr[j] + (alpha * t[j] + bias[j]);
            else for (size_t j = 0; j < cols; j++) cr[j] = beta * cr[j] + alpha * t[j];
        }
        if (last && ep->activation >= 0) KERNEL(activate)((vitmsn_activation)ep->activation, cr, cols);
    }
}

// Rows [r0, r0 + rows) × columns [k0, k0 + kc) of op(A) into slivers of MR rows (k-major), zero-padded.
KERNEL_TARGET static void KERNEL(gemm_pack_a)(
    const float *restrict a, size_t lda, int transposed, size_t r0, size_t rows, size_t k0, size_t kc, float *restrict out
) {
    size_t padded = (rows + GEMM_MR - 1) / GEMM_MR * GEMM_MR;
    if (transposed) {  // op(A)(r, k) = a[k·lda + r]: each k is a contiguous run of rows, spread over the slivers
        for (size_t k = 0; k < kc; k++) {
            const float *src = a + (k0 + k) * lda + r0;
            size_t t = 0;
            for (; t + GEMM_MR <= rows; t += GEMM_MR) {
                float *restrict dst = out + t * kc + k * GEMM_MR;
#pragma clang loop unroll(full)
                for (int i = 0; i < GEMM_MR; i++) dst[i] = src[t + i];
            }
            for (; t < padded; t += GEMM_MR) {
                float *restrict dst = out + t * kc + k * GEMM_MR;
                for (size_t i = 0; i < GEMM_MR; i++) dst[i] = t + i < rows ? src[t + i] : 0.0f;
            }
        }
        return;
    }
    for (size_t t = 0; t < padded; t += GEMM_MR) {
        float *restrict sliver = out + t * kc;
        for (size_t i = 0; i < GEMM_MR; i++) {
            if (t + i < rows) {
                const float *src = a + (r0 + t + i) * lda + k0;
                for (size_t k = 0; k < kc; k++) sliver[k * GEMM_MR + i] = src[k];
            } else {
                for (size_t k = 0; k < kc; k++) sliver[k * GEMM_MR + i] = 0.0f;
            }
        }
    }
}

// The K blocking, a function of K alone: blocks of `*kc` (a multiple of 4, at most GEMM_KC), the last shorter.
static inline size_t KERNEL(gemm_k_block)(size_t k) {
    size_t blocks = (k + GEMM_KC - 1) / GEMM_KC;
    if (blocks == 0) return 4;
    size_t kc = (k + blocks - 1) / blocks;
    return (kc + 3) & ~(size_t)3;
}

static size_t KERNEL(gemm_packed_count)(size_t k, size_t n) {
    return k * ((n + GEMM_NR - 1) / GEMM_NR) * GEMM_NR;
}

// op(B) (K × N) into K blocks of NR-wide panels; op(B)(k, n) = transposed ? b[n·ldb + k] : b[k·ldb + n].
// Panels [p0, p1) only, so that packing can be split across threads.
KERNEL_TARGET static void KERNEL(gemm_pack_b)(
    const float *restrict b, size_t ldb, int transposed, size_t k, size_t n, size_t p0, size_t p1, float *restrict out
) {
    size_t kc = KERNEL(gemm_k_block)(k);
    size_t padded = ((n + GEMM_NR - 1) / GEMM_NR) * GEMM_NR;
    for (size_t k0 = 0; k0 < k; k0 += kc) {
        size_t kcb = k - k0 < kc ? k - k0 : kc;
        for (size_t p = p0; p < p1; p++) {
            float *restrict panel = out + k0 * padded + p * kcb * GEMM_NR;
            size_t width = n - p * GEMM_NR < GEMM_NR ? n - p * GEMM_NR : GEMM_NR;
            if (transposed) {
                for (size_t j = 0; j < GEMM_NR; j++) {
                    if (j < width) {
                        const float *src = b + (p * GEMM_NR + j) * ldb + k0;
                        for (size_t kk = 0; kk < kcb; kk++) panel[kk * GEMM_NR + j] = src[kk];
                    } else {
                        for (size_t kk = 0; kk < kcb; kk++) panel[kk * GEMM_NR + j] = 0.0f;
                    }
                }
            } else {
                for (size_t kk = 0; kk < kcb; kk++) {
                    const float *src = b + (k0 + kk) * ldb + p * GEMM_NR;
                    if (width == GEMM_NR) {  // whole vectors (a loop of `width` would become a memcpy call)
                        typedef KERNEL(vf) vf;
#pragma clang loop unroll(full)
                        for (int j = 0; j < GEMM_NV; j++) *(vf *)(panel + kk * GEMM_NR + j * GEMM_VW) = *(const vf *)(src + j * GEMM_VW);
                        continue;
                    }
                    for (size_t j = 0; j < width; j++) panel[kk * GEMM_NR + j] = src[j];
                    for (size_t j = width; j < GEMM_NR; j++) panel[kk * GEMM_NR + j] = 0.0f;
                }
            }
        }
    }
}

// C[m0..m1, n0..n1) of C = epilogue(op(A) · B), B packed by gemm_pack_b; n0 a multiple of NR.
// `scratch` holds GEMM_MC · GEMM_KC floats.
KERNEL_TARGET static void KERNEL(gemm_packed)(const vitmsn_gemm_call *g, float *restrict scratch) {
    const size_t k = g->k, n = g->n;
    const size_t kc = KERNEL(gemm_k_block)(k);
    const size_t padded = ((n + GEMM_NR - 1) / GEMM_NR) * GEMM_NR;
    const size_t p_begin = g->n0 / GEMM_NR, p_end = (g->n1 + GEMM_NR - 1) / GEMM_NR;
    const size_t panels_per_chunk = GEMM_NC / GEMM_NR;
    float tile[GEMM_MR * GEMM_NR] __attribute__((aligned(64)));
    for (size_t pc = p_begin; pc < p_end; pc += panels_per_chunk) {
        size_t pc_end = pc + panels_per_chunk < p_end ? pc + panels_per_chunk : p_end;
        for (size_t k0 = 0; k0 < k; k0 += kc) {
            size_t kcb = k - k0 < kc ? k - k0 : kc;
            int first = k0 == 0, last = k0 + kcb == k;
            for (size_t r0 = g->m0; r0 < g->m1; r0 += GEMM_MC) {
                size_t rows = g->m1 - r0 < GEMM_MC ? g->m1 - r0 : GEMM_MC;
                // A's rows are read in place; a transposed A and a ragged last tile are packed.
                int in_place = !g->transpose_a;
                size_t whole = in_place ? rows / GEMM_MR * GEMM_MR : 0;
                if (whole < rows) KERNEL(gemm_pack_a)(g->a, g->lda, g->transpose_a, r0 + whole, rows - whole, k0, kcb, scratch);
                for (size_t p = pc; p < pc_end; p++) {
                    const float *panel = g->packed_b + k0 * padded + p * kcb * GEMM_NR;
                    size_t c0 = p * GEMM_NR;
                    size_t cols = (g->n1 < c0 + GEMM_NR ? g->n1 : c0 + GEMM_NR) - c0;
                    const float *bias = g->epilogue.bias ? g->epilogue.bias + c0 : 0;
                    for (size_t t = 0; t < rows; t += GEMM_MR) {
                        size_t height = rows - t < GEMM_MR ? rows - t : GEMM_MR;
                        float *ct = g->c + (r0 + t) * g->ldc + c0;
                        for (size_t i = 0; i < height; i++) {  // C's rows arrive while the tile is computed
                            __builtin_prefetch(ct + i * g->ldc, 1, 3);
                            __builtin_prefetch(ct + i * g->ldc + cols - 1, 1, 3);
                        }
                        int direct = height == GEMM_MR && cols == GEMM_NR && !(first && g->epilogue.beta != 0.0f);
                        int gelu = direct && last && g->epilogue.activation == VITMSN_GELU;
                        if (t < whole) {
                            KERNEL(gemm_micro)(kcb, g->a + (r0 + t) * g->lda + k0, g->lda, 1, panel, ct, g->ldc, direct,
                                               g->epilogue.alpha, bias, first, gelu, tile);
                        } else {
                            KERNEL(gemm_micro)(kcb, scratch + (t - whole) * kcb, 1, GEMM_MR, panel, ct, g->ldc, direct,
                                               g->epilogue.alpha, bias, first, gelu, tile);
                        }
                        if (!direct) {
                            KERNEL(gemm_merge)(tile, ct, g->ldc, height, cols, &g->epilogue, bias, first, last);
                        } else if (last && g->epilogue.activation >= 0 && !gelu) {
                            for (size_t i = 0; i < GEMM_MR; i++) KERNEL(activate)((vitmsn_activation)g->epilogue.activation, ct + i * g->ldc, cols);
                        }
                    }
                }
            }
        }
    }
}

#undef GEMM_NV

// Twelve independent FMA chains in registers, no memory traffic: the peak rate of one core, for reporting
// the GEMM's share of it. Returns the floating-point operations done; *sink keeps the work observable.
KERNEL_TARGET static double KERNEL(fma_peak_loop)(size_t iterations, float *sink) {
#pragma clang fp contract(fast)
    typedef KERNEL(vf) vf;
    vf acc[12];
    const vf x = (vf){0} + 0.999999f, y = (vf){0} + 1e-7f;
#pragma clang loop unroll(full)
    for (int i = 0; i < 12; i++) acc[i] = (vf){0} + (float)i;
    for (size_t it = 0; it < iterations; it++) {
#pragma clang loop unroll(full)
        for (int i = 0; i < 12; i++) acc[i] = acc[i] * x + y;
    }
    vf total = (vf){0};
    for (int i = 0; i < 12; i++) total += acc[i];
    *sink = total[0];
    return 2.0 * 12 * GEMM_VW * (double)iterations;
}
