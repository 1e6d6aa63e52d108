/* kafkax: see kafkax.h. */
#include "kafkax.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

static int set(rd_kafka_conf_t *conf, const char *k, const char *v, todo_err *err)
{
    char errstr[256];
    if (rd_kafka_conf_set(conf, k, v, errstr, sizeof errstr) != RD_KAFKA_CONF_OK)
        return todo_err_set(err, TODO_EINVAL, "kafka setting %s=%s: %s", k, v, errstr);
    return TODO_OK;
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    if (level <= 3) log_error("kafka", buf, "facility=%s", fac);
    else if (level <= 4) log_warn("kafka", buf, "facility=%s", fac);
    else log_debug("kafka", buf, "facility=%s", fac);
}

rd_kafka_t *kafkax_producer_new(const char *brokers, const char *client_id, kafkax_dr_cb dr, void *opaque,
                                todo_err *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512];
    rd_kafka_t *rk;
    if (set(conf, "bootstrap.servers", brokers, err) || set(conf, "client.id", client_id, err) ||
        set(conf, "enable.idempotence", "true", err) || set(conf, "acks", "all", err) ||
        set(conf, "linger.ms", "5", err) || set(conf, "compression.type", "lz4", err) ||
        set(conf, "message.timeout.ms", "30000", err) || set(conf, "reconnect.backoff.max.ms", "1000", err)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_log_cb(conf, log_cb);
    if (dr != NULL) rd_kafka_conf_set_dr_msg_cb(conf, dr);
    rd_kafka_conf_set_opaque(conf, opaque);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        todo_err_set(err, TODO_EINVAL, "kafka producer: %s", errstr);
    }
    return rk;
}

rd_kafka_t *kafkax_consumer_new(const char *brokers, const char *group, const char *const *topics, int n,
                                todo_err *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512];
    rd_kafka_t *rk;
    if (set(conf, "bootstrap.servers", brokers, err) || set(conf, "group.id", group, err) ||
        set(conf, "client.id", group, err) || set(conf, "enable.auto.commit", "false", err) ||
        set(conf, "enable.auto.offset.store", "false", err) || set(conf, "auto.offset.reset", "earliest", err) ||
        set(conf, "session.timeout.ms", "6000", err) || set(conf, "heartbeat.interval.ms", "1500", err) ||
        set(conf, "enable.partition.eof", "false", err) || set(conf, "reconnect.backoff.max.ms", "1000", err)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        todo_err_set(err, TODO_EINVAL, "kafka consumer: %s", errstr);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++) rd_kafka_topic_partition_list_add(list, topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_destroy(rk);
        todo_err_set(err, TODO_EUNAVAIL, "kafka subscribe: %s", rd_kafka_err2str(e));
        return NULL;
    }
    return rk;
}

static const kafkax_topic topics[] = {
    {"tasks.events.v1", 6, "delete", "-1"},
    {"reminders.events.v1", 6, "delete", "-1"},
    {"users.events.v1", 3, "delete", "-1"},
    {"notifications.commands.v1", 3, "delete", "604800000"},
    {"recurring.commands.v1", 3, "delete", "604800000"},
    {"saga.events.v1", 3, "delete", "2592000000"},
    {"system.dlq.v1", 1, "compact", "-1"},
    {"system.audit.v1", 3, "delete", "2592000000"},
};

const kafkax_topic *kafkax_topics(int *n)
{
    *n = (int)(sizeof topics / sizeof topics[0]);
    return topics;
}

int kafkax_topics_apply(const char *brokers, int rf, int timeout_ms, todo_err *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512];
    int n, rc = TODO_OK;
    const kafkax_topic *t = kafkax_topics(&n);
    if (set(conf, "bootstrap.servers", brokers, err)) {
        rd_kafka_conf_destroy(conf);
        return TODO_EINVAL;
    }
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        return todo_err_set(err, TODO_EINVAL, "kafka admin: %s", errstr);
    }
    rd_kafka_NewTopic_t *nt[16];
    for (int i = 0; i < n; i++) {
        nt[i] = rd_kafka_NewTopic_new(t[i].name, t[i].partitions, rf, errstr, sizeof errstr);
        rd_kafka_NewTopic_set_config(nt[i], "cleanup.policy", t[i].cleanup_policy);
        rd_kafka_NewTopic_set_config(nt[i], "retention.ms", t[i].retention_ms);
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(opt, timeout_ms, errstr, sizeof errstr);
    rd_kafka_AdminOptions_set_operation_timeout(opt, timeout_ms, errstr, sizeof errstr);
    rd_kafka_CreateTopics(rk, nt, (size_t)n, opt, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, timeout_ms + 2000);
    if (ev == NULL) {
        rc = todo_err_set(err, TODO_EUNAVAIL, "kafka did not answer the topic creation within %d ms", timeout_ms);
    } else if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rc = todo_err_set(err, TODO_EUNAVAIL, "creating topics: %s", rd_kafka_event_error_string(ev));
    } else {
        size_t cnt;
        const rd_kafka_topic_result_t **res =
            rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
        for (size_t i = 0; i < cnt; i++) {
            rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
            const char *name = rd_kafka_topic_result_name(res[i]);
            if (e == RD_KAFKA_RESP_ERR_NO_ERROR) log_info("topics", "created", "topic=%s", name);
            else if (e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) log_info("topics", "exists", "topic=%s", name);
            else if (rc == TODO_OK)
                rc = todo_err_set(err, TODO_EUNAVAIL, "creating topic %s: %s", name, rd_kafka_err2str(e));
        }
    }
    if (ev != NULL) rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(opt);
    rd_kafka_queue_destroy(q);
    for (int i = 0; i < n; i++) rd_kafka_NewTopic_destroy(nt[i]);
    rd_kafka_destroy(rk);
    return rc;
}

const char *kafkax_header(const rd_kafka_message_t *msg, const char *name, char *buf, size_t cap)
{
    rd_kafka_headers_t *h = NULL;
    const void *v;
    size_t n;
    if (rd_kafka_message_headers(msg, &h) != RD_KAFKA_RESP_ERR_NO_ERROR) return NULL;
    if (rd_kafka_header_get_last(h, name, &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR || v == NULL) return NULL;
    if (n >= cap) n = cap - 1;
    memcpy(buf, v, n);
    buf[n] = '\0';
    return buf;
}
