/*
 * auth: caller identity from `authorization: Bearer <JWT>`.
 *
 * Tokens are HS256 JSON Web Tokens whose `sub` is the user id and whose
 * `exp` (seconds since the epoch) is required and checked; every other
 * algorithm, including "none", is refused. The user id always comes from the
 * token, never from a request body. User ids are 1..128 characters of
 * [A-Za-z0-9._@:-], so they are safe as Kafka keys, log values and SQL
 * parameters alike. Thread-safe.
 */
#ifndef TODO_AUTH_H
#define TODO_AUTH_H

#include "todo_err.h"

#include <stdbool.h>

#define AUTH_USER_MAX 129 /* 128 characters and the NUL */

/* What a deployment asks of every token beyond its signature and exp
 * (docs/SECURITY.md). NULL rules: nothing more, no leeway. */
typedef struct auth_rules {
    const char *issuer;   /* "" or NULL: any; else a user token's iss must be it */
    const char *audience; /* "" or NULL: any; else a user token's aud must be it or list it */
    long max_lifetime_s;  /* > 0: iat is required and exp - iat may be at most this */
    long leeway_s;        /* clock skew allowed on exp, nbf and iat */
} auth_rules;

/* The rules of a todo_config (config.h): TODO_JWT_ISSUER, _AUDIENCE,
 * _MAX_LIFETIME_S, _LEEWAY_S. */
#define AUTH_RULES_OF(cfg)                                                                                 \
    ((auth_rules){(cfg)->jwt_issuer, (cfg)->jwt_audience, (cfg)->jwt_max_lifetime_s, (cfg)->jwt_leeway_s})

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

/* Service tokens: todo's own services (todo-saga) act for a user with a
 * token of their own, signed with a separate service secret that user
 * tokens never share: HS256, `typ` "service", `sub` the service's name,
 * `act` the user it acts for, `scope` what it may do ("internal": the
 * commands users may not call), `exp`. A token that says `typ` "service"
 * but verifies only with the user secret is refused. */
#define AUTH_SERVICE_MAX 64
#define AUTH_SCOPE_INTERNAL "internal"              /* todo-saga: RestoreReminder, TriggerReminder, CreateNextOccurrence */
#define AUTH_SCOPE_REGISTRY_WRITE "registry:write"   /* operators: CheckSchema, RegisterSchema, SetMode */

typedef struct auth_identity {
    char user[AUTH_USER_MAX];       /* whose tasks the call touches */
    char service[AUTH_SERVICE_MAX]; /* "" for a user's own token */
    char scope[128];                /* a service token's scopes (space-separated) */
} auth_identity;

/* Issues a service token for service acting for user with scope. */
char *auth_issue_service(const char *service_secret, const char *service, const char *scope, const char *user,
                         long ttl_s, long now, todo_err *err);

/* auth_verify accepting both kinds: a user token (user_secret) or a service
 * token (service_secret; NULL or "": none accepted). */
int auth_verify_identity(const char *user_secret, const char *service_secret, const char *authorization, long now,
                         auth_identity *id, todo_err *err);

/* auth_verify_identity that also applies rules (NULL: none): nbf and iat
 * not in the future, a lifetime of at most max_lifetime_s, and a user
 * token's iss and aud, each with leeway_s of clock skew. */
int auth_verify_with(const char *user_secret, const char *service_secret, const char *authorization, long now,
                     const auth_rules *rules, auth_identity *id, todo_err *err);

/* True when id holds scope (a service token's). */
bool auth_has_scope(const auth_identity *id, const char *scope);

/* True when user is a well-formed user id (see above). */
bool auth_user_valid(const char *user);

#endif
