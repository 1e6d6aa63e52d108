/* saga_scheduler: see saga_scheduler.h. */
#include "saga_scheduler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "event.h"
#include "grpcx.h"
#include "log.h"
#include "pgx.h"
#include "todo/v1/command.pb-c.h"

#define TICK_MAX 100 /* reminders per tick */

/* Fires one reminder; returns the gRPC status. */
static grpc_status_code fire(saga_scheduler *s, const char *id, const char *user, const char *version,
                             grpcx_result *res)
{
    todo_err e;
    char auth[1200], rid[160];
    char *tok = auth_issue(s->cfg->jwt_secret, user, 300, (long)time(NULL), &e);
    if (tok == NULL) {
        snprintf(res->message, sizeof res->message, "%s", e.msg);
        return GRPC_STATUS_INTERNAL;
    }
    snprintf(auth, sizeof auth, "Bearer %s", tok);
    free(tok);
    Todo__V1__TriggerReminderRequest rq = TODO__V1__TRIGGER_REMINDER_REQUEST__INIT;
    snprintf(rid, sizeof rid, "fire:%s:%s", id, version);
    rq.request_id = rid;
    rq.reminder_id = (char *)id;
    rq.expected_version = strtoll(version, NULL, 10);
    ProtobufCMessage *resp = NULL;
    grpc_status_code code = grpcx_unary(s->command, "/todo.v1.TaskCommandService/TriggerReminder", &rq.base,
                                        &todo__v1__command_reply__descriptor, auth, 5000, &resp, res);
    if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
    return code;
}

int saga_scheduler_tick(saga_scheduler *s, int *fired, todo_err *err)
{
    int n = 0;
    if (fired != NULL) *fired = 0;
    PGresult *r = pgx_exec(s->pg,
                           "select r.id::text, r.user_id, r.version, (extract(epoch from r.remind_at) * 1000000)::bigint"
                           " from write.reminders r join write.tasks t on t.id = r.task_id"
                           " where r.status = 'scheduled' and r.remind_at <= now()"
                           " and t.completed_at is null and t.deleted_at is null"
                           " order by r.remind_at limit " "100",
                           0, NULL, err);
    if (r == NULL) return err->code;
    for (int i = 0; i < PQntuples(r) && i < TICK_MAX; i++) {
        const char *id = PQgetvalue(r, i, 0), *user = PQgetvalue(r, i, 1), *version = PQgetvalue(r, i, 2);
        int64_t due_us = strtoll(PQgetvalue(r, i, 3), NULL, 10);
        grpcx_result res;
        grpc_status_code code = fire(s, id, user, version, &res);
        double delay_ms = (double)(event_now_us() - due_us) / 1000.0;
        if (code == GRPC_STATUS_OK) {
            n++;
            s->fired++;
            if (delay_ms > s->max_delay_ms) s->max_delay_ms = delay_ms;
            log_info("scheduler", "reminder fired", "reminder=%s user=%s delay_ms=%.1f", id, user, delay_ms);
        } else if (code == GRPC_STATUS_ABORTED || code == GRPC_STATUS_FAILED_PRECONDITION ||
                   code == GRPC_STATUS_NOT_FOUND) {
            log_debug("scheduler", "reminder not fired here", "reminder=%s status=%s reason=\"%s\"", id,
                      grpcx_code_name(code), res.message);
        } else {
            log_warn("scheduler", "firing a reminder failed; trying again", "reminder=%s status=%s error=\"%s\"", id,
                     grpcx_code_name(code), res.message);
        }
    }
    PQclear(r);
    if (fired != NULL) *fired = n;
    return TODO_OK;
}
