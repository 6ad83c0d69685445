/* Maintenance: stats, verify (counts, removals, stale temps), gc (with and
 * without a size limit, and its grace period while others use the cache). */
#include "tests/cache/cache_test_helpers.h"

typedef struct {
    char lines[16][512];
    size_t n;
} problems;

static void collect(void *ud, const char *line)
{
    problems *p = ud;
    if (p->n < 16)
        snprintf(p->lines[p->n], sizeof(p->lines[0]), "%s", line);
    p->n++;
}

static void put_text(qp_cache *c, size_t n, uint64_t seed, char d[QP_HEX_LEN])
{
    char *buf = malloc(n);
    fill_text(buf, n, seed);
    assert_int_equal(qp_cache_put(c, buf, n, d), 0);
    free(buf);
}

static void put_random(qp_cache *c, size_t n, uint64_t seed, char d[QP_HEX_LEN])
{
    char *buf = malloc(n);
    fill_random(buf, n, seed);
    assert_int_equal(qp_cache_put(c, buf, n, d), 0);
    free(buf);
}

static char *tmp_file(qp_cache *c, const char *name, time_t mtime)
{
    char *p = qp_strfmt("%s/tmp/%s", qp_cache_dir(c), name);
    qp_test_write_str(p, "partial");
    set_mtime(p, mtime);
    return p;
}

static void test_stats(void **state)
{
    fixture *f = *state;
    char a[QP_HEX_LEN], b[QP_HEX_LEN];
    put_text(f->c, 100000, 1, a);
    put_random(f->c, 50000, 2, b);
    const char *refs[] = {a, b};
    char *k = digest_str(1);
    assert_int_equal(qp_cache_action_put(f->c, k, a, refs, 2), 0);
    char *t = tmp_file(f->c, "obj.123", time(NULL));
    qp_cache_stats s;
    assert_int_equal(qp_cache_stats_get(f->c, &s), 0);
    assert_int_equal(s.objects, 2);
    assert_int_equal(s.object_raw_bytes, 150000);
    char *pa = object_path(f->c, a), *pb = object_path(f->c, b);
    assert_int_equal(s.object_disk_bytes, (uint64_t)(file_size(pa) + file_size(pb)));
    assert_int_equal(s.actions, 1);
    assert_int_equal(s.tmp_files, 1);
    assert_int_equal(s.memo_entries, 0);
    free(pa);
    free(pb);
    free(t);
    free(k);
}

static void test_verify(void **state)
{
    fixture *f = *state;
    char a[QP_HEX_LEN], b[QP_HEX_LEN], c3[QP_HEX_LEN], missing[QP_HEX_LEN];
    put_text(f->c, 100000, 1, a);
    put_text(f->c, 100000, 2, b);
    put_text(f->c, 100000, 3, c3);
    qp_sha256_buf(missing, "missing", 7);
    char *k1 = digest_str(1), *k2 = digest_str(2), *k3 = digest_str(3), *k4 = digest_str(4);
    const char *r1[] = {a}, *r2[] = {b, c3}, *r3[] = {missing};
    assert_int_equal(qp_cache_action_put(f->c, k1, a, r1, 1), 0);
    assert_int_equal(qp_cache_action_put(f->c, k2, c3, r2, 2), 0);
    assert_int_equal(qp_cache_action_put(f->c, k3, a, r3, 1), 0);
    char *p4 = action_path(f->c, k4);
    qp_test_write_str(p4, "not json");
    char *stale = tmp_file(f->c, ".tmp.killed", time(NULL) - 120);
    char *fresh = tmp_file(f->c, "obj.live", time(NULL));

    size_t n = 99;
    problems p = {.n = 0};
    /* corrupt b: flip a byte of its compressed data */
    char *pb = object_path(f->c, b);
    flip_byte(pb, file_size(pb) / 2);
    assert_int_equal(qp_cache_verify(f->c, collect, &p, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(p.n, 4);
    /* 1: the corrupt object; then actions in directory order (k2 dangles
     * because b was just removed, k3 references a missing object, k4 is
     * malformed) — compare as a set */
    char *want_obj_prefix = qp_strfmt("cache object %s: corrupt (", b);
    assert_memory_equal(p.lines[0], want_obj_prefix, strlen(want_obj_prefix));
    char *w2 = qp_strfmt("action %s: references missing object %s; removed, the stage will rerun", k2, b);
    char *w3 = qp_strfmt("action %s: references missing object %s; removed, the stage will rerun", k3, missing);
    char *w4 = qp_strfmt("action %s: malformed (not JSON: '[' or '{' expected near 'not'); removed", k4);
    int seen2 = 0, seen3 = 0, seen4 = 0;
    for (size_t i = 1; i < 4; i++) {
        seen2 += !strcmp(p.lines[i], w2);
        seen3 += !strcmp(p.lines[i], w3);
        seen4 += !strcmp(p.lines[i], w4);
    }
    if (seen2 != 1 || seen3 != 1 || seen4 != 1)
        fail_msg("unexpected lines:\n%s\n%s\n%s", p.lines[1], p.lines[2], p.lines[3]);
    assert_false(qp_path_exists(pb));
    assert_false(qp_path_exists(p4));
    assert_false(qp_path_exists(stale));  /* removed silently */
    assert_true(qp_path_exists(fresh));   /* a live writer's file stays */
    char got[QP_HEX_LEN];
    assert_int_equal(qp_cache_action_get(f->c, k1, got), 0);
    assert_string_equal(got, a);

    /* everything that was wrong is gone: a second pass is clean */
    p.n = 0;
    assert_int_equal(qp_cache_verify(f->c, collect, &p, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(p.n, 0);
    qp_cache_stats s;
    assert_int_equal(qp_cache_stats_get(f->c, &s), 0);
    assert_int_equal(s.objects, 2);
    assert_int_equal(s.actions, 1);
    assert_int_equal(s.tmp_files, 1);

    /* a NULL callback just counts */
    char *pa = object_path(f->c, a);
    overwrite_file(pa, "junk", 4);
    assert_int_equal(qp_cache_verify(f->c, NULL, NULL, &n), 0);
    assert_int_equal(n, 2);  /* object a + action k1 now dangling */
    free(pa);
    free(want_obj_prefix);
    free(w2);
    free(w3);
    free(w4);
    free(pb);
    free(stale);
    free(fresh);
    free(p4);
    free(k1);
    free(k2);
    free(k3);
    free(k4);
}

static void test_gc_unreferenced(void **state)
{
    fixture *f = *state;
    char a[QP_HEX_LEN], b[QP_HEX_LEN], x[QP_HEX_LEN], y[QP_HEX_LEN];
    put_random(f->c, 10000, 1, a);
    put_random(f->c, 20000, 2, b);
    put_random(f->c, 30000, 3, x);
    put_random(f->c, 40000, 4, y);
    char *k = digest_str(1);
    const char *refs[] = {a, b};
    assert_int_equal(qp_cache_action_put(f->c, k, a, refs, 2), 0);
    char *px = object_path(f->c, x), *py = object_path(f->c, y);
    uint64_t freed = (uint64_t)(file_size(px) + file_size(py));
    char *stale = tmp_file(f->c, "obj.old", time(NULL) - 600);
    qp_cache_gc_result r;
    memset(&r, 0xff, sizeof(r));
    assert_int_equal(qp_cache_gc(f->c, 0, &r), 0);
    assert_int_equal(r.removed_objects, 2);
    assert_int_equal(r.removed_bytes, freed);
    assert_int_equal(r.removed_actions, 0);
    assert_int_equal(qp_cache_has(f->c, a), 1);
    assert_int_equal(qp_cache_has(f->c, b), 1);
    assert_int_equal(qp_cache_has(f->c, x), 0);
    assert_int_equal(qp_cache_has(f->c, y), 0);
    assert_false(qp_path_exists(stale));
    char got[QP_HEX_LEN];
    assert_int_equal(qp_cache_action_get(f->c, k, got), 0);
    /* nothing more to do */
    assert_int_equal(qp_cache_gc(f->c, 0, &r), 0);
    assert_int_equal(r.removed_objects, 0);
    assert_int_equal(r.removed_bytes, 0);
    free(stale);
    free(px);
    free(py);
    free(k);
}

/* A checkpoint entry keeps its objects while its stage has no entry; once
 * the stage has one (it finished), gc removes the checkpoint and then its
 * objects.  qp_cache_remove deletes one object (absent is fine). */
static void test_gc_checkpoints(void **state)
{
    fixture *f = *state;
    char a[QP_HEX_LEN], x[QP_HEX_LEN], out[QP_HEX_LEN], got[QP_HEX_LEN];
    put_random(f->c, 10000, 1, a);
    put_random(f->c, 20000, 2, x);
    put_random(f->c, 30000, 3, out);
    char *stage = digest_str(7);
    const char *refs[] = {a, x};
    assert_int_equal(qp_cache_checkpoint_put(f->c, "ckpt stage 3", stage, a, refs, 2), 0);
    assert_int_equal(qp_cache_checkpoint_put(f->c, "ckpt stage 3", "", a, refs, 2), QP_ERROR);
    qp_cache_gc_result r;
    assert_int_equal(qp_cache_gc(f->c, 0, &r), 0);
    assert_int_equal(r.removed_actions, 0);
    assert_int_equal(r.removed_objects, 1);   /* out: nothing names it yet */
    assert_int_equal(qp_cache_action_get(f->c, "ckpt stage 3", got), 0);
    assert_string_equal(got, a);
    put_random(f->c, 30000, 3, out);
    assert_int_equal(qp_cache_action_put(f->c, stage, out, NULL, 0), 0);
    assert_int_equal(qp_cache_gc(f->c, 0, &r), 0);
    assert_int_equal(r.removed_actions, 1);
    assert_int_equal(r.removed_objects, 2);
    assert_int_equal(qp_cache_has(f->c, a), 0);
    assert_int_equal(qp_cache_has(f->c, x), 0);
    assert_int_equal(qp_cache_has(f->c, out), 1);
    assert_int_equal(qp_cache_action_get(f->c, "ckpt stage 3", got), QP_ENOTFOUND);
    assert_int_equal(qp_cache_action_get(f->c, stage, got), 0);
    /* an object an action still names is shared, not a checkpoint's own: it stays */
    assert_int_equal(qp_cache_remove(f->c, out), 0);
    assert_int_equal(qp_cache_has(f->c, out), 1);
    assert_int_equal(qp_cache_action_get(f->c, stage, got), 0);
    assert_int_equal(qp_cache_action_remove(f->c, stage), 0);
    assert_int_equal(qp_cache_remove(f->c, out), 0);
    assert_int_equal(qp_cache_has(f->c, out), 0);
    assert_int_equal(qp_cache_remove(f->c, out), 0);
    assert_int_equal(qp_cache_remove(f->c, "nothex"), QP_ERROR);
    free(stage);
}

/* While another handle is open (another process could be between storing
 * objects and recording their action), recent unreferenced objects stay. */
static void test_gc_grace_while_shared(void **state)
{
    fixture *f = *state;
    qp_cache *other = NULL;
    assert_int_equal(qp_cache_open(&other, qp_cache_dir(f->c)), 0);
    char young[QP_HEX_LEN], old[QP_HEX_LEN];
    put_random(f->c, 1000, 1, young);
    put_random(f->c, 1000, 2, old);
    char *po = object_path(f->c, old);
    set_mtime(po, time(NULL) - 7200);
    qp_cache_gc_result r;
    assert_int_equal(qp_cache_gc(f->c, 0, &r), 0);
    assert_int_equal(r.removed_objects, 1);
    assert_int_equal(qp_cache_has(f->c, young), 1);
    assert_int_equal(qp_cache_has(f->c, old), 0);
    /* a dedup hit refreshes an old object so it is protected again */
    put_random(f->c, 1000, 2, old);
    set_mtime(po, time(NULL) - 7200);
    put_random(f->c, 1000, 2, old);
    assert_int_equal(qp_cache_gc(f->c, 0, &r), 0);
    assert_int_equal(r.removed_objects, 0);
    qp_cache_free(other);
    /* alone now: everything unreferenced goes */
    assert_int_equal(qp_cache_gc(f->c, 0, &r), 0);
    assert_int_equal(r.removed_objects, 2);
    /* and the handle still works (its shared lock was taken back) */
    char d[QP_HEX_LEN];
    put_random(f->c, 10, 3, d);
    assert_int_equal(qp_cache_has(f->c, d), 1);
    free(po);
}

static void test_gc_max_bytes_lru(void **state)
{
    fixture *f = *state;
    /* three actions, each with a private 100 kB (incompressible) object,
     * all sharing one small object */
    char shared[QP_HEX_LEN], o[3][QP_HEX_LEN];
    char *k[3], *pk[3], *po[3];
    put_random(f->c, 1000, 100, shared);
    char *ps = object_path(f->c, shared);
    uint64_t sizes[3], total = (uint64_t)file_size(ps);
    for (int i = 0; i < 3; i++) {
        put_random(f->c, 100000, (uint64_t)i + 1, o[i]);
        k[i] = digest_str(i + 1);
        const char *refs[] = {o[i], shared};
        assert_int_equal(qp_cache_action_put(f->c, k[i], o[i], refs, 2), 0);
        pk[i] = action_path(f->c, k[i]);
        po[i] = object_path(f->c, o[i]);
        sizes[i] = (uint64_t)file_size(po[i]);
        total += sizes[i];
    }
    /* recency: k[1] oldest, then k[0], then k[2]; a hit on k[1] would make
     * it the newest, which is checked below */
    time_t now = time(NULL);
    set_mtime(pk[1], now - 300);
    set_mtime(pk[0], now - 200);
    set_mtime(pk[2], now - 100);

    qp_cache_gc_result r;
    /* everything fits: nothing happens */
    assert_int_equal(qp_cache_gc(f->c, total, &r), 0);
    assert_int_equal(r.removed_objects, 0);
    assert_int_equal(r.removed_actions, 0);

    /* one byte too many: exactly the least recently used action goes */
    assert_int_equal(qp_cache_gc(f->c, total - 1, &r), 0);
    assert_int_equal(r.removed_actions, 1);
    assert_int_equal(r.removed_objects, 1);
    assert_int_equal(r.removed_bytes, sizes[1]);
    assert_false(qp_path_exists(pk[1]));
    assert_int_equal(qp_cache_has(f->c, o[1]), 0);
    assert_int_equal(qp_cache_has(f->c, shared), 1);

    /* a hit makes k[0] the most recent: the next eviction takes k[2] */
    char got[QP_HEX_LEN];
    assert_int_equal(qp_cache_action_get(f->c, k[0], got), 0);
    assert_int_equal(qp_cache_gc(f->c, total - sizes[1] - 1, &r), 0);
    assert_int_equal(r.removed_actions, 1);
    assert_false(qp_path_exists(pk[2]));
    assert_true(qp_path_exists(pk[0]));
    assert_int_equal(qp_cache_has(f->c, o[2]), 0);

    /* a limit below any single action: all go, the shared object too */
    assert_int_equal(qp_cache_gc(f->c, 1, &r), 0);
    assert_int_equal(r.removed_actions, 1);
    assert_int_equal(r.removed_objects, 2);
    qp_cache_stats s;
    assert_int_equal(qp_cache_stats_get(f->c, &s), 0);
    assert_int_equal(s.objects, 0);
    assert_int_equal(s.actions, 0);
    for (int i = 0; i < 3; i++) {
        free(k[i]);
        free(pk[i]);
        free(po[i]);
    }
    free(ps);
}

static void test_gc_forgets_memos_of_deleted_files(void **state)
{
    fixture *f = *state;
    char *path = qp_path_join(f->dir, "gone.bin");
    qp_test_write_str(path, "soon deleted");
    set_mtime(path, time(NULL) - 100);
    char d[QP_HEX_LEN];
    assert_int_equal(qp_cache_file_digest(f->c, path, d), 0);
    qp_cache_stats s;
    assert_int_equal(qp_cache_stats_get(f->c, &s), 0);
    assert_int_equal(s.memo_entries, 1);
    qp_cache_gc_result r;
    assert_int_equal(qp_cache_gc(f->c, 0, &r), 0);
    assert_int_equal(qp_cache_stats_get(f->c, &s), 0);
    assert_int_equal(s.memo_entries, 1);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(qp_cache_gc(f->c, 0, &r), 0);
    assert_int_equal(qp_cache_stats_get(f->c, &s), 0);
    assert_int_equal(s.memo_entries, 0);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gc_unreferenced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gc_checkpoints, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gc_grace_while_shared, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gc_max_bytes_lru, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gc_forgets_memos_of_deleted_files, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
