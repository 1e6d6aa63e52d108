/*
 * saga_store: sagas in PostgreSQL (saga.sagas, migrations/0010).
 *
 * One row per saga holds its whole saga_record. A saga is worked on by one
 * todo-saga instance at a time: saga_store_claim leases a RUNNING or
 * COMPENSATING saga to an instance (owner, lease_until) and every save
 * renews the lease; a save by an instance that lost its lease (it was
 * silent longer than the lease) is refused with TODO_ECONFLICT, so two
 * instances never drive one saga. An instance that restarts under the same
 * name (TODO_SAGA_INSTANCE) takes its sagas back at once; others wait for
 * the lease to expire.
 */
#ifndef TODO_SAGA_STORE_H
#define TODO_SAGA_STORE_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "arena.h"
#include "event.h"
#include "saga_core.h"

typedef struct saga_store_pg {
    PGconn *pg;              /* borrowed */
    const char *instance;    /* borrowed: this instance's name */
    int lease_s;
    int n_steps;             /* of the saga being saved */
} saga_store_pg;

/* The saga_store of a saga_store_pg (save = saga_store_save). */
saga_store saga_store_of(saga_store_pg *s);

/* Inserts r (a new saga of user, started by the event r->id) with its
 * "started" event unless a saga with that id exists: *inserted says which. */
int saga_store_insert(PGconn *pg, const saga_record *r, int n_steps, const char *user, bool *inserted, todo_err *err);

/* Saves r and its transition's events (saga.outbox) in one statement,
 * renewing the lease: TODO_ECONFLICT (nothing written) when the lease was
 * lost. */
int saga_store_save(void *store, const saga_record *r, const saga_event *events, int n_events, todo_err *err);

/* Leases the oldest RUNNING or COMPENSATING saga that nobody else holds
 * into *r (and its user); *found false when there is none. */
int saga_store_claim(saga_store_pg *s, saga_record *r, char user[128], bool *found, todo_err *err);

/* Loads saga id into *r (no lease): TODO_ENOTFOUND when there is none. */
int saga_store_load(PGconn *pg, const char *id, saga_record *r, todo_err *err);

/* saga.outbox (migrations/0012, 0017): the events todo-saga publishes,
 * each written in the statement that made it, published in order by the
 * outbox publisher (outbox.h) and deleted once Kafka has them. A saga's
 * transition writes its saga events (and next_occurrence's
 * recurring.task.generated) with the saga (saga_store_insert/_save). */

/* Encodes one event for saga.outbox: *hex receives the envelope in hex
 * (memory from a). */
int saga_outbox_encode(arena *a, const event_meta *m, const ProtobufCMessage *payload, const char **hex,
                       todo_err *err);

/* Adds one event to saga.outbox on its own (the notification a saga
 * requests). */
int saga_outbox_add(PGconn *pg, const event_meta *m, const ProtobufCMessage *payload, todo_err *err);

/* The users' data keys saga_outbox_add seals personal fields with (a
 * notification's subject and body, seal.h); set once at start, NULL: none.
 * An event of an erased user is then not added (logged). */
struct keystore;
void saga_store_set_keys(struct keystore *ks);

/* Encodes the rows an older todo-saga left in saga.outbox (structured
 * columns, no envelope) so that the publisher can send them; *converted
 * says how many. Run at start, before the publisher. */
int saga_store_upgrade_outbox(PGconn *pg, long *converted, todo_err *err);

/* saga.outbox as operators see it (`todoctl outbox --saga`). */
typedef struct saga_outbox_stat {
    long rows;                 /* events not yet acknowledged by Kafka, parked ones included */
    double oldest_age_s;
    long parked;
    long held;                 /* waiting behind a parked row of their aggregate */
    char active[256];          /* the active publisher's application_name and backend, or "" */
} saga_outbox_stat;
int saga_outbox_status(PGconn *pg, saga_outbox_stat *st, todo_err *err);

/* saga.outbox's backlog, written once for the publisher's metrics and for
 * saga_outbox_status: rows, the oldest one's age in seconds, parked rows,
 * rows waiting behind a parked row of their aggregate. */
#define SAGA_OUTBOX_BACKLOG_COLUMNS                                                                \
    " count(*), coalesce(extract(epoch from now() - min(created_at)), 0)::float8,"               \
    " count(*) filter (where parked_at is not null),"                                             \
    " count(*) filter (where parked_at is null and exists (select 1 from saga.outbox p"           \
    "    where p.parked_at is not null and p.aggregate_id = o.aggregate_id and p.id < o.id))"
#define SAGA_OUTBOX_BACKLOG_FROM " from saga.outbox o"

typedef struct saga_outbox_row {
    long long id;
    char event_type[64];
    char user_id[129];
    char aggregate_id[64];
    long long bytes;
    char parked_at[40];
    char reason[256];
    long waiting;
} saga_outbox_row;
/* The parked rows (up to cap, oldest first). */
int saga_outbox_parked(PGconn *pg, saga_outbox_row *out, int cap, int *n, todo_err *err);
/* Retry: the publisher tries parked row id again, then what waited behind
 * it. Drop: the row is deleted unpublished (its aggregate's waiting rows go
 * out). TODO_ENOTFOUND when no such row is parked. */
int saga_outbox_retry(PGconn *pg, long long id, todo_err *err);
int saga_outbox_drop(PGconn *pg, long long id, todo_err *err);

/* Operators (todoctl saga):
 * retry      a FAILED saga compensates again from the step whose
 *            compensation failed (its attempts start over), unless it
 *            was resolved;
 * compensate a RUNNING or COMPLETED saga undoes what it did: the current
 *            step of a running saga counts as failed (it may have acted),
 *            and the instance driving it loses its lease at its next save.
 * Both leave the saga to the next instance that claims it. TODO_EPRECOND
 * (naming the state) when the saga is in no state for it, TODO_ENOTFOUND
 * when there is none. */
int saga_store_retry(PGconn *pg, const char *id, todo_err *err);
int saga_store_compensate(PGconn *pg, const char *id, todo_err *err);

/* A FAILED saga is the dead letter of its compensation. An operator who
 * settled it by hand resolves it: by (who) and why are kept in
 * saga.resolutions; it stays FAILED with its history but leaves the list of
 * failures waiting for a person (todoctl saga failed, the todo_sagas
 * gauge) and is never retried. TODO_EPRECOND when it is not FAILED or was
 * resolved already (naming by whom, when and why), TODO_ENOTFOUND when
 * there is no such saga. */
int saga_store_resolve(PGconn *pg, const char *id, const char *by, const char *why, todo_err *err);

/* Who resolved saga id, when (UTC, "YYYY-MM-DD HH:MM:SS") and why; *found
 * false when nobody did. */
typedef struct saga_resolution {
    char by[129], at[32], why[1001];
} saga_resolution;
int saga_store_resolution(PGconn *pg, const char *id, saga_resolution *out, bool *found, todo_err *err);

#endif
