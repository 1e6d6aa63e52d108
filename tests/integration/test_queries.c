/*
 * Integration tests of SearchTasks and GetTaskStats on the real stack:
 * ranked full-text search with a prefix match, only the caller's live tasks;
 * statistics kept as events are projected, overdue counted at query time;
 * a task's history (GetTaskHistory) and the task as it was (GetTask as_of).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "arena.h"
#include "harness.h"
#include "qry_page.h"
#include "todo/v1/command.pb-c.h"
#include "todo/v1/query.pb-c.h"

/* Creates a task; returns the reply (caller frees). due_in_s 0: no due date. */
static Todo__V1__CommandReply *create(const char *auth, const char *title, int prio, int64_t due_in_s)
{
    Todo__V1__CreateTaskRequest rq = TODO__V1__CREATE_TASK_REQUEST__INIT;
    Google__Protobuf__Timestamp due = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    Todo__V1__CommandReply *rp;
    grpcx_result res;
    rq.title = (char *)title;
    rq.priority = (Todo__V1__Priority)prio;
    if (due_in_s != 0) {
        due.seconds = event_now_us() / 1000000 + due_in_s;
        rq.due_at = &due;
    }
    if (harness_command("CreateTask", &rq.base, auth, &rp, &res) != GRPC_STATUS_OK) fail_msg("%s", res.message);
    return rp;
}

static Todo__V1__ListTasksResponse *search(const char *auth, const char *query, const char *token, int size,
                                           const char *page, grpc_status_code *code, grpcx_result *res)
{
    Todo__V1__SearchTasksRequest rq = TODO__V1__SEARCH_TASKS_REQUEST__INIT;
    Todo__V1__ListTasksResponse *out = NULL;
    rq.query = (char *)query;
    rq.consistency_token = (char *)(token != NULL ? token : "");
    rq.page_size = size;
    rq.page_token = (char *)(page != NULL ? page : "");
    *code = grpcx_unary(harness_svc.qry, "/todo.v1.TaskQueryService/SearchTasks", &rq.base,
                        &todo__v1__list_tasks_response__descriptor, auth, 15000, (ProtobufCMessage **)&out, res);
    return out;
}

static void search_ranks_prefix_matches_of_the_callers_tasks(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64], other[64];
    harness_user(user, "search");
    harness_user(other, "nosy");
    char *auth = harness_bearer(user, 600, NULL), *oauth = harness_bearer(other, 600, NULL);
    Todo__V1__CommandReply *a = create(auth, "Buy oat milk", 2, 0), *b = create(auth, "Milk the cow, then milk it again", 2, 0);
    Todo__V1__CommandReply *c = create(auth, "Call the bank", 2, 0), *last = create(auth, "Buy bread", 2, 0);
    grpc_status_code code;
    grpcx_result res;

    Todo__V1__ListTasksResponse *r = search(auth, "mil", last->consistency_token, 10, NULL, &code, &res);
    assert_int_equal(code, GRPC_STATUS_OK);
    assert_int_equal(r->n_tasks, 2);
    assert_string_equal(r->tasks[0]->id, b->id); /* "milk" twice ranks higher */
    assert_string_equal(r->tasks[1]->id, a->id);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    r = search(auth, "buy mi", NULL, 10, NULL, &code, &res);
    assert_int_equal(r->n_tasks, 1);
    assert_string_equal(r->tasks[0]->id, a->id);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* Pages. */
    r = search(auth, "b", NULL, 1, NULL, &code, &res);
    assert_int_equal(r->n_tasks, 1);
    assert_true(r->next_page_token[0] != '\0');
    char page[40];
    snprintf(page, sizeof page, "%s", r->next_page_token);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    r = search(auth, "b", NULL, 1, page, &code, &res);
    assert_int_equal(code, GRPC_STATUS_OK);
    assert_int_equal(r->n_tasks, 1);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* Another user finds nothing of it; SQL in the query is just words. */
    r = search(oauth, "milk", NULL, 10, NULL, &code, &res);
    assert_int_equal(r->n_tasks, 0);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    r = search(auth, "bank'; delete from read.tasks; --", NULL, 10, NULL, &code, &res);
    assert_int_equal(code, GRPC_STATUS_OK);
    assert_int_equal(r->n_tasks, 0);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    search(auth, "?!", NULL, 10, NULL, &code, &res);
    assert_int_equal(code, GRPC_STATUS_INVALID_ARGUMENT);
    assert_true(strncmp(res.message, "query", 5) == 0);

    /* A deleted task is not found. */
    Todo__V1__DeleteTaskRequest del = TODO__V1__DELETE_TASK_REQUEST__INIT;
    Todo__V1__CommandReply *d;
    del.task_id = c->id;
    assert_int_equal(harness_command("DeleteTask", &del.base, auth, &d, &res), GRPC_STATUS_OK);
    r = search(auth, "bank", d->consistency_token, 10, NULL, &code, &res);
    assert_int_equal(r->n_tasks, 0);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    Todo__V1__CommandReply *all[] = {a, b, c, last, d};
    for (int i = 0; i < 5; i++) protobuf_c_message_free_unpacked(&all[i]->base, NULL);
    free(auth);
    free(oauth);
}

/* ListTasks refuses what it cannot use with INVALID_ARGUMENT naming the
 * field: invalid UTF-8 in the tag or category filter (once UNAVAILABLE,
 * "retry later": a client retried for ever) and a time out of range. */
static void list_filters_are_checked_like_commands(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "filters");
    char *auth = harness_bearer(user, 600, NULL);
    ProtobufCMessage *out = NULL;
    grpcx_result res;
    Todo__V1__ListTasksRequest rq = TODO__V1__LIST_TASKS_REQUEST__INIT;
    static const char *const fields[] = {"tag", "category"};
    for (int f = 0; f < 2; f++) {
        uint8_t bad[] = {0xc3, 0x28}; /* "\xc3(": not UTF-8 */
        ProtobufCMessageUnknownField u = {.wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED};
        const ProtobufCFieldDescriptor *fd =
            protobuf_c_message_descriptor_get_field_by_name(&todo__v1__list_tasks_request__descriptor, fields[f]);
        uint8_t data[3] = {2, bad[0], bad[1]}; /* sent as field `fields[f]` through an unknown field */
        u.tag = fd->id;
        u.len = 3;
        u.data = data;
        rq.base.n_unknown_fields = 1;
        rq.base.unknown_fields = &u;
        assert_int_equal(grpcx_unary(harness_svc.qry, "/todo.v1.TaskQueryService/ListTasks", &rq.base,
                                     &todo__v1__list_tasks_response__descriptor, auth, 5000, &out, &res),
                         GRPC_STATUS_INVALID_ARGUMENT);
        assert_true(strncmp(res.message, fields[f], strlen(fields[f])) == 0);
    }
    rq.base.n_unknown_fields = 0;
    rq.base.unknown_fields = NULL;
    Google__Protobuf__Timestamp far = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    far.seconds = INT64_C(1) << 62;
    rq.due_before = &far;
    assert_int_equal(grpcx_unary(harness_svc.qry, "/todo.v1.TaskQueryService/ListTasks", &rq.base,
                                 &todo__v1__list_tasks_response__descriptor, auth, 5000, &out, &res),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_true(strncmp(res.message, "due_before", 10) == 0);
    rq.due_before = NULL;
    far.seconds = 0;
    far.nanos = -5;
    rq.due_after = &far;
    assert_int_equal(grpcx_unary(harness_svc.qry, "/todo.v1.TaskQueryService/ListTasks", &rq.base,
                                 &todo__v1__list_tasks_response__descriptor, auth, 5000, &out, &res),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_true(strncmp(res.message, "due_after", 9) == 0);
    free(auth);
}

static Todo__V1__TaskStats *stats(const char *auth, const char *token)
{
    Todo__V1__GetTaskStatsRequest rq = TODO__V1__GET_TASK_STATS_REQUEST__INIT;
    Todo__V1__TaskStats *out = NULL;
    grpcx_result res;
    rq.consistency_token = (char *)(token != NULL ? token : "");
    if (grpcx_unary(harness_svc.qry, "/todo.v1.TaskQueryService/GetTaskStats", &rq.base, &todo__v1__task_stats__descriptor,
                    auth, 15000, (ProtobufCMessage **)&out, &res) != GRPC_STATUS_OK)
        fail_msg("GetTaskStats: %s", res.message);
    return out;
}

static int64_t by(const Todo__V1__TaskStats *s, const char *key)
{
    for (size_t i = 0; i < s->n_by_priority; i++)
        if (strcmp(s->by_priority[i]->key, key) == 0) return s->by_priority[i]->value;
    return -1;
}

static void stats_follow_every_change(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "stats");
    char *auth = harness_bearer(user, 600, NULL);
    grpcx_result res;

    Todo__V1__TaskStats *s = stats(auth, NULL);
    assert_int_equal(s->total, 0);
    assert_true(s->completion_rate == 0.0);
    protobuf_c_message_free_unpacked(&s->base, NULL);

    Todo__V1__CommandReply *t1 = create(auth, "late", 3, -3600);  /* overdue */
    Todo__V1__CommandReply *t2 = create(auth, "soon", 3, 3600);
    Todo__V1__CommandReply *t3 = create(auth, "someday", 1, 0);
    Todo__V1__CommandReply *t4 = create(auth, "gone", 4, -60);
    Todo__V1__CompleteTaskRequest done = TODO__V1__COMPLETE_TASK_REQUEST__INIT;
    Todo__V1__DeleteTaskRequest del = TODO__V1__DELETE_TASK_REQUEST__INIT;
    Todo__V1__UpdateTaskRequest up = TODO__V1__UPDATE_TASK_REQUEST__INIT;
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    char *paths[] = {"priority"};
    Todo__V1__CommandReply *r;
    done.task_id = t2->id;
    assert_int_equal(harness_command("CompleteTask", &done.base, auth, NULL, &res), GRPC_STATUS_OK);
    del.task_id = t4->id;
    assert_int_equal(harness_command("DeleteTask", &del.base, auth, NULL, &res), GRPC_STATUS_OK);
    mask.paths = paths;
    mask.n_paths = 1;
    up.task_id = t3->id;
    up.update_mask = &mask;
    up.priority = TODO__V1__PRIORITY__PRIORITY_URGENT;
    assert_int_equal(harness_command("UpdateTask", &up.base, auth, &r, &res), GRPC_STATUS_OK);

    /* The last command's token covers all of this user's earlier events. */
    s = stats(auth, r->consistency_token);
    assert_int_equal(s->total, 3);
    assert_int_equal(s->completed, 1);
    assert_int_equal(s->pending, 2);
    assert_int_equal(s->overdue, 1);
    assert_true(s->completion_rate > 0.33 && s->completion_rate < 0.34);
    assert_int_equal(by(s, "HIGH"), 2);
    assert_int_equal(by(s, "LOW"), 0);
    assert_int_equal(by(s, "URGENT"), 1);
    protobuf_c_message_free_unpacked(&s->base, NULL);
    /* The counters equal a count from scratch. */
    assert_int_equal(harness_scalar(harness_db, "select total from read.task_stats where user_id = $1", user),
                     harness_scalar(harness_db, "select count(*) from read.tasks where user_id = $1 and not deleted", user));
    Todo__V1__CommandReply *all[] = {t1, t2, t3, t4, r};
    for (int i = 0; i < 5; i++) protobuf_c_message_free_unpacked(&all[i]->base, NULL);
    free(auth);
}

static Todo__V1__TaskHistory *history(const char *auth, const char *task, const char *token, int size,
                                      const char *page, grpc_status_code *code)
{
    Todo__V1__GetTaskHistoryRequest rq = TODO__V1__GET_TASK_HISTORY_REQUEST__INIT;
    Todo__V1__TaskHistory *out = NULL;
    grpcx_result res;
    rq.task_id = (char *)task;
    rq.consistency_token = (char *)(token != NULL ? token : "");
    rq.page_size = size;
    rq.page_token = (char *)(page != NULL ? page : "");
    *code = grpcx_unary(harness_svc.qry, "/todo.v1.TaskQueryService/GetTaskHistory", &rq.base,
                        &todo__v1__task_history__descriptor, auth, 15000, (ProtobufCMessage **)&out, &res);
    return out;
}

/* "field:old>new;..." of a change, for comparing whole changes at once. */
static void fields_of(const Todo__V1__TaskChange *ch, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < ch->n_fields && len < cap; i++) {
        const Todo__V1__FieldChange *f = ch->fields[i];
        bool time = strcmp(f->field, "completed_at") == 0; /* its value: a time, not compared */
        len += (size_t)snprintf(out + len, cap - len, "%s:%s>%s;", f->field, time && f->old_value[0] ? "T" : f->old_value,
                                time && f->new_value[0] ? "T" : f->new_value);
    }
}

static Todo__V1__Task *task_as_of(const char *auth, const char *id, int64_t us, grpc_status_code *code)
{
    Todo__V1__GetTaskRequest rq = TODO__V1__GET_TASK_REQUEST__INIT;
    Google__Protobuf__Timestamp at = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    Todo__V1__Task *t = NULL;
    grpcx_result res;
    at.seconds = us / 1000000;
    at.nanos = (int32_t)(us % 1000000) * 1000;
    rq.task_id = (char *)id;
    rq.as_of = &at;
    *code = grpcx_unary(harness_svc.qry, "/todo.v1.TaskQueryService/GetTask", &rq.base, &todo__v1__task__descriptor,
                        auth, 15000, (ProtobufCMessage **)&t, &res);
    return t;
}

/* A task's history after create, update, update, complete, reopen: each
 * event with what it changed (old -> new), who and when, in pages; GetTask
 * as_of between two updates reads the version between them. */
static void history_shows_each_change_and_as_of_reads_the_past(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "history");
    char *auth = harness_bearer(user, 600, NULL);
    grpcx_result res;
    grpc_status_code code;
    Todo__V1__CommandReply *t = create(auth, "draft", TODO__V1__PRIORITY__PRIORITY_HIGH, 0), *r = NULL;
    Todo__V1__UpdateTaskRequest up = TODO__V1__UPDATE_TASK_REQUEST__INIT;
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    char *title_only[] = {"title"}, *title_priority[] = {"title", "priority"};
    up.task_id = t->id;
    up.update_mask = &mask;
    mask.paths = title_only;
    mask.n_paths = 1;
    up.title = "outline";
    harness_sleep_ms(20); /* distinct event times */
    assert_int_equal(harness_command("UpdateTask", &up.base, auth, NULL, &res), GRPC_STATUS_OK);
    mask.paths = title_priority;
    mask.n_paths = 2;
    up.title = "report";
    up.priority = TODO__V1__PRIORITY__PRIORITY_URGENT;
    harness_sleep_ms(20);
    assert_int_equal(harness_command("UpdateTask", &up.base, auth, NULL, &res), GRPC_STATUS_OK);
    Todo__V1__CompleteTaskRequest done = TODO__V1__COMPLETE_TASK_REQUEST__INIT;
    done.task_id = t->id;
    harness_sleep_ms(20);
    assert_int_equal(harness_command("CompleteTask", &done.base, auth, NULL, &res), GRPC_STATUS_OK);
    harness_sleep_ms(20);
    assert_int_equal(harness_command("ReopenTask", &done.base, auth, &r, &res), GRPC_STATUS_OK);

    static const struct {
        const char *type, *fields;
    } want[] = {
        {"task.created", "title:>draft;priority:>PRIORITY_HIGH;"},
        {"task.updated", "title:draft>outline;"},
        {"task.updated", "title:outline>report;priority:PRIORITY_HIGH>PRIORITY_URGENT;"},
        {"task.completed", "completed:false>true;completed_at:>T;"},
        {"task.reopened", "completed:true>false;completed_at:T>;"},
    };
    /* In pages of two: the third page's first change still compares with
     * the version before it. */
    int64_t times[5] = {0};
    char page[32] = "", got[512];
    int seen = 0;
    for (int p = 0; p < 3; p++) {
        Todo__V1__TaskHistory *h = history(auth, t->id, r->consistency_token, 2, page, &code);
        assert_int_equal(code, GRPC_STATUS_OK);
        for (size_t i = 0; i < h->n_changes; i++, seen++) {
            const Todo__V1__TaskChange *ch = h->changes[i];
            assert_true(seen < 5);
            assert_int_equal(ch->version, seen + 1);
            assert_string_equal(ch->event_type, want[seen].type);
            fields_of(ch, got, sizeof got);
            assert_string_equal(got, want[seen].fields);
            assert_string_equal(ch->actor, user);
            assert_true(ch->correlation_id[0] != '\0');
            times[seen] = event_timestamp_us(ch->time);
        }
        snprintf(page, sizeof page, "%s", h->next_page_token);
        protobuf_c_message_free_unpacked(&h->base, NULL);
    }
    assert_int_equal(seen, 5);
    assert_string_equal(page, ""); /* the last page said so */

    /* Between the two updates: version 2, "outline", still HIGH. */
    Todo__V1__Task *then = task_as_of(auth, t->id, (times[1] + times[2]) / 2, &code);
    assert_int_equal(code, GRPC_STATUS_OK);
    assert_int_equal(then->version, 2);
    assert_string_equal(then->title, "outline");
    assert_int_equal(then->priority, TODO__V1__PRIORITY__PRIORITY_HIGH);
    assert_false(then->completed);
    protobuf_c_message_free_unpacked(&then->base, NULL);
    /* While completed, and now. */
    then = task_as_of(auth, t->id, (times[3] + times[4]) / 2, &code);
    assert_int_equal(code, GRPC_STATUS_OK);
    assert_true(then->completed);
    assert_int_equal(then->version, 4);
    protobuf_c_message_free_unpacked(&then->base, NULL);
    then = task_as_of(auth, t->id, event_now_us(), &code);
    assert_int_equal(code, GRPC_STATUS_OK);
    assert_int_equal(then->version, 5);
    assert_string_equal(then->title, "report");
    protobuf_c_message_free_unpacked(&then->base, NULL);
    /* Before it existed; someone else's. */
    assert_null(task_as_of(auth, t->id, times[0] - 1000000, &code));
    assert_int_equal(code, GRPC_STATUS_NOT_FOUND);
    char *other = harness_bearer("history-someone-else", 600, NULL);
    assert_null(history(other, t->id, NULL, 0, NULL, &code));
    assert_int_equal(code, GRPC_STATUS_NOT_FOUND);
    assert_null(task_as_of(other, t->id, event_now_us(), &code));
    assert_int_equal(code, GRPC_STATUS_NOT_FOUND);
    /* A page token it did not give. */
    assert_null(history(auth, t->id, NULL, 0, "x1", &code));
    assert_int_equal(code, GRPC_STATUS_INVALID_ARGUMENT);
    free(other);
    protobuf_c_message_free_unpacked(&t->base, NULL);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    free(auth);
}

/* The sort key of t under field f, as a comparable number. */
static double key_of(const Todo__V1__Task *t, int f)
{
    const Google__Protobuf__Timestamp *ts = f == 0 ? t->created_at : f == 1 ? t->updated_at : t->due_at;
    if (f == 3) return t->priority;
    if (ts == NULL) return 1e300; /* no due date: infinity */
    return (double)ts->seconds + ts->nanos / 1e9;
}

static void every_order_pages_through_all_tasks_in_order(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    static const char *const orders[] = {"created_at", "updated_at", "due_at", "priority"};
    char user[64];
    harness_user(user, "sorted");
    char *auth = harness_bearer(user, 600, NULL);
    Todo__V1__CommandReply *r = NULL;
    int prios[] = {1, 3, 3, 2, 4, 1, 3};
    int64_t dues[] = {7200, 0, -3600, 600, 0, 86400, 600};
    for (int i = 0; i < 7; i++) {
        if (r != NULL) protobuf_c_message_free_unpacked(&r->base, NULL);
        r = create(auth, "sortable", prios[i], dues[i]);
    }
    /* Wait for the projection once, with the last token. */
    Todo__V1__TaskStats *st = stats(auth, r->consistency_token);
    assert_int_equal(st->total, 7);
    protobuf_c_message_free_unpacked(&st->base, NULL);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    for (int f = 0; f < 4; f++)
        for (int asc = 0; asc < 2; asc++) {
            char order[32], token[256] = "", ids[7][37];
            double keys[7];
            int n = 0, pages = 0;
            snprintf(order, sizeof order, "%s %s", orders[f], asc ? "asc" : "desc");
            do {
                Todo__V1__ListTasksRequest rq = TODO__V1__LIST_TASKS_REQUEST__INIT;
                Todo__V1__ListTasksResponse *ls = NULL;
                grpcx_result res;
                rq.order_by = order;
                rq.page_size = 2;
                rq.page_token = token;
                assert_int_equal(grpcx_unary(harness_svc.qry, "/todo.v1.TaskQueryService/ListTasks", &rq.base,
                                             &todo__v1__list_tasks_response__descriptor, auth, 15000,
                                             (ProtobufCMessage **)&ls, &res),
                                 GRPC_STATUS_OK);
                for (size_t i = 0; i < ls->n_tasks && n < 7; i++, n++) {
                    keys[n] = key_of(ls->tasks[i], f);
                    snprintf(ids[n], sizeof ids[n], "%s", ls->tasks[i]->id);
                }
                snprintf(token, sizeof token, "%s", ls->next_page_token);
                protobuf_c_message_free_unpacked(&ls->base, NULL);
                pages++;
            } while (token[0] != '\0' && pages < 10);
            assert_int_equal(n, 7);
            for (int i = 1; i < n; i++) {
                if (asc) assert_true(keys[i - 1] < keys[i] || (keys[i - 1] == keys[i] && strcmp(ids[i - 1], ids[i]) < 0));
                else assert_true(keys[i - 1] > keys[i] || (keys[i - 1] == keys[i] && strcmp(ids[i - 1], ids[i]) > 0));
            }
        }
    free(auth);
}

/* The plan of sql with sequential scans priced out: what indexes can serve. */
static void plan(const char *sql, char *out, size_t cap)
{
    PGresult *r = PQexec(harness_db, "set enable_seqscan = off");
    PQclear(r);
    char explain[2048];
    snprintf(explain, sizeof explain, "explain %s", sql);
    r = PQexec(harness_db, explain);
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < PQntuples(r); i++)
        len += (size_t)snprintf(out + len, cap - len, "%s\n", PQgetvalue(r, i, 0));
    PQclear(r);
    PQclear(PQexec(harness_db, "reset enable_seqscan"));
}

static void every_query_has_an_index(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    static const char *const queries[] = {
        /* GetTask */
        "select * from read.tasks where id = '123e4567-e89b-42d3-a456-426614174000' and user_id = 'u'",
        /* ListTasks, first page and a later one */
        "select * from read.tasks where user_id = 'u' and not deleted order by created_at desc, id desc limit 21",
        "select * from read.tasks where user_id = 'u' and not deleted and (created_at, id) < (now(),"
        " '123e4567-e89b-42d3-a456-426614174000'::uuid) order by created_at desc, id desc limit 21",
        /* SearchTasks */
        "select * from read.tasks, to_tsquery('simple', 'milk:*') q where user_id = 'u' and not deleted and search @@ q",
        /* GetTaskStats: the overdue count */
        "select count(*) from read.tasks where user_id = 'u' and not completed and not deleted and due_at < now()",
        /* the relay */
        "select position from write.events where published_at is null and parked_at is null order by position limit 500",
        /* read-your-writes */
        "select version from read.applied_versions where aggregate_id = '123e4567-e89b-42d3-a456-426614174000'",
        /* ListReminders: all, one task's, a later page */
        "select * from read.reminders r where r.user_id = 'u' and not exists (select 1 from read.tasks k"
        " where k.id = r.task_id and k.deleted) and r.status = 'scheduled' order by r.remind_at, r.id limit 21",
        "select * from read.reminders r where r.user_id = 'u' and r.task_id = '123e4567-e89b-42d3-a456-426614174000'"
        " order by r.remind_at, r.id limit 21",
        "select * from read.reminders r where r.user_id = 'u' and (r.remind_at, r.id) > (now(),"
        " '123e4567-e89b-42d3-a456-426614174000'::uuid) order by r.remind_at, r.id limit 21",
        /* GetTaskHistory, GetTask as_of, GetTaskActivity */
        "select * from read.task_history where task_id = '123e4567-e89b-42d3-a456-426614174000' and user_id = 'u'"
        " and version >= 3 order by version limit 21",
        "select * from read.task_history where task_id = '123e4567-e89b-42d3-a456-426614174000' and user_id = 'u'"
        " and event_time <= now() order by version desc limit 1",
        "select * from read.task_sagas where task_id = '123e4567-e89b-42d3-a456-426614174000' order by started_at",
        /* WatchUpdates: a stream's next rows, a token's position */
        "select * from feed.updates where user_id = 'u' and position > 5 order by position limit 64",
        "select position from feed.updates where user_id = 'u' and entity_id = '123e4567-e89b-42d3-a456-426614174000'"
        " and version = 3",
        /* the reminder scheduler (todo-saga) */
        "select id from write.reminders where status = 'scheduled' and remind_at <= now() order by remind_at limit 100",
    };
    char out[8192];
    for (size_t i = 0; i < sizeof queries / sizeof queries[0]; i++) {
        plan(queries[i], out, sizeof out);
        if (strstr(out, "Seq Scan") != NULL || strstr(out, "Index") == NULL)
            fail_msg("no index serves query %zu:\n%s\nplan:\n%s", i, queries[i], out);
    }
}

/* ListTasks' own statement, first page, newest first and oldest first: the
 * (user_id, created_at, id) index hands out the page in order; nothing reads
 * and sorts every task of the user (which ordering by the select list's
 * id::text did: 1,000 tasks read per call). */
static void list_tasks_reads_one_page_in_index_order(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    arena *a = arena_new();
    for (int asc = 0; asc <= 1; asc++) {
        qry_sort sort = {QRY_SORT_CREATED_AT, asc};
        char *sql = qry_list_sql(a, " where user_id = $1 and not deleted", sort, 2);
        PQclear(PQexec(harness_db, "deallocate all"));
        PGresult *r = PQprepare(harness_db, "list_page", sql, 0, NULL);
        assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
        PQclear(r);
        char out[4096];
        /* Bitmap scans priced out too: on a small table the planner may
         * prefer one and a sort of its few rows, which says nothing about
         * whether the index can hand out the order. */
        PQclear(PQexec(harness_db, "set enable_bitmapscan = off"));
        plan("execute list_page('some-user', 21)", out, sizeof out);
        PQclear(PQexec(harness_db, "reset enable_bitmapscan"));
        if (strstr(out, "Sort") != NULL || strstr(out, "read_tasks_user_created") == NULL) {
            print_error("ListTasks sorts instead of reading the index in order:\n%s\nplan:\n%s\n", sql, out);
            arena_free(a);
            fail();
        }
    }
    PQclear(PQexec(harness_db, "deallocate all"));
    arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(search_ranks_prefix_matches_of_the_callers_tasks),
        cmocka_unit_test(stats_follow_every_change),
        cmocka_unit_test(history_shows_each_change_and_as_of_reads_the_past),
        cmocka_unit_test(every_order_pages_through_all_tasks_in_order),
        cmocka_unit_test(every_query_has_an_index),
        cmocka_unit_test(list_tasks_reads_one_page_in_index_order),
        cmocka_unit_test(list_filters_are_checked_like_commands),
    };
    return cmocka_run_group_tests(tests, harness_group_setup, harness_group_teardown);
}
