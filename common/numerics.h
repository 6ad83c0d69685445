/* The numerics profile: the name of the rules by which qpipe computes every
 * floating-point result that can reach an artifact's bytes or a metric a
 * gate reads.  Two runs under the same profile give the same bits on any
 * x86-64 CPU with AVX2 and FMA, whatever OPENBLAS_CORETYPE,
 * OPENBLAS_NUM_THREADS or --threads say.  The profile goes into the key of
 * every stage kind that computes floats (stages/stage.h: float_numerics),
 * into `qpipe --version`, the run record and the model card, so that one
 * cache never mixes results of two profiles.
 *
 * seqfma-1:
 *   - matrix products (f32 and f64): common/gemm.h's contract, one
 *     sequential chain of fused multiply-adds per element (K in order);
 *     OpenBLAS computes nothing that reaches an artifact;
 *   - everything else: C11 compiled with -ffp-contract=off and without
 *     -ffast-math (no operation the source does not spell out, whatever
 *     -march allows), reductions in a fixed order that does not depend on
 *     the thread count (fixed lane counts, fixed row and column blocks);
 *   - e^x in the forward pass (and in QAT's training passes, train/) is
 *     qpipe's own (model/llama_kernels.c); the rest of libm (sin/cos/pow
 *     for RoPE tables, exp/log in the metrics and in QAT's loss values) is
 *     glibc's, which picks the same FMA variant on every such CPU.
 * Change the name when any of these changes a result. */
#ifndef QP_COMMON_NUMERICS_H
#define QP_COMMON_NUMERICS_H

#define QP_NUMERICS_PROFILE "seqfma-1"

#endif
