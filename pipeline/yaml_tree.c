#include "pipeline/yaml_tree.h"
#include "common/alloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "common/error.h"
#include "common/fsutil.h"
#include "common/hash.h"

#define TAG_PREFIX "tag:yaml.org,2002:"

/* String -> pointer, open addressing: duplicate keys, merges and anchors are
 * looked up by name, and a linear scan per key made a 50k-key mapping take
 * seconds (minutes with long shared prefixes).  Keys are borrowed: they
 * belong to nodes or anchors that outlive the map. */
typedef struct {
    const char **keys;
    void **vals;
    size_t cap, n;
} strmap;

static size_t strmap_find(const strmap *m, const char *k)
{
    size_t i = (size_t)qp_str_hash(k) & (m->cap - 1);
    while (m->keys[i] && strcmp(m->keys[i], k) != 0)
        i = (i + 1) & (m->cap - 1);
    return i;
}

static void *strmap_get(const strmap *m, const char *k)
{
    if (!m->cap)
        return NULL;
    size_t i = strmap_find(m, k);
    return m->keys[i] ? m->vals[i] : NULL;
}

/* Sets k's value (a later anchor of the same name replaces the earlier). */
static void strmap_put(strmap *m, const char *k, void *v)
{
    if (2 * (m->n + 1) > m->cap) {
        strmap old = *m;
        m->cap = old.cap ? 2 * old.cap : 16;
        m->keys = qp_xcalloc(m->cap, sizeof(*m->keys));
        m->vals = qp_xcalloc(m->cap, sizeof(*m->vals));
        m->n = 0;
        for (size_t i = 0; i < old.cap; i++)
            if (old.keys[i])
                strmap_put(m, old.keys[i], old.vals[i]);
        free(old.keys);
        free(old.vals);
    }
    size_t i = strmap_find(m, k);
    if (!m->keys[i]) {
        m->keys[i] = k;
        m->n++;
    }
    m->vals[i] = v;
}

static void strmap_free(strmap *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}

typedef struct {
    char *name;
    qp_ynode *node;
    int done;  /* 0 while the anchored collection is still open */
} anchor;

typedef struct {
    const char *path;
    const char *text;
    size_t len;
    /* Open collections; pending[i] is a mapping's key awaiting its value. */
    qp_ynode *stack[QP_YAML_MAX_DEPTH + 1];
    qp_ynode *pending[QP_YAML_MAX_DEPTH + 1];
    long stack_anchor[QP_YAML_MAX_DEPTH + 1];
    strmap key_set[QP_YAML_MAX_DEPTH + 1];   /* an open mapping's keys (duplicates) */
    int depth;
    anchor *anchors;
    size_t n_anchors, cap_anchors;
    strmap anchor_index;   /* name -> 1 + index of its latest anchor */
    size_t n_nodes;
    qp_ynode *root;
    /* '<<' merge values, kept alive until the end because an anchor inside
     * one may still be aliased later. */
    qp_ynode *graveyard;
} builder;

static qp_mark mark_of(yaml_mark_t m)
{
    qp_mark k = {(int)m.line + 1, (int)m.column + 1};
    return k;
}

static int fail(const builder *b, qp_mark m, const char *msg)
{
    return qp_error_set(QP_EUSAGE, "%s:%d:%d: %s", b->path, m.line, m.col, msg);
}

void qp_ynode_free(qp_ynode *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->n; i++) {
        qp_ynode_free(n->items[i]);
        if (n->keys)
            qp_ynode_free(n->keys[i]);
    }
    free(n->items);
    free(n->keys);
    free(n->text);
    free(n);
}

const char *qp_ynode_kind_name(const qp_ynode *n)
{
    if (!n)
        return "nothing";
    switch (n->kind) {
    case QP_YN_MAP: return "mapping";
    case QP_YN_SEQ: return "list";
    default: return "string";
    }
}

const qp_ynode *qp_ynode_get(const qp_ynode *map, const char *key, const qp_ynode **key_node)
{
    if (key_node)
        *key_node = NULL;
    if (!map || map->kind != QP_YN_MAP)
        return NULL;
    for (size_t i = 0; i < map->n; i++)
        if (strcmp(map->keys[i]->text, key) == 0) {
            if (key_node)
                *key_node = map->keys[i];
            return map->items[i];
        }
    return NULL;
}

static int count_node(builder *b, qp_mark m, int copying)
{
    if (++b->n_nodes <= QP_YAML_MAX_NODES)
        return 0;
    char msg[160];
    snprintf(msg, sizeof(msg), "document has more than %d nodes%s", QP_YAML_MAX_NODES,
             copying ? " (after expanding aliases)" : "");
    return fail(b, m, msg);
}

static qp_ynode *node_new(qp_ynode_kind kind, qp_mark m)
{
    qp_ynode *n = qp_xcalloc(1, sizeof(*n));
    n->kind = kind;
    n->mark = m;
    return n;
}

/* Appends an item (and, for mappings, its key) to a collection. */
static void node_push(qp_ynode *c, qp_ynode *key, qp_ynode *item)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 4;
        c->items = qp_xrealloc_array(c->items, c->cap, sizeof(*c->items));
        if (c->kind == QP_YN_MAP) {
            c->keys = qp_xrealloc_array(c->keys, c->cap, sizeof(*c->keys));
        }
    }
    if (c->kind == QP_YN_MAP)
        c->keys[c->n] = key;
    c->items[c->n++] = item;
}

/* Deep copy for alias expansion; every copied node counts toward the bound,
 * which is what stops "billion laughs" documents early. */
static int node_copy(builder *b, qp_ynode **out, const qp_ynode *src, qp_mark alias_mark)
{
    *out = NULL;
    if (count_node(b, alias_mark, 1) < 0)
        return QP_EUSAGE;
    qp_ynode *n = node_new(src->kind, src->mark);
    n->plain = src->plain;
    n->tag = src->tag;
    n->text = src->text ? qp_strdup(src->text) : NULL;
    for (size_t i = 0; i < src->n; i++) {
        qp_ynode *k = NULL, *v = NULL;
        if (src->kind == QP_YN_MAP && node_copy(b, &k, src->keys[i], alias_mark) < 0) {
            qp_ynode_free(n);
            return QP_EUSAGE;
        }
        if (node_copy(b, &v, src->items[i], alias_mark) < 0) {
            qp_ynode_free(k);
            qp_ynode_free(n);
            return QP_EUSAGE;
        }
        node_push(n, k, v);
    }
    *out = n;
    return 0;
}

/* Standard tags only: a recipe has no use for application types, and
 * silently ignoring an unknown tag would change what the value means. */
static int resolve_tag(builder *b, const yaml_char_t *tag, qp_ynode_kind kind, qp_mark m, qp_ytag *out)
{
    *out = QP_YT_NONE;
    if (!tag)
        return 0;
    const char *t = (const char *)tag;
    if (strcmp(t, "!") == 0) {  /* non-specific tag: a string for scalars */
        *out = kind == QP_YN_SCALAR ? QP_YT_STR : QP_YT_NONE;
        return 0;
    }
    if (strncmp(t, TAG_PREFIX, strlen(TAG_PREFIX)) == 0) {
        const char *s = t + strlen(TAG_PREFIX);
        if (kind == QP_YN_MAP && strcmp(s, "map") == 0)
            return 0;
        if (kind == QP_YN_SEQ && strcmp(s, "seq") == 0)
            return 0;
        if (kind == QP_YN_SCALAR) {
            static const struct { const char *name; qp_ytag tag; } tags[] = {
                {"str", QP_YT_STR}, {"int", QP_YT_INT}, {"float", QP_YT_FLOAT},
                {"bool", QP_YT_BOOL}, {"null", QP_YT_NULL},
            };
            for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++)
                if (strcmp(s, tags[i].name) == 0) {
                    *out = tags[i].tag;
                    return 0;
                }
        }
        char msg[300];
        snprintf(msg, sizeof(msg), "tag '!!%.100s' cannot be used on a %s", s,
                 kind == QP_YN_MAP ? "mapping" : kind == QP_YN_SEQ ? "list" : "scalar");
        return fail(b, m, msg);
    }
    char msg[300];
    snprintf(msg, sizeof(msg),
             "unsupported tag '%.100s' (only standard tags like !!str, !!int, !!float, !!bool, !!null)", t);
    return fail(b, m, msg);
}

static int anchor_add(builder *b, const yaml_char_t *name, qp_ynode *node, int done)
{
    if (!name)
        return -1;
    if (b->n_anchors == b->cap_anchors) {
        b->cap_anchors = b->cap_anchors ? 2 * b->cap_anchors : 8;
        b->anchors = qp_xrealloc_array(b->anchors, b->cap_anchors, sizeof(*b->anchors));
    }
    anchor *a = &b->anchors[b->n_anchors];
    a->name = qp_strdup((const char *)name);
    a->node = node;
    a->done = done;
    strmap_put(&b->anchor_index, a->name, (void *)(uintptr_t)(b->n_anchors + 1));
    return (int)b->n_anchors++;
}

/* Attaches a finished node to the open collection (or makes it the root);
 * takes ownership of n in every case. */
static int attach(builder *b, qp_ynode *n)
{
    if (b->depth == 0) {
        b->root = n;
        return 0;
    }
    qp_ynode *c = b->stack[b->depth - 1];
    if (c->kind == QP_YN_SEQ) {
        node_push(c, NULL, n);
        return 0;
    }
    qp_ynode *key = b->pending[b->depth - 1];
    if (key) {
        b->pending[b->depth - 1] = NULL;
        node_push(c, key, n);
        return 0;
    }
    int rc = 0;
    char msg[300];
    if (n->kind != QP_YN_SCALAR) {
        snprintf(msg, sizeof(msg), "a mapping key must be a string, not a %s", qp_ynode_kind_name(n));
        rc = fail(b, n->mark, msg);
        goto done;
    }
    const qp_ynode *first = strmap_get(&b->key_set[b->depth - 1], n->text);
    if (first) {
        snprintf(msg, sizeof(msg), "duplicate key '%.100s' (first given at line %d)", n->text, first->mark.line);
        rc = fail(b, n->mark, msg);
        goto done;
    }
    strmap_put(&b->key_set[b->depth - 1], n->text, n);
    b->pending[b->depth - 1] = n;
    return 0;
done:
    qp_ynode_free(n);
    return rc;
}

static int is_merge_key(const qp_ynode *k)
{
    return k->plain && k->tag == QP_YT_NONE && strcmp(k->text, "<<") == 0;
}

/* Copies the keys of `src` that `m` lacks into `m` (explicit keys win, and
 * among merged mappings the earlier one wins, as in YAML 1.1 merge keys). */
static int merge_from(builder *b, qp_ynode *m, strmap *have, const qp_ynode *src, qp_mark at)
{
    for (size_t i = 0; i < src->n; i++) {
        if (strmap_get(have, src->keys[i]->text))
            continue;
        qp_ynode *k = NULL, *v = NULL;
        if (node_copy(b, &k, src->keys[i], at) < 0)
            return QP_EUSAGE;
        if (node_copy(b, &v, src->items[i], at) < 0) {
            qp_ynode_free(k);
            return QP_EUSAGE;
        }
        node_push(m, k, v);
        strmap_put(have, k->text, k);
    }
    return 0;
}

static int apply_merges(builder *b, qp_ynode *m)
{
    size_t w = 0;
    qp_ynode *mk = NULL, *mv = NULL;
    for (size_t i = 0; i < m->n; i++) {
        if (is_merge_key(m->keys[i])) {
            mk = m->keys[i];
            mv = m->items[i];
            continue;
        }
        m->keys[w] = m->keys[i];
        m->items[w++] = m->items[i];
    }
    if (!mk)
        return 0;
    m->n = w;
    /* both kept to the end: an anchor on the '<<' key itself, or inside
     * its value, may still be aliased (freeing the key here was a
     * use-after-free through such an alias) */
    mk->merge_key = 1;
    node_push(b->graveyard, NULL, mk);
    node_push(b->graveyard, NULL, mv);
    int rc = 0;
    strmap have = {0};
    for (size_t i = 0; i < m->n; i++)
        strmap_put(&have, m->keys[i]->text, m->keys[i]);
    if (mv->kind == QP_YN_MAP) {
        rc = merge_from(b, m, &have, mv, mv->mark);
        goto done;
    }
    if (mv->kind != QP_YN_SEQ) {
        rc = fail(b, mv->mark, "the value of a '<<' merge key must be a mapping or a list of mappings");
        goto done;
    }
    for (size_t i = 0; i < mv->n; i++)
        if (mv->items[i]->kind != QP_YN_MAP) {
            rc = fail(b, mv->items[i]->mark, "a '<<' merge list may contain only mappings");
            goto done;
        }
    for (size_t i = 0; i < mv->n && rc == 0; i++)
        rc = merge_from(b, m, &have, mv->items[i], mv->items[i]->mark);
done:
    strmap_free(&have);
    return rc < 0 ? QP_EUSAGE : 0;
}

static int on_alias(builder *b, const yaml_event_t *e)
{
    qp_mark m = mark_of(e->start_mark);
    const char *name = (const char *)e->data.alias.anchor;
    char msg[300];
    uintptr_t at = (uintptr_t)strmap_get(&b->anchor_index, name);
    if (at) {
        size_t i = at - 1;
        if (!b->anchors[i].done) {
            snprintf(msg, sizeof(msg), "alias '*%.100s' refers to a node that contains it", name);
            return fail(b, m, msg);
        }
        if (b->anchors[i].node->merge_key) {
            /* the key was consumed by its merge: there is no value to copy */
            snprintf(msg, sizeof(msg), "alias '*%.100s' refers to a '<<' merge key (anchor the merged mapping instead)",
                     name);
            return fail(b, m, msg);
        }
        qp_ynode *copy = NULL;
        if (node_copy(b, &copy, b->anchors[i].node, m) < 0)
            return QP_EUSAGE;
        copy->mark = m;
        return attach(b, copy);
    }
    snprintf(msg, sizeof(msg), "alias '*%.100s' has no anchor '&%.100s' before it", name, name);
    return fail(b, m, msg);
}

static int on_scalar(builder *b, const yaml_event_t *e)
{
    qp_mark m = mark_of(e->start_mark);
    if (count_node(b, m, 0) < 0)
        return QP_EUSAGE;
    if (strlen((const char *)e->data.scalar.value) != e->data.scalar.length)
        return fail(b, m, "string contains a NUL character");
    qp_ytag tag;
    if (resolve_tag(b, e->data.scalar.tag, QP_YN_SCALAR, m, &tag) < 0)
        return QP_EUSAGE;
    qp_ynode *n = node_new(QP_YN_SCALAR, m);
    n->text = qp_strdup((const char *)e->data.scalar.value);
    n->plain = e->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    n->tag = tag;
    anchor_add(b, e->data.scalar.anchor, n, 1);
    return attach(b, n);
}

static int on_start(builder *b, const yaml_event_t *e, qp_ynode_kind kind)
{
    qp_mark m = mark_of(e->start_mark);
    if (count_node(b, m, 0) < 0)
        return QP_EUSAGE;
    if (b->depth >= QP_YAML_MAX_DEPTH) {
        char msg[100];
        snprintf(msg, sizeof(msg), "nesting deeper than %d levels", QP_YAML_MAX_DEPTH);
        return fail(b, m, msg);
    }
    const yaml_char_t *tag = kind == QP_YN_MAP ? e->data.mapping_start.tag : e->data.sequence_start.tag;
    const yaml_char_t *anc = kind == QP_YN_MAP ? e->data.mapping_start.anchor : e->data.sequence_start.anchor;
    qp_ytag t;
    if (resolve_tag(b, tag, kind, m, &t) < 0)
        return QP_EUSAGE;
    qp_ynode *n = node_new(kind, m);
    b->stack[b->depth] = n;
    b->pending[b->depth] = NULL;
    strmap_free(&b->key_set[b->depth]);
    b->stack_anchor[b->depth] = anchor_add(b, anc, n, 0);
    b->depth++;
    return 0;
}

static int on_end(builder *b)
{
    b->depth--;
    qp_ynode *n = b->stack[b->depth];
    b->stack[b->depth] = NULL;
    strmap_free(&b->key_set[b->depth]);
    /* libyaml guarantees a value after every key, so pending is NULL here. */
    int rc = n->kind == QP_YN_MAP ? apply_merges(b, n) : 0;
    if (b->stack_anchor[b->depth] >= 0)
        b->anchors[b->stack_anchor[b->depth]].done = 1;
    if (rc < 0) {
        qp_ynode_free(n);
        return rc;
    }
    return attach(b, n);
}

/* Byte offset of a libyaml mark (line/column count characters). */
static size_t offset_of(const builder *b, yaml_mark_t m)
{
    size_t off = 0, line = 0;
    while (off < b->len && line < m.line)
        if (b->text[off++] == '\n')
            line++;
    for (size_t col = 0; off < b->len && col < m.column; col++) {
        off++;
        while (off < b->len && ((unsigned char)b->text[off] & 0xC0) == 0x80)
            off++;
    }
    return off;
}

static int syntax_error(const builder *b, const yaml_parser_t *p)
{
    if (p->error == YAML_MEMORY_ERROR)   /* libyaml ran out: common/alloc.h's policy */
        qp_out_of_memory(0, __FILE__, __LINE__);
    const char *problem = p->problem ? p->problem : "invalid YAML";
    if (p->error == YAML_READER_ERROR) {
        /* Reader errors carry a byte offset, not a mark. */
        qp_mark m = {1, 1};
        for (size_t i = 0; i < p->problem_offset && i < b->len; i++) {
            if (b->text[i] == '\n') {
                m.line++;
                m.col = 1;
            } else if (((unsigned char)b->text[i] & 0xC0) != 0x80) {
                m.col++;
            }
        }
        return qp_error_set(QP_EUSAGE, "%s:%d:%d: %s", b->path, m.line, m.col, problem);
    }
    qp_mark m = mark_of(p->problem_mark);
    size_t off = offset_of(b, p->problem_mark);
    if (p->error == YAML_SCANNER_ERROR && off < b->len && b->text[off] == '\t')
        return qp_error_set(QP_EUSAGE, "%s:%d:%d: tab character in indentation (indent with spaces)",
                            b->path, m.line, m.col);
    if (p->context) {
        qp_mark c = mark_of(p->context_mark);
        return qp_error_set(QP_EUSAGE, "%s:%d:%d: %s (%s at line %d)", b->path, m.line, m.col, problem,
                            p->context, c.line);
    }
    return qp_error_set(QP_EUSAGE, "%s:%d:%d: %s", b->path, m.line, m.col, problem);
}

int qp_ytree_parse(qp_ynode **out, const char *path, const char *text, size_t len)
{
    *out = NULL;
    if (len > QP_YAML_MAX_BYTES)
        return qp_error_set(QP_EUSAGE, "%s: %zu bytes, more than the %u MiB a recipe or lock may have", path, len,
                            QP_YAML_MAX_BYTES >> 20);
    qp_mark origin = {1, 1};
    builder b = {.path = path, .text = text, .len = len, .graveyard = node_new(QP_YN_SEQ, origin)};
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        qp_ynode_free(b.graveyard);
        return qp_error_set(QP_ERROR, "%s: cannot initialise the YAML parser", path);
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int rc = 0, docs = 0;
    for (int end = 0; !end && rc == 0;) {
        yaml_event_t e;
        if (!yaml_parser_parse(&p, &e)) {
            rc = syntax_error(&b, &p);
            break;
        }
        switch (e.type) {
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1)
                rc = fail(&b, mark_of(e.start_mark), "a recipe must be a single YAML document");
            break;
        case YAML_SCALAR_EVENT: rc = on_scalar(&b, &e); break;
        case YAML_ALIAS_EVENT: rc = on_alias(&b, &e); break;
        case YAML_MAPPING_START_EVENT: rc = on_start(&b, &e, QP_YN_MAP); break;
        case YAML_SEQUENCE_START_EVENT: rc = on_start(&b, &e, QP_YN_SEQ); break;
        case YAML_MAPPING_END_EVENT:
        case YAML_SEQUENCE_END_EVENT: rc = on_end(&b); break;
        case YAML_STREAM_END_EVENT: end = 1; break;
        default: break;
        }
        yaml_event_delete(&e);
    }
    yaml_parser_delete(&p);
    for (int i = 0; i < b.depth; i++) {
        qp_ynode_free(b.stack[i]);
        qp_ynode_free(b.pending[i]);
        strmap_free(&b.key_set[i]);
    }
    strmap_free(&b.anchor_index);
    qp_ynode_free(b.graveyard);
    for (size_t i = 0; i < b.n_anchors; i++)
        free(b.anchors[i].name);
    free(b.anchors);
    if (rc < 0) {
        qp_ynode_free(b.root);
        return rc;
    }
    *out = b.root;
    return 0;
}
