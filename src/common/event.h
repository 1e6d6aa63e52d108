/*
 * event: the event envelope (todo.v1.EventEnvelope) and its Kafka form.
 *
 * A Kafka record of ours has key = user id, value = the serialized envelope
 * (whose `data` holds the payload message), and headers that repeat the
 * envelope's routing fields under CloudEvents Kafka binding names, readable
 * without decoding the value:
 *
 *   ce_specversion=1.0  ce_id  ce_type  ce_source  ce_time (RFC 3339, UTC)
 *   ce_subject (aggregate id)  ce_dataschema (todo.v1.<Message>/v<schema_version>)
 *   content-type=application/protobuf  correlation_id  causation_id
 *   todo_position (global event-store position)  todo_aggregate_version
 *   todo_schema_id (the registry's id of the payload schema; absent for
 *   events written before the registry, whose envelope has schema_id 0)
 *
 * The envelope's schema_id is filled by event_encode from the ids a producer
 * recorded at start-up (event_schema_id_set, after registering its compiled
 * schemas: reg_local.h).
 *
 * Thread-safe; memory comes from the caller's arena.
 */
#ifndef TODO_EVENT_H
#define TODO_EVENT_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "todo/v1/events.pb-c.h"
#include "todo_err.h"

/* What a writer says about an event besides its payload. */
typedef struct event_meta {
    const char *event_id;        /* UUID */
    const char *event_type;      /* "task.created" */
    const char *source;          /* "todo-command" */
    int64_t time_us;             /* microseconds since the epoch, UTC */
    const char *user_id;
    const char *aggregate_type;
    const char *aggregate_id;
    int64_t aggregate_version;
    int32_t schema_version;
    const char *correlation_id;  /* may be NULL or "" */
    const char *causation_id;    /* may be NULL or "" */
    const char *traceparent;     /* W3C trace context (trace.h), NULL or "": none; kept in metadata */
    const char *actor;           /* who made the change: the user, or the service acting for them
                                  * ("todo-saga"); NULL or "": not recorded; kept in metadata */
} event_meta;

/* Serializes an envelope for meta whose data is payload. The bytes are
 * allocated in a. */
int event_encode(const event_meta *meta, const ProtobufCMessage *payload, arena *a, uint8_t **out,
                 size_t *len, todo_err *err);

/* Decodes an envelope into a. Checks the fields every consumer relies on
 * (event id, type, user id, aggregate id, version >= 1, a time, when set,
 * within years 1 to 9999); TODO_EINVAL names what is missing or wrong. */
int event_decode(const uint8_t *bytes, size_t len, arena *a, Todo__V1__EventEnvelope **out, todo_err *err);

/* Builds the Kafka headers for env (see above). The caller owns the result
 * (rd_kafka_producev with RD_KAFKA_V_HEADERS takes it over on success). */
rd_kafka_headers_t *event_kafka_headers(const Todo__V1__EventEnvelope *env);

/* env's traceparent (metadata["traceparent"]), or NULL. */
const char *event_traceparent(const Todo__V1__EventEnvelope *env);

/* The envelope's actor (metadata "actor"), or NULL. */
const char *event_actor(const Todo__V1__EventEnvelope *env);

/* The event schemas this build knows: (type, version, message full name),
 * the versions of a type in ascending order; the last one is what producers
 * write. */
typedef struct event_schema {
    const char *type;
    int32_t version;
    const char *message;
    const char *producer;   /* the process that writes it: "todo-command", "todo-saga" */
} event_schema;
size_t event_schemas(const event_schema **out);

/* The types producer writes (each once, catalogue order), up to cap, into
 * out; returns how many. */
size_t event_types_of_producer(const char *producer, const char **out, size_t cap);

/* The protobuf message name for a type and schema version
 * ("task.created", 1 -> "todo.v1.TaskCreated"), or NULL when unknown. */
const char *event_message_name(const char *event_type, int32_t schema_version);

/* The version producers of this build write for a type (0: unknown type). */
int32_t event_current_version(const char *event_type);

/* The registry's schema id for (type, version) as recorded by this process
 * (0: none recorded). set is meant for start-up; reads are thread-safe. */
void event_schema_id_set(const char *event_type, int32_t schema_version, int32_t id);
int32_t event_schema_id(const char *event_type, int32_t schema_version);

/* The topic an event type is published to ("task.created" ->
 * "tasks.events.v1"), or NULL for a type no topic carries. */
const char *event_topic(const char *event_type);
/* Every topic event_topic names. */
extern const char *const EVENT_TOPICS[];
extern const int EVENT_N_TOPICS;

/* Formats microseconds since the epoch as RFC 3339 UTC with microseconds
 * ("2026-11-27T10:00:00.123456Z") into out (at least 32 bytes). */
void event_format_time(int64_t us, char *out, size_t cap);

/* A google.protobuf.Timestamp for us (microseconds since the epoch) in a,
 * normalized (nanos in 0..999999999). */
Google__Protobuf__Timestamp *event_timestamp(arena *a, int64_t us);

/* True when ts is a time of years 1 to 9999 UTC with nanos 0..999999999
 * (google.protobuf.Timestamp's range): event_timestamp_us is defined for
 * it. */
bool event_timestamp_valid(const Google__Protobuf__Timestamp *ts);

/* Microseconds since the epoch of a timestamp. */
int64_t event_timestamp_us(const Google__Protobuf__Timestamp *ts);

/* The RFC 3339 text of a time (microseconds since the epoch), in a: the
 * form our SQL passes timestamps in. */
char *event_time_text(arena *a, int64_t us);

/* Microseconds since the epoch now. */
int64_t event_now_us(void);

#endif
