/*
 * cmd_relay: the outbox relay. Publishes the rows of write.events to Kafka in
 * position order and marks them published only after the broker acknowledged
 * them (acks=all, idempotent producer).
 *
 * Any number of todo-command instances may run a relay; exactly one is active
 * at a time: the one holding a PostgreSQL advisory lock on its own
 * connection. The others retry the lock every poll interval, so one takes
 * over within seconds when the leader's connection dies. The active relay
 * wakes on LISTEN todo_outbox (a trigger notifies on every insert) and polls
 * as a fallback.
 *
 * The active relay logs the backlog (rows, age of the oldest) every 10 s
 * while there is one; `todoctl outbox` shows it and which instance is active
 * (its PostgreSQL application_name is todo-command-relay-<pid>).
 *
 * When a batch is only partly delivered, only the delivered prefix is marked;
 * the rest is sent again (at-least-once; consumers skip duplicates by
 * aggregate version), so per-user order is kept.
 */
#ifndef TODO_CMD_RELAY_H
#define TODO_CMD_RELAY_H

#include "config.h"

#include <libpq-fe.h>

typedef struct cmd_relay cmd_relay;

/* The outbox as an operator sees it. */
typedef struct cmd_outbox_status {
    long unpublished;          /* rows not yet acknowledged by Kafka */
    double oldest_age_s;       /* age of the oldest of them (0 when none) */
    long long last_position;   /* highest position written (0 when none) */
    char active[256];          /* the active relay's application_name and backend, or "" */
} cmd_outbox_status;

/* Reads the status with pg (any role that can read write.events). */
int cmd_outbox_status_read(PGconn *pg, cmd_outbox_status *st, todo_err *err);

/* Starts the relay thread. cfg is borrowed and must outlive the relay. */
cmd_relay *cmd_relay_start(const todo_config *cfg, todo_err *err);

/* Stops the relay thread (after the batch in flight) and frees it; takes
 * NULL. */
void cmd_relay_stop(cmd_relay *r);

#endif
