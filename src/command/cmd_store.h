/*
 * cmd_store: the write model's SQL. A task is loaded, changed in memory by a
 * command, and saved together with its event in one atomic step that only
 * succeeds if nobody saved a newer version meanwhile (optimistic
 * concurrency: the UPDATE names the version it read).
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
#include "todo/v1/command.pb-c.h"
#include "todo_err.h"

/* A task of the write model. Strings live in the arena they were loaded
 * into (or are borrowed from the request). */
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
    int64_t version;
    int64_t created_us;
    int64_t updated_us;
} cmd_task;

/* A client's request id and what identifies the request it named. */
typedef struct cmd_request {
    const char *request_id;   /* "" or NULL: none */
    const char *rpc;          /* "CreateTask" */
    char hash[65];            /* SHA-256 of the serialized request, hex */
    int ttl_s;
} cmd_request;

/* Fills rq for msg (request_id may be empty). */
void cmd_request_init(cmd_request *rq, const char *rpc, const char *request_id, const ProtobufCMessage *msg, int ttl_s);

/* Loads task id of user into t (strings in a). TODO_ENOTFOUND when there is
 * no such task of that user; a deleted task is returned with deleted set. */
int cmd_store_load(PGconn *pg, arena *a, const char *user, const char *id, cmd_task *t, todo_err *err);

/* What to save: the task at its new version (t->version), inserted when it
 * is new (version 1) or updated from version - 1, and its event. */
typedef struct cmd_write {
    const cmd_task *task;
    const char *event_id;
    const char *event_type;
    int schema_version;
    const uint8_t *envelope;
    size_t envelope_len;
} cmd_write;

/* Saves w atomically (task row, event row and, with a request id, the
 * request record). *position receives the event's global position.
 * TODO_ECONFLICT: the task is no longer at version - 1 (nothing written).
 * TODO_EEXISTS: the request id is already taken (nothing written; look it
 * up with cmd_store_find_request). */
int cmd_store_save(PGconn *pg, const cmd_write *w, const cmd_request *rq, int64_t *position, todo_err *err);

/* Looks up a handled request. *found is false when there is none (or it
 * expired); TODO_EINVAL when the id was used for another request. On a
 * match, reply receives the first answer (strings in a). */
int cmd_store_find_request(PGconn *pg, arena *a, const char *user, const cmd_request *rq, bool *found,
                           Todo__V1__CommandReply *reply, todo_err *err);

/* Deletes request records older than ttl_s; returns how many, or -1. */
long cmd_store_purge_requests(PGconn *pg, int ttl_s, todo_err *err);

#endif
