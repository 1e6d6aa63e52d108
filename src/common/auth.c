/* auth: see auth.h. The JWT encoding, HMAC and signatures are libjwt's;
 * the keys are auth_keys.c's. */
#include "auth.h"

#include <errno.h>
#include <limits.h>
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

/* The token of an authorization header value, or NULL with err set. */
static const char *bearer(const char *authorization, todo_err *err)
{
    if (authorization == NULL || authorization[0] == '\0')
        return todo_err_set(err, TODO_EUNAUTH, "missing authorization metadata: send \"authorization: Bearer <token>\""), NULL;
    if (strncasecmp(authorization, "Bearer ", 7) != 0)
        return todo_err_set(err, TODO_EUNAUTH, "authorization metadata is not a bearer token"), NULL;
    const char *token = authorization + 7;
    while (*token == ' ') token++;
    if (strlen(token) > AUTH_TOKEN_MAX)
        return todo_err_set(err, TODO_EUNAUTH, "bearer token is longer than %d bytes", AUTH_TOKEN_MAX), NULL;
    return token;
}

/* Verifies token with key (key_len bytes: a secret for HS256, a PEM public
 * key otherwise), which must be signed with alg, and checks exp, nbf, iat
 * and the lifetime: *out on TODO_OK. bad_sig: the signature did not verify
 * (another key may). The caller has checked the header's alg is alg, so a
 * public key is never taken for an HMAC secret. */
/* A verified token, with the window of times its checks pass in
 * (auth_identity's valid_from and valid_until) in *window. */
static int decode(const char *key, size_t key_len, jwt_alg_t alg, const char *token, long now,
                  const auth_rules *rules, jwt_t **out, bool *bad_sig, long window[2], todo_err *err)
{
    long leeway = rules != NULL && rules->leeway_s > 0 ? rules->leeway_s : 0;
    long exp;
    *out = NULL;
    *bad_sig = false;
    if (key == NULL || key_len == 0) return todo_err_set(err, TODO_EINTERNAL, "no key to verify the token with");
    jwt_t *jwt = NULL;
    int rc = jwt_decode(&jwt, token, (const unsigned char *)key, (int)key_len);
    if (rc != 0 || jwt == NULL) {
        jwt_free(jwt);
        *bad_sig = true;
        return todo_err_set(err, TODO_EUNAUTH, "bearer token is malformed or its signature does not verify");
    }
    if (jwt_get_alg(jwt) != alg) {
        jwt_free(jwt);
        return todo_err_set(err, TODO_EUNAUTH, "bearer token must be signed with %s", jwt_alg_str(alg));
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
    /* The checks above that depend on now pass from max(nbf, iat) - leeway
     * until exp + leeway. */
    long from = has_nbf ? nbf : LONG_MIN;
    if (has_iat && iat > from) from = iat;
    window[0] = from == LONG_MIN ? LONG_MIN : from - leeway;
    window[1] = exp > LONG_MAX - leeway ? LONG_MAX : exp + leeway;
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

/* A user token signed with RS256 or ES256 (alg), verified with rules'
 * public keys: the key named by kid, or else each key of the type. */
static int verify_public(jwt_alg_t alg, const char *kid, const char *token, long now, const auth_rules *rules,
                         auth_identity *id, todo_err *err)
{
    const auth_keys *keys = rules != NULL ? rules->user_keys : NULL;
    auth_key_type type = alg == JWT_ALG_RS256 ? AUTH_KEY_RSA : AUTH_KEY_EC;
    const char *pem = NULL;
    jwt_t *jwt = NULL;
    bool bad_sig = true;
    int rc = TODO_EUNAUTH;
    long window[2] = {0, 0};
    if (auth_keys_count(keys) == 0)
        return todo_err_set(err, TODO_EUNAUTH, "bearer token is signed with %s, but user tokens here are HS256",
                            jwt_alg_str(alg));
    for (int i = auth_keys_pick(keys, kid, type, 0, &pem, err); i >= 0 && bad_sig;
         i = kid != NULL ? -1 : auth_keys_pick(keys, NULL, type, (size_t)i + 1, &pem, err)) {
        rc = decode(pem, strlen(pem), alg, token, now, rules, &jwt, &bad_sig, window, err);
        if (rc != TODO_OK && !bad_sig) return rc;
    }
    if (rc != TODO_OK) return rc;
    if (is_service_token(jwt)) rc = todo_err_set(err, TODO_EUNAUTH, "a service token must be signed with the service secret");
    else if ((rc = issuer_and_audience(jwt, rules, err)) == TODO_OK) rc = user_claim(jwt, "sub", id->user, err);
    jwt_free(jwt);
    id->valid_from = window[0];
    id->valid_until = window[1];
    return rc;
}

int auth_verify_with(const char *user_secret, const char *service_secret, const char *authorization, long now,
                     const auth_rules *rules, auth_identity *id, todo_err *err)
{
    jwt_t *jwt = NULL;
    bool bad_sig = true;
    int rc = TODO_EUNAUTH;
    long window[2] = {0, 0};
    memset(id, 0, sizeof *id);
    const char *token = bearer(authorization, err);
    if (token == NULL) return TODO_EUNAUTH;

    /* The header first, unverified, only to choose the key: a token is
     * verified with a key of the kind its alg names, never a public key
     * taken for an HMAC secret. */
    char kid[AUTH_KID_MAX] = "";
    jwt_alg_t alg = JWT_ALG_INVAL;
    if (jwt_decode(&jwt, token, NULL, 0) != 0 || jwt == NULL) {
        jwt_free(jwt);
        return todo_err_set(err, TODO_EUNAUTH, "bearer token is malformed or its signature does not verify");
    }
    const char *h_alg = jwt_get_header(jwt, "alg"), *h_kid = jwt_get_header(jwt, "kid");
    if (h_alg != NULL) alg = jwt_str_alg(h_alg);
    bool kid_ok = h_kid == NULL || (h_kid[0] != '\0' && strlen(h_kid) < sizeof kid);
    if (h_kid != NULL && kid_ok) snprintf(kid, sizeof kid, "%s", h_kid);
    jwt_free(jwt);
    jwt = NULL;
    if (!kid_ok) return todo_err_set(err, TODO_EUNAUTH, "bearer token kid must be 1..%d characters", AUTH_KID_MAX - 1);
    if (alg == JWT_ALG_RS256 || alg == JWT_ALG_ES256)
        return verify_public(alg, kid[0] != '\0' ? kid : NULL, token, now, rules, id, err);
    if (alg != JWT_ALG_HS256)
        return todo_err_set(err, TODO_EUNAUTH, "bearer token must be signed with HS256, RS256 or ES256");

    bool user_hs = user_secret != NULL && user_secret[0] != '\0';
    if (user_hs) {
        rc = decode(user_secret, strlen(user_secret), JWT_ALG_HS256, token, now, rules, &jwt, &bad_sig, window, err);
        if (rc == TODO_OK) {
            if (is_service_token(jwt)) rc = todo_err_set(err, TODO_EUNAUTH, "a service token must be signed with the service secret");
            else if ((rc = issuer_and_audience(jwt, rules, err)) == TODO_OK) rc = user_claim(jwt, "sub", id->user, err);
            jwt_free(jwt);
            id->valid_from = window[0];
            id->valid_until = window[1];
            return rc;
        }
        if (!bad_sig) return rc;
    }
    if (service_secret == NULL || service_secret[0] == '\0') {
        if (user_hs) return rc;
        return todo_err_set(err, TODO_EUNAUTH, "bearer token is signed with HS256, but user tokens here must be "
                                               "RS256 or ES256 (TODO_JWT_PUBLIC_KEYS)");
    }
    if (decode(service_secret, strlen(service_secret), JWT_ALG_HS256, token, now, rules, &jwt, &bad_sig, window, err) !=
        TODO_OK) {
        if (bad_sig)
            todo_err_set(err, TODO_EUNAUTH, user_hs ? "bearer token is malformed or its signature does not verify"
                                                    : "bearer token is signed with HS256 by a key this service does not "
                                                      "hold; user tokens here must be RS256 or ES256");
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
        id->valid_from = window[0];
        id->valid_until = window[1];
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
    return auth_issue_alg("HS256", secret, secret != NULL ? strlen(secret) : 0, NULL, user, ttl_s, now, rules, err);
}

char *auth_issue_alg(const char *alg, const char *key, size_t key_len, const char *kid, const char *user, long ttl_s,
                     long now, const auth_rules *rules, todo_err *err)
{
    jwt_t *jwt = NULL;
    char *out = NULL;
    jwt_alg_t a = jwt_str_alg(alg);

    if (!auth_user_valid(user)) {
        todo_err_set(err, TODO_EINVAL, "user id must be 1..128 characters [A-Za-z0-9._@:-]");
        return NULL;
    }
    if (ttl_s <= 0) {
        todo_err_set(err, TODO_EINVAL, "token lifetime must be positive");
        return NULL;
    }
    if ((a != JWT_ALG_HS256 && a != JWT_ALG_RS256 && a != JWT_ALG_ES256) || key == NULL || key_len == 0) {
        todo_err_set(err, TODO_EINVAL, "a user token is signed with HS256, RS256 or ES256 and a key");
        return NULL;
    }
    if (jwt_new(&jwt) != 0 || jwt_add_grant(jwt, "sub", user) != 0 ||
        jwt_add_grant_int(jwt, "iat", now) != 0 || jwt_add_grant_int(jwt, "exp", now + ttl_s) != 0 ||
        (rules != NULL && set_(rules->issuer) && jwt_add_grant(jwt, "iss", rules->issuer) != 0) ||
        (rules != NULL && set_(rules->audience) && jwt_add_grant(jwt, "aud", rules->audience) != 0) ||
        jwt_set_alg(jwt, a, (const unsigned char *)key, (int)key_len) != 0 ||
        (set_(kid) && jwt_add_header(jwt, "kid", kid) != 0) || (out = jwt_encode_str(jwt)) == NULL) {
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
