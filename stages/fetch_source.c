#include "stages/fetch_source.h"
#include "stages/fetch_hf.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/hash.h"
#include "model/safetensors.h"
#include "stages/stage.h"

#include <git2.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char *rel;        /* path relative to the source root ("" for a single file: its basename) */
    char *abs;        /* local: absolute path */
    git_oid oid;      /* git: blob id */
    uint64_t size;
} source_file;

struct qp_fetch_source {
    qp_cache *cache;
    char *display;            /* the `source:` value, for messages */
    int is_git;
    char *url, *commit, *subpath;
    git_repository *repo;
    qp_hf_source *hf;         /* hf:// sources */
    source_file *files;
    size_t n_files, cap_files;
};

int qp_fetch_is_commit_id(const char *s)
{
    if (!s || strlen(s) != 40)
        return 0;
    for (int i = 0; i < 40; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static void add_file(qp_fetch_source *s, const char *rel, const char *abs, const git_oid *oid, uint64_t size)
{
    if (s->n_files == s->cap_files) {
        s->cap_files = s->cap_files ? s->cap_files * 2 : 16;
        s->files = qp_xrealloc_array(s->files, s->cap_files, sizeof(*s->files));
    }
    source_file *f = &s->files[s->n_files++];
    memset(f, 0, sizeof(*f));
    f->rel = qp_strdup(rel);
    f->abs = abs ? qp_strdup(abs) : NULL;
    if (oid)
        git_oid_cpy(&f->oid, oid);
    f->size = size;
}

static int cmp_file(const void *a, const void *b)
{
    return strcmp(((const source_file *)a)->rel, ((const source_file *)b)->rel);
}

static int add_local(void *ud, const char *abs, const char *rel)
{
    struct stat st;
    if (stat(abs, &st) != 0)
        return qp_error_errno(QP_ERROR, "%s: cannot stat", abs);
    add_file(ud, rel, abs, NULL, (uint64_t)st.st_size);
    return 0;
}

static int git_fail(const char *what, const char *url)
{
    const git_error *e = git_error_last();
    return qp_error_set(QP_ERROR, "%s: %s: %s", url, what, e && e->message ? e->message : "unknown libgit2 error");
}

/* Opens a local repository directly, or clones/fetches a remote one into
 * the cache's git/ directory (bare), so a second run needs no network. */
static int open_repo(qp_fetch_source *s, const char *recipe_dir)
{
    int rc = 0;
    int remote = strstr(s->url, "://") != NULL && strncmp(s->url, "file://", 7) != 0;
    if (!remote) {
        char *local = strncmp(s->url, "file://", 7) == 0 ? qp_strdup(s->url + 7) : qp_path_join(recipe_dir, s->url);
        if (git_repository_open_ext(&s->repo, local, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) != 0)
            rc = qp_error_set(QP_ERROR, "%s: not a git repository (fetch source git:%s)", local, s->url);
        free(local);
        return rc;
    }
    char digest[QP_HEX_LEN];
    qp_sha256_buf(digest, s->url, strlen(s->url));
    char *mirror = qp_strfmt("%s/git/%.32s", qp_cache_dir(s->cache), digest);
    if (git_repository_open_bare(&s->repo, mirror) != 0) {
        git_clone_options opts;
        git_clone_options_init(&opts, GIT_CLONE_OPTIONS_VERSION);
        opts.bare = 1;
        char *parent = qp_path_dirname(mirror);
        qp_mkdir_p(parent, 0755);
        free(parent);
        if (git_clone(&s->repo, s->url, mirror, &opts) != 0)
            rc = git_fail("cannot clone", s->url);
    }
    free(mirror);
    return rc;
}

static int collect_tree(qp_fetch_source *s, git_tree *tree, const char *rel)
{
    size_t n = git_tree_entrycount(tree);
    for (size_t i = 0; i < n; i++) {
        const git_tree_entry *e = git_tree_entry_byindex(tree, i);
        const char *name = git_tree_entry_name(e);
        char *child = rel[0] ? qp_strfmt("%s/%s", rel, name) : qp_strdup(name);
        int rc = 0;
        if (git_tree_entry_type(e) == GIT_OBJECT_TREE) {
            git_tree *sub = NULL;
            if (git_tree_lookup(&sub, s->repo, git_tree_entry_id(e)) != 0)
                rc = git_fail("cannot read tree", s->url);
            else
                rc = collect_tree(s, sub, child);
            git_tree_free(sub);
        } else if (git_tree_entry_type(e) == GIT_OBJECT_BLOB) {
            add_file(s, child, NULL, git_tree_entry_id(e), 0);
        }
        free(child);
        if (rc)
            return rc;
    }
    return 0;
}

static int open_git(qp_fetch_source *s, const char *recipe_dir)
{
    int rc;
    git_oid oid;
    git_commit *commit = NULL;
    git_tree *root = NULL, *sub = NULL;
    git_tree_entry *entry = NULL;
    git_libgit2_init();
    if ((rc = open_repo(s, recipe_dir)) != 0)
        return rc;
    git_oid_fromstr(&oid, s->commit);
    if (git_commit_lookup(&commit, s->repo, &oid) != 0) {
        /* a mirror may predate the commit: fetch once, then look again */
        git_remote *remote = NULL;
        if (git_remote_lookup(&remote, s->repo, "origin") == 0) {
            git_remote_fetch(remote, NULL, NULL, NULL);
            git_remote_free(remote);
        }
        if (git_commit_lookup(&commit, s->repo, &oid) != 0) {
            rc = qp_error_set(QP_ERROR, "git:%s: commit %s not found in the repository; check rev:", s->url,
                              s->commit);
            goto done;
        }
    }
    if (git_commit_tree(&root, commit) != 0) {
        rc = git_fail("cannot read the commit's tree", s->url);
        goto done;
    }
    if (!s->subpath[0]) {
        rc = collect_tree(s, root, "");
        goto done;
    }
    if (git_tree_entry_bypath(&entry, root, s->subpath) != 0) {
        rc = qp_error_set(QP_ERROR, "git:%s: path '%s' does not exist at commit %.12s; check path:", s->url,
                          s->subpath, s->commit);
        goto done;
    }
    if (git_tree_entry_type(entry) == GIT_OBJECT_TREE) {
        if (git_tree_lookup(&sub, s->repo, git_tree_entry_id(entry)) != 0) {
            rc = git_fail("cannot read tree", s->url);
            goto done;
        }
        rc = collect_tree(s, sub, "");
    } else {
        add_file(s, git_tree_entry_name(entry), NULL, git_tree_entry_id(entry), 0);
    }
done:
    git_tree_entry_free(entry);
    git_tree_free(sub);
    git_tree_free(root);
    git_commit_free(commit);
    return rc;
}

int qp_fetch_source_open(qp_fetch_source **out, const json_t *params, const char *recipe_dir, qp_cache *cache)
{
    qp_fetch_source *s = qp_xcalloc(1, sizeof(*s));
    int rc = 0;
    s->cache = cache;
    const char *source = qp_param_str(params, "source");
    s->display = qp_strdup(source);
    if (qp_hf_is_source(source)) {
        rc = qp_hf_open(&s->hf, source, json_object_get(params, "allow"), json_object_get(params, "ignore"), cache);
        for (size_t i = 0; rc == 0 && i < qp_hf_count(s->hf); i++)
            add_file(s, qp_hf_file(s->hf, i), NULL, NULL, 0);
    } else if (strncmp(source, "git:", 4) == 0) {
        s->is_git = 1;
        s->url = qp_strdup(source + 4);
        s->commit = qp_strdup(qp_param_str(params, "rev"));
        s->subpath = qp_strdup(qp_param_str(params, "path"));
        rc = open_git(s, recipe_dir);
    } else {
        char *abs = qp_path_join(recipe_dir, source);
        struct stat st;
        if (stat(abs, &st) != 0)
            rc = qp_error_errno(QP_ERROR, "fetch source %s", abs);
        else if (S_ISDIR(st.st_mode))
            rc = qp_walk_files(abs, add_local, s);
        else {
            const char *base = strrchr(abs, '/');
            add_file(s, base ? base + 1 : abs, abs, NULL, (uint64_t)st.st_size);
        }
        free(abs);
    }
    if (rc == 0 && s->n_files == 0)
        rc = qp_error_set(QP_ERROR, "fetch source %s: contains no files", source);
    if (rc) {
        qp_fetch_source_free(s);
        return rc;
    }
    qsort(s->files, s->n_files, sizeof(*s->files), cmp_file);
    *out = s;
    return 0;
}

void qp_fetch_source_free(qp_fetch_source *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_files; i++) {
        free(s->files[i].rel);
        free(s->files[i].abs);
    }
    free(s->files);
    qp_hf_free(s->hf);
    if (s->repo)
        git_repository_free(s->repo);
    free(s->display);
    free(s->url);
    free(s->commit);
    free(s->subpath);
    free(s);
}

/* What names an hf:// source's bytes: the repository, the commit and the
 * files kept by allow:/ignore: (and those globs).  Not the endpoint (a
 * mirror serves the same commit) nor the revision's name (a branch that
 * moves changes the commit). */
static json_t *hf_desc(const qp_fetch_source *s, const json_t *params)
{
    json_t *files = json_array();
    for (size_t i = 0; i < s->n_files; i++)
        json_array_append_new(files, json_string(s->files[i].rel));
    json_t *allow = json_object_get(params, "allow"), *ignore = json_object_get(params, "ignore");
    allow = allow ? json_incref(allow) : json_array();
    ignore = ignore ? json_incref(ignore) : json_array();
    return json_pack("{s:s, s:s, s:o, s:o, s:o}", "repo", qp_hf_repo(s->hf), "commit", qp_hf_commit(s->hf),
                     "files", files, "allow", allow, "ignore", ignore);
}

int qp_fetch_source_key(qp_fetch_source *s, const json_t *params, json_t *key)
{
    if (s->hf) {
        json_object_set_new(key, "hf", hf_desc(s, params));
        return 0;
    }
    if (s->is_git) {
        json_object_set_new(key, "git", json_pack("{s:s, s:s, s:s}", "url", s->url, "commit", s->commit,
                                                  "path", s->subpath));
        return 0;
    }
    json_t *files = json_object();
    for (size_t i = 0; i < s->n_files; i++) {
        char digest[QP_HEX_LEN];
        int rc = qp_cache_file_digest(s->cache, s->files[i].abs, digest);
        if (rc) {
            json_decref(files);
            return rc;
        }
        json_object_set_new(files, s->files[i].rel, json_string(digest));
    }
    json_object_set_new(key, "files", files);
    return 0;
}

/* Checkpoint weights are the top-level *.safetensors files (Hugging Face
 * layout); safetensors deeper down (e.g. reference logits) are plain files. */
static int is_safetensors(const char *rel)
{
    size_t n = strlen(rel);
    return n > 12 && strcmp(rel + n - 12, ".safetensors") == 0 && !strchr(rel, '/');
}

static int looks_like_model(const qp_fetch_source *s)
{
    int config = 0, weights = 0;
    for (size_t i = 0; i < s->n_files; i++) {
        config |= strcmp(s->files[i].rel, "config.json") == 0;
        weights |= is_safetensors(s->files[i].rel);
    }
    return config && weights;
}

/* Drops the pages of [p, p+n) from this process's mapping of a read-only
 * file: they stay in the page cache and fault back in if touched again, but
 * no longer count in RSS.  Without it every page of a 13.5 GB checkpoint the
 * import has read stays mapped until the file is closed, so fetch's peak RSS
 * was the checkpoint's size; with it, about the largest tensor.  Pages shared
 * with the next tensor simply fault in again. */
static void release_pages(const void *p, size_t n)
{
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0 || n == 0)
        return;
    uintptr_t a = (uintptr_t)p & ~((uintptr_t)page - 1);
    uintptr_t b = ((uintptr_t)p + n + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    (void)madvise((void *)a, b - a, MADV_DONTNEED);   /* advice only: failure costs memory, not bytes */
}

/* Splits one safetensors file into per-tensor objects: a tensor that did
 * not change between two checkpoints (or stages) is stored once.  One
 * tensor's pages are mapped at a time (release_pages). */
static int import_safetensors(qp_fetch_source *s, qp_artifact *out, const char *path, const char *rel)
{
    qp_safetensors *st = NULL;
    int rc = qp_safetensors_open(&st, path);
    if (rc)
        return rc;
    for (size_t i = 0; i < qp_safetensors_count(st) && rc == 0; i++) {
        const qp_tensor_view *t = qp_safetensors_tensor(st, i);
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++)
            json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
        json_t *extra = json_pack("{s:s, s:s, s:o, s:s}", "kind", "tensor", "dtype", qp_dtype_name(t->dtype),
                                  "shape", shape, "file", rel);
        char *name = qp_strfmt("tensors/%s", t->name);
        rc = qp_artifact_add_bytes(out, s->cache, name, t->data, (size_t)t->nbytes, extra);
        release_pages(t->data, (size_t)t->nbytes);
        free(name);
    }
    qp_safetensors_free(st);
    return rc;
}

/* Materialises a git blob as a temp file (safetensors are parsed from files). */
static int blob_to_temp(qp_fetch_source *s, const source_file *f, char **tmp_path)
{
    git_blob *blob = NULL;
    if (git_blob_lookup(&blob, s->repo, &f->oid) != 0)
        return git_fail("cannot read blob", s->url);
    char *tmpdir = qp_path_join(qp_cache_dir(s->cache), "tmp");
    qp_mkdir_p(tmpdir, 0755);
    int fd = -1, rc = qp_mkstemp_in(tmpdir, "fetch", tmp_path, &fd);
    free(tmpdir);
    if (rc == 0) {
        const char *p = git_blob_rawcontent(blob);
        size_t n = (size_t)git_blob_rawsize(blob);
        while (n > 0) {
            ssize_t w = write(fd, p, n);
            if (w <= 0) {
                rc = qp_error_errno(QP_ERROR, "%s: cannot write", *tmp_path);
                break;
            }
            p += w;
            n -= (size_t)w;
        }
        close(fd);
        if (rc) {
            unlink(*tmp_path);
            free(*tmp_path);
            *tmp_path = NULL;
        }
    }
    git_blob_free(blob);
    return rc;
}

static int cmp_entry_name(const void *a, const void *b)
{
    return strcmp(qp_artifact_entry_name(*(const json_t *const *)a), qp_artifact_entry_name(*(const json_t *const *)b));
}

/* meta.content_digest: SHA-256 over "NAME\tDIGEST\n" of every entry in
 * name order — the digest of what was fetched, whatever it was fetched
 * from.  The artifact's own digest also covers meta (source names a local
 * path, a git URL or an hf:// repository, and the GGUF's general.name and
 * the package names come from it), so the same files fetched from two
 * places are two artifacts with one content digest. */
static int set_content_digest(qp_artifact *out, qp_progress *progress)
{
    size_t n = qp_artifact_count(out);
    const json_t **e = qp_xcalloc(n + 1, sizeof(*e));
    for (size_t i = 0; i < n; i++)
        e[i] = qp_artifact_entry(out, i);
    qsort(e, n, sizeof(*e), cmp_entry_name);
    qp_sha256 *h = NULL;
    int rc = qp_sha256_new(&h);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *name = qp_artifact_entry_name(e[i]), *digest = qp_artifact_entry_digest(e[i]);
        qp_sha256_update(h, name, strlen(name));
        qp_sha256_update(h, "\t", 1);
        qp_sha256_update(h, digest, strlen(digest));
        qp_sha256_update(h, "\n", 1);
    }
    if (rc == 0) {
        char hex[QP_HEX_LEN];
        qp_sha256_final_hex(h, hex);
        json_object_set_new(qp_artifact_meta(out), "content_digest", json_string(hex));
        qp_progress_note(progress, "content digest %s (%zu entries)", hex, n);
    }
    qp_sha256_free(h);
    free(e);
    return rc;
}

int qp_fetch_source_import(qp_fetch_source *s, qp_artifact *out, const char *type, const json_t *pins,
                           qp_progress *progress)
{
    int model = strcmp(type, "model") == 0 || (strcmp(type, "auto") == 0 && looks_like_model(s));
    if (strcmp(type, "model") == 0 && !looks_like_model(s))
        return qp_error_set(QP_ERROR, "fetch source %s: type: model needs config.json and *.safetensors files",
                            s->display);
    qp_artifact_set_type(out, model ? QP_ART_MODEL : QP_ART_FILES);
    /* pins first: every pinned file must exist in the source */
    const char *pin_rel;
    json_t *pin;
    json_object_foreach((json_t *)pins, pin_rel, pin) {
        size_t i = 0;
        while (i < s->n_files && strcmp(s->files[i].rel, pin_rel) != 0)
            i++;
        if (i == s->n_files)
            return qp_error_set(QP_ERROR, "fetch source %s: sha256 pin names '%s', which is not in the source",
                                s->display, pin_rel);
    }
    int rc = 0;
    uint64_t total = 0, done_bytes = 0;
    char **downloads = NULL;
    if (s->hf) {
        /* every file first, verified, then the same import as a local
         * directory: the entries are byte-for-byte those of a local fetch */
        downloads = qp_xcalloc(s->n_files, sizeof(*downloads));
        if ((rc = qp_hf_download(s->hf, downloads, progress)) != 0) {
            free(downloads);
            return rc;
        }
        for (size_t i = 0; i < s->n_files; i++) {
            struct stat st;
            s->files[i].abs = downloads[i];
            s->files[i].size = stat(downloads[i], &st) == 0 ? (uint64_t)st.st_size : 0;
        }
    }
    for (size_t i = 0; i < s->n_files; i++)
        total += s->files[i].size;
    for (size_t i = 0; i < s->n_files && rc == 0; i++) {
        source_file *f = &s->files[i];
        char *tmp = NULL;
        const char *path = f->abs;
        if (s->is_git) {
            if ((rc = blob_to_temp(s, f, &tmp)) != 0)
                break;
            path = tmp;
        }
        char digest[QP_HEX_LEN];
        const char *want = json_string_value(json_object_get(pins, f->rel));
        if (want) {
            if ((rc = qp_cache_file_digest(s->cache, path, digest)) == 0 && strcmp(digest, want) != 0)
                rc = qp_error_set(QP_ERROR,
                                  "fetch source %s: file '%s': sha256 is %s but the recipe pins %s; "
                                  "restore the file or update the pin", s->display, f->rel, digest, want);
        }
        if (rc == 0) {
            if (model && is_safetensors(f->rel)) {
                rc = import_safetensors(s, out, path, f->rel);
            } else {
                char *name = qp_strfmt("files/%s", f->rel);
                rc = qp_artifact_add_file(out, s->cache, name, path, json_pack("{s:s}", "kind", "file"));
                free(name);
            }
        }
        if (tmp) {
            unlink(tmp);
            free(tmp);
        }
        done_bytes += f->size;
        qp_progress_update(progress, done_bytes, total, "bytes");
    }
    if (s->hf) {
        for (size_t i = 0; i < s->n_files; i++)
            unlink(s->files[i].abs);   /* freed with the source */
        free(downloads);
    }
    if (rc == 0 && s->hf) {
        /* source without "@REVISION" (packages are named after its last
         * component); the commit says exactly what was fetched */
        json_t *meta = qp_artifact_meta(out);
        char *plain = qp_strfmt("hf://%s", qp_hf_repo(s->hf));
        json_object_set_new(meta, "source", json_string(plain));
        free(plain);
        /* not the revision's name: @main and @<its commit> are one artifact */
        json_object_set_new(meta, "hf", json_pack("{s:s, s:s}", "repo", qp_hf_repo(s->hf), "commit",
                                                  qp_hf_commit(s->hf)));
        if (model)
            json_object_set_new(meta, "format", json_string("hf-safetensors"));
    } else if (rc == 0) {
        json_t *meta = qp_artifact_meta(out);
        json_object_set_new(meta, "source", json_string(s->display));
        if (s->is_git)
            json_object_set_new(meta, "git", json_pack("{s:s, s:s, s:s}", "url", s->url, "commit", s->commit,
                                                       "path", s->subpath));
        if (model)
            json_object_set_new(meta, "format", json_string("hf-safetensors"));
    }
    if (rc == 0)
        rc = set_content_digest(out, progress);
    return rc;
}
