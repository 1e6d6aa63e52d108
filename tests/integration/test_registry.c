/*
 * Integration tests of the schema registry on the real stack.
 *
 * Through todoctl: register v1, a compatible v2 passes, a breaking v3 is
 * refused with the rule named, registering again is idempotent, modes per
 * subject. On the wire: the services register their schemas at start-up
 * and stamp every record with its schema id; the projector reads v1 and v2
 * task.created events by their ids, dead-letters unknown, foreign and newer
 * ids and goes on; a producer whose schema the registry refuses does not
 * start and says which rule it broke.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "arena.h"
#include "event.h"
#include "auth.h"
#include "harness.h"
#include "reg_service.h"
#include "reg_local.h"
#include "reg_store.h"
#include "text.h"
#include "todo/v1/command.pb-c.h"
#include "todo/v1/registry.pb-c.h"

static int todoctl(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int todoctl(char *out, size_t cap, const char *fmt, ...)
{
    char args[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    return harness_todoctl(args, out, cap);
}

/* A FileDescriptorSet whose one file holds a message nested `levels`
 * deep (nested_type inside nested_type...); *len gets its size. */
static uint8_t *deep_descriptor_set(int levels, size_t *len)
{
    size_t cap = (size_t)levels * 8 + 64, n = 0;
    uint8_t *buf = malloc(cap), *tmp = malloc(cap);
    for (int i = 0; i <= levels + 1; i++) {
        /* nested_type (3) inside messages, message_type (4) in the file,
         * file (1) in the set */
        uint8_t tag = i < levels ? (3 << 3) | 2 : i == levels ? (4 << 3) | 2 : (1 << 3) | 2;
        size_t m = 0, v = n;
        tmp[m++] = tag;
        do {
            tmp[m++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
            v >>= 7;
        } while (v);
        memcpy(tmp + m, buf, n);
        n += m;
        memcpy(buf, tmp, n);
    }
    free(tmp);
    *len = n;
    return buf;
}

static void versions_are_checked_registered_and_refused(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char subject[64], out[8192];
    const char *dir = REG_TEST_DIR;
    harness_user(subject, "test.event");
    /* No version yet: the message must be named. */
    assert_int_equal(todoctl(out, sizeof out, "registry register %s %s/v1.pb", subject, dir), 2);
    assert_int_equal(todoctl(out, sizeof out, "registry register %s %s/v1.pb --message regtest.v1.Event", subject, dir), 0);
    assert_non_null(strstr(out, "version 1"));
    /* Again: the same version and id. */
    assert_int_equal(todoctl(out, sizeof out, "registry register %s %s/v1.pb", subject, dir), 0);
    assert_non_null(strstr(out, "version 1"));
    /* A compatible v2, checked then registered. */
    assert_int_equal(todoctl(out, sizeof out, "registry check %s %s/ok_add_field.pb", subject, dir), 0);
    assert_non_null(strstr(out, "compatible"));
    assert_int_equal(todoctl(out, sizeof out, "registry register %s %s/ok_add_field.pb", subject, dir), 0);
    assert_non_null(strstr(out, "version 2"));
    /* A breaking v3 is refused, naming the rule and the field. */
    assert_int_equal(todoctl(out, sizeof out, "registry register %s %s/bad_type.pb", subject, dir), 1);
    assert_non_null(strstr(out, "FIELD_WIRE_COMPATIBLE_TYPE"));
    assert_non_null(strstr(out, "regtest.v1.Event.amount"));
    assert_int_equal(todoctl(out, sizeof out, "registry register %s %s/bad_removal.pb", subject, dir), 1);
    assert_non_null(strstr(out, "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED"));
    /* ok_widen suits v1, but it drops v2's field "extra": refused, naming
     * the version it breaks. */
    assert_int_equal(todoctl(out, sizeof out, "registry set-mode %s FULL_TRANSITIVE", subject), 0);
    assert_int_equal(todoctl(out, sizeof out, "registry check %s %s/ok_widen.pb", subject, dir), 1);
    assert_non_null(strstr(out, "against version 2: FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED"));
    assert_non_null(strstr(out, "Event.extra"));
    /* FORWARD: old readers must read it; a new singular->repeated breaks them. */
    assert_int_equal(todoctl(out, sizeof out, "registry set-mode %s FORWARD", subject), 0);
    assert_int_equal(todoctl(out, sizeof out, "registry check %s %s/singular_to_repeated.pb", subject, dir), 1);
    assert_non_null(strstr(out, "FIELD_SAME_CARDINALITY"));
    /* NONE: anything goes. */
    assert_int_equal(todoctl(out, sizeof out, "registry set-mode %s NONE", subject), 0);
    assert_int_equal(todoctl(out, sizeof out, "registry register %s %s/bad_type.pb", subject, dir), 0);
    assert_non_null(strstr(out, "version 3"));
    /* A .proto file is compiled on the way. */
    assert_int_equal(todoctl(out, sizeof out, "registry check %s %s/v1/event.proto", subject, REG_SRC_DIR), 0);
    /* ...with its imports found in the repository's proto/ (the project's
     * own events.proto imports todo/v1/task.proto), or in -I folders. */
    assert_int_equal(todoctl(out, sizeof out,
                             "registry check %s.own %s/../../../proto/todo/v1/events.proto --message todo.v1.TaskCreatedV2",
                             subject, REG_SRC_DIR),
                     0);
    assert_non_null(strstr(out, "compatible"));
    assert_int_equal(todoctl(out, sizeof out,
                             "registry check %s.own %s/../../../proto/todo/v1/events.proto --message todo.v1.TaskCreatedV2"
                             " -I %s/../../../proto",
                             subject, REG_SRC_DIR, REG_SRC_DIR),
                     0);
    /* list and show. */
    assert_int_equal(todoctl(out, sizeof out, "registry list"), 0);
    assert_non_null(strstr(out, subject));
    assert_int_equal(todoctl(out, sizeof out, "registry show %s 2", subject), 0);
    assert_non_null(strstr(out, "version 2"));
    assert_non_null(strstr(out, "extra"));
    assert_int_equal(todoctl(out, sizeof out, "registry show %s 9", subject), 1);
    /* Bad input. */
    assert_int_equal(todoctl(out, sizeof out, "registry register BAD! %s/v1.pb --message regtest.v1.Event", dir), 1);
    assert_non_null(strstr(out, "subject"));
    assert_int_equal(todoctl(out, sizeof out, "registry register %s %s/v1.pb --message regtest.v1.Nope", subject, dir), 1);
    assert_non_null(strstr(out, "regtest.v1.Nope"));
    assert_int_equal(todoctl(out, sizeof out, "registry set-mode %s SIDEWAYS", subject), 2);
}

/* ---- schema ids on the wire ---- */

/* The id of message's schema registered under subject (0: none). */
static int registered_id(const char *subject, const char *message)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "select coalesce(max(s.id), 0) from registry.versions v join registry.schemas s on s.id = v.schema_id"
             " where v.subject = '%s' and s.message = $1",
             subject);
    return (int)harness_scalar(harness_db, sql, message);
}

typedef struct stamped {
    const char *event_id;
    int header_id, envelope_id;
} stamped;

static bool is_event(const rd_kafka_message_t *m, void *ctx)
{
    stamped *w = ctx;
    Todo__V1__EventEnvelope *env = todo__v1__event_envelope__unpack(NULL, m->len, m->payload);
    bool yes = env != NULL && strcmp(env->event_id, w->event_id) == 0;
    if (yes) {
        rd_kafka_headers_t *h = NULL;
        const void *v;
        size_t n;
        char buf[32] = "";
        if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            rd_kafka_header_get_last(h, "todo_schema_id", &v, &n) == RD_KAFKA_RESP_ERR_NO_ERROR && n < sizeof buf) {
            memcpy(buf, v, n);
            buf[n] = '\0';
        }
        w->header_id = atoi(buf);
        w->envelope_id = env->schema_id;
    }
    if (env != NULL) todo__v1__event_envelope__free_unpacked(env, NULL);
    return yes;
}

static void producers_register_their_schemas_and_stamp_every_record(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    /* Both compiled versions of task.created, oldest first. */
    int v1 = registered_id("task.created", "todo.v1.TaskCreated"), v2 = registered_id("task.created", "todo.v1.TaskCreatedV2");
    assert_true(v1 > 0 && v2 > 0);
    char ids[2][16];
    snprintf(ids[0], sizeof ids[0], "%d", v1);
    snprintf(ids[1], sizeof ids[1], "%d", v2);
    const char *version_sql = "select version from registry.versions where subject = 'task.created' and schema_id = $1::int";
    assert_true(harness_scalar(harness_db, version_sql, ids[0]) < harness_scalar(harness_db, version_sql, ids[1]));
    /* Every subject the command writes is there; the saga's too once it ran. */
    assert_true(registered_id("reminder.triggered", "todo.v1.ReminderTriggered") > 0);
    assert_true(registered_id("recurring_pattern.updated", "todo.v1.RecurringPatternUpdated") > 0);

    char user[64];
    harness_user(user, "stamped");
    char *auth = harness_bearer(user, 600, NULL);
    Todo__V1__CreateTaskRequest req = TODO__V1__CREATE_TASK_REQUEST__INIT;
    req.title = "stamped with its schema";
    Todo__V1__CommandReply *rp;
    grpcx_result res;
    assert_int_equal(harness_command("CreateTask", &req.base, auth, &rp, &res), GRPC_STATUS_OK);
    stamped w = {.event_id = rp->event_id};
    assert_int_equal(harness_consume("tasks.events.v1", is_event, &w, 1, 15000), 1);
    assert_int_equal(w.header_id, v2);
    assert_int_equal(w.envelope_id, v2);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    free(auth);
}

/* Encodes a task.created event of version v (1 or 2) for a new task of
 * user, stamped with schema id id. */
static void task_created(arena *a, const char *user, int v, int id, const char *title, uint8_t **bytes, size_t *len)
{
    char task_id[37], event_id[37];
    todo_err err;
    text_uuid_v4(task_id);
    text_uuid_v4(event_id);
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ts.seconds = 1700000000;
    Todo__V1__TaskCreated e1 = TODO__V1__TASK_CREATED__INIT;
    Todo__V1__TaskCreatedV2 e2 = TODO__V1__TASK_CREATED_V2__INIT;
    e1.task_id = e2.task_id = task_id;
    e1.title = e2.title = (char *)title;
    e1.created_at = e2.created_at = &ts;
    e2.category = "errands";
    event_meta m = {.event_id = event_id, .event_type = "task.created", .source = "test", .time_us = event_now_us(),
                    .user_id = user, .aggregate_type = "task", .aggregate_id = task_id, .aggregate_version = 1,
                    .schema_version = v};
    int32_t before = event_schema_id("task.created", v);
    event_schema_id_set("task.created", v, id);
    assert_int_equal(event_encode(&m, v == 1 ? &e1.base : &e2.base, a, bytes, len, &err), 0);
    event_schema_id_set("task.created", v, before);
}

static long long projected(const char *user, const char *title, const char *category, int timeout_ms)
{
    char sql[256];
    snprintf(sql, sizeof sql, "select count(*) from read.tasks where user_id = $1 and title = '%s' and category = '%s'",
             title, category);
    long long until = harness_now_ms() + timeout_ms, n = 0;
    while ((n = harness_scalar(harness_db, sql, user)) == 0 && harness_now_ms() < until) harness_sleep_ms(50);
    return n;
}

#define PROJECTOR_GROUP "projection-task-read-v1"

static void v1_and_v2_events_are_projected_by_their_schema_ids(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "versions");
    arena *a = arena_new();
    uint8_t *b1, *b2;
    size_t n1, n2;
    task_created(a, user, 1, registered_id("task.created", "todo.v1.TaskCreated"), "written as v1", &b1, &n1);
    task_created(a, user, 2, registered_id("task.created", "todo.v1.TaskCreatedV2"), "written as v2", &b2, &n2);
    harness_produce("tasks.events.v1", user, b1, n1);
    harness_produce("tasks.events.v1", user, b2, n2);
    assert_int_equal(projected(user, "written as v1", "", 15000), 1);        /* upcast: no category */
    assert_int_equal(projected(user, "written as v2", "errands", 15000), 1);
    arena_free(a);
}

/* Registers a "v3" of task.created that this build does not know: v2 under
 * the name TaskCreatedV3 (compatible; a new message to this build). */
static int register_v3(void)
{
    uint8_t *bytes;
    size_t len;
    todo_err err;
    assert_int_equal(reg_compiled_schema("todo.v1.TaskCreatedV2", &bytes, &len, &err), 0);
    Google__Protobuf__FileDescriptorSet *set = google__protobuf__file_descriptor_set__unpack(NULL, len, bytes);
    free(bytes);
    assert_non_null(set);
    Google__Protobuf__FileDescriptorProto *ev = set->file[set->n_file - 1];
    char *old_name = ev->message_type[0]->name;
    ev->message_type[0]->name = "TaskCreatedV3";
    len = google__protobuf__file_descriptor_set__get_packed_size(set);
    bytes = malloc(len);
    google__protobuf__file_descriptor_set__pack(set, bytes);
    ev->message_type[0]->name = old_name;
    google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
    int id, version;
    reg_report report;
    int rc = reg_store_register(harness_db, "task.created", "todo.v1.TaskCreatedV3", bytes, len, true, &id, &version,
                                &report, &err);
    free(bytes);
    if (rc != 0) fail_msg("registering v3: %s", err.msg);
    return id;
}

static void unknown_foreign_and_newer_schema_ids_are_dead_lettered(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "schemaids");
    arena *a = arena_new();
    uint8_t *unknown, *foreign, *newer, *good;
    size_t n_unknown, n_foreign, n_newer, n_good;
    int v3 = register_v3();
    assert_true(v3 > 0);
    task_created(a, user, 2, 987654321, "unknown id", &unknown, &n_unknown);
    task_created(a, user, 2, registered_id("task.completed", "todo.v1.TaskCompleted"), "foreign id", &foreign,
                 &n_foreign);
    task_created(a, user, 2, v3, "newer id", &newer, &n_newer);
    task_created(a, user, 2, registered_id("task.created", "todo.v1.TaskCreatedV2"), "after them", &good, &n_good);
    harness_produce("tasks.events.v1", user, unknown, n_unknown);
    harness_produce("tasks.events.v1", user, foreign, n_foreign);
    harness_produce("tasks.events.v1", user, newer, n_newer);
    harness_produce("tasks.events.v1", user, good, n_good);
    /* The projector went on past them... */
    assert_int_equal(projected(user, "after them", "errands", 15000), 1);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from read.tasks where user_id = $1", user), 1);
    /* ...and each is on the dead-letter topic, saying why. */
    assert_true(harness_dlq_holds("tasks.events.v1", PROJECTOR_GROUP, unknown, n_unknown,
                                  "schema id 987654321 is not registered"));
    assert_true(harness_dlq_holds("tasks.events.v1", PROJECTOR_GROUP, foreign, n_foreign,
                                  "is not registered for task.created"));
    assert_true(harness_dlq_holds("tasks.events.v1", PROJECTOR_GROUP, newer, n_newer,
                                  "todo.v1.TaskCreatedV3) is not a version this consumer reads"));
    arena_free(a);
}

/* A database of its own, migrated, whose registry holds a task.deleted the
 * command's cannot follow: the command refuses to start, naming the rule. */
static void a_producer_refuses_to_start_when_its_schema_is_refused(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char db[64], admin_url[512], cmd_url[512], out[4096];
    assert_true(harness_scratch_db("regdb", db, admin_url, sizeof admin_url));
    const char *base = getenv("TODO_PG_URL"), *cbase = getenv("TODO_COMMAND_PG_URL");
    harness_pg_url_with_db(cmd_url, sizeof cmd_url, "TODO_COMMAND_PG_URL=", cbase, db);
    char *saved = strdup(base);
    setenv("TODO_PG_URL", admin_url, 1);
    assert_int_equal(harness_todoctl("migrate", out, sizeof out), 0);
    assert_int_equal(todoctl(out, sizeof out, "registry register task.deleted %s/todo_descriptors.pb --message "
                                              "todo.v1.TaskCompleted", REG_GEN_DIR), 0);
    setenv("TODO_PG_URL", saved, 1);
    free(saved);

    char addr[64], log[256];
    snprintf(addr, sizeof addr, "TODO_COMMAND_ADDR=127.0.0.1:%d", harness_free_port());
    snprintf(log, sizeof log, "%s/refused-schema.log", REG_LOG_DIR);
    FILE *f = fopen(log, "w"); /* this run's output only */
    if (f != NULL) fclose(f);
    const char *extra[] = {cmd_url, addr, NULL};
    pid_t pid = harness_spawn("command/todo-command", "refused-schema", extra);
    int status = -1;
    long long until = harness_now_ms() + 20000;
    while (harness_now_ms() < until && waitpid(pid, &status, WNOHANG) == 0) harness_sleep_ms(50);
    if (harness_now_ms() >= until) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail_msg("todo-command started although its schema was refused");
    }
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
    f = fopen(log, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    fclose(f);
    assert_non_null(strstr(out, "cannot register the event schemas"));
    assert_non_null(strstr(out, "task.deleted"));
    assert_non_null(strstr(out, "MESSAGE_SAME_NAME"));

    assert_true(harness_drop_db(db));
}

/* ---- SchemaRegistryService ---- */

static uint8_t *file_bytes(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.pb", REG_TEST_DIR, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint8_t *buf = malloc(1 << 16);
    *len = fread(buf, 1, 1 << 16, f);
    fclose(f);
    return buf;
}

static grpc_status_code registry_call(const char *rpc, const ProtobufCMessage *req,
                                      const ProtobufCMessageDescriptor *reply, const char *auth, ProtobufCMessage **out,
                                      grpcx_result *res)
{
    char path[96];
    snprintf(path, sizeof path, "/todo.v1.SchemaRegistryService/%s", rpc);
    ProtobufCMessage *r = NULL;
    grpc_status_code code = grpcx_unary(harness_svc.cmd, path, req, reply, auth, 15000, &r, res);
    if (out != NULL) *out = r;
    else if (r != NULL) protobuf_c_message_free_unpacked(r, NULL);
    return code;
}

static void the_grpc_service_checks_registers_and_guards_writes(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char subject[64];
    harness_user(subject, "grpc.event");
    /* Writers hold a service token with scope registry:write; the old
     * writer's user id, or todo-saga's internal scope, is no writer. */
    char *reader = harness_bearer("registry-reader", 600, NULL),
         *writer = harness_scoped_bearer("registry-operator", AUTH_SCOPE_REGISTRY_WRITE, "registry-admin");
    char *old_writer = harness_bearer("registry-admin", 600, NULL), *saga = harness_service_bearer("registry-reader");
    size_t n1, n3;
    uint8_t *v1 = file_bytes("v1", &n1), *bad = file_bytes("bad_type", &n3);
    Todo__V1__SchemaRequest req = TODO__V1__SCHEMA_REQUEST__INIT;
    req.subject = subject;
    req.message = "regtest.v1.Event";
    req.descriptor_set = (ProtobufCBinaryData){n1, v1};
    grpcx_result res;
    ProtobufCMessage *out;

    /* Reading needs a token; checking and writing need a writer's. */
    assert_int_equal(registry_call("CheckSchema", &req.base, &todo__v1__check_schema_response__descriptor, NULL, NULL,
                                   &res), GRPC_STATUS_UNAUTHENTICATED);
    assert_int_equal(registry_call("CheckSchema", &req.base, &todo__v1__check_schema_response__descriptor, reader, NULL,
                                   &res), GRPC_STATUS_PERMISSION_DENIED);
    assert_non_null(strstr(res.message, "scope registry:write"));
    assert_int_equal(registry_call("CheckSchema", &req.base, &todo__v1__check_schema_response__descriptor, old_writer,
                                   NULL, &res), GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(registry_call("CheckSchema", &req.base, &todo__v1__check_schema_response__descriptor, saga, NULL,
                                   &res), GRPC_STATUS_PERMISSION_DENIED);
    free(old_writer);
    free(saga);
    assert_int_equal(registry_call("CheckSchema", &req.base, &todo__v1__check_schema_response__descriptor, writer, &out,
                                   &res), GRPC_STATUS_OK);
    assert_true(((Todo__V1__CheckSchemaResponse *)out)->compatible);
    protobuf_c_message_free_unpacked(out, NULL);
    assert_int_equal(registry_call("RegisterSchema", &req.base, &todo__v1__register_schema_response__descriptor, reader,
                                   NULL, &res), GRPC_STATUS_PERMISSION_DENIED);
    assert_non_null(strstr(res.message, "registry-reader"));
    assert_int_equal(registry_call("RegisterSchema", &req.base, &todo__v1__register_schema_response__descriptor, writer,
                                   &out, &res), GRPC_STATUS_OK);
    Todo__V1__RegisterSchemaResponse *reg = (Todo__V1__RegisterSchemaResponse *)out;
    assert_int_equal(reg->version, 1);
    int id = reg->schema_id;
    protobuf_c_message_free_unpacked(out, NULL);
    /* Again: the same id and version. */
    assert_int_equal(registry_call("RegisterSchema", &req.base, &todo__v1__register_schema_response__descriptor, writer,
                                   &out, &res), GRPC_STATUS_OK);
    assert_int_equal(((Todo__V1__RegisterSchemaResponse *)out)->schema_id, id);
    protobuf_c_message_free_unpacked(out, NULL);

    /* A breaking version: CheckSchema lists why, RegisterSchema refuses naming the rule. */
    req.descriptor_set = (ProtobufCBinaryData){n3, bad};
    req.message = ""; /* the latest version's message */
    assert_int_equal(registry_call("CheckSchema", &req.base, &todo__v1__check_schema_response__descriptor, writer, &out,
                                   &res), GRPC_STATUS_OK);
    Todo__V1__CheckSchemaResponse *chk = (Todo__V1__CheckSchemaResponse *)out;
    assert_false(chk->compatible);
    assert_string_equal(chk->mode, "BACKWARD");
    assert_true(chk->n_violations >= 1);
    assert_non_null(strstr(chk->violations[0], "FIELD_WIRE_COMPATIBLE_TYPE"));
    protobuf_c_message_free_unpacked(out, NULL);
    assert_int_equal(registry_call("RegisterSchema", &req.base, &todo__v1__register_schema_response__descriptor, writer,
                                   NULL, &res), GRPC_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(res.message, "FIELD_WIRE_COMPATIBLE_TYPE"));
    assert_non_null(strstr(res.message, "regtest.v1.Event"));

    /* Mode NONE lets it through as version 2. */
    Todo__V1__SetModeRequest mode = TODO__V1__SET_MODE_REQUEST__INIT;
    mode.subject = subject;
    mode.mode = "NONE";
    assert_int_equal(registry_call("SetMode", &mode.base, &todo__v1__set_mode_response__descriptor, writer, NULL, &res),
                     GRPC_STATUS_OK);
    assert_int_equal(registry_call("RegisterSchema", &req.base, &todo__v1__register_schema_response__descriptor, writer,
                                   &out, &res), GRPC_STATUS_OK);
    assert_int_equal(((Todo__V1__RegisterSchemaResponse *)out)->version, 2);
    protobuf_c_message_free_unpacked(out, NULL);

    /* By id: the exact bytes registered. */
    Todo__V1__GetSchemaRequest get = TODO__V1__GET_SCHEMA_REQUEST__INIT;
    get.schema_id = id;
    assert_int_equal(registry_call("GetSchema", &get.base, &todo__v1__schema__descriptor, reader, &out, &res),
                     GRPC_STATUS_OK);
    Todo__V1__Schema *sch = (Todo__V1__Schema *)out;
    assert_string_equal(sch->message, "regtest.v1.Event");
    assert_int_equal(sch->descriptor_set.len, n1);
    assert_memory_equal(sch->descriptor_set.data, v1, n1);
    protobuf_c_message_free_unpacked(out, NULL);
    get.schema_id = 0;
    get.subject = subject;
    get.version = 7;
    assert_int_equal(registry_call("GetSchema", &get.base, &todo__v1__schema__descriptor, reader, NULL, &res),
                     GRPC_STATUS_NOT_FOUND);

    /* Bad input names the field. */
    uint8_t junk[] = {0x0a, 0xff, 0xff};
    req.descriptor_set = (ProtobufCBinaryData){sizeof junk, junk};
    assert_int_equal(registry_call("RegisterSchema", &req.base, &todo__v1__register_schema_response__descriptor, writer,
                                   NULL, &res), GRPC_STATUS_INVALID_ARGUMENT);
    /* A set nested 10,000 levels deep (tens of KB) once overflowed a worker's
     * stack inside protobuf-c and killed todo-command: now it is refused on
     * its raw bytes, and the service answers the next call. */
    size_t deep_len;
    uint8_t *deep = deep_descriptor_set(10000, &deep_len);
    req.descriptor_set = (ProtobufCBinaryData){deep_len, deep};
    assert_int_equal(registry_call("CheckSchema", &req.base, &todo__v1__check_schema_response__descriptor, writer, NULL,
                                   &res), GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(res.message, "nested deeper"));
    free(deep);
    uint8_t *big = calloc(1, REG_MAX_SCHEMA_BYTES + 1);
    req.descriptor_set = (ProtobufCBinaryData){REG_MAX_SCHEMA_BYTES + 1, big};
    assert_int_equal(registry_call("CheckSchema", &req.base, &todo__v1__check_schema_response__descriptor, writer, NULL,
                                   &res), GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(res.message, "descriptor_set"));
    free(big);
    req.descriptor_set = (ProtobufCBinaryData){n1, v1};
    req.subject = "Not A Subject";
    assert_int_equal(registry_call("CheckSchema", &req.base, &todo__v1__check_schema_response__descriptor, writer, NULL,
                                   &res), GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(res.message, "subject"));
    free(v1);
    free(bad);
    free(reader);
    free(writer);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(versions_are_checked_registered_and_refused),
    };
    const struct CMUnitTest wire[] = {
        cmocka_unit_test(producers_register_their_schemas_and_stamp_every_record),
        cmocka_unit_test(v1_and_v2_events_are_projected_by_their_schema_ids),
        cmocka_unit_test(unknown_foreign_and_newer_schema_ids_are_dead_lettered),
        cmocka_unit_test(a_producer_refuses_to_start_when_its_schema_is_refused),
        cmocka_unit_test(the_grpc_service_checks_registers_and_guards_writes),
    };
    int failed = cmocka_run_group_tests_name("todoctl", tests, NULL, NULL);
    return failed + cmocka_run_group_tests_name("on the wire", wire, harness_group_setup, harness_group_teardown);
}
