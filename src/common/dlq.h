/*
 * dlq: the dead-letter topic (system.dlq.v1). A consumer that cannot handle
 * a record sends it here, with the reason and where it came from (topic,
 * partition, offset, key, value and headers, all kept byte for byte in a
 * todo.v1.DeadLetter), and moves on. The topic is compacted and keyed by the
 * dead-letter id, so an entry can later be replaced by a tombstone once
 * redriven.
 */
#ifndef TODO_DLQ_H
#define TODO_DLQ_H

#include <librdkafka/rdkafka.h>

#include "todo_err.h"
#include "topic_names.h"

#define DLQ_TOPIC TOPIC_DLQ

/* Enqueues the dead letter for orig on producer (an idempotent producer from
 * kafkax_producer_new). The caller flushes and checks delivery before it
 * commits orig's offset. */
int dlq_send(rd_kafka_t *producer, const char *consumer_group, const rd_kafka_message_t *orig, const char *reason,
             todo_err *err);

/* dlq_send, with msg_opaque handed to the dead letter's delivery report
 * (its rd_kafka_message_t._private), so that the caller can tell which of
 * several dead letters were acknowledged. */
int dlq_send_tagged(rd_kafka_t *producer, const char *consumer_group, const rd_kafka_message_t *orig,
                    const char *reason, void *msg_opaque, todo_err *err);

#endif
