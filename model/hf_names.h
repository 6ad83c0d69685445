/* The Hugging Face state-dict names of a LLaMA-family checkpoint
 * (LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM), spelled once.
 *
 * Whole-model tensors are full names; the per-layer modules are the part
 * after "model.layers.N." without ".weight"/".bias", so that
 *   QP_HF_Q_PROJ ".weight"  is  "self_attn.q_proj.weight"
 * and qp_hf_layer_name() puts the layer prefix in front. */
#ifndef QP_MODEL_HF_NAMES_H
#define QP_MODEL_HF_NAMES_H

#include <stddef.h>

#define QP_HF_EMBED      "model.embed_tokens.weight"   /* [V, D] */
#define QP_HF_FINAL_NORM "model.norm.weight"           /* [D] */
#define QP_HF_LM_HEAD    "lm_head.weight"              /* [V, D]; absent when tied to QP_HF_EMBED */
#define QP_HF_LAYERS     "model.layers."               /* + N + "." + module */

#define QP_HF_ATTN_NORM  "input_layernorm"             /* [D] */
#define QP_HF_Q_PROJ     "self_attn.q_proj"            /* [n_head·head_dim, D] (+ bias in Qwen2) */
#define QP_HF_K_PROJ     "self_attn.k_proj"            /* [n_kv_head·head_dim, D] (+ bias in Qwen2) */
#define QP_HF_V_PROJ     "self_attn.v_proj"            /* [n_kv_head·head_dim, D] (+ bias in Qwen2) */
#define QP_HF_O_PROJ     "self_attn.o_proj"            /* [D, n_head·head_dim] */
#define QP_HF_FFN_NORM   "post_attention_layernorm"    /* [D] */
#define QP_HF_GATE_PROJ  "mlp.gate_proj"               /* [F, D] */
#define QP_HF_UP_PROJ    "mlp.up_proj"                 /* [F, D] */
#define QP_HF_DOWN_PROJ  "mlp.down_proj"               /* [D, F] */

/* "model.layers.<layer>.<suffix>" into buf[cap] (truncated, always
 * terminated); returns buf. */
char *qp_hf_layer_name(char *buf, size_t cap, int layer, const char *suffix);

/* For "model.layers.N.rest": returns N (>= 0) and sets *rest (when not NULL)
 * to "rest"; -1 for any other name, including a sign or no digits after the
 * prefix, or a missing "." after N. */
int qp_hf_layer_of(const char *name, const char **rest);

#endif
