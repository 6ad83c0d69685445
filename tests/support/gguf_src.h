/* Helpers of the GGUF export tests (house-llama, house-qwen, Llama 3): a
 * qp_gguf_llama_source over a Hugging Face checkpoint, each tensor read as
 * f32 and quantized with the project's quantizers to the type
 * llama-quantize's rules give it (or F32), and a comparison with llama.cpp's
 * files. */
#ifndef QP_TESTS_GGUF_SRC_H
#define QP_TESTS_GGUF_SRC_H

#include "model/gguf_llama.h"
#include "model/safetensors.h"
#include "quant/ggml_mix.h"

typedef struct {
    qp_checkpoint *ck;
    qp_ggml_mix_ctx mix;
    int ftype;          /* -1: everything F32; else llama-quantize's rules (pure when mix.pure) */
    int data_calls;     /* tensor_data calls so far */
    int fail_on;        /* tensor_data call number that fails (QP_EFORMAT), 0: none */
} qp_test_gguf_src;

/* Opens model_dir's checkpoint into s (every tensor F32 until ftype is set;
 * llama-quantize's mix context for cfg's GGUF architecture) and points src
 * at it; _close frees the checkpoint. */
void qp_test_gguf_src_open(qp_test_gguf_src *s, qp_gguf_llama_source *src, const char *model_dir,
                           const qp_llama_config *cfg);
void qp_test_gguf_src_close(qp_test_gguf_src *s);

/* tensor_type / tensor_data callbacks; ud is a qp_test_gguf_src. */
int qp_test_gguf_src_type(void *ud, const qp_gguf_llama_tensor *t, uint32_t *type);
int qp_test_gguf_src_data(void *ud, const qp_gguf_llama_tensor *t, uint32_t type, void *dst, size_t nbytes);
/* A tensor_data callback that writes zeros (ud unused). */
int qp_test_gguf_zero_data(void *ud, const qp_gguf_llama_tensor *t, uint32_t type, void *dst, size_t nbytes);

/* The GGUF file at got_path is byte-identical to the shared file want_rel
 * (relative to $QPIPE_SHARED), key by key, then tensor by tensor, then the
 * whole file: the first difference is reported before the byte comparison
 * fails. */
void qp_test_assert_same_gguf(const char *got_path, const char *want_rel);

#endif
