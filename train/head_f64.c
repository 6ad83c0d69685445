/* train/head.h in f64: the gradient check's reference. */
#define REAL double
#define SFX f64
#define GEMM qp_dgemm
#define EXPR(x) exp(x)
#include "train/head_impl.h"
