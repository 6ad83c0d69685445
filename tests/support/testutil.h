/* Helpers shared by the cmocka tests.  Tests run from the repository root. */
#ifndef QP_TESTS_TESTUTIL_H
#define QP_TESTS_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

/* The shared reference data: $QPIPE_SHARED, else ../shared. */
const char *qp_test_shared_dir(void);
/* malloc'ed path inside the shared directory. */
char *qp_test_shared_path(const char *rel);
/* A fresh empty temp directory (malloc'ed); removed by qp_test_rmtree. */
char *qp_test_tmpdir(void);
void qp_test_rmtree(const char *dir);
/* cmocka setup/teardown: *state is a fresh temp directory (malloc'ed path),
 * removed with its contents afterwards. */
int qp_test_setup_tmpdir(void **state);
int qp_test_teardown_tmpdir(void **state);
/* Writes a file (creating parent directories); aborts the test on failure. */
void qp_test_write(const char *path, const void *data, size_t n);
void qp_test_write_str(const char *path, const char *text);

/* The quantize -> dequantize round trip of one weight w [rows, cols] into
 * d [rows, cols] (asserting inside on failure). */
typedef void (*qp_test_roundtrip_fn)(void *ud, const float *w, int64_t rows, int64_t cols, float *d);
struct qp_safetensors;
/* ‖W−Ŵ‖/‖W‖ over the 7 linear weights (q,k,v,o,gate,up,down) of the first
 * `layers` layers of a LLaMA checkpoint, Ŵ from fn; sums in double in
 * layer, weight, element order. */
double qp_test_linears_rel_error(struct qp_safetensors *st, int layers, qp_test_roundtrip_fn fn, void *ud);

/* Deterministic test data from one process-wide SplitMix64 (common/rng.h):
 * seed, then draw; the same seed gives the same data on every machine. */
void qp_test_seed(uint64_t seed);
uint64_t qp_test_next_u64(void);
uint64_t qp_test_below(uint64_t n);   /* [0, n), unbiased */
float qp_test_uniform(void);   /* [0, 1), 24 bits */
float qp_test_gauss(void);     /* N(0, 1), Box-Muller in float */

#endif
