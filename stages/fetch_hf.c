#include "stages/fetch_hf.h"
#include "stages/hf_http.h"
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/hash.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_ENDPOINT "https://huggingface.co"
#define MAX_JSON ((size_t)16 << 20)          /* a revision listing is kilobytes; refuse a flood */
#define MAX_FILES 10000
#define MAX_NAME 1024
#define MAX_FILE_BYTES ((uint64_t)1 << 40)    /* 1 TiB: no single checkpoint shard is larger */
#define MAX_ATTEMPTS 5
#define MAX_PARALLEL 4
#define MAX_RETRY_AFTER_S 60

struct qp_hf_source {
    qp_cache *cache;
    char *display;       /* the source: value, for messages (holds no secret) */
    char *repo, *rev, *commit, *endpoint;
    char **files;
    int64_t *sizes;      /* from the listing when it has them, else -1 */
    size_t n_files;
};

int qp_hf_is_source(const char *source)
{
    return source && strncmp(source, "hf://", 5) == 0;
}

/* 1 when the environment variable is 1, true, yes or on (huggingface_hub's reading) */
static int env_flag(const char *name)
{
    const char *v = getenv(name);
    return v && (strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0 || strcasecmp(v, "yes") == 0 ||
                 strcasecmp(v, "on") == 0);
}

int qp_hf_refresh(void)
{
    return env_flag("QPIPE_HF_REFRESH");
}

int qp_hf_offline(void)
{
    return env_flag("HF_HUB_OFFLINE");
}

static int is_commit(const char *s)
{
    if (strlen(s) != 40)
        return 0;
    for (int i = 0; i < 40; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static int name_char(char c, int slash)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-' || (slash && c == '/');
}

/* ORG/NAME: one slash, both parts [A-Za-z0-9._-]{1,96}, neither "." nor
 * holding ".." (they become URL path segments). */
static int repo_ok(const char *r, size_t n)
{
    const char *slash = memchr(r, '/', n);
    if (!slash || slash == r || slash == r + n - 1 || n > 193 || memchr(slash + 1, '/', (size_t)(r + n - slash - 1)))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (r[i] != '/' && !name_char(r[i], 0))
            return 0;
    if ((size_t)(slash - r) > 96 || (size_t)(r + n - slash - 1) > 96)
        return 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (r[i] == '.' && r[i + 1] == '.')
            return 0;
    return !(r[0] == '.' && r[1] == '/') && !(slash[1] == '.' && slash + 2 == r + n);
}

/* branch, tag or commit: [A-Za-z0-9._/-]{1,255}, no "..", no leading '/' */
static int rev_ok(const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n > 255 || v[0] == '/' || strstr(v, ".."))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!name_char(v[i], 1))
            return 0;
    return 1;
}

/* Splits "hf://ORG/NAME[@REV]" into malloc'ed repo and rev ("main" when absent). */
static int parse_source(const char *source, const char *where, char **repo, char **rev)
{
    const char *p = source + 5, *at = strchr(p, '@');
    size_t n = at ? (size_t)(at - p) : strlen(p);
    if (!repo_ok(p, n))
        return qp_error_set(QP_EUSAGE,
                            "%s%s'%s': expected hf://ORG/NAME[@REVISION] with ORG and NAME made of letters, digits, "
                            "'.', '_' and '-'", where, where[0] ? ": " : "", source);
    const char *r = at ? at + 1 : "main";
    if (!rev_ok(r))
        return qp_error_set(QP_EUSAGE,
                            "%s%s'%s': revision '%s' is not a branch, tag or commit name (letters, digits, '.', '_', "
                            "'-', '/'; no '..')", where, where[0] ? ": " : "", source, r);
    if (repo) {
        *repo = qp_xmalloc(n + 1);
        memcpy(*repo, p, n);
        (*repo)[n] = '\0';
        *rev = qp_strdup(r);
    }
    return 0;
}

int qp_hf_check_source(const char *source, const char *where)
{
    return parse_source(source, where, NULL, NULL);
}

/* A file name from the Hub's listing becomes an artifact entry name and
 * part of a URL: relative, '/'-separated, no '.', '..' or empty components,
 * no backslash or control bytes, bounded. */
static int file_name_ok(const char *f)
{
    size_t n = strlen(f);
    if (n == 0 || n > MAX_NAME || f[0] == '/' || f[n - 1] == '/')
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)f[i] < 0x20 || f[i] == 0x7f || f[i] == '\\')
            return 0;
    const char *c = f;
    while (*c) {
        const char *e = strchr(c, '/');
        size_t len = e ? (size_t)(e - c) : strlen(c);
        if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
            return 0;
        c += len + (e ? 1 : 0);
    }
    return 1;
}

static long env_long(const char *name, long def, long lo, long hi)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return def;
    char *end;
    long x = strtol(v, &end, 10);
    return *end || x < lo || x > hi ? def : x;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* After a failed attempt: sleeps and returns 1 when it is worth another
 * (connection errors, 429, 5xx), 0 otherwise or when attempts are spent.
 * Exponential backoff from QPIPE_HF_RETRY_BASE_MS (default 1000 ms), capped
 * at 30 s; a Retry-After is honoured up to 60 s. */
static int retry_after_failure(const qp_http_result *r, int attempt)
{
    if (attempt >= MAX_ATTEMPTS ||
        !(r->transport_error ? r->retryable : r->too_large ? 0 : r->status == 429 || r->status >= 500))
        return 0;
    long base = env_long("QPIPE_HF_RETRY_BASE_MS", 1000, 0, 60000);
    long delay = base << (attempt - 1 < 10 ? attempt - 1 : 10);
    if (delay > 30000)
        delay = 30000;
    if (r->retry_after_s >= 0) {
        long ra = (r->retry_after_s > MAX_RETRY_AFTER_S ? MAX_RETRY_AFTER_S : r->retry_after_s) * 1000;
        if (ra > delay)
            delay = ra;
    }
    sleep_ms(delay);
    return 1;
}

/* One-line message for a final failed answer; what names the request
 * ("revision 'main'", "file 'config.json'"). */
static int http_fail(const qp_hf_source *s, const qp_http_result *r, const char *what, int attempts)
{
    const char *tok = getenv("HF_TOKEN");
    int has_token = tok && *tok;
    if (r->transport_error && !r->retryable)
        return qp_error_set(QP_ERROR, "%s: %s: the request to %s failed (%s); check HF_ENDPOINT", s->display, what,
                            s->endpoint, r->transport_msg);
    if (r->transport_error)
        return qp_error_set(QP_ERROR,
                            "%s: %s: cannot reach %s (%s) after %d attempts; check the network or HF_ENDPOINT, or "
                            "run with --offline once the cache holds it", s->display, what, s->endpoint,
                            r->transport_msg, attempts);
    if (r->too_large)
        return qp_error_set(QP_ERROR, "%s: %s: the answer from %s is larger than qpipe accepts; check HF_ENDPOINT",
                            s->display, what, s->endpoint);
    if (r->status == 401 || r->status == 403) {
        if (has_token)
            return qp_error_set(QP_ERROR,
                                "%s: %s: the Hub refused the token in HF_TOKEN (HTTP %ld); use a token with read "
                                "access to %s", s->display, what, r->status, s->repo);
        return qp_error_set(QP_ERROR,
                            "%s: %s: the Hub needs authentication (HTTP %ld); set HF_TOKEN to a token with read "
                            "access to %s (or check the repository name)", s->display, what, r->status, s->repo);
    }
    if (r->status == 404) {
        if (strcmp(r->error_code, "RevisionNotFound") == 0)
            return qp_error_set(QP_ERROR, "%s: revision '%s' not found in %s (HTTP 404); check the @REVISION",
                                s->display, s->rev, s->repo);
        if (strcmp(r->error_code, "EntryNotFound") == 0 || strncmp(what, "file", 4) == 0)
            return qp_error_set(QP_ERROR, "%s: %s not found at commit %s (HTTP 404); check allow:/ignore:",
                                s->display, what, s->commit ? s->commit : s->rev);
        return qp_error_set(QP_ERROR,
                            "%s: repository %s or revision '%s' not found at %s (HTTP 404); check the name (a "
                            "private repository needs HF_TOKEN)", s->display, s->repo, s->rev, s->endpoint);
    }
    if (r->status == 429 || r->status >= 500)
        return qp_error_set(QP_ERROR, "%s: %s: the Hub answered HTTP %ld %d times; try again later", s->display,
                            what, r->status, attempts);
    return qp_error_set(QP_ERROR, "%s: %s: unexpected HTTP %ld from %s", s->display, what, r->status, s->endpoint);
}

/* ---- revision → commit resolutions made by this process ----
 * The stage key and the stage's run each open the source; both must see
 * the same commit, and the second must not ask again. */
typedef struct memo {
    char *name;   /* "ORG/NAME@REV" */
    char *commit;
    struct memo *next;
} memo;
static memo *memos;
static pthread_mutex_t memo_mu = PTHREAD_MUTEX_INITIALIZER;

static char *memo_get(const char *name)
{
    char *c = NULL;
    pthread_mutex_lock(&memo_mu);
    for (memo *m = memos; m && !c; m = m->next)
        if (strcmp(m->name, name) == 0)
            c = qp_strdup(m->commit);
    pthread_mutex_unlock(&memo_mu);
    return c;
}

static void memo_put(const char *name, const char *commit)
{
    memo *m = qp_xcalloc(1, sizeof(*m));
    m->name = qp_strdup(name);
    m->commit = qp_strdup(commit);
    pthread_mutex_lock(&memo_mu);
    m->next = memos;
    memos = m;
    pthread_mutex_unlock(&memo_mu);
}

/* Reads {"sha": ..., "siblings": [{"rfilename": ..., "size"?: ...}]} (the
 * Hub's answer, or our own record of it) into s; messages name `from`. */
static int parse_listing(qp_hf_source *s, const char *text, size_t len, const char *from)
{
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    int rc = 0;
    if (!doc || !json_is_object(doc)) {
        rc = qp_error_set(QP_EFORMAT, "%s: %s is not a JSON object (%s); check HF_ENDPOINT", s->display, from,
                          doc ? "not an object" : jerr.text);
        goto done;
    }
    const char *sha = json_string_value(json_object_get(doc, "sha"));
    json_t *sib = json_object_get(doc, "siblings");
    if (!sha || !is_commit(sha) || !json_is_array(sib)) {
        rc = qp_error_set(QP_EFORMAT, "%s: %s lacks a 40-hex \"sha\" or a \"siblings\" list; check HF_ENDPOINT",
                          s->display, from);
        goto done;
    }
    size_t n = json_array_size(sib);
    if (n > MAX_FILES) {
        rc = qp_error_set(QP_EFORMAT, "%s: %s lists %zu files, more than qpipe accepts (%d)", s->display, from, n,
                          MAX_FILES);
        goto done;
    }
    if (s->commit && strcmp(s->commit, sha) != 0) {
        rc = qp_error_set(QP_ERROR, "%s: %s describes commit %s, not %s", s->display, from, sha, s->commit);
        goto done;
    }
    if (!s->commit)
        s->commit = qp_strdup(sha);
    s->files = qp_xcalloc(n + 1, sizeof(*s->files));
    s->sizes = qp_xcalloc(n + 1, sizeof(*s->sizes));
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(sib, i);
        const char *f = json_string_value(json_object_get(e, "rfilename"));
        if (!f || !file_name_ok(f)) {
            rc = qp_error_set(QP_EFORMAT, "%s: %s lists an unsafe or malformed file name '%.120s' (absolute, "
                              "'..', backslash or too long); refusing it", s->display, from, f ? f : "(none)");
            goto done;
        }
        json_t *sz = json_object_get(e, "size");
        s->sizes[s->n_files] = json_is_integer(sz) && json_integer_value(sz) >= 0 ? json_integer_value(sz) : -1;
        s->files[s->n_files++] = qp_strdup(f);
    }
done:
    json_decref(doc);
    return rc;
}

/* Our record of a listing: the fields parse_listing reads. */
static char *listing_text(const qp_hf_source *s)
{
    json_t *sib = json_array();
    for (size_t i = 0; i < s->n_files; i++) {
        json_t *e = json_pack("{s:s}", "rfilename", s->files[i]);
        if (s->sizes[i] >= 0)
            json_object_set_new(e, "size", json_integer(s->sizes[i]));
        json_array_append_new(sib, e);
    }
    json_t *doc = json_pack("{s:s, s:o}", "sha", s->commit, "siblings", sib);
    char *t = json_dumps(doc, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(doc);
    if (!t)
        qp_out_of_memory(0, __FILE__, __LINE__);
    return t;
}

static int api_listing(qp_hf_source *s, const char *rev)
{
    char *esc = qp_http_escape(rev, 0);
    /* blobs=true: the listing carries each file's size (progress with an ETA) */
    char *url = qp_strfmt("%s/api/models/%s/revision/%s?blobs=true", s->endpoint, s->repo, esc);
    char *what = qp_strfmt("revision '%s'", rev);
    qp_http *h = qp_http_new(getenv("HF_TOKEN"));
    qp_buf body = QP_BUF_INIT;
    qp_http_result r;
    int rc = 0, attempt = 0;
    do {
        attempt++;
        qp_http_get_mem(h, url, MAX_JSON, &body, &r);
    } while (!(r.status == 200 && !r.transport_error && !r.too_large) && retry_after_failure(&r, attempt));
    if (r.status != 200 || r.transport_error || r.too_large)
        rc = http_fail(s, &r, what, attempt);
    else
        rc = parse_listing(s, body.data ? body.data : "", body.len, "the Hub's revision listing");
    qp_buf_free(&body);
    qp_http_free(h);
    free(what);
    free(url);
    free(esc);
    return rc;
}

static int glob_any(const json_t *globs, const char *name)
{
    size_t i;
    json_t *g;
    json_array_foreach(globs, i, g) {
        const char *pat = json_string_value(g);
        if (pat && fnmatch(pat, name, 0) == 0)
            return 1;
    }
    return 0;
}

typedef struct {
    char *name;
    int64_t size;
} listed;

static int cmp_listed(const void *a, const void *b)
{
    return strcmp(((const listed *)a)->name, ((const listed *)b)->name);
}

/* Keeps the files allow: admits and ignore: does not, sorted by name. */
static int filter(qp_hf_source *s, const json_t *allow, const json_t *ignore)
{
    listed *l = qp_xcalloc(s->n_files + 1, sizeof(*l));
    size_t k = 0;
    int rc = 0;
    for (size_t i = 0; i < s->n_files; i++) {
        int keep = (!allow || json_array_size(allow) == 0 || glob_any(allow, s->files[i])) &&
                   !(ignore && glob_any(ignore, s->files[i]));
        if (keep)
            l[k++] = (listed){s->files[i], s->sizes[i]};
        else
            free(s->files[i]);
    }
    qsort(l, k, sizeof(*l), cmp_listed);
    for (size_t i = 0; i < k; i++) {
        s->files[i] = l[i].name;
        s->sizes[i] = l[i].size;
    }
    s->n_files = k;
    free(l);
    for (size_t i = 1; i < k && rc == 0; i++)
        if (strcmp(s->files[i - 1], s->files[i]) == 0)
            rc = qp_error_set(QP_EFORMAT, "%s: the listing of commit %s names '%.120s' twice; refusing it",
                              s->display, s->commit, s->files[i]);
    if (rc == 0 && k == 0)
        rc = qp_error_set(QP_ERROR, "%s: no file at commit %s is left by allow:/ignore:; check the globs",
                          s->display, s->commit);
    return rc;
}

int qp_hf_listing_check(const char *text, size_t len)
{
    qp_hf_source *s = qp_xcalloc(1, sizeof(*s));
    s->display = qp_strdup("hf://fuzz/listing");
    s->repo = qp_strdup("fuzz/listing");
    int rc = parse_listing(s, text, len, "the listing");
    if (rc == 0)
        rc = filter(s, NULL, NULL);
    qp_hf_free(s);
    return rc;
}

/* A branch or tag is resolved once and then stays at that commit, as dvc
 * import's rev_lock does: the cache records revision -> commit (meta
 * hf-refs) and later runs use the record without asking the Hub, so a
 * cached re-run makes no request at all and a branch that moves upstream
 * never changes a build behind the user's back.  QPIPE_HF_REFRESH=1 (qpipe
 * run --refresh) asks the Hub again; the lock (run --frozen) catches a
 * fresh cache that resolved to another commit.  Each use of a record is
 * said once per process on stderr, with the commit. */
static int resolve(qp_hf_source *s)
{
    int offline = qp_hf_offline(), refresh = qp_hf_refresh() && !offline;
    char *name = qp_strfmt("%s@%s", s->repo, s->rev);
    char *text = NULL;
    int rc = 0;
    s->commit = memo_get(name);
    if (!s->commit && is_commit(s->rev))
        s->commit = qp_strdup(s->rev);
    if (!s->commit && !refresh) {
        if (qp_cache_meta_get(s->cache, "hf-refs", name, &text) == 0 && is_commit(text)) {
            s->commit = qp_strdup(text);
            fprintf(stderr, "qpipe: %s: '%s' is commit %s, as first resolved (recorded in the cache); qpipe run "
                            "--refresh asks the Hub again\n", s->display, s->rev, s->commit);
        }
        free(text);
        text = NULL;
        qp_error_clear();
    }
    if (!s->commit && offline) {
        rc = qp_error_set(QP_ERROR,
                          "%s: revision '%s' is not in the cache and offline mode is on (HF_HUB_OFFLINE=1); "
                          "run once online, or name the commit (@<40 hex>)", s->display, s->rev);
        goto done;
    }
    if (s->commit) {
        char *tree = qp_strfmt("%s@%s", s->repo, s->commit);
        int have = qp_cache_meta_get(s->cache, "hf-tree", tree, &text) == 0;
        qp_error_clear();
        if (have)
            rc = parse_listing(s, text, strlen(text), "the cache's record of the listing (meta/hf-tree)");
        free(tree);
        if (have)
            goto done;
        if (offline) {
            rc = qp_error_set(QP_ERROR,
                              "%s: the file list of commit %s is not in the cache and offline mode is on "
                              "(HF_HUB_OFFLINE=1); run once online", s->display, s->commit);
            goto done;
        }
        if ((rc = api_listing(s, s->commit)) != 0)
            goto done;
    } else if ((rc = api_listing(s, s->rev)) != 0) {
        goto done;
    }
    /* record what the Hub said: offline runs resolve from it.  Best effort:
     * a read-only cache (qpipe plan) still resolves, online */
    char *rec = listing_text(s), *tree = qp_strfmt("%s@%s", s->repo, s->commit);
    if (qp_cache_meta_put(s->cache, "hf-tree", tree, rec) != 0 ||
        (!is_commit(s->rev) && qp_cache_meta_put(s->cache, "hf-refs", name, s->commit) != 0))
        qp_error_clear();
    free(rec);
    free(tree);
done:
    if (rc == 0) {
        char *had = memo_get(name);
        if (!had)
            memo_put(name, s->commit);
        free(had);
    }
    free(text);
    free(name);
    return rc;
}

int qp_hf_open(qp_hf_source **out, const char *source, const json_t *allow, const json_t *ignore, qp_cache *cache)
{
    qp_hf_source *s = qp_xcalloc(1, sizeof(*s));
    s->cache = cache;
    s->display = qp_strdup(source);
    const char *ep = getenv("HF_ENDPOINT");
    s->endpoint = qp_strdup(ep && *ep ? ep : DEFAULT_ENDPOINT);
    size_t n = strlen(s->endpoint);
    while (n > 0 && s->endpoint[n - 1] == '/')
        s->endpoint[--n] = '\0';
    int rc = parse_source(source, "fetch source", &s->repo, &s->rev);
    if (rc == 0 && strncmp(s->endpoint, "http://", 7) != 0 && strncmp(s->endpoint, "https://", 8) != 0)
        rc = qp_error_set(QP_EUSAGE, "HF_ENDPOINT '%s' is not an http:// or https:// URL", s->endpoint);
    const char *tok = getenv("HF_TOKEN");
    for (const char *t = tok; rc == 0 && t && *t; t++)
        if ((unsigned char)*t < 0x21 || *t == 0x7f)   /* it goes into a header line: nothing could be smuggled */
            rc = qp_error_set(QP_EUSAGE, "HF_TOKEN holds a space or control character; set it to the token alone");
    if (rc == 0)
        rc = resolve(s);
    if (rc == 0)
        rc = filter(s, allow, ignore);
    if (rc) {
        qp_hf_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void qp_hf_free(qp_hf_source *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_files; i++)
        free(s->files[i]);
    free(s->files);
    free(s->sizes);
    free(s->display);
    free(s->repo);
    free(s->rev);
    free(s->commit);
    free(s->endpoint);
    free(s);
}

const char *qp_hf_repo(const qp_hf_source *s) { return s->repo; }
const char *qp_hf_revision(const qp_hf_source *s) { return s->rev; }
const char *qp_hf_commit(const qp_hf_source *s) { return s->commit; }
size_t qp_hf_count(const qp_hf_source *s) { return s->n_files; }
const char *qp_hf_file(const qp_hf_source *s, size_t i) { return s->files[i]; }

/* ---- downloads ---- */

typedef struct {
    qp_hf_source *s;
    char **paths;
    pthread_mutex_t mu;
    size_t next;                 /* next file to take */
    int failed;                  /* first failure recorded in err_* */
    int err_code;
    char err_msg[QP_ERROR_MAX];
    atomic_uint_fast64_t done_bytes;
    atomic_int running;
    atomic_int stop;
} dl_job;

static void on_bytes(void *ud, uint64_t n)
{
    atomic_fetch_add(&((dl_job *)ud)->done_bytes, n);
}

/* sha256 and the git blob id ("blob <size>\0" + bytes, SHA-1) of a file */
static int file_hashes(const char *path, char sha256[QP_HEX_LEN], char sha1[41])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return qp_error_errno(QP_ERROR, "%s: cannot open", path);
    struct stat st;
    EVP_MD_CTX *a = EVP_MD_CTX_new(), *b = EVP_MD_CTX_new();
    int rc = 0;
    if (!a || !b || fstat(fd, &st) != 0 || !EVP_DigestInit_ex(a, EVP_sha256(), NULL) ||
        !EVP_DigestInit_ex(b, EVP_sha1(), NULL)) {
        rc = qp_error_set(QP_ERROR, "%s: cannot start hashing", path);
        goto done;
    }
    char hdr[48];
    int hn = snprintf(hdr, sizeof(hdr), "blob %lld", (long long)st.st_size);
    EVP_DigestUpdate(b, hdr, (size_t)hn + 1);   /* the NUL is part of the header */
    size_t cap = 1 << 20;
    unsigned char *buf = qp_xmalloc(cap);
    for (;;) {
        ssize_t r = read(fd, buf, cap);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = qp_error_errno(QP_ERROR, "%s: cannot read", path);
            break;
        }
        if (r == 0)
            break;
        EVP_DigestUpdate(a, buf, (size_t)r);
        EVP_DigestUpdate(b, buf, (size_t)r);
    }
    free(buf);
    if (rc == 0) {
        unsigned char d[EVP_MAX_MD_SIZE];
        unsigned dn = 0;
        static const char hex[] = "0123456789abcdef";
        EVP_DigestFinal_ex(a, d, &dn);
        for (unsigned i = 0; i < dn; i++) {
            sha256[2 * i] = hex[d[i] >> 4];
            sha256[2 * i + 1] = hex[d[i] & 15];
        }
        sha256[2 * dn] = '\0';
        EVP_DigestFinal_ex(b, d, &dn);
        for (unsigned i = 0; i < dn; i++) {
            sha1[2 * i] = hex[d[i] >> 4];
            sha1[2 * i + 1] = hex[d[i] & 15];
        }
        sha1[2 * dn] = '\0';
    }
done:
    EVP_MD_CTX_free(a);
    EVP_MD_CTX_free(b);
    close(fd);
    return rc;
}

static int is_hex_n(const char *s, size_t n)
{
    if (strlen(s) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* Wrong bytes are QP_ERROR, not QP_ECORRUPT: that code means a corrupt
 * cache object to the runner, which would drop it and run the stage again.
 * The Hub's word on what the file is: X-Linked-Etag (LFS: sha256),
 * otherwise the ETag (a git blob id for files kept in git, a sha256 for
 * some LFS answers), and X-Repo-Commit. */
static int verify(const qp_hf_source *s, const char *file, const char *path, const qp_http_result *r)
{
    char sha256[QP_HEX_LEN], sha1[41];
    int rc = file_hashes(path, sha256, sha1);
    if (rc)
        return rc;
    if (r->repo_commit[0] && strcmp(r->repo_commit, s->commit) != 0)
        return qp_error_set(QP_ERROR, "%s: file '%s': the Hub served it from commit %s, not %s; try again",
                            s->display, file, r->repo_commit, s->commit);
    const char *want = NULL, *got = NULL, *kind = NULL;
    if (is_hex_n(r->linked_etag, 64)) {
        want = r->linked_etag, got = sha256, kind = "sha256";
    } else if (is_hex_n(r->etag, 64)) {
        want = r->etag, got = sha256, kind = "sha256";
    } else if (is_hex_n(r->etag, 40)) {
        want = r->etag, got = sha1, kind = "git blob id";
    } else {
        return qp_error_set(QP_ERROR, "%s: file '%s': the answer carries no sha256 or git blob id to verify it "
                            "against (X-Linked-Etag/ETag); check HF_ENDPOINT", s->display, file);
    }
    if (strcmp(want, got) != 0)
        return qp_error_set(QP_ERROR,
                            "%s: file '%s' at commit %.12s: downloaded bytes have %s %s but the Hub says %s; nothing "
                            "was cached, run again", s->display, file, s->commit, kind, got, want);
    return 0;
}

/* One file, with retries and resumption; returns its temp path in *path. */
static int download_one(dl_job *j, qp_http *h, size_t i, char **path)
{
    qp_hf_source *s = j->s;
    const char *file = s->files[i];
    if (qp_hf_offline())
        return qp_error_set(QP_ERROR,
                            "%s: file '%s' at commit %.12s is not in the cache and offline mode is on "
                            "(HF_HUB_OFFLINE=1); run once online", s->display, file, s->commit);
    /* a name fixed by (repo, commit, file): a later run resumes what an
     * interrupted one left; names from the Hub never reach the file system */
    char id[QP_HEX_LEN];
    char *ident = qp_strfmt("%s\n%s\n%s", s->repo, s->commit, file);
    qp_sha256_buf(id, ident, strlen(ident));
    free(ident);
    char *tmpdir = qp_path_join(qp_cache_dir(s->cache), "tmp");
    char *part = qp_strfmt("%s/hf-%.40s.part", tmpdir, id);
    int rc = qp_mkdir_p(tmpdir, 0755), fd = -1, wrong_bytes = 0;
    free(tmpdir);
    char *esc = qp_http_escape(file, 1);
    char *url = qp_strfmt("%s/%s/resolve/%s/%s", s->endpoint, s->repo, s->commit, esc);
    char *what = qp_strfmt("file '%s'", file);
    free(esc);
    if (rc)
        goto done;
    /* another stage or qpipe downloading the same file waits on the lock;
     * when it gets it, the file it opened may have been renamed away by the
     * holder (finished and verified): then it opens the name again */
    struct stat st, at;
    for (;;) {
        fd = open(part, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0) {
            rc = qp_error_errno(QP_ERROR, "%s: cannot open the download of %s", part, what);
            goto done;
        }
        while (flock(fd, LOCK_EX) != 0 && errno == EINTR)
            ;
        if (fstat(fd, &st) != 0) {
            rc = qp_error_errno(QP_ERROR, "%s: cannot stat", part);
            goto done;
        }
        if (stat(part, &at) == 0 && at.st_ino == st.st_ino && at.st_dev == st.st_dev)
            break;
        close(fd);
    }
    uint64_t offset = (uint64_t)st.st_size;
    atomic_fetch_add(&j->done_bytes, offset);
    qp_http_result r;
    int attempt = 0;
    for (;;) {
        attempt++;
        uint64_t before = offset;
        if ((rc = qp_http_get_file(h, url, fd, &offset, MAX_FILE_BYTES, on_bytes, j, &r)) != 0)
            goto done;
        if (offset < before)   /* the server restarted the file */
            atomic_fetch_sub(&j->done_bytes, before - offset);
        if ((r.status == 200 || r.status == 206) && !r.transport_error && !r.too_large)
            break;
        if (r.status == 416 && attempt < MAX_ATTEMPTS) {
            /* the kept part is not a prefix the server can continue: start over */
            if (ftruncate(fd, 0) != 0) {
                rc = qp_error_errno(QP_ERROR, "%s: cannot truncate", part);
                goto done;
            }
            atomic_fetch_sub(&j->done_bytes, offset);
            offset = 0;
            continue;
        }
        if (atomic_load(&j->stop) || !retry_after_failure(&r, attempt)) {
            rc = http_fail(s, &r, what, attempt);
            goto done;
        }
    }
    wrong_bytes = 1;   /* until verified: not worth resuming */
    if (r.linked_size >= 0 && (uint64_t)r.linked_size != offset) {
        rc = qp_error_set(QP_ERROR, "%s: file '%s': %llu bytes arrived but the Hub says %lld; run again",
                          s->display, file, (unsigned long long)offset, (long long)r.linked_size);
        goto done;
    }
    if ((rc = verify(s, file, part, &r)) != 0)
        goto done;
    wrong_bytes = 0;
    /* the verified file moves to a name of its own while we still hold the
     * lock: a stage fetching the same file next starts a new .part instead
     * of resuming (and truncating) the one being imported */
    char *dir = qp_path_dirname(part), *mine = NULL;
    int fd2 = -1;
    if ((rc = qp_mkstemp_in(dir, "hf-done", &mine, &fd2)) == 0) {
        close(fd2);
        if (rename(part, mine) != 0) {
            rc = qp_error_errno(QP_ERROR, "%s: cannot rename to %s", part, mine);
            unlink(mine);
            free(mine);
        } else {
            free(part);
            part = mine;
        }
    }
    free(dir);
done:
    if (fd >= 0)
        close(fd);
    if (rc == 0) {
        *path = part;
        part = NULL;
    } else if (wrong_bytes && part) {
        unlink(part);
    }
    free(part);
    free(url);
    free(what);
    return rc;
}

static void *worker(void *arg)
{
    dl_job *j = arg;
    qp_http *h = qp_http_new(getenv("HF_TOKEN"));
    for (;;) {
        pthread_mutex_lock(&j->mu);
        size_t i = j->next++;
        int stop = j->failed;
        pthread_mutex_unlock(&j->mu);
        if (stop || i >= j->s->n_files)
            break;
        int rc = download_one(j, h, i, &j->paths[i]);
        if (rc) {
            pthread_mutex_lock(&j->mu);
            if (!j->failed) {
                j->failed = 1;
                j->err_code = rc;
                snprintf(j->err_msg, sizeof(j->err_msg), "%s", qp_error_last());
            }
            pthread_mutex_unlock(&j->mu);
            atomic_store(&j->stop, 1);
        }
    }
    qp_http_free(h);
    atomic_fetch_sub(&j->running, 1);
    return NULL;
}

int qp_hf_download(qp_hf_source *s, char **paths, qp_progress *progress)
{
    dl_job j;
    memset(&j, 0, sizeof(j));
    j.s = s;
    j.paths = paths;
    pthread_mutex_init(&j.mu, NULL);
    atomic_init(&j.done_bytes, 0);
    atomic_init(&j.stop, 0);
    uint64_t total = 0;
    int sizes_known = 1;
    for (size_t i = 0; i < s->n_files; i++) {
        paths[i] = NULL;
        if (s->sizes[i] < 0)
            sizes_known = 0;
        else
            total += (uint64_t)s->sizes[i];
    }
    size_t n_threads = s->n_files < MAX_PARALLEL ? s->n_files : MAX_PARALLEL;
    pthread_t tids[MAX_PARALLEL];
    size_t started = 0;
    atomic_init(&j.running, (int)n_threads);
    for (; started < n_threads; started++)
        if (pthread_create(&tids[started], NULL, worker, &j) != 0)
            break;
    atomic_fetch_sub(&j.running, (int)(n_threads - started));
    if (started == 0)
        worker(&j);   /* no thread could start: do it here */
    /* progress from this (the stage's) thread: files land in any order, the
     * result does not depend on it (paths are indexed by file) */
    while (atomic_load(&j.running) > 0) {
        uint64_t done = atomic_load(&j.done_bytes);
        /* a mirror whose listing has no sizes: bytes without a total (no ETA) */
        qp_progress_update(progress, sizes_known && done > total ? total : done, sizes_known ? total : 0,
                           "bytes");
        sleep_ms(100);
    }
    for (size_t t = 0; t < started; t++)
        pthread_join(tids[t], NULL);
    pthread_mutex_destroy(&j.mu);
    if (j.failed) {
        for (size_t i = 0; i < s->n_files; i++) {
            if (paths[i])
                unlink(paths[i]);
            free(paths[i]);
            paths[i] = NULL;
        }
        return qp_error_set(j.err_code, "%s", j.err_msg);
    }
    return 0;
}
