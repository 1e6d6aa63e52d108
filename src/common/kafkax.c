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
