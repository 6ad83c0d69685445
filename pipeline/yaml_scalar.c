#include "pipeline/yaml_scalar.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"

/* What the schemas change (see yaml_scalar.h for why they differ). */
typedef struct {
    int yaml11_ints;        /* '_' between decimal digits, a sign before 0x/0o */
    int quote_max;          /* longest piece of the scalar quoted in a message */
    const char *bool_hint;  /* appended inside "(tagged !!bool…)" */
    const char *nonfinite;  /* why .inf/.nan are refused */
} schema_rules;

static const schema_rules rules[] = {
    [QP_YS_RECIPE] = {1, INT_MAX, "; write true or false", "infinities and NaN are not allowed in a recipe"},
    [QP_YS_LOCK] = {0, 200, "", "a lock cannot hold infinities or NaN"},
};

int qp_yscalar_is_null(const char *t)
{
    return !*t || !strcmp(t, "~") || !strcmp(t, "null") || !strcmp(t, "Null") || !strcmp(t, "NULL");
}

/* 1 true, 0 false, -1 neither. */
static int bool_of(const char *t)
{
    if (!strcmp(t, "true") || !strcmp(t, "True") || !strcmp(t, "TRUE"))
        return 1;
    if (!strcmp(t, "false") || !strcmp(t, "False") || !strcmp(t, "FALSE"))
        return 0;
    return -1;
}

static int digit_of(char c, int base)
{
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                                                                       : 99;
    return d < base ? d : -1;
}

/* [-+]?[0-9]+ | 0o[0-7]+ | 0x[0-9a-fA-F]+, plus the YAML 1.1 forms when
 * yaml11.  1 parsed, 0 not an integer, -1 an integer that does not fit. */
static int parse_int(const char *t, int yaml11, long long *v)
{
    const char *p = t;
    int neg = 0, base = 10, over = 0;
    if (*p == '+' || *p == '-')
        neg = *p++ == '-';
    if (p[0] == '0' && (p[1] == 'o' || p[1] == 'x')) {
        if (p != t && !yaml11)
            return 0;
        base = p[1] == 'o' ? 8 : 16;
        p += 2;
    }
    unsigned long long u = 0, max = (unsigned long long)LLONG_MAX + (unsigned long long)neg;
    size_t nd = 0;
    for (; *p; p++) {
        int d = digit_of(*p, base);
        if (d < 0) {
            if (yaml11 && base == 10 && *p == '_' && nd > 0 && digit_of(p[1], 10) >= 0)
                continue;
            return 0;
        }
        if (u > (max - (unsigned)d) / (unsigned)base)
            over = 1;
        else
            u = u * (unsigned)base + (unsigned)d;
        nd++;
    }
    if (nd == 0)
        return 0;
    if (over)
        return -1;
    *v = neg ? (u == 0 ? 0 : -(long long)(u - 1) - 1) : (long long)u;
    return 1;
}

/* [-+]? ( .digits | digits [. digits*] ) ( [eE] [-+]? digits )?; the value
 * may be infinite (out of range). */
static int parse_float(const char *t, double *v)
{
    const char *p = t + (*t == '+' || *t == '-');
    size_t before = strspn(p, "0123456789"), after = 0;
    p += before;
    if (*p == '.') {
        after = strspn(++p, "0123456789");
        p += after;
    }
    if (before + after == 0)
        return 0;
    if (*p == 'e' || *p == 'E') {
        p++;
        p += *p == '+' || *p == '-';
        size_t ex = strspn(p, "0123456789");
        if (ex == 0)
            return 0;
        p += ex;
    }
    if (*p)
        return 0;
    *v = strtod(t, NULL);
    return 1;
}

/* .inf/.Inf/.INF with an optional sign, .nan/.NaN/.NAN without. */
static int is_special_float(const char *t)
{
    const char *p = t + (*t == '+' || *t == '-');
    return !strcmp(p, ".inf") || !strcmp(p, ".Inf") || !strcmp(p, ".INF") || !strcmp(t, ".nan") ||
           !strcmp(t, ".NaN") || !strcmp(t, ".NAN");
}

static int as_string(json_t **out, const char *t, const char *where)
{
    *out = json_string(t);
    return *out ? 0 : qp_error_set(QP_EUSAGE, "%s: string is not valid UTF-8", where);
}

int qp_yscalar_json(json_t **out, const char *t, int plain, qp_ytag tag, qp_yschema schema, const char *where)
{
    const schema_rules *r = &rules[schema];
    int q = r->quote_max;
    *out = NULL;
    if (tag == QP_YT_STR || (tag == QP_YT_NONE && !plain))
        return as_string(out, t, where);
    if ((tag == QP_YT_NONE || tag == QP_YT_NULL) && qp_yscalar_is_null(t)) {
        *out = json_null();
        return 0;
    }
    if (tag == QP_YT_NULL)
        return qp_error_set(QP_EUSAGE, "%s: '%.*s' is not null (tagged !!null)", where, q, t);
    int bv = tag == QP_YT_NONE || tag == QP_YT_BOOL ? bool_of(t) : -1;
    if (bv >= 0) {
        *out = json_boolean(bv);
        return 0;
    }
    if (tag == QP_YT_BOOL)
        return qp_error_set(QP_EUSAGE, "%s: '%.*s' is not a boolean (tagged !!bool%s)", where, q, t, r->bool_hint);
    long long iv = 0;
    int ir = parse_int(t, r->yaml11_ints, &iv);
    if (ir < 0)
        return qp_error_set(QP_EUSAGE, "%s: integer '%.*s' is out of range", where, q, t);
    if (ir > 0 && tag != QP_YT_FLOAT) {
        *out = json_integer(iv);
        return 0;
    }
    if (tag == QP_YT_INT)
        return qp_error_set(QP_EUSAGE, "%s: '%.*s' is not an integer (tagged !!int)", where, q, t);
    /* untagged or !!float from here */
    if (is_special_float(t))
        return qp_error_set(QP_EUSAGE, "%s: '%.*s': %s", where, q, t, r->nonfinite);
    double dv = 0;
    if (ir > 0 || parse_float(t, &dv)) {
        if (ir > 0)
            dv = (double)iv;
        if (!isfinite(dv))
            return qp_error_set(QP_EUSAGE, "%s: number '%.*s' is out of range", where, q, t);
        *out = json_real(dv);
        return 0;
    }
    if (tag == QP_YT_FLOAT)
        return qp_error_set(QP_EUSAGE, "%s: '%.*s' is not a number (tagged !!float)", where, q, t);
    return as_string(out, t, where);
}
