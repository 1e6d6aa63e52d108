/* Unit tests of reflect: the server reflection answers over the embedded
 * descriptor set. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "reflect.h"

extern const unsigned char todo_descriptor_set[];
extern const size_t todo_descriptor_set_len;

static const char *const services[] = {"grpc.health.v1.Health", "todo.v1.TaskCommandService"};

static Grpc__Reflection__V1__ServerReflectionResponse *ask(reflect_index *idx, Grpc__Reflection__V1__ServerReflectionRequest *rq,
                                                            arena *a)
{
    uint8_t buf[1024];
    size_t n = grpc__reflection__v1__server_reflection_request__pack(rq, buf);
    unsigned char *out;
    size_t out_len;
    todo_err err;
    assert_int_equal(reflect_answer(idx, services, 2, buf, n, a, &out, &out_len, &err), TODO_OK);
    ProtobufCAllocator alloc;
    arena_pbc_allocator(a, &alloc);
    Grpc__Reflection__V1__ServerReflectionResponse *rs =
        grpc__reflection__v1__server_reflection_response__unpack(&alloc, out_len, out);
    assert_non_null(rs);
    return rs;
}

/* The names of the files in a file descriptor response. */
static int has_file(const Grpc__Reflection__V1__FileDescriptorResponse *fr, const char *name)
{
    int count = 0;
    for (size_t i = 0; i < fr->n_file_descriptor_proto; i++) {
        Google__Protobuf__FileDescriptorProto *f = google__protobuf__file_descriptor_proto__unpack(
            NULL, fr->file_descriptor_proto[i].len, fr->file_descriptor_proto[i].data);
        assert_non_null(f);
        count += strcmp(f->name, name) == 0;
        google__protobuf__file_descriptor_proto__free_unpacked(f, NULL);
    }
    return count;
}

static void list_services_names_the_hosted_services(void **state)
{
    (void)state;
    todo_err err;
    reflect_index *idx = reflect_index_new(todo_descriptor_set, todo_descriptor_set_len, &err);
    arena *a = arena_new();
    Grpc__Reflection__V1__ServerReflectionRequest rq = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    rq.host = "localhost";
    rq.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
    rq.list_services = "*";
    Grpc__Reflection__V1__ServerReflectionResponse *rs = ask(idx, &rq, a);
    assert_string_equal(rs->valid_host, "localhost");
    assert_non_null(rs->original_request);
    assert_int_equal(rs->message_response_case,
                     GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE);
    assert_int_equal(rs->list_services_response->n_service, 2);
    assert_string_equal(rs->list_services_response->service[1]->name, "todo.v1.TaskCommandService");
    arena_free(a);
    reflect_index_free(idx);
}

static void symbols_resolve_to_their_file_and_dependencies(void **state)
{
    (void)state;
    todo_err err;
    reflect_index *idx = reflect_index_new(todo_descriptor_set, todo_descriptor_set_len, &err);
    arena *a = arena_new();
    const char *symbols[] = {"todo.v1.TaskCommandService", "todo.v1.TaskCommandService.CreateTask",
                             ".todo.v1.CreateTaskRequest", "todo.v1.Priority"};
    for (size_t i = 0; i < 4; i++) {
        Grpc__Reflection__V1__ServerReflectionRequest rq = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
        rq.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
        rq.file_containing_symbol = (char *)symbols[i];
        Grpc__Reflection__V1__ServerReflectionResponse *rs = ask(idx, &rq, a);
        assert_int_equal(rs->message_response_case,
                         GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE);
        if (i < 3) {
            /* command.proto and each of its imports, once. */
            assert_int_equal(has_file(rs->file_descriptor_response, "todo/v1/command.proto"), 1);
            assert_int_equal(has_file(rs->file_descriptor_response, "todo/v1/task.proto"), 1);
            assert_int_equal(has_file(rs->file_descriptor_response, "google/protobuf/timestamp.proto"), 1);
            assert_int_equal(has_file(rs->file_descriptor_response, "google/protobuf/field_mask.proto"), 1);
        } else {
            assert_int_equal(has_file(rs->file_descriptor_response, "todo/v1/task.proto"), 1);
        }
    }
    assert_true(reflect_has_symbol(idx, "todo.v1.ListTasksResponse"));
    assert_true(reflect_has_symbol(idx, "grpc.health.v1.HealthCheckResponse.ServingStatus"));
    assert_true(reflect_has_symbol(idx, "grpc.reflection.v1alpha.ServerReflection"));
    arena_free(a);
    reflect_index_free(idx);
}

static void unknown_names_get_an_in_band_not_found(void **state)
{
    (void)state;
    todo_err err;
    reflect_index *idx = reflect_index_new(todo_descriptor_set, todo_descriptor_set_len, &err);
    arena *a = arena_new();
    Grpc__Reflection__V1__ServerReflectionRequest rq = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    rq.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME;
    rq.file_by_filename = "nope.proto";
    Grpc__Reflection__V1__ServerReflectionResponse *rs = ask(idx, &rq, a);
    assert_int_equal(rs->message_response_case,
                     GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE);
    assert_int_equal(rs->error_response->error_code, 5);
    rq.file_by_filename = "todo/v1/query.proto";
    rs = ask(idx, &rq, a);
    assert_int_equal(has_file(rs->file_descriptor_response, "google/protobuf/wrappers.proto"), 1);
    rq.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE;
    rq.all_extension_numbers_of_type = "todo.v1.Task";
    rs = ask(idx, &rq, a);
    assert_int_equal(rs->all_extension_numbers_response->n_extension_number, 0);
    arena_free(a);
    reflect_index_free(idx);
}

static void malformed_sets_and_requests_are_refused(void **state)
{
    (void)state;
    todo_err err;
    const unsigned char bad[] = {0x0a, 0x50, 0x01};
    assert_null(reflect_index_new(bad, sizeof bad, &err));
    assert_int_equal(err.code, TODO_EINVAL);
    reflect_index *idx = reflect_index_new(todo_descriptor_set, todo_descriptor_set_len, &err);
    arena *a = arena_new();
    unsigned char *out;
    size_t n;
    const unsigned char junk[] = {0xff, 0xff};
    assert_int_equal(reflect_answer(idx, services, 2, junk, sizeof junk, a, &out, &n, &err), TODO_EINVAL);
    arena_free(a);
    reflect_index_free(idx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(list_services_names_the_hosted_services),
        cmocka_unit_test(symbols_resolve_to_their_file_and_dependencies),
        cmocka_unit_test(unknown_names_get_an_in_band_not_found),
        cmocka_unit_test(malformed_sets_and_requests_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
