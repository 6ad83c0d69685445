/* train/head.h in f32: what the end-to-end phase runs. */
#define REAL float
#define SFX f32
#define GEMM qp_sgemm
#include "train/head_impl.h"
