/*
 * audit: the audit trail on system.audit.v1. One todo.v1.AuditRecord per
 * command, accepted or refused: who (the token's user, empty when there was
 * no valid token), which RPC, on what, the outcome and its message, the
 * correlation and request ids. Never tokens or other secrets.
 *
 * Records are sent asynchronously by their own producer (key = user id, or
 * "anonymous"); a command never waits for its audit record. A record that
 * Kafka cannot take within message.timeout.ms is logged as lost. A record
 * waits up to AUDIT_LINGER_MS for the next ones, so that a busy command
 * service sends its records in a few requests a second rather than one per
 * command. audit_emit is thread-safe.
 */
#ifndef TODO_AUDIT_H
#define TODO_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "todo_err.h"
#include "topic_names.h"

typedef struct audit_log audit_log;

typedef struct audit_entry {
    const char *user_id;         /* may be NULL or "" */
    const char *rpc;
    const char *target_id;       /* may be NULL */
    const char *outcome;         /* "OK" or a gRPC code name */
    const char *message;         /* may be NULL */
    const char *correlation_id;  /* may be NULL */
    const char *request_id;      /* may be NULL */
    int64_t version;
} audit_entry;

#define AUDIT_TOPIC TOPIC_AUDIT
#define AUDIT_LINGER_MS 50

/* A producer for source ("todo-command") on brokers. */
audit_log *audit_new(const char *brokers, const char *source, todo_err *err);

/* Flushes what is queued (up to timeout_ms) and frees; takes NULL. */
void audit_free(audit_log *log, int timeout_ms);

/* Queues one record. Text copied from a request is bounded and made
 * printable first (audit_encode). */
void audit_emit(audit_log *log, const audit_entry *e);

/* audit_emit for a call refused before the caller was known (no or a bad
 * token): such records are what an attacker controls the rate of, so at
 * most AUDIT_REFUSED_PER_S of them per second (bursts of 5 s) are written;
 * the rest are counted and the count logged every 10 s. Thread-safe. */
#define AUDIT_REFUSED_PER_S 20
void audit_emit_refused(audit_log *log, const audit_entry *e);

/* The longest text a record keeps of a field (bytes, cut on a character
 * boundary); message gets twice as much. */
#define AUDIT_FIELD_MAX 128

/* Serializes the record for e (malloc'ed, *len bytes; the caller frees):
 * every text field cut to AUDIT_FIELD_MAX bytes on a UTF-8 boundary, bytes
 * that are not printable UTF-8 replaced by '?'. Exposed for tests. */
uint8_t *audit_encode(const char *source, const audit_entry *e, int64_t now_us, size_t *len);

#endif
