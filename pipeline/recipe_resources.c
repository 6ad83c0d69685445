/* A stage's `resources:` — what a batch scheduler should reserve for it
 * (the Slurm executor, pipeline/slurm.h).  They say where and how a stage
 * runs, never what it computes, so they are not part of the stage's key:
 * changing `mem:` reuses every cached result. */
#include "pipeline/recipe_int.h"
#include "cache/cache.h"
#include "common/error.h"
#include "pipeline/interp.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CPUS 1024   /* the most --threads takes (a job runs with --threads CPUS) */
#define MAX_GPUS 64
#define MAX_MINUTES (366L * 24 * 60)

/* n digits at *p (at least one, at most 9) into *v */
static int read_num(const char **p, long *v)
{
    const char *s = *p;
    long x = 0;
    int n = 0;
    for (; isdigit((unsigned char)*s) && n < 9; s++, n++)
        x = x * 10 + (*s - '0');
    if (n == 0 || isdigit((unsigned char)*s))
        return -1;
    *p = s;
    *v = x;
    return 0;
}

/* Slurm's time forms ("MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM",
 * "D-HH:MM:SS") and "90m", "2h", "1d", "45s", into whole minutes (seconds
 * round up: a limit is never shortened).  -1 when it is none of those. */
long qp_recipe_parse_minutes(const char *s)
{
    const char *p = s;
    long f[4], days = 0, sec;
    int n = 0;
    if (read_num(&p, &f[0]) != 0)
        return -1;
    if (*p && !p[1] && strchr("smhd", *p)) {
        long mult = *p == 's' ? 1 : *p == 'm' ? 60 : *p == 'h' ? 3600 : 86400;
        sec = f[0] * mult;
        goto minutes;
    }
    if (*p == '-') {   /* D-HH[:MM[:SS]] */
        days = f[0];
        p++;
        for (n = 0; n < 3; n++) {
            if (read_num(&p, &f[n]) != 0)
                return -1;
            if (*p != ':')
                break;
            p++;
        }
        if (*p || n > 2)
            return -1;
        sec = days * 86400 + f[0] * 3600 + (n >= 1 ? f[1] * 60 : 0) + (n >= 2 ? f[2] : 0);
        if ((n >= 1 && f[1] >= 60) || (n >= 2 && f[2] >= 60))
            return -1;
        goto minutes;
    }
    for (n = 1; *p == ':' && n < 3; n++) {
        p++;
        if (read_num(&p, &f[n]) != 0)
            return -1;
        if (f[n] >= 60)
            return -1;
    }
    if (*p)
        return -1;
    sec = n == 1 ? f[0] * 60 : n == 2 ? f[0] * 60 + f[1] : f[0] * 3600 + f[1] * 60 + f[2];
minutes:
    if (sec <= 0 || sec > MAX_MINUTES * 60)
        return -1;
    return (sec + 59) / 60;
}

int qp_recipe_partition_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 128 || strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.,-") != n)
        return 0;
    /* each name of a list starts with a letter, a digit or '_' ("-x" would read as an option) */
    for (const char *p = s; *p; p += strcspn(p, ",") + (p[strcspn(p, ",")] == ',')) {
        if (!isalnum((unsigned char)*p) && *p != '_')
            return 0;
        if (p[strcspn(p, ",")] == ',' && !p[strcspn(p, ",") + 1])
            return 0;   /* a trailing ',' */
    }
    return 1;
}

static int one(json_t *res, const qp_ynode *key, const qp_ynode *val, const json_t *scope, const char *path,
               const char *stage)
{
    json_t *v = NULL;
    int rc = qp_ynode_json(&v, val, scope, path);
    if (rc < 0)
        return rc;
    const char *k = key->text;
    if (!strcmp(k, "cpus") || !strcmp(k, "gpus")) {
        long hi = k[0] == 'c' ? MAX_CPUS : MAX_GPUS, lo = k[0] == 'c' ? 1 : 0;
        if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
            rc = qp_recipe_fail(path, val->mark, "resources '%s' of stage '%s' must be a whole number from %ld to %ld",
                                k, stage, lo, hi);
        else
            json_object_set(res, k, v);
    } else if (!strcmp(k, "mem")) {
        uint64_t bytes = 0;
        const char *t = json_string_value(v);
        size_t tl = t ? strlen(t) : 0;
        while (tl > 0 && isspace((unsigned char)t[tl - 1]))
            tl--;
        /* a unit, not a bare count: Slurm reads "16" as 16 MB, qp_parse_size as 16 bytes */
        if (!t || tl == 0 || !isalpha((unsigned char)t[tl - 1]) || qp_parse_size(t, &bytes) != 0 ||
            bytes < (1u << 20) || bytes > (1ull << 50)) {
            qp_error_clear();
            rc = qp_recipe_fail(path, val->mark, "resources 'mem' of stage '%s' must be a size with its unit, from "
                                "1M to 1024T, such as 16G or 512M", stage);
        } else {
            json_object_set_new(res, k, json_integer((json_int_t)bytes));
        }
    } else if (!strcmp(k, "time")) {
        long min = -1;
        if (json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) <= MAX_MINUTES)
            min = (long)json_integer_value(v);
        else if (json_is_string(v))
            min = qp_recipe_parse_minutes(json_string_value(v));
        if (min < 0)
            rc = qp_recipe_fail(path, val->mark, "resources 'time' of stage '%s' must be minutes (90), a Slurm time "
                                "(\"1:30:00\", \"2-00\") or \"90m\", \"2h\", \"1d\", at most 366 days", stage);
        else
            json_object_set_new(res, k, json_integer(min));
    } else if (!strcmp(k, "partition")) {
        if (!json_is_string(v) || !qp_recipe_partition_ok(json_string_value(v)))
            rc = qp_recipe_fail(path, val->mark, "resources 'partition' of stage '%s' must be a Slurm partition name "
                                "(letters, digits, '_', '.', '-'; several joined by ',')", stage);
        else
            json_object_set(res, k, v);
    } else {
        rc = qp_recipe_fail(path, key->mark, "unknown resources key '%s' in stage '%s' (expected cpus, mem, time, "
                            "gpus or partition)", k, stage);
    }
    json_decref(v);
    return rc;
}

int qp_recipe_resources(json_t **out, const qp_ynode *node, const json_t *scope, const char *path, const char *stage)
{
    *out = NULL;
    if (!node || qp_ynode_is_null(node))
        return 0;
    if (node->kind != QP_YN_MAP)
        return qp_recipe_fail(path, node->mark, "'resources' of stage '%s' must be a mapping such as {cpus: 8, "
                              "mem: 32G, time: 2h}, not a %s", stage, qp_ynode_kind_name(node));
    json_t *res = json_object();
    for (size_t i = 0; i < node->n; i++) {
        int rc = one(res, node->keys[i], node->items[i], scope, path, stage);
        if (rc < 0) {
            json_decref(res);
            return rc;
        }
    }
    *out = res;
    return 0;
}
