/* RoPE inverse frequencies, to the last bit.
 *
 * Llama 3 scaling (issue #12): the frequencies are derived here, again and
 * independently of model/llama_kernels.c, from transformers'
 * _compute_default_rope_parameters and _compute_llama3_parameters
 * (modeling_rope_utils.py), one float32 PyTorch operation per line, and
 * qpipe's (config.json -> qp_llama_config -> qp_llama_hparams ->
 * qp_llama_rope_inv_freq) must equal them bit for bit (memcmp).  The case is
 * Llama 3.1's: factor 8, low_freq_factor 1, high_freq_factor 4,
 * original_max_position_embeddings 8192, θ 500000, head dim 128.
 *
 * As a second, external oracle the bit patterns PyTorch 1.13.1 itself gives
 * (Debian's python3-torch, CPU capability AVX2) are listed for that case,
 * for Llama 3.2's factor 32 at head dim 64, and for the plain frequencies of
 * the two house models; they were printed by
 *   inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
 *   wavelen = 2 * math.pi / inv
 *   inv_l = torch.where(wavelen > old / low, inv / factor, inv)
 *   smooth = (old / wavelen - low) / (high - low)
 *   smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
 *   med = ~(wavelen < old / high) * ~(wavelen > old / low)
 *   torch.where(med, smoothed, inv_l)          # as '%08x' of each float32
 * (transformers' function body with its config reads inlined). */
#include "tests/support/testutil.h"

#include "common/error.h"
#include "model/config.h"
#include "model/gguf_llama.h"
#include "model/llama.h"
#include "model/llama_kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the independent derivation ---- */

/* PyTorch's `scalar / tensor` (Tensor.__rtruediv__) is
 * tensor.reciprocal() * scalar, the scalar cast to float32. */
static float t_rdiv(double scalar, float x)
{
    float r = 1.0f / x;
    return r * (float)scalar;
}

/* _compute_default_rope_parameters:
 *   1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
 * arange -> float32; / dim in float32; base ** t is pow(float32(base), t),
 * taken here as the correctly rounded float32 power (long double pow,
 * rounded once); 1.0 / p is again reciprocal-then-multiply by 1. */
static void derive_default(float *inv, double theta, int dim)
{
    for (int i = 0; i < dim / 2; i++) {
        float e = (float)(2 * i) / (float)dim;
        float p = (float)powl((long double)(float)theta, (long double)e);
        inv[i] = t_rdiv(1.0, p);
    }
}

/* _compute_llama3_parameters, elementwise.  Python evaluates
 * old / low and old / high in double; a comparison with a float32 tensor
 * casts them to float32. */
static void derive_llama3(float *inv, double theta, int dim, double factor, double low, double high, int old)
{
    derive_default(inv, theta, dim);
    const float low_freq_wavelen = (float)((double)old / low);
    const float high_freq_wavelen = (float)((double)old / high);
    for (int i = 0; i < dim / 2; i++) {
        float wavelen = t_rdiv(2.0 * M_PI, inv[i]);                  /* 2 * math.pi / inv_freq */
        float inv_llama = wavelen > low_freq_wavelen ? inv[i] / (float)factor : inv[i];
        float smooth = (t_rdiv((double)old, wavelen) - (float)low) / (float)(high - low);
        float one_minus = 1.0f - smooth;                               /* 1 - smooth_factor */
        float smoothed = one_minus * inv_llama / (float)factor + smooth * inv_llama;
        int medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
        inv[i] = medium ? smoothed : inv_llama;
    }
}

/* ---- qpipe's, through config.json ---- */

static void qpipe_inv_freq(float *inv, const char *json, int want_head_dim)
{
    qp_llama_config cfg;
    int rc = qp_llama_config_parse(&cfg, json, strlen(json), "config.json");
    if (rc)
        fprintf(stderr, "%s\n", qp_error_last());
    assert_int_equal(rc, 0);
    qp_llama_hparams hp;
    qp_llama_hparams_from_config(&hp, &cfg);
    assert_int_equal(qp_llama_hparams_check(&hp), 0);
    assert_int_equal(hp.head_dim, want_head_dim);
    qp_llama_rope_inv_freq(&hp, inv);
}

static void expect_bits(const float *got, const uint32_t *want, int n, const char *what)
{
    int bad = 0;
    for (int i = 0; i < n; i++) {
        uint32_t g;
        memcpy(&g, &got[i], 4);
        if (g != want[i]) {
            fprintf(stderr, "%s: inv_freq[%d] = %08x (%.9g), PyTorch %08x\n", what, i, g, (double)got[i], want[i]);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

#define LLAMA31 "{\"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": 128256, \"hidden_size\": 4096, " \
    "\"intermediate_size\": 14336, \"num_hidden_layers\": 32, \"num_attention_heads\": 32, " \
    "\"num_key_value_heads\": 8, \"max_position_embeddings\": 131072, \"rope_theta\": 500000.0, " \
    "\"rope_scaling\": {\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, " \
    "\"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"}, \"rms_norm_eps\": 1e-05, " \
    "\"bos_token_id\": 128000, \"eos_token_id\": 128001, \"tie_word_embeddings\": false}"

/* PyTorch 1.13.1 for LLAMA31 (see the top of the file). */
static const uint32_t torch_llama31[64] = {
    0x3f800000, 0x3f508ac1, 0x3f29e1c6, 0x3f0a6384, 0x3ee177bc, 0x3eb7ab7d, 0x3e959ee3, 0x3e73c461,
    0x3e4693b0, 0x3e21c3a0, 0x3e03c6a0, 0x3dd6b19c, 0x3daee4ad, 0x3d8e7898, 0x3d681e67, 0x3d3d1684,
    0x3d1a08c8, 0x3cfaf53f, 0x3ccc6f49, 0x3ca68939, 0x3c87a9c3, 0x3c5d06ec, 0x3c340d6d, 0x3c12ac7f,
    0x3beef74f, 0x3bc2aa76, 0x3b9e9402, 0x3b812e35, 0x3b527720, 0x3b0dfd06, 0x3ab3d11d, 0x3a60979e,
    0x3a0995d2, 0x39a3f108, 0x393b2dd2, 0x38c86886, 0x38a3418d, 0x3884fdbf, 0x3858ac81, 0x38308199,
    0x380fc8f8, 0x37ea426f, 0x37bed4f4, 0x379b7475, 0x377d45c3, 0x374e51f5, 0x3728126b, 0x3708ea0f,
    0x36df10c4, 0x36b5b687, 0x369406cb, 0x36712b80, 0x36447610, 0x36200a69, 0x36025f34, 0x35d46808,
    0x35ad07a7, 0x358cf400, 0x3565a54d, 0x353b12c7, 0x351864a7, 0x34f848c2, 0x34ca41b0, 0x34a4c2ff,
};

static void test_llama31_frequencies(void **state)
{
    (void)state;
    float mine[64], derived[64], plain[64];
    qpipe_inv_freq(mine, LLAMA31, 128);
    derive_llama3(derived, 500000.0, 128, 8.0, 1.0, 4.0, 8192);
    assert_memory_equal(mine, derived, sizeof(mine));
    expect_bits(mine, torch_llama31, 64, "llama 3.1");

    /* The three bands: wavelengths under 2048 unchanged, over 8192 divided
     * by 8 (exactly: a power of two), in between strictly between the two. */
    derive_default(plain, 500000.0, 128);
    int high = 0, low = 0, medium = 0;
    for (int i = 0; i < 64; i++) {
        double wavelen = 2.0 * M_PI / plain[i];
        if (wavelen < 2048.0) {
            assert_true(mine[i] == plain[i]);
            high++;
        } else if (wavelen > 8192.0) {
            assert_true(mine[i] == plain[i] / 8.0f);
            low++;
        } else {
            assert_true(mine[i] < plain[i] && mine[i] > plain[i] / 8.0f);
            medium++;
        }
    }
    printf("llama 3.1 frequencies: %d high (unchanged), %d medium (smoothed), %d low (/8): all 64 equal the "
           "derivation and PyTorch 1.13.1 bit for bit\n", high, medium, low);
    assert_true(high > 0 && medium > 0 && low > 0);
}

/* Llama 3.2 1B: factor 32, head_dim 64 stated, tied embeddings. */
static const uint32_t torch_llama32[32] = {
    0x3f800000, 0x3f29e1c6, 0x3ee177bc, 0x3e959ee3, 0x3e4693b0, 0x3e03c6a0, 0x3daee4ad, 0x3d681e67,
    0x3d1a08c8, 0x3ccc6f49, 0x3c87a9c3, 0x3c340d6d, 0x3beef74f, 0x3b9e9402, 0x3b527720, 0x3aa9279b,
    0x39e13620, 0x38cb98f7, 0x37a3418d, 0x3758ac81, 0x370fc8f8, 0x36bed4f4, 0x367d45c3, 0x3628126b,
    0x35df10c4, 0x359406cb, 0x35447610, 0x35025f34, 0x34ad07a7, 0x3465a54d, 0x341864a7, 0x33ca41b0,
};

static void test_llama32_frequencies(void **state)
{
    (void)state;
    float mine[32], derived[32];
    qpipe_inv_freq(mine,
                   "{\"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": 128256, \"hidden_size\": 2048, "
                   "\"intermediate_size\": 8192, \"num_hidden_layers\": 16, \"num_attention_heads\": 32, "
                   "\"num_key_value_heads\": 8, \"head_dim\": 64, \"max_position_embeddings\": 131072, "
                   "\"rope_theta\": 500000.0, \"tie_word_embeddings\": true, \"rope_scaling\": {\"factor\": 32.0, "
                   "\"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0, \"original_max_position_embeddings\": 8192, "
                   "\"rope_type\": \"llama3\"}}",
                   64);
    derive_llama3(derived, 500000.0, 64, 32.0, 1.0, 4.0, 8192);
    assert_memory_equal(mine, derived, sizeof(mine));
    expect_bits(mine, torch_llama32, 32, "llama 3.2");
}

/* Factors that are not powers of two exercise every rounding in the
 * formula (the reciprocal-then-multiply of `old / wavelen` included: true
 * division gives other bits for some of these). */
static void test_odd_factors(void **state)
{
    (void)state;
    static const struct { double theta; int d; double f, lo, hi; int old; } c[] = {
        {123456.0, 128, 6.5, 1.3, 3.7, 5000}, {10000.0, 128, 3.3, 0.7, 5.1, 777},
        {500000.0, 128, 7.0, 1.1, 2.9, 3000}, {250000.0, 96, 5.0, 2.0, 3.0, 1000},
    };
    for (size_t k = 0; k < sizeof(c) / sizeof(c[0]); k++) {
        char json[768];
        snprintf(json, sizeof(json),
                 "{\"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": 100, \"hidden_size\": %d, "
                 "\"intermediate_size\": 64, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
                 "\"rope_theta\": %.17g, \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": %.17g, "
                 "\"low_freq_factor\": %.17g, \"high_freq_factor\": %.17g, "
                 "\"original_max_position_embeddings\": %d}}",
                 2 * c[k].d, c[k].theta, c[k].f, c[k].lo, c[k].hi, c[k].old);
        float mine[64], derived[64];
        qpipe_inv_freq(mine, json, c[k].d);
        derive_llama3(derived, c[k].theta, c[k].d, c[k].f, c[k].lo, c[k].hi, c[k].old);
        assert_memory_equal(mine, derived, (size_t)(c[k].d / 2) * sizeof(float));
    }
}

/* No scaling: the house models' plain frequencies, unchanged by the
 * per-dimension path (house-llama's pinned digests depend on them). */
static const uint32_t torch_house_llama[16] = {
    0x3f800000, 0x3f0ff59a, 0x3ea1e89b, 0x3e361887, 0x3dcccccd, 0x3d6655c2, 0x3d0186e3, 0x3c91ad39,
    0x3c23d70a, 0x3bb8449c, 0x3b4f3e38, 0x3ae91528, 0x3a83126f, 0x3a136a16, 0x39a5cb60, 0x393a7753,
};
static const uint32_t torch_house_qwen[16] = {
    0x3f800000, 0x3ed7e89b, 0x3e361887, 0x3d99940d, 0x3d0186e3, 0x3c5a7bf2, 0x3bb8449c, 0x3b1b690d,
    0x3a83126f, 0x39dd1725, 0x393a7753, 0x389d43a4, 0x3804a2b2, 0x375fba4f, 0x36bcb0c1, 0x361f23e4,
};

static void test_house_frequencies(void **state)
{
    (void)state;
    static const struct { const char *config; const uint32_t *torch; double theta; } m[] = {
        {"models/house-llama/config.json", torch_house_llama, 10000.0},
        {"models/house-qwen/config.json", torch_house_qwen, 1000000.0},
    };
    for (int k = 0; k < 2; k++) {
        char *p = qp_test_shared_path(m[k].config);
        qp_llama_config cfg;
        assert_int_equal(qp_llama_config_load(&cfg, p), 0);
        free(p);
        qp_llama_hparams hp;
        qp_llama_hparams_from_config(&hp, &cfg);
        assert_int_equal(hp.rope_scaling.kind, QP_ROPE_PLAIN);
        assert_int_equal(hp.head_dim, 32);
        float mine[16], derived[16];
        qp_llama_rope_inv_freq(&hp, mine);
        derive_default(derived, m[k].theta, 32);
        assert_memory_equal(mine, derived, sizeof(mine));
        expect_bits(mine, m[k].torch, 16, m[k].config);
    }
}

/* llama.cpp's rope_freqs.weight for Llama 3.1 (convert_hf_to_gguf.py's loop,
 * run with PyTorch 1.13.1: the freqs above, then per element
 *   wavelen = 2 * math.pi / freq; 1 if wavelen < old / high, factor if
 *   wavelen > old / low, else 1 / ((1 - smooth) / factor + smooth)
 * collected with torch.tensor(..., dtype=torch.float32)). */
static const uint32_t torch_gguf_factors31[64] = {
    0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000,
    0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000,
    0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000,
    0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f9a8ed5, 0x3fc6d64a, 0x4001af1d,
    0x402c732e, 0x406bcace, 0x40a83c06, 0x41000000, 0x41000000, 0x41000000, 0x41000000, 0x41000000,
    0x41000000, 0x41000000, 0x41000000, 0x41000000, 0x41000000, 0x41000000, 0x41000000, 0x41000000,
    0x41000000, 0x41000000, 0x41000000, 0x41000000, 0x41000000, 0x41000000, 0x41000000, 0x41000000,
    0x41000000, 0x41000000, 0x41000000, 0x41000000, 0x41000000, 0x41000000, 0x41000000, 0x41000000,
};

/* The same loop derived here. */
static void derive_gguf_factors(float *out, double theta, int dim, double factor, double low, double high, int old)
{
    float inv[2048];
    derive_default(inv, theta, dim);
    for (int i = 0; i < dim / 2; i++) {
        float wavelen = t_rdiv(2.0 * M_PI, inv[i]);
        if (wavelen < (float)((double)old / high)) {
            out[i] = 1.0f;
        } else if (wavelen > (float)((double)old / low)) {
            out[i] = (float)factor;
        } else {
            float smooth = (t_rdiv((double)old, wavelen) - (float)low) / (float)(high - low);
            out[i] = t_rdiv(1.0, (1.0f - smooth) / (float)factor + smooth);
        }
    }
}

static void test_gguf_factors(void **state)
{
    (void)state;
    qp_rope_scaling s = {.kind = QP_ROPE_LLAMA3, .factor = 8.0, .low_freq_factor = 1.0, .high_freq_factor = 4.0,
                         .original_max_pos = 8192};
    float mine[64], derived[64];
    assert_int_equal(qp_gguf_llama_rope_factors(mine, 128, 500000.0f, &s, 8192.0), 0);
    derive_gguf_factors(derived, 500000.0, 128, 8.0, 1.0, 4.0, 8192);
    assert_memory_equal(mine, derived, sizeof(mine));
    expect_bits(mine, torch_gguf_factors31, 64, "rope_freqs.weight");
    qp_rope_scaling odd = {.kind = QP_ROPE_LLAMA3, .factor = 3.3, .low_freq_factor = 0.7, .high_freq_factor = 5.1,
                           .original_max_pos = 777};
    assert_int_equal(qp_gguf_llama_rope_factors(mine, 128, 10000.0f, &odd, 777.0), 0);
    derive_gguf_factors(derived, 10000.0, 128, 3.3, 0.7, 5.1, 777);
    assert_memory_equal(mine, derived, sizeof(mine));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama31_frequencies),
        cmocka_unit_test(test_llama32_frequencies),
        cmocka_unit_test(test_odd_factors),
        cmocka_unit_test(test_house_frequencies),
        cmocka_unit_test(test_gguf_factors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
