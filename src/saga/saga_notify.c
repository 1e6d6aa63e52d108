/* saga_notify: see saga_notify.h. */
#include "saga_notify.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "event.h"
#include "log.h"
#include "metrics.h"
#include "pgx.h"
#include "redisx.h"
#include "saga_store.h"
#include "text.h"
#include "trace.h"

#define REDIS_TTL_S 604800 /* a week: far longer than any re-delivery */

/* ---- channels ---- */

static saga_notify_result log_send(void *ctx, const Todo__V1__SendNotification *n, char *err, size_t cap)
{
    (void)ctx;
    (void)err;
    (void)cap;
    /* Who and what are personal: only at debug level (docs/SECURITY.md). */
    log_info("notify", "notification", "id=%s", n->notification_id);
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

static saga_notify_result webhook_send(void *ctx, const Todo__V1__SendNotification *n, char *err, size_t cap)
{
    const char *url = ctx;
    json_t *body = json_pack("{s:s, s:s, s:s, s:s, s:s}", "notification_id", n->notification_id, "recipient",
                             n->recipient, "subject", n->subject, "body", n->body, "task_id", n->task_id);
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    CURL *c = curl_easy_init();
    if (text == NULL || c == NULL) {
        free(text);
        if (c != NULL) curl_easy_cleanup(c);
        snprintf(err, cap, "out of memory");
        return SAGA_NOTIFY_RETRY;
    }
    char key[200];
    snprintf(key, sizeof key, "Idempotency-Key: %s", n->notification_id);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = curl_slist_append(h, key);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(text);
    if (rc != CURLE_OK) {
        snprintf(err, cap, "webhook: %s", curl_easy_strerror(rc));
        return SAGA_NOTIFY_RETRY;
    }
    if (status >= 200 && status < 300) return SAGA_NOTIFY_SENT;
    snprintf(err, cap, "webhook answered HTTP %ld", status);
    return status == 408 || status == 429 || status >= 500 ? SAGA_NOTIFY_RETRY : SAGA_NOTIFY_FAIL;
}

saga_notify_channel saga_notify_webhook_channel(const char *url)
{
    return (saga_notify_channel){.name = "webhook", .send = webhook_send, .ctx = (void *)url};
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
static int claim(saga_notify *s, const Todo__V1__SendNotification *n, char state[16], todo_err *err)
{
    const char *p[3] = {n->notification_id, n->recipient, s->channel.name};
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

/* Records the outcome and, in the same statement, its event
 * (notification.sent or notification.failed) into saga.outbox. */
static int record(saga_notify *s, const Todo__V1__SendNotification *n, bool sent, int attempts, const char *error,
                  todo_err *err)
{
    arena *a = arena_new();
    char event_id[37], count[16];
    const char *hex = NULL;
    text_uuid_v4(event_id);
    Todo__V1__NotificationSent ok = TODO__V1__NOTIFICATION_SENT__INIT;
    Todo__V1__NotificationFailed ko = TODO__V1__NOTIFICATION_FAILED__INIT;
    ok.notification_id = ko.notification_id = n->notification_id;
    ok.channel = ko.channel = (char *)s->channel.name;
    ok.sent_at = event_timestamp(a, event_now_us());
    ko.error = (char *)error;
    ko.attempts = attempts;
    const char *type = sent ? "notification.sent" : "notification.failed";
    char tp[56] = "";
    if (trace_current() != NULL) trace_format(trace_current(), tp);
    event_meta m = {.event_id = event_id, .event_type = type, .source = "todo-saga", .time_us = event_now_us(),
                    .user_id = n->recipient, .aggregate_type = "notification", .aggregate_id = n->notification_id,
                    .aggregate_version = 2, .schema_version = 1, .causation_id = n->notification_id,
                    .correlation_id = s->correlation_id, .traceparent = tp};
    int rc = saga_outbox_encode(a, &m, sent ? &ok.base : &ko.base, &hex, err);
    snprintf(count, sizeof count, "%d", attempts);
    if (rc == TODO_OK)
        rc = pgx_cmd(s->pg,
                     "with upd as (update saga.notifications set status = $3, attempts = $4::int, last_error = $5,"
                     " updated_at = now(), sent_at = case when $3 = 'sent' then now() end"
                     " where notification_id = $1 and recipient = $2 returning 1)"
                     " insert into saga.outbox (user_id, event_type, aggregate_id, envelope)"
                     " select $2, $6, $1, decode($7, 'hex') from upd",
                     7, (const char *const[]){n->notification_id, n->recipient, sent ? "sent" : "failed", count,
                                              sent ? "" : error, type, hex},
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
static void count_by(const saga_notify *s, const char *outcome, double n)
{
    metric_add(metric_with(metric_counter("todo_notifications_total",
                                          "Notifications handled, by channel and outcome (sent, failed, duplicate: "
                                          "delivered before).", "channel,outcome"),
                           s->channel.name, outcome),
               n);
}

static void count(const saga_notify *s, const char *outcome)
{
    count_by(s, outcome, 1);
}

void saga_notify_declare_metrics(const saga_notify *s)
{
    count_by(s, "sent", 0);
    count_by(s, "failed", 0);
    count_by(s, "duplicate", 0);
}

int saga_notify_handle(saga_notify *s, const Todo__V1__SendNotification *n, const char **outcome, todo_err *err)
{
    char state[16], why[300] = "";
    int rc;
    if (outcome != NULL) *outcome = "duplicate";
    if (redis_sent(s, n)) {
        count(s, "duplicate");
        return TODO_OK;
    }
    if ((rc = claim(s, n, state, err)) != 0) return rc;
    if (strcmp(state, "sent") == 0 || strcmp(state, "failed") == 0) {
        if (strcmp(state, "sent") == 0) redis_mark(s, n);
        count(s, "duplicate");
        return TODO_OK;
    }
    /* "new", or "sending" left by a crash: deliver. */
    saga_notify_result res = SAGA_NOTIFY_RETRY;
    int attempt = 0, wait = s->backoff_ms;
    while (attempt < s->attempts) {
        attempt++;
        why[0] = '\0';
        res = s->channel.send(s->channel.ctx, n, why, sizeof why);
        if (res != SAGA_NOTIFY_RETRY) break;
        log_warn("notify", "delivery failed; retrying", "id=%s channel=%s attempt=%d error=\"%s\"", n->notification_id,
                 s->channel.name, attempt, why);
        if (attempt < s->attempts) pause_ms(s, wait);
        wait *= 2;
    }
    bool sent = res == SAGA_NOTIFY_SENT;
    if ((rc = record(s, n, sent, attempt, why, err)) != 0) return rc;
    if (sent) redis_mark(s, n);
    else log_error("notify", "notification failed", "id=%s channel=%s attempts=%d error=\"%s\"", n->notification_id,
                   s->channel.name, attempt, why);
    if (outcome != NULL) *outcome = sent ? "sent" : "failed";
    count(s, sent ? "sent" : "failed");
    return TODO_OK;
}
