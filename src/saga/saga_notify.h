/*
 * saga_notify: notification dispatch in todo-saga.
 *
 * Consumes notifications.commands.v1 (group notification-dispatch-v1; a new
 * group starts at the end of the topic) and delivers every
 * `notification.requested` (a todo.v1.SendNotification) through a channel:
 *
 *   log       one log line (the default when no webhook is configured)
 *   webhook   an HTTP POST of a JSON body to TODO_NOTIFY_WEBHOOK_URL (libcurl),
 *             with an Idempotency-Key header (the notification id); 2xx is
 *             delivered, 408/429/5xx and transport errors are retried, any
 *             other status fails the notification
 *
 * Channels are a small interface (saga_notify_channel), so email or push
 * are one more implementation.
 *
 * Never twice: a notification is identified by (notification id,
 * recipient). PostgreSQL (saga.notifications) is the truth: a row is
 * claimed before delivery and marked sent after; a notification found sent
 * is skipped. Redis is the fast path: a "sent" mark there skips it without a
 * database round trip (with Redis down, PostgreSQL alone decides). A crash
 * between a delivery and its "sent" mark can repeat that one delivery once:
 * the Idempotency-Key header lets the receiver drop it.
 *
 * Transient failures are retried with backoff (TODO_NOTIFY_ATTEMPTS
 * attempts from 200 ms, doubling); the outcome is recorded together with
 * its event, notification.sent or notification.failed (with the error and
 * the number of attempts), in saga.outbox, published to
 * notifications.commands.v1.
 */
#ifndef TODO_SAGA_NOTIFY_H
#define TODO_SAGA_NOTIFY_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "config.h"
#include "todo/v1/events.pb-c.h"
#include "todo_err.h"

typedef enum saga_notify_result {
    SAGA_NOTIFY_SENT = 0,
    SAGA_NOTIFY_RETRY = 1,   /* transient: try again */
    SAGA_NOTIFY_FAIL = 2     /* permanent */
} saga_notify_result;

typedef struct saga_notify_channel {
    const char *name;        /* "log", "webhook" */
    saga_notify_result (*send)(void *ctx, const Todo__V1__SendNotification *n, char *err, size_t cap);
    void *ctx;
} saga_notify_channel;

/* The log channel. */
saga_notify_channel saga_notify_log_channel(void);

/* The webhook channel posting to url (borrowed; must outlive the channel). */
saga_notify_channel saga_notify_webhook_channel(const char *url);

typedef struct saga_notify {
    const todo_config *cfg;
    PGconn *pg;                      /* the saga role (saga.notifications) */
    struct redisx *redis;            /* NULL: no fast path (borrowed) */
    saga_notify_channel channel;
    const char *correlation_id;      /* the request's, for the outcome event (may be NULL) */
    int attempts;                    /* per notification */
    int backoff_ms;
    void (*sleep_ms)(int ms);        /* NULL: nanosleep */
} saga_notify;

/* Makes the notification counters of s's channel exist (at 0). */
void saga_notify_declare_metrics(const saga_notify *s);

/* Handles one notification request: delivers it unless it was delivered
 * before. *outcome (may be NULL) gets "sent", "failed" or "duplicate".
 * Returns TODO_OK, or a database status (retry the record later). */
int saga_notify_handle(saga_notify *s, const Todo__V1__SendNotification *n, const char **outcome, todo_err *err);

#endif
