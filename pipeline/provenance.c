/* Provenance records as commits on a side branch, written with libgit2
 * straight into the object database (see provenance.h for the format). */
#include "pipeline/provenance.h"

#include "common/error.h"
#include "common/fsutil.h"

#include <errno.h>
#include <git2.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define COMMIT_ATTEMPTS 10 /* tries against a branch tip moved by other writers */
#define LOCK_WAIT_S 5       /* seconds to wait for another writer's ref lock */

/* libgit2 keeps global state (caches, config search paths); it is set up once
 * and never shut down, so handles opened by any thread stay valid. */
static pthread_once_t g_init_once = PTHREAD_ONCE_INIT;
static int g_init_rc;

static void init_libgit2(void)
{
    g_init_rc = git_libgit2_init();
}

static int ensure_init(void)
{
    pthread_once(&g_init_once, init_libgit2);
    if (g_init_rc < 0)
        return qp_error_set(QP_ERROR, "libgit2: initialisation failed (code %d)", g_init_rc);
    return 0;
}

/* libgit2's last message, flattened to one line into buf. */
static const char *git_msg(char *buf, size_t n)
{
    const git_error *e = git_error_last();
    snprintf(buf, n, "%s", (e && e->message) ? e->message : "unknown libgit2 error");
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    size_t len = strlen(buf);
    while (len > 0 && (buf[len - 1] == ' ' || buf[len - 1] == ':'))
        buf[--len] = '\0';
    return buf;
}

/* "REPO: WHAT: libgit2 message" with the given qp_err code. */
static int git_fail(int code, const char *repo_path, const char *what)
{
    char msg[512];
    return qp_error_set(code, "%s: %s: %s", repo_path, what, git_msg(msg, sizeof msg));
}

static void hex_of(char out[41], const git_oid *id)
{
    git_oid_tostr(out, 41, id);
}

/* realpath, resolving a missing final component through its parent. */
static char *canon_path(const char *path)
{
    char *r = realpath(path, NULL);
    if (r || errno != ENOENT)
        return r;
    char *dir = qp_path_dirname(path);
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    char *rdir = realpath(dir, NULL);
    free(dir);
    if (!rdir || !*base || strcmp(base, ".") == 0 || strcmp(base, "..") == 0) {
        free(rdir);
        errno = ENOENT;
        return NULL;
    }
    r = strcmp(rdir, "/") == 0 ? qp_strfmt("/%s", base) : qp_strfmt("%s/%s", rdir, base);
    free(rdir);
    return r;
}

char *qp_provenance_relpath(const char *workdir, const char *path)
{
    char *rw = NULL, *rp = NULL, *out = NULL;
    if (!workdir || !path) {
        qp_error_set(QP_EUSAGE, "qp_provenance_relpath: NULL workdir or path");
        goto done;
    }
    rw = realpath(workdir, NULL);
    if (!rw) {
        qp_error_errno(QP_ENOTFOUND, "%s: cannot resolve the working directory", workdir);
        goto done;
    }
    rp = canon_path(path);
    if (!rp) {
        qp_error_errno(QP_ENOTFOUND, "%s: cannot resolve the path", path);
        goto done;
    }
    size_t nw = strlen(rw);
    if (strcmp(rp, rw) == 0) {
        out = qp_strdup(".");
    } else if (strcmp(rw, "/") == 0) {
        out = qp_strdup(rp + 1);
    } else if (strncmp(rp, rw, nw) == 0 && rp[nw] == '/') {
        out = qp_strdup(rp + nw + 1);
    } else {
        out = rp; /* outside the working tree: canonical absolute path */
        rp = NULL;
    }
done:
    free(rw);
    free(rp);
    return out;
}

/* Opens the repository whose working tree contains `path` (a file or a
 * directory).  *workdir gets the canonical workdir without trailing slash. */
static int open_repo(git_repository **out, char **workdir, const char *path)
{
    int rc = 0;
    char *dir = NULL;
    git_repository *repo = NULL;
    *out = NULL;
    *workdir = NULL;
    if ((rc = ensure_init()) < 0)
        return rc;
    if (!path || !*path)
        return qp_error_set(QP_EUSAGE, "provenance: empty path");
    if (!qp_path_exists(path))
        return qp_error_errno(QP_ERROR, "%s: cannot open", path);
    dir = qp_is_dir(path) ? qp_strdup(path) : qp_path_dirname(path);
    int grc = git_repository_open_ext(&repo, dir, 0, NULL);
    if (grc == GIT_ENOTFOUND) {
        rc = qp_error_set(QP_ENOTFOUND, "%s: not inside a git repository", path);
        goto done;
    }
    if (grc < 0) {
        rc = git_fail(QP_ERROR, dir, "cannot open the git repository");
        goto done;
    }
    const char *wd = git_repository_workdir(repo);
    if (!wd || git_repository_is_bare(repo)) {
        rc = qp_error_set(QP_ENOTFOUND, "%s: git repository %s is bare (no working tree)", path,
                          git_repository_path(repo));
        goto done;
    }
    char *rw = realpath(wd, NULL);
    if (!rw) {
        rc = qp_error_errno(QP_ERROR, "%s: cannot resolve the git working tree", wd);
        goto done;
    }
    size_t n = strlen(rw);
    while (n > 1 && rw[n - 1] == '/')
        rw[--n] = '\0';
    *workdir = rw;
    *out = repo;
    repo = NULL;
done:
    git_repository_free(repo);
    free(dir);
    return rc;
}

static int status_any_cb(const char *path, unsigned int flags, void *payload)
{
    (void)path;
    (void)payload;
    return flags != GIT_STATUS_CURRENT ? 1 : 0;
}

int qp_provenance_source(const char *path, char commit[41], int *dirty, char **workdir)
{
    int rc = 0;
    git_repository *repo = NULL;
    char *wd = NULL;
    commit[0] = '\0';
    *dirty = 0;
    if (workdir)
        *workdir = NULL;
    if ((rc = open_repo(&repo, &wd, path)) < 0)
        goto done;

    int unborn = git_repository_head_unborn(repo);
    if (unborn < 0) {
        rc = git_fail(QP_ERROR, wd, "cannot read HEAD");
        goto done;
    }
    if (!unborn) {
        git_oid head;
        if (git_reference_name_to_id(&head, repo, "HEAD") < 0) {
            rc = git_fail(QP_ERROR, wd, "cannot resolve HEAD");
            goto done;
        }
        hex_of(commit, &head);
    }

    /* Staged, unstaged and untracked (non-ignored) changes all make the
     * source differ from the commit id we record. */
    git_status_options so;
    git_status_options_init(&so, GIT_STATUS_OPTIONS_VERSION);
    so.show = GIT_STATUS_SHOW_INDEX_AND_WORKDIR;
    so.flags = GIT_STATUS_OPT_INCLUDE_UNTRACKED;
    int src = git_status_foreach_ext(repo, &so, status_any_cb, NULL);
    if (src < 0) {
        rc = git_fail(QP_ERROR, wd, "cannot compute the working tree status");
        goto done;
    }
    *dirty = src > 0;
    if (workdir) {
        *workdir = wd;
        wd = NULL;
    }
done:
    if (rc < 0)
        commit[0] = '\0';
    free(wd);
    git_repository_free(repo);
    return rc;
}

/* "refs/heads/<branch>" after checking the name is a valid ref name. */
static int branch_refname(char **out, const char *branch)
{
    *out = NULL;
    if (!branch)
        branch = QP_PROVENANCE_BRANCH;
    char *name = qp_strfmt("refs/heads/%s", branch);
    int valid = 0, bvalid = 0;
    /* git_branch_name_is_valid also refuses "HEAD" and a leading '-'
     * (--branch HEAD made refs/heads/HEAD, which git then warns about) */
    if (!*branch || git_reference_name_is_valid(&valid, name) < 0 || !valid ||
        git_branch_name_is_valid(&bvalid, branch) < 0 || !bvalid) {
        free(name);
        return qp_error_set(QP_EUSAGE, "provenance branch '%s' is not a valid git branch name",
                            branch);
    }
    *out = name;
    return 0;
}

/* A record branch is written only where that can move nothing the user
 * works on: not the branch HEAD names (born or not) or any worktree has
 * checked out — moving it would move HEAD and leave the index and the
 * worktree describing another commit — and not an existing branch whose tip
 * is not a qpipe record (its history is someone's work). */
static int check_record_branch(git_repository *repo, const char *wd, const char *refname)
{
    const char *branch = refname + strlen("refs/heads/");
    git_reference *head = NULL, *ref = NULL;
    git_commit *tip = NULL;
    git_tree *tree = NULL;
    git_tree_entry *entry = NULL;
    int rc = 0;
    if (git_reference_lookup(&head, repo, "HEAD") == 0 && git_reference_type(head) == GIT_REFERENCE_SYMBOLIC &&
        strcmp(git_reference_symbolic_target(head), refname) == 0) {
        rc = qp_error_set(QP_EUSAGE, "%s: provenance branch '%s' is checked out (HEAD); records go on a branch of "
                          "their own (the default is %s)", wd, branch, QP_PROVENANCE_BRANCH);
        goto done;
    }
    int grc = git_reference_lookup(&ref, repo, refname);
    if (grc == GIT_ENOTFOUND)
        goto done;   /* a new branch */
    if (grc < 0) {
        rc = git_fail(QP_ERROR, wd, "cannot read the provenance branch");
        goto done;
    }
    if (git_branch_is_checked_out(ref) == 1) {
        rc = qp_error_set(QP_EUSAGE, "%s: provenance branch '%s' is checked out in a worktree; records go on a "
                          "branch of their own (the default is %s)", wd, branch, QP_PROVENANCE_BRANCH);
        goto done;
    }
    git_reference *resolved = NULL;
    if (git_reference_resolve(&resolved, ref) < 0 || git_commit_lookup(&tip, repo, git_reference_target(resolved)) < 0 ||
        git_commit_tree(&tree, tip) < 0) {
        git_reference_free(resolved);
        rc = git_fail(QP_ERROR, wd, "cannot read the provenance branch tip");
        goto done;
    }
    git_reference_free(resolved);
    if (git_tree_entry_bypath(&entry, tree, "run.json") != 0)
        rc = qp_error_set(QP_EUSAGE, "%s: branch '%s' exists and its tip is not a qpipe run record; give "
                          "--branch a new name or one that holds records", wd, branch);
done:
    git_tree_entry_free(entry);
    git_tree_free(tree);
    git_commit_free(tip);
    git_reference_free(ref);
    git_reference_free(head);
    return rc;
}

int qp_provenance_check_branch(const char *recipe_path, const char *branch)
{
    git_repository *repo = NULL;
    char *wd = NULL, *refname = NULL;
    int rc = open_repo(&repo, &wd, recipe_path);
    if (rc == QP_ENOTFOUND) {   /* no repository: nothing to move (the run warns later) */
        qp_error_clear();
        rc = 0;
        goto done;
    }
    if (rc == 0 && (rc = branch_refname(&refname, branch)) == 0)
        rc = check_record_branch(repo, wd, refname);
done:
    git_repository_free(repo);
    free(refname);
    free(wd);
    return rc;
}

/* Looks up the branch tip; *found = 0 when the branch does not exist. */
static int branch_tip(git_oid *tip, int *found, git_repository *repo, const char *refname,
                      const char *wd)
{
    git_reference *ref = NULL, *resolved = NULL;
    int rc = 0;
    *found = 0;
    int grc = git_reference_lookup(&ref, repo, refname);
    if (grc == GIT_ENOTFOUND)
        goto done;
    if (grc < 0) {
        rc = git_fail(QP_ERROR, wd, refname);
        goto done;
    }
    if (git_reference_resolve(&resolved, ref) < 0) {
        rc = git_fail(QP_ERROR, wd, refname);
        goto done;
    }
    git_oid_cpy(tip, git_reference_target(resolved));
    *found = 1;
done:
    git_reference_free(resolved);
    git_reference_free(ref);
    return rc;
}

/* Copies s into a fresh string with line breaks turned into spaces, so the
 * commit subject stays one line. */
static char *one_line(const char *s)
{
    char *r = qp_strdup(s);
    for (char *p = r; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    return r;
}

static char *build_message(const char *recipe_path, const json_t *record, const char *summary)
{
    const char *name = json_string_value(json_object_get(record, "name"));
    const char *verdict = json_string_value(json_object_get(record, "verdict"));
    char *fallback = NULL;
    if (!name || !*name) {
        const char *slash = strrchr(recipe_path, '/');
        fallback = qp_strdup(slash ? slash + 1 : recipe_path);
        char *dot = strrchr(fallback, '.');
        if (dot && dot != fallback)
            *dot = '\0';
        name = fallback;
    }
    char *n1 = one_line(name);
    char *v1 = one_line(verdict && *verdict ? verdict : "unknown");
    char *msg;
    if (summary && *summary) {
        size_t len = strlen(summary);
        while (len > 0 && summary[len - 1] == '\n')
            len--;
        msg = qp_strfmt("qpipe run %s: %s\n\n%.*s\n", n1, v1, (int)len, summary);
    } else {
        msg = qp_strfmt("qpipe run %s: %s\n", n1, v1);
    }
    free(n1);
    free(v1);
    free(fallback);
    return msg;
}

/* Configured identity when complete, else the fixed qpipe identity. */
static int make_signature(git_signature **out, git_repository *repo, const char *wd)
{
    if (git_signature_default(out, repo) == 0)
        return 0;
    if (git_signature_now(out, "qpipe", "qpipe@localhost") < 0)
        return git_fail(QP_ERROR, wd, "cannot create the commit signature");
    return 0;
}

/* Randomised exponential back-off between attempts (up to ~0.25 s), so
 * writers that keep colliding spread out instead of retrying in lock-step. */
static void retry_backoff(int attempt, unsigned *seed)
{
    int shift = attempt < 8 ? attempt : 8; /* 2^8 ms cap */
    long ms = 1 + (long)(rand_r(seed) % (1u << shift));
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The record's tree: recipe.yaml (the recipe's bytes) and run.json. */
static int write_tree(git_tree **tree, git_repository *repo, const char *wd, const char *recipe_path,
                      const json_t *record)
{
    git_treebuilder *tb = NULL;
    char *recipe = NULL, *json = NULL;
    size_t recipe_len = 0;
    int rc = qp_read_file(recipe_path, &recipe, &recipe_len);
    if (rc < 0)
        return rc;
    char *dumped = json_dumps(record, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!dumped) {
        rc = qp_error_set(QP_ERROR, "%s: cannot serialise the provenance record", recipe_path);
        goto done;
    }
    json = qp_strfmt("%s\n", dumped);
    free(dumped);
    git_oid json_id, recipe_id, tree_id;
    if (git_blob_create_from_buffer(&json_id, repo, json, strlen(json)) < 0 ||
        git_blob_create_from_buffer(&recipe_id, repo, recipe, recipe_len) < 0) {
        rc = git_fail(QP_ERROR, wd, "cannot write blob");
        goto done;
    }
    if (git_treebuilder_new(&tb, repo, NULL) < 0 ||
        git_treebuilder_insert(NULL, tb, "recipe.yaml", &recipe_id, GIT_FILEMODE_BLOB) < 0 ||
        git_treebuilder_insert(NULL, tb, "run.json", &json_id, GIT_FILEMODE_BLOB) < 0 ||
        git_treebuilder_write(&tree_id, tb) < 0 || git_tree_lookup(tree, repo, &tree_id) < 0)
        rc = git_fail(QP_ERROR, wd, "cannot write tree");
done:
    git_treebuilder_free(tb);
    free(json);
    free(recipe);
    return rc;
}

/* What a commit needs besides its parent, for publish(). */
typedef struct {
    git_repository *repo;
    const char *wd, *refname, *msg, *reflog;
    git_signature *sig;
    git_tree *tree;
} commit_parts;

/* Why the branch could not be moved to the new commit: 1 to try again (a
 * lost race, after a back-off; a held ref lock, waited for), or an error. */
static int retry_or_fail(const commit_parts *c, int grc, int *lost, int *waits, double lock_deadline,
                         unsigned *seed)
{
    char what[320];
    if (grc == GIT_EMODIFIED) {
        if (++*lost >= COMMIT_ATTEMPTS) {
            snprintf(what, sizeof what, "cannot update %s (lost the race to other writers %d times; retry the run)",
                     c->refname, *lost);
            return git_fail(QP_ERROR, c->wd, what);
        }
        /* The first loss is retried at once on the new tip; repeated
         * losses back off so colliding writers spread out. */
        if (*lost > 1)
            retry_backoff(*lost - 1, seed);
        return 1;
    }
    if (grc == GIT_ELOCKED) {
        if (qp_now() > lock_deadline) {
            snprintf(what, sizeof what,
                     "cannot update %s (locked for %d s; remove the stale .lock file if no other qpipe or git is "
                     "running)", c->refname, LOCK_WAIT_S);
            return git_fail(QP_ERROR, c->wd, what);
        }
        retry_backoff(++*waits, seed);
        return 1;
    }
    snprintf(what, sizeof what, "cannot update %s", c->refname);
    return git_fail(QP_ERROR, c->wd, what);
}

/* Compare-and-swap loop: commit on the tip we saw, move the branch only if
 * it still points there; another process winning the race just means we
 * rebuild on its commit.  Lost races are bounded by COMMIT_ATTEMPTS; a ref
 * lock held by another writer is waited for up to LOCK_WAIT_S (it is held
 * for microseconds unless a crashed process left it behind). */
static int publish(char out_commit[41], const commit_parts *c)
{
    git_commit *parent = NULL;
    git_reference *newref = NULL;
    unsigned seed = (unsigned)getpid() ^ (unsigned)time(NULL);
    double lock_deadline = qp_now() + LOCK_WAIT_S;
    int lost = 0, waits = 0, rc = 0;
    for (;;) {
        git_oid tip, new_id;
        int found = 0;
        git_commit_free(parent);
        parent = NULL;
        if ((rc = branch_tip(&tip, &found, c->repo, c->refname, c->wd)) < 0)
            break;
        if (found && git_commit_lookup(&parent, c->repo, &tip) < 0) {
            rc = git_fail(QP_ERROR, c->wd, "cannot read the provenance branch tip");
            break;
        }
        const git_commit *parents[1] = {parent};
        if (git_commit_create(&new_id, c->repo, NULL, c->sig, c->sig, NULL, c->msg, c->tree, found ? 1 : 0,
                              parents) < 0) {
            rc = git_fail(QP_ERROR, c->wd, "cannot write commit");
            break;
        }
        /* The old-value check runs under the ref's lock; a zero old id means
         * "must not exist yet" (git_reference_create with force=0 checks
         * existence before locking, so two first records could both win). */
        if (!found)
            memset(&tip, 0, sizeof tip);
        int grc = git_reference_create_matching(&newref, c->repo, c->refname, &new_id, 1, &tip, c->reflog);
        if (grc == 0) {
            hex_of(out_commit, &new_id);
            rc = 0;
            break;
        }
        if ((rc = retry_or_fail(c, grc, &lost, &waits, lock_deadline, &seed)) < 0)
            break;
    }
    git_reference_free(newref);
    git_commit_free(parent);
    return rc;
}

int qp_provenance_commit(char out_commit[41], const char *recipe_path, const char *branch,
                         const json_t *record, const char *summary)
{
    int rc = 0;
    git_repository *repo = NULL;
    git_tree *tree = NULL;
    git_signature *sig = NULL;
    char *wd = NULL, *refname = NULL, *msg = NULL, *reflog = NULL;
    out_commit[0] = '\0';

    if (!record || !json_is_object(record))
        return qp_error_set(QP_EUSAGE, "%s: provenance record must be a JSON object",
                            recipe_path ? recipe_path : "(null)");
    if ((rc = open_repo(&repo, &wd, recipe_path)) < 0 || (rc = branch_refname(&refname, branch)) < 0 ||
        (rc = check_record_branch(repo, wd, refname)) < 0)
        goto done;
    /* The tree does not depend on the parent, so it is built once. */
    if ((rc = write_tree(&tree, repo, wd, recipe_path, record)) < 0 || (rc = make_signature(&sig, repo, wd)) < 0)
        goto done;
    msg = build_message(recipe_path, record, summary);
    reflog = qp_strfmt("commit: %.*s", (int)strcspn(msg, "\n"), msg);
    commit_parts c = {.repo = repo, .wd = wd, .refname = refname, .msg = msg, .reflog = reflog, .sig = sig,
                      .tree = tree};
    rc = publish(out_commit, &c);
done:
    git_signature_free(sig);
    git_tree_free(tree);
    git_repository_free(repo);
    free(reflog);
    free(msg);
    free(refname);
    free(wd);
    return rc;
}

/* Parses run.json of commit c.  QP_ENOTFOUND (message set) when the tree has
 * no run.json, QP_ECORRUPT when it is not valid JSON. */
static int load_record(json_t **out, git_repository *repo, const git_commit *c, const char *wd)
{
    int rc = 0;
    git_tree *tree = NULL;
    git_blob *blob = NULL;
    char hex[41];
    *out = NULL;
    hex_of(hex, git_commit_id(c));
    if (git_commit_tree(&tree, c) < 0) {
        rc = git_fail(QP_ERROR, wd, hex);
        goto done;
    }
    const git_tree_entry *e = git_tree_entry_byname(tree, "run.json");
    if (!e || git_tree_entry_type(e) != GIT_OBJECT_BLOB) {
        rc = qp_error_set(QP_ENOTFOUND, "%s: commit %s has no run.json (not a qpipe record)", wd,
                          hex);
        goto done;
    }
    if (git_blob_lookup(&blob, repo, git_tree_entry_id(e)) < 0) {
        rc = git_fail(QP_ERROR, wd, hex);
        goto done;
    }
    json_error_t jerr;
    json_t *j = json_loadb(git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob), 0, &jerr);
    if (!j) {
        rc = qp_error_set(QP_ECORRUPT, "%s: commit %s: run.json:%d:%d: %s", wd, hex, jerr.line,
                          jerr.column, jerr.text);
        goto done;
    }
    *out = j;
done:
    git_blob_free(blob);
    git_tree_free(tree);
    return rc;
}

int qp_provenance_log(const char *start_path, const char *branch, const char *recipe_filter,
                      size_t limit, qp_provenance_cb cb, void *ud)
{
    int rc = 0;
    git_repository *repo = NULL;
    git_commit *c = NULL;
    char *wd = NULL, *refname = NULL, *filter = NULL;
    if (!cb)
        return qp_error_set(QP_EUSAGE, "qp_provenance_log: NULL callback");
    if ((rc = open_repo(&repo, &wd, start_path)) < 0)
        goto done;
    if ((rc = branch_refname(&refname, branch)) < 0)
        goto done;
    if (recipe_filter && !(filter = qp_provenance_relpath(wd, recipe_filter))) {
        rc = qp_error_last_code();
        goto done;
    }
    git_oid id;
    int found = 0;
    if ((rc = branch_tip(&id, &found, repo, refname, wd)) < 0 || !found)
        goto done;

    size_t calls = 0;
    for (;;) {
        if (git_commit_lookup(&c, repo, &id) < 0) {
            rc = git_fail(QP_ERROR, wd, "cannot read a provenance commit");
            goto done;
        }
        json_t *rec = NULL;
        int lr = load_record(&rec, repo, c, wd);
        if (lr == QP_ENOTFOUND) {
            qp_error_clear();
        } else if (lr < 0) {
            rc = lr;
            goto done;
        } else {
            const char *r = json_string_value(json_object_get(rec, "recipe"));
            if (!filter || (r && strcmp(r, filter) == 0)) {
                char hex[41];
                hex_of(hex, git_commit_id(c));
                int crc = cb(ud, hex, (long long)git_commit_time(c), rec);
                calls++;
                if (crc != 0) {
                    json_decref(rec);
                    rc = crc < 0 ? crc : 0;
                    goto done;
                }
            }
            json_decref(rec);
            if (limit && calls >= limit)
                goto done;
        }
        if (git_commit_parentcount(c) == 0)
            break;
        git_oid_cpy(&id, git_commit_parent_id(c, 0));
        git_commit_free(c);
        c = NULL;
    }
done:
    git_commit_free(c);
    git_repository_free(repo);
    free(filter);
    free(refname);
    free(wd);
    return rc;
}

static int is_hex_prefix(const char *s)
{
    size_t n = strlen(s);
    if (n < 4 || n > GIT_OID_HEXSZ)
        return 0;
    return strspn(s, "0123456789abcdefABCDEF") == n;
}

/* Resolves "<branch>[~N]" / "~N" to a commit. */
static int lookup_branch_rev(git_commit **out, git_repository *repo, const char *wd,
                             const char *branch, const char *rev)
{
    int rc = 0;
    char *bname = NULL, *refname = NULL;
    git_commit *c = NULL;
    const char *tilde = strrchr(rev, '~');
    unsigned long back = 0;
    *out = NULL;
    if (tilde) {
        const char *num = tilde + 1;
        if (*num == '\0') {
            back = 1; /* git: "X~" = "X~1" */
        } else {
            char *end = NULL;
            errno = 0;
            if (*num >= '0' && *num <= '9')
                back = strtoul(num, &end, 10);
            if (!end || errno || *end) {
                rc = qp_error_set(QP_EUSAGE, "%s: bad revision '%s': expected BRANCH~N", wd, rev);
                goto done;
            }
        }
        bname = tilde == rev ? qp_strdup(branch ? branch : QP_PROVENANCE_BRANCH)
                             : qp_strfmt("%.*s", (int)(tilde - rev), rev);
    } else {
        bname = qp_strdup(rev);
    }
    if ((rc = branch_refname(&refname, bname)) < 0) {
        qp_error_set(QP_EUSAGE,
                     "%s: bad revision '%s': expected a commit id prefix (>= 4 hex digits) or "
                     "BRANCH~N",
                     wd, rev);
        goto done;
    }
    git_oid id;
    int found = 0;
    if ((rc = branch_tip(&id, &found, repo, refname, wd)) < 0)
        goto done;
    if (!found) {
        rc = qp_error_set(QP_ENOTFOUND, "%s: branch '%s' does not exist (no runs recorded)", wd,
                          bname);
        goto done;
    }
    if (git_commit_lookup(&c, repo, &id) < 0) {
        rc = git_fail(QP_ERROR, wd, refname);
        goto done;
    }
    for (unsigned long i = 0; i < back; i++) {
        git_commit *p = NULL;
        if (git_commit_parentcount(c) == 0) {
            rc = qp_error_set(QP_ENOTFOUND, "%s: '%s': branch '%s' has only %lu record(s)", wd,
                              rev, bname, i + 1);
            goto done;
        }
        if (git_commit_parent(&p, c, 0) < 0) {
            rc = git_fail(QP_ERROR, wd, rev);
            goto done;
        }
        git_commit_free(c);
        c = p;
    }
    *out = c;
    c = NULL;
done:
    git_commit_free(c);
    free(refname);
    free(bname);
    return rc;
}

int qp_provenance_read(json_t **out, const char *start_path, const char *branch, const char *rev)
{
    int rc = 0;
    git_repository *repo = NULL;
    git_commit *c = NULL;
    char *wd = NULL;
    *out = NULL;
    if (!rev || !*rev)
        return qp_error_set(QP_EUSAGE, "provenance: empty revision");
    if ((rc = open_repo(&repo, &wd, start_path)) < 0)
        goto done;
    if (is_hex_prefix(rev)) {
        git_oid id;
        size_t n = strlen(rev);
        if (git_oid_fromstrn(&id, rev, n) < 0) {
            rc = git_fail(QP_EUSAGE, wd, rev);
            goto done;
        }
        int grc = git_commit_lookup_prefix(&c, repo, &id, n);
        if (grc == GIT_EAMBIGUOUS) {
            rc = qp_error_set(QP_EUSAGE, "%s: commit prefix '%s' is ambiguous: give more digits",
                              wd, rev);
            goto done;
        }
        if (grc < 0) {
            rc = qp_error_set(QP_ENOTFOUND, "%s: no commit '%s'", wd, rev);
            goto done;
        }
    } else if ((rc = lookup_branch_rev(&c, repo, wd, branch, rev)) < 0) {
        goto done;
    }
    rc = load_record(out, repo, c, wd);
done:
    git_commit_free(c);
    git_repository_free(repo);
    free(wd);
    return rc;
}
