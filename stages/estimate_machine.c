/* The machine calibration of the estimator: the rates every prediction
 * divides by, measured once with qpipe's own code (qp_sgemm, the ggml
 * quantizers, SHA-256, zstd at the cache's level, a scratch file) and cached
 * in the cache's meta/estimate/ under the CPU model, thread count and qpipe
 * version.  Each rate runs for about a quarter of a second, so a calibration
 * takes a few seconds; on a shared machine the rates are what it gave then
 * (`--recalibrate` measures again). */
#include "stages/estimate.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/seqout.h"
#include "common/gemm.h"
#include "common/hash.h"
#include "common/xxh64.h"
#include "common/rng.h"
#include "common/tensor.h"
#include "common/version.h"
#include "quant/qtypes.h"

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zstd.h>

#define MB 1e6
#define RUN_S 0.25          /* each rate is measured for at least this long */
#define ZLEVEL 3            /* cache/object.c's QP_ZSTD_LEVEL */
#define TRIALS 3            /* the best of 3 trials: the machine's rate, not its neighbours' load */
/* Part of a cached calibration's name: bumped when a probe changes what it
 * measures, so a calibration made by the old probes is not reused
 * (2: the map probe on pages read back from the disk, the median of three
 * writes). */
#define PROBES_VERSION 2

/* out = the best rate (MB/s) of TRIALS trials of RUN_S/TRIALS seconds each
 * running BODY, which moves `bytes` per repetition */
#define BEST_RATE(out, bytes, BODY)                                                                               \
    do {                                                                                                          \
        double best_ = 0;                                                                                         \
        for (int tr_ = 0; tr_ < TRIALS; tr_++) {                                                                  \
            long n_ = 0;                                                                                          \
            double s_ = qp_now();                                                                                 \
            do {                                                                                                  \
                BODY;                                                                                             \
                n_++;                                                                                             \
            } while (qp_now() - s_ < RUN_S / TRIALS);                                                             \
            double r_ = (double)n_ * (bytes) / MB / (qp_now() - s_);                                              \
            if (r_ > best_)                                                                                       \
                best_ = r_;                                                                                       \
        }                                                                                                         \
        (out) = best_;                                                                                            \
    } while (0)

void qp_est_machine_defaults(qp_est_machine *m, int threads)
{
    memset(m, 0, sizeof(*m));
    snprintf(m->cpu, sizeof(m->cpu), "unknown (defaults)");
    m->threads = threads > 0 ? threads : 1;
    m->gemm_gflops = 40.0 * m->threads;
    m->convert_mbs = 2000;
    m->deq_mbs[QP_EST_Q4K] = 2500;
    m->deq_mbs[QP_EST_Q6K] = 2000;
    m->deq_mbs[QP_EST_Q80] = 3000;
    m->quant_mbs[QP_EST_Q4K] = 150.0 * m->threads;
    m->quant_mbs[QP_EST_Q6K] = 150.0 * m->threads;
    m->quant_mbs[QP_EST_Q80] = 800.0 * m->threads;
    m->sha_mbs = 1000;
    m->xxh_mbs = 8000;
    m->zstd_c_mbs = 300;
    m->zstd_d_mbs = 1000;
    m->zratio_bf16 = 0.8;
    m->zratio_q = 0.95;
    m->disk_r_mbs = 2000;
    m->disk_w_mbs = 300;
    m->disk_wd_mbs = 600;
    m->disk_wd_fixed_ms = 50;
    m->fsync_ms = 5;
    m->mem_mbs = 3000;
    m->map_mbs = 4000;
    m->cpus = m->threads;
}

double qp_est_slowdown(const qp_est_machine *m, const qp_est_coef *c)
{
    if (m->cpus < 1)
        return 1;
    double s = (m->load + 1 - c->load_free) / m->cpus;
    return s > 1 ? s : 1;
}

void qp_est_machine_load_now(qp_est_machine *m)
{
    m->load = 0;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    m->cpus = n > 0 ? (int)n : 1;
    /* QPIPE_ESTIMATE_LOAD: the load to assume (a replay of measurements taken
     * at a known load; 0 = a quiet machine) */
    const char *env = getenv("QPIPE_ESTIMATE_LOAD");
    char *end = NULL;
    double l1 = env && *env ? strtod(env, &end) : -1;
    if (env && *env && end && *end == '\0' && l1 >= 0 && l1 < 1e6) {
        m->load = l1;
        return;
    }
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f)
        return;
    if (fscanf(f, "%lf", &l1) == 1 && l1 >= 0 && l1 < 1e6)
        m->load = l1;
    fclose(f);
}

static void cpu_model(char *buf, size_t cap)
{
    snprintf(buf, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "model name", 10) != 0)
            continue;
        const char *v = strchr(line, ':');
        if (!v)
            break;
        v++;
        while (*v == ' ')
            v++;
        snprintf(buf, cap, "%.*s", (int)strcspn(v, "\n"), v);
        break;
    }
    fclose(f);
}

/* N(0, 0.02) by Box-Muller: what real and synthetic weights look like. */
static void fill_weights(float *w, size_t n, uint64_t seed)
{
    qp_rng r;
    qp_rng_seed(&r, seed);
    for (size_t i = 0; i + 1 < n; i += 2) {
        double u1 = ((double)(qp_rng_next(&r) >> 11) + 1.0) / 9007199254740993.0;
        double u2 = (double)(qp_rng_next(&r) >> 11) / 9007199254740992.0;
        double rad = sqrt(-2.0 * log(u1)) * 0.02;
        w[i] = (float)(rad * cos(6.283185307179586 * u2));
        w[i + 1] = (float)(rad * sin(6.283185307179586 * u2));
    }
    if (n % 2)
        w[n - 1] = 0.01f;
}

static void to_bf16(uint16_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        dst[i] = (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
    }
}

/* ---- GEMM on `threads` threads, each its own column block ---- */
enum { GM = 256, GK = 2048, GN = 512 };

typedef struct {
    const float *a, *b;
    float *c;
    double t_end;
    long reps;
} gemm_job;

static void *gemm_worker(void *arg)
{
    gemm_job *j = arg;
    do {
        qp_sgemm(QP_NOTRANS, QP_NOTRANS, GM, GN, GK, 1.0f, j->a, GK, j->b, GN, 0.0f, j->c, GN);
        j->reps++;
    } while (qp_now() < j->t_end);
    return NULL;
}

static double measure_gemm(int threads)
{
    float *a = qp_xmalloc((size_t)GM * GK * sizeof(float));
    float *b = qp_xmalloc((size_t)GK * GN * threads * sizeof(float));
    float *c = qp_xmalloc((size_t)GM * GN * threads * sizeof(float));
    fill_weights(a, (size_t)GM * GK, 1);
    fill_weights(b, (size_t)GK * GN * threads, 2);
    gemm_job *jobs = qp_xcalloc((size_t)threads, sizeof(*jobs));
    pthread_t *th = qp_xcalloc((size_t)threads, sizeof(*th));
    /* one warm-up product per thread's data (packing buffers, page faults) */
    qp_sgemm(QP_NOTRANS, QP_NOTRANS, GM, GN, GK, 1.0f, a, GK, b, GN, 0.0f, c, GN);
    double best = 0;
    for (int tr = 0; tr < TRIALS; tr++) {
        double t0 = qp_now();
        for (int i = 0; i < threads; i++) {
            jobs[i] = (gemm_job){a, b + (size_t)i * GK * GN, c + (size_t)i * GM * GN, t0 + RUN_S * 2 / TRIALS, 0};
            pthread_create(&th[i], NULL, gemm_worker, &jobs[i]);
        }
        long reps = 0;
        for (int i = 0; i < threads; i++) {
            pthread_join(th[i], NULL);
            reps += jobs[i].reps;
        }
        double rate = 2.0 * GM * GN * GK * (double)reps / (qp_now() - t0) / 1e9;
        if (rate > best)
            best = rate;
    }
    free(jobs);
    free(th);
    free(a);
    free(b);
    free(c);
    return best;
}

static const qp_ggml_type est_types[3] = {QP_GGML_Q4_K, QP_GGML_Q6_K, QP_GGML_Q8_0};

/* `total` chunks written as a package writes its file: through qp_seqout
 * (O_DIRECT where the filesystem allows it, helper threads), then fsync'ed;
 * *seconds = how long. */
static int time_direct_write(double *seconds, const char *tmpdir, const void *w, size_t chunk, size_t total)
{
    char *path = NULL;
    int fd = -1;
    qp_seqout *out = NULL;
    int rc = qp_mkstemp_in(tmpdir, "calibrate-direct", &path, &fd);
    if (rc)
        return rc;
    double t0 = qp_now();
    if ((rc = qp_seqout_new(&out, fd, path, 0)) != 0)
        goto done;
    for (size_t i = 0; i < total && rc == 0; i++)
        rc = qp_seqout_write(out, w, chunk);
    if (rc == 0)
        rc = qp_seqout_finish(out, NULL);
    if (rc == 0 && fsync(fd) != 0)
        rc = qp_error_errno(QP_ERROR, "%s: fsync", path);
    if (rc == 0)
        *seconds = qp_now() - t0;
done:
    qp_seqout_free(out);
    qp_tmp_discard(fd, path);
    return rc;
}

/* The package's write rate as a line through two sizes (16 and 128 MB, the
 * faster of two trials each: 288 MB written in all): a single 64 MB probe
 * on the benchmark VM took 0.16 s, of which ~0.1 s is paid once per file
 * (dd showed the same), and read as ~400 MB/s a disk that wrote a 670 MB
 * GGUF at over 1 GB/s.  The
 * slope is the rate of each further MB, the intercept the fixed cost. */
static int measure_direct_write(qp_est_machine *m, const char *tmpdir, const void *w, size_t chunk)
{
    const size_t n_small = 4, n_large = 32;   /* chunks of 4 MB */
    double t_small = 1e30, t_large = 1e30;
    for (int trial = 0; trial < 2; trial++) {
        double t;
        int rc = time_direct_write(&t, tmpdir, w, chunk, n_small);
        if (rc)
            return rc;
        t_small = t < t_small ? t : t_small;
        if ((rc = time_direct_write(&t, tmpdir, w, chunk, n_large)) != 0)
            return rc;
        t_large = t < t_large ? t : t_large;
    }
    double b_small = (double)(chunk * n_small) / MB, b_large = (double)(chunk * n_large) / MB;
    /* a rate at most twice the large write's average (a slow small trial
     * would otherwise make the disk look infinitely fast) */
    double slope_s = t_large - t_small, avg_s = t_large * (b_large - b_small) / b_large;
    if (slope_s < avg_s * 0.5)
        slope_s = avg_s * 0.5;
    m->disk_wd_mbs = (b_large - b_small) / slope_s;
    double fixed = t_large - b_large / m->disk_wd_mbs;
    m->disk_wd_fixed_ms = fixed > 0.001 ? fixed * 1000 : 1;
    return 0;
}

/* The file fd (len bytes, in the page cache) mapped, touched page by page
 * and its pages dropped, as fetch reads a checkpoint
 * (stages/fetch_source.c): cached file pages fault in far cheaper than the
 * fresh anonymous ones of mem_mbs (on the benchmark VM 5-10x). */
static int measure_map(qp_est_machine *m, int fd, const char *path, size_t len)
{
    const long page = sysconf(_SC_PAGESIZE) > 0 ? sysconf(_SC_PAGESIZE) : 4096;
    BEST_RATE(m->map_mbs, (double)len, {
        const volatile unsigned char *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED)
            return qp_error_errno(QP_ERROR, "%s: mmap", path);
        unsigned sum = 0;
        for (size_t off = 0; off < len; off += (size_t)page)
            sum += p[off];
        __asm__ volatile("" : : "r"(sum));
        (void)madvise((void *)p, len, MADV_DONTNEED);
        munmap((void *)p, len);
    });
    return 0;
}

int qp_est_machine_measure(qp_est_machine *m, int threads, const char *tmpdir)
{
    double t_start = qp_now();
    qp_est_machine_defaults(m, threads);
    cpu_model(m->cpu, sizeof(m->cpu));
    const size_t rows = 256, cols = 4096, n = rows * cols;   /* 1 Mi weights: 4 MB of f32 */
    float *w = qp_xmalloc(n * sizeof(float)), *back = qp_xmalloc(n * sizeof(float));
    uint16_t *bf = qp_xmalloc(n * sizeof(uint16_t));
    void *q = qp_xmalloc(qp_qtype_row_size(QP_GGML_Q8_0, (int64_t)cols) * rows);
    size_t zcap = ZSTD_compressBound(n * sizeof(float));
    void *z = qp_xmalloc(zcap);
    char *path = NULL;
    int fd = -1, rc = 0;
    fill_weights(w, n, 3);
    to_bf16(bf, w, n);

    m->gemm_gflops = measure_gemm(m->threads);

    double t0;
    BEST_RATE(m->convert_mbs, (double)n * 4, qp_convert_to_f32(back, bf, QP_DT_BF16, n));

    for (int k = 0; k < 3; k++) {
        size_t rs = qp_qtype_row_size(est_types[k], (int64_t)cols);
        BEST_RATE(m->quant_mbs[k], (double)n * 4, {
            if ((rc = qp_quantize(est_types[k], w, q, (int64_t)rows, (int64_t)cols, NULL, m->threads)) != 0)
                goto done;
        });
        BEST_RATE(m->deq_mbs[k], (double)n * 4, {
            for (size_t r = 0; r < rows; r++)
                qp_dequantize_row(est_types[k], (const char *)q + r * rs, back + r * cols, (int64_t)cols);
        });
        if (k == QP_EST_Q4K) {
            size_t zq = ZSTD_compress(z, zcap, q, rs * rows, ZLEVEL);
            m->zratio_q = ZSTD_isError(zq) ? 1.0 : (double)zq / (double)(rs * rows);
        }
    }

    /* 64 MB freshly allocated, written and freed: what a large malloc'ed buffer costs (page faults) */
    {
        const size_t fresh = (size_t)64 << 20;
        BEST_RATE(m->mem_mbs, (double)fresh, {
            char *p = qp_xmalloc(fresh);
            memset(p, 1, fresh);
            __asm__ volatile("" : : "r"(p) : "memory");
            free(p);
        });
    }
    char hex[QP_HEX_LEN];
    BEST_RATE(m->sha_mbs, (double)n * 4, qp_sha256_buf(hex, w, n * sizeof(float)));
    volatile uint64_t xsink = 0;
    BEST_RATE(m->xxh_mbs, (double)n * 4, xsink += qp_xxh64_buf(w, n * sizeof(float)));
    (void)xsink;
    size_t zn = 0;
    BEST_RATE(m->zstd_c_mbs, (double)n * 2, zn = ZSTD_compress(z, zcap, bf, n * sizeof(uint16_t), ZLEVEL));
    if (ZSTD_isError(zn)) {
        rc = qp_error_set(QP_ERROR, "machine calibration: zstd: %s", ZSTD_getErrorName(zn));
        goto done;
    }
    m->zratio_bf16 = (double)zn / (double)(n * 2);
    BEST_RATE(m->zstd_d_mbs, (double)n * 2, ZSTD_decompress(back, n * sizeof(float), z, zn));

    /* disk: 64 MB written and fsync'ed, then read back */
    if ((rc = qp_mkdir_p(tmpdir, 0755)) != 0 || (rc = qp_mkstemp_in(tmpdir, "calibrate", &path, &fd)) != 0)
        goto done;
    /* The median of three: one 64 MB write and fsync read 380-1100 MB/s
     * from one calibration to the next on the benchmark VM. */
    const size_t chunk = n * sizeof(float), total = 16;
    double wr[3];
    for (int tr = 0; tr < 3; tr++) {
        if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0) {
            rc = qp_error_errno(QP_ERROR, "%s: truncate", path);
            goto done;
        }
        t0 = qp_now();
        for (size_t i = 0; i < total; i++)
            if ((rc = qp_write_all(fd, w, chunk)) != 0)
                goto done;
        if (fsync(fd) != 0) {
            rc = qp_error_errno(QP_ERROR, "%s: fsync", path);
            goto done;
        }
        wr[tr] = (double)(chunk * total) / MB / (qp_now() - t0);
    }
    m->disk_w_mbs = fmax(fmin(wr[0], wr[1]), fmin(fmax(wr[0], wr[1]), wr[2]));   /* the median */
    t0 = qp_now();
    if (lseek(fd, 0, SEEK_SET) != 0) {
        rc = qp_error_errno(QP_ERROR, "%s: seek", path);
        goto done;
    }
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, back, chunk);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    m->disk_r_mbs = (double)got / MB / (qp_now() - t0);
    /* The map probe on pages the way a checkpoint's are cached: read in
     * from the disk, not left by our own write.  On the benchmark VM the
     * file's pages straight after the write mapped at 80-98 GB/s (large
     * folios, mapped whole), TinyLlama's cached checkpoint at ~2 GB/s, and
     * the probe file dropped and read back at ~3.5 GB/s. */
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    if (lseek(fd, 0, SEEK_SET) != 0) {
        rc = qp_error_errno(QP_ERROR, "%s: seek", path);
        goto done;
    }
    while (read(fd, back, chunk) > 0)
        ;
    if ((rc = measure_map(m, fd, path, chunk * total)) != 0)
        goto done;
    if ((rc = measure_direct_write(m, tmpdir, w, chunk)) != 0)
        goto done;
    /* small objects: 4 kB written and fsync'ed, 8 times */
    t0 = qp_now();
    for (int i = 0; i < 8; i++)
        if (pwrite(fd, w, 4096, 0) != 4096 || fsync(fd) != 0) {
            rc = qp_error_errno(QP_ERROR, "%s: write", path);
            goto done;
        }
    m->fsync_ms = (qp_now() - t0) / 8 * 1000;
    if (m->fsync_ms <= 0)
        m->fsync_ms = 0.001;
    m->measured = 1;
    m->seconds = qp_now() - t_start;
done:
    if (fd >= 0)
        close(fd);
    if (path)
        unlink(path);
    free(path);
    free(w);
    free(back);
    free(bf);
    free(q);
    free(z);
    return rc;
}

/* ---- JSON and the cache ---- */
#define FIELDS(X)                                                                                                 \
    X(gemm_gflops) X(convert_mbs) X(sha_mbs) X(xxh_mbs) X(zstd_c_mbs) X(zstd_d_mbs) X(zratio_bf16) X(zratio_q) X(disk_r_mbs) \
    X(disk_w_mbs) X(disk_wd_mbs) X(disk_wd_fixed_ms) X(fsync_ms) X(mem_mbs) X(map_mbs) X(seconds)

json_t *qp_est_machine_to_json(const qp_est_machine *m)
{
    json_t *j = json_object();
    json_object_set_new(j, "cpu", json_string(m->cpu));
    json_object_set_new(j, "threads", json_integer(m->threads));
#define PUT(f) json_object_set_new(j, #f, json_real(m->f));
    FIELDS(PUT)
#undef PUT
    json_object_set_new(j, "deq_mbs", json_pack("[f,f,f]", m->deq_mbs[0], m->deq_mbs[1], m->deq_mbs[2]));
    json_object_set_new(j, "quant_mbs", json_pack("[f,f,f]", m->quant_mbs[0], m->quant_mbs[1], m->quant_mbs[2]));
    return j;
}

int qp_est_machine_from_json(qp_est_machine *m, const json_t *j)
{
    qp_est_machine_defaults(m, 1);
    const json_t *cpu = json_object_get(j, "cpu"), *th = json_object_get(j, "threads");
    if (!json_is_string(cpu) || !json_is_integer(th) || json_integer_value(th) < 1)
        return qp_error_set(QP_EFORMAT, "machine calibration: 'cpu' or 'threads' missing; run with --recalibrate");
    snprintf(m->cpu, sizeof(m->cpu), "%s", json_string_value(cpu));
    m->threads = (int)json_integer_value(th);
#define GET(f)                                                                                                    \
    {                                                                                                             \
        const json_t *v = json_object_get(j, #f);                                                                 \
        if (!json_is_number(v) || !(json_number_value(v) > 0))                                                    \
            return qp_error_set(QP_EFORMAT, "machine calibration: '%s' missing or not positive; run with "      \
                                            "--recalibrate", #f);                                                 \
        m->f = json_number_value(v);                                                                              \
    }
    FIELDS(GET)
#undef GET
    for (int k = 0; k < 3; k++) {
        const json_t *d = json_array_get(json_object_get(j, "deq_mbs"), (size_t)k);
        const json_t *q = json_array_get(json_object_get(j, "quant_mbs"), (size_t)k);
        if (!json_is_number(d) || !json_is_number(q) || !(json_number_value(d) > 0) || !(json_number_value(q) > 0))
            return qp_error_set(QP_EFORMAT, "machine calibration: 'deq_mbs' or 'quant_mbs' malformed; run with "
                                            "--recalibrate");
        m->deq_mbs[k] = json_number_value(d);
        m->quant_mbs[k] = json_number_value(q);
    }
    m->measured = 1;
    return 0;
}

int qp_est_machine_get(qp_est_machine *m, qp_cache *cache, int threads, int recalibrate, int *fresh)
{
    char cpu[96], key_text[256], name[QP_HEX_LEN + 16];
    cpu_model(cpu, sizeof(cpu));
    snprintf(key_text, sizeof(key_text), "%s|%d|%s|probes %d", cpu, threads, QP_VERSION, PROBES_VERSION);
    char hex[QP_HEX_LEN];
    qp_sha256_buf(hex, key_text, strlen(key_text));
    snprintf(name, sizeof(name), "machine-%.16s", hex);
    *fresh = 0;
    char *text = NULL;
    if (!recalibrate && qp_cache_meta_get(cache, "estimate", name, &text) == 0) {
        json_t *j = json_loads(text, 0, NULL);
        free(text);
        int rc = j ? qp_est_machine_from_json(m, j) : QP_EFORMAT;
        json_decref(j);
        if (rc == 0 && m->threads == threads)
            return 0;
        qp_error_clear();   /* unreadable: measure again */
    }
    qp_error_clear();
    char *tmp = qp_path_join(qp_cache_dir(cache), "tmp");
    int rc = qp_est_machine_measure(m, threads, tmp);
    free(tmp);
    if (rc)
        return rc;
    *fresh = 1;
    json_t *j = qp_est_machine_to_json(m);
    json_object_set_new(j, "version", json_string(QP_VERSION));
    char *dump = json_dumps(j, JSON_SORT_KEYS | JSON_INDENT(1));
    json_decref(j);
    rc = qp_cache_meta_put(cache, "estimate", name, dump);
    free(dump);
    return rc;
}
