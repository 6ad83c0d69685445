#include "stages/quant_plan.h"
#include "common/error.h"

#include <fnmatch.h>
#include <stdio.h>
#include <string.h>

void qp_quant_gguf_name(char *out, size_t cap, const char *hf)
{
    static const struct { const char *hf, *gguf; } layer_map[] = {
        {"self_attn.q_proj", "attn_q"},        {"self_attn.k_proj", "attn_k"},
        {"self_attn.v_proj", "attn_v"},        {"self_attn.o_proj", "attn_output"},
        {"mlp.gate_proj", "ffn_gate"},         {"mlp.up_proj", "ffn_up"},
        {"mlp.down_proj", "ffn_down"},         {"input_layernorm", "attn_norm"},
        {"post_attention_layernorm", "ffn_norm"},
    };
    out[0] = '\0';
    if (!strcmp(hf, "model.embed_tokens.weight"))
        snprintf(out, cap, "token_embd.weight");
    else if (!strcmp(hf, "model.norm.weight"))
        snprintf(out, cap, "output_norm.weight");
    else if (!strcmp(hf, "lm_head.weight"))
        snprintf(out, cap, "output.weight");
    else {
        int layer, off = 0;
        if (sscanf(hf, "model.layers.%d.%n", &layer, &off) != 1 || off == 0)
            return;
        const char *rest = hf + off;
        for (size_t i = 0; i < sizeof(layer_map) / sizeof(layer_map[0]); i++) {
            size_t n = strlen(layer_map[i].hf);
            if (strncmp(rest, layer_map[i].hf, n) == 0 && rest[n] == '.') {
                snprintf(out, cap, "blk.%d.%s.%s", layer, layer_map[i].gguf, rest + n + 1);
                return;
            }
        }
    }
}

static int glob_match(const char *pattern, const char *name)
{
    return fnmatch(pattern, name, 0) == 0;
}

int qp_quant_plan_tensor(qp_tensor_plan *out, const json_t *params, const char *name, int ndim, int64_t rows,
                         int64_t cols)
{
    memset(out, 0, sizeof(*out));
    out->kind = QP_TP_DENSE;
    (void)rows;
    /* 1-D tensors (norms, biases) stay at source precision, as in llama.cpp */
    if (ndim < 2) {
        snprintf(out->reason, sizeof(out->reason), "1-D");
        return 0;
    }
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(params, "skip"), i, v) {
        if (glob_match(json_string_value(v), name)) {
            snprintf(out->reason, sizeof(out->reason), "skip: %s", json_string_value(v));
            return 0;
        }
    }
    const char *method = json_string_value(json_object_get(params, "method"));
    const char *type_name = json_string_value(json_object_get(params, "type"));
    int overridden = 0;
    json_array_foreach(json_object_get(params, "override"), i, v) {
        if (!glob_match(json_string_value(json_object_get(v, "match")), name))
            continue;
        const char *t = json_string_value(json_object_get(v, "type"));
        if (t)
            type_name = t;
        snprintf(out->reason, sizeof(out->reason), "override %zu (%s)", i + 1,
                 json_string_value(json_object_get(v, "match")));
        overridden = 1;
        break;
    }
    if (strcmp(method, "gguf") != 0 && !overridden)
        return qp_error_set(QP_EUSAGE, "quantize method '%s' is not available in this build", method);
    const qp_qtype_info *qi = qp_qtype_by_name(type_name);
    if (!qi)
        return qp_error_set(QP_EUSAGE, "tensor '%s': type %s is a mix; mixes are not available in this build",
                            name, type_name);
    qp_qtype t = qi->type;
    int rc = qp_qtype_fallback(&t, qi->type, cols);
    if (rc) {
        qp_error_prefix("tensor '%s'", name);
        return rc;
    }
    if (t != qi->type)
        snprintf(out->reason, sizeof(out->reason), "rows of %lld weights do not fit %s: %s instead (as llama.cpp)",
                 (long long)cols, qi->name, qp_qtype_get(t)->name);
    out->kind = t == QP_QT_F16 || t == QP_QT_F32 || t == QP_QT_BF16 ? QP_TP_DENSE : QP_TP_GGML;
    out->qtype = t;
    return 0;
}
