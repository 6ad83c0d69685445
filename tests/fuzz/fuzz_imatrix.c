/* imatrix.dat (llama.cpp's legacy format). */
#include "quant/imatrix.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(data, size, "imatrix.dat");
    if (!path)
        return 0;
    qp_imatrix *m = NULL;
    int rc = qp_imatrix_read(&m, path);
    fuzz_check_error(rc);
    if (rc == 0) {
        for (size_t i = 0; i < qp_imatrix_count(m); i++) {
            const qp_imatrix_entry *e = qp_imatrix_at(m, i);
            if (qp_imatrix_find(m, e->name) == NULL)
                abort();
        }
        qp_imatrix_free(m);
    }
    return 0;
}
