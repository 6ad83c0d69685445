/* train/head.h in f32: what the end-to-end phase runs. */
#include "model/llama_kernels.h"

#define REAL float
#define SFX f32
#define GEMM qp_sgemm
#define EXPR(x) qp_kern_exp(x)
#include "train/head_impl.h"
