/* The starter role of todo-saga (see saga_proc.h): task.completed -> a saga. */
#include <stdio.h>
#include <string.h>

#include "arena.h"
#include "event.h"
#include "log.h"
#include "saga_completion.h"
#include "saga_proc.h"
#include "saga_store.h"
#include "text.h"
#include "topic_names.h"
#include "todo/v1/events.pb-c.h"

#define BATCH 100

/* Starts the saga of a task.completed record (other events are not ours). */
static int start_saga(saga_proc *p, PGconn *pg, const rd_kafka_message_t *m, void *ctx, todo_err *err)
{
    (void)ctx;
    arena *a = arena_new();
    Todo__V1__EventEnvelope *env;
    int rc = saga_proc_envelope(p, pg, m, "task.completed", a, &env, err);
    if (rc != TODO_OK || env == NULL) { /* undecodable, the registry away, or not ours */
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
    saga_record_set(&r, "correlation_id", env->correlation_id);
    const char *tp = event_traceparent(env);
    if (tp != NULL) saga_record_set(&r, "traceparent", tp);
    bool inserted = false;
    if ((rc = saga_init(&saga_completion_def, &r, err)) == 0)
        rc = saga_store_insert(pg, &r, saga_completion_def.n_steps, env->user_id, &inserted, err);
    if (rc == 0 && inserted) log_info("saga", "started", "saga=%s type=%s task=%s", r.id, r.type, ev->task_id);
    arena_free(a);
    /* A refusal by the database is not the record's fault: tried again. */
    return rc == TODO_EINVAL ? TODO_EINTERNAL : rc;
}

void *saga_starter_main(void *proc)
{
    saga_proc_consume(proc, "saga", SAGA_STARTER_GROUP, TOPIC_TASKS, BATCH, "todo-saga-consumer", start_saga, NULL);
    return NULL;
}
