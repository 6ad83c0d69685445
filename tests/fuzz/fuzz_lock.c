/* RECIPE.lock parsing: the end line, the YAML, the shape checks. */
#include <jansson.h>

#include "pipeline/lock.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *j = NULL;
    fuzz_check_error(qp_lock_parse(&j, "fuzz.yaml.lock", (const char *)data, size));
    json_decref(j);
    return 0;
}
