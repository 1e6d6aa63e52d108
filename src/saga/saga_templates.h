/*
 * saga_templates: what each kind of notification says, in one place.
 *
 * Every template names the task by its title (quoted as given; the caller
 * cuts it on a character boundary). Subjects are one line; bodies plain
 * text. Kinds:
 *   reminder due             (saga_remind.c: a reminder fired)
 *   task completed           (the completion saga's notice)
 *   recurring task created   (the same notice when the completion made the
 *                             next task of its series: when it is due)
 *   saga compensated         (the completion could not be finished and was
 *                             undone: in the user's inbox)
 * Strings live in a.
 */
#ifndef TODO_SAGA_TEMPLATES_H
#define TODO_SAGA_TEMPLATES_H

#include <stdbool.h>
#include <stdint.h>

#include "arena.h"

typedef struct saga_message {
    const char *subject, *body;
} saga_message;

saga_message saga_template_reminder_due(arena *a, const char *title);
saga_message saga_template_task_completed(arena *a, const char *title);

/* next_due_us: the new task's due time (microseconds since the epoch, UTC),
 * or 0 when it has none. */
saga_message saga_template_recurring_created(arena *a, const char *title, int64_t next_due_us);

/* what: the step that could not be done, in the user's words ("creating the
 * next task of its series"); failed: it failed (else an operator stopped
 * it). */
saga_message saga_template_saga_compensated(arena *a, const char *title, const char *what, bool failed);

#endif
