/* One error-reporting helper for the whole program (libgit2 style).
 *
 * Every fallible function returns 0 on success or a negative qp_err code, and
 * before returning a negative code it calls qp_error_set() with ONE line that
 * names the file / line / tensor and says what to do.  The message is kept in
 * thread-local storage so parallel stages do not clobber each other; the
 * caller that finally reports it reads qp_error_last(). */
#ifndef QP_COMMON_ERROR_H
#define QP_COMMON_ERROR_H

typedef enum {
    QP_OK        = 0,
    QP_ERROR     = -1,  /* generic failure: I/O, allocation, a stage failed */
    QP_EUSAGE    = -2,  /* bad recipe or command-line usage (exit 2) */
    QP_EGATE     = -3,  /* a gate rejected the artifact (exit 3) */
    QP_EVERIFY   = -4,  /* `qpipe verify` found a different output (exit 4) */
    QP_ENOTFOUND = -5,  /* a lookup missed; like every code, set with a message naming what was
                           looked for and where (callers may treat it as "absent", not fail) */
    QP_ECORRUPT  = -6,  /* a cache object or input file is corrupt */
    QP_EFORMAT   = -7   /* a model/tokenizer/file is malformed */
} qp_err;

/* The longest message kept (bytes, NUL included): a message carried from
 * one thread to another fits in a buffer of this size. */
#define QP_ERROR_MAX 1024

/* Records the message for this thread and returns `code`, so callers write
 *   return qp_error_set(QP_EFORMAT, "%s: tensor '%s': ...", path, name); */
int qp_error_set(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Like qp_error_set but appends ": strerror(errno)". */
int qp_error_errno(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefixes the current message with "prefix: " (adds context on the way up). */
void qp_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Keeps the current message but gives it another code (a lower layer's
 * QP_ERROR that is, for this caller, a usage error); returns code. */
int qp_error_recode(int code);
const char *qp_error_last(void);   /* "" when none */
int qp_error_last_code(void);
void qp_error_clear(void);

#endif
