/* Writes a model or quantized-model artifact as a GGUF file that llama.cpp
 * loads: llama.cpp's keys and tensor order (architecture llama or qwen2),
 * llama's q/k rows permuted to GGUF's layout, the vocabulary from
 * tokenizer.model (SentencePiece) or else tokenizer.json (byte-level BPE),
 * each tensor in the type the artifact holds (ggml blocks as stored, dense
 * tensors — norms and biases — as F32, or F16 when stored so; in a BF16
 * file, general.file_type 32, every 2-D weight as BF16) plus qpipe's own
 * qpipe.* keys.  F32, F16 and BF16 files are laid out as
 * convert_hf_to_gguf.py --outtype f32|f16|bf16 writes them, the block
 * types as llama-quantize rewrites convert's F32 file. */
#ifndef QP_STAGES_PACKAGE_GGUF_H
#define QP_STAGES_PACKAGE_GGUF_H

#include <jansson.h>

#include "cache/cache.h"
#include "artifact/artifact.h"

/* extra_keys: {"key": "string" | integer (i32), …} added after llama.cpp's
 * keys in insertion order (quantize.imatrix.*, then qpipe.*).
 * file_type: llama_ftype for general.file_type.  work_dir: scratch space.
 * file_digest gets the SHA-256 of the file, taken as it is written. */
int qp_package_gguf(const char *path, const qp_artifact *model, qp_cache *cache, const char *model_name,
                    unsigned file_type, const json_t *extra_keys, const char *work_dir, const char *what,
                    char file_digest[QP_HEX_LEN]);

#endif
