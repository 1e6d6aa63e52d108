/* auth: see auth.h. The JWT encoding and HMAC are libjwt's. */
#include "auth.h"

#include <errno.h>
#include <stdio.h>
#include <jansson.h>
#include <jwt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define AUTH_TOKEN_MAX 4096

bool auth_user_valid(const char *user)
{
    size_t n = 0;
    if (user == NULL) return false;
    for (const char *p = user; *p != '\0'; p++, n++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '@' || c == ':' || c == '-';
        if (!ok || n >= AUTH_USER_MAX - 1) return false;
    }
    return n > 0;
}

/* Decodes the token of authorization with key (HS256 only) and checks
 * exp: *out on TODO_OK. bad_sig: the signature did not verify (another key
 * may). */
/* Claim name as whole seconds: 1 with *v, 0 when absent, -1 when present
 * but not an integer (libjwt's integer getter answers 0 for a real). */
static int int_claim(jwt_t *jwt, const char *name, long *v)
{
    char *text = jwt_get_grants_json(jwt, name), *end = NULL;
    if (text == NULL) return 0;
    errno = 0;
    long n = strtol(text, &end, 10);
    int rc = end != text && *end == '\0' && errno == 0 ? 1 : -1;
    if (rc == 1) *v = n;
    free(text);
    return rc;
}

static int decode(const char *key, const char *authorization, long now, const auth_rules *rules, jwt_t **out,
                  bool *bad_sig, todo_err *err)
{
    long leeway = rules != NULL && rules->leeway_s > 0 ? rules->leeway_s : 0;
    const char *token;
    long exp;
    *out = NULL;
    *bad_sig = false;
    if (authorization == NULL || authorization[0] == '\0')
        return todo_err_set(err, TODO_EUNAUTH, "missing authorization metadata: send \"authorization: Bearer <token>\"");
    if (strncasecmp(authorization, "Bearer ", 7) != 0)
        return todo_err_set(err, TODO_EUNAUTH, "authorization metadata is not a bearer token");
    token = authorization + 7;
    while (*token == ' ') token++;
    if (strlen(token) > AUTH_TOKEN_MAX)
        return todo_err_set(err, TODO_EUNAUTH, "bearer token is longer than %d bytes", AUTH_TOKEN_MAX);

    jwt_t *jwt = NULL;
    int rc = jwt_decode(&jwt, token, (const unsigned char *)key, (int)strlen(key));
    if (rc != 0 || jwt == NULL) {
        jwt_free(jwt);
        *bad_sig = true;
        return todo_err_set(err, TODO_EUNAUTH, "bearer token is malformed or its signature does not verify");
    }
    if (jwt_get_alg(jwt) != JWT_ALG_HS256) {
        jwt_free(jwt);
        return todo_err_set(err, TODO_EUNAUTH, "bearer token must be signed with HS256");
    }
    errno = 0;
    exp = jwt_get_grant_int(jwt, "exp");
    if (errno != 0 || exp <= 0) {
        jwt_free(jwt);
        return todo_err_set(err, TODO_EUNAUTH, "bearer token has no exp claim");
    }
    if (exp + leeway <= now) {
        jwt_free(jwt);
        return todo_err_set(err, TODO_EUNAUTH, "bearer token expired");
    }
    long nbf = 0, iat = 0;
    int has_nbf = int_claim(jwt, "nbf", &nbf), iat_state = int_claim(jwt, "iat", &iat);
    if (has_nbf < 0 || iat_state < 0) {
        jwt_free(jwt); /* present but not whole seconds: refused, never ignored */
        return todo_err_set(err, TODO_EUNAUTH, "bearer token nbf and iat must be integers (seconds)");
    }
    if (has_nbf && nbf > now + leeway) {
        jwt_free(jwt);
        return todo_err_set(err, TODO_EUNAUTH, "bearer token is not valid yet (nbf)");
    }
    bool has_iat = iat_state == 1;
    if (has_iat && iat > now + leeway) {
        jwt_free(jwt);
        return todo_err_set(err, TODO_EUNAUTH, "bearer token was issued in the future (iat)");
    }
    if (rules != NULL && rules->max_lifetime_s > 0 && (!has_iat || exp - iat > rules->max_lifetime_s)) {
        jwt_free(jwt);
        return todo_err_set(err, TODO_EUNAUTH,
                            has_iat ? "bearer token lives longer than %ld s (TODO_JWT_MAX_LIFETIME_S)"
                                    : "bearer token has no iat claim (TODO_JWT_MAX_LIFETIME_S needs it)",
                            rules->max_lifetime_s);
    }
    *out = jwt;
    return TODO_OK;
}

static bool set_(const char *s) { return s != NULL && s[0] != '\0'; }

/* A user token's iss and aud against rules. */
static int issuer_and_audience(jwt_t *jwt, const auth_rules *rules, todo_err *err)
{
    if (rules == NULL) return TODO_OK;
    if (set_(rules->issuer)) {
        const char *iss = jwt_get_grant(jwt, "iss");
        if (iss == NULL || strcmp(iss, rules->issuer) != 0)
            return todo_err_set(err, TODO_EUNAUTH, "bearer token iss is not %s (TODO_JWT_ISSUER)", rules->issuer);
    }
    if (set_(rules->audience)) {
        const char *aud = jwt_get_grant(jwt, "aud");
        bool ok = aud != NULL && strcmp(aud, rules->audience) == 0;
        if (!ok && aud == NULL) { /* an array of audiences */
            char *text = jwt_get_grants_json(jwt, "aud");
            json_t *a = text != NULL ? json_loads(text, 0, NULL) : NULL;
            size_t i;
            json_t *v;
            json_array_foreach(a, i, v) ok = ok || (json_is_string(v) && strcmp(json_string_value(v), rules->audience) == 0);
            json_decref(a);
            free(text);
        }
        if (!ok) return todo_err_set(err, TODO_EUNAUTH, "bearer token aud does not name %s (TODO_JWT_AUDIENCE)",
                                     rules->audience);
    }
    return TODO_OK;
}

static int user_claim(jwt_t *jwt, const char *claim, char user[AUTH_USER_MAX], todo_err *err)
{
    const char *v = jwt_get_grant(jwt, claim);
    if (!auth_user_valid(v))
        return todo_err_set(err, TODO_EUNAUTH, "bearer token %s must be a user id of 1..128 characters [A-Za-z0-9._@:-]",
                            claim);
    strcpy(user, v);
    return TODO_OK;
}

static bool is_service_token(jwt_t *jwt)
{
    const char *typ = jwt_get_grant(jwt, "typ");
    return typ != NULL && strcmp(typ, "service") == 0;
}

int auth_verify_identity(const char *user_secret, const char *service_secret, const char *authorization, long now,
                         auth_identity *id, todo_err *err)
{
    return auth_verify_with(user_secret, service_secret, authorization, now, NULL, id, err);
}

int auth_verify_with(const char *user_secret, const char *service_secret, const char *authorization, long now,
                     const auth_rules *rules, auth_identity *id, todo_err *err)
{
    jwt_t *jwt;
    bool bad_sig;
    memset(id, 0, sizeof *id);
    int rc = decode(user_secret, authorization, now, rules, &jwt, &bad_sig, err);
    if (rc == TODO_OK) {
        if (is_service_token(jwt)) rc = todo_err_set(err, TODO_EUNAUTH, "a service token must be signed with the service secret");
        else if ((rc = issuer_and_audience(jwt, rules, err)) == TODO_OK) rc = user_claim(jwt, "sub", id->user, err);
        jwt_free(jwt);
        return rc;
    }
    if (!bad_sig || service_secret == NULL || service_secret[0] == '\0') return rc;
    if (decode(service_secret, authorization, now, rules, &jwt, &bad_sig, err) != TODO_OK) {
        if (bad_sig) todo_err_set(err, TODO_EUNAUTH, "bearer token is malformed or its signature does not verify");
        return TODO_EUNAUTH;
    }
    const char *sub = jwt_get_grant(jwt, "sub"), *scope = jwt_get_grant(jwt, "scope");
    if (!is_service_token(jwt)) rc = todo_err_set(err, TODO_EUNAUTH, "a token signed with the service secret must be a service token");
    else if (sub == NULL || sub[0] == '\0' || strlen(sub) >= AUTH_SERVICE_MAX || !auth_user_valid(sub))
        rc = todo_err_set(err, TODO_EUNAUTH, "a service token's sub must name the service");
    else rc = user_claim(jwt, "act", id->user, err);
    if (rc == TODO_OK && scope != NULL && strlen(scope) >= sizeof id->scope)
        rc = todo_err_set(err, TODO_EUNAUTH, "a service token's scope is longer than %zu bytes", sizeof id->scope - 1);
    if (rc == TODO_OK) {
        snprintf(id->service, sizeof id->service, "%s", sub);
        snprintf(id->scope, sizeof id->scope, "%s", scope != NULL ? scope : "");
    }
    jwt_free(jwt);
    return rc;
}

bool auth_has_scope(const auth_identity *id, const char *scope)
{
    size_t n = strlen(scope);
    for (const char *p = id->scope; *p != '\0';) {
        while (*p == ' ') p++;
        const char *e = p;
        while (*e != '\0' && *e != ' ') e++;
        if ((size_t)(e - p) == n && strncmp(p, scope, n) == 0) return true;
        p = e;
    }
    return false;
}

int auth_verify(const char *secret, const char *authorization, long now, char user[AUTH_USER_MAX],
                todo_err *err)
{
    auth_identity id;
    int rc = auth_verify_identity(secret, NULL, authorization, now, &id, err);
    if (rc == TODO_OK) strcpy(user, id.user);
    return rc;
}

char *auth_issue(const char *secret, const char *user, long ttl_s, long now, todo_err *err)
{
    return auth_issue_for(secret, user, ttl_s, now, NULL, err);
}

char *auth_issue_for(const char *secret, const char *user, long ttl_s, long now, const auth_rules *rules,
                     todo_err *err)
{
    jwt_t *jwt = NULL;
    char *out = NULL;

    if (!auth_user_valid(user)) {
        todo_err_set(err, TODO_EINVAL, "user id must be 1..128 characters [A-Za-z0-9._@:-]");
        return NULL;
    }
    if (ttl_s <= 0) {
        todo_err_set(err, TODO_EINVAL, "token lifetime must be positive");
        return NULL;
    }
    if (jwt_new(&jwt) != 0 || jwt_add_grant(jwt, "sub", user) != 0 ||
        jwt_add_grant_int(jwt, "iat", now) != 0 || jwt_add_grant_int(jwt, "exp", now + ttl_s) != 0 ||
        (rules != NULL && set_(rules->issuer) && jwt_add_grant(jwt, "iss", rules->issuer) != 0) ||
        (rules != NULL && set_(rules->audience) && jwt_add_grant(jwt, "aud", rules->audience) != 0) ||
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)strlen(secret)) != 0 ||
        (out = jwt_encode_str(jwt)) == NULL) {
        todo_err_set(err, TODO_EINTERNAL, "could not encode the token");
    }
    jwt_free(jwt);
    return out;
}

char *auth_issue_service(const char *service_secret, const char *service, const char *scope, const char *user,
                         long ttl_s, long now, todo_err *err)
{
    jwt_t *jwt = NULL;
    char *out = NULL;
    if (!auth_user_valid(user) || !auth_user_valid(service) || strlen(service) >= AUTH_SERVICE_MAX) {
        todo_err_set(err, TODO_EINVAL, "service and user ids must be 1..128 characters [A-Za-z0-9._@:-]");
        return NULL;
    }
    if (ttl_s <= 0) {
        todo_err_set(err, TODO_EINVAL, "token lifetime must be positive");
        return NULL;
    }
    if (jwt_new(&jwt) != 0 || jwt_add_grant(jwt, "typ", "service") != 0 || jwt_add_grant(jwt, "sub", service) != 0 ||
        jwt_add_grant(jwt, "act", user) != 0 || jwt_add_grant(jwt, "scope", scope) != 0 ||
        jwt_add_grant_int(jwt, "iat", now) != 0 || jwt_add_grant_int(jwt, "exp", now + ttl_s) != 0 ||
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)service_secret, (int)strlen(service_secret)) != 0 ||
        (out = jwt_encode_str(jwt)) == NULL) {
        todo_err_set(err, TODO_EINTERNAL, "could not encode the token");
    }
    jwt_free(jwt);
    return out;
}
