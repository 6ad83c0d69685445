/* A small YAML node tree built from libyaml's parser events (private to the
 * recipe loader).
 *
 * libyaml's own document loader neither reports duplicate keys nor bounds
 * alias expansion, and it drops the marks we need for "file:line:col"
 * messages; this tree keeps a 1-based mark on every node, rejects duplicate
 * keys, expands aliases by copying the anchored node (bounded, so an alias
 * bomb is an error instead of an OOM), applies `<<` merge keys and rejects
 * non-standard tags.  Scalars keep their text and whether they were plain:
 * typing happens later, after interpolation. */
#ifndef QP_PIPELINE_YAML_TREE_H
#define QP_PIPELINE_YAML_TREE_H

#include <stddef.h>

#include "pipeline/recipe.h"

/* Limits that turn hostile input into an error instead of a crash. */
#define QP_YAML_MAX_NODES 100000  /* nodes after alias expansion */
#define QP_YAML_MAX_BYTES (16u << 20)  /* a recipe or lock file (16 MiB) */
#define QP_YAML_MAX_DEPTH 200     /* nesting of mappings/sequences */

typedef enum { QP_YN_SCALAR, QP_YN_SEQ, QP_YN_MAP } qp_ynode_kind;

/* The type an explicit standard tag forces on a scalar (QP_YT_NONE: none;
 * type follows the plain/quoted rules). */
typedef enum { QP_YT_NONE, QP_YT_STR, QP_YT_INT, QP_YT_FLOAT, QP_YT_BOOL, QP_YT_NULL } qp_ytag;

typedef struct qp_ynode qp_ynode;
struct qp_ynode {
    qp_ynode_kind kind;
    qp_mark mark;      /* where the node starts */
    /* QP_YN_SCALAR */
    char *text;        /* NUL-terminated (embedded NULs are rejected) */
    int plain;         /* 1 for a plain (unquoted, non-block) scalar */
    int merge_key;     /* a '<<' key consumed by its merge (aliasing it is an error) */
    qp_ytag tag;
    /* QP_YN_SEQ: items[0..n); QP_YN_MAP: keys[i] (scalars) -> items[i] */
    size_t n, cap;
    qp_ynode **items;
    qp_ynode **keys;
};

/* Parses one YAML document.  *out is NULL for an empty document.  Errors
 * are QP_EUSAGE "PATH:LINE:COL: message" with `path` as given. */
int qp_ytree_parse(qp_ynode **out, const char *path, const char *text, size_t len);
void qp_ynode_free(qp_ynode *n);

/* Value of `key` in a mapping (NULL when absent or n is not a mapping);
 * *key_node (may be NULL) gets the key's node. */
const qp_ynode *qp_ynode_get(const qp_ynode *map, const char *key, const qp_ynode **key_node);

/* "mapping", "list" or "string" — for messages. */
const char *qp_ynode_kind_name(const qp_ynode *n);

#endif
