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

/// y[i] = e^x[i] (relative error < 2e-7 on [-87, 88]) and y[i] = erf(x[i]) (absolute error < 6e-7).
void vitmsn_exp(const float *x, float *y, size_t n);
void vitmsn_erf(const float *x, float *y, size_t n);

/// With glibc, keeps freed large blocks in the heap instead of unmapping them (no-op elsewhere).
void vitmsn_keep_freed_memory(void);

/// The instruction set the kernels were dispatched to on this CPU: "avx2+fma" or "generic".
const char *vitmsn_kernel_isa(void);

#endif
