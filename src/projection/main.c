/*
 * todo-projector: the live projection. Consumes tasks.events.v1 and
 * reminders.events.v1 in consumer group projection-task-read-v1
 * (TODO_PROJECTOR_GROUP) and applies the events to the read schema
 * (proj_loop), with TODO_PROJECTOR_THREADS loops in the group (Kafka splits
 * the partitions among them; a user's events stay in one partition, so in
 * order). SIGINT or SIGTERM stop it after the batches in flight.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#include "config.h"
#include "dlq_watch.h"
#include "kafkax.h"
#include "log.h"
#include "metrics.h"
#include "pgx.h"
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
    if (pgx_start_check("projector", cfg.pg_url, "read,feed", !cfg.local) != 0) return 1; /* least privilege */
    svc_signals_block(&sigs); /* before librdkafka starts its threads */
    metrics_server *metrics = metrics_start("todo-projector", cfg.metrics_addr);
    proj_loop_opts o = {.cfg = &cfg, .group = cfg.projector_group, .schema = "read", .should_stop = stop_on_signal,
                        .ctx = &sigs};
    proj_loops *loops = proj_loops_start(&o, cfg.projector_threads, &err);
    if (loops == NULL) {
        log_error("projector", "cannot start", "error=\"%s\"", err.msg);
        metrics_server_stop(metrics);
        return 1;
    }
    /* The dead-letter topic's depth (todo_dlq_depth), for the alerts. */
    dlq_watch *dlq = dlq_watch_start(cfg.kafka_brokers, &err);
    if (dlq == NULL) log_warn("projector", "no dead-letter depth gauge", "error=\"%s\"", err.msg);
    /* Until one returns: a signal (all see it) or one that could not start. */
    while (!proj_loops_any_finished(loops)) {
        struct timespec pause = {0, 100 * 1000000};
        nanosleep(&pause, NULL);
    }
    atomic_store(&stopping, 1);
    int rc = proj_loops_join(loops, &err);
    dlq_watch_stop(dlq);
    if (rc != 0) log_error("projector", "cannot start", "error=\"%s\"", err.msg);
    metrics_server_stop(metrics);
    return rc != 0 ? 1 : 0;
}
