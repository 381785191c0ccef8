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
#include "instantiate.h"

// AVX-512: 32 zmm registers hold a 12 × 32 tile (24 accumulators), two B vectors and a broadcast.
#define KERNEL_TARGET __attribute__((target("avx512f,avx2,fma")))
#define KERNEL(name) name##_avx512
#define GEMM_VW 16
#define GEMM_MR 12
#define GEMM_NR 32
#define GEMM_MC 144
#include "instantiate.h"

enum { ISA_GENERIC, ISA_AVX2, ISA_AVX512 };
static int isa;

// VITMSN_KERNELS=generic (or avx2) caps the instruction set (the tests run the portable build too).
__attribute__((constructor)) static void detect_instruction_set(void) {
    __builtin_cpu_init();
    const char *forced = getenv("VITMSN_KERNELS");
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    int avx512 = avx2 && __builtin_cpu_supports("avx512f");
    isa = avx512 ? ISA_AVX512 : avx2 ? ISA_AVX2 : ISA_GENERIC;
    if (forced && strcmp(forced, "generic") == 0) isa = ISA_GENERIC;
    if (forced && strcmp(forced, "avx2") == 0 && isa > ISA_AVX2) isa = ISA_AVX2;
}

#define DISPATCH(name, ...) \
    (isa == ISA_AVX512 ? name##_avx512(__VA_ARGS__) : isa == ISA_AVX2 ? name##_avx2(__VA_ARGS__) : name##_generic(__VA_ARGS__))
#define GEMM_CONSTANT(generic, avx2, avx512) (isa == ISA_AVX512 ? (avx512) : isa == ISA_AVX2 ? (avx2) : (generic))
#else
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

static void *fma_peak_thread(void *flops) {
    float sink;
    *(double *)flops = DISPATCH(fma_peak_loop, 40000000, &sink);
    return 0;
}

double vitmsn_fma_peak_gflops(int threads) {
    enum { most = 64 };
    threads = threads < 1 ? 1 : threads > most ? most : threads;
    double best = 0;
    for (int round = 0; round < 5; round++) {
        double flops[most];
        pthread_t workers[most];
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int started = 1;
        for (; started < threads; started++)
            if (pthread_create(&workers[started], 0, fma_peak_thread, &flops[started]) != 0) break;
        fma_peak_thread(&flops[0]);
        for (int t = 1; t < started; t++) pthread_join(workers[t], 0);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double total = 0;
        for (int t = 0; t < started; t++) total += flops[t];
        double rate = total / ((t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9) / 1e9;
        if (rate > best) best = rate;
    }
    return best;
}

size_t vitmsn_gemm_parts(const vitmsn_gemm_call *call, size_t threads) {
    size_t m = call->m1 - call->m0, n = call->n1 - call->n0;
    if (threads <= 1 || m * n * call->k < ((size_t)1 << 21)) return 1;
    size_t units = m < n ? (n + vitmsn_gemm_panel_width() - 1) / vitmsn_gemm_panel_width() : (m + vitmsn_gemm_row_tile() - 1) / vitmsn_gemm_row_tile();
    return threads < units ? threads : units;
}

vitmsn_gemm_call vitmsn_gemm_part(const vitmsn_gemm_call *call, size_t part, size_t parts) {
    vitmsn_gemm_call p = *call;
    size_t m = call->m1 - call->m0, n = call->n1 - call->n0;
    if (m < n) {
        size_t unit = vitmsn_gemm_panel_width(), units = (n + unit - 1) / unit;
        size_t lo = call->n0 + part * units / parts * unit, hi = call->n0 + (part + 1) * units / parts * unit;
        p.n0 = lo;
        p.n1 = hi < call->n1 ? hi : call->n1;
    } else {
        size_t unit = vitmsn_gemm_row_tile(), units = (m + unit - 1) / unit;
        size_t lo = call->m0 + part * units / parts * unit, hi = call->m0 + (part + 1) * units / parts * unit;
        p.m0 = lo;
        p.m1 = hi < call->m1 ? hi : call->m1;
    }
    return p;
}

const char *vitmsn_kernel_isa(void) {
#ifdef HAVE_X86_BUILDS
    return isa == ISA_AVX512 ? "avx512" : isa == ISA_AVX2 ? "avx2+fma" : "generic";
#else
    return "generic";
#endif
}
