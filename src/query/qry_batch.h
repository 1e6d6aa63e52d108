/*
 * qry_batch: GetTask lookups that arrive together (from different gRPC
 * worker threads) share one statement: the group-commit idea applied to
 * reads (issue 19). On the bench stack, PostgreSQL answers 14,700/s
 * statements of 8 lookups by key against 22,800/s of one (pgbench, 8
 * clients): a lookup in a batch of 8 costs it about a fifth.
 *
 * Leader and followers, no thread of its own: a caller finding no lookup
 * in flight runs everything queued (up to max_batch, the oldest first) on
 * its own connection; callers arriving meanwhile queue up, and when the
 * statement is done one of them leads the next. A lone lookup is run at
 * once by its own caller with the single-row statement: nothing lingers
 * on purpose. A failed statement fails every lookup of its batch (each
 * caller answers UNAVAILABLE, as it would have alone).
 */
#ifndef TODO_QRY_BATCH_H
#define TODO_QRY_BATCH_H

#include <libpq-fe.h>
#include <stdint.h>

#include "todo_err.h"

typedef struct qry_batch qry_batch;

/* A lookup's answer: row `row` of r (qry_task_select's columns), or row -1
 * when there is no such task; qry_batch_done releases it. */
typedef struct qry_found {
    const PGresult *r;
    int row;
    void *ref;
} qry_found;

/* A batcher of up to max_batch lookups per statement (1: every lookup
 * alone); NULL when out of memory. free takes NULL; no lookup may be in
 * progress. */
qry_batch *qry_batch_new(int max_batch);
void qry_batch_free(qry_batch *b);

/* The task id of user (not deleted) into *out, TODO_OK; or TODO_EUNAVAIL
 * with err when the statement failed. id must be a UUID (text_is_uuid),
 * user a valid user id. pg is the caller's connection, used when it leads.
 * Thread-safe. */
int qry_batch_get(qry_batch *b, PGconn *pg, const char *id, const char *user, qry_found *out, todo_err *err);
void qry_batch_done(qry_found *f);

/* Statements run and lookups in them since the start (logs, tests). */
void qry_batch_stats(qry_batch *b, int64_t *statements, int64_t *lookups);

/* Lookups queued that no statement has taken yet, and lookups in the
 * statement in flight (tests). */
int qry_batch_waiting(qry_batch *b);
int qry_batch_in_flight(qry_batch *b);

#endif
