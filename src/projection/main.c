/*
 * todo-projector: the live projection. Consumes tasks.events.v1 in consumer
 * group projection-task-read-v1 (TODO_PROJECTOR_GROUP) and applies the events
 * to the read schema (proj_loop). SIGINT or SIGTERM stop it after the batch
 * in flight.
 */
#include <stdio.h>

#include "config.h"
#include "log.h"
#include "proj_loop.h"
#include "svc.h"

static int stop_on_signal(void *ctx) { return svc_signals_pending(ctx) != 0; }

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
    if (proj_loop_run(&o, &err) != 0) {
        log_error("projector", "cannot start", "error=\"%s\"", err.msg);
        return 1;
    }
    return 0;
}
