/* Internal helpers shared by quant/linear*.c, quant/nf4.c and quant/int8.c
 * (not part of any public contract):
 *  - a parallel-for over FIXED-SIZE chunks: chunk c is items
 *    [c·chunk, min(n, (c+1)·chunk)), thread t runs chunks t, t+T, t+2T, …
 *    The chunking does not depend on the thread count, and every quantizer
 *    here computes each chunk from that chunk's input alone, so the bytes
 *    are the same for any T.  Workers never call qp_error_set (its message
 *    is thread-local): a chunk returns a nonzero status and records details
 *    in its own slot of the caller's context; the caller reports the first
 *    failed chunk, which is the first failure in item order.
 *  - little-endian writers/readers for the serialised formats, with a
 *    bounds-checked reader whose errors name the caller's `what`;
 *  - a 64-bit checksum over the payload of those formats. */
#ifndef QP_QUANT_LINEAR_IMPL_H
#define QP_QUANT_LINEAR_IMPL_H

#include <stddef.h>
#include <stdint.h>

/* Runs fn on chunk `c` = items [begin, end).  Returns 0 or a nonzero
 * status that stops nothing else (other chunks still run). */
typedef int (*qp_lin_chunk_fn)(void *ctx, int64_t begin, int64_t end, int64_t c);

/* n_threads <= 0: one per online CPU.  Returns the index of the first chunk
 * whose fn returned nonzero, or -1 when all succeeded.  Chunks whose thread
 * could not be created run on the calling thread. */
int64_t qp_lin_parallel(int64_t n, int64_t chunk, int n_threads, qp_lin_chunk_fn fn, void *ctx);

/* Number of chunks of `chunk` items covering n items. */
static inline int64_t qp_lin_nchunks(int64_t n, int64_t chunk)
{
    return n <= 0 ? 0 : (n + chunk - 1) / chunk;
}

/* ---- serialisation ---------------------------------------------------- */

/* Order-dependent 64-bit checksum (word-wise multiply/xor-shift mixing,
 * murmur3 finaliser); not cryptographic: the cache's SHA-256 guards
 * integrity, this catches a damaged or mismatched buffer early. */
uint64_t qp_lin_checksum(const void *data, size_t n);

static inline void qp_lin_put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void qp_lin_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void qp_lin_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint16_t qp_lin_get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t qp_lin_get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline uint64_t qp_lin_get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* f32 arrays as little-endian IEEE bits (n elements). */
void qp_lin_put_f32s(uint8_t *dst, const float *src, size_t n);
void qp_lin_get_f32s(float *dst, const uint8_t *src, size_t n);

/* First check of a serialised buffer: len >= header_len, the 8-byte magic,
 * then the u32 version at offset 8.  Errors (QP_ECORRUPT, one line, naming
 * `what`): "WHAT: not a FORMAT buffer (bad magic)", "WHAT: truncated ...",
 * "WHAT: FORMAT version V is not supported (this build reads 1)". */
int qp_lin_check_head(const uint8_t *buf, size_t len, const char *what, const char *magic8,
                      uint32_t version, size_t header_len, const char *format_name);
/* Second check, once the header gave the payload size and its checksum:
 * header_len + payload_len == len (truncated / trailing bytes) and the
 * checksum of the payload matches. */
int qp_lin_check_payload(const uint8_t *buf, size_t len, const char *what, size_t header_len,
                         uint64_t payload_len, uint64_t checksum);

/* a·b·… without overflow (all >= 0); returns 0 and sets *out, or -1. */
int qp_lin_mul_ok(uint64_t *out, uint64_t a, uint64_t b);

/* ---- the linear representation (quant/linear.h) ------------------------ */

#include "quant/linear.h"

struct qp_linear {
    int64_t rows, cols, n_groups;
    int bits, maxq;
    int group_size_param;   /* as given: -1 (or 0) = one group per row */
    int group_size;         /* columns per group */
    int sym, mse;
    int custom_g_idx;       /* g_idx differs from c / group_size */
    uint8_t *codes;         /* [rows, cols] */
    uint16_t *scales;       /* [rows, n_groups] */
    uint8_t *zeros;         /* [rows, n_groups] */
    int32_t *g_idx;         /* [cols] */
    int32_t *order;         /* [cols]: columns grouped by g_idx, ascending within a group */
};

/* What went wrong in a row, recorded by workers and reported by the caller. */
enum { QP_LIN_OK = 0, QP_LIN_NONFINITE = 1, QP_LIN_OVERFLOW = 2 };
typedef struct {
    int kind;
    int64_t row, col, group;
    float xmin, xmax;       /* the fitted range, for QP_LIN_OVERFLOW */
} qp_lin_fail;

/* Sets the one-line error for f and returns QP_EUSAGE. */
int qp_lin_report(const qp_linear *q, const qp_lin_fail *f);

/* Grid fits from the group's raw min and max (wmin <= wmax, finite):
 * returns QP_LIN_OK or QP_LIN_OVERFLOW (then xmin and xmax hold the range). */
int qp_lin_fit_minmax(int bits, int sym, float wmin, float wmax, uint16_t *s16, uint8_t *z,
                      float *xmin, float *xmax);
/* The mse search over the n values of one group, in the order given. */
int qp_lin_fit_mse(int bits, int sym, const float *w, int64_t n, float wmin, float wmax,
                   uint16_t *s16, uint8_t *z, float *xmin, float *xmax);

/* Reference RTN of row r (w = that row, cols floats); scratch holds
 * group_size floats.  Returns QP_LIN_OK or fills *f. */
int qp_lin_rtn_row(qp_linear *q, const float *w, int64_t r, float *scratch, qp_lin_fail *f);

/* Recomputes the column order and the custom flag after g_idx was written
 * directly (deserialisation; g_idx already validated). */
void qp_lin_after_g_idx(qp_linear *q);

#endif
