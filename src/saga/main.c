/*
 * todo-saga: the task-completion saga and the reminder scheduler. Three
 * threads, each with its own PostgreSQL connection (role todo_saga):
 *
 *   consumer   tasks.events.v1 in group saga-task-completion-v1 (from the
 *              end of the topic when the group is new: history is not
 *              replayed into sagas): every task.completed starts a saga (saga id = the event id, so a
 *              re-delivered event finds its saga and starts nothing); offsets
 *              are committed after the sagas are stored; a record that does
 *              not decode goes to system.dlq.v1;
 *   workers    TODO_SAGA_WORKERS threads, each leasing RUNNING and
 *              COMPENSATING sagas one at a time (the oldest first; after a
 *              crash, the ones left behind) under the name
 *              "<instance>/<n>", and driving each to its end (saga_core);
 *              each transition's events are saved with the saga;
 *   publisher  publishes those events from the saga store's outbox to
 *              saga.events.v1 (at least once, in order, stable event ids);
 *   scheduler  fires due reminders (saga_scheduler);
 *   notifier   notifications.commands.v1 in group notification-dispatch-v1
 *              (also from the end when new): delivers each notification
 *              once (saga_notify); undecodable records are dead-lettered.
 *
 * SIGINT or SIGTERM stop it between steps; a saga in progress resumes at the
 * next start (or on another instance once its lease expires).
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"
#include "config.h"
#include "dlq.h"
#include "event.h"
#include "kafkax.h"
#include "log.h"
#include "outbox.h"
#include "pgx.h"
#include "redisx.h"
#include "reg_local.h"
#include "saga_completion.h"
#include "saga_notify.h"
#include "saga_scheduler.h"
#include "saga_store.h"
#include "svc.h"
#include "text.h"
#include "todo/v1/events.pb-c.h"

#define GROUP "saga-task-completion-v1"
#define NOTIFY_GROUP "notification-dispatch-v1"
#define BATCH 100

static todo_config cfg;
static atomic_int stopping;
static rd_kafka_t *producer; /* dead letters */
static reg_resolver *resolver; /* the schema ids of the records consumed */

static void pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* A connection of the saga role, retried until it works or we stop. */
static PGconn *connect_pg(const char *app_name)
{
    todo_err err;
    while (!atomic_load(&stopping)) {
        PGconn *pg = pgx_connect(cfg.pg_url, app_name, &err);
        if (pg != NULL) return pg;
        log_warn("saga", "database unreachable; retrying", "error=\"%s\"", err.msg);
        pause_ms(1000);
    }
    return NULL;
}

static void ensure_pg(PGconn **pg, const char *app_name)
{
    if (*pg != NULL && PQstatus(*pg) == CONNECTION_OK) return;
    pgx_close(*pg);
    *pg = connect_pg(app_name);
}

/* ---- saga events ---- */

static void on_saga_event(const saga_record *r, const char *what, const char *step, int attempt, const char *error,
                          void *ctx)
{
    (void)ctx;
    if (strcmp(what, "failed") == 0)
        log_error("saga", "saga failed", "saga=%s type=%s error=\"%s\"", r->id, r->type, error ? error : "");
    else
        log_info("saga", what, "saga=%s step=%s attempt=%d error=\"%s\"", r->id, step ? step : "", attempt,
                 error ? error : "");
}

/* saga.outbox for the outbox publisher (outbox.h). 7428315 is also the
 * lock the publisher of todo-saga before 0017 took per batch: an old and a
 * new instance never publish at once. */
#define SAGA_OUTBOX_LOCK_KEY "7428315"
#define SAGA_OUTBOX_BATCH 200

static const outbox_table saga_outbox = {
    .name = "saga-outbox",
    .lock_key = SAGA_OUTBOX_LOCK_KEY,
    .channel = "todo_saga_outbox",
    .select_sql = "select o.id, o.user_id, o.aggregate_id, o.envelope, o.event_type from saga.outbox o"
                  " where o.envelope is not null and o.parked_at is null"
                  " and not exists (select 1 from saga.outbox p where p.parked_at is not null"
                  "   and p.aggregate_id = o.aggregate_id and p.id < o.id)"
                  " order by o.id limit $1::int",
    .done_sql = "delete from saga.outbox where id = any($1::bigint[])",
    .park_sql = "update saga.outbox set parked_at = now(), parked_reason = $2 where id = $1::bigint",
};

/* ---- consumers: bounded retries ---- */

/* How often the record a consumer is stuck on has failed. A record that
 * fails for any reason but "a dependency is away" (TODO_EUNAVAIL: the
 * database or the registry; retried for as long as it takes) is tried
 * TODO_CONSUMER_MAX_ATTEMPTS times, then dead-lettered saying so, so no
 * record blocks its partition for good. Waits grow from 1 s doubling to
 * 30 s. */
typedef struct stuck {
    int32_t partition;
    int64_t offset;
    int failures;  /* of this record */
    int waits;     /* of the consumer since it last made progress */
} stuck;

/* Notes that m failed with rc; true when it is to be given up on (its
 * reason written into why). */
static bool give_up(stuck *st, const rd_kafka_message_t *m, int rc, const todo_err *err, char *why, size_t cap)
{
    if (rc == TODO_EUNAVAIL) return false;
    if (st->partition != m->partition || st->offset != m->offset) {
        st->partition = m->partition;
        st->offset = m->offset;
        st->failures = 0;
    }
    if (++st->failures < cfg.consumer_max_attempts) return false;
    snprintf(why, cap, "handling failed %d times (the last: %.250s)", st->failures, err->msg);
    st->failures = 0;
    return true;
}

/* The pause before the next try. */
static void back_off(stuck *st)
{
    int ms = 1000 << (st->waits < 5 ? st->waits : 5);
    pause_ms(ms > 30000 ? 30000 : ms);
    st->waits++;
}

/* ---- consumer ---- */

/* Starts the saga of a task.completed record; TODO_EINVAL (why in err) for
 * a record to dead-letter, another status to retry. */
static int start_saga(PGconn *pg, const rd_kafka_message_t *m, todo_err *err)
{
    arena *a = arena_new();
    Todo__V1__EventEnvelope *env;
    int rc = event_decode(m->payload, m->len, a, &env, err);
    if (rc != 0 || strcmp(env->event_type, "task.completed") != 0) {
        arena_free(a);
        return rc != 0 ? TODO_EINVAL : TODO_OK; /* other events are not ours */
    }
    if ((rc = reg_resolve_envelope(resolver, pg, env, err)) != 0) {
        arena_free(a);
        return rc;
    }
    ProtobufCAllocator alloc;
    arena_pbc_allocator(a, &alloc);
    Todo__V1__TaskCompleted *ev = todo__v1__task_completed__unpack(&alloc, env->data.len, env->data.data);
    if (ev == NULL || !text_is_uuid(env->event_id) || !text_is_uuid(ev->task_id) ||
        strcmp(ev->task_id, env->aggregate_id) != 0 ||
        (ev->recurring_pattern_id[0] != '\0' && !text_is_uuid(ev->recurring_pattern_id))) {
        arena_free(a);
        return todo_err_set(err, TODO_EINVAL, "task.completed payload does not decode or is inconsistent");
    }
    saga_record r;
    memset(&r, 0, sizeof r);
    snprintf(r.id, sizeof r.id, "%s", env->event_id);
    saga_record_set(&r, "task_id", ev->task_id);
    saga_record_set(&r, "user_id", env->user_id);
    saga_record_set(&r, "pattern_id", ev->recurring_pattern_id);
    bool inserted = false;
    if ((rc = saga_init(&saga_completion_def, &r, err)) == 0)
        rc = saga_store_insert(pg, &r, saga_completion_def.n_steps, env->user_id, &inserted, err);
    if (rc == 0 && inserted) on_saga_event(&r, "started", NULL, 0, NULL, NULL); /* logged; published from the outbox */
    arena_free(a);
    return rc == TODO_EINVAL ? TODO_EINTERNAL : rc;
}

static void *consumer_main(void *arg)
{
    (void)arg;
    todo_err err;
    const char *topics[] = {"tasks.events.v1"};
    rd_kafka_t *rk = kafkax_consumer_new_tail(cfg.kafka_brokers, GROUP, topics, 1, &err);
    if (rk == NULL) {
        log_error("saga", "consumer cannot start", "error=\"%s\"", err.msg);
        atomic_store(&stopping, 1);
        return NULL;
    }
    PGconn *pg = NULL;
    rd_kafka_message_t *batch[BATCH];
    while (!atomic_load(&stopping)) {
        size_t n = 0;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 300);
        while (m != NULL) {
            if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    log_warn("saga", "consumer error", "error=\"%s\"", rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
            } else {
                batch[n++] = m;
            }
            m = n < BATCH ? rd_kafka_consumer_poll(rk, 0) : NULL;
        }
        if (n == 0) continue;
        bool ok = false;
        stuck st = {.partition = -1};
        while (!ok && !atomic_load(&stopping)) {
            ensure_pg(&pg, "todo-saga-consumer");
            if (pg == NULL) break;
            ok = true;
            for (size_t i = 0; i < n && ok; i++) {
                int rc = start_saga(pg, batch[i], &err);
                char why[320];
                if (rc != 0 && rc != TODO_EINVAL && give_up(&st, batch[i], rc, &err, why, sizeof why)) {
                    todo_err_set(&err, TODO_EINVAL, "%s", why);
                    rc = TODO_EINVAL;
                }
                if (rc == TODO_EINVAL) {
                    log_warn("saga", "dead-lettering a record", "offset=%lld reason=\"%s\"",
                             (long long)batch[i]->offset, err.msg);
                    todo_err derr;
                    ok = dlq_send(producer, GROUP, batch[i], err.msg, &derr) == 0;
                } else if (rc != 0) {
                    log_warn("saga", "starting a saga failed; retrying the batch", "attempt=%d error=\"%s\"",
                             st.failures, err.msg);
                    ok = false;
                }
            }
            if (ok) ok = rd_kafka_flush(producer, 30000) == RD_KAFKA_RESP_ERR_NO_ERROR;
            if (!ok) back_off(&st);
        }
        if (ok) {
            rd_kafka_resp_err_t e = rd_kafka_commit_message(rk, batch[n - 1], 0);
            /* commit_message commits one partition; commit all the batch touched. */
            for (size_t i = 0; i + 1 < n; i++)
                if (batch[i]->partition != batch[n - 1]->partition) rd_kafka_commit_message(rk, batch[i], 0);
            if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
                log_warn("saga", "offset commit failed; records will be re-read", "error=\"%s\"", rd_kafka_err2str(e));
        }
        for (size_t i = 0; i < n; i++) rd_kafka_message_destroy(batch[i]);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    pgx_close(pg);
    return NULL;
}

/* ---- worker ---- */

static int should_stop(void *ctx)
{
    (void)ctx;
    return atomic_load(&stopping);
}

static void *worker_main(void *arg)
{
    todo_err err;
    char owner[CONFIG_STR_MAX + 16], app_name[48];
    snprintf(owner, sizeof owner, "%s/%d", cfg.saga_instance, (int)(intptr_t)arg);
    snprintf(app_name, sizeof app_name, "todo-saga-worker-%d", (int)(intptr_t)arg);
    saga_completion_app app = {.cfg = &cfg, .command = grpcx_channel_new(cfg.command_addr)};
    saga_store_pg store = {.instance = owner, .lease_s = cfg.saga_lease_s};
    saga_engine engine = {.store = saga_store_of(&store), .on_event = on_saga_event, .app = &app,
                          .should_stop = should_stop, .step_delay_ms = cfg.saga_step_delay_ms};
    while (!atomic_load(&stopping)) {
        ensure_pg(&app.pg, app_name);
        if (app.pg == NULL) break;
        store.pg = app.pg;
        saga_record r;
        char user[128];
        bool found = false;
        if (saga_store_claim(&store, &r, user, &found, &err) != 0) {
            log_warn("saga", "claiming a saga failed", "error=\"%s\"", err.msg);
            pause_ms(1000);
            continue;
        }
        if (!found) {
            pause_ms(100);
            continue;
        }
        if (strcmp(r.type, saga_completion_def.type) != 0 || store.n_steps != saga_completion_def.n_steps) {
            log_error("saga", "unknown saga type or shape; leaving it", "saga=%s type=%s", r.id, r.type);
            pause_ms(1000);
            continue;
        }
        log_info("saga", "driving", "saga=%s state=%s step=%d", r.id, saga_state_name(r.state), r.step);
        if (saga_run(&engine, &saga_completion_def, &r, &err) != 0 && !atomic_load(&stopping))
            log_warn("saga", "saga interrupted; it resumes later", "saga=%s error=\"%s\"", r.id, err.msg);
    }
    pgx_close(app.pg);
    grpcx_channel_free(app.command);
    return NULL;
}

/* ---- scheduler ---- */

static void *scheduler_main(void *arg)
{
    (void)arg;
    todo_err err;
    saga_scheduler s = {.cfg = &cfg, .command = grpcx_channel_new(cfg.command_addr)};
    while (!atomic_load(&stopping)) {
        ensure_pg(&s.pg, "todo-saga-scheduler");
        if (s.pg == NULL) break;
        int fired = 0;
        if (saga_scheduler_tick(&s, &fired, &err) != 0) {
            log_warn("scheduler", "looking for due reminders failed", "error=\"%s\"", err.msg);
            pause_ms(1000);
            continue;
        }
        if (fired == 0) pause_ms(cfg.scheduler_poll_ms);
    }
    log_info("scheduler", "stopping", "fired=%lld max_delay_ms=%.1f", s.fired, s.max_delay_ms);
    pgx_close(s.pg);
    grpcx_channel_free(s.command);
    return NULL;
}

/* ---- notifier ---- */

/* Delivers one record of notifications.commands.v1; TODO_EINVAL for a
 * record to dead-letter, another status to retry. */
static int dispatch(saga_notify *s, const rd_kafka_message_t *m, todo_err *err)
{
    arena *a = arena_new();
    Todo__V1__EventEnvelope *env;
    int rc = event_decode(m->payload, m->len, a, &env, err);
    if (rc != 0 || strcmp(env->event_type, "notification.requested") != 0) {
        arena_free(a);
        return rc != 0 ? TODO_EINVAL : TODO_OK; /* our own sent/failed events, and others */
    }
    if ((rc = reg_resolve_envelope(resolver, s->pg, env, err)) != 0) {
        arena_free(a);
        return rc;
    }
    ProtobufCAllocator alloc;
    arena_pbc_allocator(a, &alloc);
    Todo__V1__SendNotification *n = todo__v1__send_notification__unpack(&alloc, env->data.len, env->data.data);
    if (n == NULL || n->notification_id[0] == '\0' || n->recipient[0] == '\0') {
        arena_free(a);
        return todo_err_set(err, TODO_EINVAL, "notification.requested payload does not decode or lacks its id");
    }
    const char *outcome = NULL;
    rc = saga_notify_handle(s, n, &outcome, err);
    if (rc == 0) log_info("notify", "handled", "id=%s recipient=%s outcome=%s", n->notification_id, n->recipient, outcome);
    arena_free(a);
    return rc == TODO_EINVAL ? TODO_EINTERNAL : rc;
}

static void *notifier_main(void *arg)
{
    (void)arg;
    todo_err err;
    const char *topics[] = {"notifications.commands.v1"};
    redisx redis;
    bool have_redis = redisx_init(&redis, cfg.redis_url, "notify", 100, &err) == 0;
    saga_notify s = {.cfg = &cfg, .redis = have_redis ? &redis : NULL,
                     .channel = cfg.notify_webhook_url[0] != '\0' ? saga_notify_webhook_channel(cfg.notify_webhook_url)
                                                                  : saga_notify_log_channel(),
                     .attempts = cfg.notify_attempts, .backoff_ms = 200};
    rd_kafka_t *rk = kafkax_consumer_new_tail(cfg.kafka_brokers, NOTIFY_GROUP, topics, 1, &err);
    if (rk == NULL) {
        log_error("notify", "consumer cannot start", "error=\"%s\"", err.msg);
        atomic_store(&stopping, 1);
        return NULL;
    }
    log_info("notify", "dispatching", "channel=%s", s.channel.name);
    while (!atomic_load(&stopping)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 300);
        if (m == NULL) continue;
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            log_warn("notify", "consumer error", "error=\"%s\"", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        bool ok = false;
        stuck st = {.partition = -1};
        while (!ok && !atomic_load(&stopping)) {
            ensure_pg(&s.pg, "todo-saga-notifier");
            if (s.pg == NULL) break;
            int rc = dispatch(&s, m, &err);
            char why[320];
            if (rc != 0 && rc != TODO_EINVAL && give_up(&st, m, rc, &err, why, sizeof why)) {
                todo_err_set(&err, TODO_EINVAL, "%s", why);
                rc = TODO_EINVAL;
            }
            if (rc == TODO_EINVAL) {
                log_warn("notify", "dead-lettering a record", "offset=%lld reason=\"%s\"", (long long)m->offset, err.msg);
                todo_err derr;
                ok = dlq_send(producer, NOTIFY_GROUP, m, err.msg, &derr) == 0 &&
                     rd_kafka_flush(producer, 30000) == RD_KAFKA_RESP_ERR_NO_ERROR;
            } else {
                ok = rc == 0;
                if (!ok) log_warn("notify", "handling a notification failed; retrying", "attempt=%d error=\"%s\"",
                                  st.failures, err.msg);
            }
            if (!ok) back_off(&st);
        }
        if (ok) rd_kafka_commit_message(rk, m, 0);
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    pgx_close(s.pg);
    if (have_redis) redisx_cleanup(&redis);
    return NULL;
}

/* The event types this process writes (see todo-command's main). */
static const char *const PRODUCED[] = {
    "saga.started",          "saga.step.completed",     "saga.step.failed",
    "saga.step.compensated", "saga.step.compensation_failed", "saga.compensating",
    "saga.compensated",      "saga.completed",          "saga.failed",
    "recurring.task.generated", "notification.requested", "notification.sent",
    "notification.failed",
};

/* Rows an older todo-saga left in saga.outbox get their envelopes. */
static int upgrade_outbox(void)
{
    todo_err err;
    long n = 0;
    PGconn *pg = pgx_connect(cfg.pg_url, "todo-saga-upgrade", &err);
    int rc = pg != NULL ? saga_store_upgrade_outbox(pg, &n, &err) : err.code;
    pgx_close(pg);
    if (rc != 0) log_error("saga", "cannot encode the saga outbox's older rows", "error=\"%s\"", err.msg);
    else if (n > 0) log_info("saga", "encoded older saga outbox rows", "rows=%ld", n);
    return rc;
}

int main(void)
{
    todo_err err;
    sigset_t sigs;
    if (config_load(&cfg, CONFIG_SAGA, NULL, NULL, &err) != 0) {
        fprintf(stderr, "todo-saga: %s\n", err.msg);
        return 2;
    }
    log_set_level(cfg.log_level);
    if (reg_register_at_startup(cfg.pg_url, "todo-saga", PRODUCED, sizeof PRODUCED / sizeof PRODUCED[0], &err) != 0) {
        log_error("saga", "cannot register the event schemas", "error=\"%s\"", err.msg);
        return 1;
    }
    if ((resolver = reg_resolver_new()) == NULL) {
        log_error("saga", "cannot start", "error=\"out of memory\"");
        return 1;
    }
    svc_signals_block(&sigs);
    if (upgrade_outbox() != 0) return 1;
    producer = kafkax_producer_new(cfg.kafka_brokers, "todo-saga", NULL, NULL, &err);
    outbox_opts oo = {.pg_url = cfg.pg_url, .brokers = cfg.kafka_brokers, .app_name = "todo-saga-outbox",
                      .batch = SAGA_OUTBOX_BATCH, .poll_ms = cfg.relay_poll_ms, .max_event_bytes = cfg.event_max_bytes};
    outbox *ob = producer != NULL ? outbox_start(&saga_outbox, &oo, &err) : NULL;
    if (ob == NULL) {
        log_error("saga", "cannot start", "error=\"%s\"", err.msg);
        if (producer != NULL) rd_kafka_destroy(producer);
        return 1;
    }
    log_info("saga", "starting", "instance=%s workers=%d lease_s=%d", cfg.saga_instance, cfg.saga_workers,
             cfg.saga_lease_s);
    curl_global_init(CURL_GLOBAL_DEFAULT); /* before any thread: not thread-safe */
    pthread_t th[4 + 64];
    int n = 0;
    pthread_create(&th[n++], NULL, consumer_main, NULL);
    pthread_create(&th[n++], NULL, scheduler_main, NULL);
    pthread_create(&th[n++], NULL, notifier_main, NULL);
    for (int i = 0; i < cfg.saga_workers; i++) pthread_create(&th[n++], NULL, worker_main, (void *)(intptr_t)i);
    while (!atomic_load(&stopping))
        if (svc_signals_pending(&sigs) != 0) atomic_store(&stopping, 1);
        else pause_ms(100);
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
    outbox_stop(ob); /* what is left is published by the next start */
    rd_kafka_flush(producer, 5000);
    rd_kafka_destroy(producer);
    curl_global_cleanup();
    reg_resolver_free(resolver);
    log_info("saga", "stopped", "instance=%s", cfg.saga_instance);
    return 0;
}
