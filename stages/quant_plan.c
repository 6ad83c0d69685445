#include "stages/quant_plan.h"
#include "common/error.h"
#include "model/gguf_llama.h"

#include <fnmatch.h>
#include <stdio.h>
#include <string.h>

int qp_quant_plan_init(qp_quant_plan *p, const json_t *params, const qp_llama_config *cfg, int has_imatrix)
{
    memset(p, 0, sizeof(*p));
    p->params = params;
    p->method = json_string_value(json_object_get(params, "method"));
    p->ftype = -1;
    qp_ggml_mix_ctx_init(&p->mix, cfg->n_layers, cfg->n_heads, cfg->n_kv_heads, cfg->tied_embeddings);
    p->mix.has_imatrix = has_imatrix;
    p->mix.pure = json_is_true(json_object_get(params, "pure"));
    p->mix.src_type = QP_GGML_F32;
    if (strcmp(p->method, "gguf") == 0) {
        const char *type = json_string_value(json_object_get(params, "type"));
        p->ftype = qp_llama_ftype_parse(type);
        if (p->ftype < 0)
            return qp_error_set(QP_EUSAGE, "type %s is not a llama.cpp file type", type);
    }
    return 0;
}

static int glob_match(const char *pattern, const char *name)
{
    return fnmatch(pattern, name, 0) == 0;
}

static int is_anchor(const char *name)
{
    /* embeddings and lm_head: kept by GPTQ/AWQ/bitsandbytes */
    return strcmp(name, "model.embed_tokens.weight") == 0 || strcmp(name, "lm_head.weight") == 0;
}

/* A llama.cpp block type for a tensor, with the fallback llama.cpp applies. */
static int ggml_choice(qp_tensor_plan *out, const qp_quant_plan *p, const char *name, int ndim, int64_t rows,
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
        out->kind = t == QP_GGML_F16 || t == QP_GGML_F32 || t == QP_GGML_BF16 ? QP_TP_DENSE : QP_TP_GGML;
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
    out->kind = ch.type == QP_GGML_F16 || ch.type == QP_GGML_F32 || ch.type == QP_GGML_BF16 ? QP_TP_DENSE : QP_TP_GGML;
    if (ch.fallback)
        snprintf(out->reason, sizeof(out->reason), "%s", ch.note);
    return 0;
}

int qp_quant_plan_tensor(qp_tensor_plan *out, const qp_quant_plan *p, const char *name, int ndim, int64_t rows,
                         int64_t cols)
{
    memset(out, 0, sizeof(*out));
    out->kind = QP_TP_DENSE;
    out->qtype = QP_GGML_F32;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(p->params, "skip"), i, v) {
        if (glob_match(json_string_value(v), name)) {
            snprintf(out->reason, sizeof(out->reason), "skip: %s", json_string_value(v));
            out->qtype = QP_GGML_BF16;  /* source precision: the same object */
            return 0;
        }
    }
    const json_t *ov = NULL;
    json_array_foreach(json_object_get(p->params, "override"), i, v) {
        if (glob_match(json_string_value(json_object_get(v, "match")), name)) {
            ov = v;
            snprintf(out->reason, sizeof(out->reason), "override %zu (%s)", i + 1,
                     json_string_value(json_object_get(v, "match")));
            break;
        }
    }
    const char *ov_type = ov ? json_string_value(json_object_get(ov, "type")) : NULL;
    if (ndim < 2) {
        out->qtype = QP_GGML_BF16;
        return 0;
    }
    if (!strcmp(p->method, "mixed") && !ov_type) {
        const char *assigned = p->assign ? json_string_value(json_object_get(p->assign, name)) : NULL;
        if (assigned)
            return ggml_choice(out, p, name, ndim, rows, cols, assigned);
        const json_t *ladder = json_object_get(p->params, "ladder");
        int rc = ggml_choice(out, p, name, ndim, rows, cols, json_string_value(json_array_get(ladder, 0)));
        out->mixed = rc == 0;
        return rc;
    }
    if (strcmp(p->method, "gguf") == 0 || ov_type) {
        char saved[240];
        snprintf(saved, sizeof(saved), "%s", out->reason);
        int rc = ggml_choice(out, p, name, ndim, rows, cols, ov_type);
        if (rc == 0 && saved[0] && !out->reason[0])
            snprintf(out->reason, sizeof(out->reason), "%s", saved);
        return rc;
    }
    if (is_anchor(name)) {
        out->qtype = QP_GGML_BF16;
        return 0;
    }
    if (!strcmp(p->method, "nf4"))
        out->kind = QP_TP_NF4;
    else if (!strcmp(p->method, "int8"))
        out->kind = QP_TP_INT8;
    else {
        out->kind = QP_TP_LINEAR;
        out->bits = (int)json_integer_value(json_object_get(p->params, "bits"));
        if (ov && json_is_integer(json_object_get(ov, "bits")))
            out->bits = (int)json_integer_value(json_object_get(ov, "bits"));
    }
    return 0;
}
