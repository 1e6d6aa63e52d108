/*
 * harness: what the integration tests share. They run against the stack that
 * scripts/test.sh started (its settings in the environment, TODO_STACK set);
 * without one they are skipped. The services under test are the binaries of
 * the build the test belongs to, started and stopped by the test itself.
 */
#ifndef TODO_HARNESS_H
#define TODO_HARNESS_H

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <sys/types.h>

#include "grpcx_client.h"

/* True when a stack is configured (TODO_STACK is set). */
bool harness_stack_available(void);

/* Starts TODO_BIN_DIR/<rel> (e.g. "command/todo-command") with the current
 * environment plus extra ("NAME=value", NULL-terminated; may be NULL),
 * output appended to <build>/tests/logs/<log>.log. Returns the pid. */
pid_t harness_spawn(const char *rel, const char *log, const char *const *extra);

/* Removes <build>/tests/logs/<log>.log (before a spawn whose log a test reads). */
void harness_log_reset(const char *log);

/* True when a line of <build>/tests/logs/<log>.log contains needle. */
bool harness_log_contains(const char *log, const char *needle);

/* Sends sig and waits up to timeout_ms; returns the exit status (0..255),
 * 128+signal when killed, or -1 when it did not exit (it is then killed). */
int harness_stop(pid_t pid, int sig, int timeout_ms);

/* Waits until the gRPC health check at addr answers SERVING. */
bool harness_wait_serving(const char *addr, int timeout_ms);

/* "Bearer <token>" for user, valid for ttl seconds (malloc'ed). The secret
 * may be NULL for the configured one. */
char *harness_bearer(const char *user, long ttl, const char *secret);

/* "Bearer <service token>": todo-saga acting for user with the internal
 * scope (the stack's service secret). */
char *harness_service_bearer(const char *user);

/* "Bearer <service token>" of service acting for user with scope. */
char *harness_scoped_bearer(const char *service, const char *scope, const char *user);

/* A user id unique to this run: "<prefix>-<random>". */
void harness_user(char out[64], const char *prefix);

/* A connection as the PostgreSQL superuser (TODO_PG_URL). */
PGconn *harness_admin(void);

/* The single integer that sql (with one text parameter, may be NULL)
 * returns. */
long long harness_scalar(PGconn *c, const char *sql, const char *param);

/* A channel to addr with the TLS settings of the environment
 * (TODO_GRPC_TLS_CA...: plaintext without them); aborts when they cannot be
 * read. */
grpcx_channel *harness_channel(const char *addr);

/* A TCP port on 127.0.0.1 that nothing listens on now. */
int harness_free_port(void);

/* Milliseconds on a monotonic clock. */
long long harness_now_ms(void);

/* Sleeps ms milliseconds (for polling loops that are bounded in time). */
void harness_sleep_ms(int ms);

/* Reads topic from the start in a new consumer group, calling match on each
 * record, until match said yes want times or timeout_ms passed. Returns the
 * number of yeses. */
/* prefix, then the PostgreSQL URL url naming database db instead of its
 * own; its parameters (?sslmode=... on the secure stack) are kept. */
void harness_pg_url_with_db(char *out, size_t cap, const char *prefix, const char *url, const char *db);

/* A scratch database of this run: "<prefix>_<random>" in db, a URL to it
 * (TODO_PG_URL's user and parameters) in url. False when it could not be
 * made. harness_drop_db drops it, connections and all; false on failure. */
bool harness_scratch_db(const char *prefix, char db[64], char *url, size_t cap);
bool harness_drop_db(const char *db);

/* A Kafka client configuration for the stack: TODO_KAFKA_BROKERS and its
 * security settings (TODO_KAFKA_CONFIG), as the services make theirs. */
rd_kafka_conf_t *harness_kafka_conf(void);

int harness_consume(const char *topic, bool (*match)(const rd_kafka_message_t *m, void *ctx), void *ctx, int want,
                    int timeout_ms);

/* How many records of topic match, once at least expect of them are there:
 * reads the topic from its start (every partition, no consumer group) until
 * expect matched or timeout_ms passed, then on to the end the topic has at
 * that moment (a partition whose records were deleted, from where they
 * ended); the test fails when it cannot read to that end within 10 s more
 * (a count short of it would pass for a complete one). A count above
 * expect is a duplicate already published; no waiting out a window to see
 * none comes. */
int harness_count(const char *topic, bool (*match)(const rd_kafka_message_t *m, void *ctx), void *ctx, int expect,
                  int timeout_ms);

/* Produces one record (key, value) to topic and waits for its delivery. */
void harness_produce(const char *topic, const char *key, const void *value, size_t len);

/* True when system.dlq.v1 holds (or receives within 15 s) a dead letter from
 * consumer group `group` of a record of topic whose value was value and whose
 * reason contains reason_part. */
bool harness_dlq_holds(const char *topic, const char *group, const void *value, size_t len, const char *reason_part);

/* A harness_consume/harness_count match: a record keyed by user whose
 * bytes hold text (ctx: a harness_needle; text "" matches every record of
 * the user). */
typedef struct harness_needle {
    const char *user, *text;
} harness_needle;
bool harness_holds_text(const rd_kafka_message_t *m, void *ctx);

/* Runs todoctl of this build with args (a shell word list); returns its exit
 * status, its output (stdout and stderr) in out. One that has not ended
 * after HARNESS_TODOCTL_LIMIT_S is stopped (status 124): a hang fails the
 * test with what todoctl printed, well before ctest's timeout. */
#define HARNESS_TODOCTL_LIMIT_S 180

int harness_todoctl(const char *args, char *out, size_t cap);

/* Runs scripts/stack.sh <what> <this stack> [more], what being a stack.sh
 * command ("kafka-stop") and more its further words (a node: "2", may be
 * NULL); returns its exit status. */
int harness_stack(const char *what, const char *more);

/* Events in write.events of users whose id starts with prefix that are not
 * yet published. */
long long harness_unpublished(const char *prefix);

/* Waits until every event of prefix's users is published; the milliseconds
 * it took, or -1 after timeout_ms. */
long long harness_wait_published(const char *prefix, int timeout_ms);

/* Reads tasks.events.v1 for the records of users whose id starts with
 * prefix until total arrived (60 s at most) and on to the topic's end, and
 * fails the test when a user's records are out of the order of their
 * positions, or when an event arrived twice and resent is NULL. With
 * resent, copies sent again (a relay killed before it marked rows
 * published: its successor sends them again) are counted there and left
 * out, each first arrival keeping its place in the order. Returns how many
 * distinct events arrived. */
int harness_check_published(const char *prefix, int total, int *resent);

/* Waits until read.tasks holds total rows of prefix's users (timeout_ms at
 * most); the count then. */
long long harness_wait_projected(const char *prefix, long long total, int timeout_ms);

/* The three services of the slice, started from this build. */
typedef struct harness_services {
    pid_t command, query, projector;
    grpcx_channel *cmd, *qry;
} harness_services;

/* Starts them and waits until both servers answer; 0 or -1. */
int harness_services_start(harness_services *s);

/* SIGTERMs them; 0 when all three exited 0 (no leak report in the ASan
 * build), else -1 after saying which did not. */
int harness_services_stop(harness_services *s);

/* The shared fixture of a test group: the services, started once for the
 * group, and a superuser connection. Use harness_group_setup/teardown as the
 * group's setup and teardown (both do nothing without a stack) and
 * HARNESS_NEED_STACK() first in each test (it skips without a stack). */
extern harness_services harness_svc;
extern PGconn *harness_db;
int harness_group_setup(void **state);
int harness_group_teardown(void **state);
#define HARNESS_NEED_STACK()                                                                                 \
    do {                                                                                                     \
        if (!harness_stack_available()) skip();                                                            \
    } while (0)

/* Calls rpc ("CreateTask") of TaskCommandService on harness_svc; on OK and
 * with out, *out is the reply (the caller frees it). Returns the status. */
struct Todo__V1__CommandReply;
grpc_status_code harness_command(const char *rpc, const ProtobufCMessage *req, const char *auth,
                                 struct Todo__V1__CommandReply **out, grpcx_result *res);

/* CreateTask (title) as auth's user; the new task's id (malloc'd). */
char *harness_create(const char *auth, const char *title);

/* CompleteTask of task_id; the task.completed event's id (a saga's id),
 * malloc'd. */
char *harness_complete(const char *auth, const char *task_id);

#endif
