/* proj_cache: see proj_cache.h. */
#include "proj_cache.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "redisx.h"

#define TIMEOUT_MS 100         /* no Redis call may hold the projector longer */
#define TTL_S 86400
#define MAX_NOTES 10000

typedef struct note {
    char id[40];
    int64_t version;
} note;

struct proj_cache {
    redisx redis;
    char group[128];
    note *notes;
    size_t n_notes;
    int64_t hits;
};

proj_cache *proj_cache_new(const char *url, const char *group, todo_err *err)
{
    proj_cache *c = calloc(1, sizeof *c);
    if (c == NULL) {
        todo_err_set(err, TODO_EINTERNAL, "out of memory");
        return NULL;
    }
    if (redisx_init(&c->redis, url, "projector", TIMEOUT_MS, err) != 0) {
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
    redisx_cleanup(&c->redis);
    free(c->notes);
    free(c);
}

void proj_cache_lookup(proj_cache *c, const char *const *ids, size_t n, int64_t *versions)
{
    for (size_t i = 0; i < n; i++) versions[i] = 0;
    redisContext *rc = c != NULL && n > 0 ? redisx_conn(&c->redis) : NULL;
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
        redisx_drop(&c->redis, rc->errstr);
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
    redisContext *rc = redisx_conn(&c->redis);
    size_t n = c->n_notes;
    c->n_notes = 0;
    if (rc == NULL) return;
    for (size_t i = 0; i < n; i++)
        redisAppendCommand(rc, "SET proj:%s:%s %" PRId64 " EX %d", c->group, c->notes[i].id, c->notes[i].version, TTL_S);
    for (size_t i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(rc, (void **)&r) != REDIS_OK) {
            redisx_drop(&c->redis, rc->errstr);
            return;
        }
        freeReplyObject(r);
    }
}

int64_t proj_cache_hits(const proj_cache *c) { return c != NULL ? c->hits : 0; }
