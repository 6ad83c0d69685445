/* Predictions of a stage's time, peak RSS and output bytes before it runs
 * (`qpipe plan --estimate`, and the memory check of `qpipe run`).
 *
 * The model is built from first principles and kept small so that it can
 * be re-fitted when a stage changes:
 *   - the work:  FLOPs (qp_llama_window_flops-style counts, GPTQ's column
 *     updates and Hessian inverses) and bytes moved (read, hashed,
 *     compressed, converted, quantized, written), from the model's shapes
 *     (config.json and the safetensors headers, never the weights) and the
 *     stage's parameters;
 *   - the machine: the rates of one calibration (stages/estimate_machine.c:
 *     qpipe's own GEMM at the run's thread count, dequantize/quantize of the
 *     block types, zstd, SHA-256, disk), cached per CPU model, thread count
 *     and qpipe version;
 *   - the few coefficients no first principle gives (efficiencies, what a
 *     stage keeps resident): one documented table, qp_est_coef below.
 * time = Σ terms (work / rate); the largest term is reported as the one that
 * dominates.  Peak RSS = a base + what the stage holds at its fullest.
 *
 * Everything here is arithmetic on shapes: no weight is read. */
#ifndef QP_STAGES_ESTIMATE_H
#define QP_STAGES_ESTIMATE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/cache.h"
#include "model/config.h"
#include "model/llama.h"
#include "stages/stage.h"

/* ---- the machine: rates of one calibration ---- */
typedef struct {
    char cpu[96];          /* /proc/cpuinfo "model name" */
    int threads;           /* the thread count the rates were measured at */
    double gemm_gflops;    /* qp_sgemm f32, 256 x 2048 x 2048 blocks, `threads` threads */
    double convert_mbs;    /* bf16 -> f32, MB of f32 written per second (one thread) */
    double deq_mbs[3];     /* dequantize Q4_K, Q6_K, Q8_0 -> f32: MB of f32 per second (one thread) */
    double quant_mbs[3];   /* quantize f32 -> Q4_K, Q6_K, Q8_0: MB of f32 read per second, `threads` threads */
    double sha_mbs;        /* SHA-256 */
    double xxh_mbs;        /* XXH64 (a stored object's check on read, cache/object.c) */
    double zstd_c_mbs;     /* zstd compress at the cache's level (raw MB per second) */
    double zstd_d_mbs;     /* zstd decompress (raw MB per second) */
    double zratio_bf16;    /* compressed / raw of N(0, 0.02) bf16 weights */
    double zratio_q;       /* compressed / raw of Q4_K blocks */
    double disk_r_mbs;     /* read of a file just written (page cache) */
    double disk_w_mbs;     /* write + fsync */
    double disk_wd_mbs;    /* write past the page cache (common/seqout.h: a package's file): the rate of
                              each further MB, from two sizes, so fixed costs do not dilute it */
    double disk_wd_fixed_ms; /* ... and what a stream costs whatever its size: helper threads,
                                staging buffers, the first blocks' latency, the final fsync */
    double mem_mbs;        /* fresh memory touched (malloc, page faults, write, free): MB per second */
    double map_mbs;        /* a file in the page cache mapped and every page touched once, then
                              dropped (fetch's read of a checkpoint): MB per second */
    double fsync_ms;       /* one small object stored: write, fsync, rename (cache/object.c does it per object) */
    double seconds;        /* how long the calibration took */
    int measured;          /* 0: the built-in defaults (no calibration) */
    /* Not cached: the machine's load when the estimate is made (the 1-minute
     * load average; 0 when unknown) and its online CPUs.  The rates are the
     * machine's own (best of 3 trials); qp_est_slowdown says how much a
     * stage is slowed by the rest of the load. */
    double load;
    int cpus;
} qp_est_machine;

enum { QP_EST_Q4K = 0, QP_EST_Q6K = 1, QP_EST_Q80 = 2 };

/* Rough rates of a 2-core x86 machine: used when no calibration is wanted
 * (the memory check of `qpipe run` needs none). */
void qp_est_machine_defaults(qp_est_machine *m, int threads);
/* Measures every rate (a few seconds); tmpdir receives one scratch file. */
int qp_est_machine_measure(qp_est_machine *m, int threads, const char *tmpdir);
/* The cached calibration of this CPU model, thread count and qpipe version
 * (cache meta "estimate"), measured and stored when absent or when
 * `recalibrate`; *fresh = 1 when it was measured now. */
int qp_est_machine_get(qp_est_machine *m, qp_cache *cache, int threads, int recalibrate, int *fresh);
json_t *qp_est_machine_to_json(const qp_est_machine *m);
/* Reads /proc/loadavg (or $QPIPE_ESTIMATE_LOAD, a load to assume: 0 for a
 * quiet machine) and the online CPUs into m->load, m->cpus. */
void qp_est_machine_load_now(qp_est_machine *m);
int qp_est_machine_from_json(qp_est_machine *m, const json_t *j);

/* ---- the coefficients: the one table to re-fit ---- */
typedef struct {
    double base_rss;          /* bytes: the process with its libraries, recipe, tokenizer */
    double bytes_per_token;   /* dataset bytes per token (SentencePiece LLaMA on English prose) */
    double fetch_resident;    /* fraction of the largest tensor's mapped pages resident while fetch stores it */
    double fetch_sha_passes;  /* SHA-256 passes over the source (file digests of the key, object names) */
    double gemm_eff;          /* forward-pass FLOP rate / calibrated GEMM rate (attention, norms, small blocks) */
    double weight_cache;      /* bytes of f32 layers (+ untied lm_head) qp_llama caches (QP_LLAMA_CACHE_DEFAULT) */
    double gptq_eff;          /* GPTQ's column-block updates (f32 products) / calibrated GEMM rate */
    double hinv_eff;          /* the Hessian inverse (f64 qp_dgemm, split across threads) / calibrated GEMM rate */
    double gptq_inv_flops;    /* FLOPs per d³ of one Hessian inverse (a Cholesky and a triangular inverse) */
    double gptq_keeps_q;      /* fraction of the quantized layers' f32 copies held until the stage ends */
    double hessian_eff;       /* Σ x xᵀ accumulation (into double) / calibrated GEMM rate */
    double linear_mbs_per_q4k;/* rtn/gptq codes encode rate, as a fraction of the Q4_K quantize rate */
    double load_free;         /* load a stage does not feel (idle shells, I/O waits): slowdown =
                                 max(1, (load + 1 - load_free) / cpus) */
} qp_est_coef;

extern const qp_est_coef qp_est_coef_default;

/* ---- what flows between stages: the shape of an artifact ---- */
enum { QP_EST_DENSE = 0, QP_EST_GGML, QP_EST_LINEAR, QP_EST_NF4, QP_EST_INT8 };

typedef struct {
    char name[112];    /* Hugging Face name */
    int ndim;
    int64_t rows, cols;   /* cols = the rest of the shape; 1-D: rows = n, cols = 1 */
    int fmt;           /* QP_EST_* */
    int type;          /* DENSE/GGML: the ggml type (F32/F16/BF16 for dense); LINEAR: bits */
    uint64_t bytes;    /* stored bytes */
} qp_est_tensor;

typedef struct {
    unsigned type;            /* QP_ART_* (artifact/artifact.h) */
    int known;                /* 0: the shapes are unknown (a git source not fetched yet, a `run` stage) */
    char why[200];            /* when not known: why */
    qp_llama_config cfg;      /* model / qmodel */
    qp_est_tensor *t;         /* model / qmodel: its tensors */
    size_t n;
    uint64_t bytes;           /* raw bytes of the artifact's entries */
    uint64_t largest_file;    /* fetch: the largest safetensors file */
    int64_t samples, seq_len; /* calibration */
    int hessians;
    char dir[512];            /* model: the checkpoint directory its tokenizer comes from ("" = none) */
    double bytes_per_token;   /* model: measured on the first dataset the estimate met (0 = not yet) */
} qp_est_art;

void qp_est_art_free(qp_est_art *a);
/* Sum of the tensors' stored bytes. */
uint64_t qp_est_art_tensor_bytes(const qp_est_art *a);

/* The model under `dir` (a checkpoint directory): config.json and the
 * safetensors headers (their tensors, dtypes and sizes); QP_ENOTFOUND
 * without config.json. */
int qp_est_art_from_dir(qp_est_art *out, const char *dir);
/* A checkpoint of these hyper-parameters in `dtype` (QP_GGML_BF16 / F16 /
 * F32): the tensors qp_llama reads, for tests and configs without weights. */
void qp_est_art_from_config(qp_est_art *out, const qp_llama_config *cfg, int dtype);

/* ---- one stage's prediction ---- */
#define QP_EST_MAX_TERMS 16
typedef struct {
    int known;                  /* 0: no prediction (note says why) */
    double seconds;
    uint64_t peak_rss;
    uint64_t out_bytes;
    size_t n_terms;
    struct { const char *name; double seconds; } terms[QP_EST_MAX_TERMS];
    const char *rss_part;       /* what dominates the peak RSS ("f32 weights", "Hessians", …) */
    char note[200];             /* what the prediction assumed, or why there is none */
    char advice[200];           /* what to change to use less memory */
} qp_est_result;

/* Every time is multiplied by this: max(1, (m->load + 1 - c->load_free) / m->cpus). */
double qp_est_slowdown(const qp_est_machine *m, const qp_est_coef *c);

/* The term that dominates the time ("" when none). */
const char *qp_est_dominant(const qp_est_result *r, double *share);

typedef struct {
    const char *id;
    const qp_stage_kind *kind;
    const json_t *params;           /* validated, defaults filled */
    const char *recipe_dir;
    size_t n_inputs;
    const qp_est_art *const *inputs;   /* `needs` order */
    const qp_est_art *reference;    /* evaluate: the model its `reference:` stage evaluated, or NULL */
    const qp_est_machine *mach;
    const qp_est_coef *coef;
    int threads;
} qp_est_input;

/* Predicts one stage and describes its output (*out: free with
 * qp_est_art_free).  Always succeeds: what it cannot predict is
 * res->known = 0 with a note. */
void qp_estimate_stage(const qp_est_input *in, qp_est_result *res, qp_est_art *out);

/* ---- the counts the model is built from (exposed for tests) ---- */
/* hyper-parameters of a config (qp_llama_hparams_from_config) */
void qp_est_hparams(qp_llama_hparams *hp, const qp_llama_config *cfg);
/* 1 when qp_llama caches every layer in f32 (model/llama.c: the layers
 * plus an untied lm_head within coef->weight_cache). */
int qp_est_llama_cached(const qp_llama_hparams *hp, const qp_est_coef *c);
/* f32 bytes qp_llama itself holds: cached, every layer's weights, the
 * embedding and an untied lm_head; streamed, one product group's tile and
 * lm_head when it is at most QP_LLAMA_HEAD_RESIDENT (else one chunk); plus
 * the norms. */
uint64_t qp_est_llama_resident(const qp_llama_hparams *hp, const qp_est_coef *c);
/* Stored bytes of model `a` that stages/model_load.c keeps resident with a
 * layer-tensor cap of `cap` bytes (0 = none); *per_use (may be NULL): the
 * largest layer tensor read per use instead (0 when every one is kept). */
uint64_t qp_est_stored_resident(const qp_est_art *a, const qp_llama_hparams *hp, const qp_est_coef *c,
                                uint64_t cap, uint64_t *per_use);
/* GPTQ's FLOPs for one weight [rows, cols]: inverse c·cols³ + updates 2·rows·cols²
 * (the two are timed at different rates: f64 on one thread, f32 on all). */
double qp_est_gptq_flops(int64_t rows, int64_t cols, const qp_est_coef *c);
/* Dataset bytes per token of `text` under the tokenizer in `dir` (the
 * first 64 kB); 0 when it cannot be measured (no tokenizer, no text).
 * *mbs (may be NULL): the tokenizer's speed on it, MB/s (0 when unknown). */
double qp_est_bytes_per_token(const char *dir, const char *text_path, double *mbs);
/* Windows an evaluate of `tokens` tokens scores with these parameters. */
uint64_t qp_est_eval_windows(uint64_t tokens, uint64_t ctx, uint64_t max_tokens, uint64_t max_chunks);

#endif
