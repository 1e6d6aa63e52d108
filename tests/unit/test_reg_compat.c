/*
 * Unit tests of reg_compat: every rule with a passing and a failing schema
 * pair, in every mode. The schemas are tests/unit/registry/<case>/event.proto,
 * compiled to descriptor sets by the build (REG_TEST_DIR/<case>.pb); each is
 * compared with v1 (or p2_v1 for proto2).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reg_compat.h"

static Google__Protobuf__FileDescriptorSet *load(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.pb", REG_TEST_DIR, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) fail_msg("cannot open %s", path);
    static uint8_t buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    Google__Protobuf__FileDescriptorSet *set = google__protobuf__file_descriptor_set__unpack(NULL, n, buf);
    if (set == NULL) fail_msg("%s does not decode", path);
    return set;
}

/* Expected outcome per mode: NULL = compatible, else a rule name. */
typedef struct row {
    const char *old_case, *new_case, *new_message;
    const char *backward, *forward;   /* FULL expects either */
} row;

static const row ROWS[] = {
    {"v1", "v1", "regtest.v1.Event", NULL, NULL},
    {"v1", "ok_add_field", "regtest.v1.Event", NULL, NULL},
    {"v1", "ok_widen", "regtest.v1.Event", NULL, NULL},
    {"v1", "ok_reserved_removal", "regtest.v1.Event", NULL, NULL},
    {"v1", "ok_enum_reserved", "regtest.v1.Event", NULL, NULL},
    {"v1", "bad_type", "regtest.v1.Event", "FIELD_WIRE_COMPATIBLE_TYPE", "FIELD_WIRE_COMPATIBLE_TYPE"},
    {"v1", "bad_rename", "regtest.v1.Event", "FIELD_SAME_NAME", "FIELD_SAME_NAME"},
    {"v1", "bad_removal", "regtest.v1.Event", "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED",
     "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED"},
    {"v1", "bad_enum", "regtest.v1.Event", "ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED",
     "ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED"},
    {"v1", "bad_message_name", "regtest.v1.Happening", "MESSAGE_SAME_NAME", "MESSAGE_SAME_NAME"},
    /* A version suffix is not a new name (TaskCreated -> TaskCreatedV2). */
    {"v1", "ok_versioned_name", "regtest.v1.EventV2", NULL, NULL},
    {"v1", "bad_package", "regtest.v2.Event", "MESSAGE_SAME_NAME", "MESSAGE_SAME_NAME"},
    /* New readers of old packed data break; old readers of new singular data do not. */
    {"v1", "bad_repeated_to_singular", "regtest.v1.Event", "FIELD_SAME_CARDINALITY", NULL},
    /* And the other way round. */
    {"v1", "singular_to_repeated", "regtest.v1.Event", NULL, "FIELD_SAME_CARDINALITY"},
    {"v1", "bad_oneof", "regtest.v1.Event", "FIELD_SAME_ONEOF", "FIELD_SAME_ONEOF"},
    {"v1", "bad_inner", "regtest.v1.Event", "FIELD_WIRE_COMPATIBLE_TYPE", "FIELD_WIRE_COMPATIBLE_TYPE"},
    {"v1", "bad_map", "regtest.v1.Event", "FIELD_WIRE_COMPATIBLE_TYPE", "FIELD_WIRE_COMPATIBLE_TYPE"},
    /* A new required field: new readers reject old data; old readers are fine. */
    {"p2_v1", "p2_required", "regtest.v1.Event", "FIELD_NO_REQUIRED_ADDED", NULL},
    /* Removing it again: old readers (which require it) reject new data. */
    {"p2_required", "p2_v1", "regtest.v1.Event", "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED",
     "FIELD_NO_REQUIRED_ADDED"},
};

static bool has_rule(const reg_report *r, const char *rule)
{
    for (int i = 0; i < r->n && i < REG_MAX_VIOLATIONS; i++)
        if (strncmp(r->violations[i], rule, strlen(rule)) == 0) return true;
    return false;
}

static void expect(const row *w, reg_mode m, const reg_report *r, const char *want)
{
    if (want == NULL && r->n != 0)
        fail_msg("%s -> %s in %s: expected compatible, got %s", w->old_case, w->new_case, reg_mode_name(m),
                 r->violations[0]);
    if (want != NULL && !has_rule(r, want))
        fail_msg("%s -> %s in %s: expected %s, got %d violation(s)%s%s", w->old_case, w->new_case, reg_mode_name(m),
                 want, r->n, r->n ? ": " : "", r->n ? r->violations[0] : "");
}

static void every_rule_passes_and_fails_in_every_mode(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof ROWS / sizeof ROWS[0]; i++) {
        const row *w = &ROWS[i];
        Google__Protobuf__FileDescriptorSet *o = load(w->old_case), *n = load(w->new_case);
        reg_schema os = {o, "regtest.v1.Event"}, ns = {n, w->new_message};
        reg_report r;
        todo_err err;
        /* The two "removed" rules hold in every mode but NONE. */
        bool removal = w->backward != NULL && strstr(w->backward, "NO_DELETE") != NULL;
        for (int m = REG_NONE; m <= REG_FULL_TRANSITIVE; m++) {
            assert_int_equal(reg_compat_check(&os, &ns, (reg_mode)m, &r, &err), TODO_OK);
            bool back = m == REG_BACKWARD || m == REG_BACKWARD_TRANSITIVE, fwd = m == REG_FORWARD || m == REG_FORWARD_TRANSITIVE;
            if (m == REG_NONE) expect(w, (reg_mode)m, &r, NULL);
            else if (back) expect(w, (reg_mode)m, &r, w->backward);
            else if (fwd) expect(w, (reg_mode)m, &r, removal ? w->backward : w->forward);
            else expect(w, (reg_mode)m, &r, w->backward != NULL ? w->backward : w->forward); /* FULL */
        }
        google__protobuf__file_descriptor_set__free_unpacked(o, NULL);
        google__protobuf__file_descriptor_set__free_unpacked(n, NULL);
    }
}

static void violations_name_the_message_and_field(void **state)
{
    (void)state;
    Google__Protobuf__FileDescriptorSet *o = load("v1"), *n = load("bad_inner"), *t = load("bad_type");
    reg_schema os = {o, "regtest.v1.Event"}, ns = {n, "regtest.v1.Event"}, ts = {t, "regtest.v1.Event"};
    reg_report r;
    todo_err err;
    assert_int_equal(reg_compat_check(&os, &ns, REG_FULL, &r, &err), TODO_OK);
    assert_int_equal(r.n, 1); /* found by both passes, reported once */
    assert_non_null(strstr(r.violations[0], "regtest.v1.Event.inner.count"));
    assert_non_null(strstr(r.violations[0], "int64 to string"));
    assert_int_equal(reg_compat_check(&os, &ts, REG_BACKWARD, &r, &err), TODO_OK);
    assert_non_null(strstr(r.violations[0], "regtest.v1.Event.amount: field 2 changed from int32 to string"));
    /* A schema that does not hold its message. */
    reg_schema missing = {o, "regtest.v1.Nope"};
    assert_int_equal(reg_compat_check(&os, &missing, REG_BACKWARD, &r, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "regtest.v1.Nope"));
    google__protobuf__file_descriptor_set__free_unpacked(o, NULL);
    google__protobuf__file_descriptor_set__free_unpacked(n, NULL);
    google__protobuf__file_descriptor_set__free_unpacked(t, NULL);
}

/* Sets that do not come from protoc: unnamed parts are refused, a message
 * that contains itself is compared once. */
static void odd_sets_are_refused_or_bounded(void **state)
{
    (void)state;
    Google__Protobuf__FieldDescriptorProto self = GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__INIT;
    self.name = "next";
    self.number = 1;
    self.has_number = 1;
    self.type = GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_MESSAGE;
    self.has_type = 1;
    self.type_name = ".p.Node";
    Google__Protobuf__FieldDescriptorProto *fields[] = {&self};
    Google__Protobuf__DescriptorProto node = GOOGLE__PROTOBUF__DESCRIPTOR_PROTO__INIT;
    node.name = "Node";
    node.n_field = 1;
    node.field = fields;
    Google__Protobuf__DescriptorProto *msgs[] = {&node};
    Google__Protobuf__FileDescriptorProto file = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_PROTO__INIT;
    file.name = "p.proto";
    file.package = "p";
    file.n_message_type = 1;
    file.message_type = msgs;
    Google__Protobuf__FileDescriptorProto *files[] = {&file};
    Google__Protobuf__FileDescriptorSet set = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_SET__INIT;
    set.n_file = 1;
    set.file = files;
    reg_schema s = {&set, "p.Node"};
    reg_report r;
    todo_err err;
    assert_int_equal(reg_compat_check(&s, &s, REG_FULL_TRANSITIVE, &r, &err), TODO_OK);
    assert_int_equal(r.n, 0);
    self.name = NULL;
    assert_int_equal(reg_compat_check(&s, &s, REG_BACKWARD, &r, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "unnamed"));
    self.name = "next";
    node.name = NULL;
    assert_int_equal(reg_compat_check(&s, &s, REG_NONE, &r, &err), TODO_EINVAL);
}

/* A set of n messages M0..M(n-1) in package p; message i has `fields`
 * message fields of type M((i + 1 + k) % n) for k = 0..fields-1. All in
 * one allocation freed with free(). */
typedef struct graph {
    Google__Protobuf__FieldDescriptorProto field[128][4];
    Google__Protobuf__FieldDescriptorProto *field_ptr[128][4];
    Google__Protobuf__DescriptorProto msg[128];
    Google__Protobuf__DescriptorProto *msg_ptr[128];
    char names[128][16], types[128][24], fnames[128][4][16];
    Google__Protobuf__FileDescriptorProto file;
    Google__Protobuf__FileDescriptorProto *file_ptr[1];
    Google__Protobuf__FileDescriptorSet set;
} graph;

static graph *make_graph(int n, int fields, bool chain)
{
    graph *g = calloc(1, sizeof *g);
    for (int i = 0; i < n; i++) {
        snprintf(g->names[i], sizeof g->names[i], "M%d", i);
        google__protobuf__descriptor_proto__init(&g->msg[i]);
        g->msg[i].name = g->names[i];
        int nf = chain && i == n - 1 ? 0 : fields;
        for (int k = 0; k < nf; k++) {
            Google__Protobuf__FieldDescriptorProto *f = &g->field[i][k];
            google__protobuf__field_descriptor_proto__init(f);
            snprintf(g->fnames[i][k], sizeof g->fnames[i][k], "f%d", k);
            f->name = g->fnames[i][k];
            f->number = k + 1;
            f->has_number = 1;
            f->type = GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_MESSAGE;
            f->has_type = 1;
            g->field_ptr[i][k] = f;
        }
        snprintf(g->types[i], sizeof g->types[i], ".p.M%d", chain ? i + 1 : (i + 1) % n);
        for (int k = 0; k < nf; k++) g->field[i][k].type_name = g->types[i];
        g->msg[i].n_field = (size_t)nf;
        g->msg[i].field = g->field_ptr[i];
        g->msg_ptr[i] = &g->msg[i];
    }
    google__protobuf__file_descriptor_proto__init(&g->file);
    g->file.name = "p.proto";
    g->file.package = "p";
    g->file.n_message_type = (size_t)n;
    g->file.message_type = g->msg_ptr;
    g->file_ptr[0] = &g->file;
    google__protobuf__file_descriptor_set__init(&g->set);
    g->set.n_file = 1;
    g->set.file = g->file_ptr;
    return g;
}

/* Two messages that hold each other four times took minutes before each
 * (old, new) pair was compared once; a chain nested deeper than the bound
 * is refused with TODO_ETOOBIG instead of being cut off silently. */
static void the_check_is_polynomial_and_bounded(void **state)
{
    (void)state;
    reg_report r;
    todo_err err;
    graph *g = make_graph(2, 4, false);
    reg_schema s = {&g->set, "p.M0"};
    for (int m = REG_NONE; m <= REG_FULL_TRANSITIVE; m++)
        assert_int_equal(reg_compat_check(&s, &s, (reg_mode)m, &r, &err), TODO_OK);
    assert_int_equal(r.n, 0);
    free(g);
    g = make_graph(100, 1, true);
    reg_schema deep = {&g->set, "p.M0"};
    assert_int_equal(reg_compat_check(&deep, &deep, REG_FULL, &r, &err), TODO_ETOOBIG);
    assert_non_null(strstr(err.msg, "deeper than 64"));
    free(g);
    g = make_graph(50, 1, true);
    reg_schema ok = {&g->set, "p.M0"};
    assert_int_equal(reg_compat_check(&ok, &ok, REG_FULL, &r, &err), TODO_OK);
    free(g);
}

static void version_suffixes_are_not_renames(void **state)
{
    (void)state;
    assert_true(reg_same_message_name("todo.v1.TaskCreated", "todo.v1.TaskCreatedV2"));
    assert_true(reg_same_message_name("todo.v1.TaskCreatedV2", "todo.v1.TaskCreatedV13"));
    assert_true(reg_same_message_name("a.B", "a.B"));
    assert_false(reg_same_message_name("todo.v1.TaskCreated", "todo.v1.TaskCreate"));
    assert_false(reg_same_message_name("todo.v1.TaskCreated", "todo.v2.TaskCreatedV2"));
    assert_false(reg_same_message_name("todo.v1.V2", "todo.v1.V3"));       /* a name that is only a suffix */
    assert_false(reg_same_message_name("todo.v1.TaskV", "todo.v1.Task"));  /* "V" without digits */
    assert_false(reg_same_message_name("todo.v1.Task2", "todo.v1.Task"));  /* digits without "V" */
}

static void modes_parse(void **state)
{
    (void)state;
    reg_mode m;
    for (int i = REG_NONE; i <= REG_FULL_TRANSITIVE; i++) {
        assert_int_equal(reg_mode_parse(reg_mode_name((reg_mode)i), &m), TODO_OK);
        assert_int_equal(m, i);
    }
    assert_int_equal(reg_mode_parse("backward", &m), TODO_EINVAL);
    assert_true(reg_mode_transitive(REG_FULL_TRANSITIVE));
    assert_false(reg_mode_transitive(REG_FULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_rule_passes_and_fails_in_every_mode),
        cmocka_unit_test(violations_name_the_message_and_field),
        cmocka_unit_test(odd_sets_are_refused_or_bounded),
        cmocka_unit_test(the_check_is_polynomial_and_bounded),
        cmocka_unit_test(version_suffixes_are_not_renames),
        cmocka_unit_test(modes_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
