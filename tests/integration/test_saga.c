/*
 * Integration tests of todo-saga on the real stack: the task-completion saga
 * (reminders cancelled, the next occurrence created, one notification), its
 * compensation when a step fails for good, a kill -9 in the middle followed
 * by a restart, and the reminder scheduler (a due reminder fires once with
 * two instances running; a cancelled one never).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "event.h"
#include "config.h"
#include "harness.h"
#include "keystore.h"
#include "seal.h"
#include "text.h"
#include "todo/v1/command.pb-c.h"
#include "todo/v1/events.pb-c.h"
#include "todo/v1/query.pb-c.h"

static pid_t saga1, saga2;

/* ---- a webhook receiver: per Idempotency-Key, the first two requests get
 * HTTP 500, later ones 200 ---- */

#define HOOK_KEYS 256
static struct {
    int port, fd;
    pthread_t thread;
    atomic_int stop;
    pthread_mutex_t mu;
    char keys[HOOK_KEYS][80];
    int requests[HOOK_KEYS], delivered[HOOK_KEYS], n;
} hook = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Requests and successful deliveries seen for key. */
static void hook_counts(const char *key, int *requests, int *delivered)
{
    pthread_mutex_lock(&hook.mu);
    *requests = *delivered = 0;
    for (int i = 0; i < hook.n; i++)
        if (strcmp(hook.keys[i], key) == 0) {
            *requests = hook.requests[i];
            *delivered = hook.delivered[i];
        }
    pthread_mutex_unlock(&hook.mu);
}

static void *hook_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&hook.stop)) {
        int c = accept(hook.fd, NULL, NULL);
        if (c < 0) continue;
        char buf[8192];
        size_t len = 0;
        ssize_t got;
        /* Headers, then Content-Length bytes of body. */
        while (len < sizeof buf - 1 && (got = read(c, buf + len, sizeof buf - 1 - len)) > 0) {
            len += (size_t)got;
            buf[len] = '\0';
            char *end = strstr(buf, "\r\n\r\n"), *cl = strcasestr(buf, "Content-Length:");
            if (end != NULL && (cl == NULL || (size_t)(end + 4 - buf) + (size_t)atoi(cl + 15) <= len)) break;
        }
        buf[len] = '\0';
        char key[80] = "";
        char *k = strcasestr(buf, "Idempotency-Key: ");
        if (k != NULL) sscanf(k + 17, "%79[^\r\n]", key);
        pthread_mutex_lock(&hook.mu);
        int i = 0;
        while (i < hook.n && strcmp(hook.keys[i], key) != 0) i++;
        if (i == hook.n && hook.n < HOOK_KEYS) snprintf(hook.keys[hook.n++], 80, "%s", key);
        int status = 500;
        if (i < HOOK_KEYS) {
            status = ++hook.requests[i] <= 2 ? 500 : 200;
            if (status == 200) hook.delivered[i]++;
        }
        pthread_mutex_unlock(&hook.mu);
        char reply[128];
        int n = snprintf(reply, sizeof reply, "HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", status);
        if (write(c, reply, (size_t)n) < 0) { /* the client went away */
        }
        close(c);
    }
    return NULL;
}

static void hook_start(void)
{
    hook.fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(hook.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(hook.fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t sl = sizeof sa;
    getsockname(hook.fd, (struct sockaddr *)&sa, &sl);
    hook.port = ntohs(sa.sin_port);
    assert_int_equal(listen(hook.fd, 16), 0);
    struct timeval tv = {0, 200000}; /* accept wakes up to see stop */
    setsockopt(hook.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    pthread_create(&hook.thread, NULL, hook_main, NULL);
}

static void hook_stop(void)
{
    if (hook.fd <= 0) return;
    atomic_store(&hook.stop, 1);
    pthread_join(hook.thread, NULL);
    close(hook.fd);
}

static pid_t start_saga(const char *instance, const char *delay_ms)
{
    char inst[96], delay[64], url[96];
    snprintf(inst, sizeof inst, "TODO_SAGA_INSTANCE=%s", instance);
    snprintf(delay, sizeof delay, "TODO_SAGA_STEP_DELAY_MS=%s", delay_ms);
    snprintf(url, sizeof url, "TODO_NOTIFY_WEBHOOK_URL=http://127.0.0.1:%d/hook", hook.port);
    const char *extra[] = {inst, delay, "TODO_SAGA_LEASE_S=3", url, "TODO_CONSUMER_MAX_ATTEMPTS=3", NULL};
    return harness_spawn("saga/todo-saga", instance, extra);
}

static char *task(const char *auth, const char *title, int64_t due_s)
{
    Todo__V1__CreateTaskRequest rq = TODO__V1__CREATE_TASK_REQUEST__INIT;
    Google__Protobuf__Timestamp due = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    Todo__V1__CommandReply *r;
    grpcx_result res;
    rq.title = (char *)title;
    if (due_s > 0) {
        due.seconds = due_s;
        rq.due_at = &due;
    }
    assert_int_equal(harness_command("CreateTask", &rq.base, auth, &r, &res), GRPC_STATUS_OK);
    char *id = strdup(r->id);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return id;
}

static char *remind(const char *auth, const char *task_id, int64_t in_s)
{
    Todo__V1__ScheduleReminderRequest rq = TODO__V1__SCHEDULE_REMINDER_REQUEST__INIT;
    Google__Protobuf__Timestamp at = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    Todo__V1__CommandReply *r;
    grpcx_result res;
    at.seconds = (int64_t)time(NULL) + in_s;
    rq.task_id = (char *)task_id;
    rq.remind_at = &at;
    rq.channel = TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_PUSH;
    assert_int_equal(harness_command("ScheduleReminder", &rq.base, auth, &r, &res), GRPC_STATUS_OK);
    char *id = strdup(r->id);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return id;
}

static char *daily(const char *auth, const char *task_id)
{
    Todo__V1__RecurrenceRule rule = TODO__V1__RECURRENCE_RULE__INIT;
    Todo__V1__CreateRecurringPatternRequest rq = TODO__V1__CREATE_RECURRING_PATTERN_REQUEST__INIT;
    Todo__V1__CommandReply *r;
    grpcx_result res;
    rule.frequency = TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_DAILY;
    rule.time_zone = "Europe/Berlin";
    rq.task_id = (char *)task_id;
    rq.rule = &rule;
    assert_int_equal(harness_command("CreateRecurringPattern", &rq.base, auth, &r, &res), GRPC_STATUS_OK);
    char *id = strdup(r->id);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return id;
}

/* Completes task_id; returns the saga id (the task.completed event id). */
/* Waits until saga id has one of the states (a SQL list) or timeout_ms. */
static bool saga_reaches(const char *id, const char *states, int timeout_ms)
{
    char sql[256];
    snprintf(sql, sizeof sql, "select count(*) from saga.sagas where id = $1::uuid and state in (%s)", states);
    long long until = harness_now_ms() + timeout_ms;
    while (harness_now_ms() < until) {
        if (harness_scalar(harness_db, sql, id) == 1) return true;
        harness_sleep_ms(100);
    }
    return false;
}

/* The saga consumer starts at the end of the topic once it has its
 * partitions: completes warm-up tasks until one of them starts a saga. */
static void await_saga_consumer(const char *auth)
{
    long long until = harness_now_ms() + 60000;
    while (harness_now_ms() < until) {
        char *t = task(auth, "warm-up", 0);
        char *saga = harness_complete(auth, t);
        bool ok = saga_reaches(saga, "'COMPLETED'", 3000);
        free(t);
        free(saga);
        if (ok) return;
    }
    fail_msg("todo-saga did not start a saga within 60 s");
}

static int group_setup(void **state)
{
    int rc = harness_group_setup(state);
    if (rc != 0 || !harness_stack_available()) return rc;
    hook_start();
    saga1 = start_saga("test-saga-1", "0");
    char user[64];
    harness_user(user, "sagawarm");
    char *auth = harness_bearer(user, 600, NULL);
    await_saga_consumer(auth);
    free(auth);
    return 0;
}

static int group_teardown(void **state)
{
    int bad = 0;
    if (saga1 > 0 && harness_stop(saga1, SIGTERM, 20000) != 0) {
        fprintf(stderr, "todo-saga did not exit cleanly\n");
        bad = 1;
    }
    if (saga2 > 0 && harness_stop(saga2, SIGTERM, 20000) != 0) bad = 1;
    hook_stop();
    return harness_group_teardown(state) | bad;
}

static void produce(const char *topic, const char *key, const void *value, size_t len)
{
    char errstr[256];
    rd_kafka_conf_t *conf = harness_kafka_conf();
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
                                       RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                       RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_equal(rd_kafka_flush(rk, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(rk);
}

typedef struct want_notification {
    const char *id;
    const char *subject, *body_has; /* NULL: any */
} want_notification;

/* The stack's master key (the local stack's published one by default). */
static keystore *stack_keys(void)
{
    static keystore *ks;
    if (ks == NULL) {
        seal_key master;
        todo_err err;
        const char *hex = getenv("TODO_MASTER_KEY");
        assert_int_equal(seal_key_parse(hex != NULL ? hex : CONFIG_DEV_MASTER_KEY, &master, &err), 0);
        ks = keystore_new(&master, 60);
    }
    return ks;
}

/* A notification request for w's id; its subject and body are sealed on
 * the topic (checked) and read here with the recipient's key. */
static bool is_notification(const rd_kafka_message_t *m, void *ctx)
{
    const want_notification *w = ctx;
    arena *a = arena_new();
    Todo__V1__EventEnvelope *env;
    todo_err err;
    bool yes = false;
    if (event_decode(m->payload, m->len, a, &env, &err) == 0 && strcmp(env->event_type, "notification.requested") == 0) {
        ProtobufCAllocator alloc;
        arena_pbc_allocator(a, &alloc);
        Todo__V1__SendNotification *n = todo__v1__send_notification__unpack(&alloc, env->data.len, env->data.data);
        if (n != NULL && strcmp(n->notification_id, w->id) == 0) {
            seal_key key;
            keystore_state state;
            assert_true(seal_event_is_sealed(&n->base));
            assert_string_equal(n->subject, "");
            assert_int_equal(keystore_get(stack_keys(), harness_db, env->user_id, &key, &state, &err), 0);
            assert_int_equal(state, KEYSTORE_KEY);
            assert_int_equal(seal_open_event(&n->base, &key,
                                             seal_event_aad(a, env->user_id, env->aggregate_id, env->event_type), a,
                                             &err),
                             0);
            yes = (w->subject == NULL || strcmp(n->subject, w->subject) == 0) &&
                  (w->body_has == NULL || strstr(n->body, w->body_has) != NULL);
        }
    }
    arena_free(a);
    return yes;
}

/* True when m carries the standard headers of its envelope (every event
 * leaves through the outbox, which writes them). */
static bool has_headers(const rd_kafka_message_t *m, const Todo__V1__EventEnvelope *env)
{
    rd_kafka_headers_t *h = NULL;
    const void *v;
    size_t n;
    if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR) return false;
    if (rd_kafka_header_get_last(h, "ce_type", &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        n != strlen(env->event_type) || memcmp(v, env->event_type, n) != 0)
        return false;
    return rd_kafka_header_get_last(h, "ce_id", &v, &n) == RD_KAFKA_RESP_ERR_NO_ERROR && n == strlen(env->event_id) &&
           memcmp(v, env->event_id, n) == 0;
}

typedef struct want_saga_event {
    const char *saga;
    const char *type;
} want_saga_event;

static bool is_saga_event(const rd_kafka_message_t *m, void *ctx)
{
    const want_saga_event *w = ctx;
    arena *a = arena_new();
    Todo__V1__EventEnvelope *env;
    todo_err err;
    bool yes = event_decode(m->payload, m->len, a, &env, &err) == 0 && strcmp(env->event_type, w->type) == 0 &&
               strcmp(env->aggregate_id, w->saga) == 0 && has_headers(m, env);
    arena_free(a);
    return yes;
}

/* A notification.failed of notification ctx that will be retried (the
 * webhook's HTTP 500). */
static bool is_retried_failure(const rd_kafka_message_t *m, void *ctx)
{
    arena *a = arena_new();
    Todo__V1__EventEnvelope *env;
    todo_err err;
    bool yes = false;
    if (event_decode(m->payload, m->len, a, &env, &err) == 0 && strcmp(env->event_type, "notification.failed") == 0 &&
        strcmp(env->aggregate_id, (const char *)ctx) == 0) {
        Todo__V1__NotificationFailed *f = todo__v1__notification_failed__unpack(NULL, env->data.len, env->data.data);
        yes = f != NULL && f->will_retry && strcmp(f->error_code, "server_error") == 0 &&
              env->aggregate_version == 1 + f->attempts;
        if (f != NULL) todo__v1__notification_failed__free_unpacked(f, NULL);
    }
    arena_free(a);
    return yes;
}

/* How many events of type saga.events.v1 holds for saga, once expect are there (harness_count). */
static int saga_events(const char *saga, const char *type, int expect)
{
    want_saga_event w = {saga, type};
    return harness_count("saga.events.v1", is_saga_event, &w, expect, 20000);
}

/* How many events of type notifications.commands.v1 holds for notification
 * id (the saga's id). */
static int notification_events(const char *id, const char *type, int expect)
{
    want_saga_event w = {id, type};
    return harness_count("notifications.commands.v1", is_saga_event, &w, expect, 20000);
}

/* The task's activity (GetTaskActivity) once its one saga shows status
 * (20 s at most; the last answer otherwise). */
static Todo__V1__TaskActivity *activity(const char *auth, const char *task_id, Todo__V1__SagaStatus status)
{
    Todo__V1__GetTaskActivityRequest rq = TODO__V1__GET_TASK_ACTIVITY_REQUEST__INIT;
    rq.task_id = (char *)task_id;
    Todo__V1__TaskActivity *a = NULL;
    long long until = harness_now_ms() + 20000;
    for (;;) {
        grpcx_result res;
        if (a != NULL) protobuf_c_message_free_unpacked(&a->base, NULL);
        assert_int_equal(grpcx_unary(harness_svc.qry, "/todo.v1.TaskQueryService/GetTaskActivity", &rq.base,
                                     &todo__v1__task_activity__descriptor, auth, 10000, (ProtobufCMessage **)&a, &res),
                         GRPC_STATUS_OK);
        if ((a->n_sagas == 1 && a->sagas[0]->status == status) || harness_now_ms() > until) return a;
        harness_sleep_ms(100);
    }
}

static void completing_a_recurring_task_runs_the_whole_saga(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "sagaok");
    char *auth = harness_bearer(user, 600, NULL);
    int64_t due = ((int64_t)time(NULL) / 86400 + 2) * 86400 + 7 * 3600;
    char *t = task(auth, "feed the cat", due);
    char *pattern = daily(auth, t);
    char *r1 = remind(auth, t, 3600), *r2 = remind(auth, t, 7200);
    char *saga = harness_complete(auth, t);
    assert_true(saga_reaches(saga, "'COMPLETED'", 20000));

    /* Both reminders cancelled, once each. */
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.reminders where task_id = $1::uuid"
                                                " and status = 'cancelled'", t), 2);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.events e join write.reminders r"
                                                " on r.id = e.aggregate_id where r.task_id = $1::uuid"
                                                " and e.event_type = 'reminder.cancelled'", t), 2);
    /* The next occurrence: one, a day later, in the series. */
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.tasks where generated_from = $1::uuid", t), 1);
    assert_int_equal(harness_scalar(harness_db, "select extract(epoch from due_at)::bigint from write.tasks"
                                                " where generated_from = $1::uuid", t), due + 86400);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.tasks where generated_from = $1::uuid"
                                                " and series_id is not null", t), 1);
    /* One notification request, keyed by the saga. */
    want_notification w = {saga};
    assert_int_equal(harness_count("notifications.commands.v1", is_notification, &w, 1, 20000), 1);
    /* It says the series goes on, and when (the "recurring task created" template). */
    w.subject = "Next up: feed the cat";
    w.body_has = "The next one, due ";
    assert_int_equal(harness_count("notifications.commands.v1", is_notification, &w, 1, 20000), 1);
    /* Delivered to the webhook, which failed twice first: one delivery.
     * (The dispatcher's consumer may still be joining its group when this
     * first test runs: 18 s once on a loaded machine.) */
    int requests = 0, delivered = 0;
    long long until = harness_now_ms() + 60000;
    while (harness_now_ms() < until && delivered == 0) {
        hook_counts(saga, &requests, &delivered);
        harness_sleep_ms(50);
    }
    harness_sleep_ms(500);
    hook_counts(saga, &requests, &delivered);
    assert_int_equal(requests, 3);
    assert_int_equal(delivered, 1);
    assert_int_equal(harness_scalar(harness_db, "select attempts from saga.notifications where notification_id = $1"
                                                " and status = 'sent'", saga), 3);
    /* Its events, from the saga store's outbox: once each. */
    assert_int_equal(saga_events(saga, "saga.started", 1), 1);
    assert_int_equal(saga_events(saga, "saga.step.completed", 4), 4);
    assert_int_equal(saga_events(saga, "saga.completed", 1), 1);
    assert_int_equal(saga_events(saga, "recurring.task.generated", 1), 1);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from saga.outbox where saga_id = $1::uuid", saga), 0);
    /* The request and its outcome left through the same outbox, with headers. */
    assert_int_equal(notification_events(saga, "notification.requested", 1), 1);
    assert_int_equal(notification_events(saga, "notification.sent", 1), 1);
    /* Each failed attempt told, with its code, as one that will be retried. */
    assert_int_equal(harness_count("notifications.commands.v1", is_retried_failure, saga, 2, 20000), 2);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from saga.outbox where aggregate_id = $1", saga), 0);
    /* The query API shows the outcome on the task. */
    Todo__V1__TaskActivity *act = activity(auth, t, TODO__V1__SAGA_STATUS__SAGA_STATUS_COMPLETED);
    assert_int_equal(act->n_sagas, 1);
    assert_string_equal(act->sagas[0]->saga_id, saga);
    assert_string_equal(act->sagas[0]->saga_type, "task_completion");
    assert_int_equal(act->sagas[0]->status, TODO__V1__SAGA_STATUS__SAGA_STATUS_COMPLETED);
    assert_string_equal(act->sagas[0]->last_event, "saga.completed");
    assert_string_equal(act->sagas[0]->error, "");
    protobuf_c_message_free_unpacked(&act->base, NULL);
    /* The occurrence's history names who made it: todo-saga, for the user. */
    PGresult *occ = PQexecParams(harness_db, "select id::text from write.tasks where generated_from = $1::uuid", 1, NULL,
                                 (const char *const[]){t}, NULL, NULL, 0);
    assert_int_equal(PQntuples(occ), 1);
    Todo__V1__GetTaskHistoryRequest hr = TODO__V1__GET_TASK_HISTORY_REQUEST__INIT;
    hr.task_id = PQgetvalue(occ, 0, 0);
    Todo__V1__TaskHistory *h = NULL;
    grpcx_result hres;
    long long huntil = harness_now_ms() + 20000;
    do {
        if (h != NULL) protobuf_c_message_free_unpacked(&h->base, NULL);
        h = NULL;
        assert_int_equal(grpcx_unary(harness_svc.qry, "/todo.v1.TaskQueryService/GetTaskHistory", &hr.base,
                                     &todo__v1__task_history__descriptor, auth, 10000, (ProtobufCMessage **)&h, &hres),
                         GRPC_STATUS_OK);
    } while (h->n_changes == 0 && harness_now_ms() < huntil && (harness_sleep_ms(100), true));
    assert_int_equal(h->n_changes, 1);
    assert_string_equal(h->changes[0]->event_type, "task.created");
    assert_string_equal(h->changes[0]->actor, "todo-saga");
    protobuf_c_message_free_unpacked(&h->base, NULL);
    PQclear(occ);
    free(t);
    free(pattern);
    free(r1);
    free(r2);
    free(saga);
    free(auth);
}

/* The same notification request again (a re-delivery): not sent again. */
static void a_notification_is_never_sent_twice(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "notifytwice");
    char *auth = harness_bearer(user, 600, NULL);
    char *t = task(auth, "send a card", 0);
    char *saga = harness_complete(auth, t);
    assert_true(saga_reaches(saga, "'COMPLETED'", 20000));
    int requests = 0, delivered = 0;
    long long until = harness_now_ms() + 15000;
    while (harness_now_ms() < until && delivered == 0) {
        hook_counts(saga, &requests, &delivered);
        harness_sleep_ms(50);
    }
    assert_int_equal(delivered, 1);
    /* Replay the request record itself onto the topic. */
    arena *a = arena_new();
    char event_id[37];
    text_uuid_v4(event_id);
    Todo__V1__SendNotification n = TODO__V1__SEND_NOTIFICATION__INIT;
    n.notification_id = saga;
    n.recipient = user;
    n.channel = "default";
    n.subject = "again";
    n.body = "again";
    n.task_id = t;
    event_meta m = {.event_id = event_id, .event_type = "notification.requested", .source = "test",
                    .time_us = event_now_us(), .user_id = user, .aggregate_type = "notification",
                    .aggregate_id = saga, .aggregate_version = 1, .schema_version = 1};
    uint8_t *bytes;
    size_t len;
    todo_err err;
    assert_int_equal(event_encode(&m, &n.base, a, &bytes, &len, &err), 0);
    produce("notifications.commands.v1", user, bytes, len);
    arena_free(a);
    harness_sleep_ms(2000);
    int requests2 = 0, delivered2 = 0;
    hook_counts(saga, &requests2, &delivered2);
    assert_int_equal(requests2, requests);
    assert_int_equal(delivered2, 1);
    free(t);
    free(saga);
    free(auth);
}

/* Produces a task.completed for task (which is not completed) naming a
 * pattern that does not exist: the next_occurrence step fails for good. Its
 * aggregate version (1, the task's creation) makes the projector skip it as
 * already applied: the read model stays equal to the write model. */
/* A task.completed of task_id for user (its bytes in a): event_id names
 * the saga it starts; pattern ("" or NULL: none) the series it is in. */
static uint8_t *completion(arena *a, const char *user, const char *task_id, const char *event_id, const char *pattern,
                           int64_t version, size_t *len)
{
    Todo__V1__TaskCompleted ev = TODO__V1__TASK_COMPLETED__INIT;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ts.seconds = time(NULL);
    ev.task_id = (char *)task_id;
    ev.completed_at = &ts;
    ev.recurring_pattern_id = (char *)(pattern != NULL ? pattern : "");
    event_meta m = {.event_id = event_id, .event_type = "task.completed", .source = "test", .time_us = event_now_us(),
                    .user_id = user, .aggregate_type = "task", .aggregate_id = task_id, .aggregate_version = version,
                    .schema_version = 1};
    uint8_t *bytes;
    todo_err err;
    assert_int_equal(event_encode(&m, &ev.base, a, &bytes, len, &err), 0);
    return bytes;
}

/* A completion naming a series that does not exist: its saga's
 * next_occurrence step fails for good. Returns the saga's id. */
static char *produce_bad_completion(const char *user, const char *task_id)
{
    arena *a = arena_new();
    char event_id[37], pattern[37];
    text_uuid_v4(event_id);
    text_uuid_v4(pattern);
    size_t len;
    uint8_t *bytes = completion(a, user, task_id, event_id, pattern, 1, &len);
    produce("tasks.events.v1", user, bytes, len);
    arena_free(a);
    return strdup(event_id);
}

static void a_step_failing_for_good_is_compensated(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "sagafail");
    char *auth = harness_bearer(user, 600, NULL);
    char *t = task(auth, "a doomed completion", 0);
    char *r1 = remind(auth, t, 3600);
    /* The hand-made completion claims version 1 of the task in the read
     * model: produced before the outbox published the creation, it would
     * be applied first and the creation skipped (the read model then lacks
     * the task, and a later rebuild compares unequal). */
    long long until = harness_now_ms() + 15000;
    while (harness_scalar(harness_db, "select count(*) from read.tasks where id = $1::uuid", t) != 1 &&
           harness_now_ms() < until)
        harness_sleep_ms(50);
    char *saga = produce_bad_completion(user, t);
    assert_true(saga_reaches(saga, "'COMPENSATED'", 30000));
    /* The reminder was cancelled, then restored; no occurrence. */
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.reminders where id = $1::uuid"
                                                " and status = 'scheduled'", r1), 1);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.events where aggregate_id = $1::uuid"
                                                " and event_type in ('reminder.cancelled', 'reminder.restored')", r1), 2);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.tasks where generated_from = $1::uuid", t), 0);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from saga.sagas where id = $1::uuid"
                                                " and error like '%next_occurrence%'", saga), 1);
    /* The user is told, once, in their inbox (issue 15). */
    const char *told = "select count(*) from write.inbox where user_id = $1 and subject ="
                       " 'Could not finish completing \"a doomed completion\"'"
                       " and body like '%creating the next task of its series failed%'";
    until = harness_now_ms() + 20000;
    while (harness_now_ms() < until && harness_scalar(harness_db, told, user) == 0) harness_sleep_ms(100);
    assert_int_equal(harness_scalar(harness_db, told, user), 1);
    /* And the query API shows it on the task: compensated, and why. */
    Todo__V1__TaskActivity *act = activity(auth, t, TODO__V1__SAGA_STATUS__SAGA_STATUS_COMPENSATED);
    assert_int_equal(act->n_sagas, 1);
    assert_string_equal(act->sagas[0]->saga_id, saga);
    assert_int_equal(act->sagas[0]->status, TODO__V1__SAGA_STATUS__SAGA_STATUS_COMPENSATED);
    assert_string_equal(act->sagas[0]->last_event, "saga.compensated");
    assert_non_null(strstr(act->sagas[0]->error, "next_occurrence"));
    protobuf_c_message_free_unpacked(&act->base, NULL);
    /* Another user's task is not found. */
    char *other = harness_bearer("someone-else", 600, NULL);
    Todo__V1__GetTaskActivityRequest rq = TODO__V1__GET_TASK_ACTIVITY_REQUEST__INIT;
    rq.task_id = t;
    grpcx_result res;
    assert_int_equal(grpcx_unary(harness_svc.qry, "/todo.v1.TaskQueryService/GetTaskActivity", &rq.base,
                                 &todo__v1__task_activity__descriptor, other, 10000, (ProtobufCMessage **)&act, &res),
                     GRPC_STATUS_NOT_FOUND);
    free(other);
    free(t);
    free(r1);
    free(saga);
    free(auth);
}

/* A task.completed whose saga the store refuses on every try (a trigger
 * raising serialization_failure, as a deadlock would) is tried
 * TODO_CONSUMER_MAX_ATTEMPTS times (3 here), then dead-lettered saying so;
 * the completions after it still start their sagas. (Before, the consumer
 * retried it every second for good, blocking its partition.) */
static void a_completion_refused_every_time_is_dead_lettered(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64], other[64];
    harness_user(user, "sagarefused");
    harness_user(other, "sagaafter");
    PGresult *r = PQexec(harness_db,
                         "create or replace function public.test_refuse_saga() returns trigger language plpgsql as"
                         " $$ begin if new.user_id like 'sagarefused-%' then"
                         "   raise exception 'refused by the test' using errcode = 'serialization_failure'; end if;"
                         " return new; end $$;"
                         " drop trigger if exists test_refuse_saga on saga.sagas;"
                         " create trigger test_refuse_saga before insert on saga.sagas for each row"
                         " execute function public.test_refuse_saga()");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    arena *a = arena_new();
    char event_id[37], task_id[37];
    text_uuid_v4(event_id);
    text_uuid_v4(task_id);
    size_t len;
    uint8_t *bytes = completion(a, user, task_id, event_id, NULL, 2, &len);
    produce("tasks.events.v1", user, bytes, len);
    bool dead = harness_dlq_holds("tasks.events.v1", "saga-task-completion-v1", bytes, len, "handling failed 3 times");
    PQclear(PQexec(harness_db, "drop trigger test_refuse_saga on saga.sagas; drop function public.test_refuse_saga()"));
    assert_true(dead);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from saga.sagas where id = $1::uuid", event_id), 0);
    /* The consumer moved on. */
    char *auth = harness_bearer(other, 600, NULL);
    char *t = task(auth, "after the refused one", 0);
    char *saga = harness_complete(auth, t);
    assert_true(saga_reaches(saga, "'COMPLETED'", 30000));
    free(t);
    free(saga);
    free(auth);
    arena_free(a);
}

/* Rows an older todo-saga wrote into saga.outbox (structured columns, no
 * envelope) are encoded at the next start and published like the others. */
static void rows_an_older_todo_saga_left_are_published(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char saga[37], pattern[37], task_id[37], occ[37];
    text_uuid_v4(saga);
    text_uuid_v4(pattern);
    text_uuid_v4(task_id);
    text_uuid_v4(occ);
    assert_int_equal(harness_stop(saga1, SIGTERM, 20000), 0);
    saga1 = 0;
    const char *p[4] = {saga, occ, pattern, task_id};
    PGresult *r = PQexecParams(harness_db,
                               "insert into saga.outbox (saga_id, saga_type, user_id, state, what, step, attempt,"
                               " error, detail, pattern_id, task_id) values"
                               " ($1::uuid, 'task_completion', 'legacy-user', 'RUNNING', 'started', '', 0, '', '', $3, $4),"
                               " ($1::uuid, 'task_completion', 'legacy-user', 'RUNNING', 'step.completed',"
                               "  'next_occurrence', 1, '', $2, $3, $4)",
                               4, NULL, p, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    saga1 = start_saga("test-saga-1", "0");
    assert_int_equal(saga_events(saga, "saga.started", 1), 1);
    assert_int_equal(saga_events(saga, "saga.step.completed", 1), 1);
    assert_int_equal(saga_events(saga, "recurring.task.generated", 1), 1);
    long long until = harness_now_ms() + 10000;
    while (harness_now_ms() < until &&
           harness_scalar(harness_db, "select count(*) from saga.outbox where saga_id = $1::uuid", saga) > 0)
        harness_sleep_ms(50);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from saga.outbox where saga_id = $1::uuid", saga), 0);
}

/* A saga.outbox row that can never be published is parked; the later row
 * of its aggregate waits behind it, other rows go out; an operator drops it
 * and what waited is published. */
static void a_saga_outbox_row_that_cannot_leave_is_parked(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char saga[37], other[37], ev1[37], ev2[37];
    text_uuid_v4(saga);
    text_uuid_v4(other);
    text_uuid_v4(ev1);
    text_uuid_v4(ev2);
    arena *a = arena_new();
    char *hex[2];
    const char *ids[2] = {ev1, ev2}, *aggs[2] = {saga, other};
    for (int i = 0; i < 2; i++) {
        Todo__V1__SagaEvent se = TODO__V1__SAGA_EVENT__INIT;
        se.saga_id = (char *)aggs[i];
        se.saga_type = "task_completion";
        se.step = "notify";
        event_meta m = {.event_id = ids[i], .event_type = "saga.step.completed", .source = "test",
                        .time_us = event_now_us(), .user_id = "parked-user", .aggregate_type = "saga",
                        .aggregate_id = aggs[i], .aggregate_version = 1, .schema_version = 1};
        uint8_t *bytes;
        size_t len;
        todo_err err;
        assert_int_equal(event_encode(&m, &se.base, a, &bytes, &len, &err), 0);
        hex[i] = arena_alloc(a, 2 * len + 1);
        for (size_t k = 0; k < len; k++) sprintf(hex[i] + 2 * k, "%02x", bytes[k]);
    }
    /* The bad row first (a stored envelope that does not decode), then a
     * good one of its aggregate, and a good one of another aggregate. */
    const char *p[4] = {saga, other, hex[0], hex[1]};
    PGresult *r = PQexecParams(harness_db,
                               "insert into saga.outbox (user_id, event_type, aggregate_id, envelope) values"
                               " ('parked-user', 'saga.step.completed', $1, '\\x0aff'::bytea),"
                               " ('parked-user', 'saga.step.completed', $1, decode($3, 'hex')),"
                               " ('parked-user-2', 'saga.step.completed', $2, decode($4, 'hex'))",
                               4, NULL, p, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    assert_int_equal(saga_events(other, "saga.step.completed", 1), 1);
    long long until = harness_now_ms() + 10000;
    while (harness_now_ms() < until &&
           harness_scalar(harness_db, "select count(*) from saga.outbox where aggregate_id = $1"
                                      " and parked_reason like '%does not decode%'", saga) == 0)
        harness_sleep_ms(50);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from saga.outbox where aggregate_id = $1"
                                                " and parked_at is null", saga), 1); /* waits behind it */
    char out[4096], args[128];
    assert_int_equal(harness_todoctl("outbox --saga parked", out, sizeof out), 0);
    assert_non_null(strstr(out, saga));
    assert_non_null(strstr(out, "waiting behind it: 1 event(s)"));
    long long id = harness_scalar(harness_db, "select id from saga.outbox where aggregate_id = $1"
                                              " and parked_at is not null", saga);
    snprintf(args, sizeof args, "outbox --saga drop %lld --reason test", id);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 0);
    assert_int_equal(saga_events(saga, "saga.step.completed", 1), 1); /* what waited went out */
    until = harness_now_ms() + 10000;
    while (harness_now_ms() < until &&
           harness_scalar(harness_db, "select count(*) from saga.outbox where aggregate_id = $1", saga) > 0)
        harness_sleep_ms(50);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from saga.outbox where aggregate_id = $1", saga), 0);
    arena_free(a);
}

static void a_saga_killed_mid_way_resumes_after_a_restart(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "sagakill");
    char *auth = harness_bearer(user, 600, NULL);
    /* A slow instance (1 s before every step) takes the next saga. */
    assert_int_equal(harness_stop(saga1, SIGTERM, 20000), 0);
    saga1 = start_saga("test-saga-1", "1000");
    int64_t due = ((int64_t)time(NULL) / 86400 + 3) * 86400 + 8 * 3600;
    char *t = task(auth, "water the plants", due);
    char *pattern = daily(auth, t);
    char *r1 = remind(auth, t, 3600);
    char *saga = harness_complete(auth, t);
    /* Kill it once it is past the reminders, in the middle of the saga. */
    long long until = harness_now_ms() + 30000;
    while (harness_now_ms() < until &&
           harness_scalar(harness_db, "select count(*) from saga.sagas where id = $1::uuid and step >= 2", saga) == 0)
        harness_sleep_ms(50);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from saga.sagas where id = $1::uuid"
                                                " and state = 'RUNNING'", saga), 1);
    assert_int_equal(harness_stop(saga1, SIGKILL, 5000), 128 + SIGKILL);
    /* Restarted under the same name, it takes the saga back and finishes it. */
    saga1 = start_saga("test-saga-1", "0");
    assert_true(saga_reaches(saga, "'COMPLETED'", 30000));
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.tasks where generated_from = $1::uuid", t), 1);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.events where aggregate_id = $1::uuid"
                                                " and event_type = 'reminder.cancelled'", r1), 1);
    want_notification w = {saga};
    assert_int_equal(harness_count("notifications.commands.v1", is_notification, &w, 1, 20000), 1);
    free(t);
    free(pattern);
    free(r1);
    free(saga);
    free(auth);
}

/* Live next occurrences of completed task t. */
static long long successors(const char *t)
{
    return harness_scalar(harness_db, "select count(*) from write.tasks where generated_from = $1::uuid"
                                      " and deleted_at is null", t);
}

static void reopen(const char *auth, const char *t)
{
    Todo__V1__ReopenTaskRequest ro = TODO__V1__REOPEN_TASK_REQUEST__INIT;
    grpcx_result res;
    ro.task_id = (char *)t;
    assert_int_equal(harness_command("ReopenTask", &ro.base, auth, NULL, &res), GRPC_STATUS_OK);
}

/* Issue 15: complete a task of a daily series, reopen it while its saga
 * runs (the saga compensates: the occurrence it made is retracted),
 * complete it again, with a kill -9 of todo-saga in the middle of that
 * saga: the completed task has exactly one live next occurrence, in the
 * series. Before the fix the retracted occurrence kept the task's slot,
 * the second saga read ALREADY_EXISTS as "made already", and the series
 * was over. */
static void a_series_survives_complete_reopen_complete(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "sagaseries");
    char *auth = harness_bearer(user, 600, NULL);
    assert_int_equal(harness_stop(saga1, SIGTERM, 20000), 0);
    saga1 = start_saga("test-saga-1", "700"); /* slow: 0.7 s before every step */
    int64_t due = ((int64_t)time(NULL) / 86400 + 3) * 86400 + 9 * 3600;
    char *t = task(auth, "run 5 km", due);
    char *pattern = daily(auth, t);

    /* 1. Completed; reopened once the saga made the next occurrence. */
    char *s1 = harness_complete(auth, t);
    long long until = harness_now_ms() + 30000;
    while (successors(t) == 0 && harness_now_ms() < until) harness_sleep_ms(50);
    assert_int_equal(successors(t), 1);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from saga.sagas where id = $1::uuid"
                                                " and state = 'RUNNING'", s1), 1);
    reopen(auth, t);
    assert_true(saga_reaches(s1, "'COMPENSATED'", 30000));
    assert_int_equal(successors(t), 0); /* retracted: the task is open */


    /* 2. Completed again; todo-saga killed in the middle of that saga. */
    char *s2 = harness_complete(auth, t);
    until = harness_now_ms() + 30000;
    while (harness_now_ms() < until &&
           harness_scalar(harness_db, "select count(*) from saga.sagas where id = $1::uuid and step >= 2", s2) == 0)
        harness_sleep_ms(50);
    assert_int_equal(harness_stop(saga1, SIGKILL, 5000), 128 + SIGKILL);
    saga1 = start_saga("test-saga-1", "0");
    assert_true(saga_reaches(s2, "'COMPLETED'", 30000));
    assert_int_equal(successors(t), 1);

    /* 3. Reopened after its saga ended, completed once more: the third
     * saga finds the live next occurrence and keeps it. */
    reopen(auth, t);
    char *s3 = harness_complete(auth, t);
    assert_true(saga_reaches(s3, "'COMPLETED'", 30000));
    assert_int_equal(successors(t), 1);
    /* The occurrence is in the series (write side and read side). */
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.tasks where generated_from = $1::uuid"
                                                " and deleted_at is null and series_id = (select id from"
                                                " write.recurring_patterns where task_id = $1::uuid)", t), 1);
    until = harness_now_ms() + 15000;
    const char *read_sql = "select count(*) from read.tasks r join write.tasks w on w.id = r.id"
                           " where w.generated_from = $1::uuid and w.deleted_at is null"
                           " and r.recurring_pattern_id = w.series_id";
    while (harness_scalar(harness_db, read_sql, t) != 1 && harness_now_ms() < until) harness_sleep_ms(50);
    assert_int_equal(harness_scalar(harness_db, read_sql, t), 1);
    /* The first saga compensated because the user reopened the task:
     * nothing to tell them (a compensation notice would be in the inbox by
     * now, seconds later). */
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.inbox where user_id = $1", user), 0);
    free(t);
    free(pattern);
    free(s1);
    free(s2);
    free(s3);
    free(auth);
}

static void a_due_reminder_fires_once_and_a_cancelled_one_never(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "fireonce");
    char *auth = harness_bearer(user, 600, NULL);
    saga2 = start_saga("test-saga-2", "0"); /* two schedulers */
    char *t = task(auth, "call the dentist", 0);
    char *due = remind(auth, t, 2), *cancelled = remind(auth, t, 2);
    Todo__V1__CancelReminderRequest cn = TODO__V1__CANCEL_REMINDER_REQUEST__INIT;
    grpcx_result res;
    cn.reminder_id = cancelled;
    assert_int_equal(harness_command("CancelReminder", &cn.base, auth, NULL, &res), GRPC_STATUS_OK);
    long long until = harness_now_ms() + 10000;
    while (harness_now_ms() < until &&
           harness_scalar(harness_db, "select count(*) from write.reminders where id = $1::uuid and status = 'fired'",
                          due) == 0)
        harness_sleep_ms(50);
    harness_sleep_ms(1500); /* time for a second firing, were there one */
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.events where aggregate_id = $1::uuid"
                                                " and event_type = 'reminder.triggered'", due), 1);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.events where aggregate_id = $1::uuid"
                                                " and event_type = 'reminder.triggered'", cancelled), 0);
    /* Fired within a second or so of its time (at idle). */
    long long late_ms = harness_scalar(harness_db, "select (extract(epoch from updated_at - remind_at) * 1000)::bigint"
                                                   " from write.reminders where id = $1::uuid", due);
    printf("reminder fired %lld ms after its time\n", late_ms);
    assert_true(late_ms >= 0 && late_ms < 1500);
    free(t);
    free(due);
    free(cancelled);
    free(auth);
}

/* todoctl saga list/show/compensate/retry. */
static void operators_list_show_compensate_and_retry_sagas(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64], args[160], out[8192];
    harness_user(user, "sagaops");
    char *auth = harness_bearer(user, 600, NULL);
    int64_t due = ((int64_t)time(NULL) / 86400 + 2) * 86400 + 9 * 3600;
    char *t = task(auth, "take out the bins", due);
    char *pattern = daily(auth, t);
    char *r1 = remind(auth, t, 3600);
    char *saga = harness_complete(auth, t);
    assert_true(saga_reaches(saga, "'COMPLETED'", 20000));

    assert_int_equal(harness_todoctl("saga list --state COMPLETED --limit 50", out, sizeof out), 0);
    assert_non_null(strstr(out, saga));
    /* By user and by task: this saga, and no other. */
    snprintf(args, sizeof args, "saga list --user %s", user);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 0);
    assert_non_null(strstr(out, saga));
    assert_non_null(strstr(out, t));
    snprintf(args, sizeof args, "saga list --task %s --state COMPLETED", t);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 0);
    assert_non_null(strstr(out, saga));
    snprintf(args, sizeof args, "saga list --user %s-nobody", user);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 0);
    assert_non_null(strstr(out, "no sagas"));
    snprintf(args, sizeof args, "saga show %s", saga);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 0);
    assert_non_null(strstr(out, "COMPLETED"));
    assert_non_null(strstr(out, "next_occurrence"));
    assert_non_null(strstr(out, "occurrence_id = "));
    assert_int_equal(harness_todoctl("saga list --state DONE", out, sizeof out), 2);
    snprintf(args, sizeof args, "saga retry %s", saga);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "only FAILED"));

    /* Undo a completed saga: the reminder comes back; the task is still
     * completed, so its next occurrence stays (a completed task of a live
     * series keeps one). */
    snprintf(args, sizeof args, "saga compensate %s", saga);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 0);
    assert_true(saga_reaches(saga, "'COMPENSATED'", 20000));
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.tasks where generated_from = $1::uuid"
                                                " and deleted_at is null", t), 1);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.reminders where id = $1::uuid"
                                                " and status = 'scheduled'", r1), 1);

    /* A FAILED saga (simulated: its last compensation "failed") is retried. */
    PGresult *q = PQexecParams(harness_db,
                               "update saga.sagas set state = 'FAILED', step = 2, step_states[3] = 4"
                               " where id = $1::uuid", 1, NULL, (const char *const[]){saga}, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(q), PGRES_COMMAND_OK);
    PQclear(q);
    snprintf(args, sizeof args, "saga retry %s", saga);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 0);
    assert_true(saga_reaches(saga, "'COMPENSATED'", 20000));

    /* Failed compensations are a dead-letter list of their own: listed
     * until an operator resolves one by hand (who, why), then never
     * retried, and the FAILED gauge leaves it out. */
    snprintf(args, sizeof args, "saga resolve %s --why 'occurrence removed by hand' --by ops-alice", saga);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 1); /* COMPENSATED: nothing to resolve */
    assert_non_null(strstr(out, "only FAILED ones are resolved"));
    q = PQexecParams(harness_db,
                     "update saga.sagas set state = 'FAILED', step = 2, step_states[3] = 4,"
                     " step_errors[3] = 'command unavailable' where id = $1::uuid",
                     1, NULL, (const char *const[]){saga}, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(q), PGRES_COMMAND_OK);
    PQclear(q);
    assert_int_equal(harness_todoctl("saga failed --limit 1000", out, sizeof out), 0);
    assert_non_null(strstr(out, saga));
    assert_non_null(strstr(out, "command unavailable"));
    snprintf(args, sizeof args, "saga resolve %s", saga);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 2); /* a resolution says why */
    snprintf(args, sizeof args, "saga resolve %s --why 'occurrence removed by hand' --by ops-alice", saga);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 0);
    assert_int_equal(harness_todoctl("saga failed --limit 1000", out, sizeof out), 0);
    assert_null(strstr(out, saga));
    assert_int_equal(harness_todoctl(args, out, sizeof out), 1); /* once */
    assert_non_null(strstr(out, "was resolved by ops-alice"));
    snprintf(args, sizeof args, "saga retry %s", saga);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "was resolved by ops-alice"));
    snprintf(args, sizeof args, "saga show %s", saga);
    assert_int_equal(harness_todoctl(args, out, sizeof out), 0);
    assert_non_null(strstr(out, "resolved by ops-alice at "));
    assert_non_null(strstr(out, "occurrence removed by hand"));
    assert_int_equal(harness_scalar(harness_db, "select count(*) from saga.sagas where id = $1::uuid and state = 'FAILED'",
                                    saga), 1);
    snprintf(args, sizeof args, "saga show 123e4567-e89b-42d3-a456-426614174000");
    assert_int_equal(harness_todoctl(args, out, sizeof out), 1);
    assert_non_null(strstr(out, "not found"));
    free(t);
    free(pattern);
    free(r1);
    free(saga);
    free(auth);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(completing_a_recurring_task_runs_the_whole_saga),
        cmocka_unit_test(a_notification_is_never_sent_twice),
        cmocka_unit_test(a_step_failing_for_good_is_compensated),
        cmocka_unit_test(a_completion_refused_every_time_is_dead_lettered),
        cmocka_unit_test(operators_list_show_compensate_and_retry_sagas),
        cmocka_unit_test(rows_an_older_todo_saga_left_are_published),
        cmocka_unit_test(a_saga_outbox_row_that_cannot_leave_is_parked),
        cmocka_unit_test(a_saga_killed_mid_way_resumes_after_a_restart),
        cmocka_unit_test(a_series_survives_complete_reopen_complete),
        cmocka_unit_test(a_due_reminder_fires_once_and_a_cancelled_one_never),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
