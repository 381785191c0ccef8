// One build of the kernels for the instruction set kernels.c has just described with KERNEL_TARGET,
// KERNEL(name) and the GEMM tile macros, which are cleared again for the next.
#include "kernels_body.h"
#include "gemm_body.h"
#undef KERNEL_TARGET
#undef KERNEL
#undef GEMM_VW
#undef GEMM_MR
#undef GEMM_NR
#undef GEMM_MC
