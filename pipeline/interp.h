/* Interpolation and scalar typing for recipe values (private to the recipe
 * loader).
 *
 *   ${vars.NAME}            a variable from the recipe's `vars:`
 *   ${env.NAME}             an environment variable (error when unset)
 *   ${env.NAME:-DEFAULT}    DEFAULT when unset or empty (DEFAULT may be
 *                           empty and may itself contain ${…})
 *   ${matrix.KEY}           a value of the matrix/candidates instance being
 *                           expanded (only in a scope that has one)
 *   $$                      a literal '$'
 * A '$' followed by anything else is kept as is.
 *
 * Typing happens after interpolation.  An untagged scalar whose text is
 * exactly one ${vars.NAME} or ${matrix.KEY} (plain or quoted) is the
 * referenced value itself, with its type: `"${vars.t}"` is the number 1.0
 * when `t: 1.0`, and the string "4" when `t: "4"`.  Anything else (mixed
 * text, ${env.…}, several references) is typed from its expanded text:
 * plain scalars follow the YAML core rules (null, true/false, decimal/0x/0o
 * integers, floats), quoted and block scalars are strings.  An explicit
 * standard tag (!!str, !!int, …) always types the expanded text, so
 * `!!str "${vars.t}"` is the string "1.0". */
#ifndef QP_PIPELINE_INTERP_H
#define QP_PIPELINE_INTERP_H

#include <jansson.h>

#include "pipeline/yaml_tree.h"

/* A scope is a JSON object
 *   {"vars": {NAME: text}, "matrix": {KEY: text},
 *    "vars_typed": {NAME: value}, "matrix_typed": {KEY: value}}:
 * the (already expanded) text that ${vars.NAME} and ${matrix.KEY} stand for
 * inside other text, and the typed scalar a whole-value reference gives (a
 * name with text but no typed value, like ${matrix.name}, gives its text as
 * a string).  Any member may be absent; an absent "matrix" means the value
 * is not inside an expanded stage, which gets its own message. */

/* The longest value an interpolation may produce (1 MiB): a value that
 * would be longer is an error, not an allocation. */
#define QP_INTERP_MAX_LEN (1 << 20)
/* The most all of a recipe's interpolated values may add up to (64 MiB),
 * counted down in the scope's member "interp_budget" (a JSON integer,
 * absent: no total). */
#define QP_INTERP_MAX_TOTAL (64 << 20)

/* Expands `text` into a malloc'ed *out.  Errors are QP_EUSAGE
 * "WHERE: message". */
int qp_interp(char **out, const char *text, const json_t *scope, const char *where);

/* Expands and types one scalar node: *out is a new JSON string, integer,
 * real, true, false or null (qp_yscalar_json with the recipe schema,
 * yaml_scalar.h, or a whole-value reference's own value); *text (when text
 * is not NULL) the malloc'ed expanded text.  Errors are "PATH:LINE:COL: …". */
int qp_scalar_eval(json_t **out, char **text, const qp_ynode *n, const json_t *scope, const char *path);

/* 1 when n is an untagged scalar that is exactly one ${vars.…} or
 * ${matrix.…} reference, i.e. its value keeps the referenced type. */
int qp_scalar_is_typed_ref(const qp_ynode *n);

/* Converts a node to JSON, interpolating and typing every scalar (mappings
 * become objects in file order, lists arrays).  Errors name the offending
 * scalar as "PATH:LINE:COL: …". */
int qp_ynode_json(json_t **out, const qp_ynode *n, const json_t *scope, const char *path);

#endif
