/* Layer-name helpers of hf_names.h. */
#include "model/hf_names.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

char *qp_hf_layer_name(char *buf, size_t cap, int layer, const char *suffix)
{
    if (cap)
        snprintf(buf, cap, QP_HF_LAYERS "%d.%s", layer, suffix);
    return buf;
}

int qp_hf_layer_of(const char *name, const char **rest)
{
    const size_t plen = strlen(QP_HF_LAYERS);
    if (strncmp(name, QP_HF_LAYERS, plen) != 0)
        return -1;
    const char *p = name + plen;
    long n = 0;
    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        n = n * 10 + (*p - '0');
        if (n > INT_MAX)
            return -1;
    }
    if (*p != '.')
        return -1;
    if (rest)
        *rest = p + 1;
    return (int)n;
}
