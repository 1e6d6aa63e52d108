/* redisx: see redisx.h. */
#include "redisx.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define RETRY_AFTER_S 5 /* a failed Redis is tried again this much later */

/* Copies n bytes of s percent-decoded into out (cap); false when it does not
 * fit or an escape is malformed. */
static int hex(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Copies n bytes of s percent-decoded into out (cap); false when it does not
 * fit or an escape is malformed. */
static bool decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n || hex(s[i + 1]) < 0 || hex(s[i + 2]) < 0) return false;
            c = (char)(hex(s[i + 1]) * 16 + hex(s[i + 2]));
            i += 2;
        }
        if (o + 1 >= cap) return false;
        out[o++] = c;
    }
    out[o] = '\0';
    return true;
}

int redisx_parse_url_auth(const char *url, char *host, size_t cap, int *port, char *user, size_t ucap, char *password,
                          size_t pcap, todo_err *err)
{
    const char *p = url;
    char scratch_user[64], scratch_password[256]; /* the credentials are checked even when not wanted */
    if (user == NULL) user = scratch_user, ucap = sizeof scratch_user;
    if (password == NULL) password = scratch_password, pcap = sizeof scratch_password;
    user[0] = password[0] = '\0';
    if (strncmp(p, "rediss://", 9) == 0)
        return todo_err_set(err, TODO_EINVAL,
                            "TODO_REDIS_URL: rediss:// (TLS) needs hiredis 1.0 or later with TLS; this build's hiredis "
                            "has none: reach Redis through a TLS tunnel on loopback (docs/SECURITY.md)");
    if (strncmp(p, "redis://", 8) != 0) goto bad;
    p += 8;
    const char *at = strchr(p, '@'), *slash = strchr(p, '/');
    if (at != NULL && (slash == NULL || at < slash)) { /* credentials */
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon != NULL ? colon + 1 : p; /* "redis://secret@h": a password alone */
        size_t ulen = colon != NULL ? (size_t)(colon - p) : 0;
        if (!decode(p, ulen, user, ucap) || !decode(pw, (size_t)(at - pw), password, pcap)) goto bad;
        p = at + 1;
    }
    size_t n = strcspn(p, ":/");
    if (n == 0 || n >= cap) goto bad;
    memcpy(host, p, n);
    host[n] = '\0';
    p += n;
    *port = 6379;
    if (*p == ':') {
        char *end;
        long v = strtol(p + 1, &end, 10);
        if (end == p + 1 || v < 1 || v > 65535 || (*end != '\0' && *end != '/')) goto bad;
        *port = (int)v;
    }
    return TODO_OK;
bad:
    /* Never the URL itself: it may hold a password. */
    return todo_err_set(err, TODO_EINVAL, "TODO_REDIS_URL must look like redis://[user[:password]@]host:port");
}

int redisx_parse_url(const char *url, char *host, size_t cap, int *port, todo_err *err)
{
    return redisx_parse_url_auth(url, host, cap, port, NULL, 0, NULL, 0, err);
}

int redisx_init(redisx *r, const char *url, const char *comp, int timeout_ms, todo_err *err)
{
    memset(r, 0, sizeof *r);
    snprintf(r->comp, sizeof r->comp, "%s", comp);
    r->timeout_ms = timeout_ms;
    return redisx_parse_url_auth(url, r->host, sizeof r->host, &r->port, r->user, sizeof r->user, r->password,
                                 sizeof r->password, err);
}

redisContext *redisx_conn(redisx *r)
{
    if (r->rc != NULL) return r->rc;
    if (time(NULL) < r->down_until) return NULL;
    struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
    r->rc = redisConnectWithTimeout(r->host, r->port, tv);
    if (r->rc == NULL || r->rc->err) {
        if (r->rc != NULL) redisFree(r->rc);
        r->rc = NULL;
        r->down_until = time(NULL) + RETRY_AFTER_S;
        return NULL;
    }
    redisSetTimeout(r->rc, tv);
    if (r->password[0] != '\0') { /* an ACL user (Redis 6+), or the password of "default" */
        redisReply *rep = r->user[0] != '\0' ? redisCommand(r->rc, "AUTH %s %s", r->user, r->password)
                                             : redisCommand(r->rc, "AUTH %s", r->password);
        bool ok = rep != NULL && rep->type == REDIS_REPLY_STATUS;
        char why[160];
        snprintf(why, sizeof why, "AUTH refused: %.120s",
                 rep == NULL ? "no answer" : rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
        if (rep != NULL) freeReplyObject(rep);
        if (!ok) {
            redisFree(r->rc);
            r->rc = NULL;
            r->down_until = time(NULL) + RETRY_AFTER_S;
            log_warn(r->comp, "redis fast path off; the database serves alone", "reason=\"%s\" retry_s=%d", why,
                     RETRY_AFTER_S);
            return NULL;
        }
    }
    log_info(r->comp, "redis fast path on", "host=%s port=%d user=%s", r->host, r->port,
             r->user[0] ? r->user : (r->password[0] ? "default" : "-"));
    return r->rc;
}

void redisx_drop(redisx *r, const char *why)
{
    if (r->rc != NULL) {
        log_warn(r->comp, "redis fast path off; the database serves alone", "reason=\"%s\" retry_s=%d", why,
                 RETRY_AFTER_S);
        redisFree(r->rc);
        r->rc = NULL;
    }
    r->down_until = time(NULL) + RETRY_AFTER_S;
}

void redisx_cleanup(redisx *r)
{
    if (r->rc != NULL) redisFree(r->rc);
    r->rc = NULL;
}
