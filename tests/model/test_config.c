/* config.json and GGUF hyper-parameters: the house model both ways, the
 * three architectures, and every refusal with its exact one-line message. */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "common/fsutil.h"
#include "model/config.h"
#include "model/llama.h"
#include "model/gguf_writer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void expect_house(const qp_llama_config *c)
{
    assert_int_equal(c->arch, QP_ARCH_LLAMA);
    assert_int_equal(c->vocab, 1024);
    assert_int_equal(c->hidden, 256);
    assert_int_equal(c->n_layers, 6);
    assert_int_equal(c->n_heads, 8);
    assert_int_equal(c->n_kv_heads, 4);
    assert_int_equal(c->head_dim, 32);
    assert_int_equal(c->intermediate, 768);
    assert_true(c->rms_eps == 1e-5f);
    assert_true(c->rope_theta == 10000.0f);
    assert_int_equal(c->max_pos, 256);
    assert_int_equal(c->tied_embeddings, 0);
    assert_int_equal(c->qkv_bias, 0);
    assert_int_equal(c->bos_id, 1);
    assert_int_equal(c->eos_id, 2);
    assert_int_equal(c->n_eos, 1);
    assert_int_equal(c->eos_ids[0], 2);
}

static void test_house_config_json(void **state)
{
    (void)state;
    char *p = qp_test_shared_path("models/house-llama/config.json");
    qp_llama_config c;
    assert_int_equal(qp_llama_config_load(&c, p), 0);
    expect_house(&c);
    assert_string_equal(qp_arch_name(c.arch), "llama");
    free(p);
    assert_int_equal(qp_llama_config_load(&c, "/nonexistent/config.json"), QP_ENOTFOUND);
    assert_string_equal(qp_error_last(), "/nonexistent/config.json: cannot open: No such file or directory");
}

static void test_house_gguf(void **state)
{
    (void)state;
    static const char *files[] = { "F32.gguf", "Q4_K.gguf", "mix-Q2_K.gguf", "Q8_0.gguf" };
    for (int i = 0; i < 4; i++) {
        char rel[96];
        snprintf(rel, sizeof(rel), "vectors/house-llama/%s", files[i]);
        char *p = qp_test_shared_path(rel);
        qp_gguf *g = NULL;
        qp_llama_config c;
        assert_int_equal(qp_gguf_open(&g, p), 0);
        assert_int_equal(qp_llama_config_from_gguf(&c, g), 0);
        expect_house(&c);
        qp_gguf_free(g);
        free(p);
    }
}

/* A vocabulary-only GGUF with llama keys: LLaMA-7B's hyper-parameters. */
static void test_vocab_gguf(void **state)
{
    (void)state;
    char *p = qp_test_shared_path("vectors/tokenizers/ggml-vocab-llama-spm.gguf");
    qp_gguf *g = NULL;
    qp_llama_config c;
    assert_int_equal(qp_gguf_open(&g, p), 0);
    assert_int_equal(qp_llama_config_from_gguf(&c, g), 0);
    assert_int_equal(c.vocab, 32000);
    assert_int_equal(c.hidden, 4096);
    assert_int_equal(c.n_layers, 32);
    assert_int_equal(c.n_heads, 32);
    assert_int_equal(c.n_kv_heads, 32);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.intermediate, 11008);
    assert_int_equal(c.max_pos, 4096);
    assert_true(c.rope_theta == 10000.0f);   /* no freq_base key: default */
    qp_gguf_free(g);
    free(p);

    p = qp_test_shared_path("vectors/tokenizers/ggml-vocab-falcon.gguf");
    assert_int_equal(qp_gguf_open(&g, p), 0);
    assert_int_equal(qp_llama_config_from_gguf(&c, g), QP_EFORMAT);
    char *want = qp_strfmt("%s: key 'general.architecture': architecture 'falcon' is not supported (llama, qwen2)", p);
    assert_string_equal(qp_error_last(), want);
    free(want);
    qp_gguf_free(g);
    free(p);
}

#define BASE "\"vocab_size\": 1000, \"hidden_size\": 512, \"num_hidden_layers\": 2, " \
             "\"num_attention_heads\": 8, \"intermediate_size\": 1024"

static void parse_ok(const char *json, qp_llama_config *c)
{
    int rc = qp_llama_config_parse(c, json, strlen(json), "config.json");
    if (rc != 0)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, 0);
}

static void parse_err(const char *json, const char *want)
{
    qp_llama_config c;
    memset(&c, 0x5a, sizeof(c));
    qp_llama_config before = c;
    assert_int_equal(qp_llama_config_parse(&c, json, strlen(json), "config.json"), QP_EFORMAT);
    assert_string_equal(qp_error_last(), want);
    assert_memory_equal(&c, &before, sizeof(c));   /* nothing half-filled */
}

static void test_architectures(void **state)
{
    (void)state;
    qp_llama_config c;
    parse_ok("{\"architectures\": [\"MistralForCausalLM\"], " BASE ", \"num_key_value_heads\": 2, "
             "\"sliding_window\": null, \"rope_theta\": 1000000.0, \"rms_norm_eps\": 1e-05, "
             "\"max_position_embeddings\": 32768, \"tie_word_embeddings\": false}", &c);
    assert_int_equal(c.arch, QP_ARCH_MISTRAL);
    assert_int_equal(c.n_kv_heads, 2);
    assert_int_equal(c.head_dim, 64);
    assert_true(c.rope_theta == 1e6f);
    assert_int_equal(c.qkv_bias, 0);
    assert_int_equal(c.bos_id, 1);   /* MistralConfig defaults */
    assert_int_equal(c.eos_id, 2);

    /* Qwen2: q/k/v biases, tied embeddings, window present but not in use */
    parse_ok("{\"architectures\": [\"Qwen2ForCausalLM\"], " BASE ", \"num_key_value_heads\": 2, "
             "\"tie_word_embeddings\": true, \"use_sliding_window\": false, \"sliding_window\": 4096, "
             "\"max_position_embeddings\": 32768, \"bos_token_id\": 151643, \"eos_token_id\": 151645, "
             "\"hidden_act\": \"silu\", \"rope_scaling\": null}", &c);
    assert_int_equal(c.arch, QP_ARCH_QWEN2);
    assert_int_equal(c.qkv_bias, 1);
    assert_int_equal(c.tied_embeddings, 1);
    assert_int_equal(c.bos_id, 151643);
    assert_int_equal(c.eos_id, 151645);
    assert_true(c.rms_eps == 1e-6f);   /* class default */

    /* Llama 3 style: eos list, explicit head_dim, defaults for the rest */
    parse_ok("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"head_dim\": 32, "
             "\"eos_token_id\": [128001, 128008, 128009], \"bos_token_id\": 128000}", &c);
    assert_int_equal(c.head_dim, 32);
    assert_int_equal(c.n_kv_heads, 8);
    assert_int_equal(c.max_pos, 2048);
    assert_int_equal(c.n_eos, 3);
    assert_int_equal(c.eos_id, 128001);
    assert_int_equal(c.eos_ids[2], 128009);

    /* model_type when architectures is absent; null ids */
    parse_ok("{\"model_type\": \"qwen2\", " BASE ", \"bos_token_id\": null, \"eos_token_id\": null}", &c);
    assert_int_equal(c.arch, QP_ARCH_QWEN2);
    assert_int_equal(c.bos_id, -1);
    assert_int_equal(c.eos_id, -1);
    assert_int_equal(c.n_eos, 0);
    /* a window as long as the context never bites */
    parse_ok("{\"architectures\": [\"MistralForCausalLM\"], " BASE ", \"sliding_window\": 4096, "
             "\"max_position_embeddings\": 4096}", &c);
    assert_int_equal(c.max_pos, 4096);
}

#define LLAMA3_SCALING(extra) "\"rope_scaling\": {\"factor\": 8.0, \"low_freq_factor\": 1.0, " \
    "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192" extra "}"

/* Parses json, which must give llama3 scaling with this factor. */
static void parse_llama3(const char *json, double factor, qp_llama_config *c)
{
    parse_ok(json, c);
    assert_int_equal(c->rope_scaling.kind, QP_ROPE_LLAMA3);
    assert_true(c->rope_scaling.factor == factor);
}

/* Llama 3.1 / 3.2 configs as Meta ships them (layer sizes shrunk). */
static void test_llama3(void **state)
{
    (void)state;
    qp_llama_config c;
    parse_llama3("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"num_key_value_heads\": 2, "
                 "\"rope_theta\": 500000.0, \"max_position_embeddings\": 131072, \"bos_token_id\": 128000, "
                 "\"eos_token_id\": [128001, 128008, 128009], \"tie_word_embeddings\": false, "
                 LLAMA3_SCALING(", \"rope_type\": \"llama3\"") "}", 8.0, &c);
    assert_true(c.rope_scaling.low_freq_factor == 1.0);
    assert_true(c.rope_scaling.high_freq_factor == 4.0);
    assert_int_equal(c.rope_scaling.original_max_pos, 8192);
    assert_true(c.rope_theta == 500000.0f);
    assert_int_equal(c.tied_embeddings, 0);
    assert_int_equal(c.n_eos, 3);

    /* Llama 3.2 1B: factor 32, tied embeddings, head_dim stated */
    parse_llama3("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"head_dim\": 64, "
                 "\"rope_theta\": 500000.0, \"tie_word_embeddings\": true, \"rope_scaling\": {\"factor\": 32.0, "
                 "\"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0, \"original_max_position_embeddings\": 8192, "
                 "\"rope_type\": \"llama3\"}}", 32.0, &c);
    assert_int_equal(c.tied_embeddings, 1);
    assert_int_equal(c.head_dim, 64);

    /* the legacy spelling "type", integers for the factors */
    parse_llama3("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_scaling\": {\"type\": \"llama3\", "
                 "\"factor\": 8, \"low_freq_factor\": 1, \"high_freq_factor\": 4, "
                 "\"original_max_position_embeddings\": 8192}}", 8.0, &c);

    /* transformers' newer rope_parameters: the same object, rope_theta inside */
    parse_llama3("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", "
                 "\"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 500000.0, \"factor\": 32.0, "
                 "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
                 "\"original_max_position_embeddings\": 8192}}", 32.0, &c);
    assert_true(c.rope_theta == 500000.0f);
    parse_ok("{\"architectures\": [\"Qwen2ForCausalLM\"], " BASE ", \"rope_theta\": 10000.0, "
             "\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 1000000.0}}", &c);
    assert_int_equal(c.rope_scaling.kind, QP_ROPE_PLAIN);
    assert_true(c.rope_theta == 1e6f);

    /* null and "default" are plain RoPE */
    parse_ok("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_scaling\": null}", &c);
    assert_int_equal(c.rope_scaling.kind, QP_ROPE_PLAIN);
    parse_ok("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_scaling\": {\"rope_type\": \"default\"}}",
             &c);
    assert_int_equal(c.rope_scaling.kind, QP_ROPE_PLAIN);
    /* the house models: none */
    char *p = qp_test_shared_path("models/house-qwen/config.json");
    assert_int_equal(qp_llama_config_load(&c, p), 0);
    assert_int_equal(c.rope_scaling.kind, QP_ROPE_PLAIN);
    assert_int_equal(c.arch, QP_ARCH_QWEN2);
    assert_int_equal(c.tied_embeddings, 1);
    assert_int_equal(c.qkv_bias, 1);
    assert_int_equal(c.head_dim, 32);
    assert_int_equal(c.n_kv_heads, 2);
    assert_true(c.rope_theta == 1e6f);
    assert_int_equal(c.bos_id, 2045);
    free(p);
}

/* Mistral 7B v0.1 (window == context), v0.3 (window null) and Nemo (head_dim
 * 128 although hidden / heads = 160). */
static void test_mistral(void **state)
{
    (void)state;
    qp_llama_config c;
    parse_ok("{\"architectures\": [\"MistralForCausalLM\"], \"vocab_size\": 32000, \"hidden_size\": 4096, "
             "\"intermediate_size\": 14336, \"num_hidden_layers\": 32, \"num_attention_heads\": 32, "
             "\"num_key_value_heads\": 8, \"max_position_embeddings\": 32768, \"sliding_window\": 32768, "
             "\"rope_theta\": 10000.0, \"rms_norm_eps\": 1e-05, \"hidden_act\": \"silu\", "
             "\"tie_word_embeddings\": false, \"model_type\": \"mistral\"}", &c);
    assert_int_equal(c.arch, QP_ARCH_MISTRAL);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.n_kv_heads, 8);
    assert_int_equal(c.max_pos, 32768);
    assert_int_equal(c.rope_scaling.kind, QP_ROPE_PLAIN);
    parse_ok("{\"architectures\": [\"MistralForCausalLM\"], \"vocab_size\": 32768, \"hidden_size\": 4096, "
             "\"intermediate_size\": 14336, \"num_hidden_layers\": 32, \"num_attention_heads\": 32, "
             "\"num_key_value_heads\": 8, \"max_position_embeddings\": 32768, \"sliding_window\": null, "
             "\"rope_theta\": 1000000.0, \"head_dim\": 128}", &c);
    assert_int_equal(c.head_dim, 128);
    assert_true(c.rope_theta == 1e6f);
    parse_ok("{\"architectures\": [\"MistralForCausalLM\"], \"vocab_size\": 131072, \"hidden_size\": 5120, "
             "\"intermediate_size\": 14336, \"num_hidden_layers\": 40, \"num_attention_heads\": 32, "
             "\"num_key_value_heads\": 8, \"head_dim\": 128, \"max_position_embeddings\": 1024000, "
             "\"sliding_window\": null, \"rope_theta\": 1000000.0}", &c);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.hidden, 5120);
    assert_int_equal(c.max_pos, 1024000);
    /* a stated head_dim lifts the divisibility rule, a derived one keeps it */
    parse_ok("{\"architectures\": [\"MistralForCausalLM\"], \"vocab_size\": 1000, \"hidden_size\": 500, "
             "\"num_hidden_layers\": 2, \"num_attention_heads\": 8, \"intermediate_size\": 1024, \"head_dim\": 64}",
             &c);
    assert_int_equal(c.head_dim, 64);
}

/* rope_scaling / rope_parameters other than llama3 / none, unknown fields,
 * bad numbers: one line naming the field and its value */
static void test_rope_refusals(void **state)
{
    (void)state;
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_scaling\": {\"rope_type\": \"yarn\", "
              "\"factor\": 4.0, \"original_max_position_embeddings\": 32768}}",
              "config.json: rope_scaling.rope_type: 'yarn' is not supported (qpipe runs llama3 scaling or none)");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_scaling\": {\"type\": \"linear\", "
              "\"factor\": 2.0}}",
              "config.json: rope_scaling.type: 'linear' is not supported (qpipe runs llama3 scaling or none)");
    parse_err("{\"architectures\": [\"Qwen2ForCausalLM\"], " BASE ", \"rope_scaling\": {\"type\": \"dynamic\", "
              "\"factor\": 2.0}}",
              "config.json: rope_scaling.type: 'dynamic' is not supported (qpipe runs llama3 scaling or none)");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_scaling\": {\"rope_type\": \"longrope\", "
              "\"long_factor\": [1, 2], \"short_factor\": [1, 2]}}",
              "config.json: rope_scaling.rope_type: 'longrope' is not supported (qpipe runs llama3 scaling or none)");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_scaling\": {\"type\": \"su\"}}",
              "config.json: rope_scaling.type: 'su' is not supported (qpipe runs llama3 scaling or none)");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_scaling\": {\"factor\": 8.0}}",
              "config.json: rope_scaling: has no rope_type (qpipe runs llama3 scaling or none)");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_scaling\": {\"rope_type\": 3}}",
              "config.json: rope_scaling.rope_type: expected a string, got an integer");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_scaling\": \"llama3\"}",
              "config.json: rope_scaling: expected an object or null, got a string");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", "
              LLAMA3_SCALING(", \"rope_type\": \"llama3\", \"attention_factor\": 1.5") "}",
              "config.json: rope_scaling.attention_factor: 1.5 is not supported with rope_type 'llama3' (qpipe runs "
              "llama3 scaling or none)");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_scaling\": {\"rope_type\": \"default\", "
              "\"factor\": 2.0}}",
              "config.json: rope_scaling.factor: 2.0 is not supported with rope_type 'default' (qpipe runs llama3 "
              "scaling or none)");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", "
              LLAMA3_SCALING(", \"rope_type\": \"llama3\", \"type\": \"yarn\"") "}",
              "config.json: rope_scaling.type: \"yarn\" contradicts rope_type 'llama3'");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_scaling\": {\"rope_type\": \"llama3\", "
              "\"factor\": 8.0, \"low_freq_factor\": 1.0, \"original_max_position_embeddings\": 8192}}",
              "config.json: rope_scaling.high_freq_factor: missing (llama3 scaling needs factor, low_freq_factor, "
              "high_freq_factor and original_max_position_embeddings)");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_scaling\": {\"rope_type\": \"llama3\", "
              "\"factor\": \"8\", \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
              "\"original_max_position_embeddings\": 8192}}",
              "config.json: rope_scaling.factor: expected a number, got a string");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_scaling\": {\"rope_type\": \"llama3\", "
              "\"factor\": 0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
              "\"original_max_position_embeddings\": 8192}}",
              "config.json: rope_scaling.factor: 0 is out of range (0 < x <= 1e30)");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_scaling\": {\"rope_type\": \"llama3\", "
              "\"factor\": 8.0, \"low_freq_factor\": 4.0, \"high_freq_factor\": 4.0, "
              "\"original_max_position_embeddings\": 8192}}",
              "config.json: rope_scaling.high_freq_factor: 4 must be greater than low_freq_factor 4");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_scaling\": {\"rope_type\": \"llama3\", "
              "\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
              "\"original_max_position_embeddings\": 8192.5}}",
              "config.json: rope_scaling.original_max_position_embeddings: 8192.5 is not an integer in 1..2147483647");
    /* 2^40: positive, but no int (it read "is not a positive integer") */
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_scaling\": {\"rope_type\": \"llama3\", "
              "\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
              "\"original_max_position_embeddings\": 1099511627776}}",
              "config.json: rope_scaling.original_max_position_embeddings: 1099511627776 is not an integer in "
              "1..2147483647");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_parameters\": {\"rope_type\": \"yarn\", "
              "\"rope_theta\": 1e6, \"factor\": 4.0}}",
              "config.json: rope_parameters.rope_type: 'yarn' is not supported (qpipe runs llama3 scaling or none)");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_parameters\": {\"rope_type\": \"default\", "
              "\"rope_theta\": 1e6, \"mrope_section\": [16, 24, 24]}}",
              "config.json: rope_parameters.mrope_section: [16,24,24] is not supported with rope_type 'default' (qpipe "
              "runs llama3 scaling or none)");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_parameters\": {\"rope_type\": \"default\", "
              "\"rope_theta\": \"1e6\"}}",
              "config.json: rope_parameters.rope_theta: expected a number, got a string");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_scaling\": {\"rope_type\": \"default\", "
              "\"rope_theta\": 1e6}}",
              "config.json: rope_scaling.rope_theta: 1000000.0 is not supported with rope_type 'default' (qpipe runs "
              "llama3 scaling or none)");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_scaling\": {\"rope_type\": \"default\"}, "
              "\"rope_parameters\": {\"rope_type\": \"default\"}}",
              "config.json: rope_parameters: given together with rope_scaling; keep one of them");
}

static void test_refusals(void **state)
{
    (void)state;
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"partial_rotary_factor\": 0.5}",
              "config.json: partial_rotary_factor: 0.5 is not supported (RoPE over the whole head only)");
    parse_err("{\"architectures\": [\"GPT2LMHeadModel\"], " BASE "}",
              "config.json: architecture 'GPT2LMHeadModel' is not supported (LlamaForCausalLM, MistralForCausalLM, "
              "Qwen2ForCausalLM)");
    parse_err("{\"model_type\": \"gemma\", " BASE "}",
              "config.json: architecture 'gemma' is not supported (LlamaForCausalLM, MistralForCausalLM, "
              "Qwen2ForCausalLM)");
    parse_err("{" BASE "}", "config.json: architectures: missing (and no model_type)");
    parse_err("{\"architectures\": [], " BASE "}", "config.json: architectures: expected a non-empty array of strings");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": 1000, \"num_hidden_layers\": 2, "
              "\"num_attention_heads\": 8, \"intermediate_size\": 1024}",
              "config.json: hidden_size: missing (required)");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": 1000, \"hidden_size\": \"512\", "
              "\"num_hidden_layers\": 2, \"num_attention_heads\": 8, \"intermediate_size\": 1024}",
              "config.json: hidden_size: expected an integer, got a string");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": 1000, \"hidden_size\": 512.0, "
              "\"num_hidden_layers\": 2, \"num_attention_heads\": 8, \"intermediate_size\": 1024}",
              "config.json: hidden_size: expected an integer, got a real number");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": -3, \"hidden_size\": 512, "
              "\"num_hidden_layers\": 2, \"num_attention_heads\": 8, \"intermediate_size\": 1024}",
              "config.json: vocab_size: -3 is out of range (1 to 2147483647)");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": 1000, \"hidden_size\": 500, "
              "\"num_hidden_layers\": 2, \"num_attention_heads\": 8, \"intermediate_size\": 1024}",
              "config.json: hidden_size: 500 is not divisible by num_attention_heads 8");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"num_key_value_heads\": 3}",
              "config.json: num_attention_heads: 8 is not divisible by num_key_value_heads 3");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"head_dim\": 33}",
              "config.json: head_dim: 33 must be even (RoPE rotates pairs)");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"hidden_act\": \"gelu\"}",
              "config.json: hidden_act: 'gelu' is not supported (SwiGLU with silu only)");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"attention_bias\": true}",
              "config.json: attention_bias: true is not supported for llama (o_proj bias)");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"tie_word_embeddings\": \"yes\"}",
              "config.json: tie_word_embeddings: expected true or false, got a string");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rms_norm_eps\": \"1e-5\"}",
              "config.json: rms_norm_eps: expected a number, got a string");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rms_norm_eps\": 0}",
              "config.json: rms_norm_eps: must be positive");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"eos_token_id\": [2, \"x\"]}",
              "config.json: eos_token_id: expected non-negative integers, got a string");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"hidden_size\": 512}",
              "config.json: line 1 column 170: invalid JSON: duplicate object key near '\"hidden_size\"'");
    parse_err("{\"architectures\": [\"LlamaForCausalLM\"], ",
              "config.json: line 1 column 40: invalid JSON: string or '}' expected near end of file");
    parse_err("[1]", "config.json: not a JSON object");
}

/* ---- synthetic GGUF metadata ---- */

typedef struct {
    unsigned char *p;
    size_t n, cap;
    uint64_t count;
} kvbuf;

static void put(kvbuf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put_key(kvbuf *b, const char *k, uint32_t type)
{
    uint64_t n = strlen(k);
    put(b, &n, 8);
    put(b, k, n);
    put(b, &type, 4);
    b->count++;
}

static void kv_u32(kvbuf *b, const char *k, uint32_t v)
{
    put_key(b, k, 4);
    put(b, &v, 4);
}

static void kv_f32(kvbuf *b, const char *k, float v)
{
    put_key(b, k, 6);
    put(b, &v, 4);
}

static void kv_str(kvbuf *b, const char *k, const char *v)
{
    uint64_t n = strlen(v);
    put_key(b, k, 8);
    put(b, &n, 8);
    put(b, v, n);
}

/* The llama.* keys of a small model, minus `skip`. */
static void base_keys(kvbuf *b, const char *arch, const char *skip)
{
    char k[96];
    static const struct { const char *suffix; uint32_t v; } ints[] = {
        { "vocab_size", 1000 }, { "embedding_length", 512 }, { "block_count", 2 },
        { "attention.head_count", 8 }, { "attention.head_count_kv", 2 }, { "feed_forward_length", 1024 },
        { "context_length", 4096 },
    };
    kv_str(b, "general.architecture", arch);
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        if (skip && strcmp(skip, ints[i].suffix) == 0)
            continue;
        snprintf(k, sizeof(k), "%s.%s", arch, ints[i].suffix);
        kv_u32(b, k, ints[i].v);
    }
    snprintf(k, sizeof(k), "%s.attention.layer_norm_rms_epsilon", arch);
    kv_f32(b, k, 1e-6f);
}

static char *write_kv_gguf(const char *dir, const kvbuf *kv)
{
    static int seq;
    kvbuf f = { 0 };
    uint32_t v = 3;
    uint64_t zero = 0;
    put(&f, "GGUF", 4);
    put(&f, &v, 4);
    put(&f, &zero, 8);
    put(&f, &kv->count, 8);
    put(&f, kv->p, kv->n);
    char *path = qp_strfmt("%s/c%d.gguf", dir, seq++);
    qp_test_write(path, f.p, f.n);
    free(f.p);
    return path;
}

static void gguf_case(const kvbuf *kv, int want_rc, const char *want_tail, qp_llama_config *c)
{
    char *dir = qp_test_tmpdir();
    char *p = write_kv_gguf(dir, kv);
    qp_gguf *g = NULL;
    assert_int_equal(qp_gguf_open(&g, p), 0);
    int rc = qp_llama_config_from_gguf(c, g);
    if (rc != want_rc)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, want_rc);
    if (want_tail) {
        char *want = qp_strfmt("%s: %s", p, want_tail);
        assert_string_equal(qp_error_last(), want);
        free(want);
    }
    qp_gguf_free(g);
    qp_test_rmtree(dir);
    free(p);
    free(dir);
}

/* A sliding window shorter than the context (Mistral v0.1: 4096 of 32768;
 * Qwen2 with use_sliding_window) is kept, and caps the forward pass's
 * positions: within the window it is exactly full causal attention. */
static void test_sliding_window(void **state)
{
    (void)state;
    qp_llama_config c;
    qp_llama_hparams hp;
    parse_ok("{\"architectures\": [\"MistralForCausalLM\"], " BASE ", \"sliding_window\": 4096, "
             "\"max_position_embeddings\": 32768}", &c);
    assert_int_equal(c.max_pos, 32768);
    assert_int_equal(c.sliding_window, 4096);
    qp_llama_hparams_from_config(&hp, &c);
    assert_int_equal(hp.max_pos, 4096);
    parse_ok("{\"architectures\": [\"Qwen2ForCausalLM\"], " BASE ", \"use_sliding_window\": true, "
             "\"sliding_window\": 4096, \"max_position_embeddings\": 32768}", &c);
    assert_int_equal(c.sliding_window, 4096);
    parse_ok("{\"architectures\": [\"Qwen2ForCausalLM\"], " BASE ", \"use_sliding_window\": false, "
             "\"sliding_window\": 4096, \"max_position_embeddings\": 32768}", &c);
    assert_int_equal(c.sliding_window, 0);
    qp_llama_hparams_from_config(&hp, &c);
    assert_int_equal(hp.max_pos, 32768);
}

static void test_gguf_cases(void **state)
{
    (void)state;
    qp_llama_config c;
    kvbuf b = { 0 };
    base_keys(&b, "qwen2", NULL);
    kv_f32(&b, "qwen2.rope.freq_base", 1e6f);
    kv_u32(&b, "tokenizer.ggml.eos_token_id", 151645);
    gguf_case(&b, 0, NULL, &c);
    assert_int_equal(c.arch, QP_ARCH_QWEN2);
    assert_int_equal(c.qkv_bias, 1);
    assert_int_equal(c.n_kv_heads, 2);
    assert_int_equal(c.head_dim, 64);
    assert_true(c.rms_eps == 1e-6f);
    assert_true(c.rope_theta == 1e6f);
    assert_int_equal(c.tied_embeddings, 0);   /* no tensors at all: not tied */
    assert_int_equal(c.bos_id, -1);
    assert_int_equal(c.eos_id, 151645);
    assert_int_equal(c.n_eos, 1);

    b.n = b.count = 0;
    base_keys(&b, "llama", "embedding_length");
    gguf_case(&b, QP_ENOTFOUND, "key 'llama.embedding_length': missing", &c);

    b.n = b.count = 0;
    base_keys(&b, "llama", "vocab_size");
    gguf_case(&b, QP_EFORMAT, "key 'llama.vocab_size': missing (and no tokenizer.ggml.tokens)", &c);

    b.n = b.count = 0;
    base_keys(&b, "llama", NULL);
    kv_str(&b, "llama.rope.scaling.type", "yarn");
    gguf_case(&b, QP_EFORMAT, "key 'llama.rope.scaling.type': 'yarn' is not supported in a GGUF input (qpipe runs "
              "GGUF models with plain RoPE; Llama 3 scaling from a Hugging Face config.json)", &c);

    b.n = b.count = 0;
    base_keys(&b, "llama", NULL);
    kv_str(&b, "llama.rope.scaling.type", "none");
    gguf_case(&b, 0, NULL, &c);

    b.n = b.count = 0;
    base_keys(&b, "llama", NULL);
    kv_u32(&b, "llama.attention.sliding_window", 1024);
    gguf_case(&b, 0, NULL, &c);
    assert_int_equal(c.sliding_window, 1024);

    b.n = b.count = 0;
    base_keys(&b, "llama", NULL);
    kv_u32(&b, "llama.rope.dimension_count", 32);
    gguf_case(&b, QP_EFORMAT, "key 'llama.rope.dimension_count': 32 differs from the head dim 64: partial rotary "
              "embeddings are not supported", &c);

    b.n = b.count = 0;
    base_keys(&b, "llama", "attention.head_count_kv");
    kv_u32(&b, "llama.attention.head_count_kv", 3);
    gguf_case(&b, QP_EFORMAT, "key 'llama.attention.head_count': 8 is not divisible by llama.attention.head_count_kv 3",
              &c);

    b.n = b.count = 0;
    base_keys(&b, "llama", "embedding_length");
    kv_str(&b, "llama.embedding_length", "512");
    gguf_case(&b, QP_EFORMAT, "key 'llama.embedding_length': is string, expected an integer", &c);
    free(b.p);
}

/* A llama.cpp conversion of a Llama 3.1 model carries rope_freqs.weight
 * (convert_hf_to_gguf.py's per-dimension divisors): refused by name. */
static void test_gguf_rope_freqs(void **state)
{
    (void)state;
    char *dir = qp_test_tmpdir();
    char *p = qp_strfmt("%s/l3.gguf", dir);
    qp_gguf_writer *w = NULL;
    float factors[32];
    for (int i = 0; i < 32; i++)
        factors[i] = i < 8 ? 1.0f : 8.0f;
    const uint64_t ne[1] = {32};
    assert_int_equal(qp_gguf_writer_new(&w, p), 0);
    assert_int_equal(qp_gguf_writer_add_str(w, "general.architecture", "llama"), 0);
    assert_int_equal(qp_gguf_writer_add_u32(w, "llama.vocab_size", 1000), 0);
    assert_int_equal(qp_gguf_writer_add_u32(w, "llama.embedding_length", 512), 0);
    assert_int_equal(qp_gguf_writer_add_u32(w, "llama.block_count", 2), 0);
    assert_int_equal(qp_gguf_writer_add_u32(w, "llama.attention.head_count", 8), 0);
    assert_int_equal(qp_gguf_writer_add_u32(w, "llama.feed_forward_length", 1024), 0);
    assert_int_equal(qp_gguf_writer_add_u32(w, "llama.context_length", 131072), 0);
    assert_int_equal(qp_gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f), 0);
    assert_int_equal(qp_gguf_writer_add_f32(w, "llama.rope.freq_base", 500000.0f), 0);
    assert_int_equal(qp_gguf_writer_add_tensor(w, "rope_freqs.weight", 0, 1, ne, factors, sizeof(factors)), 0);
    assert_int_equal(qp_gguf_writer_finish(w), 0);
    qp_gguf *g = NULL;
    qp_llama_config c;
    assert_int_equal(qp_gguf_open(&g, p), 0);
    assert_int_equal(qp_llama_config_from_gguf(&c, g), QP_EFORMAT);
    char *want = qp_strfmt("%s: tensor 'rope_freqs.weight': RoPE frequency factors (Llama 3 rope scaling) are not "
                           "supported in a GGUF input; use the Hugging Face checkpoint, whose config.json "
                           "rope_scaling qpipe runs", p);
    assert_string_equal(qp_error_last(), want);
    free(want);
    qp_gguf_free(g);
    qp_test_rmtree(dir);
    free(p);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_house_config_json),
        cmocka_unit_test(test_house_gguf),
        cmocka_unit_test(test_vocab_gguf),
        cmocka_unit_test(test_architectures),
        cmocka_unit_test(test_llama3),
        cmocka_unit_test(test_mistral),
        cmocka_unit_test(test_rope_refusals),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_sliding_window),
        cmocka_unit_test(test_gguf_cases),
        cmocka_unit_test(test_gguf_rope_freqs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
