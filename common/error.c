#include "common/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char error_msg[QP_ERROR_MAX];
static _Thread_local int error_code;

/* Keeps the message on one line: a multi-line message breaks the CLI's
 * one-line-per-error contract and the NDJSON event stream. */
static void flatten(char *s)
{
    for (; *s; s++)
        if (*s == '\n' || *s == '\r')
            *s = ' ';
}

int qp_error_set(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_msg, sizeof(error_msg), fmt, ap);
    va_end(ap);
    flatten(error_msg);
    error_code = code;
    return code;
}

int qp_error_errno(int code, const char *fmt, ...)
{
    int saved = errno;
    char head[QP_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof(head), fmt, ap);
    va_end(ap);
    return qp_error_set(code, "%s: %s", head, strerror(saved));
}

void qp_error_prefix(const char *fmt, ...)
{
    char head[QP_ERROR_MAX], old[QP_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof(head), fmt, ap);
    va_end(ap);
    memcpy(old, error_msg, sizeof(old));
    /* truncation of an over-long message is fine: build it piecewise so the
     * compiler does not flag the intended cut */
    size_t hl = strnlen(head, sizeof(error_msg) - 1);
    memcpy(error_msg, head, hl);
    size_t pos = hl;
    const char *parts[2] = {": ", old};
    for (int i = 0; i < 2; i++) {
        size_t n = strnlen(parts[i], sizeof(error_msg) - 1 - pos);
        memcpy(error_msg + pos, parts[i], n);
        pos += n;
    }
    error_msg[pos] = '\0';
    flatten(error_msg);
}

int qp_error_recode(int code)
{
    error_code = code;
    return code;
}

const char *qp_error_last(void) { return error_msg; }
int qp_error_last_code(void) { return error_code; }

void qp_error_clear(void)
{
    error_msg[0] = '\0';
    error_code = 0;
}
