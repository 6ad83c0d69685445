/* The fuzz harnesses that build a tokenizer run it the same way: an encode
 * of sample text (special tokens parsed), ids in range, a decode, then free. */
#ifndef QP_TESTS_FUZZ_TOK_H
#define QP_TESTS_FUZZ_TOK_H

#include <stdlib.h>

#include "model/tokenizer.h"

static inline void fuzz_run_tokenizer(qp_tokenizer *t, const char *text, size_t len)
{
    int *ids = NULL;
    size_t n = 0;
    if (qp_tokenizer_encode(t, text, len, QP_TOK_PARSE_SPECIAL, &ids, &n) == 0) {
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || (size_t)ids[i] >= qp_tokenizer_n_vocab(t))
                abort();
        char *back = NULL;
        size_t bl = 0;
        if (qp_tokenizer_decode(t, ids, n, 0, &back, &bl) == 0)
            free(back);
        free(ids);
    }
    qp_tokenizer_free(t);
}

#endif
