/* qp_parse_size: "10G", "512M", "1.5GiB", "100k", "1000" -> bytes.
 * Suffixes K/M/G/T (optionally followed by "B" or "iB", any case) are binary
 * multiples; a fraction is allowed with a suffix and is rounded down to a
 * whole byte.  Arithmetic is exact integer math, so "1.5GiB" is exactly
 * 1610612736. */
#include "cache/cache.h"
#include "common/error.h"

#include <ctype.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

static int bad(const char *s, const char *why)
{
    return qp_error_set(QP_EUSAGE, "invalid size '%.80s': %s (expected e.g. 10G, 512M, 1.5GiB, 100k or a byte count)",
                        s, why);
}

int qp_parse_size(const char *s, uint64_t *out)
{
    if (!s)
        return bad("", "empty");
    const char *p = s;
    while (isspace((unsigned char)*p))
        p++;
    if (!isdigit((unsigned char)*p))
        return bad(s, *p ? "does not start with a digit" : "empty");
    uint64_t whole = 0;
    for (; isdigit((unsigned char)*p); p++) {
        if (whole > (UINT64_MAX - 9) / 10)
            return bad(s, "too large");
        whole = whole * 10 + (uint64_t)(*p - '0');
    }
    /* fraction kept as frac / 10^frac_digits, at most 18 digits */
    uint64_t frac = 0, frac_scale = 1;
    int has_point = 0;
    if (*p == '.') {
        has_point = 1;
        p++;
        if (!isdigit((unsigned char)*p))
            return bad(s, "no digits after the decimal point");
        for (; isdigit((unsigned char)*p); p++)
            if (frac_scale < 1000000000000000000ULL) {
                frac = frac * 10 + (uint64_t)(*p - '0');
                frac_scale *= 10;
            }
    }
    while (isspace((unsigned char)*p))
        p++;
    unsigned shift = 0;
    switch (toupper((unsigned char)*p)) {
    case 'K': shift = 10; break;
    case 'M': shift = 20; break;
    case 'G': shift = 30; break;
    case 'T': shift = 40; break;
    case 'B': case '\0': shift = 0; break;
    default: return bad(s, "unknown unit");
    }
    if (shift) {
        p++;
        if (toupper((unsigned char)p[0]) == 'I' && toupper((unsigned char)p[1]) == 'B')
            p += 2;
        else if (toupper((unsigned char)p[0]) == 'B')
            p++;
    } else if (toupper((unsigned char)*p) == 'B') {
        p++;
    }
    while (isspace((unsigned char)*p))
        p++;
    if (*p)
        return bad(s, "unexpected characters after the unit");
    if (!shift && has_point)
        return bad(s, "a byte count must be a whole number");
    if (whole > (UINT64_MAX >> shift))
        return bad(s, "too large");
    uint64_t v = whole << shift;
    /* frac/scale * 2^shift, exact: frac < 10^18 < 2^60 and shift <= 40 fit
     * in 128 bits */
    unsigned __int128 f = ((unsigned __int128)frac << shift) / frac_scale;
    if ((unsigned __int128)v + f > UINT64_MAX)
        return bad(s, "too large");
    *out = v + (uint64_t)f;
    return 0;
}
