/*
 * saga_scheduler: the reminder scheduler of todo-saga.
 *
 * Every TODO_SCHEDULER_POLL_MS it asks PostgreSQL for due reminders (status
 * scheduled, remind_at reached, task neither completed nor deleted; the
 * reminders_due index) and fires each through todo-command's
 * TriggerReminder as its user, naming the version it saw. The command side
 * turns it fired and records reminder.triggered in one transaction, so a
 * reminder fires exactly once even with several schedulers: the others get
 * ABORTED (another fired it) or FAILED_PRECONDITION (it changed) and move
 * on. Nothing is scheduled in memory: due times live in write.reminders, so
 * a restart loses nothing, and a snoozed or cancelled reminder simply is not
 * due (or not scheduled) any more.
 */
#ifndef TODO_SAGA_SCHEDULER_H
#define TODO_SAGA_SCHEDULER_H

#include <libpq-fe.h>

#include "config.h"
#include "grpcx_client.h"
#include "todo_err.h"

typedef struct saga_scheduler {
    const todo_config *cfg;
    PGconn *pg;               /* the saga role */
    grpcx_channel *command;
    long long fired;          /* by this instance */
    double max_delay_ms;      /* the largest remind_at -> fired delay seen */
} saga_scheduler;

/* Fires the reminders due now; *fired (may be NULL) gets how many this call
 * fired. A database failure is returned (the caller reconnects and tries
 * again); a reminder that could not be fired is logged and tried again on
 * the next tick. */
int saga_scheduler_tick(saga_scheduler *s, int *fired, todo_err *err);

#endif
