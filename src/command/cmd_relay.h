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
 * Every row Kafka acknowledged is marked published, whatever happened to
 * the rows around it, so nothing is sent twice by the relay's own doing. A
 * row that fails for a reason worth retrying (the broker is away) holds
 * back the later rows of its user in the batch, and the relay backs off and
 * tries again: per-user order is kept (the idempotent producer keeps order
 * within a partition). A row that can never be published (larger than
 * TODO_EVENT_MAX_BYTES, or refused by Kafka as too large or invalid) is
 * parked with its reason and the relay goes on with everything else; the
 * later events of that aggregate wait behind it until an operator retries
 * or drops it (cmd_outbox.h, `todoctl outbox`).
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
