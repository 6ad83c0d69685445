/* LLaMA-family hyper-parameters from a Hugging Face config.json or from a
 * GGUF file's "<arch>.*" keys, with everything qpipe cannot run refused by
 * name (one line): unknown architectures, rope_scaling other than Llama 3's,
 * activations other than SiLU, biases other than Qwen2's q/k/v.  A sliding
 * window shorter than the context is recorded (sliding_window below).
 * The fields match qp_llama_hparams (model/llama.h) one for one. */
#ifndef QP_MODEL_CONFIG_H
#define QP_MODEL_CONFIG_H

#include <stddef.h>

#include "model/gguf.h"

typedef enum {
    QP_ARCH_LLAMA = 1,     /* LlamaForCausalLM; GGUF "llama" (also Mistral conversions) */
    QP_ARCH_MISTRAL,       /* MistralForCausalLM */
    QP_ARCH_QWEN2,         /* Qwen2ForCausalLM; GGUF "qwen2" */
} qp_arch;

#define QP_MAX_EOS 8

/* config.json's rope_scaling (or newer transformers' rope_parameters, whose
 * rope_theta replaces the top-level one).  PLAIN: none (absent, null, or rope_type
 * "default").  LLAMA3: transformers' _compute_llama3_parameters, with the
 * four numbers kept as config.json gives them (Python floats / int: the
 * frequency code converts them exactly where PyTorch does; see
 * qp_kern_rope_inv_freq in model/llama_kernels.h). */
typedef enum { QP_ROPE_PLAIN = 0, QP_ROPE_LLAMA3 = 1 } qp_rope_kind;

typedef struct {
    qp_rope_kind kind;
    double factor;            /* > 0; 8 for Llama 3.1, 32 for 3.2 */
    double low_freq_factor;   /* > 0 */
    double high_freq_factor;  /* > low_freq_factor */
    int original_max_pos;     /* original_max_position_embeddings, > 0 */
} qp_rope_scaling;

typedef struct {
    qp_arch arch;
    int vocab;            /* vocab_size                         V */
    int hidden;           /* hidden_size                        D */
    int n_layers;         /* num_hidden_layers                  L */
    int n_heads;          /* num_attention_heads                H */
    int n_kv_heads;       /* num_key_value_heads (default H)    KV, divides H */
    int head_dim;         /* head_dim (default D/H), even */
    int intermediate;     /* intermediate_size                  F */
    float rms_eps;        /* rms_norm_eps */
    float rope_theta;     /* rope_theta (default 10000) */
    qp_rope_scaling rope_scaling;   /* rope_scaling (PLAIN when none) */
    int max_pos;          /* max_position_embeddings */
    int sliding_window;   /* sliding-window attention in force and shorter than
                             max_pos (Mistral v0.1: 4096 of 32768), else 0.
                             Windows of at most this many tokens are exactly
                             full causal attention, so the forward pass runs
                             up to min(max_pos, sliding_window) positions */
    int tied_embeddings;  /* tie_word_embeddings: lm_head = embed_tokens */
    int qkv_bias;         /* q/k/v projections have biases (Qwen2) */
    int bos_id;           /* -1 when the config has none */
    int eos_id;           /* first end-of-sequence id, -1 when none */
    int n_eos;            /* eos_token_id may be a list (Llama 3) */
    int eos_ids[QP_MAX_EOS];
} qp_llama_config;

/* "llama", "mistral", "qwen2". */
const char *qp_arch_name(qp_arch a);

/* Reads and validates config.json.  Errors: "PATH: FIELD: what is wrong"
 * or "PATH: what is wrong" (QP_EFORMAT; QP_ENOTFOUND for a missing file). */
int qp_llama_config_load(qp_llama_config *out, const char *path);
/* The same from JSON text; name is used in messages in place of a path. */
int qp_llama_config_parse(qp_llama_config *out, const char *json, size_t len, const char *name);

/* From GGUF metadata ("llama" or "qwen2" architecture).  Tied embeddings =
 * no output.weight tensor; vocab from <arch>.vocab_size or the token list.
 * Rope scaling is refused: a <arch>.rope.scaling.type other than "none", and
 * llama.cpp's rope_freqs.weight tensor (how convert_hf_to_gguf.py stores
 * Llama 3 scaling: per-dimension divisors, which do not carry the config's
 * numbers and are not transformers' float32 arithmetic).
 * Errors: "PATH: key 'K': what is wrong". */
int qp_llama_config_from_gguf(qp_llama_config *out, const qp_gguf *g);

#endif
