#include "stages/dataset.h"
#include "common/buf.h"
#include "common/error.h"
#include "common/fsutil.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int qp_dataset_read(char **out, size_t *len, const char *path, const char *field)
{
    char *raw = NULL;
    size_t n = 0;
    int rc = qp_read_file(path, &raw, &n);
    if (rc)
        return rc;
    if (!ends_with(path, ".jsonl") && !ends_with(path, ".json")) {
        *out = raw;
        *len = n;
        return 0;
    }
    size_t line_no = 0;
    qp_buf text = QP_BUF_INIT;
    qp_buf_reserve(&text, n + 1);
    char *save = NULL;
    for (char *line = strtok_r(raw, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        line_no++;
        if (!line[0] || (line[0] == '\r' && !line[1]))
            continue;
        json_error_t jerr;
        json_t *rec = json_loads(line, 0, &jerr);
        const char *t = json_string_value(json_object_get(rec, field));
        if (!t) {
            rc = qp_error_set(QP_EFORMAT, "%s:%zu: %s", path, line_no,
                              rec ? "record has no string field (set field: to the text's key)" : jerr.text);
            json_decref(rec);
            break;
        }
        if (text.len)
            qp_buf_puts(&text, "\n\n");
        qp_buf_puts(&text, t);
        json_decref(rec);
    }
    free(raw);
    if (rc) {
        qp_buf_free(&text);
        return rc;
    }
    *out = qp_buf_detach(&text, len);
    return 0;
}

