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

/* Why a record is dead: a fixed set of codes (docs/OPERATIONS.md, "Dead
 * letters", says what each means and what to do). */
#define DLQ_REASON_UNDECODABLE "undecodable"               /* not an envelope, or its payload does not decode */
#define DLQ_REASON_UNKNOWN_TYPE "unknown_type"             /* no handler for the event type */
#define DLQ_REASON_SCHEMA "schema_unsupported"             /* an unknown schema id, or a version newer than this build */
#define DLQ_REASON_INVALID "invalid_payload"               /* decodes, but inconsistent (ids, fields) */
#define DLQ_REASON_DATABASE "refused_by_database"          /* the database refused to apply it */
#define DLQ_REASON_RETRIES "retries_exhausted"             /* failed TODO_CONSUMER_MAX_ATTEMPTS times */
#define DLQ_REASON_HANDLER "handler_error"                 /* anything else a handler refused */
#define DLQ_REASON_PARKED "parked"                         /* waits behind an earlier letter of its aggregate or chain (park.h) */

/* The code of a reason text: an explicit "<code>: " prefix, else what the
 * text says (the consumers' messages), else DLQ_REASON_HANDLER. */
const char *dlq_reason_code(const char *reason);

/* Headers a redriven record carries, read back when it fails again: how
 * many times it was dead-lettered so far, and when first. */
#define DLQ_HEADER_ATTEMPTS "todo_dlq_attempts"
#define DLQ_HEADER_FIRST_FAILED "todo_dlq_first_failed_us"

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

/* dlq_send_tagged under a letter id of the caller's (a UUID, so that a
 * letter sent again keeps its id), and for a parked record the letter at
 * the head of its chain (parked_behind; NULL or "" for none). */
int dlq_send_letter(rd_kafka_t *producer, const char *consumer_group, const rd_kafka_message_t *orig,
                    const char *reason, const char *letter_id, const char *parked_behind, void *msg_opaque,
                    todo_err *err);

#endif
