/* Hugging Face quantized checkpoints from a quantized-model artifact whose
 * quantized tensors have format "linear" (RTN, GPTQ, AWQ): the files that
 * transformers, vLLM, GPTQModel and AutoAWQ load.
 *
 * gptq — GPTQ v1 (checkpoint_format "gptq"), for every linear X.weight
 *        [out, in] (codes u8 [out, in], scales fp16 [out, G], zeros u8
 *        [out, G], g_idx i32 [in]; G = n_groups):
 *   X.qweight i32 [in·bits/32, out]  each column (one output) is a
 *             little-endian bit stream of its `in` codes, input i at bit
 *             i·bits of the column (4-bit: word i/8, bits 4·(i%8)…; 3-bit:
 *             32 codes per 3 words, codes straddling word boundaries)
 *   X.qzeros  i32 [G, out·bits/32]   (z − 1) & maxq, the same bit stream
 *             along the output dimension (GPTQ v1's off-by-one; readers
 *             compute z = (stored + 1) & maxq, so z = 0 survives)
 *   X.scales  f16 [G, out]
 *   X.g_idx   i32 [in]
 *   bits 2, 3, 4, 8 (GPTQ's choices).
 * awq  — AutoAWQ GEMM (version "gemm"), 4-bit only, no act-order:
 *   X.qweight i32 [in, out/8]  word c of row i: nibble j holds output
 *             8c + {0,2,4,6,1,3,5,7}[j]
 *   X.qzeros  i32 [G, out/8]   the raw zero, same interleave
 *   X.scales  f16 [G, out]
 * Every other tensor (embeddings, lm_head, norms, AWQ's scaled norms kept
 * dense in F32) is written F16, the dtype GPTQ/AWQ kernels compute in
 * (config.json's torch_dtype becomes "float16"). */
#ifndef QP_STAGES_PACKAGE_HF_H
#define QP_STAGES_PACKAGE_HF_H

#include <stdint.h>

#include "cache/cache.h"
#include "artifact/artifact.h"

/* Writes into dir (which must exist): model.safetensors, config.json (the
 * source config.json with "quantization_config" added and torch_dtype
 * float16), quantize_config.json (gptq only), and every other top-level
 * "files/…" entry of the artifact (tokenizer.model, tokenizer_config.json,
 * generation_config.json, …; source weight files, stale quantization
 * configs and the source's README.md are left out).  Errors are one line, prefixed with `what`; on
 * error no file of dir is half-written (each is written to a temp file and
 * renamed). */
/* QP_HF_BNB: bitsandbytes NF4 / int8, written by qp_package_bnb
 * (stages/package_bnb.h). */
typedef enum { QP_HF_GPTQ, QP_HF_AWQ, QP_HF_BNB } qp_hf_format;
int qp_package_hf(const char *dir, const qp_artifact *model, qp_cache *cache, qp_hf_format format,
                  const char *what);

/* Shared by the Hugging Face formats (package_st.c too): dir/name holds j
 * as transformers writes JSON (indent 2, reals in their shortest form,
 * newline at the end), written atomically. */
int qp_package_write_json(const char *dir, const char *name, const json_t *j, const char *what);
/* The artifact's config.json as a JSON object (*out, the caller's):
 * QP_EFORMAT naming `what` when it is missing or not an object. */
int qp_package_read_config(json_t **out, const qp_artifact *model, qp_cache *cache, const char *what);
/* torch_dtype (and newer transformers' dtype, where present). */
void qp_package_set_torch_dtype(json_t *cfg, const char *torch_dtype);
/* Copies every top-level "files/…" entry of the artifact into dir except
 * the source's weights, config.json, quantization configs and README.md
 * (the package writes its own). */
int qp_package_copy_files(const char *dir, const qp_artifact *model, qp_cache *cache, const char *what);

/* ---- packing (package_hf_pack.c): pure functions, no checks beyond the
 * documented preconditions (codes and zeros <= maxq) ---- */

/* 1 if GPTQ can pack `bits` (2, 3, 4, 8). */
int qp_hf_gptq_bits_ok(int bits);
/* codes u8 [rows = out, cols = in] -> qweight u32 [cols·bits/32, rows].
 * Needs cols·bits % 32 == 0. */
void qp_hf_pack_gptq_qweight(uint32_t *dst, const uint8_t *codes, int64_t rows, int64_t cols, int bits);
/* zeros u8 [rows = out, n_groups] -> qzeros u32 [n_groups, rows·bits/32]
 * holding (z − 1) & maxq.  Needs rows·bits % 32 == 0. */
void qp_hf_pack_gptq_qzeros(uint32_t *dst, const uint8_t *zeros, int64_t rows, int64_t n_groups, int bits);
/* codes u8 [rows = out, cols = in] -> qweight u32 [cols, rows/8], AWQ's
 * interleave.  4-bit codes; needs rows % 8 == 0. */
void qp_hf_pack_awq_qweight(uint32_t *dst, const uint8_t *codes, int64_t rows, int64_t cols);
/* zeros u8 [rows = out, n_groups] -> qzeros u32 [n_groups, rows/8]. */
void qp_hf_pack_awq_qzeros(uint32_t *dst, const uint8_t *zeros, int64_t rows, int64_t n_groups);
/* scales u16 [rows, n_groups] -> u16 [n_groups, rows]. */
void qp_hf_transpose_u16(uint16_t *dst, const uint16_t *src, int64_t rows, int64_t n_groups);

#endif
