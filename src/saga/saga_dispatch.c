/* The dispatcher role of todo-saga (see saga_proc.h): notification.requested
 * -> a delivery (saga_notify). */
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include <openssl/crypto.h>

#include "arena.h"
#include "event.h"
#include "grpcx_client.h"
#include "log.h"
#include "pgx.h"
#include "redisx.h"
#include "saga_notify.h"
#include "saga_proc.h"
#include "keystore.h"
#include "seal.h"
#include "topic_names.h"
#include "todo/v1/events.pb-c.h"

/* Notifications one at a time: each is committed once delivered. */
#define BATCH 1

/* Delivers one notification.requested record (the topic's other events,
 * our own sent/failed among them, are not ours). */
static int dispatch(saga_proc *p, PGconn *pg, const rd_kafka_message_t *m, void *ctx, todo_err *err)
{
    saga_notify *s = ctx;
    arena *a = arena_new();
    Todo__V1__EventEnvelope *env;
    int rc = saga_proc_envelope(p, pg, m, "notification.requested", a, &env, err);
    if (rc != TODO_OK || env == NULL) { /* undecodable, the registry away, or not ours */
        arena_free(a);
        return rc;
    }
    ProtobufCAllocator alloc;
    arena_pbc_allocator(a, &alloc);
    Todo__V1__SendNotification *n = todo__v1__send_notification__unpack(&alloc, env->data.len, env->data.data);
    if (n == NULL || n->notification_id[0] == '\0' || n->recipient[0] == '\0') {
        arena_free(a);
        return todo_err_set(err, TODO_EINVAL, "notification.requested payload does not decode or lacks its id");
    }
    if (seal_event_is_sealed(&n->base)) { /* opened with the recipient's key */
        seal_key key;
        keystore_state state = KEYSTORE_NONE;
        if (p->keys != NULL && (rc = keystore_get(p->keys, pg, env->user_id, &key, &state, err)) != TODO_OK) {
            arena_free(a);
            return rc;
        }
        if (state != KEYSTORE_KEY) { /* erased since: nothing to say to them */
            log_info("notify", "not delivered: the recipient was erased", "id=%s", n->notification_id);
            arena_free(a);
            return TODO_OK;
        }
        rc = seal_open_event(&n->base, &key, seal_event_aad(a, env->user_id, env->aggregate_id, env->event_type), a,
                             err);
        OPENSSL_cleanse(&key, sizeof key);
        if (rc != TODO_OK) {
            arena_free(a);
            return rc; /* TODO_EINVAL: dead-lettered */
        }
    }
    const char *outcome = NULL;
    s->pg = pg;
    s->correlation_id = env->correlation_id;
    rc = saga_notify_handle(s, n, &outcome, err);
    if (rc == 0) log_info("notify", "handled", "id=%s outcome=%s", n->notification_id, outcome);
    arena_free(a);
    return rc == TODO_EINVAL ? TODO_EINTERNAL : rc;
}

/* The notification channels of the process's settings, into s. */
static void channels(saga_proc *p, saga_notify *s, saga_smtp *smtp, saga_inbox *inbox, redisx *redis)
{
    *inbox = (saga_inbox){.command = saga_proc_channel(p), .service_secret = p->cfg.service_secret};
    bool global = p->cfg.notify_webhook_url[0] != '\0';
    *smtp = (saga_smtp){.url = p->cfg.notify_smtp_url, .from = p->cfg.notify_smtp_from,
                        .starttls = p->cfg.notify_smtp_starttls != 0, .ca_file = p->cfg.notify_smtp_ca_file};
    *s = (saga_notify){.cfg = &p->cfg, .redis = redis,
                       .channel = global ? saga_notify_webhook_channel(p->cfg.notify_webhook_secret)
                                         : saga_notify_log_channel(),
                       .default_url = global ? p->cfg.notify_webhook_url : NULL,
                       .webhook = saga_notify_webhook_channel(p->cfg.notify_webhook_secret),
                       .email = smtp->url[0] != '\0' ? saga_notify_email_channel(smtp)
                                                     : (saga_notify_channel){.name = "email"},
                       .in_app = inbox->command != NULL ? saga_notify_in_app_channel(inbox)
                                                        : (saga_notify_channel){.name = "in_app"},
                       .attempts = p->cfg.notify_attempts, .backoff_ms = 200, .keys = p->keys};
}

/* The releaser: every second, the notifications quiet hours held back
 * whose time has come go back to the dispatcher (saga_notify_release). */
void *saga_release_main(void *proc)
{
    saga_proc *p = proc;
    todo_err err;
    saga_notify s = {.cfg = &p->cfg};
    PGconn *pg = NULL;
    while (!atomic_load(&p->stopping)) {
        saga_proc_ensure_pg(p, &pg, "todo-saga-release");
        if (pg == NULL) break;
        s.pg = pg;
        int n = 0;
        if (saga_notify_release(&s, 20, &n, &err) != 0) {
            log_warn("notify", "releasing deferred notifications failed; retrying", "error=\"%s\"", err.msg);
            pgx_close(pg);
            pg = NULL;
        }
        if (n > 0) log_info("notify", "deferred notifications released", "count=%d", n);
        if (n < 20) saga_proc_pause_ms(p, 1000);
    }
    pgx_close(pg);
    return NULL;
}

void *saga_dispatch_main(void *proc)
{
    saga_proc *p = proc;
    todo_err err;
    redisx redis;
    bool have_redis = redisx_init(&redis, p->cfg.redis_url, "notify", 100, &err) == 0;
    saga_notify s;
    saga_smtp smtp;
    saga_inbox inbox;
    channels(p, &s, &smtp, &inbox, have_redis ? &redis : NULL);
    log_info("notify", "dispatching", "default=%s email=%s webhooks=%s", s.channel.name,
             s.email.send != NULL ? "smtp" : "none", p->cfg.notify_webhook_secret[0] != '\0' ? "signed" : "unsigned");
    saga_notify_declare_metrics(&s);
    saga_proc_consume(p, "notify", SAGA_DISPATCH_GROUP, TOPIC_NOTIFICATIONS, BATCH, "todo-saga-notifier", dispatch, &s);
    grpcx_channel_free(inbox.command);
    if (have_redis) redisx_cleanup(&redis);
    return NULL;
}
