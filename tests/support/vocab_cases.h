/* llama.cpp's tokenizer test vectors (test-tokenizer-0): beside each
 * vocabulary VOCAB.gguf, VOCAB.gguf.inp holds the texts, each ended by
 * "\n__ggml_vocab_test__\n", and VOCAB.gguf.out one line per text of the
 * expected ids, each written as " %d" (no BOS, no EOS). */
#ifndef QP_TESTS_VOCAB_CASES_H
#define QP_TESTS_VOCAB_CASES_H

#include <stddef.h>

/* One text and its expected ids line (without the newline); returns 1 when
 * the tokenizer under test gave exactly those ids. */
typedef int (*qp_test_vocab_case_fn)(void *ud, int index, const char *text, size_t text_len, const char *want,
                                     size_t want_len);

/* Calls fn on each case of gguf_path's vectors in file order; *total gets
 * the number of texts.  Returns how many fn called exact.  A missing file or
 * an .out shorter than the .inp fails the test. */
int qp_test_vocab_cases(const char *gguf_path, qp_test_vocab_case_fn fn, void *ud, int *total);

/* " id id …" as the .out files write it (malloc'ed). */
char *qp_test_ids_line(const int *ids, size_t n);

/* 1 when ids, written as qp_test_ids_line would, equal want[0..want_len);
 * prints the case to stderr when not. */
int qp_test_ids_match(const char *what, int index, const char *text, size_t text_len, const int *ids, size_t n,
                      const char *want, size_t want_len);

#endif
