/* tokenizer.json (byte-level BPE, regex pre-tokenizers, added tokens) with
 * no tokenizer_config.json, then an encode and a decode. */
#include "model/tokenizer.h"
#include "tests/fuzz/fuzz_tok.h"
#include "tests/fuzz/fuzz_util.h"

static const char sample[] = "Hello  world!\n\t<|im_start|> 42 \xc3\xa9\xff";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qp_tokenizer *t = NULL;
    int rc = qp_tokenizer_load_hf(&t, (const char *)data, size, NULL, 0, "tokenizer.json");
    fuzz_check_error(rc);
    if (rc == 0)
        fuzz_run_tokenizer(t, sample, sizeof sample - 1);
    return 0;
}
