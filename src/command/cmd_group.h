/*
 * cmd_group: group commit. Saves that arrive together (from different gRPC
 * worker threads) are written in ONE transaction: one round trip (libpq
 * pipeline: begin, each save's statement, commit) and one WAL flush for
 * all of them, instead of one each.
 *
 * Leader and followers, no thread of its own: a caller finding no batch in
 * flight writes everything queued (its own save first among them, up to a
 * batch) on its own connection; callers arriving meanwhile queue up, and
 * when the batch is done the first of them leads the next. A lone save is
 * written at once by its own caller: nothing lingers on purpose. Each save
 * keeps its own outcome: a version that moved is TODO_ECONFLICT for that
 * save only (its statement wrote nothing, the others commit). When a
 * statement fails, the transaction is rolled back and every save of the
 * batch is run again on its own, so one bad save fails alone. When the
 * connection breaks mid-way, every save of the batch gets TODO_EUNAVAIL
 * (whether the commit happened is unknown, as for a single statement;
 * request ids make the retry safe).
 *
 * A save that waits on a lock (another transaction holds its row: a
 * concurrent command, an operator's psql session, a migration) must not
 * hold the saves of everybody else: group transactions run with
 * lock_timeout; when it strikes, the batch is run again save by save (each
 * with the same bound) and a save still blocked goes back to its own
 * caller, who writes it alone on its own connection, waiting as long as
 * the lock is held while the group moves on.
 *
 * Saves with a request id do not come here (their claim and save are a
 * transaction of their own).
 */
#ifndef TODO_CMD_GROUP_H
#define TODO_CMD_GROUP_H

#include <libpq-fe.h>
#include <stdint.h>

#include "arena.h"
#include "cmd_store.h"
#include "todo_err.h"

typedef struct cmd_group cmd_group;

/* A group writing up to max_batch saves per transaction, waiting at most
 * lock_timeout_ms for a lock inside one (>= 1); NULL when out of memory.
 * free takes NULL; no save may be in progress. */
cmd_group *cmd_group_new(int max_batch, int lock_timeout_ms);
void cmd_group_free(cmd_group *g);

/* Saves w (see cmd_store_save without a request id) in the next group
 * transaction; returns once it committed or failed. pg is the caller's
 * connection (used when it leads; idle, out of any transaction), a its
 * arena for the call. Thread-safe. */
int cmd_group_save(cmd_group *g, PGconn *pg, arena *a, const cmd_write *w, int64_t *position, todo_err *err);

/* Batches committed and saves in them since the start, and saves that
 * were handed back to their callers over a lock (logs, tests). */
void cmd_group_stats(cmd_group *g, int64_t *batches, int64_t *saves, int64_t *solo);

#endif
