/*
 * reg_local: the schemas a build registers are pruned to what their message
 * reaches, the same bytes every time, and the two compiled versions of
 * task.created are compatible under the registry's rules.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "event.h"
#include "reg_compat.h"
#include "reg_local.h"

static Google__Protobuf__FileDescriptorSet *pruned(const char *message)
{
    uint8_t *bytes;
    size_t len;
    todo_err err;
    if (reg_compiled_schema(message, &bytes, &len, &err) != 0) fail_msg("%s: %s", message, err.msg);
    Google__Protobuf__FileDescriptorSet *set = google__protobuf__file_descriptor_set__unpack(NULL, len, bytes);
    free(bytes);
    assert_non_null(set);
    return set;
}

static const Google__Protobuf__FileDescriptorProto *file_named(const Google__Protobuf__FileDescriptorSet *set,
                                                               const char *name)
{
    for (size_t i = 0; i < set->n_file; i++)
        if (strcmp(set->file[i]->name, name) == 0) return set->file[i];
    return NULL;
}

static void a_schema_holds_only_what_its_message_reaches(void **state)
{
    (void)state;
    Google__Protobuf__FileDescriptorSet *set = pruned("todo.v1.TaskCreatedV2");
    assert_int_equal(set->n_file, 3); /* timestamp.proto, task.proto (Priority), events.proto */
    const Google__Protobuf__FileDescriptorProto *ev = file_named(set, "todo/v1/events.proto");
    const Google__Protobuf__FileDescriptorProto *task = file_named(set, "todo/v1/task.proto");
    const Google__Protobuf__FileDescriptorProto *ts = file_named(set, "google/protobuf/timestamp.proto");
    assert_non_null(ev);
    assert_non_null(task);
    assert_non_null(ts);
    assert_int_equal(ev->n_message_type, 1);
    assert_string_equal(ev->message_type[0]->name, "TaskCreatedV2");
    assert_int_equal(ev->n_service, 0);
    assert_int_equal(task->n_message_type, 0);
    assert_int_equal(task->n_enum_type, 1);
    assert_string_equal(task->enum_type[0]->name, "Priority");
    /* Dependencies name only files the set holds; dependencies come first. */
    for (size_t d = 0; d < ev->n_dependency; d++) assert_non_null(file_named(set, ev->dependency[d]));
    assert_string_equal(set->file[set->n_file - 1]->name, "todo/v1/events.proto");
    google__protobuf__file_descriptor_set__free_unpacked(set, NULL);

    /* Nested types (a map's entry) come with their message. */
    set = pruned("todo.v1.EventEnvelope");
    ev = file_named(set, "todo/v1/events.proto");
    assert_non_null(ev);
    assert_int_equal(ev->n_message_type, 1);
    assert_int_equal(ev->message_type[0]->n_nested_type, 1);
    assert_null(file_named(set, "todo/v1/task.proto"));
    google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
}

static void the_same_build_registers_the_same_bytes(void **state)
{
    (void)state;
    uint8_t *a, *b;
    size_t na, nb;
    todo_err err;
    assert_int_equal(reg_compiled_schema("todo.v1.TaskCompleted", &a, &na, &err), 0);
    assert_int_equal(reg_compiled_schema("todo.v1.TaskCompleted", &b, &nb, &err), 0);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na);
    free(a);
    free(b);
}

static void every_known_version_is_compatible_with_the_one_before(void **state)
{
    (void)state;
    const event_schema *all;
    size_t n = event_schemas(&all);
    int pairs = 0;
    for (size_t i = 0; i < n; i++) {
        google__protobuf__file_descriptor_set__free_unpacked(pruned(all[i].message), NULL); /* every one prunes */
        if (i == 0 || strcmp(all[i - 1].type, all[i].type) != 0) continue;
        assert_int_equal(all[i].version, all[i - 1].version + 1);
        Google__Protobuf__FileDescriptorSet *old_set = pruned(all[i - 1].message), *new_set = pruned(all[i].message);
        reg_schema o = {old_set, all[i - 1].message}, w = {new_set, all[i].message};
        reg_report r;
        todo_err err;
        assert_int_equal(reg_compat_check(&o, &w, REG_FULL_TRANSITIVE, &r, &err), 0);
        if (r.n != 0) fail_msg("%s v%d: %s", all[i].type, all[i].version, r.violations[0]);
        google__protobuf__file_descriptor_set__free_unpacked(old_set, NULL);
        google__protobuf__file_descriptor_set__free_unpacked(new_set, NULL);
        pairs++;
    }
    assert_true(pairs >= 1); /* task.created v1 -> v2 */
    assert_int_equal(event_current_version("task.created"), 2);
    assert_int_equal(event_current_version("no.such"), 0);
}

static void bad_input_is_refused(void **state)
{
    (void)state;
    uint8_t *out;
    size_t len;
    todo_err err;
    assert_int_equal(reg_compiled_schema("todo.v1.NoSuch", &out, &len, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "todo.v1.NoSuch"));
    assert_null(out);
    /* A nested message is not a subject's root. */
    assert_int_equal(reg_compiled_schema("todo.v1.EventEnvelope.MetadataEntry", &out, &len, &err), TODO_EINVAL);
    const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff};
    assert_int_equal(reg_prune(junk, sizeof junk, "a.B", &out, &len, &err), TODO_EINVAL);
}

static void ids_recorded_at_start_up_go_into_envelopes(void **state)
{
    (void)state;
    assert_int_equal(event_schema_id("task.deleted", 1), 0);
    event_schema_id_set("task.deleted", 1, 42);
    event_schema_id_set("no.such", 1, 7); /* ignored */
    assert_int_equal(event_schema_id("task.deleted", 1), 42);
    assert_int_equal(event_schema_id("no.such", 1), 0);
    event_schema_id_set("task.deleted", 1, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_schema_holds_only_what_its_message_reaches),
        cmocka_unit_test(the_same_build_registers_the_same_bytes),
        cmocka_unit_test(every_known_version_is_compatible_with_the_one_before),
        cmocka_unit_test(bad_input_is_refused),
        cmocka_unit_test(ids_recorded_at_start_up_go_into_envelopes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
