/* The worker role of todo-saga (see saga_proc.h): leases sagas and drives
 * them to their end. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "grpcx_client.h"
#include "log.h"
#include "metrics.h"
#include "pgx.h"
#include "saga_completion.h"
#include "saga_proc.h"
#include "saga_store.h"
#include "trace.h"

static metric *transitions(void)
{
    return metric_counter("todo_saga_transitions_total",
                          "Saga transitions made by this instance: started, step.completed, step.failed (a retry "
                          "follows unless attempts are spent), compensating, step.compensated, "
                          "step.compensation_failed, compensated, completed, failed.",
                          "saga_type,transition");
}

/* Every transition's series exists from the start, at 0: an alert on its
 * increase sees the first one. */
static void declare_transitions(void)
{
    static const char *const all[] = {"started", "step.completed", "step.failed", "compensating", "step.compensated",
                                      "step.compensation_failed", "compensated", "completed", "failed"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        metric_add(metric_with(transitions(), saga_completion_def.type, all[i]), 0);
}

/* Logs and counts every transition (its events are in saga.outbox
 * already). */
static void on_saga_event(const saga_record *r, const char *what, const char *step, int attempt, const char *error,
                          void *ctx)
{
    (void)ctx;
    /* Label values: the saga types and transitions saga_core knows (bounded). */
    metric_add(metric_with(transitions(), r->type, what), 1);
    if (strcmp(what, "failed") == 0)
        log_error("saga", "saga failed", "saga=%s type=%s error=\"%s\"", r->id, r->type, error ? error : "");
    else
        log_info("saga", what, "saga=%s step=%s attempt=%d error=\"%s\"", r->id, step ? step : "", attempt,
                 error ? error : "");
}

/* The latency of each attempt of a step (or of its compensation) and how
 * it ended: retries and compensations by step. */
static void on_step_attempt(const saga_record *r, const char *step, bool undo, saga_result res, double seconds,
                            void *ctx)
{
    (void)ctx;
    static const char *const outcome[] = {"ok", "retry", "abort"};
    metric *m = metric_histogram("todo_saga_step_seconds",
                                 "Attempts of saga steps (kind action or compensation) by outcome (ok, retry: a "
                                 "transient failure, abort: a permanent one), and how long each took.",
                                 "saga_type,step,kind,outcome", METRIC_LATENCY_BUCKETS, METRIC_N_LATENCY_BUCKETS);
    metric_observe(metric_with(m, r->type, step, undo ? "compensation" : "action",
                               (unsigned)res < 3 ? outcome[res] : "abort"),
                   seconds);
}

void *saga_worker_main(void *arg)
{
    saga_worker_arg *w = arg;
    saga_proc *p = w->proc;
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, declare_transitions);
    todo_err err;
    char owner[CONFIG_STR_MAX + 16], app_name[48];
    snprintf(owner, sizeof owner, "%s/%d", p->cfg.saga_instance, w->n);
    snprintf(app_name, sizeof app_name, "todo-saga-worker-%d", w->n);
    saga_completion_app app = {.cfg = &p->cfg, .command = saga_proc_channel(p)};
    saga_store_pg store = {.instance = owner, .lease_s = p->cfg.saga_lease_s};
    saga_engine engine = {.store = saga_store_of(&store), .on_event = on_saga_event, .app = &app,
                          .should_stop = saga_proc_stopping, .ctx = p, .step_delay_ms = p->cfg.saga_step_delay_ms,
                          .on_attempt = on_step_attempt};
    while (!atomic_load(&p->stopping)) {
        saga_proc_ensure_pg(p, &app.pg, app_name);
        if (app.pg == NULL) break;
        store.pg = app.pg;
        saga_record r;
        char user[128];
        bool found = false;
        if (saga_store_claim(&store, &r, user, &found, &err) != 0) {
            log_warn("saga", "claiming a saga failed", "error=\"%s\"", err.msg);
            saga_proc_pause_ms(p, 1000);
            continue;
        }
        if (!found) {
            saga_proc_pause_ms(p, 100);
            continue;
        }
        if (strcmp(r.type, saga_completion_def.type) != 0 || store.n_steps != saga_completion_def.n_steps) {
            log_error("saga", "unknown saga type or shape; leaving it", "saga=%s type=%s", r.id, r.type);
            saga_proc_pause_ms(p, 1000);
            continue;
        }
        trace_ctx parent, span; /* the completion's trace follows the saga */
        if (trace_parse(saga_record_get(&r, "traceparent"), &parent)) {
            trace_child(&parent, &span);
            trace_enter(&span);
        }
        log_info("saga", "driving", "saga=%s state=%s step=%d", r.id, saga_state_name(r.state), r.step);
        if (saga_run(&engine, &saga_completion_def, &r, &err) != 0 && !atomic_load(&p->stopping))
            log_warn("saga", "saga interrupted; it resumes later", "saga=%s error=\"%s\"", r.id, err.msg);
        trace_leave();
    }
    pgx_close(app.pg);
    grpcx_channel_free(app.command);
    return NULL;
}
