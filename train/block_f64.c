/* train/block.h in f64: the gradient checks' reference (tests/train/test_grad.c). */
#define REAL double
#define SFX f64
#define GEMM qp_dgemm
#define EXPR(x) exp(x)
#include "train/block_impl.h"
