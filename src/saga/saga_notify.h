/*
 * saga_notify: notification dispatch in todo-saga.
 *
 * Consumes notifications.commands.v1 (group notification-dispatch-v1; a new
 * group starts at the end of the topic) and delivers every
 * `notification.requested` (a todo.v1.SendNotification) through a channel:
 *
 *   log       one log line (the default when no webhook is configured)
 *   webhook   an HTTP POST of a JSON body (libcurl) to the user's webhook
 *             URL (PUSH; SetNotificationPreferences) or to
 *             TODO_NOTIFY_WEBHOOK_URL, with an Idempotency-Key header (the
 *             notification id) and a Todo-Signature header (HMAC-SHA256
 *             with TODO_NOTIFY_WEBHOOK_SECRET); 2xx is delivered,
 *             408/429/5xx and transport errors are retried, any other
 *             status fails the notification
 *   email     a mail over SMTP (libcurl; TODO_NOTIFY_SMTP_URL, STARTTLS
 *             when TODO_NOTIFY_SMTP_STARTTLS=1) to the user's address
 *   in_app    an entry of the user's inbox (todo-command's
 *             DeliverInAppNotification; ListNotifications shows it)
 *
 * A notification's channel field picks one: "email", "push" (or
 * "webhook"), "in_app", anything else ("default", "sms": no SMS provider) the global
 * webhook or the log. A user without the address the channel needs, or an
 * EMAIL notification without an SMTP server, fails at once (never retried,
 * notification.failed says why).
 *
 * Channels are a small interface (saga_notify_channel).
 *
 * Never twice: a notification is identified by (notification id,
 * recipient). PostgreSQL (saga.notifications) is the truth: a row is
 * claimed before delivery and marked sent after; a notification found sent
 * is skipped. Redis is the fast path: a "sent" mark there skips it without a
 * database round trip (with Redis down, PostgreSQL alone decides). A crash
 * between a delivery and its "sent" mark can repeat that one webhook call
 * once: the Idempotency-Key header lets the receiver drop it. Email is
 * never sent twice: the row turns 'committing' just before the SMTP
 * transaction's final "." (before it the server keeps nothing, so a crash
 * there resends); one found 'committing' after a crash is not sent again
 * and is recorded failed, its outcome unknown.
 *
 * Quiet hours (the profile's, in its time zone) defer EMAIL and PUSH
 * notifications: they wait in saga.deferred_notifications until the window
 * ends, and the releaser (saga_notify_release, every second) hands them
 * back to the dispatcher then.
 *
 * Transient failures are retried with backoff (TODO_NOTIFY_ATTEMPTS
 * attempts from 200 ms, doubling); each failed attempt that is retried
 * leaves a notification.failed with will_retry set, and the outcome is
 * recorded together with its event: notification.sent (the provider's
 * message id, the attempts), then notification.delivered when the channel
 * confirms the user has it (in_app), or notification.failed (the error, a
 * stable error code, will_retry unset), in saga.outbox, published to
 * notifications.commands.v1. A notification's events are numbered: 1
 * requested, 1 + n the n-th attempt's retried failure, 1 + attempts the
 * outcome (2 when there was no attempt), delivered after it. (A crash while
 * sending numbers the attempts after the restart from 1 again.)
 */
#ifndef TODO_SAGA_NOTIFY_H
#define TODO_SAGA_NOTIFY_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "todo/v1/events.pb-c.h"
#include "todo_err.h"
#include "tz.h"

typedef enum saga_notify_result {
    SAGA_NOTIFY_SENT = 0,
    SAGA_NOTIFY_RETRY = 1,   /* transient: try again */
    SAGA_NOTIFY_FAIL = 2     /* permanent */
} saga_notify_result;

/* What an attempt to deliver came to, besides its result. */
typedef struct saga_notify_outcome {
    char error[300];         /* why it failed ("" when sent) */
    const char *code;        /* a failure's stable code (NotificationFailed.error_code) */
    char message_id[256];    /* the provider's id of what was sent ("" none; NotificationSent) */
    bool message_id_preferred; /* webhook: it came from X-Message-Id */
    bool delivered;          /* the channel confirmed the user has it (notification.delivered) */
} saga_notify_outcome;

typedef struct saga_notify_channel {
    const char *name;        /* "log", "webhook", "email" */
    /* Delivers n to address (a URL, an email address; NULL for the log). */
    saga_notify_result (*send)(void *ctx, const Todo__V1__SendNotification *n, const char *address,
                               saga_notify_outcome *out);
    void *ctx;
} saga_notify_channel;

/* The log channel. */
saga_notify_channel saga_notify_log_channel(void);

/* The webhook channel: an HTTP POST of the JSON body to the address, signed
 * with secret (borrowed; "" = unsigned) in a Todo-Signature header. */
saga_notify_channel saga_notify_webhook_channel(const char *secret);

/* The email channel over SMTP (libcurl): server url (smtp:// or smtps://),
 * sender from, STARTTLS required when starttls. Strings are borrowed. */
typedef struct saga_smtp {
    const char *url, *from;
    bool starttls;
    const char *ca_file; /* the CAs its certificate is checked against (NULL or "": the system's) */
    /* Called once the whole mail is handed over, just before the final "."
     * that makes the server keep it; false aborts the transfer (nothing is
     * kept). Set by saga_notify_handle per delivery. */
    bool (*on_commit)(void *ctx);
    void *commit_ctx;
} saga_smtp;
saga_notify_channel saga_notify_email_channel(saga_smtp *smtp);

/* The Todo-Signature header's value for body sent at unix time ts:
 * "t=<ts>,v1=<hex HMAC-SHA256(secret, "<ts>.<body>")>" (as Stripe signs its
 * webhooks: the receiver recomputes it, compares in constant time and
 * refuses old timestamps). out needs 96 bytes. */
void saga_notify_signature(const char *secret, long long ts, const char *body, char out[96]);

/* The mail of n from `from` to `to` at unix time now (RFC 5322, CRLF line
 * ends): Message-ID from the notification id (a re-sent copy is
 * recognisable), the subject as an RFC 2047 encoded word (no header
 * injection, any UTF-8), the body as UTF-8 text. malloc'ed. */
char *saga_notify_mail(const char *from, const char *to, const Todo__V1__SendNotification *n, long long now);

/* The Message-ID (without angle brackets) of n's mail: its notification id
 * (letters, digits, '-') "@todo". */
void saga_notify_message_id(const Todo__V1__SendNotification *n, char *out, size_t cap);

/* Quiet hours: when now (unix seconds) falls in the daily window from
 * start to end (minutes after local midnight in zone z; end < start spans
 * midnight), the instant the window ends; 0 otherwise. */
int64_t saga_quiet_until(const struct tz_zone *z, int start_min, int end_min, int64_t now);

/* The in-app channel: the notification becomes an entry of the user's
 * inbox through todo-command's DeliverInAppNotification (a service token
 * signed with service_secret, acting for the recipient). Borrowed. */
struct grpcx_channel;
typedef struct saga_inbox {
    struct grpcx_channel *command;
    const char *service_secret;
} saga_inbox;
saga_notify_channel saga_notify_in_app_channel(const saga_inbox *inbox);

typedef struct saga_notify {
    const todo_config *cfg;
    PGconn *pg;                      /* the saga role (saga.notifications, write.user_profiles) */
    struct redisx *redis;            /* NULL: no fast path (borrowed) */
    saga_notify_channel channel;     /* "default" notifications (the completion saga's): the global webhook or the log */
    const char *default_url;         /* the global webhook URL for it, or NULL */
    saga_notify_channel webhook;     /* PUSH: the user's webhook URL (or the global one) */
    saga_notify_channel email;       /* EMAIL: .send NULL when no SMTP server is configured */
    saga_notify_channel in_app;      /* IN_APP: the user's inbox (.send NULL: not available) */
    const char *correlation_id;      /* the request's, for the outcome event (may be NULL) */
    struct keystore *keys;           /* a deferred request is kept sealed with the recipient's key (NULL: clear) */
    int attempts;                    /* per notification */
    int backoff_ms;
    void (*sleep_ms)(int ms);        /* NULL: nanosleep */
} saga_notify;

/* Makes the notification counters of s's channel exist (at 0). */
void saga_notify_declare_metrics(const saga_notify *s);

/* Releases the deferred notifications whose quiet hours are over (up to
 * limit, oldest first) on s->pg: each goes back to the dispatcher as a new
 * notification.requested (saga.outbox), and leaves the table, in one
 * transaction. *n gets how many. */
int saga_notify_release(saga_notify *s, int limit, int *n, todo_err *err);

/* Handles one notification request: delivers it unless it was delivered
 * before. *outcome (may be NULL) gets "sent", "failed" or "duplicate".
 * Returns TODO_OK, or a database status (retry the record later). */
int saga_notify_handle(saga_notify *s, const Todo__V1__SendNotification *n, const char **outcome, todo_err *err);

#endif
