/* audit: see audit.h. */
#include "audit.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdbool.h>
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
    pthread_mutex_t lock;      /* the refused-call budget below */
    double tokens;             /* records of refused calls that may still be written */
    int64_t refill_us;         /* when tokens was last topped up */
    long suppressed;           /* refused calls not recorded since the last report */
    int64_t reported_us;
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
    pthread_mutex_init(&log->lock, NULL);
    log->tokens = AUDIT_REFUSED_PER_S * 5;
    log->refill_us = log->reported_us = event_now_us();
    /* A command never waits for its record: the records of AUDIT_LINGER_MS
     * go to the broker in one request, not one request per command. */
    char ms[16];
    snprintf(ms, sizeof ms, "%d", AUDIT_LINGER_MS);
    const char *linger[] = {"linger.ms", ms, NULL};
    log->rk = kafkax_producer_new_conf(brokers, "todo-audit", on_delivery, NULL, linger, err);
    if (log->rk == NULL) {
        pthread_mutex_destroy(&log->lock);
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
    pthread_mutex_destroy(&log->lock);
    free(log);
}

/* Copies at most max bytes of s (NULL: "") into out (max + 1 bytes), cut
 * on a UTF-8 boundary, with anything that is not printable UTF-8 (control
 * characters, invalid sequences) replaced by '?'. */
static char *clip(const char *s, char *out, size_t max)
{
    size_t o = 0;
    for (size_t i = 0; s != NULL && s[i] != '\0' && o < max;) {
        unsigned char c = (unsigned char)s[i];
        size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        size_t avail = strnlen(s + i, n ? n : 1);
        if (n == 0 || avail < n || text_utf8_chars(s + i, n) != 1 || c < 0x20 || c == 0x7f) {
            out[o++] = '?';
            i++;
            continue;
        }
        if (o + n > max) break;
        memcpy(out + o, s + i, n);
        o += n;
        i += n;
    }
    out[o] = '\0';
    return out;
}

uint8_t *audit_encode(const char *source, const audit_entry *e, int64_t now_us, size_t *len)
{
    Todo__V1__AuditRecord r = TODO__V1__AUDIT_RECORD__INIT;
    Google__Protobuf__Timestamp ts = {.base = PROTOBUF_C_MESSAGE_INIT(&google__protobuf__timestamp__descriptor),
                                      .seconds = now_us / 1000000, .nanos = (int32_t)(now_us % 1000000) * 1000};
    char id[37];
    if (text_uuid_v4(id) != 0) snprintf(id, sizeof id, "00000000-0000-4000-8000-000000000000");
    char user[AUDIT_FIELD_MAX + 1], rpc[AUDIT_FIELD_MAX + 1], target[AUDIT_FIELD_MAX + 1], outcome[AUDIT_FIELD_MAX + 1],
        message[2 * AUDIT_FIELD_MAX + 1], correlation[AUDIT_FIELD_MAX + 1], request[AUDIT_FIELD_MAX + 1];
    r.audit_id = id;
    r.time = &ts;
    r.user_id = clip(e->user_id, user, AUDIT_FIELD_MAX);
    r.rpc = clip(e->rpc, rpc, AUDIT_FIELD_MAX);
    r.target_id = clip(e->target_id, target, AUDIT_FIELD_MAX);
    r.outcome = clip(e->outcome, outcome, AUDIT_FIELD_MAX);
    r.message = clip(e->message, message, 2 * AUDIT_FIELD_MAX);
    r.correlation_id = clip(e->correlation_id, correlation, AUDIT_FIELD_MAX);
    r.request_id = clip(e->request_id, request, AUDIT_FIELD_MAX);
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
    char key[AUDIT_FIELD_MAX + 1], correlation[AUDIT_FIELD_MAX + 1];
    clip(e->user_id != NULL && e->user_id[0] ? e->user_id : "anonymous", key, AUDIT_FIELD_MAX);
    if (buf == NULL) return;
    rd_kafka_headers_t *h = rd_kafka_headers_new(3);
    rd_kafka_header_add(h, "ce_type", -1, "audit.command", -1);
    rd_kafka_header_add(h, "content-type", -1, "application/protobuf", -1);
    if (e->correlation_id != NULL)
        rd_kafka_header_add(h, "correlation_id", -1, clip(e->correlation_id, correlation, AUDIT_FIELD_MAX), -1);
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

void audit_emit_refused(audit_log *log, const audit_entry *e)
{
    int64_t now = event_now_us();
    long report = 0;
    pthread_mutex_lock(&log->lock);
    log->tokens += (double)(now - log->refill_us) * AUDIT_REFUSED_PER_S / 1e6;
    if (log->tokens > AUDIT_REFUSED_PER_S * 5) log->tokens = AUDIT_REFUSED_PER_S * 5;
    log->refill_us = now;
    bool write = log->tokens >= 1;
    if (write) log->tokens -= 1;
    else log->suppressed++;
    if (log->suppressed > 0 && now - log->reported_us >= 10 * 1000000) {
        report = log->suppressed;
        log->suppressed = 0;
        log->reported_us = now;
    }
    pthread_mutex_unlock(&log->lock);
    if (report > 0)
        log_warn("audit", "refused calls not recorded (over the audit budget)", "calls=%ld per_s=%d", report,
                 AUDIT_REFUSED_PER_S);
    if (write) audit_emit(log, e);
}
