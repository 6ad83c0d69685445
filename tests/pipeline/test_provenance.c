/* Provenance commits: source state, side-branch commits that leave HEAD /
 * index / working tree alone, log / read, unborn repos, concurrent writers.
 * The git CLI (with an isolated HOME) is the independent oracle. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "common/fsutil.h"
#include "pipeline/provenance.h"

#include <git2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define GITCLI "git -c user.name=t -c user.email=t@t -c init.defaultBranch=main "

static char *g_home;

/* Runs a shell command; returns its stdout (malloc'ed) and exit status. */
static char *sh(int *status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *sh(int *status, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (cap - n < 2) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
    }
    buf[n] = '\0';
    int st = pclose(p);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (status)
        *status = rc;
    else if (rc != 0)
        fail_msg("command failed (%d): %s\n%s", rc, cmd, buf);
    return buf;
}

/* Like sh() for commands whose output is one line; strips the newline. */
static char *sh1(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *sh1(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    char *out = sh(NULL, "%s", cmd);
    size_t n = strlen(out);
    while (n > 0 && out[n - 1] == '\n')
        out[--n] = '\0';
    return out;
}

static char *slurp(const char *path)
{
    char *data = NULL;
    size_t n = 0;
    assert_int_equal(qp_read_file(path, &data, &n), 0);
    return data;
}

/* A repository with one commit: a.txt, .gitignore (ignores *.log) and
 * recipes/r.yaml.  Returns the canonical repository directory. */
static char *make_repo(void)
{
    char *tmp = qp_test_tmpdir();
    char *dir = realpath(tmp, NULL);
    free(tmp);
    char *p = qp_path_join(dir, "a.txt");
    qp_test_write_str(p, "alpha\n");
    free(p);
    p = qp_path_join(dir, ".gitignore");
    qp_test_write_str(p, "*.log\n");
    free(p);
    p = qp_path_join(dir, "recipes/r.yaml");
    qp_test_write_str(p, "name: demo\nstages: {}\n");
    free(p);
    free(sh(NULL, GITCLI "-C '%s' init -q && " GITCLI "-C '%s' add -A && " GITCLI
                         "-C '%s' commit -q -m init",
            dir, dir, dir));
    return dir;
}

static void test_source_clean_and_dirty(void **state)
{
    (void)state;
    char *dir = make_repo();
    char *recipe = qp_path_join(dir, "recipes/r.yaml");
    char *head = sh1("git -C '%s' rev-parse HEAD", dir);
    char commit[41];
    int dirty = -1;
    char *wd = NULL;

    assert_int_equal(qp_provenance_source(recipe, commit, &dirty, &wd), 0);
    assert_string_equal(commit, head);
    assert_int_equal(strlen(commit), 40);
    assert_int_equal(dirty, 0);
    assert_string_equal(wd, dir);
    free(wd);

    /* A directory inside the repository works as well; workdir may be NULL. */
    char *sub = qp_path_join(dir, "recipes");
    assert_int_equal(qp_provenance_source(sub, commit, &dirty, NULL), 0);
    assert_string_equal(commit, head);

    /* An ignored file does not count. */
    char *ign = qp_path_join(dir, "build.log");
    qp_test_write_str(ign, "noise\n");
    assert_int_equal(qp_provenance_source(recipe, commit, &dirty, NULL), 0);
    assert_int_equal(dirty, 0);

    /* A modified tracked file does. */
    char *a = qp_path_join(dir, "a.txt");
    qp_test_write_str(a, "alpha changed\n");
    assert_int_equal(qp_provenance_source(recipe, commit, &dirty, NULL), 0);
    assert_int_equal(dirty, 1);
    assert_string_equal(commit, head);
    qp_test_write_str(a, "alpha\n");
    assert_int_equal(qp_provenance_source(recipe, commit, &dirty, NULL), 0);
    assert_int_equal(dirty, 0);

    /* So does an untracked, non-ignored file. */
    char *u = qp_path_join(dir, "recipes/new.yaml");
    qp_test_write_str(u, "x: 1\n");
    assert_int_equal(qp_provenance_source(recipe, commit, &dirty, NULL), 0);
    assert_int_equal(dirty, 1);
    unlink(u);

    /* And a staged-only change. */
    qp_test_write_str(a, "staged\n");
    free(sh(NULL, "git -C '%s' add a.txt", dir));
    assert_int_equal(qp_provenance_source(recipe, commit, &dirty, NULL), 0);
    assert_int_equal(dirty, 1);

    free(u);
    free(a);
    free(ign);
    free(sub);
    free(head);
    free(recipe);
    qp_test_rmtree(dir);
    free(dir);
}

/* Everything a provenance commit must leave alone, as bytes. */
typedef struct {
    char *head_file, *index, *tree, *refs_main;
} snapshot;

static void snap(snapshot *s, const char *dir)
{
    char *p = qp_path_join(dir, ".git/HEAD");
    s->head_file = slurp(p);
    free(p);
    p = qp_path_join(dir, ".git/index");
    if (qp_path_exists(p))
        s->index = slurp(p);
    else
        s->index = qp_strdup("(none)");
    free(p);
    s->tree = sh(NULL,
                 "cd '%s' && find . -path ./.git -prune -o -type f -print | LC_ALL=C sort | "
                 "xargs -r sha256sum",
                 dir);
    p = qp_path_join(dir, ".git/refs/heads/main");
    s->refs_main = qp_path_exists(p) ? slurp(p) : qp_strdup("(none)");
    free(p);
}

static void snap_equal_free(snapshot *a, snapshot *b)
{
    assert_string_equal(a->head_file, b->head_file);
    assert_int_equal(strlen(a->index), strlen(b->index));
    assert_memory_equal(a->index, b->index, strlen(a->index));
    assert_string_equal(a->tree, b->tree);
    assert_string_equal(a->refs_main, b->refs_main);
    snapshot *all[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        free(all[i]->head_file);
        free(all[i]->index);
        free(all[i]->tree);
        free(all[i]->refs_main);
    }
}

static json_t *demo_record(const char *recipe_rel, const char *verdict, double ppl)
{
    return json_pack("{s:s, s:s, s:s, s:{s:i, s:f}}", "recipe", recipe_rel, "name", "demo",
                     "verdict", verdict, "metrics", "bits", 4, "ppl", ppl);
}

static void test_commit_record(void **state)
{
    (void)state;
    char *dir = make_repo();
    char *recipe = qp_path_join(dir, "recipes/r.yaml");
    char *rel = qp_provenance_relpath(dir, recipe);
    assert_string_equal(rel, "recipes/r.yaml");
    /* Leave the tree dirty on purpose: recording must not pick it up. */
    char *a = qp_path_join(dir, "a.txt");
    qp_test_write_str(a, "work in progress\n");
    char *head_before = sh1("git -C '%s' rev-parse HEAD", dir);

    json_t *rec = demo_record(rel, "pass", 5.25);
    snapshot before, after;
    snap(&before, dir);
    char c1[41];
    assert_int_equal(qp_provenance_commit(c1, recipe, NULL, rec,
                                          "3 stages ran, 1 cached\nppl 5.25\n"),
                     0);
    snap(&after, dir);
    snap_equal_free(&before, &after);
    json_decref(rec);

    char *tip = sh1("git -C '%s' rev-parse --verify qpipe/provenance", dir);
    assert_string_equal(tip, c1);
    char *head_after = sh1("git -C '%s' rev-parse HEAD", dir);
    assert_string_equal(head_after, head_before);
    char *sym = sh1("git -C '%s' symbolic-ref HEAD", dir);
    assert_string_equal(sym, "refs/heads/main");

    char *subj = sh1("git -C '%s' log --format=%%s qpipe/provenance", dir);
    assert_string_equal(subj, "qpipe run demo: pass");
    char *body = sh(NULL, "git -C '%s' log -1 --format=%%B qpipe/provenance", dir);
    assert_string_equal(body, "qpipe run demo: pass\n\n3 stages ran, 1 cached\nppl 5.25\n\n");
    char *author = sh1("git -C '%s' log -1 --format='%%an <%%ae>|%%cn <%%ce>' %s", dir, c1);
    assert_string_equal(author, "qpipe <qpipe@localhost>|qpipe <qpipe@localhost>");
    char *parents = sh1("git -C '%s' rev-list --parents -n1 %s", dir, c1);
    assert_string_equal(parents, c1); /* root commit: no parent ids */
    char *names = sh(NULL, "git -C '%s' ls-tree --name-only %s", dir, c1);
    assert_string_equal(names, "recipe.yaml\nrun.json\n");
    char *json = sh(NULL, "git -C '%s' show %s:run.json", dir, c1);
    assert_string_equal(json, "{\n"
                              "  \"metrics\": {\n"
                              "    \"bits\": 4,\n"
                              "    \"ppl\": 5.25\n"
                              "  },\n"
                              "  \"name\": \"demo\",\n"
                              "  \"recipe\": \"recipes/r.yaml\",\n"
                              "  \"verdict\": \"pass\"\n"
                              "}\n");
    char *ry = sh(NULL, "git -C '%s' show %s:recipe.yaml", dir, c1);
    assert_string_equal(ry, "name: demo\nstages: {}\n");
    char *fsck = sh(NULL, "git -C '%s' fsck --no-progress 2>&1", dir);
    assert_null(strstr(fsck, "error"));

    /* Second record: the first is its parent; identity from repo config;
     * no summary gives a subject-only message; name falls back to the file. */
    free(sh(NULL, "git -C '%s' config user.name 'Ann Lee' && git -C '%s' config user.email "
                  "ann@example.org",
            dir, dir));
    rec = json_pack("{s:s, s:s}", "recipe", rel, "verdict", "reject");
    snap(&before, dir);
    char c2[41];
    assert_int_equal(qp_provenance_commit(c2, recipe, NULL, rec, NULL), 0);
    snap(&after, dir);
    snap_equal_free(&before, &after);
    json_decref(rec);
    assert_string_not_equal(c1, c2);
    char *parents2 = sh1("git -C '%s' rev-list --parents -n1 qpipe/provenance", dir);
    char *want = qp_strfmt("%s %s", c2, c1);
    assert_string_equal(parents2, want);
    char *body2 = sh(NULL, "git -C '%s' log -1 --format='%%an <%%ae>%%n%%B' %s", dir, c2);
    assert_string_equal(body2, "Ann Lee <ann@example.org>\nqpipe run r: reject\n\n");
    char *count = sh1("git -C '%s' rev-list --count qpipe/provenance", dir);
    assert_string_equal(count, "2");

    /* Bad inputs. */
    char c3[41] = "x";
    json_t *empty = json_object();
    assert_int_equal(qp_provenance_commit(c3, recipe, "bad..name", empty, NULL), QP_EUSAGE);
    json_decref(empty);
    assert_string_equal(qp_error_last(),
                        "provenance branch 'bad..name' is not a valid git branch name");
    assert_string_equal(c3, "");
    json_t *arr = json_array();
    assert_int_equal(qp_provenance_commit(c3, recipe, NULL, arr, NULL), QP_EUSAGE);
    json_decref(arr);
    char *msg = qp_strfmt("%s: provenance record must be a JSON object", recipe);
    assert_string_equal(qp_error_last(), msg);
    free(msg);

    free(count);
    free(body2);
    free(want);
    free(parents2);
    free(fsck);
    free(ry);
    free(json);
    free(names);
    free(parents);
    free(author);
    free(body);
    free(subj);
    free(sym);
    free(head_after);
    free(tip);
    free(head_before);
    free(a);
    free(rel);
    free(recipe);
    qp_test_rmtree(dir);
    free(dir);
}

typedef struct {
    int n, stop_after, stop_value;
    char commits[8][41];
    long long times[8];
    double ppl[8];
    char recipe[8][64];
} collect;

static int collect_cb(void *ud, const char *commit, long long time, const json_t *record)
{
    collect *c = ud;
    assert_true(c->n < 8);
    strcpy(c->commits[c->n], commit);
    c->times[c->n] = time;
    c->ppl[c->n] = json_real_value(json_object_get(json_object_get(record, "metrics"), "ppl"));
    snprintf(c->recipe[c->n], sizeof c->recipe[0], "%s",
             json_string_value(json_object_get(record, "recipe")));
    c->n++;
    return (c->stop_after && c->n >= c->stop_after) ? c->stop_value : 0;
}

static void test_log_and_read(void **state)
{
    (void)state;
    char *dir = make_repo();
    char *ra = qp_path_join(dir, "recipes/r.yaml");
    char *rb = qp_path_join(dir, "recipes/other.yaml");
    qp_test_write_str(rb, "name: other\n");
    char ids[3][41];
    json_t *rec = demo_record("recipes/r.yaml", "pass", 1.5);
    assert_int_equal(qp_provenance_commit(ids[0], ra, NULL, rec, "one"), 0);
    json_decref(rec);
    rec = demo_record("recipes/other.yaml", "pass", 2.5);
    assert_int_equal(qp_provenance_commit(ids[1], rb, NULL, rec, "two"), 0);
    json_decref(rec);
    rec = demo_record("recipes/r.yaml", "reject", 3.5);
    assert_int_equal(qp_provenance_commit(ids[2], ra, NULL, rec, "three"), 0);
    json_decref(rec);

    /* All, newest first. */
    collect c = {0};
    assert_int_equal(qp_provenance_log(dir, NULL, NULL, 0, collect_cb, &c), 0);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.commits[0], ids[2]);
    assert_string_equal(c.commits[1], ids[1]);
    assert_string_equal(c.commits[2], ids[0]);
    assert_true(c.ppl[0] == 3.5 && c.ppl[1] == 2.5 && c.ppl[2] == 1.5);
    char *t = sh1("git -C '%s' log -1 --format=%%ct %s", dir, ids[2]);
    assert_int_equal(c.times[0], atoll(t));
    free(t);

    /* Filter by recipe (given as a path, not as the stored relative name). */
    memset(&c, 0, sizeof c);
    assert_int_equal(qp_provenance_log(ra, NULL, ra, 0, collect_cb, &c), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.commits[0], ids[2]);
    assert_string_equal(c.commits[1], ids[0]);
    assert_string_equal(c.recipe[1], "recipes/r.yaml");
    memset(&c, 0, sizeof c);
    assert_int_equal(qp_provenance_log(ra, NULL, rb, 0, collect_cb, &c), 0);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.commits[0], ids[1]);

    /* Limit, and stopping from the callback (positive -> 0, negative kept). */
    memset(&c, 0, sizeof c);
    assert_int_equal(qp_provenance_log(dir, NULL, ra, 1, collect_cb, &c), 0);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.commits[0], ids[2]);
    memset(&c, 0, sizeof c);
    c.stop_after = 2;
    c.stop_value = 7;
    assert_int_equal(qp_provenance_log(dir, NULL, NULL, 0, collect_cb, &c), 0);
    assert_int_equal(c.n, 2);
    memset(&c, 0, sizeof c);
    c.stop_after = 1;
    c.stop_value = QP_EGATE;
    assert_int_equal(qp_provenance_log(dir, NULL, NULL, 0, collect_cb, &c), QP_EGATE);
    assert_int_equal(c.n, 1);

    /* A branch with no runs yet is an empty history. */
    memset(&c, 0, sizeof c);
    assert_int_equal(qp_provenance_log(dir, "qpipe/none", NULL, 0, collect_cb, &c), 0);
    assert_int_equal(c.n, 0);

    /* read(): by prefix, by BRANCH~N, by ~N, by the branch itself. */
    json_t *r = NULL;
    char prefix[8];
    snprintf(prefix, sizeof prefix, "%.7s", ids[1]);
    assert_int_equal(qp_provenance_read(&r, dir, NULL, prefix), 0);
    assert_string_equal(json_string_value(json_object_get(r, "recipe")), "recipes/other.yaml");
    json_decref(r);
    char upper[41];
    for (int i = 0; i < 41; i++)
        upper[i] = (char)((ids[0][i] >= 'a' && ids[0][i] <= 'f') ? ids[0][i] - 32 : ids[0][i]);
    assert_int_equal(qp_provenance_read(&r, dir, NULL, upper), 0);
    assert_true(json_real_value(json_object_get(json_object_get(r, "metrics"), "ppl")) == 1.5);
    json_decref(r);
    assert_int_equal(qp_provenance_read(&r, ra, NULL, "qpipe/provenance~1"), 0);
    assert_true(json_real_value(json_object_get(json_object_get(r, "metrics"), "ppl")) == 2.5);
    json_decref(r);
    assert_int_equal(qp_provenance_read(&r, ra, NULL, "~2"), 0);
    assert_true(json_real_value(json_object_get(json_object_get(r, "metrics"), "ppl")) == 1.5);
    json_decref(r);
    assert_int_equal(qp_provenance_read(&r, ra, NULL, "qpipe/provenance"), 0);
    assert_string_equal(json_string_value(json_object_get(r, "verdict")), "reject");
    json_decref(r);
    /* The read record is exactly what run.json holds. */
    assert_int_equal(qp_provenance_read(&r, ra, NULL, ids[2]), 0);
    char *dumped = json_dumps(r, JSON_INDENT(2) | JSON_SORT_KEYS);
    char *shown = sh(NULL, "git -C '%s' show %s:run.json", dir, ids[2]);
    char *dumped_nl = qp_strfmt("%s\n", dumped);
    assert_string_equal(shown, dumped_nl);
    free(dumped_nl);
    free(shown);
    free(dumped);
    json_decref(r);

    /* read() errors. */
    r = (json_t *)1;
    assert_int_equal(qp_provenance_read(&r, dir, NULL, "qpipe/provenance~3"), QP_ENOTFOUND);
    assert_null(r);
    char *want = qp_strfmt("%s: 'qpipe/provenance~3': branch 'qpipe/provenance' has only 3 "
                           "record(s)",
                           dir);
    assert_string_equal(qp_error_last(), want);
    free(want);
    assert_int_equal(qp_provenance_read(&r, dir, NULL, "qpipe/missing~1"), QP_ENOTFOUND);
    want = qp_strfmt("%s: branch 'qpipe/missing' does not exist (no runs recorded)", dir);
    assert_string_equal(qp_error_last(), want);
    free(want);
    assert_int_equal(qp_provenance_read(&r, dir, NULL, "qpipe/provenance~x"), QP_EUSAGE);
    want = qp_strfmt("%s: bad revision 'qpipe/provenance~x': expected BRANCH~N", dir);
    assert_string_equal(qp_error_last(), want);
    free(want);
    assert_int_equal(qp_provenance_read(&r, dir, NULL, "a b"), QP_EUSAGE);
    /* A well-formed id that is not in the repository. */
    char bogus[41];
    strcpy(bogus, ids[0]);
    bogus[0] = bogus[0] == '0' ? '1' : '0';
    bogus[1] = bogus[1] == '0' ? '1' : '0';
    assert_int_equal(qp_provenance_read(&r, dir, NULL, bogus), QP_ENOTFOUND);
    want = qp_strfmt("%s: no commit '%s'", dir, bogus);
    assert_string_equal(qp_error_last(), want);
    free(want);
    /* A commit that is not a record (main's HEAD). */
    char *head = sh1("git -C '%s' rev-parse HEAD", dir);
    assert_int_equal(qp_provenance_read(&r, dir, NULL, head), QP_ENOTFOUND);
    want = qp_strfmt("%s: commit %s has no run.json (not a qpipe record)", dir, head);
    assert_string_equal(qp_error_last(), want);
    free(want);

    /* Foreign commits on the branch are skipped by log; a malformed run.json
     * is reported, naming the commit. */
    char *empty_tree = sh1("git -C '%s' hash-object -t tree /dev/null", dir);
    char *foreign = sh1(GITCLI "-C '%s' commit-tree %s -p %s -m foreign", dir, empty_tree,
                        ids[2]);
    free(sh(NULL, "git -C '%s' update-ref refs/heads/qpipe/provenance %s", dir, foreign));
    memset(&c, 0, sizeof c);
    assert_int_equal(qp_provenance_log(dir, NULL, NULL, 0, collect_cb, &c), 0);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.commits[0], ids[2]);
    char *bad_blob = sh1("printf '{\"a\": ' | git -C '%s' hash-object -w --stdin", dir);
    char *bad_tree = sh1("printf '100644 blob %s\\trun.json\\n' | git -C '%s' mktree", bad_blob,
                         dir);
    char *bad = sh1(GITCLI "-C '%s' commit-tree %s -p %s -m bad", dir, bad_tree, foreign);
    free(sh(NULL, "git -C '%s' update-ref refs/heads/qpipe/provenance %s", dir, bad));
    memset(&c, 0, sizeof c);
    assert_int_equal(qp_provenance_log(dir, NULL, NULL, 0, collect_cb, &c), QP_ECORRUPT);
    assert_int_equal(c.n, 0);
    want = qp_strfmt("%s: commit %s: run.json:1:6: unexpected token near end of file", dir,
                     bad);
    assert_string_equal(qp_error_last(), want);
    free(want);
    /* New records still chain onto whatever the tip is. */
    char c4[41];
    rec = demo_record("recipes/r.yaml", "pass", 4.5);
    assert_int_equal(qp_provenance_commit(c4, ra, NULL, rec, NULL), 0);
    json_decref(rec);
    char *p4 = sh1("git -C '%s' rev-parse %s^", dir, c4);
    assert_string_equal(p4, bad);
    memset(&c, 0, sizeof c);
    assert_int_equal(qp_provenance_log(dir, NULL, NULL, 1, collect_cb, &c), 0);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.commits[0], c4);

    free(p4);
    free(bad);
    free(bad_tree);
    free(bad_blob);
    free(foreign);
    free(empty_tree);
    free(head);
    free(rb);
    free(ra);
    qp_test_rmtree(dir);
    free(dir);
}

static void test_outside_repository(void **state)
{
    (void)state;
    char *tmp = qp_test_tmpdir();
    char *dir = realpath(tmp, NULL);
    free(tmp);
    char *recipe = qp_path_join(dir, "r.yaml");
    qp_test_write_str(recipe, "name: x\n");
    char commit[41] = "junk";
    int dirty = 5;
    char *wd = (char *)1;
    assert_int_equal(qp_provenance_source(recipe, commit, &dirty, &wd), QP_ENOTFOUND);
    char *want = qp_strfmt("%s: not inside a git repository", recipe);
    assert_string_equal(qp_error_last(), want);
    assert_string_equal(commit, "");
    assert_int_equal(dirty, 0);
    assert_null(wd);
    json_t *rec = json_object();
    assert_int_equal(qp_provenance_commit(commit, recipe, NULL, rec, "s"), QP_ENOTFOUND);
    assert_string_equal(qp_error_last(), want);
    json_decref(rec);
    collect c = {0};
    assert_int_equal(qp_provenance_log(recipe, NULL, NULL, 0, collect_cb, &c), QP_ENOTFOUND);
    json_t *r = NULL;
    assert_int_equal(qp_provenance_read(&r, recipe, NULL, "~1"), QP_ENOTFOUND);
    /* A missing path is an error, not "no repository". */
    char *missing = qp_path_join(dir, "nope/r.yaml");
    assert_int_equal(qp_provenance_source(missing, commit, &dirty, NULL), QP_ERROR);
    char *want2 = qp_strfmt("%s: cannot open: No such file or directory", missing);
    assert_string_equal(qp_error_last(), want2);
    free(want2);
    free(missing);
    free(want);
    free(recipe);
    qp_test_rmtree(dir);
    free(dir);
}

static void test_unborn_head(void **state)
{
    (void)state;
    char *tmp = qp_test_tmpdir();
    char *dir = realpath(tmp, NULL);
    free(tmp);
    free(sh(NULL, GITCLI "-C '%s' init -q", dir));
    char *recipe = qp_path_join(dir, "r.yaml");
    qp_test_write_str(recipe, "name: fresh\n");
    char commit[41] = "junk";
    int dirty = -1;
    char *wd = NULL;
    assert_int_equal(qp_provenance_source(recipe, commit, &dirty, &wd), 0);
    assert_string_equal(commit, "");
    assert_int_equal(dirty, 1); /* r.yaml is untracked */
    assert_string_equal(wd, dir);
    free(wd);

    snapshot before, after;
    snap(&before, dir);
    json_t *rec = json_pack("{s:s, s:s, s:s}", "recipe", "r.yaml", "name", "fresh", "verdict",
                            "pass");
    char c1[41];
    assert_int_equal(qp_provenance_commit(c1, recipe, "runs", rec, "first"), 0);
    json_decref(rec);
    snap(&after, dir);
    snap_equal_free(&before, &after);
    int st = 0;
    free(sh(&st, "git -C '%s' rev-parse -q --verify HEAD", dir));
    assert_int_not_equal(st, 0); /* HEAD is still unborn */
    char *tip = sh1("git -C '%s' rev-parse runs", dir);
    assert_string_equal(tip, c1);
    assert_int_equal(qp_provenance_source(recipe, commit, &dirty, NULL), 0);
    assert_string_equal(commit, "");
    json_t *r = NULL;
    assert_int_equal(qp_provenance_read(&r, dir, "runs", "~0"), 0);
    assert_string_equal(json_string_value(json_object_get(r, "name")), "fresh");
    json_decref(r);
    free(tip);
    free(recipe);
    qp_test_rmtree(dir);
    free(dir);
}

static void test_concurrent_writers(void **state)
{
    (void)state;
    char *dir = make_repo();
    char *recipe = qp_path_join(dir, "recipes/r.yaml");
    enum { WRITERS = 2, EACH = 5 };
    pid_t pids[WRITERS];
    for (int w = 0; w < WRITERS; w++) {
        pids[w] = fork();
        assert_true(pids[w] >= 0);
        if (pids[w] == 0) {
            int ok = 1;
            for (int i = 0; i < EACH && ok; i++) {
                json_t *rec = json_pack("{s:s, s:i, s:i}", "recipe", "recipes/r.yaml", "writer",
                                        w, "i", i);
                char id[41];
                if (qp_provenance_commit(id, recipe, NULL, rec, NULL) != 0) {
                    fprintf(stderr, "writer %d: %s\n", w, qp_error_last());
                    ok = 0;
                }
                json_decref(rec);
            }
            _exit(ok ? 0 : 1);
        }
    }
    for (int w = 0; w < WRITERS; w++) {
        int st = 0;
        assert_int_equal(waitpid(pids[w], &st, 0), pids[w]);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
    }
    char *count = sh1("git -C '%s' rev-list --count qpipe/provenance", dir);
    assert_string_equal(count, "10");
    /* Linear: exactly one root, no merges. */
    char *roots = sh1("git -C '%s' rev-list --max-parents=0 qpipe/provenance | wc -l", dir);
    assert_string_equal(roots, "1");
    char *merges = sh1("git -C '%s' rev-list --min-parents=2 qpipe/provenance | wc -l", dir);
    assert_string_equal(merges, "0");
    /* Every (writer, i) pair is there exactly once, each writer in order. */
    char *pairs = sh(NULL,
                     "for c in $(git -C '%s' rev-list --reverse qpipe/provenance); do "
                     "git -C '%s' show $c:run.json | tr -d ' \\n'; echo; done | "
                     "sed 's/.*\"i\":\\([0-9]\\).*\"writer\":\\([0-9]\\).*/\\2 \\1/' | "
                     "sort -s -k1,1",
                     dir, dir);
    assert_string_equal(pairs, "0 0\n0 1\n0 2\n0 3\n0 4\n1 0\n1 1\n1 2\n1 3\n1 4\n");
    free(pairs);
    free(merges);
    free(roots);
    free(count);
    free(recipe);
    qp_test_rmtree(dir);
    free(dir);
}

static void test_relpath(void **state)
{
    (void)state;
    char *dir = make_repo();
    char *p = qp_path_join(dir, "recipes/r.yaml");
    char *r = qp_provenance_relpath(dir, p);
    assert_string_equal(r, "recipes/r.yaml");
    free(r);
    free(p);
    /* Not yet existing file, "..", trailing slash on workdir, the workdir. */
    p = qp_path_join(dir, "recipes/../recipes/new.yaml");
    char *wd_slash = qp_strfmt("%s/", dir);
    r = qp_provenance_relpath(wd_slash, p);
    assert_string_equal(r, "recipes/new.yaml");
    free(r);
    free(p);
    r = qp_provenance_relpath(dir, wd_slash);
    assert_string_equal(r, ".");
    free(r);
    /* Through a symlink that points into the workdir. */
    char *link = qp_strfmt("%s.link", dir);
    assert_int_equal(symlink(dir, link), 0);
    p = qp_path_join(link, "a.txt");
    r = qp_provenance_relpath(dir, p);
    assert_string_equal(r, "a.txt");
    free(r);
    r = qp_provenance_relpath(link, p);
    assert_string_equal(r, "a.txt");
    free(r);
    free(p);
    unlink(link);
    /* A prefix that is not a directory boundary is outside. */
    char *sib = qp_strfmt("%sx", dir);
    assert_int_equal(qp_mkdir_p(sib, 0755), 0);
    r = qp_provenance_relpath(dir, sib);
    assert_string_equal(r, sib);
    free(r);
    qp_test_rmtree(sib);
    /* Neither the path nor its directory exists. */
    p = qp_path_join(dir, "no/such/file");
    assert_null(qp_provenance_relpath(dir, p));
    char *want = qp_strfmt("%s: cannot resolve the path: No such file or directory", p);
    assert_string_equal(qp_error_last(), want);
    free(want);
    free(p);
    free(sib);
    free(link);
    free(wd_slash);
    qp_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    /* Isolate both the git CLI and libgit2 from the user's configuration, so
     * the fallback identity is what an unconfigured machine gets. */
    char *tmp = qp_test_tmpdir();
    g_home = realpath(tmp, NULL);
    free(tmp);
    setenv("HOME", g_home, 1);
    setenv("XDG_CONFIG_HOME", g_home, 1);
    setenv("GIT_CONFIG_NOSYSTEM", "1", 1);
    unsetenv("GIT_DIR");
    unsetenv("GIT_WORK_TREE");
    unsetenv("GIT_INDEX_FILE");
    git_libgit2_init();
    git_libgit2_opts(GIT_OPT_SET_SEARCH_PATH, GIT_CONFIG_LEVEL_SYSTEM, g_home);
    git_libgit2_opts(GIT_OPT_SET_SEARCH_PATH, GIT_CONFIG_LEVEL_GLOBAL, g_home);
    git_libgit2_opts(GIT_OPT_SET_SEARCH_PATH, GIT_CONFIG_LEVEL_XDG, g_home);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_source_clean_and_dirty),
        cmocka_unit_test(test_commit_record),
        cmocka_unit_test(test_log_and_read),
        cmocka_unit_test(test_outside_repository),
        cmocka_unit_test(test_unborn_head),
        cmocka_unit_test(test_concurrent_writers),
        cmocka_unit_test(test_relpath),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    qp_test_rmtree(g_home);
    free(g_home);
    return rc;
}
