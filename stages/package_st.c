/* format safetensors: the dequantized checkpoint (layout and sharding in
 * stages/package_st.h).  One tensor in memory at a time: its stored bytes,
 * its f32 form [nelem] and the converted copy [nelem · dtype size]. */
#include "stages/package_st.h"
#include "stages/package_hf.h"
#include "stages/qtensor.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "model/safetensors.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define ST_SINGLE "model.safetensors"
#define ST_INDEX "model.safetensors.index.json"

/* torch's names, as config.json's torch_dtype spells them */
static const char *torch_name(qp_dtype t)
{
    return t == QP_DT_F32 ? "float32" : t == QP_DT_F16 ? "float16" : "bfloat16";
}

int qp_package_st_dtype(qp_dtype *out, const qp_artifact *model, qp_cache *cache, const char *dtype,
                        const char *what)
{
    if (!strcmp(dtype, "f32") || !strcmp(dtype, "f16") || !strcmp(dtype, "bf16")) {
        *out = dtype[1] == '3' ? QP_DT_F32 : dtype[0] == 'b' ? QP_DT_BF16 : QP_DT_F16;
        return 0;
    }
    json_t *cfg = NULL;
    int rc = qp_package_read_config(&cfg, model, cache, what);
    if (rc)
        return rc;
    /* newer transformers write "dtype", older "torch_dtype" */
    const json_t *v = json_object_get(cfg, "dtype");
    if (!json_is_string(v))
        v = json_object_get(cfg, "torch_dtype");
    const char *name = json_string_value(v);
    *out = QP_DT_F32;
    if (name && !strcmp(name, "float16"))
        *out = QP_DT_F16;
    else if (name && !strcmp(name, "bfloat16"))
        *out = QP_DT_BF16;
    else if (name && strcmp(name, "float32") != 0)
        rc = qp_error_set(QP_EFORMAT, "%s: config.json: torch_dtype '%s' is not float32, float16 or bfloat16; set "
                                      "dtype: f32, f16 or bf16 on the package stage", what, name);
    json_decref(cfg);
    return rc;
}

int qp_package_parse_size(uint64_t *out, const char *s, const char *what)
{
    static const struct {
        const char *unit;
        uint64_t mult;
    } units[] = {{"", 1},           {"B", 1},           {"KB", 1000ull},      {"MB", 1000000ull},
                 {"GB", 1000000000ull}, {"TB", 1000000000000ull}, {"KIB", 1ull << 10}, {"MIB", 1ull << 20},
                 {"GIB", 1ull << 30}, {"TIB", 1ull << 40}};
    const char *p = s;
    uint64_t n = 0;
    int digits = 0;
    while (isdigit((unsigned char)*p) && digits < 16) {
        n = n * 10 + (uint64_t)(*p++ - '0');
        digits++;
    }
    while (*p == ' ')
        p++;
    char unit[8];
    size_t k = 0;
    while (*p && k + 1 < sizeof(unit))
        unit[k++] = (char)toupper((unsigned char)*p++);
    unit[k] = '\0';
    for (size_t i = 0; digits > 0 && digits < 16 && !*p && i < sizeof(units) / sizeof(units[0]); i++)
        if (!strcmp(unit, units[i].unit) && n > 0 && n <= UINT64_MAX / units[i].mult) {
            *out = n * units[i].mult;
            return 0;
        }
    return qp_error_set(QP_EUSAGE, "%s: max_shard_size '%s': give a positive size such as 5GB, 500MB, 2GiB or "
                                   "a byte count", what, s);
}

/* One tensor of the checkpoint and the shard it goes to. */
typedef struct {
    const json_t *entry;
    const char *name;     /* without "tensors/" */
    uint64_t nelem, bytes;
    int ndim;
    uint64_t shape[QP_MAX_DIMS];
    size_t shard;
} st_tensor;

static int collect(st_tensor **out, size_t *n_out, const qp_artifact *model, qp_dtype dtype, const char *what)
{
    st_tensor *t = NULL;
    size_t n = 0;
    int rc = 0;
    for (size_t i = 0; i < qp_artifact_count(model); i++) {
        const json_t *e = qp_artifact_entry(model, i);
        const char *name = qp_artifact_entry_name(e);
        if (strncmp(name, "tensors/", 8) != 0)
            continue;
        t = qp_xrealloc_array(t, n + 1, sizeof(*t));
        st_tensor *x = &t[n++];
        memset(x, 0, sizeof(*x));
        x->entry = e;
        x->name = name + 8;
        x->nelem = qp_qtensor_nelem(e);
        const json_t *jshape = json_object_get(e, "shape");
        x->ndim = (int)json_array_size(jshape);
        if (!json_is_array(jshape) || x->ndim > QP_MAX_DIMS || (x->nelem == 0 && x->ndim > 0)) {
            rc = qp_error_set(QP_ECORRUPT, "%s: tensor '%s': malformed shape in the artifact; rerun its quantize "
                                           "stage (--force)", what, x->name);
            break;
        }
        for (int d = 0; d < x->ndim; d++)
            x->shape[d] = (uint64_t)json_integer_value(json_array_get(jshape, (size_t)d));
        x->bytes = x->nelem * qp_dtype_size(dtype);
    }
    if (rc == 0 && n == 0)
        rc = qp_error_set(QP_EUSAGE, "%s: the model has no tensors to write", what);
    if (rc) {
        free(t);
        t = NULL;
        n = 0;
    }
    *out = t;
    *n_out = n;
    return rc;
}

size_t qp_package_st_plan_shards(const uint64_t *bytes, size_t n, uint64_t max_shard, size_t *shard_of)
{
    size_t n_shards = 0, n_open = 0;
    size_t *open = qp_xmalloc((n + 1) * sizeof(*open));   /* the tensors of the shard being filled */
    uint64_t open_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        if (bytes[i] > max_shard) {
            shard_of[i] = n_shards++;
            continue;
        }
        if (n_open > 0 && open_bytes + bytes[i] > max_shard) {
            for (size_t k = 0; k < n_open; k++)
                shard_of[open[k]] = n_shards;
            n_shards++;
            n_open = 0;
            open_bytes = 0;
        }
        open[n_open++] = i;
        open_bytes += bytes[i];
    }
    if (n_open > 0) {
        for (size_t k = 0; k < n_open; k++)
            shard_of[open[k]] = n_shards;
        n_shards++;
    }
    free(open);
    return n_shards;
}

static size_t plan_shards(st_tensor *t, size_t n, uint64_t max_shard)
{
    uint64_t *bytes = qp_xmalloc((n + 1) * sizeof(*bytes));
    size_t *shard_of = qp_xmalloc((n + 1) * sizeof(*shard_of));
    for (size_t i = 0; i < n; i++)
        bytes[i] = t[i].bytes;
    size_t n_shards = qp_package_st_plan_shards(bytes, n, max_shard, shard_of);
    for (size_t i = 0; i < n; i++)
        t[i].shard = shard_of[i];
    free(bytes);
    free(shard_of);
    return n_shards;
}

/* tensor -> out [nelem] of dtype: a dense tensor already in dtype is
 * copied, everything else goes through its f32 dequantization. */
static int convert(void **out, const st_tensor *x, const void *buf, size_t len, qp_dtype dtype, const char *twhat)
{
    const char *fmt = json_string_value(json_object_get(x->entry, "format"));
    const char *dt = json_string_value(json_object_get(x->entry, "dtype"));
    int dense = !fmt || !strcmp(fmt, "dense");
    *out = NULL;
    if (dense && dt && qp_dtype_parse(dt) == dtype) {
        if (len != x->bytes)
            return qp_error_set(QP_ECORRUPT, "%s: %zu bytes stored, %s %llu elements need %llu; rerun the stage "
                                             "that made it (--force)", twhat, len, dt,
                                (unsigned long long)x->nelem, (unsigned long long)x->bytes);
        *out = qp_xmalloc(len + 1);
        memcpy(*out, buf, len);
        return 0;
    }
    float *f = qp_xmalloc(x->nelem * sizeof(float) + 4);
    int rc = qp_qtensor_to_f32(x->entry, buf, len, f, x->nelem, twhat);
    if (rc == 0 && dtype == QP_DT_F32) {
        *out = f;
        return 0;
    }
    uint16_t *h = rc == 0 ? qp_xmalloc(x->nelem * 2 + 2) : NULL;
    for (uint64_t k = 0; rc == 0 && k < x->nelem; k++) {
        if (dtype == QP_DT_BF16) {
            h[k] = qp_f32_to_bf16(f[k]);
            continue;
        }
        h[k] = qp_f32_to_f16(f[k]);
        if (isfinite(f[k]) && (h[k] & 0x7fffu) == 0x7c00u)
            rc = qp_error_set(QP_EUSAGE, "%s: element %llu = %g is beyond float16's range (package with dtype: "
                                         "bf16 or f32)", twhat, (unsigned long long)k, (double)f[k]);
    }
    free(f);
    if (rc) {
        free(h);
        return rc;
    }
    *out = h;
    return 0;
}

static char *shard_name(size_t i, size_t n)
{
    return n == 1 ? qp_xstrdup(ST_SINGLE) : qp_strfmt("model-%05zu-of-%05zu.safetensors", i + 1, n);
}

static int write_shard(const char *dir, const st_tensor *t, size_t n, size_t shard, size_t n_shards,
                       const qp_artifact *model, qp_cache *cache, qp_dtype dtype, uint64_t *bytes_written,
                       const char *what)
{
    char *name = shard_name(shard, n_shards), *path = qp_path_join(dir, name);
    qp_st_writer *w = NULL;
    int rc = qp_st_writer_new(&w, path);
    if (rc == 0)
        rc = qp_st_writer_set_metadata(w, "format", "pt");   /* transformers refuses other values */
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (t[i].shard != shard)
            continue;
        char *twhat = qp_strfmt("%s: tensor '%s'", what, t[i].name);
        void *buf = NULL, *conv = NULL;
        size_t len = 0;
        rc = qp_cache_get(cache, qp_artifact_entry_digest(t[i].entry), &buf, &len);
        if (rc)
            qp_error_prefix("%s", twhat);
        if (rc == 0)
            rc = convert(&conv, &t[i], buf, len, dtype, twhat);
        free(buf);
        if (rc == 0)
            rc = qp_st_writer_add(w, t[i].name, dtype, t[i].ndim, t[i].shape, conv, t[i].bytes);
        free(conv);
        free(twhat);
    }
    if (w && rc)
        qp_st_writer_abort(w);
    else if (w)
        rc = qp_st_writer_finish(w);
    struct stat st;
    if (rc == 0 && stat(path, &st) != 0)
        rc = qp_error_errno(QP_ERROR, "%s: cannot stat the file just written", path);
    if (rc == 0)
        *bytes_written += (uint64_t)st.st_size;
    free(path);
    free(name);
    return rc;
}

static int write_index(const char *dir, const st_tensor *t, size_t n, size_t n_shards, const char *what)
{
    uint64_t total = 0;
    json_t *map = json_object();
    for (size_t i = 0; i < n; i++) {
        total += t[i].bytes;
        char *file = shard_name(t[i].shard, n_shards);
        json_object_set_new(map, t[i].name, json_string(file));
        free(file);
    }
    json_t *index = json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)total, "weight_map", map);
    char *text = json_dumps(index, JSON_INDENT(2) | JSON_SORT_KEYS);
    char *with_nl = qp_strfmt("%s\n", text ? text : "");
    char *path = qp_path_join(dir, ST_INDEX);
    int rc = text ? qp_write_file_atomic(path, with_nl, strlen(with_nl), NULL)
                  : qp_error_set(QP_ERROR, "%s: cannot serialise %s", what, ST_INDEX);
    free(path);
    free(with_nl);
    free(text);
    json_decref(index);
    return rc;
}

static int write_config(const char *dir, const qp_artifact *model, qp_cache *cache, qp_dtype dtype,
                        const char *what)
{
    json_t *cfg = NULL;
    int rc = qp_package_read_config(&cfg, model, cache, what);
    if (rc)
        return rc;
    qp_package_set_torch_dtype(cfg, torch_name(dtype));
    json_object_del(cfg, "quantization_config");   /* the weights are plain floats now */
    rc = qp_package_write_json(dir, "config.json", cfg, what);
    json_decref(cfg);
    return rc;
}

int qp_package_st(const char *dir, const qp_artifact *model, qp_cache *cache, qp_dtype dtype, uint64_t max_shard,
                  const char **weights_name, uint64_t *weights_bytes, const char *what)
{
    st_tensor *t = NULL;
    size_t n = 0;
    *weights_bytes = 0;
    *weights_name = ST_SINGLE;
    int rc = collect(&t, &n, model, dtype, what);
    if (rc)
        return rc;
    size_t n_shards = plan_shards(t, n, max_shard);
    for (size_t s = 0; rc == 0 && s < n_shards; s++)
        rc = write_shard(dir, t, n, s, n_shards, model, cache, dtype, weights_bytes, what);
    if (rc == 0 && n_shards > 1) {
        rc = write_index(dir, t, n, n_shards, what);
        *weights_name = ST_INDEX;
    }
    if (rc == 0)
        rc = write_config(dir, model, cache, dtype, what);
    if (rc == 0)
        rc = qp_package_copy_files(dir, model, cache, what);
    free(t);
    return rc;
}
