/* saga_templates: see saga_templates.h. */
#include "saga_templates.h"

#include <time.h>

saga_message saga_template_reminder_due(arena *a, const char *title)
{
    return (saga_message){arena_printf(a, "Reminder: %s", title),
                          arena_printf(a, "Your reminder for \"%s\" is due now.", title)};
}

saga_message saga_template_task_completed(arena *a, const char *title)
{
    return (saga_message){"Task completed", arena_printf(a, "You completed \"%s\".", title)};
}

saga_message saga_template_recurring_created(arena *a, const char *title, int64_t next_due_us)
{
    char due[64] = "";
    if (next_due_us != 0) {
        time_t t = (time_t)(next_due_us / 1000000);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(due, sizeof due, ", due %a %d %b %Y %H:%M UTC,", &tm);
    }
    return (saga_message){arena_printf(a, "Next up: %s", title),
                          arena_printf(a, "You completed \"%s\". The next one%s is on your list.", title, due)};
}

saga_message saga_template_saga_compensated(arena *a, const char *title, const char *what, bool failed)
{
    return (saga_message){
        arena_printf(a, "Could not finish completing \"%s\"", title),
        arena_printf(a,
                     "\"%s\" stays completed, but %s %s, so what its completion had changed was undone "
                     "(its reminders are back; no next task of its series was made). Nothing else changed.",
                     title, what, failed ? "failed" : "stopped it")};
}
