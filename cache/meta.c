/* Named metadata blobs: meta/NS/NAME.  NS is a plain identifier; NAME may
 * contain any bytes, so it is escaped into a safe file name (%XX for bytes
 * outside [A-Za-z0-9._-], a leading '.' escaped too), or replaced by
 * "@<sha256>" when the escaped form would be too long for a file name. */
#include "cache/cache_internal.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <stdlib.h>
#include <string.h>

#define MAX_FILE_NAME 200

static int ns_ok(const char *ns)
{
    if (!ns || !*ns || ns[0] == '.' || strlen(ns) > 64)
        return 0;
    for (const char *p = ns; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == '.'))
            return 0;
    return 1;
}

/* malloc'ed file name for NAME, NULL when the name is empty */
static char *escape_name(const char *name)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(name);
    if (n == 0)
        return NULL;
    if (n * 3 > MAX_FILE_NAME) {
        char d[QP_HEX_LEN];
        qp_sha256_buf(d, name, n);
        return qp_strfmt("@%s", d);
    }
    char *out = qp_xmalloc(n * 3 + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)name[i];
        int plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                    ch == '_' || ch == '-' || (ch == '.' && i > 0);
        if (plain) {
            *o++ = (char)ch;
        } else {
            *o++ = '%';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
        }
    }
    *o = '\0';
    return out;
}

static int meta_path(qp_cache *c, const char *ns, const char *name, char **out_dir, char **out_path)
{
    if (!ns_ok(ns))
        return qp_error_set(QP_ERROR, "cache meta: invalid namespace '%.80s' (use letters, digits, '_', '-', '.')",
                            ns ? ns : "(null)");
    char *file = name ? escape_name(name) : NULL;
    if (!file)
        return qp_error_set(QP_ERROR, "cache meta %s: empty name", ns);
    *out_dir = qp_path_join(c->meta, ns);
    *out_path = qp_path_join(*out_dir, file);
    free(file);
    return 0;
}

int qp_cache_meta_get(qp_cache *c, const char *ns, const char *name, char **out)
{
    char *dir = NULL, *path = NULL;
    int rc = meta_path(c, ns, name, &dir, &path);
    if (rc == 0) {
        rc = qp_read_file_nofollow(path, QP_CACHE_SMALL_FILE_MAX, out, NULL);
        if (rc == QP_ENOTFOUND)
            qp_error_set(QP_ENOTFOUND, "cache meta %s/%s: not found", ns, name);
    }
    free(dir);
    free(path);
    return rc;
}

int qp_cache_meta_put(qp_cache *c, const char *ns, const char *name, const char *text)
{
    char *dir = NULL, *path = NULL;
    int rc = meta_path(c, ns, name, &dir, &path);
    if (rc == 0 && (rc = qp_mkdir_p(dir, 0755)) == 0)
        rc = qp_write_file_atomic(path, text, strlen(text), c->tmp);
    free(dir);
    free(path);
    return rc;
}
