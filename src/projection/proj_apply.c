/* proj_apply: see proj_apply.h. */
#include "proj_apply.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "log.h"
#include "pgx.h"
#include "proj_cache.h"
#include "text.h"
#include "todo/v1/events.pb-c.h"

const char *const proj_source_topics[PROJ_N_SOURCE_TOPICS] = {"tasks.events.v1", "reminders.events.v1"};

typedef enum outcome { APPLIED, SKIPPED, DEAD } outcome;

static char *ts_text(arena *a, const Google__Protobuf__Timestamp *ts)
{
    return ts != NULL ? event_time_text(a, event_timestamp_us(ts)) : NULL;
}

/* Decodes task.created at any known schema version into the current one. */
static Todo__V1__TaskCreatedV2 *task_created(const Todo__V1__EventEnvelope *env, arena *a, const char **why)
{
    ProtobufCAllocator alloc;
    arena_pbc_allocator(a, &alloc);
    if (env->schema_version == 2) {
        Todo__V1__TaskCreatedV2 *v2 = todo__v1__task_created_v2__unpack(&alloc, env->data.len, env->data.data);
        if (v2 == NULL) *why = "task.created v2 payload does not decode";
        return v2;
    }
    if (env->schema_version == 1) {
        Todo__V1__TaskCreated *v1 = todo__v1__task_created__unpack(&alloc, env->data.len, env->data.data);
        if (v1 == NULL) {
            *why = "task.created v1 payload does not decode";
            return NULL;
        }
        /* Upcast v1 -> v2: the same fields, no category. */
        Todo__V1__TaskCreatedV2 *v2 = arena_alloc(a, sizeof *v2);
        todo__v1__task_created_v2__init(v2);
        v2->task_id = v1->task_id;
        v2->title = v1->title;
        v2->description = v1->description;
        v2->priority = v1->priority;
        v2->due_at = v1->due_at;
        v2->n_tags = v1->n_tags;
        v2->tags = v1->tags;
        v2->created_at = v1->created_at;
        return v2;
    }
    *why = arena_printf(a, "task.created schema version %d is not supported by this projector", env->schema_version);
    return NULL;
}

/* Checks and advances the aggregate's applied version. */
static int claim_version(PGconn *pg, const Todo__V1__EventEnvelope *env, outcome *out, todo_err *err)
{
    char version[24];
    const char *p[2] = {env->aggregate_id, version};
    snprintf(version, sizeof version, "%" PRId64, env->aggregate_version);
    /* One round trip: the version held before (locked), and the claim, which
     * only takes when the event is newer. */
    PGresult *r = pgx_exec(pg,
                           "with old as (select version from applied_versions where aggregate_id = $1 for update),"
                           " claim as (insert into applied_versions (aggregate_id, version) values ($1, $2)"
                           "   on conflict (aggregate_id) do update set version = excluded.version"
                           "   where applied_versions.version < excluded.version returning 1)"
                           " select coalesce((select version from old), 0), exists (select 1 from claim)",
                           2, p, err);
    if (r == NULL) return err->code;
    int64_t have = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    bool claimed = PQgetvalue(r, 0, 1)[0] == 't';
    PQclear(r);
    if (!claimed) {
        *out = SKIPPED;
        return TODO_OK;
    }
    if (have + 1 != env->aggregate_version)
        log_warn("projector", "version gap: applying an event whose predecessor was not applied",
                 "aggregate=%s applied=%" PRId64 " event_version=%" PRId64 " event=%s", env->aggregate_id, have,
                 env->aggregate_version, env->event_id);
    *out = APPLIED;
    return TODO_OK;
}

static int apply_task_created(PGconn *pg, const Todo__V1__EventEnvelope *env, arena *a, outcome *out,
                              const char **why, todo_err *err)
{
    Todo__V1__TaskCreatedV2 *ev = task_created(env, a, why);
    char prio[8], version[24];
    int rc;
    if (ev == NULL) {
        *out = DEAD;
        return TODO_OK;
    }
    if (strcmp(ev->task_id, env->aggregate_id) != 0 || !text_is_uuid(ev->task_id) || ev->title[0] == '\0' ||
        ev->created_at == NULL || (int)ev->priority < 0 || (int)ev->priority > 4) {
        *why = "task.created payload is inconsistent (task id, title, created_at or priority)";
        *out = DEAD;
        return TODO_OK;
    }
    if ((rc = claim_version(pg, env, out, err)) != 0 || *out == SKIPPED) return rc;
    snprintf(prio, sizeof prio, "%d", (int)ev->priority);
    snprintf(version, sizeof version, "%" PRId64, env->aggregate_version);
    const char *created = ts_text(a, ev->created_at);
    const char *p[10] = {ev->task_id, env->user_id, ev->title, ev->description, prio, ts_text(a, ev->due_at),
                         ev->category, pgx_text_array(a, ev->tags, ev->n_tags), version, created};
    return pgx_cmd(pg,
                   "insert into tasks (id, user_id, title, description, priority, due_at, category, tags,"
                   " version, created_at, updated_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)"
                   " on conflict (id) do nothing",
                   10, p, err);
}

/* Decodes env's payload with desc into a; NULL (and *why) when it does not
 * decode or names another task than the envelope. */
static ProtobufCMessage *payload(const Todo__V1__EventEnvelope *env, const ProtobufCMessageDescriptor *desc, arena *a,
                                 const char **why)
{
    ProtobufCAllocator alloc;
    arena_pbc_allocator(a, &alloc);
    if (env->schema_version != 1) {
        *why = arena_printf(a, "%s schema version %d is not supported by this projector", env->event_type,
                            env->schema_version);
        return NULL;
    }
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, &alloc, env->data.len, env->data.data);
    if (m == NULL) {
        *why = arena_printf(a, "%s payload does not decode as %s", env->event_type, desc->name);
        return NULL;
    }
    /* Every task event's field 1 is the task id. */
    const char *task_id = *(char *const *)((const char *)m + desc->fields[0].offset);
    if (strcmp(task_id, env->aggregate_id) != 0) {
        *why = arena_printf(a, "%s payload names task %s, the envelope %s", env->event_type, task_id, env->aggregate_id);
        return NULL;
    }
    return m;
}

/* Runs sql with params $1 = aggregate id, $2 = version, $3 = event time,
 * then the n extra values. */
static int task_update(PGconn *pg, const Todo__V1__EventEnvelope *env, arena *a, const char *sql, int n,
                       const char *const *extra, todo_err *err)
{
    const char *p[12];
    char version[24];
    snprintf(version, sizeof version, "%" PRId64, env->aggregate_version);
    p[0] = env->aggregate_id;
    p[1] = version;
    p[2] = ts_text(a, env->time);
    for (int i = 0; i < n; i++) p[3 + i] = extra[i];
    return pgx_cmd(pg, sql, 3 + n, p, err);
}

static int apply_task_updated(PGconn *pg, const Todo__V1__EventEnvelope *env, arena *a, outcome *out,
                              const char **why, todo_err *err)
{
    Todo__V1__TaskUpdated *ev = (Todo__V1__TaskUpdated *)payload(env, &todo__v1__task_updated__descriptor, a, why);
    int rc;
    if (ev == NULL) {
        *out = DEAD;
        return TODO_OK;
    }
    /* Only the fields the event says changed are written: the others may
     * have been changed by later events a replay has not reached yet. */
    char sql[512];
    size_t len = (size_t)snprintf(sql, sizeof sql, "update tasks set version = $2, updated_at = $3");
    const char *extra[6];
    int n = 0;
    char prio[8];
    snprintf(prio, sizeof prio, "%d", (int)ev->priority);
    for (size_t i = 0; i < ev->n_changed_fields; i++) {
        const char *f = ev->changed_fields[i], *col = NULL, *value = NULL;
        if (strcmp(f, "title") == 0) col = "title", value = ev->title;
        else if (strcmp(f, "description") == 0) col = "description", value = ev->description;
        else if (strcmp(f, "priority") == 0) col = "priority", value = prio;
        else if (strcmp(f, "due_at") == 0) col = "due_at", value = ts_text(a, ev->due_at);
        else if (strcmp(f, "category") == 0) col = "category", value = ev->category;
        else if (strcmp(f, "tags") == 0) col = "tags", value = pgx_text_array(a, ev->tags, ev->n_tags);
        if (col == NULL || n == 6) {
            *why = arena_printf(a, "task.updated names an unknown or repeated field \"%.40s\"", f);
            *out = DEAD;
            return TODO_OK;
        }
        extra[n++] = value;
        len += (size_t)snprintf(sql + len, sizeof sql - len, ", %s = $%d", col, 3 + n);
    }
    if ((rc = claim_version(pg, env, out, err)) != 0 || *out == SKIPPED) return rc;
    snprintf(sql + len, sizeof sql - len, " where id = $1");
    return task_update(pg, env, a, sql, n, extra, err);
}

/* task.completed, .reopened, .deleted, .restored: a payload with the task id
 * and a time, and one fixed change. */
static int apply_task_state(PGconn *pg, const Todo__V1__EventEnvelope *env, arena *a, outcome *out,
                            const char **why, todo_err *err)
{
    static const struct {
        const char *type;
        const ProtobufCMessageDescriptor *desc;
        const char *sql;
    } kinds[] = {
        {"task.completed", &todo__v1__task_completed__descriptor,
         "update tasks set completed = true, completed_at = $3, version = $2, updated_at = $3 where id = $1"},
        {"task.reopened", &todo__v1__task_reopened__descriptor,
         "update tasks set completed = false, completed_at = null, version = $2, updated_at = $3 where id = $1"},
        {"task.deleted", &todo__v1__task_deleted__descriptor,
         "update tasks set deleted = true, version = $2, updated_at = $3 where id = $1"},
        {"task.restored", &todo__v1__task_restored__descriptor,
         "update tasks set deleted = false, version = $2, updated_at = $3 where id = $1"},
    };
    int rc;
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        if (strcmp(env->event_type, kinds[k].type) != 0) continue;
        if (payload(env, kinds[k].desc, a, why) == NULL) {
            *out = DEAD;
            return TODO_OK;
        }
        if ((rc = claim_version(pg, env, out, err)) != 0 || *out == SKIPPED) return rc;
        return task_update(pg, env, a, kinds[k].sql, 0, NULL, err);
    }
    *why = arena_printf(a, "no projection for event type %s", env->event_type);
    *out = DEAD;
    return TODO_OK;
}

/* recurring_pattern.created marks its task as a series' template;
 * recurring_pattern.updated changes nothing the read model shows. */
static int apply_pattern(PGconn *pg, const Todo__V1__EventEnvelope *env, arena *a, outcome *out, const char **why,
                         todo_err *err)
{
    int rc;
    bool created = strcmp(env->event_type, "recurring_pattern.created") == 0;
    ProtobufCMessage *m = payload(env, created ? &todo__v1__recurring_pattern_created__descriptor
                                               : &todo__v1__recurring_pattern_updated__descriptor, a, why);
    if (m == NULL) {
        *out = DEAD;
        return TODO_OK;
    }
    if ((rc = claim_version(pg, env, out, err)) != 0 || *out == SKIPPED || !created) return rc;
    const Todo__V1__RecurringPatternCreated *ev = (const Todo__V1__RecurringPatternCreated *)m;
    const char *p[2] = {ev->task_id, env->aggregate_id};
    return pgx_cmd(pg, "update tasks set recurring_pattern_id = $2::uuid where id = $1::uuid", 2, p, err);
}

/* reminder.*: the reminders read model. Each event's field 1 is the
 * reminder id (the aggregate) and field 2 its task. */
static int apply_reminder(PGconn *pg, const Todo__V1__EventEnvelope *env, arena *a, outcome *out, const char **why,
                          todo_err *err)
{
    int rc;
    const char *type = env->event_type;
    const ProtobufCMessageDescriptor *desc =
        strcmp(type, "reminder.scheduled") == 0   ? &todo__v1__reminder_scheduled__descriptor
        : strcmp(type, "reminder.cancelled") == 0 ? &todo__v1__reminder_cancelled__descriptor
        : strcmp(type, "reminder.snoozed") == 0   ? &todo__v1__reminder_snoozed__descriptor
        : strcmp(type, "reminder.triggered") == 0 ? &todo__v1__reminder_triggered__descriptor
                                                  : NULL;
    if (desc == NULL) {
        *why = arena_printf(a, "no projection for event type %s", type);
        *out = DEAD;
        return TODO_OK;
    }
    ProtobufCMessage *m = payload(env, desc, a, why);
    if (m == NULL) {
        *out = DEAD;
        return TODO_OK;
    }
    const char *extra[5] = {NULL};
    const char *sql;
    int n;
    if (desc == &todo__v1__reminder_scheduled__descriptor) {
        const Todo__V1__ReminderScheduled *ev = (const Todo__V1__ReminderScheduled *)m;
        if (!text_is_uuid(ev->task_id) || ev->remind_at == NULL) {
            *why = "reminder.scheduled payload is inconsistent (task id or remind_at)";
            *out = DEAD;
            return TODO_OK;
        }
        extra[0] = ev->task_id;
        extra[1] = env->user_id;
        extra[2] = ts_text(a, ev->remind_at);
        extra[3] = arena_printf(a, "%d", (int)ev->channel);
        n = 4;
        sql = "insert into reminders (id, version, created_at, updated_at, task_id, user_id, remind_at, channel, status)"
              " values ($1, $2, $3, $3, $4, $5, $6, $7, 'scheduled') on conflict (id) do nothing";
    } else if (desc == &todo__v1__reminder_cancelled__descriptor) {
        extra[0] = ((const Todo__V1__ReminderCancelled *)m)->reason;
        n = 1;
        sql = "update reminders set status = 'cancelled', reason = $4, version = $2, updated_at = $3 where id = $1";
    } else if (desc == &todo__v1__reminder_snoozed__descriptor) {
        const Todo__V1__ReminderSnoozed *ev = (const Todo__V1__ReminderSnoozed *)m;
        extra[0] = ts_text(a, ev->remind_at);
        n = 1;
        sql = "update reminders set status = 'scheduled', remind_at = coalesce($4, remind_at), version = $2,"
              " updated_at = $3 where id = $1";
    } else {
        const Todo__V1__ReminderTriggered *ev = (const Todo__V1__ReminderTriggered *)m;
        extra[0] = ts_text(a, ev->triggered_at != NULL ? ev->triggered_at : env->time);
        n = 1;
        sql = "update reminders set status = 'fired', triggered_at = $4, version = $2, updated_at = $3 where id = $1";
    }
    if ((rc = claim_version(pg, env, out, err)) != 0 || *out == SKIPPED) return rc;
    return task_update(pg, env, a, sql, n, extra, err);
}

/* Applies one decoded record. Returns TODO_OK with *out set, or a database
 * status. */
static int apply_record(PGconn *pg, const Todo__V1__EventEnvelope *env, arena *a, outcome *out, const char **why,
                        todo_err *err)
{
    int rc;
    if (env->time == NULL) {
        *why = "envelope has no time";
        *out = DEAD;
        return TODO_OK;
    }
    if (strcmp(env->event_type, "task.created") == 0)
        rc = apply_task_created(pg, env, a, out, why, err);
    else if (strcmp(env->event_type, "task.updated") == 0)
        rc = apply_task_updated(pg, env, a, out, why, err);
    else if (strncmp(env->event_type, "recurring_pattern.", 18) == 0)
        rc = apply_pattern(pg, env, a, out, why, err);
    else if (strncmp(env->event_type, "reminder.", 9) == 0)
        rc = apply_reminder(pg, env, a, out, why, err);
    else
        rc = apply_task_state(pg, env, a, out, why, err);
    return rc;
}

/* Advances user_positions once per user and topic of the batch: the
 * highest position of an event applied or found applied (read-your-writes).
 * A user's events are in order within a topic only, so each topic is a
 * stream of its own. */
static int advance_positions(PGconn *pg, rd_kafka_message_t **msgs, Todo__V1__EventEnvelope **envs, const bool *done,
                             size_t n, arena *a, todo_err *err)
{
#define SAME_STREAM(i, j) \
    (done[j] && strcmp(envs[j]->user_id, envs[i]->user_id) == 0 &&                                        \
     strcmp(rd_kafka_topic_name(msgs[j]->rkt), rd_kafka_topic_name(msgs[i]->rkt)) == 0)
    for (size_t i = 0; i < n; i++) {
        if (!done[i] || envs[i]->position <= 0) continue;
        int64_t best = envs[i]->position;
        bool first = true; /* handle each stream at its first record */
        for (size_t j = 0; j < i && first; j++) first = !SAME_STREAM(i, j);
        if (!first) continue;
        for (size_t j = i + 1; j < n; j++)
            if (SAME_STREAM(i, j) && envs[j]->position > best) best = envs[j]->position;
        const char *p[3] = {envs[i]->user_id, rd_kafka_topic_name(msgs[i]->rkt), arena_printf(a, "%" PRId64, best)};
        int rc = pgx_cmd(pg,
                         "insert into user_positions (user_id, stream, position) values ($1, $2, $3)"
                         " on conflict (user_id, stream)"
                         " do update set position = greatest(user_positions.position, excluded.position)",
                         3, p, err);
        if (rc != 0) return rc;
    }
#undef SAME_STREAM
    return TODO_OK;
}

/* Adds the batch to projection_status. */
static int record_status(PGconn *pg, const proj_status *ps, const proj_stats *st, const char **dead, size_t n,
                         arena *a, todo_err *err)
{
    const char *last_error = ps->last_error;
    for (size_t i = 0; i < n && last_error == NULL; i++)
        if (dead[i] != NULL) last_error = arena_printf(a, "dead letter: %s", dead[i]);
    const char *p[5] = {ps->projection, arena_printf(a, "%d", st->applied + st->skipped + st->dead),
                        arena_printf(a, "%d", st->applied), arena_printf(a, "%d", st->dead), last_error};
    return pgx_cmd(pg,
                   "insert into projection_status as s (projection, batches, events, applied, dead, last_batch_at,"
                   " last_error, last_error_at) values ($1, 1, $2::bigint, $3::bigint, $4::bigint, now(), $5,"
                   " case when $5::text is null then null else now() end)"
                   " on conflict (projection) do update set batches = s.batches + 1, events = s.events + excluded.events,"
                   " applied = s.applied + excluded.applied, dead = s.dead + excluded.dead, last_batch_at = now(),"
                   " last_error = coalesce(excluded.last_error, s.last_error),"
                   " last_error_at = coalesce(excluded.last_error_at, s.last_error_at)",
                   5, p, err);
}

/* Records, per partition, the offset after the batch's last record. */
static int record_offsets(PGconn *pg, const char *projection, rd_kafka_message_t **msgs, size_t n, arena *a,
                          todo_err *err)
{
    for (size_t i = 0; i < n; i++) {
        bool last = true; /* the last record of its partition in this batch */
        for (size_t j = i + 1; j < n && last; j++)
            last = msgs[j]->partition != msgs[i]->partition || msgs[j]->rkt != msgs[i]->rkt;
        if (!last) continue;
        const char *p[4] = {projection, rd_kafka_topic_name(msgs[i]->rkt), arena_printf(a, "%d", (int)msgs[i]->partition),
                            arena_printf(a, "%lld", (long long)msgs[i]->offset + 1)};
        int rc = pgx_cmd(pg,
                         "insert into projection_offsets as o (projection, topic, partition, next_offset)"
                         " values ($1, $2, $3::int, $4::bigint) on conflict (projection, topic, partition)"
                         " do update set next_offset = greatest(o.next_offset, excluded.next_offset)",
                         4, p, err);
        if (rc != 0) return rc;
    }
    return TODO_OK;
}

static int run_batch(PGconn *pg, rd_kafka_message_t **msgs, size_t n, arena *a, const char **dead,
                     const proj_status *ps, proj_stats *st, bool savepoints, todo_err *err)
{
    int rc;
    memset(st, 0, sizeof *st);
    /* Decode every record once, and ask the Redis fast path about them all in
     * one round trip. */
    Todo__V1__EventEnvelope **envs = arena_calloc(a, (n + 1) * sizeof *envs);
    const char **ids = arena_calloc(a, (n + 1) * sizeof *ids);
    int64_t *known = arena_calloc(a, (n + 1) * sizeof *known);
    const char **bad = arena_calloc(a, (n + 1) * sizeof *bad);
    bool *done = arena_calloc(a, (n + 1) * sizeof *done); /* applied, or applied before */
    size_t n_ids = 0;
    proj_cache *cache = ps != NULL ? ps->cache : NULL;
    for (size_t i = 0; i < n; i++) {
        todo_err derr;
        if (msgs[i]->err != RD_KAFKA_RESP_ERR_NO_ERROR) continue;
        if (event_decode(msgs[i]->payload, msgs[i]->len, a, &envs[i], &derr) != 0) {
            envs[i] = NULL;
            bad[i] = arena_strdup(a, derr.msg);
        } else {
            ids[n_ids++] = envs[i]->aggregate_id;
        }
    }
    int64_t *versions = arena_calloc(a, (n_ids + 1) * sizeof *versions);
    proj_cache_lookup(cache, ids, n_ids, versions);
    for (size_t i = 0, k = 0; i < n; i++)
        if (envs[i] != NULL) known[i] = versions[k++];
    proj_cache_discard(cache);

    if ((rc = pgx_cmd(pg, "begin", 0, NULL, err)) != 0) return rc;
    /* A rebuild's swap takes this lock exclusively: no live batch runs across it. */
    if ((ps == NULL || !ps->shadow) &&
        (rc = pgx_cmd(pg, "select pg_advisory_xact_lock_shared(" PROJ_SWAP_LOCK_KEY ")", 0, NULL, err)) != 0)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        outcome out = DEAD;
        dead[i] = NULL;
        if (msgs[i]->err != RD_KAFKA_RESP_ERR_NO_ERROR) continue;
        if (envs[i] == NULL) {
            dead[i] = bad[i];
            st->dead++;
            continue;
        }
        if (known[i] >= envs[i]->aggregate_version) { /* Redis: applied before */
            st->skipped++;
            done[i] = true;
            continue;
        }
        if (savepoints && (rc = pgx_cmd(pg, "savepoint rec", 0, NULL, err)) != 0) goto fail;
        rc = apply_record(pg, envs[i], a, &out, &dead[i], err);
        if (rc != 0) {
            if (!savepoints || rc == TODO_EUNAVAIL) goto fail;
            /* This record alone breaks the database: dead-letter it. */
            dead[i] = arena_printf(a, "applying failed: %s", err->msg);
            out = DEAD;
            if ((rc = pgx_cmd(pg, "rollback to savepoint rec", 0, NULL, err)) != 0) goto fail;
        }
        st->applied += out == APPLIED;
        st->skipped += out == SKIPPED;
        st->dead += out == DEAD;
        if (out != DEAD) proj_cache_note(cache, envs[i]->aggregate_id, envs[i]->aggregate_version);
        done[i] = out != DEAD;
    }
    if ((rc = advance_positions(pg, msgs, envs, done, n, a, err)) != 0) goto fail;
    if (ps != NULL && ((rc = record_status(pg, ps, st, dead, n, a, err)) != 0 ||
                       (rc = record_offsets(pg, ps->projection, msgs, n, a, err)) != 0))
        goto fail;
    if ((rc = pgx_cmd(pg, "select pg_notify('read_progress', '')", 0, NULL, err)) != 0) goto fail;
    if ((rc = pgx_cmd(pg, "commit", 0, NULL, err)) != 0) goto fail;
    proj_cache_flush(cache); /* only what the database holds now */
    return TODO_OK;
fail:
    pgx_cmd(pg, "rollback", 0, NULL, NULL);
    proj_cache_discard(cache);
    return rc;
}

int proj_apply_batch_status(PGconn *pg, rd_kafka_message_t **msgs, size_t n, arena *a, const char **dead_reason,
                            const proj_status *status, proj_stats *stats, todo_err *err)
{
    int rc = run_batch(pg, msgs, n, a, dead_reason, status, stats, false, err);
    if (rc == TODO_OK || rc == TODO_EUNAVAIL) return rc;
    /* Some record made the database refuse the batch: apply record by record,
     * each under a savepoint, so only that record is dead-lettered. */
    log_warn("projector", "batch refused; retrying record by record", "error=\"%s\"", err->msg);
    return run_batch(pg, msgs, n, a, dead_reason, status, stats, true, err);
}

int proj_apply_batch(PGconn *pg, rd_kafka_message_t **msgs, size_t n, arena *a, const char **dead_reason,
                     proj_stats *stats, todo_err *err)
{
    return proj_apply_batch_status(pg, msgs, n, a, dead_reason, NULL, stats, err);
}
