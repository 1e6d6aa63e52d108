/* reg_compat: see reg_compat.h. */
#include "reg_compat.h"

#include "pbx.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef Google__Protobuf__DescriptorProto msg_t;
typedef Google__Protobuf__FieldDescriptorProto field_t;
typedef Google__Protobuf__EnumDescriptorProto enum_t;

#define T(x) GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_##x
#define REPEATED GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED
#define REQUIRED GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REQUIRED
#define MAX_DEPTH 64         /* message fields followed this deep at most */
#define MAX_STEPS 2000000L   /* lookups and comparisons one check may make */

static const char *const MODE_NAMES[] = {"NONE", "BACKWARD", "FORWARD", "FULL",
                                         "BACKWARD_TRANSITIVE", "FORWARD_TRANSITIVE", "FULL_TRANSITIVE"};

const char *reg_mode_name(reg_mode m)
{
    return (int)m >= 0 && m <= REG_FULL_TRANSITIVE ? MODE_NAMES[m] : "UNKNOWN";
}

int reg_mode_parse(const char *name, reg_mode *out)
{
    for (int i = 0; i <= REG_FULL_TRANSITIVE; i++)
        if (strcmp(name, MODE_NAMES[i]) == 0) {
            *out = (reg_mode)i;
            return TODO_OK;
        }
    return TODO_EINVAL;
}

bool reg_mode_transitive(reg_mode m) { return m >= REG_BACKWARD_TRANSITIVE; }

/* ---- looking types up in a descriptor set ---- */

/* Finds the message or enum named full (no leading dot) under prefix in
 * the n messages. */
static const void *find_in(msg_t *const *msgs, size_t n, const char *prefix, const char *full, bool want_enum,
                           long *steps)
{
    char name[512];
    for (size_t i = 0; i < n; i++) {
        if (--*steps < 0) return NULL;
        snprintf(name, sizeof name, "%s%s%s", prefix, prefix[0] ? "." : "", msgs[i]->name);
        size_t len = strlen(name);
        if (!want_enum && strcmp(name, full) == 0) return msgs[i];
        if (strncmp(full, name, len) != 0 || full[len] != '.') continue;
        if (want_enum)
            for (size_t e = 0; e < msgs[i]->n_enum_type; e++)
                if (strcmp(full + len + 1, msgs[i]->enum_type[e]->name) == 0) return msgs[i]->enum_type[e];
        const void *r = find_in(msgs[i]->nested_type, msgs[i]->n_nested_type, name, full, want_enum, steps);
        if (r != NULL) return r;
    }
    return NULL;
}

/* Lookups count their steps down from *steps (a check's budget); a
 * lookup that runs out finds nothing. */
static const void *find(const Google__Protobuf__FileDescriptorSet *set, const char *full, bool want_enum, long *steps)
{
    if (full[0] == '.') full++;
    for (size_t f = 0; f < set->n_file && *steps >= 0; f++) {
        const Google__Protobuf__FileDescriptorProto *file = set->file[f];
        const char *pkg = file->package != NULL ? file->package : "";
        size_t len = strlen(pkg);
        const char *rest = full;
        if (len > 0) {
            if (strncmp(full, pkg, len) != 0 || full[len] != '.') continue;
            rest = full + len + 1;
        }
        if (want_enum)
            for (size_t e = 0; e < file->n_enum_type; e++)
                if (strcmp(rest, file->enum_type[e]->name) == 0) return file->enum_type[e];
        const void *r = find_in(file->message_type, file->n_message_type, pkg, full, want_enum, steps);
        if (r != NULL) return r;
    }
    return NULL;
}

/* ---- what a set must hold before it is looked at ---- */

/* Everything the checks read is named: protoc always writes the names, but a
 * set given to the registry may come from anywhere. */
static bool named_enum(const enum_t *e)
{
    if (e->name == NULL) return false;
    for (size_t i = 0; i < e->n_value; i++)
        if (e->value[i]->name == NULL) return false;
    return true;
}

static bool named_message(const msg_t *m, int depth)
{
    if (m->name == NULL || depth > 32) return false;
    for (size_t i = 0; i < m->n_field; i++)
        if (m->field[i]->name == NULL) return false;
    for (size_t i = 0; i < m->n_oneof_decl; i++)
        if (m->oneof_decl[i]->name == NULL) return false;
    for (size_t i = 0; i < m->n_enum_type; i++)
        if (!named_enum(m->enum_type[i])) return false;
    for (size_t i = 0; i < m->n_nested_type; i++)
        if (!named_message(m->nested_type[i], depth + 1)) return false;
    return true;
}

static bool named_set(const Google__Protobuf__FileDescriptorSet *set)
{
    for (size_t f = 0; f < set->n_file; f++) {
        for (size_t i = 0; i < set->file[f]->n_message_type; i++)
            if (!named_message(set->file[f]->message_type[i], 0)) return false;
        for (size_t i = 0; i < set->file[f]->n_enum_type; i++)
            if (!named_enum(set->file[f]->enum_type[i])) return false;
    }
    return true;
}

/* ---- the check ---- */

/* A set of message pairs (open addressing, grows by doubling). */
typedef struct pairs {
    const void *(*slot)[2];
    size_t cap, n;
    bool oom;
} pairs;

/* Adds (a, b); false when it was there already (or memory ran out). */
static bool pairs_add(pairs *p, const void *a, const void *b)
{
    if (p->n * 2 >= p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        const void *(*slot)[2] = calloc(cap, sizeof *slot);
        if (slot == NULL) {
            p->oom = true;
            return false;
        }
        for (size_t i = 0; i < p->cap; i++) {
            if (p->slot[i][0] == NULL) continue;
            size_t h = (((uintptr_t)p->slot[i][0] >> 4) * 31 + ((uintptr_t)p->slot[i][1] >> 4)) & (cap - 1);
            while (slot[h][0] != NULL) h = (h + 1) & (cap - 1);
            slot[h][0] = p->slot[i][0];
            slot[h][1] = p->slot[i][1];
        }
        free(p->slot);
        p->slot = slot;
        p->cap = cap;
    }
    size_t h = (((uintptr_t)a >> 4) * 31 + ((uintptr_t)b >> 4)) & (p->cap - 1);
    for (; p->slot[h][0] != NULL; h = (h + 1) & (p->cap - 1))
        if (p->slot[h][0] == a && p->slot[h][1] == b) return false;
    p->slot[h][0] = a;
    p->slot[h][1] = b;
    p->n++;
    return true;
}

typedef struct check {
    const Google__Protobuf__FileDescriptorSet *old_set, *new_set;
    reg_report *report;
    pairs compared[2];              /* message pairs compared, per direction */
    pairs removals;                 /* (old, new) pairs checked for removals */
    bool reader_new;                /* the pass being run: the new version reads the old one's data */
    long steps;                     /* what is left of the budget; below 0: given up */
    bool too_deep;
} check;

/* Counts one step of work; false once the budget is spent. */
static bool step(check *c) { return --c->steps >= 0; }

static const char *type_name(int type)
{
    static const char *const names[] = {"?", "double", "float", "int64", "uint64", "int32", "fixed64", "fixed32",
                                        "bool", "string", "group", "message", "bytes", "uint32", "enum", "sfixed32",
                                        "sfixed64", "sint32", "sint64"};
    return type >= 1 && type <= 18 ? names[type] : "?";
}

static void violation(check *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void violation(check *c, const char *fmt, ...)
{
    reg_report *r = c->report;
    char text[sizeof r->violations[0]];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    for (int i = 0; i < r->n && i < REG_MAX_VIOLATIONS; i++)
        if (strcmp(r->violations[i], text) == 0) return; /* both passes of FULL found it */
    if (r->n < REG_MAX_VIOLATIONS) memcpy(r->violations[r->n], text, sizeof text);
    r->n++;
}

static const field_t *field_by_number(const msg_t *m, int32_t number)
{
    for (size_t i = 0; i < m->n_field; i++)
        if (m->field[i]->number == number) return m->field[i];
    return NULL;
}

static bool number_reserved(const msg_t *m, int32_t number)
{
    for (size_t i = 0; i < m->n_reserved_range; i++) /* [start, end) */
        if (number >= m->reserved_range[i]->start && number < m->reserved_range[i]->end) return true;
    return false;
}

static bool enum_number_reserved(const enum_t *e, int32_t number)
{
    for (size_t i = 0; i < e->n_reserved_range; i++) /* [start, end] */
        if (number >= e->reserved_range[i]->start && number <= e->reserved_range[i]->end) return true;
    return false;
}

/* The wire class of a type: types of one class decode each other's data. */
static int wire_class(int type)
{
    switch (type) {
    case T(INT32): case T(UINT32): case T(INT64): case T(UINT64): case T(BOOL): case T(ENUM): return 1;
    case T(SINT32): case T(SINT64): return 2;
    case T(FIXED32): case T(SFIXED32): return 3;
    case T(FIXED64): case T(SFIXED64): return 4;
    case T(STRING): case T(BYTES): return 5;
    case T(MESSAGE): return 6;
    case T(GROUP): return 7;
    case T(FLOAT): return 8;
    case T(DOUBLE): return 9;
    default: return 0;
    }
}

static bool packable(int type) { return wire_class(type) != 5 && wire_class(type) != 6 && wire_class(type) != 7; }

static const char *oneof_of(const msg_t *m, const field_t *f)
{
    if (!f->has_oneof_index || f->proto3_optional || f->oneof_index < 0 || (size_t)f->oneof_index >= m->n_oneof_decl)
        return "";
    return m->oneof_decl[f->oneof_index]->name;
}

static bool is_map(const Google__Protobuf__FileDescriptorSet *set, const field_t *f, long *steps)
{
    if (f->label != REPEATED || f->type != T(MESSAGE) || f->type_name == NULL) return false;
    const msg_t *m = find(set, f->type_name, false, steps);
    return m != NULL && m->options != NULL && m->options->has_map_entry && m->options->map_entry;
}

static void compare_messages(check *c, const char *path, const msg_t *reader, const Google__Protobuf__FileDescriptorSet *rset,
                             const msg_t *writer, const Google__Protobuf__FileDescriptorSet *wset, int depth);

/* Data written with writer's field w read with reader's field r. */
static void compare_field(check *c, const char *path, const msg_t *rm, const field_t *r,
                          const Google__Protobuf__FileDescriptorSet *rset, const msg_t *wm, const field_t *w,
                          const Google__Protobuf__FileDescriptorSet *wset, int depth)
{
    char where[400];
    const field_t *o = c->reader_new ? w : r, *n = c->reader_new ? r : w; /* old and new */
    const msg_t *om = c->reader_new ? wm : rm, *nm = c->reader_new ? rm : wm;
    snprintf(where, sizeof where, "%s.%s", path, n->name);
    if (strcmp(r->name, w->name) != 0)
        violation(c, "FIELD_SAME_NAME: %s: field %d was named %s", where, n->number, o->name);
    if (wire_class(r->type) != wire_class(w->type)) {
        violation(c, "FIELD_WIRE_COMPATIBLE_TYPE: %s: field %d changed from %s to %s, which do not share a wire "
                     "encoding", where, n->number, type_name((int)o->type), type_name((int)n->type));
        return;
    }
    bool rmap = is_map(rset, r, &c->steps), wmap = is_map(wset, w, &c->steps);
    if (rmap != wmap)
        violation(c, "FIELD_SAME_CARDINALITY: %s: field %d is a map in one version only", where, n->number);
    else if (w->label == REPEATED && r->label != REPEATED && packable(r->type))
        violation(c, "FIELD_SAME_CARDINALITY: %s: numeric field %d is repeated in the %s version and singular in the %s "
                     "one (packed data does not decode)", where, n->number, c->reader_new ? "old" : "new",
                  c->reader_new ? "new" : "old");
    if (strcmp(oneof_of(rm, r), oneof_of(wm, w)) != 0)
        violation(c, "FIELD_SAME_ONEOF: %s: field %d moved from oneof \"%s\" to \"%s\"", where, n->number,
                  oneof_of(om, o), oneof_of(nm, n));
    if (r->type == T(MESSAGE) || r->type == T(GROUP)) {
        const msg_t *rt = r->type_name ? find(rset, r->type_name, false, &c->steps) : NULL;
        const msg_t *wt = w->type_name ? find(wset, w->type_name, false, &c->steps) : NULL;
        if (rt != NULL && wt != NULL) compare_messages(c, where, rt, rset, wt, wset, depth + 1);
    }
    /* An enum that lost a value is reported by the old/new comparison
     * (compare_removals), in every mode. */
}

static void compare_messages(check *c, const char *path, const msg_t *reader, const Google__Protobuf__FileDescriptorSet *rset,
                             const msg_t *writer, const Google__Protobuf__FileDescriptorSet *wset, int depth)
{
    if (depth > MAX_DEPTH) {
        c->too_deep = true;
        return;
    }
    /* Every pair is compared once: recursive schemas end, and the work is
     * polynomial in the schemas' size. */
    if (!pairs_add(&c->compared[c->reader_new], reader, writer)) return;
    for (size_t i = 0; i < writer->n_field && step(c); i++) {
        const field_t *w = writer->field[i], *r = field_by_number(reader, w->number);
        if (r != NULL) compare_field(c, path, reader, r, rset, writer, w, wset, depth);
    }
    for (size_t i = 0; i < reader->n_field; i++) {
        const field_t *r = reader->field[i];
        if (r->label == REQUIRED && field_by_number(writer, r->number) == NULL)
            violation(c, "FIELD_NO_REQUIRED_ADDED: %s.%s: required field %d is in the %s version only", path, r->name,
                      r->number, c->reader_new ? "new" : "old");
    }
}

/* Removals from old to new, recursively over message fields. */
static void compare_removals(check *c, const char *path, const msg_t *old_m, const msg_t *new_m, int depth)
{
    if (depth > MAX_DEPTH) {
        c->too_deep = true;
        return;
    }
    if (!pairs_add(&c->removals, old_m, new_m)) return; /* each pair once, as above */
    for (size_t i = 0; i < old_m->n_field && step(c); i++) {
        const field_t *o = old_m->field[i], *n = field_by_number(new_m, o->number);
        if (n == NULL) {
            if (!number_reserved(new_m, o->number))
                violation(c, "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED: %s.%s: field %d was removed without reserving its "
                             "number", path, o->name, o->number);
            continue;
        }
        char where[400];
        snprintf(where, sizeof where, "%s.%s", path, n->name);
        if (o->type == T(ENUM) && n->type == T(ENUM) && o->type_name && n->type_name) {
            const enum_t *oe = find(c->old_set, o->type_name, true, &c->steps);
            const enum_t *ne = find(c->new_set, n->type_name, true, &c->steps);
            for (size_t v = 0; oe != NULL && ne != NULL && v < oe->n_value; v++) {
                bool kept = false;
                for (size_t k = 0; k < ne->n_value && !kept; k++) kept = ne->value[k]->number == oe->value[v]->number;
                if (!kept && !enum_number_reserved(ne, oe->value[v]->number))
                    violation(c, "ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED: %s: enum %s lost value %s (%d) without "
                                 "reserving it", where, ne->name, oe->value[v]->name, oe->value[v]->number);
            }
        } else if (o->type == T(MESSAGE) && n->type == T(MESSAGE) && o->type_name && n->type_name) {
            const msg_t *om = find(c->old_set, o->type_name, false, &c->steps);
            const msg_t *nm = find(c->new_set, n->type_name, false, &c->steps);
            if (om != NULL && nm != NULL) compare_removals(c, where, om, nm, depth + 1);
        }
    }
}

/* The length of a full name without a version suffix "V<digits>" on its
 * last component ("todo.v1.TaskCreatedV2" -> "todo.v1.TaskCreated"). */
static size_t unversioned_len(const char *name)
{
    size_t n = strlen(name), d = n;
    while (d > 0 && name[d - 1] >= '0' && name[d - 1] <= '9') d--;
    if (d == n || d < 2 || name[d - 1] != 'V' || name[d - 2] == '.') return n;
    return d - 1;
}

bool reg_same_message_name(const char *a, const char *b)
{
    size_t na = unversioned_len(a), nb = unversioned_len(b);
    return na == nb && memcmp(a, b, na) == 0;
}

int reg_compat_check(const reg_schema *old_schema, const reg_schema *new_schema, reg_mode m, reg_report *report,
                     todo_err *err)
{
    memset(report, 0, sizeof *report);
    if (!named_set(old_schema->set) || !named_set(new_schema->set))
        return todo_err_set(err, TODO_EINVAL, "the descriptor set has an unnamed message, field, oneof or enum value,"
                                              " or messages nested deeper than 32");
    long steps = MAX_STEPS;
    const msg_t *old_m = find(old_schema->set, old_schema->message, false, &steps);
    const msg_t *new_m = find(new_schema->set, new_schema->message, false, &steps);
    if (old_m == NULL || new_m == NULL)
        return todo_err_set(err, TODO_EINVAL, "the descriptor set has no message %s",
                            old_m == NULL ? old_schema->message : new_schema->message);
    if (m == REG_NONE) return TODO_OK;
    check c = {.old_set = old_schema->set, .new_set = new_schema->set, .report = report, .steps = steps};
    const char *path = new_schema->message;
    if (!reg_same_message_name(old_schema->message, new_schema->message))
        violation(&c, "MESSAGE_SAME_NAME: %s: the message was %s", new_schema->message, old_schema->message);
    bool backward = m == REG_BACKWARD || m == REG_FULL || m == REG_BACKWARD_TRANSITIVE || m == REG_FULL_TRANSITIVE;
    bool forward = m == REG_FORWARD || m == REG_FULL || m == REG_FORWARD_TRANSITIVE || m == REG_FULL_TRANSITIVE;
    if (backward) {
        c.reader_new = true;
        compare_messages(&c, path, new_m, new_schema->set, old_m, old_schema->set, 0);
    }
    if (forward) {
        c.reader_new = false;
        compare_messages(&c, path, old_m, old_schema->set, new_m, new_schema->set, 0);
    }
    compare_removals(&c, path, old_m, new_m, 0);
    bool oom = c.compared[0].oom || c.compared[1].oom || c.removals.oom;
    free(c.compared[0].slot);
    free(c.compared[1].slot);
    free(c.removals.slot);
    if (oom) return todo_err_set(err, TODO_EINTERNAL, "out of memory comparing the schemas");
    if (c.too_deep)
        return todo_err_set(err, TODO_ETOOBIG, "the schemas nest message fields deeper than %d levels", MAX_DEPTH);
    if (c.steps < 0)
        return todo_err_set(err, TODO_ETOOBIG, "the schemas are too large to compare (more than %ld steps)",
                            MAX_STEPS);
    return TODO_OK;
}

int reg_set_decode(const uint8_t *bytes, size_t len, Google__Protobuf__FileDescriptorSet **out, todo_err *err)
{
    *out = NULL;
    /* Descriptor sets nest: set, file, message, nested message... */
    if (pbx_check(&google__protobuf__file_descriptor_set__descriptor, bytes, len, MAX_DEPTH, err) != TODO_OK) {
        char why[sizeof err->msg];
        snprintf(why, sizeof why, "%s", err->msg);
        return todo_err_set(err, TODO_EINVAL, "the schema is not a serialized FileDescriptorSet (%.300s)", why);
    }
    static const uint8_t empty[1];
    *out = google__protobuf__file_descriptor_set__unpack(NULL, len, bytes != NULL ? bytes : empty);
    if (*out == NULL) return todo_err_set(err, TODO_EINVAL, "the schema is not a serialized FileDescriptorSet");
    pbx_strip_unknown(&(*out)->base, NULL);
    return TODO_OK;
}
