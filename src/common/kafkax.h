/*
 * kafkax: librdkafka handles configured the way every process of ours needs
 * them.
 *
 * Producers are idempotent (enable.idempotence, acks=all): a retried send
 * never duplicates or reorders within a partition. Consumers never commit by
 * themselves (enable.auto.commit=false): the caller commits offsets after its
 * database transaction commits. They join as static members when the
 * process has an instance name (kafkax_set_instance), and rebalance eagerly
 * (range): librdkafka 2.0.2's cooperative-sticky assignor can abort the
 * process at shutdown (kafkax.c). The topics themselves are topics.h's.
 */
#ifndef TODO_KAFKAX_H
#define TODO_KAFKAX_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>

#include "todo_err.h"

/* Security settings (librdkafka's security.protocol, ssl.*, sasl.*) that
 * every client this process makes applies: pairs "key=value;key=value"
 * (TODO_KAFKA_CONFIG; NULL or "": none). Call once at start, before any
 * client. TODO_EINVAL naming a key that is not a security setting, or a
 * value librdkafka refuses. */
int kafkax_set_security(const char *pairs, todo_err *err);

/* A new configuration with bootstrap.servers and the security settings
 * (for the clients made outside kafkax: admin, tests). NULL with err set. */
rd_kafka_conf_t *kafkax_conf_new(const char *brokers, todo_err *err);

typedef void (*kafkax_dr_cb)(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque);

/* An idempotent producer on brokers. dr (may be NULL) receives one delivery
 * report per message from rd_kafka_poll/flush; opaque is handed to it. */
rd_kafka_t *kafkax_producer_new(const char *brokers, const char *client_id, kafkax_dr_cb dr, void *opaque,
                                todo_err *err);

/* kafkax_producer_new with more settings: "key", "value" pairs ending with
 * NULL (may be NULL), applied last. */
rd_kafka_t *kafkax_producer_new_conf(const char *brokers, const char *client_id, kafkax_dr_cb dr, void *opaque,
                                     const char *const *extra_conf, todo_err *err);

/* librdkafka's statistics (a JSON document) every second, from the
 * thread that polls the handle; return 0 (librdkafka frees json). */
typedef int (*kafkax_stats_cb)(rd_kafka_t *rk, char *json, size_t len, void *opaque);

/* kafkax_producer_new_conf with a statistics callback (may be NULL). */
rd_kafka_t *kafkax_producer_new_stats(const char *brokers, const char *client_id, kafkax_dr_cb dr,
                                      kafkax_stats_cb stats, void *opaque, const char *const *extra_conf,
                                      todo_err *err);

/* Static group membership: consumers made after this call join their
 * groups as "<name>-<group>-<slot>" (group.instance.id; slot: the lowest
 * one this process does not hold in that group), so that an instance
 * restarted under the same name takes its partitions back without a
 * rebalance. name: TODO_INSTANCE, unique among the running instances of a
 * service; NULL or "": dynamic membership. TODO_EINVAL for characters
 * other than letters, digits, '-', '_', '.' or more than 63 of them. */
int kafkax_set_instance(const char *name, todo_err *err);

/* The static member id of the next consumer of group into out; its slot,
 * or -1 without an instance name (kafkax_instance_id_release gives the
 * slot back). */
int kafkax_instance_id(const char *group, char *out, size_t cap);
void kafkax_instance_id_release(const char *group, int slot);

/* Closes and destroys a consumer made here, giving back its static slot. */
void kafkax_consumer_close(rd_kafka_t *rk);

/* A consumer in group on brokers, subscribed to the n topics. Offsets are
 * committed only by the caller; a group without a committed offset starts
 * at the earliest record. */
rd_kafka_t *kafkax_consumer_new(const char *brokers, const char *group, const char *const *topics, int n,
                                todo_err *err);

/* kafkax_consumer_new for a group that reacts to what happens from now on
 * (todo-saga): a partition without a committed offset starts at its end,
 * and that offset is committed at once, so nothing after it is missed even
 * when the process restarts before its first record. */
rd_kafka_t *kafkax_consumer_new_tail(const char *brokers, const char *group, const char *const *topics, int n,
                                     todo_err *err);

/* The outcome of an offset commit (rd_kafka_conf_set_offset_commit_cb). */
typedef void (*kafkax_commit_cb)(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *offsets,
                                 void *opaque);

/* What the consume loop asks of its consumer beyond kafkax_consumer_new. */
typedef struct kafkax_consumer_opts {
    bool tail;               /* as kafkax_consumer_new_tail */
    kafkax_stats_cb stats;   /* librdkafka's statistics every 5 s; NULL: none */
    /* > 0: the offsets the caller stores (rd_kafka_offsets_store) are
     * committed by librdkafka this often (milliseconds), when partitions
     * are revoked, and at kafkax_consumer_close; 0: offsets are committed
     * only by the caller (rd_kafka_commit). */
    int commit_interval_ms;
    kafkax_commit_cb committed; /* each commit's outcome; NULL: none */
    /* > 0: a fetch waits at the broker up to this long (milliseconds) for
     * KAFKAX_FETCH_MIN_BYTES to gather, so that a consumer that can afford
     * the delay fetches a few times a second instead of once per record;
     * 0: a fetch returns as soon as one record is there. */
    int fetch_wait_ms;
    void *opaque;               /* the callbacks' */
} kafkax_consumer_opts;

#define KAFKAX_FETCH_MIN_BYTES 262144

/* kafkax_consumer_new with o's options; stats and commit callbacks are
 * served by the thread that polls the consumer. */
rd_kafka_t *kafkax_consumer_new_opts(const char *brokers, const char *group, const char *const *topics, int n,
                                     const kafkax_consumer_opts *o, todo_err *err);

/* How far consumer group `group` is behind on one partition of a topic. */
typedef struct kafkax_lag {
    int partition;
    int64_t committed;     /* the group's next offset (the low watermark when it has none, or one below it) */
    int64_t start;         /* the low watermark: the first record still held */
    int64_t end;           /* the high watermark */
    int64_t lag;           /* records not yet consumed */
    double oldest_age_s;   /* age of the first record not yet consumed; 0 when none */
} kafkax_lag;

/* Fills out (up to cap partitions; *n receives how many) without joining or
 * disturbing the group. */
int kafkax_group_lag(const char *brokers, const char *group, const char *topic, kafkax_lag *out, int cap, int *n,
                     todo_err *err);

/* Deletes every record of topic, up to each partition's end (Kafka's
 * DeleteRecords); the topic, its offsets and its groups stay. For the
 * benchmark and the tests: a projection's rebuild then replays only what
 * comes after. */
int kafkax_delete_records(const char *brokers, const char *topic, todo_err *err);

/* A consumer of every partition of topic from its start that joins no group
 * and commits nothing (group.id: name-<pid>), for readers that follow a
 * whole topic; *partitions gets their count. NULL while the topic or its
 * broker is not there. */
rd_kafka_t *kafkax_topic_reader(const char *brokers, const char *topic, const char *name, int *partitions);

/* Reads every record of topic, all partitions from their start up to their
 * end when called (no consumer group: nothing is committed), calling fn on
 * each; fn returning nonzero stops early. TODO_EUNAVAIL when the broker does
 * not answer in time. */
int kafkax_read_all(const char *brokers, const char *topic, int (*fn)(const rd_kafka_message_t *m, void *ctx),
                    void *ctx, todo_err *err);

/* The value of header name of msg as a NUL-terminated copy in buf, or NULL. */
const char *kafkax_header(const rd_kafka_message_t *msg, const char *name, char *buf, size_t cap);

/* True for a produce error (from rd_kafka_producev or a delivery report)
 * that sending the same record again cannot fix: it is too large or
 * invalid. The caller sets such a record aside instead of retrying it. */
bool kafkax_err_permanent(rd_kafka_resp_err_t e);

#endif
