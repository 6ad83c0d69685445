/* fetch's Hugging Face Hub source: "hf://ORG/NAME[@REVISION]".
 *
 * Opening resolves the revision to a commit and lists the repository's
 * files at that commit (one metadata request, or none: see qp_hf_open);
 * downloading brings every listed file into the cache's temp area,
 * verified against the Hub's sha256 / git blob id, so fetch_source.c can
 * import them exactly like a local directory. */
#ifndef QP_STAGES_FETCH_HF_H
#define QP_STAGES_FETCH_HF_H

#include <jansson.h>
#include <stddef.h>

#include "cache/cache.h"
#include "artifact/progress.h"

typedef struct qp_hf_source qp_hf_source;

/* 1 when source starts with "hf://". */
int qp_hf_is_source(const char *source);
/* Checks the repo and revision syntax only (no network): QP_EUSAGE with a
 * message starting with `where`. */
int qp_hf_check_source(const char *source, const char *where);
/* 1 when offline mode is on (HF_HUB_OFFLINE=1/true/yes/on). */
int qp_hf_offline(void);
/* 1 when QPIPE_HF_REFRESH=1/true/yes/on (qpipe run --refresh): branches and
 * tags are asked of the Hub again instead of the commit the cache recorded. */
int qp_hf_refresh(void);

/* Resolves source to a commit and its file list, filtered by allow/ignore
 * (arrays of fnmatch globs; NULL or empty allow = every file).  Network use:
 *  - a revision resolved earlier in this process: none (the key and the run
 *    see the same commit even if the branch moves in between);
 *  - a 40-hex commit whose file list is in the cache: none;
 *  - a branch or tag resolved by an earlier run (the cache's record,
 *    meta hf-refs): none, unless qp_hf_refresh();
 *  - otherwise one GET {endpoint}/api/models/{repo}/revision/{rev}, whose
 *    answer is recorded in the cache (meta hf-refs, hf-tree). */
int qp_hf_open(qp_hf_source **out, const char *source, const json_t *allow, const json_t *ignore, qp_cache *cache);
void qp_hf_free(qp_hf_source *s);

const char *qp_hf_repo(const qp_hf_source *s);
const char *qp_hf_revision(const qp_hf_source *s);
const char *qp_hf_commit(const qp_hf_source *s);
size_t qp_hf_count(const qp_hf_source *s);
const char *qp_hf_file(const qp_hf_source *s, size_t i);   /* sorted by name */

/* Parses a revision listing as the Hub's API answers it (the "sha" and
 * "siblings" of /api/models/{repo}/revision/{rev}) with every check a
 * download applies (file names, counts, duplicates): 0 or one line in
 * qp_error_last().  For the fuzz harness (tests/fuzz/fuzz_hf_listing.c). */
int qp_hf_listing_check(const char *text, size_t len);

/* Downloads every file (up to 4 at once) into the cache's temp area and
 * verifies it; paths[i] (malloc'ed) is file i's temp file, which the caller
 * unlinks after importing.  On failure every path is NULL and no temp file
 * of a finished file is left (a partial one is kept to resume from). */
int qp_hf_download(qp_hf_source *s, char **paths, qp_progress *progress);

#endif
