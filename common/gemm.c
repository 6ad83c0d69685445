/* qp_sgemm / qp_dgemm: the reference, the blocked driver over the
 * micro-kernels, and the choice between them (common/gemm.h). */
#include "common/gemm.h"
#include "common/alloc.h"
#include "common/gemm_kernels.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Block sizes, in elements.  MC is a multiple of every MR (6, 12), NC of
 * every NR (8, 16, 32).  An A block (MC·KC) stays in L2 and a B panel
 * (KC·NR) in L1 while the kernel sweeps the rows; the f64 blocks hold as
 * many bytes as the f32 ones.  They change speed only, never bits. */
#define S_MC 96
#define S_KC 256
#define S_NC 512
#define D_MC 96
#define D_KC 128
#define D_NC 256

_Static_assert(S_MC % 8 == 0 && S_MC % 6 == 0 && S_MC % 4 == 0 && D_MC % 12 == 0 && D_MC % 6 == 0 &&
                   D_MC % 4 == 0, "MC must be a multiple of every kernel's MR");
_Static_assert(S_NC % 32 == 0 && S_NC % 16 == 0 && D_NC % 16 == 0 && D_NC % 8 == 0,
               "NC must be a multiple of every kernel's NR");

/* Below this many multiply-adds the reference is as fast as packing. */
#define SMALL_PRODUCT 2048

/* The AVX2 transpose for packing, when the CPU has AVX2 (set once). */
static qp_gemm_t8_fn g_t8;

/* ---- the path in use ---- */

static atomic_int g_path = QP_GEMM_AUTO;   /* resolved: never AUTO after init */
static pthread_once_t g_path_once = PTHREAD_ONCE_INIT;

int qp_gemm_path_supported(qp_gemm_path path)
{
    switch (path) {
    case QP_GEMM_AUTO:
    case QP_GEMM_SCALAR:
        return 1;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    case QP_GEMM_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0;
    case QP_GEMM_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") ? 1 : 0;
#else
    default:
        return 0;
#endif
    }
    return 0;
}

static qp_gemm_path best_path(void)
{
    if (qp_gemm_path_supported(QP_GEMM_AVX512))
        return QP_GEMM_AVX512;
    if (qp_gemm_path_supported(QP_GEMM_AVX2))
        return QP_GEMM_AVX2;
    return QP_GEMM_SCALAR;
}

static void init_path(void)
{
    if (qp_gemm_path_supported(QP_GEMM_AVX2))
        g_t8 = qp_gemm_transpose8_avx2;
    qp_gemm_path p = best_path();
    const char *env = getenv("QPIPE_GEMM");
    static const qp_gemm_path named[] = {QP_GEMM_SCALAR, QP_GEMM_AVX2, QP_GEMM_AVX512};
    for (size_t i = 0; env && i < sizeof named / sizeof named[0]; i++)
        if (strcmp(env, qp_gemm_path_name(named[i])) == 0 && qp_gemm_path_supported(named[i]))
            p = named[i];
    atomic_store(&g_path, (int)p);
}

qp_gemm_path qp_gemm_path_active(void)
{
    pthread_once(&g_path_once, init_path);
    return (qp_gemm_path)atomic_load_explicit(&g_path, memory_order_relaxed);
}

int qp_gemm_set_path(qp_gemm_path path)
{
    pthread_once(&g_path_once, init_path);
    if (!qp_gemm_path_supported(path))
        return -1;
    atomic_store(&g_path, (int)(path == QP_GEMM_AUTO ? best_path() : path));
    return 0;
}

const char *qp_gemm_path_name(qp_gemm_path path)
{
    switch (path) {
    case QP_GEMM_AUTO: return "auto";
    case QP_GEMM_SCALAR: return "scalar";
    case QP_GEMM_AVX2: return "avx2";
    case QP_GEMM_AVX512: return "avx512";
    }
    return "?";
}

/* ---- per-thread packing buffers ---- */

#define WS_A_BYTES ((size_t)S_MC * S_KC * sizeof(float) > (size_t)D_MC * D_KC * sizeof(double) \
                        ? (size_t)S_MC * S_KC * sizeof(float) : (size_t)D_MC * D_KC * sizeof(double))
#define WS_B_BYTES ((size_t)S_KC * S_NC * sizeof(float) > (size_t)D_KC * D_NC * sizeof(double) \
                        ? (size_t)S_KC * S_NC * sizeof(float) : (size_t)D_KC * D_NC * sizeof(double))

/* One allocation per thread, freed when the thread exits (the key's
 * destructor); the thread-local pointer is what the thread itself uses. */
static _Thread_local unsigned char *tl_ws;
static pthread_key_t ws_key;
static pthread_once_t ws_once = PTHREAD_ONCE_INIT;
static int ws_key_ok;

/* Runs on the exiting thread: a destructor of another key that runs after
 * this one and multiplies matrices must not find the freed buffer. */
static void ws_free(void *p)
{
    free(p);
    tl_ws = NULL;
}

static void ws_init(void) { ws_key_ok = pthread_key_create(&ws_key, ws_free) == 0; }

/* NULL when the thread-local key cannot be set up: the caller then runs the
 * reference, which gives the same bits. */
static unsigned char *workspace(void)
{
    pthread_once(&g_path_once, init_path);   /* g_t8 */
    if (tl_ws)
        return tl_ws;
    pthread_once(&ws_once, ws_init);
    if (!ws_key_ok)
        return NULL;
    unsigned char *w = qp_xaligned_alloc(64, WS_A_BYTES + WS_B_BYTES);
    if (pthread_setspecific(ws_key, w) != 0) {
        free(w);
        return NULL;
    }
    tl_ws = w;
    return w;
}

/* ---- the products, once per element type (common/gemm_blocked.inc) ---- */

#define T float
#define SUF s
#define KERNEL qp_gemm_kernel_s
#define GEMM_FMA fmaf
#define GEMM_MC S_MC
#define GEMM_KC S_KC
#define GEMM_NC S_NC
#define GEMM_T8 g_t8
#define GEMM_C_NR 16
#define GEMM_AVX2_KERNEL qp_gemm_avx2_s
#define GEMM_AVX512_KERNEL qp_gemm_avx512_s
#include "common/gemm_blocked.inc"

#define T double
#define SUF d
#define KERNEL qp_gemm_kernel_d
#define GEMM_FMA fma
#define GEMM_MC D_MC
#define GEMM_KC D_KC
#define GEMM_NC D_NC
#define GEMM_C_NR 8
#define GEMM_AVX2_KERNEL qp_gemm_avx2_d
#define GEMM_AVX512_KERNEL qp_gemm_avx512_d
#include "common/gemm_blocked.inc"

/* ---- a left operand packed once ---- */

size_t qp_sgemm_packed_size(qp_gemm_path path, size_t m, size_t k)
{
    size_t mr = (size_t)kernel_s(path)->mr;
    return (m + mr - 1) / mr * mr * k;
}

size_t qp_sgemm_pack_parts(size_t k) { return (k + S_KC - 1) / S_KC; }

void qp_sgemm_pack_a(qp_gemm_path path, float *ap, size_t part, qp_trans ta, size_t m, size_t k, float alpha,
                     const float *a, size_t lda)
{
    pthread_once(&g_path_once, init_path);   /* g_t8 */
    pack_a_slice_s(ap, (size_t)kernel_s(path)->mr, part, ta, m, k, alpha, a, lda);
}

void qp_sgemm_packed(qp_gemm_path path, const float *ap, size_t m, size_t k, qp_trans tb, size_t n, const float *b,
                     size_t ldb, float beta, float *c, size_t ldc)
{
    if (m == 0 || n == 0)
        return;
    const qp_gemm_kernel_s *kd = kernel_s(path);
    unsigned char *ws = k ? workspace() : NULL;
    if (ws) {
        gemm_blocked_s(kd, ap, QP_NOTRANS, tb, m, n, k, 1.0f, NULL, 0, b, ldb, beta, c, ldc, NULL,
                       (float *)(ws + WS_A_BYTES));
        return;
    }
    /* No buffer for B (or k = 0): the reference's chain, reading A from
     * its packed place. */
    const size_t mr = (size_t)kd->mr, mpad = (m + mr - 1) / mr * mr;
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            float acc = beta == 0 ? 0.0f : beta == 1 ? c[i * ldc + j] : beta * c[i * ldc + j];
            for (size_t p = 0; p < k; p++) {
                size_t pc = p / S_KC * S_KC, kc = k - pc < S_KC ? k - pc : S_KC;
                float av = ap[pc * mpad + (i / mr) * kc * mr + (p - pc) * mr + i % mr];
                float bv = tb == QP_NOTRANS ? b[p * ldb + j] : b[j * ldb + p];
                acc = fmaf(av, bv, acc);
            }
            c[i * ldc + j] = acc;
        }
}
