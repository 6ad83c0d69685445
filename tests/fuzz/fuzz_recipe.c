/* Recipe loading: YAML tree, merges and aliases, interpolation, parameter
 * checking, the stage graph. */
#include "pipeline/recipe.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_text(data, size);
    if (!text)
        return 0;
    qp_recipe *r = NULL;
    fuzz_check_error(qp_recipe_load_string(&r, "fuzz.yaml", text));
    qp_recipe_free(r);
    free(text);
    return 0;
}
