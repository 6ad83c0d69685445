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
 * Typing happens after interpolation, so `samples: ${vars.n}` is an integer
 * when n is "128": plain scalars follow the YAML core rules (null, true/false,
 * decimal/0x/0o integers, floats), quoted and block scalars are strings, and
 * an explicit standard tag (!!str, !!int, …) forces the type. */
#ifndef QP_PIPELINE_INTERP_H
#define QP_PIPELINE_INTERP_H

#include <jansson.h>

#include "pipeline/yaml_tree.h"

/* A scope is a JSON object {"vars": {NAME: text}, "matrix": {KEY: text}}:
 * the (already expanded) text that ${vars.NAME} and ${matrix.KEY} stand
 * for.  Either member may be absent; an absent "matrix" means the value is
 * not inside an expanded stage, which gets its own message. */

/* Expands `text` into a malloc'ed *out.  Errors are QP_EUSAGE
 * "WHERE: message". */
int qp_interp(char **out, const char *text, const json_t *scope, const char *where);

/* Types an expanded scalar: *out is a new JSON string, integer, real, true,
 * false or null (qp_yscalar_json with the recipe schema, yaml_scalar.h). */
int qp_scalar_type(json_t **out, const char *text, int plain, qp_ytag tag, const char *where);

/* Converts a node to JSON, interpolating and typing every scalar (mappings
 * become objects in file order, lists arrays).  Errors name the offending
 * scalar as "PATH:LINE:COL: …". */
int qp_ynode_json(json_t **out, const qp_ynode *n, const json_t *scope, const char *path);

#endif
