/* What the Slurm executor reads from other programs: `scontrol -o show
 * job` records (task ranges, states, exit codes) and time limits. */
#include <stdlib.h>
#include <string.h>

#include "pipeline/recipe_int.h"
#include "pipeline/slurm.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_text(data, size);
    qp_slurm_task tasks[8];
    memset(tasks, 0, sizeof(tasks));
    qp_slurm_parse_scontrol(text, "7", tasks, 8);
    for (size_t i = 0; i < 8; i++)
        if (!memchr(tasks[i].state, 0, sizeof(tasks[i].state)) || !memchr(tasks[i].job, 0, sizeof(tasks[i].job)))
            abort();
    long m = qp_recipe_parse_minutes(text);
    if (m < -1 || m > 366L * 24 * 60)
        abort();
    free(text);
    return 0;
}
