/* The Hugging Face Hub's revision listing (stages/fetch_hf.c): the JSON a
 * server — or anything answering at HF_ENDPOINT — sends for
 * /api/models/{repo}/revision/{rev}, with the file-name, count and
 * duplicate checks a download applies. */
#include "stages/fetch_hf.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_check_error(qp_hf_listing_check((const char *)data, size));
    return 0;
}
