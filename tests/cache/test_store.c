/* Objects: round trips, dedup, streaming, corruption handling; meta blobs;
 * qp_parse_size. */
#include "tests/cache/cache_test_helpers.h"
#include "cache/cache_internal.h"
#include "common/xxh64.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <zstd.h>

static void expect_corrupt_msg(const char *digest, const char *reason)
{
    char *want = qp_strfmt("cache object %s: corrupt (%s); removed, rerun to recompute", digest, reason);
    assert_string_equal(qp_error_last(), want);
    free(want);
}

static void test_empty_object(void **state)
{
    fixture *f = *state;
    char d[QP_HEX_LEN];
    assert_int_equal(qp_cache_put(f->c, "", 0, d), 0);
    assert_string_equal(d, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_int_equal(qp_cache_has(f->c, d), 1);
    void *out = NULL;
    size_t n = 99;
    assert_int_equal(qp_cache_get(f->c, d, &out, &n), 0);
    assert_non_null(out);
    assert_int_equal(n, 0);
    free(out);
    uint64_t sz = 99;
    assert_int_equal(qp_cache_object_size(f->c, d, &sz), 0);
    assert_int_equal(sz, 0);
}

static void test_roundtrip_10mb(void **state)
{
    fixture *f = *state;
    size_t n = 10u << 20;
    unsigned char *data = malloc(n);
    fill_random(data, n, 42);
    char d[QP_HEX_LEN], want[QP_HEX_LEN];
    qp_sha256_buf(want, data, n);
    assert_int_equal(qp_cache_put(f->c, data, n, d), 0);
    assert_string_equal(d, want);
    void *out = NULL;
    size_t got = 0;
    assert_int_equal(qp_cache_get(f->c, d, &out, &got), 0);
    assert_int_equal(got, n);
    assert_memory_equal(out, data, n);
    uint64_t sz = 0;
    assert_int_equal(qp_cache_object_size(f->c, d, &sz), 0);
    assert_int_equal(sz, n);
    /* random bytes do not compress: stored, and still zstd that libzstd
     * (so `zstd -d`) decodes to the same bytes */
    char *p = object_path(f->c, d);
    char *raw = NULL;
    size_t rawn = 0;
    assert_int_equal(qp_read_file(p, &raw, &rawn), 0);
    assert_memory_equal(raw, "\x5e\x2a\x4d\x18\x08\0\0\0QPSTORE2", 16);
    unsigned char *back = malloc(n);
    assert_int_equal(ZSTD_decompress(back, n, raw, rawn), n);
    assert_memory_equal(back, data, n);
    free(back);
    free(raw);
    free(p);
    free(out);
    free(data);
}

static void test_dedup(void **state)
{
    fixture *f = *state;
    char text[4096], d1[QP_HEX_LEN], d2[QP_HEX_LEN];
    fill_text(text, sizeof(text), 1);
    assert_int_equal(qp_cache_put(f->c, text, sizeof(text), d1), 0);
    char *p = object_path(f->c, d1);
    struct stat st1, st2;
    assert_int_equal(stat(p, &st1), 0);
    assert_int_equal(qp_cache_put(f->c, text, sizeof(text), d2), 0);
    assert_string_equal(d1, d2);
    assert_int_equal(stat(p, &st2), 0);
    assert_int_equal(st1.st_ino, st2.st_ino);  /* not rewritten */
    qp_cache_stats s;
    assert_int_equal(qp_cache_stats_get(f->c, &s), 0);
    assert_int_equal(s.objects, 1);
    assert_int_equal(s.object_raw_bytes, sizeof(text));
    assert_int_equal(s.object_disk_bytes, (uint64_t)st1.st_size);
    assert_true(s.object_disk_bytes < sizeof(text) / 2);  /* compressed */
    assert_int_equal(s.tmp_files, 0);
    free(p);
}

/* ~50 MB: text (compressible) interleaved with random (incompressible). */
static char *make_big_file(const char *dir, uint64_t seed)
{
    char *path = qp_path_join(dir, "big.bin");
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    size_t chunk = 1u << 20;
    unsigned char *buf = malloc(chunk);
    for (int i = 0; i < 50; i++) {
        if (i % 2)
            fill_random(buf, chunk, seed + (uint64_t)i);
        else
            fill_text(buf, chunk, seed + (uint64_t)i);
        assert_int_equal(fwrite(buf, 1, chunk, fp), chunk);
    }
    assert_int_equal(fwrite("tail", 1, 4, fp), 4);
    fclose(fp);
    free(buf);
    return path;
}

static void test_put_file_get_to_file(void **state)
{
    fixture *f = *state;
    char *src = make_big_file(f->dir, 7);
    char want[QP_HEX_LEN], d[QP_HEX_LEN], back[QP_HEX_LEN];
    assert_int_equal(qp_sha256_file(want, src), 0);
    assert_int_equal(qp_cache_put_file(f->c, src, d), 0);
    assert_string_equal(d, want);
    uint64_t sz = 0;
    assert_int_equal(qp_cache_object_size(f->c, d, &sz), 0);
    assert_int_equal(sz, (50u << 20) + 4);
    char *dst = qp_path_join(f->dir, "out/sub/copy.bin");
    assert_int_equal(qp_cache_get_to_file(f->c, d, dst), 0);
    assert_int_equal(qp_sha256_file(back, dst), 0);
    assert_string_equal(back, want);
    assert_int_equal(file_size(dst), (off_t)(50u << 20) + 4);
    free(dst);
    free(src);
}

/* Streaming keeps memory flat: measured in a child so the peak RSS of the
 * other tests does not hide growth. */
static void test_streaming_constant_memory(void **state)
{
    fixture *f = *state;
    char *src = make_big_file(f->dir, 8);
    char *dst = qp_path_join(f->dir, "copy2.bin");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rusage r0, r1;
        getrusage(RUSAGE_SELF, &r0);
        char d[QP_HEX_LEN];
        int ok = qp_cache_put_file(f->c, src, d) == 0 && qp_cache_get_to_file(f->c, d, dst) == 0;
        getrusage(RUSAGE_SELF, &r1);
        long grew_kb = r1.ru_maxrss - r0.ru_maxrss;
        _exit(!ok ? 2 : grew_kb > 16 * 1024 ? 3 : 0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(file_size(dst), file_size(src));
    free(src);
    free(dst);
}

static void put_text(qp_cache *c, size_t n, uint64_t seed, char d[QP_HEX_LEN])
{
    char *buf = malloc(n);
    fill_text(buf, n, seed);
    assert_int_equal(qp_cache_put(c, buf, n, d), 0);
    free(buf);
}

static void test_corrupt_flipped_byte(void **state)
{
    fixture *f = *state;
    char d[QP_HEX_LEN];
    put_text(f->c, 200000, 3, d);
    char *p = object_path(f->c, d);
    flip_byte(p, file_size(p) / 2);
    void *out = (void *)0x1;
    size_t n = 0;
    assert_int_equal(qp_cache_get(f->c, d, &out, &n), QP_ECORRUPT);
    assert_ptr_equal(out, (void *)0x1);  /* untouched: no bytes returned */
    char *prefix = qp_strfmt("cache object %s: corrupt (zstd: ", d);
    assert_memory_equal(qp_error_last(), prefix, strlen(prefix));
    const char *suffix = "); removed, rerun to recompute";
    size_t ml = strlen(qp_error_last());
    assert_string_equal(qp_error_last() + ml - strlen(suffix), suffix);
    assert_false(qp_path_exists(p));
    assert_int_equal(qp_cache_has(f->c, d), 0);
    assert_int_equal(qp_cache_get(f->c, d, &out, &n), QP_ENOTFOUND);
    char *nf = qp_strfmt("cache object %s: not in the cache", d);
    assert_string_equal(qp_error_last(), nf);
    free(nf);
    free(prefix);
    free(p);
}

/* A valid frame holding other bytes: only the SHA-256 check can catch it. */
static void test_corrupt_other_content(void **state)
{
    fixture *f = *state;
    char d[QP_HEX_LEN];
    put_text(f->c, 5000, 4, d);
    char *p = object_path(f->c, d);
    char other[5000];
    fill_text(other, sizeof(other), 5);
    char frame[8192];
    size_t fl = ZSTD_compress(frame, sizeof(frame), other, sizeof(other), 3);
    assert_false(ZSTD_isError(fl));
    overwrite_file(p, frame, fl);
    void *out = NULL;
    size_t n = 0;
    assert_int_equal(qp_cache_get(f->c, d, &out, &n), QP_ECORRUPT);
    expect_corrupt_msg(d, "digest mismatch");
    assert_null(out);
    assert_false(qp_path_exists(p));

    /* same through get_to_file: the destination is never created */
    put_text(f->c, 5000, 4, d);
    overwrite_file(p, frame, fl);
    char *dst = qp_path_join(f->dir, "dst/out.txt");
    assert_int_equal(qp_cache_get_to_file(f->c, d, dst), QP_ECORRUPT);
    expect_corrupt_msg(d, "digest mismatch");
    assert_false(qp_path_exists(dst));
    char *dstdir = qp_path_join(f->dir, "dst");
    assert_int_equal(rmdir(dstdir), 0);  /* empty: no temp file left behind */
    free(dstdir);
    free(dst);
    free(p);
}

static void test_corrupt_truncated(void **state)
{
    fixture *f = *state;
    char d[QP_HEX_LEN];
    size_t n = 3u << 20;
    unsigned char *data = malloc(n);
    fill_random(data, n, 9);
    assert_int_equal(qp_cache_put(f->c, data, n, d), 0);
    char *p = object_path(f->c, d);
    chmod(p, 0644);
    assert_int_equal(truncate(p, file_size(p) / 2), 0);
    void *out = NULL;
    size_t got = 0;
    assert_int_equal(qp_cache_get(f->c, d, &out, &got), QP_ECORRUPT);
    expect_corrupt_msg(d, "truncated");
    assert_false(qp_path_exists(p));

    /* zero-length file */
    assert_int_equal(qp_cache_put(f->c, data, n, d), 0);
    overwrite_file(p, "", 0);
    assert_int_equal(qp_cache_get(f->c, d, &out, &got), QP_ECORRUPT);
    expect_corrupt_msg(d, "empty file");

    /* not zstd at all */
    assert_int_equal(qp_cache_put(f->c, data, n, d), 0);
    overwrite_file(p, "hello world, not zstd", 21);
    uint64_t sz;
    assert_int_equal(qp_cache_object_size(f->c, d, &sz), QP_ECORRUPT);
    expect_corrupt_msg(d, "not a zstd frame");
    assert_false(qp_path_exists(p));

    /* a valid frame followed by garbage */
    char small[1000], frame[2048];
    fill_text(small, sizeof(small), 11);
    assert_int_equal(qp_cache_put(f->c, small, sizeof(small), d), 0);
    free(p);
    p = object_path(f->c, d);
    size_t fl = ZSTD_compress(frame, sizeof(frame) - 8, small, sizeof(small), 3);
    memcpy(frame + fl, "GARBAGE!", 8);
    overwrite_file(p, frame, fl + 8);
    assert_int_equal(qp_cache_get(f->c, d, &out, &got), QP_ECORRUPT);
    expect_corrupt_msg(d, "trailing bytes after the zstd frame");
    free(p);
    free(data);
}

/* Text compresses: one zstd frame whose header records the size; weights
 * that barely compress and files of them are stored (raw blocks). */
static void test_compressed_or_stored(void **state)
{
    fixture *f = *state;
    size_t n = 3u << 20;
    char *text = malloc(n);
    fill_text(text, n, 21);
    char d[QP_HEX_LEN];
    assert_int_equal(qp_cache_put(f->c, text, n, d), 0);
    char *p = object_path(f->c, d), *raw = NULL;
    size_t rawn = 0;
    assert_int_equal(qp_read_file(p, &raw, &rawn), 0);
    assert_int_equal(ZSTD_getFrameContentSize(raw, rawn), n);
    assert_int_equal(ZSTD_findFrameCompressedSize(raw, rawn), rawn);
    assert_true(rawn < n / 4);
    free(raw);
    free(p);

    /* a file of random bytes, through put_file: stored, read back whole */
    unsigned char *data = malloc(n + 7);
    fill_random(data, n + 7, 22);
    char *src = qp_path_join(f->dir, "weights.bin"), *dst = qp_path_join(f->dir, "back/weights.bin");
    qp_test_write(src, data, n + 7);
    assert_int_equal(qp_cache_put_file(f->c, src, d), 0);
    p = object_path(f->c, d);
    assert_int_equal(qp_read_file(p, &raw, &rawn), 0);
    assert_memory_equal(raw + 8, "QPSTORE2", 8);
    /* 30 header bytes, 3 per block of at most 128 KiB, the 56-byte check frame */
    assert_int_equal(rawn, 30 + n + 7 + 3 * ((n + 7 + (128u << 10) - 1) / (128u << 10)) + 56);
    free(raw);
    uint64_t sz = 0;
    assert_int_equal(qp_cache_object_size(f->c, d, &sz), 0);
    assert_int_equal(sz, n + 7);
    assert_int_equal(qp_cache_get_to_file(f->c, d, dst), 0);
    char *got = NULL;
    size_t gl = 0;
    assert_int_equal(qp_read_file(dst, &got, &gl), 0);
    assert_int_equal(gl, n + 7);
    assert_memory_equal(got, data, n + 7);
    free(got);
    free(p);

    /* laid out like a GGUF: text first, norms (ones) last, weights between:
     * the weights decide */
    size_t head = 600u << 10, tail = 200u << 10;
    memcpy(data, text, head);
    memset(data + n - tail, 0x3f, tail);
    qp_test_write(src, data, n);
    assert_int_equal(qp_cache_put_file(f->c, src, d), 0);
    p = object_path(f->c, d);
    assert_int_equal(qp_read_file(p, &raw, &rawn), 0);
    assert_memory_equal(raw + 8, "QPSTORE2", 8);
    free(raw);
    free(p);
    free(src);
    free(dst);
    free(data);
    free(text);
}

/* Damage to a stored object is found and the object removed, each with its
 * reason. */
static void test_corrupt_stored(void **state)
{
    fixture *f = *state;
    size_t n = 2u << 20;
    unsigned char *data = malloc(n);
    fill_random(data, n, 23);
    char d[QP_HEX_LEN];
    void *out = NULL;
    size_t got = 0;
    struct {
        off_t at;              /* where to write */
        const char *bytes;
        size_t len;
        const char *reason;
    } cases[] = {
        {100000, "\xff", 1, "content checksum mismatch"},                       /* a payload byte */
        {30, "\x04\x00\x10", 3, "stored object with a compressed block"},       /* first block type 2 */
        {30, "\x00\x00\x20", 3, "stored block larger than 128 KiB"},            /* size 256 KiB */
        {30, "\x01\x00\x10", 3, "trailing bytes after the stored frame"},       /* first block says last */
        {22, "\x00\x00\x00\x01", 4, "truncated"},                             /* content size > file */
        {21, "\x39", 1, "stored object with a foreign frame header"},          /* window descriptor */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(qp_cache_put(f->c, data, n, d), 0);
        char *p = object_path(f->c, d);
        chmod(p, 0644);
        int fd = open(p, O_WRONLY);
        assert_true(fd >= 0);
        assert_int_equal(pwrite(fd, cases[i].bytes, cases[i].len, cases[i].at), (ssize_t)cases[i].len);
        close(fd);
        assert_int_equal(qp_cache_get(f->c, d, &out, &got), QP_ECORRUPT);
        expect_corrupt_msg(d, cases[i].reason);
        assert_false(qp_path_exists(p));
        free(p);
    }
    /* cut in the middle of a block, of the second block's header, after it */
    const off_t cuts[] = {30 + 100, 30 + 3 + (128 << 10) + 1, 30 + 3 + (128 << 10) + 3};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        off_t cut = cuts[i];
        assert_int_equal(qp_cache_put(f->c, data, n, d), 0);
        char *p = object_path(f->c, d);
        chmod(p, 0644);
        assert_int_equal(truncate(p, cut), 0);
        assert_int_equal(qp_cache_get(f->c, d, &out, &got), QP_ECORRUPT);
        expect_corrupt_msg(d, "truncated");
        /* the size alone: a header claiming more than the file holds is
         * not believed (the full check runs, says why and removes it) */
        assert_int_equal(qp_cache_put(f->c, data, n, d), 0);
        chmod(p, 0644);
        assert_int_equal(truncate(p, cut), 0);
        uint64_t sz = 0;
        assert_int_equal(qp_cache_object_size(f->c, d, &sz), QP_ECORRUPT);
        expect_corrupt_msg(d, "truncated");
        assert_false(qp_path_exists(p));
        free(p);
    }
    free(data);
}

/* The check frame of a stored object: a file copied to another object's
 * path is refused by name; a forgery that also rewrites the XXH64 passes a
 * read but not qp_cache_object_check (qpipe cache verify), which re-hashes
 * with SHA-256; a stored object from before check frames (QPSTORE1) is
 * still read, checked by SHA-256. */
static void test_stored_check_frame(void **state)
{
    fixture *f = *state;
    size_t n = 2u << 20;
    unsigned char *a = malloc(n), *b = malloc(n);
    fill_random(a, n, 31);
    fill_random(b, n, 32);
    char da[QP_HEX_LEN], db[QP_HEX_LEN];
    void *out = NULL;
    size_t got = 0;
    assert_int_equal(qp_cache_put(f->c, a, n, da), 0);
    assert_int_equal(qp_cache_put(f->c, b, n, db), 0);
    char *pa = object_path(f->c, da), *pb = object_path(f->c, db);
    char *raw = NULL;
    size_t rawn = 0;
    assert_int_equal(qp_read_file(pa, &raw, &rawn), 0);
    /* A's file under B's name */
    chmod(pb, 0644);
    qp_test_write(pb, raw, rawn);
    assert_int_equal(qp_cache_get(f->c, db, &out, &got), QP_ECORRUPT);
    expect_corrupt_msg(db, "the file holds another object");
    assert_false(qp_path_exists(pb));

    /* a forged payload byte with its XXH64 recomputed */
    unsigned char *forged = malloc(n);
    memcpy(forged, a, n);
    forged[n / 2] ^= 0x40;
    uint64_t x = qp_xxh64_buf(forged, n);
    unsigned char *fr = (unsigned char *)raw;
    size_t payload_at = 30 + 3 * ((n / 2) / (128u << 10) + 1) + n / 2;
    fr[payload_at] ^= 0x40;
    for (int i = 0; i < 8; i++)
        fr[rawn - 8 + (size_t)i] = (unsigned char)(x >> (8 * i));
    chmod(pa, 0644);
    qp_test_write(pa, raw, rawn);
    assert_int_equal(qp_cache_object_check(f->c, da, NULL), QP_ECORRUPT);
    expect_corrupt_msg(da, "digest mismatch");
    assert_false(qp_path_exists(pa));

    /* a QPSTORE1 object (no check frame) is read and checked by SHA-256 */
    fr[payload_at] ^= 0x40;   /* the original bytes again */
    fr[15] = '1';
    qp_test_write(pa, raw, rawn - 56);
    assert_int_equal(qp_cache_get(f->c, da, &out, &got), 0);
    assert_int_equal(got, n);
    assert_memory_equal(out, a, n);
    free(out);
    chmod(pa, 0644);
    fr[payload_at] ^= 0x01;
    qp_test_write(pa, raw, rawn - 56);
    assert_int_equal(qp_cache_get(f->c, da, &out, &got), QP_ECORRUPT);
    expect_corrupt_msg(da, "digest mismatch");
    free(forged);
    free(raw);
    free(pa);
    free(pb);
    free(a);
    free(b);
}

static void test_bad_digest_and_missing(void **state)
{
    fixture *f = *state;
    void *out;
    size_t n;
    assert_int_equal(qp_cache_get(f->c, "../../etc/passwd", &out, &n), QP_ERROR);
    assert_string_equal(qp_error_last(),
                        "invalid object digest '../../etc/passwd': expected 64 lowercase hex characters");
    assert_int_equal(qp_cache_has(f->c, "nothex"), 0);
    char d[QP_HEX_LEN];
    qp_sha256_buf(d, "absent", 6);
    uint64_t sz;
    assert_int_equal(qp_cache_object_size(f->c, d, &sz), QP_ENOTFOUND);
    char *dst = qp_path_join(f->dir, "never.bin");
    assert_int_equal(qp_cache_get_to_file(f->c, d, dst), QP_ENOTFOUND);
    assert_false(qp_path_exists(dst));
    free(dst);
    char *missing = qp_path_join(f->dir, "no-such-file");
    assert_int_equal(qp_cache_put_file(f->c, missing, d), QP_ENOTFOUND);
    char *msg = qp_strfmt("%s: cannot open: No such file or directory", missing);
    assert_string_equal(qp_error_last(), msg);
    free(msg);
    free(missing);
}

static void test_meta(void **state)
{
    fixture *f = *state;
    const char *names[] = {"simple", "with/slash", "..", ".hidden", "sp ace\nnl", "ünïcode", "a%2Fb"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char *text = qp_strfmt("value %zu", i);
        assert_int_equal(qp_cache_meta_put(f->c, "stage_keys", names[i], text), 0);
        free(text);
    }
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char *got = NULL, *want = qp_strfmt("value %zu", i);
        assert_int_equal(qp_cache_meta_get(f->c, "stage_keys", names[i], &got), 0);
        assert_string_equal(got, want);
        free(got);
        free(want);
    }
    /* escaping keeps everything inside meta/stage_keys */
    char *esc = qp_strfmt("%s/meta/stage_keys/with%%2Fslash", qp_cache_dir(f->c));
    assert_true(qp_path_exists(esc));
    free(esc);
    char longname[600];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(qp_cache_meta_put(f->c, "ns", longname, "long"), 0);
    char *got = NULL;
    assert_int_equal(qp_cache_meta_get(f->c, "ns", longname, &got), 0);
    assert_string_equal(got, "long");
    free(got);
    assert_int_equal(qp_cache_meta_put(f->c, "ns", "k", "one"), 0);
    assert_int_equal(qp_cache_meta_put(f->c, "ns", "k", "two"), 0);
    assert_int_equal(qp_cache_meta_get(f->c, "ns", "k", &got), 0);
    assert_string_equal(got, "two");
    free(got);
    assert_int_equal(qp_cache_meta_get(f->c, "ns", "absent", &got), QP_ENOTFOUND);
    assert_string_equal(qp_error_last(), "cache meta ns/absent: not found");
    assert_int_equal(qp_cache_meta_put(f->c, "../x", "k", "v"), QP_ERROR);
    assert_string_equal(qp_error_last(),
                        "cache meta: invalid namespace '../x' (use letters, digits, '_', '-', '.')");
    assert_int_equal(qp_cache_meta_put(f->c, "ns", "", "v"), QP_ERROR);
    assert_string_equal(qp_error_last(), "cache meta ns: empty name");
}

static void test_parse_size(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint64_t v;
    } ok[] = {
        {"0", 0},
        {"1000", 1000},
        {"100k", 102400},
        {"100K", 102400},
        {"512M", 536870912ULL},
        {"10G", 10737418240ULL},
        {"1.5GiB", 1610612736ULL},
        {"1.5G", 1610612736ULL},
        {"2TB", 2199023255552ULL},
        {"0.5k", 512},
        {" 64 MiB ", 67108864ULL},
        {"123B", 123},
        {"1.0001K", 1024},
        {"16777215T", 18446742974197923840ULL},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        uint64_t v = 7;
        int rc = qp_parse_size(ok[i].s, &v);
        if (rc != 0)
            fail_msg("'%s': %s", ok[i].s, qp_error_last());
        assert_int_equal(v, ok[i].v);
    }
    static const struct {
        const char *s, *why;
    } bad[] = {
        {"", "empty"},
        {"abc", "does not start with a digit"},
        {"-5", "does not start with a digit"},
        {"10X", "unknown unit"},
        {"10GG", "unexpected characters after the unit"},
        {"1.5", "a byte count must be a whole number"},
        {"1.", "no digits after the decimal point"},
        {"16777216T", "too large"},
        {"99999999999999999999", "too large"},
        {"10 G B", "unexpected characters after the unit"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 7;
        assert_int_equal(qp_parse_size(bad[i].s, &v), QP_EUSAGE);
        assert_int_equal(v, 7);
        char *want = qp_strfmt("invalid size '%s': %s (expected e.g. 10G, 512M, 1.5GiB, 100k or a byte count)",
                               bad[i].s, bad[i].why);
        assert_string_equal(qp_error_last(), want);
        free(want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_empty_object, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roundtrip_10mb, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_file_get_to_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streaming_constant_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_flipped_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_other_content, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compressed_or_stored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_stored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stored_check_frame, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_digest_and_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_meta, setup, teardown),
        cmocka_unit_test(test_parse_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
