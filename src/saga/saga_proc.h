/*
 * saga_proc: the todo-saga process and its thread roles, each in a file of
 * its own:
 *
 *   starter    (saga_starter.c) consumes tasks.events.v1 in group
 *              saga-task-completion-v1, from the end of the topic when the
 *              group is new (history is not replayed into sagas): every
 *              task.completed starts a saga (saga id = the event id, so a
 *              re-delivered event finds its saga and starts nothing);
 *   workers    (saga_worker.c) TODO_SAGA_WORKERS threads, each leasing
 *              RUNNING and COMPENSATING sagas one at a time (the oldest
 *              first; after a crash, the ones left behind) under the name
 *              "<instance>/<n>" and driving each to its end (saga_core);
 *              each transition's events are saved with the saga into
 *              saga.outbox;
 *   outbox     the outbox publisher (outbox.h) of saga.outbox: saga
 *              events, notification requests and outcomes leave in order,
 *              with the standard headers;
 *   scheduler  (saga_scheduler.c) fires due reminders;
 *   notifier   (saga_remind.c) consumes reminders.events.v1 in group
 *              reminder-notify-v1 (from the end when new): every
 *              reminder.triggered becomes one notification.requested per
 *              channel of the reminder (ids derived from the event and the
 *              channel), into saga.outbox;
 *   releaser   (saga_dispatch.c) delivers, every second, the notifications
 *              quiet hours held back once their time has come;
 *   dispatcher (saga_dispatch.c) consumes notifications.commands.v1 in
 *              group notification-dispatch-v1 (also from the end when new)
 *              and delivers each notification once (saga_notify).
 *
 * The consumers run the common consume loop (consume.h): offsets are
 * committed after the database, a record that cannot be handled is
 * dead-lettered, retries are bounded. Each role has its own PostgreSQL
 * connection (role todo_saga). SIGINT or SIGTERM stop them between steps; a
 * saga in progress resumes at the next start (or on another instance once
 * its lease expires).
 */
#ifndef TODO_SAGA_PROC_H
#define TODO_SAGA_PROC_H

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <stdatomic.h>

#include "arena.h"
#include "config.h"
#include "grpcx_client.h"
#include "reg_local.h"
#include "todo/v1/events.pb-c.h"
#include "todo_err.h"

/* The consumer groups. */
#define SAGA_STARTER_GROUP "saga-task-completion-v1"
#define SAGA_DISPATCH_GROUP "notification-dispatch-v1"
#define SAGA_REMIND_GROUP "reminder-notify-v1"

typedef struct saga_proc {
    todo_config cfg;
    atomic_int stopping;          /* set once: every role returns */
    reg_resolver *resolver;       /* the schema ids of the records consumed */
    struct keystore *keys;        /* the users' data keys: notification texts are sealed (seal.h) */
} saga_proc;

/* Nonzero once the process is stopping (a consume_opts.should_stop). */
int saga_proc_stopping(void *proc);

/* Sleeps ms in 100 ms steps, returning early when the process stops. */
void saga_proc_pause_ms(saga_proc *p, int ms);

/* A channel to todo-command with the process's TLS settings; NULL (logged,
 * and the process stops) when its TLS files cannot be read. */
grpcx_channel *saga_proc_channel(saga_proc *p);

/* Makes *pg a working connection of the saga role, retrying every second
 * until it works or the process stops (then *pg is NULL). */
void saga_proc_ensure_pg(saga_proc *p, PGconn **pg, const char *app_name);

/* Handles one record of a consumer role on pg: TODO_OK (done, or not
 * ours), TODO_EINVAL (err says why) for a record to dead-letter, another
 * status to try it again later. */
typedef int (*saga_record_fn)(saga_proc *p, PGconn *pg, const rd_kafka_message_t *m, void *ctx, todo_err *err);

/* Decodes record m into a (an envelope) and resolves its schema when it is
 * of type `type`: TODO_OK with *env set; TODO_OK with *env NULL for
 * another type (not the role's business); TODO_EINVAL when it does not
 * decode (to dead-letter); a registry status otherwise. */
int saga_proc_envelope(saga_proc *p, PGconn *pg, const rd_kafka_message_t *m, const char *type, arena *a,
                       Todo__V1__EventEnvelope **env, todo_err *err);

/* Runs a consumer role: topic in group, batches of batch records handled
 * one by one by fn on a connection named app_name. Records are fetched up
 * to SAGA_FETCH_WAIT_MS after they arrive (a few fetches a second rather
 * than one per record: the saga reacts to every task event, and nobody
 * waits on its reaction within a tenth of a second). Returns when the
 * process stops; a consumer that cannot start stops the process. */
#define SAGA_FETCH_WAIT_MS 100
void saga_proc_consume(saga_proc *p, const char *component, const char *group, const char *topic, int batch,
                       const char *app_name, saga_record_fn fn, void *ctx);

/* The thread roles (arg: the saga_proc; a worker's: a saga_worker_arg). */
void *saga_starter_main(void *proc);
void *saga_dispatch_main(void *proc);
void *saga_scheduler_main(void *proc);
void *saga_remind_main(void *proc);
void *saga_release_main(void *proc);

/* "email", "push", "sms" for a ReminderChannel (NULL: none). */
const char *saga_channel_name(int channel);

/* The notification id of a reminder.triggered event's channel: a
 * name-based UUID, the same for a record delivered again. */
void saga_reminder_notification_id(const char *event_id, const char *channel, char out[37]);

typedef struct saga_worker_arg {
    saga_proc *proc;
    int n;                        /* "<instance>/<n>" */
} saga_worker_arg;
void *saga_worker_main(void *arg);

#endif
