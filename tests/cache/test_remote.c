/* The remote cache client (cache/remote.c) against a tiny in-process HTTP
 * server: read-through verifies every object (a corrupt one is reported
 * once, never stored, and the action is a miss), an entry whose objects are
 * absent is a miss, write-back sends objects before the entry, and an
 * unreachable remote warns once and never makes a call fail.  The CLI test
 * tests/cli/test_remote_cache.sh covers the same against nginx. */
#include "tests/cache/cache_test_helpers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

/* ---- a one-thread HTTP/1.0 server over a fixed table of paths ---- */
#define MAX_FILES 16
typedef struct {
    int fd, port, stop;
    pthread_t th;
    pthread_mutex_t mu;
    char *path[MAX_FILES], *body[MAX_FILES];
    size_t len[MAX_FILES], n;
    int puts, gets;
    char put_order[MAX_FILES][8];   /* "cas" or "ac" of each PUT, in order */
} server;

static void srv_set(server *s, const char *path, const void *body, size_t len)
{
    pthread_mutex_lock(&s->mu);
    size_t i = 0;
    while (i < s->n && strcmp(s->path[i], path) != 0)
        i++;
    if (i == s->n) {
        assert_true(s->n < MAX_FILES);
        s->path[s->n++] = strdup(path);
    } else {
        free(s->body[i]);
    }
    s->body[i] = malloc(len + 1);
    memcpy(s->body[i], body, len);
    s->len[i] = len;
    pthread_mutex_unlock(&s->mu);
}

static int srv_find(server *s, const char *path)
{
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->path[i], path))
            return (int)i;
    return -1;
}

static void *srv_main(void *arg)
{
    server *s = arg;
    for (;;) {
        int c = accept(s->fd, NULL, NULL);
        if (c < 0 || s->stop) {
            if (c >= 0)
                close(c);
            return NULL;
        }
        char req[65536];
        size_t got = 0;
        char *end = NULL;
        while (got < sizeof(req) - 1) {
            ssize_t k = read(c, req + got, sizeof(req) - 1 - got);
            if (k <= 0)
                break;
            got += (size_t)k;
            req[got] = '\0';
            if ((end = strstr(req, "\r\n\r\n")))
                break;
        }
        char method[8] = "", path[512] = "";
        sscanf(req, "%7s %511s", method, path);
        size_t clen = 0;
        const char *cl = strcasestr(req, "Content-Length:");
        if (cl)
            clen = (size_t)atol(cl + 15);
        char *body = NULL;
        size_t have = 0;
        if (end && !strcmp(method, "PUT")) {
            body = malloc(clen + 1);
            have = got - (size_t)(end + 4 - req);
            memcpy(body, end + 4, have);
            while (have < clen) {
                ssize_t k = read(c, body + have, clen - have);
                if (k <= 0)
                    break;
                have += (size_t)k;
            }
        }
        pthread_mutex_lock(&s->mu);
        const char *p = strncmp(path, "/r/", 3) == 0 ? path + 3 : path;
        int i = srv_find(s, p);
        char hdr[256];
        if (!strcmp(method, "PUT")) {
            pthread_mutex_unlock(&s->mu);
            srv_set(s, p, body, have);
            pthread_mutex_lock(&s->mu);
            if (s->puts < MAX_FILES)
                snprintf(s->put_order[s->puts], 8, "%.3s", p);
            s->puts++;
            snprintf(hdr, sizeof(hdr), "HTTP/1.0 201 Created\r\nContent-Length: 8\r\n\r\ncreated\n");
            (void)!write(c, hdr, strlen(hdr));
        } else if (i < 0) {
            snprintf(hdr, sizeof(hdr), "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            (void)!write(c, hdr, strlen(hdr));
        } else {
            if (!strcmp(method, "GET"))
                s->gets++;
            snprintf(hdr, sizeof(hdr), "HTTP/1.0 200 OK\r\nContent-Length: %zu\r\n\r\n", s->len[i]);
            (void)!write(c, hdr, strlen(hdr));
            if (!strcmp(method, "GET"))
                (void)!write(c, s->body[i], s->len[i]);
        }
        pthread_mutex_unlock(&s->mu);
        free(body);
        close(c);
    }
}

static server *srv_start(void)
{
    server *s = calloc(1, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t al = sizeof(a);
    getsockname(s->fd, (struct sockaddr *)&a, &al);
    s->port = ntohs(a.sin_port);
    assert_int_equal(listen(s->fd, 16), 0);
    pthread_create(&s->th, NULL, srv_main, s);
    return s;
}

static void srv_stop(server *s)
{
    s->stop = 1;
    shutdown(s->fd, SHUT_RDWR);
    close(s->fd);
    pthread_join(s->th, NULL);
    for (size_t i = 0; i < s->n; i++) {
        free(s->path[i]);
        free(s->body[i]);
    }
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ---- warnings ---- */
typedef struct { int n; char last[1024]; } warns;
static void on_warn(void *ud, const char *line)
{
    warns *w = ud;
    w->n++;
    snprintf(w->last, sizeof(w->last), "%s", line);
}

static qp_remote *remote_at(qp_cache *c, int port, int mode, warns *w)
{
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/r/", port);
    qp_remote_options o = {.url = url, .mode = mode, .warn = on_warn, .warn_ud = w};
    qp_remote *r = NULL;
    assert_int_equal(qp_remote_new(&r, &o), 0);
    qp_cache_set_remote(c, r);
    return r;
}

static void ac_path(char *out, size_t n, const char *key)
{
    snprintf(out, n, "ac/%s", key);   /* keys here are 64-hex already */
}

static void test_write_back_then_read_through(void **state)
{
    fixture *f = *state;
    server *s = srv_start();
    warns w = {0};
    qp_remote *r = remote_at(f->c, s->port, QP_REMOTE_READWRITE, &w);
    char a[QP_HEX_LEN], b[QP_HEX_LEN], got[QP_HEX_LEN];
    assert_int_equal(qp_cache_put(f->c, "manifest", 8, a), 0);
    assert_int_equal(qp_cache_put(f->c, "tensor", 6, b), 0);
    char *key = digest_str(7);
    const char *refs[] = {a, b};
    assert_int_equal(qp_cache_action_put(f->c, key, a, refs, 2), 0);
    assert_int_equal(w.n, 0);
    /* objects first (raw bytes under their own digest), the entry last */
    assert_int_equal(s->puts, 3);
    assert_string_equal(s->put_order[2], "ac/");
    char p[128];
    snprintf(p, sizeof(p), "cas/%s", b);
    int i = srv_find(s, p);
    assert_true(i >= 0);
    assert_int_equal(s->len[i], 6);
    assert_memory_equal(s->body[i], "tensor", 6);
    qp_remote_stats st;
    qp_remote_stats_get(r, &st);
    assert_int_equal(st.objects_up, 2);
    assert_int_equal(st.actions_up, 1);

    /* a second, empty cache reads it through */
    char *d2 = qp_path_join(f->dir, "c2");
    qp_cache *c2 = NULL;
    assert_int_equal(qp_cache_open(&c2, d2), 0);
    qp_remote *r2 = remote_at(c2, s->port, QP_REMOTE_READ, &w);
    assert_int_equal(qp_cache_action_get(c2, key, got), 0);
    assert_string_equal(got, a);
    assert_int_equal(qp_cache_has(c2, b), 1);
    void *data = NULL;
    size_t n = 0;
    assert_int_equal(qp_cache_get(c2, b, &data, &n), 0);
    assert_memory_equal(data, "tensor", 6);
    free(data);
    assert_int_equal(w.n, 0);
    /* read mode: a put stays local */
    int puts = s->puts;
    char *key2 = digest_str(8);
    assert_int_equal(qp_cache_action_put(c2, key2, a, refs, 2), 0);
    assert_int_equal(s->puts, puts);
    qp_cache_free(c2);
    qp_remote_free(r2);
    free(d2);
    free(key2);
    free(key);
    qp_cache_set_remote(f->c, NULL);
    qp_remote_free(r);
    srv_stop(s);
}

static void test_corrupt_and_missing_objects_are_misses(void **state)
{
    fixture *f = *state;
    server *s = srv_start();
    warns w = {0};
    qp_remote *r = remote_at(f->c, s->port, QP_REMOTE_READ, &w);
    char a[QP_HEX_LEN], b[QP_HEX_LEN], got[QP_HEX_LEN], p[128];
    qp_sha256_buf(a, "manifest", 8);
    qp_sha256_buf(b, "tensor", 6);
    char *key = digest_str(9);
    char *entry = qp_strfmt("{\"artifact\":\"%s\",\"refs\":[\"%s\",\"%s\"]}", a, a, b);
    ac_path(p, sizeof(p), key);
    srv_set(s, p, entry, strlen(entry));
    snprintf(p, sizeof(p), "cas/%s", a);
    srv_set(s, p, "manifest", 8);
    /* b absent: a miss, quietly */
    assert_int_equal(qp_cache_action_get(f->c, key, got), QP_ENOTFOUND);
    assert_int_equal(w.n, 0);
    qp_error_clear();
    /* b corrupt (a partial copy): a miss, one warning, nothing stored */
    qp_cache_set_remote(f->c, NULL);
    qp_remote_free(r);
    r = remote_at(f->c, s->port, QP_REMOTE_READ, &w);
    snprintf(p, sizeof(p), "cas/%s", b);
    srv_set(s, p, "tens", 4);
    assert_int_equal(qp_cache_action_get(f->c, key, got), QP_ENOTFOUND);
    assert_int_equal(qp_cache_action_get(f->c, key, got), QP_ENOTFOUND);
    assert_int_equal(w.n, 1);
    assert_non_null(strstr(w.last, "is corrupt or partial (4 bytes"));
    assert_int_equal(qp_cache_has(f->c, b), 0);
    qp_remote_stats st;
    qp_remote_stats_get(r, &st);
    assert_int_equal(st.disabled, 0);
    assert_int_equal(st.actions_down, 0);
    /* repaired on the server: a fresh client gets it */
    srv_set(s, p, "tensor", 6);
    qp_cache_set_remote(f->c, NULL);
    qp_remote_free(r);
    r = remote_at(f->c, s->port, QP_REMOTE_READ, &w);
    assert_int_equal(qp_cache_action_get(f->c, key, got), 0);
    assert_string_equal(got, a);
    qp_error_clear();
    free(entry);
    free(key);
    qp_cache_set_remote(f->c, NULL);
    qp_remote_free(r);
    srv_stop(s);
}

static void test_unreachable_warns_once(void **state)
{
    fixture *f = *state;
    /* a port nobody listens on: bind, learn it, close */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t al = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &al);
    int port = ntohs(sa.sin_port);
    close(fd);
    warns w = {0};
    qp_remote *r = remote_at(f->c, port, QP_REMOTE_READWRITE, &w);
    char a[QP_HEX_LEN], got[QP_HEX_LEN];
    assert_int_equal(qp_cache_put(f->c, "x", 1, a), 0);
    char *key = digest_str(3), *key2 = digest_str(4);
    const char *refs[] = {a};
    assert_int_equal(qp_cache_action_get(f->c, key, got), QP_ENOTFOUND);
    assert_non_null(strstr(qp_error_last(), "not in the cache"));
    qp_error_clear();
    assert_int_equal(qp_cache_action_put(f->c, key, a, refs, 1), 0);
    assert_int_equal(qp_cache_action_get(f->c, key, got), 0);
    assert_int_equal(qp_cache_action_get(f->c, key2, got), QP_ENOTFOUND);
    qp_error_clear();
    assert_int_equal(w.n, 1);
    assert_non_null(strstr(w.last, "continuing with the local cache only"));
    free(key);
    free(key2);
    qp_cache_set_remote(f->c, NULL);
    qp_remote_free(r);
}

static void test_bad_options(void **state)
{
    (void)state;
    qp_remote *r = NULL;
    qp_remote_options o = {.url = "ftp://x", .mode = QP_REMOTE_READ};
    assert_int_equal(qp_remote_new(&r, &o), QP_EUSAGE);
    assert_null(r);
    o.url = "http://u:secret@x/c";   /* credentials belong in the environment */
    assert_int_equal(qp_remote_new(&r, &o), QP_EUSAGE);
    assert_null(strstr(qp_error_last(), "secret"));
    o.url = "http://x";
    o.mode = 0;
    assert_int_equal(qp_remote_new(&r, &o), QP_EUSAGE);
    qp_error_clear();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_write_back_then_read_through, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_and_missing_objects_are_misses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreachable_warns_once, setup, teardown),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
