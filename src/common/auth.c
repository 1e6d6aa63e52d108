/* auth: see auth.h. The JWT encoding and HMAC are libjwt's. */
#include "auth.h"

#include <errno.h>
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

int auth_verify(const char *secret, const char *authorization, long now, char user[AUTH_USER_MAX],
                todo_err *err)
{
    jwt_t *jwt = NULL;
    const char *token, *sub;
    long exp;
    int rc;

    if (authorization == NULL || authorization[0] == '\0')
        return todo_err_set(err, TODO_EUNAUTH, "missing authorization metadata: send \"authorization: Bearer <token>\"");
    if (strncasecmp(authorization, "Bearer ", 7) != 0)
        return todo_err_set(err, TODO_EUNAUTH, "authorization metadata is not a bearer token");
    token = authorization + 7;
    while (*token == ' ') token++;
    if (strlen(token) > AUTH_TOKEN_MAX)
        return todo_err_set(err, TODO_EUNAUTH, "bearer token is longer than %d bytes", AUTH_TOKEN_MAX);

    rc = jwt_decode(&jwt, token, (const unsigned char *)secret, (int)strlen(secret));
    if (rc != 0 || jwt == NULL) {
        jwt_free(jwt);
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
    if (exp <= now) {
        jwt_free(jwt);
        return todo_err_set(err, TODO_EUNAUTH, "bearer token expired");
    }
    sub = jwt_get_grant(jwt, "sub");
    if (!auth_user_valid(sub)) {
        jwt_free(jwt);
        return todo_err_set(err, TODO_EUNAUTH,
                            "bearer token sub must be a user id of 1..128 characters [A-Za-z0-9._@:-]");
    }
    strcpy(user, sub);
    jwt_free(jwt);
    return TODO_OK;
}

char *auth_issue(const char *secret, const char *user, long ttl_s, long now, todo_err *err)
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
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)strlen(secret)) != 0 ||
        (out = jwt_encode_str(jwt)) == NULL) {
        todo_err_set(err, TODO_EINTERNAL, "could not encode the token");
    }
    jwt_free(jwt);
    return out;
}
