/*
 * seal: the personal fields of events, encrypted under their user's data
 * key (crypto-shredding: destroying the key makes them unreadable
 * everywhere they were copied, the event store and every topic included).
 *
 * Key hierarchy: a master key (TODO_MASTER_KEY, 32 bytes in hex, from the
 * settings) wraps one data key per user (32 random bytes); the wrapped keys
 * live in keys.user_keys (keystore.h). Both layers are AES-256-GCM (OpenSSL
 * EVP) with a fresh 96-bit nonce per encryption: a sealed value is one
 * format byte (1), the nonce, the ciphertext and the 16-byte tag. The
 * additional data binds a wrapped key to its user and a sealed payload to
 * its event's user, aggregate and type, so neither can be moved elsewhere.
 *
 * Sealed events: each message that has personal fields (seal_personal_fields)
 * also has a `bytes sealed` field. seal_event moves the personal fields into
 * it: they are packed as a message of the same type holding only them,
 * encrypted, and cleared in the clear message. seal_open_event puts them
 * back. The rest of the event (ids, times, versions, priority, due time)
 * stays readable, so every consumer that does not need a title works
 * without a key, and the schema registry checks the messages as before.
 */
#ifndef TODO_SEAL_H
#define TODO_SEAL_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "todo_err.h"

#define SEAL_KEY_LEN 32
#define SEAL_OVERHEAD (1 + 12 + 16) /* format byte, nonce, tag */

typedef struct seal_key {
    uint8_t k[SEAL_KEY_LEN];
} seal_key;

/* Parses a key written as 64 hex digits. TODO_EINVAL otherwise. */
int seal_key_parse(const char *hex, seal_key *out, todo_err *err);

/* A new random data key. */
int seal_key_new(seal_key *out, todo_err *err);

/* Encrypts n bytes of in under k, bound to aad (a string, may be ""), into
 * out (n + SEAL_OVERHEAD bytes, in a). */
int seal_bytes(const seal_key *k, const uint8_t *in, size_t n, const char *aad, arena *a, uint8_t **out,
               size_t *out_len, todo_err *err);

/* Decrypts what seal_bytes made. TODO_EINVAL when it is not a sealed value,
 * or the key or the additional data is not the one it was sealed with (or
 * it was changed). */
int seal_open_bytes(const seal_key *k, const uint8_t *in, size_t n, const char *aad, arena *a, uint8_t **out,
                    size_t *out_len, todo_err *err);

/* The personal fields of message type name (full protobuf name, e.g.
 * "todo.v1.TaskCreatedV2"), NULL-terminated; NULL when it has none. */
const char *const *seal_personal_fields(const char *message);

/* The descriptor of message type name when it has personal fields, else NULL. */
const ProtobufCMessageDescriptor *seal_descriptor(const char *message);

/* The additional data of an event's sealed fields (in a): its user,
 * aggregate and type, so that a sealed value opens only in its place. */
const char *seal_event_aad(arena *a, const char *user_id, const char *aggregate_id, const char *event_type);

/* Moves msg's personal fields into its `sealed` field, encrypted under k
 * (see above); nothing for a message without personal fields, or one
 * sealed already. Strings it
 * allocates are in a. */
int seal_event(ProtobufCMessage *msg, const seal_key *k, const char *aad, arena *a, todo_err *err);

/* True when msg carries sealed fields. */
bool seal_event_is_sealed(const ProtobufCMessage *msg);

/* Puts the fields sealed in msg back (nothing when there are none).
 * TODO_EINVAL as seal_open_bytes. */
int seal_open_event(ProtobufCMessage *msg, const seal_key *k, const char *aad, arena *a, todo_err *err);

#endif
