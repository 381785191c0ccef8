// Elementwise transcendental kernels, built for a portable baseline and, on x86-64, again for AVX2+FMA;
// the AVX2 build is chosen at run time when the CPU has it. (Swift cannot target one function at a
// wider instruction set, so these live in C.)
#include "CKernels.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

void vitmsn_keep_freed_memory(void) {
#ifdef __GLIBC__
    mallopt(M_MMAP_THRESHOLD, 1 << 30);  // the largest value glibc accepts; blocks below it come from the heap
    mallopt(M_TRIM_THRESHOLD, -1);       // ... which is never trimmed
#endif
}

#define KERNEL_TARGET
#define KERNEL(name) name##_generic
#include "kernels_body.h"
#undef KERNEL_TARGET
#undef KERNEL

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define HAVE_AVX2_BUILD 1
#define KERNEL_TARGET __attribute__((target("avx2,fma")))
#define KERNEL(name) name##_avx2
#include "kernels_body.h"
#undef KERNEL_TARGET
#undef KERNEL

static int has_avx2_fma;

// VITMSN_KERNELS=generic forces the portable build (the tests run both).
__attribute__((constructor)) static void detect_instruction_set(void) {
    __builtin_cpu_init();
    const char *forced = getenv("VITMSN_KERNELS");
    has_avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && !(forced && strcmp(forced, "generic") == 0);
}

static inline int use_avx2(void) { return has_avx2_fma; }
#define DISPATCH(name, ...) (use_avx2() ? name##_avx2(__VA_ARGS__) : name##_generic(__VA_ARGS__))
#else
#define DISPATCH(name, ...) name##_generic(__VA_ARGS__)
#endif

void vitmsn_activate(vitmsn_activation kind, float *x, size_t n) { DISPATCH(activate, kind, x, n); }
void vitmsn_activation_backward(vitmsn_activation kind, const float *x, float *grad, size_t n) { DISPATCH(activation_backward, kind, x, grad, n); }
void vitmsn_softmax_rows(float *x, size_t rows, size_t cols) { DISPATCH(softmax_rows, x, rows, cols); }
void vitmsn_exp(const float *x, float *y, size_t n) { DISPATCH(exp, x, y, n); }
void vitmsn_erf(const float *x, float *y, size_t n) { DISPATCH(erf, x, y, n); }

const char *vitmsn_kernel_isa(void) {
#ifdef HAVE_AVX2_BUILD
    return use_avx2() ? "avx2+fma" : "generic";
#else
    return "generic";
#endif
}
