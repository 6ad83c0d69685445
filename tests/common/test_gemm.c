/* common/gemm.h: every fast path gives the reference's bits (the numerics
 * contract), on odd shapes, every transpose, alpha/beta cases, strides and
 * shapes that cross the K, M and N blocks; and the reference is the chain
 * of fused multiply-adds it claims to be. */
#include "common/gemm.h"
#include "tests/support/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const qp_gemm_path fast_paths[] = {QP_GEMM_SCALAR, QP_GEMM_AVX2, QP_GEMM_AVX512};
#define N_FAST (sizeof fast_paths / sizeof fast_paths[0])

static void fill_f(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = qp_test_gauss();
}

static void fill_d(double *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (double)qp_test_gauss() + (double)qp_test_uniform() * 1e-9;
}

static int skip_path(qp_gemm_path p)
{
    if (qp_gemm_path_supported(p))
        return 0;
    static int said[8];
    if (!said[p]) {
        printf("SKIP gemm path %s: this CPU cannot run it\n", qp_gemm_path_name(p));
        said[p] = 1;
    }
    return 1;
}

/* One case of both types: every supported fast path equals the reference
 * bit for bit.  Leading dimensions are padded by `pad`. */
static void check_case(qp_trans ta, qp_trans tb, size_t m, size_t n, size_t k, double alpha, double beta,
                       size_t pad)
{
    size_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    size_t lda = ac + pad, ldb = bc + pad, ldc = n + pad;
    size_t na = ar * lda, nb = br * ldb, nc = m * ldc;
    float *a = malloc(na * sizeof *a), *b = malloc(nb * sizeof *b), *c0 = malloc(nc * sizeof *c0);
    float *cr = malloc(nc * sizeof *cr), *cf = malloc(nc * sizeof *cf);
    double *da = malloc(na * sizeof *da), *db = malloc(nb * sizeof *db), *dc0 = malloc(nc * sizeof *dc0);
    double *dcr = malloc(nc * sizeof *dcr), *dcf = malloc(nc * sizeof *dcf);
    assert_non_null(a && b && c0 && cr && cf && da && db && dc0 && dcr && dcf);
    fill_f(a, na);
    fill_f(b, nb);
    fill_f(c0, nc);
    fill_d(da, na);
    fill_d(db, nb);
    fill_d(dc0, nc);
    if (beta == 0.0) {   /* C is write-only then: NaN must not leak in */
        for (size_t i = 0; i < nc; i++)
            c0[i] = NAN, dc0[i] = NAN;
    }
    memcpy(cr, c0, nc * sizeof *cr);
    qp_sgemm_ref(ta, tb, m, n, k, (float)alpha, a, lda, b, ldb, (float)beta, cr, ldc);
    memcpy(dcr, dc0, nc * sizeof *dcr);
    qp_dgemm_ref(ta, tb, m, n, k, alpha, da, lda, db, ldb, beta, dcr, ldc);
    for (size_t p = 0; p < N_FAST; p++) {
        if (skip_path(fast_paths[p]))
            continue;
        memcpy(cf, c0, nc * sizeof *cf);
        assert_int_equal(qp_sgemm_with(fast_paths[p], ta, tb, m, n, k, (float)alpha, a, lda, b, ldb, (float)beta,
                                       cf, ldc), 0);
        if (memcmp(cf, cr, nc * sizeof *cf) != 0) {
            for (size_t i = 0; i < nc; i++)
                if (memcmp(&cf[i], &cr[i], sizeof cf[i]) != 0) {
                    print_error("f32 %s ta %d tb %d m %zu n %zu k %zu alpha %g beta %g: C[%zu][%zu] %a, reference %a\n",
                                qp_gemm_path_name(fast_paths[p]), ta, tb, m, n, k, alpha, beta, i / ldc, i % ldc,
                                cf[i], cr[i]);
                    break;
                }
            fail();
        }
        memcpy(dcf, dc0, nc * sizeof *dcf);
        assert_int_equal(qp_dgemm_with(fast_paths[p], ta, tb, m, n, k, alpha, da, lda, db, ldb, beta, dcf, ldc), 0);
        if (memcmp(dcf, dcr, nc * sizeof *dcf) != 0) {
            print_error("f64 %s ta %d tb %d m %zu n %zu k %zu alpha %g beta %g differs from the reference\n",
                        qp_gemm_path_name(fast_paths[p]), ta, tb, m, n, k, alpha, beta);
            fail();
        }
    }
    /* The plain entry points (whatever path is active, small products via
     * the reference) give the same bits too. */
    memcpy(cf, c0, nc * sizeof *cf);
    qp_sgemm(ta, tb, m, n, k, (float)alpha, a, lda, b, ldb, (float)beta, cf, ldc);
    assert_memory_equal(cf, cr, nc * sizeof *cf);
    memcpy(dcf, dc0, nc * sizeof *dcf);
    qp_dgemm(ta, tb, m, n, k, alpha, da, lda, db, ldb, beta, dcf, ldc);
    assert_memory_equal(dcf, dcr, nc * sizeof *dcf);
    free(a), free(b), free(c0), free(cr), free(cf);
    free(da), free(db), free(dc0), free(dcr), free(dcf);
}

/* The odd shapes: 1, 7, 33, 255 rows, columns and depth, every
 * transpose, with alpha/beta 1/0, 1/1 (an update) and -0.125/0.5. */
static void test_odd_shapes(void **state)
{
    (void)state;
    static const size_t dims[] = {1, 7, 33, 255};
    static const double ab[][2] = {{1.0, 0.0}, {1.0, 1.0}, {-0.125, 0.5}};
    qp_test_seed(11);
    for (int t = 0; t < 4; t++)
        for (size_t i = 0; i < 4; i++)
            for (size_t j = 0; j < 4; j++)
                for (size_t l = 0; l < 4; l++)
                    for (size_t s = 0; s < 3; s++)
                        check_case((qp_trans)(t & 1), (qp_trans)(t >> 1), dims[i], dims[j], dims[l], ab[s][0],
                                   ab[s][1], (i + j + l) % 3);
}

/* Shapes that cross several MC, KC and NC blocks (and their edges), with
 * GPTQ's update (alpha -1, beta 1, A transposed) and attention's scale. */
static void test_blocked_shapes(void **state)
{
    (void)state;
    qp_test_seed(12);
    check_case(QP_NOTRANS, QP_TRANS, 200, 600, 700, 1.0, 0.0, 5);
    check_case(QP_TRANS, QP_NOTRANS, 64, 1100, 128, -1.0, 1.0, 0);
    check_case(QP_NOTRANS, QP_TRANS, 97, 130, 64, 0.125, 0.0, 3);
    check_case(QP_NOTRANS, QP_NOTRANS, 97, 64, 300, 1.0, 0.0, 1);
    check_case(QP_TRANS, QP_NOTRANS, 300, 260, 513, 1.0, 0.0, 0);
    check_case(QP_TRANS, QP_TRANS, 13, 41, 1030, 2.0, -1.0, 2);
}

/* The reference is the fma chain: with values where fma and a rounded
 * product differ, it follows fma; and it agrees with a double-precision
 * product to f32 accuracy. */
static void test_reference_is_fma_chain(void **state)
{
    (void)state;
    /* a·b = 1 + 2^-11 + 2^-24 exactly: the rounded product loses the
     * 2^-24 (a tie, to even), fma keeps it */
    float a[1] = {1.0f + 0x1p-12f}, b[1] = {1.0f + 0x1p-12f}, c[1] = {-1.0f};
    qp_sgemm_ref(QP_NOTRANS, QP_NOTRANS, 1, 1, 1, 1.0f, a, 1, b, 1, 1.0f, c, 1);
    assert_true(c[0] == 0x1p-11f + 0x1p-24f);
    assert_true(a[0] * b[0] - 1.0f == 0x1p-11f);
    for (size_t p = 0; p < N_FAST; p++) {
        if (skip_path(fast_paths[p]))
            continue;
        float cf[1] = {-1.0f};
        assert_int_equal(qp_sgemm_with(fast_paths[p], QP_NOTRANS, QP_NOTRANS, 1, 1, 1, 1.0f, a, 1, b, 1, 1.0f, cf, 1), 0);
        assert_true(cf[0] == c[0]);
    }

    enum { M = 9, N = 11, K = 77 };
    float x[M * K], y[K * N], z[M * N];
    qp_test_seed(13);
    fill_f(x, M * K);
    fill_f(y, K * N);
    qp_sgemm(QP_NOTRANS, QP_NOTRANS, M, N, K, 1.0f, x, K, y, N, 0.0f, z, N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0, mag = 0;
            for (int l = 0; l < K; l++) {
                s += (double)x[i * K + l] * (double)y[l * N + j];
                mag += fabs((double)x[i * K + l] * (double)y[l * N + j]);
            }
            assert_true(fabs((double)z[i * N + j] - s) <= 1e-6 * mag);
        }
}

/* A left operand packed once, then products with column blocks of B (as
 * the forward pass runs a linear layer): the bits of qp_sgemm_ref, on
 * every path, for odd and multi-block shapes and both layouts of B. */
static void test_packed_left_operand(void **state)
{
    (void)state;
    static const size_t shapes[][3] = {{1, 1, 1}, {7, 33, 255}, {33, 255, 7}, {255, 130, 300}, {97, 40, 520}};
    qp_gemm_path was = qp_gemm_path_active();
    qp_test_seed(14);
    for (size_t p = 0; p < N_FAST; p++) {
        if (skip_path(fast_paths[p]))
            continue;
        assert_int_equal(qp_gemm_set_path(fast_paths[p]), 0);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int t = 0; t < 4; t++) {
                qp_trans ta = (qp_trans)(t & 1), tb = (qp_trans)(t >> 1);
                size_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2], blk = 16;
                float *a = malloc(m * k * sizeof *a), *b = malloc(k * n * sizeof *b);
                float *cr = malloc(m * n * sizeof *cr), *cp = malloc(m * n * sizeof *cp);
                qp_gemm_path path = qp_gemm_path_active();
                float *ap = malloc(qp_sgemm_packed_size(path, m, k) * sizeof *ap);
                assert_non_null(a && b && cr && cp && ap);
                fill_f(a, m * k);
                fill_f(b, k * n);
                fill_f(cr, m * n);
                memcpy(cp, cr, m * n * sizeof *cp);
                float alpha = t == 3 ? 0.375f : 1.0f, beta = t == 2 ? 1.0f : 0.0f;
                qp_sgemm_ref(ta, tb, m, n, k, alpha, a, ta ? m : k, b, tb ? k : n, beta, cr, n);
                for (size_t part = qp_sgemm_pack_parts(k); part-- > 0;)   /* any order */
                    qp_sgemm_pack_a(path, ap, part, ta, m, k, alpha, a, ta ? m : k);
                for (size_t j0 = 0; j0 < n; j0 += blk) {
                    size_t nb = n - j0 < blk ? n - j0 : blk;
                    const float *bb = tb ? b + j0 * k : b + j0;
                    qp_sgemm_packed(path, ap, m, k, tb, nb, bb, tb ? k : n, beta, cp + j0, n);
                }
                if (memcmp(cp, cr, m * n * sizeof *cp) != 0) {
                    print_error("packed %s m %zu n %zu k %zu ta %d tb %d differs from the reference\n",
                                qp_gemm_path_name(fast_paths[p]), m, n, k, ta, tb);
                    fail();
                }
                free(a), free(b), free(cr), free(cp), free(ap);
            }
    }
    assert_int_equal(qp_gemm_set_path(was), 0);
}

/* Paths can be chosen and reported; unsupported ones are refused. */
static void test_path_selection(void **state)
{
    (void)state;
    qp_gemm_path was = qp_gemm_path_active();
    assert_true(was != QP_GEMM_AUTO);
    assert_int_equal(qp_gemm_set_path(QP_GEMM_SCALAR), 0);
    assert_int_equal(qp_gemm_path_active(), QP_GEMM_SCALAR);
    for (size_t p = 0; p < N_FAST; p++) {
        int ok = qp_gemm_set_path(fast_paths[p]) == 0;
        assert_int_equal(ok, qp_gemm_path_supported(fast_paths[p]));
        if (ok)
            assert_int_equal(qp_gemm_path_active(), fast_paths[p]);
    }
    assert_int_equal(qp_gemm_set_path(QP_GEMM_AUTO), 0);
    assert_true(qp_gemm_path_active() != QP_GEMM_AUTO);
    assert_string_equal(qp_gemm_path_name(QP_GEMM_AVX512), "avx512");
    assert_int_equal(qp_gemm_set_path(was), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_odd_shapes),
        cmocka_unit_test(test_blocked_shapes),
        cmocka_unit_test(test_reference_is_fma_chain),
        cmocka_unit_test(test_packed_left_operand),
        cmocka_unit_test(test_path_selection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
