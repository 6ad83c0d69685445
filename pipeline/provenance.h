/* Provenance: every `qpipe run` is recorded as a git commit on a side branch
 * (default "qpipe/provenance") of the repository that contains the recipe.
 *
 * Each provenance commit has a tree of exactly two files:
 *   run.json     the run record, json_dumps(record, JSON_INDENT(2) |
 *                JSON_SORT_KEYS) followed by one "\n"
 *   recipe.yaml  a byte-for-byte copy of the recipe file
 * and one parent: the branch's previous tip (the first record is a root
 * commit), so the branch is a linear history of runs, newest at the tip.
 *
 * Recording never touches HEAD, the index or the working tree: objects are
 * written straight into the object database and only refs/heads/<branch>
 * moves, with a compare-and-swap so concurrent runs never lose a record.
 *
 * The record is the caller's (the runner's); this module reads only:
 *   "recipe"   string, recipe path relative to the workdir (see
 *              qp_provenance_relpath); used by the qp_provenance_log filter
 *   "name"     string, recipe name for the commit subject (falls back to the
 *              recipe file name without its extension)
 *   "verdict"  string for the commit subject ("unknown" when absent)
 *
 * All functions return 0 or a negative qp_err after qp_error_set() with one
 * line naming the repository and, for git failures, libgit2's message.
 * libgit2 is initialised once per process (pthread_once) and never shut down. */
#ifndef QP_PIPELINE_PROVENANCE_H
#define QP_PIPELINE_PROVENANCE_H

#include <jansson.h>
#include <stddef.h>

#define QP_PROVENANCE_BRANCH "qpipe/provenance"

/* Source state of the git repository containing `path` (a file or a
 * directory; it must exist):
 *   commit   hex id of HEAD's commit, "" when HEAD is unborn
 *   dirty    1 when any tracked file is modified (staged or not) or any
 *            untracked, non-ignored file exists; else 0
 *   workdir  malloc'ed canonical (realpath) working-tree root, no trailing
 *            slash; may be NULL when the caller does not want it
 * QP_ENOTFOUND when `path` is not inside a git working tree (bare
 * repositories included). */
int qp_provenance_source(const char *path, char commit[41], int *dirty, char **workdir);

/* Records one run: writes run.json (from `record`) and recipe.yaml (the bytes
 * of `recipe_path`) as a new commit on refs/heads/<branch> (NULL = default
 * branch) of the repository containing recipe_path, whose parent is the
 * branch's current tip (a root commit when the branch does not exist).
 * Message: "qpipe run <name>: <verdict>\n" followed by "\n<summary>\n" when
 * summary is non-NULL and non-empty.  Author and committer: user.name /
 * user.email from the repository's configuration (local, global, system) when
 * both are set, else "qpipe <qpipe@localhost>"; time = now.
 * Concurrent committers are safe: the branch is moved only if it still points
 * at the parent that was used, else the commit is rebuilt on the new tip and
 * retried (10 attempts).  Writes the new commit's hex id to out_commit.
 * QP_ENOTFOUND when recipe_path is not inside a git working tree (the caller
 * warns and goes on). */
int qp_provenance_commit(char out_commit[41], const char *recipe_path, const char *branch,
                         const json_t *record, const char *summary);
/* QP_EUSAGE (one line) when records cannot go on `branch` (NULL = default):
 * not a valid branch name ("HEAD", "-x"), checked out (HEAD, even unborn, or
 * any worktree), or an existing branch whose tip is not a run record.  0
 * when recipe_path is not in a git working tree.  qp_provenance_commit
 * checks the same; the runner asks first so that nothing runs in vain. */
int qp_provenance_check_branch(const char *recipe_path, const char *branch);

/* Called by qp_provenance_log for each record, newest first: `commit` is the
 * hex id, `time` its committer time (seconds since the epoch), `record` the
 * parsed run.json (borrowed, valid during the call).  Return 0 to go on,
 * non-zero to stop. */
typedef int (*qp_provenance_cb)(void *ud, const char *commit, long long time,
                                const json_t *record);

/* Walks refs/heads/<branch> (NULL = default) of the repository containing
 * start_path from the tip along first parents, calling cb for each commit
 * whose run.json "recipe" equals qp_provenance_relpath(workdir,
 * recipe_filter) (recipe_filter NULL = every record).  Commits without a
 * run.json are skipped; a malformed run.json is QP_ECORRUPT naming the commit.
 * Stops after `limit` calls (0 = no limit) or when cb returns non-zero: a
 * negative cb value is returned as is (so a callback can propagate a qp_err),
 * a positive one gives 0.  A branch that does not exist yet has no records:
 * 0 without calls.  QP_ENOTFOUND when start_path is not in a repository. */
int qp_provenance_log(const char *start_path, const char *branch, const char *recipe_filter,
                      size_t limit, qp_provenance_cb cb, void *ud);

/* Reads one record (new reference in *out, json_decref it).  `rev` is either
 *   - a commit id or a unique prefix of one (4 to 40 hex digits), or
 *   - "<branch>" / "<branch>~N" (N first parents back from the tip; the
 *     branch name as given, e.g. "qpipe/provenance~1"), or "~N" for the
 *     `branch` argument (NULL = default).
 * QP_ENOTFOUND for an unknown id, a missing branch, N beyond the first record,
 * or a commit without run.json; QP_EUSAGE for an ambiguous prefix or a rev of
 * neither form; QP_ECORRUPT for a malformed run.json. */
int qp_provenance_read(json_t **out, const char *start_path, const char *branch,
                       const char *rev);

/* `path` relative to `workdir`, both canonicalised with realpath (a path that
 * does not exist is resolved through its parent directory), malloc'ed:
 * "." for the workdir itself, "dir/file" inside it, the canonical absolute
 * path when it lies outside.  NULL (with qp_error_set) when neither `path`
 * nor its parent directory exists, or workdir does not exist. */
char *qp_provenance_relpath(const char *workdir, const char *path);

#endif
