/* redisx: see redisx.h. */
#include "redisx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define RETRY_AFTER_S 5 /* a failed Redis is tried again this much later */

int redisx_parse_url(const char *url, char *host, size_t cap, int *port, todo_err *err)
{
    const char *p = url;
    if (strncmp(p, "redis://", 8) != 0) goto bad;
    p += 8;
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
    return todo_err_set(err, TODO_EINVAL, "TODO_REDIS_URL must look like redis://host:port, got \"%.100s\"", url);
}

int redisx_init(redisx *r, const char *url, const char *comp, int timeout_ms, todo_err *err)
{
    memset(r, 0, sizeof *r);
    snprintf(r->comp, sizeof r->comp, "%s", comp);
    r->timeout_ms = timeout_ms;
    return redisx_parse_url(url, r->host, sizeof r->host, &r->port, err);
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
    log_info(r->comp, "redis fast path on", "host=%s port=%d", r->host, r->port);
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
