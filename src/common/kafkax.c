/* kafkax: see kafkax.h. */
#include "kafkax.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static int set(rd_kafka_conf_t *conf, const char *k, const char *v, todo_err *err)
{
    char errstr[256];
    if (rd_kafka_conf_set(conf, k, v, errstr, sizeof errstr) != RD_KAFKA_CONF_OK)
        return todo_err_set(err, TODO_EINVAL, "kafka setting %s=%s: %s", k, v, errstr);
    return TODO_OK;
}

/* The security settings (kafkax_set_security), set once before any
 * client: read-only afterwards. */
#define MAX_SECURITY 32
static struct {
    char key[64], value[512];
} security[MAX_SECURITY];
static int n_security;

static bool security_key(const char *k)
{
    return strcmp(k, "security.protocol") == 0 || strncmp(k, "ssl.", 4) == 0 || strncmp(k, "sasl.", 5) == 0 ||
           strcmp(k, "enable.ssl.certificate.verification") == 0 || strcmp(k, "ssl_key") == 0;
}

int kafkax_set_security(const char *pairs, todo_err *err)
{
    n_security = 0;
    if (pairs == NULL) return TODO_OK;
    rd_kafka_conf_t *probe = rd_kafka_conf_new(); /* what librdkafka accepts */
    int rc = TODO_OK;
    for (const char *p = pairs; *p != '\0' && rc == TODO_OK;) {
        const char *end = strchr(p, ';');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (len == 0) {
        } else if (eq == NULL || eq == p) {
            rc = todo_err_set(err, TODO_EINVAL, "TODO_KAFKA_CONFIG: \"%.*s\" is not key=value", (int)len, p);
        } else if (n_security == MAX_SECURITY || (size_t)(eq - p) >= sizeof security[0].key ||
                   len - (size_t)(eq - p) - 1 >= sizeof security[0].value) {
            rc = todo_err_set(err, TODO_EINVAL, "TODO_KAFKA_CONFIG: too many or too long settings");
        } else {
            snprintf(security[n_security].key, sizeof security[0].key, "%.*s", (int)(eq - p), p);
            snprintf(security[n_security].value, sizeof security[0].value, "%.*s", (int)(len - (size_t)(eq - p) - 1),
                     eq + 1);
            if (!security_key(security[n_security].key))
                rc = todo_err_set(err, TODO_EINVAL,
                                  "TODO_KAFKA_CONFIG: %s is not a security setting (security.protocol, ssl.*, sasl.*)",
                                  security[n_security].key);
            else if (set(probe, security[n_security].key, security[n_security].value, err) != TODO_OK)
                rc = todo_err_set(err, TODO_EINVAL, "TODO_KAFKA_CONFIG: %s", err->msg);
            else
                n_security++;
        }
        p = end != NULL ? end + 1 : p + len;
    }
    rd_kafka_conf_destroy(probe);
    if (rc != TODO_OK) n_security = 0;
    return rc;
}

rd_kafka_conf_t *kafkax_conf_new(const char *brokers, todo_err *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (set(conf, "bootstrap.servers", brokers, err) != TODO_OK) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    for (int i = 0; i < n_security; i++)
        if (set(conf, security[i].key, security[i].value, err) != TODO_OK) {
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    return conf;
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
    return kafkax_producer_new_conf(brokers, client_id, dr, opaque, NULL, err);
}

rd_kafka_t *kafkax_producer_new_conf(const char *brokers, const char *client_id, kafkax_dr_cb dr, void *opaque,
                                     const char *const *extra_conf, todo_err *err)
{
    return kafkax_producer_new_stats(brokers, client_id, dr, NULL, opaque, extra_conf, err);
}

rd_kafka_t *kafkax_producer_new_stats(const char *brokers, const char *client_id, kafkax_dr_cb dr,
                                      kafkax_stats_cb stats, void *opaque, const char *const *extra_conf,
                                      todo_err *err)
{
    rd_kafka_conf_t *conf = kafkax_conf_new(brokers, err);
    char errstr[512];
    rd_kafka_t *rk;
    if (conf == NULL) return NULL;
    if (set(conf, "client.id", client_id, err) ||
        set(conf, "enable.idempotence", "true", err) || set(conf, "acks", "all", err) ||
        /* No linger: the relay produces a whole batch and flushes it, and a
         * linger only delayed each event (read-your-writes through the token
         * path at 3 writers: p50 28 -> 9 ms). Under load the producer still
         * batches what waits behind the requests in flight. */
        set(conf, "linger.ms", "0", err) || set(conf, "compression.type", "lz4", err) ||
        set(conf, "message.timeout.ms", "30000", err) || set(conf, "reconnect.backoff.max.ms", "1000", err)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    for (int i = 0; extra_conf != NULL && extra_conf[i] != NULL && extra_conf[i + 1] != NULL; i += 2)
        if (set(conf, extra_conf[i], extra_conf[i + 1], err) != TODO_OK) {
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    rd_kafka_conf_set_log_cb(conf, log_cb);
    if (dr != NULL) rd_kafka_conf_set_dr_msg_cb(conf, dr);
    if (stats != NULL && (set(conf, "statistics.interval.ms", "1000", err) != TODO_OK)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    if (stats != NULL) rd_kafka_conf_set_stats_cb(conf, stats);
    rd_kafka_conf_set_opaque(conf, opaque);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        todo_err_set(err, TODO_EINVAL, "kafka producer: %s", errstr);
    }
    return rk;
}

/* Static group membership (kafkax_set_instance): the instance's name, and
 * per group the slots its consumers hold ("<instance>-<group>-<slot>"). */
#define MAX_SLOT_GROUPS 16
#define MAX_SLOTS 32
static char instance[64];
static pthread_mutex_t slots_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char group[128];
    unsigned used; /* bit k: slot k is held */
} slots[MAX_SLOT_GROUPS];

int kafkax_set_instance(const char *name, todo_err *err)
{
    size_t n = name != NULL ? strlen(name) : 0;
    if (n >= sizeof instance)
        return todo_err_set(err, TODO_EINVAL, "TODO_INSTANCE: at most %zu characters", sizeof instance - 1);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
              c == '.'))
            return todo_err_set(err, TODO_EINVAL, "TODO_INSTANCE: letters, digits, '-', '_' and '.' only, got \"%s\"",
                                name);
    }
    snprintf(instance, sizeof instance, "%s", n > 0 ? name : "");
    return TODO_OK;
}

int kafkax_instance_id(const char *group, char *out, size_t cap)
{
    int slot = -1;
    if (instance[0] == '\0') return -1;
    pthread_mutex_lock(&slots_mu);
    int g = -1;
    for (int i = 0; i < MAX_SLOT_GROUPS && g < 0; i++)
        if (strcmp(slots[i].group, group) == 0) g = i;
    for (int i = 0; i < MAX_SLOT_GROUPS && g < 0; i++)
        if (slots[i].group[0] == '\0') snprintf(slots[g = i].group, sizeof slots[i].group, "%s", group);
    for (int k = 0; g >= 0 && k < MAX_SLOTS && slot < 0; k++)
        if ((slots[g].used & (1u << k)) == 0) {
            slots[g].used |= 1u << k;
            slot = k;
        }
    pthread_mutex_unlock(&slots_mu);
    if (slot >= 0) snprintf(out, cap, "%s-%s-%d", instance, group, slot);
    return slot;
}

void kafkax_instance_id_release(const char *group, int slot)
{
    if (slot < 0 || slot >= MAX_SLOTS) return;
    pthread_mutex_lock(&slots_mu);
    for (int i = 0; i < MAX_SLOT_GROUPS; i++)
        if (strcmp(slots[i].group, group) == 0) slots[i].used &= ~(1u << slot);
    pthread_mutex_unlock(&slots_mu);
}

void kafkax_consumer_close(rd_kafka_t *rk)
{
    char group[128] = "", id[256] = "";
    size_t gl = sizeof group, il = sizeof id;
    const rd_kafka_conf_t *conf = rd_kafka_conf(rk);
    rd_kafka_conf_get(conf, "group.id", group, &gl);
    bool is_static = rd_kafka_conf_get(conf, "group.instance.id", id, &il) == RD_KAFKA_CONF_OK && id[0] != '\0';
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    const char *dash = strrchr(id, '-');
    if (is_static && dash != NULL) kafkax_instance_id_release(group, atoi(dash + 1));
}

/* Rebalance callback of a tail consumer: on assignment, a partition the
 * group has no committed offset for starts at its end, and that offset is
 * committed at once, so that what arrives after it is never skipped, even
 * across a restart before the first record. */
static void tail_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t e, rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    (void)opaque;
    if (e != RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rd_kafka_assign(rk, NULL);
        return;
    }
    rd_kafka_topic_partition_list_t *fresh = rd_kafka_topic_partition_list_new(parts->cnt);
    if (rd_kafka_committed(rk, parts, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        for (int i = 0; i < parts->cnt; i++) {
            rd_kafka_topic_partition_t *p = &parts->elems[i];
            int64_t lo, hi;
            if (p->offset >= 0) continue;
            if (rd_kafka_query_watermark_offsets(rk, p->topic, p->partition, &lo, &hi, 10000) !=
                RD_KAFKA_RESP_ERR_NO_ERROR)
                continue; /* left to auto.offset.reset */
            p->offset = hi;
            rd_kafka_topic_partition_list_add(fresh, p->topic, p->partition)->offset = hi;
        }
    }
    if (fresh->cnt > 0) rd_kafka_commit(rk, fresh, 0);
    rd_kafka_topic_partition_list_destroy(fresh);
    rd_kafka_assign(rk, parts);
}

/* The consumer's settings but its instance id: the caller's options on top
 * of the house's defaults. On failure err names the setting. */
static int consumer_settings(rd_kafka_conf_t *conf, const char *group, const kafkax_consumer_opts *o, todo_err *err)
{
    char interval[16];
    snprintf(interval, sizeof interval, "%d", o->commit_interval_ms > 0 ? o->commit_interval_ms : 5000);
    if (set(conf, "group.id", group, err) || set(conf, "client.id", group, err) ||
        set(conf, "enable.auto.commit", o->commit_interval_ms > 0 ? "true" : "false", err) ||
        set(conf, "auto.commit.interval.ms", interval, err) || set(conf, "enable.auto.offset.store", "false", err) ||
        set(conf, "auto.offset.reset", o->tail ? "latest" : "earliest", err) ||
        set(conf, "session.timeout.ms", "6000", err) || set(conf, "heartbeat.interval.ms", "1500", err) ||
        /* Eager assignment (range): librdkafka 2.0.2's cooperative-sticky
         * assignor aborts the process when a consumer that never had an
         * assignment is destroyed (rdkafka_sticky_assignor.c: Assertion
         * `assignor_state' failed; librdkafka #4312, fixed in 2.3.0): seen
         * on a projector stopped right after it joined. */
        set(conf, "partition.assignment.strategy", "range", err) ||
        set(conf, "enable.partition.eof", "false", err) || set(conf, "reconnect.backoff.max.ms", "1000", err) ||
        /* Bound the prefetch: librdkafka's default (64 MiB per consumer)
         * made a projector catching up on a long topic weigh 130 MiB. */
        set(conf, "queued.max.messages.kbytes", "8192", err))
        return TODO_EINVAL;
    if (o->stats != NULL) {
        if (set(conf, "statistics.interval.ms", "5000", err) != TODO_OK) return TODO_EINVAL;
        rd_kafka_conf_set_stats_cb(conf, o->stats);
    }
    if (o->fetch_wait_ms > 0) {
        char wait[16], min_bytes[16];
        snprintf(wait, sizeof wait, "%d", o->fetch_wait_ms);
        snprintf(min_bytes, sizeof min_bytes, "%d", KAFKAX_FETCH_MIN_BYTES);
        if (set(conf, "fetch.wait.max.ms", wait, err) || set(conf, "fetch.min.bytes", min_bytes, err))
            return TODO_EINVAL;
    }
    if (o->committed != NULL) rd_kafka_conf_set_offset_commit_cb(conf, o->committed);
    rd_kafka_conf_set_opaque(conf, o->opaque);
    rd_kafka_conf_set_log_cb(conf, log_cb);
    if (o->tail) rd_kafka_conf_set_rebalance_cb(conf, tail_rebalance);
    return TODO_OK;
}

rd_kafka_t *kafkax_consumer_new_opts(const char *brokers, const char *group, const char *const *topics, int n,
                                     const kafkax_consumer_opts *o, todo_err *err)
{
    rd_kafka_conf_t *conf = kafkax_conf_new(brokers, err);
    char errstr[512], id[256];
    if (conf == NULL) return NULL;
    /* Static membership: a restarted instance takes back its partitions
     * without a rebalance, and until it is back (session.timeout.ms) they
     * wait for it rather than move twice. */
    int slot = kafkax_instance_id(group, id, sizeof id);
    rd_kafka_t *rk = NULL;
    if (consumer_settings(conf, group, o, err) != TODO_OK ||
        (slot >= 0 && set(conf, "group.instance.id", id, err) != TODO_OK))
        goto fail;
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (rk == NULL) {
        todo_err_set(err, TODO_EINVAL, "kafka consumer: %s", errstr);
        goto fail;
    }
    conf = NULL; /* rd_kafka_new took it */
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++) rd_kafka_topic_partition_list_add(list, topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        todo_err_set(err, TODO_EUNAVAIL, "kafka subscribe: %s", rd_kafka_err2str(e));
        goto fail;
    }
    return rk;
fail:
    kafkax_instance_id_release(group, slot);
    if (rk != NULL) rd_kafka_destroy(rk);
    if (conf != NULL) rd_kafka_conf_destroy(conf);
    return NULL;
}

rd_kafka_t *kafkax_consumer_new(const char *brokers, const char *group, const char *const *topics, int n,
                                todo_err *err)
{
    return kafkax_consumer_new_opts(brokers, group, topics, n, &(kafkax_consumer_opts){.tail = false}, err);
}

rd_kafka_t *kafkax_consumer_new_tail(const char *brokers, const char *group, const char *const *topics, int n,
                                     todo_err *err)
{
    return kafkax_consumer_new_opts(brokers, group, topics, n, &(kafkax_consumer_opts){.tail = true}, err);
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

/* A consumer handle for inspection: never subscribes, never commits. */
static rd_kafka_t *inspector(const char *brokers, const char *group, todo_err *err)
{
    rd_kafka_conf_t *conf = kafkax_conf_new(brokers, err);
    char errstr[256];
    if (conf == NULL) return NULL;
    if (set(conf, "group.id", group, err) ||
        set(conf, "enable.auto.commit", "false", err) || set(conf, "enable.partition.eof", "true", err)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        todo_err_set(err, TODO_EINVAL, "kafka: %s", errstr);
    }
    return rk;
}

/* The timestamp (ms) of the record at offset of partition, or -1. */
static int64_t record_time(rd_kafka_t *rk, const char *topic, int partition, int64_t offset)
{
    int64_t ts = -1;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = offset;
    if (rd_kafka_assign(rk, l) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 5000);
        if (m != NULL) {
            if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) ts = rd_kafka_message_timestamp(m, NULL);
            rd_kafka_message_destroy(m);
        }
        rd_kafka_assign(rk, NULL);
    }
    rd_kafka_topic_partition_list_destroy(l);
    return ts;
}

int kafkax_group_lag(const char *brokers, const char *group, const char *topic, kafkax_lag *out, int cap, int *n,
                     todo_err *err)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_t *rk = inspector(brokers, group, err), *reader = NULL;
    int rc = TODO_OK;
    *n = 0;
    if (rk == NULL) return TODO_EINVAL;
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, t, &md, 10000);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR || md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rc = todo_err_set(err, TODO_EUNAVAIL, "kafka: no metadata for %s: %s", topic,
                          rd_kafka_err2str(e != 0 ? e : md->topics[0].err));
        goto out;
    }
    int parts = md->topics[0].partition_cnt < cap ? md->topics[0].partition_cnt : cap;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(parts);
    for (int p = 0; p < parts; p++) rd_kafka_topic_partition_list_add(l, topic, md->topics[0].partitions[p].id);
    if ((e = rd_kafka_committed(rk, l, 10000)) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_topic_partition_list_destroy(l);
        rc = todo_err_set(err, TODO_EUNAVAIL, "kafka: committed offsets of %s: %s", group, rd_kafka_err2str(e));
        goto out;
    }
    for (int i = 0; i < l->cnt; i++) {
        kafkax_lag *g = &out[(*n)++];
        int64_t lo = 0, hi = 0;
        g->partition = l->elems[i].partition;
        rd_kafka_query_watermark_offsets(rk, topic, g->partition, &lo, &hi, 10000);
        g->committed = l->elems[i].offset >= 0 ? l->elems[i].offset : lo;
        if (g->committed < lo) g->committed = lo; /* the records up to it were deleted: it reads on from lo */
        g->start = lo;
        g->end = hi;
        g->lag = hi > g->committed ? hi - g->committed : 0;
        g->oldest_age_s = 0;
        if (g->lag > 0) {
            if (reader == NULL) reader = inspector(brokers, "todoctl-lag-reader", err);
            int64_t ts = reader != NULL ? record_time(reader, topic, g->partition, g->committed) : -1;
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            if (ts > 0) g->oldest_age_s = ((double)now.tv_sec * 1000 + now.tv_nsec / 1e6 - (double)ts) / 1000.0;
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
out:
    if (md != NULL) rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
    if (reader != NULL) {
        rd_kafka_consumer_close(reader);
        rd_kafka_destroy(reader);
    }
    rd_kafka_destroy(rk);
    return rc;
}

int kafkax_delete_records(const char *brokers, const char *topic, todo_err *err)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_t *rk = kafkax_producer_new(brokers, "todo-delete-records", NULL, NULL, err);
    if (rk == NULL) return err->code;
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, t, &md, 10000);
    rd_kafka_topic_destroy(t);
    int rc = TODO_OK;
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR || md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rc = todo_err_set(err, TODO_EUNAVAIL, "kafka: no metadata for %s: %s", topic,
                          rd_kafka_err2str(e != 0 ? e : md->topics[0].err));
        if (md != NULL) rd_kafka_metadata_destroy(md);
        rd_kafka_destroy(rk);
        return rc;
    }
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
    for (int p = 0; p < md->topics[0].partition_cnt; p++)
        rd_kafka_topic_partition_list_add(parts, topic, md->topics[0].partitions[p].id)->offset = RD_KAFKA_OFFSET_END;
    rd_kafka_metadata_destroy(md);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_DeleteRecords_t *dr = rd_kafka_DeleteRecords_new(parts);
    rd_kafka_DeleteRecords(rk, &dr, 1, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 60000);
    if (ev == NULL || rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rc = todo_err_set(err, TODO_EUNAVAIL, "kafka: deleting the records of %s: %s", topic,
                          ev != NULL ? rd_kafka_event_error_string(ev) : "no reply in 60 s");
    } else {
        const rd_kafka_topic_partition_list_t *res =
            rd_kafka_DeleteRecords_result_offsets(rd_kafka_event_DeleteRecords_result(ev));
        for (int i = 0; i < res->cnt && rc == TODO_OK; i++)
            if (res->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR)
                rc = todo_err_set(err, TODO_EUNAVAIL, "kafka: deleting the records of %s [%d]: %s", topic,
                                  res->elems[i].partition, rd_kafka_err2str(res->elems[i].err));
    }
    if (ev != NULL) rd_kafka_event_destroy(ev);
    rd_kafka_DeleteRecords_destroy(dr);
    rd_kafka_queue_destroy(q);
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_destroy(rk);
    return rc;
}

rd_kafka_t *kafkax_topic_reader(const char *brokers, const char *topic, const char *name, int *partitions)
{
    todo_err err;
    char errstr[256], group[96];
    *partitions = 0;
    rd_kafka_conf_t *conf = kafkax_conf_new(brokers, &err);
    if (conf == NULL) return NULL;
    snprintf(group, sizeof group, "%s-%ld", name, (long)getpid()); /* assigned, never joined */
    rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "enable.partition.eof", "false", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "queued.max.messages.kbytes", "4096", errstr, sizeof errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    const rd_kafka_metadata_t *md = NULL;
    int n = 0;
    if (rd_kafka_metadata(rk, 0, t, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 &&
        md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
        n = md->topics[0].partition_cnt;
    if (md != NULL) rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
    if (n == 0) {
        rd_kafka_destroy(rk);
        return NULL;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++) rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    *partitions = n;
    return rk;
}

int kafkax_read_all(const char *brokers, const char *topic, int (*fn)(const rd_kafka_message_t *m, void *ctx),
                    void *ctx, todo_err *err)
{
    char group[64];
    snprintf(group, sizeof group, "todo-reader-%ld", (long)getpid());
    rd_kafka_t *rk = inspector(brokers, group, err);
    if (rk == NULL) return TODO_EINVAL;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    int rc = TODO_OK;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, t, &md, 10000);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR || md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rc = todo_err_set(err, TODO_EUNAVAIL, "kafka: no metadata for %s: %s", topic,
                          rd_kafka_err2str(e != 0 ? e : md->topics[0].err));
        goto out;
    }
    int parts = md->topics[0].partition_cnt, left = 0;
    int64_t *end = calloc((size_t)parts + 1, sizeof *end);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(parts);
    for (int i = 0; i < parts && end != NULL; i++) {
        int32_t p = md->topics[0].partitions[i].id;
        int64_t lo = 0, hi = 0;
        if ((e = rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000)) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            rc = todo_err_set(err, TODO_EUNAVAIL, "kafka: no offsets for %s/%d: %s", topic, p, rd_kafka_err2str(e));
            break;
        }
        end[i] = hi;
        if (hi > lo) {
            rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
            left++;
        }
    }
    if (end == NULL) rc = todo_err_set(err, TODO_EINTERNAL, "out of memory");
    if (rc == TODO_OK && left > 0 && rd_kafka_assign(rk, l) != RD_KAFKA_RESP_ERR_NO_ERROR)
        rc = todo_err_set(err, TODO_EUNAVAIL, "kafka: cannot read %s", topic);
    /* Until every partition reached the end it had when we started. */
    int idle = 0;
    while (rc == TODO_OK && left > 0 && idle < 100) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m == NULL) {
            idle++;
            continue;
        }
        idle = 0;
        int i = 0;
        while (i < parts && md->topics[0].partitions[i].id != m->partition) i++;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (i < parts && end[i] >= 0) end[i] = -1, left--;
        } else if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (fn(m, ctx) != 0) left = 0;
            else if (i < parts && end[i] >= 0 && m->offset + 1 >= end[i]) end[i] = -1, left--;
        }
        rd_kafka_message_destroy(m);
    }
    if (rc == TODO_OK && left > 0) rc = todo_err_set(err, TODO_EUNAVAIL, "kafka: reading %s timed out", topic);
    rd_kafka_assign(rk, NULL);
    rd_kafka_topic_partition_list_destroy(l);
    free(end);
out:
    if (md != NULL) rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
    rd_kafka_destroy(rk);
    return rc;
}

bool kafkax_err_permanent(rd_kafka_resp_err_t e)
{
    switch (e) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:        /* the broker's limit, or the producer's message.max.bytes */
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR__BAD_MSG:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return true;
    default:
        return false;
    }
}
