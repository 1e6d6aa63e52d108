/* outbox: see outbox.h. */
#include "outbox.h"

#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "arena.h"
#include "event.h"
#include "kafkax.h"
#include "log.h"
#include "metrics.h"
#include "pgx.h"

/* The longest the publisher waits for its status query (read_status). */
#define STATUS_TIMEOUT_MS "2000"

/* ---- the producing half ---- */

/* The topics a sender knows from its start (event.h's EVENT_TOPICS). */
#define MAX_TOPICS 16

/* How long a partition stays settled after its last acknowledgement: well
 * within the broker's memory of an idle producer (producer.id.expiration.ms,
 * a day by default), after which it would again take any sequence. */
#define SETTLED_FOR_US (3600LL * 1000000)

/* A row made ready to leave: its envelope, topic and bytes. */
typedef struct prepared {
    Todo__V1__EventEnvelope *env;
    int topic;          /* index into EVENT_TOPICS */
    const void *value;
    size_t len;
    int32_t partition;  /* where it goes (-1: not known yet); from the report once acknowledged */
} prepared;

struct outbox_sender {
    rd_kafka_t *rk;
    int max_rows, max_event_bytes;
    outbox_state *state;          /* per row of the batch */
    rd_kafka_resp_err_t *errors;  /* per row: what Kafka said */
    const char **reasons;         /* per row: why it failed or was refused */
    size_t *sizes;                /* per row: bytes sent */
    int64_t *times;               /* per row: its event time (us), 0 if none */
    arena *arena;
    /* From librdkafka's statistics (every second, on the polling thread). */
    atomic_int producer_id_assigned; /* the idempotent producer has its id: it can deliver */
    atomic_int queued;               /* messages waiting in the producer */
    atomic_int brokers_up;
    /* Every topic an event goes to (EVENT_TOPICS), from the start:
     * librdkafka fetches their partitions at once. Learnt on a topic's
     * first event instead, they held that event and every one behind it
     * for ~1 s per topic after each start of a publisher (PERFORMANCE.md). */
    rd_kafka_topic_t *topics[MAX_TOPICS];
    atomic_uint topics_known;        /* bit i: EVENT_TOPICS[i] has a partition with a leader */
    /* Settled partitions (outbox_send): when this producer last had a row
     * acknowledged on each partition of each topic, and how many partitions
     * each topic has (0 until the first statistics). Kept by the thread that
     * polls the producer. */
    int partitions[MAX_TOPICS];
    int64_t *acked_us[MAX_TOPICS];
    int acked_cap[MAX_TOPICS];
    prepared *prep;                  /* per row of the batch */
    int rounds;                      /* of the last outbox_send */
};

/* EVENT_TOPICS' index of topic, or -1. */
static int topic_index(const char *topic)
{
    for (int i = 0; i < EVENT_N_TOPICS && i < MAX_TOPICS; i++)
        if (strcmp(EVENT_TOPICS[i], topic) == 0) return i;
    return -1;
}

/* librdkafka's statistics: whether the idempotent producer has its
 * producer id (until then nothing can be delivered: a broker still loading
 * its coordinator answers "load in progress" for seconds), what waits, how
 * many brokers are up. */
static int on_stats(rd_kafka_t *rk, char *text, size_t len, void *opaque)
{
    (void)rk;
    outbox_sender *s = opaque;
    json_t *j = json_loadb(text, len, 0, NULL);
    if (j == NULL) return 0;
    const char *state = json_string_value(json_object_get(json_object_get(j, "eos"), "idemp_state"));
    atomic_store(&s->producer_id_assigned, state != NULL && strcmp(state, "Assigned") == 0);
    atomic_store(&s->queued, (int)json_integer_value(json_object_get(j, "msg_cnt")));
    int up = 0;
    const char *name;
    json_t *b;
    json_object_foreach(json_object_get(j, "brokers"), name, b)
    {
        (void)name;
        const char *st = json_string_value(json_object_get(b, "state"));
        if (json_integer_value(json_object_get(b, "nodeid")) >= 0 && st != NULL && strcmp(st, "UP") == 0) up++;
    }
    atomic_store(&s->brokers_up, up);
    unsigned known = 0;
    for (int i = 0; i < EVENT_N_TOPICS && i < MAX_TOPICS; i++) {
        json_t *topic = json_object_get(json_object_get(j, "topics"), EVENT_TOPICS[i]);
        json_t *parts = json_object_get(topic, "partitions");
        int count = 0;
        json_object_foreach(parts, name, b)
        {
            if (strcmp(name, "-1") == 0) continue; /* the unassigned queue */
            count++;
            if (json_integer_value(json_object_get(b, "leader")) >= 0) known |= 1u << i;
        }
        if (count > 0) s->partitions[i] = count;
    }
    atomic_store(&s->topics_known, known);
    json_decref(j);
    return 0;
}

bool outbox_sender_topic_known(outbox_sender *s, const char *topic)
{
    rd_kafka_poll(s->rk, 0); /* serves the statistics */
    int i = topic_index(topic);
    return i >= 0 && (atomic_load(&s->topics_known) >> i & 1u) != 0;
}

bool outbox_sender_ready(outbox_sender *s)
{
    rd_kafka_poll(s->rk, 0); /* serves the statistics */
    return atomic_load(&s->producer_id_assigned) != 0;
}

/* Partition p of topic t acknowledged a row of this producer just now. */
static void settle(outbox_sender *s, int t, int32_t p)
{
    if (t < 0 || t >= MAX_TOPICS || p < 0) return;
    if (p >= s->acked_cap[t]) {
        int cap = p + 1 > 2 * s->acked_cap[t] ? p + 1 : 2 * s->acked_cap[t];
        int64_t *grown = realloc(s->acked_us[t], (size_t)cap * sizeof *grown);
        if (grown == NULL) return; /* not settled: only slower */
        memset(grown + s->acked_cap[t], 0, (size_t)(cap - s->acked_cap[t]) * sizeof *grown);
        s->acked_us[t] = grown;
        s->acked_cap[t] = cap;
    }
    s->acked_us[t][p] = event_now_us();
}

static bool settled(const outbox_sender *s, int t, int32_t p)
{
    return t >= 0 && t < MAX_TOPICS && p >= 0 && p < s->acked_cap[t] &&
           s->acked_us[t][p] > event_now_us() - SETTLED_FOR_US;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    outbox_sender *s = opaque;
    intptr_t i = (intptr_t)msg->_private;
    if (i < 0 || i >= s->max_rows) return;
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) settle(s, topic_index(rd_kafka_topic_name(msg->rkt)), msg->partition);
    s->prep[i].partition = msg->partition;
    s->errors[i] = msg->err;
    s->state[i] = msg->err == RD_KAFKA_RESP_ERR_NO_ERROR ? OUTBOX_OK
                  : kafkax_err_permanent(msg->err)      ? OUTBOX_REFUSED
                                                        : OUTBOX_FAILED;
}

outbox_sender *outbox_sender_new(const char *brokers, const char *client_id, int max_rows, int max_event_bytes,
                                 const char *const *extra_conf, todo_err *err)
{
    outbox_sender *s = calloc(1, sizeof *s);
    if (s == NULL || max_rows < 1) {
        free(s);
        todo_err_set(err, TODO_EINVAL, "outbox: a batch holds at least one row");
        return NULL;
    }
    s->max_rows = max_rows;
    s->max_event_bytes = max_event_bytes;
    s->state = calloc((size_t)max_rows, sizeof *s->state);
    s->errors = calloc((size_t)max_rows, sizeof *s->errors);
    s->reasons = calloc((size_t)max_rows, sizeof *s->reasons);
    s->sizes = calloc((size_t)max_rows, sizeof *s->sizes);
    s->times = calloc((size_t)max_rows, sizeof *s->times);
    s->prep = calloc((size_t)max_rows, sizeof *s->prep);
    s->arena = arena_new();
    if (s->state == NULL || s->errors == NULL || s->reasons == NULL || s->sizes == NULL || s->times == NULL ||
        s->prep == NULL || s->arena == NULL) {
        todo_err_set(err, TODO_EINTERNAL, "out of memory");
        outbox_sender_free(s);
        return NULL;
    }
    /* A record is never given up on by a timeout: a row that timed out while
     * a later row of its user was acknowledged went to Kafka after it (seen
     * with two of three brokers down for 30 s: test_cluster). So no local
     * time-out; the flush below waits for the brokers, and a stop ends the
     * wait. Any other failure that could leave a gap stops the producer
     * (gapless: a fatal error), and the publisher makes a new one. */
    const char *conf[64] = {"message.timeout.ms", "0", "enable.gapless.guarantee", "true"};
    int nc = 4;
    for (int i = 0; extra_conf != NULL && extra_conf[i] != NULL && extra_conf[i + 1] != NULL && nc < 62; i += 2) {
        conf[nc++] = extra_conf[i];
        conf[nc++] = extra_conf[i + 1];
    }
    conf[nc] = NULL;
    s->rk = kafkax_producer_new_stats(brokers, client_id, on_delivery, on_stats, s, conf, err);
    if (s->rk == NULL) {
        outbox_sender_free(s);
        return NULL;
    }
    for (int i = 0; i < EVENT_N_TOPICS && i < MAX_TOPICS; i++)
        s->topics[i] = rd_kafka_topic_new(s->rk, EVENT_TOPICS[i], NULL);
    return s;
}

bool outbox_sender_fatal(outbox_sender *s, char *why, size_t cap)
{
    char buf[256];
    rd_kafka_resp_err_t e = rd_kafka_fatal_error(s->rk, buf, sizeof buf);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR && why != NULL) snprintf(why, cap, "%s: %s", rd_kafka_err2name(e), buf);
    return e != RD_KAFKA_RESP_ERR_NO_ERROR;
}

void outbox_sender_free(outbox_sender *s)
{
    if (s == NULL) return;
    if (s->rk != NULL) {
        /* What a producer stopped by a fatal error holds cannot leave. */
        if (outbox_sender_fatal(s, NULL, 0)) rd_kafka_purge(s->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(s->rk, 5000);
        for (int i = 0; i < MAX_TOPICS; i++)
            if (s->topics[i] != NULL) rd_kafka_topic_destroy(s->topics[i]);
        rd_kafka_destroy(s->rk);
    }
    arena_free(s->arena);
    free(s->state);
    free(s->errors);
    free(s->reasons);
    free(s->sizes);
    free(s->times);
    free(s->prep);
    for (int i = 0; i < MAX_TOPICS; i++) free(s->acked_us[i]);
    free(s);
}

int outbox_send_rounds(const outbox_sender *s)
{
    return s->rounds;
}

outbox_state outbox_row_state(const outbox_sender *s, int i)
{
    return i >= 0 && i < s->max_rows ? s->state[i] : OUTBOX_HELD;
}

const char *outbox_row_reason(const outbox_sender *s, int i)
{
    return i >= 0 && i < s->max_rows && s->reasons[i] != NULL ? s->reasons[i] : "";
}

int64_t outbox_row_time_us(const outbox_sender *s, int i)
{
    return i >= 0 && i < s->max_rows ? s->times[i] : 0;
}

/* The one path by which an event is produced: the envelope's topic, keyed
 * by user, with the standard headers. */
static rd_kafka_resp_err_t produce_event(outbox_sender *s, const Todo__V1__EventEnvelope *env, const char *topic,
                                         const char *key, const void *value, size_t len, int i)
{
    rd_kafka_headers_t *h = event_kafka_headers(env);
    for (;;) {
        rd_kafka_resp_err_t e = rd_kafka_producev(
            s->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE((void *)value, len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE((void *)(intptr_t)i), RD_KAFKA_V_HEADERS(h),
            RD_KAFKA_V_END);
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(s->rk, 100);
            continue;
        }
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) rd_kafka_headers_destroy(h);
        return e;
    }
}

static bool same_user_or_aggregate(const outbox_row *a, const outbox_row *b)
{
    return strcmp(a->key, b->key) == 0 || strcmp(a->aggregate, b->aggregate) == 0;
}

/* True when an earlier row of row i's user or aggregate failed, was
 * refused or waits: row i waits too, keeping their order (a linear scan
 * comparing only such rows: they are rare). */
static bool behind_a_row_that_did_not_leave(const outbox_sender *s, const outbox_row *rows, int i)
{
    for (int k = 0; k < i; k++)
        if ((s->state[k] == OUTBOX_FAILED || s->state[k] == OUTBOX_REFUSED || s->state[k] == OUTBOX_HELD) &&
            same_user_or_aggregate(&rows[k], &rows[i]))
            return true;
    return false;
}

/* Where row i (prepared) goes: librdkafka's own partitioner (the default,
 * consistent_random: a hash of the key) over the topic's partitions, or,
 * before the first statistics tell how many there are, where an earlier
 * row of its user went; -1 when neither is known. */
static int32_t partition_of(const outbox_sender *s, const outbox_row *rows, int i)
{
    int t = s->prep[i].topic;
    if (s->partitions[t] > 0 && s->topics[t] != NULL)
        return rd_kafka_msg_partitioner_consistent_random(s->topics[t], rows[i].key, strlen(rows[i].key),
                                                           s->partitions[t], NULL, NULL);
    for (int k = i - 1; k >= 0; k--)
        if (s->state[k] == OUTBOX_OK && s->prep[k].topic == t && strcmp(rows[k].key, rows[i].key) == 0)
            return s->prep[k].partition;
    return -1;
}

/* True when row i must wait for an earlier row of its user or aggregate
 * still in flight to the same topic: its partition has not acknowledged a row of this
 * producer yet. A broker takes any sequence number as the first from a
 * producer it does not know, so there a later request could be written
 * while the one before it fails for good, and the user's events would
 * reach Kafka out of order (seen on the mock cluster: the first of three
 * requests refused, the other two written). On a settled partition Kafka
 * refuses the later requests too (a sequence number that does not follow
 * the last one it wrote for the producer), and the producer stops (a fatal
 * error): nothing is out of order. (The mock cluster checks neither.) */
static bool waits_for_its_partition(const outbox_sender *s, const outbox_row *rows, int i)
{
    if (settled(s, s->prep[i].topic, partition_of(s, rows, i))) return false;
    for (int k = 0; k < i; k++)
        if (s->state[k] == OUTBOX_SENT && s->prep[k].topic == s->prep[i].topic &&
            same_user_or_aggregate(&rows[k], &rows[i]))
            return true;
    return false;
}

/* Makes row i ready to leave (prep[i]); false, with the row refused and its
 * reason, when it never can. */
static bool prepare_row(outbox_sender *s, const outbox_row *r, int i, bool stamp_position)
{
    prepared *p = &s->prep[i];
    todo_err err;
    if (event_decode(r->bytes, r->len, s->arena, &p->env, &err) != TODO_OK) {
        s->state[i] = OUTBOX_REFUSED;
        s->reasons[i] = arena_printf(s->arena, "the stored envelope does not decode: %s", err.msg);
        return false;
    }
    if (p->env->time != NULL) s->times[i] = event_timestamp_us(p->env->time);
    const char *topic = event_topic(p->env->event_type);
    p->topic = topic != NULL ? topic_index(topic) : -1;
    if (p->topic < 0) {
        s->state[i] = OUTBOX_REFUSED;
        s->reasons[i] = arena_printf(s->arena, "no topic carries events of type %s", p->env->event_type);
        return false;
    }
    p->value = r->bytes;
    p->len = r->len;
    if (stamp_position) {
        p->env->position = r->id;
        p->len = todo__v1__event_envelope__get_packed_size(p->env);
        uint8_t *packed = arena_alloc(s->arena, p->len + 1);
        todo__v1__event_envelope__pack(p->env, packed);
        p->value = packed;
    }
    s->sizes[i] = p->len;
    if (p->len > (size_t)s->max_event_bytes) { /* commands refuse these; this one came another way */
        s->state[i] = OUTBOX_REFUSED;
        s->reasons[i] = arena_printf(s->arena, "the event is %zu bytes, over TODO_EVENT_MAX_BYTES (%d)", p->len,
                                     s->max_event_bytes);
        return false;
    }
    return true;
}

/* Produces row i (prepared); sets its state. */
static void send_row(outbox_sender *s, const outbox_row *r, int i)
{
    const prepared *p = &s->prep[i];
    s->state[i] = OUTBOX_SENT;
    rd_kafka_resp_err_t e = produce_event(s, p->env, EVENT_TOPICS[p->topic], r->key, p->value, p->len, i);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        s->errors[i] = e;
        s->state[i] = kafkax_err_permanent(e) ? OUTBOX_REFUSED : OUTBOX_FAILED;
    }
}

int outbox_send(outbox_sender *s, const outbox_row *rows, int n, bool stamp_position, const atomic_int *stop)
{
    if (n > s->max_rows) n = s->max_rows;
    arena_reset(s->arena);
    for (int i = 0; i < n; i++) {
        s->state[i] = OUTBOX_HELD;
        s->errors[i] = RD_KAFKA_RESP_ERR_NO_ERROR;
        s->reasons[i] = NULL;
        s->sizes[i] = rows[i].len;
        s->times[i] = 0;
        s->prep[i] = (prepared){.topic = -1, .partition = -1};
    }
    /* In rounds: a row that waits for its partition to settle goes in the
     * next round, once the reports of this one are in (on a producer's
     * first rows to a partition: one extra round trip). */
    s->rounds = 0;
    for (bool waited = true; waited;) {
        waited = false;
        s->rounds++;
        for (int i = 0; i < n; i++) {
            if (s->state[i] != OUTBOX_HELD || behind_a_row_that_did_not_leave(s, rows, i)) continue;
            if (s->prep[i].env == NULL && !prepare_row(s, &rows[i], i, stamp_position)) continue;
            if (waits_for_its_partition(s, rows, i)) waited = true;
            else send_row(s, &rows[i], i);
        }
        /* Every delivery report comes, unless a stop or a fatal error ends
         * the wait (rows still OUTBOX_SENT). */
        while (rd_kafka_outq_len(s->rk) > 0 && (stop == NULL || !atomic_load(stop)) &&
               !outbox_sender_fatal(s, NULL, 0))
            rd_kafka_flush(s->rk, 500);
        rd_kafka_poll(s->rk, 0);
        if ((stop != NULL && atomic_load(stop)) || outbox_sender_fatal(s, NULL, 0)) break;
    }
    int ok = 0;
    for (int i = 0; i < n; i++) {
        if (s->state[i] == OUTBOX_OK) ok++;
        if ((s->state[i] == OUTBOX_FAILED || s->state[i] == OUTBOX_REFUSED) && s->reasons[i] == NULL)
            s->reasons[i] = arena_printf(s->arena, "Kafka %s it: %s (%zu bytes)",
                                         s->state[i] == OUTBOX_REFUSED ? "refused" : "did not take",
                                         rd_kafka_err2str(s->errors[i]), s->sizes[i]);
    }
    return ok;
}

/* ---- the publisher ---- */

struct outbox {
    const outbox_table *t;
    const outbox_opts *o;
    outbox_sender *sender;
    pthread_t thread;
    int wake[2];           /* self-pipe: stop wakes the thread */
    atomic_int stop;
    PGconn *pg;
    bool leader;
    bool retry;            /* the last batch had rows worth sending again */
    arena *arena;
    char app_name[64];
    time_t last_status, last_backlog_log;
    metric_series *published, *parked, *unpublished, *oldest, *parked_rows, *waiting, *active;
    metric_series *producer_ready, *queued, *brokers_up;
    metric_series *delay;  /* per published row: its event time to Kafka's acknowledgement */
    atomic_int kafka_ready;
};

/* The producer's state from its statistics: metrics and readiness. */
static void read_producer(outbox *ob)
{
    bool assigned = outbox_sender_ready(ob->sender);
    int up = atomic_load(&ob->sender->brokers_up);
    metric_set(ob->producer_ready, assigned);
    metric_set(ob->queued, atomic_load(&ob->sender->queued));
    metric_set(ob->brokers_up, up);
    atomic_store(&ob->kafka_ready, assigned && up > 0);
}

bool outbox_kafka_ready(const outbox *ob)
{
    return atomic_load(&((outbox *)ob)->kafka_ready) != 0;
}

static void init_metrics(outbox *ob)
{
    const char *t = ob->t->table;
    ob->published = metric_with(metric_counter("todo_outbox_published_total",
                                               "Outbox rows Kafka acknowledged, published by this instance.",
                                               "outbox"), t);
    ob->parked = metric_with(metric_counter("todo_outbox_parked_total",
                                            "Outbox rows parked by this instance: they can never be published.",
                                            "outbox"), t);
    ob->unpublished = metric_with(metric_gauge("todo_outbox_unpublished_rows",
                                               "Outbox rows not yet acknowledged by Kafka, parked ones included "
                                               "(kept by the active publisher).", "outbox"), t);
    ob->oldest = metric_with(metric_gauge("todo_outbox_oldest_unpublished_age_seconds",
                                          "Age of the oldest outbox row not yet acknowledged by Kafka "
                                          "(kept by the active publisher).", "outbox"), t);
    ob->parked_rows = metric_with(metric_gauge("todo_outbox_parked_rows",
                                               "Parked outbox rows waiting for an operator (kept by the active "
                                               "publisher).", "outbox"), t);
    ob->waiting = metric_with(metric_gauge("todo_outbox_waiting_rows",
                                           "Outbox rows waiting behind a parked row of their aggregate (kept by "
                                           "the active publisher).", "outbox"), t);
    ob->active = metric_with(metric_gauge("todo_outbox_active",
                                          "1 on the instance that publishes the outbox, else 0.", "outbox"), t);
    ob->producer_ready = metric_with(metric_gauge("todo_outbox_producer_ready",
                                                  "1 once the outbox's idempotent producer has its producer id "
                                                  "(it can deliver), else 0.", "outbox"), t);
    ob->queued = metric_with(metric_gauge("todo_outbox_producer_queued_messages",
                                          "Messages waiting in the outbox's producer (librdkafka's msg_cnt).",
                                          "outbox"), t);
    ob->delay = metric_with(metric_histogram("todo_outbox_publish_delay_seconds",
                                             "Time from an event's time (set by the command or saga that wrote "
                                             "it, just before its transaction) to Kafka's acknowledgement of it, "
                                             "per event this instance published.",
                                             "outbox", METRIC_LATENCY_BUCKETS, METRIC_N_LATENCY_BUCKETS), t);
    ob->brokers_up = metric_with(metric_gauge("todo_outbox_producer_brokers_up",
                                              "Kafka brokers the outbox's producer is connected to.", "outbox"), t);
}

/* The active publisher's look at its table (every 5 s): the gauges, and a
 * log line every 10 s while there is a backlog. */
static void read_status(outbox *ob)
{
    todo_err err;
    time_t now = time(NULL);
    if (now - ob->last_status < 5) return;
    ob->last_status = now;
    /* Bounded: the publisher waits for it, and must never wait long for
     * its gauges (a status query that once read the backlog once per row
     * held every event back for minutes; migration 0030). */
    PGresult *r = NULL;
    if (pgx_cmd(ob->pg, "begin", 0, NULL, &err) == TODO_OK &&
        pgx_cmd(ob->pg, "set local statement_timeout = " STATUS_TIMEOUT_MS, 0, NULL, &err) == TODO_OK)
        r = pgx_exec(ob->pg, ob->t->status_sql, 0, NULL, &err);
    if (r == NULL) {
        log_warn(ob->t->name, "reading the outbox's status failed; its gauges keep their last values",
                 "error=\"%s\"", err.msg);
        pgx_cmd(ob->pg, "rollback", 0, NULL, NULL);
        return;
    }
    if (pgx_cmd(ob->pg, "commit", 0, NULL, &err) != TODO_OK) {
        PQclear(r);
        return;
    }
    long rows = strtol(PQgetvalue(r, 0, 0), NULL, 10), parked = strtol(PQgetvalue(r, 0, 2), NULL, 10);
    long waiting = strtol(PQgetvalue(r, 0, 3), NULL, 10);
    double age = strtod(PQgetvalue(r, 0, 1), NULL);
    PQclear(r);
    metric_set(ob->unpublished, (double)rows);
    metric_set(ob->oldest, age);
    metric_set(ob->parked_rows, (double)parked);
    metric_set(ob->waiting, (double)waiting);
    if ((rows > 0 || parked > 0) && now - ob->last_backlog_log >= 10) {
        ob->last_backlog_log = now;
        log_warn(ob->t->name, "outbox backlog", "rows=%ld oldest_age_s=%.1f parked=%ld waiting_behind_parked=%ld",
                 rows, age, parked, waiting);
    }
}

/* Takes the notifications libpq holds; returns how many there were. */
static int drain_notifies(PGconn *pg)
{
    int n = 0;
    PGnotify *note;
    while ((note = PQnotifies(pg)) != NULL) {
        PQfreemem(note);
        n++;
    }
    return n;
}

/* Waits up to ms for a notification or a stop; drains notifications. A
 * NOTIFY that arrived while the previous statement ran was read by libpq
 * with that statement's answer: the socket stays quiet, so it is taken
 * first (waiting on the socket alone lost that wake-up until the next poll
 * interval). */
static void wait_for_work(outbox *ob, int ms)
{
    struct pollfd fds[2] = {{.fd = ob->wake[0], .events = POLLIN}, {.fd = -1, .events = POLLIN}};
    if (ob->pg != NULL && ob->leader) {
        PQconsumeInput(ob->pg);
        if (drain_notifies(ob->pg) > 0) return;
        fds[1].fd = PQsocket(ob->pg);
    }
    if (poll(fds, 2, ms) > 0 && fds[1].revents != 0) {
        PQconsumeInput(ob->pg);
        drain_notifies(ob->pg);
    }
}

static void drop_connection(outbox *ob)
{
    pgx_close(ob->pg);
    ob->pg = NULL;
    metric_set(ob->active, 0);
    if (ob->leader) log_warn(ob->t->name, "lost the database connection; no longer the active publisher", NULL);
    ob->leader = false;
}

/* Becomes the active publisher if no one else is; false when another is
 * (or the database failed: the connection is dropped). */
static bool lead(outbox *ob)
{
    todo_err err;
    if (ob->leader) return true;
    PGresult *res = pgx_exec(ob->pg, "select pg_try_advisory_lock($1::bigint)", 1,
                             (const char *const[]){ob->t->lock_key}, &err);
    if (res == NULL) {
        drop_connection(ob);
        return false;
    }
    ob->leader = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    if (!ob->leader) return false;
    char listen[96];
    snprintf(listen, sizeof listen, "listen %s", ob->t->channel);
    /* The marks (done_sql, park_sql) are committed without waiting for
     * their WAL flush: a mark that a database crash loses only makes its
     * row go to Kafka again, which a crash between Kafka's acknowledgement
     * and the mark already did, and every consumer takes twice. The flush
     * was a quarter of the publisher's database time per batch. */
    if (pgx_cmd(ob->pg, listen, 0, NULL, &err) != 0 ||
        pgx_cmd(ob->pg, "set synchronous_commit = off", 0, NULL, &err) != 0) {
        drop_connection(ob);
        return false;
    }
    log_info(ob->t->name, "active: this instance publishes the outbox", "application_name=%s", ob->app_name);
    metric_set(ob->active, 1);
    ob->last_status = 0;
    return true;
}

/* Publishes one batch read from the table; returns the rows done with
 * (published or parked), or -1 when the database failed us. What Kafka
 * acknowledged is marked first (whatever happens next, nothing it has is
 * sent again), then what it refused is parked. */
static int publish_batch(outbox *ob, PGresult *res)
{
    todo_err err;
    int n = PQntuples(res);
    arena_reset(ob->arena);
    outbox_row *rows = arena_calloc(ob->arena, sizeof *rows * ((size_t)n + 1));
    for (int i = 0; i < n; i++) {
        size_t len = 0;
        uint8_t *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(res, i, 3), &len);
        uint8_t *bytes = arena_alloc(ob->arena, len + 1);
        if (raw != NULL) memcpy(bytes, raw, len);
        PQfreemem(raw);
        rows[i] = (outbox_row){.id = strtoll(PQgetvalue(res, i, 0), NULL, 10), .key = PQgetvalue(res, i, 1),
                               .aggregate = PQgetvalue(res, i, 2), .bytes = bytes, .len = raw != NULL ? len : 0};
    }
    int acked = outbox_send(ob->sender, rows, n, ob->t->stamp_position, &ob->stop);
    double acked_at_us = (double)event_now_us();
    for (int i = 0; i < n; i++) {
        int64_t t = outbox_row_time_us(ob->sender, i);
        if (outbox_row_state(ob->sender, i) == OUTBOX_OK && t > 0)
            metric_observe(ob->delay, acked_at_us > (double)t ? (acked_at_us - (double)t) / 1e6 : 0);
    }

    size_t cap = (size_t)n * 21 + 3, off = 0;
    char *ids = arena_alloc(ob->arena, cap);
    int marked = 0, done = 0;
    ids[off++] = '{';
    for (int i = 0; i < n; i++)
        if (outbox_row_state(ob->sender, i) == OUTBOX_OK)
            off += (size_t)snprintf(ids + off, cap - off, "%s%" PRId64, marked++ ? "," : "", rows[i].id);
    ids[off++] = '}';
    ids[off] = '\0';
    if (acked > 0 && pgx_cmd(ob->pg, ob->t->done_sql, 1, (const char *const[]){ids}, &err) != 0) {
        log_error(ob->t->name, "could not mark rows published; they will be sent again", "error=\"%s\"", err.msg);
        return -1;
    }
    if (acked > 0) log_debug(ob->t->name, "published", "rows=%d first=%s", acked, PQgetvalue(res, 0, 0));
    metric_add(ob->published, acked);
    ob->retry = false;
    for (int i = 0; i < n; i++) {
        outbox_state st = outbox_row_state(ob->sender, i);
        if (st == OUTBOX_FAILED || st == OUTBOX_SENT) { /* SENT: stopped while waiting */
            ob->retry = true;
            if (st == OUTBOX_FAILED)
                log_warn(ob->t->name, "delivery failed; retrying", "id=%s type=%s error=\"%s\"", PQgetvalue(res, i, 0),
                         PQgetvalue(res, i, 4), outbox_row_reason(ob->sender, i));
        }
        if (st != OUTBOX_REFUSED) continue;
        const char *reason = outbox_row_reason(ob->sender, i);
        log_error(ob->t->name, "event parked: it cannot be published; later events of its aggregate wait",
                  "id=%s type=%s aggregate=%s reason=\"%s\"", PQgetvalue(res, i, 0), PQgetvalue(res, i, 4),
                  rows[i].aggregate, reason);
        if (pgx_cmd(ob->pg, ob->t->park_sql, 2, (const char *const[]){PQgetvalue(res, i, 0), reason}, &err) != 0) {
            log_error(ob->t->name, "could not park a row", "id=%s error=\"%s\"", PQgetvalue(res, i, 0), err.msg);
            return -1;
        }
        metric_add(ob->parked, 1);
        done++;
    }
    return done + acked;
}

/* The producer of a publisher: at start, and again after a fatal error. */
static outbox_sender *publisher_sender(const outbox_opts *o, todo_err *err)
{
    return outbox_sender_new(o->brokers, o->app_name, o->batch, o->max_event_bytes, NULL, err);
}

static void *outbox_main(void *arg)
{
    outbox *ob = arg;
    todo_err err;
    char limit[16];
    snprintf(limit, sizeof limit, "%d", ob->o->batch);

    while (!atomic_load(&ob->stop)) {
        read_producer(ob);
        if (ob->pg == NULL || PQstatus(ob->pg) != CONNECTION_OK) {
            if (ob->pg != NULL) drop_connection(ob);
            if (pgx_ensure(&ob->pg, ob->o->pg_url, ob->app_name, &err) != 0) {
                log_warn(ob->t->name, "database unreachable; retrying", "error=\"%s\"", err.msg);
                wait_for_work(ob, 1000);
                continue;
            }
        }
        if (!lead(ob)) {
            if (ob->pg != NULL) wait_for_work(ob, ob->o->poll_ms);
            continue;
        }
        read_status(ob);
        if (ob->t->leader_tick != NULL) ob->t->leader_tick(ob->pg, ob->t->ctx);
        PGresult *rows = pgx_exec(ob->pg, ob->t->select_sql, 1, (const char *const[]){limit}, &err);
        if (rows == NULL) {
            log_warn(ob->t->name, "reading the outbox failed", "error=\"%s\"", err.msg);
            drop_connection(ob);
            continue;
        }
        int n = PQntuples(rows), done = n > 0 ? publish_batch(ob, rows) : 0;
        PQclear(rows);
        char why[320];
        if (outbox_sender_fatal(ob->sender, why, sizeof why)) {
            /* The rows it did not deliver are still unpublished: a new
             * producer (a new producer id) sends them again, in order. */
            log_error(ob->t->name, "the Kafka producer stopped on a fatal error; starting a new one",
                      "error=\"%s\"", why);
            outbox_sender *fresh = publisher_sender(ob->o, &err);
            if (fresh != NULL) {
                outbox_sender_free(ob->sender);
                ob->sender = fresh;
            } else {
                log_error(ob->t->name, "cannot make a new Kafka producer; retrying", "error=\"%s\"", err.msg);
            }
        }
        if (done < 0 || (n > 0 && ob->retry)) {
            wait_for_work(ob, 1000); /* Kafka trouble: back off, then retry the rest */
        } else if (n < ob->o->batch) {
            wait_for_work(ob, ob->o->poll_ms);
        }
    }
    /* On this thread: its prepared statements are remembered per thread. */
    pgx_close(ob->pg);
    ob->pg = NULL;
    return NULL;
}

outbox *outbox_start(const outbox_table *t, const outbox_opts *o, todo_err *err)
{
    outbox *ob = calloc(1, sizeof *ob);
    if (ob == NULL) {
        todo_err_set(err, TODO_EINTERNAL, "out of memory");
        return NULL;
    }
    ob->t = t;
    ob->o = o;
    ob->wake[0] = ob->wake[1] = -1;
    /* The pid names the instance in pg_stat_activity (todoctl outbox). */
    snprintf(ob->app_name, sizeof ob->app_name, "%s-%d", o->app_name, (int)getpid());
    init_metrics(ob);
    ob->arena = arena_new();
    if (ob->arena == NULL || pipe(ob->wake) != 0) {
        todo_err_set(err, TODO_EINTERNAL, "out of resources starting the %s", t->name);
        outbox_stop(ob);
        return NULL;
    }
    ob->sender = publisher_sender(o, err);
    if (ob->sender == NULL) {
        outbox_stop(ob);
        return NULL;
    }
    if (pthread_create(&ob->thread, NULL, outbox_main, ob) != 0) {
        outbox_sender_free(ob->sender);
        ob->sender = NULL;
        todo_err_set(err, TODO_EINTERNAL, "cannot start the %s thread", t->name);
        outbox_stop(ob);
        return NULL;
    }
    return ob;
}

void outbox_stop(outbox *ob)
{
    if (ob == NULL) return;
    if (ob->sender != NULL) {
        atomic_store(&ob->stop, 1);
        if (write(ob->wake[1], "x", 1) < 0) { /* the thread polls every second anyway */
        }
        pthread_join(ob->thread, NULL);
        outbox_sender_free(ob->sender);
    }
    pgx_close(ob->pg);
    if (ob->wake[0] >= 0) close(ob->wake[0]);
    if (ob->wake[1] >= 0) close(ob->wake[1]);
    arena_free(ob->arena);
    free(ob);
}
