/* saga_proc: see saga_proc.h. */
#include "saga_proc.h"

#include "park.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "consume.h"
#include "event.h"
#include "trace.h"
#include "log.h"
#include "pgx.h"

int saga_proc_stopping(void *proc)
{
    return atomic_load(&((saga_proc *)proc)->stopping);
}

void saga_proc_pause_ms(saga_proc *p, int ms)
{
    for (int slept = 0; slept < ms && !atomic_load(&p->stopping); slept += 100) {
        int step = ms - slept < 100 ? ms - slept : 100;
        struct timespec ts = {0, (long)step * 1000000};
        nanosleep(&ts, NULL);
    }
}

grpcx_channel *saga_proc_channel(saga_proc *p)
{
    todo_err err;
    grpcx_tls_client tls = grpcx_tls_client_of(&p->cfg);
    grpcx_channel *ch = grpcx_channel_open(p->cfg.command_addr, &tls, &err);
    if (ch == NULL) {
        log_error("saga", "cannot open a channel to todo-command; stopping", "error=\"%s\"", err.msg);
        atomic_store(&p->stopping, 1);
    }
    return ch;
}

void saga_proc_ensure_pg(saga_proc *p, PGconn **pg, const char *app_name)
{
    todo_err err;
    if (*pg != NULL && PQstatus(*pg) == CONNECTION_OK) return;
    pgx_close(*pg);
    *pg = NULL;
    while (!atomic_load(&p->stopping)) {
        if ((*pg = pgx_connect(p->cfg.pg_url, app_name, &err)) != NULL) return;
        log_warn("saga", "database unreachable; retrying", "error=\"%s\"", err.msg);
        saga_proc_pause_ms(p, 1000);
    }
}

int saga_proc_envelope(saga_proc *p, PGconn *pg, const rd_kafka_message_t *m, const char *type, arena *a,
                       Todo__V1__EventEnvelope **env, todo_err *err)
{
    Todo__V1__EventEnvelope *e;
    *env = NULL;
    if (event_decode(m->payload, m->len, a, &e, err) != TODO_OK) return TODO_EINVAL;
    if (strcmp(e->event_type, type) != 0) return TODO_OK;
    trace_ctx parent, span; /* the record's trace, for the handler's log lines (until apply moves on) */
    if (trace_parse(event_traceparent(e), &parent)) {
        trace_child(&parent, &span);
        trace_enter(&span);
    }
    int rc = reg_resolve_envelope(p->resolver, pg, e, err);
    if (rc == TODO_OK) *env = e;
    return rc;
}

/* The per-record applier of a consumer role (consume_opts.apply). */
typedef struct role {
    saga_proc *proc;
    const char *app_name;
    saga_record_fn fn;
    void *ctx;
    PGconn *pg;
    char (*why)[320];            /* per record of the batch: why it is dead */
} role;

static int role_stopping(void *ctx)
{
    return atomic_load(&((role *)ctx)->proc->stopping);
}

static int apply(void *ctx, rd_kafka_message_t **msgs, size_t n, const char **dead, int *failed, todo_err *err)
{
    role *r = ctx;
    *failed = -1;
    if (r->pg == NULL || PQstatus(r->pg) != CONNECTION_OK) {
        pgx_close(r->pg);
        r->pg = pgx_connect(r->proc->cfg.pg_url, r->app_name, err);
        if (r->pg == NULL) return TODO_EUNAVAIL;
    }
    for (size_t i = 0; i < n; i++) {
        if (dead[i] != NULL) continue;
        int rc = r->fn(r->proc, r->pg, msgs[i], r->ctx, err);
        trace_leave();
        if (rc == TODO_EINVAL) {
            snprintf(r->why[i], sizeof r->why[i], "%.300s", err->msg);
            dead[i] = r->why[i];
            park_followers(msgs, n, dead, i); /* what must wait behind it (park.h) */
        } else if (rc != TODO_OK) {
            /* The records before it are done; handling is idempotent, so
             * the batch is simply handled again. */
            if (rc != TODO_EUNAVAIL && PQstatus(r->pg) == CONNECTION_OK) *failed = (int)i;
            else rc = TODO_EUNAVAIL;
            return rc;
        }
    }
    return TODO_OK;
}

void saga_proc_consume(saga_proc *p, const char *component, const char *group, const char *topic, int batch,
                       const char *app_name, saga_record_fn fn, void *ctx)
{
    todo_err err;
    const char *topics[1] = {topic};
    role r = {.proc = p, .app_name = app_name, .fn = fn, .ctx = ctx, .why = calloc((size_t)batch, sizeof *r.why)};
    consume_opts o = {.brokers = p->cfg.kafka_brokers, .group = group, .topics = topics, .n_topics = 1, .tail = true,
                      .component = component, .batch = batch, .max_attempts = p->cfg.consumer_max_attempts,
                      .apply = apply, .should_stop = role_stopping, .fetch_wait_ms = SAGA_FETCH_WAIT_MS,
                      .ctx = &r};
    if (r.why == NULL || consume_run(&o, &err) != TODO_OK) {
        log_error(component, "consumer cannot start", "group=%s error=\"%s\"", group,
                  r.why == NULL ? "out of memory" : err.msg);
        atomic_store(&p->stopping, 1);
    }
    pgx_close(r.pg);
    free(r.why);
}
