/*
 * proj_apply: applies events to a projection's model (the runtime's batch;
 * the events' handlers are the projection's definition, proj_def.h). What
 * follows describes it for the task read model (proj_tasks.c); the
 * analytics model (proj_analytics.c) is applied the same way.
 *
 * A batch of Kafka records is applied in ONE transaction. Each event is
 * applied at most once per aggregate version: read.applied_versions holds
 * the highest version applied per aggregate, checked and updated in the same
 * transaction as the read-model write, so a re-delivered event (after a crash
 * between the database commit and the offset commit) changes nothing. A
 * version gap (an event arrives whose predecessor was never applied) is
 * logged as a warning and the event applied.
 *
 * A record that cannot be decoded or applied (not an envelope, an unknown
 * event type or schema version, a payload that does not decode or makes no
 * sense) is "dead": the batch goes on without it and the caller sends it to
 * the dead-letter topic, and so is a record whose schema id the registry
 * does not know, or knows as a version this build cannot read (see
 * reg_local.h; with status->schemas set). Old schema versions are upcast to the current one
 * (task.created v1 -> v2: no category). Projected today: task.created,
 * task.updated (only the fields it names), task.completed, task.reopened,
 * task.deleted and task.restored (a deleted task keeps its row, hidden from
 * queries), recurring_pattern.created (marks the template task) and
 * recurring_pattern.updated (nothing to show), and from reminders.events.v1
 * reminder.scheduled, .cancelled, .snoozed, .restored and .triggered
 * (read.reminders), from users.events.v1 the inbox (read.notifications),
 * and from saga.events.v1 each saga's latest state (read.task_sagas).
 *
 * Before the handlers see a record, sealed personal fields are opened with
 * the user's data key (seal.h, keystore.h; status->keys), and every event
 * of an erased user but user.erased is skipped (not claimed): a replay
 * builds no row of theirs.
 *
 * Every committed batch also records its counters (projection_status)
 * and, per partition, the offset after its last record
 * (projection_offsets), and notifies read_progress (read-your-writes:
 * queries wait on applied_versions, ctoken.h).
 * Table names are unqualified: the connection's search_path names the copy
 * of the read model (the schema "read", or a rebuild's shadow schema).
 */
#ifndef TODO_PROJ_APPLY_H
#define TODO_PROJ_APPLY_H

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <stdbool.h>

#include "arena.h"
#include "proj_def.h"
#include "todo_err.h"

typedef struct proj_stats {
    int applied;
    int skipped;    /* already applied (duplicates) */
    int dead;       /* see dead_reason */
    int failed;     /* on a failed batch: the record that failed alone for a
                     * reason that may pass (deadlock, serialization, lock or
                     * statement time-out), or -1 */
} proj_stats;

/* Applies the n records of msgs (records with msg->err set are ignored).
 * dead_reason (n entries) receives, for each dead record, why (in a); NULL
 * for the others; an entry the caller set beforehand dead-letters its
 * record without applying it (the caller gave up on it). A record the
 * database refuses for a reason retrying cannot change is dead-lettered
 * alone, the others applied. Returns TODO_OK once the transaction
 * committed, or a status after rolling back: the caller retries the same
 * batch (TODO_EUNAVAIL: the database is away; otherwise stats->failed names
 * the record that failed, when one did). */

/* What the batch transaction also records in read.projection_status. */
typedef struct proj_status {
    const proj_def *def;      /* the projection applied */
    const char *projection;   /* the consumer group */
    const char *last_error;   /* a failure seen since the last batch, or NULL */
    bool shadow;              /* a rebuild's copy: does not take the swap lock */
    struct proj_cache *cache; /* the Redis fast path, or NULL */
    struct reg_resolver *schemas; /* resolves the records' schema ids (reg_local.h), or NULL: ids not checked */
    struct keystore *keys;    /* the users' data keys (keystore.h): sealed fields opened, erased users skipped */
    /* Per applied event, its time (the envelope's) to its batch's commit;
     * NULL: not observed (a rebuild's replay of old events). */
    struct metric_series *delay;
} proj_status;

/* proj_apply_batch, also recording status in the batch's transaction. */
int proj_apply_batch_status(PGconn *pg, rd_kafka_message_t **msgs, size_t n, arena *a, const char **dead_reason,
                            const proj_status *status, proj_stats *stats, todo_err *err);

#endif
