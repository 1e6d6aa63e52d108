/*
 * auth_cache: tokens already verified, so that a client sending the same
 * bearer token call after call is verified once, not per call (issue 19:
 * the signature check, its JSON parse and OpenSSL set-up were ~17% of
 * todo-query's CPU per GetTask).
 *
 * A cache belongs to one thread (a gRPC worker) and to one set of keys and
 * rules: every entry was verified with the secrets and rules the thread
 * passes, which do not change while the process runs. An entry holds the
 * whole authorization value (compared in full, in constant time) and the
 * identity it verified to, and is used only while the token's time checks
 * would pass (auth_identity's valid_from..valid_until: exp, nbf and iat
 * with the leeway); anything else is verified again. Only successful
 * verifications are kept, in a fixed number of slots (a direct-mapped
 * table: a new token takes its slot), of at most AUTH_CACHE_TOKEN_MAX
 * bytes each: memory is bounded by slots * AUTH_CACHE_TOKEN_MAX.
 */
#ifndef TODO_AUTH_CACHE_H
#define TODO_AUTH_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "auth.h"

#define AUTH_CACHE_TOKEN_MAX 1024 /* longer authorization values are verified every time */

typedef struct auth_cache auth_cache;

/* A cache of slots entries (rounded up to a power of two); 0: NULL, no
 * cache (auth_cache_verify then verifies every time). */
auth_cache *auth_cache_new(size_t slots);
void auth_cache_free(auth_cache *c);

/* auth_verify_with (auth.h) through c (NULL: straight through). */
int auth_cache_verify(auth_cache *c, const char *user_secret, const char *service_secret, const char *authorization,
                      long now, const auth_rules *rules, auth_identity *id, todo_err *err);

/* Lookups answered from the cache and lookups verified, since c was made. */
uint64_t auth_cache_hits(const auth_cache *c);
uint64_t auth_cache_misses(const auth_cache *c);

#endif
