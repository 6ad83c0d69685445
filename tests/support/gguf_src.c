#include "tests/support/gguf_src.h"
#include "tests/support/testutil.h"

#include "common/error.h"
#include "common/fsutil.h"
#include "model/gguf.h"
#include "common/tensor.h"
#include "quant/qtypes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void qp_test_gguf_src_open(qp_test_gguf_src *s, qp_gguf_llama_source *src, const char *model_dir,
                           const qp_llama_config *cfg)
{
    memset(s, 0, sizeof(*s));
    memset(src, 0, sizeof(*src));
    assert_int_equal(qp_checkpoint_open(&s->ck, model_dir), 0);
    s->ftype = -1;
    assert_int_equal(qp_ggml_mix_ctx_init_arch(&s->mix, qp_gguf_llama_arch(cfg), cfg->n_layers, cfg->n_heads,
                                               cfg->n_kv_heads, cfg->tied_embeddings), 0);
    src->ud = s;
    src->tensor_type = qp_test_gguf_src_type;
    src->tensor_data = qp_test_gguf_src_data;
}

void qp_test_gguf_src_close(qp_test_gguf_src *s)
{
    qp_checkpoint_free(s->ck);
    s->ck = NULL;
}

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

/* Key by key, then tensor by tensor, then the whole file: the first
 * difference is reported before the byte comparison fails. */
void qp_test_assert_same_gguf(const char *got_path, const char *want_rel)
{
    char *want_path = qp_test_shared_path(want_rel);
    qp_gguf *a, *b;
    assert_int_equal(qp_gguf_open(&a, got_path), 0);
    assert_int_equal(qp_gguf_open(&b, want_path), 0);
    for (size_t i = 0; i < qp_gguf_kv_count(a) && i < qp_gguf_kv_count(b); i++) {
        if (strcmp(qp_gguf_kv_key(a, i), qp_gguf_kv_key(b, i)) != 0)
            fprintf(stderr, "%s: kv %zu: %s, llama.cpp has %s\n", want_rel, i, qp_gguf_kv_key(a, i),
                    qp_gguf_kv_key(b, i));
        assert_string_equal(qp_gguf_kv_key(a, i), qp_gguf_kv_key(b, i));
        assert_int_equal(qp_gguf_value_type(qp_gguf_kv_value(a, i)), qp_gguf_value_type(qp_gguf_kv_value(b, i)));
    }
    assert_int_equal(qp_gguf_kv_count(a), qp_gguf_kv_count(b));
    assert_int_equal(qp_gguf_tensor_count(a), qp_gguf_tensor_count(b));
    for (size_t i = 0; i < qp_gguf_tensor_count(a); i++) {
        const qp_gguf_tensor *x = qp_gguf_tensor_at(a, i), *y = qp_gguf_tensor_at(b, i);
        assert_string_equal(x->name, y->name);
        if (x->type != y->type)
            fprintf(stderr, "%s: tensor %s: type %u, llama.cpp has %u\n", want_rel, x->name, x->type, y->type);
        assert_int_equal(x->type, y->type);
        assert_int_equal(x->n_dims, y->n_dims);
        assert_memory_equal(x->ne, y->ne, sizeof(x->ne));
        assert_int_equal(x->offset, y->offset);
        if (memcmp(x->data, y->data, x->nbytes) != 0)
            fprintf(stderr, "%s: tensor %s data differs\n", want_rel, x->name);
        assert_true(memcmp(x->data, y->data, x->nbytes) == 0);
    }
    qp_gguf_free(a);
    qp_gguf_free(b);
    char *x = NULL, *y = NULL;
    size_t na = 0, nb = 0;
    assert_int_equal(qp_read_file(got_path, &x, &na), 0);
    assert_int_equal(qp_read_file(want_path, &y, &nb), 0);
    assert_int_equal(na, nb);
    assert_true(memcmp(x, y, na) == 0);
    free(x);
    free(y);
    free(want_path);
}

