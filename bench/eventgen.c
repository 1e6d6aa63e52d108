/*
 * todo-eventgen: the rebuild scenario's tools, for bench/run.sh.
 *
 *   todo-eventgen produce --events N [--users U] [--prefix P] [--sealed]
 *       writes N task events straight to tasks.events.v1 (no command side):
 *       per task a task.created (v2), every second task a task.updated
 *       (title), every third a task.completed, for U users (key = user id),
 *       in order per task (no event-store position: they are not in the
 *       outbox); prints {"events": N, "seconds": S, "rate": R}. --sealed:
 *       their personal fields sealed as todo-command seals them, with each
 *       user's key (made in keys.user_keys through TODO_PG_URL, wrapped by
 *       TODO_MASTER_KEY): the rebuild scenario's sealed half.
 *   todo-eventgen consume [--topic T]...
 *       the raw consume rate: reads every record of the topics (default
 *       tasks.events.v1 and reminders.events.v1) from the start in a new
 *       consumer group, decoding each envelope and nothing more; prints
 *       {"records": N, "seconds": S, "rate": R}.
 *
 *   todo-eventgen truncate [--topic T]...
 *       deletes every record of the topics (default the same two), up to
 *       each partition's end (Kafka's DeleteRecords); the topics stay.
 *
 *   todo-eventgen replicate --replication N
 *       deletes tasks.events.v1 and reminders.events.v1 and creates them
 *       again, empty, as the production topic profile has them (partitions,
 *       retention) but with N replicas and min.insync.replicas at most N:
 *       bench/scale.sh's replication 3 vs 1 comparison on one cluster.
 *
 * Settings (TODO_KAFKA_BROKERS) come from the environment like todoctl's.
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "config.h"
#include "keystore.h"
#include "pgx.h"
#include "seal.h"
#include "event.h"
#include "kafkax.h"
#include "text.h"
#include "topics.h"
#include "todo/v1/events.pb-c.h"

static todo_config cfg;
static atomic_long delivered, failed;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) atomic_fetch_add(&failed, 1);
    else atomic_fetch_add(&delivered, 1);
}

/* The users' keys when sealing (--sealed), else NULL. */
static seal_key *user_keys;

/* Makes (or finds) the key of each of the users of prefix into user_keys. */
static int make_keys(int users, const char *prefix)
{
    todo_err err;
    seal_key master;
    keystore *ks = NULL;
    PGconn *pg = NULL;
    int rc = -1;
    if ((user_keys = calloc((size_t)users, sizeof *user_keys)) == NULL) return -1;
    if (seal_key_parse(cfg.master_key, &master, &err) != 0 || (ks = keystore_new(&master, 60)) == NULL ||
        (pg = pgx_connect(cfg.admin_pg_url, "todo-eventgen", &err)) == NULL)
        goto out;
    for (int i = 0; i < users; i++) {
        char user[64];
        bool created;
        snprintf(user, sizeof user, "%s-%d", prefix, i);
        if (keystore_create(ks, pg, user, &user_keys[i], &created, &err) != 0) goto out;
    }
    rc = 0;
out:
    if (rc != 0) fprintf(stderr, "todo-eventgen: keys: %s\n", err.msg);
    pgx_close(pg);
    keystore_free(ks);
    return rc;
}

/* Encodes and produces one event (its personal fields sealed with key when
 * not NULL); blocks while the local queue is full. */
static int send_event(rd_kafka_t *rk, arena *a, const char *user, const seal_key *key, const char *type, int32_t schema,
                      const char *task, int64_t version, ProtobufCMessage *m)
{
    char event_id[37];
    uint8_t *bytes;
    size_t len;
    todo_err err;
    if (key != NULL && seal_event(m, key, seal_event_aad(a, user, task, type), a, &err) != 0) {
        fprintf(stderr, "todo-eventgen: %s\n", err.msg);
        return -1;
    }
    text_uuid_v4(event_id);
    event_meta meta = {.event_id = event_id, .event_type = type, .source = "todo-eventgen", .time_us = event_now_us(),
                       .user_id = user, .aggregate_type = "task", .aggregate_id = task, .aggregate_version = version,
                       .schema_version = schema};
    if (event_encode(&meta, m, a, &bytes, &len, &err) != 0) {
        fprintf(stderr, "todo-eventgen: %s\n", err.msg);
        return -1;
    }
    for (;;) {
        rd_kafka_resp_err_t e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("tasks.events.v1"),
                                                  RD_KAFKA_V_KEY(user, strlen(user)), RD_KAFKA_V_VALUE(bytes, len),
                                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) return 0;
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            fprintf(stderr, "todo-eventgen: produce: %s\n", rd_kafka_err2str(e));
            return -1;
        }
        rd_kafka_poll(rk, 10);
    }
}

static int produce(long events, int users, const char *prefix)
{
    todo_err err;
    rd_kafka_t *rk = kafkax_producer_new(cfg.kafka_brokers, "todo-eventgen", on_delivery, NULL, &err);
    if (rk == NULL) {
        fprintf(stderr, "todo-eventgen: %s\n", err.msg);
        return 1;
    }
    arena *a = arena_new();
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ts.seconds = time(NULL);
    char *tags[] = {"bench", "replay"};
    double t0 = now_s();
    long sent = 0, task_no = 0;
    int rc = 0;
    while (sent < events && rc == 0) {
        char user[64], task[37];
        snprintf(user, sizeof user, "%s-%ld", prefix, task_no % users);
        const seal_key *key = user_keys != NULL ? &user_keys[task_no % users] : NULL;
        text_uuid_v4(task);
        arena_reset(a);
        Todo__V1__TaskCreatedV2 c = TODO__V1__TASK_CREATED_V2__INIT;
        c.task_id = task;
        c.title = arena_printf(a, "replayed task %ld", task_no);
        c.description = "a task written by todo-eventgen for the rebuild benchmark";
        c.priority = (Todo__V1__Priority)(1 + task_no % 4);
        c.category = "bench";
        c.tags = tags;
        c.n_tags = 2;
        c.created_at = &ts;
        rc = send_event(rk, a, user, key, "task.created", 2, task, 1, &c.base);
        sent++;
        int64_t version = 1;
        if (rc == 0 && sent < events && task_no % 2 == 0) {
            Todo__V1__TaskUpdated u = TODO__V1__TASK_UPDATED__INIT;
            char *fields[] = {"title"};
            u.task_id = task;
            u.title = arena_printf(a, "renamed task %ld", task_no);
            u.changed_fields = fields;
            u.n_changed_fields = 1;
            rc = send_event(rk, a, user, key, "task.updated", 1, task, ++version, &u.base);
            sent++;
        }
        if (rc == 0 && sent < events && task_no % 3 == 0) {
            Todo__V1__TaskCompleted d = TODO__V1__TASK_COMPLETED__INIT;
            d.task_id = task;
            d.completed_at = &ts;
            rc = send_event(rk, a, user, key, "task.completed", 1, task, ++version, &d.base);
            sent++;
        }
        task_no++;
        rd_kafka_poll(rk, 0);
    }
    while (rd_kafka_outq_len(rk) > 0) rd_kafka_poll(rk, 100);
    double secs = now_s() - t0;
    rd_kafka_destroy(rk);
    arena_free(a);
    if (rc != 0 || atomic_load(&failed) > 0) {
        fprintf(stderr, "todo-eventgen: %ld deliveries failed\n", atomic_load(&failed));
        return 1;
    }
    printf("{\"events\": %ld, \"tasks\": %ld, \"seconds\": %.3f, \"rate\": %.1f}\n", sent, task_no, secs,
           (double)sent / secs);
    return 0;
}

static int consume(const char *const *topics, int n)
{
    todo_err err;
    char group[64];
    kafkax_lag lag[256];
    int parts;
    long total = 0, got = 0;
    snprintf(group, sizeof group, "bench-raw-consume-%ld", (long)time(NULL));
    for (int t = 0; t < n; t++) {
        if (kafkax_group_lag(cfg.kafka_brokers, group, topics[t], lag, 256, &parts, &err) != 0) {
            fprintf(stderr, "todo-eventgen: %s\n", err.msg);
            return 1;
        }
        for (int i = 0; i < parts; i++) total += lag[i].lag;
    }
    rd_kafka_t *rk = kafkax_consumer_new(cfg.kafka_brokers, group, topics, n, &err);
    if (rk == NULL) {
        fprintf(stderr, "todo-eventgen: %s\n", err.msg);
        return 1;
    }
    arena *a = arena_new();
    double t0 = 0, last = now_s();
    while (got < total && now_s() - last < 30) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (m == NULL) continue;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            Todo__V1__EventEnvelope *env;
            if (t0 == 0) t0 = now_s(); /* from the first record: not the group join */
            if (event_decode(m->payload, m->len, a, &env, &err) == 0) got++;
            else got++; /* counted all the same: a record read */
            last = now_s();
            if ((got & 1023) == 0) arena_reset(a);
        }
        rd_kafka_message_destroy(m);
    }
    double secs = now_s() - t0;
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    arena_free(a);
    if (got < total) {
        fprintf(stderr, "todo-eventgen: read %ld of %ld records\n", got, total);
        return 1;
    }
    printf("{\"records\": %ld, \"seconds\": %.3f, \"rate\": %.1f}\n", got, secs, (double)got / secs);
    return 0;
}

/* Waits for the admin result on q; prints and counts its topic errors
 * (except the one named ok). */
static int admin_result(rd_kafka_queue_t *q, bool create, rd_kafka_resp_err_t ok)
{
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 60000);
    if (ev == NULL || rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "todo-eventgen: %s\n", ev != NULL ? rd_kafka_event_error_string(ev) : "no admin reply in 60 s");
        if (ev != NULL) rd_kafka_event_destroy(ev);
        return 1;
    }
    size_t cnt;
    const rd_kafka_topic_result_t **res =
        create ? rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt)
               : rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &cnt);
    int bad = 0;
    for (size_t i = 0; i < cnt; i++) {
        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR || e == ok) continue;
        fprintf(stderr, "todo-eventgen: %s: %s\n", rd_kafka_topic_result_name(res[i]),
                rd_kafka_topic_result_error_string(res[i]));
        bad++;
    }
    rd_kafka_event_destroy(ev);
    return bad > 0;
}

/* Deletes every record of the topics (kafkax_delete_records): the next
 * rebuild replays only what is written after. */
static int truncate_topics(const char *const *names, int n)
{
    todo_err err;
    for (int t = 0; t < n; t++)
        if (kafkax_delete_records(cfg.kafka_brokers, names[t], &err) != TODO_OK) {
            fprintf(stderr, "todo-eventgen: %s\n", err.msg);
            return 1;
        }
    printf("{\"truncated\": %d}\n", n);
    return 0;
}

static int replicate(int replication)
{
    static const char *const names[] = {"tasks.events.v1", "reminders.events.v1"};
    todo_err err;
    rd_kafka_t *rk = kafkax_producer_new(cfg.kafka_brokers, "todo-eventgen-admin", NULL, NULL, &err);
    if (rk == NULL) {
        fprintf(stderr, "todo-eventgen: %s\n", err.msg);
        return 1;
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_DeleteTopic_t *del[2];
    for (int i = 0; i < 2; i++) del[i] = rd_kafka_DeleteTopic_new(names[i]);
    rd_kafka_DeleteTopics(rk, del, 2, NULL, q);
    int rc = admin_result(q, false, RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART);
    rd_kafka_DeleteTopic_destroy_array(del, 2);
    int n;
    const topics_spec *t = topics_table(TOPICS_PRODUCTION, &n);
    /* Deletion completes in the background: the creation is refused
     * (TOPIC_ALREADY_EXISTS) until it has; tried again for up to 60 s. */
    for (int attempt = 0; rc == 0 && attempt < 120; attempt++) {
        rd_kafka_NewTopic_t *nt[2];
        int k = 0;
        char errstr[256], isr[16];
        for (int i = 0; i < n; i++) {
            if (strcmp(t[i].name, names[0]) != 0 && strcmp(t[i].name, names[1]) != 0) continue;
            nt[k] = rd_kafka_NewTopic_new(t[i].name, t[i].partitions, replication, errstr, sizeof errstr);
            snprintf(isr, sizeof isr, "%d", t[i].min_isr < replication ? t[i].min_isr : replication);
            rd_kafka_NewTopic_set_config(nt[k], "cleanup.policy", t[i].cleanup_policy);
            rd_kafka_NewTopic_set_config(nt[k], "retention.ms", t[i].retention_ms);
            rd_kafka_NewTopic_set_config(nt[k], "min.insync.replicas", isr);
            k++;
        }
        rd_kafka_CreateTopics(rk, nt, (size_t)k, NULL, q);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 60000);
        rd_kafka_NewTopic_destroy_array(nt, (size_t)k);
        if (ev == NULL) {
            rc = 1;
            break;
        }
        size_t cnt;
        const rd_kafka_topic_result_t **res =
            rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
        int exists = 0, bad = 0;
        for (size_t i = 0; i < cnt; i++) {
            rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
            if (e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) exists++;
            else if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
                fprintf(stderr, "todo-eventgen: %s: %s\n", rd_kafka_topic_result_name(res[i]),
                        rd_kafka_topic_result_error_string(res[i]));
                bad++;
            }
        }
        rd_kafka_event_destroy(ev);
        if (bad > 0) rc = 1;
        if (bad > 0 || exists == 0) break;
        struct timespec ts = {0, 500000000};
        nanosleep(&ts, NULL);
        if (attempt == 119) {
            fprintf(stderr, "todo-eventgen: the deleted topics still exist after 60 s\n");
            rc = 1;
        }
    }
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    if (rc == 0) printf("{\"replication\": %d}\n", replication);
    return rc;
}

int main(int argc, char **argv)
{
    todo_err err;
    long events = 0;
    int users = 1000;
    const char *prefix = "replay", *topics[8];
    int n_topics = 0, replication = 0;
    if (argc < 2 || config_load(&cfg, CONFIG_CLI, NULL, NULL, &err) != 0 || kafkax_set_security(cfg.kafka_config, &err) != 0) {
        fprintf(stderr, "usage: todo-eventgen produce --events N [--users U] [--prefix P] [--sealed] | consume|truncate [--topic T]... | replicate "
                        "--replication N\n");
        return 2;
    }
    bool sealed = false;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--sealed") == 0) sealed = true;
        else if (i + 1 == argc) return 2;
        else if (strcmp(argv[i], "--events") == 0) events = atol(argv[++i]);
        else if (strcmp(argv[i], "--users") == 0) users = atoi(argv[++i]);
        else if (strcmp(argv[i], "--prefix") == 0) prefix = argv[++i];
        else if (strcmp(argv[i], "--topic") == 0 && n_topics < 8) topics[n_topics++] = argv[++i];
        else if (strcmp(argv[i], "--replication") == 0) replication = atoi(argv[++i]);
        else return 2;
    }
    if (strcmp(argv[1], "produce") == 0 && events > 0 && users > 0) {
        if (sealed && make_keys(users, prefix) != 0) return 1;
        int rc = produce(events, users, prefix);
        free(user_keys);
        return rc;
    }
    if (strcmp(argv[1], "replicate") == 0 && replication > 0) return replicate(replication);
    if (strcmp(argv[1], "consume") == 0 || strcmp(argv[1], "truncate") == 0) {
        if (n_topics == 0) {
            topics[n_topics++] = "tasks.events.v1";
            topics[n_topics++] = "reminders.events.v1";
        }
        return argv[1][0] == 'c' ? consume(topics, n_topics) : truncate_topics(topics, n_topics);
    }
    fprintf(stderr, "usage: todo-eventgen produce --events N [--users U] [--prefix P] [--sealed] | consume|truncate [--topic T]... | replicate "
                        "--replication N\n");
    return 2;
}
