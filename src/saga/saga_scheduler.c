/* saga_scheduler: see saga_scheduler.h. */
#include "saga_scheduler.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "event.h"
#include "grpcx_status.h"
#include "log.h"
#include "metrics.h"
#include "pgx.h"
#include "saga_proc.h"
#include "todo/v1/command.pb-c.h"

#define TICK_MAX 100 /* reminders per tick */

/* Fires one reminder; returns the gRPC status. */
static grpc_status_code fire(saga_scheduler *s, const char *id, const char *user, const char *version,
                             grpcx_result *res)
{
    todo_err e;
    char auth[1200], rid[160];
    char *tok = auth_issue_service(s->cfg->service_secret, "todo-saga", AUTH_SCOPE_INTERNAL, user, 300,
                                   (long)time(NULL), &e);
    if (tok == NULL) {
        snprintf(res->message, sizeof res->message, "%s", e.msg);
        return GRPC_STATUS_INTERNAL;
    }
    snprintf(auth, sizeof auth, "Bearer %s", tok);
    free(tok);
    Todo__V1__TriggerReminderRequest rq = TODO__V1__TRIGGER_REMINDER_REQUEST__INIT;
    snprintf(rid, sizeof rid, "fire:%s:%s", id, version);
    rq.request_id = rid;
    rq.reminder_id = (char *)id;
    rq.expected_version = strtoll(version, NULL, 10);
    ProtobufCMessage *resp = NULL;
    grpc_status_code code = grpcx_unary(s->command, "/todo.v1.TaskCommandService/TriggerReminder", &rq.base,
                                        &todo__v1__command_reply__descriptor, auth, 5000, &resp, res);
    if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
    return code;
}

/* One firing thread's share of a tick: rows k, k + n, k + 2n... */
typedef struct share {
    saga_scheduler *s;
    const PGresult *r;
    int k, n, rows;
    int fired;
    double max_delay_ms;
} share;

static metric_series *m_fired, *m_failed, *m_delay, *m_due;
static metric *m_sagas;
static pthread_once_t m_once = PTHREAD_ONCE_INIT;

static void init_metrics(void)
{
    static const double b[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900};
    m_fired = metric_only(metric_counter("todo_reminders_fired_total", "Reminders this scheduler fired.", NULL));
    m_failed = metric_only(metric_counter("todo_reminder_fire_failures_total",
                                          "Attempts to fire a due reminder that failed (tried again next tick).",
                                          NULL));
    m_delay = metric_only(metric_histogram("todo_reminder_firing_delay_seconds",
                                           "From a reminder's due time to its firing.", NULL, b,
                                           (int)(sizeof b / sizeof b[0])));
    m_due = metric_only(metric_gauge("todo_reminders_due",
                                     "Reminders whose time has come and that are not fired yet (of tasks still open), "
                                     "read by the scheduler every 5 s.", NULL));
    m_sagas = metric_gauge("todo_sagas", "Sagas by state (RUNNING, COMPENSATING, FAILED and not resolved; finished ones are not "
                                         "counted), read by the scheduler every 5 s.", "state");
}

static void *fire_share(void *arg)
{
    share *sh = arg;
    for (int i = sh->k; i < sh->rows; i += sh->n) {
        const char *id = PQgetvalue(sh->r, i, 0), *user = PQgetvalue(sh->r, i, 1), *version = PQgetvalue(sh->r, i, 2);
        int64_t due_us = strtoll(PQgetvalue(sh->r, i, 3), NULL, 10);
        grpcx_result res;
        grpc_status_code code = fire(sh->s, id, user, version, &res);
        double delay_ms = (double)(event_now_us() - due_us) / 1000.0;
        if (code == GRPC_STATUS_OK) {
            metric_add(m_fired, 1);
            metric_observe(m_delay, delay_ms > 0 ? delay_ms / 1000.0 : 0);
            sh->fired++;
            if (delay_ms > sh->max_delay_ms) sh->max_delay_ms = delay_ms;
            log_info("scheduler", "reminder fired", "reminder=%s user=%s delay_ms=%.1f", id, user, delay_ms);
        } else if (code == GRPC_STATUS_ABORTED || code == GRPC_STATUS_FAILED_PRECONDITION ||
                   code == GRPC_STATUS_NOT_FOUND) {
            log_debug("scheduler", "reminder not fired here", "reminder=%s status=%s reason=\"%s\"", id,
                      grpcx_code_name(code), res.message);
        } else {
            metric_add(m_failed, 1);
            log_warn("scheduler", "firing a reminder failed; trying again", "reminder=%s status=%s error=\"%s\"", id,
                     grpcx_code_name(code), res.message);
        }
    }
    return NULL;
}

int saga_scheduler_tick(saga_scheduler *s, int *fired, todo_err *err)
{
    if (fired != NULL) *fired = 0;
    PGresult *r = pgx_exec(s->pg,
                           "select r.id::text, r.user_id, r.version, (extract(epoch from r.remind_at) * 1000000)::bigint"
                           " from write.reminders r join write.tasks t on t.id = r.task_id"
                           " where r.status = 'scheduled' and r.remind_at <= now()"
                           " and t.completed_at is null and t.deleted_at is null"
                           " order by r.remind_at limit " "100",
                           0, NULL, err);
    if (r == NULL) return err->code;
    int rows = PQntuples(r) < TICK_MAX ? PQntuples(r) : TICK_MAX;
    /* Fired by up to TODO_SCHEDULER_PARALLEL threads at once, each with its
     * share of the due reminders, in due order within a share (the command
     * side makes a reminder fire once whatever the order). */
    int n = s->cfg->scheduler_parallel < rows ? s->cfg->scheduler_parallel : rows;
    share sh[64];
    pthread_t th[64];
    bool running[64] = {false};
    for (int k = 0; k < n; k++) sh[k] = (share){.s = s, .r = r, .k = k, .n = n, .rows = rows};
    for (int k = 1; k < n; k++) running[k] = pthread_create(&th[k], NULL, fire_share, &sh[k]) == 0;
    if (n > 0) fire_share(&sh[0]); /* this thread takes share 0 */
    for (int k = 1; k < n; k++)
        if (running[k]) pthread_join(th[k], NULL); /* a share without a thread waits for the next tick */
    int total = 0;
    for (int k = 0; k < n; k++) {
        total += sh[k].fired;
        if (sh[k].max_delay_ms > s->max_delay_ms) s->max_delay_ms = sh[k].max_delay_ms;
    }
    s->fired += total;
    PQclear(r);
    if (fired != NULL) *fired = total;
    return TODO_OK;
}

/* The sagas not yet finished, by state (FAILED: those nobody resolved), and
 * the reminders due (every 5 s):
 * the todo_sagas and todo_reminders_due gauges. */
static void count_sagas(PGconn *pg, time_t *last)
{
    todo_err err;
    time_t now = time(NULL);
    if (now - *last < 5) return;
    *last = now;
    PGresult *r = pgx_exec(pg,
                           "select s.state, count(x.id) from unnest(array['RUNNING', 'COMPENSATING', 'FAILED']) as s(state)"
                           " left join saga.sagas x on x.state = s.state"
                           " and not exists (select 1 from saga.resolutions r where r.saga_id = x.id)"
                           " group by s.state",
                           0, NULL, &err);
    if (r == NULL) return;
    for (int i = 0; i < PQntuples(r); i++)
        metric_set(metric_with(m_sagas, PQgetvalue(r, i, 0)), strtod(PQgetvalue(r, i, 1), NULL));
    PQclear(r);
    r = pgx_exec(pg,
                 "select count(*) from write.reminders r join write.tasks t on t.id = r.task_id"
                 " where r.status = 'scheduled' and r.remind_at <= now()"
                 " and t.completed_at is null and t.deleted_at is null",
                 0, NULL, &err);
    if (r == NULL) return;
    metric_set(m_due, strtod(PQgetvalue(r, 0, 0), NULL));
    PQclear(r);
}

void *saga_scheduler_main(void *proc)
{
    saga_proc *p = proc;
    todo_err err;
    time_t last_count = 0;
    pthread_once(&m_once, init_metrics);
    saga_scheduler s = {.cfg = &p->cfg, .command = saga_proc_channel(p)};
    while (!atomic_load(&p->stopping)) {
        saga_proc_ensure_pg(p, &s.pg, "todo-saga-scheduler");
        if (s.pg == NULL) break;
        int fired = 0;
        count_sagas(s.pg, &last_count);
        if (saga_scheduler_tick(&s, &fired, &err) != 0) {
            log_warn("scheduler", "looking for due reminders failed", "error=\"%s\"", err.msg);
            saga_proc_pause_ms(p, 1000);
            continue;
        }
        if (fired == 0) saga_proc_pause_ms(p, p->cfg.scheduler_poll_ms);
    }
    log_info("scheduler", "stopping", "fired=%lld max_delay_ms=%.1f", s.fired, s.max_delay_ms);
    pgx_close(s.pg);
    grpcx_channel_free(s.command);
    return NULL;
}
