#include "stages/act_store.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct qp_act_store {
    size_t S, w;
    float *mem;      /* [S, w] or NULL */
    int fd;          /* spilled: the unlinked temp file, else -1 */
    char *what;
};

int qp_act_store_budget(uint64_t *out)
{
    const char *env = getenv("QPIPE_ACT_MEM");
    *out = QP_ACT_MEM_DEFAULT;
    if (!env || !env[0])
        return 0;
    if (qp_parse_size(env, out) != 0)
        return qp_error_set(QP_EUSAGE, "QPIPE_ACT_MEM='%.40s': expected a size such as 512M or 2G", env);
    return 0;
}

int qp_act_store_plan_note(size_t S, size_t w, char *note, size_t cap)
{
    uint64_t budget;
    if (cap)
        note[0] = 0;
    if (qp_act_store_budget(&budget) != 0) {
        qp_error_clear();   /* the run itself reports it */
        budget = QP_ACT_MEM_DEFAULT;
    }
    double bytes = (double)S * (double)w * sizeof(float);
    if (bytes <= (double)budget)
        return 0;
    if (cap)
        snprintf(note, cap, "activations %.1f GB > QPIPE_ACT_MEM %.1f GB: spilled to disk, one window in memory",
                 bytes / 1e9, (double)budget / 1e9);
    return 1;
}

int qp_act_store_new(qp_act_store **out, qp_cache *cache, size_t S, size_t w, int may_spill, const char *what)
{
    uint64_t budget;
    int rc = qp_act_store_budget(&budget);
    if (rc)
        return rc;
    qp_act_store *a = qp_xcalloc(1, sizeof(*a));
    a->S = S;
    a->w = w;
    a->fd = -1;
    a->what = qp_xstrdup(what);
    /* S and w are bounded by the calibration artifact's checks; the product
     * in double cannot overflow */
    if (!may_spill || (double)S * (double)w * sizeof(float) <= (double)budget) {
        a->mem = qp_xmalloc((S * w > 0 ? S * w : 1) * sizeof(float));
        *out = a;
        return 0;
    }
    char *dir = qp_path_join(qp_cache_dir(cache), "tmp"), *path = NULL;
    if ((rc = qp_mkdir_p(dir, 0755)) == 0 && (rc = qp_mkstemp_in(dir, "activations", &path, &a->fd)) == 0)
        unlink(path);   /* gone with the process, even on SIGKILL */
    free(path);
    free(dir);
    if (rc) {
        qp_act_store_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

void qp_act_store_free(qp_act_store *a)
{
    if (!a)
        return;
    if (a->fd >= 0)
        close(a->fd);
    free(a->mem);
    free(a->what);
    free(a);
}

int qp_act_store_spilled(const qp_act_store *a) { return a->fd >= 0; }
float *qp_act_store_data(qp_act_store *a) { return a->mem; }

float *qp_act_store_slot(qp_act_store *a, size_t s, float *buf)
{
    return a->mem ? a->mem + s * a->w : buf;
}

int qp_act_store_get(qp_act_store *a, size_t s, float *buf, float **out)
{
    if (a->mem) {
        *out = a->mem + s * a->w;
        return 0;
    }
    size_t n = a->w * sizeof(float), got = 0;
    off_t off = (off_t)(s * n);
    while (got < n) {
        ssize_t r = pread(a->fd, (char *)buf + got, n - got, off + (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return qp_error_errno(QP_ERROR, "%s: cannot read spilled activations of window %zu", a->what, s);
        got += (size_t)r;
    }
    *out = buf;
    return 0;
}

int qp_act_store_put(qp_act_store *a, size_t s, const float *src)
{
    if (a->mem) {
        if (src != a->mem + s * a->w)
            memcpy(a->mem + s * a->w, src, a->w * sizeof(float));
        return 0;
    }
    size_t n = a->w * sizeof(float), done = 0;
    off_t off = (off_t)(s * n);
    while (done < n) {
        ssize_t r = pwrite(a->fd, (const char *)src + done, n - done, off + (off_t)done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return qp_error_errno(QP_ERROR, "%s: cannot spill activations of window %zu (disk full?)", a->what, s);
        done += (size_t)r;
    }
    return 0;
}
