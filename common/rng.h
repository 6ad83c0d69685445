/* A small deterministic generator (SplitMix64): the same seed gives the same
 * sequence on every machine and build, so calibration samples are
 * reproducible and can be recorded in provenance. */
#ifndef QP_COMMON_RNG_H
#define QP_COMMON_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t state;
} qp_rng;

static inline void qp_rng_seed(qp_rng *r, uint64_t seed) { r->state = seed; }

static inline uint64_t qp_rng_next(qp_rng *r)
{
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) without modulo bias (rejection sampling); n > 0. */
static inline uint64_t qp_rng_below(qp_rng *r, uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do
        x = qp_rng_next(r);
    while (x >= limit);
    return x % n;
}

#endif
