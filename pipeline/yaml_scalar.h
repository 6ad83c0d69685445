/* Typing of one YAML scalar into a JSON value (private to pipeline/): the
 * one implementation behind recipe values (interp.h) and RECIPE.lock
 * (lock.h).
 *
 * Quoted and block scalars are strings; plain ones resolve as null (empty,
 * ~, null/Null/NULL), true/false (three spellings each), integers, floats
 * ([-+]? digits/'.'/exponent) or else strings; an explicit standard tag
 * (!!str, !!int, …) forces the type or is an error.  Infinities and NaN are
 * always errors: neither JSON nor the cache keys can hold them.
 *
 * The two readers differ on purpose, and the schema says how:
 *   QP_YS_RECIPE  people write recipes, so integers also take YAML 1.1
 *                 habits: '_' between decimal digits (1_000) and a sign
 *                 before 0x/0o (-0x10).
 *   QP_YS_LOCK    `qpipe lock` writes the lock and must read back exactly
 *                 what it wrote, so integers are YAML 1.2 core only
 *                 ([-+]?[0-9]+, 0o[0-7]+, 0x[0-9a-fA-F]+); its writer
 *                 quotes every string that any YAML 1.1/1.2 reader might
 *                 type, so the narrower reader loses nothing.  Its messages
 *                 quote at most 200 characters of the scalar, leaving room
 *                 for the "regenerate it" hint qp_lock_parse appends. */
#ifndef QP_PIPELINE_YAML_SCALAR_H
#define QP_PIPELINE_YAML_SCALAR_H

#include <jansson.h>

#include "pipeline/yaml_tree.h"

typedef enum { QP_YS_RECIPE, QP_YS_LOCK } qp_yschema;

/* *out is a new JSON string, integer, real, true, false or null for `text`
 * (plain: 1 for a plain scalar; tag: its explicit tag).  Errors are
 * QP_EUSAGE "WHERE: message" (where is usually "PATH:LINE:COL"). */
int qp_yscalar_json(json_t **out, const char *text, int plain, qp_ytag tag, qp_yschema schema, const char *where);

/* 1 when a plain untagged scalar `text` is null: empty, ~, null, Null, NULL. */
int qp_yscalar_is_null(const char *text);

#endif
