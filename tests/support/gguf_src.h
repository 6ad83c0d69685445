/* A qp_gguf_llama_source over a Hugging Face checkpoint, shared by the GGUF
 * export tests (house-llama and house-qwen): each tensor read as f32 and
 * quantized with the project's quantizers to the type llama-quantize's rules
 * give it (or F32). */
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

/* tensor_type / tensor_data callbacks; ud is a qp_test_gguf_src. */
int qp_test_gguf_src_type(void *ud, const qp_gguf_llama_tensor *t, uint32_t *type);
int qp_test_gguf_src_data(void *ud, const qp_gguf_llama_tensor *t, uint32_t type, void *dst, size_t nbytes);
/* A tensor_data callback that writes zeros (ud unused). */
int qp_test_gguf_zero_data(void *ud, const qp_gguf_llama_tensor *t, uint32_t type, void *dst, size_t nbytes);

#endif
