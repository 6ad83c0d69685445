#include "tests/support/gguf_src.h"
#include "tests/support/testutil.h"

#include "common/error.h"
#include "common/tensor.h"
#include "quant/qtypes.h"

#include <stdlib.h>
#include <string.h>

int qp_test_gguf_src_type(void *ud, const qp_gguf_llama_tensor *t, uint32_t *type)
{
    qp_test_gguf_src *s = ud;
    assert_false(t->generated);   /* rope_freqs is the exporter's, always F32 */
    if (s->ftype < 0) {
        *type = QP_GGML_F32;
        return 0;
    }
    const int64_t ne[2] = { (int64_t)t->ne[0], (int64_t)t->ne[1] };
    qp_ggml_mix_choice ch;
    int rc = qp_ggml_mix_tensor_type(&ch, (qp_llama_ftype)s->ftype, t->gguf_name, t->n_dims, ne, &s->mix);
    *type = (uint32_t)ch.type;
    return rc;
}

int qp_test_gguf_src_data(void *ud, const qp_gguf_llama_tensor *t, uint32_t type, void *dst, size_t nbytes)
{
    qp_test_gguf_src *s = ud;
    assert_false(t->generated);   /* never asked of the source */
    if (++s->data_calls == s->fail_on)
        return qp_error_set(QP_EFORMAT, "test source: tensor '%s': unreadable", t->hf_name);
    const qp_tensor_view *v = qp_checkpoint_find(s->ck, t->hf_name);
    assert_non_null(v);
    assert_int_equal(v->nelem, t->ne[0] * t->ne[1]);
    assert_int_equal(nbytes, t->ne[1] * qp_qtype_row_size((qp_ggml_type)type, (int64_t)t->ne[0]));
    float *f = malloc(v->nelem * sizeof(float));   /* [ne1, ne0] */
    assert_int_equal(qp_convert_to_f32(f, v->data, v->dtype, v->nelem), 0);
    int rc = qp_quantize((qp_ggml_type)type, f, dst, (int64_t)t->ne[1], (int64_t)t->ne[0], NULL, 1);
    free(f);
    return rc;
}

int qp_test_gguf_zero_data(void *ud, const qp_gguf_llama_tensor *t, uint32_t type, void *dst, size_t nbytes)
{
    (void)ud;
    (void)t;
    (void)type;
    memset(dst, 0, nbytes);
    return 0;
}
