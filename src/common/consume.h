/*
 * consume: the consume-apply-commit loop every consumer of ours runs (the
 * projector's batches, todo-saga's per-record handlers).
 *
 * The loop polls up to a batch of records from its topics in a consumer
 * group and hands them to the caller's applier. When the applier says the
 * batch is durably applied, the records it marked dead are sent to the
 * dead-letter topic (dlq.h) and, once the topic acknowledged every one of
 * them, the offsets after the batch's records are stored. The loop commits
 * what is stored at most once per commit interval (CONSUME_COMMIT_INTERVAL_MS
 * by default) and only when something was stored; librdkafka commits it
 * when a rebalance takes partitions away and when the loop stops. One
 * commit per interval instead of one per batch: at a few hundred records a
 * second a batch is one record, and its commit was one broker request per
 * record per group. A crash anywhere re-delivers records (at most the
 * interval's worth more than it did): the applier must be idempotent.
 *
 * Failures. A batch that fails is applied again, after a pause of 1 s
 * doubling to 30 s. When the applier names the one record that failed (a
 * refusal that may pass: a deadlock, a time-out) and that record keeps
 * failing, after max_attempts failures it is given up on: dead-lettered
 * ("handling failed N times (the last: ...)") while the rest of the batch
 * applies at once, so no record blocks its partition for good. A failure
 * that is no one record's, or TODO_EUNAVAIL (a dependency is away), is
 * retried for as long as it takes; nothing is skipped.
 *
 * Dead letters go through the loop's own idempotent producer; one whose
 * delivery failed is sent again, alone, until acknowledged.
 *
 * Ordered parking (park.h): the loop keeps the group's live dead letters.
 * A record of an aggregate that has one, or caused by an event that has
 * one, reaches the applier already marked dead ("parked: behind dead letter
 * <id>") and is dead-lettered behind it, as are the records after a given-up
 * one in the same batch. An applier that dead-letters a record itself in
 * the middle of a batch calls park_followers before applying the records
 * after it.
 */
#ifndef TODO_CONSUME_H
#define TODO_CONSUME_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>

#include "todo_err.h"

/* How often the stored offsets are committed, when consume_opts does not
 * say (milliseconds). */
#define CONSUME_COMMIT_INTERVAL_MS 100

/* librdkafka's own commit timer (milliseconds; the commit interval when
 * that is longer): a backstop, the loop commits first. */
#define CONSUME_COMMIT_BACKSTOP_MS 5000

typedef struct consume_opts {
    const char *brokers;
    const char *group; /* consumer group; also the dead letters' consumer_group */
    const char *const *topics;
    int n_topics;
    bool tail;             /* a group that starts at the end (kafkax_consumer_new_tail) */
    const char *component; /* the log lines' component ("projector", "saga", "notify") */
    int batch;             /* records per batch, 1.. (1: one record at a time) */
    int max_attempts;      /* failures of one record before it is given up on, 1.. */
    int commit_interval_ms; /* how often stored offsets are committed; 0: CONSUME_COMMIT_INTERVAL_MS */
    /* 0: records are fetched as they arrive; > 0: a group that can afford
     * to see them this much later (milliseconds) fetches them in fewer,
     * larger requests (kafkax_consumer_opts). */
    int fetch_wait_ms;
    /* Applies msgs[0..n) (borrowed; freed by the loop after the batch).
     * dead[i] set beforehand (non-NULL) marks a record given up on: skip
     * it. The applier sets dead[i] to why for a record to dead-letter (the
     * string must live until the applier's next call). Returns TODO_OK once
     * the batch, but for the dead records, is durably applied; otherwise a
     * status with err set and *failed (-1 on entry) set to the index of the
     * one record that failed, or left -1 when the failure is not one
     * record's; TODO_EUNAVAIL never counts against a record. The loop then
     * calls it again with the same records. */
    int (*apply)(void *ctx, rd_kafka_message_t **msgs, size_t n, const char **dead, int *failed, todo_err *err);
    /* Asked between batches and while retrying: nonzero ends the loop. */
    int (*should_stop)(void *ctx);
    /* Told after each batch whose offsets were stored (committed within
     * the interval), with its size and how many of its records were
     * dead-lettered. May be NULL. */
    void (*after_batch)(void *ctx, size_t n, int dead);
    void *ctx;
} consume_opts;

/* Runs the loop until should_stop says so, commits what it stored, then
 * returns TODO_OK; a batch being retried then is left uncommitted (it is
 * read again by the next consumer of the group). Returns a status with err set when it could not
 * start (a bad option, a consumer or producer librdkafka refused). Every
 * call has handles of its own: several may run at once on as many threads,
 * the callbacks being called on the calling thread only. */
int consume_run(const consume_opts *o, todo_err *err);

#endif
