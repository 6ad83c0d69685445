/* config.json of a LLaMA / Qwen2 / Llama 3 checkpoint. */
#include "model/config.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qp_llama_config c;
    fuzz_check_error(qp_llama_config_parse(&c, (const char *)data, size, "config.json"));
    return 0;
}
