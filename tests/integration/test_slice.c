/*
 * Integration tests of the create-to-read slice on the real stack:
 * todo-command -> outbox -> relay -> Kafka -> todo-projector -> read schema
 * -> todo-query, with auth, validation, idempotent projection across a
 * crash, a topic replay, poison records and schema upcasting.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "auth.h"
#include "event.h"
#include "config.h"
#include "ctoken.h"
#include "grpcx_status.h"
#include "harness.h"
#include "proj_cache.h"
#include "kafkax.h"
#include "text.h"
#include "todo/v1/command.pb-c.h"
#include "todo/v1/events.pb-c.h"
#include "todo/v1/query.pb-c.h"

#define CREATE "/todo.v1.TaskCommandService/CreateTask"
#define GET "/todo.v1.TaskQueryService/GetTask"
#define LIST "/todo.v1.TaskQueryService/ListTasks"


/* CreateTask as user; returns the status, *reply when OK. */
static grpc_status_code create(const char *auth, const char *title, Todo__V1__Priority prio,
                               Todo__V1__CommandReply **reply, grpcx_result *res)
{
    Todo__V1__CreateTaskRequest rq = TODO__V1__CREATE_TASK_REQUEST__INIT;
    Todo__V1__CommandReply *tmp = NULL;
    rq.title = (char *)title;
    rq.priority = prio;
    grpc_status_code code = grpcx_unary(harness_svc.cmd, CREATE, &rq.base, &todo__v1__command_reply__descriptor, auth, 10000,
                                        (ProtobufCMessage **)&tmp, res);
    if (reply != NULL) *reply = tmp;
    else if (tmp != NULL) protobuf_c_message_free_unpacked(&tmp->base, NULL);
    return code;
}

static char *create_ok(const char *auth, const char *title, Todo__V1__Priority prio)
{
    Todo__V1__CommandReply *rp;
    grpcx_result res;
    grpc_status_code code = create(auth, title, prio, &rp, &res);
    if (code != GRPC_STATUS_OK) fail_msg("CreateTask: %d %s", code, res.message);
    char *id = strdup(rp->id);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    return id;
}

static grpc_status_code get(const char *auth, const char *id, const char *token, int timeout_ms, Todo__V1__Task **out,
                            grpcx_result *res)
{
    Todo__V1__GetTaskRequest rq = TODO__V1__GET_TASK_REQUEST__INIT;
    rq.task_id = (char *)id;
    rq.consistency_token = (char *)(token != NULL ? token : "");
    return grpcx_unary(harness_svc.qry, GET, &rq.base, &todo__v1__task__descriptor, auth, timeout_ms, (ProtobufCMessage **)out,
                       res);
}

static Todo__V1__ListTasksResponse *list(const char *auth, Todo__V1__ListTasksRequest *rq, grpc_status_code *code,
                                         grpcx_result *res)
{
    Todo__V1__ListTasksResponse *out = NULL;
    *code = grpcx_unary(harness_svc.qry, LIST, &rq->base, &todo__v1__list_tasks_response__descriptor, auth, 10000,
                        (ProtobufCMessage **)&out, res);
    return out;
}

/* Waits (bounded) until the read model holds want tasks of user. */
static long long wait_read_count(const char *user, long long want, int timeout_ms)
{
    long long until = harness_now_ms() + timeout_ms, n = -1;
    while (harness_now_ms() < until) {
        n = harness_scalar(harness_db, "select count(*) from read.tasks where user_id = $1", user);
        if (n >= want) return n;
        harness_sleep_ms(50);
    }
    return n;
}

static void created_task_is_readable_through_the_query_service(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "alice");
    char *auth = harness_bearer(user, 600, NULL);
    Todo__V1__CreateTaskRequest rq = TODO__V1__CREATE_TASK_REQUEST__INIT;
    Google__Protobuf__Timestamp due = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    char *tags[] = {"home", "errand"};
    Todo__V1__CommandReply *rp;
    grpcx_result res;
    due.seconds = 4102444800; /* 2100-01-01 */
    rq.title = "Buy milk \xf0\x9f\xa5\x9b";
    rq.description = "two litres";
    rq.priority = TODO__V1__PRIORITY__PRIORITY_HIGH;
    rq.due_at = &due;
    rq.category = "groceries";
    rq.tags = tags;
    rq.n_tags = 2;
    assert_int_equal(grpcx_unary(harness_svc.cmd, CREATE, &rq.base, &todo__v1__command_reply__descriptor, auth, 10000,
                                 (ProtobufCMessage **)&rp, &res),
                     GRPC_STATUS_OK);
    assert_true(text_is_uuid(rp->id));
    assert_int_equal(rp->version, 1);
    assert_true(rp->consistency_token[0] != '\0');

    /* Read-your-writes: with the token the query waits for the projection. */
    Todo__V1__Task *t;
    assert_int_equal(get(auth, rp->id, rp->consistency_token, 15000, &t, &res), GRPC_STATUS_OK);
    assert_string_equal(t->id, rp->id);
    assert_string_equal(t->user_id, user);
    assert_string_equal(t->title, rq.title);
    assert_string_equal(t->description, "two litres");
    assert_int_equal(t->priority, TODO__V1__PRIORITY__PRIORITY_HIGH);
    assert_non_null(t->due_at);
    assert_int_equal(t->due_at->seconds, 4102444800);
    assert_string_equal(t->category, "groceries");
    assert_int_equal(t->n_tags, 2);
    assert_string_equal(t->tags[1], "errand");
    assert_false(t->completed);
    assert_false(t->overdue);
    assert_int_equal(t->version, 1);
    protobuf_c_message_free_unpacked(&t->base, NULL);

    /* The relay marked the event published once Kafka acknowledged it. */
    long long until = harness_now_ms() + 10000, published = 0;
    while (published != 1 && harness_now_ms() < until) {
        published = harness_scalar(harness_db,
                                   "select count(*) from write.events where aggregate_id = $1::uuid"
                                   " and published_at is not null", rp->id);
        harness_sleep_ms(50);
    }
    assert_int_equal(published, 1);

    /* And ListTasks shows it too. */
    Todo__V1__ListTasksRequest lr = TODO__V1__LIST_TASKS_REQUEST__INIT;
    grpc_status_code code;
    Todo__V1__ListTasksResponse *ls = list(auth, &lr, &code, &res);
    assert_int_equal(code, GRPC_STATUS_OK);
    assert_int_equal(ls->n_tasks, 1);
    assert_string_equal(ls->tasks[0]->id, rp->id);
    assert_string_equal(ls->next_page_token, "");
    protobuf_c_message_free_unpacked(&ls->base, NULL);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    free(auth);
}

static void invalid_input_is_refused_and_writes_nothing(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64], long_title[300];
    harness_user(user, "val");
    char *auth = harness_bearer(user, 600, NULL);
    grpcx_result res;
    memset(long_title, 'x', 256);
    long_title[256] = '\0';
    struct { const char *title; int prio; const char *field; } cases[] = {
        {"", 0, "title"}, {"   ", 0, "title"}, {long_title, 0, "title"}, {"bad \xc3\x28 utf8", 0, "title"},
        {"ok", 17, "priority"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(create(auth, cases[i].title, (Todo__V1__Priority)cases[i].prio, NULL, &res),
                         GRPC_STATUS_INVALID_ARGUMENT);
        assert_true(strncmp(res.message, cases[i].field, strlen(cases[i].field)) == 0);
    }
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.tasks where user_id = $1", user), 0);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.events where user_id = $1", user), 0);

    /* Query-side validation names the field too. */
    Todo__V1__Task *t;
    assert_int_equal(get(auth, "not-a-uuid", NULL, 5000, &t, &res), GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(res.message, "task_id"));
    Todo__V1__ListTasksRequest lr = TODO__V1__LIST_TASKS_REQUEST__INIT;
    grpc_status_code code;
    lr.page_size = 1000;
    list(auth, &lr, &code, &res);
    assert_int_equal(code, GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(res.message, "page_size"));
    lr.page_size = 0;
    lr.page_token = "garbage";
    list(auth, &lr, &code, &res);
    assert_int_equal(code, GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(res.message, "page_token"));
    free(auth);
}

static void missing_or_bad_tokens_are_unauthenticated(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char *expired = harness_bearer("mallory", 0, NULL);
    char *forged = harness_bearer("mallory", 600, "another-secret-0123456789abcdefghij");
    const char *bad[] = {NULL, "Bearer", "Bearer x.y.z", expired, forged, "Basic bWFsbG9yeTpwdw=="};
    grpcx_result res;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(create(bad[i], "sneaky", 0, NULL, &res), GRPC_STATUS_UNAUTHENTICATED);
        Todo__V1__Task *t;
        assert_int_equal(get(bad[i], "123e4567-e89b-42d3-a456-426614174000", NULL, 5000, &t, &res),
                         GRPC_STATUS_UNAUTHENTICATED);
    }
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.tasks where user_id = 'mallory'", NULL), 0);
    free(expired);
    free(forged);
}

static void another_users_task_is_not_found(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char alice[64], bob[64];
    harness_user(alice, "alice");
    harness_user(bob, "bob");
    char *a = harness_bearer(alice, 600, NULL), *b = harness_bearer(bob, 600, NULL);
    char *id = create_ok(a, "private", 0);
    assert_int_equal(wait_read_count(alice, 1, 15000), 1);
    Todo__V1__Task *t;
    grpcx_result res;
    assert_int_equal(get(b, id, NULL, 5000, &t, &res), GRPC_STATUS_NOT_FOUND);
    assert_non_null(strstr(res.message, id));
    Todo__V1__ListTasksRequest lr = TODO__V1__LIST_TASKS_REQUEST__INIT;
    grpc_status_code code;
    Todo__V1__ListTasksResponse *ls = list(b, &lr, &code, &res);
    assert_int_equal(code, GRPC_STATUS_OK);
    assert_int_equal(ls->n_tasks, 0);
    protobuf_c_message_free_unpacked(&ls->base, NULL);
    assert_int_equal(get(a, id, NULL, 5000, &t, &res), GRPC_STATUS_OK);
    protobuf_c_message_free_unpacked(&t->base, NULL);
    free(id);
    free(a);
    free(b);
}

static void list_filters_and_pages_cover_every_task_once(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "pager");
    char *auth = harness_bearer(user, 600, NULL);
    char *ids[7];
    for (int i = 0; i < 7; i++) {
        char title[32];
        snprintf(title, sizeof title, "task %d", i);
        ids[i] = create_ok(auth, title, i % 2 ? TODO__V1__PRIORITY__PRIORITY_HIGH : TODO__V1__PRIORITY__PRIORITY_LOW);
    }
    assert_int_equal(wait_read_count(user, 7, 15000), 7);

    Todo__V1__ListTasksRequest lr = TODO__V1__LIST_TASKS_REQUEST__INIT;
    grpc_status_code code;
    grpcx_result res;
    int seen[7] = {0}, pages = 0;
    char token[256] = "";
    lr.page_size = 3;
    lr.include_total = 1;
    do {
        lr.page_token = token;
        Todo__V1__ListTasksResponse *ls = list(auth, &lr, &code, &res);
        assert_int_equal(code, GRPC_STATUS_OK);
        assert_int_equal(ls->total, 7);
        pages++;
        for (size_t i = 0; i < ls->n_tasks; i++)
            for (int j = 0; j < 7; j++) seen[j] += strcmp(ls->tasks[i]->id, ids[j]) == 0;
        /* Newest first. */
        if (pages == 1) assert_string_equal(ls->tasks[0]->id, ids[6]);
        snprintf(token, sizeof token, "%s", ls->next_page_token);
        protobuf_c_message_free_unpacked(&ls->base, NULL);
    } while (token[0] != '\0' && pages < 10);
    assert_int_equal(pages, 3);
    for (int j = 0; j < 7; j++) assert_int_equal(seen[j], 1);

    Todo__V1__ListTasksRequest hr = TODO__V1__LIST_TASKS_REQUEST__INIT;
    hr.priority = TODO__V1__PRIORITY__PRIORITY_HIGH;
    Todo__V1__ListTasksResponse *ls = list(auth, &hr, &code, &res);
    assert_int_equal(ls->n_tasks, 3);
    for (size_t i = 0; i < ls->n_tasks; i++) assert_int_equal(ls->tasks[i]->priority, TODO__V1__PRIORITY__PRIORITY_HIGH);
    protobuf_c_message_free_unpacked(&ls->base, NULL);

    Google__Protobuf__BoolValue yes = GOOGLE__PROTOBUF__BOOL_VALUE__INIT;
    yes.value = 1;
    Todo__V1__ListTasksRequest cr = TODO__V1__LIST_TASKS_REQUEST__INIT;
    cr.completed = &yes;
    ls = list(auth, &cr, &code, &res);
    assert_int_equal(code, GRPC_STATUS_OK);
    assert_int_equal(ls->n_tasks, 0);
    protobuf_c_message_free_unpacked(&ls->base, NULL);
    yes.value = 0;
    ls = list(auth, &cr, &code, &res);
    assert_int_equal(ls->n_tasks, 7);
    protobuf_c_message_free_unpacked(&ls->base, NULL);
    for (int i = 0; i < 7; i++) free(ids[i]);
    free(auth);
}

/* Committed offsets of group on tasks.events.v1 equal the end of every
 * partition: the group has consumed everything there is. */
static bool group_caught_up(const char *group)
{
    kafkax_lag lag[64];
    todo_err err;
    int n;
    if (kafkax_group_lag(getenv("TODO_KAFKA_BROKERS"), group, "tasks.events.v1", lag, 64, &n, &err) != 0) return false;
    for (int i = 0; i < n; i++)
        if (lag[i].lag > 0) return false;
    return n > 0;
}

static void projector_crash_and_replay_leave_no_duplicate_and_no_gap(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "crash");
    char *auth = harness_bearer(user, 600, NULL);
    for (int i = 0; i < 10; i++) free(create_ok(auth, "before the crash", 0));
    harness_sleep_ms(100);
    /* kill -9 in the middle of the stream: whatever it had applied but not
     * committed to Kafka is re-delivered after the restart. */
    assert_int_equal(harness_stop(harness_svc.projector, SIGKILL, 5000), 128 + SIGKILL);
    for (int i = 0; i < 20; i++) free(create_ok(auth, "while it is down", 0));
    harness_svc.projector = harness_spawn("projection/todo-projector", "projector", NULL);
    assert_int_equal(wait_read_count(user, 30, 30000), 30);
    assert_int_equal(harness_scalar(harness_db,
                                    "select count(*) from read.tasks r join write.tasks w using (id)"
                                    " where r.user_id = $1", user), 30);
    assert_int_equal(harness_scalar(harness_db,
                                    "select count(*) from read.applied_versions v join read.tasks r on r.id = v.aggregate_id"
                                    " where r.user_id = $1 and v.version = 1", user), 30);

    /* Replay: a projector in a new consumer group re-reads the whole topic;
     * every event is already applied, so nothing changes. */
    char group[80], env_group[120];
    harness_user(group, "replay");
    snprintf(env_group, sizeof env_group, "TODO_PROJECTOR_GROUP=%s", group);
    const char *extra[] = {env_group, NULL};
    long long before = harness_scalar(harness_db, "select count(*) from read.tasks", NULL);
    pid_t replay = harness_spawn("projection/todo-projector", "projector-replay", extra);
    long long until = harness_now_ms() + 60000;
    bool done = false;
    while (!done && harness_now_ms() < until) {
        harness_sleep_ms(500);
        done = group_caught_up(group);
    }
    assert_true(done);
    assert_int_equal(harness_stop(replay, SIGTERM, 20000), 0);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from read.tasks", NULL), before);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from read.tasks where user_id = $1", user), 30);
    free(auth);
}

static void projection_status_shows_lag_progress_and_the_last_error(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64], out[4096];
    harness_user(user, "lagging");
    char *auth = harness_bearer(user, 600, NULL);
    assert_int_equal(harness_stop(harness_svc.projector, SIGTERM, 20000), 0);
    for (int i = 0; i < 5; i++) free(create_ok(auth, "while nobody projects", 0));
    long long until = harness_now_ms() + 15000;
    while (harness_scalar(harness_db, "select count(*) from write.events where user_id = $1 and published_at is null",
                          user) != 0 && harness_now_ms() < until)
        harness_sleep_ms(50);
    harness_sleep_ms(1100); /* let the oldest unapplied record age past a second */
    assert_int_equal(harness_todoctl("projection status", out, sizeof out), 0);
    long long behind = -1;
    double oldest = -1;
    const char *b = strstr(out, "behind by ");
    assert_non_null(b);
    assert_int_equal(sscanf(b, "behind by %lld events, oldest unapplied %lf s", &behind, &oldest), 2);
    assert_true(behind >= 5);
    assert_true(oldest >= 1.0);
    harness_svc.projector = harness_spawn("projection/todo-projector", "projector", NULL);
    assert_int_equal(wait_read_count(user, 5, 30000), 5);
    until = harness_now_ms() + 15000;
    do {
        harness_sleep_ms(200);
        assert_int_equal(harness_todoctl("projection status", out, sizeof out), 0);
    } while (strstr(out, "behind by 0 events") == NULL && harness_now_ms() < until);
    assert_non_null(strstr(out, "behind by 0 events"));
    assert_non_null(strstr(out, "batches "));
    /* The refused records of earlier tests left their reason. */
    const char *last = strstr(out, "last error: ");
    assert_non_null(last);
    /* (the last ones: refused by the database, or parked behind such a one) */
    assert_true(strstr(last, "database error") != NULL || strstr(last, "parked: behind") != NULL);
    free(auth);
}

/* Runs a redis-cli command against the stack's Redis; its first output line in out. */
static int redis(const char *args, char *out, size_t cap)
{
    char cmd[512];
    /* The stack's URL (on the secure stack, its plaintext port with the
     * password: the services use TLS). */
    const char *url = getenv("TODO_STACK_REDIS_PLAIN_URL");
    snprintf(cmd, sizeof cmd, "redis-cli -u '%s' --no-auth-warning %s 2>&1",
             url != NULL && url[0] ? url : getenv("TODO_REDIS_URL"), args);
    FILE *p = popen(cmd, "r");
    out[0] = '\0';
    if (fgets(out, (int)cap, p) != NULL) out[strcspn(out, "\n")] = '\0';
    return pclose(p);
}

static void the_redis_fast_path_is_filled_and_optional(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64], out[256], args[256];
    harness_user(user, "cached");
    char *auth = harness_bearer(user, 600, NULL);
    char *id = create_ok(auth, "remembered in redis", 0);
    assert_int_equal(wait_read_count(user, 1, 15000), 1);
    snprintf(args, sizeof args, "GET proj:projection-task-read-v1:%s", id);
    long long until = harness_now_ms() + 5000;
    do { /* written right after the batch commits */
        redis(args, out, sizeof out);
    } while (strcmp(out, "1") != 0 && harness_now_ms() < until && (harness_sleep_ms(20), 1));
    assert_string_equal(out, "1");
    free(id);

    /* Redis away: the projector carries on with the database alone. */
    redis("shutdown nosave", out, sizeof out);
    char *id2 = create_ok(auth, "while redis is down", 0);
    assert_int_equal(wait_read_count(user, 2, 20000), 2);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "bash '%s/scripts/stack.sh' start '%s' >/dev/null 2>&1", TODO_SOURCE_DIR,
             getenv("TODO_STACK"));
    assert_int_equal(system(cmd), 0);
    free(id2);
    free(auth);
}

/* Members of the projector's consumer group right now. */
static int group_members(const char *group)
{
    char errstr[256];
    rd_kafka_conf_t *conf = harness_kafka_conf();
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    const struct rd_kafka_group_list *gl = NULL;
    int n = -1;
    if (rd_kafka_list_groups(rk, group, &gl, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR && gl->group_cnt == 1)
        n = gl->groups[0].member_cnt;
    if (gl != NULL) rd_kafka_group_list_destroy(gl);
    rd_kafka_destroy(rk);
    return n;
}

static void two_projectors_share_the_partitions_without_loss_or_duplicates(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    /* The first projector's loops (TODO_PROJECTOR_THREADS of them), then one more process of one loop. */
    long long until = harness_now_ms() + 30000;
    int before;
    while ((before = group_members("projection-task-read-v1")) < 1 && harness_now_ms() < until) harness_sleep_ms(200);
    assert_true(before >= 1);
    const char *one_loop[] = {"TODO_PROJECTOR_THREADS=1", NULL};
    pid_t second = harness_spawn("projection/todo-projector", "projector-2", one_loop);
    while (group_members("projection-task-read-v1") != before + 1 && harness_now_ms() < until) harness_sleep_ms(200);
    assert_int_equal(group_members("projection-task-read-v1"), before + 1);

    /* Users spread over the partitions: both members get work. */
    enum { USERS = 12, EACH = 5 };
    char users[USERS][64];
    for (int u = 0; u < USERS; u++) {
        harness_user(users[u], "shared");
        char *auth = harness_bearer(users[u], 600, NULL);
        for (int i = 0; i < EACH; i++) free(create_ok(auth, "split", 0));
        free(auth);
    }
    for (int u = 0; u < USERS; u++) assert_int_equal(wait_read_count(users[u], EACH, 30000), EACH);
    /* Stopping one hands its partitions to the other; nothing is lost. */
    assert_int_equal(harness_stop(second, SIGTERM, 20000), 0);
    char *auth = harness_bearer(users[0], 600, NULL);
    for (int i = 0; i < EACH; i++) free(create_ok(auth, "after the rebalance", 0));
    free(auth);
    assert_int_equal(wait_read_count(users[0], 2 * EACH, 30000), 2 * EACH);
    for (int u = 0; u < USERS; u++)
        assert_int_equal(harness_scalar(harness_db,
                                        "select count(*) from read.tasks r join write.tasks w using (id)"
                                        " where r.user_id = $1 and r.version = w.version", users[u]),
                         u == 0 ? 2 * EACH : EACH);
}

static void produce(const char *key, const void *value, size_t len)
{
    harness_produce("tasks.events.v1", key, value, len);
}

/* True when system.dlq.v1 holds the projector's dead letter of value. */
static bool dlq_holds(const void *value, size_t len, const char *reason_part)
{
    return harness_dlq_holds("tasks.events.v1", "projection-task-read-v1", value, len, reason_part);
}

static void poison_records_go_to_the_dlq_and_the_projector_moves_on(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64], garbage[128];
    harness_user(user, "poison");
    snprintf(garbage, sizeof garbage, "\xff\xfe not an envelope %s", user);
    produce(user, garbage, strlen(garbage));
    char *auth = harness_bearer(user, 600, NULL);
    free(create_ok(auth, "after the poison", 0));
    assert_int_equal(wait_read_count(user, 1, 15000), 1);
    assert_true(dlq_holds(garbage, strlen(garbage), "EventEnvelope"));
    free(auth);
}

typedef struct value_want {
    const char *value;
    char first_id[40];    /* the first dead letter's id (filled), or one to skip */
    bool other;           /* match only a dead letter with another id */
    char other_id[40];    /* that other one's id (filled) */
    int attempts;         /* the matched letter's attempt count */
    int want_attempts;    /* > 0: match only a letter of that attempt */
} value_want;

static bool dead_letter_of(const rd_kafka_message_t *m, void *ctx)
{
    value_want *w = ctx;
    Todo__V1__DeadLetter *dl = m->payload != NULL ? todo__v1__dead_letter__unpack(NULL, m->len, m->payload) : NULL;
    /* The task read model's (the analytics projection dead-letters the
     * same poison records under its own group). */
    bool yes = dl != NULL && strcmp(dl->consumer_group, "projection-task-read-v1") == 0 &&
               dl->original_value.len == strlen(w->value) &&
               memcmp(dl->original_value.data, w->value, dl->original_value.len) == 0 &&
               (!w->other || strcmp(dl->dead_letter_id, w->first_id) != 0) &&
               (w->want_attempts == 0 || dl->attempts == w->want_attempts);
    if (yes && !w->other) snprintf(w->first_id, sizeof w->first_id, "%s", dl->dead_letter_id);
    if (yes && w->other) snprintf(w->other_id, sizeof w->other_id, "%s", dl->dead_letter_id);
    if (yes) w->attempts = dl->attempts;
    if (dl != NULL) todo__v1__dead_letter__free_unpacked(dl, NULL);
    return yes;
}

static bool record_of(const rd_kafka_message_t *m, void *ctx)
{
    const value_want *w = ctx;
    return m->len == strlen(w->value) && memcmp(m->payload, w->value, m->len) == 0;
}

/* todoctl dlq: a dead letter is listed and shown; redriven, its record is
 * back on its topic byte for byte and the dead letter is gone; the projector,
 * still unable to read it, dead-letters it again under a new id. */
static void dead_letters_are_listed_shown_and_redriven(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64], value[128], args[160];
    static char out[1 << 20]; /* every dead letter of the stack is listed */
    harness_user(user, "redrive");
    snprintf(value, sizeof value, "not an envelope either %s", user);
    produce(user, value, strlen(value));
    value_want w = {.value = value};
    assert_int_equal(harness_consume("system.dlq.v1", dead_letter_of, &w, 1, 15000), 1);

    assert_int_equal(harness_todoctl("dlq list --group projection-task-read-v1", out, sizeof out), 0);
    assert_non_null(strstr(out, w.first_id));
    snprintf(args, sizeof args, "dlq show %s", w.first_id);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 0);
    assert_non_null(strstr(out, "value is not a todo.v1.EventEnvelope"));
    assert_non_null(strstr(out, "tasks.events.v1 partition"));
    assert_non_null(strstr(out, user)); /* the key */
    assert_non_null(strstr(out, "reason code:    undecodable"));
    assert_non_null(strstr(out, "attempt:        1"));
    assert_int_equal(w.attempts, 1);
    /* Filters and stats. */
    assert_int_equal(harness_todoctl("dlq list --reason undecodable --since 1h", out, sizeof out), 0);
    assert_non_null(strstr(out, w.first_id));
    assert_int_equal(harness_todoctl("dlq list --reason retries_exhausted", out, sizeof out), 0);
    assert_null(strstr(out, w.first_id));
    assert_int_equal(harness_todoctl("dlq list --group no-such-group", out, sizeof out), 0);
    assert_non_null(strstr(out, "no dead letters"));
    assert_int_equal(harness_todoctl("dlq stats --group projection-task-read-v1", out, sizeof out), 0);
    assert_non_null(strstr(out, "by reason code:"));
    assert_non_null(strstr(out, "undecodable"));
    assert_int_equal(harness_todoctl("dlq list --since soon", out, sizeof out), 2);

    snprintf(args, sizeof args, "dlq redrive %s", w.first_id);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 0);
    assert_non_null(strstr(out, "to tasks.events.v1"));
    snprintf(args, sizeof args, "dlq show %s", w.first_id);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 1);
    assert_int_equal(harness_todoctl("dlq list", out, sizeof out), 0);
    assert_null(strstr(out, w.first_id));
    /* Back on the topic (the original and the redriven copy)... */
    assert_int_equal(harness_consume("tasks.events.v1", record_of, &w, 2, 15000), 2);
    /* ...and dead-lettered again, under a new id, as its second attempt. */
    w.other = true;
    w.want_attempts = 2;
    assert_int_equal(harness_consume("system.dlq.v1", dead_letter_of, &w, 1, 15000), 1);
    assert_int_equal(w.attempts, 2);
    snprintf(args, sizeof args, "dlq show %s", w.other_id);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 0);
    assert_non_null(strstr(out, "attempt:        2"));
    /* Redriven up to DLQ_MAX_REDRIVES (3) attempts; the fourth needs --force. */
    for (int attempt = 2; attempt <= 3; attempt++) {
        snprintf(args, sizeof args, "dlq redrive %s", w.other_id);
        assert_int_equal(harness_todoctl(args, out, sizeof out), 0);
        snprintf(w.first_id, sizeof w.first_id, "%s", w.other_id);
        w.want_attempts = attempt + 1;
        assert_int_equal(harness_consume("system.dlq.v1", dead_letter_of, &w, 1, 15000), 1);
        assert_int_equal(w.attempts, attempt + 1);
    }
    snprintf(args, sizeof args, "dlq redrive %s", w.other_id);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "failed 4 times already"));
    assert_int_equal(harness_todoctl("dlq redrive 00000000-0000-4000-8000-000000000000", out, sizeof out), 1);
    assert_int_equal(harness_todoctl("dlq redrive", out, sizeof out), 2);
}

/* todoctl dlq discard: a dead letter dropped for good keeps why and who in
 * the decisions; a letter another operator holds is not redriven twice,
 * and a claim left undone for a minute is taken over. */
static void dead_letters_are_discarded_with_a_reason_and_held_by_one_operator(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64], value[128], args[256];
    static char out[1 << 20];
    harness_user(user, "discard");
    snprintf(value, sizeof value, "no envelope to keep %s", user);
    produce(user, value, strlen(value));
    value_want w = {.value = value};
    assert_int_equal(harness_consume("system.dlq.v1", dead_letter_of, &w, 1, 15000), 1);

    snprintf(args, sizeof args, "dlq discard %s", w.first_id); /* no --why: refused */
    assert_int_equal(harness_todoctl(args, out, sizeof out), 2);
    snprintf(args, sizeof args, "dlq discard %s --why 'test garbage, nothing to recover' --by alice", w.first_id);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 0);
    assert_non_null(strstr(out, "discarded"));
    snprintf(args, sizeof args, "dlq show %s", w.first_id); /* gone; show says what was decided */
    assert_int_equal(harness_todoctl(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "was discarded by alice at "));
    assert_non_null(strstr(out, ": test garbage, nothing to recover"));
    snprintf(args, sizeof args, "dlq redrive %s", w.first_id);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 1); /* gone: nothing to redrive */
    assert_int_equal(harness_todoctl("dlq decisions --since 1h", out, sizeof out), 0);
    char *line = strstr(out, w.first_id);
    assert_non_null(line);
    char *nl = strchr(line, '\n');
    if (nl != NULL) *nl = '\0';
    assert_non_null(strstr(line, "alice"));
    assert_non_null(strstr(line, "test garbage, nothing to recover"));
    assert_non_null(strstr(line, "undecodable"));
    assert_int_equal(harness_scalar(harness_db, "select count(*) from todo_meta.dlq_decisions where letter_id = $1"
                                                " and action = 'discarded' and done", w.first_id), 1);

    /* Another poison record: bob holds it (a fresh claim), so carol's
     * redrive is refused, naming bob; once bob's claim is a minute old
     * (his todoctl died), carol takes it over. */
    snprintf(value, sizeof value, "no envelope to fight over %s", user);
    produce(user, value, strlen(value));
    value_want w2 = {.value = value};
    assert_int_equal(harness_consume("system.dlq.v1", dead_letter_of, &w2, 1, 15000), 1);
    const char *p[1] = {w2.first_id};
    PGresult *r = PQexecParams(harness_db,
                               "insert into todo_meta.dlq_decisions (letter_id, action, operator) values ($1, 'redriven', 'bob')",
                               1, NULL, p, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    snprintf(args, sizeof args, "dlq redrive %s --by carol", w2.first_id);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "is being redriven by bob"));
    r = PQexecParams(harness_db,
                     "update todo_meta.dlq_decisions set claimed_at = now() - interval '2 minutes' where letter_id = $1",
                     1, NULL, p, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 0);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from todo_meta.dlq_decisions where letter_id = $1"
                                                " and operator = 'carol' and done", w2.first_id), 1);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 1); /* done: the letter is gone */
}

/* A Redis that knows only an ACL user (no default user): the projector's
 * cache with the user and password in TODO_REDIS_URL works; with a wrong
 * password it switches itself off and the database serves alone. */
static void the_redis_fast_path_authenticates_as_its_acl_user(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    int port = harness_free_port();
    char dir[200], cmd[2048], url[256], out[256];
    snprintf(dir, sizeof dir, "%.160s/redis-acl-%d", getenv("TODO_STACK_DIR"), port);
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s && printf 'user default off\\nuser todo-projector on >pr0j%%%%pw ~* &* +@all\\n' > %s/users.acl"
             " && redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --daemonize yes"
             " --pidfile %s/redis.pid --logfile %s/redis.log --dir %s --aclfile %s/users.acl",
             dir, dir, port, dir, dir, dir, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "for i in $(seq 50); do redis-cli -p %d --user todo-projector --pass 'pr0j%%pw' "
                              "--no-auth-warning ping 2>/dev/null | grep -q PONG && exit 0; sleep 0.1; done; exit 1", port);
    assert_int_equal(system(cmd), 0);

    todo_err err;
    const char *ids[] = {"acl-aggregate"};
    int64_t v[1] = {0};
    snprintf(url, sizeof url, "redis://todo-projector:pr0j%%25pw@127.0.0.1:%d", port); /* % percent-encoded */
    proj_cache *c = proj_cache_new(url, "acl-group", &err);
    assert_non_null(c);
    proj_cache_note(c, ids[0], 7);
    proj_cache_flush(c);
    proj_cache_lookup(c, ids, 1, v);
    assert_int_equal(v[0], 7);
    proj_cache_free(c);
    snprintf(cmd, sizeof cmd, "redis-cli -p %d --user todo-projector --pass 'pr0j%%pw' --no-auth-warning dbsize", port);
    FILE *f = popen(cmd, "r");
    assert_non_null(fgets(out, sizeof out, f));
    pclose(f);
    assert_true(atoi(out) >= 1);

    /* A wrong password: nothing known, nothing fails. */
    snprintf(url, sizeof url, "redis://todo-projector:wrong@127.0.0.1:%d", port);
    c = proj_cache_new(url, "acl-group", &err);
    assert_non_null(c);
    v[0] = 0;
    proj_cache_lookup(c, ids, 1, v);
    assert_int_equal(v[0], 0);
    proj_cache_free(c);
    snprintf(cmd, sizeof cmd, "kill $(cat %s/redis.pid)", dir);
    assert_int_equal(system(cmd), 0);
}

/* An envelope of type with payload m for aggregate id (in a). */
static void encode_event(arena *a, const char *user, const char *type, const char *id, int64_t version,
                         const ProtobufCMessage *m, uint8_t **bytes, size_t *len)
{
    char event_id[37];
    todo_err err;
    text_uuid_v4(event_id);
    event_meta meta = {.event_id = event_id, .event_type = type, .source = "test", .time_us = event_now_us(),
                       .user_id = user, .aggregate_type = "task", .aggregate_id = id, .aggregate_version = version,
                       .schema_version = strcmp(type, "task.created") == 0 ? 2 : 1};
    assert_int_equal(event_encode(&meta, m, a, bytes, len, &err), 0);
}

/* A record that decodes but that the database refuses (an aggregate id that
 * is no UUID) is dead-lettered alone: the good records of its batch are
 * applied. */
static void a_record_the_database_refuses_is_dead_lettered_alone(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64], ids[2][37];
    harness_user(user, "refused");
    arena *a = arena_new();
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ts.seconds = 1700000000;
    uint8_t *good[2], *bad;
    size_t good_len[2], bad_len;
    for (int i = 0; i < 2; i++) {
        Todo__V1__TaskCreatedV2 ev = TODO__V1__TASK_CREATED_V2__INIT;
        text_uuid_v4(ids[i]);
        ev.task_id = ids[i];
        ev.title = "around a refused record";
        ev.created_at = &ts;
        encode_event(a, user, "task.created", ids[i], 1, &ev.base, &good[i], &good_len[i]);
    }
    Todo__V1__TaskCompleted done = TODO__V1__TASK_COMPLETED__INIT;
    done.task_id = "not-a-uuid";
    done.completed_at = &ts;
    encode_event(a, user, "task.completed", "not-a-uuid", 2, &done.base, &bad, &bad_len);
    produce(user, good[0], good_len[0]);
    produce(user, bad, bad_len);
    produce(user, good[1], good_len[1]);
    assert_int_equal(wait_read_count(user, 2, 15000), 2);
    assert_true(dlq_holds(bad, bad_len, "applying failed"));
    arena_free(a);
}

/* Renames task id (title) as auth's user; the command's reply version. */
static long long rename_task(const char *auth, const char *id, const char *title)
{
    Todo__V1__UpdateTaskRequest up = TODO__V1__UPDATE_TASK_REQUEST__INIT;
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    char *paths[] = {"title"};
    mask.paths = paths;
    mask.n_paths = 1;
    up.task_id = (char *)id;
    up.update_mask = &mask;
    up.title = (char *)title;
    Todo__V1__CommandReply *r = NULL;
    grpcx_result res;
    assert_int_equal(harness_command("UpdateTask", &up.base, auth, &r, &res), GRPC_STATUS_OK);
    long long v = r->version;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return v;
}

/* The id of the first dead letter `todoctl dlq list ARGS` prints, into id. */
static bool first_letter(const char *args, char id[37])
{
    static char out[16384];
    char cmd[256];
    snprintf(cmd, sizeof cmd, "dlq list %s", args);
    if (harness_todoctl(cmd, out, sizeof out) != 0) return false;
    /* The first line that starts with an id (librdkafka may log to stderr,
     * which harness_todoctl captures too). */
    for (const char *line = out; line != NULL && *line != '\0';) {
        if (strlen(line) >= 36) {
            memcpy(id, line, 36);
            id[36] = '\0';
            if (text_is_uuid(id)) return true;
        }
        line = strchr(line, '\n');
        if (line != NULL) line++;
    }
    return false;
}

/* Ordered parking: a task's creation the read model refuses (until a fix),
 * then two renames of it. The renames wait behind the refused record, as
 * letters of reason "parked" (never applied before it); once the cause is
 * fixed, one redrive applies all three in their order, and what comes after
 * is applied as usual. */
static void a_dead_letter_parks_its_aggregate_and_a_redrive_releases_it_in_order(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64], args[256], head[37], parked[37], out[16384];
    harness_user(user, "parking");
    PGresult *r = PQexec(harness_db,
                         "create or replace function public.test_refuse_poison() returns trigger language plpgsql as"
                         " $$ begin if new.title = 'poison until fixed' then"
                         "   raise exception 'refused by the test until it is fixed'; end if;"
                         " return new; end $$;"
                         " drop trigger if exists test_poison on read.tasks;"
                         " create trigger test_poison before insert on read.tasks for each row"
                         " execute function public.test_refuse_poison()");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    char *auth = harness_bearer(user, 600, NULL);
    char *id = harness_create(auth, "poison until fixed");
    assert_int_equal(rename_task(auth, id, "renamed once"), 2);
    assert_int_equal(rename_task(auth, id, "renamed twice"), 3);

    /* The creation is dead-lettered; both renames wait behind it. */
    snprintf(args, sizeof args, "--user %s --reason parked", user);
    long long until = harness_now_ms() + 20000;
    int n_parked = 0;
    while (harness_now_ms() < until) {
        static char list[16384];
        snprintf(out, sizeof out, "dlq list %s", args);
        harness_todoctl(out, list, sizeof list);
        n_parked = 0;
        for (const char *p = list; (p = strstr(p, " parked ")) != NULL; p++) n_parked++;
        if (n_parked >= 2) break;
        harness_sleep_ms(200);
    }
    assert_int_equal(n_parked, 2);
    snprintf(args, sizeof args, "--user %s --reason refused_by_database", user);
    assert_true(first_letter(args, head));
    snprintf(args, sizeof args, "--user %s --reason parked", user);
    assert_true(first_letter(args, parked));
    assert_int_equal(harness_scalar(harness_db, "select count(*) from read.tasks where id = $1::uuid", id), 0);
    snprintf(args, sizeof args, "dlq show %s", parked);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 0);
    assert_non_null(strstr(out, "parked behind:  "));
    assert_non_null(strstr(out, head));
    snprintf(args, sizeof args, "dlq show %s", head);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 0);
    assert_non_null(strstr(out, "2 record(s) wait in this chain"));
    assert_non_null(strstr(out, "task.updated"));

    /* The fix, then one redrive: all three, in order. */
    r = PQexec(harness_db, "drop trigger test_poison on read.tasks");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    snprintf(args, sizeof args, "dlq redrive %s --by test-operator", parked); /* any letter of the chain */
    assert_int_equal(harness_todoctl(args, out, sizeof out), 0);
    int redriven = 0;
    for (const char *p = out; (p = strstr(p, "redriven ")) != NULL; p++) redriven++;
    assert_int_equal(redriven, 3);
    until = harness_now_ms() + 20000;
    while (harness_now_ms() < until &&
           harness_scalar(harness_db, "select count(*) from read.tasks where id = $1::uuid and version = 3", id) != 1)
        harness_sleep_ms(100);
    assert_int_equal(harness_scalar(harness_db,
                                    "select count(*) from read.tasks where id = $1::uuid and version = 3"
                                    " and title = 'renamed twice'", id), 1);
    snprintf(args, sizeof args, "--user %s", user);
    assert_false(first_letter(args, head));

    /* What comes next is applied as usual: the aggregate waits no more. */
    assert_int_equal(rename_task(auth, id, "renamed thrice"), 4);
    until = harness_now_ms() + 20000;
    while (harness_now_ms() < until &&
           harness_scalar(harness_db, "select count(*) from read.tasks where id = $1::uuid and version = 4", id) != 1)
        harness_sleep_ms(100);
    assert_int_equal(harness_scalar(harness_db,
                                    "select count(*) from read.tasks where id = $1::uuid and title = 'renamed thrice'",
                                    id), 1);
    free(id);
    free(auth);
}

/* A record the database refuses on every try, with a refusal that could
 * pass another time (a trigger raising serialization_failure, as a
 * deadlock or a lock time-out would): retried with its batch, then, after
 * TODO_CONSUMER_MAX_ATTEMPTS (3 here), dead-lettered saying so, and the
 * records after it on its partition are applied. (Before, such a batch
 * could be retried for good, blocking the partition.) */
static void a_record_that_keeps_failing_is_dead_lettered_after_its_attempts(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64], ids[3][37];
    harness_user(user, "retried");
    PGresult *r = PQexec(harness_db,
                         "create or replace function public.test_refuse_every_time() returns trigger language plpgsql as"
                         " $$ begin if new.title = 'refused every time' then"
                         "   raise exception 'refused by the test' using errcode = 'serialization_failure'; end if;"
                         " return new; end $$;"
                         " drop trigger if exists test_refuse on read.tasks;"
                         " create trigger test_refuse before insert on read.tasks for each row"
                         " execute function public.test_refuse_every_time()");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    arena *a = arena_new();
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ts.seconds = 1700000000;
    uint8_t *bytes[3];
    size_t len[3];
    const char *titles[3] = {"before", "refused every time", "after"};
    for (int i = 0; i < 3; i++) {
        Todo__V1__TaskCreatedV2 ev = TODO__V1__TASK_CREATED_V2__INIT;
        text_uuid_v4(ids[i]);
        ev.task_id = ids[i];
        ev.title = (char *)titles[i];
        ev.created_at = &ts;
        encode_event(a, user, "task.created", ids[i], 1, &ev.base, &bytes[i], &len[i]);
        produce(user, bytes[i], len[i]);
    }
    bool both = wait_read_count(user, 2, 30000) == 2;
    bool dead = both && dlq_holds(bytes[1], len[1], "handling failed 3 times");
    PQclear(PQexec(harness_db, "drop trigger test_refuse on read.tasks; drop function public.test_refuse_every_time()"));
    /* The record stays on the topic: a replay in a new group (an earlier
     * test, in the next build's run) must find it applied, as an operator
     * would mark a dead letter they decided to skip. */
    PQclear(PQexecParams(harness_db, "insert into read.applied_versions (aggregate_id, version) values ($1::uuid, 1)"
                         " on conflict do nothing", 1, NULL, (const char *const[]){ids[1]}, NULL, NULL, 0));
    assert_true(both);
    assert_true(dead);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from read.tasks where id = $1::uuid", ids[1]), 0);
    arena_free(a);
}

static void a_version_1_task_created_event_is_upcast(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64], task_id[37], event_id[37];
    harness_user(user, "upcast");
    text_uuid_v4(task_id);
    text_uuid_v4(event_id);
    arena *a = arena_new();
    Todo__V1__TaskCreated v1 = TODO__V1__TASK_CREATED__INIT;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ts.seconds = 1700000000;
    v1.task_id = task_id;
    v1.title = "from an old producer";
    v1.priority = TODO__V1__PRIORITY__PRIORITY_URGENT;
    v1.created_at = &ts;
    event_meta m = {.event_id = event_id, .event_type = "task.created", .source = "test", .time_us = event_now_us(),
                    .user_id = user, .aggregate_type = "task", .aggregate_id = task_id, .aggregate_version = 1,
                    .schema_version = 1};
    uint8_t *bytes;
    size_t len;
    todo_err err;
    assert_int_equal(event_encode(&m, &v1.base, a, &bytes, &len, &err), 0);
    produce(user, bytes, len);
    assert_int_equal(wait_read_count(user, 1, 15000), 1);
    char *auth = harness_bearer(user, 600, NULL);
    Todo__V1__Task *t;
    grpcx_result res;
    assert_int_equal(get(auth, task_id, NULL, 5000, &t, &res), GRPC_STATUS_OK);
    assert_string_equal(t->title, "from an old producer");
    assert_int_equal(t->priority, TODO__V1__PRIORITY__PRIORITY_URGENT);
    assert_string_equal(t->category, "");
    protobuf_c_message_free_unpacked(&t->base, NULL);
    free(auth);
    arena_free(a);
}

typedef struct waiter {
    const char *auth, *token;
    grpc_status_code code;
    grpcx_result res;
} waiter;

static void *wait_read(void *arg)
{
    waiter *w = arg;
    Todo__V1__Task *t = NULL;
    w->code = get(w->auth, "123e4567-e89b-42d3-a456-426614174000", w->token, 60000, &t, &w->res);
    if (t != NULL) protobuf_c_message_free_unpacked(&t->base, NULL);
    return NULL;
}

/* A token whose write never reaches the read model is waited for
 * TODO_QUERY_TOKEN_WAIT_MS (3 s), not the client's 60 s deadline, and that
 * long by half the read threads at most (the others 250 ms): a forged token
 * once held a worker for the whole deadline, and 8 of them stopped the read
 * API for everyone. Such reads run on the read threads, so plain reads are
 * still answered meanwhile. A token the service did not issue to the caller
 * is refused at once. */
static void a_token_the_projection_cannot_reach_answers_unavailable(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64], other[64], tok[CTOKEN_MAX], forged[CTOKEN_MAX];
    harness_user(user, "future");
    harness_user(other, "bystander");
    char *auth = harness_bearer(user, 600, NULL), *auth_other = harness_bearer(other, 600, NULL);
    todo_config cfg;
    todo_err err;
    assert_int_equal(config_load(&cfg, CONFIG_CLI, NULL, NULL, &err), 0);
    ctoken_encode(&cfg.token_key, user, "0b8e0a4e-6f7c-4d52-9a53-3f1e5a8b9c01", INT64_C(1) << 60, tok);
    Todo__V1__Task *t;
    grpcx_result res;
    enum { N = 8 }; /* more than todo-query's read threads (6) */
    waiter w[N];
    pthread_t th[N];
    long long t0 = harness_now_ms();
    for (int i = 0; i < N; i++) {
        w[i] = (waiter){.auth = auth, .token = tok};
        pthread_create(&th[i], NULL, wait_read, &w[i]);
    }
    harness_sleep_ms(300);
    /* Meanwhile another user's read is served. */
    assert_int_equal(get(auth_other, "123e4567-e89b-42d3-a456-426614174000", NULL, 2000, &t, &res),
                     GRPC_STATUS_NOT_FOUND);
    int long_waits = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].code, GRPC_STATUS_UNAVAILABLE);
        assert_non_null(strstr(w[i].res.message, "not caught up"));
        if (strstr(w[i].res.message, "waited 3000 ms") != NULL) long_waits++;
    }
    assert_true(harness_now_ms() - t0 < 20000); /* capped at 3 s, not the 60 s deadline */
    assert_true(long_waits >= 1);

    /* WatchUpdates starts on a worker, one of few (one per core): its
     * token is waited for 250 ms at most, then the stream ends
     * UNAVAILABLE. */
    Todo__V1__WatchUpdatesRequest wr = TODO__V1__WATCH_UPDATES_REQUEST__INIT;
    wr.consistency_token = tok;
    grpcx_stream *st = grpcx_stream_open(harness_svc.qry, "/todo.v1.TaskQueryService/WatchUpdates", &wr.base, auth,
                                         10000, &res);
    assert_non_null(st);
    ProtobufCMessage *msg = NULL;
    assert_int_equal(grpcx_stream_next(st, &todo__v1__update__descriptor, 10000, &msg, &res), 0);
    assert_int_equal(res.code, GRPC_STATUS_UNAVAILABLE);
    if (strstr(res.message, "waited 250 ms") == NULL) fail_msg("a worker waited longer: %s", res.message);
    grpcx_stream_close(st);

    /* Not issued to this caller, or not issued at all: INVALID_ARGUMENT. */
    assert_int_equal(get(auth_other, "123e4567-e89b-42d3-a456-426614174000", tok, 1500, &t, &res),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(res.message, "consistency_token"));
    snprintf(forged, sizeof forged, "%s", tok);
    forged[40] = forged[40] == 'A' ? 'B' : 'A';
    assert_int_equal(get(auth, "123e4567-e89b-42d3-a456-426614174000", forged, 1500, &t, &res),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_int_equal(get(auth, "123e4567-e89b-42d3-a456-426614174000", "Y3QyOnQ6NQ", 1500, &t, &res),
                     GRPC_STATUS_INVALID_ARGUMENT); /* an old "ct2:t:5" position token */
    assert_int_equal(get(auth, "123e4567-e89b-42d3-a456-426614174000", "junk", 1500, &t, &res),
                     GRPC_STATUS_INVALID_ARGUMENT);
    free(auth);
    free(auth_other);
}

typedef struct rw {
    const char *auth;
    int index, stale, failed, retried;
} rw;

/* One writer of the user: creates tasks and updates them, each write
 * followed by a read holding its token. */
/* GetTask holding a token, sent again while the answer is UNAVAILABLE
 * (the read model has not caught up within the server's wait: an honest
 * "retry later", never a stale answer), up to 20 times. */
static grpc_status_code get_with_token(rw *w, const char *id, const char *token, Todo__V1__Task **t, grpcx_result *res)
{
    grpc_status_code code = GRPC_STATUS_UNAVAILABLE;
    for (int k = 0; k < 20 && code == GRPC_STATUS_UNAVAILABLE; k++) {
        if (k > 0) {
            w->retried++;
            if (w->retried <= 2) printf("sent again after UNAVAILABLE: %s\n", res->message);
        }
        code = get(w->auth, id, token, 10000, t, res);
    }
    return code;
}

static void *write_then_read(void *arg)
{
    rw *w = arg;
    for (int i = 0; i < 15; i++) {
        char title[48];
        snprintf(title, sizeof title, "w%d-%d", w->index, i);
        Todo__V1__CreateTaskRequest rq = TODO__V1__CREATE_TASK_REQUEST__INIT;
        rq.title = title;
        Todo__V1__CommandReply *rp = NULL;
        grpcx_result res;
        if (harness_command("CreateTask", &rq.base, w->auth, &rp, &res) != GRPC_STATUS_OK) {
            w->failed++;
            continue;
        }
        Todo__V1__Task *t = NULL;
        if (get_with_token(w, rp->id, rp->consistency_token, &t, &res) != GRPC_STATUS_OK) {
            printf("stale read after CreateTask of %s: %s: %s\n", rp->id, grpcx_code_name(res.code), res.message);
            w->stale++;
        } else if (strcmp(t->title, title) != 0) {
            printf("stale read after CreateTask of %s: title %s\n", rp->id, t->title);
            w->stale++;
        }
        if (t != NULL) protobuf_c_message_free_unpacked(&t->base, NULL);
        Todo__V1__UpdateTaskRequest up = TODO__V1__UPDATE_TASK_REQUEST__INIT;
        char *paths[1] = {"title"};
        Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
        mask.n_paths = 1;
        mask.paths = paths;
        up.task_id = rp->id;
        up.title = "updated";
        up.update_mask = &mask;
        Todo__V1__CommandReply *u = NULL;
        if (harness_command("UpdateTask", &up.base, w->auth, &u, &res) != GRPC_STATUS_OK) {
            w->failed++;
        } else {
            t = NULL;
            if (get_with_token(w, rp->id, u->consistency_token, &t, &res) != GRPC_STATUS_OK) {
                printf("stale read after UpdateTask of %s: %s: %s\n", rp->id, grpcx_code_name(res.code), res.message);
                w->stale++;
            } else if (t->version < u->version || strcmp(t->title, "updated") != 0) {
                printf("stale read after UpdateTask of %s: version %lld of %lld, title %s\n", rp->id,
                       (long long)t->version, (long long)u->version, t->title);
                w->stale++;
            }
            if (t != NULL) protobuf_c_message_free_unpacked(&t->base, NULL);
            protobuf_c_message_free_unpacked(&u->base, NULL);
        }
        protobuf_c_message_free_unpacked(&rp->base, NULL);
    }
    return NULL;
}

/* Positions come from a sequence, so two commands of one user can commit
 * in the other order and the later position can be projected first: a
 * token naming a position was then answered before its own write was
 * visible. Tokens name the write itself; many concurrent writers of one
 * user, each reading with its token: no stale answer. */
static void read_your_writes_is_exact_under_concurrency(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "ryw");
    char *auth = harness_bearer(user, 600, NULL);
    enum { WRITERS = 8 };
    rw w[WRITERS];
    pthread_t th[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (rw){.auth = auth, .index = i};
        pthread_create(&th[i], NULL, write_then_read, &w[i]);
    }
    int stale = 0, failed = 0, retried = 0;
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(th[i], NULL);
        stale += w[i].stale;
        failed += w[i].failed;
        retried += w[i].retried;
    }
    printf("%d reads with a token, %d sent again after UNAVAILABLE\n", WRITERS * 15 * 2, retried);
    assert_int_equal(failed, 0);
    assert_int_equal(stale, 0);
    free(auth);
}

/* The SQLSTATE of running sql as the role of url_var ("" when it worked). */
static void sqlstate_as(const char *url_var, const char *sql, char out[6])
{
    PGconn *c = PQconnectdb(getenv(url_var));
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, sql);
    const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(out, 6, "%s", st != NULL ? st : "");
    PQclear(r);
    PQfinish(c);
}

static void each_role_reaches_only_its_own_schema(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char st[6];
    sqlstate_as("TODO_QUERY_PG_URL", "select count(*) from read.tasks", st);
    assert_string_equal(st, "");
    sqlstate_as("TODO_QUERY_PG_URL", "delete from read.tasks where false", st);
    assert_string_equal(st, "42501"); /* insufficient_privilege */
    sqlstate_as("TODO_QUERY_PG_URL", "select count(*) from write.tasks", st);
    assert_string_equal(st, "42501");
    sqlstate_as("TODO_COMMAND_PG_URL", "select count(*) from read.tasks", st);
    assert_string_equal(st, "42501");
    sqlstate_as("TODO_COMMAND_PG_URL", "select count(*) from write.events", st);
    assert_string_equal(st, "");
    sqlstate_as("TODO_PROJECTOR_PG_URL", "select count(*) from write.events", st);
    assert_string_equal(st, "42501");
}

static void production_services_refuse_to_start_without_a_secret(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    const char *extra[] = {"TODO_ENV=production", "TODO_JWT_SECRET=", NULL};
    pid_t pid = harness_spawn("command/todo-command", "refused-command", extra);
    assert_int_equal(harness_stop(pid, 0, 10000), 2);
    pid = harness_spawn("query/todo-query", "refused-query", extra);
    assert_int_equal(harness_stop(pid, 0, 10000), 2);
}

/* A stack that verifies user tokens with an identity provider's public
 * keys (TODO_JWT_PUBLIC_KEYS, no TODO_JWT_SECRET): its tokens create and
 * read; an HS256 token with the published development secret, a token of
 * the other key type and one of a key it does not hold are refused. */
static void user_tokens_are_verified_with_public_keys(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    const char *dir = getenv("TODO_STACK_DIR");
    assert_non_null(dir);
    static char keys[600], cmd_addr[64], qry_addr[64], ec_key[600], rsa_key[600], other_key[600];
    snprintf(keys, sizeof keys, "TODO_JWT_PUBLIC_KEYS=%s/certs/jwt-es256.pub", dir);
    snprintf(ec_key, sizeof ec_key, "%s/certs/jwt-es256.key", dir);
    snprintf(rsa_key, sizeof rsa_key, "%s/certs/jwt-rs256.key", dir);
    snprintf(other_key, sizeof other_key, "%s/certs/saga.key", dir); /* P-256, not the provider's */
    snprintf(cmd_addr, sizeof cmd_addr, "TODO_COMMAND_ADDR=127.0.0.1:%d", harness_free_port());
    snprintf(qry_addr, sizeof qry_addr, "TODO_QUERY_ADDR=127.0.0.1:%d", harness_free_port());
    const char *env[] = {keys, cmd_addr, qry_addr, "TODO_COMMAND_METRICS_ADDR=", "TODO_QUERY_METRICS_ADDR=", NULL};
    harness_log_reset("keys-command");
    pid_t cmd = harness_spawn("command/todo-command", "keys-command", env);
    pid_t qry = harness_spawn("query/todo-query", "keys-query", env);
    const char *ca = strchr(cmd_addr, '=') + 1, *qa = strchr(qry_addr, '=') + 1;
    assert_true(harness_wait_serving(ca, 20000));
    assert_true(harness_wait_serving(qa, 20000));
    assert_true(harness_log_contains("keys-command", "user tokens are verified with public keys"));
    grpcx_channel *cch = harness_channel(ca), *qch = harness_channel(qa);

    char user[64], *tok, auth[4200];
    harness_user(user, "idp");
    todo_err err;
    auth_rules rules = {0};
    tok = auth_issue_signed(ec_key, NULL, user, 600, (long)time(NULL), &rules, &err);
    assert_non_null(tok);
    snprintf(auth, sizeof auth, "Bearer %s", tok);
    free(tok);
    Todo__V1__CreateTaskRequest rq = TODO__V1__CREATE_TASK_REQUEST__INIT;
    rq.title = (char *)"signed by the identity provider";
    Todo__V1__CommandReply *reply = NULL;
    grpcx_result res;
    assert_int_equal(grpcx_unary(cch, CREATE, &rq.base, &todo__v1__command_reply__descriptor, auth, 10000,
                                 (ProtobufCMessage **)&reply, &res), GRPC_STATUS_OK);
    Todo__V1__GetTaskRequest gr = TODO__V1__GET_TASK_REQUEST__INIT;
    gr.task_id = reply->id;
    gr.consistency_token = reply->consistency_token;
    Todo__V1__Task *t = NULL;
    assert_int_equal(grpcx_unary(qch, GET, &gr.base, &todo__v1__task__descriptor, auth, 15000, (ProtobufCMessage **)&t,
                                 &res), GRPC_STATUS_OK);
    assert_string_equal(t->title, "signed by the identity provider");
    protobuf_c_message_free_unpacked(&t->base, NULL);

    /* Refused on both services: the development HS256 secret, RS256 where
     * only an EC key verifies, and a P-256 key the provider does not own. */
    char *refused[3];
    refused[0] = harness_bearer(user, 600, NULL);
    tok = auth_issue_signed(rsa_key, NULL, user, 600, (long)time(NULL), &rules, &err);
    assert_non_null(tok);
    refused[1] = malloc(strlen(tok) + 8);
    sprintf(refused[1], "Bearer %s", tok);
    free(tok);
    tok = auth_issue_signed(other_key, NULL, user, 600, (long)time(NULL), &rules, &err);
    assert_non_null(tok);
    refused[2] = malloc(strlen(tok) + 8);
    sprintf(refused[2], "Bearer %s", tok);
    free(tok);
    for (int i = 0; i < 3; i++) {
        Todo__V1__CommandReply *r2 = NULL;
        assert_int_equal(grpcx_unary(cch, CREATE, &rq.base, &todo__v1__command_reply__descriptor, refused[i], 10000,
                                     (ProtobufCMessage **)&r2, &res), GRPC_STATUS_UNAUTHENTICATED);
        gr.consistency_token = (char *)"";
        assert_int_equal(grpcx_unary(qch, GET, &gr.base, &todo__v1__task__descriptor, refused[i], 5000,
                                     (ProtobufCMessage **)&t, &res), GRPC_STATUS_UNAUTHENTICATED);
        free(refused[i]);
    }
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.tasks where user_id = $1", user), 1);
    protobuf_c_message_free_unpacked(&reply->base, NULL);
    grpcx_channel_free(cch);
    grpcx_channel_free(qch);
    assert_int_equal(harness_stop(cmd, SIGTERM, 20000), 0);
    assert_int_equal(harness_stop(qry, SIGTERM, 20000), 0);
}

/* Production checks the database role at start: a superuser, or a role that
 * can write another service's schema, is refused, naming the excess right;
 * the stack's own least-privilege role starts. */
static void production_services_refuse_a_database_role_with_too_many_rights(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    PGresult *r = PQexec(harness_db,
                         "do $$ begin if not exists (select 1 from pg_roles where rolname = 'test_overreach') then"
                         " create role test_overreach login; end if; end $$;"
                         " grant usage on schema read, write to test_overreach;"
                         " grant select on all tables in schema read to test_overreach;"
                         " grant insert on write.tasks to test_overreach");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    const char *admin = getenv("TODO_PG_URL"), *at = strchr(admin, '@');
    assert_non_null(at);
    static char super_url[600], over_url[600], addr[64];
    snprintf(super_url, sizeof super_url, "TODO_QUERY_PG_URL=%s", admin);
    snprintf(over_url, sizeof over_url, "TODO_QUERY_PG_URL=postgresql://test_overreach%s", at);
    snprintf(addr, sizeof addr, "TODO_QUERY_ADDR=127.0.0.1:%d", harness_free_port());
    static char keys[600];
    snprintf(keys, sizeof keys, "TODO_JWT_PUBLIC_KEYS=%s/certs/jwt-rs256.pub", getenv("TODO_STACK_DIR"));
    const char *base[] = {"TODO_ENV=production", keys, "TODO_QUERY_METRICS_ADDR=", addr,
                          "TODO_CONSISTENCY_SECRET=0123456789abcdef0123456789abcdef-slice"};
    const char *superuser[] = {base[0], base[1], base[2], base[3], base[4], super_url, NULL};
    harness_log_reset("role-superuser");
    harness_log_reset("role-overreach");
    pid_t pid = harness_spawn("query/todo-query", "role-superuser", superuser);
    assert_int_equal(harness_stop(pid, 0, 10000), 1);
    assert_true(harness_log_contains("role-superuser", "is a superuser"));
    const char *over[] = {base[0], base[1], base[2], base[3], base[4], over_url, NULL};
    pid = harness_spawn("query/todo-query", "role-overreach", over);
    assert_int_equal(harness_stop(pid, 0, 10000), 1);
    assert_true(harness_log_contains("role-overreach", "can write tables of schema(s) write, beyond its own (none)"));
    /* The stack's todo_query role: least privilege, it serves. */
    const char *own[] = {base[0], base[1], base[2], base[3], base[4], NULL};
    pid = harness_spawn("query/todo-query", "role-own", own);
    assert_true(harness_wait_serving(addr + strlen("TODO_QUERY_ADDR="), 20000));
    assert_int_equal(harness_stop(pid, SIGTERM, 20000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(created_task_is_readable_through_the_query_service),
        cmocka_unit_test(invalid_input_is_refused_and_writes_nothing),
        cmocka_unit_test(missing_or_bad_tokens_are_unauthenticated),
        cmocka_unit_test(another_users_task_is_not_found),
        cmocka_unit_test(list_filters_and_pages_cover_every_task_once),
        cmocka_unit_test(projector_crash_and_replay_leave_no_duplicate_and_no_gap),
        cmocka_unit_test(poison_records_go_to_the_dlq_and_the_projector_moves_on),
        cmocka_unit_test(dead_letters_are_listed_shown_and_redriven),
        cmocka_unit_test(dead_letters_are_discarded_with_a_reason_and_held_by_one_operator),
        cmocka_unit_test(a_record_the_database_refuses_is_dead_lettered_alone),
        cmocka_unit_test(a_record_that_keeps_failing_is_dead_lettered_after_its_attempts),
        cmocka_unit_test(a_dead_letter_parks_its_aggregate_and_a_redrive_releases_it_in_order),
        cmocka_unit_test(a_version_1_task_created_event_is_upcast),
        cmocka_unit_test(a_token_the_projection_cannot_reach_answers_unavailable),
        cmocka_unit_test(read_your_writes_is_exact_under_concurrency),
        cmocka_unit_test(the_redis_fast_path_is_filled_and_optional),
        cmocka_unit_test(the_redis_fast_path_authenticates_as_its_acl_user),
        cmocka_unit_test(two_projectors_share_the_partitions_without_loss_or_duplicates),
        cmocka_unit_test(projection_status_shows_lag_progress_and_the_last_error),
        cmocka_unit_test(each_role_reaches_only_its_own_schema),
        cmocka_unit_test(production_services_refuse_to_start_without_a_secret),
        cmocka_unit_test(user_tokens_are_verified_with_public_keys),
        cmocka_unit_test(production_services_refuse_a_database_role_with_too_many_rights),
    };
    setenv("TODO_CONSUMER_MAX_ATTEMPTS", "3", 1);
    /* TODO_TEST_FILTER=<pattern> runs only the tests whose names match. */
    if (getenv("TODO_TEST_FILTER") != NULL) cmocka_set_test_filter(getenv("TODO_TEST_FILTER"));
    return cmocka_run_group_tests(tests, harness_group_setup, harness_group_teardown);
}
