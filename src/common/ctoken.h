/*
 * ctoken: consistency tokens, what a command reply hands a client so that a
 * later query can ask for data at least that fresh.
 *
 * A token names the write it stands for: the aggregate (task, reminder,
 * recurring pattern) and the version the command produced. A query holding
 * it is answered once the read model has applied that aggregate at that
 * version or later (read.applied_versions), which is exactly "my write is
 * visible". (Tokens used to name a global event-store position, but
 * positions come from a sequence: two commands of one user can commit in
 * the other order, and a read waiting for position 4 was answered once 5
 * was projected, before 4.)
 *
 * Tokens are opaque and cannot be forged: 41 bytes (format 3, the aggregate
 * id's 16 bytes, the version as 8 bytes big-endian, 16 bytes of an
 * HMAC-SHA256 over the caller's user id and those bytes) in base64url, 55
 * characters. So a query refuses a token it did not issue, or one issued to
 * another user, with INVALID_ARGUMENT instead of waiting for a write that
 * will never come. Older formats (ct1, ct2: positions) are refused the same
 * way; a client reads without its token then.
 *
 * The key is derived from a secret both todo-command and todo-query hold
 * (ctoken_key_derive). Pure functions, thread-safe.
 */
#ifndef TODO_CTOKEN_H
#define TODO_CTOKEN_H

#include <stdint.h>

#include "todo_err.h"

#define CTOKEN_MAX 64 /* a token with its NUL */

typedef struct ctoken_key {
    unsigned char bytes[32];
} ctoken_key;

/* The token key for secret (HMAC-SHA256 of a fixed label under it). */
void ctoken_key_derive(const char *secret, ctoken_key *key);

/* Writes the token of (aggregate_id, version) issued to user into out.
 * aggregate_id is a UUID, version >= 1. */
void ctoken_encode(const ctoken_key *key, const char *user, const char *aggregate_id, int64_t version,
                   char out[CTOKEN_MAX]);

/* Decodes token for user: the aggregate id (canonical lowercase UUID) and
 * version. TODO_EINVAL ("consistency_token: ...") for anything that is not
 * a token this key issued to user. */
int ctoken_decode(const ctoken_key *key, const char *user, const char *token, char aggregate_id[37],
                  int64_t *version, todo_err *err);

#endif
