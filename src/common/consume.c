/* consume: see consume.h. */
#include "consume.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dlq.h"
#include "kafkax.h"
#include "log.h"
#include "metrics.h"
#include "park.h"
#include "text.h"

#define REASON_MAX 320        /* a given-up record's reason */
#define BACKOFF_FIRST_MS 1000 /* the pause after a failure, doubling... */
#define BACKOFF_MAX_MS 30000  /* ...up to this */

/* Where a record's dead letter is. */
enum { LETTER_NONE, LETTER_TO_SEND, LETTER_IN_FLIGHT, LETTER_ACKED };

/* One consume_run's state: its handles and the batch in hand. */
typedef struct loop {
    const consume_opts *o;
    rd_kafka_t *rk;               /* the consumer */
    rd_kafka_t *dlq;              /* the dead letters' producer */
    rd_kafka_message_t **msgs;    /* the batch (o->batch entries) */
    size_t n;                     /* records in it; 0 between batches */
    const char **dead;            /* per record: why it is dead-lettered, or NULL */
    char (*given_up)[REASON_MAX]; /* per record: why it was given up on, or "" */
    unsigned char *letter;        /* per record: LETTER_* */
    char (*letter_id)[PARK_ID_MAX]; /* per record: its dead letter's id, once it has one */
    park *pk;                     /* the group's live dead letters: what waits behind them */
    int waits;                    /* pauses since this batch was polled: the back-off's exponent */
    /* Metrics: the series of this loop's group, and per partition it has
     * consumed (a few dozen at most) its lag. */
    metric_series *handled, *dead_lettered, *batches, *retries, *seconds, *assigned;
    metric_series *rebalances, *fetch_queue; /* from librdkafka's statistics */
    metric_series *commits, *commits_failed; /* offset commits, from librdkafka's commit callback */
    /* The loop's own commits (store_offsets, commit_if_due): stored
     * offsets wait at most commit_interval_ms for theirs. */
    int commit_interval_ms;
    bool commit_pending;          /* offsets stored since the last commit */
    int64_t last_commit_ms;       /* when the loop last asked for one (monotonic) */
    long long rebalances_seen;
    struct part {
        char topic[128];
        int32_t partition;
        int64_t committed;        /* the next offset to consume */
        int64_t oldest_ms;        /* timestamp of the first record not yet committed (-1: unknown) */
        metric_series *lag, *lag_s;
    } parts[64];
    int n_parts;
    time_t last_lag;
    int n_assigned;               /* what this loop added to todo_consumer_assigned_partitions */
} loop;

static void init_metrics(loop *l)
{
    const char *g = l->o->group;
    metric *records = metric_counter("todo_consumer_records_total",
                                     "Records a consumer group finished with, by outcome (handled: applied or "
                                     "not its business; dead_lettered: sent to system.dlq.v1).", "group,outcome");
    l->handled = metric_with(records, g, "handled");
    l->dead_lettered = metric_with(records, g, "dead_lettered");
    l->batches = metric_with(metric_counter("todo_consumer_batches_total",
                                            "Batches a consumer group applied (their offsets are committed within "
                                            "the commit interval).", "group"),
                             g);
    l->retries = metric_with(metric_counter("todo_consumer_retries_total",
                                            "Batches a consumer group had to apply again after a failure.", "group"),
                             g);
    l->assigned = metric_with(metric_gauge("todo_consumer_assigned_partitions",
                                           "Partitions Kafka assigned to this consumer (0 until the group is "
                                           "joined: nothing is consumed yet).", "group"),
                              g);
    l->rebalances = metric_with(metric_counter("todo_consumer_rebalances_total",
                                               "Rebalances of the consumer group this process took part in "
                                               "(librdkafka's statistics, every 5 s).", "group"), g);
    l->fetch_queue = metric_with(metric_gauge("todo_consumer_fetch_queue_messages",
                                              "Records fetched from Kafka and not yet polled by the consumer "
                                              "(librdkafka's statistics, every 5 s).", "group"), g);
    metric *commits = metric_counter("todo_consumer_offset_commits_total",
                                     "Offset commits of a consumer group to Kafka, by outcome (ok, failed: the "
                                     "records since the last one are read again); one per commit interval at most "
                                     "while records come, not one per batch, and none while none come.",
                                     "group,outcome");
    l->commits = metric_with(commits, g, "ok");
    l->commits_failed = metric_with(commits, g, "failed");
    metric *seconds = metric_histogram("todo_consumer_batch_seconds",
                                       "Time from a batch's poll to its offsets being stored (retries included).",
                                       "group", METRIC_LATENCY_BUCKETS, METRIC_N_LATENCY_BUCKETS);
    l->seconds = metric_with(seconds, g);
}

/* librdkafka's statistics of the consumer (every 5 s, on the polling
 * thread): the group's rebalances, and the records fetched and waiting to
 * be polled (a consumer that falls behind its fetcher shows it here first). */
static int on_consumer_stats(rd_kafka_t *rk, char *text, size_t len, void *opaque)
{
    (void)rk;
    loop *l = opaque;
    json_t *j = json_loadb(text, len, 0, NULL);
    if (j == NULL) return 0;
    json_t *cnt = json_object_get(json_object_get(j, "cgrp"), "rebalance_cnt");
    if (json_is_integer(cnt) && json_integer_value(cnt) > l->rebalances_seen) {
        metric_add(l->rebalances, (double)(json_integer_value(cnt) - l->rebalances_seen));
        l->rebalances_seen = json_integer_value(cnt);
    }
    long long queued = 0;
    const char *tname, *pname;
    json_t *t, *p;
    json_object_foreach(json_object_get(j, "topics"), tname, t)
    {
        (void)tname;
        json_object_foreach(json_object_get(t, "partitions"), pname, p)
        {
            if (strcmp(pname, "-1") != 0) queued += json_integer_value(json_object_get(p, "fetchq_cnt"));
        }
    }
    metric_set(l->fetch_queue, (double)queued);
    json_decref(j);
    return 0;
}

/* The outcome of an offset commit (on the polling thread): the loop's
 * (commit_if_due), and librdkafka's own at a revocation, at close, and
 * every CONSUME_COMMIT_BACKSTOP_MS. */
static void on_committed(rd_kafka_t *rk, rd_kafka_resp_err_t e, rd_kafka_topic_partition_list_t *offsets,
                         void *opaque)
{
    (void)rk;
    (void)offsets;
    loop *l = opaque;
    if (e == RD_KAFKA_RESP_ERR__NO_OFFSET) return; /* nothing new to commit: no request was sent */
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
        metric_add(l->commits, 1);
        return;
    }
    metric_add(l->commits_failed, 1);
    log_warn(l->o->component, "offset commit failed; the records since the last commit will be read again",
             "group=%s error=\"%s\"", l->o->group, rd_kafka_err2str(e));
}

/* The partition entry of m's partition, made on first sight. */
static struct part *part_of(loop *l, const rd_kafka_message_t *m)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    for (int i = 0; i < l->n_parts; i++)
        if (l->parts[i].partition == m->partition && strcmp(l->parts[i].topic, topic) == 0) return &l->parts[i];
    if (l->n_parts == (int)(sizeof l->parts / sizeof l->parts[0])) return NULL;
    struct part *p = &l->parts[l->n_parts++];
    char partition[16];
    snprintf(p->topic, sizeof p->topic, "%s", topic);
    snprintf(partition, sizeof partition, "%d", (int)m->partition);
    p->partition = m->partition;
    p->committed = -1;
    p->oldest_ms = -1;
    p->lag = metric_with(metric_gauge("todo_consumer_lag_records",
                                      "Records of a partition a consumer group has not applied yet (from the "
                                      "partition's high watermark as last fetched).", "group,topic,partition"),
                         l->o->group, topic, partition);
    p->lag_s = metric_with(metric_gauge("todo_consumer_lag_seconds",
                                        "Age of the oldest record of a partition a consumer group has not applied "
                                        "yet (0 when caught up; an upper bound while idle).",
                                        "group,topic,partition"),
                           l->o->group, topic, partition);
    return p;
}

/* The lag gauges, from the watermarks librdkafka last fetched (no request
 * to the broker); once a second at most. */
static void update_lag(loop *l)
{
    time_t now = time(NULL);
    if (now == l->last_lag) return;
    l->last_lag = now;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double now_ms = (double)ts.tv_sec * 1000 + (double)ts.tv_nsec / 1e6;
    /* A partition a rebalance took away reports no lag here any more (its
     * new owner does): its cached watermark would go stale. */
    rd_kafka_topic_partition_list_t *mine = NULL;
    if (rd_kafka_assignment(l->rk, &mine) != RD_KAFKA_RESP_ERR_NO_ERROR) mine = NULL;
    int assigned = mine != NULL ? mine->cnt : 0; /* the process's loops of a group add up */
    metric_add(l->assigned, assigned - l->n_assigned);
    l->n_assigned = assigned;
    for (int i = 0; i < l->n_parts; i++) {
        struct part *p = &l->parts[i];
        int64_t lo = 0, hi = 0;
        if (mine == NULL || rd_kafka_topic_partition_list_find(mine, p->topic, p->partition) == NULL) {
            metric_set(p->lag, 0);
            metric_set(p->lag_s, 0);
            p->committed = -1;
            p->oldest_ms = -1;
            continue;
        }
        if (p->committed < 0 ||
            rd_kafka_get_watermark_offsets(l->rk, p->topic, p->partition, &lo, &hi) != RD_KAFKA_RESP_ERR_NO_ERROR)
            continue;
        int64_t lag = hi > p->committed ? hi - p->committed : 0;
        metric_set(p->lag, (double)lag);
        metric_set(p->lag_s, lag > 0 && p->oldest_ms > 0 && now_ms > (double)p->oldest_ms
                                 ? (now_ms - (double)p->oldest_ms) / 1000.0
                                 : 0);
    }
    if (mine != NULL) rd_kafka_topic_partition_list_destroy(mine);
}

static int stopping(const loop *l)
{
    return l->o->should_stop(l->o->ctx);
}

/* Pauses 1 s doubling to 30 s (more each time the batch waits), in 100 ms
 * steps, returning early when asked to stop. */
static void back_off(loop *l)
{
    int ms = BACKOFF_FIRST_MS << (l->waits < 5 ? l->waits : 5);
    if (ms > BACKOFF_MAX_MS) ms = BACKOFF_MAX_MS;
    for (int slept = 0; slept < ms && !stopping(l); slept += 100) usleep(100 * 1000);
    l->waits++;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Asks librdkafka to commit the stored offsets (without waiting: the
 * outcome comes to on_committed) once the interval since the last such
 * request is over; until then they wait. Nothing stored, nothing asked:
 * a quiet group costs nothing here (librdkafka's own commit timer, run
 * every 100 ms, took 0.7 ms of CPU each time even with nothing to commit:
 * 7 ms/s per idle consumer). */
static void commit_if_due(loop *l)
{
    if (!l->commit_pending || mono_ms() - l->last_commit_ms < l->commit_interval_ms) return;
    rd_kafka_resp_err_t e = rd_kafka_commit(l->rk, NULL, 1);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR && e != RD_KAFKA_RESP_ERR__NO_OFFSET)
        log_warn(l->o->component, "offset commit not started; librdkafka commits the offsets later",
                 "group=%s error=\"%s\"", l->o->group, rd_kafka_err2str(e));
    l->commit_pending = false;
    l->last_commit_ms = mono_ms();
}

/* Polls up to a batch; 0 when nothing came. It waits for the first record
 * up to 500 ms, or until stored offsets are due for their commit. */
static size_t poll_batch(loop *l)
{
    size_t n = 0;
    int wait_ms = 500;
    if (l->commit_pending) {
        int64_t due = l->last_commit_ms + l->commit_interval_ms - mono_ms();
        wait_ms = due < 0 ? 0 : due < wait_ms ? (int)due : wait_ms;
    }
    rd_kafka_message_t *m = rd_kafka_consumer_poll(l->rk, wait_ms);
    while (m != NULL) {
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            l->msgs[n++] = m;
        } else {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                log_warn(l->o->component, "consumer error", "group=%s error=\"%s\"", l->o->group,
                         rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
        }
        if (n == (size_t)l->o->batch) break;
        m = rd_kafka_consumer_poll(l->rk, 0);
    }
    return n;
}

/* Marks the records after record `from` that must wait behind it (its
 * aggregate's, and what its chain caused) as given up on: parked. */
static void park_batch_followers(loop *l, size_t from)
{
    const char **tmp = calloc(l->n, sizeof *tmp);
    if (tmp == NULL) return;
    for (size_t i = 0; i < l->n; i++) tmp[i] = l->given_up[i][0] != '\0' ? l->given_up[i] : NULL;
    park_followers(l->msgs, l->n, tmp, from);
    for (size_t j = from + 1; j < l->n; j++)
        if (l->given_up[j][0] == '\0' && tmp[j] != NULL) snprintf(l->given_up[j], REASON_MAX, "%s", tmp[j]);
    free(tmp);
}

/* Ordered parking (park.h): a record whose aggregate or cause has a live
 * dead letter of the group waits behind it, and so do the records of the
 * batch after it that are its aggregate's or its chain's. */
static void park_batch(loop *l)
{
    for (size_t i = 0; i < l->n; i++) {
        if (l->given_up[i][0] != '\0') continue;
        park_record r;
        char root[PARK_ID_MAX];
        park_record_of(l->msgs[i], &r);
        if (park_blocks(l->pk, r.aggregate, r.causation, r.redrive_root, root))
            snprintf(l->given_up[i], REASON_MAX, "%s: behind dead letter %s", DLQ_REASON_PARKED, root);
    }
    for (size_t i = 0; i < l->n; i++)
        if (l->given_up[i][0] != '\0') park_batch_followers(l, i);
}

/* Applies the batch until the applier says it is durably applied (0) or
 * the loop is asked to stop (-1). See consume.h for which failures give a
 * record up and which are retried for as long as it takes. */
static int apply_until_done(loop *l)
{
    const consume_opts *o = l->o;
    int record = -1, record_fails = 0;
    for (size_t i = 0; i < l->n; i++) l->given_up[i][0] = '\0';
    park_batch(l);
    for (;;) {
        todo_err err;
        int failed = -1;
        for (size_t i = 0; i < l->n; i++) l->dead[i] = l->given_up[i][0] != '\0' ? l->given_up[i] : NULL;
        todo_err_clear(&err);
        int rc = o->apply(o->ctx, l->msgs, l->n, l->dead, &failed, &err);
        if (rc == TODO_OK) return 0;
        if (rc != TODO_EUNAVAIL && failed >= 0 && (size_t)failed < l->n && l->given_up[failed][0] == '\0') {
            const rd_kafka_message_t *m = l->msgs[failed];
            record_fails = failed == record ? record_fails + 1 : 1;
            record = failed;
            log_warn(o->component, "a record failed; retrying its batch",
                     "group=%s topic=%s partition=%d offset=%lld attempt=%d max=%d error=\"%s\"", o->group,
                     rd_kafka_topic_name(m->rkt), (int)m->partition, (long long)m->offset, record_fails,
                     o->max_attempts, err.msg);
            if (record_fails >= o->max_attempts) {
                snprintf(l->given_up[record], REASON_MAX, "handling failed %d times (the last: %.250s)", record_fails,
                         err.msg);
                park_batch_followers(l, (size_t)record);
                record = -1;
                record_fails = 0;
                continue; /* at once: the rest of the batch goes on without it */
            }
        } else {
            log_warn(o->component, "batch not applied; retrying", "group=%s records=%zu attempt=%d error=\"%s\"",
                     o->group, l->n, l->waits + 1, err.msg);
        }
        if (stopping(l)) return -1;
        metric_add(l->retries, 1);
        back_off(l);
    }
}

/* The dead letters' delivery reports, served on the loop's thread (from
 * rd_kafka_flush): the message's opaque is its record's index. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    loop *l = opaque;
    size_t i = (size_t)(uintptr_t)msg->_private;
    if (i >= l->n || l->letter[i] != LETTER_IN_FLIGHT) return; /* after the loop gave up on the batch */
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        l->letter[i] = LETTER_ACKED;
        metric_add(metric_with(metric_counter("todo_dlq_letters_total",
                                              "Dead letters a consumer group sent to system.dlq.v1 (acknowledged), "
                                              "by reason code (dlq.h).", "group,reason_code"),
                               l->o->group, dlq_reason_code(l->dead[i])),
                   1);
        return;
    }
    l->letter[i] = LETTER_TO_SEND;
    log_warn(l->o->component, "dead-letter delivery failed; sending it again",
             "group=%s topic=%s partition=%d offset=%lld error=\"%s\"", l->o->group,
             rd_kafka_topic_name(l->msgs[i]->rkt), (int)l->msgs[i]->partition, (long long)l->msgs[i]->offset,
             rd_kafka_err2str(msg->err));
}

static rd_kafka_t *dlq_producer_new(loop *l, todo_err *err)
{
    char client_id[200];
    snprintf(client_id, sizeof client_id, "%s-dlq", l->o->group);
    return kafkax_producer_new(l->o->brokers, client_id, on_delivery, l, err);
}

/* An idempotent producer that failed for good (rd_kafka_fatal_error) sends
 * nothing more: replaced by a new one. */
static void renew_dlq_producer_if_failed(loop *l)
{
    char why[256];
    todo_err err;
    if (rd_kafka_fatal_error(l->dlq, why, sizeof why) == RD_KAFKA_RESP_ERR_NO_ERROR) return;
    rd_kafka_t *p = dlq_producer_new(l, &err);
    if (p == NULL) {
        log_warn(l->o->component, "dead-letter producer failed; cannot start another", "error=\"%s\" cause=\"%s\"",
                 why, err.msg);
        return;
    }
    log_warn(l->o->component, "dead-letter producer failed; starting another", "error=\"%s\"", why);
    rd_kafka_destroy(l->dlq);
    l->dlq = p;
}

/* Sends the batch's dead letters and waits until the topic acknowledged
 * every one; a letter that was not is sent again, alone, so that none is
 * duplicated. Returns 0, or -1 when asked to stop first. */
static int send_dead(loop *l)
{
    const consume_opts *o = l->o;
    size_t want = 0;
    for (size_t i = 0; i < l->n; i++) {
        l->letter[i] = l->dead[i] != NULL ? LETTER_TO_SEND : LETTER_NONE;
        if (l->dead[i] == NULL) continue;
        want++;
        log_warn(o->component, "dead-lettering a record", "group=%s topic=%s partition=%d offset=%lld reason=\"%s\"",
                 o->group, rd_kafka_topic_name(l->msgs[i]->rkt), (int)l->msgs[i]->partition,
                 (long long)l->msgs[i]->offset, l->dead[i]);
    }
    if (want == 0) return 0;
    /* Each letter's id, once, and the head of the chain a parked one waits
     * behind (a head's letter is in the park before its followers'). */
    char (*roots)[PARK_ID_MAX] = calloc(l->n, sizeof *roots);
    if (roots == NULL) return -1;
    for (size_t i = 0; i < l->n; i++) {
        if (l->dead[i] == NULL) continue;
        park_record r;
        park_record_of(l->msgs[i], &r);
        if (text_uuid_v4(l->letter_id[i]) != 0) { /* no randomness: still unique in this process and time */
            static _Atomic unsigned long seq;
            snprintf(l->letter_id[i], PARK_ID_MAX, "%lx-%lx-%zu", (unsigned long)time(NULL), ++seq, i);
        }
        if (strncmp(l->dead[i], DLQ_REASON_PARKED ":", strlen(DLQ_REASON_PARKED) + 1) != 0 ||
            !park_blocks(l->pk, r.aggregate, r.causation, r.redrive_root, roots[i]))
            roots[i][0] = '\0';
        park_add(l->pk, l->letter_id[i], r.aggregate, r.event_id, roots[i]);
    }
    int rc = -1;
    for (;;) {
        size_t acked = 0;
        for (size_t i = 0; i < l->n; i++) {
            todo_err err;
            if (l->letter[i] != LETTER_TO_SEND) continue;
            if (dlq_send_letter(l->dlq, o->group, l->msgs[i], l->dead[i], l->letter_id[i], roots[i],
                                (void *)(uintptr_t)i, &err) == TODO_OK)
                l->letter[i] = LETTER_IN_FLIGHT;
            else
                log_warn(o->component, "dead letter not sent", "group=%s offset=%lld error=\"%s\"", o->group,
                         (long long)l->msgs[i]->offset, err.msg);
        }
        /* Every letter in flight is reported within message.timeout.ms. */
        bool stop = false;
        while (!stop && rd_kafka_flush(l->dlq, 500) != RD_KAFKA_RESP_ERR_NO_ERROR) stop = stopping(l);
        if (stop) break;
        for (size_t i = 0; i < l->n; i++) acked += l->letter[i] == LETTER_ACKED;
        if (acked == want) {
            rc = 0;
            break;
        }
        if (stopping(l)) break;
        renew_dlq_producer_if_failed(l);
        back_off(l);
    }
    free(roots);
    return rc;
}

/* Stores, per topic and partition, the offset after the batch's last
 * record there: committed within the commit interval (commit_if_due), or
 * by librdkafka when the partition is revoked or at close. */
static void store_offsets(loop *l)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)l->n);
    for (size_t i = 0; i < l->n; i++) {
        const rd_kafka_message_t *m = l->msgs[i];
        rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_find(list, rd_kafka_topic_name(m->rkt),
                                                                           m->partition);
        if (p == NULL) p = rd_kafka_topic_partition_list_add(list, rd_kafka_topic_name(m->rkt), m->partition);
        if (m->offset + 1 > p->offset) p->offset = m->offset + 1;
    }
    rd_kafka_resp_err_t e = rd_kafka_offsets_store(l->rk, list);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) /* a partition revoked meanwhile: its next owner reads the records again */
        log_warn(l->o->component, "offsets not stored; the records will be read again", "group=%s error=\"%s\"",
                 l->o->group, rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(list);
    l->commit_pending = true;
}

static int check_opts(const consume_opts *o, todo_err *err)
{
    if (o->brokers == NULL || o->group == NULL || o->topics == NULL || o->n_topics < 1 || o->component == NULL)
        return todo_err_set(err, TODO_EINVAL, "consume: brokers, group, topics and component are required");
    if (o->batch < 1 || o->max_attempts < 1)
        return todo_err_set(err, TODO_EINVAL, "consume: batch (%d) and max_attempts (%d) must be 1 or more", o->batch,
                            o->max_attempts);
    if (o->commit_interval_ms < 0 || o->fetch_wait_ms < 0)
        return todo_err_set(err, TODO_EINVAL,
                            "consume: commit_interval_ms (%d) and fetch_wait_ms (%d) must be 0 or more",
                            o->commit_interval_ms, o->fetch_wait_ms);
    if (o->apply == NULL || o->should_stop == NULL)
        return todo_err_set(err, TODO_EINVAL, "consume: apply and should_stop are required");
    return TODO_OK;
}

int consume_run(const consume_opts *o, todo_err *err)
{
    int rc = check_opts(o, err);
    if (rc != TODO_OK) return rc;
    loop l = {.o = o};
    size_t cap = (size_t)o->batch;
    l.msgs = calloc(cap, sizeof *l.msgs);
    l.dead = calloc(cap, sizeof *l.dead);
    l.given_up = calloc(cap, sizeof *l.given_up);
    l.letter = calloc(cap, sizeof *l.letter);
    l.letter_id = calloc(cap, sizeof *l.letter_id);
    l.pk = park_new(o->group);
    if (l.msgs == NULL || l.dead == NULL || l.given_up == NULL || l.letter == NULL || l.letter_id == NULL ||
        l.pk == NULL) {
        rc = todo_err_set(err, TODO_EINTERNAL, "out of memory");
        goto out;
    }
    init_metrics(&l);
    l.commit_interval_ms = o->commit_interval_ms > 0 ? o->commit_interval_ms : CONSUME_COMMIT_INTERVAL_MS;
    l.last_commit_ms = mono_ms();
    /* librdkafka's automatic commit stays on for what the loop cannot
     * see (a revocation, the close), with a timer slow enough to cost
     * nothing; the loop commits within its own interval (commit_if_due). */
    kafkax_consumer_opts ko = {.tail = o->tail, .stats = on_consumer_stats, .committed = on_committed, .opaque = &l,
                               .fetch_wait_ms = o->fetch_wait_ms,
                               .commit_interval_ms = l.commit_interval_ms > CONSUME_COMMIT_BACKSTOP_MS
                                                         ? l.commit_interval_ms
                                                         : CONSUME_COMMIT_BACKSTOP_MS};
    l.rk = kafkax_consumer_new_opts(o->brokers, o->group, o->topics, o->n_topics, &ko, err);
    if (l.rk == NULL || (l.dlq = dlq_producer_new(&l, err)) == NULL) {
        rc = err->code != TODO_OK ? err->code : TODO_EINTERNAL;
        goto out;
    }
    char topics[256] = "";
    for (int i = 0, len = 0; i < o->n_topics && len < (int)sizeof topics; i++)
        len += snprintf(topics + len, sizeof topics - (size_t)len, "%s%s", i > 0 ? "," : "", o->topics[i]);
    /* The group's live dead letters: what comes after them waits. */
    todo_err perr;
    if (park_load(l.pk, o->brokers, &perr) != TODO_OK)
        log_warn(o->component, "cannot read the dead letters; parking starts from this process's own",
                 "group=%s error=\"%s\"", o->group, perr.msg);
    log_info(o->component, "consuming", "group=%s topics=%s batch=%d tail=%d parked_letters=%d", o->group, topics,
             o->batch, o->tail, park_count(l.pk));

    while (!stopping(&l)) {
        update_lag(&l);
        park_follow(l.pk);
        l.n = poll_batch(&l);
        commit_if_due(&l);
        if (l.n == 0) continue;
        struct timespec started;
        clock_gettime(CLOCK_MONOTONIC, &started);
        for (size_t i = 0; i < l.n; i++) {
            struct part *p = part_of(&l, l.msgs[i]);
            if (p != NULL && ((p->committed < 0 && p->oldest_ms < 0) || l.msgs[i]->offset == p->committed))
                p->oldest_ms = rd_kafka_message_timestamp(l.msgs[i], NULL);
        }
        l.waits = 0;
        bool done = apply_until_done(&l) == 0 && send_dead(&l) == 0;
        if (done) {
            int dead = 0;
            for (size_t i = 0; i < l.n; i++) dead += l.dead[i] != NULL;
            store_offsets(&l);
            /* A redriven record applied: its old letter parks nothing more
             * (its tombstone follows). */
            for (size_t i = 0; i < l.n; i++) {
                park_record r;
                if (l.dead[i] != NULL) continue;
                park_record_of(l.msgs[i], &r);
                if (r.redrive_of[0] != '\0') park_remove(l.pk, r.redrive_of);
            }
            for (size_t i = 0; i < l.n; i++) {
                struct part *p = part_of(&l, l.msgs[i]);
                if (p != NULL && l.msgs[i]->offset + 1 > p->committed) {
                    p->committed = l.msgs[i]->offset + 1;
                    p->oldest_ms = rd_kafka_message_timestamp(l.msgs[i], NULL); /* an upper bound from now on */
                }
            }
            struct timespec ended;
            clock_gettime(CLOCK_MONOTONIC, &ended);
            metric_add(l.handled, (double)(l.n - (size_t)dead));
            metric_add(l.dead_lettered, dead);
            metric_add(l.batches, 1);
            metric_observe(l.seconds, (double)(ended.tv_sec - started.tv_sec) +
                                          (double)(ended.tv_nsec - started.tv_nsec) / 1e9);
            l.last_lag = 0;
            update_lag(&l);
            if (o->after_batch != NULL) o->after_batch(o->ctx, l.n, dead);
        }
        for (size_t i = 0; i < l.n; i++) rd_kafka_message_destroy(l.msgs[i]);
        l.n = 0;
        if (!done) break; /* stopping: the batch was not committed and will be read again */
    }
    log_info(o->component, "stopping", "group=%s", o->group);
    metric_add(l.assigned, -l.n_assigned);
out:
    if (l.rk != NULL) {
        kafkax_consumer_close(l.rk);
    }
    if (l.dlq != NULL) {
        rd_kafka_flush(l.dlq, 5000);
        rd_kafka_destroy(l.dlq);
    }
    free(l.msgs);
    free(l.dead);
    free(l.given_up);
    free(l.letter);
    free(l.letter_id);
    park_free(l.pk);
    return rc;
}
