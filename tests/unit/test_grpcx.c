/* Unit tests of the grpcx runtime: an in-process server with a test handler
 * and the grpcx client, over loopback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "google/protobuf/timestamp.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpcx.h"
#include "grpcx_client.h"
#include "todo/v1/query.pb-c.h"

#define GET "/todo.v1.TaskQueryService/GetTask"

static atomic_int slow_calls_started; /* set when a "slow" call is in the handler */
static atomic_int slow_now, slow_most;  /* "slow" calls in the handler now, and the most at once */

/* Calls taken to be answered later ("later-..." ids), in the order taken. */
static pthread_mutex_t taken_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t taken_cv = PTHREAD_COND_INITIALIZER;
static struct {
    grpcx_later *l;
    char id[32];
} taken[8];
static int n_taken;

/* Waits (up to 5 s) until n calls are taken; false otherwise. */
static bool wait_taken(int n)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&taken_mu);
    while (n_taken < n && pthread_cond_timedwait(&taken_cv, &taken_mu, &until) == 0) {
    }
    bool ok = n_taken >= n;
    pthread_mutex_unlock(&taken_mu);
    return ok;
}

/* Answers taken call i: a task titled "answered later", or (not_found)
 * NOT_FOUND. */
static void answer(int i, bool not_found)
{
    Todo__V1__Task t = TODO__V1__TASK__INIT;
    t.id = taken[i].id;
    t.title = "answered later";
    todo_err err;
    todo_err_set(&err, TODO_ENOTFOUND, "task %s not found", taken[i].id);
    grpcx_later_reply(taken[i].l, not_found ? TODO_ENOTFOUND : TODO_OK, &t.base, &err);
}

/* The blocking pool: "pool-wait" calls wait in it until pool_open is set
 * (5 s at most); "pool-slow" calls take 200 ms there. pool_entered counts
 * the runs in the pool. */
static atomic_int pool_entered, pool_open, pool_offered; /* pool_offered: calls queued for it */

/* Waits (up to 10 s) until *v reaches n. */
static void wait_at_least(atomic_int *v, int n)
{
    for (int i = 0; i < 1000 && atomic_load(v) < n; i++) usleep(10000);
}

/* GetTask echoes: "pool-..." -> offloaded (see above), "missing" -> NOT_FOUND, "slow" -> replies after 300 ms,
 * "whoami" -> the authorization metadata as the title, "later-..." -> taken
 * to be answered by the test. */
static int get_task(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__GetTaskRequest *rq = (const Todo__V1__GetTaskRequest *)req;
    arena *a = grpcx_call_arena(c);
    if (strncmp(rq->task_id, "later-", 6) == 0) {
        pthread_mutex_lock(&taken_mu);
        if (n_taken == 8) {
            pthread_mutex_unlock(&taken_mu);
            return todo_err_set(err, TODO_EUNAVAIL, "too many taken");
        }
        taken[n_taken].l = grpcx_call_later(c);
        snprintf(taken[n_taken].id, sizeof taken[n_taken].id, "%s", rq->task_id); /* the request goes with the handler */
        n_taken++;
        pthread_cond_broadcast(&taken_cv);
        pthread_mutex_unlock(&taken_mu);
        return TODO_OK;
    }
    if (strncmp(rq->task_id, "pool-", 5) == 0) {
        if (grpcx_call_offload(c)) { /* run again in the pool */
            atomic_fetch_add(&pool_offered, 1);
            return TODO_OK;
        }
        atomic_fetch_add(&pool_entered, 1);
        if (strcmp(rq->task_id, "pool-wait") == 0)
            for (int i = 0; i < 500 && !atomic_load(&pool_open); i++) usleep(10000);
        if (strcmp(rq->task_id, "pool-slow") == 0) usleep(200000);
    }
    if (strcmp(rq->task_id, "missing") == 0) return todo_err_set(err, TODO_ENOTFOUND, "task missing not found");
    if (strcmp(rq->task_id, "slow") == 0) {
        atomic_store(&slow_calls_started, 1);
        int now = atomic_fetch_add(&slow_now, 1) + 1;
        for (int most = atomic_load(&slow_most); now > most && !atomic_compare_exchange_weak(&slow_most, &most, now);) {
        }
        usleep(300000);
        atomic_fetch_sub(&slow_now, 1);
    }
    Todo__V1__Task *t = arena_alloc(a, sizeof *t);
    todo__v1__task__init(t);
    t->id = arena_strdup(a, rq->task_id);
    if (strcmp(rq->task_id, "whoami") == 0) {
        const char *auth = grpcx_call_metadata(c, "authorization");
        t->title = (char *)(auth != NULL ? auth : "nobody");
    }
    if (strcmp(rq->task_id, "user") == 0) t->title = (char *)(grpcx_call_user(c) ? grpcx_call_user(c) : "nobody");
    if (strcmp(rq->task_id, "peer") == 0)
        t->title = (char *)(grpcx_call_peer_identity(c) ? grpcx_call_peer_identity(c) : "anonymous");
    t->version = (int64_t)(intptr_t)grpcx_call_state(c);
    *resp = &t->base;
    return TODO_OK;
}

/* WatchUpdates, as a test stream: after_position n > 0 queues updates 1..n
 * at once (and tries one more than the buffer takes when n is
 * GRPCX_STREAM_BUFFER + 1), then the stream is held open in `held` for the
 * test to go on with; -1 refuses the stream. */
static _Atomic(grpcx_server_stream *) held; /* published with its stream (seq_cst) */
static atomic_int stream_events, over_sends; /* on_event calls; send results past the buffer */

static void count_event(void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&stream_events, 1);
}

static int watch_updates(grpcx_call *c, const ProtobufCMessage *req, grpcx_server_stream *st, todo_err *err)
{
    (void)c;
    const Todo__V1__WatchUpdatesRequest *rq = (const Todo__V1__WatchUpdatesRequest *)req;
    if (rq->after_position < 0) return todo_err_set(err, TODO_EPRECOND, "this stream is refused");
    for (int64_t i = 1; i <= rq->after_position; i++) {
        Todo__V1__Update u = TODO__V1__UPDATE__INIT;
        u.position = i;
        int rc = grpcx_server_stream_send(st, &u.base);
        if (i > GRPCX_STREAM_BUFFER) atomic_store(&over_sends, rc);
    }
    grpcx_server_stream_on_event(st, count_event, NULL);
    held = st;
    return TODO_OK;
}

static void *thread_init(void *app, int index)
{
    (void)app;
    return (void *)(intptr_t)(index + 100);
}

typedef struct fixture {
    grpcx_server *srv;
    grpcx_channel *ch;
} fixture;

static int authenticate(grpcx_call *c, todo_err *err);

/* A server with GetTask on 2 workers; auth (may be NULL) authenticates
 * callers, with 1 MiB of memory per decoded request. */
/* A server with opts and GetTask, and (when channel) a plaintext channel
 * to it. */
static int serve(void **state, const grpcx_server_opts *opts, bool channel)
{
    fixture *f = calloc(1, sizeof *f);
    todo_err err;
    static const grpcx_method methods[] = {{"GetTask", get_task}, {"WatchUpdates", NULL, watch_updates}};
    f->srv = grpcx_server_new(opts, &err);
    assert_non_null(f->srv);
    held = NULL;
    atomic_store(&stream_events, 0);
    assert_int_equal(grpcx_server_add_service(f->srv, &todo__v1__task_query_service__descriptor, methods, 2, &err), 0);
    assert_int_equal(grpcx_server_start(f->srv, "127.0.0.1:0", &err), 0);
    if (channel) {
        char target[64];
        snprintf(target, sizeof target, "127.0.0.1:%d", grpcx_server_port(f->srv));
        f->ch = grpcx_channel_new(target);
    }
    *state = f;
    return 0;
}

static int setup_with(void **state, int max_bytes, int (*auth)(grpcx_call *, todo_err *))
{
    grpcx_server_opts opts = {.threads = 2, .max_message_bytes = max_bytes, .call_memory_bytes = 1 << 20,
                              .authenticate = auth, .thread_init = thread_init, .component = "test"};
    return serve(state, &opts, true);
}

/* The authenticate hook of the guarded fixture: "Bearer good" is alice. */
static int authenticate(grpcx_call *c, todo_err *err)
{
    const char *auth = grpcx_call_metadata(c, "authorization");
    if (auth == NULL || strcmp(auth, "Bearer good") != 0) return todo_err_set(err, TODO_EUNAUTH, "no good token");
    grpcx_call_set_user(c, "alice");
    return TODO_OK;
}

static int setup_guarded(void **state) { return setup_with(state, 1 << 20, authenticate); }

/* One worker: while it runs a handler, no completion is taken. */
static int setup_one_worker(void **state)
{
    grpcx_server_opts opts = {.threads = 1, .max_message_bytes = 1 << 20, .component = "test"};
    return serve(state, &opts, true);
}

/* One worker and a blocking pool of `threads` threads whose queue takes
 * `queue` calls (0: the default). */
static int setup_pool_of(void **state, int threads, int queue)
{
    grpcx_server_opts opts = {.threads = 1, .blocking_threads = threads, .blocking_queue = queue,
                              .max_message_bytes = 1 << 20, .thread_init = thread_init, .component = "test"};
    atomic_store(&pool_entered, 0);
    atomic_store(&pool_open, 0);
    atomic_store(&pool_offered, 0);
    return serve(state, &opts, true);
}
static int setup_pool(void **state) { return setup_pool_of(state, 2, 0); }
static int setup_pool_of_one(void **state) { return setup_pool_of(state, 1, 0); }
static int setup_pool_queue_of_one(void **state) { return setup_pool_of(state, 1, 1); } /* a queue of one call */

static int setup(void **state) { return setup_with(state, 1 << 20, NULL); }
static int setup_small(void **state) { return setup_with(state, 1024, NULL); }

static int teardown(void **state)
{
    fixture *f = *state;
    grpcx_channel_free(f->ch);
    grpcx_server_shutdown(f->srv, 1000);
    grpcx_server_free(f->srv);
    free(f);
    return 0;
}

static grpc_status_code get(fixture *f, const char *id, const char *auth, int timeout_ms, Todo__V1__Task **out,
                            grpcx_result *res)
{
    Todo__V1__GetTaskRequest rq = TODO__V1__GET_TASK_REQUEST__INIT;
    rq.task_id = (char *)id;
    return grpcx_unary(f->ch, GET, &rq.base, &todo__v1__task__descriptor, auth, timeout_ms, (ProtobufCMessage **)out, res);
}

static void a_handler_reply_reaches_the_client_with_metadata(void **state)
{
    fixture *f = *state;
    Todo__V1__Task *t;
    grpcx_result res;
    /* The first call of the run may take seconds under valgrind. */
    assert_int_equal(get(f, "whoami", "Bearer abc", 60000, &t, &res), GRPC_STATUS_OK);
    assert_string_equal(t->title, "Bearer abc");
    assert_true(t->version == 100 || t->version == 101); /* per-thread state */
    protobuf_c_message_free_unpacked(&t->base, NULL);
}

static void handler_errors_become_grpc_statuses(void **state)
{
    fixture *f = *state;
    Todo__V1__Task *t;
    grpcx_result res;
    assert_int_equal(get(f, "missing", NULL, 5000, &t, &res), GRPC_STATUS_NOT_FOUND);
    assert_null(t);
    assert_string_equal(res.message, "task missing not found");
}

static void methods_without_handlers_and_unknown_methods_are_unimplemented(void **state)
{
    fixture *f = *state;
    Todo__V1__ListTasksRequest rq = TODO__V1__LIST_TASKS_REQUEST__INIT;
    ProtobufCMessage *out;
    grpcx_result res;
    assert_int_equal(grpcx_unary(f->ch, "/todo.v1.TaskQueryService/ListTasks", &rq.base,
                                 &todo__v1__list_tasks_response__descriptor, NULL, 5000, &out, &res),
                     GRPC_STATUS_UNIMPLEMENTED);
    assert_non_null(strstr(res.message, "ListTasks"));
    assert_int_equal(grpcx_unary(f->ch, "/todo.v1.Nothing/Here", &rq.base, &todo__v1__list_tasks_response__descriptor,
                                 NULL, 5000, &out, &res),
                     GRPC_STATUS_UNIMPLEMENTED);
    assert_non_null(strstr(res.message, "/todo.v1.Nothing/Here"));
}

static void undecodable_requests_are_invalid_arguments(void **state)
{
    fixture *f = *state;
    /* A Timestamp's field 1 is a varint; GetTaskRequest's field 1 is a string. */
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ProtobufCMessage *out;
    grpcx_result res;
    ts.seconds = 5;
    assert_int_equal(grpcx_unary(f->ch, GET, &ts.base, &todo__v1__task__descriptor, NULL, 5000, &out, &res),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(res.message, "GetTaskRequest"));
}

static void oversized_requests_are_refused(void **state)
{
    fixture *f = *state;
    char big[4096];
    Todo__V1__Task *t;
    grpcx_result res;
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(get(f, big, NULL, 5000, &t, &res), GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(get(f, "small", NULL, 5000, &t, &res), GRPC_STATUS_OK);
    protobuf_c_message_free_unpacked(&t->base, NULL);
}

/* The caller is authenticated before the body is read: a bad token with a
 * body that does not decode is UNAUTHENTICATED; health needs no token. */
static void callers_are_authenticated_before_decoding(void **state)
{
    fixture *f = *state;
    Todo__V1__Task *t;
    grpcx_result res;
    assert_int_equal(get(f, "user", "Bearer good", 5000, &t, &res), GRPC_STATUS_OK);
    assert_string_equal(t->title, "alice");
    protobuf_c_message_free_unpacked(&t->base, NULL);
    assert_int_equal(get(f, "user", "Bearer bad", 5000, &t, &res), GRPC_STATUS_UNAUTHENTICATED);
    assert_string_equal(res.message, "no good token");
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ts.seconds = 5;
    ProtobufCMessage *out;
    assert_int_equal(grpcx_unary(f->ch, GET, &ts.base, &todo__v1__task__descriptor, NULL, 5000, &out, &res),
                     GRPC_STATUS_UNAUTHENTICATED);
    Grpc__Health__V1__HealthCheckRequest hq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    hq.service = "";
    assert_int_equal(grpcx_unary(f->ch, "/grpc.health.v1.Health/Check", &hq.base,
                                 &grpc__health__v1__health_check_response__descriptor, NULL, 5000, &out, &res),
                     GRPC_STATUS_OK);
    protobuf_c_message_free_unpacked(out, NULL);
}

/* Bodies carried as protobuf-c unknown fields, which it packs verbatim. */
static grpc_status_code get_raw(fixture *f, ProtobufCMessageUnknownField *u, unsigned n, grpcx_result *res)
{
    Todo__V1__GetTaskRequest rq = TODO__V1__GET_TASK_REQUEST__INIT;
    rq.task_id = "";
    rq.base.n_unknown_fields = n;
    rq.base.unknown_fields = u;
    ProtobufCMessage *out;
    grpc_status_code code = grpcx_unary(f->ch, GET, &rq.base, &todo__v1__task__descriptor, "Bearer good", 5000, &out, res);
    if (out != NULL) protobuf_c_message_free_unpacked(out, NULL);
    return code;
}

/* A NUL inside a text field is refused naming the field; a body that
 * would take more than the call's memory to decode (many tiny unknown
 * fields) is RESOURCE_EXHAUSTED, and the server goes on serving. */
static void hostile_bodies_are_refused_without_harm(void **state)
{
    fixture *f = *state;
    grpcx_result res;
    uint8_t nul[] = {3, 'a', 0, 'b'}; /* an unknown field's data holds its length prefix */
    ProtobufCMessageUnknownField task_id = {.tag = 1, .wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED, .len = 4,
                                            .data = nul};
    assert_int_equal(get_raw(f, &task_id, 1, &res), GRPC_STATUS_INVALID_ARGUMENT);
    assert_string_equal(res.message, "task_id: text must be UTF-8 without NUL characters");
    enum { N = 100000 };
    ProtobufCMessageUnknownField *many = calloc(N, sizeof *many);
    uint8_t one = 1;
    for (int i = 0; i < N; i++) many[i] = (ProtobufCMessageUnknownField){15, PROTOBUF_C_WIRE_TYPE_VARINT, 1, &one};
    assert_int_equal(get_raw(f, many, N, &res), GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(res.message, "memory"));
    assert_int_equal(get_raw(f, many, 10, &res), GRPC_STATUS_OK); /* a few unknown fields are fine */
    free(many);
}

static void health_check_answers_for_the_server_and_known_services(void **state)
{
    fixture *f = *state;
    Grpc__Health__V1__HealthCheckRequest rq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *rs;
    grpcx_result res;
    const char *path = "/grpc.health.v1.Health/Check";
    const ProtobufCMessageDescriptor *d = &grpc__health__v1__health_check_response__descriptor;
    assert_int_equal(grpcx_unary(f->ch, path, &rq.base, d, NULL, 5000, (ProtobufCMessage **)&rs, &res), GRPC_STATUS_OK);
    assert_int_equal(rs->status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    protobuf_c_message_free_unpacked(&rs->base, NULL);
    rq.service = "todo.v1.TaskQueryService";
    assert_int_equal(grpcx_unary(f->ch, path, &rq.base, d, NULL, 5000, (ProtobufCMessage **)&rs, &res), GRPC_STATUS_OK);
    protobuf_c_message_free_unpacked(&rs->base, NULL);
    grpcx_server_set_serving(f->srv, false);
    assert_int_equal(grpcx_unary(f->ch, path, &rq.base, d, NULL, 5000, (ProtobufCMessage **)&rs, &res), GRPC_STATUS_OK);
    assert_int_equal(rs->status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
    protobuf_c_message_free_unpacked(&rs->base, NULL);
    rq.service = "no.Such";
    assert_int_equal(grpcx_unary(f->ch, path, &rq.base, d, NULL, 5000, (ProtobufCMessage **)&rs, &res),
                     GRPC_STATUS_NOT_FOUND);
}

/* The status Health/Check answers for service (asserting the call is OK). */
static int health(fixture *f, const char *service)
{
    Grpc__Health__V1__HealthCheckRequest rq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *rs;
    grpcx_result res;
    rq.service = (char *)service;
    assert_int_equal(grpcx_unary(f->ch, "/grpc.health.v1.Health/Check", &rq.base,
                                 &grpc__health__v1__health_check_response__descriptor, NULL, 5000,
                                 (ProtobufCMessage **)&rs, &res),
                     GRPC_STATUS_OK);
    int st = rs->status;
    protobuf_c_message_free_unpacked(&rs->base, NULL);
    return st;
}

static void health_names_the_dependency_that_is_down(void **state)
{
    fixture *f = *state;
    const int up = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    const int down = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    grpcx_server_set_health(f->srv, "postgresql", true, true);
    grpcx_server_set_health(f->srv, "kafka", false, true);
    assert_int_equal(health(f, ""), up);
    assert_int_equal(health(f, "postgresql"), up);
    /* Kafka away: the API still serves (the outbox holds the events). */
    grpcx_server_set_health(f->srv, "kafka", false, false);
    assert_int_equal(health(f, "kafka"), down);
    assert_int_equal(health(f, ""), up);
    assert_int_equal(health(f, "todo.v1.TaskQueryService"), up);
    /* The database away: nothing can be served. */
    grpcx_server_set_health(f->srv, "postgresql", true, false);
    assert_int_equal(health(f, "postgresql"), down);
    assert_int_equal(health(f, ""), down);
    assert_int_equal(health(f, "todo.v1.TaskQueryService"), down);
    grpcx_server_set_health(f->srv, "postgresql", true, true);
    assert_int_equal(health(f, ""), up);
}

static void client_deadlines_are_enforced(void **state)
{
    fixture *f = *state;
    Todo__V1__Task *t;
    grpcx_result res;
    assert_int_equal(get(f, "slow", NULL, 50, &t, &res), GRPC_STATUS_DEADLINE_EXCEEDED);
}

typedef struct slow_call {
    fixture *f;
    grpc_status_code code;
} slow_call;

static void *call_slow(void *arg)
{
    slow_call *s = arg;
    Todo__V1__Task *t = NULL;
    grpcx_result res;
    s->code = get(s->f, "slow", NULL, 60000, &t, &res);
    if (t != NULL) protobuf_c_message_free_unpacked(&t->base, NULL);
    return NULL;
}

static void shutdown_lets_in_flight_calls_finish(void **state)
{
    fixture *f = *state;
    slow_call s = {.f = f, .code = GRPC_STATUS_UNKNOWN};
    pthread_t th;
    atomic_store(&slow_calls_started, 0);
    pthread_create(&th, NULL, call_slow, &s);
    while (!atomic_load(&slow_calls_started)) usleep(10000); /* until the call is in the handler */
    grpcx_server_shutdown(f->srv, 5000);
    pthread_join(th, NULL);
    assert_int_equal(s.code, GRPC_STATUS_OK);
}

typedef struct later_call {
    fixture *f;
    const char *id;
    grpc_status_code code;
    char title[32];
    char message[512];
    int64_t version;
} later_call;

static void *call_later(void *arg)
{
    later_call *lc = arg;
    Todo__V1__Task *t = NULL;
    grpcx_result res;
    lc->code = get(lc->f, lc->id, NULL, 10000, &t, &res);
    snprintf(lc->message, sizeof lc->message, "%s", res.message);
    if (t != NULL) {
        snprintf(lc->title, sizeof lc->title, "%s", t->title);
        protobuf_c_message_free_unpacked(&t->base, NULL);
    }
    return NULL;
}

/* One worker takes two calls in turn without answering either (it is not
 * held by the first), and another thread answers both: a reply and an
 * error, each to its own caller. */
static void calls_taken_later_are_answered_from_another_thread(void **state)
{
    fixture *f = *state;
    n_taken = 0;
    later_call a = {.f = f, .id = "later-a"}, b = {.f = f, .id = "later-b"};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, call_later, &a);
    assert_true(wait_taken(1));
    pthread_create(&tb, NULL, call_later, &b);
    assert_true(wait_taken(2)); /* the one worker took the second while the first waits */
    int ia = strcmp(taken[0].id, "later-a") == 0 ? 0 : 1;
    answer(1 - ia, true);
    answer(ia, false);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(a.code, GRPC_STATUS_OK);
    assert_string_equal(a.title, "answered later");
    assert_int_equal(b.code, GRPC_STATUS_NOT_FOUND);
    assert_string_equal(b.message, "task later-b not found");
}

static void *answer_soon(void *arg)
{
    (void)arg;
    usleep(300000);
    answer(0, false);
    return NULL;
}

/* A shutdown waits for the answer of a call taken later. */
static void shutdown_waits_for_calls_taken_later(void **state)
{
    fixture *f = *state;
    n_taken = 0;
    later_call a = {.f = f, .id = "later-a"};
    pthread_t ta, tr;
    pthread_create(&ta, NULL, call_later, &a);
    assert_true(wait_taken(1));
    pthread_create(&tr, NULL, answer_soon, NULL);
    grpcx_server_shutdown(f->srv, 5000);
    pthread_join(tr, NULL);
    pthread_join(ta, NULL);
    assert_int_equal(a.code, GRPC_STATUS_OK);
    assert_string_equal(a.title, "answered later");
}

static void *call_pooled(void *arg)
{
    later_call *lc = arg;
    Todo__V1__Task *t = NULL;
    grpcx_result res;
    lc->code = get(lc->f, lc->id, NULL, 10000, &t, &res);
    if (t != NULL) {
        lc->version = t->version;
        protobuf_c_message_free_unpacked(&t->base, NULL);
    }
    return NULL;
}

/* A handler that offloads its call is run again by a thread of the pool
 * (thread_init's index after the workers'), and the one worker answers
 * other calls while that one waits there. */
static void an_offloaded_call_leaves_its_worker_free(void **state)
{
    fixture *f = *state;
    later_call w = {.f = f, .id = "pool-wait"};
    pthread_t tw;
    pthread_create(&tw, NULL, call_pooled, &w);
    wait_at_least(&pool_entered, 1);
    assert_int_equal(atomic_load(&pool_entered), 1);

    Todo__V1__Task *t = NULL;
    grpcx_result res;
    assert_int_equal(get(f, "plain", NULL, 2000, &t, &res), GRPC_STATUS_OK); /* the worker is free */
    assert_int_equal(t->version, 100);                                        /* and answered it itself */
    protobuf_c_message_free_unpacked(&t->base, NULL);
    assert_int_equal(atomic_load(&pool_entered), 1); /* the pooled call still waits */

    atomic_store(&pool_open, 1);
    pthread_join(tw, NULL);
    assert_int_equal(w.code, GRPC_STATUS_OK);
    assert_true(w.version == 101 || w.version == 102); /* a pool thread: index 1 or 2 (version: thread_init's) */
}

/* Calls queued for the pool when the server shuts down are all run and
 * answered: three calls of 200 ms on a pool of one. */
static void shutdown_runs_calls_queued_for_the_pool(void **state)
{
    fixture *f = *state;
    later_call c[3] = {{.f = f, .id = "pool-slow"}, {.f = f, .id = "pool-slow"}, {.f = f, .id = "pool-slow"}};
    pthread_t th[3];
    for (int i = 0; i < 3; i++) pthread_create(&th[i], NULL, call_pooled, &c[i]);
    wait_at_least(&pool_offered, 3);
    assert_int_equal(atomic_load(&pool_offered), 3); /* all three queued (or run) */
    grpcx_server_shutdown(f->srv, 5000);
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(c[i].code, GRPC_STATUS_OK);
    }
    assert_int_equal(atomic_load(&pool_entered), 3);
}

/* A call that finds the pool's queue full is run by its worker: the pool
 * thread waits with one call, one more is queued, and the third waits on
 * the worker; all three are answered. */
static void a_full_pool_queue_leaves_the_call_on_its_worker(void **state)
{
    fixture *f = *state;
    later_call c[3] = {{.f = f, .id = "pool-wait"}, {.f = f, .id = "pool-wait"}, {.f = f, .id = "pool-wait"}};
    pthread_t th[3];
    pthread_create(&th[0], NULL, call_pooled, &c[0]);
    wait_at_least(&pool_entered, 1);
    assert_int_equal(atomic_load(&pool_entered), 1); /* the pool thread waits */
    pthread_create(&th[1], NULL, call_pooled, &c[1]);
    wait_at_least(&pool_offered, 2);
    assert_int_equal(atomic_load(&pool_offered), 2); /* queued */
    pthread_create(&th[2], NULL, call_pooled, &c[2]);
    wait_at_least(&pool_entered, 2);
    assert_int_equal(atomic_load(&pool_entered), 2); /* the worker runs the third itself */
    assert_int_equal(atomic_load(&pool_offered), 2);
    atomic_store(&pool_open, 1);
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(c[i].code, GRPC_STATUS_OK);
    }
    assert_int_equal(c[0].version, 101);
    assert_int_equal(c[1].version, 101);
    assert_int_equal(c[2].version, 100);
}

static void *open_pool_soon(void *arg)
{
    (void)arg;
    usleep(1000000);
    atomic_store(&pool_open, 1);
    return NULL;
}

/* Once a shutdown's grace period is over, the calls still queued for the
 * pool are answered without being run: one call waits in the pool of one,
 * two more are queued, and a shutdown with 100 ms of grace runs neither. */
static void shutdown_past_its_grace_runs_no_queued_call(void **state)
{
    fixture *f = *state;
    later_call c[3] = {{.f = f, .id = "pool-wait"}, {.f = f, .id = "pool-slow"}, {.f = f, .id = "pool-slow"}};
    pthread_t th[3], opener;
    pthread_create(&th[0], NULL, call_pooled, &c[0]);
    wait_at_least(&pool_entered, 1);
    assert_int_equal(atomic_load(&pool_entered), 1);
    for (int i = 1; i < 3; i++) pthread_create(&th[i], NULL, call_pooled, &c[i]);
    wait_at_least(&pool_offered, 3);
    assert_int_equal(atomic_load(&pool_offered), 3);
    pthread_create(&opener, NULL, open_pool_soon, NULL);
    grpcx_server_shutdown(f->srv, 100);
    pthread_join(opener, NULL);
    for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&pool_entered), 1); /* the queued two never ran */
    assert_int_not_equal(c[1].code, GRPC_STATUS_OK);
    assert_int_not_equal(c[2].code, GRPC_STATUS_OK);
}

/* Without a pool, a handler that would offload goes on on its worker. */
static void without_a_pool_an_offloading_handler_runs_on_its_worker(void **state)
{
    fixture *f = *state;
    atomic_store(&pool_entered, 0);
    Todo__V1__Task *t = NULL;
    grpcx_result res;
    assert_int_equal(get(f, "pool-x", NULL, 2000, &t, &res), GRPC_STATUS_OK);
    assert_true(t->version == 100 || t->version == 101); /* one of the two workers */
    protobuf_c_message_free_unpacked(&t->base, NULL);
    assert_int_equal(atomic_load(&pool_entered), 1);
}

/* The next status a Health/Watch stream sends, waiting up to wait_ms:
 * -1 when none came. */
static int next_status(grpcx_stream *st, int wait_ms)
{
    ProtobufCMessage *m;
    grpcx_result res;
    int got = grpcx_stream_next(st, &grpc__health__v1__health_check_response__descriptor, wait_ms, &m, &res);
    if (got <= 0) return -1;
    int status = ((Grpc__Health__V1__HealthCheckResponse *)m)->status;
    protobuf_c_message_free_unpacked(m, NULL);
    return status;
}

static grpcx_stream *watch(fixture *f, const char *service)
{
    Grpc__Health__V1__HealthCheckRequest rq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    grpcx_result res;
    rq.service = (char *)service;
    grpcx_stream *st = grpcx_stream_open(f->ch, "/grpc.health.v1.Health/Watch", &rq.base, NULL, 0, &res);
    assert_non_null(st);
    return st;
}

/* Watch sends the status at once, then a message on each change that
 * matters to the service watched (none for a change that does not). */
static void health_watch_streams_every_change(void **state)
{
    fixture *f = *state;
    const int up = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    const int down = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    const int unknown = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    grpcx_server_set_health(f->srv, "postgresql", true, true);
    grpcx_server_set_health(f->srv, "kafka", false, true);
    grpcx_stream *all = watch(f, ""), *kafka = watch(f, "kafka"), *nope = watch(f, "no.such.Service");
    assert_int_equal(next_status(all, 5000), up);
    assert_int_equal(next_status(kafka, 5000), up);
    assert_int_equal(next_status(nope, 5000), unknown);

    grpcx_server_set_health(f->srv, "kafka", false, false); /* not required: the server stays SERVING */
    assert_int_equal(next_status(kafka, 5000), down);
    grpcx_server_set_health(f->srv, "postgresql", true, false);
    assert_int_equal(next_status(all, 5000), down); /* the first message after SERVING: kafka's change sent none */
    grpcx_server_set_health(f->srv, "postgresql", true, false); /* no change, no message */
    grpcx_server_set_health(f->srv, "postgresql", true, true);
    assert_int_equal(next_status(all, 5000), up);
    grpcx_server_set_serving(f->srv, false);
    assert_int_equal(next_status(all, 5000), down);
    grpcx_server_set_serving(f->srv, true);
    assert_int_equal(next_status(all, 5000), up);
    assert_int_equal(next_status(kafka, 200), -1); /* kafka is still down: nothing new */
    assert_int_equal(next_status(nope, 200), -1);

    /* Clients that leave: the server forgets their streams (the leak
     * checkers see the rest) and serves on. */
    grpcx_stream_close(kafka);
    grpcx_stream_close(nope);
    grpcx_server_set_health(f->srv, "kafka", false, true);
    assert_int_equal(health(f, "kafka"), up);
    grpcx_stream_close(all);
}

/* At shutdown a watcher hears NOT_SERVING, then its stream ends with
 * UNAVAILABLE: the server does not wait out its grace period for it. */
static void health_watch_ends_at_shutdown(void **state)
{
    fixture *f = *state;
    grpcx_stream *st = watch(f, "");
    assert_int_equal(next_status(st, 5000), GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
    grpcx_server_shutdown(f->srv, 30000);
    assert_int_equal(next_status(st, 5000), GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
    ProtobufCMessage *m;
    grpcx_result res;
    assert_int_equal(grpcx_stream_next(st, &grpc__health__v1__health_check_response__descriptor, 5000, &m, &res), 0);
    assert_int_equal(res.code, GRPC_STATUS_UNAVAILABLE);
    assert_string_equal(res.message, "the server is shutting down");
    grpcx_stream_close(st);
}

/* ---- application server streams ---- */

static grpcx_stream *open_updates(fixture *f, int64_t n)
{
    Todo__V1__WatchUpdatesRequest rq = TODO__V1__WATCH_UPDATES_REQUEST__INIT;
    grpcx_result res;
    rq.after_position = n;
    grpcx_stream *st = grpcx_stream_open(f->ch, "/todo.v1.TaskQueryService/WatchUpdates", &rq.base, NULL, 0, &res);
    assert_non_null(st);
    return st;
}

/* The next update's position, 0 when the stream ended (res), -1 when
 * nothing came within 5 s. */
static int64_t next_position(grpcx_stream *st, grpcx_result *res)
{
    ProtobufCMessage *m;
    int got = grpcx_stream_next(st, &todo__v1__update__descriptor, 5000, &m, res);
    if (got <= 0) return got;
    int64_t pos = ((Todo__V1__Update *)m)->position;
    protobuf_c_message_free_unpacked(m, NULL);
    return pos;
}

/* Waits (5 s at most) for the handler to hold its stream. */
static void wait_held(void)
{
    for (int i = 0; i < 500 && held == NULL; i++) usleep(10000);
    assert_non_null(held);
}

/* Messages arrive in the order sent, then the status the handler ends
 * with, after every queued message. */
static void a_server_stream_sends_in_order_then_its_status(void **state)
{
    fixture *f = *state;
    grpcx_result res;
    grpcx_stream *st = open_updates(f, 3);
    wait_held();
    grpcx_server_stream_end(held, TODO_ERANGE, "position 3 was the last");
    assert_int_equal(grpcx_server_stream_send(held, &(Todo__V1__Update)TODO__V1__UPDATE__INIT.base), TODO_EUNAVAIL);
    grpcx_server_stream_release(held);
    for (int64_t want = 1; want <= 3; want++) assert_int_equal(next_position(st, &res), want);
    assert_int_equal(next_position(st, &res), 0);
    assert_int_equal(res.code, GRPC_STATUS_OUT_OF_RANGE);
    assert_string_equal(res.message, "position 3 was the last");
    grpcx_stream_close(st);
}

/* A handler's error is the stream's status; nothing is held. */
static void a_refused_server_stream_ends_with_the_handlers_status(void **state)
{
    fixture *f = *state;
    grpcx_result res;
    grpcx_stream *st = open_updates(f, -1);
    assert_int_equal(next_position(st, &res), 0);
    assert_int_equal(res.code, GRPC_STATUS_FAILED_PRECONDITION);
    assert_string_equal(res.message, "this stream is refused");
    assert_null(held);
    grpcx_stream_close(st);
}

/* The buffer takes GRPCX_STREAM_BUFFER messages: one more is refused
 * (TODO_ETOOBIG) while none can go out (the one worker is in the handler);
 * the client then gets all that were taken, and the handler hears of each
 * message sent. */
static void a_full_server_stream_buffer_refuses_more(void **state)
{
    fixture *f = *state;
    grpcx_result res;
    atomic_store(&over_sends, 1);
    grpcx_stream *st = open_updates(f, GRPCX_STREAM_BUFFER + 1);
    wait_held();
    assert_int_equal(atomic_load(&over_sends), TODO_ETOOBIG);
    for (int64_t want = 1; want <= GRPCX_STREAM_BUFFER; want++) assert_int_equal(next_position(st, &res), want);
    for (int i = 0; i < 500 && grpcx_server_stream_pending(held) != 0; i++) usleep(10000);
    assert_int_equal(grpcx_server_stream_pending(held), 0);
    assert_true(atomic_load(&stream_events) > 0);
    grpcx_server_stream_end(held, TODO_OK, "");
    grpcx_server_stream_release(held);
    assert_int_equal(next_position(st, &res), 0);
    assert_int_equal(res.code, GRPC_STATUS_OK);
    grpcx_stream_close(st);
}

/* An abort ends the stream at once with its status, whatever is queued. */
static void an_aborted_server_stream_ends_at_once(void **state)
{
    fixture *f = *state;
    grpcx_result res;
    grpcx_stream *st = open_updates(f, 3);
    wait_held();
    grpcx_server_stream_abort(held, TODO_ETOOBIG, "the client reads nothing");
    assert_int_equal(grpcx_server_stream_pending(held), -1);
    Todo__V1__Update u = TODO__V1__UPDATE__INIT;
    assert_int_equal(grpcx_server_stream_send(held, &u.base), TODO_EUNAVAIL);
    grpcx_server_stream_end(held, TODO_OK, "changes nothing");
    grpcx_server_stream_release(held);
    int64_t pos;
    while ((pos = next_position(st, &res)) > 0) { /* what went out before the abort, if anything */
    }
    assert_int_equal(pos, 0);
    assert_int_equal(res.code, GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_string_equal(res.message, "the client reads nothing");
    grpcx_stream_close(st);
}

/* A client that leaves: the handler is told, and sends are refused. */
static void a_client_leaving_a_server_stream_is_told_to_its_handler(void **state)
{
    fixture *f = *state;
    grpcx_result res;
    grpcx_stream *st = open_updates(f, 1);
    wait_held();
    assert_int_equal(next_position(st, &res), 1);
    int before = atomic_load(&stream_events);
    grpcx_stream_close(st);
    for (int i = 0; i < 500 && grpcx_server_stream_pending(held) >= 0; i++) usleep(10000);
    assert_int_equal(grpcx_server_stream_pending(held), -1);
    assert_true(atomic_load(&stream_events) > before);
    Todo__V1__Update u = TODO__V1__UPDATE__INIT;
    assert_int_equal(grpcx_server_stream_send(held, &u.base), TODO_EUNAVAIL);
    grpcx_server_stream_release(held);
}

/* At shutdown an open stream sends what it queued, then ends with
 * UNAVAILABLE; the handler lets go of it afterwards. */
static void server_streams_end_at_shutdown(void **state)
{
    fixture *f = *state;
    grpcx_result res;
    grpcx_stream *st = open_updates(f, 2);
    wait_held();
    grpcx_server_shutdown(f->srv, 30000);
    assert_int_equal(next_position(st, &res), 1);
    assert_int_equal(next_position(st, &res), 2);
    assert_int_equal(next_position(st, &res), 0);
    assert_int_equal(res.code, GRPC_STATUS_UNAVAILABLE);
    assert_string_equal(res.message, "the server is shutting down");
    assert_int_equal(grpcx_server_stream_pending(held), -1);
    grpcx_server_stream_release(held);
    grpcx_stream_close(st);
}

/* A server that takes one call at a time per connection (max_streams 1):
 * three concurrent calls on one channel all succeed, one after the other. */
static int setup_one_stream(void **state)
{
    grpcx_server_opts opts = {.threads = 4, .max_message_bytes = 1 << 20, .thread_init = thread_init,
                              .component = "test", .max_streams = 1, .max_connection_idle_ms = 60000,
                              .max_connection_age_ms = 600000, .max_connection_age_grace_ms = 10000,
                              .keepalive_ms = 60000, .keepalive_timeout_ms = 20000, .memory_bytes = 256 << 20};
    return serve(state, &opts, true);
}

static void one_connection_gets_at_most_its_streams(void **state)
{
    fixture *f = *state;
    slow_call s[3];
    pthread_t th[3];
    atomic_store(&slow_most, 0);
    for (int i = 0; i < 3; i++) {
        s[i] = (slow_call){.f = f, .code = GRPC_STATUS_UNKNOWN};
        pthread_create(&th[i], NULL, call_slow, &s[i]);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(s[i].code, GRPC_STATUS_OK);
    }
    assert_int_equal(atomic_load(&slow_most), 1); /* 4 workers, yet never two of this connection's calls at once */
}

/* ---- TLS, with certificates made for the run (scripts/make-certs.sh) ---- */

static char certs[200];

static const char *cert(const char *name)
{
    static char paths[8][320];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 320, "%s/%.100s", certs, name);
    return p;
}

/* A TLS server (mutual when client_ca) with GetTask. */
static int setup_tls_with(void **state, const char *client_ca)
{
    grpcx_server_opts opts = {.threads = 2, .max_message_bytes = 1 << 20, .thread_init = thread_init,
                              .component = "test",
                              .tls = {cert("server.pem"), cert("server.key"), client_ca ? cert(client_ca) : NULL}};
    return serve(state, &opts, false);
}

static int setup_tls(void **state) { return setup_tls_with(state, NULL); }
static int setup_mtls(void **state) { return setup_tls_with(state, "ca.pem"); }

/* GetTask "peer" over a channel with tls (NULL: plaintext): the status,
 * and the identity the server saw in *who. */
static grpc_status_code tls_get(fixture *f, const grpcx_tls_client *tls, char *who, size_t cap)
{
    char target[64];
    todo_err err;
    snprintf(target, sizeof target, "127.0.0.1:%d", grpcx_server_port(f->srv));
    grpcx_channel *ch = grpcx_channel_open(target, tls, &err);
    assert_non_null(ch);
    Todo__V1__GetTaskRequest rq = TODO__V1__GET_TASK_REQUEST__INIT;
    rq.task_id = "peer";
    Todo__V1__Task *t = NULL;
    grpcx_result res;
    grpc_status_code code = grpcx_unary(ch, GET, &rq.base, &todo__v1__task__descriptor, NULL, 60000,
                                        (ProtobufCMessage **)&t, &res);
    if (who != NULL) snprintf(who, cap, "%.200s", t != NULL ? t->title : res.message);
    if (t != NULL) protobuf_c_message_free_unpacked(&t->base, NULL);
    grpcx_channel_free(ch);
    return code;
}

/* A TLS server answers a client that trusts its CA; a plaintext client and
 * a client trusting another CA get no call through. */
static void tls_calls_need_the_servers_ca(void **state)
{
    fixture *f = *state;
    char who[256];
    grpcx_tls_client good = {.ca_file = cert("ca.pem")};
    assert_int_equal(tls_get(f, &good, who, sizeof who), GRPC_STATUS_OK);
    assert_string_equal(who, "anonymous"); /* no client certificate asked for */
    grpcx_tls_client named = {.ca_file = cert("ca.pem"), .server_name = "localhost"};
    assert_int_equal(tls_get(f, &named, NULL, 0), GRPC_STATUS_OK);
    assert_int_equal(tls_get(f, NULL, NULL, 0), GRPC_STATUS_UNAVAILABLE);
    grpcx_tls_client wrong = {.ca_file = cert("other-ca.pem")};
    assert_int_equal(tls_get(f, &wrong, NULL, 0), GRPC_STATUS_UNAVAILABLE);
    grpcx_tls_client misnamed = {.ca_file = cert("ca.pem"), .server_name = "todo.example.com"};
    assert_int_equal(tls_get(f, &misnamed, NULL, 0), GRPC_STATUS_UNAVAILABLE);
}

/* Mutual TLS: a client certificate of the server's client CA gets through
 * and names the caller; none, or one of another CA, does not. */
static void mutual_tls_needs_a_client_certificate_of_the_ca(void **state)
{
    fixture *f = *state;
    char who[256];
    grpcx_tls_client saga = {.ca_file = cert("ca.pem"), .cert_file = cert("saga.pem"), .key_file = cert("saga.key")};
    assert_int_equal(tls_get(f, &saga, who, sizeof who), GRPC_STATUS_OK);
    assert_string_equal(who, "todo-saga");
    grpcx_tls_client none = {.ca_file = cert("ca.pem")};
    assert_int_equal(tls_get(f, &none, NULL, 0), GRPC_STATUS_UNAVAILABLE);
    grpcx_tls_client rogue = {.ca_file = cert("ca.pem"), .cert_file = cert("rogue.pem"), .key_file = cert("rogue.key")};
    assert_int_equal(tls_get(f, &rogue, NULL, 0), GRPC_STATUS_UNAVAILABLE);
}

/* Files that are missing or hold no PEM stop the start, naming the file. */
static void unreadable_tls_files_are_named(void **state)
{
    (void)state;
    todo_err err;
    grpcx_server_opts opts = {.threads = 1, .max_message_bytes = 1 << 20, .component = "test",
                              .tls = {cert("server.pem"), cert("missing.key"), NULL}};
    grpcx_server *srv = grpcx_server_new(&opts, &err);
    assert_non_null(srv);
    assert_int_equal(grpcx_server_start(srv, "127.0.0.1:0", &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "missing.key"));
    grpcx_server_free(srv);
    opts.tls = (grpcx_tls_server){cert("server.pem"), NULL, NULL};
    srv = grpcx_server_new(&opts, &err);
    assert_int_equal(grpcx_server_start(srv, "127.0.0.1:0", &err), TODO_EINVAL);
    grpcx_server_free(srv);
    grpcx_tls_client c = {.ca_file = cert("ca.srl")};
    assert_null(grpcx_channel_open("127.0.0.1:1", &c, &err));
    assert_non_null(strstr(err.msg, "no PEM"));
    c = (grpcx_tls_client){.ca_file = cert("ca.pem"), .cert_file = cert("saga.pem")};
    assert_null(grpcx_channel_open("127.0.0.1:1", &c, &err));
}

static void status_mapping_covers_every_todo_status(void **state)
{
    (void)state;
    assert_int_equal(grpcx_status_of(TODO_OK), GRPC_STATUS_OK);
    assert_int_equal(grpcx_status_of(TODO_EINVAL), GRPC_STATUS_INVALID_ARGUMENT);
    assert_int_equal(grpcx_status_of(TODO_ENOTFOUND), GRPC_STATUS_NOT_FOUND);
    assert_int_equal(grpcx_status_of(TODO_ECONFLICT), GRPC_STATUS_ABORTED);
    assert_int_equal(grpcx_status_of(TODO_EUNAVAIL), GRPC_STATUS_UNAVAILABLE);
    assert_int_equal(grpcx_status_of(TODO_EINTERNAL), GRPC_STATUS_INTERNAL);
    assert_int_equal(grpcx_status_of(TODO_EUNAUTH), GRPC_STATUS_UNAUTHENTICATED);
    assert_int_equal(grpcx_status_of(TODO_EPRECOND), GRPC_STATUS_FAILED_PRECONDITION);
    assert_int_equal(grpcx_status_of(TODO_EEXISTS), GRPC_STATUS_ALREADY_EXISTS);
    assert_int_equal(grpcx_status_of(TODO_EUNIMPL), GRPC_STATUS_UNIMPLEMENTED);
    assert_int_equal(grpcx_status_of(TODO_EDEADLINE), GRPC_STATUS_DEADLINE_EXCEEDED);
    assert_int_equal(grpcx_status_of(TODO_EDENIED), GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(grpcx_status_of(TODO_ETOOBIG), GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(grpcx_status_of(TODO_ELOCKED), GRPC_STATUS_ABORTED);
    assert_int_equal(grpcx_status_of(TODO_ERANGE), GRPC_STATUS_OUT_OF_RANGE);
    assert_int_equal(grpcx_status_of(-99), GRPC_STATUS_INTERNAL);
    assert_string_equal(grpcx_code_name(GRPC_STATUS_UNAUTHENTICATED), "UNAUTHENTICATED");
    assert_string_equal(grpcx_code_name((grpc_status_code)99), "UNKNOWN");
}

static void *thread_init_b(void *app, int index)
{
    (void)app;
    return (void *)(intptr_t)(index + 200);
}

/* GetTask on ch: which server answered (1: the fixture's, 2: the other),
 * 0 on an error (its status in *code). */
static int which_server(grpcx_channel *ch, grpc_status_code *code)
{
    Todo__V1__GetTaskRequest rq = TODO__V1__GET_TASK_REQUEST__INIT;
    Todo__V1__Task *t = NULL;
    grpcx_result res;
    rq.task_id = "x";
    *code = grpcx_unary(ch, GET, &rq.base, &todo__v1__task__descriptor, NULL, 2000, (ProtobufCMessage **)&t, &res);
    if (*code != GRPC_STATUS_OK) return 0;
    int which = t->version >= 200 ? 2 : 1;
    protobuf_c_message_free_unpacked(&t->base, NULL);
    return which;
}

static void a_list_of_instances_is_served_round_robin_and_a_stopped_one_is_skipped(void **state)
{
    fixture *f = *state;
    todo_err err;
    static const grpcx_method methods[] = {{"GetTask", get_task}};
    grpcx_server_opts ob = {.threads = 2, .max_message_bytes = 1 << 20, .call_memory_bytes = 1 << 20,
                            .thread_init = thread_init_b, .component = "test"};
    grpcx_server *b = grpcx_server_new(&ob, &err);
    assert_non_null(b);
    assert_int_equal(grpcx_server_add_service(b, &todo__v1__task_query_service__descriptor, methods, 1, &err), 0);
    assert_int_equal(grpcx_server_start(b, "127.0.0.1:0", &err), 0);
    char list[96];
    snprintf(list, sizeof list, "127.0.0.1:%d,127.0.0.1:%d", grpcx_server_port(f->srv), grpcx_server_port(b));
    grpcx_channel *ch = grpcx_channel_new(list);
    assert_non_null(ch);
    int seen[3] = {0};
    grpc_status_code code;
    for (int i = 0; i < 20; i++) seen[which_server(ch, &code)]++;
    assert_int_equal(seen[0], 0);
    assert_true(seen[1] >= 5 && seen[2] >= 5); /* both serve */
    /* One stops: a call may fail UNAVAILABLE while the channel learns it;
     * then every call goes to the other. */
    grpcx_server_shutdown(b, 1000);
    grpcx_server_free(b);
    int failed = 0, last_ok = 0;
    for (int i = 0; i < 50 && last_ok < 10; i++) {
        int w = which_server(ch, &code);
        if (w == 0) {
            assert_int_equal(code, GRPC_STATUS_UNAVAILABLE);
            failed++;
            last_ok = 0;
        } else {
            assert_int_equal(w, 1);
            last_ok++;
        }
    }
    assert_true(failed <= 5);
    assert_int_equal(last_ok, 10);
    grpcx_channel_free(ch);

    /* A list takes IP literals of one family, naming the entry that is not. */
    char out[256];
    bool balanced;
    assert_int_equal(grpcx_target("127.0.0.1:1,db.example:2", out, sizeof out, &balanced, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "\"db.example:2\" is not an IP address"));
    assert_int_equal(grpcx_target("127.0.0.1:1,[::1]:2", out, sizeof out, &balanced, &err), TODO_EINVAL);
    assert_int_equal(grpcx_target("[::1]:1,[::1]:2", out, sizeof out, &balanced, &err), TODO_OK);
    assert_string_equal(out, "ipv6:[::1]:1,[::1]:2");
    assert_true(balanced);
    assert_int_equal(grpcx_target("127.0.0.1:1", out, sizeof out, &balanced, &err), TODO_OK);
    assert_false(balanced);
    assert_int_equal(grpcx_target("dns:///todo.internal:50051", out, sizeof out, &balanced, &err), TODO_OK);
    assert_true(balanced);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_handler_reply_reaches_the_client_with_metadata, setup, teardown),
        cmocka_unit_test_setup_teardown(handler_errors_become_grpc_statuses, setup, teardown),
        cmocka_unit_test_setup_teardown(methods_without_handlers_and_unknown_methods_are_unimplemented, setup, teardown),
        cmocka_unit_test_setup_teardown(undecodable_requests_are_invalid_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(oversized_requests_are_refused, setup_small, teardown),
        cmocka_unit_test_setup_teardown(health_check_answers_for_the_server_and_known_services, setup, teardown),
        cmocka_unit_test_setup_teardown(health_names_the_dependency_that_is_down, setup, teardown),
        cmocka_unit_test_setup_teardown(health_watch_streams_every_change, setup, teardown),
        cmocka_unit_test_setup_teardown(health_watch_ends_at_shutdown, setup, teardown),
        cmocka_unit_test_setup_teardown(a_server_stream_sends_in_order_then_its_status, setup, teardown),
        cmocka_unit_test_setup_teardown(a_refused_server_stream_ends_with_the_handlers_status, setup, teardown),
        cmocka_unit_test_setup_teardown(a_full_server_stream_buffer_refuses_more, setup_one_worker, teardown),
        cmocka_unit_test_setup_teardown(a_client_leaving_a_server_stream_is_told_to_its_handler, setup, teardown),
        cmocka_unit_test_setup_teardown(an_aborted_server_stream_ends_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(server_streams_end_at_shutdown, setup, teardown),
        cmocka_unit_test_setup_teardown(callers_are_authenticated_before_decoding, setup_guarded, teardown),
        cmocka_unit_test_setup_teardown(hostile_bodies_are_refused_without_harm, setup_guarded, teardown),
        cmocka_unit_test_setup_teardown(client_deadlines_are_enforced, setup, teardown),
        cmocka_unit_test_setup_teardown(shutdown_lets_in_flight_calls_finish, setup, teardown),
        cmocka_unit_test_setup_teardown(calls_taken_later_are_answered_from_another_thread, setup_one_worker, teardown),
        cmocka_unit_test_setup_teardown(shutdown_waits_for_calls_taken_later, setup, teardown),
        cmocka_unit_test_setup_teardown(an_offloaded_call_leaves_its_worker_free, setup_pool, teardown),
        cmocka_unit_test_setup_teardown(shutdown_runs_calls_queued_for_the_pool, setup_pool_of_one, teardown),
        cmocka_unit_test_setup_teardown(without_a_pool_an_offloading_handler_runs_on_its_worker, setup, teardown),
        cmocka_unit_test_setup_teardown(a_full_pool_queue_leaves_the_call_on_its_worker, setup_pool_queue_of_one,
                                        teardown),
        cmocka_unit_test_setup_teardown(shutdown_past_its_grace_runs_no_queued_call, setup_pool_of_one, teardown),
        cmocka_unit_test_setup_teardown(one_connection_gets_at_most_its_streams, setup_one_stream, teardown),
        cmocka_unit_test_setup_teardown(tls_calls_need_the_servers_ca, setup_tls, teardown),
        cmocka_unit_test_setup_teardown(mutual_tls_needs_a_client_certificate_of_the_ca, setup_mtls, teardown),
        cmocka_unit_test_setup_teardown(a_list_of_instances_is_served_round_robin_and_a_stopped_one_is_skipped, setup,
                                        teardown),
        cmocka_unit_test(unreadable_tls_files_are_named),
        cmocka_unit_test(status_mapping_covers_every_todo_status),
    };
    snprintf(certs, sizeof certs, "%.180s/grpcx-certs", TEST_TMP);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash '%s/scripts/make-certs.sh' '%s' >/dev/null", TODO_SOURCE_DIR, certs);
    if (system(cmd) != 0) {
        fprintf(stderr, "could not make the test certificates (%s)\n", cmd);
        return 1;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
