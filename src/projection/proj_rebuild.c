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
#include "log.h"
#include "pgx.h"
#include "proj_apply.h"
#include "proj_loop.h"

#define MAX_PARTITIONS 256
#define CHECK_EVERY_MS 1000

typedef struct rebuild {
    const proj_rebuild_opts *o;
    const char *live;           /* the definition's schema: "read", "analytics" */
    char shadow[64];            /* its copy being rebuilt: "<schema>_rebuild" */
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

/* The live schema's indexes that back no constraint, as statements
 * creating them on the shadow copy (if not there yet): the unique ones, or
 * the others. */
static PGresult *secondary_indexes(rebuild *r, bool unique, todo_err *err)
{
    const char *p[3] = {r->live, r->shadow, unique ? "t" : "f"};
    return pgx_exec(r->pg,
                    "select regexp_replace(regexp_replace(indexdef, ' ON ' || $1 || '\\.', ' ON ' || $2 || '.'),"
                    " '^CREATE (UNIQUE )?INDEX ', 'CREATE \\1INDEX IF NOT EXISTS ')"
                    " from pg_indexes i where schemaname = $1 and (indexdef like 'CREATE UNIQUE %') = $3::bool"
                    " and not exists (select 1 from pg_constraint k join pg_namespace n on n.oid = k.connamespace"
                    "  where n.nspname = $1 and k.conname = i.indexname)",
                    3, p, err);
}

/* tmpl with its "%s" replaced by value, into out (cap bytes). */
static void fill(char *out, size_t cap, const char *tmpl, const char *value)
{
    const char *at = strstr(tmpl, "%s");
    if (at == NULL) snprintf(out, cap, "%s", tmpl);
    else snprintf(out, cap, "%.*s%s%s", (int)(at - tmpl), tmpl, value, at + 2);
}

/* Runs sql (with "%s" for the shadow's name) on r->pg. */
static int on_shadow(rebuild *r, const char *sql, todo_err *err)
{
    char buf[1024];
    fill(buf, sizeof buf, sql, r->shadow);
    return pgx_cmd(r->pg, buf, 0, NULL, err);
}

/* Runs sql (with "%s" for a table's name) for each of the shadow's tables. */
static int each_shadow_table(rebuild *r, const char *sql, todo_err *err)
{
    const char *p[1] = {r->shadow};
    PGresult *res = pgx_exec(r->pg, "select quote_ident(schemaname) || '.' || quote_ident(tablename) from pg_tables"
                             " where schemaname = $1 order by 1", 1, p, err);
    if (res == NULL) return err->code;
    int rc = TODO_OK;
    for (int i = 0; i < PQntuples(res) && rc == TODO_OK; i++) {
        char buf[512];
        fill(buf, sizeof buf, sql, PQgetvalue(res, i, 0));
        rc = pgx_cmd(r->pg, buf, 0, NULL, err);
    }
    PQclear(res);
    return rc;
}

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
    PGresult *res = secondary_indexes(r, false, err);
    if (res == NULL) return err->code;
    int rc = TODO_OK;
    for (int i = 0; i < PQntuples(res) && rc == TODO_OK; i++) rc = pgx_cmd(r->pg, PQgetvalue(res, i, 0), 0, NULL, err);
    PQclear(res);
    return rc == TODO_OK ? each_shadow_table(r, "analyze %s", err) : rc;
}

static int create_shadow(rebuild *r, todo_err *err)
{
    static const char *const grants[] = {
        "grant usage on schema %s to todo_query, todo_projector",
        "grant select on all tables in schema %s to todo_query",
        "grant select, insert, update, delete on all tables in schema %s to todo_projector",
        "alter default privileges in schema %s grant select on tables to todo_query",
        "alter default privileges in schema %s grant select, insert, update, delete on tables to todo_projector",
        NULL};
    const char *live[1] = {r->live};
    PGresult *res = NULL;
    int rc;
    if ((rc = pgx_cmd(r->pg, "begin", 0, NULL, err)) != 0 ||
        (rc = on_shadow(r, "drop schema if exists %s cascade", err)) != 0 ||
        (rc = on_shadow(r, "create schema %s", err)) != 0)
        goto fail;
    /* Tables with their columns, defaults, checks and generated columns... */
    if ((res = pgx_exec(r->pg, "select quote_ident(tablename) from pg_tables where schemaname = $1 order by 1", 1, live,
                        err)) == NULL)
        goto fail_rc;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *id = PQgetvalue(res, i, 0);
        char sql[512];
        snprintf(sql, sizeof sql, "create table %s.%s (like %s.%s including all excluding indexes)", r->shadow, id,
                 r->live, id);
        if ((rc = pgx_cmd(r->pg, sql, 0, NULL, err)) != 0) goto fail;
    }
    PQclear(res);
    res = NULL;
    /* ...then primary keys, unique constraints and unique indexes under
     * their own names, so that the swapped-in copy is named like the old
     * one (the other indexes come once the replay caught up: create_indexes). */
    const char *names[2] = {r->live, r->shadow};
    if ((res = pgx_exec(r->pg,
                        "select format('alter table %I.%I add constraint %I %s', $2::text, c.relname, k.conname,"
                        " pg_get_constraintdef(k.oid))"
                        " from pg_constraint k join pg_class c on c.oid = k.conrelid"
                        " join pg_namespace n on n.oid = c.relnamespace"
                        " where n.nspname = $1 and k.contype in ('p', 'u')",
                        2, names, err)) == NULL)
        goto fail_rc;
    for (int i = 0; i < PQntuples(res); i++)
        if ((rc = pgx_cmd(r->pg, PQgetvalue(res, i, 0), 0, NULL, err)) != 0) goto fail;
    PQclear(res);
    if ((res = secondary_indexes(r, true, err)) == NULL) goto fail_rc;
    for (int i = 0; i < PQntuples(res); i++)
        if ((rc = pgx_cmd(r->pg, PQgetvalue(res, i, 0), 0, NULL, err)) != 0) goto fail;
    PQclear(res);
    /* Triggers (their functions live in todo_meta). */
    if ((res = pgx_exec(r->pg,
                        "select pg_get_triggerdef(t.oid) from pg_trigger t join pg_class c on c.oid = t.tgrelid"
                        " join pg_namespace n on n.oid = c.relnamespace where n.nspname = $1 and not t.tgisinternal",
                        1, live, err)) == NULL)
        goto fail_rc;
    char on_live[80];
    snprintf(on_live, sizeof on_live, " ON %s.", r->live);
    for (int i = 0; i < PQntuples(res); i++) {
        const char *def = PQgetvalue(res, i, 0), *on = strstr(def, on_live);
        char sql[1024];
        if (on == NULL) continue;
        snprintf(sql, sizeof sql, "%.*s ON %s.%s", (int)(on - def), def, r->shadow, on + strlen(on_live));
        if ((rc = pgx_cmd(r->pg, sql, 0, NULL, err)) != 0) goto fail;
    }
    PQclear(res);
    res = NULL;
    /* ...disabled while replaying (the task model's statistics are counted
     * once before the swap: proj_def.before_swap). */
    if ((rc = each_shadow_table(r, "alter table %s disable trigger user", err)) != 0) goto fail;
    for (const char *const *g = grants; *g != NULL; g++)
        if ((rc = on_shadow(r, *g, err)) != 0) goto fail;
    const char *p[3] = {r->o->projection, r->shadow, r->group};
    if ((rc = pgx_cmd(r->pg,
                      "insert into todo_meta.rebuilds (projection, shadow_schema, consumer_group) values ($1, $2, $3)",
                      3, p, err)) != 0 ||
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
 * its group's committed offsets for partitions it recorded nothing for, at
 * most each partition's end; the records before a partition's first are
 * gone, and count as held): 0 when it holds at least what the live copy
 * holds. */
static int caught_up(rebuild *r, int64_t *behind, todo_err *err)
{
    static int64_t live[MAX_PARTITIONS], shadow[MAX_PARTITIONS];
    kafkax_lag lag[MAX_PARTITIONS];
    int n, rc;
    *behind = 0;
    r->remaining = 0;
    for (int t = 0; t < r->o->def->n_topics; t++) {
        const char *topic = r->o->def->topics[t];
        memset(live, 0, sizeof live);
        memset(shadow, 0, sizeof shadow);
        if ((rc = db_offsets(r->pg, r->live, r->o->projection, topic, live, err)) != 0 ||
            (rc = db_offsets(r->pg, r->shadow, r->group, topic, shadow, err)) != 0 ||
            (rc = kafkax_group_lag(r->o->cfg->kafka_brokers, r->o->projection, topic, lag, MAX_PARTITIONS, &n, err)) !=
                0)
            return rc;
        for (int i = 0; i < n; i++) {
            int p = lag[i].partition;
            if (p < 0 || p >= MAX_PARTITIONS) continue;
            int64_t target = live[p] > lag[i].committed ? live[p] : lag[i].committed;
            /* Records that are gone cannot be replayed: never past the end
             * of the partition (a live offset beyond it was recorded before
             * the topic was recreated), and the shadow holds at least up to
             * the first record the partition still has (the ones before
             * were deleted; an emptied partition gives it nothing to read). */
            if (target > lag[i].end) target = lag[i].end;
            int64_t held = shadow[p] > lag[i].start ? shadow[p] : lag[i].start;
            if (held < target) *behind += target - held;
            if (lag[i].end > held) r->remaining += lag[i].end - held;
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
    char lock[80];
    snprintf(lock, sizeof lock, "select pg_advisory_lock(%s)", r->o->def->swap_lock);
    if (pgx_cmd(r->pg, lock, 0, NULL, &r->err) != 0) {
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
    r.live = o->def->schema;
    snprintf(r.shadow, sizeof r.shadow, "%s_rebuild", r.live);
    char sql[512];
    if ((r.pg = pgx_connect(o->cfg->admin_pg_url, "todoctl-rebuild", err)) == NULL) return TODO_EUNAVAIL;
    snprintf(sql, sizeof sql, "select pg_try_advisory_lock(%s)", o->def->rebuild_lock);
    if ((res = pgx_exec(r.pg, sql, 0, NULL, err)) == NULL) {
        rc = err->code;
        goto out;
    }
    bool got = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    if (!got) {
        rc = todo_err_set(err, TODO_EPRECOND, "a rebuild of projection %s is already running; wait for it or stop it"
                          " first", o->def->name);
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
    log_info("rebuild", r.resumed ? "resuming" : "started", "projection=%s group=%s shadow=%s", o->def->name, r.group,
             r.shadow);

    proj_loop_opts lo = {.cfg = o->cfg, .def = o->def, .group = r.group, .schema = r.shadow, .shadow = true,
                         .should_stop = should_stop, .after_batch = after_batch, .ctx = &r};
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
    /* Count the statistics (before_swap), enable the triggers and swap,
     * still holding the swap lock: no live batch runs meanwhile. The live
     * projection's counters (todoctl projection status) go on in the new
     * copy; the replay's stay beside them under the rebuild's group. */
    char carry[512], old[80], rename[3][160];
    snprintf(carry, sizeof carry,
             "insert into %s.projection_status (projection, batches, events, applied, dead, last_batch_at, last_error,"
             " last_error_at) select projection, batches, events, applied, dead, last_batch_at, last_error,"
             " last_error_at from %s.projection_status where projection = $1 on conflict (projection) do nothing",
             r.shadow, r.live);
    snprintf(old, sizeof old, "%s_old", r.live);
    snprintf(rename[0], sizeof rename[0], "alter schema %s rename to %s", r.live, old);
    snprintf(rename[1], sizeof rename[1], "alter schema %s rename to %s", r.shadow, r.live);
    snprintf(rename[2], sizeof rename[2], "drop schema %s cascade", old);
    if ((rc = pgx_cmd(r.pg, "begin", 0, NULL, err)) != 0 ||
        (o->def->before_swap != NULL && (rc = on_shadow(&r, o->def->before_swap, err)) != 0) ||
        (rc = pgx_cmd(r.pg, carry, 1, p, err)) != 0 ||
        (rc = each_shadow_table(&r, "alter table %s enable trigger user", err)) != 0 ||
        (rc = pgx_cmd(r.pg, rename[0], 0, NULL, err)) != 0 || (rc = pgx_cmd(r.pg, rename[1], 0, NULL, err)) != 0 ||
        (rc = pgx_cmd(r.pg, rename[2], 0, NULL, err)) != 0 ||
        (rc = pgx_cmd(r.pg, "delete from todo_meta.rebuilds where projection = $1", 1, p, err)) != 0 ||
        (rc = pgx_cmd(r.pg, "commit", 0, NULL, err)) != 0) {
        pgx_cmd(r.pg, "rollback", 0, NULL, NULL);
        goto out;
    }
    r.remaining = 0;
    report(&r, "swapped");
    log_info("rebuild", "swapped in", "projection=%s group=%s records=%" PRId64, o->def->name, o->projection,
             r.applied);
    rc = TODO_OK;
out:
    pgx_close(r.pg); /* ends the session: releases the swap and rebuild locks */
    pthread_mutex_destroy(&r.mu);
    return rc;
}
