// The C kernels: elementwise transcendentals and the GEMM, built for a portable baseline and, on x86-64,
// again for AVX2+FMA and for AVX-512; the widest build the CPU runs is chosen at run time. (Swift cannot
// target one function at a wider instruction set, so these live in C.)
#include "CKernels.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

void vitmsn_keep_freed_memory(void) {
#ifdef __GLIBC__
    mallopt(M_MMAP_THRESHOLD, 1 << 30);  // the largest value glibc accepts; blocks below it come from the heap
    mallopt(M_TRIM_THRESHOLD, -1);       // ... which is never trimmed
#endif
}

#define GEMM_KC 384
#define GEMM_NC 4096

// Portable: 4-float vectors (SSE2 on x86-64, NEON on arm64), a 4 × 8 tile.
#define KERNEL_TARGET
#define KERNEL(name) name##_generic
#define GEMM_VW 4
#define GEMM_MR 4
#define GEMM_NR 8
#define GEMM_MC 128
#define GEMM_K_UNROLL 4
#define QGEMM_TARGET
#define QGEMM_KIND 0
#include "instantiate.h"

#if defined(__x86_64__) && defined(__clang__)
#define HAVE_X86_BUILDS 1
// AVX2+FMA: 16 ymm registers hold a 6 × 16 tile (12 accumulators), two B vectors and a broadcast.
#define KERNEL_TARGET __attribute__((target("avx2,fma")))
#define KERNEL(name) name##_avx2
#define GEMM_VW 8
#define GEMM_MR 6
#define GEMM_NR 16
#define GEMM_MC 144
#define GEMM_K_UNROLL 4
#define QGEMM_TARGET KERNEL_TARGET
#define QGEMM_KIND 1
#include "instantiate.h"

// The VNNI int8 kernel's tile: 12 × 32 (0) or 8 × 48 (1, where two vpdpbusd issue a cycle; qgemm_body.h).
static int qgemm_wide_tile;

// AVX-512: 32 zmm registers hold a 12 × 32 tile (24 accumulators), two B vectors and a broadcast.
#define KERNEL_TARGET __attribute__((target("avx512f,avx2,fma")))
#define KERNEL(name) name##_avx512
#define GEMM_VW 16
#define GEMM_MR 12
#define GEMM_NR 32
#define GEMM_MC 144
// Unrolling k made clang hoist four steps' broadcasts and spill the 24 accumulators: one step at a time ran
// ViT-S's fc1 at 84 % of the FMA peak on one Xeon core instead of 49 %.
#define GEMM_K_UNROLL 1
// ... and its int8 kernel only where VNNI is there too (else the AVX2 one runs).
#define QGEMM_TARGET __attribute__((target("avx512f,avx512bw,avx512vnni,avx2,fma")))
#define QGEMM_KIND 2
#include "instantiate.h"

enum { ISA_GENERIC, ISA_AVX2, ISA_AVX512 };
static int isa, qgemm_isa;

// VITMSN_KERNELS=generic (or avx2) caps the instruction set (the tests run the portable build too).
__attribute__((constructor)) static void detect_instruction_set(void) {
    __builtin_cpu_init();
    const char *forced = getenv("VITMSN_KERNELS");
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int avx512 = avx2 && __builtin_cpu_supports("avx512f");
    isa = avx512 ? ISA_AVX512 : avx2 ? ISA_AVX2 : ISA_GENERIC;
    if (forced && strcmp(forced, "generic") == 0) isa = ISA_GENERIC;
    if (forced && strcmp(forced, "avx2") == 0 && isa > ISA_AVX2) isa = ISA_AVX2;
    int vnni = __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni");
    qgemm_isa = isa == ISA_AVX512 && !vnni ? ISA_AVX2 : isa;
    // Intel's AVX-512 cores issue vpdpbusd on two ports, AMD's Zen 4 on one (qgemm_body.h);
    // VITMSN_INT8_TILE=12x32 or 8x48 overrides.
    qgemm_wide_tile = __builtin_cpu_is("intel");
    const char *tile = getenv("VITMSN_INT8_TILE");
    if (tile) vitmsn_qgemm_select_tile(tile);
}

#define DISPATCH(name, ...) \
    (isa == ISA_AVX512 ? name##_avx512(__VA_ARGS__) : isa == ISA_AVX2 ? name##_avx2(__VA_ARGS__) : name##_generic(__VA_ARGS__))
#define GEMM_CONSTANT(generic, avx2, avx512) (isa == ISA_AVX512 ? (avx512) : isa == ISA_AVX2 ? (avx2) : (generic))
#define QGEMM_DISPATCH(name, ...) \
    (qgemm_isa == ISA_AVX512 ? name##_avx512(__VA_ARGS__) : qgemm_isa == ISA_AVX2 ? name##_avx2(__VA_ARGS__) : name##_generic(__VA_ARGS__))
#else
#define QGEMM_DISPATCH(name, ...) name##_generic(__VA_ARGS__)
#define DISPATCH(name, ...) name##_generic(__VA_ARGS__)
#define GEMM_CONSTANT(generic, avx2, avx512) (generic)
#endif

void vitmsn_activate(vitmsn_activation kind, float *x, size_t n) { DISPATCH(activate, kind, x, n); }
void vitmsn_activation_backward(vitmsn_activation kind, const float *x, float *grad, size_t n) { DISPATCH(activation_backward, kind, x, grad, n); }
void vitmsn_softmax_rows(float *x, size_t rows, size_t cols) { DISPATCH(softmax_rows, x, rows, cols); }
void vitmsn_exp(const float *x, float *y, size_t n) { DISPATCH(exp, x, y, n); }
void vitmsn_online_softmax(float *x, size_t rows, size_t cols, float *row_max, float *row_sum, float *rescale, int first) {
    DISPATCH(online_softmax, x, rows, cols, row_max, row_sum, rescale, first);
}
void vitmsn_erf(const float *x, float *y, size_t n) { DISPATCH(erf, x, y, n); }

size_t vitmsn_attention_scratch_count(size_t s, size_t hd) { return hd == 0 || hd > GEMM_KC ? 0 : DISPATCH(attention_scratch_count, s, hd); }

int vitmsn_attention_head(const float *q, const float *k, const float *v, float *out, size_t ld, size_t s, size_t hd, float scale, float mask, float *scratch) {
    if (hd == 0 || hd > GEMM_KC) return -1;
    if (s > 0) DISPATCH(attention_head, q, k, v, out, ld, s, hd, scale, mask, scratch);
    return 0;
}

size_t vitmsn_attention_int8_scratch_bytes(size_t s, size_t hd) {
    qattention_scratch pieces;
    return hd == 0 ? 0 : qattention_layout(s, hd, 0, &pieces) + 63;  // and room to align the start
}

int vitmsn_attention_head_int8(const float *q, const float *k, const float *v, float *out, size_t ld, size_t s, size_t hd, float scale, float mask, void *scratch) {
    if (hd == 0) return -1;
    char *aligned = (char *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);  // the packed operands are read aligned
    if (s > 0) QGEMM_DISPATCH(qattention_head, q, k, v, out, ld, s, hd, scale, mask, aligned);
    return 0;
}

size_t vitmsn_gemm_panel_width(void) { return GEMM_CONSTANT(8, 16, 32); }
size_t vitmsn_gemm_row_tile(void) { return GEMM_CONSTANT(4, 6, 12); }
size_t vitmsn_gemm_packed_count(size_t k, size_t n) { return DISPATCH(gemm_packed_count, k, n); }

void vitmsn_gemm_pack_b(const float *b, size_t ldb, int transposed, size_t k, size_t n, size_t p0, size_t p1, float *packed) {
    DISPATCH(gemm_pack_b, b, ldb, transposed, k, n, p0, p1, packed);
}

// Each thread packs its rows of A into its own scratch, kept for the thread's life.
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static void make_scratch_key(void) { pthread_key_create(&scratch_key, free); }

static float *thread_scratch(void) {
    pthread_once(&scratch_once, make_scratch_key);
    float *scratch = pthread_getspecific(scratch_key);
    if (!scratch) {
        if (posix_memalign((void **)&scratch, 64, sizeof(float) * 144 * GEMM_KC) != 0) return 0;
        pthread_setspecific(scratch_key, scratch);
    }
    return scratch;
}

int vitmsn_gemm_packed(const vitmsn_gemm_call *call) {
    if (call->m0 >= call->m1 || call->n0 >= call->n1) return 0;
    if (call->n0 % vitmsn_gemm_panel_width() != 0 || call->m1 > call->m || call->n1 > call->n) return -1;
    if (call->epilogue.activation >= 0 && call->epilogue.beta != 0.0f) return -1;
    float *scratch = thread_scratch();
    if (!scratch) return -2;
    DISPATCH(gemm_packed, call, scratch);
    return 0;
}

// One thread's share of a peak measurement: the loop's iterations in, the operations it did out.
typedef struct {
    size_t iterations;
    double ops;
} peak_job;

static volatile double peak_sink;  // every loop's result is stored here, so that an inlined loop is not folded away

static void *fma_peak_thread(void *context) {
    peak_job *job = context;
    float sink;
    job->ops = DISPATCH(fma_peak_loop, job->iterations, &sink);
    peak_sink = sink;
    return 0;
}

static void *int8_peak_thread(void *context) {
    peak_job *job = context;
    int32_t sink;
    job->ops = QGEMM_DISPATCH(int8_peak_loop, job->iterations, &sink);
    peak_sink = sink;
    return 0;
}

// The rate (G operations/s) of `iterations` of `loop` on `threads` threads at once, the best of five rounds.
static double peak_rate(void *(*loop)(void *), int threads, size_t iterations) {
    enum { most = 64 };
    threads = threads < 1 ? 1 : threads > most ? most : threads;
    double best = 0;
    for (int round = 0; round < 5; round++) {
        peak_job jobs[most];
        for (int t = 0; t < threads; t++) jobs[t] = (peak_job){iterations, 0};
        pthread_t workers[most];
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int started = 1;
        for (; started < threads; started++)
            if (pthread_create(&workers[started], 0, loop, &jobs[started]) != 0) break;
        loop(&jobs[0]);
        for (int t = 1; t < started; t++) pthread_join(workers[t], 0);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double total = 0;
        for (int t = 0; t < started; t++) total += jobs[t].ops;
        double rate = total / ((t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9) / 1e9;
        if (rate > best) best = rate;
    }
    return best;
}

double vitmsn_fma_peak_gflops(int threads, size_t iterations) { return peak_rate(fma_peak_thread, threads, iterations); }

double vitmsn_int8_peak_gops(int threads, size_t iterations) { return peak_rate(int8_peak_thread, threads, iterations); }

// The thread split of a block: by rows (in row tiles) when it has more rows than columns, else by panels
// (a batch of one image), so that no thread re-reads the larger operand.
static size_t split_parts(size_t m, size_t n, size_t k, size_t panel, size_t row_tile, size_t threads) {
    if (threads <= 1 || m * n * k < ((size_t)1 << 21)) return 1;
    size_t units = m < n ? (n + panel - 1) / panel : (m + row_tile - 1) / row_tile;
    return threads < units ? threads : units;
}

static void split_part(size_t *m0, size_t *m1, size_t *n0, size_t *n1, size_t panel, size_t row_tile, size_t part, size_t parts) {
    size_t m = *m1 - *m0, n = *n1 - *n0;
    size_t *lo = m < n ? n0 : m0, *hi = m < n ? n1 : m1, unit = m < n ? panel : row_tile;
    size_t units = (*hi - *lo + unit - 1) / unit, begin = *lo + part * units / parts * unit, end = *lo + (part + 1) * units / parts * unit;
    *hi = end < *hi ? end : *hi;
    *lo = begin;
}

size_t vitmsn_gemm_parts(const vitmsn_gemm_call *call, size_t threads) {
    return split_parts(call->m1 - call->m0, call->n1 - call->n0, call->k, vitmsn_gemm_panel_width(), vitmsn_gemm_row_tile(), threads);
}

vitmsn_gemm_call vitmsn_gemm_part(const vitmsn_gemm_call *call, size_t part, size_t parts) {
    vitmsn_gemm_call p = *call;
    split_part(&p.m0, &p.m1, &p.n0, &p.n1, vitmsn_gemm_panel_width(), vitmsn_gemm_row_tile(), part, parts);
    return p;
}

// The int8 kernel's units: 16-column panels and 8 rows (whole tiles of the 8- and 4-row kernels).
size_t vitmsn_qgemm_parts(const vitmsn_qgemm_call *call, size_t threads) {
    return split_parts(call->m1 - call->m0, call->n1 - call->n0, call->k, 16, 8, threads);
}

vitmsn_qgemm_call vitmsn_qgemm_part(const vitmsn_qgemm_call *call, size_t part, size_t parts) {
    vitmsn_qgemm_call p = *call;
    split_part(&p.m0, &p.m1, &p.n0, &p.n1, 16, 8, part, parts);
    return p;
}

// AVX2 adds the vpmaddubsw pairs of up to three k-groups in int16 before widening (qgemm_body.h): the six
// values of a row at k ≡ {h, h+1, h+4, h+5, h+8, h+9} (mod 12), h = 0 or 2, share an int16 lane; with two
// groups, the four at k ≡ {h, h+1, h+4, h+5} (mod 8). The weights are fitted to the three-group lanes, or
// the two-group ones where that costs too much.
enum { LANE_LIMIT = 32767 / 255 };  // 128: a lane of 8-bit activations holds 255 · 128
// A row is fitted at whichever of 63 … 48 levels leaves the least error (fewer levels, a coarser scale, fit
// with fewer weights lowered); fitting may add at most 20 % to the weight's rms error (three-group lanes cost
// 7–17 % on random ViT-S/B weights, two-group ones under 2 %).
enum { FIT_FEWEST_LEVELS = 48 };
static const double FIT_ERROR_LIMIT = 1.20;

// The |sum| of the `sign`-signed values of lane h (0 or 2) of the block of `width` values at `block`, and in
// `pick` which of them to lower: the one whose rounding went furthest away from zero.
static int lane_sum(const signed char *qr, const float *xr, float scale, size_t cols, size_t block, size_t width, int h, int sign, int *pick) {
    int total = 0;
    float furthest = -INFINITY;
    for (size_t o = (size_t)h; o < width; o += (o & 1) ? 3 : 1) {  // h, h+1, h+4, h+5, …
        size_t j = block + o;
        int v = j < cols ? sign * qr[j] : 0;
        if (v <= 0) continue;
        total += v;
        float excess = (float)v - sign * xr[j] / scale;
        if (excess > furthest) furthest = excess, *pick = (int)j;
    }
    return total;
}

// The largest same-sign |sum| in the two lanes of the `count` (at most 12) values of a block at q: one
// branch-free pass, so the fitting searches only the rare lanes over the limit.
static int block_lane_sum(const signed char *q, size_t count) {
    int positive[2] = {0, 0}, negative[2] = {0, 0};
    for (size_t o = 0; o < count; o++) {
        int v = q[o], h = (o >> 1) & 1;  // o ≡ 0 or 1 (mod 4) is lane 0, 2 or 3 lane 1
        positive[h] += v > 0 ? v : 0, negative[h] += v < 0 ? -v : 0;
    }
    int largest = positive[0];
    largest = positive[1] > largest ? positive[1] : largest;
    largest = negative[0] > largest ? negative[0] : largest;
    return negative[1] > largest ? negative[1] : largest;
}

// Σ (s·q − x)² over one row: the rounding error a fitting is judged by. Eight partial sums in f32 (each
// term exact to 2⁻²⁴, the sum to about 10⁻⁵ of itself: far finer than the levels' differences), so it vectorises.
static double row_squared_error(const float *x, const signed char *q, float scale, size_t cols) {
    float partial[8] = {0};
    size_t j = 0;
    for (; j + 8 <= cols; j += 8)
        for (int i = 0; i < 8; i++) {
            float e = scale * q[j + i] - x[j + i];
            partial[i] += e * e;
        }
    for (; j < cols; j++) {
        float e = scale * q[j] - x[j];
        partial[0] += e * e;
    }
    double total = 0;
    for (int i = 0; i < 8; i++) total += partial[i];
    return total;
}

// Row x at `levels` (scale max|x| / levels) into q, then fitted to the lanes of `groups` groups; returns
// Σ (s·q − x)², and in `lowered` how many levels the fitting took. Fitting only moves values away from their
// nearest level, so a row whose plain rounding already errs by `bound` or more is left unfitted and returns
// INFINITY.
static double quantize_fitted_row(const float *x, size_t cols, signed char *q, float *scale, float levels, int groups, double bound, int *lowered) {
    QGEMM_DISPATCH(quantize_rows, x, cols, 1, cols, q, cols, scale, levels);
    *lowered = 0;
    double rounded = row_squared_error(x, q, *scale, cols);
    if (rounded >= bound) return INFINITY;
    const size_t width = 4 * (size_t)groups;
    for (size_t block = 0; block < cols; block += width) {
        if (block_lane_sum(q + block, cols - block < width ? cols - block : width) <= LANE_LIMIT) continue;
        for (int h = 0; h <= 2; h += 2)
            for (int sign = -1; sign <= 1; sign += 2) {
                int pick = 0;
                while (lane_sum(q, x, *scale, cols, block, width, h, sign, &pick) > LANE_LIMIT) q[pick] -= sign, ++*lowered;
            }
    }
    return *lowered ? row_squared_error(x, q, *scale, cols) : rounded;
}

// Every row fitted to the lanes of `groups` groups (into q and scales), each at its best levels; returns their
// total Σ (s·q − x)².
static double fit_rows(const float *x, size_t ldx, size_t rows, size_t cols, signed char *q, size_t ldq, float *scales, int groups, signed char *candidate) {
    double total = 0;
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * ldx;
        double best = INFINITY;
        for (int levels = 63; levels >= FIT_FEWEST_LEVELS; levels--) {
            float scale;
            int lowered;
            double error = quantize_fitted_row(xr, cols, candidate, &scale, (float)levels, groups, best, &lowered);
            if (error < best) best = error, scales[r] = scale, memcpy(q + r * ldq, candidate, (cols + 7) / 8 * 8);
            if (lowered == 0 && levels == 63) break;  // it fits as rounded
        }
        total += best;
    }
    return total;
}

void vitmsn_quantize_rows(const float *x, size_t ldx, size_t rows, size_t cols, signed char *q, size_t ldq, float *scales, int bits) {
    QGEMM_DISPATCH(quantize_rows, x, ldx, rows, cols, q, ldq, scales, bits == 7 ? 63.0f : 127.0f);
    signed char *candidate = bits == 7 && rows > 0 ? malloc((cols + 7) / 8 * 8) : NULL;
    if (!candidate) return;
    double plain = 0;
    for (size_t r = 0; r < rows; r++) plain += row_squared_error(x + r * ldx, q + r * ldq, scales[r], cols);
    int fitted = 0;  // the most groups whose fitting stays within the limit: three, else two, else as rounded
    for (int groups = 3; groups >= 2 && !fitted; groups--)
        fitted = fit_rows(x, ldx, rows, cols, q, ldq, scales, groups, candidate) <= FIT_ERROR_LIMIT * FIT_ERROR_LIMIT * plain;
    free(candidate);
    if (!fitted) QGEMM_DISPATCH(quantize_rows, x, ldx, rows, cols, q, ldq, scales, 63.0f);
}

int vitmsn_qgemm_lane_sum(const signed char *w, size_t ldw, size_t k, size_t n, int groups) {
    if (groups < 1 || groups > 3) return -1;
    const size_t width = 4 * (size_t)groups;
    int largest = 0;
    for (size_t r = 0; r < n; r++)
        for (size_t block = 0; block < k; block += width) {
            int total = block_lane_sum(w + r * ldw + block, k - block < width ? k - block : width);
            largest = total > largest ? total : largest;
        }
    return largest;
}

int vitmsn_qgemm_preferred_weight_bits(void) {
#ifdef HAVE_X86_BUILDS
    return qgemm_isa == ISA_AVX2 ? 7 : 8;
#else
    return 8;
#endif
}

int vitmsn_qgemm_attention_pays(void) {
#ifdef HAVE_X86_BUILDS
    return qgemm_isa == ISA_AVX512;
#else
    return 0;
#endif
}

int vitmsn_qgemm_activation_levels(int b_max) {
#ifdef HAVE_X86_BUILDS
    if (qgemm_isa == ISA_AVX2 && b_max > 63) return 127;
#endif
    (void)b_max;
    return 255;
}

void vitmsn_quantize_activations(const float *x, size_t ldx, size_t rows, size_t cols, unsigned char *q, size_t ldq, float *scales, int *zero_points, int levels) {
    QGEMM_DISPATCH(quantize_rows_unsigned, x, ldx, rows, cols, q, ldq, scales, zero_points, (float)(levels < 255 ? levels : 255));
}

size_t vitmsn_qgemm_row_stride(size_t k) { return (k + 7) / 8 * 8; }

size_t vitmsn_qgemm_packed_bytes(size_t k, size_t n) { return (n + 15) / 16 * (vitmsn_qgemm_row_stride(k) / 4) * 64; }

void vitmsn_qgemm_pack_b(const signed char *w, size_t ldw, size_t k, size_t n, size_t p0, size_t p1, signed char *packed) {
    size_t k4 = vitmsn_qgemm_row_stride(k) / 4;
    for (size_t p = p0; p < p1; p++) {
        signed char *panel = packed + p * k4 * 64;
        for (size_t j = 0; j < 16; j++) {
            size_t column = p * 16 + j;
            for (size_t kk = 0; kk < 4 * k4; kk++)
                panel[kk / 4 * 64 + j * 4 + kk % 4] = column < n && kk < k ? w[column * ldw + kk] : 0;
        }
    }
}

static int qgemm_arguments_valid(const vitmsn_qgemm_call *call) {
    return call->n0 % 16 == 0 && call->b_max >= 0 && call->b_max <= 127 && call->b_pair_lane_sum >= 0 && call->b_pair_lane_sum <= 4 * call->b_max && call->b_triple_lane_sum >= 0 && call->b_triple_lane_sum <= 6 * call->b_max && call->a_max >= 0 && call->a_max <= 255 && call->m1 <= call->m && call->n1 <= call->n && call->lda % 4 == 0 && call->lda >= vitmsn_qgemm_row_stride(call->k) &&
           !(call->epilogue.activation >= 0 && call->epilogue.beta != 0.0f);
}

int vitmsn_qgemm(const vitmsn_qgemm_call *call) {
    if (call->m0 >= call->m1 || call->n0 >= call->n1) return 0;
    if (!qgemm_arguments_valid(call)) return -1;
#ifdef HAVE_X86_BUILDS
    if (qgemm_isa == ISA_AVX2 && 2 * call->a_max * call->b_max > 32767) return -1;  // an int16 pair would saturate
#endif
    QGEMM_DISPATCH(qgemm, call);
    return 0;
}

int vitmsn_qgemm_portable(const vitmsn_qgemm_call *call) {
    if (call->m0 >= call->m1 || call->n0 >= call->n1) return 0;
    if (!qgemm_arguments_valid(call)) return -1;
    qgemm_generic(call);
    return 0;
}

const char *vitmsn_qgemm_isa(void) {
#ifdef HAVE_X86_BUILDS
    return qgemm_isa == ISA_AVX512 ? "avx512-vnni" : qgemm_isa == ISA_AVX2 ? "avx2" : "generic";
#else
    return "generic";
#endif
}

const char *vitmsn_qgemm_tile(void) {
#ifdef HAVE_X86_BUILDS
    if (qgemm_isa == ISA_AVX512) return qgemm_wide_tile ? "8x48" : "12x32";
#endif
    return "4x16";
}

int vitmsn_qgemm_select_tile(const char *shape) {
#ifdef HAVE_X86_BUILDS
    if (qgemm_isa == ISA_AVX512 && (strcmp(shape, "12x32") == 0 || strcmp(shape, "8x48") == 0)) {
        qgemm_wide_tile = strcmp(shape, "8x48") == 0;
        return 0;
    }
#endif
    return strcmp(shape, vitmsn_qgemm_tile()) == 0 ? 0 : -1;
}

const char *vitmsn_kernel_isa(void) {
#ifdef HAVE_X86_BUILDS
    return isa == ISA_AVX512 ? "avx512" : isa == ISA_AVX2 ? "avx2+fma" : "generic";
#else
    return "generic";
#endif
}
