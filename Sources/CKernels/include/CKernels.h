#ifndef VITMSN_CKERNELS_H
#define VITMSN_CKERNELS_H

#include <stddef.h>

/// Activations by Transformers' ACT2FN name.
typedef enum {
    VITMSN_GELU = 0,        // 0.5·x·(1 + erf(x/√2)), exact form
    VITMSN_GELU_TANH = 1,   // gelu_new / gelu_pytorch_tanh
    VITMSN_QUICK_GELU = 2,  // x·σ(1.702·x)
    VITMSN_RELU = 3,
    VITMSN_SILU = 4,        // x·σ(x)
} vitmsn_activation;

/// Applies an activation to n floats in place.
void vitmsn_activate(vitmsn_activation kind, float *x, size_t n);

/// grad[i] *= act'(x[i]): the activation's backward, given its input.
void vitmsn_activation_backward(vitmsn_activation kind, const float *x, float *grad, size_t n);

/// Softmax over each row of `cols` floats, in place (row maximum subtracted first).
void vitmsn_softmax_rows(float *x, size_t rows, size_t cols);

/// Inference attention for one (batch, head): out = mask · softmax(scale · q kᵀ) v, where q, k, v and out
/// are S rows of hd floats, ld floats apart (a head's columns of token rows). `scratch` holds
/// vitmsn_attention_scratch_count(S, hd) floats, which is 0 where the kernel does not run: hd 0 or above 384
/// (it then returns -1 and computes nothing).
size_t vitmsn_attention_scratch_count(size_t s, size_t hd);
int vitmsn_attention_head(const float *q, const float *k, const float *v, float *out, size_t ld, size_t s, size_t hd, float scale, float mask, float *scratch);

/// The same attention on the int8 kernel (vitmsn_qgemm), as dynamic quantisation runs a Linear: K per key
/// and V per channel symmetric, Q per row unsigned with a zero point, and each row of probabilities as levels
/// round(255 · exp(s − max)) divided by their sum; the sums exact in int32, the exponentials in float.
/// `scratch` holds vitmsn_attention_int8_scratch_bytes(S, hd) bytes. Returns -1 for hd 0.
size_t vitmsn_attention_int8_scratch_bytes(size_t s, size_t hd);
int vitmsn_attention_head_int8(const float *q, const float *k, const float *v, float *out, size_t ld, size_t s, size_t hd, float scale, float mask, void *scratch);

/// One key block of an online softmax: rows' running maximum and sum updated with the block's scores, the
/// scores replaced by exp(s − new maximum), rescale[r] = exp(old − new maximum) (0 when `first`).
void vitmsn_online_softmax(float *x, size_t rows, size_t cols, float *row_max, float *row_sum, float *rescale, int first);

/// y[i] = e^x[i] (relative error < 2e-7 on [-87, 88]) and y[i] = erf(x[i]) (absolute error < 6e-7).
void vitmsn_exp(const float *x, float *y, size_t n);
void vitmsn_erf(const float *x, float *y, size_t n);

/// What the GEMM does with each finished element: C = act(alpha·(A·B) + bias[col]) + beta·C, where the
/// activation (a vitmsn_activation, or -1 for none) needs beta = 0.
typedef struct {
    float alpha;
    float beta;
    const float *bias;  // N floats, or NULL
    int activation;
} vitmsn_epilogue;

/// One GEMM over the block rows [m0, m1) × columns [n0, n1) of C (M × N), with op(A) M × K
/// (op(A)(r, k) = transpose_a ? a[k·lda + r] : a[r·lda + k]) and B packed by vitmsn_gemm_pack_b.
/// n0 must be a multiple of vitmsn_gemm_panel_width(). Results do not depend on the block split.
typedef struct {
    size_t m, n, k;
    const float *a;
    size_t lda;
    int transpose_a;
    const float *packed_b;
    float *c;
    size_t ldc;
    vitmsn_epilogue epilogue;
    size_t m0, m1, n0, n1;
} vitmsn_gemm_call;

/// Columns per packed panel and rows per register tile of the dispatched GEMM kernel.
size_t vitmsn_gemm_panel_width(void);
size_t vitmsn_gemm_row_tile(void);

/// Floats that op(B) (K × N) takes packed.
size_t vitmsn_gemm_packed_count(size_t k, size_t n);

/// Packs panels [p0, p1) of op(B) (K × N; op(B)(k, n) = transposed ? b[n·ldb + k] : b[k·ldb + n]).
void vitmsn_gemm_pack_b(const float *b, size_t ldb, int transposed, size_t k, size_t n, size_t p0, size_t p1, float *packed);

/// How many parts a call is split into for `threads` threads (1 for small products), and part `part` of
/// `parts`: by rows when op(A) has more rows than B has columns, else by B's panels (a batch of one image),
/// so that no thread re-reads the larger operand.
size_t vitmsn_gemm_parts(const vitmsn_gemm_call *call, size_t threads);
vitmsn_gemm_call vitmsn_gemm_part(const vitmsn_gemm_call *call, size_t part, size_t parts);

/// Runs one call; returns 0, or -1 for arguments out of range, -2 when scratch memory is short.
int vitmsn_gemm_packed(const vitmsn_gemm_call *call);

/// The FMA peak in GFLOP/s of `threads` threads at once: register-only FMA chains at the dispatched vector
/// width, `iterations` of twelve FMAs on each thread (4·10⁷ take about 0.1 s), the best of five rounds.
double vitmsn_fma_peak_gflops(int threads, size_t iterations);

/// The int8 kernel's peak in G operations/s (2 a product) of `threads` threads at once: register-only chains
/// of its own instructions (AVX2: vpmaddubsw, vpmaddwd and vpaddd at 8-bit activations; VNNI: vpdpbusd),
/// `iterations` of one step of every chain on each thread (2·10⁷ take about 0.1 s), the best of five rounds.
double vitmsn_int8_peak_gops(int threads, size_t iterations);

/// One chunk of a parallel job.
typedef void (*vitmsn_task)(void *context, size_t chunk);

/// Runs task(context, c) for every c in [0, chunks) on the calling thread and the pool's workers (started
/// on first use, they spin for 0.2 ms after each job before sleeping), at most `threads` threads in all,
/// each taking the next chunk as it comes free; returns once all are done. Returns -1 without running
/// anything when called from inside a job or while another thread's job runs (the caller then runs the
/// chunks another way).
int vitmsn_parallel_run(size_t chunks, size_t threads, vitmsn_task task, void *context);

/// With glibc, keeps freed large blocks in the heap instead of unmapping them (no-op elsewhere).
void vitmsn_keep_freed_memory(void);

/// The instruction set the kernels were dispatched to on this CPU: "avx512", "avx2+fma" or "generic".
const char *vitmsn_kernel_isa(void);

/// The int8 product C (M × N) = epilogue(a_scale[r] · b_scale[c] · Σ_k (A(r, k) − a_zero[r]) · B(k, c)) over
/// the block [m0, m1) × [n0, n1) (n0 a multiple of 16): A's rows from vitmsn_quantize_activations (lda a
/// multiple of 4, at least vitmsn_qgemm_row_stride(K)) with the largest value they may hold in a_max (at most
/// 255), B packed by vitmsn_qgemm_pack_b with its column sums b_sum, the largest |B| of the matrix in b_max
/// (at most 127) and its vitmsn_qgemm_lane_sum over two and three groups in b_pair_lane_sum and
/// b_triple_lane_sum. AVX2 needs 2·a_max·b_max ≤ 32767 (an int16 pair; vitmsn_qgemm_activation_levels keeps
/// to it), and adds three k-groups' pairs in int16 where a_max·b_triple_lane_sum ≤ 32767, else two where
/// a_max·b_pair_lane_sum ≤ 32767.
/// The sums are exact in int32, so results depend neither on the block split nor on the instruction set.
typedef struct {
    size_t m, n, k;
    const unsigned char *a;
    size_t lda;
    const float *a_scale;
    const int *a_zero;
    int a_max;
    const signed char *packed_b;
    const float *b_scale;
    const int *b_sum;
    int b_max;
    int b_pair_lane_sum, b_triple_lane_sum;
    float *c;
    size_t ldc;
    vitmsn_epilogue epilogue;
    size_t m0, m1, n0, n1;
} vitmsn_qgemm_call;

/// Bytes per quantised row of K values: K rounded up to a multiple of 8 (the kernels take k in pairs of 4).
size_t vitmsn_qgemm_row_stride(size_t k);

/// Weights: symmetric rows of `bits` bits (7 or 8), q[r][j] = round(x[r][j] / s[r]) in [-L, L] with L = 63 or
/// 127, s[r] = max_j |x[r][j]| / L, each row zero-padded to vitmsn_qgemm_row_stride(cols) (ldq at least that):
/// per output channel for a weight (out, in). At 7 bits the rows are then fitted to AVX2's three-group lanes
/// (vitmsn_qgemm_lane_sum over 3 groups at most 128, so that 8-bit activations add in int16 exactly): in a
/// lane over that, the value rounded furthest away from zero gives up a level, one at a time, until it fits.
/// If that adds more than 20 % to the rows' rms rounding error (small K, where a row's values span more of
/// the levels), they are fitted to two-group lanes instead, and past 20 % again stay as rounded; AVX2 adds as
/// many groups in int16 as their lane sums allow.
void vitmsn_quantize_rows(const float *x, size_t ldx, size_t rows, size_t cols, signed char *q, size_t ldq, float *scales, int bits);

/// The largest of B's lane sums, w (N × K, row-major, ldw per row) as a quantised weight, when AVX2 adds
/// `groups` (1 to 3) k-groups' vpmaddubsw pairs in one int16 lane: the values of a row at k ≡ h, h+1 (mod 4)
/// for h = 0 or 2 within each block of 4·groups share a lane, and a lane's sum is the larger of its positive
/// values' sum and its negative values' |sum|. Its products with activations in [0, a_max] stay within ±a_max
/// times it. -1 for another `groups`.
int vitmsn_qgemm_lane_sum(const signed char *w, size_t ldw, size_t k, size_t n, int groups);

/// The weight bits the dispatched kernel runs fastest with at no loss: 7 on AVX2 (int16 pairs, qgemm_body.h),
/// 8 elsewhere.
int vitmsn_qgemm_preferred_weight_bits(void);

/// 1 where int8 models should run their attention products on the int8 kernel: with VNNI, where that is faster
/// than the float kernel; 0 on AVX2 (no faster, and at 7 bits' error) and portably.
int vitmsn_qgemm_attention_pays(void);

/// The largest quantised activation the dispatched kernel takes against weights whose largest |q| is b_max:
/// 255 (8 bits), except on AVX2 with 8-bit weights, 127, as an int16 pair must hold 2·255·63 (qgemm_body.h).
int vitmsn_qgemm_activation_levels(int b_max);

/// Activations, per row (per token) at run time: unsigned with a zero point, x ≈ s[r]·(q − z[r]), q in
/// [0, levels] (at most 255), zero-padded like the weights.
void vitmsn_quantize_activations(const float *x, size_t ldx, size_t rows, size_t cols, unsigned char *q, size_t ldq, float *scales, int *zero_points, int levels);

/// Bytes the packed form of an int8 B takes, and the packing of rows [p0·16, p1·16) of w (N × K, row-major,
/// ldw per row: a quantised nn.Linear weight (out, in)) as B = wᵀ.
size_t vitmsn_qgemm_packed_bytes(size_t k, size_t n);
void vitmsn_qgemm_pack_b(const signed char *w, size_t ldw, size_t k, size_t n, size_t p0, size_t p1, signed char *packed);

/// Parts of an int8 call for `threads` threads, and part `part` of `parts` (as vitmsn_gemm_parts).
size_t vitmsn_qgemm_parts(const vitmsn_qgemm_call *call, size_t threads);
vitmsn_qgemm_call vitmsn_qgemm_part(const vitmsn_qgemm_call *call, size_t part, size_t parts);

/// Runs one int8 call on the dispatched kernel, or on the portable one; returns 0, or -1 for arguments out
/// of range.
int vitmsn_qgemm(const vitmsn_qgemm_call *call);
int vitmsn_qgemm_portable(const vitmsn_qgemm_call *call);

/// The instruction set of the int8 kernel: "avx512-vnni", "avx2" or "generic".
const char *vitmsn_qgemm_isa(void);

/// The int8 kernel's register tile, rows × columns: with VNNI "12x32" or "8x48" (the wide one where two
/// vpdpbusd issue a cycle: Intel), else "4x16". Any tile gives the same bits.
const char *vitmsn_qgemm_tile(void);

/// Chooses the VNNI tile ("12x32" or "8x48"; VITMSN_INT8_TILE at start-up does the same), for benchmarks and
/// tests; 0, or -1 for a shape this CPU's kernel lacks. Not while an int8 product runs.
int vitmsn_qgemm_select_tile(const char *shape);

#endif
