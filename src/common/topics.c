/* topics: see topics.h. */
#include "topics.h"

#include <librdkafka/rdkafka.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafkax.h"
#include "topic_names.h"

#define MAX_TOPICS 16

static const topics_spec dev[] = {
    {TOPIC_TASKS, 6, 1, 1, "delete", "-1"},
    {TOPIC_REMINDERS, 6, 1, 1, "delete", "-1"},
    {TOPIC_USERS, 3, 1, 1, "delete", "-1"},
    {TOPIC_NOTIFICATIONS, 3, 1, 1, "delete", "604800000"},
    {TOPIC_RECURRING, 3, 1, 1, "delete", "604800000"},
    {TOPIC_SAGA, 3, 1, 1, "delete", "2592000000"},
    {TOPIC_DLQ, 1, 1, 1, "compact", "-1"},
    {TOPIC_AUDIT, 3, 1, 1, "delete", "2592000000"},
};

static const topics_spec production[] = {
    {TOPIC_TASKS, 12, 3, 2, "delete", "-1"},
    {TOPIC_REMINDERS, 12, 3, 2, "delete", "-1"},
    {TOPIC_USERS, 6, 3, 2, "delete", "-1"},
    {TOPIC_NOTIFICATIONS, 6, 3, 2, "delete", "604800000"},
    {TOPIC_RECURRING, 6, 3, 2, "delete", "604800000"},
    {TOPIC_SAGA, 6, 3, 2, "delete", "2592000000"},
    {TOPIC_DLQ, 3, 3, 2, "compact", "-1"},
    {TOPIC_AUDIT, 6, 3, 2, "delete", "2592000000"},
};

int topics_profile_parse(const char *name, topics_profile *out, todo_err *err)
{
    if (strcmp(name, "dev") == 0) *out = TOPICS_DEV;
    else if (strcmp(name, "production") == 0) *out = TOPICS_PRODUCTION;
    else return todo_err_set(err, TODO_EINVAL, "topic profile must be dev or production, got \"%s\"", name);
    return TODO_OK;
}

const char *topics_profile_name(topics_profile p) { return p == TOPICS_DEV ? "dev" : "production"; }

const topics_spec *topics_table(topics_profile p, int *n)
{
    *n = (int)(sizeof dev / sizeof dev[0]);
    return p == TOPICS_DEV ? dev : production;
}

/* What a topic looks like on the cluster. */
typedef struct actual {
    bool exists;
    int partitions;
    int replication;
    char cleanup_policy[32];
    char retention_ms[32];
    char min_isr[16];
} actual;

static void sayf(topics_say say, void *ctx, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void sayf(topics_say say, void *ctx, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (say != NULL) say(line, ctx);
}

/* Waits for the admin result event of type want on q. */
static rd_kafka_event_t *await(rd_kafka_queue_t *q, int timeout_ms, todo_err *err, const char *what)
{
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, timeout_ms + 2000);
    if (ev == NULL) {
        todo_err_set(err, TODO_EUNAVAIL, "kafka did not answer %s within %d ms", what, timeout_ms);
        return NULL;
    }
    if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        todo_err_set(err, TODO_EUNAVAIL, "%s: %s", what, rd_kafka_event_error_string(ev));
        rd_kafka_event_destroy(ev);
        return NULL;
    }
    return ev;
}

static rd_kafka_AdminOptions_t *options(rd_kafka_t *rk, rd_kafka_admin_op_t op, int timeout_ms)
{
    char errstr[256];
    rd_kafka_AdminOptions_t *o = rd_kafka_AdminOptions_new(rk, op);
    rd_kafka_AdminOptions_set_request_timeout(o, timeout_ms, errstr, sizeof errstr);
    if (op != RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS)
        rd_kafka_AdminOptions_set_operation_timeout(o, timeout_ms, errstr, sizeof errstr);
    return o;
}

static int read_metadata(rd_kafka_t *rk, const topics_spec *t, int n, actual *a, int timeout_ms, todo_err *err)
{
    const struct rd_kafka_metadata *md;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        return todo_err_set(err, TODO_EUNAVAIL, "kafka metadata: %s", rd_kafka_err2str(e));
    for (int i = 0; i < n; i++) {
        memset(&a[i], 0, sizeof a[i]);
        for (int j = 0; j < md->topic_cnt; j++) {
            if (strcmp(md->topics[j].topic, t[i].name) != 0 || md->topics[j].err != RD_KAFKA_RESP_ERR_NO_ERROR)
                continue;
            a[i].exists = true;
            a[i].partitions = md->topics[j].partition_cnt;
            a[i].replication = md->topics[j].partition_cnt > 0 ? md->topics[j].partitions[0].replica_cnt : 0;
        }
    }
    rd_kafka_metadata_destroy(md);
    return TODO_OK;
}

static int create_missing(rd_kafka_t *rk, rd_kafka_queue_t *q, const topics_spec *t, int n, const actual *a,
                          int timeout_ms, topics_say say, void *ctx, todo_err *err)
{
    rd_kafka_NewTopic_t *nt[MAX_TOPICS];
    char errstr[256], isr[16];
    int k = 0, rc = TODO_OK;
    for (int i = 0; i < n; i++) {
        if (a[i].exists) continue;
        nt[k] = rd_kafka_NewTopic_new(t[i].name, t[i].partitions, t[i].replication, errstr, sizeof errstr);
        snprintf(isr, sizeof isr, "%d", t[i].min_isr);
        rd_kafka_NewTopic_set_config(nt[k], "cleanup.policy", t[i].cleanup_policy);
        rd_kafka_NewTopic_set_config(nt[k], "retention.ms", t[i].retention_ms);
        rd_kafka_NewTopic_set_config(nt[k], "min.insync.replicas", isr);
        k++;
    }
    if (k == 0) return TODO_OK;
    rd_kafka_AdminOptions_t *o = options(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS, timeout_ms);
    rd_kafka_CreateTopics(rk, nt, (size_t)k, o, q);
    rd_kafka_event_t *ev = await(q, timeout_ms, err, "creating topics");
    if (ev == NULL) {
        rc = err->code;
    } else {
        size_t cnt;
        const rd_kafka_topic_result_t **res =
            rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
        for (size_t i = 0; i < cnt; i++) {
            rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
            if (e == RD_KAFKA_RESP_ERR_NO_ERROR || e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
                sayf(say, ctx, "%-28s created", rd_kafka_topic_result_name(res[i]));
            else if (rc == TODO_OK)
                rc = todo_err_set(err, TODO_EUNAVAIL, "creating topic %s: %s", rd_kafka_topic_result_name(res[i]),
                                  rd_kafka_topic_result_error_string(res[i]));
        }
        rd_kafka_event_destroy(ev);
    }
    rd_kafka_AdminOptions_destroy(o);
    for (int i = 0; i < k; i++) rd_kafka_NewTopic_destroy(nt[i]);
    return rc;
}

static int describe(rd_kafka_t *rk, rd_kafka_queue_t *q, const topics_spec *t, int n, actual *a, int timeout_ms,
                    todo_err *err)
{
    rd_kafka_ConfigResource_t *res[MAX_TOPICS];
    int k = 0;
    for (int i = 0; i < n; i++)
        if (a[i].exists) res[k++] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, t[i].name);
    if (k == 0) return TODO_OK;
    rd_kafka_AdminOptions_t *o = options(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS, timeout_ms);
    rd_kafka_DescribeConfigs(rk, res, (size_t)k, o, q);
    rd_kafka_event_t *ev = await(q, timeout_ms, err, "describing topic configs");
    int rc = ev != NULL ? TODO_OK : err->code;
    if (ev != NULL) {
        size_t cnt;
        const rd_kafka_ConfigResource_t **out =
            rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(ev), &cnt);
        for (size_t r = 0; r < cnt; r++) {
            const char *name = rd_kafka_ConfigResource_name(out[r]);
            actual *act = NULL;
            for (int i = 0; i < n; i++)
                if (strcmp(t[i].name, name) == 0) act = &a[i];
            if (act == NULL) continue;
            size_t ce;
            const rd_kafka_ConfigEntry_t **entries = rd_kafka_ConfigResource_configs(out[r], &ce);
            for (size_t e = 0; e < ce; e++) {
                const char *key = rd_kafka_ConfigEntry_name(entries[e]), *v = rd_kafka_ConfigEntry_value(entries[e]);
                if (v == NULL) v = "";
                if (strcmp(key, "cleanup.policy") == 0) snprintf(act->cleanup_policy, sizeof act->cleanup_policy, "%s", v);
                else if (strcmp(key, "retention.ms") == 0) snprintf(act->retention_ms, sizeof act->retention_ms, "%s", v);
                else if (strcmp(key, "min.insync.replicas") == 0) snprintf(act->min_isr, sizeof act->min_isr, "%s", v);
            }
        }
        rd_kafka_event_destroy(ev);
    }
    rd_kafka_AdminOptions_destroy(o);
    for (int i = 0; i < k; i++) rd_kafka_ConfigResource_destroy(res[i]);
    return rc;
}

/* Sets the three managed configs of topic t (AlterConfigs replaces the
 * topic's overrides as a whole: these three are the ones we manage). */
static int alter(rd_kafka_t *rk, rd_kafka_queue_t *q, const topics_spec *t, int timeout_ms, todo_err *err)
{
    char isr[16];
    snprintf(isr, sizeof isr, "%d", t->min_isr);
    rd_kafka_ConfigResource_t *res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, t->name);
    rd_kafka_ConfigResource_set_config(res, "cleanup.policy", t->cleanup_policy);
    rd_kafka_ConfigResource_set_config(res, "retention.ms", t->retention_ms);
    rd_kafka_ConfigResource_set_config(res, "min.insync.replicas", isr);
    rd_kafka_AdminOptions_t *o = options(rk, RD_KAFKA_ADMIN_OP_ALTERCONFIGS, timeout_ms);
    rd_kafka_AlterConfigs(rk, &res, 1, o, q);
    rd_kafka_event_t *ev = await(q, timeout_ms, err, "altering topic configs");
    int rc = ev != NULL ? TODO_OK : err->code;
    if (ev != NULL) {
        size_t cnt;
        const rd_kafka_ConfigResource_t **out =
            rd_kafka_AlterConfigs_result_resources(rd_kafka_event_AlterConfigs_result(ev), &cnt);
        if (cnt == 1 && rd_kafka_ConfigResource_error(out[0]) != RD_KAFKA_RESP_ERR_NO_ERROR)
            rc = todo_err_set(err, TODO_EUNAVAIL, "altering %s: %s", t->name, rd_kafka_ConfigResource_error_string(out[0]));
        rd_kafka_event_destroy(ev);
    }
    rd_kafka_AdminOptions_destroy(o);
    rd_kafka_ConfigResource_destroy(res);
    return rc;
}

static int add_partitions(rd_kafka_t *rk, rd_kafka_queue_t *q, const topics_spec *t, int timeout_ms, todo_err *err)
{
    char errstr[256];
    rd_kafka_NewPartitions_t *np = rd_kafka_NewPartitions_new(t->name, (size_t)t->partitions, errstr, sizeof errstr);
    rd_kafka_AdminOptions_t *o = options(rk, RD_KAFKA_ADMIN_OP_CREATEPARTITIONS, timeout_ms);
    rd_kafka_CreatePartitions(rk, &np, 1, o, q);
    rd_kafka_event_t *ev = await(q, timeout_ms, err, "adding partitions");
    int rc = ev != NULL ? TODO_OK : err->code;
    if (ev != NULL) {
        size_t cnt;
        const rd_kafka_topic_result_t **res =
            rd_kafka_CreatePartitions_result_topics(rd_kafka_event_CreatePartitions_result(ev), &cnt);
        if (cnt == 1 && rd_kafka_topic_result_error(res[0]) != RD_KAFKA_RESP_ERR_NO_ERROR)
            rc = todo_err_set(err, TODO_EUNAVAIL, "adding partitions to %s: %s", t->name,
                              rd_kafka_topic_result_error_string(res[0]));
        rd_kafka_event_destroy(ev);
    }
    rd_kafka_AdminOptions_destroy(o);
    rd_kafka_NewPartitions_destroy(np);
    return rc;
}

/* Compares one existing topic; says and counts what differs; fixes what it
 * can when asked. Returns how many differences remain, or -1 on error. */
static int reconcile(rd_kafka_t *rk, rd_kafka_queue_t *q, const topics_spec *t, const actual *a, bool fix,
                     int timeout_ms, topics_say say, void *ctx, todo_err *err)
{
    char isr[16], diffs[400] = "";
    size_t len = 0;
    bool config_drift = false, partitions_short = false;
    int remaining = 0;
    snprintf(isr, sizeof isr, "%d", t->min_isr);
    if (strcmp(a->cleanup_policy, t->cleanup_policy) != 0 || strcmp(a->retention_ms, t->retention_ms) != 0 ||
        strcmp(a->min_isr, isr) != 0) {
        config_drift = true;
        len += (size_t)snprintf(diffs + len, sizeof diffs - len,
                                " cleanup.policy=%s(want %s) retention.ms=%s(want %s) min.insync.replicas=%s(want %s)",
                                a->cleanup_policy, t->cleanup_policy, a->retention_ms, t->retention_ms, a->min_isr, isr);
    }
    if (a->partitions != t->partitions) {
        partitions_short = a->partitions < t->partitions;
        len += (size_t)snprintf(diffs + len, sizeof diffs - len, " partitions=%d(want %d%s)", a->partitions,
                                t->partitions, partitions_short ? "" : "; cannot shrink");
        if (!partitions_short) remaining++;
    }
    if (a->replication != t->replication) {
        len += (size_t)snprintf(diffs + len, sizeof diffs - len, " replication=%d(want %d; needs a reassignment)",
                                a->replication, t->replication);
        remaining++;
    }
    if (len == 0) {
        sayf(say, ctx, "%-28s ok", t->name);
        return 0;
    }
    if (!fix) {
        sayf(say, ctx, "%-28s DIFFERS:%s", t->name, diffs);
        return remaining + config_drift + partitions_short;
    }
    if (config_drift && alter(rk, q, t, timeout_ms, err) != 0) return -1;
    if (partitions_short && add_partitions(rk, q, t, timeout_ms, err) != 0) return -1;
    sayf(say, ctx, "%-28s %s:%s", t->name, remaining ? "FIXED IN PART" : "fixed", diffs);
    return remaining;
}

int topics_apply(const char *brokers, topics_profile p, bool fix, int timeout_ms, topics_say say, void *ctx,
                 todo_err *err)
{
    char errstr[512];
    int n, rc, remaining = 0;
    const topics_spec *t = topics_table(p, &n);
    actual a[MAX_TOPICS];
    rd_kafka_conf_t *conf = kafkax_conf_new(brokers, err);
    if (conf == NULL) return err->code;
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        return todo_err_set(err, TODO_EINVAL, "kafka admin: %s", errstr);
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    if ((rc = read_metadata(rk, t, n, a, timeout_ms, err)) == 0 &&
        (rc = create_missing(rk, q, t, n, a, timeout_ms, say, ctx, err)) == 0 &&
        (rc = describe(rk, q, t, n, a, timeout_ms, err)) == 0) {
        for (int i = 0; i < n && rc == 0; i++) {
            if (!a[i].exists) continue;
            int left = reconcile(rk, q, &t[i], &a[i], fix, timeout_ms, say, ctx, err);
            if (left < 0) rc = err->code;
            else remaining += left;
        }
    }
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    if (rc == 0 && remaining > 0)
        rc = todo_err_set(err, TODO_EPRECOND, "%d difference(s) remain%s", remaining,
                          fix ? " that cannot be fixed online" : "; run with --fix to repair what can be");
    return rc;
}
