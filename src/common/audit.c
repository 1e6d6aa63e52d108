/* audit: see audit.h. */
#include "audit.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "kafkax.h"
#include "log.h"
#include "text.h"
#include "todo/v1/events.pb-c.h"

struct audit_log {
    rd_kafka_t *rk;
    char source[64];
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR)
        log_error("audit", "audit record lost", "error=\"%s\"", rd_kafka_err2str(msg->err));
}

audit_log *audit_new(const char *brokers, const char *source, todo_err *err)
{
    audit_log *log = calloc(1, sizeof *log);
    if (log == NULL) {
        todo_err_set(err, TODO_EINTERNAL, "out of memory");
        return NULL;
    }
    snprintf(log->source, sizeof log->source, "%s", source);
    log->rk = kafkax_producer_new(brokers, "todo-audit", on_delivery, NULL, err);
    if (log->rk == NULL) {
        free(log);
        return NULL;
    }
    return log;
}

void audit_free(audit_log *log, int timeout_ms)
{
    if (log == NULL) return;
    rd_kafka_flush(log->rk, timeout_ms);
    rd_kafka_destroy(log->rk);
    free(log);
}

static char *or_empty(const char *s) { return (char *)(s != NULL ? s : ""); }

uint8_t *audit_encode(const char *source, const audit_entry *e, int64_t now_us, size_t *len)
{
    Todo__V1__AuditRecord r = TODO__V1__AUDIT_RECORD__INIT;
    Google__Protobuf__Timestamp ts = {.base = PROTOBUF_C_MESSAGE_INIT(&google__protobuf__timestamp__descriptor),
                                      .seconds = now_us / 1000000, .nanos = (int32_t)(now_us % 1000000) * 1000};
    char id[37];
    if (text_uuid_v4(id) != 0) snprintf(id, sizeof id, "00000000-0000-4000-8000-000000000000");
    r.audit_id = id;
    r.time = &ts;
    r.user_id = or_empty(e->user_id);
    r.rpc = or_empty(e->rpc);
    r.target_id = or_empty(e->target_id);
    r.outcome = or_empty(e->outcome);
    r.message = or_empty(e->message);
    r.correlation_id = or_empty(e->correlation_id);
    r.request_id = or_empty(e->request_id);
    r.source = (char *)source;
    r.version = e->version;
    *len = todo__v1__audit_record__get_packed_size(&r);
    uint8_t *buf = malloc(*len + 1);
    if (buf != NULL) todo__v1__audit_record__pack(&r, buf);
    return buf;
}

void audit_emit(audit_log *log, const audit_entry *e)
{
    size_t len;
    uint8_t *buf = audit_encode(log->source, e, event_now_us(), &len);
    const char *key = e->user_id != NULL && e->user_id[0] ? e->user_id : "anonymous";
    if (buf == NULL) return;
    rd_kafka_headers_t *h = rd_kafka_headers_new(3);
    rd_kafka_header_add(h, "ce_type", -1, "audit.command", -1);
    rd_kafka_header_add(h, "content-type", -1, "application/protobuf", -1);
    if (e->correlation_id != NULL) rd_kafka_header_add(h, "correlation_id", -1, e->correlation_id, -1);
    rd_kafka_resp_err_t err = rd_kafka_producev(log->rk, RD_KAFKA_V_TOPIC(AUDIT_TOPIC), RD_KAFKA_V_KEY(key, strlen(key)),
                                                RD_KAFKA_V_VALUE(buf, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE),
                                                RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_headers_destroy(h);
        free(buf);
        log_error("audit", "audit record lost", "error=\"%s\" rpc=%s", rd_kafka_err2str(err), e->rpc);
    }
    rd_kafka_poll(log->rk, 0); /* serve delivery reports */
}
