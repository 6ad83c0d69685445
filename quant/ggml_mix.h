/* llama.cpp's per-tensor type choice for a file type ("Q4_K_M" …), as
 * llama-quantize makes it (src/llama-quant.cpp at commit c392e50, Feb 2025):
 * which tensors are quantized at all (llama_model_quantize_impl), the mix
 * rules of llama_tensor_get_type (output / token_embd, attn_v, attn_k,
 * attn_output, attn_qkv, ffn_down with their layer and n_gqa conditions),
 * the --pure / --output-tensor-type / --token-embedding-type /
 * --leave-output-tensor options, and the k-quant fallback when a row
 * (ne[0]) is not a multiple of the type's block.
 *
 * The rules need the index of a tensor's layer among tensors of its kind.
 * llama-quantize counts them (i_attention_wv, i_ffn_down, …) while it visits
 * tensors in (layer, name) order; a LLaMA layer has exactly one tensor of
 * each kind, so the count equals the N of "blk.N." and this function reads it
 * from the name: the result does not depend on the order of the calls. */
#ifndef QP_QUANT_GGML_MIX_H
#define QP_QUANT_GGML_MIX_H

#include <stddef.h>
#include <stdint.h>

#include "quant/qtypes.h"

/* = llama.cpp's llama_ftype (general.file_type). */
typedef enum {
    QP_FTYPE_ALL_F32 = 0, QP_FTYPE_MOSTLY_F16 = 1, QP_FTYPE_MOSTLY_Q4_0 = 2, QP_FTYPE_MOSTLY_Q4_1 = 3,
    QP_FTYPE_MOSTLY_Q8_0 = 7, QP_FTYPE_MOSTLY_Q5_0 = 8, QP_FTYPE_MOSTLY_Q5_1 = 9,
    QP_FTYPE_MOSTLY_Q2_K = 10, QP_FTYPE_MOSTLY_Q3_K_S = 11, QP_FTYPE_MOSTLY_Q3_K_M = 12,
    QP_FTYPE_MOSTLY_Q3_K_L = 13, QP_FTYPE_MOSTLY_Q4_K_S = 14, QP_FTYPE_MOSTLY_Q4_K_M = 15,
    QP_FTYPE_MOSTLY_Q5_K_S = 16, QP_FTYPE_MOSTLY_Q5_K_M = 17, QP_FTYPE_MOSTLY_Q6_K = 18,
    QP_FTYPE_MOSTLY_IQ2_XXS = 19, QP_FTYPE_MOSTLY_IQ2_XS = 20,
    QP_FTYPE_MOSTLY_Q2_K_S = 21, QP_FTYPE_MOSTLY_IQ4_NL = 25, QP_FTYPE_MOSTLY_IQ4_XS = 30,
    QP_FTYPE_MOSTLY_IQ3_XS = 22, QP_FTYPE_MOSTLY_IQ3_XXS = 23, QP_FTYPE_MOSTLY_IQ3_S = 26, QP_FTYPE_MOSTLY_IQ3_M = 27,
    QP_FTYPE_MOSTLY_IQ2_S = 28, QP_FTYPE_MOSTLY_IQ2_M = 29, QP_FTYPE_MOSTLY_IQ1_S = 24, QP_FTYPE_MOSTLY_IQ1_M = 31,
    QP_FTYPE_MOSTLY_BF16 = 32, QP_FTYPE_MOSTLY_TQ1_0 = 36, QP_FTYPE_MOSTLY_TQ2_0 = 37,
} qp_llama_ftype;

/* Name as llama-quantize's command line spells it ("Q4_K_M", "F32", "F16",
 * "BF16", "Q2_K_S", "IQ4_NL", "IQ4_XS", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M", "IQ2_XXS", "IQ2_XS",
 * "IQ2_S", "IQ2_M", "IQ1_S", "IQ1_M", "TQ1_0"); NULL for an id not in the enum above. */
const char *qp_llama_ftype_name(qp_llama_ftype f);
/* Case-insensitive; "Q3_K" / "Q4_K" / "Q5_K" mean the _M variants as in
 * llama-quantize.  -1 when unknown (no error set). */
int qp_llama_ftype_parse(const char *name);
/* The type most tensors get (llama-quantize's default_type: IQ2_XS for the
 * IQ2_S file type, IQ2_S for IQ2_M); -1 if unknown. */
int qp_llama_ftype_default_type(qp_llama_ftype f);

/* What the model is and how llama-quantize was invoked. */
typedef struct {
    int n_layer;          /* block_count (= llama-quantize's n_ffn_down/gate/up) */
    int n_attention_wv;   /* number of attn_v tensors (LLaMA: n_layer) */
    int n_head, n_head_kv;/* n_gqa = n_head / n_head_kv */
    int n_expert;         /* 0 for dense models */
    int has_output;       /* the file has output.weight (untied lm_head) */
    int is_70b;           /* llama.cpp's LLM_TYPE_70B (attn_v gets Q5_K) */
    int has_imatrix;      /* --imatrix given */
    int pure;             /* --pure: every quantized tensor gets the default type */
    int keep_output;      /* --leave-output-tensor */
    int output_type;      /* --output-tensor-type, -1 none */
    int token_embd_type;  /* --token-embedding-type, -1 none */
    qp_ggml_type src_type;    /* type of the tensors being quantized (kept ones stay in it) */
} qp_ggml_mix_ctx;

/* A dense LLaMA with these hyper-parameters, llama-quantize's defaults
 * (no imatrix, not pure, no overrides), source type F32.  is_70b follows
 * llama.cpp's LLaMA size table: 80 layers and n_head != n_head_kv. */
void qp_ggml_mix_ctx_init(qp_ggml_mix_ctx *ctx, int n_layer, int n_head, int n_head_kv, int tied_embeddings);
/* The same for a model of GGUF architecture arch: "llama" as above;
 * "qwen2" (llama-model.cpp's Qwen2 size table: 80 layers are LLM_TYPE_70B
 * whatever the heads).  Every other rule is the same for both: a tied model
 * has no output.weight, so token_embd.weight gets the output tensor's type.
 * Returns -1 for another arch (ctx then as for llama; no error set). */
int qp_ggml_mix_ctx_init_arch(qp_ggml_mix_ctx *ctx, const char *arch, int n_layer, int n_head, int n_head_kv,
                              int tied_embeddings);

typedef struct {
    qp_ggml_type type;        /* the type the tensor is stored in */
    int quantized;        /* 0: kept as it is (src_type): norms, 1-D, … */
    int fallback;         /* 1: the k-quant fallback replaced the rule's type */
    /* The fallback said as llama-quantize says it, with the tensor name:
     * "blk.0.ffn_down.weight: tensor cols 100 x 256 are not divisible by 256,
     * required for q4_K - using fallback quantization q5_0"; "" otherwise. */
    char note[200];
} qp_ggml_mix_choice;

/* The type llama-quantize gives GGUF tensor `name` of ne[0..n_dims-1]
 * (ggml order) for file type ftype.  Errors (QP_EUSAGE, one line naming the
 * tensor): a file type these rules do not cover ("file type 23 (IQ3_XXS) is
 * not supported"), a row length no fallback fits ("tensor 'T': tensor rows
 * of 100 weights cannot be quantized to Q8_0 (blocks of 32)"; also for
 * --pure k-quants, which llama.cpp does not fall back for), a layer number
 * out of range, and Q2_K_S without an imatrix ("tensor 'T': Missing
 * importance matrix for tensor T in a very low-bit quantization"). */
int qp_ggml_mix_tensor_type(qp_ggml_mix_choice *out, qp_llama_ftype ftype, const char *name, int n_dims,
                            const int64_t *ne, const qp_ggml_mix_ctx *ctx);

/* llama-quantize's refusal (llama_model_quantize_impl): "Missing importance
 * matrix for tensor %s in a very low-bit quantization" — 1 when GGUF tensor
 * `name` quantized to t under file type ftype must have an imatrix entry:
 * IQ2_XXS, IQ2_XS, IQ2_S and IQ1_S always, IQ1_M except token_embd.weight
 * and output.weight, Q2_K in a Q2_K_S file except token_embd.weight (one
 * table, whether qpipe has the type yet or not).  0 otherwise. */
int qp_ggml_needs_imatrix(qp_ggml_type t, qp_llama_ftype ftype, const char *name);

#endif
