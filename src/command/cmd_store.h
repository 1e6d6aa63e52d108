/*
 * cmd_store: the write model's SQL shared by every aggregate (tasks,
 * reminders, recurring patterns).
 *
 * A command saves an aggregate's new state and its event in ONE statement:
 * the kind's state statement (an INSERT at version 1, or an UPDATE ... WHERE
 * version = v - 1) feeds the event INSERT, so either both rows are written or
 * neither, and a concurrent save of the same version makes it write nothing
 * (optimistic concurrency).
 *
 * Requests carrying a client request_id are saved in a transaction that
 * first claims the id in write.requests, so a retried or concurrent duplicate
 * finds the first one's record and answers with it, and the same id with a
 * different request is recognized by its hash.
 *
 * The PGconn is the calling worker thread's.
 */
#ifndef TODO_CMD_STORE_H
#define TODO_CMD_STORE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "arena.h"
#include "pgx.h"
#include "todo/v1/command.pb-c.h"
#include "todo_err.h"

/* A client's request id and what identifies the request it named. */
typedef struct cmd_request {
    const char *request_id;   /* "" or NULL: none */
    const char *rpc;          /* "CreateTask" */
    char hash[65];            /* SHA-256 of the serialized request, hex */
    int ttl_s;
} cmd_request;

/* Fills rq for msg (request_id may be empty). */
void cmd_request_init(cmd_request *rq, const char *rpc, const char *request_id, const ProtobufCMessage *msg, int ttl_s);

/* One save: the aggregate's state statement and its event. */
typedef struct cmd_write {
    const char *aggregate_type;     /* "task" */
    const char *aggregate_id;
    const char *user_id;
    int64_t version;                /* the new version */
    const char *state_sql;          /* "... returning 1", parameters $1..$n_state */
    const char *const *state_params;
    int n_state;
    const char *event_id;
    const char *event_type;
    int schema_version;
    const uint8_t *envelope;
    size_t envelope_len;
} cmd_write;

/* The one statement that saves w (state row and event row) without a
 * request id, in a: "with s as (<state>) insert into write.events ... from s
 * returning position". cmd_store_saved reads its result: *position, or
 * TODO_ECONFLICT when the state statement wrote nothing (the version moved).
 * For cmd_group, which runs many in one transaction. */
void cmd_store_save_stmt(arena *a, const cmd_write *w, pgx_stmt *out);
int cmd_store_saved(const PGresult *r, const cmd_write *w, int64_t *position, todo_err *err);

/* Saves w atomically (state row, event row and, with a request id, the
 * request record). *position receives the event's global position.
 * TODO_ECONFLICT: the state statement wrote nothing (the version moved);
 * nothing was written. TODO_EEXISTS: the request id is taken (nothing
 * written; look it up with cmd_store_find_request). */
int cmd_store_save(PGconn *pg, const cmd_write *w, const cmd_request *rq, int64_t *position, todo_err *err);

/* Looks up a handled request. *found is false when there is none (or it
 * expired); TODO_EINVAL when the id was used for another request. On a
 * match, reply receives the first answer (strings in a), all but its
 * consistency token, which the caller makes (ctoken.h). */
int cmd_store_find_request(PGconn *pg, arena *a, const char *user, const cmd_request *rq, bool *found,
                           Todo__V1__CommandReply *reply, todo_err *err);

/* Deletes request records older than ttl_s; returns how many, or -1. */
long cmd_store_purge_requests(PGconn *pg, int ttl_s, todo_err *err);

/* Helpers for state statements: an optional time as text (NULL when absent),
 * microseconds from a column of row 0 (0 and *present=false when NULL). */
const char *cmd_store_time(arena *a, bool present, int64_t us);
int64_t cmd_store_us(const PGresult *r, int col, bool *present);

#endif
