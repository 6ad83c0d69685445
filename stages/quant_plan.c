#include "stages/quant_plan.h"
#include "common/alloc.h"
#include "common/error.h"
#include "model/gguf_llama.h"
#include "model/hf_names.h"
#include "stages/qmethod.h"

#include <fnmatch.h>
#include <stdio.h>
#include <string.h>

int qp_quant_common_parse(qp_quant_common *c, const json_t *params, const char *where)
{
    memset(c, 0, sizeof(*c));
    const json_t *skip = json_object_get(params, "skip"), *ov = json_object_get(params, "override");
    size_t i;
    json_t *o;
    c->skip = qp_xcalloc(json_array_size(skip) + 1, sizeof(*c->skip));
    json_array_foreach(skip, i, o)
        c->skip[c->n_skip++] = qp_xstrdup(json_string_value(o));
    c->overrides = qp_xcalloc(json_array_size(ov) + 1, sizeof(*c->overrides));
    json_array_foreach(ov, i, o) {
        const char *k;
        json_t *v;
        if (!json_is_object(o) || !json_is_string(json_object_get(o, "match")))
            return qp_error_set(QP_EUSAGE, "%s: override %zu: needs match: GLOB", where, i + 1);
        json_object_foreach(o, k, v) {
            if (strcmp(k, "match") && strcmp(k, "type") && strcmp(k, "bits"))
                return qp_error_set(QP_EUSAGE, "%s: override %zu: unknown key '%s' (match, type, bits)", where,
                                    i + 1, k);
        }
        const char *t = json_string_value(json_object_get(o, "type"));
        if (json_object_get(o, "type") && (!t || !qp_qtype_by_name(t)))
            return qp_error_set(QP_EUSAGE, "%s: override %zu: type must be a llama.cpp type such as Q6_K", where,
                                i + 1);
        json_t *b = json_object_get(o, "bits");
        if (b && (!json_is_integer(b) || json_integer_value(b) < 2 || json_integer_value(b) > 8))
            return qp_error_set(QP_EUSAGE, "%s: override %zu: bits must be an integer 2..8", where, i + 1);
        qp_quant_override *d = &c->overrides[c->n_overrides++];
        d->match = qp_xstrdup(json_string_value(json_object_get(o, "match")));
        d->type = t ? qp_xstrdup(t) : NULL;
        d->bits = b ? (int)json_integer_value(b) : 0;
    }
    const char *im = json_string_value(json_object_get(params, "imatrix"));
    c->imatrix = qp_xstrdup(im ? im : "");
    return 0;
}

void qp_quant_common_free(qp_quant_common *c)
{
    for (size_t i = 0; i < c->n_skip; i++)
        free(c->skip[i]);
    for (size_t i = 0; i < c->n_overrides; i++) {
        free(c->overrides[i].match);
        free(c->overrides[i].type);
    }
    free(c->skip);
    free(c->overrides);
    free(c->imatrix);
    memset(c, 0, sizeof(*c));
}

void qp_quant_plan_init(qp_quant_plan *p, const qp_quant_method *m, const void *opts, const qp_quant_common *c,
                        const qp_llama_config *cfg, int has_imatrix)
{
    memset(p, 0, sizeof(*p));
    p->method = m;
    p->opts = opts;
    p->common = c;
    p->ftype = -1;
    /* an architecture GGUF cannot hold gets llama's rules; the export refuses it */
    qp_ggml_mix_ctx_init_arch(&p->mix, qp_gguf_llama_arch(cfg), cfg->n_layers, cfg->n_heads, cfg->n_kv_heads,
                              cfg->tied_embeddings);
    p->mix.has_imatrix = has_imatrix;
    p->mix.src_type = QP_GGML_F32;
    if (m->plan_setup)
        m->plan_setup(p);
}

static int glob_match(const char *pattern, const char *name)
{
    return fnmatch(pattern, name, 0) == 0;
}

int qp_quant_plan_drops(const qp_quant_plan *p, const char *name)
{
    return !p->mix.has_output && strcmp(name, QP_HF_LM_HEAD) == 0;
}

int qp_quant_plan_anchor(qp_tensor_plan *out, const char *name)
{
    /* embeddings and lm_head: kept by GPTQ/AWQ/bitsandbytes */
    if (strcmp(name, QP_HF_EMBED) != 0 && strcmp(name, QP_HF_LM_HEAD) != 0)
        return 0;
    out->kind = QP_TP_DENSE;
    out->qtype = QP_GGML_BF16;
    return 1;
}

int qp_quant_plan_format(qp_tensor_plan *out, const char *name, qp_tp_kind kind)
{
    if (!qp_quant_plan_anchor(out, name))
        out->kind = kind;
    return 0;
}

/* F32/F16/BF16: a dense conversion, not blocks */
static int is_dense_type(qp_ggml_type t)
{
    return !qp_qtype_get(t)->is_quantized;
}

int qp_quant_plan_ggml(qp_tensor_plan *out, const qp_quant_plan *p, const char *name, int ndim, int64_t rows,
                       int64_t cols, const char *forced_type)
{
    char gname[256];
    int rc = qp_gguf_llama_name(gname, sizeof(gname), name);
    if (rc)
        return rc;
    if (forced_type) {
        /* an override: this type for this tensor, with llama.cpp's fallback
         * when the rows do not fit its blocks (as --tensor-type) */
        qp_ggml_type want = qp_qtype_by_name(forced_type)->type, t = want;
        if ((rc = qp_qtype_fallback(&t, want, cols)) != 0) {
            qp_error_prefix("tensor '%s'", name);
            return rc;
        }
        out->qtype = t;
        out->kind = is_dense_type(t) ? QP_TP_DENSE : QP_TP_GGML;
        if (t != want)
            snprintf(out->reason, sizeof(out->reason), "rows of %lld do not fit %s: %s instead", (long long)cols,
                     forced_type, qp_qtype_get(t)->name);
        return 0;
    }
    int64_t ne[2] = {cols, rows};
    qp_ggml_mix_choice ch;
    rc = qp_ggml_mix_tensor_type(&ch, (qp_llama_ftype)p->ftype, gname, ndim, ne, &p->mix);
    if (rc)
        return rc;
    if (!ch.quantized) {
        out->kind = QP_TP_DENSE;
        out->qtype = QP_GGML_F32;
        return 0;
    }
    out->qtype = ch.type;
    out->kind = is_dense_type(ch.type) ? QP_TP_DENSE : QP_TP_GGML;
    if (ch.fallback && ch.note[0])   /* else an override's reason, if any, stays */
        snprintf(out->reason, sizeof(out->reason), "%s", ch.note);
    return 0;
}

int qp_quant_plan_tensor(qp_tensor_plan *out, const qp_quant_plan *p, const char *name, int ndim, int64_t rows,
                         int64_t cols)
{
    memset(out, 0, sizeof(*out));
    out->kind = QP_TP_DENSE;
    out->qtype = QP_GGML_F32;
    const qp_quant_common *c = p->common;
    for (size_t i = 0; i < c->n_skip; i++) {
        if (glob_match(c->skip[i], name)) {
            snprintf(out->reason, sizeof(out->reason), "skip: %s", c->skip[i]);
            out->qtype = QP_GGML_BF16;  /* source precision: the same object */
            return 0;
        }
    }
    const qp_quant_override *ov = NULL;
    for (size_t i = 0; i < c->n_overrides && !ov; i++) {
        if (glob_match(c->overrides[i].match, name)) {
            ov = &c->overrides[i];
            snprintf(out->reason, sizeof(out->reason), "override %zu (%s)", i + 1, ov->match);
        }
    }
    if (ndim < 2) {
        out->qtype = QP_GGML_BF16;
        return 0;
    }
    if (ov && ov->type)
        return qp_quant_plan_ggml(out, p, name, ndim, rows, cols, ov->type);
    return p->method->plan(out, p, name, ndim, rows, cols, ov);
}
