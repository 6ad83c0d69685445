/* Shared by the libFuzzer harnesses (make fuzz): the parsers that take a
 * path get the input through one file per process in $TMPDIR, rewritten
 * for every input. */
#ifndef QP_TESTS_FUZZ_UTIL_H
#define QP_TESTS_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"

/* The path the current input was written to (NULL when it could not be). */
static inline const char *fuzz_file(const uint8_t *data, size_t size, const char *name)
{
    static char path[4096];
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/qpipe-fuzz-%d-%s", tmp && *tmp ? tmp : "/tmp", (int)getpid(), name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return NULL;
    int ok = fwrite(data, 1, size, f) == size;
    ok &= fclose(f) == 0;
    return ok ? path : NULL;
}

/* A NUL-terminated copy (the caller frees). */
static inline char *fuzz_text(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s) {
        memcpy(s, data, size);
        s[size] = 0;
    }
    return s;
}

/* Every parser error must be one line naming something: a message with a
 * newline, or an error without a message, is a finding. */
static inline void fuzz_check_error(int rc)
{
    if (rc == 0)
        return;
    const char *m = qp_error_last();
    if (!m[0] || strchr(m, '\n'))
        abort();
    qp_error_clear();
}

#endif
