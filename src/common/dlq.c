/* dlq: see dlq.h. */
#include "dlq.h"

#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "event.h"
#include "kafkax.h"
#include "text.h"
#include "todo/v1/events.pb-c.h"

const char *dlq_reason_code(const char *r)
{
    static const char *const codes[] = {DLQ_REASON_UNDECODABLE, DLQ_REASON_UNKNOWN_TYPE, DLQ_REASON_SCHEMA,
                                        DLQ_REASON_INVALID,     DLQ_REASON_DATABASE,     DLQ_REASON_RETRIES,
                                        DLQ_REASON_HANDLER,     DLQ_REASON_PARKED};
    if (r == NULL) return DLQ_REASON_HANDLER;
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        size_t n = strlen(codes[i]);
        if (strncmp(r, codes[i], n) == 0 && r[n] == ':') return codes[i];
    }
    if (strstr(r, "handling failed") != NULL) return DLQ_REASON_RETRIES;
    if (strstr(r, "applying failed") != NULL || strstr(r, "database error") != NULL) return DLQ_REASON_DATABASE;
    if (strstr(r, "no projection for event type") != NULL || strstr(r, "unknown event type") != NULL)
        return DLQ_REASON_UNKNOWN_TYPE;
    if (strstr(r, "schema") != NULL) return DLQ_REASON_SCHEMA;
    if (strstr(r, "does not decode") != NULL || strstr(r, "not a todo.v1.EventEnvelope") != NULL ||
        strstr(r, "envelope") != NULL)
        return DLQ_REASON_UNDECODABLE;
    if (strstr(r, "inconsistent") != NULL || strstr(r, "names ") != NULL || strstr(r, "lacks") != NULL)
        return DLQ_REASON_INVALID;
    return DLQ_REASON_HANDLER;
}

/* A header of orig as a number (0 when absent). */
static long long header_number(const rd_kafka_message_t *orig, const char *name)
{
    rd_kafka_headers_t *h = NULL;
    const void *v;
    size_t n;
    char buf[32];
    if (rd_kafka_message_headers(orig, &h) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(h, name, &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR || v == NULL || n >= sizeof buf)
        return 0;
    memcpy(buf, v, n);
    buf[n] = '\0';
    return strtoll(buf, NULL, 10);
}

int dlq_send(rd_kafka_t *producer, const char *group, const rd_kafka_message_t *orig, const char *reason,
             todo_err *err)
{
    return dlq_send_tagged(producer, group, orig, reason, NULL, err);
}

int dlq_send_tagged(rd_kafka_t *producer, const char *group, const rd_kafka_message_t *orig, const char *reason,
                    void *msg_opaque, todo_err *err)
{
    char id[37];
    if (text_uuid_v4(id) != 0) return todo_err_set(err, TODO_EINTERNAL, "no randomness for a dead-letter id");
    return dlq_send_letter(producer, group, orig, reason, id, NULL, msg_opaque, err);
}

/* A header of orig as text into buf ("" when absent). */
static char *header_text(const rd_kafka_message_t *orig, const char *name, char *buf, size_t cap)
{
    if (kafkax_header(orig, name, buf, cap) == NULL) buf[0] = '\0';
    return buf;
}

int dlq_send_letter(rd_kafka_t *producer, const char *group, const rd_kafka_message_t *orig, const char *reason,
                    const char *id, const char *parked_behind, void *msg_opaque, todo_err *err)
{
    Todo__V1__DeadLetter dl = TODO__V1__DEAD_LETTER__INIT;
    Todo__V1__DeadLetter__OriginalHeadersEntry *entries = NULL, **ptrs = NULL;
    rd_kafka_headers_t *oh = NULL;
    char aggregate[130], event_id[130];
    int64_t now = event_now_us();

    dl.dead_letter_id = (char *)id;
    dl.aggregate_id = header_text(orig, "ce_subject", aggregate, sizeof aggregate);
    dl.event_id = header_text(orig, "ce_id", event_id, sizeof event_id);
    dl.parked_behind = (char *)(parked_behind != NULL ? parked_behind : "");
    dl.consumer_group = (char *)group;
    dl.reason = (char *)reason;
    dl.original_topic = (char *)rd_kafka_topic_name(orig->rkt);
    dl.original_partition = orig->partition;
    dl.original_offset = orig->offset;
    dl.original_key.data = orig->key;
    dl.original_key.len = orig->key_len;
    dl.original_value.data = orig->payload;
    dl.original_value.len = orig->len;
    Google__Protobuf__Timestamp ts = {.base = PROTOBUF_C_MESSAGE_INIT(&google__protobuf__timestamp__descriptor),
                                      .seconds = now / 1000000, .nanos = (int32_t)(now % 1000000) * 1000};
    dl.failed_at = &ts;
    dl.reason_code = (char *)dlq_reason_code(reason);
    /* A redriven record that fails again: its history goes on. */
    long long before = header_number(orig, DLQ_HEADER_ATTEMPTS), first = header_number(orig, DLQ_HEADER_FIRST_FAILED);
    dl.attempts = (int32_t)(before > 0 && before < 1000000 ? before + 1 : 1);
    if (first <= 0 || first > now) first = now;
    Google__Protobuf__Timestamp first_ts = {.base = PROTOBUF_C_MESSAGE_INIT(&google__protobuf__timestamp__descriptor),
                                            .seconds = first / 1000000, .nanos = (int32_t)(first % 1000000) * 1000};
    dl.first_failed_at = &first_ts;
    /* What the record is, when it decodes: filters and the causation chain. */
    arena *a = arena_new();
    Todo__V1__EventEnvelope *env = NULL;
    todo_err derr;
    if (a != NULL && event_decode(orig->payload, orig->len, a, &env, &derr) == TODO_OK) {
        dl.event_type = env->event_type;
        dl.user_id = env->user_id;
        dl.correlation_id = env->correlation_id;
        dl.causation_id = env->causation_id;
        if (dl.aggregate_id[0] == '\0') dl.aggregate_id = env->aggregate_id;
        if (dl.event_id[0] == '\0') dl.event_id = env->event_id;
    }
    if (rd_kafka_message_headers(orig, &oh) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        size_t n = rd_kafka_header_cnt(oh);
        entries = calloc(n + 1, sizeof *entries);
        ptrs = calloc(n + 1, sizeof *ptrs);
        if (entries == NULL || ptrs == NULL) {
            free(entries);
            free(ptrs);
            arena_free(a);
            return todo_err_set(err, TODO_EINTERNAL, "out of memory");
        }
        for (size_t i = 0; i < n; i++) {
            const char *name;
            const void *v;
            size_t vlen;
            if (rd_kafka_header_get_all(oh, i, &name, &v, &vlen) != RD_KAFKA_RESP_ERR_NO_ERROR) break;
            if (strcmp(name, DLQ_HEADER_ATTEMPTS) == 0 || strcmp(name, DLQ_HEADER_FIRST_FAILED) == 0 ||
                strncmp(name, "todo_dlq_redrive_", 17) == 0)
                continue;
            todo__v1__dead_letter__original_headers_entry__init(&entries[i]);
            entries[i].key = (char *)name;
            entries[i].value.data = (uint8_t *)v;
            entries[i].value.len = vlen;
            ptrs[dl.n_original_headers++] = &entries[i];
        }
        dl.original_headers = ptrs;
    }
    size_t len = todo__v1__dead_letter__get_packed_size(&dl);
    uint8_t *buf = malloc(len + 1);
    if (buf == NULL) {
        free(entries);
        free(ptrs);
        arena_free(a);
        return todo_err_set(err, TODO_EINTERNAL, "out of memory");
    }
    todo__v1__dead_letter__pack(&dl, buf);
    free(entries);
    free(ptrs);
    arena_free(a);

    rd_kafka_headers_t *h = rd_kafka_headers_new(5);
    rd_kafka_header_add(h, "dlq_reason", -1, reason, -1);
    rd_kafka_header_add(h, "dlq_reason_code", -1, dl.reason_code, -1);
    rd_kafka_header_add(h, "dlq_consumer_group", -1, group, -1);
    rd_kafka_header_add(h, "dlq_original_topic", -1, dl.original_topic, -1);
    rd_kafka_header_add(h, "content-type", -1, "application/protobuf", -1);
    rd_kafka_resp_err_t e = rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(DLQ_TOPIC), RD_KAFKA_V_KEY(id, strlen(id)),
                                              RD_KAFKA_V_VALUE(buf, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE),
                                              RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(msg_opaque), RD_KAFKA_V_END);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_headers_destroy(h);
        free(buf);
        return todo_err_set(err, TODO_EUNAVAIL, "dead-letter produce: %s", rd_kafka_err2str(e));
    }
    return TODO_OK;
}
