/*
 * A libFuzzer target for the request decoding of every RPC our servers
 * host: the bytes a client sends as a gRPC message.
 *
 * The first input byte picks a method (fuzz_methods, modulo their count);
 * the rest is the request body. It is decoded as the servers decode
 * requests, with pbx_decode (depth PBX_MAX_DEPTH, 4 MiB of arena), and a
 * request that decodes must pack and decode again (fuzz_check_repack: what
 * a service stores or forwards must read back). Then the pure checks a
 * service runs on such a request get it: the command validators
 * (cmd_validate.h, zone names looked up in /usr/share/zoneinfo), the query
 * side's order_by, page, search and consistency tokens, and for server
 * reflection the reflection service's own decoder and answer (reflect.h).
 *
 * Any crash, sanitizer report, leak or abort() is a finding. Built and
 * run by scripts/fuzz.sh; seeds (one valid request per method) come from
 * make_seeds.c.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "arena.h"
#include "cmd_validate.h"
#include "ctoken.h"
#include "fuzz_common.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "pbx.h"
#include "qry_page.h"
#include "qry_search.h"
#include "reflect.h"
#include "todo/v1/query.pb-c.h"

#define ZONEINFO "/usr/share/zoneinfo"

extern const unsigned char todo_descriptor_set[];
extern const size_t todo_descriptor_set_len;

static arena *scratch;
static reflect_index *reflection;
static ctoken_key token_key;

/* The names list_services answers with: what a todo-command server hosts. */
static const char *const hosted[] = {
    "todo.v1.TaskCommandService", "todo.v1.SchemaRegistryService", "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    todo_err err;
    scratch = arena_new();
    ctoken_key_derive(FUZZ_SECRET, &token_key);
    reflection = reflect_index_new(todo_descriptor_set, todo_descriptor_set_len, &err);
    if (scratch == NULL || reflection == NULL) fuzz_fail("fuzz_requests", "cannot set up");
    return 0;
}

/* The storage of m's field name when it has type t, or NULL. */
static const void *field(const ProtobufCMessage *m, const char *name, ProtobufCType t)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
    if (f == NULL || f->type != t || f->label == PROTOBUF_C_LABEL_REPEATED) return NULL;
    return (const char *)m + f->offset;
}

static const char *string_field(const ProtobufCMessage *m, const char *name)
{
    const char *const *s = field(m, name, PROTOBUF_C_TYPE_STRING);
    return s != NULL ? *s : NULL;
}

/* The checks every command's handler makes on the fields it has, by the
 * fields' names, so a new command is covered as soon as it reuses them. */
static void validate_command(const ProtobufCMessage *m)
{
    static const char *const ids[] = {"task_id", "reminder_id", "pattern_id", "completed_task_id"};
    todo_err err;
    const char *s;
    const int64_t *v;
    const int *e;
    ProtobufCMessage *const *sub;

    if ((s = string_field(m, "request_id")) != NULL) (void)cmd_validate_request_id(s, &err);
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if ((s = string_field(m, ids[i])) != NULL) (void)cmd_validate_id(ids[i], s, &err);
    if ((v = field(m, "expected_version", PROTOBUF_C_TYPE_INT64)) != NULL)
        (void)cmd_validate_expected_version(*v, &err);
    if ((e = field(m, "channel", PROTOBUF_C_TYPE_ENUM)) != NULL) {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(m->descriptor, "channels");
        const int *list = NULL;
        size_t n = 0;
        if (f != NULL && f->type == PROTOBUF_C_TYPE_ENUM && f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(const size_t *)((const char *)m + f->quantifier_offset);
            list = *(int *const *)((const char *)m + f->offset);
        }
        int joined[CMD_MAX_CHANNELS];
        size_t n_joined;
        (void)cmd_validate_channels(*e, list, n, joined, &n_joined, &err);
    }
    if ((sub = field(m, "remind_at", PROTOBUF_C_TYPE_MESSAGE)) != NULL)
        (void)cmd_validate_remind_at((const Google__Protobuf__Timestamp *)*sub, FUZZ_NOW_US, &err);
    if ((sub = field(m, "rule", PROTOBUF_C_TYPE_MESSAGE)) != NULL)
        (void)cmd_validate_rule((const Todo__V1__RecurrenceRule *)*sub, FUZZ_NOW_US, ZONEINFO, &err);

    cmd_fields out;
    const char *names[6];
    if (m->descriptor == &todo__v1__create_task_request__descriptor &&
        cmd_validate_create((const Todo__V1__CreateTaskRequest *)m, &out, &err) == TODO_OK)
        (void)cmd_fields_names(out.mask, names);
    if (m->descriptor == &todo__v1__update_task_request__descriptor &&
        cmd_validate_update((const Todo__V1__UpdateTaskRequest *)m, &out, &err) == TODO_OK)
        (void)cmd_fields_names(out.mask, names);
}

/* The query service's checks: consistency tokens on every query, and the
 * order and page token of the method's listing. */
static void validate_query(const ProtobufCMessage *m, const char *method)
{
    todo_err err;
    const char *s;
    char id[37];
    int64_t version;
    qry_sort sort;
    qry_page_key key;

    if ((s = string_field(m, "consistency_token")) != NULL && s[0] != '\0')
        (void)ctoken_decode(&token_key, FUZZ_USER, s, id, &version, &err);
    const char *page = string_field(m, "page_token");
    if (strcmp(method, "ListTasks") == 0) {
        if (qry_sort_parse(string_field(m, "order_by"), &sort, &err) == TODO_OK && page[0] != '\0')
            (void)qry_page_decode(page, &sort, &key, &err);
    } else if (strcmp(method, "ListReminders") == 0) {
        sort = (qry_sort){.field = QRY_SORT_REMIND_AT, .asc = true};
        if (page[0] != '\0') (void)qry_page_decode(page, &sort, &key, &err);
    } else if (strcmp(method, "SearchTasks") == 0) {
        char tsq[2048];
        int offset;
        (void)qry_search_tsquery(string_field(m, "query"), tsq, sizeof tsq, &err);
        if (page[0] != '\0') (void)qry_search_token_decode(page, &offset, &err);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const fuzz_method *methods;
    size_t n = fuzz_methods(&methods);
    if (size < 1) return 0;
    const fuzz_method *fm = &methods[data[0] % n];
    const uint8_t *body = data + 1;
    size_t len = size - 1;
    const pbx_limits lim = {.max_depth = PBX_MAX_DEPTH, .max_bytes = 4u << 20};
    ProtobufCMessage *req;
    todo_err err;

    arena_reset(scratch);
    if (pbx_decode(fm->method->input, body, len, scratch, &lim, &req, &err) == TODO_OK) {
        fuzz_check_repack(req, scratch, &lim, fm->method->name);
        if (fm->service == &todo__v1__task_command_service__descriptor) validate_command(req);
        if (fm->service == &todo__v1__task_query_service__descriptor) validate_query(req, fm->method->name);
    }
    /* The reflection stream decodes its requests itself (reflect.c). */
    if (fm->method->input == &grpc__reflection__v1__server_reflection_request__descriptor) {
        unsigned char *out;
        size_t out_len;
        (void)reflect_answer(reflection, hosted, sizeof hosted / sizeof hosted[0], body, len, scratch, &out,
                             &out_len, &err);
    }
    return 0;
}
