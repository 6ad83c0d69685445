/* Readers of the packed tensors of a GPTQ / AWQ safetensors export
 * (layouts in stages/package_hf.h), for the tests that decode them with
 * their own code rather than the exporter's. */
#ifndef QP_TESTS_HF_PACKED_H
#define QP_TESTS_HF_PACKED_H

#include "model/safetensors.h"

#include <stdint.h>

/* 32-bit word k of an I32 tensor (little-endian, as stored). */
uint32_t qp_test_word_at(const qp_tensor_view *t, uint64_t k);
/* Element k of an F16 tensor, as f32. */
float qp_test_f16_at(const qp_tensor_view *t, uint64_t k);
/* Field idx of a little-endian stream of `bits`-bit fields (1..16) whose
 * word w is word base + w·stride of t (GPTQ's qweight: stride = columns). */
unsigned qp_test_stream_field(const qp_tensor_view *t, uint64_t base, uint64_t stride, uint64_t idx, int bits);

#endif
