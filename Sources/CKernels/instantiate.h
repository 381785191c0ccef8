// One build of the kernels for the instruction set kernels.c has just described with KERNEL_TARGET,
// KERNEL(name), the GEMM tile macros and the int8 kernel's QGEMM_TARGET and QGEMM_KIND, which are cleared again for the next.
#include "kernels_body.h"
#include "gemm_body.h"
#include "attention_body.h"
#include "qgemm_body.h"
#undef KERNEL_TARGET
#undef KERNEL
#undef GEMM_VW
#undef GEMM_MR
#undef GEMM_NR
#undef GEMM_MC
#undef GEMM_K_UNROLL
#undef QGEMM_TARGET
#undef QGEMM_KIND
