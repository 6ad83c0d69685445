/* Shared by the tests/quant oracle tests: runs one quantizer over every
 * quantized tensor of an oracle GGUF written by llama-quantize and compares
 * the bytes with the oracle's. */
#ifndef QP_TESTS_QUANT_ORACLE_H
#define QP_TESTS_QUANT_ORACLE_H

#include "tests/support/testutil.h"

#include "common/error.h"
#include "model/gguf.h"
#include "quant/imatrix.h"
#include "quant/qtypes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    size_t tensors, bytes, mismatched_tensors, mismatched_bytes, with_imatrix;
} oracle_stats;

/* mode: 0 = qp_quantize_ref, 1/2 = qp_quantize with that many threads.
 * dir: the oracle's folder under vectors/house-llama ("" or "iq/"). */
static void oracle_compare_in(const char *dir, const char *type_name, int use_imatrix, int mode, oracle_stats *st)
{
    memset(st, 0, sizeof *st);
    const qp_qtype_info *info = qp_qtype_by_name(type_name);
    assert_non_null(info);
    char rel[160];
    snprintf(rel, sizeof rel, "vectors/house-llama/%s%s%s.gguf", dir, type_name, use_imatrix ? "-imatrix" : "");
    char *qpath = qp_test_shared_path(rel);
    char *fpath = qp_test_shared_path("vectors/house-llama/F32.gguf");
    char *ipath = qp_test_shared_path("vectors/house-llama/imatrix.dat");
    qp_gguf *qg = NULL, *fg = NULL;
    qp_imatrix *im = NULL;
    assert_int_equal(qp_gguf_open(&qg, qpath), 0);
    assert_int_equal(qp_gguf_open(&fg, fpath), 0);
    if (use_imatrix)
        assert_int_equal(qp_imatrix_read(&im, ipath), 0);
    for (size_t i = 0; i < qp_gguf_tensor_count(qg); i++) {
        const qp_gguf_tensor *qt = qp_gguf_tensor_at(qg, i);
        if (qt->type == QP_GGML_F32)
            continue;
        assert_int_equal(qt->type, (uint32_t)info->type);   /* --pure: every 2-D weight has the type */
        const qp_gguf_tensor *ft = qp_gguf_find_tensor(fg, qt->name);
        assert_non_null(ft);
        assert_int_equal(ft->type, QP_GGML_F32);
        const int64_t n_per_row = (int64_t)ft->ne[0], nrows = (int64_t)(ft->nelem / ft->ne[0]);
        assert_int_equal(qp_qtype_row_size(info->type, n_per_row) * (size_t)nrows, qt->nbytes);
        float *imat = NULL;
        if (im) {
            imat = malloc((size_t)n_per_row * sizeof *imat);
            int rc = qp_imatrix_weights(im, qt->name, n_per_row, imat);
            if (rc == QP_ENOTFOUND) {   /* output / token_embd: llama-quantize goes without */
                free(imat);
                imat = NULL;
            } else {
                assert_int_equal(rc, 0);
                st->with_imatrix++;
            }
        }
        unsigned char *out = malloc(qt->nbytes);
        memset(out, 0xA5, qt->nbytes);
        int rc = mode == 0 ? qp_quantize_ref(info->type, ft->data, out, nrows, n_per_row, imat)
                           : qp_quantize(info->type, ft->data, out, nrows, n_per_row, imat, mode);
        if (rc)
            fail_msg("%s: %s", qt->name, qp_error_last());
        size_t diff = 0;
        for (size_t b = 0; b < qt->nbytes; b++)
            diff += out[b] != ((const unsigned char *)qt->data)[b];
        if (diff) {
            size_t first = 0;
            while (out[first] == ((const unsigned char *)qt->data)[first])
                first++;
            print_message("%s %s%s mode %d: tensor %s: %zu of %llu bytes differ (first at %zu)\n", type_name,
                          use_imatrix ? "imatrix" : "plain", "", mode, qt->name, diff,
                          (unsigned long long)qt->nbytes, first);
            st->mismatched_tensors++;
            st->mismatched_bytes += diff;
        }
        st->tensors++;
        st->bytes += qt->nbytes;
        free(out);
        free(imat);
    }
    qp_imatrix_free(im);
    qp_gguf_free(qg);
    qp_gguf_free(fg);
    free(qpath);
    free(fpath);
    free(ipath);
}

static inline void oracle_compare(const char *type_name, int use_imatrix, int mode, oracle_stats *st)
{
    oracle_compare_in("", type_name, use_imatrix, mode, st);
}

/* Asserts byte identity for ref, fast@1 and fast@2 and prints the counts.
 * With an imatrix qp_quantize runs the very row functions of the reference
 * (no fast kernel takes weights), so only its threading is new: fast@1 is
 * skipped there to keep the k-quant binary well under 20 s. */
static inline void oracle_check_type(const char *type_name, int use_imatrix)
{
    for (int mode = 0; mode <= 2; mode++) {
        if (use_imatrix && mode == 1)
            continue;
        oracle_stats st;
        oracle_compare(type_name, use_imatrix, mode, &st);
        if (mode == 0)
            print_message("%-6s %-7s: %zu tensors (%zu with imatrix), %zu bytes compared, %zu tensors / %zu bytes differ\n",
                          type_name, use_imatrix ? "imatrix" : "plain", st.tensors, st.with_imatrix, st.bytes,
                          st.mismatched_tensors, st.mismatched_bytes);
        assert_int_equal(st.tensors, 44);
        assert_int_equal(st.with_imatrix, use_imatrix ? 42 : 0);
        assert_int_equal(st.mismatched_bytes, 0);
    }
}

/* The i-quant / ternary oracles (vectors/house-llama/iq/<TYPE>-imatrix.gguf):
 * ref, fast@1 and fast@2 all compared — these types have fast kernels
 * that take the imatrix (or ignore it, as llama.cpp does). */
static inline void oracle_check_iq(const char *type_name)
{
    for (int mode = 0; mode <= 2; mode++) {
        oracle_stats st;
        oracle_compare_in("iq/", type_name, 1, mode, &st);
        print_message("%-6s imatrix mode %d: %zu tensors (%zu with imatrix), %zu bytes compared, %zu tensors / %zu "
                      "bytes differ\n", type_name, mode, st.tensors, st.with_imatrix, st.bytes, st.mismatched_tensors,
                      st.mismatched_bytes);
        assert_int_equal(st.tensors, 44);
        assert_int_equal(st.with_imatrix, 42);
        assert_int_equal(st.mismatched_bytes, 0);
    }
}

/* A llama-quantize mix (vectors/house-llama/iq/mix-<FTYPE>.gguf, written
 * with --imatrix imatrix.dat): every quantized tensor whose type qpipe has
 * re-quantized from F32.gguf with its imatrix entry (none for token_embd and
 * output, as llama-quantize) by qp_quantize_ref (mode 0) or qp_quantize at
 * mode threads; per-type counts of tensors compared into st, the types
 * qpipe lacks into *missing (tensors not compared). */
static inline void oracle_compare_mix(const char *mix, int mode, oracle_stats *st, size_t *missing,
                                      size_t *by_type, size_t n_types)
{
    memset(st, 0, sizeof *st);
    *missing = 0;
    memset(by_type, 0, n_types * sizeof *by_type);
    char rel[160];
    snprintf(rel, sizeof rel, "vectors/house-llama/iq/%s.gguf", mix);
    char *qpath = qp_test_shared_path(rel);
    char *fpath = qp_test_shared_path("vectors/house-llama/F32.gguf");
    char *ipath = qp_test_shared_path("vectors/house-llama/imatrix.dat");
    qp_gguf *qg = NULL, *fg = NULL;
    qp_imatrix *im = NULL;
    assert_int_equal(qp_gguf_open(&qg, qpath), 0);
    assert_int_equal(qp_gguf_open(&fg, fpath), 0);
    assert_int_equal(qp_imatrix_read(&im, ipath), 0);
    for (size_t i = 0; i < qp_gguf_tensor_count(qg); i++) {
        const qp_gguf_tensor *qt = qp_gguf_tensor_at(qg, i);
        if (qt->type == QP_GGML_F32)
            continue;
        const qp_qtype_info *info = qp_qtype_get((qp_ggml_type)qt->type);
        if (!info) {
            (*missing)++;
            continue;
        }
        if (qt->type < n_types)
            by_type[qt->type]++;
        const qp_gguf_tensor *ft = qp_gguf_find_tensor(fg, qt->name);
        assert_non_null(ft);
        const int64_t n_per_row = (int64_t)ft->ne[0], nrows = (int64_t)(ft->nelem / ft->ne[0]);
        assert_int_equal(qp_qtype_row_size(info->type, n_per_row) * (size_t)nrows, qt->nbytes);
        float *imat = malloc((size_t)n_per_row * sizeof *imat);
        int rc = qp_imatrix_weights(im, qt->name, n_per_row, imat);
        if (rc == QP_ENOTFOUND) {
            free(imat);
            imat = NULL;
        } else {
            assert_int_equal(rc, 0);
            st->with_imatrix++;
        }
        unsigned char *out = malloc(qt->nbytes);
        memset(out, 0xA5, qt->nbytes);
        rc = mode == 0 ? qp_quantize_ref(info->type, ft->data, out, nrows, n_per_row, imat)
                       : qp_quantize(info->type, ft->data, out, nrows, n_per_row, imat, mode);
        if (rc)
            fail_msg("%s: %s", qt->name, qp_error_last());
        size_t diff = 0;
        for (size_t b = 0; b < qt->nbytes; b++)
            diff += out[b] != ((const unsigned char *)qt->data)[b];
        if (diff) {
            print_message("%s mode %d: tensor %s (%s): %zu of %llu bytes differ\n", mix, mode, qt->name, info->name,
                          diff, (unsigned long long)qt->nbytes);
            st->mismatched_tensors++;
            st->mismatched_bytes += diff;
        }
        st->tensors++;
        st->bytes += qt->nbytes;
        free(out);
        free(imat);
    }
    qp_imatrix_free(im);
    qp_gguf_free(qg);
    qp_gguf_free(fg);
    free(qpath);
    free(fpath);
    free(ipath);
}

#endif
