#include "tests/support/vocab_cases.h"
#include "tests/support/testutil.h"

#include "common/fsutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int qp_test_vocab_cases(const char *gguf_path, qp_test_vocab_case_fn fn, void *ud, int *total)
{
    char *ip = qp_strfmt("%s.inp", gguf_path), *op = qp_strfmt("%s.out", gguf_path);
    char *in = NULL, *out = NULL;
    assert_int_equal(qp_read_file(ip, &in, NULL), 0);
    assert_int_equal(qp_read_file(op, &out, NULL), 0);
    const char *sep = "\n__ggml_vocab_test__\n";
    size_t sl = strlen(sep);
    int ok = 0, n = 0;
    const char *o = out;
    for (const char *p = in, *e; (e = strstr(p, sep)) != NULL; p = e + sl, n++) {
        const char *oe = strchr(o, '\n');
        assert_non_null(oe);
        ok += fn(ud, n, p, (size_t)(e - p), o, (size_t)(oe - o)) ? 1 : 0;
        o = oe + 1;
    }
    *total = n;
    free(in);
    free(out);
    free(ip);
    free(op);
    return ok;
}

char *qp_test_ids_line(const int *ids, size_t n)
{
    char *s = malloc(12 * n + 1);
    assert_non_null(s);
    size_t l = 0;
    s[0] = '\0';
    for (size_t i = 0; i < n; i++)
        l += (size_t)sprintf(s + l, " %d", ids[i]);
    return s;
}

int qp_test_ids_match(const char *what, int index, const char *text, size_t text_len, const int *ids, size_t n,
                      const char *want, size_t want_len)
{
    char *got = qp_test_ids_line(ids, n);
    int same = strlen(got) == want_len && memcmp(got, want, want_len) == 0;
    if (!same)
        fprintf(stderr, "%s: text %d [%.*s]\n  got :%s\n  want:%.*s\n", what, index, (int)text_len, text, got,
                (int)want_len, want);
    free(got);
    return same;
}
