#include "common/xxh64.h"

#include <string.h>

#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL
#define P4 0x85EBCA77C2B2AE63ULL
#define P5 0x27D4EB2F165667C5ULL

static inline uint64_t rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

/* little-endian loads, whatever the host (one load where it is little-endian) */
static inline uint64_t le64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint32_t le32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline uint64_t round64(uint64_t acc, uint64_t lane)
{
    return rotl(acc + lane * P2, 31) * P1;
}

static inline uint64_t merge(uint64_t h, uint64_t acc)
{
    return (h ^ round64(0, acc)) * P1 + P4;
}

/* whole 32-byte stripes of p[0..n): returns the bytes consumed */
static size_t stripes(uint64_t acc[4], const unsigned char *p, size_t n)
{
    size_t done = 0;
    uint64_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (; done + 32 <= n; done += 32, p += 32) {
        a0 = round64(a0, le64(p));
        a1 = round64(a1, le64(p + 8));
        a2 = round64(a2, le64(p + 16));
        a3 = round64(a3, le64(p + 24));
    }
    acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
    return done;
}

void qp_xxh64_init(qp_xxh64 *s)
{
    memset(s, 0, sizeof(*s));
    s->acc[0] = P1 + P2;
    s->acc[1] = P2;
    s->acc[2] = 0;
    s->acc[3] = (uint64_t)0 - P1;
}

void qp_xxh64_update(qp_xxh64 *s, const void *data, size_t n)
{
    const unsigned char *p = data;
    s->total += n;
    if (s->buf_len > 0) {
        size_t take = 32 - s->buf_len < n ? 32 - s->buf_len : n;
        memcpy(s->buf + s->buf_len, p, take);
        s->buf_len += take;
        p += take;
        n -= take;
        if (s->buf_len < 32)
            return;
        stripes(s->acc, s->buf, 32);
        s->buf_len = 0;
    }
    size_t done = stripes(s->acc, p, n);
    memcpy(s->buf, p + done, n - done);
    s->buf_len = n - done;
}

uint64_t qp_xxh64_digest(const qp_xxh64 *s)
{
    uint64_t h;
    if (s->total >= 32) {
        h = rotl(s->acc[0], 1) + rotl(s->acc[1], 7) + rotl(s->acc[2], 12) + rotl(s->acc[3], 18);
        for (int i = 0; i < 4; i++)
            h = merge(h, s->acc[i]);
    } else {
        h = s->acc[2] + P5;   /* the seed (0) + P5 */
    }
    h += s->total;
    const unsigned char *p = s->buf;
    size_t n = s->buf_len;
    for (; n >= 8; n -= 8, p += 8)
        h = rotl(h ^ round64(0, le64(p)), 27) * P1 + P4;
    if (n >= 4) {
        h = rotl(h ^ (uint64_t)le32(p) * P1, 23) * P2 + P3;
        p += 4;
        n -= 4;
    }
    for (; n > 0; n--, p++)
        h = rotl(h ^ (uint64_t)*p * P5, 11) * P1;
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

uint64_t qp_xxh64_buf(const void *data, size_t n)
{
    qp_xxh64 s;
    qp_xxh64_init(&s);
    qp_xxh64_update(&s, data, n);
    return qp_xxh64_digest(&s);
}
