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

/* The relay's next batch ($1 rows), in position order. Parked rows and the
 * rows of their aggregates after them wait for an operator: the probe reads
 * events_parked (few rows), the batch events_ready (migration 0030). */
#define CMD_RELAY_SELECT_SQL                                                                        \
    "select e.position, e.user_id, e.aggregate_id::text, e.envelope, e.event_type"                  \
    " from write.events e where e.published_at is null and e.parked_at is null"                     \
    " and not exists (select 1 from write.events p where p.parked_at is not null"                   \
    "   and p.published_at is null and p.aggregate_id = e.aggregate_id"                             \
    "   and p.position < e.position)"                                                               \
    " order by e.position limit $1::int"

/* The backlog of write.events, written once for the relay's metrics
 * (outbox_table.status_sql) and for todoctl outbox: the unpublished rows,
 * the oldest one's age in seconds, the parked rows, and the rows waiting
 * behind a parked row of their aggregate, then the columns `more` adds
 * (a string literal: "" or starting with ",").
 * Each part reads one partial index (migration 0030): the publishable rows
 * once through events_ready, the few parked ones through events_parked,
 * and the waiting rows from the parked aggregates' own events, so its work
 * grows with the backlog, never with its square. */
#define CMD_OUTBOX_BACKLOG_COLUMNS                                                                 \
    " r.n + (select count(*) from parked),"                                                        \
    " coalesce(extract(epoch from now() - least(r.oldest, (select min(created_at) from parked))), 0)::float8," \
    " (select count(*) from parked),"                                                              \
    " (select count(*) from write.events w join (select aggregate_id, min(position) as position"  \
    "    from parked group by aggregate_id) p on w.aggregate_id = p.aggregate_id"                  \
    "    and w.position > p.position where w.published_at is null and w.parked_at is null)"
#define CMD_OUTBOX_BACKLOG_FROM                                                                    \
    " from (select count(*) as n, min(created_at) as oldest from write.events"                      \
    "   where published_at is null and parked_at is null) r"
#define CMD_OUTBOX_BACKLOG_WITH                                                                    \
    "with parked as materialized (select aggregate_id, position, created_at from write.events"     \
    "  where parked_at is not null and published_at is null) "
#define CMD_OUTBOX_BACKLOG_SQL(more)                                                               \
    CMD_OUTBOX_BACKLOG_WITH "select" CMD_OUTBOX_BACKLOG_COLUMNS more CMD_OUTBOX_BACKLOG_FROM

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
