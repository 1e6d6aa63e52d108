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
 * When a batch is only partly delivered, only the delivered prefix is marked;
 * the rest is sent again (at-least-once; consumers skip duplicates by
 * aggregate version), so per-user order is kept.
 */
#ifndef TODO_CMD_RELAY_H
#define TODO_CMD_RELAY_H

#include "config.h"

typedef struct cmd_relay cmd_relay;

/* Starts the relay thread. cfg is borrowed and must outlive the relay. */
cmd_relay *cmd_relay_start(const todo_config *cfg, todo_err *err);

/* Stops the relay thread (after the batch in flight) and frees it; takes
 * NULL. */
void cmd_relay_stop(cmd_relay *r);

#endif
