/*
 * todo-projector: consumes tasks.events.v1 in consumer group
 * projection-task-read-v1 (TODO_PROJECTOR_GROUP) and applies the events to the read schema.
 *
 * Loop: poll up to TODO_PROJECTOR_BATCH records; apply them in one database
 * transaction (proj_apply); dead-letter the records that cannot be applied
 * and wait until the dead-letter topic acknowledged them; only then commit
 * the offsets. A crash anywhere re-delivers records that proj_apply then
 * skips. While the database is away the same batch is retried; nothing is
 * skipped. SIGINT or SIGTERM stop it after the batch in flight.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arena.h"
#include "config.h"
#include "dlq.h"
#include "kafkax.h"
#include "log.h"
#include "pgx.h"
#include "proj_apply.h"
#include "svc.h"


static atomic_int dlq_failures;

static void on_dlq_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        atomic_fetch_add(&dlq_failures, 1);
        log_warn("projector", "dead-letter delivery failed", "error=\"%s\"", rd_kafka_err2str(msg->err));
    }
}

/* Sends the batch's dead records to the DLQ until all are acknowledged. */
static int send_dead(rd_kafka_t *dlq, const char *group, rd_kafka_message_t **msgs, size_t n, const char **dead, const sigset_t *sigs)
{
    todo_err err;
    for (;;) {
        atomic_store(&dlq_failures, 0);
        for (size_t i = 0; i < n; i++) {
            if (dead[i] == NULL) continue;
            log_warn("projector", "dead-lettering a record", "topic=%s partition=%d offset=%lld reason=\"%s\"",
                     rd_kafka_topic_name(msgs[i]->rkt), (int)msgs[i]->partition, (long long)msgs[i]->offset, dead[i]);
            if (dlq_send(dlq, group, msgs[i], dead[i], &err) != 0) atomic_fetch_add(&dlq_failures, 1);
        }
        rd_kafka_flush(dlq, 30000);
        if (atomic_load(&dlq_failures) == 0 && rd_kafka_outq_len(dlq) == 0) return 0;
        if (svc_signals_pending(sigs)) return -1;
        sleep(1);
    }
}

static void commit_offsets(rd_kafka_t *rk, rd_kafka_message_t **msgs, size_t n)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++) {
        if (msgs[i]->err != RD_KAFKA_RESP_ERR_NO_ERROR) continue;
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

int main(void)
{
    todo_config cfg;
    todo_err err;
    sigset_t sigs;
    const char *topics[] = {"tasks.events.v1"};
    PGconn *pg = NULL;
    int exit_code = 0;
    char last_error[300] = ""; /* recorded with the next batch that commits */

    if (config_load(&cfg, CONFIG_PROJECTOR, NULL, NULL, &err) != 0) {
        fprintf(stderr, "todo-projector: %s\n", err.msg);
        return 2;
    }
    log_set_level(cfg.log_level);
    svc_signals_block(&sigs); /* before librdkafka starts its threads */

    rd_kafka_t *rk = kafkax_consumer_new(cfg.kafka_brokers, cfg.projector_group, topics, 1, &err);
    rd_kafka_t *dlq = rk != NULL ? kafkax_producer_new(cfg.kafka_brokers, "todo-projector-dlq", on_dlq_delivery, NULL, &err)
                                 : NULL;
    rd_kafka_message_t **msgs = calloc((size_t)cfg.projector_batch, sizeof *msgs);
    const char **dead = calloc((size_t)cfg.projector_batch, sizeof *dead);
    arena *a = arena_new();
    if (rk == NULL || dlq == NULL || msgs == NULL || dead == NULL || a == NULL) {
        log_error("projector", "cannot start", "error=\"%s\"", err.msg);
        exit_code = 1;
        goto out;
    }
    log_info("projector", "consuming", "group=%s topic=%s batch=%d", cfg.projector_group, topics[0], cfg.projector_batch);

    while (!svc_signals_pending(&sigs)) {
        size_t n = 0;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 500);
        while (m != NULL) {
            if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                log_warn("projector", "consumer error", "error=\"%s\"", rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
            } else {
                msgs[n++] = m;
            }
            if (n == (size_t)cfg.projector_batch) break;
            m = rd_kafka_consumer_poll(rk, 0);
        }
        if (n == 0) continue;

        proj_stats st;
        int rc;
        for (;;) {
            arena_reset(a);
            proj_status ps = {.projection = cfg.projector_group, .last_error = last_error[0] ? last_error : NULL};
            rc = pgx_ensure(&pg, cfg.pg_url, "todo-projector", &err);
            if (rc == 0) rc = proj_apply_batch_status(pg, msgs, n, a, dead, &ps, &st, &err);
            if (rc == 0) {
                last_error[0] = '\0';
                break;
            }
            log_warn("projector", "batch not applied; retrying", "error=\"%s\"", err.msg);
            snprintf(last_error, sizeof last_error, "batch not applied: %.250s", err.msg);
            if (svc_signals_pending(&sigs)) break;
            sleep(1);
        }
        if (rc == 0 && (st.dead == 0 || send_dead(dlq, cfg.projector_group, msgs, n, dead, &sigs) == 0)) {
            commit_offsets(rk, msgs, n);
            log_debug("projector", "batch", "records=%zu applied=%d skipped=%d dead=%d", n, st.applied, st.skipped,
                      st.dead);
        }
        for (size_t i = 0; i < n; i++) rd_kafka_message_destroy(msgs[i]);
        if (rc != 0) break; /* stopping: the batch was not committed and will be re-read */
    }
    log_info("projector", "stopping", NULL);
out:
    if (rk != NULL) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    if (dlq != NULL) {
        rd_kafka_flush(dlq, 5000);
        rd_kafka_destroy(dlq);
    }
    PQfinish(pg);
    arena_free(a);
    free(msgs);
    free(dead);
    return exit_code;
}
