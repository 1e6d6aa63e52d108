/* dlq: see dlq.h. */
#include "dlq.h"

#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "text.h"
#include "todo/v1/events.pb-c.h"

int dlq_send(rd_kafka_t *producer, const char *group, const rd_kafka_message_t *orig, const char *reason,
             todo_err *err)
{
    return dlq_send_tagged(producer, group, orig, reason, NULL, err);
}

int dlq_send_tagged(rd_kafka_t *producer, const char *group, const rd_kafka_message_t *orig, const char *reason,
                    void *msg_opaque, todo_err *err)
{
    Todo__V1__DeadLetter dl = TODO__V1__DEAD_LETTER__INIT;
    Todo__V1__DeadLetter__OriginalHeadersEntry *entries = NULL, **ptrs = NULL;
    rd_kafka_headers_t *oh = NULL;
    char id[37];
    int64_t now = event_now_us();

    if (text_uuid_v4(id) != 0) return todo_err_set(err, TODO_EINTERNAL, "no randomness for a dead-letter id");
    dl.dead_letter_id = id;
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
    if (rd_kafka_message_headers(orig, &oh) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        size_t n = rd_kafka_header_cnt(oh);
        entries = calloc(n + 1, sizeof *entries);
        ptrs = calloc(n + 1, sizeof *ptrs);
        if (entries == NULL || ptrs == NULL) {
            free(entries);
            free(ptrs);
            return todo_err_set(err, TODO_EINTERNAL, "out of memory");
        }
        for (size_t i = 0; i < n; i++) {
            const char *name;
            const void *v;
            size_t vlen;
            if (rd_kafka_header_get_all(oh, i, &name, &v, &vlen) != RD_KAFKA_RESP_ERR_NO_ERROR) break;
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
        return todo_err_set(err, TODO_EINTERNAL, "out of memory");
    }
    todo__v1__dead_letter__pack(&dl, buf);
    free(entries);
    free(ptrs);

    rd_kafka_headers_t *h = rd_kafka_headers_new(4);
    rd_kafka_header_add(h, "dlq_reason", -1, reason, -1);
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
