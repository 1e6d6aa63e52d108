/*
 * outbox: the one way events leave this system for Kafka.
 *
 * A process writes its events into an outbox table in the same transaction
 * as the state they describe (todo-command: write.events; todo-saga:
 * saga.outbox); an outbox publisher (outbox_start) sends them in order and
 * tells the table which rows Kafka acknowledged. Nothing else produces an
 * event: every record leaves through outbox_send, which writes the
 * standard headers (event.h) and keys it by user (per-user order).
 *
 * Delivery rules (outbox_send, tested against librdkafka's mock cluster in
 * tests/unit/test_outbox_delivery.c, on a three-broker cluster in
 * tests/integration/test_cluster.c, and a refusal by the real broker in
 * tests/integration/test_outbox_parking.c):
 *   - nothing is given up on by a time-out: while the brokers are away the
 *     rows wait for them (until a stop, which leaves them unacknowledged).
 *     A row failed by a time-out while a later row of its user went
 *     through would reach Kafka after it. A failure that would leave a
 *     gap in a partition stops the producer (librdkafka's gapless
 *     guarantee: outbox_sender_fatal), and the publisher makes a new one;
 *   - a producer's first rows to a partition go one per user at a time: a
 *     broker takes any sequence number first from a producer it does not
 *     know, so a later request of the user could be written while the one
 *     before it fails for good. Once the partition acknowledged a row of
 *     this producer (within the hour), the broker refuses what would follow
 *     a gap (Kafka does; librdkafka's mock cluster does not check), and a
 *     user's rows leave together;
 *   - every row Kafka acknowledged is reported OUTBOX_OK, whatever happened
 *     to the rows around it: the table marks or deletes it at once, so
 *     nothing Kafka has is sent twice by the publisher's own doing;
 *   - a row that fails for a reason worth retrying (the broker is away, a
 *     request error) is OUTBOX_FAILED, and the later rows of its key (user)
 *     and of its aggregate in the batch are not sent (OUTBOX_HELD): they
 *     go again with it, in order;
 *   - a row that can never be published is OUTBOX_REFUSED with its reason:
 *     larger than the event size limit, refused by Kafka as too large or
 *     invalid, an envelope that does not decode, or a type no topic
 *     carries. The publisher parks it (the table keeps it aside with the
 *     reason) and goes on with everything else; the aggregate's later rows
 *     wait behind it, in this batch and in the next ones (the select
 *     statement skips them), until an operator retries or drops it.
 *
 * One publisher per table is active at a time: the one holding a
 * PostgreSQL session advisory lock on its own connection; the others retry
 * the lock every poll interval and take over within seconds when the
 * leader's connection dies. The active one wakes on LISTEN (a trigger
 * notifies on insert) and polls as a fallback.
 *
 * Metrics (label outbox = the table): todo_outbox_published_total,
 * todo_outbox_parked_total (counters of this instance),
 * todo_outbox_unpublished_rows, todo_outbox_oldest_unpublished_age_seconds,
 * todo_outbox_parked_rows, todo_outbox_waiting_rows (gauges kept by the
 * active publisher; 0 elsewhere) and todo_outbox_active (1 on the instance
 * that publishes).
 */
#ifndef TODO_OUTBOX_H
#define TODO_OUTBOX_H

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "todo_err.h"

/* What became of one row of a batch. */
typedef enum outbox_state {
    OUTBOX_HELD = 0,   /* not sent: an earlier row of its user or aggregate did not leave */
    OUTBOX_SENT,       /* sent; no delivery report yet (stopped while waiting) */
    OUTBOX_OK,         /* Kafka acknowledged it */
    OUTBOX_FAILED,     /* failed for a reason worth retrying */
    OUTBOX_REFUSED     /* can never be published: to be parked */
} outbox_state;

/* One row of an outbox table. */
typedef struct outbox_row {
    int64_t id;             /* the table's order (write.events: the global position) */
    const char *key;        /* the Kafka key: the user id */
    const char *aggregate;  /* a refused row holds back its aggregate */
    const uint8_t *bytes;   /* a todo.v1.EventEnvelope */
    size_t len;
} outbox_row;

/* ---- the producing half (no database) ---- */

typedef struct outbox_sender outbox_sender;

/* An idempotent producer (kafkax) for batches of up to max_rows rows of at
 * most max_event_bytes each. extra_conf: NULL, or "key", "value" pairs
 * ending with NULL applied on top (tests: shorter timeouts). */
outbox_sender *outbox_sender_new(const char *brokers, const char *client_id, int max_rows, int max_event_bytes,
                                 const char *const *extra_conf, todo_err *err);
void outbox_sender_free(outbox_sender *s);

/* True when the producer stopped for good on a fatal error (librdkafka's
 * idempotence: a failure that would leave a gap in a partition, since
 * enable.gapless.guarantee is on); why (may be NULL) gets the reason. A
 * stopped sender delivers nothing more: make a new one. */
bool outbox_sender_fatal(outbox_sender *s, char *why, size_t cap);

/* Sends rows[0..n) in order and waits for every delivery report (or until
 * *stop, when stop is not NULL). When stamp_position is set, each envelope
 * gets its row's id as `position` before it leaves. Returns how many Kafka
 * acknowledged; outbox_row_state/outbox_row_reason tell each row's fate
 * until the next call. */
int outbox_send(outbox_sender *s, const outbox_row *rows, int n, bool stamp_position, const atomic_int *stop);
outbox_state outbox_row_state(const outbox_sender *s, int i);
/* True once the producer has its idempotent producer id (it can deliver);
 * serves pending callbacks. */
bool outbox_sender_ready(outbox_sender *s);
/* True once the producer knows a partition leader of topic, one of those
 * event_topic names (from its statistics, every second). A sender learns
 * them all as it starts, not on each topic's first event. */
bool outbox_sender_topic_known(outbox_sender *s, const char *topic);
/* How many rounds the last outbox_send took: 1, or more when rows waited
 * for their partition's first acknowledgement (see the rules above). */
int outbox_send_rounds(const outbox_sender *s);
/* Why row i failed or was refused ("" otherwise). */
const char *outbox_row_reason(const outbox_sender *s, int i);

/* Row i's event time (its envelope's `time`, microseconds since the
 * epoch), or 0 when it has none or did not decode. */
int64_t outbox_row_time_us(const outbox_sender *s, int i);

/* ---- the publisher (a table, a thread) ---- */

/* An outbox table, as SQL. */
typedef struct outbox_table {
    const char *name;        /* log component and thread role: "relay", "saga-outbox" */
    const char *table;       /* the metrics' `outbox` label: "write.events", "saga.outbox" */
    const char *lock_key;    /* the advisory lock of the one active publisher */
    const char *channel;     /* LISTEN channel the insert trigger notifies */
    /* $1 = batch size: id, key, aggregate id, envelope (bytea), event type;
     * unpublished, not parked, not behind a parked row of its aggregate,
     * in order. */
    const char *select_sql;
    const char *done_sql;    /* $1 = the acknowledged ids, a bigint[] */
    const char *park_sql;    /* $1 = id, $2 = reason */
    /* No parameters: rows not yet published (parked ones included), the
     * oldest's age in seconds, parked rows, rows waiting behind them. The
     * active publisher reads it every 5 s: the metrics' gauges, and a log
     * line every 10 s while there is a backlog. */
    const char *status_sql;
    bool stamp_position;     /* see outbox_send */
    /* Called by the active publisher before each batch (housekeeping,
     * backlog reports); may be NULL. */
    void (*leader_tick)(PGconn *pg, void *ctx);
    void *ctx;
} outbox_table;

typedef struct outbox_opts {
    const char *pg_url;
    const char *brokers;
    const char *app_name;     /* application_name prefix; "-<pid>" is added */
    int batch;                /* rows per batch */
    int poll_ms;              /* fallback poll when no NOTIFY arrives */
    int max_event_bytes;      /* larger rows are refused (parked) */
} outbox_opts;

typedef struct outbox outbox;

/* Starts the publisher thread of table t. t and o are borrowed and must
 * outlive it. */
outbox *outbox_start(const outbox_table *t, const outbox_opts *o, todo_err *err);

/* Stops the thread (after the batch in flight) and frees it; takes NULL. */
void outbox_stop(outbox *ob);

/* True when this instance's producer can deliver (it has its idempotent
 * producer id and a broker is up): the health of "kafka". Thread-safe. */
bool outbox_kafka_ready(const outbox *ob);

#endif
