/* proj_loop: see proj_loop.h. */
#include "proj_loop.h"

#include <pthread.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arena.h"
#include "dlq.h"
#include "kafkax.h"
#include "log.h"
#include "pgx.h"
#include "proj_cache.h"
#include "reg_local.h"

static void on_dlq_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    atomic_int *failures = opaque;
    if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        atomic_fetch_add(failures, 1);
        log_warn("projector", "dead-letter delivery failed", "error=\"%s\"", rd_kafka_err2str(msg->err));
    }
}

/* Sends the batch's dead records to the DLQ until all are acknowledged;
 * -1 when asked to stop first. */
static int send_dead(const proj_loop_opts *o, rd_kafka_t *dlq, atomic_int *failures, rd_kafka_message_t **msgs,
                     size_t n, const char **dead)
{
    todo_err err;
    for (;;) {
        atomic_store(failures, 0);
        for (size_t i = 0; i < n; i++) {
            if (dead[i] == NULL) continue;
            log_warn("projector", "dead-lettering a record", "topic=%s partition=%d offset=%lld reason=\"%s\"",
                     rd_kafka_topic_name(msgs[i]->rkt), (int)msgs[i]->partition, (long long)msgs[i]->offset, dead[i]);
            if (dlq_send(dlq, o->group, msgs[i], dead[i], &err) != 0) atomic_fetch_add(failures, 1);
        }
        rd_kafka_flush(dlq, 30000);
        if (atomic_load(failures) == 0 && rd_kafka_outq_len(dlq) == 0) return 0;
        if (o->should_stop(o->ctx)) return -1;
        sleep(1);
    }
}

static void commit_offsets(rd_kafka_t *rk, rd_kafka_message_t **msgs, size_t n)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++) {
        rd_kafka_topic_partition_t *p =
            rd_kafka_topic_partition_list_find(list, rd_kafka_topic_name(msgs[i]->rkt), msgs[i]->partition);
        if (p == NULL)
            p = rd_kafka_topic_partition_list_add(list, rd_kafka_topic_name(msgs[i]->rkt), msgs[i]->partition);
        if (msgs[i]->offset + 1 > p->offset) p->offset = msgs[i]->offset + 1;
    }
    if (list->cnt > 0) {
        rd_kafka_resp_err_t e = rd_kafka_commit(rk, list, 0);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
            log_warn("projector", "offset commit failed; the records will be re-read and skipped",
                     "error=\"%s\"", rd_kafka_err2str(e));
    }
    rd_kafka_topic_partition_list_destroy(list);
}

/* Sleeps ms in steps, returning early when asked to stop. */
static void pause_ms(const proj_loop_opts *o, int ms)
{
    for (int slept = 0; slept < ms && !o->should_stop(o->ctx); slept += 100) usleep(100 * 1000);
}

/* Applies the batch until it commits or the loop is asked to stop. A
 * failure that is not one record's is retried with exponential back-off
 * (1 s doubling to 30 s: the database is away); a record that fails alone
 * with a refusal that may pass (a deadlock, a lock or statement time-out)
 * is retried with the batch, and once it failed TODO_CONSUMER_MAX_ATTEMPTS
 * times it is given up on: dead-lettered with its last error while the
 * rest of the batch applies, so no partition is blocked for good by one
 * record. */
static int apply_until_committed(const proj_loop_opts *o, PGconn **pg, rd_kafka_message_t **msgs, size_t n, arena *a,
                                 const char **dead, char (*given_up)[320], const proj_status *base, char *last_error,
                                 size_t last_error_cap, proj_stats *st, todo_err *err)
{
    const todo_config *cfg = o->cfg;
    int failures = 0, record_fails = 0, record = -1;
    for (size_t i = 0; i < n; i++) given_up[i][0] = '\0';
    for (;;) {
        arena_reset(a);
        for (size_t i = 0; i < n; i++) dead[i] = given_up[i][0] ? given_up[i] : NULL;
        proj_status ps = *base;
        ps.last_error = last_error[0] ? last_error : NULL;
        if (*pg == NULL || PQstatus(*pg) != CONNECTION_OK || PQpipelineStatus(*pg) != PQ_PIPELINE_OFF) {
            pgx_close(*pg);
            *pg = pgx_connect_schema(cfg->pg_url, "todo-projector", o->schema, err);
        }
        int brc = *pg != NULL ? proj_apply_batch_status(*pg, msgs, n, a, dead, &ps, st, err) : TODO_EUNAVAIL;
        if (brc == 0) {
            last_error[0] = '\0';
            return 0;
        }
        snprintf(last_error, last_error_cap, "batch not applied: %.250s", err->msg);
        if (*pg != NULL && brc != TODO_EUNAVAIL && st->failed >= 0) {
            record_fails = st->failed == record ? record_fails + 1 : 1;
            record = st->failed;
            const rd_kafka_message_t *m = msgs[record];
            log_warn("projector", "a record failed; retrying its batch", "topic=%s partition=%d offset=%lld attempt=%d"
                     " max=%d error=\"%s\"", rd_kafka_topic_name(m->rkt), (int)m->partition, (long long)m->offset,
                     record_fails, cfg->consumer_max_attempts, err->msg);
            if (record_fails >= cfg->consumer_max_attempts) {
                snprintf(given_up[record], sizeof given_up[record], "applying failed %d times (the last: %.250s)",
                         record_fails, err->msg);
                record = -1;
                record_fails = 0;
                continue; /* at once: the rest of the batch goes on without it */
            }
        } else {
            log_warn("projector", "batch not applied; retrying", "attempt=%d error=\"%s\"", failures + 1, err->msg);
        }
        if (o->should_stop(o->ctx)) return brc;
        int backoff = 1000 << (failures < 5 ? failures : 5);
        pause_ms(o, backoff > 30000 ? 30000 : backoff);
        failures++;
    }
}

int proj_loop_run(const proj_loop_opts *o, todo_err *err)
{
    const todo_config *cfg = o->cfg;
    atomic_int failures = 0;
    PGconn *pg = NULL;
    char last_error[300] = ""; /* recorded with the next batch that commits */
    int rc = TODO_OK;

    rd_kafka_t *rk = kafkax_consumer_new(cfg->kafka_brokers, o->group, proj_source_topics, PROJ_N_SOURCE_TOPICS, err);
    rd_kafka_t *dlq = rk != NULL ? kafkax_producer_new(cfg->kafka_brokers, "todo-projector-dlq", on_dlq_delivery,
                                                       &failures, err)
                                 : NULL;
    rd_kafka_message_t **msgs = calloc((size_t)cfg->projector_batch, sizeof *msgs);
    const char **dead = calloc((size_t)cfg->projector_batch, sizeof *dead);
    char (*given_up)[320] = calloc((size_t)cfg->projector_batch, sizeof *given_up);
    arena *a = arena_new();
    reg_resolver *schemas = reg_resolver_new();
    /* The live projection asks Redis first; a rebuild's fresh copy would only miss. */
    proj_cache *cache = rk != NULL && !o->shadow ? proj_cache_new(cfg->redis_url, o->group, err) : NULL;
    if (rk != NULL && !o->shadow && cache == NULL) {
        rc = err->code;
        goto out;
    }
    if (rk == NULL || dlq == NULL || msgs == NULL || dead == NULL || given_up == NULL || a == NULL || schemas == NULL) {
        rc = rk == NULL || dlq == NULL ? err->code : todo_err_set(err, TODO_EINTERNAL, "out of memory");
        goto out;
    }
    log_info("projector", "consuming", "group=%s topics=%s,%s schema=%s batch=%d", o->group, proj_source_topics[0],
             proj_source_topics[1], o->schema,
             cfg->projector_batch);

    while (!o->should_stop(o->ctx)) {
        size_t n = 0;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 500);
        while (m != NULL) {
            if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                log_warn("projector", "consumer error", "error=\"%s\"", rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
            } else {
                msgs[n++] = m;
            }
            if (n == (size_t)cfg->projector_batch) break;
            m = rd_kafka_consumer_poll(rk, 0);
        }
        if (n == 0) continue;

        proj_stats st;
        proj_status base = {.projection = o->group, .shadow = o->shadow, .cache = cache, .schemas = schemas};
        int brc = apply_until_committed(o, &pg, msgs, n, a, dead, given_up, &base, last_error, sizeof last_error, &st,
                                        err);
        if (brc == 0 && (st.dead == 0 || send_dead(o, dlq, &failures, msgs, n, dead) == 0)) {
            commit_offsets(rk, msgs, n);
            log_debug("projector", "batch", "records=%zu applied=%d skipped=%d dead=%d cache_hits=%lld", n, st.applied,
                      st.skipped, st.dead, (long long)proj_cache_hits(cache));
            if (o->after_batch != NULL) o->after_batch(&st, n, o->ctx);
        }
        for (size_t i = 0; i < n; i++) rd_kafka_message_destroy(msgs[i]);
        if (brc != 0) break; /* stopping: the batch was not committed and will be re-read */
    }
    log_info("projector", "stopping", "group=%s", o->group);
out:
    if (rk != NULL) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    if (dlq != NULL) {
        rd_kafka_flush(dlq, 5000);
        rd_kafka_destroy(dlq);
    }
    pgx_close(pg);
    proj_cache_free(cache);
    reg_resolver_free(schemas);
    arena_free(a);
    free(msgs);
    free(dead);
    free(given_up);
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
