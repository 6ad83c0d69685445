/* Accessors for validated stage parameters and path resolution. */
#include "stages/stage.h"
#include "common/fsutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const json_t *must_get(const json_t *params, const char *name)
{
    const json_t *v = json_object_get(params, name);
    if (!v) {
        /* Defaults are filled by the recipe loader: reaching here is a bug
         * in a stage's table, not something a user can cause. */
        fprintf(stderr, "qpipe: internal error: parameter '%s' missing after validation\n", name);
        abort();
    }
    return v;
}

const char *qp_param_str(const json_t *params, const char *name)
{
    const json_t *v = json_object_get(params, name);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

long long qp_param_int(const json_t *params, const char *name)
{
    return (long long)json_integer_value(must_get(params, name));
}

double qp_param_num(const json_t *params, const char *name)
{
    return json_number_value(must_get(params, name));
}

int qp_param_bool(const json_t *params, const char *name)
{
    return json_is_true(must_get(params, name));
}

char *qp_stage_path(const qp_stage_ctx *ctx, const char *path)
{
    return qp_path_join(ctx->recipe_dir, path);
}

const qp_named_stage *qp_stage_named(const qp_stage_ctx *ctx, const char *param)
{
    for (size_t i = 0; i < ctx->n_named; i++)
        if (strcmp(ctx->named[i].param, param) == 0)
            return &ctx->named[i];
    return NULL;
}
