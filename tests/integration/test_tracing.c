/*
 * Integration test of trace context and correlation: one task completion
 * sent with a W3C traceparent is followed through all four processes' logs
 * (todo-command's call, the projector's applied event, todo-saga's saga and
 * notification, todo-command again for the call the saga makes, todo-query
 * asked within the same trace), and the events todo-saga causes name the
 * completion's event as their cause and keep its correlation id.
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
#include <time.h>

#include "arena.h"
#include "event.h"
#include "grpcx_client.h"
#include "harness.h"
#include "todo/v1/command.pb-c.h"
#include "todo/v1/query.pb-c.h"
#include "trace.h"

static pid_t procs[4];
static PGconn *db;
static const char *const NAMES[4] = {"trace-command", "trace-query", "trace-projector", "trace-saga"};

static int setup(void **state)
{
    (void)state;
    if (!harness_stack_available()) return 0;
    const char *debug[] = {"TODO_LOG_LEVEL=debug", "TODO_SAGA_INSTANCE=trace", NULL};
    const char *bins[4] = {"command/todo-command", "query/todo-query", "projection/todo-projector", "saga/todo-saga"};
    char path[512];
    for (int i = 0; i < 4; i++) { /* fresh logs: the test reads them */
        snprintf(path, sizeof path, "%s/../tests/logs/%s.log", TODO_BIN_DIR, NAMES[i]);
        remove(path);
        procs[i] = harness_spawn(bins[i], NAMES[i], debug);
    }
    if (!harness_wait_serving(getenv("TODO_COMMAND_ADDR"), 20000) ||
        !harness_wait_serving(getenv("TODO_QUERY_ADDR"), 20000))
        return -1;
    db = harness_admin();
    return db != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int bad = 0;
    for (int i = 0; i < 4; i++)
        if (procs[i] > 0 && harness_stop(procs[i], SIGTERM, 20000) != 0) bad = 1;
    PQfinish(db);
    return bad;
}

/* Calls rpc of service at addr with a traceparent (NULL: none). */
static grpc_status_code call(const char *addr, const char *service, const char *rpc, const ProtobufCMessage *req,
                             const ProtobufCMessageDescriptor *d, const char *auth, const char *tp,
                             ProtobufCMessage **out)
{
    char path[128];
    snprintf(path, sizeof path, "/%s/%s", service, rpc);
    grpcx_channel *ch = harness_channel(addr);
    grpcx_md md[1] = {{"traceparent", tp}};
    grpcx_result res;
    ProtobufCMessage *resp = NULL;
    grpc_status_code code = grpcx_unary_md(ch, path, req, d, auth, md, tp != NULL ? 1 : 0, 10000, &resp, &res);
    if (out != NULL) *out = resp;
    else if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
    grpcx_channel_free(ch);
    return code;
}

static Todo__V1__CommandReply *command(const char *rpc, const ProtobufCMessage *req, const char *auth, const char *tp)
{
    ProtobufCMessage *out = NULL;
    assert_int_equal(call(getenv("TODO_COMMAND_ADDR"), "todo.v1.TaskCommandService", rpc, req,
                          &todo__v1__command_reply__descriptor, auth, tp, &out),
                     GRPC_STATUS_OK);
    return (Todo__V1__CommandReply *)out;
}

/* True when the log of process i has a line holding every one of the
 * NULL-terminated strings (within timeout_ms). */
static bool log_has(int i, int timeout_ms, ...)
{
    char path[512], line[4096];
    snprintf(path, sizeof path, "%s/../tests/logs/%s.log", TODO_BIN_DIR, NAMES[i]);
    long long until = harness_now_ms() + timeout_ms;
    do {
        FILE *f = fopen(path, "r");
        while (f != NULL && fgets(line, sizeof line, f) != NULL) {
            va_list ap;
            va_start(ap, timeout_ms);
            bool all = true;
            for (const char *s = va_arg(ap, const char *); s != NULL && all; s = va_arg(ap, const char *))
                all = strstr(line, s) != NULL;
            va_end(ap);
            if (all) {
                fclose(f);
                return true;
            }
        }
        if (f != NULL) fclose(f);
        harness_sleep_ms(100);
    } while (harness_now_ms() < until);
    return false;
}

/* The envelope of write.events' event of type for aggregate (decoded into a). */
static Todo__V1__EventEnvelope *stored(arena *a, const char *aggregate, const char *type)
{
    const char *p[2] = {aggregate, type};
    PGresult *r = PQexecParams(db,
                               "select envelope from write.events where aggregate_id = $1::uuid and event_type = $2"
                               " order by position desc limit 1",
                               2, NULL, p, NULL, NULL, 1);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(r), 1);
    Todo__V1__EventEnvelope *env = NULL;
    todo_err err;
    size_t len = (size_t)PQgetlength(r, 0, 0);
    uint8_t *bytes = arena_alloc(a, len + 1);
    memcpy(bytes, PQgetvalue(r, 0, 0), len);
    PQclear(r);
    assert_int_equal(event_decode(bytes, len, a, &env, &err), TODO_OK);
    return env;
}

static void one_completion_is_one_trace_through_every_process(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    arena *a = arena_new();
    char user[64], tp[56], trace_id[64];
    harness_user(user, "traced");
    char *auth = harness_bearer(user, 600, NULL);
    trace_ctx t;
    trace_new(&t);
    trace_format(&t, tp);
    snprintf(trace_id, sizeof trace_id, "trace_id=%s", t.trace_id);

    /* A task with a reminder (another trace), then its completion in ours. */
    Todo__V1__CreateTaskRequest ct = TODO__V1__CREATE_TASK_REQUEST__INIT;
    ct.title = "traced task";
    Todo__V1__CommandReply *r = command("CreateTask", &ct.base, auth, NULL);
    char *task = strdup(r->id);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    Todo__V1__ScheduleReminderRequest sr = TODO__V1__SCHEDULE_REMINDER_REQUEST__INIT;
    Google__Protobuf__Timestamp at = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    at.seconds = (int64_t)time(NULL) + 86400;
    sr.task_id = task;
    sr.remind_at = &at;
    sr.channel = TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_PUSH;
    r = command("ScheduleReminder", &sr.base, auth, NULL);
    char *reminder = strdup(r->id);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* The saga consumer of a new group starts at the end of the topic once
     * it holds its partitions: until todo-saga says it consumes and Kafka
     * assigned it, a completion could pass unseen. */
    assert_true(log_has(3, 20000, "msg=\"consuming\"", "group=saga-task-completion-v1", NULL));
    harness_sleep_ms(3000);
    Todo__V1__CompleteTaskRequest cr = TODO__V1__COMPLETE_TASK_REQUEST__INIT;
    cr.task_id = task;
    r = command("CompleteTask", &cr.base, auth, tp);
    char *completed_event = strdup(r->event_id);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* The query side, asked within the same trace. */
    Todo__V1__GetTaskRequest gt = TODO__V1__GET_TASK_REQUEST__INIT;
    gt.task_id = task;
    assert_int_equal(call(getenv("TODO_QUERY_ADDR"), "todo.v1.TaskQueryService", "GetTask", &gt.base,
                          &todo__v1__task__descriptor, auth, tp, NULL),
                     GRPC_STATUS_OK);

    /* The saga completes: the reminder cancelled by a call in the trace. */
    long long until = harness_now_ms() + 30000;
    while (harness_now_ms() < until &&
           harness_scalar(db, "select count(*) from saga.sagas where id = $1::uuid and state = 'COMPLETED'",
                          completed_event) != 1)
        harness_sleep_ms(100);
    assert_int_equal(harness_scalar(db, "select count(*) from saga.sagas where id = $1::uuid and state = 'COMPLETED'",
                                    completed_event),
                     1);

    /* Every process logged the trace. */
    assert_true(log_has(0, 10000, "CompleteTask", trace_id, NULL));     /* todo-command: the call */
    assert_true(log_has(0, 10000, "CancelReminder", trace_id, NULL));   /* todo-command: the saga's call */
    assert_true(log_has(2, 10000, "type=task.completed", trace_id, NULL)); /* todo-projector */
    assert_true(log_has(3, 10000, "msg=\"started\"", trace_id, NULL));  /* todo-saga: the saga starts */
    assert_true(log_has(3, 10000, "msg=\"completed\"", trace_id, NULL)); /* ...and ends */
    assert_true(log_has(3, 15000, "outcome=sent", trace_id, NULL));     /* todo-saga: the notification */
    assert_true(log_has(1, 10000, "GetTask", trace_id, NULL));          /* todo-query */

    /* The events: the completion carries the trace and correlates by it;
     * what the saga caused names the completion as its cause. */
    Todo__V1__EventEnvelope *done = stored(a, task, "task.completed");
    trace_ctx got;
    assert_true(trace_parse(event_traceparent(done), &got));
    assert_string_equal(got.trace_id, t.trace_id);
    assert_string_equal(done->correlation_id, t.trace_id);
    assert_int_equal(strncmp(done->causation_id, "call:", 5), 0);
    Todo__V1__EventEnvelope *cancelled = stored(a, reminder, "reminder.cancelled");
    assert_string_equal(cancelled->causation_id, completed_event);
    assert_string_equal(cancelled->correlation_id, t.trace_id);
    assert_true(trace_parse(event_traceparent(cancelled), &got));
    assert_string_equal(got.trace_id, t.trace_id);
    free(task);
    free(reminder);
    free(completed_event);
    free(auth);
    arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_completion_is_one_trace_through_every_process),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
