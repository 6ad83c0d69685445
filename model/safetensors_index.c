/* A checkpoint directory: model.safetensors, or shards listed by
 * model.safetensors.index.json ({"metadata": {...}, "weight_map": {tensor: file}}). */
#include "model/safetensors.h"

#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <stdlib.h>
#include <string.h>

#define ST_SINGLE "model.safetensors"
#define ST_INDEX "model.safetensors.index.json"

struct qp_checkpoint {
    size_t n_shards;
    qp_safetensors **shards;          /* sorted by file name */
    size_t n;
    const qp_tensor_view **tensors;   /* shard order, then data offset */
    const qp_tensor_view **by_name;
};

static int cmp_view_name(const void *a, const void *b)
{
    const qp_tensor_view *x = *(const qp_tensor_view *const *)a;
    const qp_tensor_view *y = *(const qp_tensor_view *const *)b;
    return strcmp(x->name, y->name);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Shards must sit beside the index: a path with '/' or a dot name could
 * read files outside the checkpoint. */
static int plain_file_name(const char *s)
{
    return s[0] != '\0' && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static int add_shard(qp_checkpoint *ck, const char *file)
{
    ck->shards = qp_xrealloc_array(ck->shards, ck->n_shards + 1, sizeof(*ck->shards));
    int rc = qp_safetensors_open(&ck->shards[ck->n_shards], file);
    if (rc == 0)
        ck->n_shards++;
    return rc;
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* Opens every shard named in the index and cross-checks the weight_map. */
static int open_sharded(qp_checkpoint *ck, const char *dir, const char *index_path)
{
    int rc = 0;
    char *text = NULL;
    size_t len = 0;
    json_t *root = NULL;
    const char **files = NULL;
    size_t n_files = 0;
    json_error_t err;

    if ((rc = qp_read_file(index_path, &text, &len)) != 0)
        goto done;
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    if (!root) {
        /* jansson says: duplicate object key near '"NAME"' */
        const char *near = strstr(err.text, "near '");
        if (json_error_code(&err) == json_error_duplicate_key && near)
            rc = qp_error_set(QP_EFORMAT, "%s: line %d: key %.*s listed twice", index_path, err.line,
                              (int)strlen(near + 6) - 1, near + 6);
        else
            rc = qp_error_set(QP_EFORMAT, "%s: line %d column %d: invalid JSON: %s", index_path, err.line,
                              err.column, err.text);
        goto done;
    }
    json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(wm) || json_object_size(wm) == 0) {
        rc = qp_error_set(QP_EFORMAT, "%s: weight_map missing, empty or not an object", index_path);
        goto done;
    }
    const char *name;
    json_t *v;
    files = qp_xcalloc(json_object_size(wm), sizeof(*files));
    json_object_foreach(wm, name, v) {
        if (!json_is_string(v) || !plain_file_name(json_string_value(v))) {
            rc = qp_error_set(QP_EFORMAT, "%s: tensor '%s': shard must be a file name in the same directory",
                              index_path, name);
            goto done;
        }
        files[n_files++] = json_string_value(v);
    }
    qsort(files, n_files, sizeof(*files), cmp_str);
    for (size_t i = 0; i < n_files; i++) {
        if (i > 0 && strcmp(files[i], files[i - 1]) == 0)
            continue;
        char *p = qp_path_join(dir, files[i]);
        rc = add_shard(ck, p);
        free(p);
        if (rc != 0)
            goto done;
    }
    /* every listed tensor is in its shard ... */
    json_object_foreach(wm, name, v) {
        for (size_t s = 0; s < ck->n_shards; s++) {
            if (strcmp(base_name(qp_safetensors_path(ck->shards[s])), json_string_value(v)) != 0)
                continue;
            if (!qp_safetensors_find(ck->shards[s], name)) {
                rc = qp_error_set(QP_EFORMAT, "%s: tensor '%s': not found in its shard '%s'",
                                  index_path, name, json_string_value(v));
                goto done;
            }
        }
    }
    /* ... and every shard tensor is listed for that shard (else it is in two shards or unlisted) */
    for (size_t s = 0; s < ck->n_shards; s++) {
        const char *file = base_name(qp_safetensors_path(ck->shards[s]));
        for (size_t i = 0; i < qp_safetensors_count(ck->shards[s]); i++) {
            const char *tn = qp_safetensors_tensor(ck->shards[s], i)->name;
            json_t *w = json_object_get(wm, tn);
            if (!w) {
                rc = qp_error_set(QP_EFORMAT, "%s: tensor '%s': in shard '%s' but not listed in weight_map",
                                  index_path, tn, file);
                goto done;
            }
            if (strcmp(json_string_value(w), file) != 0) {
                rc = qp_error_set(QP_EFORMAT, "%s: tensor '%s': appears in two shards, '%s' and '%s'",
                                  index_path, tn, json_string_value(w), file);
                goto done;
            }
        }
    }
done:
    free(files);
    json_decref(root);
    free(text);
    return rc;
}

int qp_checkpoint_open(qp_checkpoint **out, const char *dir)
{
    int rc = 0;
    char *single = qp_path_join(dir, ST_SINGLE);
    char *index = qp_path_join(dir, ST_INDEX);
    qp_checkpoint *ck = qp_xcalloc(1, sizeof(*ck));
    *out = NULL;
    /* transformers prefers the single file when both exist; so do we */
    if (qp_path_exists(single))
        rc = add_shard(ck, single);
    else if (qp_path_exists(index))
        rc = open_sharded(ck, dir, index);
    else
        rc = qp_error_set(QP_ENOTFOUND, "%s: no %s or %s: not a safetensors checkpoint directory",
                          dir, ST_SINGLE, ST_INDEX);
    if (rc != 0)
        goto done;
    for (size_t s = 0; s < ck->n_shards; s++)
        ck->n += qp_safetensors_count(ck->shards[s]);
    ck->tensors = qp_xcalloc(ck->n ? ck->n : 1, sizeof(*ck->tensors));
    ck->by_name = qp_xcalloc(ck->n ? ck->n : 1, sizeof(*ck->by_name));
    size_t k = 0;
    for (size_t s = 0; s < ck->n_shards; s++)
        for (size_t i = 0; i < qp_safetensors_count(ck->shards[s]); i++)
            ck->tensors[k++] = qp_safetensors_tensor(ck->shards[s], i);
    memcpy(ck->by_name, ck->tensors, ck->n * sizeof(*ck->by_name));
    qsort(ck->by_name, ck->n, sizeof(*ck->by_name), cmp_view_name);
    *out = ck;
    ck = NULL;
done:
    qp_checkpoint_free(ck);
    free(single);
    free(index);
    return rc;
}

void qp_checkpoint_free(qp_checkpoint *ck)
{
    if (!ck)
        return;
    for (size_t s = 0; s < ck->n_shards; s++)
        qp_safetensors_free(ck->shards[s]);
    free(ck->shards);
    free(ck->tensors);
    free(ck->by_name);
    free(ck);
}

size_t qp_checkpoint_count(const qp_checkpoint *ck) { return ck->n; }

const qp_tensor_view *qp_checkpoint_tensor(const qp_checkpoint *ck, size_t i)
{
    return i < ck->n ? ck->tensors[i] : NULL;
}

const qp_tensor_view *qp_checkpoint_find(const qp_checkpoint *ck, const char *name)
{
    size_t lo = 0, hi = ck->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(ck->by_name[mid]->name, name);
        if (c == 0)
            return ck->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}
