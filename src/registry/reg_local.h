/*
 * reg_local: the registry as the services use it: producers register the
 * schemas compiled into them at start-up, consumers resolve the schema ids
 * their records carry.
 *
 * What a subject holds: for event type T (the subject) and each version V of
 * it this build knows (event_schemas()), the message's schema pruned to what
 * it needs: its file with only the messages and enums the message reaches,
 * and the files those live in, likewise pruned (no services, no source
 * info). So a change to one event's message changes that subject only, and
 * the same build always registers the same bytes (the same fingerprint).
 *
 * Producing: reg_register_produced registers every known version of each
 * type, oldest first, records the ids with event_schema_id_set (event_encode
 * then writes them into every envelope) and fails with the registry's
 * refusal (TODO_EPRECOND, naming subject, rule, message and field) when a
 * version is not compatible with what the subject holds: the service must
 * not start then.
 *
 * Consuming: reg_resolve_envelope looks the envelope's schema_id up (cached
 * per process; an unknown id is asked again after a while, not per record)
 * and sets the envelope's schema_version to the version of this build whose
 * message the id names. A record whose id is not registered, is registered
 * for another subject, or names a message this build does not know (a newer
 * version) is refused with TODO_EINVAL and a reason for the dead-letter
 * topic. An id of 0 marks an event written before the registry: its
 * schema_version is taken as it is.
 */
#ifndef TODO_REG_LOCAL_H
#define TODO_REG_LOCAL_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "todo/v1/events.pb-c.h"
#include "todo_err.h"

/* The serialized descriptor set of message (full name) pruned from the
 * serialized set all (see above); *out is malloc'ed. TODO_EINVAL when all
 * does not decode or has no such message. */
int reg_prune(const uint8_t *all, size_t all_len, const char *message, uint8_t **out, size_t *out_len, todo_err *err);

/* The pruned schema of a message compiled into this build (from the
 * embedded descriptor set). */
int reg_compiled_schema(const char *message, uint8_t **out, size_t *out_len, todo_err *err);

/* Registers the known versions of the n types and records their ids. */
int reg_register_produced(PGconn *pg, const char *const *types, size_t n, todo_err *err);

/* reg_register_produced over a connection of its own to pg_url, closed
 * before returning: what a service's main calls before it serves. */
int reg_register_at_startup(const char *pg_url, const char *app, const char *const *types, size_t n, todo_err *err);

typedef struct reg_resolver reg_resolver;

reg_resolver *reg_resolver_new(void);
void reg_resolver_free(reg_resolver *r);

/* See above. TODO_EUNAVAIL (or another status) when the registry could not
 * be asked: the record is not to be dead-lettered then. Thread-safe. */
int reg_resolve_envelope(reg_resolver *r, PGconn *pg, Todo__V1__EventEnvelope *env, todo_err *err);

#endif
