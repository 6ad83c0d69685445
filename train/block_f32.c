/* train/block.h in f32: what QAT runs. */
#include "model/llama_kernels.h"

#define REAL float
#define SFX f32
#define GEMM qp_sgemm
#define EXPR(x) qp_kern_exp(x)
#include "train/block_impl.h"
