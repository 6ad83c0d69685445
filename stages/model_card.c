#include "stages/model_card.h"
#include "stages/qmethod.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "common/numerics.h"
#include "common/version.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int word_char(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

/* huggingface_hub's validate_repo_id: ORG/NAME, each part 1-96 of
 * [A-Za-z0-9_.-] starting and ending with [A-Za-z0-9_], no "--" or "..",
 * no ".git" at the end.  A license id: [a-z0-9.+-], at most 64. */
int qp_hub_id_ok(const char *s, int repo)
{
    size_t n = strlen(s);
    if (n == 0)
        return 1;
    if (!repo) {
        if (n > 64)
            return 0;
        for (const char *c = s; *c; c++)
            if (!islower((unsigned char)*c) && !isdigit((unsigned char)*c) && *c != '-' && *c != '.' && *c != '+')
                return 0;
        return 1;
    }
    const char *slash = strchr(s, '/');
    if (!slash || strchr(slash + 1, '/') || strstr(s, "--") || strstr(s, "..") ||
        (n >= 4 && !strcmp(s + n - 4, ".git")))
        return 0;
    const char *parts[2][2] = {{s, slash}, {slash + 1, s + n}};
    for (int k = 0; k < 2; k++) {
        const char *b = parts[k][0], *e = parts[k][1];
        if (e - b < 1 || e - b > 96 || !word_char(b[0]) || !word_char(e[-1]))
            return 0;
        for (const char *c = b; c < e; c++)
            if (!word_char(*c) && *c != '-' && *c != '.')
                return 0;
    }
    return 1;
}

/* The Hub id of the source: base_model:, else the repository of an
 * hf://ORG/NAME[@REV] source; "" when neither. */
static void base_model_of(char *buf, size_t cap, const qp_stage_ctx *ctx, const json_t *meta)
{
    const char *given = json_string_value(json_object_get(ctx->params, "base_model"));
    const char *src = json_string_value(json_object_get(meta, "source"));
    buf[0] = '\0';
    if (given && given[0]) {
        snprintf(buf, cap, "%s", given);
        return;
    }
    if (!src || strncmp(src, "hf://", 5) != 0)
        return;
    snprintf(buf, cap, "%.*s", (int)strcspn(src + 5, "@"), src + 5);
    if (!qp_hub_id_ok(buf, 1))
        buf[0] = '\0';
}

/* The license of the card: license:, else the source README.md's front
 * matter (what the Hub shows for the source), with its license_name and
 * license_link when it is "other" (Qwen's research license, …).  Any
 * field that is not plainly an id or a link is left out. */
typedef struct {
    char id[80], name[80], link[400];
} card_license;

static int link_ok(const char *s)
{
    if (!s[0] || strlen(s) >= 400)
        return 0;
    for (const char *c = s; *c; c++)
        if (!isalnum((unsigned char)*c) && !strchr(":/._~%#?=&+-", *c))
            return 0;
    return 1;
}

/* The scalar of top-level `key:` in YAML front matter text[len] (quotes,
 * a trailing comment and spaces stripped) into buf; "" when absent. */
static void front_matter_field(char *buf, size_t cap, const char *t, size_t len, const char *key)
{
    const char *end = t + len;
    size_t kl = strlen(key);
    buf[0] = '\0';
    if (len >= 3 && !memcmp(t, "\xef\xbb\xbf", 3))   /* a UTF-8 byte order mark */
        t += 3;
    if (end - t < 4 || strncmp(t, "---", 3) != 0 || (t[3] != '\n' && t[3] != '\r'))
        return;
    for (const char *line = t + 4; line < end;) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t n = nl ? (size_t)(nl - line) : (size_t)(end - line);
        if (n >= 3 && !strncmp(line, "---", 3))
            return;
        if (n > kl && !strncmp(line, key, kl) && line[kl] == ':') {
            const char *v = line + kl + 1;
            size_t m = n - kl - 1;
            for (size_t i = 0; i + 1 < m; i++)
                if (v[i] == ' ' && v[i + 1] == '#') {   /* "mit # comment" */
                    m = i;
                    break;
                }
            while (m && (*v == ' ' || *v == '"' || *v == '\'')) {
                v++;
                m--;
            }
            while (m && (v[m - 1] == ' ' || v[m - 1] == '"' || v[m - 1] == '\'' || v[m - 1] == '\r'))
                m--;
            snprintf(buf, cap, "%.*s", (int)(m < cap ? m : cap - 1), v);
            return;
        }
        line = nl ? nl + 1 : end;
    }
}

static void license_of(card_license *lic, const qp_stage_ctx *ctx, const qp_artifact *model)
{
    const char *given = json_string_value(json_object_get(ctx->params, "license"));
    memset(lic, 0, sizeof(*lic));
    const json_t *e = qp_artifact_find(model, "files/README.md");
    void *text = NULL;
    size_t len = 0;
    /* a card is text of a few KiB: a huge one is not read */
    if (e && json_integer_value(json_object_get(e, "size")) <= (1 << 20) &&
        qp_artifact_read(model, ctx->cache, "files/README.md", &text, &len) == 0) {
        front_matter_field(lic->id, sizeof(lic->id), text, len, "license");
        front_matter_field(lic->name, sizeof(lic->name), text, len, "license_name");
        front_matter_field(lic->link, sizeof(lic->link), text, len, "license_link");
    }
    qp_error_clear();
    free(text);
    if (given && given[0] && strcmp(given, lic->id) != 0) {   /* another license: the source's name and link do not apply */
        snprintf(lic->id, sizeof(lic->id), "%s", given);
        lic->name[0] = lic->link[0] = '\0';
    }
    if (!qp_hub_id_ok(lic->id, 0))
        lic->id[0] = '\0';
    if (strcmp(lic->id, "other") != 0 || !qp_hub_id_ok(lic->name, 0))
        lic->name[0] = '\0';
    if (strcmp(lic->id, "other") != 0 || !link_ok(lic->link))
        lic->link[0] = '\0';
}

/* What the card shows as the source: an hf:// repository as it is, a URL
 * without its user:password@, a local path by its last component only (a
 * card is published: the builder's directories are nobody's business). */
static void display_source(char *buf, size_t cap, const char *src)
{
    if (!src) {
        snprintf(buf, cap, "(unknown)");
        return;
    }
    if (!strncmp(src, "hf://", 5)) {
        snprintf(buf, cap, "%s", src);
        return;
    }
    const char *scheme = strstr(src, "://");
    if (scheme) {
        const char *host = scheme + 3, *at = strchr(host, '@'), *slash = strchr(host, '/');
        if (at && (!slash || at < slash))
            snprintf(buf, cap, "%.*s%s", (int)(host - src), src, at + 1);
        else
            snprintf(buf, cap, "%s", src);
        return;
    }
    if (!strncmp(src, "git:", 4)) {   /* git:host:path (scp form) or a local repository */
        const char *at = strchr(src + 4, '@');
        snprintf(buf, cap, "git:%s", at ? at + 1 : src + 4);
        return;
    }
    size_t n = strlen(src);
    while (n > 1 && src[n - 1] == '/')
        n--;
    const char *b = src + n;
    while (b > src && b[-1] != '/')
        b--;
    snprintf(buf, cap, "%.*s", (int)(src + n - b), b);
}

static const char *format_tag(qp_card_format f)
{
    static const char *tags[] = {"gguf", "gptq", "awq", "bitsandbytes", "safetensors"};
    return tags[f];
}

static void add_tag(json_t *tags, const char *t)
{
    size_t i;
    json_t *v;
    json_array_foreach(tags, i, v)
        if (!strcmp(json_string_value(v), t))
            return;
    json_array_append_new(tags, json_string(t));
}

/* The Hub's YAML front matter.  Every value is a Hub id, a fixed word or
 * a method name (letters, digits, '_'), so none needs quoting. */
/* key: "value", a double-quoted YAML scalar (the values are ids and links,
 * but "yes", "null" or "1.0" unquoted would be another type) */
static void yaml_pair(qp_buf *f, const char *indent, const char *key, const char *v)
{
    qp_buf_printf(f, "%s%s\"", indent, key);
    for (const char *c = v; *c; c++)
        qp_buf_printf(f, (*c == '"' || *c == '\\') ? "\\%c" : "%c", *c);
    qp_buf_printf(f, "\"\n");
}

static void print_front_matter(qp_buf *f, const qp_stage_ctx *ctx, const qp_artifact *model,
                               const qp_card_file *file, const char *base, const card_license *license)
{
    const json_t *meta = qp_artifact_meta_c(model);
    const char *method = json_string_value(json_object_get(meta, "method"));
    json_t *tags = json_array();
    add_tag(tags, "qpipe");
    add_tag(tags, format_tag(file->format));
    int plain = file->format == QP_CARD_SAFETENSORS;   /* dequantized floats */
    if (method) {
        add_tag(tags, plain ? "dequantized" : "quantized");
        add_tag(tags, method);
    }
    const qp_quant_method *qm = plain ? NULL : qp_quant_method_find(method);
    const json_t *bits = json_object_get(json_object_get(meta, "params"), "bits");
    if (qm && json_is_integer(bits) && strcmp(method, "gguf") != 0 && strcmp(method, "mixed") != 0) {
        char b[16];
        snprintf(b, sizeof(b), "%lld-bit", (long long)json_integer_value(bits));
        add_tag(tags, b);
    } else if (!plain && method && !strcmp(method, "nf4")) {
        add_tag(tags, "4-bit");
    } else if (!plain && method && !strcmp(method, "int8")) {
        add_tag(tags, "8-bit");
    }
    qp_buf_printf(f, "---\n");
    if (base[0]) {
        yaml_pair(f, "", "base_model: ", base);
        /* a float export of dequantized weights is not a quantized model on the Hub */
        if (method && file->format != QP_CARD_SAFETENSORS)
            yaml_pair(f, "", "base_model_relation: ", "quantized");
    }
    yaml_pair(f, "", "library_name: ", file->format == QP_CARD_GGUF ? "gguf" : "transformers");
    if (license->id[0])
        yaml_pair(f, "", "license: ", license->id);
    if (license->name[0])
        yaml_pair(f, "", "license_name: ", license->name);
    if (license->link[0])
        yaml_pair(f, "", "license_link: ", license->link);
    yaml_pair(f, "", "pipeline_tag: ", "text-generation");
    qp_buf_printf(f, "tags:\n");
    size_t i;
    json_t *v;
    json_array_foreach(tags, i, v)
        yaml_pair(f, "", "- ", json_string_value(v));
    qp_buf_printf(f, "---\n\n");
    json_decref(tags);
}

/* How to load the package in llama.cpp, transformers and vLLM. */
static void print_use(qp_buf *f, const qp_card_file *file, const char *base)
{
    const char *fn = file->file_name;
    qp_buf_printf(f, "## Use\n\n");
    if (file->format == QP_CARD_GGUF) {
        qp_buf_printf(f, "llama.cpp:\n\n```sh\nllama-cli -m %s -p \"Once upon a time\"\nllama-server -m %s --port "
                         "8080\n```\n\nOllama:\n\n```sh\nprintf 'FROM ./%s\\n' > Modelfile\nollama create my-model -f "
                         "Modelfile && ollama run my-model\n```\n\n", fn, fn, fn);
        qp_buf_printf(f, "transformers (dequantizes the GGUF to float when it loads; needs the `gguf` package):\n\n"
                         "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
                         "model = AutoModelForCausalLM.from_pretrained(\".\", gguf_file=\"%s\")\n"
                         "tokenizer = AutoTokenizer.from_pretrained(\".\", gguf_file=\"%s\")\n```\n\n", fn, fn);
        qp_buf_printf(f, "vLLM (its GGUF support is experimental; give it the source model's tokenizer):\n\n```sh\n"
                         "vllm serve ./%s --tokenizer %s\n```\n\n", fn, base[0] ? base : "SOURCE_MODEL_DIR");
        return;
    }
    static const char *needs[] = {"", "`optimum` and `gptqmodel`", "`autoawq`", "`bitsandbytes`", ""};
    qp_buf_printf(f, "transformers%s%s%s (this directory, or its Hub id once published):\n\n```python\n"
                     "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
                     "model = AutoModelForCausalLM.from_pretrained(\".\", torch_dtype=\"auto\", device_map=\"auto\")\n"
                     "tokenizer = AutoTokenizer.from_pretrained(\".\")\n```\n\n",
                  needs[file->format][0] ? " (with " : "", needs[file->format], needs[file->format][0] ? ")" : "");
    qp_buf_printf(f, "vLLM%s:\n\n```sh\nvllm serve .%s\n```\n\n",
                  file->format == QP_CARD_SAFETENSORS ? "" : " (reads the quantization from config.json)",
                  file->format == QP_CARD_BITSANDBYTES ? " --quantization bitsandbytes" : "");
    if (file->format == QP_CARD_SAFETENSORS)
        qp_buf_printf(f, "llama.cpp: convert it first, `python convert_hf_to_gguf.py . --outtype %s`, then "
                         "`llama-cli -m` the GGUF it writes.%s\n\n",
                      file->dtype && !strcmp(file->dtype, "F32") ? "f32" : file->dtype && !strcmp(file->dtype, "F16")
                                                                             ? "f16" : "bf16",
                      !file->quantized ? ""
                      : file->dtype && !strcmp(file->dtype, "F32")
                          ? "  The weights are the quantized model's, dequantized to F32: exactly the weights qpipe "
                            "evaluated."
                          : "  The weights are the quantized model's, dequantized and rounded to this dtype: the "
                            "weights qpipe evaluated, up to that rounding.");
    else
        qp_buf_printf(f, "llama.cpp does not read this format; package the same quantize stage with `format: gguf`."
                         "\n\n");
}

static void human(char *buf, size_t n, double b)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) {
        b /= 1024;
        i++;
    }
    snprintf(buf, n, i ? "%.2f %s" : "%.0f %s", b, u[i]);
}

/* A select stage's row of the candidate it chose, or NULL (not a select,
 * or nothing chosen). */
static const json_t *selected_row(const json_t *select_meta)
{
    const char *sel = json_string_value(json_object_get(select_meta, "selected"));
    size_t i;
    json_t *row;
    json_array_foreach(json_object_get(select_meta, "candidates"), i, row)
        if (sel && !strcmp(sel, json_string_value(json_object_get(row, "candidate"))))
            return row;
    return NULL;
}

static void print_checks(qp_buf *f, const json_t *checks)
{
    size_t k;
    json_t *c;
    qp_buf_printf(f, "| check | value | limit | margin |\n|---|---|---|---|\n");
    json_array_foreach(checks, k, c)
        qp_buf_printf(f, "| %s | %.6g | %s %.6g | %.6g |\n", json_string_value(json_object_get(c, "check")),
                json_number_value(json_object_get(c, "value")), json_string_value(json_object_get(c, "op")),
                json_number_value(json_object_get(c, "limit")), json_number_value(json_object_get(c, "margin")));
    qp_buf_printf(f, "\n");
}

/* select: the policy, every candidate with its size and verdict, then the
 * chosen candidate's gate checks. */
static void print_selection(qp_buf *f, const char *id, const json_t *meta)
{
    const json_t *row = selected_row(meta);
    qp_buf_printf(f, "Selection `%s` (policy `%s`): **%s** among %zu candidates\n\n| candidate | bytes | gate | verdict |\n"
               "|---|---|---|---|\n", id, json_string_value(json_object_get(meta, "policy")),
            row ? json_string_value(json_object_get(row, "candidate")) : "none",
            json_array_size(json_object_get(meta, "candidates")));
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(meta, "candidates"), i, r)
        qp_buf_printf(f, "| %s%s%s | %.0f | %s | %s |\n", r == row ? "**" : "", json_string_value(json_object_get(r, "candidate")),
                r == row ? "**" : "", json_number_value(json_object_get(r, "bytes")),
                json_string_value(json_object_get(r, "gate")),
                json_is_true(json_object_get(r, "passed")) ? "pass" : "fail");
    qp_buf_printf(f, "\n");
    if (row) {
        qp_buf_printf(f, "Gate `%s`: **pass**\n\n", json_string_value(json_object_get(row, "gate")));
        print_checks(f, json_object_get(row, "checks"));
    }
}

/* Every metric judged by the package's inputs: evaluate outputs directly,
 * and those a gate carried in its verdict. */
static json_t *collect_metrics(const qp_stage_ctx *ctx)
{
    json_t *all = json_object();
    for (size_t i = 0; i < ctx->n_inputs; i++) {
        const qp_artifact *a = ctx->inputs[i];
        if (qp_artifact_type_of(a) == QP_ART_METRICS)
            json_object_set(all, ctx->input_ids[i], (json_t *)qp_artifact_metrics_c(a));
        if (qp_artifact_type_of(a) == QP_ART_VERDICT) {
            const json_t *meta = qp_artifact_meta_c(a), *row = selected_row(meta);
            const char *k;
            json_t *v;
            json_object_foreach(json_object_get(row ? row : meta, "inputs"), k, v)
                json_object_set(all, k, v);
        }
    }
    return all;
}

static int write_text(const char *dir, const char *name, const char *text)
{
    char *path = qp_path_join(dir, name);
    int rc = qp_write_file_atomic(path, text, strlen(text), NULL);
    free(path);
    return rc;
}

/* Source and quantization: what the packaged artifact was made from, and how. */
static void print_quantization(qp_buf *f, const qp_stage_ctx *ctx, const qp_artifact *model, size_t model_index)
{
    const json_t *meta = qp_artifact_meta_c(model);
    const json_t *qparams = json_object_get(meta, "params");
    const json_t *qmetrics = qp_artifact_metrics_c(model);
    const char *method = json_string_value(json_object_get(meta, "method"));
    const char *source = json_string_value(json_object_get(meta, "source"));
    const char *src_digest = json_string_value(json_object_get(meta, "source_model"));
    const char *calib = json_string_value(json_object_get(meta, "calibration"));
    qp_buf_printf(f, "## Source\n\n| | |\n|---|---|\n");
    char shown[512];
    display_source(shown, sizeof(shown), source);
    qp_buf_printf(f, "| source model | %s |\n", shown);
    qp_buf_printf(f, "| source artifact | `%s` |\n", src_digest ? src_digest : ctx->input_digests[model_index]);
    qp_buf_printf(f, "| packaged artifact | `%s` |\n", ctx->input_digests[model_index]);
    qp_buf_printf(f, "\n## Quantization\n\n| | |\n|---|---|\n");
    qp_buf_printf(f, "| method | %s |\n", method ? method : "none (the source's weights)");
    /* the parameters that matter for this method (its hints) */
    const qp_quant_method *qm = qp_quant_method_find(method);
    for (size_t i = 0; qparams && qm && qm->hints.card_keys[i]; i++) {
        const char *key = qm->hints.card_keys[i];
        const json_t *v = json_object_get(qparams, key);
        if (!v)
            continue;
        char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        qp_buf_printf(f, "| %s | %s |\n", key, s);
        free(s);
    }
    qp_buf_printf(f, "| importance matrix | %s |\n", json_is_true(json_object_get(meta, "imatrix")) ? "yes" : "no");
    qp_buf_printf(f, "| calibration | %s%s%s |\n", calib ? "artifact `" : "none", calib ? calib : "",
                  calib ? "`" : "");
    if (json_is_number(json_object_get(qmetrics, "bpw")))
        qp_buf_printf(f, "| bits per weight | %.4f (quantized tensors %.4f) |\n",
                      json_number_value(json_object_get(qmetrics, "bpw")),
                      json_number_value(json_object_get(qmetrics, "bpw_quantized")));
    if (json_is_number(json_object_get(qmetrics, "rel_error")))
        qp_buf_printf(f, "| relative weight error ‖W−Ŵ‖/‖W‖ | %.5f |\n",
                      json_number_value(json_object_get(qmetrics, "rel_error")));
}

/* which weights got more bits, and what each bought on the calibration windows */
static void print_mixed(qp_buf *f, const json_t *mixed)
{
    qp_buf_printf(f, "\nMixed precision: every weight starts at %s; measured alone on %lld calibration windows, "
                     "each raise below bought the most KL divergence per added byte.  KLD on those windows: "
                     "%.5f with every weight at %s, %.5f for this mix.\n\n| # | tensor | from | to | KLD gain | "
                     "bytes added |\n|---|---|---|---|---|---|\n",
                  json_string_value(json_array_get(json_object_get(mixed, "ladder"), 0)),
                  (long long)json_integer_value(json_object_get(mixed, "windows")),
                  json_number_value(json_object_get(mixed, "kld_lowest")),
                  json_string_value(json_array_get(json_object_get(mixed, "ladder"), 0)),
                  json_number_value(json_object_get(mixed, "kld_mix")));
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(mixed, "raised"), i, r)
        qp_buf_printf(f, "| %zu | %s | %s | %s | %.3g | %.0f |\n", i + 1,
                      json_string_value(json_object_get(r, "tensor")), json_string_value(json_object_get(r, "from")),
                      json_string_value(json_object_get(r, "to")), json_number_value(json_object_get(r, "kld_gain")),
                      json_number_value(json_object_get(r, "bytes_added")));
}

static void print_evaluation(qp_buf *f, const json_t *metrics)
{
    qp_buf_printf(f, "\n## Evaluation\n\n");
    if (json_object_size(metrics) == 0) {
        qp_buf_printf(f, "No evaluation was given to this package stage.\n");
        return;
    }
    qp_buf_printf(f, "| stage | metric | value |\n|---|---|---|\n");
    const char *stage;
    json_t *m;
    json_object_foreach((json_t *)metrics, stage, m) {
        const char *k;
        json_t *v;
        json_object_foreach(m, k, v)
            if (json_is_number(v))
                qp_buf_printf(f, "| %s | %s | %.6g |\n", stage, k, json_number_value(v));
    }
}

static void print_gates(qp_buf *f, const qp_stage_ctx *ctx)
{
    qp_buf_printf(f, "\n## Gates\n\n");
    int any_gate = 0;
    for (size_t i = 0; i < ctx->n_inputs; i++) {
        if (qp_artifact_type_of(ctx->inputs[i]) != QP_ART_VERDICT)
            continue;
        any_gate = 1;
        const json_t *vmeta = qp_artifact_meta_c(ctx->inputs[i]);
        if (json_object_get(vmeta, "candidates")) {
            print_selection(f, ctx->input_ids[i], vmeta);
            continue;
        }
        qp_buf_printf(f, "Gate `%s`: **%s**\n\n", ctx->input_ids[i],
                      json_string_value(json_object_get(vmeta, "verdict")));
        print_checks(f, json_object_get(vmeta, "checks"));
    }
    if (!any_gate)
        qp_buf_printf(f, "This package was not gated.\n\n");
}

static void print_file(qp_buf *f, const qp_card_file *file)
{
    const char *file_name = file->file_name, *runtimes = file->runtimes;
    uint64_t file_size = file->file_size;
    char size_s[32], mem_s[32];
    human(size_s, sizeof(size_s), (double)file_size);
    /* weights plus an fp16 KV cache for the full context */
    human(mem_s, sizeof(mem_s), (double)file_size * 1.05 + 64.0 * 1024 * 1024);
    qp_buf_printf(f, "## File\n\n| | |\n|---|---|\n| file | `%s` |\n| size | %s (%llu bytes) |\n", file_name, size_s,
                  (unsigned long long)file_size);
    qp_buf_printf(f, "| memory estimate | about %s (weights + compute buffers; add the KV cache for your context) "
                     "|\n", mem_s);
    if (file->dtype)
        qp_buf_printf(f, "| dtype | %s%s |\n", file->dtype,
                      file->quantized ? " (the quantized weights, dequantized)" : "");
    qp_buf_printf(f, "| compatible runtimes | %s |\n", runtimes);
}

/* Where it came from and how to check it. */
static void print_provenance(qp_buf *f, const qp_stage_ctx *ctx, const json_t *meta, size_t model_index)
{
    const json_t *hf = json_object_get(meta, "hf");
    qp_buf_printf(f, "\n## Provenance\n\n| | |\n|---|---|\n| made by | qpipe %s, numerics profile `%s` |\n",
                  QP_VERSION, QP_NUMERICS_PROFILE);
    qp_buf_printf(f, "| package stage | `%s`, key `%s` |\n", ctx->id, ctx->stage_key);
    qp_buf_printf(f, "| packaged artifact | `%s` |\n", ctx->input_digests[model_index]);
    if (json_is_string(json_object_get(hf, "repo")) && json_is_string(json_object_get(hf, "commit")))
        qp_buf_printf(f, "| source on the Hub | %s at commit `%s` |\n", json_string_value(json_object_get(hf, "repo")),
                      json_string_value(json_object_get(hf, "commit")));
    qp_buf_printf(f, "\n`provenance.json` beside this card holds the stage's inputs, parameters and metrics.  The run "
                     "record on branch `qpipe/provenance` (`qpipe log`) links this package's output digest to the "
                     "recipe digest and source commit; `qpipe verify RECIPE` rebuilds every stage and compares.\n");
}

/* provenance.json: the stage, its inputs and params, the metrics and the file. */
static int write_provenance(const char *dir, const qp_stage_ctx *ctx, const json_t *qparams, json_t *metrics,
                            const char *file_name, uint64_t file_size)
{
    json_t *inputs = json_object();
    for (size_t i = 0; i < ctx->n_inputs; i++)
        json_object_set_new(inputs, ctx->input_ids[i], json_string(ctx->input_digests[i]));
    json_t *prov = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:O, s:O, s:{s:s, s:I}}", "qpipe_version", QP_VERSION,
                             "numerics", QP_NUMERICS_PROFILE, "stage", ctx->id, "stage_key", ctx->stage_key, "kind",
                             "package", "inputs", inputs, "params", ctx->params, "metrics", metrics, "file", "name",
                             file_name, "size", (json_int_t)file_size);
    if (qparams)
        json_object_set(prov, "quantization", (json_t *)qparams);
    char *text = json_dumps(prov, JSON_SORT_KEYS | JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    char *with_nl = qp_strfmt("%s\n", text);
    int rc = write_text(dir, "provenance.json", with_nl);
    free(with_nl);
    free(text);
    json_decref(prov);
    return rc;
}

int qp_model_card_write(const char *dir, const qp_stage_ctx *ctx, const qp_artifact *model, size_t model_index,
                        const qp_card_file *file_in)
{
    qp_card_file filed = *file_in, *file = &filed;
    file->quantized = json_is_string(json_object_get(qp_artifact_meta_c(model), "method"));
    const json_t *meta = qp_artifact_meta_c(model);
    json_t *metrics = collect_metrics(ctx);
    qp_buf f = QP_BUF_INIT;
    char base[256];
    card_license license;
    base_model_of(base, sizeof(base), ctx, meta);
    license_of(&license, ctx, model);
    print_front_matter(&f, ctx, model, file, base, &license);
    qp_buf_printf(&f, "# %s\n\n", file->title ? file->title : file->file_name);
    qp_buf_printf(&f, "Packaged by qpipe %s (stage `%s`, key `%s`), numerics profile `%s`.\n\n", QP_VERSION, ctx->id,
                  ctx->stage_key, QP_NUMERICS_PROFILE);
    print_use(&f, file, base);
    print_quantization(&f, ctx, model, model_index);
    if (json_object_get(meta, "mixed"))
        print_mixed(&f, json_object_get(meta, "mixed"));
    print_evaluation(&f, metrics);
    print_gates(&f, ctx);
    print_file(&f, file);
    print_provenance(&f, ctx, meta, model_index);
    int rc = write_text(dir, QP_MODEL_CARD_FILE, qp_buf_cstr(&f));
    qp_buf_free(&f);
    if (rc == 0)
        rc = write_provenance(dir, ctx, json_object_get(meta, "params"), metrics, file->file_name, file->file_size);
    json_decref(metrics);
    return rc;
}
