/* The dispatcher role of todo-saga (see saga_proc.h): notification.requested
 * -> a delivery (saga_notify). */
#include <stdbool.h>
#include <string.h>

#include "arena.h"
#include "event.h"
#include "log.h"
#include "redisx.h"
#include "saga_notify.h"
#include "saga_proc.h"
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
    const char *outcome = NULL;
    s->pg = pg;
    s->correlation_id = env->correlation_id;
    rc = saga_notify_handle(s, n, &outcome, err);
    if (rc == 0) log_info("notify", "handled", "id=%s outcome=%s", n->notification_id, outcome);
    arena_free(a);
    return rc == TODO_EINVAL ? TODO_EINTERNAL : rc;
}

void *saga_dispatch_main(void *proc)
{
    saga_proc *p = proc;
    todo_err err;
    redisx redis;
    bool have_redis = redisx_init(&redis, p->cfg.redis_url, "notify", 100, &err) == 0;
    saga_notify s = {.cfg = &p->cfg, .redis = have_redis ? &redis : NULL,
                     .channel = p->cfg.notify_webhook_url[0] != '\0'
                                    ? saga_notify_webhook_channel(p->cfg.notify_webhook_url)
                                    : saga_notify_log_channel(),
                     .attempts = p->cfg.notify_attempts, .backoff_ms = 200};
    log_info("notify", "dispatching", "channel=%s", s.channel.name);
    saga_notify_declare_metrics(&s);
    saga_proc_consume(p, "notify", SAGA_DISPATCH_GROUP, TOPIC_NOTIFICATIONS, BATCH, "todo-saga-notifier", dispatch, &s);
    if (have_redis) redisx_cleanup(&redis);
    return NULL;
}
