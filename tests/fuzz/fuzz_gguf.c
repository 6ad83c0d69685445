/* GGUF: the header, the tokenizer it carries, and the dequantization of
 * every tensor the parser accepts (bounded to 1 M weights a tensor). */
#include "model/gguf.h"
#include "model/tokenizer.h"
#include "quant/qtypes.h"
#include "tests/fuzz/fuzz_tok.h"
#include "tests/fuzz/fuzz_util.h"

static const char sample[] = "Hello world, <s> 123";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(data, size, "model.gguf");
    if (!path)
        return 0;
    qp_gguf *g = NULL;
    int rc = qp_gguf_open(&g, path);
    fuzz_check_error(rc);
    if (rc)
        return 0;
    for (size_t i = 0; i < qp_gguf_tensor_count(g); i++) {
        const qp_gguf_tensor *t = qp_gguf_tensor_at(g, i);
        const qp_qtype_info *q = qp_qtype_get((qp_ggml_type)t->type);
        if (!q || t->nelem == 0 || t->nelem > (1u << 20) || t->ne[0] % (uint64_t)q->block != 0)
            continue;
        int64_t cols = (int64_t)t->ne[0], rows = (int64_t)(t->nelem / t->ne[0]);
        float *row = malloc((size_t)cols * sizeof *row);
        size_t rb = qp_qtype_row_size((qp_ggml_type)t->type, cols);
        for (int64_t r = 0; row && r < rows && (uint64_t)(r + 1) * rb <= t->nbytes; r++)
            fuzz_check_error(qp_dequantize_row((qp_ggml_type)t->type, (const unsigned char *)t->data + r * rb, row,
                                               cols));
        free(row);
    }
    qp_tokenizer *tok = NULL;
    rc = qp_tokenizer_load_gguf(&tok, g, path);
    fuzz_check_error(rc);
    if (rc == 0)
        fuzz_run_tokenizer(tok, sample, sizeof sample - 1);
    qp_gguf_free(g);
    return 0;
}
