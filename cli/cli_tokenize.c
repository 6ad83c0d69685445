/* `qpipe tokenize PATH [-f FILE | TEXT]`: the user's window into a model's
 * tokenizer, like llama.cpp's llama-tokenize.  PATH is a Hugging Face model
 * directory (tokenizer.model, else tokenizer.json + tokenizer_config.json,
 * as the pipeline loads it)
 * or a .gguf file (its tokenizer.ggml.* vocabulary).  Prints the ids as one
 * JSON array on one line.
 *
 * Defaults follow llama-tokenize: special tokens written in the text
 * ("<|im_start|>") become their ids (--no-special: plain text), and the
 * model's own add-BOS / add-EOS settings apply (--no-bos drops the BOS). */
#include "cli/cli.h"
#include "common/alloc.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/fsutil.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char tokenize_usage[] =
    "usage: qpipe tokenize PATH [-f FILE | TEXT] [--no-special] [--no-bos] [--pieces]\n"
    "  PATH          a model directory (tokenizer.model, else tokenizer.json) or a .gguf file\n"
    "  -f FILE       tokenize the bytes of FILE instead of TEXT\n"
    "  --no-special  special tokens in the text are plain text, not their ids\n"
    "  --no-bos      do not prepend the BOS the model asks for\n"
    "  --pieces      print [id, \"piece\"] pairs instead of bare ids\n";

static int load(qp_tokenizer **out, const char *path)
{
    if (qp_is_dir(path))
        return qp_tokenizer_load_dir(out, path);
    qp_gguf *g = NULL;
    int rc = qp_gguf_open(&g, path);
    if (rc == 0)
        rc = qp_tokenizer_load_gguf(out, g, path);
    qp_gguf_free(g);
    return rc;
}

/* One JSON array; pieces quoted with jansson's escaping rules.  Written
 * out every 1 MiB: a 100 MB text has ~65M ids, whose text alone would
 * double the memory the ids take. */
static void print_ids(const qp_tokenizer *t, const int *ids, size_t n, int pieces)
{
    qp_buf b = QP_BUF_INIT;
    qp_buf_puts(&b, "[");
    for (size_t i = 0; i < n; i++) {
        if (b.len >= ((size_t)1 << 20)) {
            fwrite(b.data, 1, b.len, stdout);
            qp_buf_truncate(&b, 0);
        }
        if (i)
            qp_buf_puts(&b, ", ");
        if (!pieces) {
            qp_buf_printf(&b, "%d", ids[i]);
            continue;
        }
        json_t *s = json_string(qp_tokenizer_piece(t, ids[i]));
        char *q = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
        qp_buf_printf(&b, "[%d, %s]", ids[i], q ? q : "null");
        free(q);
        json_decref(s);
    }
    qp_buf_puts(&b, "]\n");
    fwrite(b.data, 1, b.len, stdout);
    qp_buf_free(&b);
}

int qp_cli_tokenize(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"file", required_argument, NULL, 'f'},
        {"no-special", no_argument, NULL, 'S'},
        {"no-bos", no_argument, NULL, 'B'},
        {"pieces", no_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *file = NULL;
    int special = 1, bos = 1, pieces = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "f:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'f': file = optarg; break;
        case 'S': special = 0; break;
        case 'B': bos = 0; break;
        case 'P': pieces = 1; break;
        case 'h': fputs(tokenize_usage, stdout); return 0;
        default: fputs(tokenize_usage, stderr); return 2;
        }
    }
    int nargs = argc - optind;
    if (nargs != (file ? 1 : 2)) {
        fprintf(stderr, "qpipe: tokenize needs PATH and either -f FILE or one TEXT argument (see 'qpipe "
                        "tokenize --help')\n");
        return 2;
    }
    const char *path = argv[optind];
    qp_tokenizer *t = NULL;
    char *text = NULL;
    int *ids = NULL;
    size_t len = 0, n = 0;
    int rc = load(&t, path);
    if (rc)
        goto done;
    if (file)
        rc = qp_read_file(file, &text, &len);
    else {
        text = qp_xstrdup(argv[optind + 1]);
        len = strlen(text);
    }
    if (rc)
        goto done;
    unsigned flags = (special ? QP_TOK_PARSE_SPECIAL : 0u) |
                     (bos && qp_tokenizer_wants_bos(t) ? QP_TOK_ADD_BOS : 0u) |
                     (qp_tokenizer_wants_eos(t) ? QP_TOK_ADD_EOS : 0u);
    if ((rc = qp_tokenizer_encode(t, text, len, flags, &ids, &n)) != 0)
        goto done;
    print_ids(t, ids, n, pieces);
done:
    free(ids);
    free(text);
    qp_tokenizer_free(t);
    if (rc) {
        fprintf(stderr, "qpipe: %s\n", qp_error_last());
        return qp_exit_status(rc);
    }
    return 0;
}
