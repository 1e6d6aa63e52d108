/*
 * cmd_outbox: the outbox (write.events) as an operator sees and steers it:
 * its backlog, the active relay, and the parked events with what can be
 * done about them (`todoctl outbox`, `todoctl outbox parked|retry|drop`).
 *
 * A parked event is one the relay could not publish and will not try again
 * by itself (see cmd_relay.h); the later events of its aggregate wait
 * behind it, so no consumer ever sees them first. An operator either
 *   - retries it (after fixing the cause, e.g. raising a topic's
 *     max.message.bytes): the relay publishes it, then the waiting events,
 *     in order; or
 *   - drops it: it leaves the outbox without reaching Kafka (dropped_at
 *     and published_at set, the row kept for the record) and the waiting
 *     events go out. Readers then miss its change: the projector applies
 *     the next event of the aggregate across the version gap (it logs the
 *     gap), so a dropped task.created leaves a task that later events
 *     cannot create; a dropped task.updated loses only the fields it named.
 *
 * Functions take a connection of a role that can read and update
 * write.events (todo_command, or the admin role todoctl uses). Thread-safe
 * as far as the connection is used by one thread.
 */
#ifndef TODO_CMD_OUTBOX_H
#define TODO_CMD_OUTBOX_H

#include <libpq-fe.h>
#include <stdint.h>

#include "todo_err.h"
#include "lock_keys.h"

/* The advisory lock the one active relay holds. */
#define CMD_RELAY_LOCK_KEY LOCK_RELAY

/* The backlog of write.events, written once for the relay's metrics
 * (outbox_table.status_sql) and for todoctl outbox: the unpublished rows,
 * the oldest one's age in seconds, the parked rows, and the rows waiting
 * behind a parked row of their aggregate. "select" COLUMNS [more] FROM. */
#define CMD_OUTBOX_BACKLOG_COLUMNS                                                                 \
    " count(*), coalesce(extract(epoch from now() - min(created_at)), 0)::float8,"               \
    " count(*) filter (where parked_at is not null),"                                             \
    " count(*) filter (where parked_at is null and exists (select 1 from write.events p"          \
    "    where p.parked_at is not null and p.published_at is null"                                 \
    "    and p.aggregate_id = e.aggregate_id and p.position < e.position))"
#define CMD_OUTBOX_BACKLOG_FROM " from write.events e where published_at is null"

/* The outbox at a glance. */
typedef struct cmd_outbox_status {
    long unpublished;          /* rows not yet acknowledged by Kafka, parked ones included */
    double oldest_age_s;       /* age of the oldest of them (0 when none) */
    long parked;               /* rows set aside (cmd_outbox_parked) */
    long held;                 /* rows waiting behind a parked row of their aggregate */
    long long last_position;   /* highest position written (0 when none) */
    char active[256];          /* the active relay's application_name and backend, or "" */
} cmd_outbox_status;

int cmd_outbox_status_read(PGconn *pg, cmd_outbox_status *st, todo_err *err);

/* One parked event. */
typedef struct cmd_parked {
    long long position;
    char event_type[64];
    char user_id[129];
    char aggregate_id[37];
    long long aggregate_version;
    long long bytes;           /* the stored envelope's size */
    char parked_at[40];        /* RFC 3339 */
    char reason[256];
    long waiting;              /* later events of the aggregate held behind it */
} cmd_parked;

/* Lists up to cap parked events, oldest first, into out; *n receives how
 * many. */
int cmd_outbox_parked(PGconn *pg, cmd_parked *out, int cap, int *n, todo_err *err);

/* Retry: the relay tries the parked event at position again (and wakes
 * up). TODO_ENOTFOUND when no such event is parked. */
int cmd_outbox_retry(PGconn *pg, int64_t position, todo_err *err);

/* Drop: the parked event at position leaves the outbox for good, with the
 * operator's reason recorded (see above). TODO_ENOTFOUND when no such
 * event is parked. */
int cmd_outbox_drop(PGconn *pg, int64_t position, const char *why, todo_err *err);

#endif
