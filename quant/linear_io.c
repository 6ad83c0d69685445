/* Serialised form of qp_linear (layout in quant/linear.h): a 64-byte
 * header, then codes, fp16 scales, zeros and g_idx, little-endian, with a
 * payload checksum.  Deserialisation validates everything a consumer relies
 * on before returning an object. */
#include "quant/linear.h"

#include "common/alloc.h"
#include "common/error.h"
#include "quant/linear_impl.h"

#include <stdlib.h>
#include <string.h>

#define LIN_MAGIC "QPLINEAR"
#define LIN_VERSION 1u
#define LIN_HEADER 64u

enum { FLAG_SYM = 1, FLAG_MSE = 2, FLAG_GIDX = 4 };

int qp_linear_serialize(const qp_linear *q, void **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    const size_t n = (size_t)q->rows * (size_t)q->cols;
    const size_t ng = (size_t)q->rows * (size_t)q->n_groups;
    const size_t payload = n + 2 * ng + ng + 4 * (size_t)q->cols;
    uint8_t *b = qp_xmalloc(LIN_HEADER + payload);
    memset(b, 0, LIN_HEADER);
    memcpy(b, LIN_MAGIC, 8);
    qp_lin_put_u32(b + 8, LIN_VERSION);
    qp_lin_put_u32(b + 12, (uint32_t)q->bits);
    qp_lin_put_u64(b + 16, (uint64_t)q->rows);
    qp_lin_put_u64(b + 24, (uint64_t)q->cols);
    qp_lin_put_u32(b + 32, (uint32_t)(int32_t)q->group_size_param);
    qp_lin_put_u32(b + 36, (uint32_t)((q->sym ? FLAG_SYM : 0) | (q->mse ? FLAG_MSE : 0) |
                                      (q->custom_g_idx ? FLAG_GIDX : 0)));
    qp_lin_put_u64(b + 40, (uint64_t)q->n_groups);
    qp_lin_put_u64(b + 48, (uint64_t)payload);

    uint8_t *p = b + LIN_HEADER;
    memcpy(p, q->codes, n);
    p += n;
    for (size_t i = 0; i < ng; i++)
        qp_lin_put_u16(p + 2 * i, q->scales[i]);
    p += 2 * ng;
    memcpy(p, q->zeros, ng);
    p += ng;
    for (int64_t c = 0; c < q->cols; c++)
        qp_lin_put_u32(p + 4 * c, (uint32_t)q->g_idx[c]);
    qp_lin_put_u64(b + 56, qp_lin_checksum(b + LIN_HEADER, payload));
    *out = b;
    *len = LIN_HEADER + payload;
    return 0;
}

int qp_linear_deserialize(qp_linear **out, const void *buf, size_t len, const char *what)
{
    *out = NULL;
    const uint8_t *b = buf;
    int rc = qp_lin_check_head(b, len, what, LIN_MAGIC, LIN_VERSION, LIN_HEADER, "linear-quantized weight");
    if (rc)
        return rc;
    const uint32_t bits = qp_lin_get_u32(b + 12);
    const int64_t rows = (int64_t)qp_lin_get_u64(b + 16);
    const int64_t cols = (int64_t)qp_lin_get_u64(b + 24);
    const int32_t gs = (int32_t)qp_lin_get_u32(b + 32);
    const uint32_t flags = qp_lin_get_u32(b + 36);
    const int64_t n_groups = (int64_t)qp_lin_get_u64(b + 40);
    const uint64_t payload = qp_lin_get_u64(b + 48);
    const uint64_t checksum = qp_lin_get_u64(b + 56);

    if (flags & ~(uint32_t)(FLAG_SYM | FLAG_MSE | FLAG_GIDX))
        return qp_error_set(QP_ECORRUPT, "%s: unknown flags 0x%x in the header", what, flags);
    qp_linear_params p = { .bits = (int)(bits > 64 ? 64 : bits), .group_size = gs,
                           .sym = (flags & FLAG_SYM) != 0, .mse = (flags & FLAG_MSE) != 0 };
    qp_linear *q = NULL;
    if (bits < 2 || bits > 8 || rows < 1 || cols < 1 || (gs != -1 && gs <= 0)) {
        return qp_error_set(QP_ECORRUPT, "%s: inconsistent header (bits %u, rows %lld, cols %lld, group_size %d)",
                            what, bits, (long long)rows, (long long)cols, gs);
    }
    /* sizes are checked against len before anything is allocated */
    uint64_t n, ng, expect;
    int64_t n_groups_expect = gs == -1 ? 1 : cols / gs;
    if (qp_lin_mul_ok(&n, (uint64_t)rows, (uint64_t)cols) || n_groups != n_groups_expect ||
        qp_lin_mul_ok(&ng, (uint64_t)rows, (uint64_t)n_groups) ||
        n > UINT64_MAX / 2 || ng > UINT64_MAX / 8 || (uint64_t)cols > UINT64_MAX / 8 ||
        (expect = n + 3 * ng + 4 * (uint64_t)cols) < n || payload != expect)
        return qp_error_set(QP_ECORRUPT,
                            "%s: inconsistent header: [%lld x %lld], group_size %d, %lld groups and %llu payload bytes do not agree",
                            what, (long long)rows, (long long)cols, gs, (long long)n_groups,
                            (unsigned long long)payload);
    rc = qp_lin_check_payload(b, len, what, LIN_HEADER, payload, checksum);
    if (rc)
        return rc;
    rc = qp_linear_new(&q, rows, cols, &p);
    if (rc) {
        qp_error_prefix("%s: header", what);
        return rc == QP_EUSAGE ? QP_ECORRUPT : rc;
    }
    const uint8_t *s = b + LIN_HEADER;
    memcpy(q->codes, s, n);
    s += n;
    for (size_t i = 0; i < ng; i++)
        q->scales[i] = qp_lin_get_u16(s + 2 * i);
    s += 2 * ng;
    memcpy(q->zeros, s, ng);
    s += ng;
    for (int64_t c = 0; c < cols; c++)
        q->g_idx[c] = (int32_t)qp_lin_get_u32(s + 4 * c);
    rc = qp_linear_validate(q, what);
    if (rc)
        goto fail;
    qp_lin_after_g_idx(q);
    if (q->custom_g_idx != ((flags & FLAG_GIDX) != 0)) {
        rc = qp_error_set(QP_ECORRUPT, "%s: the header's custom-g_idx flag disagrees with the stored g_idx", what);
        goto fail;
    }
    *out = q;
    return 0;
fail:
    qp_linear_free(q);
    return rc;
}
