/*
 * cmd_relay: todo-command's outbox relay. Publishes the rows of write.events
 * to Kafka in position order through the outbox module (outbox.h: the
 * delivery rules, leader election, parking) and marks them published only
 * after the broker acknowledged them (acks=all, idempotent producer). Each
 * envelope leaves with its global position stamped in.
 *
 * Any number of todo-command instances may run a relay; exactly one is
 * active at a time (advisory lock CMD_RELAY_LOCK_KEY). It wakes on LISTEN
 * todo_outbox (a trigger notifies on every insert) and polls as a fallback.
 * The active relay also purges expired request ids and logs the backlog
 * (rows, age of the oldest, parked rows) every 10 s while there is one;
 * `todoctl outbox` shows it and which instance is active (its PostgreSQL
 * application_name is todo-command-relay-<pid>).
 *
 * A row that can never be published (larger than TODO_EVENT_MAX_BYTES, or
 * refused by Kafka as too large or invalid) is parked with its reason and
 * the later events of its aggregate wait behind it until an operator
 * retries or drops it (cmd_outbox.h, `todoctl outbox`).
 */
#ifndef TODO_CMD_RELAY_H
#define TODO_CMD_RELAY_H

#include <stdbool.h>

#include "config.h"

typedef struct cmd_relay cmd_relay;

/* Starts the relay thread. cfg is borrowed and must outlive the relay. */
cmd_relay *cmd_relay_start(const todo_config *cfg, todo_err *err);

/* True when the relay's producer can deliver (outbox_kafka_ready); r is a
 * cmd_relay (a probe's callback). */
bool cmd_relay_kafka_ready(void *r);

/* Stops the relay thread (after the batch in flight) and frees it; takes
 * NULL. */
void cmd_relay_stop(cmd_relay *r);

#endif
