/* safetensors writer.  Tensor data is spooled to an already-unlinked temp
 * file while tensors are added (the header, which comes first, is known only
 * at the end); finish() writes header + spooled data to a second temp file,
 * fsyncs and renames it into place.  A crash or abort leaves nothing behind. */
#include "model/safetensors.h"

#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct qp_st_writer {
    char *path;
    char *dir;
    int spool_fd;
    uint64_t offset;   /* bytes spooled so far */
    json_t *entries;   /* name -> {dtype, shape, data_offsets}, in call order */
    json_t *meta;      /* __metadata__ or NULL */
    int failed;        /* a data write failed: the spool is unusable */
};

int qp_st_writer_new(qp_st_writer **out, const char *path)
{
    int rc;
    char *spool = NULL;
    qp_st_writer *w = qp_xcalloc(1, sizeof(*w));
    *out = NULL;
    w->spool_fd = -1;
    w->path = qp_strdup(path);
    w->dir = qp_path_dirname(path);
    w->entries = json_object();
    if ((rc = qp_mkstemp_in(w->dir, ".qpipe-st-spool", &spool, &w->spool_fd)) != 0)
        goto done;
    unlink(spool);
    free(spool);
    *out = w;
    return 0;
done:
    qp_st_writer_abort(w);
    return rc;
}

int qp_st_writer_add(qp_st_writer *w, const char *name, qp_dtype dtype,
                     int ndim, const uint64_t *shape, const void *data, size_t nbytes)
{
    size_t esz = qp_dtype_size(dtype);
    if (!name || strcmp(name, "__metadata__") == 0)
        return qp_error_set(QP_EUSAGE, "%s: tensor '%s': reserved or missing tensor name", w->path,
                            name ? name : "(null)");
    if (json_object_get(w->entries, name))
        return qp_error_set(QP_EUSAGE, "%s: tensor '%s': added twice", w->path, name);
    if (esz == 0)
        return qp_error_set(QP_EUSAGE, "%s: tensor '%s': invalid dtype %d", w->path, name, (int)dtype);
    if (ndim < 0 || ndim > QP_MAX_DIMS)
        return qp_error_set(QP_EUSAGE, "%s: tensor '%s': %d dimensions, at most %d supported", w->path, name,
                            ndim, QP_MAX_DIMS);
    uint64_t nelem = 1;
    int overflow = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] > INT64_MAX)
            overflow = 1;     /* JSON integers are signed 64-bit in jansson */
        else if (shape[i] != 0 && nelem > UINT64_MAX / shape[i])
            overflow = 1;
        nelem *= shape[i];
    }
    if (overflow || (nelem != 0 && esz > UINT64_MAX / nelem) || nelem * esz != nbytes)
        return qp_error_set(QP_EUSAGE, "%s: tensor '%s': %zu bytes given, shape and %s need %llu", w->path, name,
                            nbytes, qp_dtype_name(dtype), overflow ? 0ull : (unsigned long long)(nelem * esz));
    if (w->failed)
        return qp_error_set(QP_ERROR, "%s: an earlier write failed; abort this writer", w->path);
    json_t *jshape = json_array();
    for (int i = 0; i < ndim; i++)
        json_array_append_new(jshape, json_integer((json_int_t)shape[i]));
    json_t *e = json_pack("{s:s, s:o, s:[I, I]}", "dtype", qp_dtype_name(dtype), "shape", jshape,
                          "data_offsets", (json_int_t)w->offset, (json_int_t)(w->offset + nbytes));
    /* json_object_set_new refuses keys that are not valid UTF-8 */
    if (!e || json_object_set_new(w->entries, name, e) != 0)
        return qp_error_set(QP_EUSAGE, "%s: tensor name is not valid UTF-8", w->path);
    if (nbytes && qp_write_all(w->spool_fd, data, nbytes) != 0) {
        w->failed = 1;
        json_object_del(w->entries, name);
        return qp_error_errno(QP_ERROR, "%s: tensor '%s': cannot spool %zu bytes of data", w->path, name,
                              nbytes);
    }
    w->offset += nbytes;
    return 0;
}

int qp_st_writer_set_metadata(qp_st_writer *w, const char *key, const char *value)
{
    if (!w->meta)
        w->meta = json_object();
    json_t *v = json_string(value);
    if (!v || json_object_set_new(w->meta, key, v) != 0)
        return qp_error_set(QP_EUSAGE, "%s: __metadata__ key or value is not valid UTF-8", w->path);
    return 0;
}

/* Copies the spool after the header; copy_file_range avoids a trip through
 * user space and falls back to read/write across filesystems. */
static int copy_spool(int dst, int src, uint64_t n)
{
    if (lseek(src, 0, SEEK_SET) != 0)
        return -1;
    while (n > 0) {
        ssize_t c = copy_file_range(src, NULL, dst, NULL, n > (1u << 30) ? (1u << 30) : (size_t)n, 0);
        if (c > 0) {
            n -= (uint64_t)c;
            continue;
        }
        if (c < 0 && errno == EINTR)
            continue;
        if (c == 0 || (errno != EXDEV && errno != ENOSYS && errno != EINVAL && errno != EOPNOTSUPP))
            return -1;
        char buf[1 << 16];
        while (n > 0) {
            ssize_t r = read(src, buf, n < sizeof(buf) ? (size_t)n : sizeof(buf));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0 || qp_write_all(dst, buf, (size_t)r) != 0)
                return -1;
            n -= (uint64_t)r;
        }
    }
    return 0;
}

int qp_st_writer_finish(qp_st_writer *w)
{
    int rc = QP_ERROR, fd = -1;
    char *tmp = NULL, *hdr = NULL;
    json_t *root = json_object();
    const char *name;
    json_t *e;
    if (w->failed) {
        rc = qp_error_set(QP_ERROR, "%s: an earlier write failed; nothing written", w->path);
        goto done;
    }
    /* HF order: __metadata__ first, then the tensors in data order */
    if (w->meta)
        json_object_set(root, "__metadata__", w->meta);
    json_object_foreach(w->entries, name, e)
        json_object_set(root, name, e);
    hdr = json_dumps(root, JSON_COMPACT);
    if (!hdr) {
        rc = qp_error_set(QP_ERROR, "%s: cannot serialise the header", w->path);
        goto done;
    }
    /* pad with spaces so the data starts 8-byte aligned, as the HF library does */
    size_t hlen = strlen(hdr), pad = (8 - hlen % 8) % 8;
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)(hlen + pad) >> (8 * i));
    if ((rc = qp_mkstemp_in(w->dir, ".qpipe-st-tmp", &tmp, &fd)) != 0)
        goto done;
    if (qp_write_all(fd, len8, 8) != 0 || qp_write_all(fd, hdr, hlen) != 0 || qp_write_all(fd, "        ", pad) != 0 ||
        copy_spool(fd, w->spool_fd, w->offset) != 0) {
        rc = qp_error_errno(QP_ERROR, "%s: cannot write", tmp);
        goto done;
    }
    rc = qp_tmp_publish(fd, tmp, w->path, 0644);
    fd = -1;
    tmp = NULL;
done:
    qp_tmp_discard(fd, tmp);
    free(hdr);
    json_decref(root);
    qp_st_writer_abort(w);
    return rc;
}

void qp_st_writer_abort(qp_st_writer *w)
{
    if (!w)
        return;
    if (w->spool_fd >= 0)
        close(w->spool_fd);   /* unlinked at creation: closing frees it */
    json_decref(w->entries);
    json_decref(w->meta);
    free(w->path);
    free(w->dir);
    free(w);
}
