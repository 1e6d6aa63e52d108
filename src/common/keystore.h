/*
 * keystore: the users' data keys (seal.h), kept wrapped by the master key in
 * keys.user_keys (migration 0029), with a cache per process.
 *
 * A user's key is made on the first command of the user (todo-command
 * registers the user then) and destroyed when the user is erased: its row
 * stays, without the key, so that the user's id is never given a new one
 * (their old events stay unreadable, and new commands are refused).
 *
 * The cache keeps a key, or the fact that it is destroyed, for ttl_s
 * seconds (an erasure reaches every process within it; todo-command's
 * writes are refused by the database at once, migration 0029).
 * Thread-safe.
 */
#ifndef TODO_KEYSTORE_H
#define TODO_KEYSTORE_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "seal.h"
#include "todo_err.h"

typedef struct keystore keystore;

/* NULL when out of memory. */
keystore *keystore_new(const seal_key *master, int ttl_s);
void keystore_free(keystore *ks);

typedef enum keystore_state {
    KEYSTORE_NONE,      /* the user has no key (never registered) */
    KEYSTORE_KEY,       /* *out holds it */
    KEYSTORE_DESTROYED, /* the user was erased */
} keystore_state;

/* The user's key, from the cache or read on pg. TODO_EUNAVAIL (or another
 * status) when it could not be read; TODO_EINTERNAL when the wrapped key
 * does not open with the master key (the wrong TODO_MASTER_KEY). */
int keystore_get(keystore *ks, PGconn *pg, const char *user, seal_key *out, keystore_state *state, todo_err *err);

/* keystore_get, telling whether the answer came from the database (not the
 * cache). */
int keystore_get_fresh(keystore *ks, PGconn *pg, const char *user, seal_key *out, keystore_state *state,
                       bool *from_db, todo_err *err);

/* Makes the user's key unless there is one (on pg, committed on return):
 * *created tells whether this call made it. TODO_EPRECOND when the user was
 * erased. */
int keystore_create(keystore *ks, PGconn *pg, const char *user, seal_key *out, bool *created, todo_err *err);

/* Drops what the cache knows of user. */
void keystore_forget(keystore *ks, const char *user);

#endif
