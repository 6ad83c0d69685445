/* GGUF tokenizer.ggml.pre names and their pre-tokenizer regexes.
 *
 * The lists are llama.cpp's (src/llama-vocab.cpp, llm_tokenizer_bpe, at the
 * commit of the test vectors, c392e50): the regexes run one after another,
 * each cutting the pieces the one before left (tokenizer_pipe.h), written
 * as llama.cpp writes them (its "adapted" spellings without (?i:...)).
 * A tokenizer.json is recognised by its Split regexes as Hugging Face
 * writes them (the originals llama.cpp adapted). */
#include "model/tokenizer_pipe.h"

#include "common/alloc.h"
#include "common/error.h"

#include <stdio.h>
#include <string.h>

#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_LLAMA3 "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" \
                  "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2 "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" \
                 "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_CJK "[\xE4\xB8\x80-\xE9\xBE\xA5\xE0\xA0\x80-\xE4\xB8\x80\xEA\xB0\x80-\xED\x9F\xBF]+"

/* tokenizer.json's originals */
#define HF_LLAMA3 "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+" \
                  "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define HF_QWEN2 "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+" \
                 "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static const char *const re_default[] = {
    "[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]", NULL,
};
static const char *const re_llama3[] = { RE_LLAMA3, NULL };
static const char *const re_deepseek_llm[] = {
    "[\r\n]",
    "\\s?[A-Za-z\xC2\xB5\xC3\x80-\xC3\x96\xC3\x98-\xC3\xB6\xC3\xB8-\xC6\xBA\xC6\xBC-\xC6\xBF\xC7\x84-"
    "\xCA\x93\xCA\x95-\xCA\xAF\xCD\xB0-\xCD\xB3\xCD\xB6\xCD\xB7\xCD\xBB-\xCD\xBD\xCD\xBF\xCE\x86\xCE"
    "\x88-\xCE\x8A\xCE\x8C\xCE\x8E-\xCE\xA1\xCE\xA3-\xCF\xB5\xCF\xB7-\xD2\x81\xD2\x8A-\xD4\xAF\xD4"
    "\xB1-\xD5\x96\xE1\x82\xA0-\xE1\x83\x85\xE1\x8E\xA0-\xE1\x8F\xB5\xE1\x8F\xB8-\xE1\x8F\xBD\xE1\xB2"
    "\x90-\xE1\xB2\xBA\xE1\xB2\xBD-\xE1\xB2\xBF\xE1\xB4\x80-\xE1\xB4\xAB\xE1\xB5\xAB-\xE1\xB5\xB7\xE1"
    "\xB5\xB9-\xE1\xB6\x9A\xE1\xB8\x80-\xE1\xBC\x95\xE1\xBC\x98-\xE1\xBC\x9D\xE1\xBC\xA0-\xE1\xBD\x85"
    "\xE1\xBD\x88-\xE1\xBD\x8D\xE1\xBD\x90-\xE1\xBD\x97\xE1\xBD\x99\xE1\xBD\x9B\xE1\xBD\x9D\xE1\xBD"
    "\x9F-\xE1\xBD\xBD\xE1\xBE\x80-\xE1\xBE\xB4\xE1\xBE\xB6-\xE1\xBE\xBC\xE1\xBE\xBE\xE1\xBF\x82-\xE1"
    "\xBF\x84\xE1\xBF\x86-\xE1\xBF\x8C\xE1\xBF\x90-\xE1\xBF\x93\xE1\xBF\x96-\xE1\xBF\x9B\xE1\xBF\xA0-"
    "\xE1\xBF\xAC\xE1\xBF\xB2-\xE1\xBF\xB4\xE1\xBF\xB6-\xE1\xBF\xBC\xE2\x84\x82\xE2\x84\x87\xE2\x84"
    "\x8A-\xE2\x84\x93\xE2\x84\x95\xE2\x84\x99-\xE2\x84\x9D\xE2\x84\xA4\xE2\x84\xA6\xE2\x84\xA8\xE2"
    "\x84\xAA-\xE2\x84\xAD\xE2\x84\xAF-\xE2\x84\xB4\xE2\x84\xB9\xE2\x84\xBC-\xE2\x84\xBF\xE2\x85\x85-"
    "\xE2\x85\x89\xE2\x85\x8E\xE2\x86\x83\xE2\x86\x84\xE2\xB0\x80-\xE2\xB1\xBB\xE2\xB1\xBE-\xE2\xB3"
    "\xA4\xE2\xB3\xAB-\xE2\xB3\xAE\xE2\xB3\xB2\xE2\xB3\xB3\xEA\x99\x80-\xEA\x99\xAD\xEA\x9A\x80-\xEA"
    "\x9A\x9B\xEA\x9C\xA2-\xEA\x9D\xAF\xEA\x9D\xB1-\xEA\x9E\x87\xEA\x9E\x8B-\xEA\x9E\x8E\xEA\xAD\xB0-"
    "\xEA\xAE\xBF\xEF\xAC\x80-\xEF\xAC\x86\xEF\xAC\x93-\xEF\xAC\x97\xEF\xBC\xA1-\xEF\xBC\xBA\xEF\xBD"
    "\x81-\xEF\xBD\x9A\\U00010400-\\U0001044f\xF0\x90\x92\xB0-\xF0\x90\x93\x93\xF0\x90\x93\x98-\xF0"
    "\x90\x93\xBB\xF0\x90\xB2\x80-\xF0\x90\xB2\xB2\xF0\x90\xB3\x80-\xF0\x90\xB3\xB2\xF0\x91\xA2\xA0-"
    "\xF0\x91\xA3\x9F\xF0\x9E\xA4\x80-\xF0\x9E\xA5\x83]+",
    "\\s?[!-/:-~\xEF\xBC\x81-\xEF\xBC\x8F\xEF\xBC\x9A-\xEF\xBD\x9E\xE2\x80\x98-\xE2\x80\x9F\xE3\x80\x80-"
    "\xE3\x80\x82]+",
    "\\s+$",
    RE_CJK,
    "\\p{N}+",
    NULL,
};
static const char *const re_deepseek3[] = {
    "\\p{N}{1,3}",
    "[\xE4\xB8\x80-\xE9\xBE\xA5\xE3\x81\x80-\xE3\x82\x9F\xE3\x82\xA0-\xE3\x83\xBF]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
    " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
    NULL,
};
static const char *const re_deepseek_coder[] = {
    "[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RE_CJK, "\\p{N}", NULL,
};
static const char *const re_falcon[] = {
    "[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]", NULL,
};
static const char *const re_starcoder[] = { "\\p{N}", RE_GPT2, NULL };
static const char *const re_gpt2[] = { RE_GPT2, NULL };
static const char *const re_qwen2[] = { RE_QWEN2, NULL };
static const char *const re_poro[] = { " ?[^(\\s|.,!?\xE2\x80\xA6\xE3\x80\x82\xEF\xBC\x8C\xE3\x80\x81"
                                       "\xE0\xA5\xA4\xDB\x94\xD8\x8C)]+", NULL };
static const char *const re_chatglm4[] = { RE_LLAMA3, NULL };
static const char *const re_viking[] = { " ?[^(\\s|.,!?\xE2\x80\xA6\xE3\x80\x82\xEF\xBC\x8C\xE3\x80\x81"
                                         "\xE0\xA5\xA4\xDB\x94\xD8\x8C)]+", "\\p{N}", NULL };
static const char *const re_tekken[] = {
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])"
    "([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    NULL,
};
static const char *const re_chameleon[] = {
    "<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )", "\\p{N}",
    "[\\p{P}!-/:-@\\[-`{-~]", RE_GPT2, NULL,
};
static const char *const re_gpt4o[] = {
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|"
    "'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*(?:'[sS]|"
    "'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    NULL,
};

/* llama.cpp's per-type settings beyond the regexes */
#define IGNORE_MERGES 1   /* a word that is a piece is not merged */
#define ADD_BOS 2         /* add_bos defaults to true */
#define NO_BOS 4          /* no default BOS id */

static const struct {
    const char *name;
    const char *const *re;
    int flags;
} pres[] = {
    {"default", re_default, 0},
    {"llama3", re_llama3, IGNORE_MERGES | ADD_BOS}, {"llama-v3", re_llama3, IGNORE_MERGES | ADD_BOS},
    {"llama-bpe", re_llama3, IGNORE_MERGES | ADD_BOS}, {"falcon3", re_llama3, IGNORE_MERGES | ADD_BOS},
    {"dbrx", re_llama3, 0}, {"smaug-bpe", re_llama3, 0},
    {"deepseek-llm", re_deepseek_llm, 0},
    {"deepseek-v3", re_deepseek3, 0},
    {"deepseek-coder", re_deepseek_coder, 0},
    {"falcon", re_falcon, 0},
    {"starcoder", re_starcoder, 0}, {"refact", re_starcoder, 0}, {"command-r", re_starcoder, 0},
    {"smollm", re_starcoder, 0}, {"codeshell", re_starcoder, 0}, {"exaone", re_starcoder, 0},
    {"minerva-7b", re_starcoder, 0},
    {"gpt-2", re_gpt2, 0}, {"phi-2", re_gpt2, 0}, {"jina-es", re_gpt2, 0}, {"jina-de", re_gpt2, 0},
    {"gigachat", re_gpt2, 0}, {"jina-v1-en", re_gpt2, 0}, {"jina-v2-es", re_gpt2, 0}, {"jina-v2-de", re_gpt2, 0},
    {"jina-v2-code", re_gpt2, 0}, {"roberta-bpe", re_gpt2, 0}, {"mpt", re_gpt2, 0}, {"olmo", re_gpt2, 0},
    {"jais", re_gpt2, 0},
    {"stablelm2", re_qwen2, 0}, {"qwen2", re_qwen2, 0}, {"deepseek-r1-qwen", re_qwen2, 0}, {"megrez", re_qwen2, 0},
    {"poro-chat", re_poro, 0}, {"bloom", re_poro, 0}, {"gpt3-finnish", re_poro, 0},
    {"chatglm-bpe", re_chatglm4, NO_BOS},
    {"viking", re_viking, 0},
    {"tekken", re_tekken, IGNORE_MERGES | ADD_BOS},
    {"chameleon", re_chameleon, ADD_BOS},
    {"gpt-4o", re_gpt4o, 0},
};

int qp_tok_bpe_llama_pre(qp_tok_bpe *b, const char *pre, const char *path, int *add_bos)
{
    const char *name = pre && *pre ? pre : "default";
    size_t k = 0, n_pres = sizeof(pres) / sizeof(pres[0]);
    while (k < n_pres && strcmp(pres[k].name, name) != 0)
        k++;
    if (k == n_pres)
        return qp_error_set(QP_EFORMAT, "%s: key 'tokenizer.ggml.pre': pre-tokenizer type '%.80s' is unknown "
                            "(llama.cpp's types: llama-bpe, qwen2, gpt-2, deepseek-llm, ...)", path, name);
    size_t n = 0;
    while (pres[k].re[n])
        n++;
    b->pres = qp_xcalloc(n + 1, sizeof(*b->pres));
    for (size_t i = 0; i < n; i++) {
        char where[64];
        snprintf(where, sizeof(where), "pre-tokenizer '%s' regex %zu", name, i);
        qp_pretok *p = &b->pres[b->n_pres++];
        p->kind = QP_PRE_SPLIT;
        p->behavior = QP_SPLIT_ISOLATED;
        int rc = qp_regex_compile(&p->pat.re, pres[k].re[i], strlen(pres[k].re[i]), QP_RE_LLAMA, path, where);
        if (rc)
            return rc;
    }
    b->pres[b->n_pres++].kind = QP_PRE_BYTELEVEL;   /* no prefix space, no regex */
    b->decs = qp_xcalloc(1, sizeof(*b->decs));
    b->decs[0].kind = QP_DEC_BYTELEVEL;
    b->n_decs = 1;
    b->has_decoder = 1;
    b->ignore_merges = (pres[k].flags & IGNORE_MERGES) != 0;
    b->llama_unknown = 1;
    b->pre_name = pres[k].name;
    *add_bos = (pres[k].flags & ADD_BOS) ? 1 : (pres[k].flags & NO_BOS) ? -1 : 0;
    return 0;
}

const char *const *qp_tok_pre_regexes(const char *pre, size_t *n_out)
{
    for (size_t i = 0; i < sizeof(pres) / sizeof(pres[0]); i++)
        if (strcmp(pres[i].name, pre) == 0) {
            size_t n = 0;
            while (pres[i].re[n])
                n++;
            *n_out = n;
            return pres[i].re;
        }
    *n_out = 0;
    return NULL;
}

const char *qp_tok_pre_from_regexes(const char *const *regexes, size_t n, int bytelevel_regex)
{
    if (n == 0)
        return bytelevel_regex ? "gpt-2" : NULL;
    if (n != 1 || bytelevel_regex)
        return NULL;
    if (strcmp(regexes[0], HF_QWEN2) == 0)
        return "qwen2";
    if (strcmp(regexes[0], HF_LLAMA3) == 0)
        return "llama-bpe";
    return NULL;
}
