/*
 * todo-loadgen: a closed-loop gRPC load generator on the C core, for
 * bench/run.sh. N client threads, each with its own channel and user, call
 * one RPC back to back for a fixed time and record every latency; the
 * summary is one JSON line on stdout. Clients set up first (get: a task;
 * list: 1,000 tasks), then all measure in the same window.
 *
 *   todo-loadgen --rpc create|get|list|freshness --clients N --seconds S
 *                [--user-prefix P] [--rate R]
 *
 * create     CreateTask
 * get        GetTask of a task the client created first
 * list       ListTasks (page of 20) of a user the client first gave 1,000 tasks
 * complete   create a task, schedule a reminder on it, complete it (each
 *            completion starts a task-completion saga in todo-saga)
 * remind     schedule reminders due at --at (epoch seconds), ten per task;
 *            with --channel email, on the EMAIL channel of users who set an
 *            address first (<user>@bench.test); --max N: N calls per client at most
 * freshness  one client creates a task and polls ListTasks (newest first, no
 *            token) until it is listed, measuring the time from the
 *            CreateTask reply; the other N-1 clients run CreateTask load
 *            meanwhile, together R commands/s when --rate is given (paced),
 *            else as fast as they can
 * ryw        read-your-writes: every client, all as the same user (as one
 *            chatbot user's concurrent requests would), creates a task and
 *            reads it back with GetTask holding the reply's consistency
 *            token, measuring the time from the CreateTask reply to the
 *            read's answer; a read that does not return the task counts as
 *            an error
 *
 * Settings (addresses, the JWT secret) come from the environment like
 * todoctl's. Exit status 0 when every call succeeded.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "auth.h"
#include "config.h"
#include "grpcx_client.h"
#include "todo/v1/command.pb-c.h"
#include "todo/v1/query.pb-c.h"

#define MAX_CLIENTS 256
#define LIST_TASKS 1000

typedef enum mode { M_CREATE, M_GET, M_LIST, M_FRESHNESS, M_COMPLETE, M_REMIND, M_RYW } mode;

typedef struct client {
    int index;
    mode m;
    char user[64];
    char auth[1024];
    grpcx_channel *cmd, *qry;
    double *lat;            /* milliseconds */
    size_t n, cap;
    long errors;
    char task_id[40];
} client;

static todo_config cfg;
static double seconds_each; /* the measured window of every client, after its setup */
static const char *prefix = "bench";
static pthread_barrier_t ready; /* every client's setup done: measure together */
static double rate;
static long remind_at;      /* remind: when the reminders are due */         /* freshness: background CreateTasks per second, 0 = unpaced */
static int n_clients;
static bool email;          /* remind: the EMAIL channel, the users' addresses set first */
static long max_calls;      /* calls per client at most (0: as many as the time allows) */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void record(client *c, double ms)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 4096;
        c->lat = realloc(c->lat, c->cap * sizeof *c->lat);
        if (c->lat == NULL) abort();
    }
    c->lat[c->n++] = ms;
}

static int create_tok(client *c, char id_out[40], char *token_out, size_t token_cap)
{
    Todo__V1__CreateTaskRequest rq = TODO__V1__CREATE_TASK_REQUEST__INIT;
    Todo__V1__CommandReply *rp = NULL;
    grpcx_result res;
    rq.title = "benchmark task";
    rq.priority = TODO__V1__PRIORITY__PRIORITY_MEDIUM;
    if (grpcx_unary(c->cmd, "/todo.v1.TaskCommandService/CreateTask", &rq.base, &todo__v1__command_reply__descriptor,
                    c->auth, 10000, (ProtobufCMessage **)&rp, &res) != GRPC_STATUS_OK)
        return -1;
    if (id_out != NULL) snprintf(id_out, 40, "%s", rp->id);
    if (token_out != NULL) snprintf(token_out, token_cap, "%s", rp->consistency_token);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    return 0;
}

static int create(client *c, char id_out[40]) { return create_tok(c, id_out, NULL, 0); }

/* GetTask of id holding token: 0 when the task came back. */
static int get_with_token(client *c, const char *id, const char *token)
{
    Todo__V1__GetTaskRequest rq = TODO__V1__GET_TASK_REQUEST__INIT;
    Todo__V1__Task *t = NULL;
    grpcx_result res;
    rq.task_id = (char *)id;
    rq.consistency_token = (char *)token;
    if (grpcx_unary(c->qry, "/todo.v1.TaskQueryService/GetTask", &rq.base, &todo__v1__task__descriptor, c->auth, 10000,
                    (ProtobufCMessage **)&t, &res) != GRPC_STATUS_OK)
        return -1;
    protobuf_c_message_free_unpacked(&t->base, NULL);
    return 0;
}

static int get(client *c, const char *id)
{
    Todo__V1__GetTaskRequest rq = TODO__V1__GET_TASK_REQUEST__INIT;
    Todo__V1__Task *t = NULL;
    grpcx_result res;
    rq.task_id = (char *)id;
    if (grpcx_unary(c->qry, "/todo.v1.TaskQueryService/GetTask", &rq.base, &todo__v1__task__descriptor, c->auth, 10000,
                    (ProtobufCMessage **)&t, &res) != GRPC_STATUS_OK)
        return -1;
    protobuf_c_message_free_unpacked(&t->base, NULL);
    return 0;
}

static int command(client *c, const char *rpc, const ProtobufCMessage *rq)
{
    char path[96];
    grpcx_result res;
    ProtobufCMessage *rp = NULL;
    snprintf(path, sizeof path, "/todo.v1.TaskCommandService/%s", rpc);
    if (grpcx_unary(c->cmd, path, rq, &todo__v1__command_reply__descriptor, c->auth, 10000, &rp, &res) != GRPC_STATUS_OK)
        return -1;
    protobuf_c_message_free_unpacked(rp, NULL);
    return 0;
}

static int schedule(client *c, const char *task, long at)
{
    Todo__V1__ScheduleReminderRequest rq = TODO__V1__SCHEDULE_REMINDER_REQUEST__INIT;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ts.seconds = at;
    rq.task_id = (char *)task;
    rq.remind_at = &ts;
    rq.channel = email ? TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_EMAIL : TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_PUSH;
    return command(c, "ScheduleReminder", &rq.base);
}

/* The client's user gets an email address (remind --channel email). */
static int set_address(client *c)
{
    Todo__V1__SetNotificationPreferencesRequest rq = TODO__V1__SET_NOTIFICATION_PREFERENCES_REQUEST__INIT;
    char address[96];
    snprintf(address, sizeof address, "%s@bench.test", c->user);
    rq.email = address;
    return command(c, "SetNotificationPreferences", &rq.base);
}

/* complete: a task with a reminder, completed. */
static int complete_one(client *c)
{
    char id[40];
    if (create(c, id) != 0 || schedule(c, id, (long)time(NULL) + 3600) != 0) return -1;
    Todo__V1__CompleteTaskRequest rq = TODO__V1__COMPLETE_TASK_REQUEST__INIT;
    rq.task_id = id;
    return command(c, "CompleteTask", &rq.base);
}

/* remind: the next reminder due at remind_at, on a new task every ten. */
static int remind_one(client *c)
{
    if (c->n % 10 == 0 && create(c, c->task_id) != 0) return -1;
    return schedule(c, c->task_id, remind_at);
}

/* True when ListTasks' newest task of c is id. */
static bool listed_first(client *c, const char *id)
{
    Todo__V1__ListTasksRequest rq = TODO__V1__LIST_TASKS_REQUEST__INIT;
    Todo__V1__ListTasksResponse *r = NULL;
    grpcx_result res;
    rq.page_size = 1;
    if (grpcx_unary(c->qry, "/todo.v1.TaskQueryService/ListTasks", &rq.base, &todo__v1__list_tasks_response__descriptor,
                    c->auth, 10000, (ProtobufCMessage **)&r, &res) != GRPC_STATUS_OK)
        return false;
    bool yes = r->n_tasks == 1 && strcmp(r->tasks[0]->id, id) == 0;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return yes;
}

static int list(client *c)
{
    Todo__V1__ListTasksRequest rq = TODO__V1__LIST_TASKS_REQUEST__INIT;
    Todo__V1__ListTasksResponse *r = NULL;
    grpcx_result res;
    rq.page_size = 20;
    if (grpcx_unary(c->qry, "/todo.v1.TaskQueryService/ListTasks", &rq.base, &todo__v1__list_tasks_response__descriptor,
                    c->auth, 10000, (ProtobufCMessage **)&r, &res) != GRPC_STATUS_OK)
        return -1;
    int ok = r->n_tasks == 20 ? 0 : -1;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return ok;
}

/* Waits until the client's task is visible (bounded): the setup of get/list. */
static int await_visible(client *c, const char *id)
{
    for (int i = 0; i < 20000; i++) {
        if (get(c, id) == 0) return 0;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static void *run(void *arg)
{
    client *c = arg;
    mode m = c->m == M_FRESHNESS && c->index > 0 ? M_CREATE : c->m;
    if (m == M_GET && (create(c, c->task_id) != 0 || await_visible(c, c->task_id) != 0)) c->errors++;
    if (m == M_REMIND && email && set_address(c) != 0) c->errors++;
    if (m == M_LIST) {
        char id[40] = "";
        for (int i = 0; i < LIST_TASKS; i++)
            if (create(c, id) != 0) c->errors++;
        if (await_visible(c, id) != 0) c->errors++;
    }
    pthread_barrier_wait(&ready);
    double end = now_s() + seconds_each, next = now_s();
    /* Paced background load: each of the N-1 clients its share of rate. */
    double every = c->m == M_FRESHNESS && m == M_CREATE && rate > 0 ? (n_clients - 1) / rate : 0;
    while (now_s() < end && (max_calls == 0 || (long)c->n + c->errors < max_calls)) {
        if (every > 0) {
            next += every;
            double wait = next - now_s();
            if (wait > 0) {
                struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
                nanosleep(&ts, NULL);
            }
        }
        double t0 = now_s();
        int rc;
        if (m == M_CREATE) {
            rc = create(c, NULL);
        } else if (m == M_GET) {
            rc = get(c, c->task_id);
        } else if (m == M_LIST) {
            rc = list(c);
        } else if (m == M_COMPLETE) {
            rc = complete_one(c);
        } else if (m == M_REMIND) {
            rc = remind_one(c);
        } else if (m == M_RYW) { /* create, then read it back with its token */
            char id[40], token[80];
            rc = create_tok(c, id, token, sizeof token);
            t0 = now_s();
            if (rc == 0) rc = get_with_token(c, id, token);
        } else { /* freshness: create, then poll until listed */
            char id[40];
            rc = create(c, id);
            t0 = now_s();
            while (rc == 0 && !listed_first(c, id)) {
                if (now_s() - t0 > 10) {
                    rc = -1;
                    break;
                }
            }
        }
        if (rc != 0) c->errors++;
        else record(c, (now_s() - t0) * 1000.0);
    }
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *rpc = "create";
    int clients = 1;
    double seconds = 5;
    todo_err err;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--rpc") == 0) rpc = argv[i + 1];
        else if (strcmp(argv[i], "--clients") == 0) clients = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--seconds") == 0) seconds = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--user-prefix") == 0) prefix = argv[i + 1];
        else if (strcmp(argv[i], "--rate") == 0) rate = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--at") == 0) remind_at = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--channel") == 0) email = strcmp(argv[i + 1], "email") == 0;
        else if (strcmp(argv[i], "--max") == 0) max_calls = atol(argv[i + 1]);
        else {
            fprintf(stderr, "todo-loadgen: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    mode m = strcmp(rpc, "create") == 0 ? M_CREATE : strcmp(rpc, "get") == 0 ? M_GET
           : strcmp(rpc, "list") == 0 ? M_LIST : strcmp(rpc, "freshness") == 0 ? M_FRESHNESS
           : strcmp(rpc, "complete") == 0 ? M_COMPLETE : strcmp(rpc, "remind") == 0 ? M_REMIND
           : strcmp(rpc, "ryw") == 0 ? M_RYW : (mode)-1;
    if ((int)m < 0 || clients < 1 || clients > MAX_CLIENTS || seconds <= 0) {
        fprintf(stderr, "usage: todo-loadgen --rpc create|get|list|freshness|complete|remind|ryw --clients 1..%d --seconds S\n",
                MAX_CLIENTS);
        return 2;
    }
    if (config_load(&cfg, CONFIG_CLI, NULL, NULL, &err) != 0) {
        fprintf(stderr, "todo-loadgen: %s\n", err.msg);
        return 2;
    }
    static client cs[MAX_CLIENTS];
    pthread_t th[MAX_CLIENTS];
    for (int i = 0; i < clients; i++) {
        cs[i].index = i;
        cs[i].m = m;
        /* ryw: one user for all (its concurrent commands race each other). */
        snprintf(cs[i].user, sizeof cs[i].user, "%.40s-%d-%ld", prefix, m == M_RYW ? 0 : i, (long)time(NULL));
        auth_rules rules = AUTH_RULES_OF(&cfg);
        char *tok = auth_issue_for(cfg.jwt_secret, cs[i].user, 3600, (long)time(NULL), &rules, &err);
        if (tok == NULL) {
            fprintf(stderr, "todo-loadgen: %s\n", err.msg);
            return 2;
        }
        snprintf(cs[i].auth, sizeof cs[i].auth, "Bearer %s", tok);
        free(tok);
        grpcx_tls_client tls = grpcx_tls_client_of(&cfg);
        cs[i].cmd = grpcx_channel_open(cfg.command_addr, &tls, &err);
        cs[i].qry = cs[i].cmd != NULL ? grpcx_channel_open(cfg.query_addr, &tls, &err) : NULL;
        if (cs[i].qry == NULL) {
            fprintf(stderr, "todo-loadgen: %s\n", err.msg);
            return 2;
        }
    }
    seconds_each = seconds;
    n_clients = clients;
    pthread_barrier_init(&ready, NULL, (unsigned)clients);
    for (int i = 0; i < clients; i++) pthread_create(&th[i], NULL, run, &cs[i]);
    for (int i = 0; i < clients; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&ready);

    size_t total = 0;
    long errors = 0;
    int measured = m == M_FRESHNESS ? 1 : clients;
    for (int i = 0; i < measured; i++) total += cs[i].n;
    for (int i = 0; i < clients; i++) errors += cs[i].errors;
    double *all = malloc((total + 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < measured; i++) {
        memcpy(all + k, cs[i].lat, cs[i].n * sizeof *all);
        k += cs[i].n;
    }
    qsort(all, total, sizeof *all, cmp);
    double window = seconds;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
#define PCT(p) (total ? all[(size_t)((double)(total - 1) * (p))] : 0.0)
    size_t background = 0; /* freshness: the CreateTask load beside the probe */
    for (int i = measured; i < clients; i++) background += cs[i].n;
    printf("{\"rpc\":\"%s\",\"clients\":%d,\"seconds\":%.1f,\"calls\":%zu,\"errors\":%ld,\"rps\":%.1f,"
           "\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"loadgen_cpu_s\":%.2f,"
           "\"background_rps\":%.1f}\n",
           rpc, clients, window, total, errors, window > 0 ? (double)total / window : 0, PCT(0.50), PCT(0.90),
           PCT(0.99), total ? all[total - 1] : 0.0, cpu, window > 0 ? (double)background / window : 0);
    for (int i = 0; i < clients; i++) {
        grpcx_channel_free(cs[i].cmd);
        grpcx_channel_free(cs[i].qry);
        free(cs[i].lat);
    }
    free(all);
    return errors == 0 ? 0 : 1;
}
