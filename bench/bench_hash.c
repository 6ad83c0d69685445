/* bench_hash: SHA-256 throughput of qp_sha256_file against `openssl dgst
 * -sha256` on the same 1 GiB page-cached file, in the same run (so both
 * numbers come from the same machine and load).  Goal: ours/openssl >= 0.9.
 *
 * Usage: bench_hash [size_MiB]   (default 1024; file in $TMPDIR or /tmp)
 * Exit status 1 when the digests differ or the goal is missed. */
#include "common/error.h"
#include "common/fsutil.h"
#include "common/hash.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RUNS 3
#define GOAL 0.9

static int write_file(const char *path, int fd, size_t bytes)
{
    size_t chunk = (size_t)4 << 20;
    unsigned char *buf = malloc(chunk);
    if (!buf)
        return -1;
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (size_t i = 0; i < chunk; i += 8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        uint64_t v = x * 0x2545F4914F6CDD1DULL;
        memcpy(buf + i, &v, 8);
    }
    int rc = 0;
    for (size_t done = 0; done < bytes && rc == 0;) {
        size_t n = bytes - done < chunk ? bytes - done : chunk;
        buf[0] = (unsigned char)(done >> 22);  /* no two chunks identical */
        if (write(fd, buf, n) != (ssize_t)n) {
            fprintf(stderr, "%s: write failed\n", path);
            rc = -1;
        }
        done += n;
    }
    free(buf);
    return rc;
}

/* Reads the whole file once so both contenders start page-cached. */
static void warm(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return;
    static char buf[1 << 20];
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    close(fd);
}

static int openssl_digest(const char *path, char out[QP_HEX_LEN], double *secs)
{
    char *cmd = qp_strfmt("openssl dgst -sha256 -r '%s'", path);
    double t0 = qp_now();
    FILE *p = popen(cmd, "r");
    free(cmd);
    if (!p)
        return -1;
    char line[512] = "";
    char *ok = fgets(line, sizeof(line), p);
    int st = pclose(p);
    *secs = qp_now() - t0;
    if (!ok || st != 0 || strlen(line) < 64)
        return -1;
    memcpy(out, line, 64);  /* "-r" output: "<hex> *<file>" */
    out[64] = '\0';
    return 0;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 1024;
    const char *tmpdir = getenv("TMPDIR");
    char *path = NULL;
    int fd = -1, rc = 1;
    if (qp_mkstemp_in(tmpdir && *tmpdir ? tmpdir : "/tmp", "qpipe-bench-hash", &path, &fd) != 0) {
        fprintf(stderr, "bench_hash: %s\n", qp_error_last());
        return 1;
    }
    if (write_file(path, fd, mib << 20) != 0)
        goto done;
    close(fd);
    fd = -1;
    warm(path);

    double best_ours = 1e30, best_ssl = 1e30;
    char ours[QP_HEX_LEN], theirs[QP_HEX_LEN];
    for (int r = 0; r < RUNS; r++) {
        double t0 = qp_now();
        if (qp_sha256_file(ours, path) != 0) {
            fprintf(stderr, "bench_hash: %s\n", qp_error_last());
            goto done;
        }
        double t = qp_now() - t0;
        if (t < best_ours)
            best_ours = t;
        if (openssl_digest(path, theirs, &t) != 0) {
            fprintf(stderr, "bench_hash: `openssl dgst -sha256` failed\n");
            goto done;
        }
        if (t < best_ssl)
            best_ssl = t;
    }
    if (strcmp(ours, theirs) != 0) {
        fprintf(stderr, "bench_hash: digests differ: ours %s, openssl %s\n", ours, theirs);
        goto done;
    }
    double mb = (double)(mib << 20) / 1e6;
    double ratio = best_ssl / best_ours;  /* throughput ours / openssl */
    printf("sha256 %zu MiB (page-cached, best of %d)\n", mib, RUNS);
    printf("  qp_sha256_file       %8.1f MB/s\n", mb / best_ours);
    printf("  openssl dgst -sha256 %8.1f MB/s\n", mb / best_ssl);
    printf("  ratio ours/openssl   %8.3f  (goal >= %.1f: %s)\n", ratio, GOAL, ratio >= GOAL ? "met" : "MISSED");
    rc = ratio >= GOAL ? 0 : 1;
done:
    if (fd >= 0)
        close(fd);
    unlink(path);
    free(path);
    return rc;
}
