/* safetensors headers: every tensor view the parser accepts is read whole. */
#include "model/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

volatile unsigned fuzz_sink;   /* the bytes read are used: the reads stay */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(data, size, "model.safetensors");
    if (!path)
        return 0;
    qp_safetensors *st = NULL;
    int rc = qp_safetensors_open(&st, path);
    fuzz_check_error(rc);
    if (rc == 0) {
        unsigned sum = 0;
        for (size_t i = 0; i < qp_safetensors_count(st); i++) {
            const qp_tensor_view *v = qp_safetensors_tensor(st, i);
            const unsigned char *p = v->data;
            for (uint64_t b = 0; b < v->nbytes; b += 61)
                sum += p[b];
        }
        fuzz_sink = sum;
        qp_safetensors_free(st);
    }
    return 0;
}
