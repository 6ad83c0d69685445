/* Small helpers shared by the tests/cache/ tests (header-only so every test
 * binary stays a single .c file as the Makefile expects). */
#ifndef QP_TESTS_CACHE_HELPERS_H
#define QP_TESTS_CACHE_HELPERS_H

#include "tests/support/testutil.h"

#include "cache/cache.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/hash.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A fresh cache in a temp directory per test (cmocka setup/teardown). */
typedef struct {
    char *dir;
    qp_cache *c;
} fixture;

static inline int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    f->dir = qp_test_tmpdir();
    char *cdir = qp_path_join(f->dir, "cache");
    assert_int_equal(qp_cache_open(&f->c, cdir), 0);
    free(cdir);
    *state = f;
    return 0;
}

static inline int teardown(void **state)
{
    fixture *f = *state;
    qp_cache_free(f->c);
    qp_test_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* Deterministic bytes: xorshift64* stream from a seed. */
static inline void fill_random(void *buf, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
    unsigned char *p = buf;
    for (size_t i = 0; i < n; i++) {
        if ((i & 7) == 0) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
        }
        p[i] = (unsigned char)((x * 0x2545F4914F6CDD1DULL) >> (8 * (i & 7)));
    }
}

/* Compressible but not trivial bytes (text-like). */
static inline void fill_text(void *buf, size_t n, uint64_t seed)
{
    static const char *words[] = {"alpha ", "beta ", "gamma ", "delta ", "tensor ", "quant ", "layer ", "\n"};
    char *p = buf;
    uint64_t x = seed + 7;
    size_t i = 0;
    while (i < n) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        const char *w = words[(x >> 33) & 7];
        for (size_t k = 0; w[k] && i < n; k++)
            p[i++] = w[k];
    }
}

static inline char *object_path(qp_cache *c, const char *digest)
{
    return qp_strfmt("%s/objects/%.2s/%s", qp_cache_dir(c), digest, digest + 2);
}

static inline char *action_path(qp_cache *c, const char *key_hex)
{
    return qp_strfmt("%s/actions/%.2s/%s", qp_cache_dir(c), key_hex, key_hex + 2);
}

/* Rewrites a file on disk (objects are stored read-only). */
static inline void overwrite_file(const char *path, const void *data, size_t n)
{
    chmod(path, 0644);
    int fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
}

static inline void flip_byte(const char *path, off_t off)
{
    chmod(path, 0644);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char b;
    assert_int_equal(pread(fd, &b, 1, off), 1);
    b ^= 0x5a;
    assert_int_equal(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

static inline off_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static inline void set_mtime(const char *path, time_t t)
{
    struct timespec ts[2] = {{t, 0}, {t, 0}};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static inline char *digest_str(int i)
{
    char d[QP_HEX_LEN];
    char *s = qp_strfmt("fake-%d", i);
    qp_sha256_buf(d, s, strlen(s));
    free(s);
    return qp_strdup(d);
}

#endif
