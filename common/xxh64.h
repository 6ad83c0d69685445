/* XXH64 (xxHash's 64-bit hash, seed 0), written from the published
 * specification (github.com/Cyan4973/xxHash, doc/xxhash_spec.md): the
 * checksum zstd frames carry (their 4-byte Content_Checksum is its low 32
 * bits).  The cache uses it to check a stored object on every read at
 * ~10 GB/s, where SHA-256 runs at ~2 GB/s (cache/object.c says why that
 * is enough there).  Not a cryptographic hash.
 *
 * The state is a plain struct so that a caller can keep one on the stack;
 * treat its fields as private. */
#ifndef QP_COMMON_XXH64_H
#define QP_COMMON_XXH64_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t acc[4];
    uint64_t total;          /* bytes seen */
    unsigned char buf[32];   /* a partial 32-byte stripe */
    size_t buf_len;
} qp_xxh64;

void qp_xxh64_init(qp_xxh64 *s);
void qp_xxh64_update(qp_xxh64 *s, const void *data, size_t n);
/* The hash of everything given so far (the state stays usable). */
uint64_t qp_xxh64_digest(const qp_xxh64 *s);
uint64_t qp_xxh64_buf(const void *data, size_t n);

#endif
