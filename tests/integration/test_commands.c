/*
 * Integration tests of the task commands on the real stack: the lifecycle
 * (update, complete, reopen, delete, restore) down to the read model,
 * optimistic concurrency under many concurrent clients, and idempotent
 * request ids.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "todo/v1/command.pb-c.h"
#include "todo/v1/events.pb-c.h"
#include "todo/v1/query.pb-c.h"



static Todo__V1__CommandReply *create(const char *auth, const char *title, const char *request_id)
{
    Todo__V1__CreateTaskRequest rq = TODO__V1__CREATE_TASK_REQUEST__INIT;
    Todo__V1__CommandReply *rp;
    grpcx_result res;
    rq.title = (char *)title;
    rq.request_id = (char *)(request_id != NULL ? request_id : "");
    if (harness_command("CreateTask", &rq.base, auth, &rp, &res) != GRPC_STATUS_OK) fail_msg("CreateTask: %s", res.message);
    return rp;
}

/* CompleteTask, ReopenTask, DeleteTask and RestoreTask share a shape. */
static grpc_status_code simple(const char *rpc, const char *auth, const char *id, int64_t expected,
                               Todo__V1__CommandReply **out, grpcx_result *res)
{
    Todo__V1__CompleteTaskRequest rq = TODO__V1__COMPLETE_TASK_REQUEST__INIT;
    rq.task_id = (char *)id;
    rq.expected_version = expected;
    return harness_command(rpc, &rq.base, auth, out, res);
}

/* GetTask waiting for the token of reply. */
static grpc_status_code read_back(const char *auth, const Todo__V1__CommandReply *after, const char *id,
                                  Todo__V1__Task **out, grpcx_result *res)
{
    Todo__V1__GetTaskRequest rq = TODO__V1__GET_TASK_REQUEST__INIT;
    rq.task_id = (char *)id;
    rq.consistency_token = after != NULL ? after->consistency_token : (char *)"";
    return grpcx_unary(harness_svc.qry, "/todo.v1.TaskQueryService/GetTask", &rq.base, &todo__v1__task__descriptor, auth,
                       15000, (ProtobufCMessage **)out, res);
}

static long long events_of(const char *id)
{
    return harness_scalar(harness_db, "select count(*) from write.events where aggregate_id = $1::uuid", id);
}

static void a_task_goes_through_its_whole_lifecycle(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "life");
    char *auth = harness_bearer(user, 600, NULL);
    Todo__V1__CommandReply *c = create(auth, "draft", NULL), *r;
    char id[37];
    snprintf(id, sizeof id, "%s", c->id);
    grpcx_result res;
    Todo__V1__Task *t;

    /* UpdateTask: only the masked fields change. */
    Todo__V1__UpdateTaskRequest up = TODO__V1__UPDATE_TASK_REQUEST__INIT;
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    char *paths[] = {"title", "priority", "tags"};
    char *tags[] = {"x", "y"};
    mask.paths = paths;
    mask.n_paths = 3;
    up.task_id = id;
    up.update_mask = &mask;
    up.title = "final";
    up.description = "ignored: not in the mask";
    up.priority = TODO__V1__PRIORITY__PRIORITY_URGENT;
    up.tags = tags;
    up.n_tags = 2;
    up.expected_version = 1;
    assert_int_equal(harness_command("UpdateTask", &up.base, auth, &r, &res), GRPC_STATUS_OK);
    assert_int_equal(r->version, 2);
    assert_int_equal(read_back(auth, r, id, &t, &res), GRPC_STATUS_OK);
    assert_string_equal(t->title, "final");
    assert_string_equal(t->description, "");
    assert_int_equal(t->priority, TODO__V1__PRIORITY__PRIORITY_URGENT);
    assert_int_equal(t->n_tags, 2);
    assert_int_equal(t->version, 2);
    protobuf_c_message_free_unpacked(&t->base, NULL);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* Complete, twice. */
    assert_int_equal(simple("CompleteTask", auth, id, 0, &r, &res), GRPC_STATUS_OK);
    assert_int_equal(r->version, 3);
    assert_int_equal(read_back(auth, r, id, &t, &res), GRPC_STATUS_OK);
    assert_true(t->completed);
    assert_non_null(t->completed_at);
    protobuf_c_message_free_unpacked(&t->base, NULL);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    assert_int_equal(simple("CompleteTask", auth, id, 0, NULL, &res), GRPC_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(res.message, "already completed"));

    /* Reopen, twice. */
    assert_int_equal(simple("ReopenTask", auth, id, 3, &r, &res), GRPC_STATUS_OK);
    assert_int_equal(read_back(auth, r, id, &t, &res), GRPC_STATUS_OK);
    assert_false(t->completed);
    assert_null(t->completed_at);
    protobuf_c_message_free_unpacked(&t->base, NULL);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    assert_int_equal(simple("ReopenTask", auth, id, 0, NULL, &res), GRPC_STATUS_FAILED_PRECONDITION);

    /* Delete: gone from queries and from further commands, row kept. */
    assert_int_equal(simple("DeleteTask", auth, id, 0, &r, &res), GRPC_STATUS_OK);
    assert_int_equal(r->version, 5);
    assert_int_equal(read_back(auth, r, id, &t, &res), GRPC_STATUS_NOT_FOUND);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    assert_int_equal(simple("CompleteTask", auth, id, 0, NULL, &res), GRPC_STATUS_NOT_FOUND);
    assert_int_equal(simple("DeleteTask", auth, id, 0, NULL, &res), GRPC_STATUS_NOT_FOUND);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.tasks where id = $1::uuid", id), 1);

    /* Restore, twice. */
    assert_int_equal(simple("RestoreTask", auth, id, 0, &r, &res), GRPC_STATUS_OK);
    assert_int_equal(r->version, 6);
    assert_int_equal(read_back(auth, r, id, &t, &res), GRPC_STATUS_OK);
    assert_string_equal(t->title, "final");
    assert_int_equal(t->version, 6);
    protobuf_c_message_free_unpacked(&t->base, NULL);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    assert_int_equal(simple("RestoreTask", auth, id, 0, NULL, &res), GRPC_STATUS_FAILED_PRECONDITION);

    /* One event per accepted command, none for the refused ones. */
    assert_int_equal(events_of(id), 6);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    free(auth);
}

static void refusals_name_the_problem_and_write_nothing(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64], other[64];
    harness_user(user, "refuse");
    harness_user(other, "intruder");
    char *auth = harness_bearer(user, 600, NULL), *oauth = harness_bearer(other, 600, NULL);
    Todo__V1__CommandReply *c = create(auth, "mine", NULL);
    grpcx_result res;
    assert_int_equal(simple("CompleteTask", auth, c->id, 7, NULL, &res), GRPC_STATUS_ABORTED);
    assert_non_null(strstr(res.message, "at version 1, not the expected 7"));
    assert_int_equal(simple("CompleteTask", auth, "not-a-uuid", 0, NULL, &res), GRPC_STATUS_INVALID_ARGUMENT);
    assert_true(strncmp(res.message, "task_id", 7) == 0);
    assert_int_equal(simple("CompleteTask", auth, "123e4567-e89b-42d3-a456-426614174000", 0, NULL, &res),
                     GRPC_STATUS_NOT_FOUND);
    assert_int_equal(simple("DeleteTask", oauth, c->id, 0, NULL, &res), GRPC_STATUS_NOT_FOUND);
    Todo__V1__UpdateTaskRequest up = TODO__V1__UPDATE_TASK_REQUEST__INIT;
    up.task_id = c->id;
    assert_int_equal(harness_command("UpdateTask", &up.base, auth, NULL, &res), GRPC_STATUS_INVALID_ARGUMENT);
    assert_true(strncmp(res.message, "update_mask", 11) == 0);
    assert_int_equal(events_of(c->id), 1);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    free(auth);
    free(oauth);
}

typedef struct racer {
    const char *auth, *id, *title;
    int64_t expected;
    grpc_status_code code;
    int64_t version;
    char request_id[40];
    char reply_id[37];
} racer;

static void *race_update(void *arg)
{
    racer *r = arg;
    Todo__V1__UpdateTaskRequest up = TODO__V1__UPDATE_TASK_REQUEST__INIT;
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    char *paths[] = {"title"};
    Todo__V1__CommandReply *rp = NULL;
    grpcx_result res;
    mask.paths = paths;
    mask.n_paths = 1;
    up.task_id = (char *)r->id;
    up.update_mask = &mask;
    up.title = (char *)r->title;
    up.expected_version = r->expected;
    r->code = harness_command("UpdateTask", &up.base, r->auth, &rp, &res);
    if (rp != NULL) {
        r->version = rp->version;
        protobuf_c_message_free_unpacked(&rp->base, NULL);
    }
    return NULL;
}

static void concurrent_updates_never_lose_one(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    enum { N = 20 };
    char user[64], titles[N][16];
    harness_user(user, "race");
    char *auth = harness_bearer(user, 600, NULL);
    Todo__V1__CommandReply *c = create(auth, "contended", NULL);
    racer r[N];
    pthread_t th[N];

    /* All at expected_version 1: exactly one wins. */
    for (int i = 0; i < N; i++) {
        snprintf(titles[i], sizeof titles[i], "writer %d", i);
        r[i] = (racer){.auth = auth, .id = c->id, .title = titles[i], .expected = 1};
        pthread_create(&th[i], NULL, race_update, &r[i]);
    }
    int won = 0, aborted = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        won += r[i].code == GRPC_STATUS_OK;
        aborted += r[i].code == GRPC_STATUS_ABORTED;
    }
    assert_int_equal(won, 1);
    assert_int_equal(aborted, N - 1);
    assert_int_equal(events_of(c->id), 2);

    /* Without expected_version: all succeed, each at its own version. */
    for (int i = 0; i < N; i++) {
        r[i] = (racer){.auth = auth, .id = c->id, .title = titles[i], .expected = 0};
        pthread_create(&th[i], NULL, race_update, &r[i]);
    }
    int64_t seen[N + 3] = {0};
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(r[i].code, GRPC_STATUS_OK);
        assert_true(r[i].version >= 3 && r[i].version <= N + 2);
        assert_int_equal(seen[r[i].version]++, 0);
    }
    assert_int_equal(events_of(c->id), N + 2);
    assert_int_equal(harness_scalar(harness_db, "select version from write.tasks where id = $1::uuid", c->id), N + 2);
    /* The state is the last event's: the title of the writer that got the last version. */
    const char *last = NULL;
    for (int i = 0; i < N; i++)
        if (r[i].version == N + 2) last = r[i].title;
    const char *p[1] = {c->id};
    PGresult *res = PQexecParams(harness_db, "select title from write.tasks where id = $1::uuid", 1, NULL, p, NULL, NULL, 0);
    assert_string_equal(PQgetvalue(res, 0, 0), last);
    PQclear(res);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    free(auth);
}

static void *race_create(void *arg)
{
    racer *r = arg;
    Todo__V1__CreateTaskRequest rq = TODO__V1__CREATE_TASK_REQUEST__INIT;
    Todo__V1__CommandReply *rp = NULL;
    grpcx_result res;
    rq.title = (char *)r->title;
    rq.request_id = r->request_id;
    r->code = harness_command("CreateTask", &rq.base, r->auth, &rp, &res);
    if (rp != NULL) {
        snprintf(r->reply_id, sizeof r->reply_id, "%s", rp->id);
        protobuf_c_message_free_unpacked(&rp->base, NULL);
    }
    return NULL;
}

static void a_retried_request_id_acts_once(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "retry");
    char *auth = harness_bearer(user, 600, NULL);
    Todo__V1__CommandReply *a = create(auth, "once", "req-1"), *b = create(auth, "once", "req-1");
    assert_string_equal(a->id, b->id);
    assert_string_equal(a->event_id, b->event_id);
    assert_string_equal(a->consistency_token, b->consistency_token);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.tasks where user_id = $1", user), 1);

    /* The same id for a different request is refused. */
    Todo__V1__CreateTaskRequest rq = TODO__V1__CREATE_TASK_REQUEST__INIT;
    grpcx_result res;
    rq.title = "something else";
    rq.request_id = "req-1";
    assert_int_equal(harness_command("CreateTask", &rq.base, auth, NULL, &res), GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(res.message, "request_id"));

    /* A retried CompleteTask returns the first answer, not FAILED_PRECONDITION. */
    Todo__V1__CompleteTaskRequest cq = TODO__V1__COMPLETE_TASK_REQUEST__INIT;
    Todo__V1__CommandReply *c1, *c2;
    cq.task_id = a->id;
    cq.request_id = "req-2";
    assert_int_equal(harness_command("CompleteTask", &cq.base, auth, &c1, &res), GRPC_STATUS_OK);
    assert_int_equal(harness_command("CompleteTask", &cq.base, auth, &c2, &res), GRPC_STATUS_OK);
    assert_int_equal(c1->version, 2);
    assert_string_equal(c1->event_id, c2->event_id);
    assert_int_equal(events_of(a->id), 2);

    /* Concurrent duplicates: one task. */
    enum { N = 10 };
    racer r[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        r[i] = (racer){.auth = auth, .title = "raced"};
        snprintf(r[i].request_id, sizeof r[i].request_id, "req-race");
        pthread_create(&th[i], NULL, race_create, &r[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(r[i].code, GRPC_STATUS_OK);
        assert_string_equal(r[i].reply_id, r[0].reply_id);
    }
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.tasks where user_id = $1", user), 2);
    protobuf_c_message_free_unpacked(&a->base, NULL);
    protobuf_c_message_free_unpacked(&b->base, NULL);
    protobuf_c_message_free_unpacked(&c1->base, NULL);
    protobuf_c_message_free_unpacked(&c2->base, NULL);
    free(auth);
}

typedef struct audit_want {
    const char *user;      /* records of this user... */
    const char *target;    /* ...or about this target */
    int ok, refused, anonymous;
    bool secret_seen;
    const char *token;
    const char *correlation; /* the unauthenticated call's x-correlation-id */
} audit_want;

static bool audit_of_ours(const rd_kafka_message_t *m, void *ctx)
{
    audit_want *w = ctx;
    Todo__V1__AuditRecord *r = todo__v1__audit_record__unpack(NULL, m->len, m->payload);
    bool yes = false;
    if (r == NULL) return false;
    if (strcmp(r->user_id, w->user) == 0) {
        if (strcmp(r->outcome, "OK") == 0 && strstr(r->rpc, "CreateTask") != NULL && r->version == 1) w->ok++, yes = true;
        if (strcmp(r->outcome, "FAILED_PRECONDITION") == 0 && strstr(r->rpc, "CompleteTask") != NULL &&
            strstr(r->message, "already completed") != NULL && strcmp(r->target_id, w->target) == 0)
            w->refused++, yes = true;
    } else if (r->user_id[0] == '\0' && strcmp(r->correlation_id, w->correlation) == 0 &&
               strcmp(r->outcome, "UNAUTHENTICATED") == 0) {
        /* Refused before the body was read: nothing of it is recorded. */
        if (r->target_id[0] == '\0' && r->request_id[0] == '\0') w->anonymous++;
        yes = true;
    }
    /* Neither the token nor any part of its signature is ever recorded. */
    const char *sig = strrchr(w->token, '.');
    if (yes && (memmem(m->payload, m->len, w->token, strlen(w->token)) != NULL ||
                (sig != NULL && memmem(m->payload, m->len, sig + 1, strlen(sig + 1)) != NULL)))
        w->secret_seen = true;
    todo__v1__audit_record__free_unpacked(r, NULL);
    return yes;
}

static void every_command_leaves_one_audit_record(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "audited");
    char *auth = harness_bearer(user, 600, NULL);
    Todo__V1__CommandReply *c = create(auth, "audited task", NULL);
    grpcx_result res;
    assert_int_equal(simple("CompleteTask", auth, c->id, 0, NULL, &res), GRPC_STATUS_OK);
    assert_int_equal(simple("CompleteTask", auth, c->id, 0, NULL, &res), GRPC_STATUS_FAILED_PRECONDITION);
    /* Without a token, with a long request id: audited by its correlation
     * id, without anything from the body. */
    char correlation[80], *long_id = calloc(1, 200001);
    snprintf(correlation, sizeof correlation, "corr-%s", user);
    memset(long_id, 'r', 200000);
    Todo__V1__CompleteTaskRequest anon = TODO__V1__COMPLETE_TASK_REQUEST__INIT;
    anon.task_id = c->id;
    anon.request_id = long_id;
    grpcx_md md[] = {{"x-correlation-id", correlation}};
    ProtobufCMessage *none;
    assert_int_equal(grpcx_unary_md(harness_svc.cmd, "/todo.v1.TaskCommandService/CompleteTask", &anon.base,
                                    &todo__v1__command_reply__descriptor, NULL, md, 1, 15000, &none, &res),
                     GRPC_STATUS_UNAUTHENTICATED);
    free(long_id);
    audit_want w = {.user = user, .target = c->id, .token = auth + 7, .correlation = correlation};
    harness_consume("system.audit.v1", audit_of_ours, &w, 3, 20000);
    assert_int_equal(w.ok, 1);
    assert_int_equal(w.refused, 1);
    assert_int_equal(w.anonymous, 1);
    assert_false(w.secret_seen);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    free(auth);
}

typedef struct bystander {
    const char *auth;
    int index;
    atomic_int ok;
} bystander;

static void *bystander_creates(void *arg)
{
    bystander *b = arg;
    for (int i = 0; i < 3; i++) {
        char title[32], rid[48];
        snprintf(title, sizeof title, "bystander %d.%d", b->index, i);
        snprintf(rid, sizeof rid, "by-%d-%d-%lld", b->index, i, harness_now_ms());
        Todo__V1__CreateTaskRequest rq = TODO__V1__CREATE_TASK_REQUEST__INIT;
        rq.title = title;
        rq.request_id = b->index % 2 ? rid : ""; /* half in transactions of their own */
        Todo__V1__CommandReply *rp = NULL;
        grpcx_result res;
        if (harness_command("CreateTask", &rq.base, b->auth, &rp, &res) == GRPC_STATUS_OK) atomic_fetch_add(&b->ok, 1);
        if (rp != NULL) protobuf_c_message_free_unpacked(&rp->base, NULL);
    }
    return NULL;
}

typedef struct blocked_update {
    const char *auth, *id;
    grpc_status_code code;
} blocked_update;

static void *update_title(void *arg)
{
    blocked_update *u = arg;
    Todo__V1__UpdateTaskRequest up = TODO__V1__UPDATE_TASK_REQUEST__INIT;
    char *paths[1] = {"title"};
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    mask.n_paths = 1;
    mask.paths = paths;
    up.task_id = (char *)u->id;
    up.title = "after the lock";
    up.update_mask = &mask;
    grpcx_result res;
    u->code = harness_command("UpdateTask", &up.base, u->auth, NULL, &res);
    return NULL;
}

/* A side connection holds the row lock of one user's task (a long
 * transaction, an operator's psql session, a migration): that user's
 * UpdateTask waits on it, and meanwhile 16 other callers' CreateTasks (with
 * and without request ids) all complete. Before, group commit batched every
 * save behind the blocked statement and calls queued behind the blocked
 * worker: all of them waited as long as the lock was held. */
static void one_locked_row_never_stalls_other_users(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char owner[64], other[64];
    harness_user(owner, "lockowner");
    harness_user(other, "lockother");
    char *auth = harness_bearer(owner, 600, NULL), *auth_other = harness_bearer(other, 600, NULL);
    Todo__V1__CommandReply *t = create(auth, "locked", NULL);
    PGconn *side = harness_admin();
    PQclear(PQexec(side, "begin"));
    const char *p[1] = {t->id};
    PGresult *r = PQexecParams(side, "select 1 from write.tasks where id = $1::uuid for update", 1, NULL, p, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    blocked_update u = {.auth = auth, .id = t->id};
    pthread_t ut, bt[16];
    pthread_create(&ut, NULL, update_title, &u);
    harness_sleep_ms(300); /* the update is waiting on the lock */
    bystander b[16];
    for (int i = 0; i < 16; i++) {
        b[i].auth = auth_other;
        b[i].index = i;
        atomic_init(&b[i].ok, 0);
        pthread_create(&bt[i], NULL, bystander_creates, &b[i]);
    }
    long long until = harness_now_ms() + 30000;
    int done = 0;
    while (harness_now_ms() < until) {
        done = 0;
        for (int i = 0; i < 16; i++) done += atomic_load(&b[i].ok);
        if (done == 16 * 3) break;
        harness_sleep_ms(20);
    }
    PQclear(PQexec(side, "commit")); /* only now */
    for (int i = 0; i < 16; i++) pthread_join(bt[i], NULL);
    pthread_join(ut, NULL);
    PQfinish(side);
    assert_int_equal(done, 16 * 3);
    assert_int_equal(u.code, GRPC_STATUS_OK);
    protobuf_c_message_free_unpacked(&t->base, NULL);
    free(auth);
    free(auth_other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_task_goes_through_its_whole_lifecycle),
        cmocka_unit_test(refusals_name_the_problem_and_write_nothing),
        cmocka_unit_test(concurrent_updates_never_lose_one),
        cmocka_unit_test(a_retried_request_id_acts_once),
        cmocka_unit_test(every_command_leaves_one_audit_record),
        cmocka_unit_test(one_locked_row_never_stalls_other_users),
    };
    return cmocka_run_group_tests(tests, harness_group_setup, harness_group_teardown);
}
