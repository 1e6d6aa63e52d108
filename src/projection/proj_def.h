/*
 * proj_def: a projection as a named definition, run by one runtime.
 *
 * A definition says what a projection is: its name (`todoctl projection
 * status|rebuild <name>`), the schema it owns, its consumer group, the topics
 * it reads and its event handlers (plan: one decoded event -> one statement
 * guarded by the event's claim, or dead). The runtime does the rest for
 * every definition alike:
 *   - proj_apply: a batch in one transaction, each event applied at most
 *     once (the schema's applied_versions), the batch's status and offsets
 *     (projection_status, projection_offsets) in the same transaction, a
 *     refused record dead-lettered alone;
 *   - proj_loop: the consume-apply-commit loop on the definition's topics
 *     and group;
 *   - proj_rebuild: a replay into a shadow copy of the definition's schema,
 *     swapped in under the definition's own locks (rebuilding one
 *     projection leaves the others serving).
 * The task read model (proj_tasks.c, schema read) and the analytics model
 * (proj_analytics.c, schema analytics) are the two definitions.
 */
#ifndef TODO_PROJ_DEF_H
#define TODO_PROJ_DEF_H

#include <stdbool.h>

#include "arena.h"
#include "config.h"
#include "todo/v1/events.pb-c.h"

typedef enum proj_outcome { PROJ_APPLIED, PROJ_SKIPPED, PROJ_DEAD } proj_outcome;

/* What applying one event takes: one statement that checks and advances the
 * aggregate's applied version (applied_versions) and, when the event is
 * newer, runs write. Parameters: $1 aggregate id, $2 version, $3 event time
 * (proj_plan_base), then the write's own. */
#define PROJ_ALSO_MAX 6

typedef struct proj_plan {
    const char *write; /* a data-modifying statement guarded by PROJ_CLAIMED, or NULL */
    const char *also[PROJ_ALSO_MAX]; /* more, each guarded the same way (they do not see each other's changes) */
    const char *params[16];
    int n;
    bool feed; /* also adds the event to its user's update feed (the runtime sets it) */
    int erased_guard; /* the runtime sets it: the parameter holding the user, claimed only while not erased */
} proj_plan;

/* True in a write when the event claimed its version (it is newer). */
#define PROJ_CLAIMED " exists (select 1 from claim)"

typedef struct proj_def {
    const char *name;   /* "tasks", "analytics" */
    const char *schema; /* the schema it owns (its tables are named unqualified) */
    const char *group;  /* its consumer group (tasks: TODO_PROJECTOR_GROUP, see proj_def_group) */
    const char *const *topics;
    int n_topics;
    /* Plans one decoded event: PROJ_APPLIED with p filled, PROJ_DEAD with
     * *why, or PROJ_SKIPPED for an event that is not this projection's (not
     * claimed; counted as skipped). Sealed personal fields are open, and an
     * erased user's events never reach it but user.erased (proj_apply). */
    proj_outcome (*plan)(const Todo__V1__EventEnvelope *env, arena *a, proj_plan *p, const char **why);
    /* True for an event claimed by its event id ($1 its event id, $2 1)
     * rather than its aggregate's version; may be NULL (none). */
    bool (*by_event_id)(const Todo__V1__EventEnvelope *env);
    /* A statement run after an applied event's own (it sees what that one
     * wrote), under a savepoint of its own when a batch is retried record
     * by record: its refusal costs only it. Returns false when env has none;
     * may be NULL. At most PROJ_FOLLOW_MAX parameters. */
    bool (*follow)(const Todo__V1__EventEnvelope *env, arena *a, const char **sql, const char **params, int *n);
    bool feed;  /* the live copy adds applied events to their users' update feed */
    bool cache; /* the live copy asks the Redis fast path (proj_cache.h) first */
    /* 0: events are fetched as they arrive (what readers wait for); > 0:
     * a projection nobody waits on fetches in fewer requests, up to this
     * late (consume_opts.fetch_wait_ms). */
    int fetch_wait_ms;
    const char *swap_lock;    /* advisory lock key: shared by each batch, exclusive by a rebuild's swap */
    const char *rebuild_lock; /* advisory lock key: one rebuild of this projection at a time */
    /* Run in a rebuild's swap transaction, "%s" being the shadow schema; or NULL. */
    const char *before_swap;
} proj_def;

#define PROJ_FOLLOW_MAX 8

extern const proj_def proj_tasks;     /* the task read model (proj_tasks.c) */
extern const proj_def proj_analytics; /* productivity over time (proj_analytics.c) */

#define PROJ_N_DEFS 2
extern const proj_def *const proj_defs[PROJ_N_DEFS];

/* The definition named name, or whose consumer group is name; NULL if none. */
const proj_def *proj_def_find(const char *name, const todo_config *cfg);

/* d's consumer group under cfg. */
const char *proj_def_group(const proj_def *d, const todo_config *cfg);

/* Helpers for the handlers. */

/* A payload time as SQL text; one out of range becomes text the database
 * refuses (the record is dead-lettered saying why). NULL for NULL. */
char *proj_ts_text(arena *a, const Google__Protobuf__Timestamp *ts);

/* Decodes env's payload (schema version 1) with desc; NULL and *why when it
 * does not decode or its field 1 names another aggregate than env. */
ProtobufCMessage *proj_payload(const Todo__V1__EventEnvelope *env, const ProtobufCMessageDescriptor *desc, arena *a,
                               const char **why);

/* Decodes task.created at any known schema version into the current one. */
Todo__V1__TaskCreatedV2 *proj_task_created(const Todo__V1__EventEnvelope *env, arena *a, const char **why);

/* Starts p with the common parameters ($1 aggregate, $2 version, $3 time). */
void proj_plan_base(proj_plan *p, const Todo__V1__EventEnvelope *env, arena *a, const char *time);

/* Plans user.erased: the statements (NULL-terminated, at most
 * 1 + PROJ_ALSO_MAX; each takes the user as $4 and ends with the claim)
 * delete the user's rows. PROJ_DEAD and *why when the payload is not one. */
proj_outcome proj_plan_user_erased(const Todo__V1__EventEnvelope *env, arena *a, proj_plan *p,
                                   const char *const *deletes, const char **why);

#endif
