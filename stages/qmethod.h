/* The one interface every quantization method implements (the `method:`
 * of a quantize stage), modelled on qp_stage_kind (stages/stage.h).
 *
 * A method parses the stage's `with:` ONCE into its own C struct (its
 * options; stages/qmethods.h), says what each tensor becomes (plan),
 * quantizes what needs more than one tensor at a time (run: GPTQ/AWQ layer
 * by layer, mixed's search) and encodes the rest one tensor at a time
 * (encode), adds its own metadata to the artifact (describe), and tells the
 * packagers what they need (hints).  The quantize stage (stages/quantize.c)
 * is the loop around these; stages/qmethod_registry.c is the only place a
 * method is looked up by name.  Adding a method: docs/architecture.md. */
#ifndef QP_STAGES_QMETHOD_H
#define QP_STAGES_QMETHOD_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "model/config.h"
#include "quant/imatrix.h"
#include "stages/quant_plan.h"
#include "stages/stage.h"

enum {
    QP_QM_NEEDS_CALIB = 1 << 0,  /* a calibrate input is required */
    QP_QM_IMATRIX     = 1 << 1,  /* takes an importance matrix (imatrix:, or the calibration's) */
};

/* Tensors a method's run already quantized and stored, by HF name; the
 * quantize loop takes them instead of encoding. */
typedef struct qp_quant_results qp_quant_results;

typedef struct {
    char digest[QP_HEX_LEN];
    uint64_t size;
    double bpw;
    json_t *fields;   /* what the artifact entry records besides digest, size and bpw ("format", "bits", …) */
} qp_quant_stored;

qp_quant_results *qp_quant_results_new(void);
void qp_quant_results_free(qp_quant_results *r);
/* Takes the reference to `fields`; replaces an earlier entry of that name. */
void qp_quant_results_put(qp_quant_results *r, const char *name, const char *digest, uint64_t size, double bpw,
                          json_t *fields);
/* Copies every entry of src into r (src's entries replace r's). */
void qp_quant_results_merge(qp_quant_results *r, const qp_quant_results *src);
const qp_quant_stored *qp_quant_results_get(const qp_quant_results *r, const char *name);
/* Every entry as {name: {"digest", "size", "bpw", "fields"}}, bpw as a C99
 * hex float so a copy read back is bit-identical (a layer checkpoint). */
json_t *qp_quant_results_json(const qp_quant_results *r);
/* Adds the entries of such an object; QP_EFORMAT naming `what` when one is malformed. */
int qp_quant_results_add_json(qp_quant_results *r, const json_t *j, const char *what);

/* One quantize stage's run, as the method sees it. */
typedef struct {
    qp_stage_ctx *ctx;
    const qp_artifact *model;         /* inputs[0] */
    const qp_artifact *calib;         /* inputs[1], NULL when none */
    const qp_quant_method *method;
    const void *opts;                 /* the method's options (method->opts_size bytes) */
    const qp_quant_common *common;
    qp_imatrix *imatrix;              /* NULL when none */
    qp_llama_config cfg;
    qp_quant_plan plan;
    qp_quant_results *results;        /* filled by method->run */
    json_t *report;                   /* the method's own metadata (AWQ layers, mixed's report), or NULL */
} qp_quant_job;

/* What the packagers (stages/package*.c, stages/model_card.c) need to know
 * of a quantized artifact made by this method. */
typedef struct {
    /* the `with:` keys the model card lists under Quantization */
    const char *const *card_keys;
    /* the default package name, "<base>-…", from the artifact's params and metrics */
    void (*package_name)(char *buf, size_t cap, const char *base, const qp_quant_method *m, const json_t *params,
                         const json_t *metrics);
    /* general.file_type of the GGUF export */
    unsigned (*gguf_file_type)(const qp_artifact *model);
} qp_quant_hints;

struct qp_quant_method {
    const char *name;      /* the `method:` value */
    const char *doc;       /* one line */
    unsigned flags;        /* QP_QM_* */
    /* with QP_QM_NEEDS_CALIB: the rest of "stage 'x': method NAME …" when the input is missing */
    const char *needs_calib;
    size_t opts_size;
    /* Parses and checks the `with:` params into opts (opts_size bytes, zeroed).
     * Errors QP_EUSAGE "WHERE: …".  May be NULL (no options). */
    int (*parse)(void *opts, const json_t *params, const char *where);
    void (*free_opts)(void *opts);   /* may be NULL */
    /* Sets what plan needs beyond the shared fields (gguf: the file type); may be NULL. */
    void (*plan_setup)(qp_quant_plan *p);
    /* A 2-D tensor that no skip, override type or 1-D rule decided (ov: its
     * override entry, or NULL). */
    int (*plan)(qp_tensor_plan *out, const qp_quant_plan *p, const char *name, int ndim, int64_t rows,
                int64_t cols, const qp_quant_override *ov);
    /* Quantizes before the tensor loop, into job->results (and job->report); may be NULL. */
    int (*run)(qp_quant_job *job);
    /* Encodes one tensor of the method's own format (plans other than
     * dense and ggml); NULL when run stores them all. */
    int (*encode)(const qp_quant_job *job, const qp_tensor_plan *plan, const float *w, int64_t rows, int64_t cols,
                  void **packed, size_t *plen, json_t *extra, double *bpw);
    /* Adds the method's own metadata and metrics to the artifact; may be NULL. */
    void (*describe)(const qp_quant_job *job, qp_artifact *out);
    qp_quant_hints hints;
};

/* The registry: the method named `name`, or NULL (nothing set). */
const qp_quant_method *qp_quant_method_find(const char *name);
const qp_quant_method *const *qp_quant_methods(size_t *n);

/* The method's options: *opts allocated (opts_size) and parsed; free with qp_quant_opts_free. */
int qp_quant_opts_parse(void **opts, const qp_quant_method *m, const json_t *params, const char *where);
void qp_quant_opts_free(const qp_quant_method *m, void *opts);

/* ggml block types (method gguf's encoder; any method's `override: type`). */
int qp_quant_encode_ggml(const qp_quant_job *job, const qp_tensor_plan *plan, const float *w, int64_t rows,
                         int64_t cols, const float *imat, void **packed, size_t *plen, json_t *extra, double *bpw);

#endif
