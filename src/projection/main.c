/*
 * todo-projector: the live projections, every definition of proj_def.h in
 * its own consumer group and schema:
 *   - tasks: tasks, reminders, users and saga events into the read schema, in
 *     group projection-task-read-v1 (TODO_PROJECTOR_GROUP), with
 *     TODO_PROJECTOR_THREADS loops in the group (Kafka splits the partitions
 *     among them; a user's events stay in one partition, so in order);
 *   - analytics: tasks and users events into the analytics schema, in group
 *     projection-analytics-v1, one loop.
 * SIGINT or SIGTERM stop it after the batches in flight.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <time.h>

#include "config.h"
#include "dlq_watch.h"
#include "kafkax.h"
#include "log.h"
#include "metrics.h"
#include "pgx.h"
#include "proj_def.h"
#include "proj_loop.h"
#include "svc.h"

static atomic_int stopping;

/* Any loop may be the one that takes the signal: it tells the others. */
static int stop_on_signal(void *ctx)
{
    if (atomic_load(&stopping)) return 1;
    if (svc_signals_pending(ctx) != 0) atomic_store(&stopping, 1);
    return atomic_load(&stopping);
}

int main(void)
{
    todo_config cfg;
    todo_err err;
    sigset_t sigs;

    if (config_load(&cfg, CONFIG_PROJECTOR, NULL, NULL, &err) != 0) {
        fprintf(stderr, "todo-projector: %s\n", err.msg);
        return 2;
    }
    if (kafkax_set_security(cfg.kafka_config, &err) != 0 || kafkax_set_instance(cfg.instance, &err) != 0) {
        fprintf(stderr, "todo-projector: %s\n", err.msg);
        return 2;
    }
    log_set_level(cfg.log_level);
    if (pgx_start_check("projector", cfg.pg_url, "read,feed,analytics", !cfg.local) != 0) return 1; /* least privilege */
    svc_signals_block(&sigs); /* before librdkafka starts its threads */
    metrics_server *metrics = metrics_start("todo-projector", cfg.metrics_addr);
    proj_loop_opts o[PROJ_N_DEFS];
    proj_loops *loops[PROJ_N_DEFS] = {0};
    int started = 0;
    for (; started < PROJ_N_DEFS; started++) {
        const proj_def *d = proj_defs[started];
        o[started] = (proj_loop_opts){.cfg = &cfg, .def = d, .group = proj_def_group(d, &cfg), .schema = d->schema,
                                      .should_stop = stop_on_signal, .ctx = &sigs};
        loops[started] = proj_loops_start(&o[started], d == &proj_tasks ? cfg.projector_threads : 1, &err);
        if (loops[started] == NULL) break;
    }
    if (started < PROJ_N_DEFS) {
        log_error("projector", "cannot start", "projection=%s error=\"%s\"", proj_defs[started]->name, err.msg);
        atomic_store(&stopping, 1);
        for (int i = 0; i < started; i++) proj_loops_join(loops[i], &err);
        metrics_server_stop(metrics);
        return 1;
    }
    /* The dead-letter topic's depth (todo_dlq_depth), for the alerts. */
    dlq_watch *dlq = dlq_watch_start(cfg.kafka_brokers, &err);
    if (dlq == NULL) log_warn("projector", "no dead-letter depth gauge", "error=\"%s\"", err.msg);
    /* Until one returns: a signal (all see it) or one that could not start. */
    for (bool any = false; !any;) {
        struct timespec pause = {0, 100 * 1000000};
        nanosleep(&pause, NULL);
        for (int i = 0; i < PROJ_N_DEFS; i++) any = any || proj_loops_any_finished(loops[i]);
    }
    atomic_store(&stopping, 1);
    int rc = 0;
    for (int i = 0; i < PROJ_N_DEFS; i++) {
        todo_err jerr;
        if (proj_loops_join(loops[i], &jerr) != 0) {
            log_error("projector", "cannot start", "projection=%s error=\"%s\"", proj_defs[i]->name, jerr.msg);
            rc = 1;
        }
    }
    dlq_watch_stop(dlq);
    metrics_server_stop(metrics);
    return rc != 0 ? 1 : 0;
}
