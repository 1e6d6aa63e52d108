/* pbx: see pbx.h. */
#include "pbx.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

#define MAX_FIELD_NUMBER 536870911u /* 2^29 - 1 */

typedef struct walk {
    const char *root;   /* the checked message's name, for errors */
    int max_depth;
    todo_err *err;
    char path[256];     /* the field being walked, "rule.time_zone" */
    size_t path_len;
} walk;

/* Reads a varint of at most 10 bytes at *i (< len); false when cut short
 * or longer. */
static bool varint(const uint8_t *p, size_t len, size_t *i, uint64_t *v)
{
    uint64_t r = 0;
    for (unsigned shift = 0, n = 0; n < 10 && *i < len; n++, shift += 7) {
        uint8_t b = p[(*i)++];
        r |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *v = r;
            return true;
        }
    }
    return false;
}

static int bad(walk *w, size_t at, const char *what)
{
    return todo_err_set(w->err, TODO_EINVAL, "not a valid %s message: %s at byte %zu", w->root, what, at);
}

static int walk_message(walk *w, const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len, size_t base,
                        int depth)
{
    if (depth > w->max_depth)
        return todo_err_set(w->err, TODO_EINVAL, "not a valid %s message: messages nested deeper than %d", w->root,
                            w->max_depth);
    size_t i = 0;
    while (i < len) {
        size_t at = i;
        uint64_t key, n;
        if (!varint(p, len, &i, &key)) return bad(w, base + at, "a field tag is cut short");
        uint64_t number = key >> 3;
        unsigned wire = (unsigned)(key & 7);
        if (number == 0 || number > MAX_FIELD_NUMBER) return bad(w, base + at, "a field number out of range");
        switch (wire) {
        case 0:
            if (!varint(p, len, &i, &n)) return bad(w, base + at, "a varint is cut short");
            break;
        case 1:
        case 5: {
            size_t need = wire == 1 ? 8 : 4;
            if (len - i < need) return bad(w, base + at, "a fixed-size value is cut short");
            i += need;
            break;
        }
        case 2: {
            if (!varint(p, len, &i, &n) || n > len - i) return bad(w, base + at, "a length runs past the end");
            const ProtobufCFieldDescriptor *f =
                d != NULL ? protobuf_c_message_descriptor_get_field(d, (unsigned)number) : NULL;
            if (f != NULL && (f->type == PROTOBUF_C_TYPE_MESSAGE || f->type == PROTOBUF_C_TYPE_STRING)) {
                size_t keep = w->path_len;
                int k = snprintf(w->path + keep, sizeof w->path - keep, "%s%s", keep ? "." : "", f->name);
                w->path_len = k < 0 ? keep : keep + (size_t)k >= sizeof w->path ? sizeof w->path - 1 : keep + (size_t)k;
                int rc = TODO_OK;
                if (f->type == PROTOBUF_C_TYPE_MESSAGE)
                    rc = walk_message(w, f->descriptor, p + i, (size_t)n, base + i, depth + 1);
                else if (text_utf8_chars((const char *)p + i, (size_t)n) < 0)
                    /* A C string cannot hold a NUL: the text we would store
                     * differs from the one sent. */
                    rc = todo_err_set(w->err, TODO_EINVAL, "%s: text must be UTF-8 without NUL characters", w->path);
                w->path[keep] = '\0';
                w->path_len = keep;
                if (rc != TODO_OK) return rc;
            }
            i += (size_t)n;
            break;
        }
        default:
            return bad(w, base + at, "a group or an unknown wire type");
        }
    }
    return TODO_OK;
}

int pbx_check(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len, int max_depth, todo_err *err)
{
    walk w = {.root = d != NULL ? d->name : "protobuf", .max_depth = max_depth, .err = err, .path = ""};
    if (len > 0 && buf == NULL) return bad(&w, 0, "no bytes");
    return walk_message(&w, d, buf, len, 0, 1);
}

static void strip(ProtobufCMessage *m, ProtobufCAllocator *alloc, bool owned);

/* protobuf-c's allocator over an arena, failing past a budget. */
typedef struct budget {
    arena *a;
    size_t start, max;
    bool exceeded;
} budget;

static void *budget_alloc(void *data, size_t size)
{
    budget *b = data;
    if (b->max > 0 && (size > b->max || arena_used(b->a) - b->start > b->max - size)) {
        b->exceeded = true;
        return NULL;
    }
    return arena_alloc(b->a, size);
}

static void budget_free(void *data, void *ptr)
{
    (void)data;
    (void)ptr;
}

int pbx_decode(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len, arena *a, const pbx_limits *lim,
               ProtobufCMessage **out, todo_err *err)
{
    *out = NULL;
    int rc = pbx_check(d, buf, len, lim->max_depth > 0 ? lim->max_depth : PBX_MAX_DEPTH, err);
    if (rc != TODO_OK) return rc;
    budget b = {.a = a, .start = arena_used(a), .max = lim->max_bytes};
    ProtobufCAllocator alloc = {.alloc = budget_alloc, .free = budget_free, .allocator_data = &b};
    static const uint8_t empty[1];
    ProtobufCMessage *m = protobuf_c_message_unpack(d, &alloc, len, buf != NULL ? buf : empty);
    if (m == NULL && b.exceeded)
        return todo_err_set(err, TODO_ETOOBIG, "the %s message needs more than %zu bytes of memory to decode", d->name,
                            lim->max_bytes);
    if (m == NULL) return todo_err_set(err, TODO_EINVAL, "not a valid %s message", d->name);
    strip(m, NULL, false); /* arena memory: nothing to free */
    *out = m;
    return TODO_OK;
}

static void free_with(ProtobufCAllocator *alloc, void *p)
{
    if (p == NULL) return;
    if (alloc != NULL) alloc->free(alloc->allocator_data, p);
    else free(p);
}

static void strip(ProtobufCMessage *m, ProtobufCAllocator *alloc, bool owned)
{
    if (m == NULL) return;
    if (owned) {
        for (unsigned i = 0; i < m->n_unknown_fields; i++) free_with(alloc, m->unknown_fields[i].data);
        free_with(alloc, m->unknown_fields);
    }
    m->n_unknown_fields = 0;
    m->unknown_fields = NULL;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
        char *base = (char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(size_t *)(base + f->quantifier_offset);
            ProtobufCMessage **arr = *(ProtobufCMessage ***)(base + f->offset);
            for (size_t k = 0; k < n && arr != NULL; k++) strip(arr[k], alloc, owned);
            continue;
        }
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && *(uint32_t *)(base + f->quantifier_offset) != f->id) continue;
        strip(*(ProtobufCMessage **)(base + f->offset), alloc, owned);
    }
}

void pbx_strip_unknown(ProtobufCMessage *m, ProtobufCAllocator *alloc) { strip(m, alloc, true); }
