/* method mixed: sensitivity-driven mixed precision over llama.cpp block
 * types, so the result packages as an ordinary GGUF.
 *
 *   1. Sensitivity.  On the first `windows` calibration windows ([W, T]
 *      tokens), the unquantized model's next-token distributions are the
 *      reference.  For every 2-D weight t and every type k of `ladder:`
 *      (lowest first), t alone is quantized at k (with the calibration's
 *      importance matrix where the type uses one, as llama-quantize does)
 *      and the mean KL divergence of the model's outputs from the
 *      reference is measured: s[t][k].  A weight of layer l only needs
 *      layers l.. re-run from the stored unquantized input of layer l;
 *      lm_head only the head.
 *   2. Allocation.  Every weight starts at the lowest type; the step (t:
 *      k → k') with the largest measured gain s[t][k] − s[t][k'] per added
 *      byte is taken, one at a time, while it fits the size budget
 *      (`max_bpw`, or the bits per weight llama.cpp's `bpw_of:` file type
 *      gives this model).  With a budget alone, all of that sequence is
 *      taken.  With a target (`max_kld`, `max_ppl_delta`, `max_ppl_ratio`
 *      on the same windows), the shortest prefix of the sequence whose
 *      whole mixed model MEASURES within it — not as predicted by adding
 *      the s[t][k]: mixes are measured where the predicted KLD has fallen
 *      by a fifth since the last measurement, then bisected between the
 *      last miss and the first hit.  A target not reached within the
 *      budget is reported, not an error: the gate decides.  A target the
 *      all-lowest mix already meets skips step 1 (nothing to raise).
 * Memory: the reference distributions [W·T, V] floats (16 × 256 windows of
 * a 32k vocabulary: 0.5 GiB), two [W, T, D] activation buffers, the model's
 * f32 weights (qp_llama's cache) and the quantized bytes of every weight at
 * every ladder type up to 1 GiB (kept so target checks only dequantize).
 * The result: job->plan.assign = {hf_name: type} for every weight the
 * allocator decides; the chosen types' bytes already quantized, stored in
 * the cache, in job->results (format ggml, qtype, imatrix: the quantize
 * stage takes them as it takes GPTQ/AWQ results); and job->report (ladder,
 * per-weight sensitivities and bytes, the raised weights in order with
 * their gains, the measured KLD of the all-lowest and the final mix, the
 * budget), the artifact's "mixed" metadata. */
#ifndef QP_STAGES_QUANT_MIXED_H
#define QP_STAGES_QUANT_MIXED_H

#include "stages/qmethod.h"

int qp_quant_mixed_assign(qp_quant_job *job);

#endif
