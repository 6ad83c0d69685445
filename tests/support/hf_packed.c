#include "tests/support/hf_packed.h"

#include "common/tensor.h"

#include <string.h>

uint32_t qp_test_word_at(const qp_tensor_view *t, uint64_t k)
{
    uint32_t w;
    memcpy(&w, (const char *)t->data + 4 * k, 4);
    return w;
}

float qp_test_f16_at(const qp_tensor_view *t, uint64_t k)
{
    uint16_t h;
    memcpy(&h, (const char *)t->data + 2 * k, 2);
    return qp_f16_to_f32(h);
}

unsigned qp_test_stream_field(const qp_tensor_view *t, uint64_t base, uint64_t stride, uint64_t idx, int bits)
{
    uint64_t bit = idx * (uint64_t)bits, w = bit / 32;
    unsigned off = (unsigned)(bit % 32);
    uint64_t v = qp_test_word_at(t, base + w * stride) >> off;
    if (off + (unsigned)bits > 32)
        v |= (uint64_t)qp_test_word_at(t, base + (w + 1) * stride) << (32 - off);
    return (unsigned)(v & ((1u << bits) - 1));
}
