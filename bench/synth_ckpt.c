/* synth_ckpt: writes a random-weight Hugging Face LLaMA checkpoint with a
 * real model's shapes, for the scale benchmarks (make bench-scale) and the
 * CLI tests.
 *
 *   synth_ckpt PRESET OUTDIR [--seed N]
 *   PRESET: tiny | tinyllama-1.1b | llama2-7b | llama3-8b
 *
 * Output, as transformers' save_pretrained writes it: config.json
 * (LlamaForCausalLM, bfloat16), generation_config.json, shards
 * model-0000i-of-0000N.safetensors of at most 5 GB (5e9 bytes; the tiny
 * preset uses 4 MB shards so that the tests see an index too) and
 * model.safetensors.index.json, plus the LLaMA 1/2 SentencePiece vocabulary
 * (tokenizer.model, 32000 pieces) and a tokenizer_config.json.
 *
 * Weights: N(0, 0.02) rounded to bf16, norms 1.0, lm_head untied.  Each
 * tensor draws from its own SplitMix64 stream seeded by (seed, tensor name),
 * so a tensor's bytes do not depend on the order or the sharding.  Normal
 * deviates come from Box-Muller in double precision; the bf16 rounding hides
 * any last-bit difference between libm versions.
 *
 * Memory is constant (one 8 MB buffer): the safetensors header is computed
 * from the shapes before any data, so each shard is written header first and
 * then tensor by tensor, into a temp file that is fsynced and renamed into
 * place.  config.json is written last: a directory without it is not a
 * checkpoint, so an interrupted run leaves nothing that loads half. */
#include "common/alloc.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/rng.h"
#include "common/tensor.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOKENIZER_DIR_DEFAULT "/work/shared/models/llama2-tokenizer"
#define WRITE_BUF_ELEMS (4u << 20)   /* 4 Mi bf16 = 8 MB per write */

typedef struct {
    const char *name;
    int hidden, layers, heads, kv_heads, inter, vocab, max_pos;
    double rope_theta;
    int llama3_rope;           /* Llama-3.1's rope_scaling block */
    uint64_t shard_max;        /* bytes of tensor data per shard */
} preset;

static const preset PRESETS[] = {
    /* ~17 MB: vocab 32000 so the real tokenizer fits, hidden 128 so GPTQ's
     * group size 128 applies; 4 MB shards (each embedding matrix alone) */
    {"tiny", 128, 2, 4, 2, 256, 32000, 256, 10000.0, 0, 4000000},
    {"tinyllama-1.1b", 2048, 22, 32, 4, 5632, 32000, 2048, 10000.0, 0, 5000000000ull},
    {"llama2-7b", 4096, 32, 32, 32, 11008, 32000, 4096, 10000.0, 0, 5000000000ull},
    {"llama3-8b", 4096, 32, 32, 8, 14336, 128256, 8192, 500000.0, 1, 5000000000ull},
};

typedef struct {
    char name[96];
    uint64_t rows, cols;       /* cols 0: a 1-D tensor of `rows` elements */
    int is_norm;
    int shard;                 /* 0-based */
    uint64_t begin;            /* data offset within its shard */
} tensor_spec;

static uint64_t spec_bytes(const tensor_spec *t) { return t->rows * (t->cols ? t->cols : 1) * 2; }

/* Tensors in the order of LlamaForCausalLM's state_dict (module registration
 * order), which is the order save_pretrained fills its shards in. */
static tensor_spec *make_specs(const preset *p, size_t *n_out)
{
    size_t cap = 3 + (size_t)p->layers * 9, n = 0;
    tensor_spec *t = qp_xcalloc(cap, sizeof(*t));
    int hd = p->hidden / p->heads;
    uint64_t H = (uint64_t)p->hidden, KV = (uint64_t)p->kv_heads * (uint64_t)hd, I = (uint64_t)p->inter;
#define ADD(R, C, NORM, ...)                                               \
    do {                                                                   \
        snprintf(t[n].name, sizeof(t[n].name), __VA_ARGS__);               \
        t[n].rows = (R), t[n].cols = (C), t[n].is_norm = (NORM), n++;      \
    } while (0)
    ADD((uint64_t)p->vocab, H, 0, "model.embed_tokens.weight");
    for (int l = 0; l < p->layers; l++) {
        ADD(H, H, 0, "model.layers.%d.self_attn.q_proj.weight", l);
        ADD(KV, H, 0, "model.layers.%d.self_attn.k_proj.weight", l);
        ADD(KV, H, 0, "model.layers.%d.self_attn.v_proj.weight", l);
        ADD(H, H, 0, "model.layers.%d.self_attn.o_proj.weight", l);
        ADD(I, H, 0, "model.layers.%d.mlp.gate_proj.weight", l);
        ADD(I, H, 0, "model.layers.%d.mlp.up_proj.weight", l);
        ADD(H, I, 0, "model.layers.%d.mlp.down_proj.weight", l);
        ADD(H, 0, 1, "model.layers.%d.input_layernorm.weight", l);
        ADD(H, 0, 1, "model.layers.%d.post_attention_layernorm.weight", l);
    }
    ADD(H, 0, 1, "model.norm.weight");
    ADD((uint64_t)p->vocab, H, 0, "lm_head.weight");
#undef ADD
    *n_out = n;
    return t;
}

/* save_pretrained's greedy split: a tensor opens a new shard when it would
 * push a non-empty shard past the limit.  Returns the shard count. */
static int assign_shards(tensor_spec *t, size_t n, uint64_t shard_max)
{
    int shard = 0;
    uint64_t used = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t b = spec_bytes(&t[i]);
        if (used > 0 && used + b > shard_max) {
            shard++;
            used = 0;
        }
        t[i].shard = shard;
        t[i].begin = used;
        used += b;
    }
    return shard + 1;
}

static char *shard_name(int i, int n) { return qp_strfmt("model-%05d-of-%05d.safetensors", i + 1, n); }

/* FNV-1a of the name, mixed with the seed: the tensor's own stream. */
static uint64_t tensor_seed(uint64_t seed, const char *name)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *s = (const unsigned char *)name; *s; s++)
        h = (h ^ *s) * 1099511628211ull;
    qp_rng r;
    qp_rng_seed(&r, seed ^ h);
    return qp_rng_next(&r);
}

/* Uniform in (0, 1]: 53 random bits, never 0 (log(0) is not a number). */
static double unit_open0(qp_rng *r) { return ((double)(qp_rng_next(r) >> 11) + 1.0) * 0x1.0p-53; }

/* Fills n bf16 values of N(0, 0.02) (Box-Muller pairs). */
static void fill_normal(qp_rng *r, uint16_t *out, size_t n)
{
    const double two_pi = 6.283185307179586476925;
    size_t i = 0;
    for (; i + 1 < n; i += 2) {
        double rad = 0.02 * sqrt(-2.0 * log(unit_open0(r)));
        double ang = two_pi * unit_open0(r);
        out[i] = qp_f32_to_bf16((float)(rad * cos(ang)));
        out[i + 1] = qp_f32_to_bf16((float)(rad * sin(ang)));
    }
    if (i < n) {
        double rad = 0.02 * sqrt(-2.0 * log(unit_open0(r)));
        double ang = two_pi * unit_open0(r);
        out[i] = qp_f32_to_bf16((float)(rad * cos(ang)));
    }
}

/* The shard's header: u64 LE length + JSON padded with spaces to a multiple
 * of 8 (as the safetensors library pads it), data offsets from the shapes. */
static char *shard_header(const tensor_spec *t, size_t n, int shard, size_t *len)
{
    json_t *root = json_object();
    json_object_set_new(root, "__metadata__", json_pack("{s:s}", "format", "pt"));
    for (size_t i = 0; i < n; i++) {
        if (t[i].shard != shard)
            continue;
        json_t *shape = t[i].cols ? json_pack("[I,I]", (json_int_t)t[i].rows, (json_int_t)t[i].cols)
                                  : json_pack("[I]", (json_int_t)t[i].rows);
        json_object_set_new(root, t[i].name,
                            json_pack("{s:s,s:o,s:[I,I]}", "dtype", "BF16", "shape", shape, "data_offsets",
                                      (json_int_t)t[i].begin, (json_int_t)(t[i].begin + spec_bytes(&t[i]))));
    }
    char *js = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    size_t jl = strlen(js), padded = (jl + 7) & ~(size_t)7;
    char *h = qp_xmalloc(8 + padded);
    for (int b = 0; b < 8; b++)
        h[b] = (char)(((uint64_t)padded >> (8 * b)) & 0xff);
    memcpy(h + 8, js, jl);
    memset(h + 8 + jl, ' ', padded - jl);
    free(js);
    *len = 8 + padded;
    return h;
}

static int write_shard(const char *outdir, const tensor_spec *t, size_t n, int shard, int nshards,
                       uint64_t seed, uint16_t *buf)
{
    int rc = 0, fd = -1;
    char *tmp = NULL, *fname = shard_name(shard, nshards), *path = qp_path_join(outdir, fname);
    size_t hlen;
    char *hdr = shard_header(t, n, shard, &hlen);
    if ((rc = qp_mkstemp_in(outdir, ".synth-shard", &tmp, &fd)) != 0)
        goto done;
    if (qp_write_all(fd, hdr, hlen) != 0) {
        rc = qp_error_errno(QP_ERROR, "%s: writing the header", path);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        if (t[i].shard != shard)
            continue;
        qp_rng r;
        qp_rng_seed(&r, tensor_seed(seed, t[i].name));
        uint64_t left = spec_bytes(&t[i]) / 2;
        while (left > 0) {
            size_t k = left < WRITE_BUF_ELEMS ? (size_t)left : WRITE_BUF_ELEMS;
            if (t[i].is_norm)
                for (size_t j = 0; j < k; j++)
                    buf[j] = 0x3f80;   /* 1.0 in bf16 */
            else
                fill_normal(&r, buf, k);
            if (qp_write_all(fd, buf, k * 2) != 0) {
                rc = qp_error_errno(QP_ERROR, "%s: tensor '%s': writing data (disk full?)", path, t[i].name);
                goto done;
            }
            left -= k;
        }
    }
    rc = qp_tmp_publish(fd, tmp, path, 0644);   /* fsync, rename; takes fd and tmp */
    fd = -1;
    tmp = NULL;
done:
    if (fd >= 0 || tmp)
        qp_tmp_discard(fd, tmp);
    free(hdr);
    free(path);
    free(fname);
    return rc;
}

static int write_json(const char *outdir, const char *name, json_t *root)
{
    char *js = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(12));
    char *path = qp_path_join(outdir, name);
    size_t len = strlen(js);
    char *text = qp_xmalloc(len + 2);
    memcpy(text, js, len);
    text[len] = '\n';
    int rc = qp_write_file_atomic(path, text, len + 1, NULL);
    free(text);
    free(js);
    free(path);
    json_decref(root);
    return rc;
}

static int write_index(const char *outdir, const tensor_spec *t, size_t n, int nshards)
{
    json_t *map = json_object();
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        char *f = shard_name(t[i].shard, nshards);
        json_object_set_new(map, t[i].name, json_string(f));
        free(f);
        total += spec_bytes(&t[i]);
    }
    json_t *root = json_pack("{s:{s:I},s:o}", "metadata", "total_size", (json_int_t)total, "weight_map", map);
    return write_json(outdir, "model.safetensors.index.json", root);
}

static int write_config(const char *outdir, const preset *p)
{
    json_t *c = json_object();
    json_object_set_new(c, "architectures", json_pack("[s]", "LlamaForCausalLM"));
    json_object_set_new(c, "model_type", json_string("llama"));
    json_object_set_new(c, "attention_bias", json_false());
    json_object_set_new(c, "attention_dropout", json_real(0.0));
    json_object_set_new(c, "bos_token_id", json_integer(1));
    json_object_set_new(c, "eos_token_id", json_integer(2));
    json_object_set_new(c, "hidden_act", json_string("silu"));
    json_object_set_new(c, "hidden_size", json_integer(p->hidden));
    json_object_set_new(c, "initializer_range", json_real(0.02));
    json_object_set_new(c, "intermediate_size", json_integer(p->inter));
    json_object_set_new(c, "max_position_embeddings", json_integer(p->max_pos));
    json_object_set_new(c, "mlp_bias", json_false());
    json_object_set_new(c, "num_attention_heads", json_integer(p->heads));
    json_object_set_new(c, "num_hidden_layers", json_integer(p->layers));
    json_object_set_new(c, "num_key_value_heads", json_integer(p->kv_heads));
    json_object_set_new(c, "pretraining_tp", json_integer(1));
    json_object_set_new(c, "rms_norm_eps", json_real(1e-5));
    if (p->llama3_rope)   /* Llama-3.1-8B's block; original_max_position_embeddings 8192 */
        json_object_set_new(c, "rope_scaling",
                            json_pack("{s:f,s:f,s:f,s:i,s:s}", "factor", 8.0, "low_freq_factor", 1.0,
                                      "high_freq_factor", 4.0, "original_max_position_embeddings", 8192,
                                      "rope_type", "llama3"));
    else
        json_object_set_new(c, "rope_scaling", json_null());
    json_object_set_new(c, "rope_theta", json_real(p->rope_theta));
    json_object_set_new(c, "tie_word_embeddings", json_false());
    json_object_set_new(c, "torch_dtype", json_string("bfloat16"));
    json_object_set_new(c, "transformers_version", json_string("4.44.0"));
    json_object_set_new(c, "use_cache", json_true());
    json_object_set_new(c, "vocab_size", json_integer(p->vocab));
    return write_json(outdir, "config.json", c);
}

/* Reads tokenizer.model before anything is written: a missing vocabulary
 * fails in a second, not after gigabytes of shards. */
static int read_tokenizer(const char *tokdir, char **data, size_t *len)
{
    char *src = qp_path_join(tokdir, "tokenizer.model");
    int rc = qp_read_file(src, data, len);
    if (rc)
        qp_error_prefix("the LLaMA vocabulary (set QP_LLAMA2_TOKENIZER to its directory)");
    free(src);
    return rc;
}

static int write_tokenizer(const char *outdir, const preset *p, const char *data, size_t len)
{
    char *dst = qp_path_join(outdir, "tokenizer.model");
    int rc = qp_write_file_atomic(dst, data, len, NULL);
    free(dst);
    if (rc)
        return rc;
    json_t *tc = json_pack("{s:s,s:s,s:s,s:s,s:b,s:b,s:b,s:i}", "tokenizer_class", "LlamaTokenizer", "bos_token",
                           "<s>", "eos_token", "</s>", "unk_token", "<unk>", "add_bos_token", 1, "add_eos_token", 0,
                           "legacy", 1, "model_max_length", p->max_pos);
    return write_json(outdir, "tokenizer_config.json", tc);
}

static int usage(void)
{
    fprintf(stderr, "usage: synth_ckpt PRESET OUTDIR [--seed N]\n  PRESET:");
    for (size_t i = 0; i < sizeof(PRESETS) / sizeof(PRESETS[0]); i++)
        fprintf(stderr, " %s", PRESETS[i].name);
    fprintf(stderr, "\n  tokenizer.model comes from $QP_LLAMA2_TOKENIZER (default %s)\n", TOKENIZER_DIR_DEFAULT);
    return 2;
}

int main(int argc, char **argv)
{
    const preset *p = NULL;
    const char *outdir = NULL;
    uint64_t seed = 0;
    int rc = 0;
    if (argc != 3 && argc != 5)
        return usage();
    for (size_t i = 0; i < sizeof(PRESETS) / sizeof(PRESETS[0]); i++)
        if (strcmp(argv[1], PRESETS[i].name) == 0)
            p = &PRESETS[i];
    if (!p) {
        fprintf(stderr, "synth_ckpt: unknown preset '%s'\n", argv[1]);
        return usage();
    }
    outdir = argv[2];
    if (argc == 5) {
        char *end = NULL;
        errno = 0;
        unsigned long long s = strtoull(argv[4], &end, 10);
        if (strcmp(argv[3], "--seed") != 0 || errno || !end || *end || argv[4][0] == '-' || !argv[4][0]) {
            fprintf(stderr, "synth_ckpt: expected --seed N (a non-negative integer), got '%s %s'\n", argv[3],
                    argv[4]);
            return usage();
        }
        seed = s;
    }
    const char *tokdir = getenv("QP_LLAMA2_TOKENIZER");
    if (!tokdir || !*tokdir)
        tokdir = TOKENIZER_DIR_DEFAULT;

    size_t n = 0;
    tensor_spec *specs = make_specs(p, &n);
    int nshards = assign_shards(specs, n, p->shard_max);
    uint16_t *buf = qp_xmalloc(WRITE_BUF_ELEMS * sizeof(uint16_t));
    char *tok = NULL;
    size_t tok_len = 0;
    double t0 = qp_now();
    /* config.json goes last (and goes first: a stale one would make a
     * half-rewritten directory look complete) */
    char *cfg = qp_path_join(outdir, "config.json");
    if ((rc = read_tokenizer(tokdir, &tok, &tok_len)) != 0 || (rc = qp_mkdir_p(outdir, 0755)) != 0)
        goto done;
    if (unlink(cfg) != 0 && errno != ENOENT) {
        rc = qp_error_errno(QP_ERROR, "%s: removing the old config", cfg);
        goto done;
    }
    for (int s = 0; s < nshards; s++) {
        if ((rc = write_shard(outdir, specs, n, s, nshards, seed, buf)) != 0)
            goto done;
        fprintf(stderr, "synth_ckpt: %s shard %d/%d written (%.1f s)\n", p->name, s + 1, nshards, qp_now() - t0);
    }
    if ((rc = write_index(outdir, specs, n, nshards)) != 0 || (rc = write_tokenizer(outdir, p, tok, tok_len)) != 0 ||
        (rc = write_json(outdir, "generation_config.json",
                         json_pack("{s:i,s:i,s:s}", "bos_token_id", 1, "eos_token_id", 2, "transformers_version",
                                   "4.44.0"))) != 0 ||
        (rc = write_config(outdir, p)) != 0 || (rc = qp_fsync_dir(outdir)) != 0)
        goto done;
    fprintf(stderr, "synth_ckpt: %s -> %s: %zu tensors, %d shard(s), seed %llu, %.1f s\n", p->name, outdir, n,
            nshards, (unsigned long long)seed, qp_now() - t0);
done:
    if (rc)
        fprintf(stderr, "synth_ckpt: %s\n", qp_error_last());
    free(cfg);
    free(tok);
    free(buf);
    free(specs);
    return rc ? 1 : 0;
}
