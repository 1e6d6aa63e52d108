/* saga_notify: see saga_notify.h. */
#include "saga_notify.h"
#include "seal.h"

#include <openssl/crypto.h>
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "arena.h"
#include "todo/v1/command.pb-c.h"
#include "grpcx_status.h"
#include "grpcx_client.h"
#include "auth.h"
#include "event.h"
#include "keystore.h"
#include "log.h"
#include "metrics.h"
#include "pgx.h"
#include "redisx.h"
#include "saga_store.h"
#include "text.h"
#include "trace.h"

#define REDIS_TTL_S 604800 /* a week: far longer than any re-delivery */

/* ---- channels ---- */

static saga_notify_result log_send(void *ctx, const Todo__V1__SendNotification *n, const char *address,
                                   saga_notify_outcome *out)
{
    (void)ctx;
    (void)address;
    (void)out;
    /* Who and what are personal: only at debug level (docs/SECURITY.md). */
    log_info("notify", "notification", "id=%s channel=%s", n->notification_id, n->channel);
    log_debug("notify", "notification content", "id=%s recipient=%s subject=\"%s\" body=\"%s\"", n->notification_id,
              n->recipient, n->subject, n->body);
    return SAGA_NOTIFY_SENT;
}

saga_notify_channel saga_notify_log_channel(void)
{
    return (saga_notify_channel){.name = "log", .send = log_send, .ctx = NULL};
}

static size_t discard(char *p, size_t size, size_t n, void *ctx)
{
    (void)p;
    (void)ctx;
    return size * n;
}

/* A transport failure's code (libcurl's error). */
static const char *curl_code(CURLcode rc)
{
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT: return "timeout";
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT: return "unreachable";
    case CURLE_OUT_OF_MEMORY: return "internal";
    default: return "server_error";
    }
}

/* The value of an answer header line "name: value" when it is name
 * (case-insensitive), trimmed, into out (cap bytes). */
static void header_value(const char *line, size_t len, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':') return;
    const char *v = line + nl + 1, *e = line + len;
    while (v < e && (*v == ' ' || *v == '\t')) v++;
    while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ')) e--;
    size_t k = 0;
    for (; v < e && k + 1 < cap; v++)
        if (*v > 0x20 && *v < 0x7f) out[k++] = *v; /* printable, one token */
    out[k] = '\0';
}

/* CURLOPT_HEADERFUNCTION of a webhook: the receiver's message id. */
static size_t webhook_header(char *p, size_t size, size_t n, void *ctx)
{
    saga_notify_outcome *out = ctx;
    char id[256] = "";
    header_value(p, size * n, "X-Message-Id", id, sizeof id);
    if (id[0] != '\0') {
        snprintf(out->message_id, sizeof out->message_id, "%s", id);
        out->message_id_preferred = true; /* a Message-Id after it does not replace it */
        return size * n;
    }
    header_value(p, size * n, "Message-Id", id, sizeof id);
    if (id[0] != '\0' && !out->message_id_preferred) snprintf(out->message_id, sizeof out->message_id, "%s", id);
    return size * n;
}

void saga_notify_signature(const char *secret, long long ts, const char *body, char out[96])
{
    static const char hex[] = "0123456789abcdef";
    char prefix[32];
    int np = snprintf(prefix, sizeof prefix, "%lld.", ts);
    size_t nb = strlen(body);
    unsigned char *msg = malloc((size_t)np + nb), mac[32];
    size_t len = 0;
    int at = snprintf(out, 96, "t=%lld,v1=", ts);
    if (msg == NULL) {
        out[0] = '\0';
        return;
    }
    memcpy(msg, prefix, (size_t)np);
    memcpy(msg + np, body, nb);
    if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, secret, strlen(secret), msg, (size_t)np + nb, mac, sizeof mac,
                  &len) == NULL || len != 32) {
        free(msg);
        out[0] = '\0';
        return;
    }
    free(msg);
    for (size_t i = 0; i < 32 && at + 2 < 96; i++) {
        out[at++] = hex[mac[i] >> 4];
        out[at++] = hex[mac[i] & 15];
    }
    out[at] = '\0';
}

static saga_notify_result webhook_send(void *ctx, const Todo__V1__SendNotification *n, const char *url,
                                       saga_notify_outcome *out)
{
    const char *secret = ctx;
    json_t *body = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "notification_id", n->notification_id, "recipient",
                             n->recipient, "channel", n->channel, "subject", n->subject, "body", n->body, "task_id",
                             n->task_id);
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    CURL *c = curl_easy_init();
    if (text == NULL || c == NULL) {
        free(text);
        if (c != NULL) curl_easy_cleanup(c);
        snprintf(out->error, sizeof out->error, "out of memory");
        out->code = "internal";
        return SAGA_NOTIFY_RETRY;
    }
    char key[200], sig[96 + 20];
    snprintf(key, sizeof key, "Idempotency-Key: %s", n->notification_id);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = curl_slist_append(h, key);
    if (secret != NULL && secret[0] != '\0') { /* signed at each attempt: a fresh timestamp */
        char v[96];
        saga_notify_signature(secret, (long long)time(NULL), text, v);
        snprintf(sig, sizeof sig, "Todo-Signature: %s", v);
        h = curl_slist_append(h, sig);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, webhook_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(text);
    if (rc != CURLE_OK) {
        snprintf(out->error, sizeof out->error, "webhook: %s", curl_easy_strerror(rc));
        out->code = curl_code(rc);
        return SAGA_NOTIFY_RETRY;
    }
    if (status >= 200 && status < 300) {
        if (out->message_id[0] == '\0') snprintf(out->message_id, sizeof out->message_id, "%s", n->notification_id);
        return SAGA_NOTIFY_SENT;
    }
    snprintf(out->error, sizeof out->error, "webhook answered HTTP %ld", status);
    out->code = status == 429 ? "rate_limited" : status == 408 ? "timeout" : status >= 500 ? "server_error" : "rejected";
    return status == 408 || status == 429 || status >= 500 ? SAGA_NOTIFY_RETRY : SAGA_NOTIFY_FAIL;
}

saga_notify_channel saga_notify_webhook_channel(const char *secret)
{
    return (saga_notify_channel){.name = "webhook", .send = webhook_send, .ctx = (void *)secret};
}

/* Appends text to a malloc'ed buffer; false when out of memory. */
typedef struct buf {
    char *p;
    size_t len, cap;
    bool oom;
} buf;

static void put(buf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* An address for a header: only its printable non-space ASCII, no angle
 * brackets (validated when set; this keeps a header one line regardless). */
static void put_address(buf *b, const char *a)
{
    put(b, "<", 1);
    for (const char *c = a; *c != '\0'; c++)
        if (*c > 0x20 && *c < 0x7f && *c != '<' && *c != '>') put(b, c, 1);
    put(b, ">", 1);
}

void saga_notify_message_id(const Todo__V1__SendNotification *n, char *out, size_t cap)
{
    size_t k = 0;
    for (const char *c = n->notification_id; *c != '\0' && k + 6 < cap; c++)
        if ((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || *c == '-') out[k++] = *c;
    snprintf(out + k, cap - k, "@todo");
}

char *saga_notify_mail(const char *from, const char *to, const Todo__V1__SendNotification *n, long long now)
{
    buf b = {0};
    char line[160];
    time_t t = (time_t)now;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(line, sizeof line, "Date: %a, %d %b %Y %H:%M:%S +0000\r\n", &tm);
    puts_(&b, line);
    puts_(&b, "From: ");
    put_address(&b, from);
    puts_(&b, "\r\nTo: ");
    put_address(&b, to);
    char mid[256];
    saga_notify_message_id(n, mid, sizeof mid);
    puts_(&b, "\r\nMessage-ID: <");
    puts_(&b, mid);
    puts_(&b, ">\r\nSubject: =?UTF-8?B?");
    /* The subject as one base64 encoded word: any bytes, no line breaks. */
    size_t sl = strlen(n->subject);
    char *enc = malloc(4 * ((sl + 2) / 3) + 1);
    if (enc == NULL) b.oom = true;
    else {
        EVP_EncodeBlock((unsigned char *)enc, (const unsigned char *)n->subject, (int)sl);
        puts_(&b, enc);
        free(enc);
    }
    puts_(&b, "?=\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n"
              "Content-Transfer-Encoding: 8bit\r\n\r\n");
    /* The body with CRLF line ends (a lone CR or LF becomes CRLF); libcurl
     * escapes lines that start with a dot. */
    for (const char *c = n->body; *c != '\0'; c++) {
        if (*c == '\r' || *c == '\n') {
            puts_(&b, "\r\n");
            if (*c == '\r' && c[1] == '\n') c++;
        } else {
            put(&b, c, 1);
        }
    }
    puts_(&b, "\r\n");
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

typedef struct upload {
    const char *p;
    size_t left;
    const saga_smtp *smtp;
    bool ended;
    char last_ok[256]; /* the server's last 250 reply after the mail's end */
} upload;

/* CURLOPT_DEBUGFUNCTION of a mail: keeps the server's 250 reply to the
 * mail's final "." (its queue id, when it names one). */
static int smtp_reply(CURL *c, curl_infotype type, char *data, size_t len, void *ctx)
{
    (void)c;
    upload *u = ctx;
    if (type != CURLINFO_HEADER_IN || !u->ended || len < 4 || strncmp(data, "250", 3) != 0) return 0;
    size_t k = len < sizeof u->last_ok - 1 ? len : sizeof u->last_ok - 1;
    memcpy(u->last_ok, data, k);
    while (k > 0 && (u->last_ok[k - 1] == '\r' || u->last_ok[k - 1] == '\n')) k--;
    u->last_ok[k] = '\0';
    return 0;
}

/* The queue id in a 250 reply ("250 2.0.0 Ok: queued as 4F3C2A1"), or NULL. */
static const char *queue_id(const char *reply, char *out, size_t cap)
{
    const char *q = strstr(reply, "queued as ");
    if (q == NULL) return NULL;
    q += 10;
    size_t k = 0;
    for (; *q > 0x20 && *q < 0x7f && k + 1 < cap; q++) out[k++] = *q;
    out[k] = '\0';
    return k > 0 ? out : NULL;
}

static size_t read_mail(char *dst, size_t size, size_t n, void *ctx)
{
    upload *u = ctx;
    if (u->left == 0 && !u->ended) { /* the commit point: next comes the final "." */
        u->ended = true;
        if (u->smtp->on_commit != NULL && !u->smtp->on_commit(u->smtp->commit_ctx)) return CURL_READFUNC_ABORT;
    }
    size_t k = size * n < u->left ? size * n : u->left;
    memcpy(dst, u->p, k);
    u->p += k;
    u->left -= k;
    return k;
}

static saga_notify_result email_send(void *ctx, const Todo__V1__SendNotification *n, const char *to,
                                     saga_notify_outcome *out)
{
    const saga_smtp *smtp = ctx;
    char *mail = saga_notify_mail(smtp->from, to, n, (long long)time(NULL));
    CURL *c = curl_easy_init();
    if (mail == NULL || c == NULL) {
        free(mail);
        if (c != NULL) curl_easy_cleanup(c);
        snprintf(out->error, sizeof out->error, "out of memory");
        out->code = "internal";
        return SAGA_NOTIFY_RETRY;
    }
    char from[300], rcpt[300];
    snprintf(from, sizeof from, "<%s>", smtp->from);
    snprintf(rcpt, sizeof rcpt, "<%s>", to);
    struct curl_slist *rcpts = curl_slist_append(NULL, rcpt);
    upload u = {mail, strlen(mail), smtp, false, ""};
    curl_easy_setopt(c, CURLOPT_URL, smtp->url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpts);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, read_mail);
    curl_easy_setopt(c, CURLOPT_READDATA, &u);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (smtp->starttls) curl_easy_setopt(c, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL);
    if (smtp->ca_file != NULL && smtp->ca_file[0] != '\0') curl_easy_setopt(c, CURLOPT_CAINFO, smtp->ca_file);
    curl_easy_setopt(c, CURLOPT_DEBUGFUNCTION, smtp_reply);
    curl_easy_setopt(c, CURLOPT_DEBUGDATA, &u);
    curl_easy_setopt(c, CURLOPT_VERBOSE, 1L); /* the replies reach smtp_reply only (nothing is printed) */
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(rcpts);
    curl_easy_cleanup(c);
    free(mail);
    if (rc == CURLE_OK) {
        char id[200];
        if (queue_id(u.last_ok, id, sizeof id) != NULL) snprintf(out->message_id, sizeof out->message_id, "%s", id);
        else saga_notify_message_id(n, out->message_id, sizeof out->message_id);
        return SAGA_NOTIFY_SENT;
    }
    snprintf(out->error, sizeof out->error, "smtp: %s (reply %ld)", curl_easy_strerror(rc), status);
    /* 5xx replies are permanent (the address refused); the rest transient. */
    out->code = status >= 500 && status < 600 ? "rejected" : status >= 400 ? "server_error" : curl_code(rc);
    return status >= 500 && status < 600 ? SAGA_NOTIFY_FAIL : SAGA_NOTIFY_RETRY;
}

static saga_notify_result in_app_send(void *ctx, const Todo__V1__SendNotification *n, const char *address,
                                      saga_notify_outcome *out)
{
    const saga_inbox *inbox = ctx;
    (void)address;
    todo_err e;
    char *tok = auth_issue_service(inbox->service_secret, "todo-saga", AUTH_SCOPE_INTERNAL, n->recipient, 600,
                                   (long)time(NULL), &e);
    if (tok == NULL) {
        snprintf(out->error, sizeof out->error, "in_app: cannot issue a token: %.200s", e.msg);
        out->code = "internal";
        return SAGA_NOTIFY_FAIL;
    }
    char auth[1200], rid[256];
    snprintf(auth, sizeof auth, "Bearer %s", tok);
    free(tok);
    snprintf(rid, sizeof rid, "inapp:%.200s", n->notification_id);
    Todo__V1__DeliverInAppNotificationRequest rq = TODO__V1__DELIVER_IN_APP_NOTIFICATION_REQUEST__INIT;
    rq.request_id = rid;
    rq.notification_id = n->notification_id;
    rq.subject = n->subject;
    rq.body = n->body;
    rq.task_id = n->task_id;
    grpcx_result res;
    ProtobufCMessage *resp = NULL;
    grpc_status_code code = grpcx_unary(inbox->command, "/todo.v1.TaskCommandService/DeliverInAppNotification",
                                        &rq.base, &todo__v1__command_reply__descriptor, auth, 10000, &resp, &res);
    if (code == GRPC_STATUS_OK) { /* in the inbox: the user has it */
        snprintf(out->message_id, sizeof out->message_id, "%s", ((Todo__V1__CommandReply *)resp)->id);
        out->delivered = true;
    }
    if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
    if (code == GRPC_STATUS_OK) return SAGA_NOTIFY_SENT;
    snprintf(out->error, sizeof out->error, "in_app: DeliverInAppNotification: %s (%.200s)", grpcx_code_name(code),
             res.message);
    bool again = code == GRPC_STATUS_UNAVAILABLE || code == GRPC_STATUS_DEADLINE_EXCEEDED ||
                 code == GRPC_STATUS_INTERNAL || code == GRPC_STATUS_ABORTED || code == GRPC_STATUS_UNKNOWN ||
                 code == GRPC_STATUS_RESOURCE_EXHAUSTED;
    out->code = code == GRPC_STATUS_DEADLINE_EXCEEDED ? "timeout"
                : code == GRPC_STATUS_UNAVAILABLE     ? "unreachable"
                : again                               ? "server_error"
                                                      : "rejected";
    return again ? SAGA_NOTIFY_RETRY : SAGA_NOTIFY_FAIL;
}

saga_notify_channel saga_notify_in_app_channel(const saga_inbox *inbox)
{
    return (saga_notify_channel){.name = "in_app", .send = in_app_send, .ctx = (void *)inbox};
}

saga_notify_channel saga_notify_email_channel(saga_smtp *smtp)
{
    return (saga_notify_channel){.name = "email", .send = email_send, .ctx = (void *)smtp};
}

/* ---- idempotency ---- */

static void redis_key(char *out, size_t cap, const Todo__V1__SendNotification *n)
{
    snprintf(out, cap, "notified:%s:%s", n->notification_id, n->recipient);
}

/* True when Redis says it was sent. */
static bool redis_sent(saga_notify *s, const Todo__V1__SendNotification *n)
{
    redisContext *rc = s->redis != NULL ? redisx_conn(s->redis) : NULL;
    if (rc == NULL) return false;
    char key[300];
    redis_key(key, sizeof key, n);
    redisReply *r = redisCommand(rc, "GET %s", key);
    if (r == NULL) {
        redisx_drop(s->redis, rc->errstr);
        return false;
    }
    bool sent = r->type == REDIS_REPLY_STRING;
    freeReplyObject(r);
    return sent;
}

static void redis_mark(saga_notify *s, const Todo__V1__SendNotification *n)
{
    redisContext *rc = s->redis != NULL ? redisx_conn(s->redis) : NULL;
    if (rc == NULL) return;
    char key[300];
    redis_key(key, sizeof key, n);
    redisReply *r = redisCommand(rc, "SET %s 1 EX %d", key, REDIS_TTL_S);
    if (r == NULL) redisx_drop(s->redis, rc->errstr);
    else freeReplyObject(r);
}

/* Claims the notification in PostgreSQL: *state gets "new" (ours to
 * deliver), or the recorded status ("sent", "failed", "sending" after a
 * crash: delivered again). */
static int claim(saga_notify *s, const saga_notify_channel *ch, const Todo__V1__SendNotification *n, char state[16],
                 todo_err *err)
{
    const char *p[3] = {n->notification_id, n->recipient, ch->name};
    PGresult *r = pgx_exec(s->pg,
                           "with ins as (insert into saga.notifications (notification_id, recipient, channel, status)"
                           " values ($1, $2, $3, 'sending') on conflict do nothing returning 1)"
                           " select case when exists (select 1 from ins) then 'new' else"
                           " (select status from saga.notifications where notification_id = $1 and recipient = $2) end",
                           3, p, err);
    if (r == NULL) return err->code;
    snprintf(state, 16, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return TODO_OK;
}

/* The envelope (hex, in a) of a notification's event type at version. */
static int notification_event(saga_notify *s, arena *a, const Todo__V1__SendNotification *n, const char *type,
                              int64_t version, const ProtobufCMessage *payload, const char **hex, todo_err *err)
{
    char event_id[37], tp[56] = "";
    text_uuid_v4(event_id);
    if (trace_current() != NULL) trace_format(trace_current(), tp);
    event_meta m = {.event_id = event_id, .event_type = type, .source = "todo-saga", .time_us = event_now_us(),
                    .user_id = n->recipient, .aggregate_type = "notification", .aggregate_id = n->notification_id,
                    .aggregate_version = version, .schema_version = 1, .causation_id = n->notification_id,
                    .correlation_id = s->correlation_id, .traceparent = tp};
    return saga_outbox_encode(a, &m, payload, hex, err);
}

/* A failed attempt that will be tried again: its notification.failed
 * (will_retry) into saga.outbox. The notification's events are numbered:
 * 1 requested, then 1 + attempt. */
static int record_attempt(saga_notify *s, const saga_notify_channel *ch, const Todo__V1__SendNotification *n,
                          int attempt, const saga_notify_outcome *o, todo_err *err)
{
    arena *a = arena_new();
    const char *hex = NULL;
    Todo__V1__NotificationFailed ko = TODO__V1__NOTIFICATION_FAILED__INIT;
    ko.notification_id = n->notification_id;
    ko.channel = (char *)ch->name;
    ko.error = (char *)o->error;
    ko.attempts = attempt;
    ko.error_code = (char *)(o->code != NULL ? o->code : "server_error");
    ko.will_retry = true;
    int rc = a == NULL ? todo_err_set(err, TODO_EINTERNAL, "out of memory")
                       : notification_event(s, a, n, "notification.failed", 1 + attempt, &ko.base, &hex, err);
    if (rc == TODO_OK)
        rc = pgx_cmd(s->pg,
                     "insert into saga.outbox (user_id, event_type, aggregate_id, envelope)"
                     " values ($1, 'notification.failed', $2, decode($3, 'hex'))",
                     3, (const char *const[]){n->recipient, n->notification_id, hex}, err);
    arena_free(a);
    return rc;
}

/* Records the outcome and, in the same statement, its events into
 * saga.outbox: notification.sent (with the provider's message id, and
 * notification.delivered after it when the channel confirmed) or
 * notification.failed (its code; not retried). */
static int record(saga_notify *s, const saga_notify_channel *ch, const Todo__V1__SendNotification *n, bool sent,
                  int attempts, const saga_notify_outcome *o, todo_err *err)
{
    arena *a = arena_new();
    char count[16];
    const char *hex = NULL, *hex_delivered = "";
    if (a == NULL) return todo_err_set(err, TODO_EINTERNAL, "out of memory");
    Todo__V1__NotificationSent ok = TODO__V1__NOTIFICATION_SENT__INIT;
    Todo__V1__NotificationFailed ko = TODO__V1__NOTIFICATION_FAILED__INIT;
    Todo__V1__NotificationDelivered dv = TODO__V1__NOTIFICATION_DELIVERED__INIT;
    ok.notification_id = ko.notification_id = dv.notification_id = n->notification_id;
    ok.channel = ko.channel = dv.channel = (char *)ch->name;
    ok.sent_at = dv.delivered_at = event_timestamp(a, event_now_us());
    ok.provider_message_id = dv.provider_message_id = (char *)o->message_id;
    ok.attempts = ko.attempts = attempts;
    ko.error = (char *)o->error;
    ko.error_code = (char *)(o->code != NULL ? o->code : "server_error");
    const char *type = sent ? "notification.sent" : "notification.failed";
    int64_t version = attempts > 0 ? 1 + attempts : 2; /* after the retried failures (1 + n each) */
    int rc = notification_event(s, a, n, type, version, sent ? &ok.base : &ko.base, &hex, err);
    if (rc == TODO_OK && sent && o->delivered)
        rc = notification_event(s, a, n, "notification.delivered", version + 1, &dv.base, &hex_delivered, err);
    snprintf(count, sizeof count, "%d", attempts);
    if (rc == TODO_OK)
        rc = pgx_cmd(s->pg,
                     "with upd as (update saga.notifications set status = $3, attempts = $4::int, last_error = $5,"
                     " updated_at = now(), sent_at = case when $3 = 'sent' then now() end"
                     " where notification_id = $1 and recipient = $2 returning 1),"
                     " outcome as (insert into saga.outbox (user_id, event_type, aggregate_id, envelope)"
                     " select $2, $6, $1, decode($7, 'hex') from upd returning 1)"
                     " insert into saga.outbox (user_id, event_type, aggregate_id, envelope)"
                     " select $2, 'notification.delivered', $1, decode($8, 'hex') from upd"
                     " where $8 <> '' and exists (select 1 from outcome)",
                     8, (const char *const[]){n->notification_id, n->recipient, sent ? "sent" : "failed", count,
                                              sent ? "" : o->error, type, hex, hex_delivered},
                     err);
    arena_free(a);
    return rc;
}

static void pause_ms(saga_notify *s, int ms)
{
    if (s->sleep_ms != NULL) {
        s->sleep_ms(ms);
        return;
    }
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Counts a handled notification by channel and outcome (by 0: the
 * series exists from the start, so an alert on its increase sees the first
 * failure). */
static void count_by(const char *channel, const char *outcome, double n)
{
    metric_add(metric_with(metric_counter("todo_notifications_total",
                                          "Notifications handled, by channel and outcome (sent, failed, duplicate: "
                                          "delivered before, deferred: held for quiet hours).", "channel,outcome"),
                           channel, outcome),
               n);
}

static void count(const saga_notify_channel *ch, const char *outcome)
{
    count_by(ch->name, outcome, 1);
}

void saga_notify_declare_metrics(const saga_notify *s)
{
    const saga_notify_channel *chans[4] = {&s->channel, &s->webhook, &s->email, &s->in_app};
    for (int i = 0; i < 4; i++) {
        if (chans[i]->name == NULL || (i > 0 && strcmp(chans[i]->name, s->channel.name) == 0)) continue;
        count_by(chans[i]->name, "sent", 0);
        count_by(chans[i]->name, "failed", 0);
        count_by(chans[i]->name, "duplicate", 0);
        count_by(chans[i]->name, "deferred", 0);
    }
}

/* Where n goes: its channel and address (into addr), from its channel
 * field and the recipient's profile. TODO_OK with *ch NULL and why set: it
 * cannot be delivered (a permanent failure). */
int64_t saga_quiet_until(const tz_zone *z, int start_min, int end_min, int64_t now)
{
    int64_t local = now + tz_offset(z, now);
    int64_t sec = ((local % 86400) + 86400) % 86400, midnight = local - sec;
    int m = (int)(sec / 60);
    bool quiet = start_min < end_min ? m >= start_min && m < end_min : m >= start_min || m < end_min;
    if (!quiet) return 0;
    int64_t end = midnight + (int64_t)end_min * 60;
    if (end <= local) end += 86400; /* the window spans midnight: it ends tomorrow */
    return tz_to_utc(z, end);
}

/* "HH:MM" -> minutes after midnight; -1 when empty or not a time. */
static int minutes(const char *hhmm)
{
    int h, m;
    char rest;
    if (sscanf(hhmm, "%2d:%2d%c", &h, &m, &rest) != 2 || h < 0 || h > 23 || m < 0 || m > 59) return -1;
    return h * 60 + m;
}

/* When the profile's quiet hours hold n back: the instant they end (0: not
 * now). A zone the tz database lacks counts as UTC (it was checked when set). */
static int64_t quiet_until(saga_notify *s, const char *zone, const char *start, const char *end)
{
    int a = minutes(start), b = minutes(end);
    if (a < 0 || b < 0 || a == b) return 0;
    todo_err e;
    tz_zone *z = tz_load(s->cfg->zoneinfo_dir, zone[0] != '\0' ? zone : "UTC", &e);
    if (z == NULL) z = tz_load(s->cfg->zoneinfo_dir, "UTC", &e);
    if (z == NULL) return 0;
    int64_t until = saga_quiet_until(z, a, b, (int64_t)time(NULL));
    tz_free(z);
    return until;
}

static int route(saga_notify *s, const Todo__V1__SendNotification *n, const saga_notify_channel **ch, char *addr,
                 size_t cap, int64_t *defer_until, char *why, size_t why_cap, todo_err *err)
{
    *defer_until = 0;
    bool email = strcmp(n->channel, "email") == 0,
         push = strcmp(n->channel, "push") == 0 || strcmp(n->channel, "webhook") == 0;
    addr[0] = '\0';
    *ch = NULL;
    if (strcmp(n->channel, "in_app") == 0) { /* the inbox: no address, no quiet hours (nothing rings) */
        *ch = &s->in_app;
        if (s->in_app.send == NULL) snprintf(why, why_cap, "the in-app channel is not available here");
        return TODO_OK;
    }
    if (!email && !push) { /* "default", "log", "sms" (no SMS provider): the global webhook or the log */
        *ch = &s->channel;
        if (s->default_url != NULL) snprintf(addr, cap, "%s", s->default_url);
        return TODO_OK;
    }
    const char *p[1] = {n->recipient};
    PGresult *r = pgx_exec(s->pg,
                           "select email, webhook_url, time_zone, quiet_hours_start, quiet_hours_end"
                           " from write.user_profiles where user_id = $1",
                           1, p, err);
    if (r == NULL) return err->code;
    bool found = PQntuples(r) == 1;
    snprintf(addr, cap, "%s", found ? PQgetvalue(r, 0, email ? 0 : 1) : "");
    if (found) *defer_until = quiet_until(s, PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3), PQgetvalue(r, 0, 4));
    PQclear(r);
    if (email) {
        *ch = &s->email;
        if (s->email.send == NULL) snprintf(why, why_cap, "no SMTP server is configured (TODO_NOTIFY_SMTP_URL)");
        else if (addr[0] == '\0') snprintf(why, why_cap, "the user has no email address (SetNotificationPreferences)");
        else return TODO_OK;
        return TODO_OK;
    }
    *ch = &s->webhook;
    if (addr[0] == '\0' && s->default_url != NULL) snprintf(addr, cap, "%s", s->default_url);
    if (addr[0] == '\0') snprintf(why, why_cap, "the user has no webhook URL (SetNotificationPreferences)");
    return TODO_OK;
}

/* Holds n back until `until` (the end of the recipient's quiet hours):
 * kept in saga.deferred_notifications, released by saga_notify_release. A
 * request delivered again finds it there. */
static int defer(saga_notify *s, const saga_notify_channel *ch, const Todo__V1__SendNotification *n, int64_t until,
                 const char **outcome, todo_err *err)
{
    /* Kept sealed with the recipient's key, as on the topic (the releaser
     * puts it back into the outbox as it is). */
    Todo__V1__SendNotification copy = *n;
    arena *a = arena_new();
    if (a == NULL) return todo_err_set(err, TODO_EINTERNAL, "out of memory");
    seal_key key;
    keystore_state state = KEYSTORE_NONE;
    int rc = s->keys != NULL ? keystore_get(s->keys, s->pg, n->recipient, &key, &state, err) : TODO_OK;
    if (rc == TODO_OK && state == KEYSTORE_KEY)
        rc = seal_event(&copy.base, &key,
                        seal_event_aad(a, n->recipient, n->notification_id, "notification.requested"), a, err);
    OPENSSL_cleanse(&key, sizeof key);
    if (rc != TODO_OK) {
        arena_free(a);
        return rc;
    }
    size_t len = todo__v1__send_notification__get_packed_size(&copy);
    uint8_t *raw = malloc(len + 1);
    if (raw == NULL) {
        arena_free(a);
        return todo_err_set(err, TODO_EINTERNAL, "out of memory");
    }
    todo__v1__send_notification__pack(&copy, raw);
    arena_free(a);
    char at[24];
    snprintf(at, sizeof at, "%lld", (long long)until);
    const char *p[5] = {n->notification_id, n->recipient, at, (const char *)raw,
                        s->correlation_id != NULL ? s->correlation_id : ""};
    int lengths[5] = {0, 0, 0, (int)len, 0}, formats[5] = {0, 0, 0, 1, 0};
    PGresult *r = pgx_execb(s->pg,
                            "insert into saga.deferred_notifications (notification_id, recipient, not_before, request,"
                            " correlation_id) values ($1, $2, to_timestamp($3::bigint), $4, $5) on conflict do nothing",
                            5, p, lengths, formats, err);
    free(raw);
    if (r == NULL) return err->code;
    PQclear(r);
    log_info("notify", "deferred for quiet hours", "id=%s channel=%s until=%lld", n->notification_id, ch->name,
             (long long)until);
    count(ch, "deferred");
    if (outcome != NULL) *outcome = "deferred";
    return TODO_OK;
}

/* Releases one due deferred notification: in one transaction, its request
 * goes back into saga.outbox as a new notification.requested (the same
 * notification id; the dispatcher delivers it, its quiet hours being over,
 * or holds it again if they moved) and the row is deleted. Other releasers
 * skip a row being released. *done: one was released. */
static int release_one(saga_notify *s, bool *done, todo_err *err)
{
    *done = false;
    int rc = pgx_cmd(s->pg, "begin", 0, NULL, err);
    if (rc != TODO_OK) return rc;
    PGresult *r = pgx_exec(s->pg,
                           "select notification_id, recipient, request, correlation_id from saga.deferred_notifications"
                           " where not_before <= now() order by not_before limit 1 for update skip locked",
                           0, NULL, err);
    if (r == NULL) {
        pgx_cmd(s->pg, "rollback", 0, NULL, NULL);
        return err->code;
    }
    if (PQntuples(r) == 1) {
        size_t len = 0;
        unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(r, 0, 2), &len);
        Todo__V1__SendNotification *sn = raw != NULL ? todo__v1__send_notification__unpack(NULL, len, raw) : NULL;
        PQfreemem(raw);
        if (sn != NULL) {
            char event_id[37];
            text_uuid_v4(event_id);
            const char *corr = PQgetvalue(r, 0, 3);
            event_meta m = {.event_id = event_id, .event_type = "notification.requested", .source = "todo-saga",
                            .time_us = event_now_us(), .user_id = sn->recipient, .aggregate_type = "notification",
                            .aggregate_id = sn->notification_id, .aggregate_version = 1, .schema_version = 1,
                            .causation_id = sn->notification_id, .correlation_id = corr[0] != '\0' ? corr : NULL};
            rc = saga_outbox_add(s->pg, &m, &sn->base, err);
            todo__v1__send_notification__free_unpacked(sn, NULL);
        } else {
            log_error("notify", "a deferred notification does not decode; dropped", "id=%s", PQgetvalue(r, 0, 0));
        }
        if (rc == TODO_OK)
            rc = pgx_cmd(s->pg, "delete from saga.deferred_notifications where notification_id = $1 and recipient = $2",
                         2, (const char *const[]){PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1)}, err);
        *done = rc == TODO_OK;
    }
    PQclear(r);
    if (rc == TODO_OK) rc = pgx_cmd(s->pg, "commit", 0, NULL, err);
    else pgx_cmd(s->pg, "rollback", 0, NULL, NULL);
    if (rc != TODO_OK) *done = false;
    return rc;
}

int saga_notify_release(saga_notify *s, int limit, int *n, todo_err *err)
{
    *n = 0;
    for (int i = 0; i < limit; i++) {
        bool done;
        int rc = release_one(s, &done, err);
        if (rc != TODO_OK) return rc;
        if (!done) break;
        (*n)++;
    }
    return TODO_OK;
}

typedef struct commit_point {
    saga_notify *s;
    const Todo__V1__SendNotification *n;
    bool marked;
} commit_point;

/* The row turns 'committing' (see saga_notify.h). */
static bool mark_committing(void *ctx)
{
    commit_point *cp = ctx;
    todo_err e;
    PGresult *r = pgx_exec(cp->s->pg,
                           "update saga.notifications set status = 'committing', updated_at = now()"
                           " where notification_id = $1 and recipient = $2 and status = 'sending' returning 1",
                           2, (const char *const[]){cp->n->notification_id, cp->n->recipient}, &e);
    if (r == NULL) return false;
    cp->marked = PQntuples(r) == 1;
    PQclear(r);
    return cp->marked;
}

int saga_notify_handle(saga_notify *s, const Todo__V1__SendNotification *n, const char **outcome, todo_err *err)
{
    char state[16], why[300] = "", addr[2048];
    const saga_notify_channel *ch;
    int64_t defer_until;
    int rc;
    saga_notify_outcome o = {.error = ""};
    if (outcome != NULL) *outcome = "duplicate";
    if ((rc = route(s, n, &ch, addr, sizeof addr, &defer_until, why, sizeof why, err)) != 0) return rc;
    if (defer_until > 0 && why[0] == '\0') return defer(s, ch, n, defer_until, outcome, err);
    if (redis_sent(s, n)) {
        count(ch, "duplicate");
        return TODO_OK;
    }
    if ((rc = claim(s, ch, n, state, err)) != 0) return rc;
    if (strcmp(state, "sent") == 0 || strcmp(state, "failed") == 0) {
        if (strcmp(state, "sent") == 0) redis_mark(s, n);
        count(ch, "duplicate");
        return TODO_OK;
    }
    if (why[0] != '\0') { /* nowhere to deliver it: failed at once */
        snprintf(o.error, sizeof o.error, "%s", why);
        o.code = "no_address";
        if ((rc = record(s, ch, n, false, 0, &o, err)) != 0) return rc;
        log_error("notify", "notification failed", "id=%s channel=%s attempts=0 error=\"%s\"", n->notification_id,
                  ch->name, why);
        if (outcome != NULL) *outcome = "failed";
        count(ch, "failed");
        return TODO_OK;
    }
    saga_notify_result res = SAGA_NOTIFY_RETRY;
    int attempt = 0, wait = s->backoff_ms;
    commit_point cp = {s, n, false};
    if (strcmp(state, "committing") == 0) { /* a crash after the mail was handed over: never twice */
        snprintf(o.error, sizeof o.error, "outcome unknown: todo-saga stopped after handing the mail to the server "
                                          "(not sent again: a duplicate would be worse)");
        o.code = "outcome_unknown";
        res = SAGA_NOTIFY_FAIL;
        attempt = s->attempts; /* no attempt below */
    }
    if (ch == &s->email && s->email.ctx != NULL) {
        saga_smtp *smtp = s->email.ctx;
        smtp->on_commit = mark_committing;
        smtp->commit_ctx = &cp;
    }
    /* "new", or "sending" left by a crash: deliver. */
    while (attempt < s->attempts) {
        attempt++;
        o = (saga_notify_outcome){.error = ""};
        res = ch->send(ch->ctx, n, addr[0] != '\0' ? addr : NULL, &o);
        if (res == SAGA_NOTIFY_RETRY && cp.marked) { /* handed over, not confirmed: not again */
            snprintf(o.error + strlen(o.error), sizeof o.error - strlen(o.error),
                     "; the server had the whole mail: not sent again");
            o.code = "outcome_unknown";
            res = SAGA_NOTIFY_FAIL;
        }
        if (res != SAGA_NOTIFY_RETRY || attempt == s->attempts) break;
        log_warn("notify", "delivery failed; retrying", "id=%s channel=%s attempt=%d error=\"%s\"", n->notification_id,
                 ch->name, attempt, o.error);
        if ((rc = record_attempt(s, ch, n, attempt, &o, err)) != 0) break;
        pause_ms(s, wait);
        wait *= 2;
    }
    if (ch == &s->email && s->email.ctx != NULL) ((saga_smtp *)s->email.ctx)->on_commit = NULL;
    if (rc != 0) return rc;
    bool sent = res == SAGA_NOTIFY_SENT;
    if ((rc = record(s, ch, n, sent, attempt, &o, err)) != 0) return rc;
    if (sent) redis_mark(s, n);
    else log_error("notify", "notification failed", "id=%s channel=%s attempts=%d error=\"%s\"", n->notification_id,
                   ch->name, attempt, o.error);
    if (outcome != NULL) *outcome = sent ? "sent" : "failed";
    count(ch, sent ? "sent" : "failed");
    return TODO_OK;
}
