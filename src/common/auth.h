/*
 * auth: caller identity from `authorization: Bearer <JWT>`.
 *
 * Tokens are JSON Web Tokens whose `sub` is the user id and whose `exp`
 * (seconds since the epoch) is required and checked. A user token is HS256
 * (a shared secret: the local stack) or RS256 / ES256 (verified with public
 * keys, auth_keys: a deployment's services then hold no key that can sign
 * one); every other algorithm, including "none", is refused, and a token
 * is only ever verified with a key of the kind its alg names. The user id always comes from the
 * token, never from a request body. User ids are 1..128 characters of
 * [A-Za-z0-9._@:-], so they are safe as Kafka keys, log values and SQL
 * parameters alike. Thread-safe.
 */
#ifndef TODO_AUTH_H
#define TODO_AUTH_H

#include "todo_err.h"

#include <stdbool.h>

#define AUTH_USER_MAX 129 /* 128 characters and the NUL */

/* Public keys that verify RS256 and ES256 user tokens: a PEM file of one or
 * more public keys (-----BEGIN PUBLIC KEY-----) or a JWKS file (RFC 7517:
 * {"keys": [...]}, RSA and EC P-256 keys, each with an optional kid). A
 * token naming a kid is verified with that key only (rotation: publish the
 * new key beside the old one); a token without one with each key of its
 * type. RSA keys have at least 2048 bits. A file holding a private key is
 * refused: verifying services hold public keys only. Immutable once loaded,
 * so shared by every thread. */
typedef struct auth_keys auth_keys;
#define AUTH_KID_MAX 128
typedef enum auth_key_type { AUTH_KEY_RSA, AUTH_KEY_EC } auth_key_type;

/* Loads path; *out on TODO_OK, else TODO_EINVAL with what is wrong. */
int auth_keys_load(const char *path, auth_keys **out, todo_err *err);
void auth_keys_free(auth_keys *ks);
size_t auth_keys_count(const auth_keys *ks);
/* "RS256" or "ES256". */
const char *auth_key_type_alg(auth_key_type t);
/* The index of the first key at or after from named kid (NULL: any kid) of
 * type, with its PEM in *pem; -1 when none (err set, when from is 0 or kid
 * names a key of another type: TODO_EUNAUTH). */
int auth_keys_pick(const auth_keys *ks, const char *kid, auth_key_type type, size_t from, const char **pem,
                   todo_err *err);

/* What a deployment asks of every token beyond its signature and exp
 * (docs/SECURITY.md). NULL rules: nothing more, no leeway. */
typedef struct auth_rules {
    const auth_keys *user_keys; /* NULL: no RS256/ES256 user tokens (TODO_JWT_PUBLIC_KEYS) */
    const char *issuer;   /* "" or NULL: any; else a user token's iss must be it */
    const char *audience; /* "" or NULL: any; else a user token's aud must be it or list it */
    long max_lifetime_s;  /* > 0: iat is required and exp - iat may be at most this */
    long leeway_s;        /* clock skew allowed on exp, nbf and iat */
} auth_rules;

/* The rules of a todo_config (config.h): TODO_JWT_ISSUER, _AUDIENCE,
 * _MAX_LIFETIME_S, _LEEWAY_S. */
#define AUTH_RULES_OF(cfg)                                                                                 \
    ((auth_rules){(cfg)->jwt_keys, (cfg)->jwt_issuer, (cfg)->jwt_audience, (cfg)->jwt_max_lifetime_s,           \
                  (cfg)->jwt_leeway_s})

/* Checks the value of an authorization header against secret at time now.
 * On success copies the user id into user and returns TODO_OK; otherwise
 * TODO_EUNAUTH with the reason (missing header, not a bearer token, bad
 * signature, expired, no or invalid sub) in err. */
int auth_verify(const char *secret, const char *authorization, long now, char user[AUTH_USER_MAX],
                todo_err *err);

/* Issues a token for user valid for ttl_s seconds from now. Returns a
 * malloc'ed string the caller frees, or NULL with err set. */
char *auth_issue(const char *secret, const char *user, long ttl_s, long now, todo_err *err);

/* auth_issue with the iss and aud rules asks for (rules may be NULL). */
char *auth_issue_for(const char *secret, const char *user, long ttl_s, long now, const auth_rules *rules,
                     todo_err *err);

/* A user token signed with alg: "HS256" (key: the secret) or "RS256" /
 * "ES256" (key: a PEM private key of key_len bytes); kid NULL or "": no kid
 * header. */
char *auth_issue_alg(const char *alg, const char *key, size_t key_len, const char *kid, const char *user, long ttl_s,
                     long now, const auth_rules *rules, todo_err *err);

/* A user token signed with the PEM private key in the file at
 * private_key_path (RSA: RS256, EC P-256: ES256): todoctl and the tests
 * play the identity provider of a stack that verifies with public keys. */
char *auth_issue_signed(const char *private_key_path, const char *kid, const char *user, long ttl_s, long now,
                        const auth_rules *rules, todo_err *err);

/* Service tokens: todo's own services (todo-saga) act for a user with a
 * token of their own, signed with a separate service secret that user
 * tokens never share: HS256, `typ` "service", `sub` the service's name,
 * `act` the user it acts for, `scope` what it may do ("internal": the
 * commands users may not call), `exp`. A token that says `typ` "service"
 * but verifies only with the user secret is refused. */
#define AUTH_SERVICE_MAX 64
#define AUTH_SCOPE_INTERNAL "internal"              /* todo-saga: RestoreReminder, TriggerReminder, CreateNextOccurrence */
#define AUTH_SCOPE_REGISTRY_WRITE "registry:write"   /* operators: CheckSchema, RegisterSchema, SetMode */
#define AUTH_SCOPE_USERS_ERASE "users:erase"         /* operators: EraseUser */

typedef struct auth_identity {
    char user[AUTH_USER_MAX];       /* whose tasks the call touches */
    char service[AUTH_SERVICE_MAX]; /* "" for a user's own token */
    char scope[128];                /* a service token's scopes (space-separated) */
    long valid_from, valid_until;   /* the token's time checks pass for valid_from <= now < valid_until */
} auth_identity;

/* Issues a service token for service acting for user with scope. */
char *auth_issue_service(const char *service_secret, const char *service, const char *scope, const char *user,
                         long ttl_s, long now, todo_err *err);

/* auth_verify accepting both kinds: a user token (user_secret) or a service
 * token (service_secret; NULL or "": none accepted). */
int auth_verify_identity(const char *user_secret, const char *service_secret, const char *authorization, long now,
                         auth_identity *id, todo_err *err);

/* auth_verify_identity that also applies rules (NULL: none): user tokens
 * signed with RS256 or ES256 verified with rules->user_keys (user_secret
 * NULL or "": no HS256 user tokens), nbf and iat not in the future, a
 * lifetime of at most max_lifetime_s, and a user token's iss and aud, each
 * with leeway_s of clock skew. */
int auth_verify_with(const char *user_secret, const char *service_secret, const char *authorization, long now,
                     const auth_rules *rules, auth_identity *id, todo_err *err);

/* True when id holds scope (a service token's). */
bool auth_has_scope(const auth_identity *id, const char *scope);

/* True when user is a well-formed user id (see above). */
bool auth_user_valid(const char *user);

#endif
