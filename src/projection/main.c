/*
 * todo-projector: the live projection. Consumes tasks.events.v1 and
 * reminders.events.v1 in consumer group projection-task-read-v1
 * (TODO_PROJECTOR_GROUP) and applies the events to the read schema
 * (proj_loop), with TODO_PROJECTOR_THREADS loops in the group (Kafka splits
 * the partitions among them; a user's events stay in one partition, so in
 * order). SIGINT or SIGTERM stop it after the batches in flight.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include "config.h"
#include "log.h"
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

typedef struct loop {
    const proj_loop_opts *o;
    int rc;
    todo_err err;
} loop;

static void *loop_main(void *arg)
{
    loop *l = arg;
    l->rc = proj_loop_run(l->o, &l->err);
    if (l->rc != 0) atomic_store(&stopping, 1); /* one could not start: stop all */
    return NULL;
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
    log_set_level(cfg.log_level);
    svc_signals_block(&sigs); /* before librdkafka starts its threads */
    proj_loop_opts o = {.cfg = &cfg, .group = cfg.projector_group, .schema = "read", .should_stop = stop_on_signal,
                        .ctx = &sigs};
    loop loops[8];
    pthread_t th[8];
    int n = 0;
    for (int i = 0; i < cfg.projector_threads; i++) {
        loops[i] = (loop){.o = &o};
        if (pthread_create(&th[i], NULL, loop_main, &loops[i]) != 0) break;
        n++;
    }
    int rc = n > 0 ? 0 : 1;
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        if (loops[i].rc != 0) {
            log_error("projector", "cannot start", "error=\"%s\"", loops[i].err.msg);
            rc = 1;
        }
    }
    return rc;
}
