/* The YAML tree alone (bytes with NULs included, as a lock file is read). */
#include "pipeline/yaml_tree.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qp_ynode *root = NULL;
    fuzz_check_error(qp_ytree_parse(&root, "fuzz.yaml", (const char *)data, size));
    qp_ynode_free(root);
    return 0;
}
