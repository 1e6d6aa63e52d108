/*
 * qry_batch: reads that arrive together (from different gRPC worker
 * threads) share one statement: the group-commit idea applied to reads
 * (issue 19). Two kinds: GetTask's lookup of a task by id and user, and
 * ListTasks' first page in the default order with no filter (the chatbot's
 * "my tasks"). On the bench stack PostgreSQL answers 14,700 statements/s of
 * 8 lookups against 22,800/s of one, and 2,600/s of 8 first pages against
 * 12,300/s of one (pgbench, 8 clients): a read in a batch of 8 costs it a
 * fifth (lookups) or 60% (pages) of one alone.
 *
 * Two ways to run: the pump below (threads of its own that answer
 * through a callback: todo-query's default), or leader and followers with
 * no thread of its own: a caller finding no
 * statement in flight runs everything queued (up to max_batch, the oldest
 * first) on its own connection; callers arriving meanwhile queue up, and
 * when the statement is done one of them leads the next. A lone read is run
 * at once by its own caller with the statement it would run alone: nothing
 * lingers on purpose. A failed statement fails every read of its batch
 * (each caller answers UNAVAILABLE, as it would have alone).
 */
#ifndef TODO_QRY_BATCH_H
#define TODO_QRY_BATCH_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "arena.h"
#include "todo_err.h"

typedef enum qry_batch_kind {
    QRY_BATCH_GET,  /* a task by id and user (qry_batch_get) */
    QRY_BATCH_LIST, /* a user's newest tasks (qry_batch_list) */
} qry_batch_kind;

typedef struct qry_batch qry_batch;

/* A read's answer, in rows of r (qry_task_select's columns, then for
 * lists the page key): row `row` (-1: no such task) for a lookup, rows[0..
 * n_rows) for a list. qry_batch_done releases it. */
typedef struct qry_found {
    const PGresult *r;
    int row;
    void *ref;
} qry_found;

/* A batcher of up to max_batch reads of kind per statement (1: every read
 * alone); NULL when out of memory. free takes NULL; no read may be in
 * progress. */
qry_batch *qry_batch_new(qry_batch_kind kind, int max_batch);
void qry_batch_free(qry_batch *b);

/* GET: the task id of user (not deleted) into *out, TODO_OK; or
 * TODO_EUNAVAIL with err when the statement failed. id must be a UUID
 * (text_is_uuid), user a valid user id. pg is the caller's connection,
 * used when it leads. Thread-safe. */
int qry_batch_get(qry_batch *b, PGconn *pg, const char *id, const char *user, qry_found *out, todo_err *err);

/* LIST: the first limit (1..1000) tasks of user not deleted, newest first
 * (created_at desc, id desc), as row numbers of out->r in rows (room for
 * limit) and their count in *n_rows; the page key (qry_sort_text of
 * created_at) is column 15. Otherwise as qry_batch_get. */
int qry_batch_list(qry_batch *b, PGconn *pg, const char *user, int limit, int *rows, int *n_rows, qry_found *out,
                   todo_err *err);

void qry_batch_done(qry_found *f);

/* ---- the pump: reads answered by threads of their own ----
 *
 * qry_batch_pump starts threads that each keep a connection (pg_url) and
 * run what is queued, up to max_batch reads a statement; a caller queues a
 * read with qry_batch_get_later or qry_batch_list_later and goes on (a
 * gRPC worker that does not block on PostgreSQL). answer then runs on a
 * pump thread with the read's outcome, as qry_batch_get or qry_batch_list
 * give it, and an arena for the reply (reset after; p->f is released
 * after answer returns). qry_batch_free answers everything queued, then
 * stops the threads. id and user are copied (id a UUID, user a valid
 * user id: at most AUTH_USER_MAX - 1 bytes). */
typedef struct qry_pumped {
    int rc;              /* TODO_OK, or TODO_EUNAVAIL with err */
    const todo_err *err;
    qry_found f;
    const char *id;      /* GET: the task id asked for (f.row: -1 when none) */
    int limit;           /* LIST: the limit asked for, and the rows of f.r found, in order */
    const int *rows;
    int n_rows;
} qry_pumped;
typedef void (*qry_batch_answer)(void *ctx, const qry_pumped *p, arena *a);
int qry_batch_pump(qry_batch *b, const char *pg_url, int threads, todo_err *err);
bool qry_batch_pumped(const qry_batch *b);
void qry_batch_get_later(qry_batch *b, const char *id, const char *user, qry_batch_answer answer, void *ctx);
void qry_batch_list_later(qry_batch *b, const char *user, int limit, qry_batch_answer answer, void *ctx);

/* Statements run and reads in them since the start (logs, tests). */
void qry_batch_stats(qry_batch *b, int64_t *statements, int64_t *reads);

/* Reads queued that no statement has taken yet, and reads in the
 * statement in flight (tests). */
int qry_batch_waiting(qry_batch *b);
int qry_batch_in_flight(qry_batch *b);

#endif
