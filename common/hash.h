/* SHA-256 through OpenSSL's EVP interface.  Digests travel as 64 lowercase
 * hex characters plus NUL (QP_HEX_LEN bytes). */
#ifndef QP_COMMON_HASH_H
#define QP_COMMON_HASH_H

#include <stddef.h>
#include <stdint.h>

#define QP_DIGEST_LEN 32
#define QP_HEX_LEN 65

typedef struct qp_sha256 qp_sha256;

int qp_sha256_new(qp_sha256 **out);
void qp_sha256_update(qp_sha256 *h, const void *data, size_t n);
/* Writes the hex digest and resets the context for reuse. */
void qp_sha256_final_hex(qp_sha256 *h, char out[QP_HEX_LEN]);
void qp_sha256_free(qp_sha256 *h);

void qp_sha256_buf(char out[QP_HEX_LEN], const void *data, size_t n);
/* Streams the file (mmap for large files); error names the path. */
int qp_sha256_file(char out[QP_HEX_LEN], const char *path);

/* 1 when s is 64 lowercase hex characters. */
int qp_is_hex_digest(const char *s);
/* FNV-1a of a NUL-terminated string: the in-memory name tables (YAML keys
 * and anchors, imatrix entries); not a content digest. */
uint64_t qp_str_hash(const char *s);

#endif
