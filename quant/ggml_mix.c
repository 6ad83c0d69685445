/* llama-quantize's tensor type rules (llama.cpp c392e50, src/llama-quant.cpp:
 * llama_model_quantize_impl's "quantize?" tests, llama_tensor_get_type, the
 * k-quant fallback).  Only the branches reachable for the file types in
 * qp_llama_ftype are kept, in llama.cpp's order: an else-if chain in which a
 * branch for an IQ1/IQ2/IQ3 file type sat earlier never matches them. */
#include "quant/ggml_mix.h"

#include "common/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    qp_llama_ftype ftype;
    const char *name;
    qp_ggml_type deflt;
} ftypes[] = {
    { QP_FTYPE_ALL_F32, "F32", QP_GGML_F32 },
    { QP_FTYPE_MOSTLY_F16, "F16", QP_GGML_F16 },
    { QP_FTYPE_MOSTLY_BF16, "BF16", QP_GGML_BF16 },
    { QP_FTYPE_MOSTLY_Q4_0, "Q4_0", QP_GGML_Q4_0 },
    { QP_FTYPE_MOSTLY_Q4_1, "Q4_1", QP_GGML_Q4_1 },
    { QP_FTYPE_MOSTLY_Q5_0, "Q5_0", QP_GGML_Q5_0 },
    { QP_FTYPE_MOSTLY_Q5_1, "Q5_1", QP_GGML_Q5_1 },
    { QP_FTYPE_MOSTLY_Q8_0, "Q8_0", QP_GGML_Q8_0 },
    { QP_FTYPE_MOSTLY_Q2_K, "Q2_K", QP_GGML_Q2_K },
    { QP_FTYPE_MOSTLY_Q2_K_S, "Q2_K_S", QP_GGML_Q2_K },
    { QP_FTYPE_MOSTLY_Q3_K_S, "Q3_K_S", QP_GGML_Q3_K },
    { QP_FTYPE_MOSTLY_Q3_K_M, "Q3_K_M", QP_GGML_Q3_K },
    { QP_FTYPE_MOSTLY_Q3_K_L, "Q3_K_L", QP_GGML_Q3_K },
    { QP_FTYPE_MOSTLY_Q4_K_S, "Q4_K_S", QP_GGML_Q4_K },
    { QP_FTYPE_MOSTLY_Q4_K_M, "Q4_K_M", QP_GGML_Q4_K },
    { QP_FTYPE_MOSTLY_Q5_K_S, "Q5_K_S", QP_GGML_Q5_K },
    { QP_FTYPE_MOSTLY_Q5_K_M, "Q5_K_M", QP_GGML_Q5_K },
    { QP_FTYPE_MOSTLY_Q6_K, "Q6_K", QP_GGML_Q6_K },
    { QP_FTYPE_MOSTLY_IQ4_NL, "IQ4_NL", QP_GGML_IQ4_NL },
    { QP_FTYPE_MOSTLY_IQ4_XS, "IQ4_XS", QP_GGML_IQ4_XS },
    { QP_FTYPE_MOSTLY_IQ2_XXS, "IQ2_XXS", QP_GGML_IQ2_XXS },
    { QP_FTYPE_MOSTLY_IQ2_XS, "IQ2_XS", QP_GGML_IQ2_XS },
    { QP_FTYPE_MOSTLY_IQ2_S, "IQ2_S", QP_GGML_IQ2_XS },   /* llama-quantize's default_type, not IQ2_S */
    { QP_FTYPE_MOSTLY_IQ2_M, "IQ2_M", QP_GGML_IQ2_S },
    { QP_FTYPE_MOSTLY_IQ1_S, "IQ1_S", QP_GGML_IQ1_S },
    { QP_FTYPE_MOSTLY_IQ1_M, "IQ1_M", QP_GGML_IQ1_M },
    { QP_FTYPE_MOSTLY_IQ3_XXS, "IQ3_XXS", QP_GGML_IQ3_XXS },
    { QP_FTYPE_MOSTLY_IQ3_XS, "IQ3_XS", QP_GGML_IQ3_S },
    { QP_FTYPE_MOSTLY_IQ3_S, "IQ3_S", QP_GGML_IQ3_S },
    { QP_FTYPE_MOSTLY_IQ3_M, "IQ3_M", QP_GGML_IQ3_S },
    { QP_FTYPE_MOSTLY_TQ1_0, "TQ1_0", QP_GGML_TQ1_0 },
    { QP_FTYPE_MOSTLY_TQ2_0, "TQ2_0", QP_GGML_TQ2_0 },
};
#define N_FTYPES (sizeof(ftypes) / sizeof(ftypes[0]))

const char *qp_llama_ftype_name(qp_llama_ftype f)
{
    for (size_t i = 0; i < N_FTYPES; i++)
        if (ftypes[i].ftype == f)
            return ftypes[i].name;
    return NULL;
}

int qp_llama_ftype_parse(const char *name)
{
    static const struct { const char *alias; qp_llama_ftype f; } aliases[] = {
        { "Q3_K", QP_FTYPE_MOSTLY_Q3_K_M },
        { "Q4_K", QP_FTYPE_MOSTLY_Q4_K_M },
        { "Q5_K", QP_FTYPE_MOSTLY_Q5_K_M },
    };
    if (!name)
        return -1;
    for (size_t i = 0; i < N_FTYPES; i++)
        if (strcasecmp(ftypes[i].name, name) == 0)
            return (int)ftypes[i].ftype;
    for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++)
        if (strcasecmp(aliases[i].alias, name) == 0)
            return (int)aliases[i].f;
    return -1;
}

int qp_llama_ftype_default_type(qp_llama_ftype f)
{
    for (size_t i = 0; i < N_FTYPES; i++)
        if (ftypes[i].ftype == f)
            return (int)ftypes[i].deflt;
    return -1;
}

void qp_ggml_mix_ctx_init(qp_ggml_mix_ctx *ctx, int n_layer, int n_head, int n_head_kv, int tied_embeddings)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->n_layer = n_layer;
    ctx->n_attention_wv = n_layer;
    ctx->n_head = n_head;
    ctx->n_head_kv = n_head_kv;
    ctx->has_output = !tied_embeddings;
    /* llama-model.cpp, LLM_ARCH_LLAMA: case 80: n_head == n_head_kv ? 65B : 70B */
    ctx->is_70b = n_layer == 80 && n_head != n_head_kv;
    ctx->output_type = -1;
    ctx->token_embd_type = -1;
    ctx->src_type = QP_GGML_F32;
}

int qp_ggml_mix_ctx_init_arch(qp_ggml_mix_ctx *ctx, const char *arch, int n_layer, int n_head, int n_head_kv,
                              int tied_embeddings)
{
    qp_ggml_mix_ctx_init(ctx, n_layer, n_head, n_head_kv, tied_embeddings);
    if (arch && strcmp(arch, "qwen2") == 0) {
        /* llama-model.cpp, LLM_ARCH_QWEN2: case 80: LLM_TYPE_70B */
        ctx->is_70b = n_layer == 80;
        return 0;
    }
    return arch && strcmp(arch, "llama") == 0 ? 0 : -1;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int has(const char *s, const char *sub)
{
    return strstr(s, sub) != NULL;
}

/* llama-quant.cpp's use_more_bits: the first and last eighth of the layers
 * and every third layer in between. */
static int use_more_bits(int i_layer, int n_layers)
{
    return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

/* IQ2_S and IQ2_M: the IQ2 file types that give IQ3_S where IQ2_XXS /
 * IQ2_XS give Q2_K (token_embd, attn_v, the first ffn_down layers) and
 * IQ3_S to attn_output. */
static int is_iq2_sm_ftype(qp_llama_ftype ft)
{
    return ft == QP_FTYPE_MOSTLY_IQ2_S || ft == QP_FTYPE_MOSTLY_IQ2_M;
}

static int is_iq1_ftype(qp_llama_ftype ft)
{
    return ft == QP_FTYPE_MOSTLY_IQ1_S || ft == QP_FTYPE_MOSTLY_IQ1_M;
}

/* the file types of llama_tensor_get_type's IQ2 / IQ1 branch */
static int is_iq2_ftype(qp_llama_ftype ft)
{
    return ft == QP_FTYPE_MOSTLY_IQ2_XXS || ft == QP_FTYPE_MOSTLY_IQ2_XS || is_iq2_sm_ftype(ft) || is_iq1_ftype(ft);
}

/* llama_tensor_get_type's branch for the IQ2_XXS / IQ2_XS / IQ2_S / IQ2_M /
 * IQ1_S / IQ1_M file types: it replaces the general attn_v … ffn_down rules
 * below (an else-if chain).  IQ1_S / IQ1_M as IQ2_XXS, but IQ2_XXS for
 * attn_output (Q5_K with 8 experts). */
static qp_ggml_type iq2_rule(qp_ggml_type t, qp_llama_ftype ft, const char *name, int i_layer,
                             const qp_ggml_mix_ctx *c)
{
    const int n_gqa = c->n_head_kv > 0 ? c->n_head / c->n_head_kv : 0;
    const qp_ggml_type low = is_iq2_sm_ftype(ft) ? QP_GGML_IQ3_S : QP_GGML_Q2_K;
    if (has(name, "attn_v.weight"))
        return n_gqa >= 4 || c->n_expert >= 4 ? QP_GGML_Q4_K : low;
    if (c->n_expert == 8 && has(name, "attn_k.weight"))
        return QP_GGML_Q4_K;
    if (has(name, "ffn_down"))
        return i_layer < c->n_layer / 8 ? low : t;
    if (has(name, "attn_output.weight"))
        return c->n_expert == 8 ? QP_GGML_Q5_K : is_iq2_sm_ftype(ft) ? QP_GGML_IQ3_S
                                               : is_iq1_ftype(ft)    ? QP_GGML_IQ2_XXS : t;
    return t;
}

/* llama_tensor_get_type without the fallback. */
static qp_ggml_type mix_rule(qp_ggml_type t, qp_llama_ftype ft, const char *name, int64_t nx, int i_layer,
                         const qp_ggml_mix_ctx *c)
{
    const int n_gqa = c->n_head_kv > 0 ? c->n_head / c->n_head_kv : 0;
    const int n_layer = c->n_layer;

    if (strcmp(name, "output.weight") == 0 || (!c->has_output && strcmp(name, "token_embd.weight") == 0)) {
        /* the output (or the embedding that doubles as it) */
        if (c->output_type >= 0)
            return (qp_ggml_type)c->output_type;
        if (nx % qp_qtype_get(t)->block != 0)
            return QP_GGML_Q8_0;
        if (is_iq2_ftype(ft) || ft == QP_FTYPE_MOSTLY_IQ3_XXS)
            return QP_GGML_Q5_K;
        return t != QP_GGML_Q8_0 ? QP_GGML_Q6_K : t;
    }
    if (strcmp(name, "token_embd.weight") == 0) {
        if (c->token_embd_type >= 0)
            return (qp_ggml_type)c->token_embd_type;
        if (is_iq2_sm_ftype(ft) || ft == QP_FTYPE_MOSTLY_IQ3_XXS)
            return QP_GGML_IQ3_S;
        if (is_iq2_ftype(ft))
            return QP_GGML_Q2_K;
        /* the ternary types are for ternary-trained layers, not the embedding */
        return ft == QP_FTYPE_MOSTLY_TQ1_0 || ft == QP_FTYPE_MOSTLY_TQ2_0 ? QP_GGML_Q4_K : t;
    }
    if (is_iq2_ftype(ft))
        return iq2_rule(t, ft, name, i_layer, c);
    if (has(name, "attn_v.weight")) {
        if (ft == QP_FTYPE_MOSTLY_Q2_K)
            t = n_gqa >= 4 ? QP_GGML_Q4_K : QP_GGML_Q3_K;
        else if (ft == QP_FTYPE_MOSTLY_Q2_K_S && n_gqa >= 4)
            t = QP_GGML_Q4_K;
        else if (ft == QP_FTYPE_MOSTLY_IQ3_XXS)
            t = n_gqa >= 4 ? QP_GGML_Q4_K : !c->has_imatrix ? QP_GGML_IQ3_S : QP_GGML_IQ3_XXS;
        else if ((ft == QP_FTYPE_MOSTLY_IQ3_XS || ft == QP_FTYPE_MOSTLY_IQ3_S) && n_gqa >= 4)
            t = QP_GGML_Q4_K;
        else if (ft == QP_FTYPE_MOSTLY_IQ3_M)
            t = QP_GGML_Q4_K;
        else if (ft == QP_FTYPE_MOSTLY_Q3_K_M)
            t = i_layer < 2 ? QP_GGML_Q5_K : QP_GGML_Q4_K;
        else if (ft == QP_FTYPE_MOSTLY_Q3_K_L)
            t = QP_GGML_Q5_K;
        else if ((ft == QP_FTYPE_MOSTLY_IQ4_NL || ft == QP_FTYPE_MOSTLY_IQ4_XS) && n_gqa >= 4)
            t = QP_GGML_Q5_K;
        else if ((ft == QP_FTYPE_MOSTLY_Q4_K_M || ft == QP_FTYPE_MOSTLY_Q5_K_M) &&
                 use_more_bits(i_layer, c->n_attention_wv))
            t = QP_GGML_Q6_K;
        else if (ft == QP_FTYPE_MOSTLY_Q4_K_S && i_layer < 4)
            t = QP_GGML_Q5_K;
        /* 70B: 8 heads share attn_v, 8x smaller than attn_q: more bits are cheap */
        if (c->is_70b && (t == QP_GGML_Q3_K || t == QP_GGML_Q4_K))
            t = QP_GGML_Q5_K;
        if (c->n_expert == 8)
            t = QP_GGML_Q8_0;
        return t;
    }
    if (has(name, "attn_k.weight"))
        return c->n_expert == 8 ? QP_GGML_Q8_0 : ft == QP_FTYPE_MOSTLY_IQ3_XS ? QP_GGML_IQ3_XXS
                                               : ft == QP_FTYPE_MOSTLY_IQ3_XXS ? QP_GGML_IQ2_S : t;
    if (has(name, "attn_q.weight"))
        return ft == QP_FTYPE_MOSTLY_IQ3_XS ? QP_GGML_IQ3_XXS : ft == QP_FTYPE_MOSTLY_IQ3_XXS ? QP_GGML_IQ2_S : t;
    if (has(name, "ffn_down")) {
        if (ft == QP_FTYPE_MOSTLY_Q2_K)
            t = QP_GGML_Q3_K;
        else if (ft == QP_FTYPE_MOSTLY_Q2_K_S) {
            if (i_layer < n_layer / 8)
                t = QP_GGML_Q4_K;
        } else if (ft == QP_FTYPE_MOSTLY_IQ3_XXS && !c->has_imatrix) {
            t = i_layer < n_layer / 8 ? QP_GGML_Q4_K : QP_GGML_Q3_K;
        } else if (ft == QP_FTYPE_MOSTLY_Q3_K_M) {
            /* "arch != FALCON || use_more_bits" is always true for LLaMA */
            t = i_layer < n_layer / 16 ? QP_GGML_Q5_K : QP_GGML_Q4_K;
        } else if (ft == QP_FTYPE_MOSTLY_IQ3_M &&
                   (i_layer < n_layer / 8 || (c->n_expert == 8 && use_more_bits(i_layer, n_layer)))) {
            t = QP_GGML_Q4_K;
        } else if (ft == QP_FTYPE_MOSTLY_Q3_K_L) {
            t = QP_GGML_Q5_K;
        } else if (ft == QP_FTYPE_MOSTLY_Q4_K_M) {
            if (use_more_bits(i_layer, n_layer))
                t = QP_GGML_Q6_K;
        } else if (i_layer < n_layer / 8 && (ft == QP_FTYPE_MOSTLY_IQ4_NL || ft == QP_FTYPE_MOSTLY_IQ4_XS) &&
                   !c->has_imatrix) {
            t = QP_GGML_Q5_K;
        } else if (ft == QP_FTYPE_MOSTLY_Q5_K_M && use_more_bits(i_layer, n_layer)) {
            t = QP_GGML_Q6_K;
        } else if (ft == QP_FTYPE_MOSTLY_Q4_K_S && i_layer < n_layer / 8) {
            t = QP_GGML_Q5_K;
        } else if ((ft == QP_FTYPE_MOSTLY_Q4_0 || ft == QP_FTYPE_MOSTLY_Q5_0) && c->has_imatrix &&
                   i_layer < n_layer / 8) {
            /* guard the first ffn_down layers; only with an imatrix so that the
             * plain result stays what it always was */
            t = ft == QP_FTYPE_MOSTLY_Q4_0 ? QP_GGML_Q4_1 : QP_GGML_Q5_1;
        }
        return t;
    }
    if (has(name, "attn_output.weight")) {
        if (c->n_expert == 8) {
            if (ft == QP_FTYPE_MOSTLY_Q2_K || ft == QP_FTYPE_MOSTLY_IQ3_XS || ft == QP_FTYPE_MOSTLY_IQ3_XXS ||
                ft == QP_FTYPE_MOSTLY_Q3_K_S ||
                ft == QP_FTYPE_MOSTLY_Q3_K_M || ft == QP_FTYPE_MOSTLY_IQ4_NL || ft == QP_FTYPE_MOSTLY_Q4_K_S ||
                ft == QP_FTYPE_MOSTLY_Q4_K_M || ft == QP_FTYPE_MOSTLY_IQ3_S || ft == QP_FTYPE_MOSTLY_IQ3_M ||
                ft == QP_FTYPE_MOSTLY_IQ4_XS)
                t = QP_GGML_Q5_K;
        } else {
            if (ft == QP_FTYPE_MOSTLY_Q2_K)
                t = QP_GGML_Q3_K;
            else if (ft == QP_FTYPE_MOSTLY_IQ3_XXS)
                t = QP_GGML_IQ3_S;
            else if (ft == QP_FTYPE_MOSTLY_Q3_K_M)
                t = QP_GGML_Q4_K;
            else if (ft == QP_FTYPE_MOSTLY_Q3_K_L)
                t = QP_GGML_Q5_K;
            else if (ft == QP_FTYPE_MOSTLY_IQ3_M)
                t = QP_GGML_Q4_K;
        }
        return t;
    }
    if (has(name, "attn_qkv.weight")) {
        if (ft == QP_FTYPE_MOSTLY_Q3_K_M || ft == QP_FTYPE_MOSTLY_Q3_K_L || ft == QP_FTYPE_MOSTLY_IQ3_M)
            t = QP_GGML_Q4_K;
        else if (ft == QP_FTYPE_MOSTLY_Q4_K_M)
            t = QP_GGML_Q5_K;
        else if (ft == QP_FTYPE_MOSTLY_Q5_K_M)
            t = QP_GGML_Q6_K;
        return t;
    }
    if ((has(name, "ffn_gate") || has(name, "ffn_up")) && ft == QP_FTYPE_MOSTLY_IQ3_XS &&
        i_layer >= n_layer / 8 && i_layer < 7 * n_layer / 8)
        t = QP_GGML_IQ3_XXS;   /* the middle layers' ffn_gate / ffn_up */
    return t;
}

/* llama_model_quantize_impl's "quantize this tensor at all?" */
static int wants_quantization(const char *name, int n_dims, const qp_ggml_mix_ctx *c)
{
    static const char *const never[] = {
        "_norm.weight", "ffn_gate_inp.weight", "ssm_conv1d.weight", "time_mix_first.weight",
        "time_mix_w1.weight", "time_mix_w2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight", "attn_rel_b.weight",
    };
    if (!ends_with(name, "weight") || n_dims < 2)
        return 0;
    for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++)
        if (has(name, never[i]))
            return 0;
    if (c->keep_output && strcmp(name, "output.weight") == 0)
        return 0;
    return strcmp(name, "position_embd.weight") != 0 && strcmp(name, "token_types.weight") != 0;
}

/* "blk.N." -> N; -1 when the name has no layer. */
static int layer_of(const char *name)
{
    int n = -1;
    if (sscanf(name, "blk.%d.", &n) != 1)
        return -1;
    return n;
}

int qp_ggml_mix_tensor_type(qp_ggml_mix_choice *out, qp_llama_ftype ftype, const char *name, int n_dims,
                            const int64_t *ne, const qp_ggml_mix_ctx *c)
{
    int d = qp_llama_ftype_default_type(ftype);
    memset(out, 0, sizeof(*out));
    out->type = c->src_type;
    if (d < 0)
        return qp_error_set(QP_EUSAGE, "tensor '%s': file type %d is not supported", name, (int)ftype);
    /* ggml_n_dims: trailing dimensions of 1 do not count */
    int eff = 1;
    for (int i = 0; i < n_dims; i++)
        if (ne[i] > 1)
            eff = i + 1;
    if ((c->output_type >= 0 && !qp_qtype_get((qp_ggml_type)c->output_type)) ||
        (c->token_embd_type >= 0 && !qp_qtype_get((qp_ggml_type)c->token_embd_type)))
        return qp_error_set(QP_EUSAGE, "tensor '%s': override type %d is not supported", name,
                            c->output_type >= 0 && !qp_qtype_get((qp_ggml_type)c->output_type) ? c->output_type
                                                                                          : c->token_embd_type);
    if (!wants_quantization(name, eff, c))
        return 0;

    qp_ggml_type t = (qp_ggml_type)d;
    const qp_qtype_info *di = qp_qtype_get(t);
    if (!c->pure && di->is_quantized) {
        int i_layer = layer_of(name);
        if (i_layer >= c->n_layer)
            return qp_error_set(QP_EUSAGE, "tensor '%s': layer %d out of range (block_count %d)", name, i_layer,
                                c->n_layer);
        t = mix_rule(t, ftype, name, ne[0], i_layer, c);
        const qp_qtype_info *ti = qp_qtype_get(t);
        if (ne[0] % ti->block != 0) {
            qp_ggml_type fb;
            if (qp_qtype_fallback(&fb, t, ne[0]) != 0) {
                qp_error_prefix("tensor '%s'", name);
                return QP_EUSAGE;
            }
            snprintf(out->note, sizeof(out->note),
                     "%s: tensor cols %lld x %lld are not divisible by %d, required for %s - using fallback "
                     "quantization %s",
                     name, (long long)ne[0], (long long)(n_dims > 1 ? ne[1] : 1), ti->block,
                     qp_ggml_type_log_name(t), qp_ggml_type_log_name(fb));
            out->fallback = 1;
            t = fb;
        }
    }
    /* the command-line overrides win even over --pure */
    if (c->token_embd_type >= 0 && strcmp(name, "token_embd.weight") == 0)
        t = (qp_ggml_type)c->token_embd_type;
    if (c->output_type >= 0 && strcmp(name, "output.weight") == 0)
        t = (qp_ggml_type)c->output_type;
    const qp_qtype_info *ti = qp_qtype_get(t);
    if (ne[0] % ti->block != 0) {
        /* --pure (or an override) asks for blocks the row cannot hold;
         * llama.cpp would abort in ggml_quantize_chunk */
        return qp_error_set(QP_EUSAGE, "tensor '%s': tensor rows of %lld weights cannot be quantized to %s "
                            "(blocks of %d)", name, (long long)ne[0], ti->name, ti->block);
    }
    if (t == QP_GGML_Q2_K && ftype == QP_FTYPE_MOSTLY_Q2_K_S && !c->has_imatrix &&
        strcmp(name, "token_embd.weight") != 0)
        return qp_error_set(QP_EUSAGE, "tensor '%s': Missing importance matrix for tensor %s in a very low-bit "
                            "quantization", name, name);
    /* llama.cpp's very-low-bit check (IQ2_M's default type, IQ3_XXS's attn_q/attn_k) */
    if (t == QP_GGML_IQ2_S && !c->has_imatrix)
        return qp_error_set(QP_EUSAGE, "tensor '%s': Missing importance matrix for tensor %s in a very low-bit "
                            "quantization", name, name);
    out->type = t;
    out->quantized = t != c->src_type;
    return 0;
}

/* llama_model_quantize_impl's "very low-bit" list: the type, the file type
 * it applies under (-1: any) and the tensors it spares. */
static const struct {
    qp_ggml_type type;
    int ftype;
    int spares_token_embd, spares_output;
} very_low_bit[] = {
    { QP_GGML_IQ2_XXS, -1, 0, 0 },
    { QP_GGML_IQ2_XS, -1, 0, 0 },
    { QP_GGML_IQ2_S, -1, 0, 0 },
    { QP_GGML_IQ1_S, -1, 0, 0 },
    { QP_GGML_IQ1_M, -1, 1, 1 },
    { QP_GGML_Q2_K, QP_FTYPE_MOSTLY_Q2_K_S, 1, 0 },
};

int qp_ggml_needs_imatrix(qp_ggml_type t, qp_llama_ftype ftype, const char *name)
{
    for (size_t i = 0; i < sizeof(very_low_bit) / sizeof(very_low_bit[0]); i++) {
        if (very_low_bit[i].type != t || (very_low_bit[i].ftype >= 0 && very_low_bit[i].ftype != (int)ftype))
            continue;
        if (very_low_bit[i].spares_token_embd && strcmp(name, "token_embd.weight") == 0)
            return 0;
        if (very_low_bit[i].spares_output && strcmp(name, "output.weight") == 0)
            return 0;
        return 1;
    }
    return 0;
}
