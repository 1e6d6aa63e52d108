/* auth_cache: see auth_cache.h. */
#include "auth_cache.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    uint64_t hash;
    size_t len;          /* 0: empty */
    char *authorization; /* len bytes, malloc'ed */
    auth_identity id;
} entry;

struct auth_cache {
    size_t mask;
    entry *slots;
    uint64_t hits, misses;
};

auth_cache *auth_cache_new(size_t slots)
{
    if (slots == 0) return NULL;
    size_t n = 1;
    while (n < slots) n <<= 1;
    auth_cache *c = calloc(1, sizeof *c);
    if (c == NULL) return NULL;
    c->slots = calloc(n, sizeof *c->slots);
    if (c->slots == NULL) {
        free(c);
        return NULL;
    }
    c->mask = n - 1;
    return c;
}

void auth_cache_free(auth_cache *c)
{
    if (c == NULL) return;
    for (size_t i = 0; i <= c->mask; i++) free(c->slots[i].authorization);
    free(c->slots);
    free(c);
}

/* FNV-1a, 64 bits: picks the slot; equality is decided by the bytes. */
static uint64_t hash_of(const char *s, size_t n)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

/* Equal bytes, in a time that does not depend on where they differ: the
 * stored value is another caller's token. */
static bool same_bytes(const char *a, const char *b, size_t n)
{
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++) d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

int auth_cache_verify(auth_cache *c, const char *user_secret, const char *service_secret, const char *authorization,
                      long now, const auth_rules *rules, auth_identity *id, todo_err *err)
{
    size_t len = authorization != NULL ? strlen(authorization) : 0;
    if (c == NULL || len == 0 || len > AUTH_CACHE_TOKEN_MAX)
        return auth_verify_with(user_secret, service_secret, authorization, now, rules, id, err);
    uint64_t h = hash_of(authorization, len);
    entry *e = &c->slots[h & c->mask];
    if (e->len == len && e->hash == h && same_bytes(e->authorization, authorization, len) &&
        e->id.valid_from <= now && now < e->id.valid_until) {
        *id = e->id;
        c->hits++;
        return TODO_OK;
    }
    c->misses++;
    int rc = auth_verify_with(user_secret, service_secret, authorization, now, rules, id, err);
    if (rc != TODO_OK) return rc;
    char *copy = e->len == len ? e->authorization : realloc(e->authorization, len);
    if (copy == NULL) return rc; /* not kept; the answer stands */
    memcpy(copy, authorization, len);
    e->authorization = copy;
    e->len = len;
    e->hash = h;
    e->id = *id;
    return rc;
}

uint64_t auth_cache_hits(const auth_cache *c) { return c != NULL ? c->hits : 0; }
uint64_t auth_cache_misses(const auth_cache *c) { return c != NULL ? c->misses : 0; }
