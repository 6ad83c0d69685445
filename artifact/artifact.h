/* Artifacts: what a stage produces and the next one consumes.
 *
 * An artifact is a manifest (canonical JSON, stored as a cache object; its
 * digest is the artifact digest) listing entries — files or tensors, each a
 * cache object — plus metrics and free-form metadata:
 *   {"qpipe_artifact": 1, "type": "model",
 *    "entries": [{"name": "model.layers.0.mlp.up_proj.weight", "digest": "…",
 *                 "size": 393216, "dtype": "BF16", "shape": [768, 256]}, …],
 *    "metrics": {"ppl": 23.25, …}, "meta": {…}}
 * Entries are kept sorted by name, so the digest does not depend on the order
 * a stage added them. */
#ifndef QP_ARTIFACT_ARTIFACT_H
#define QP_ARTIFACT_ARTIFACT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/cache.h"

typedef enum {
    QP_ART_FILES   = 1 << 0,  /* files (fetch of non-model data, run outs, package) */
    QP_ART_MODEL   = 1 << 1,  /* an unquantized checkpoint: config, tokenizer, tensors */
    QP_ART_CALIB   = 1 << 2,  /* calibration statistics (Hessians, imatrix, …) */
    QP_ART_QMODEL  = 1 << 3,  /* a quantized checkpoint: packed tensors + format descriptors */
    QP_ART_METRICS = 1 << 4,  /* evaluation metrics */
    QP_ART_VERDICT = 1 << 5,  /* a gate/select decision (metrics + pass/fail) */
} qp_artifact_type;

const char *qp_artifact_type_name(qp_artifact_type t);
/* Parses a type name; 0 when unknown. */
qp_artifact_type qp_artifact_type_parse(const char *name);

typedef struct qp_artifact qp_artifact;

int qp_artifact_new(qp_artifact **out, qp_artifact_type type);
void qp_artifact_free(qp_artifact *a);
qp_artifact_type qp_artifact_type_of(const qp_artifact *a);
/* For kinds whose output type depends on what they find (fetch: model or files). */
void qp_artifact_set_type(qp_artifact *a, qp_artifact_type type);

/* Adds an entry; `extra` (may be NULL, reference stolen) is merged into the
 * entry object (dtype, shape, format, path …).  Duplicate names are an error. */
int qp_artifact_add(qp_artifact *a, const char *name, const char *digest, uint64_t size, json_t *extra);
/* Stores bytes in the cache and adds them as an entry. */
int qp_artifact_add_bytes(qp_artifact *a, qp_cache *c, const char *name, const void *data, size_t n, json_t *extra);
/* Streams a file into the cache and adds it as an entry. */
int qp_artifact_add_file(qp_artifact *a, qp_cache *c, const char *name, const char *path, json_t *extra);
/* Adds a workspace file that is NOT kept in the cache (a package's model
 * file: "cached": false in the entry): the manifest records its digest and
 * size, refs leave it out, and a cached run whose copy in the workspace is
 * missing or changed runs the stage again instead of restoring it — the
 * same bytes read and written as a restore, without a second copy of every
 * release on disk. */
int qp_artifact_add_uncached(qp_artifact *a, const char *name, const char *digest, uint64_t size, json_t *extra);

size_t qp_artifact_count(const qp_artifact *a);
/* Entry i as a borrowed JSON object with at least name, digest, size. */
const json_t *qp_artifact_entry(const qp_artifact *a, size_t i);
/* Entry by name, NULL if absent. */
const json_t *qp_artifact_find(const qp_artifact *a, const char *name);
const char *qp_artifact_entry_name(const json_t *entry);
const char *qp_artifact_entry_digest(const json_t *entry);
/* 0 for an entry added by qp_artifact_add_uncached, else 1. */
int qp_artifact_entry_cached(const json_t *entry);
/* Reads an entry's bytes from the cache (verified). */
int qp_artifact_read(const qp_artifact *a, qp_cache *c, const char *name, void **out, size_t *len);

/* Metrics: a flat object of numbers (and booleans/strings for verdicts). */
void qp_artifact_set_metric(qp_artifact *a, const char *name, double value);
json_t *qp_artifact_metrics(qp_artifact *a);       /* borrowed, mutable */
const json_t *qp_artifact_metrics_c(const qp_artifact *a);
/* Free-form metadata object (borrowed, mutable). */
json_t *qp_artifact_meta(qp_artifact *a);
const json_t *qp_artifact_meta_c(const qp_artifact *a);
/* Puts every object key of metrics and meta in sorted order, the order an
 * artifact loaded from the cache has (it is stored with sorted keys): a
 * stage that iterates its inputs' JSON then sees the same order whether
 * they were just computed or come from the cache, on this machine or from
 * a Slurm job. */
void qp_artifact_sort_keys(qp_artifact *a);

/* Canonical serialisation (sorted keys, compact, numbers with full
 * precision) — the bytes whose SHA-256 is the artifact digest. */
int qp_artifact_serialize(const qp_artifact *a, char **out_json);
/* Stores the manifest object; writes the artifact digest.  refs gets every
 * object digest the artifact needs (manifest included, uncached entries
 * not), for the action entry. */
int qp_artifact_store(const qp_artifact *a, qp_cache *c, char digest[QP_HEX_LEN],
                      char ***refs, size_t *n_refs);
int qp_artifact_load(qp_artifact **out, qp_cache *c, const char *digest);
int qp_artifact_parse(qp_artifact **out, const char *json, const char *what);
/* Frees a refs array returned by qp_artifact_store. */
void qp_artifact_refs_free(char **refs, size_t n);

#endif
