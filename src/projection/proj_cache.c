/* proj_cache: see proj_cache.h. */
#include "proj_cache.h"

#include <hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define RETRY_AFTER_S 5        /* a failed Redis is tried again this much later */
#define TIMEOUT_MS 100         /* no Redis call may hold the projector longer */
#define TTL_S 86400
#define MAX_NOTES 10000

typedef struct note {
    char id[40];
    int64_t version;
} note;

struct proj_cache {
    char host[256];
    int port;
    char group[128];
    redisContext *rc;
    time_t down_until;
    note *notes;
    size_t n_notes;
    int64_t hits;
};

int proj_cache_parse_url(const char *url, char *host, size_t cap, int *port, todo_err *err)
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

static void drop(proj_cache *c, const char *why)
{
    if (c->rc != NULL) {
        log_warn("projector", "redis fast path off; the database check serves alone", "reason=\"%s\" retry_s=%d",
                 why, RETRY_AFTER_S);
        redisFree(c->rc);
        c->rc = NULL;
    }
    c->down_until = time(NULL) + RETRY_AFTER_S;
}

/* A usable connection, or NULL while Redis is considered down. */
static redisContext *conn(proj_cache *c)
{
    if (c->rc != NULL) return c->rc;
    if (time(NULL) < c->down_until) return NULL;
    struct timeval tv = {0, TIMEOUT_MS * 1000};
    c->rc = redisConnectWithTimeout(c->host, c->port, tv);
    if (c->rc == NULL || c->rc->err) {
        if (c->rc != NULL) redisFree(c->rc);
        c->rc = NULL;
        c->down_until = time(NULL) + RETRY_AFTER_S;
        return NULL;
    }
    redisSetTimeout(c->rc, tv);
    log_info("projector", "redis fast path on", "host=%s port=%d", c->host, c->port);
    return c->rc;
}

proj_cache *proj_cache_new(const char *url, const char *group, todo_err *err)
{
    proj_cache *c = calloc(1, sizeof *c);
    if (c == NULL) {
        todo_err_set(err, TODO_EINTERNAL, "out of memory");
        return NULL;
    }
    if (proj_cache_parse_url(url, c->host, sizeof c->host, &c->port, err) != 0) {
        free(c);
        return NULL;
    }
    snprintf(c->group, sizeof c->group, "%s", group);
    c->notes = calloc(MAX_NOTES, sizeof *c->notes);
    if (c->notes == NULL) {
        free(c);
        todo_err_set(err, TODO_EINTERNAL, "out of memory");
        return NULL;
    }
    return c;
}

void proj_cache_free(proj_cache *c)
{
    if (c == NULL) return;
    if (c->rc != NULL) redisFree(c->rc);
    free(c->notes);
    free(c);
}

void proj_cache_lookup(proj_cache *c, const char *const *ids, size_t n, int64_t *versions)
{
    for (size_t i = 0; i < n; i++) versions[i] = 0;
    redisContext *rc = c != NULL && n > 0 ? conn(c) : NULL;
    if (rc == NULL) return;
    const char **argv = malloc((n + 1) * sizeof *argv);
    char **keys = malloc(n * sizeof *keys);
    if (argv == NULL || keys == NULL) {
        free(argv);
        free(keys);
        return;
    }
    argv[0] = "MGET";
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(c->group) + strlen(ids[i]) + 8;
        keys[i] = malloc(len);
        if (keys[i] != NULL) snprintf(keys[i], len, "proj:%s:%s", c->group, ids[i]);
        argv[i + 1] = keys[i] != NULL ? keys[i] : "proj:";
    }
    redisReply *r = redisCommandArgv(rc, (int)n + 1, argv, NULL);
    if (r == NULL) {
        drop(c, rc->errstr);
    } else {
        if (r->type == REDIS_REPLY_ARRAY && r->elements == n)
            for (size_t i = 0; i < n; i++)
                if (r->element[i]->type == REDIS_REPLY_STRING) {
                    versions[i] = strtoll(r->element[i]->str, NULL, 10);
                    c->hits++;
                }
        freeReplyObject(r);
    }
    for (size_t i = 0; i < n; i++) free(keys[i]);
    free(keys);
    free(argv);
}

void proj_cache_note(proj_cache *c, const char *aggregate_id, int64_t version)
{
    if (c == NULL || c->n_notes == MAX_NOTES) return;
    note *n = &c->notes[c->n_notes++];
    snprintf(n->id, sizeof n->id, "%s", aggregate_id);
    n->version = version;
}

void proj_cache_discard(proj_cache *c)
{
    if (c != NULL) c->n_notes = 0;
}

void proj_cache_flush(proj_cache *c)
{
    if (c == NULL || c->n_notes == 0) return;
    redisContext *rc = conn(c);
    size_t n = c->n_notes;
    c->n_notes = 0;
    if (rc == NULL) return;
    for (size_t i = 0; i < n; i++)
        redisAppendCommand(rc, "SET proj:%s:%s %" PRId64 " EX %d", c->group, c->notes[i].id, c->notes[i].version, TTL_S);
    for (size_t i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(rc, (void **)&r) != REDIS_OK) {
            drop(c, rc->errstr);
            return;
        }
        freeReplyObject(r);
    }
}

int64_t proj_cache_hits(const proj_cache *c) { return c != NULL ? c->hits : 0; }
