/* proj_loop: see proj_loop.h. */
#include "proj_loop.h"

#include <openssl/crypto.h>
#include <pthread.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "consume.h"
#include "keystore.h"
#include "log.h"
#include "metrics.h"
#include "pgx.h"
#include "proj_cache.h"
#include "reg_local.h"

/* One loop's state, handed to consume_run's callbacks. */
typedef struct proj_run {
    const proj_loop_opts *o;
    PGconn *pg;           /* reconnected when lost */
    arena *a;             /* one batch's decoding (and its dead records' reasons) */
    proj_status base;     /* what every batch records in projection_status */
    proj_stats st;        /* the last batch applied */
    char last_error[300]; /* a failure, recorded with the next batch that commits */
    time_t pruned;        /* when the update feed was last pruned */
} proj_run;

#define PRUNE_EVERY_S 60
#define KEY_CACHE_S 60 /* how long a user's key (or its erasure) is cached */

/* Drops the update feed's rows older than TODO_FEED_RETENTION_HOURS, once
 * a minute at most (after a committed batch: an idle projector adds
 * nothing to prune). A failure is logged; the next batch tries again. */
static void prune_feed(proj_run *r)
{
    time_t now = time(NULL);
    if (r->o->shadow || !r->o->def->feed || now - r->pruned < PRUNE_EVERY_S) return;
    r->pruned = now;
    char hours[16];
    snprintf(hours, sizeof hours, "%d", r->o->cfg->feed_retention_hours);
    const char *p[1] = {hours};
    todo_err err;
    PGresult *res = pgx_exec(r->pg, "delete from feed.updates where recorded_at < now() - make_interval(hours => $1::int)",
                             1, p, &err);
    if (res == NULL) {
        log_warn("projector", "could not prune the update feed", "error=\"%s\"", err.msg);
        return;
    }
    if (atoi(PQcmdTuples(res)) > 0)
        log_info("projector", "pruned the update feed", "rows=%s retention_hours=%s", PQcmdTuples(res), hours);
    PQclear(res);
}

/* consume_opts.apply: the batch in one transaction (proj_apply), on a
 * connection made again when it was lost. */
static int apply_batch(void *ctx, rd_kafka_message_t **msgs, size_t n, const char **dead, int *failed, todo_err *err)
{
    proj_run *r = ctx;
    proj_status ps = r->base;
    ps.last_error = r->last_error[0] ? r->last_error : NULL;
    *failed = -1;
    arena_reset(r->a);
    if (r->pg == NULL || PQstatus(r->pg) != CONNECTION_OK || PQpipelineStatus(r->pg) != PQ_PIPELINE_OFF) {
        pgx_close(r->pg);
        r->pg = pgx_connect_schema(r->o->cfg->pg_url, "todo-projector", r->o->schema, err);
    }
    int rc = r->pg != NULL ? proj_apply_batch_status(r->pg, msgs, n, r->a, dead, &ps, &r->st, err) : TODO_EUNAVAIL;
    if (rc == TODO_OK) {
        r->last_error[0] = '\0';
        prune_feed(r);
        return TODO_OK;
    }
    snprintf(r->last_error, sizeof r->last_error, "batch not applied: %.250s", err->msg);
    if (r->pg != NULL) *failed = r->st.failed;
    return rc;
}

static int should_stop(void *ctx)
{
    const proj_run *r = ctx;
    return r->o->should_stop(r->o->ctx);
}

static void after_batch(void *ctx, size_t n, int dead)
{
    const proj_run *r = ctx;
    (void)dead; /* r->st.dead counts them too */
    log_debug("projector", "batch", "records=%zu applied=%d skipped=%d dead=%d cache_hits=%lld", n, r->st.applied,
              r->st.skipped, r->st.dead, (long long)proj_cache_hits(r->base.cache));
    if (r->o->after_batch != NULL) r->o->after_batch(&r->st, n, r->o->ctx);
}

int proj_loop_run(const proj_loop_opts *o, todo_err *err)
{
    const todo_config *cfg = o->cfg;
    int rc = TODO_OK;
    proj_run r = {.o = o, .a = arena_new()};
    r.base = (proj_status){.def = o->def, .projection = o->group, .shadow = o->shadow, .schemas = reg_resolver_new()};
    if (r.a == NULL || r.base.schemas == NULL) {
        rc = todo_err_set(err, TODO_EINTERNAL, "out of memory");
        goto out;
    }
    /* The users' data keys: sealed personal fields are opened, an erased
     * user's events skipped. */
    seal_key master;
    if (seal_key_parse(cfg->master_key, &master, err) != 0) {
        rc = todo_err_set(err, TODO_EINVAL, "TODO_MASTER_KEY %s: the projector opens the users' sealed fields with it",
                          cfg->master_key[0] == '\0' ? "is not set" : "is not 64 hex digits");
        goto out;
    }
    r.base.keys = keystore_new(&master, KEY_CACHE_S);
    OPENSSL_cleanse(&master, sizeof master);
    if (r.base.keys == NULL) {
        rc = todo_err_set(err, TODO_EINTERNAL, "out of memory");
        goto out;
    }
    /* The live projection asks Redis first; a rebuild's fresh copy would only miss. */
    if (!o->shadow && o->def->cache && (r.base.cache = proj_cache_new(cfg->redis_url, o->group, err)) == NULL) {
        rc = err->code;
        goto out;
    }
    if (!o->shadow)
        r.base.delay = metric_with(metric_histogram("todo_projection_event_delay_seconds",
                                                    "Time from an event's time (set by the command or saga that "
                                                    "wrote it, just before its transaction) to the commit of the "
                                                    "batch that applied it to the projection.",
                                                    "group", METRIC_LATENCY_BUCKETS, METRIC_N_LATENCY_BUCKETS),
                                   o->group);
    log_info("projector", "projecting", "projection=%s group=%s schema=%s", o->def->name, o->group, o->schema);
    consume_opts co = {.brokers = cfg->kafka_brokers, .group = o->group, .topics = o->def->topics,
                       .n_topics = o->def->n_topics, .component = "projector", .batch = cfg->projector_batch,
                       .max_attempts = cfg->consumer_max_attempts, .apply = apply_batch, .should_stop = should_stop,
                       .after_batch = after_batch, .fetch_wait_ms = o->def->fetch_wait_ms, .ctx = &r};
    rc = consume_run(&co, err);
out:
    pgx_close(r.pg);
    proj_cache_free(r.base.cache);
    reg_resolver_free(r.base.schemas);
    keystore_free(r.base.keys);
    arena_free(r.a);
    return rc;
}

struct proj_loops {
    int n;
    pthread_t th[8];
    struct one_loop {
        const proj_loop_opts *o;
        int rc;
        todo_err err;
        atomic_bool finished;
    } loops[8];
};

static void *one_loop_main(void *arg)
{
    struct one_loop *l = arg;
    l->rc = proj_loop_run(l->o, &l->err);
    atomic_store(&l->finished, true);
    return NULL;
}

proj_loops *proj_loops_start(const proj_loop_opts *o, int n, todo_err *err)
{
    proj_loops *l = calloc(1, sizeof *l);
    if (l == NULL) {
        todo_err_set(err, TODO_EINTERNAL, "out of memory");
        return NULL;
    }
    for (int i = 0; i < n && i < 8; i++) {
        l->loops[l->n].o = o;
        if (pthread_create(&l->th[l->n], NULL, one_loop_main, &l->loops[l->n]) != 0) break;
        l->n++;
    }
    if (l->n == 0) {
        free(l);
        todo_err_set(err, TODO_EINTERNAL, "cannot start a projection thread");
        return NULL;
    }
    return l;
}

bool proj_loops_any_finished(proj_loops *l)
{
    for (int i = 0; i < l->n; i++)
        if (atomic_load(&l->loops[i].finished)) return true;
    return false;
}

int proj_loops_join(proj_loops *l, todo_err *err)
{
    int rc = TODO_OK;
    for (int i = 0; i < l->n; i++) {
        pthread_join(l->th[i], NULL);
        if (rc == TODO_OK && l->loops[i].rc != TODO_OK) {
            rc = l->loops[i].rc;
            *err = l->loops[i].err;
        }
    }
    free(l);
    return rc;
}
