/*
 * cmd_service: see cmd_service.h. The registration table, the worker
 * threads' state, and the audit wrapper every handler runs in. The handlers
 * live in cmd_tasks.c, cmd_reminders.c and cmd_patterns.c; the path they
 * share in cmd_core.c.
 */
#include "cmd_service.h"

#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>

#include "cmd_core.h"
#include "pgx.h"

void *cmd_thread_init(void *app, int index)
{
    cmd_thread *t = calloc(1, sizeof *t);
    if (t == NULL) abort();
    t->app = app;
    t->cfg = t->app->cfg;
    t->index = index;
    snprintf(t->app_name, sizeof t->app_name, "todo-command-%d", index);
    t->tokens = auth_cache_new((size_t)t->cfg->token_cache);
    return t; /* connects on first use, and again after a lost connection */
}

void cmd_thread_cleanup(void *state)
{
    cmd_thread *t = state;
    if (t == NULL) return;
    pgx_close(t->pg);
    auth_cache_free(t->tokens);
    free(t);
}

PGconn *cmd_thread_pg(grpcx_call *c, todo_err *err)
{
    cmd_thread *t = grpcx_call_state(c);
    return pgx_ensure(&t->pg, t->cfg->pg_url, t->app_name, err) == 0 ? t->pg : NULL;
}

int cmd_authenticate(grpcx_call *c, todo_err *err)
{
    cmd_thread *t = grpcx_call_state(c);
    auth_identity id;
    auth_rules rules = AUTH_RULES_OF(t->cfg);
    int rc = auth_cache_verify(t->tokens, t->cfg->jwt_secret, t->cfg->service_secret,
                               grpcx_call_metadata(c, "authorization"), (long)time(NULL), &rules, &id, err);
    if (rc == TODO_OK) {
        grpcx_call_set_user(c, id.user);
        if (id.service[0] != '\0') {
            grpcx_call_set_service(c, id.service);
            grpcx_call_set_scope(c, id.scope);
        }
        return TODO_OK;
    }
    /* Refused before its body is read: the record has no target or request
     * id, and an attacker cannot flood the trail (audit_emit_refused). */
    audit_entry e = {.user_id = "", .rpc = grpcx_call_method(c), .outcome = grpcx_code_name(grpcx_status_of(rc)),
                     .message = err->msg, .correlation_id = grpcx_call_metadata(c, "x-correlation-id")};
    if (t->app->audit != NULL) audit_emit_refused(t->app->audit, &e);
    return rc;
}

/* The string field name of a request, or NULL. */
static const char *string_field(const ProtobufCMessage *m, const char *name)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
    if (f == NULL || f->type != PROTOBUF_C_TYPE_STRING) return NULL;
    return *(char *const *)((const char *)m + f->offset);
}

/* Runs a handler and leaves one audit record of what happened. The target
 * is the reply's id, or else the id the request named. */
static int audited(grpcx_call *c, grpcx_unary_fn fn, const ProtobufCMessage *req, ProtobufCMessage **resp,
                   todo_err *err)
{
    static const char *const target_fields[] = {"task_id", "reminder_id", "pattern_id"};
    cmd_thread *t = grpcx_call_state(c);
    t->audit_user[0] = t->audit_correlation[0] = '\0';
    int rc = fn(c, req, resp, err);
    const Todo__V1__CommandReply *rp = rc == 0 ? (const Todo__V1__CommandReply *)*resp : NULL;
    const char *target = rp != NULL ? rp->id : NULL;
    for (size_t i = 0; target == NULL && i < 3; i++) target = string_field(req, target_fields[i]);
    audit_entry e = {
        .user_id = t->audit_user, .rpc = grpcx_call_method(c), .target_id = target,
        .outcome = grpcx_code_name(grpcx_status_of(rc)), .message = rc != 0 ? err->msg : NULL,
        .correlation_id = t->audit_correlation, .request_id = string_field(req, "request_id"),
        .version = rp != NULL ? rp->version : 0,
    };
    if (t->app->audit != NULL) audit_emit(t->app->audit, &e);
    return rc;
}

/* The commands only todo's own services call (todo-saga's compensation,
 * the reminder scheduler, the recurrence step): with a user's token they
 * answer PERMISSION_DENIED (a user could otherwise restore reminders past
 * the limit, or fire them early). */
static int internal_only(grpcx_call *c, grpcx_unary_fn fn, const ProtobufCMessage *req, ProtobufCMessage **resp,
                         todo_err *err)
{
    if (!grpcx_call_has_scope(c, AUTH_SCOPE_INTERNAL)) {
        cmd_thread *t = grpcx_call_state(c);
        snprintf(t->audit_user, sizeof t->audit_user, "%s", grpcx_call_user(c) ? grpcx_call_user(c) : "");
        const char *m = strrchr(grpcx_call_method(c), '/');
        return todo_err_set(err, TODO_EDENIED,
                            "%s is for todo's own services (a service token with scope internal), not for user tokens",
                            m != NULL ? m + 1 : grpcx_call_method(c));
    }
    return fn(c, req, resp, err);
}

#define INTERNAL(fn)                                                                                        \
    static int fn##_internal(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err) \
    {                                                                                                       \
        return internal_only(c, fn, req, resp, err);                                                       \
    }
INTERNAL(cmd_restore_reminder)
INTERNAL(cmd_trigger_reminder)
INTERNAL(cmd_next_occurrence)
INTERNAL(cmd_retract_occurrence)
INTERNAL(cmd_deliver_in_app)

#define AUDITED(fn)                                                                                         \
    static int fn##_audited(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err) \
    {                                                                                                       \
        return audited(c, fn, req, resp, err);                                                             \
    }
AUDITED(cmd_create_task)
AUDITED(cmd_update_task)
AUDITED(cmd_complete_task)
AUDITED(cmd_reopen_task)
AUDITED(cmd_delete_task)
AUDITED(cmd_restore_task)
AUDITED(cmd_schedule_reminder)
AUDITED(cmd_cancel_reminder)
AUDITED(cmd_snooze_reminder)
AUDITED(cmd_restore_reminder_internal)
AUDITED(cmd_trigger_reminder_internal)
AUDITED(cmd_next_occurrence_internal)
AUDITED(cmd_retract_occurrence_internal)
AUDITED(cmd_create_pattern)
AUDITED(cmd_update_pattern)
AUDITED(cmd_set_preferences)
AUDITED(cmd_deliver_in_app_internal)
AUDITED(cmd_mark_read)
AUDITED(cmd_erase_user)

int cmd_service_register(grpcx_server *s, todo_err *err)
{
    static const grpcx_method methods[] = {
        {"CreateTask", cmd_create_task_audited},
        {"UpdateTask", cmd_update_task_audited},
        {"CompleteTask", cmd_complete_task_audited},
        {"ReopenTask", cmd_reopen_task_audited},
        {"DeleteTask", cmd_delete_task_audited},
        {"RestoreTask", cmd_restore_task_audited},
        {"ScheduleReminder", cmd_schedule_reminder_audited},
        {"CancelReminder", cmd_cancel_reminder_audited},
        {"SnoozeReminder", cmd_snooze_reminder_audited},
        {"RestoreReminder", cmd_restore_reminder_internal_audited},
        {"TriggerReminder", cmd_trigger_reminder_internal_audited},
        {"CreateRecurringPattern", cmd_create_pattern_audited},
        {"UpdateRecurringPattern", cmd_update_pattern_audited},
        {"CreateNextOccurrence", cmd_next_occurrence_internal_audited},
        {"RetractOccurrence", cmd_retract_occurrence_internal_audited},
        {"SetNotificationPreferences", cmd_set_preferences_audited},
        {"DeliverInAppNotification", cmd_deliver_in_app_internal_audited},
        {"MarkNotificationRead", cmd_mark_read_audited},
        {"EraseUser", cmd_erase_user_audited},
    };
    return grpcx_server_add_service(s, &todo__v1__task_command_service__descriptor, methods,
                                    sizeof methods / sizeof methods[0], err);
}
