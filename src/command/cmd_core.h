/*
 * cmd_core: internal to src/command. The path every command takes, shared
 * by the task, reminder and recurring-pattern handlers:
 *
 *   cmd_begin    authenticate (user id from the token only), check the
 *                request id, take the correlation id, connect;
 *   cmd_replay   a retried request id: answer with the first answer;
 *   cmd_mutate   load the aggregate (NOT_FOUND), check expected_version
 *                (ABORTED naming the current version), apply the change in
 *                memory (producing the event), save at the next version; a
 *                concurrent save makes it start over after a jittered pause
 *                (or answer ABORTED when the caller named a version);
 *   cmd_save     encode the event and save state + event atomically, then
 *                build the CommandReply.
 *
 * Each aggregate kind says how to load it and how to write its state
 * (cmd_kind). Everything runs on the gRPC worker thread of the call.
 */
#ifndef TODO_CMD_CORE_H
#define TODO_CMD_CORE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "arena.h"
#include "auth.h"
#include "auth_cache.h"
#include "cmd_service.h"
#include "cmd_store.h"
#include "grpcx.h"

typedef struct cmd_thread {
    const todo_config *cfg;
    const cmd_app *app;
    PGconn *pg;
    auth_cache *tokens;        /* tokens this worker verified (TODO_TOKEN_CACHE) */
    int index;                 /* the worker's number */
    char app_name[32];
    /* What the audit record of the call being handled needs to know. */
    char audit_user[AUTH_USER_MAX];
    char audit_correlation[132];
} cmd_thread;

/* One command in progress. */
typedef struct cmd_ctx {
    grpcx_call *call;
    cmd_thread *t;
    arena *a;
    const char *rpc;
    char user[AUTH_USER_MAX];
    const char *correlation_id;
    const char *causation_id;    /* x-causation-id, or "call:<span id>" */
    const char *traceparent;     /* the call's span (trace.h) for the events written */
    const char *actor;           /* the events' actor: the service acting for the user, else the user */
    cmd_request req;
} cmd_ctx;

/* An aggregate kind. */
typedef struct cmd_kind {
    const char *aggregate_type;   /* "task", "reminder", "recurring_pattern" */
    /* Loads aggregate id of x->user into *agg (allocated in x->a) and its
     * version: TODO_ENOTFOUND when there is none. */
    int (*load)(cmd_ctx *x, const char *id, void **agg, int64_t *version, todo_err *err);
    /* The statement writing agg at version (an INSERT at 1, an UPDATE from
     * version - 1 otherwise), ending in "returning 1". */
    void (*state)(cmd_ctx *x, const void *agg, int64_t version, int64_t now, const char **sql,
                  const char *const **params, int *n);
} cmd_kind;

/* A command's change to a loaded aggregate: mutates agg and returns its
 * event (type, schema version, message in x->a), or a refusal. */
typedef int (*cmd_change_fn)(cmd_ctx *x, void *agg, const void *arg, int64_t now, const char **type, int *schema,
                             ProtobufCMessage **event, todo_err *err);

int cmd_begin(cmd_ctx *x, grpcx_call *c, const char *rpc, const char *request_id, const ProtobufCMessage *msg,
              todo_err *err);
int cmd_replay(cmd_ctx *x, ProtobufCMessage **resp, todo_err *err);
int cmd_save(cmd_ctx *x, const cmd_kind *k, const char *id, const void *agg, int64_t version, int64_t now,
             const char *type, int schema, const ProtobufCMessage *event, ProtobufCMessage **resp, todo_err *err);
int cmd_mutate(cmd_ctx *x, const cmd_kind *k, const char *id, int64_t expected, cmd_change_fn fn, const void *arg,
               ProtobufCMessage **resp, todo_err *err);

/* Encodes event as the envelope of type at version of aggregate id, with
 * a new event id (in event_id). */
int cmd_encode(cmd_ctx *x, const char *aggregate_type, const char *id, int64_t version, int64_t now, const char *type,
               int schema, const ProtobufCMessage *event, char event_id[37], uint8_t **env, size_t *env_len,
               todo_err *err);

/* The caller's data key (keystore.h), made at their first command;
 * *register_user says the user is to be registered (cmd_user_register)
 * before the command's event is saved. TODO_EPRECOND when the user was
 * erased. */
struct seal_key;
int cmd_user_key(cmd_ctx *x, struct seal_key *key, bool *register_user, todo_err *err);

/* Records user.registered for the caller. */
int cmd_user_register(cmd_ctx *x, todo_err *err);

/* The user aggregate's id of user (a name-based UUID). */
void cmd_user_id(const char *user, char out[37]);

/* Creates a new aggregate (version 1) through cmd_save, retrying when a
 * concurrent duplicate of the request won; agg's id is id. */
int cmd_create(cmd_ctx *x, const cmd_kind *k, const char *id, const void *agg, int64_t now, const char *type,
               int schema, const ProtobufCMessage *event, ProtobufCMessage **resp, todo_err *err);

/* Keeps the category of a storage failure, hides its detail (logged). */
int cmd_storage_error(cmd_ctx *x, todo_err *err);

/* The handlers of each aggregate (cmd_tasks.c, cmd_reminders.c,
 * cmd_patterns.c). */
int cmd_create_task(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err);
int cmd_update_task(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err);
int cmd_complete_task(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err);
int cmd_reopen_task(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err);
int cmd_delete_task(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err);
int cmd_restore_task(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err);
int cmd_schedule_reminder(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err);
int cmd_cancel_reminder(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err);
int cmd_snooze_reminder(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err);
int cmd_restore_reminder(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err);
int cmd_trigger_reminder(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err);
int cmd_next_occurrence(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err);
int cmd_retract_occurrence(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err);
int cmd_set_preferences(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err);
int cmd_deliver_in_app(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err);
int cmd_mark_read(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err);
int cmd_erase_user(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err);

/* The notification profile id of user (cmd_profiles.c): a name-based UUID. */
void cmd_profile_id(const char *user, char out[37]);
int cmd_create_pattern(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err);
int cmd_update_pattern(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err);

/* A task of the write model (strings in the call's arena or borrowed from
 * the request). */
typedef struct cmd_task {
    char id[37];
    const char *user_id;
    const char *title;
    const char *description;
    const char *category;
    int priority;
    bool has_due;
    int64_t due_us;
    char **tags;
    size_t n_tags;
    bool completed;
    int64_t completed_us;
    bool deleted;
    int64_t deleted_us;
    const char *recurring_pattern_id;   /* "" when none: its template's pattern, or the series it belongs to */
    int64_t created_us;
    /* An occurrence of a series (CreateNextOccurrence); NULL/0 otherwise. */
    const char *series_id;
    int occurrence;
    const char *generated_from;
} cmd_task;

/* The task kind. */
extern const cmd_kind cmd_task_kind;

/* Creates task t (version 1, its task.created event) through cmd_create:
 * TODO_ECONFLICT when an occurrence's generated_from is taken. */
int cmd_task_create(cmd_ctx *x, const cmd_task *t, int64_t now, ProtobufCMessage **resp, todo_err *err);

/* Loads the caller's task id for a command on one of its parts (reminders,
 * patterns): TODO_ENOTFOUND when absent or deleted; storage failures are
 * reported through cmd_storage_error. */
int cmd_load_live_task(cmd_ctx *x, const char *id, const cmd_task **t, todo_err *err);

#endif
