/* tokenizer.model (SentencePiece protobuf), then an encode and a decode. */
#include "model/tokenizer.h"
#include "tests/fuzz/fuzz_tok.h"
#include "tests/fuzz/fuzz_util.h"

static const char sample[] = "To be, or not\n to be: \xe2\x96\x81 \xff";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(data, size, "tokenizer.model");
    if (!path)
        return 0;
    qp_tokenizer *t = NULL;
    int rc = qp_tokenizer_load_spm(&t, path);
    fuzz_check_error(rc);
    if (rc == 0)
        fuzz_run_tokenizer(t, sample, sizeof sample - 1);
    return 0;
}
