/* A byte trie over special / added token contents, so finding the tokens
 * that start at a text position costs at most one step per byte of the
 * longest of them (a scan of every content length would cost that length
 * squared per position: minutes for a hostile text of "<|" repeated).
 * Edges live in one open-addressing table keyed (node, byte). */
#include "model/tokenizer_pipe.h"

#include "common/alloc.h"

#include <stdlib.h>
#include <string.h>

struct qp_tok_trie {
    uint64_t *key;      /* [mask + 1]: node << 8 | byte, + 1; 0 = empty */
    uint32_t *child;    /* [mask + 1] */
    size_t mask, used;
    int32_t *value;     /* [nodes]: entry ending here, -1 none */
    size_t nodes, cap_nodes;
};

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    return x;
}

qp_tok_trie *qp_tok_trie_new(void)
{
    qp_tok_trie *tr = qp_xcalloc(1, sizeof(*tr));
    tr->mask = 63;
    tr->key = qp_xcalloc(tr->mask + 1, sizeof(*tr->key));
    tr->child = qp_xcalloc(tr->mask + 1, sizeof(*tr->child));
    tr->cap_nodes = 64;
    tr->value = qp_xmalloc(tr->cap_nodes * sizeof(*tr->value));
    tr->value[0] = -1;
    tr->nodes = 1;
    return tr;
}

void qp_tok_trie_free(qp_tok_trie *tr)
{
    if (!tr)
        return;
    free(tr->key);
    free(tr->child);
    free(tr->value);
    free(tr);
}

static int64_t edge(const qp_tok_trie *tr, uint32_t node, unsigned char b)
{
    uint64_t k = ((uint64_t)node << 8 | b) + 1;
    size_t i = (size_t)mix(k) & tr->mask;
    while (tr->key[i]) {
        if (tr->key[i] == k)
            return tr->child[i];
        i = (i + 1) & tr->mask;
    }
    return -1;
}

static void put_edge(qp_tok_trie *tr, uint32_t node, unsigned char b, uint32_t child)
{
    if (2 * (tr->used + 1) > tr->mask + 1) {
        size_t cap = 2 * (tr->mask + 1);
        uint64_t *ok = tr->key;
        uint32_t *oc = tr->child;
        size_t omask = tr->mask;
        tr->key = qp_xcalloc(cap, sizeof(*tr->key));
        tr->child = qp_xcalloc(cap, sizeof(*tr->child));
        tr->mask = cap - 1;
        for (size_t i = 0; i <= omask; i++)
            if (ok[i]) {
                size_t j = (size_t)mix(ok[i]) & tr->mask;
                while (tr->key[j])
                    j = (j + 1) & tr->mask;
                tr->key[j] = ok[i];
                tr->child[j] = oc[i];
            }
        free(ok);
        free(oc);
    }
    uint64_t k = ((uint64_t)node << 8 | b) + 1;
    size_t i = (size_t)mix(k) & tr->mask;
    while (tr->key[i])
        i = (i + 1) & tr->mask;
    tr->key[i] = k;
    tr->child[i] = child;
    tr->used++;
}

void qp_tok_trie_add(qp_tok_trie *tr, const char *p, size_t n, int value)
{
    uint32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t c = edge(tr, node, (unsigned char)p[i]);
        if (c < 0) {
            if (tr->nodes == tr->cap_nodes) {
                tr->cap_nodes *= 2;
                tr->value = qp_xrealloc_array(tr->value, tr->cap_nodes, sizeof(*tr->value));
            }
            c = (int64_t)tr->nodes++;
            tr->value[c] = -1;
            put_edge(tr, node, (unsigned char)p[i], (uint32_t)c);
        }
        node = (uint32_t)c;
    }
    if (n > 0 && tr->value[node] < 0)   /* a repeated content keeps its first value */
        tr->value[node] = value;
}

void qp_tok_trie_prefixes(const qp_tok_trie *tr, const char *s, size_t n, qp_trie_fn fn, void *ud)
{
    uint32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t c = edge(tr, node, (unsigned char)s[i]);
        if (c < 0)
            return;
        node = (uint32_t)c;
        if (tr->value[node] >= 0)
            fn(ud, tr->value[node], i + 1);
    }
}
