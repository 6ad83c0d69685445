#include "common/hash.h"
#include "common/alloc.h"
#include "common/error.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct qp_sha256 {
    EVP_MD_CTX *ctx;
};

int qp_sha256_new(qp_sha256 **out)
{
    qp_sha256 *h = qp_xcalloc(1, sizeof(*h));
    if (!(h->ctx = EVP_MD_CTX_new()))   /* OpenSSL's own allocation */
        qp_out_of_memory(0, __FILE__, __LINE__);
    EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL);
    *out = h;
    return 0;
}

void qp_sha256_update(qp_sha256 *h, const void *data, size_t n)
{
    EVP_DigestUpdate(h->ctx, data, n);
}

static void to_hex(char out[QP_HEX_LEN], const unsigned char *d)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < QP_DIGEST_LEN; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[64] = '\0';
}

void qp_sha256_final_hex(qp_sha256 *h, char out[QP_HEX_LEN])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(h->ctx, d, &n);
    to_hex(out, d);
    EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL);
}

void qp_sha256_free(qp_sha256 *h)
{
    if (!h)
        return;
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

void qp_sha256_buf(char out[QP_HEX_LEN], const void *data, size_t n)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(data, n, d, &len, EVP_sha256(), NULL);
    to_hex(out, d);
}

int qp_sha256_file(char out[QP_HEX_LEN], const char *path)
{
    int rc = QP_ERROR;
    qp_sha256 *h = NULL;
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return qp_error_errno(QP_ERROR, "%s: cannot open for hashing", path);
    if (fstat(fd, &st) != 0) {
        qp_error_errno(QP_ERROR, "%s: cannot stat", path);
        goto done;
    }
    if ((rc = qp_sha256_new(&h)) != 0)
        goto done;
    /* Hash through a moving mmap window: no copy into user space and the
     * page cache is read ahead sequentially. */
    const size_t window = (size_t)64 << 20;
    for (off_t off = 0; off < st.st_size;) {
        size_t n = (size_t)(st.st_size - off) < window ? (size_t)(st.st_size - off) : window;
        void *p = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, off);
        if (p == MAP_FAILED) {
            rc = qp_error_errno(QP_ERROR, "%s: cannot map for hashing", path);
            goto done;
        }
        madvise(p, n, MADV_SEQUENTIAL);
        qp_sha256_update(h, p, n);
        munmap(p, n);
        off += (off_t)n;
    }
    qp_sha256_final_hex(h, out);
    rc = 0;
done:
    qp_sha256_free(h);
    close(fd);
    return rc;
}

int qp_is_hex_digest(const char *s)
{
    if (!s || strlen(s) != 64)
        return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

uint64_t qp_str_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}
