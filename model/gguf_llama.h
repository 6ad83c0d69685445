/* Hugging Face LLaMA / Mistral / Qwen2 -> GGUF, as llama.cpp c392e50 writes it:
 *   convert_hf_to_gguf.py (LlamaModel: LlamaForCausalLM / MistralForCausalLM,
 *   GGUF architecture "llama"; Qwen2Model: Qwen2ForCausalLM, "qwen2"), and
 *   llama-quantize, which rewrites such a file with other tensor types.
 *
 * Names: model.embed_tokens.weight -> token_embd.weight, model.norm.weight
 * -> output_norm.weight, lm_head.weight -> output.weight (absent when tied),
 * model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj,
 * post_attention_layernorm, mlp.{gate,up,down}_proj}.weight ->
 * blk.N.{attn_norm, attn_{q,k,v,output}, ffn_norm, ffn_{gate,up,down}}.weight,
 * and Qwen2's self_attn.{q,k,v}_proj.bias -> blk.N.attn_{q,k,v}.bias.
 *
 * RoPE: HF keeps q_proj/k_proj rows in rotate-half order.  GGUF "llama"
 * wants adjacent pairs, so rows [n_head, 2, head_dim/2] are reordered to
 * [n_head, head_dim/2, 2] (n_head_kv for k_proj).  Moving whole rows commutes
 * with any row-wise ggml quantization, so the caller quantizes in HF order
 * and the exporter moves the packed rows.  GGUF "qwen2" keeps HF's order
 * (llama.cpp runs it with NEOX RoPE, which is rotate-half).
 *
 * Hyper-parameters: "<arch>.*" as Model.set_gguf_parameters writes them;
 * only "llama" adds <arch>.vocab_size and <arch>.rope.dimension_count.
 * Llama 3 rope scaling (rope_type llama3) is no key but LlamaModel's
 * generated rope_freqs.weight, F32 [head_dim/2] (qp_gguf_llama_rope_factors);
 * a qwen2 export of it is refused (Qwen2Model writes none).
 * Vocabulary by the tokenizer's kind (model/gguf_llama_vocab.h):
 * SentencePiece -> tokenizer.ggml.model "llama" with scores; byte-level BPE
 * (tokenizer.json) -> "gpt2" with pre and merges.
 *
 * Layouts:
 *   QP_GGUF_LAYOUT_CONVERT  = convert_hf_to_gguf's file: keys in its order
 *     (general.file_type among the hyper-parameters), tensors in the order of
 *     its safetensors iteration (part by part, names sorted within a part).
 *   QP_GGUF_LAYOUT_QUANTIZE = llama-quantize's rewrite of that file: the same
 *     keys with general.quantization_version and general.file_type moved to
 *     the end, tensors sorted by (layer, name), non-layer tensors first.
 * With the same tensor bytes, both are byte-identical to llama.cpp's files
 * (tests/model/test_gguf_export.c: house-llama's F32.gguf, Q8_0.gguf and the
 * mixes; tests/model/test_gguf_export_qwen.c: house-qwen's). */
#ifndef QP_MODEL_GGUF_LLAMA_H
#define QP_MODEL_GGUF_LLAMA_H

#include <stddef.h>
#include <stdint.h>

#include "model/config.h"
#include "model/gguf_writer.h"
#include "model/tokenizer.h"

typedef enum { QP_GGUF_LAYOUT_CONVERT = 0, QP_GGUF_LAYOUT_QUANTIZE = 1 } qp_gguf_llama_layout;

/* ---- names and tensors ---- */

/* GGUF general.architecture of a config ("llama" for llama and mistral,
 * "qwen2"); NULL for one that cannot be exported. */
const char *qp_gguf_llama_arch(const qp_llama_config *cfg);

/* GGUF name of an HF LLaMA tensor name.  QP_ENOTFOUND (message
 * "tensor 'NAME': no GGUF name for this LLaMA tensor") when there is none. */
int qp_gguf_llama_name(char *out, size_t cap, const char *hf_name);

typedef struct {
    char hf_name[96];
    char gguf_name[64];
    int n_dims;            /* 1 (norms) or 2 */
    uint64_t ne[2];        /* ggml order: ne[0] = columns (in), ne[1] = rows (out) */
    int rope_heads;        /* 0, or the heads whose rows are permuted (llama q: H, k: KV) */
    int part;              /* safetensors part it came from (CONVERT order) */
    int generated;         /* 1: rope_freqs.weight, which has no HF tensor (hf_name ""): the exporter
                              computes it and stores it F32; the source is never asked about it */
} qp_gguf_llama_tensor;

/* The model's tensors in the layout's file order (*out malloc'ed); q/k/v
 * biases (1-D) when cfg->qkv_bias; for a "llama" config with Llama 3 rope
 * scaling, LlamaModel.generate_extra_tensors' rope_freqs.weight [head_dim/2]
 * (generated = 1), first in CONVERT order (convert chains the generated
 * tensors before the checkpoint's) and sorted by name among the non-layer
 * tensors in QUANTIZE order.  part_of (may be NULL: everything in
 * part 0) gives the index of the safetensors shard holding an HF tensor, in
 * sorted shard-file order.  Errors: QP_EUSAGE "config: architecture 'X'
 * cannot be exported to GGUF (only llama / mistral / qwen2)", q/k/v biases
 * in a llama / mistral config, invalid hyper-parameters. */
int qp_gguf_llama_tensors(qp_gguf_llama_tensor **out, size_t *n, const qp_llama_config *cfg,
                          qp_gguf_llama_layout layout, int (*part_of)(void *ud, const char *hf_name),
                          void *part_ud);

/* HF <-> GGUF row order of a q/k projection of n_head heads whose rows are
 * row_bytes each (any ggml type: f32 values or packed blocks); n_rows =
 * n_head × head_dim, head_dim even.  to_gguf = 1 applies convert's
 * permutation, 0 undoes it.  dst and src must not overlap.
 * QP_EUSAGE when n_rows is not a multiple of 2·n_head. */
int qp_gguf_llama_permute_rows(void *dst, const void *src, int64_t n_rows, size_t row_bytes, int n_head,
                               int to_gguf);

/* convert_hf_to_gguf's rope_freqs.weight for Llama 3 rope scaling:
 * out[i], i < head_dim/2, is the divisor llama.cpp applies to frequency i
 * (1, factor, or 1/((1-smooth)/factor + smooth) in the medium band), computed
 * in convert's mixed float32 / Python-float arithmetic (gguf_llama_rope.c
 * says which operation rounds where).  theta is rope_theta, s the config's
 * llama3 scaling (factor, low/high_freq_factor); old_ctx is what convert takes
 * as the original context: config.json's TOP-LEVEL
 * original_max_position_embeddings, 8192 when absent (convert does not read
 * the one inside rope_scaling).  QP_EUSAGE for an odd or non-positive head_dim,
 * a scaling that is not llama3, or low and high wavelengths that are equal. */
int qp_gguf_llama_rope_factors(float *out, int head_dim, float theta, const qp_rope_scaling *s, double old_ctx);

/* ---- options (tokenizer specials, names) ---- */

typedef enum {
    QP_SPECIAL_BOS, QP_SPECIAL_EOS, QP_SPECIAL_UNK, QP_SPECIAL_SEP, QP_SPECIAL_PAD, QP_SPECIAL_CLS,
    QP_SPECIAL_MASK, QP_SPECIAL_COUNT
} qp_special_token;

typedef struct {
    int id;
    char *content;
    int special;           /* tokenizer_config "special": true */
} qp_gguf_added_token;

typedef struct {
    qp_gguf_llama_layout layout;
    uint32_t file_type;            /* general.file_type (llama_ftype) */
    char *name;                    /* general.name; NULL: omitted */
    char *size_label;              /* NULL: gguf-py's label of the parameter count ("5.2M") */
    /* special token ids in the order gguf-py's SpecialVocab writes them */
    int n_special;
    struct { qp_special_token typ; int id; } special[QP_SPECIAL_COUNT];
    int add_bos, add_eos;          /* tokenizer.ggml.add_{bos,eos}_token; -1: omitted */
    char *chat_template;           /* tokenizer.chat_template; NULL: omitted */
    int head_dim_keys;             /* write llama.attention.{key,value}_length (config.json had head_dim) */
    double rope_orig_ctx;          /* config.json's top-level original_max_position_embeddings; 8192
                                      when absent (what convert's rope_freqs uses) */
    int add_space_prefix;          /* tokenizer_config.json's add_prefix_space as Python truth (null: 0);
                                      -1: absent.  LlamaModel writes it ("llama" only) */
    /* added_tokens.json and tokenizer_config.json's added_tokens_decoder */
    qp_gguf_added_token *added_json;
    size_t n_added_json;
    qp_gguf_added_token *added_decoder;
    size_t n_added_decoder;
} qp_gguf_llama_opts;

/* CONVERT layout, file_type 0, no name, specials bos/eos from cfg,
 * add_bos 1 / add_eos 0 (LlamaTokenizer's defaults), rope_orig_ctx 8192,
 * no add_space_prefix, nothing else. */
void qp_gguf_llama_opts_init(qp_gguf_llama_opts *o, const qp_llama_config *cfg);
/* What convert_hf_to_gguf reads beside the weights of the HF directory dir:
 * general.name from the directory name (gguf-py's id_to_title:
 * "house-llama" -> "House Llama"), config.json's "head_dim",
 * original_max_position_embeddings (top level) and <typ>_token_id,
 * tokenizer_config.json's add_prefix_space, add_bos_token / add_eos_token /
 * chat_template / <typ>_token (matched against tokenizer.json's
 * added_tokens) / added_tokens_decoder, and added_tokens.json.  Missing
 * files are skipped; malformed JSON is QP_EFORMAT "PATH: ...". */
int qp_gguf_llama_opts_from_hf_dir(qp_gguf_llama_opts *o, const qp_llama_config *cfg, const char *dir);
void qp_gguf_llama_opts_free(qp_gguf_llama_opts *o);
/* Records a special token id unless typ already has one (SpecialVocab's
 * _set_special_token); ids outside [0, n_vocab) are ignored. */
void qp_gguf_llama_opts_set_special(qp_gguf_llama_opts *o, qp_special_token typ, int id, int n_vocab);

/* gguf-py's Metadata.id_to_title: '-' -> ' ', all-lower-case words
 * title-cased except versions ("v1.2") and words starting with a digit. */
void qp_gguf_llama_title(char *out, size_t cap, const char *id);
/* gguf-py's size_label for a dense model: "5.2M", "7.2B", "125K". */
void qp_gguf_llama_size_label(char *out, size_t cap, uint64_t n_params);

/* ---- export ---- */

typedef struct {
    void *ud;
    /* The ggml type GGUF tensor t is stored in.  Called once per tensor, in
     * file order, before any data.  NULL: every tensor F32. */
    int (*tensor_type)(void *ud, const qp_gguf_llama_tensor *t, uint32_t *type);
    /* HF tensor t->hf_name (rows in HF order) as nbytes bytes of `type`
     * (rows × row size).  Called once per tensor during finish(). */
    int (*tensor_data)(void *ud, const qp_gguf_llama_tensor *t, uint32_t type, void *dst, size_t nbytes);
    /* Optional, see qp_gguf_llama_tensors. */
    int (*part_of)(void *ud, const char *hf_name);
    /* Optional, preferred to tensor_data: the same bytes, either pointed
     * to by *data (the source's memory, valid until its next call) or
     * written in full into scratch[nbytes] with *data = scratch; the
     * exporter then writes them without another copy. */
    int (*tensor_view)(void *ud, const qp_gguf_llama_tensor *t, uint32_t type, void *scratch, size_t nbytes,
                       const void **data);
} qp_gguf_llama_source;

/* Starts a GGUF at path with every llama.cpp key and tensor; the caller may
 * add its own keys (qpipe.*) with qp_gguf_writer_add_* — they go after
 * llama.cpp's — and then calls qp_gguf_writer_finish (tensor data is
 * produced then) or qp_gguf_writer_abort.  The source and opts must outlive
 * the writer; tok need not (its vocabulary is copied).  tok is the model's
 * tokenizer as convert_hf_to_gguf would take it: tokenizer.model when the
 * directory has one (qp_tokenizer_load_spm), else tokenizer.json
 * (qp_tokenizer_load_hf); tok_name names its file in errors.  The special
 * ids, add_bos/add_eos and chat template come from opts (SpecialVocab),
 * the chat template from tok when opts has none; "llama" then adds
 * LlamaModel.set_vocab's tokenizer.ggml.add_space_prefix (opts) and, for a
 * vocabulary of 49152, add_bos_token false (QP_EUSAGE when opts already has
 * add_bos: convert fails on the duplicated key).  Errors are one line
 * naming the file / tensor. */
int qp_gguf_llama_export_tok_new(qp_gguf_writer **out, const char *path, const qp_llama_config *cfg,
                                 const qp_tokenizer *tok, const char *tok_name, const qp_gguf_llama_source *src,
                                 const qp_gguf_llama_opts *opts);
/* The same with the SentencePiece tokenizer.model at tokenizer_model. */
int qp_gguf_llama_export_new(qp_gguf_writer **out, const char *path, const qp_llama_config *cfg,
                             const char *tokenizer_model, const qp_gguf_llama_source *src,
                             const qp_gguf_llama_opts *opts);

#endif
