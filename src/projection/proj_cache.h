/*
 * proj_cache: the projector's Redis fast path for "already applied".
 *
 * After a batch commits, the projector records in Redis, per aggregate, the
 * highest version it applied (key proj:<group>:<aggregate id>, one day TTL).
 * Before applying an event it asks Redis first: an event at or below that
 * version is skipped without touching PostgreSQL, which stays the truth:
 * whatever Redis does not know (or when Redis is down, slow or empty) goes
 * through the database check as before. Redis errors never stop the
 * projector: the cache switches itself off and tries again later.
 *
 * Keys are only written after the database committed, so Redis is never
 * ahead of the database, except after a restore of the read database from
 * a backup: then delete the proj:* keys (docs/OPERATIONS.md).
 *
 * One cache per projector thread.
 */
#ifndef TODO_PROJ_CACHE_H
#define TODO_PROJ_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "todo_err.h"

typedef struct proj_cache proj_cache;

/* A cache on url ("redis://host:port") for group. An unreachable Redis is
 * not an error (the cache starts switched off). TODO_EINVAL for a malformed
 * url. */
proj_cache *proj_cache_new(const char *url, const char *group, todo_err *err);
void proj_cache_free(proj_cache *c);

/* What Redis knows of n aggregates in one round trip: versions[i] is the
 * highest applied version of ids[i], or 0 when unknown (or Redis is away).
 * Counts the ids for which it knew something as hits. */
void proj_cache_lookup(proj_cache *c, const char *const *ids, size_t n, int64_t *versions);

/* Queues "aggregate applied up to version"; proj_cache_flush sends them. */
void proj_cache_note(proj_cache *c, const char *aggregate_id, int64_t version);
void proj_cache_flush(proj_cache *c);

/* Drops what was noted and not flushed (the batch did not commit). */
void proj_cache_discard(proj_cache *c);

/* Lookups answered from Redis, for tests and logs. */
int64_t proj_cache_hits(const proj_cache *c);


#endif
