/* Private to model/gguf_llama*.c: the tokenizer.* keys of an exported GGUF,
 * chosen by the kind of the tokenizer (convert_hf_to_gguf c392e50):
 *   SentencePiece (tokenizer.model)  -> _set_vocab_sentencepiece:
 *     model "llama", pre "default", tokens, scores, token_type;
 *   byte-level BPE (tokenizer.json)  -> _set_vocab_gpt2:
 *     model "gpt2", pre, tokens, token_type, merges;
 * then gguf-py's SpecialVocab.add_to_gguf over the options: special ids,
 * add_bos/add_eos, chat_template. */
#ifndef QP_MODEL_GGUF_LLAMA_VOCAB_H
#define QP_MODEL_GGUF_LLAMA_VOCAB_H

#include "model/gguf_llama.h"
#include "model/gguf_writer.h"
#include "model/tokenizer.h"

/* Adds the keys to w for a model of n_vocab ids (config.json's vocab_size).
 * tok_name names the tokenizer file in errors: more pieces than n_vocab
 * (QP_EFORMAT "NAME: N pieces, more than the config's vocab_size V"), an
 * added token outside the vocabulary, a BPE pre-tokenizer llama.cpp has no
 * name for. */
int qp_gguf_llama_add_vocab(qp_gguf_writer *w, const qp_tokenizer *tok, const char *tok_name, int n_vocab,
                            const qp_gguf_llama_opts *o);

#endif
