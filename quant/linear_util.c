/* Shared machinery of the linear / NF4 / INT8 quantizers: the fixed-chunk
 * parallel-for, the payload checksum and the frame checks of the serialised
 * formats (see quant/linear_impl.h). */
#include "quant/linear_impl.h"

#include "common/alloc.h"
#include "common/error.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    int64_t n, chunk, n_chunks;
    int n_threads;
    qp_lin_chunk_fn fn;
    void *ctx;
    int *status;   /* [n_chunks] */
} par_job;

typedef struct {
    par_job *j;
    int t;
} par_arg;

static void *par_worker(void *p)
{
    par_arg *a = p;
    par_job *j = a->j;
    for (int64_t c = a->t; c < j->n_chunks; c += j->n_threads) {
        int64_t b = c * j->chunk;
        int64_t e = b + j->chunk < j->n ? b + j->chunk : j->n;
        j->status[c] = j->fn(j->ctx, b, e, c);
    }
    return NULL;
}

int64_t qp_lin_parallel(int64_t n, int64_t chunk, int n_threads, qp_lin_chunk_fn fn, void *ctx)
{
    if (chunk < 1)
        chunk = 1;
    par_job j = { .n = n, .chunk = chunk, .n_chunks = qp_lin_nchunks(n, chunk), .fn = fn, .ctx = ctx };
    if (j.n_chunks == 0)
        return -1;
    if (n_threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)c : 1;
    }
    if (n_threads > j.n_chunks)
        n_threads = (int)j.n_chunks;
    j.n_threads = n_threads;

    int status_one = 0;
    j.status = j.n_chunks == 1 ? &status_one : qp_xcalloc((size_t)j.n_chunks, sizeof *j.status);
    par_arg *args = n_threads > 1 ? qp_xmalloc((size_t)n_threads * sizeof *args) : NULL;
    pthread_t *tids = n_threads > 1 ? qp_xmalloc((size_t)n_threads * sizeof *tids) : NULL;
    char *started = n_threads > 1 ? qp_xcalloc((size_t)n_threads, 1) : NULL;
    int64_t first = -1;
    if (n_threads == 1) {
        par_arg a = { &j, 0 };
        j.n_threads = 1;
        par_worker(&a);
    } else {
        for (int t = 0; t < n_threads; t++)
            args[t] = (par_arg){ &j, t };
        for (int t = 1; t < n_threads; t++)
            started[t] = pthread_create(&tids[t], NULL, par_worker, &args[t]) == 0;
        par_worker(&args[0]);
        for (int t = 1; t < n_threads; t++) {
            if (started[t])
                pthread_join(tids[t], NULL);
            else
                par_worker(&args[t]);   /* same chunks, on this thread */
        }
    }
    for (int64_t c = 0; c < j.n_chunks; c++) {
        if (j.status[c]) {
            first = c;
            break;
        }
    }
    if (j.status != &status_one)
        free(j.status);
    free(args);
    free(tids);
    free(started);
    return first;
}

/* ---- serialisation helpers -------------------------------------------- */

static inline uint64_t fmix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* Four independent lanes (so the multiplies overlap), each mixing one
 * little-endian 8-byte word per step; the tail is zero-padded and the length
 * is folded in, so a truncated or extended buffer changes the sum. */
uint64_t qp_lin_checksum(const void *data, size_t n)
{
    const uint8_t *p = data;
    uint64_t h[4] = { 0x9e3779b97f4a7c15ull, 0xbf58476d1ce4e5b9ull, 0x94d049bb133111ebull,
                      0x2545f4914f6cdd1dull };
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        for (int k = 0; k < 4; k++) {
            uint64_t w = qp_lin_get_u64(p + i + 8 * (size_t)k);
            h[k] = (h[k] ^ w) * 0x9fb21c651e98df25ull;
            h[k] ^= h[k] >> 29;
        }
    }
    uint8_t tail[32] = { 0 };
    memcpy(tail, p + i, n - i);
    for (int k = 0; k < 4; k++) {
        uint64_t w = qp_lin_get_u64(tail + 8 * k);
        h[k] = (h[k] ^ w) * 0x9fb21c651e98df25ull;
        h[k] ^= h[k] >> 29;
    }
    uint64_t r = (uint64_t)n;
    for (int k = 0; k < 4; k++)
        r = fmix64(r ^ h[k]);
    return r;
}

void qp_lin_put_f32s(uint8_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        qp_lin_put_u32(dst + 4 * i, u);
    }
}

void qp_lin_get_f32s(float *dst, const uint8_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = qp_lin_get_u32(src + 4 * i);
        memcpy(&dst[i], &u, 4);
    }
}

int qp_lin_check_head(const uint8_t *buf, size_t len, const char *what, const char *magic8,
                      uint32_t version, size_t header_len, const char *format_name)
{
    if (!buf || len < 8 || memcmp(buf, magic8, 8) != 0)
        return qp_error_set(QP_ECORRUPT, "%s: bad magic: not a serialised %s; the cache object is damaged or of another kind",
                            what, format_name);
    if (len < header_len)
        return qp_error_set(QP_ECORRUPT, "%s: truncated %s buffer: %zu bytes, the header alone needs %zu",
                            what, format_name, len, header_len);
    uint32_t v = qp_lin_get_u32(buf + 8);
    if (v != version)
        return qp_error_set(QP_ECORRUPT, "%s: %s version %u is not supported (this build reads %u); re-run the quantize stage",
                            what, format_name, v, version);
    return 0;
}

int qp_lin_check_payload(const uint8_t *buf, size_t len, const char *what, size_t header_len,
                         uint64_t payload_len, uint64_t checksum)
{
    if (payload_len > (uint64_t)(len - header_len))
        return qp_error_set(QP_ECORRUPT, "%s: truncated: the header announces %llu payload bytes, only %zu follow",
                            what, (unsigned long long)payload_len, len - header_len);
    if (payload_len < (uint64_t)(len - header_len))
        return qp_error_set(QP_ECORRUPT, "%s: %zu unexpected bytes after the %llu-byte payload",
                            what, len - header_len - (size_t)payload_len, (unsigned long long)payload_len);
    uint64_t sum = qp_lin_checksum(buf + header_len, (size_t)payload_len);
    if (sum != checksum)
        return qp_error_set(QP_ECORRUPT, "%s: payload checksum mismatch (stored %016llx, computed %016llx): the data is damaged",
                            what, (unsigned long long)checksum, (unsigned long long)sum);
    return 0;
}

int qp_lin_mul_ok(uint64_t *out, uint64_t a, uint64_t b)
{
    if (a != 0 && b > UINT64_MAX / a)
        return -1;
    *out = a * b;
    return 0;
}
