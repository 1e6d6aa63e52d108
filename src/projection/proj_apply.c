/* proj_apply: see proj_apply.h. */
#include "proj_apply.h"

#include "park.h"

#include <openssl/crypto.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "keystore.h"
#include "log.h"
#include "metrics.h"
#include "trace.h"
#include "pgx.h"
#include "proj_cache.h"
#include "proj_def.h"
#include "reg_local.h"
#include "seal.h"
#include "text.h"
#include "todo/v1/events.pb-c.h"
#include "topic_names.h"

const proj_def *const proj_defs[PROJ_N_DEFS] = {&proj_tasks, &proj_analytics};

const char *proj_def_group(const proj_def *d, const todo_config *cfg)
{
    return d == &proj_tasks ? cfg->projector_group : d->group;
}

const proj_def *proj_def_find(const char *name, const todo_config *cfg)
{
    for (int i = 0; i < PROJ_N_DEFS; i++)
        if (strcmp(proj_defs[i]->name, name) == 0 || strcmp(proj_def_group(proj_defs[i], cfg), name) == 0)
            return proj_defs[i];
    return NULL;
}

typedef proj_outcome outcome;
#define APPLIED PROJ_APPLIED
#define SKIPPED PROJ_SKIPPED
#define DEAD PROJ_DEAD

/* The handlers' helpers (proj_def.h). */

/* A payload time as SQL text. One out of range (a hostile or broken
 * producer) would overflow the conversion: it becomes text the database
 * refuses, so the record is dead-lettered saying why. */
char *proj_ts_text(arena *a, const Google__Protobuf__Timestamp *ts)
{
    if (ts == NULL) return NULL;
    if (!event_timestamp_valid(ts)) return (char *)"a time outside years 1 to 9999";
    return event_time_text(a, event_timestamp_us(ts));
}

Todo__V1__TaskCreatedV2 *proj_task_created(const Todo__V1__EventEnvelope *env, arena *a, const char **why)
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

ProtobufCMessage *proj_payload(const Todo__V1__EventEnvelope *env, const ProtobufCMessageDescriptor *desc, arena *a,
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
    /* Every event's field 1 is its aggregate's id (task, reminder, pattern). */
    const char *id = *(char *const *)((const char *)m + desc->fields[0].offset);
    if (strcmp(id, env->aggregate_id) != 0) {
        *why = arena_printf(a, "%s payload names %s, the envelope %s", env->event_type, id, env->aggregate_id);
        return NULL;
    }
    return m;
}

/* The statement for p: it returns the version applied before and whether
 * this event claimed the next. One round trip (or none: it is pipelined). */
static const char *claim_sql(arena *a, const proj_plan *p)
{
    /* The feed (migration 0025): the user's next position, and the row. */
    const char *feed = !p->feed ? ""
                                : arena_printf(a,
                                               ", head as (insert into feed.heads as h (user_id, position)"
                                               "   select $%d, 1 where" PROJ_CLAIMED
                                               "   on conflict (user_id) do update set position = h.position + 1"
                                               "   returning position),"
                                               /* recorded_at: after the heads row lock, so a user's
                                                * later positions never have earlier times (pruning
                                                * by time leaves no gap) */
                                               " fed as (insert into feed.updates (user_id, position, kind, entity_id,"
                                               "   version, event_type, event_time, recorded_at) select $%d, position,"
                                               "   $%d, $1::uuid, $2::bigint, $%d, $3::timestamptz, clock_timestamp()"
                                               "   from head)",
                                               p->n - 2, p->n - 2, p->n - 1, p->n);
    const char *writes = p->write != NULL ? arena_printf(a, ", w as (%s)", p->write) : "";
    for (int i = 0; i < PROJ_ALSO_MAX && p->also[i] != NULL; i++)
        writes = arena_printf(a, "%s, w%d as (%s)", writes, i + 2, p->also[i]);
    /* An erased user's event is never claimed, whatever a cache said (the
     * database is the authority: keys.user_keys, migration 0029). */
    const char *guard = p->erased_guard == 0 ? ""
                                             : arena_printf(a,
                                                            " where not exists (select 1 from keys.user_keys k where"
                                                            " k.user_id = $%d and k.wrapped is null)",
                                                            p->erased_guard);
    return arena_printf(a,
                        "with old as (select version from applied_versions where aggregate_id = $1::uuid for update),"
                        " claim as (insert into applied_versions (aggregate_id, version) select $1::uuid, $2::bigint%s"
                        "   on conflict (aggregate_id) do update set version = excluded.version"
                        "   where applied_versions.version < excluded.version returning 1)%s%s"
                        " select coalesce((select version from old), 0), exists (select 1 from claim), $3::timestamptz",
                        guard, writes, feed);
}

/* The feed's kind of an event type, or NULL. */
static const char *feed_kind(const char *type)
{
    static const struct {
        const char *prefix, *kind;
    } kinds[] = {{"task.", "task"},
                 {"reminder.", "reminder"},
                 {"inbox.", "notification"},
                 {"recurring_pattern.", "pattern"},
                 {"user.", "profile"}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strncmp(type, kinds[i].prefix, strlen(kinds[i].prefix)) == 0) return kinds[i].kind;
    return NULL;
}

/* Makes p also add env to its user's update feed. */
static void plan_feed(proj_plan *p, const Todo__V1__EventEnvelope *env)
{
    const char *t = env->event_type;
    if (strcmp(t, "user.registered") == 0 || strcmp(t, "user.erasure_requested") == 0 || strcmp(t, "user.erased") == 0)
        return; /* a user's lifecycle is not a change a client watches (and erasure deletes the feed) */
    const char *kind = feed_kind(t);
    if (kind == NULL || env->user_id[0] == '\0') return;
    p->params[p->n++] = env->user_id;
    p->params[p->n++] = kind;
    p->params[p->n++] = env->event_type;
    p->feed = true;
}

void proj_plan_base(proj_plan *p, const Todo__V1__EventEnvelope *env, arena *a, const char *time)
{
    memset(p, 0, sizeof *p);
    p->params[0] = env->aggregate_id;
    p->params[1] = arena_printf(a, "%" PRId64, env->aggregate_version);
    p->params[2] = time;
    p->n = 3;
}

proj_outcome proj_plan_user_erased(const Todo__V1__EventEnvelope *env, arena *a, proj_plan *p,
                                   const char *const *deletes, const char **why)
{
    if (proj_payload(env, &todo__v1__user_erased__descriptor, a, why) == NULL) return PROJ_DEAD;
    proj_plan_base(p, env, a, proj_ts_text(a, env->time));
    p->params[p->n++] = env->user_id;
    p->write = deletes[0];
    for (int i = 1; deletes[i] != NULL && i <= PROJ_ALSO_MAX; i++) p->also[i - 1] = deletes[i];
    return PROJ_APPLIED;
}

/* The outcome of a record's statement from its result (old version, claimed). */
static outcome claimed(const Todo__V1__EventEnvelope *env, const PGresult *r)
{
    int64_t have = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    if (PQgetvalue(r, 0, 1)[0] != 't') return SKIPPED;
    if (have + 1 != env->aggregate_version)
        log_warn("projector", "version gap: applying an event whose predecessor was not applied",
                 "aggregate=%s applied=%" PRId64 " event_version=%" PRId64 " event=%s", env->aggregate_id, have,
                 env->aggregate_version, env->event_id);
    return APPLIED;
}

/* A list of statements to pipeline, in an arena. */
typedef struct stmt_list {
    pgx_stmt *s;
    int n, cap;
} stmt_list;

static void add_stmt(stmt_list *l, arena *a, const char *sql, int n, const char *const *params)
{
    if (l->n == l->cap) {
        int cap = l->cap > 0 ? l->cap * 2 : 32;
        pgx_stmt *s = arena_alloc(a, (size_t)cap * sizeof *s);
        if (l->n > 0) memcpy(s, l->s, (size_t)l->n * sizeof *s);
        l->s = s;
        l->cap = cap;
    }
    const char **v = n > 0 ? arena_alloc(a, (size_t)n * sizeof *v) : NULL;
    if (n > 0) memcpy(v, params, (size_t)n * sizeof *v);
    l->s[l->n++] = (pgx_stmt){.sql = sql, .n = n, .values = v};
}

/* Adds the batch to projection_status. */
static void record_status(stmt_list *l, const proj_status *ps, const proj_stats *st, const char **dead, size_t n,
                          arena *a)
{
    const char *last_error = ps->last_error;
    for (size_t i = 0; i < n && last_error == NULL; i++)
        if (dead[i] != NULL) last_error = arena_printf(a, "dead letter: %s", dead[i]);
    const char *p[5] = {ps->projection, arena_printf(a, "%d", st->applied + st->skipped + st->dead),
                        arena_printf(a, "%d", st->applied), arena_printf(a, "%d", st->dead), last_error};
    add_stmt(l, a,
             "insert into projection_status as s (projection, batches, events, applied, dead, last_batch_at,"
             " last_error, last_error_at) values ($1, 1, $2::bigint, $3::bigint, $4::bigint, now(), $5,"
             " case when $5::text is null then null else now() end)"
             " on conflict (projection) do update set batches = s.batches + 1, events = s.events + excluded.events,"
             " applied = s.applied + excluded.applied, dead = s.dead + excluded.dead, last_batch_at = now(),"
             " last_error = coalesce(excluded.last_error, s.last_error),"
             " last_error_at = coalesce(excluded.last_error_at, s.last_error_at)",
             5, p);
}

/* Records, per partition, the offset after the batch's last record. */
static void record_offsets(stmt_list *l, const char *projection, rd_kafka_message_t **msgs, size_t n, arena *a)
{
    for (size_t i = 0; i < n; i++) {
        bool last = true; /* the last record of its partition in this batch */
        for (size_t j = i + 1; j < n && last; j++)
            last = msgs[j]->partition != msgs[i]->partition || msgs[j]->rkt != msgs[i]->rkt;
        if (!last) continue;
        const char *p[4] = {projection, rd_kafka_topic_name(msgs[i]->rkt), arena_printf(a, "%d", (int)msgs[i]->partition),
                            arena_printf(a, "%lld", (long long)msgs[i]->offset + 1)};
        add_stmt(l, a,
                 "insert into projection_offsets as o (projection, topic, partition, next_offset)"
                 " values ($1, $2, $3::int, $4::bigint) on conflict (projection, topic, partition)"
                 " do update set next_offset = greatest(o.next_offset, excluded.next_offset)",
                 4, p);
    }
}

/* True for a refusal that may pass on another try. */
static bool transient(int code) { return code == TODO_ECONFLICT || code == TODO_ELOCKED || code == TODO_EDEADLINE; }

/* Runs the records' statements one by one, each under a savepoint: one that
 * the database refuses is dead-lettered alone, unless the refusal may pass
 * on another try: then the batch fails naming it (*failed). */
static int run_one_by_one(PGconn *pg, const proj_def *def, rd_kafka_message_t **msgs, Todo__V1__EventEnvelope **envs,
                          const proj_plan *plans, outcome *out, size_t n, arena *a, const char **dead, int *failed,
                          todo_err *err)
{
    int rc;
    for (size_t i = 0; i < n; i++) {
        if (out[i] != APPLIED) continue;
        if ((rc = pgx_cmd(pg, "savepoint rec", 0, NULL, err)) != 0) return rc;
        PGresult *r = pgx_exec(pg, claim_sql(a, &plans[i]), plans[i].n, plans[i].params, err);
        const char *fsql, *fp[PROJ_FOLLOW_MAX];
        int fn = 0;
        if (r != NULL && def->follow != NULL && def->follow(envs[i], a, &fsql, fp, &fn)) {
            /* Under a savepoint of its own: a follow-up (a history row) the
             * database refuses costs that row (logged), not the event. */
            todo_err herr;
            PGresult *h = NULL;
            if (pgx_cmd(pg, "savepoint follow", 0, NULL, &herr) == 0 &&
                (h = pgx_exec(pg, fsql, fn, fp, &herr)) == NULL) {
                if (herr.code == TODO_EUNAVAIL) {
                    PQclear(r);
                    *err = herr;
                    return herr.code;
                }
                log_warn("projector", "an event's follow-up statement was refused; the event is applied without it",
                         "projection=%s aggregate=%s version=%" PRId64 " error=\"%s\"", def->name,
                         envs[i]->aggregate_id, envs[i]->aggregate_version, herr.msg);
                pgx_cmd(pg, "rollback to savepoint follow", 0, NULL, NULL);
            }
            PQclear(h);
        }
        if (r != NULL) {
            out[i] = claimed(envs[i], r);
            PQclear(r);
            continue;
        }
        if (err->code == TODO_EUNAVAIL) return err->code;
        if (transient(err->code)) {
            *failed = (int)i;
            return err->code;
        }
        /* This record alone breaks the database: dead-letter it, and what
         * must wait behind it (park.h). */
        dead[i] = arena_printf(a, "applying failed: %s", err->msg);
        out[i] = DEAD;
        park_followers(msgs, n, dead, i);
        for (size_t j = i + 1; j < n; j++)
            if (dead[j] != NULL) out[j] = DEAD;
        if ((rc = pgx_cmd(pg, "rollback to savepoint rec", 0, NULL, err)) != 0) return rc;
    }
    return TODO_OK;
}

/* Opens the sealed personal fields of env's payload with its user's key
 * (env->data is then the payload with them in clear), and sets *skip for
 * an event of an erased user (but user.erased itself, which deletes their
 * rows) and for a sealed one whose user has no key. TODO_EINVAL (err says
 * why): the record cannot be opened (dead-lettered); another status: the
 * keys could not be read (the batch is retried). */
static int open_sealed(const proj_status *ps, PGconn *pg, Todo__V1__EventEnvelope *env, arena *a, bool *skip,
                       todo_err *err)
{
    seal_key key;
    keystore_state state;
    int rc;
    *skip = false;
    if (ps->keys == NULL || env->user_id[0] == '\0') return TODO_OK;
    if ((rc = keystore_get(ps->keys, pg, env->user_id, &key, &state, err)) != TODO_OK) return rc;
    if (state == KEYSTORE_DESTROYED) {
        *skip = strcmp(env->event_type, "user.erased") != 0;
        return TODO_OK;
    }
    const char *name = event_message_name(env->event_type, env->schema_version);
    const ProtobufCMessageDescriptor *d = name != NULL ? seal_descriptor(name) : NULL;
    ProtobufCAllocator alloc;
    arena_pbc_allocator(a, &alloc);
    ProtobufCMessage *m = d != NULL ? protobuf_c_message_unpack(d, &alloc, env->data.len, env->data.data) : NULL;
    if (m == NULL || !seal_event_is_sealed(m)) { /* nothing sealed (or undecodable: the handler says so) */
        OPENSSL_cleanse(&key, sizeof key);
        return TODO_OK;
    }
    if (state == KEYSTORE_NONE) { /* cached before the user's first command made the key: read again */
        keystore_forget(ps->keys, env->user_id);
        if ((rc = keystore_get(ps->keys, pg, env->user_id, &key, &state, err)) != TODO_OK) return rc;
    }
    if (state != KEYSTORE_KEY) {
        log_warn("projector", "a sealed event of a user without a key: skipped", "user=%s event=%s type=%s",
                 env->user_id, env->event_id, env->event_type);
        *skip = true;
        return TODO_OK;
    }
    rc = seal_open_event(m, &key, seal_event_aad(a, env->user_id, env->aggregate_id, env->event_type), a, err);
    OPENSSL_cleanse(&key, sizeof key);
    if (rc != TODO_OK) return rc;
    env->data.len = protobuf_c_message_get_packed_size(m);
    env->data.data = arena_alloc(a, env->data.len + 1);
    protobuf_c_message_pack(m, env->data.data);
    return TODO_OK;
}

/* True for an event of def claimed by its event id: the Redis fast path,
 * which knows versions, is not asked about it. */
static bool by_id(const proj_def *def, const Todo__V1__EventEnvelope *env)
{
    return def->by_event_id != NULL && def->by_event_id(env);
}

/* How long each applied event took from its time to the read model. */
static void observe_delays(metric_series *delay, Todo__V1__EventEnvelope **envs, const outcome *out, size_t n)
{
    if (delay == NULL) return;
    double now_us = (double)event_now_us();
    for (size_t i = 0; i < n; i++) {
        if (out[i] != APPLIED || envs[i] == NULL || envs[i]->time == NULL) continue;
        double t = (double)event_timestamp_us(envs[i]->time);
        metric_observe(delay, now_us > t ? (now_us - t) / 1e6 : 0);
    }
}

static int run_batch(PGconn *pg, rd_kafka_message_t **msgs, size_t n, arena *a, const char **dead,
                     const proj_status *ps, proj_stats *st, bool one_by_one, todo_err *err)
{
    const proj_def *def = ps->def;
    int rc;
    memset(st, 0, sizeof *st);
    st->failed = -1;
    /* Decode every record once, and ask the Redis fast path about them all in
     * one round trip. */
    Todo__V1__EventEnvelope **envs = arena_calloc(a, (n + 1) * sizeof *envs);
    const char **ids = arena_calloc(a, (n + 1) * sizeof *ids);
    int64_t *known = arena_calloc(a, (n + 1) * sizeof *known);
    outcome *out = arena_calloc(a, (n + 1) * sizeof *out);
    proj_plan *plans = arena_calloc(a, (n + 1) * sizeof *plans);
    bool *done = arena_calloc(a, (n + 1) * sizeof *done); /* applied, or applied before */
    size_t n_ids = 0;
    proj_cache *cache = ps->cache;
    for (size_t i = 0; i < n; i++) {
        todo_err derr;
        out[i] = DEAD;
        if (msgs[i]->err != RD_KAFKA_RESP_ERR_NO_ERROR || dead[i] != NULL) continue; /* given up on */
        if (event_decode(msgs[i]->payload, msgs[i]->len, a, &envs[i], &derr) != 0 ||
            (ps->schemas != NULL && (rc = reg_resolve_envelope(ps->schemas, pg, envs[i], &derr)) != 0)) {
            if (envs[i] != NULL && derr.code != TODO_EINVAL) { /* the registry could not be asked: retry */
                *err = derr;
                return derr.code;
            }
            envs[i] = NULL;
            dead[i] = arena_strdup(a, derr.msg);
        }
    }
    /* Sealed personal fields opened with their user's key; an erased
     * user's events skipped (keystore.h, seal.h). */
    bool *skip = arena_calloc(a, (n + 1) * sizeof *skip);
    for (size_t i = 0; i < n; i++) {
        if (envs[i] == NULL || dead[i] != NULL) continue;
        todo_err serr;
        if ((rc = open_sealed(ps, pg, envs[i], a, &skip[i], &serr)) == TODO_EINVAL) {
            dead[i] = arena_strdup(a, serr.msg);
        } else if (rc != TODO_OK) {
            *err = serr;
            return rc;
        }
    }
    /* What must wait behind a dead record is not applied (park.h). */
    for (size_t i = 0; i < n; i++)
        if (dead[i] != NULL) park_followers(msgs, n, dead, i);
    for (size_t i = 0; i < n; i++) {
        if (dead[i] != NULL) envs[i] = NULL;
        else if (envs[i] != NULL && !by_id(def, envs[i])) ids[n_ids++] = envs[i]->aggregate_id;
    }
    int64_t *versions = arena_calloc(a, (n_ids + 1) * sizeof *versions);
    proj_cache_lookup(cache, ids, n_ids, versions);
    for (size_t i = 0, k = 0; i < n; i++)
        if (envs[i] != NULL && !by_id(def, envs[i])) known[i] = versions[k++];
    proj_cache_discard(cache);

    /* Plan each record: one statement, or dead, or known to Redis. */
    stmt_list head = {0}, tail = {0};
    add_stmt(&head, a, "begin", 0, NULL);
    /* A rebuild's swap takes this lock exclusively: no live batch runs across it. */
    if (!ps->shadow)
        add_stmt(&head, a, arena_printf(a, "select pg_advisory_xact_lock_shared(%s)", def->swap_lock), 0, NULL);
    bool *follows = arena_calloc(a, (n + 1) * sizeof *follows); /* a follow-up statement comes after its own */
    const char **feed_users = arena_calloc(a, (n + 1) * sizeof *feed_users);
    size_t n_feed_users = 0;
    for (size_t i = 0; i < n; i++) {
        if (envs[i] == NULL || dead[i] != NULL) continue; /* dead, or waits behind a record proj_plan dead */
        if (skip[i]) { /* an erased user's */
            out[i] = SKIPPED;
            continue;
        }
        if (known[i] >= envs[i]->aggregate_version) { /* Redis: applied before */
            out[i] = SKIPPED;
            continue;
        }
        out[i] = def->plan(envs[i], a, &plans[i], &dead[i]);
        if (out[i] == APPLIED && ps->keys != NULL && envs[i]->user_id[0] != '\0' &&
            strcmp(envs[i]->event_type, "user.erased") != 0) {
            plans[i].params[plans[i].n++] = envs[i]->user_id;
            plans[i].erased_guard = plans[i].n;
        }
        if (out[i] == DEAD) park_followers(msgs, n, dead, i);
        if (out[i] == APPLIED && def->feed && !ps->shadow) plan_feed(&plans[i], envs[i]); /* a replay adds no feed */
        if (plans[i].feed) feed_users[n_feed_users++] = envs[i]->user_id;
    }
    /* The feed's heads rows of the batch's users, locked first and in one
     * order (sorted, as the statement inserts them): two batches sharing
     * users (a rebalance's old and new owner) wait for each other instead
     * of deadlocking on the rows the claims lock one by one. */
    if (n_feed_users > 0) {
        const char *p[1] = {pgx_text_array(a, (char **)feed_users, n_feed_users)};
        add_stmt(&head, a,
                 "insert into feed.heads as h (user_id, position) select distinct u, 0 from unnest($1::text[]) u"
                 " order by 1 on conflict (user_id) do update set position = h.position",
                 1, p);
    }
    int first = head.n;
    for (size_t i = 0; i < n && !one_by_one; i++) {
        if (out[i] != APPLIED) continue;
        add_stmt(&head, a, claim_sql(a, &plans[i]), plans[i].n, plans[i].params);
        const char *fsql, *fp[PROJ_FOLLOW_MAX];
        int fn = 0;
        if ((follows[i] = def->follow != NULL && def->follow(envs[i], a, &fsql, fp, &fn))) add_stmt(&head, a, fsql, fn, fp);
    }
    /* Then run them: all in one pipeline (one round trip), or one by one. */
    PGresult **res = arena_calloc(a, (size_t)(head.n + 1) * sizeof *res);
    if ((rc = pgx_pipeline(pg, head.s, head.n, res, NULL, err)) != 0) goto fail;
    for (size_t i = 0, k = (size_t)first; i < n && !one_by_one; i++) {
        if (out[i] != APPLIED) continue;
        out[i] = claimed(envs[i], res[k]);
        PQclear(res[k++]);
        if (follows[i]) PQclear(res[k++]);
    }
    for (int k = 0; k < first; k++) PQclear(res[k]);
    if (one_by_one && (rc = run_one_by_one(pg, def, msgs, envs, plans, out, n, a, dead, &st->failed, err)) != 0) goto fail;

    for (size_t i = 0; i < n; i++) {
        if (msgs[i]->err != RD_KAFKA_RESP_ERR_NO_ERROR) continue;
        st->applied += out[i] == APPLIED;
        st->skipped += out[i] == SKIPPED;
        st->dead += out[i] == DEAD;
        done[i] = out[i] != DEAD;
        if (done[i] && !by_id(def, envs[i]))
            proj_cache_note(cache, envs[i]->aggregate_id, envs[i]->aggregate_version);
    }
    /* The batch's bookkeeping and the commit: a second round trip. */
    record_status(&tail, ps, st, dead, n, a);
    record_offsets(&tail, ps->projection, msgs, n, a);
    add_stmt(&tail, a, "select pg_notify('read_progress', '')", 0, NULL);
    /* WatchUpdates streams (todo-query) hear of their user's new positions. */
    for (size_t i = 0; i < n; i++) {
        if (out[i] != APPLIED || !plans[i].feed) continue;
        bool first_of_user = true; /* the user's first fed event in the batch */
        for (size_t j = 0; j < i && first_of_user; j++)
            first_of_user = !(out[j] == APPLIED && plans[j].feed && strcmp(envs[j]->user_id, envs[i]->user_id) == 0);
        if (first_of_user) add_stmt(&tail, a, "select pg_notify('feed', $1)", 1, (const char *const *)&envs[i]->user_id);
    }
    add_stmt(&tail, a, "commit", 0, NULL);
    if ((rc = pgx_pipeline(pg, tail.s, tail.n, NULL, NULL, err)) != 0) goto fail;
    observe_delays(ps->delay, envs, out, n);
    proj_cache_flush(cache); /* only what the database holds now */
    for (size_t i = 0; i < n && ps->keys != NULL; i++)
        if (out[i] == APPLIED && strcmp(envs[i]->event_type, "user.erased") == 0) keystore_forget(ps->keys, envs[i]->user_id);
    if (log_enabled(LOG_DEBUG)) /* each applied event, in its trace */
        for (size_t i = 0; i < n; i++) {
            trace_ctx parent, span;
            if (out[i] != APPLIED || !trace_parse(event_traceparent(envs[i]), &parent)) continue;
            trace_child(&parent, &span);
            trace_enter(&span);
            log_debug("projector", "applied", "type=%s aggregate=%s version=%lld event=%s", envs[i]->event_type,
                      envs[i]->aggregate_id, (long long)envs[i]->aggregate_version, envs[i]->event_id);
            trace_leave();
        }
    return TODO_OK;
fail:
    if (PQstatus(pg) == CONNECTION_OK) pgx_cmd(pg, "rollback", 0, NULL, NULL);
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

