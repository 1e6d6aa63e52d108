/* proj_rebuild: see proj_rebuild.h. */
#include "proj_rebuild.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kafkax.h"
#include "lock_keys.h"
#include "log.h"
#include "pgx.h"
#include "proj_apply.h"
#include "proj_loop.h"

#define REBUILD_LOCK_KEY LOCK_REBUILD
#define SHADOW "read_rebuild"
#define MAX_PARTITIONS 256
#define CHECK_EVERY_MS 1000

typedef struct rebuild {
    const proj_rebuild_opts *o;
    PGconn *pg;                 /* admin connection: DDL, locks, checks */
    char group[160];
    bool resumed, locked, interrupted, failed, indexed;
    atomic_bool done;           /* the loops stop (the monitor said so) */
    pthread_mutex_t mu;         /* applied, counted by the loops */
    int64_t applied;
    double started, last_check, last_report;
    int64_t remaining;
    todo_err err;
} rebuild;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void report(rebuild *r, const char *phase)
{
    if (r->o->progress == NULL) return;
    double elapsed = now_s() - r->started;
    pthread_mutex_lock(&r->mu); /* the replaying loops count it */
    int64_t applied = r->applied;
    pthread_mutex_unlock(&r->mu);
    proj_rebuild_progress p = {.phase = phase, .applied = applied,
                               .rate = elapsed > 0 ? (double)applied / elapsed : 0, .remaining = r->remaining,
                               .resumed = r->resumed};
    r->o->progress(&p, r->o->ctx);
    r->last_report = now_s();
}

/* Runs each statement of sqls (NULL-terminated) on pg. */
static int run_all(PGconn *pg, const char *const *sqls, todo_err *err)
{
    for (const char *const *s = sqls; *s != NULL; s++)
        if (pgx_cmd(pg, *s, 0, NULL, err) != 0) return err->code;
    return TODO_OK;
}

/* Creates the empty shadow copy of the read schema (one transaction). */
/* The read schema's indexes that back no constraint, as statements creating
 * them on the shadow copy (if not there yet), filtered by cond. */
#define SECONDARY_INDEXES(cond)                                                                               \
    " select regexp_replace(regexp_replace(indexdef, ' ON read\\.', ' ON " SHADOW ".'),"                     \
    "  '^CREATE (UNIQUE )?INDEX ', 'CREATE \\1INDEX IF NOT EXISTS ')"                                        \
    " from pg_indexes i where schemaname = 'read' and not exists"                                            \
    " (select 1 from pg_constraint k join pg_namespace n on n.oid = k.connamespace"                           \
    "  where n.nspname = 'read' and k.conname = i.indexname)" cond

/* Records the shadow may still be behind the running live copy when it
 * moves on to indexing, or to pausing the live copy; what is left is caught
 * up under the swap lock (at thousands of records a second: well under a
 * second of pause). */
#define NEAR_ENOUGH 1000

/* The secondary (non-unique) indexes: built once the replay has caught up,
 * in one pass over the table each, instead of maintained row by row
 * through the whole replay. Idempotent (a resumed rebuild runs it again). */
static int create_indexes(rebuild *r, todo_err *err)
{
    PGresult *res = pgx_exec(r->pg, SECONDARY_INDEXES(" and indexdef not like 'CREATE UNIQUE %'"), 0, NULL, err);
    if (res == NULL) return err->code;
    int rc = TODO_OK;
    for (int i = 0; i < PQntuples(res) && rc == TODO_OK; i++) rc = pgx_cmd(r->pg, PQgetvalue(res, i, 0), 0, NULL, err);
    if (rc == TODO_OK) rc = pgx_cmd(r->pg, "analyze " SHADOW ".tasks", 0, NULL, err);
    PQclear(res);
    return rc;
}

static int create_shadow(rebuild *r, todo_err *err)
{
    static const char *const head[] = {"begin", "drop schema if exists " SHADOW " cascade", "create schema " SHADOW, NULL};
    static const char *const grants[] = {
        "grant usage on schema " SHADOW " to todo_query, todo_projector",
        "grant select on all tables in schema " SHADOW " to todo_query",
        "grant select, insert, update, delete on all tables in schema " SHADOW " to todo_projector",
        "alter default privileges in schema " SHADOW " grant select on tables to todo_query",
        "alter default privileges in schema " SHADOW " grant select, insert, update, delete on tables to todo_projector",
        NULL};
    PGresult *res = NULL;
    int rc;
    if ((rc = run_all(r->pg, head, err)) != 0) goto fail;
    /* Tables with their columns, defaults, checks and generated columns... */
    if ((res = pgx_exec(r->pg, "select tablename from pg_tables where schemaname = 'read' order by 1", 0, NULL, err)) ==
        NULL)
        goto fail_rc;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *t = PQgetvalue(res, i, 0);
        char *id = PQescapeIdentifier(r->pg, t, strlen(t));
        char sql[512];
        snprintf(sql, sizeof sql, "create table " SHADOW ".%s (like read.%s including all excluding indexes)", id, id);
        PQfreemem(id);
        if ((rc = pgx_cmd(r->pg, sql, 0, NULL, err)) != 0) goto fail;
    }
    PQclear(res);
    /* ...then primary keys, unique constraints and unique indexes under
     * their own names, so that the swapped-in copy is named like the old
     * one (the other indexes come once the replay caught up: create_indexes). */
    if ((res = pgx_exec(r->pg,
                        "select format('alter table " SHADOW ".%I add constraint %I %s', c.relname, k.conname,"
                        " pg_get_constraintdef(k.oid))"
                        " from pg_constraint k join pg_class c on c.oid = k.conrelid"
                        " join pg_namespace n on n.oid = c.relnamespace"
                        " where n.nspname = 'read' and k.contype in ('p', 'u')"
                        " union all" SECONDARY_INDEXES(" and indexdef like 'CREATE UNIQUE %'"),
                        0, NULL, err)) == NULL)
        goto fail_rc;
    for (int i = 0; i < PQntuples(res); i++)
        if ((rc = pgx_cmd(r->pg, PQgetvalue(res, i, 0), 0, NULL, err)) != 0) goto fail;
    PQclear(res);
    /* Triggers (their functions live in todo_meta). */
    if ((res = pgx_exec(r->pg,
                        "select pg_get_triggerdef(t.oid) from pg_trigger t join pg_class c on c.oid = t.tgrelid"
                        " join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'read' and not t.tgisinternal",
                        0, NULL, err)) == NULL)
        goto fail_rc;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *def = PQgetvalue(res, i, 0), *on = strstr(def, " ON read.");
        char sql[1024];
        if (on == NULL) continue;
        snprintf(sql, sizeof sql, "%.*s ON " SHADOW ".%s", (int)(on - def), def, on + strlen(" ON read."));
        if ((rc = pgx_cmd(r->pg, sql, 0, NULL, err)) != 0) goto fail;
    }
    PQclear(res);
    res = NULL;
    /* ...disabled while replaying: the statistics are counted once before
     * the swap (todo_meta.tasks_stats_recount). */
    if ((res = pgx_exec(r->pg, "select tablename from pg_tables where schemaname = '" SHADOW "' order by 1", 0, NULL,
                        err)) == NULL)
        goto fail_rc;
    for (int i = 0; i < PQntuples(res); i++) {
        char sql[256];
        snprintf(sql, sizeof sql, "alter table " SHADOW ".%s disable trigger user", PQgetvalue(res, i, 0));
        if ((rc = pgx_cmd(r->pg, sql, 0, NULL, err)) != 0) goto fail;
    }
    PQclear(res);
    res = NULL;
    if ((rc = run_all(r->pg, grants, err)) != 0) goto fail;
    const char *p[2] = {r->o->projection, r->group};
    if ((rc = pgx_cmd(r->pg,
                      "insert into todo_meta.rebuilds (projection, shadow_schema, consumer_group)"
                      " values ($1, '" SHADOW "', $2)",
                      2, p, err)) != 0 ||
        (rc = pgx_cmd(r->pg, "commit", 0, NULL, err)) != 0)
        goto fail;
    return TODO_OK;
fail_rc:
    rc = err->code;
fail:
    PQclear(res);
    pgx_cmd(r->pg, "rollback", 0, NULL, NULL);
    return rc;
}

/* Enables the shadow's triggers again (create_shadow disabled them). */
static int enable_triggers(PGconn *pg, todo_err *err)
{
    PGresult *res = pgx_exec(pg, "select tablename from pg_tables where schemaname = '" SHADOW "' order by 1", 0, NULL, err);
    if (res == NULL) return err->code;
    int rc = TODO_OK;
    for (int i = 0; i < PQntuples(res) && rc == TODO_OK; i++) {
        char sql[256];
        snprintf(sql, sizeof sql, "alter table " SHADOW ".%s enable trigger user", PQgetvalue(res, i, 0));
        rc = pgx_cmd(pg, sql, 0, NULL, err);
    }
    PQclear(res);
    return rc;
}

/* Reads next_offset per partition of topic of projection from schema's
 * table into off. */
static int db_offsets(PGconn *pg, const char *schema, const char *projection, const char *topic, int64_t *off,
                      todo_err *err)
{
    char sql[256];
    const char *p[2] = {projection, topic};
    snprintf(sql, sizeof sql, "select partition, next_offset from %s.projection_offsets where projection = $1 and topic = $2",
             schema);
    PGresult *res = pgx_exec(pg, sql, 2, p, err);
    if (res == NULL) return err->code;
    for (int i = 0; i < PQntuples(res); i++) {
        int part = atoi(PQgetvalue(res, i, 0));
        if (part >= 0 && part < MAX_PARTITIONS) off[part] = strtoll(PQgetvalue(res, i, 1), NULL, 10);
    }
    PQclear(res);
    return TODO_OK;
}

/* How many records the shadow is behind the live copy, summed over the
 * partitions of every source topic (the live copy's recorded offsets, or
 * its group's committed offsets for partitions it recorded nothing for): 0
 * when it holds at least what the live copy holds. */
static int caught_up(rebuild *r, int64_t *behind, todo_err *err)
{
    static int64_t live[MAX_PARTITIONS], shadow[MAX_PARTITIONS];
    kafkax_lag lag[MAX_PARTITIONS];
    int n, rc;
    *behind = 0;
    r->remaining = 0;
    for (int t = 0; t < PROJ_N_SOURCE_TOPICS; t++) {
        const char *topic = proj_source_topics[t];
        memset(live, 0, sizeof live);
        memset(shadow, 0, sizeof shadow);
        if ((rc = db_offsets(r->pg, "read", r->o->projection, topic, live, err)) != 0 ||
            (rc = db_offsets(r->pg, SHADOW, r->group, topic, shadow, err)) != 0 ||
            (rc = kafkax_group_lag(r->o->cfg->kafka_brokers, r->o->projection, topic, lag, MAX_PARTITIONS, &n, err)) !=
                0)
            return rc;
        for (int i = 0; i < n; i++) {
            int p = lag[i].partition;
            if (p < 0 || p >= MAX_PARTITIONS) continue;
            int64_t target = live[p] > lag[i].committed ? live[p] : lag[i].committed;
            if (shadow[p] < target) *behind += target - shadow[p];
            if (lag[i].end > shadow[p]) r->remaining += lag[i].end - shadow[p];
        }
    }
    return TODO_OK;
}

/* proj_loop's stop question, asked by every replaying loop: the monitor
 * (on the rebuild's own thread, the only one using r->pg) decides. */
static int should_stop(void *ctx)
{
    rebuild *r = ctx;
    return atomic_load(&r->done);
}

/* The monitor's question, every CHECK_EVERY_MS: the two phases of catching
 * up. Nonzero: stop replaying (to swap, or because it failed or was
 * interrupted). */
static int monitor(rebuild *r)
{
    int64_t behind = 0;
    if (r->o->interrupted != NULL && r->o->interrupted(r->o->ctx)) {
        r->interrupted = true;
        return 1;
    }
    double now = now_s();
    if (now - r->last_report >= 1.0) report(r, r->locked ? "catching up under the swap lock" : "replaying");
    if ((now - r->last_check) * 1000 < CHECK_EVERY_MS) return 0;
    r->last_check = now;
    if (caught_up(r, &behind, &r->err) != 0) {
        r->failed = true;
        return 1;
    }
    /* Under steady writes the live copy keeps a step ahead of the shadow
     * (both follow the same head), so "exactly caught up" may never be seen
     * while it runs: near enough starts the next phase, and only the last
     * one, with the live copy paused, must be exact. */
    if (behind > (r->locked ? 0 : NEAR_ENOUGH)) return 0;
    if (!r->indexed) { /* caught up for the first time: index, then catch up again */
        report(r, "indexing");
        if (create_indexes(r, &r->err) != 0) {
            r->failed = true;
            return 1;
        }
        r->indexed = true;
        r->last_check = 0;
        return 0;
    }
    if (r->locked) return 1; /* caught up with the paused live copy: swap */
    /* Pause the live projection: its in-flight batch finishes, the next waits. */
    if (pgx_cmd(r->pg, "select pg_advisory_lock(" PROJ_SWAP_LOCK_KEY ")", 0, NULL, &r->err) != 0) {
        r->failed = true;
        return 1;
    }
    r->locked = true;
    r->last_check = 0; /* check again at once against the now frozen target */
    report(r, "catching up under the swap lock");
    return 0;
}

static void after_batch(const proj_stats *st, size_t records, void *ctx)
{
    (void)st;
    rebuild *r = ctx;
    pthread_mutex_lock(&r->mu);
    r->applied += (int64_t)records;
    pthread_mutex_unlock(&r->mu);
}

int proj_rebuild(const proj_rebuild_opts *o, todo_err *err)
{
    rebuild r = {.o = o};
    int rc;
    pthread_mutex_init(&r.mu, NULL);
    PGresult *res;
    r.started = r.last_report = now_s();
    if ((r.pg = pgx_connect(o->cfg->admin_pg_url, "todoctl-rebuild", err)) == NULL) return TODO_EUNAVAIL;
    if ((res = pgx_exec(r.pg, "select pg_try_advisory_lock(" REBUILD_LOCK_KEY ")", 0, NULL, err)) == NULL) {
        rc = err->code;
        goto out;
    }
    bool got = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    if (!got) {
        rc = todo_err_set(err, TODO_EPRECOND, "a rebuild is already running; wait for it or stop it first");
        goto out;
    }
    /* Resume a rebuild that was interrupted, or start afresh. */
    const char *p[1] = {o->projection};
    if ((res = pgx_exec(r.pg,
                        "select consumer_group from todo_meta.rebuilds r join pg_namespace n on n.nspname = r.shadow_schema"
                        " where projection = $1",
                        1, p, err)) == NULL) {
        rc = err->code;
        goto out;
    }
    if (PQntuples(res) == 1) {
        snprintf(r.group, sizeof r.group, "%s", PQgetvalue(res, 0, 0));
        r.resumed = true;
    } else {
        snprintf(r.group, sizeof r.group, "%.100s-rebuild-%lld", o->projection, (long long)time(NULL));
        pgx_cmd(r.pg, "delete from todo_meta.rebuilds where projection = $1", 1, p, NULL);
    }
    PQclear(res);
    if (!r.resumed && (rc = create_shadow(&r, err)) != 0) goto out;
    log_info("rebuild", r.resumed ? "resuming" : "started", "projection=%s group=%s shadow=" SHADOW, o->projection,
             r.group);

    proj_loop_opts lo = {.cfg = o->cfg, .group = r.group, .schema = SHADOW, .shadow = true, .should_stop = should_stop,
                         .after_batch = after_batch, .ctx = &r};
    proj_loops *loops = proj_loops_start(&lo, o->cfg->rebuild_threads, err);
    if (loops == NULL) {
        rc = err->code;
        goto out;
    }
    /* Watch them from here until they have caught up (or one ended early:
     * it could not start). */
    while (!atomic_load(&r.done) && !proj_loops_any_finished(loops)) {
        struct timespec pause = {0, 50 * 1000000};
        nanosleep(&pause, NULL);
        if (monitor(&r)) atomic_store(&r.done, true);
    }
    atomic_store(&r.done, true);
    if ((rc = proj_loops_join(loops, err)) != 0) goto out;
    if (r.failed) {
        *err = r.err;
        rc = err->code != 0 ? err->code : TODO_EUNAVAIL;
        goto out;
    }
    if (r.interrupted) {
        rc = todo_err_set(err, TODO_EUNAVAIL, "interrupted; run the rebuild again to resume it");
        goto out;
    }
    /* Count the statistics, enable the triggers and swap, still holding the
     * swap lock: no live batch runs meanwhile. */
    static const char *const swap[] = {"begin", "select todo_meta.tasks_stats_recount('" SHADOW "')", NULL};
    static const char *const rename[] = {"alter schema read rename to read_old", "alter schema " SHADOW " rename to read",
                                         "drop schema read_old cascade", NULL};
    /* The live projection's counters (todoctl projection status) go on in
     * the new copy; the replay's stay beside them under the rebuild's group. */
    static const char *const carry =
        "insert into " SHADOW ".projection_status (projection, batches, events, applied, dead, last_batch_at,"
        " last_error, last_error_at) select projection, batches, events, applied, dead, last_batch_at, last_error,"
        " last_error_at from read.projection_status where projection = $1 on conflict (projection) do nothing";
    if ((rc = run_all(r.pg, swap, err)) != 0 || (rc = pgx_cmd(r.pg, carry, 1, p, err)) != 0 ||
        (rc = enable_triggers(r.pg, err)) != 0 ||
        (rc = run_all(r.pg, rename, err)) != 0 ||
        (rc = pgx_cmd(r.pg, "delete from todo_meta.rebuilds where projection = $1", 1, p, err)) != 0 ||
        (rc = pgx_cmd(r.pg, "commit", 0, NULL, err)) != 0) {
        pgx_cmd(r.pg, "rollback", 0, NULL, NULL);
        goto out;
    }
    r.remaining = 0;
    report(&r, "swapped");
    log_info("rebuild", "swapped in", "projection=%s records=%" PRId64, o->projection, r.applied);
    rc = TODO_OK;
out:
    pgx_close(r.pg); /* ends the session: releases the swap and rebuild locks */
    pthread_mutex_destroy(&r.mu);
    return rc;
}
