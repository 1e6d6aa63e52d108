/*
 * saga_completion: the task-completion saga, started by a task.completed
 * event. Its context: task_id, user_id, pattern_id (empty when the task is
 * not part of a series). Steps:
 *
 *   find_reminders    the task's scheduled reminders, into the context (reads
 *                     write.reminders; nothing to undo)
 *   cancel_reminders  CancelReminder for each; undo: RestoreReminder for
 *                     each this saga cancelled
 *   next_occurrence   CreateNextOccurrence when the task is in a series;
 *                     undo: DeleteTask of the occurrence this saga created
 *   notify            the task is still completed (else the saga undoes
 *                     itself: see below), then a notification.requested
 *                     (a SendNotification) into saga.outbox, published to
 *                     notifications.commands.v1 (notification id = saga id,
 *                     the dispatcher's idempotency key); nothing to undo
 *
 * Every command goes through todo-command as the task's user, with a
 * request_id derived from the saga id and the step, so a retried or resumed
 * step is answered from the first result and never acts twice. An undo asks
 * the command side the same question again with the same request_id to learn
 * whether this saga did act (the reply is replayed), so it undoes exactly
 * what this saga did, also for a step that failed half-way or timed out.
 *
 * A task reopened while its saga runs: if the reopen comes before the
 * notify step, the saga compensates (the reminders come back, no new
 * occurrence, no notification); after it, the saga has completed and the
 * reopen is an ordinary change (the occurrence stays, a task of its own).
 */
#ifndef TODO_SAGA_COMPLETION_H
#define TODO_SAGA_COMPLETION_H

#include <libpq-fe.h>

#include "config.h"
#include "grpcx_client.h"
#include "saga_core.h"

/* What the steps use; one per worker thread. */
typedef struct saga_completion_app {
    const todo_config *cfg;
    PGconn *pg;                 /* the saga role: reads write.reminders, write.tasks; saga.outbox */
    grpcx_channel *command;     /* todo-command */
} saga_completion_app;

extern const saga_def saga_completion_def;

#endif
