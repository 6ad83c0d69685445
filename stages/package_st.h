/* format safetensors: a plain Hugging Face checkpoint of the artifact's
 * weights exactly as evaluate computes with them — every quantized tensor
 * dequantized (qp_qtensor_to_f32), then written in one float dtype — so
 * transformers, vLLM, llama.cpp's convert_hf_to_gguf.py and any other tool
 * loads it with no quantization support ("fake quant": the quality of the
 * quantized model at the size of the float one).
 *
 *   dtype F32  every tensor is bit-for-bit what evaluate used
 *   dtype BF16 / F16  rounded to nearest even from those f32 values; a
 *              dense tensor already in that dtype is copied byte for byte
 *              (F16 refuses a finite value beyond its range)
 *
 * Files, as transformers' save_pretrained writes them:
 *   model.safetensors (metadata {"format": "pt"}) when every tensor fits in
 *   max_shard_size bytes; else model-0000i-of-0000n.safetensors and
 *   model.safetensors.index.json {"metadata": {"total_size": bytes of all
 *   tensors}, "weight_map": {tensor: file}} (keys sorted, indent 2), shards
 *   filled in the artifact's tensor order as huggingface_hub's
 *   split_torch_state_dict_into_shards does: a tensor that would overflow
 *   the current shard starts the next one, a tensor larger than
 *   max_shard_size gets a shard of its own.
 *   config.json: the source's with torch_dtype (and dtype, where present)
 *   set to the written dtype and quantization_config removed;
 *   the tokenizer and generation files copied (qp_package_copy_files). */
#ifndef QP_STAGES_PACKAGE_ST_H
#define QP_STAGES_PACKAGE_ST_H

#include <stdint.h>

#include "cache/cache.h"
#include "artifact/artifact.h"
#include "common/tensor.h"

/* The dtype of `dtype:` ("f32", "f16", "bf16"; "auto": config.json's
 * torch_dtype, F32 when it names none).  QP_EFORMAT for a config.json
 * that does not parse or names an unknown dtype. */
int qp_package_st_dtype(qp_dtype *out, const qp_artifact *model, qp_cache *cache, const char *dtype,
                        const char *what);

/* "5GB" (10^9), "500MB", "2GiB" (2^30), "1048576": bytes in *out (>= 1).
 * QP_EUSAGE naming `what` for anything else. */
int qp_package_parse_size(uint64_t *out, const char *s, const char *what);

/* huggingface_hub's split_state_dict_into_shards_factory over tensors of
 * bytes[n] in order: shard_of[i] gets tensor i's shard, numbered in the
 * order shards are closed (a tensor larger than max_shard gets one of its
 * own at once, before the shard being filled); returns the shard count. */
size_t qp_package_st_plan_shards(const uint64_t *bytes, size_t n, uint64_t max_shard, size_t *shard_of);

/* Writes the checkpoint into dir (which must exist).  *weights_name: the
 * file a reader opens first (model.safetensors or the index), *weights_bytes:
 * bytes of every .safetensors file written (for the model card).  Errors
 * are one line prefixed with `what`; each file is written to a temp file
 * and renamed, so none is half-written. */
int qp_package_st(const char *dir, const qp_artifact *model, qp_cache *cache, qp_dtype dtype, uint64_t max_shard,
                  const char **weights_name, uint64_t *weights_bytes, const char *what);

#endif
