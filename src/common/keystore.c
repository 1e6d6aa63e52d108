/* keystore: see keystore.h. */
#include "keystore.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "pgx.h"

#define SLOTS 4096   /* users cached at most (a slot is reused when two hash alike) */
#define USER_MAX 256 /* longer user ids are not cached */

typedef struct slot {
    char user[USER_MAX];
    keystore_state state;
    seal_key key;
    time_t until;
} slot;

struct keystore {
    seal_key master;
    int ttl_s;
    pthread_mutex_t mu;
    slot *slots;
};

keystore *keystore_new(const seal_key *master, int ttl_s)
{
    keystore *ks = calloc(1, sizeof *ks);
    if (ks == NULL || (ks->slots = calloc(SLOTS, sizeof *ks->slots)) == NULL) {
        free(ks);
        return NULL;
    }
    ks->master = *master;
    ks->ttl_s = ttl_s;
    pthread_mutex_init(&ks->mu, NULL);
    return ks;
}

void keystore_free(keystore *ks)
{
    if (ks == NULL) return;
    OPENSSL_cleanse(ks->slots, SLOTS * sizeof *ks->slots); /* no key left behind in freed memory */
    OPENSSL_cleanse(&ks->master, sizeof ks->master);
    pthread_mutex_destroy(&ks->mu);
    free(ks->slots);
    free(ks);
}

static slot *slot_of(keystore *ks, const char *user)
{
    unsigned long h = 5381;
    for (const unsigned char *c = (const unsigned char *)user; *c != '\0'; c++) h = h * 33 + *c;
    return &ks->slots[h % SLOTS];
}

static bool cached(keystore *ks, const char *user, seal_key *out, keystore_state *state)
{
    bool hit = false;
    pthread_mutex_lock(&ks->mu);
    slot *s = slot_of(ks, user);
    if (s->user[0] != '\0' && strcmp(s->user, user) == 0 && s->until > time(NULL)) {
        *state = s->state;
        if (s->state == KEYSTORE_KEY) *out = s->key;
        hit = true;
    }
    pthread_mutex_unlock(&ks->mu);
    return hit;
}

static void remember(keystore *ks, const char *user, const seal_key *key, keystore_state state)
{
    if (strlen(user) >= USER_MAX) return;
    pthread_mutex_lock(&ks->mu);
    slot *s = slot_of(ks, user);
    snprintf(s->user, sizeof s->user, "%s", user);
    s->state = state;
    if (key != NULL) s->key = *key;
    else OPENSSL_cleanse(&s->key, sizeof s->key);
    s->until = time(NULL) + ks->ttl_s;
    pthread_mutex_unlock(&ks->mu);
}

void keystore_forget(keystore *ks, const char *user)
{
    pthread_mutex_lock(&ks->mu);
    slot *s = slot_of(ks, user);
    if (strcmp(s->user, user) == 0) OPENSSL_cleanse(s, sizeof *s);
    pthread_mutex_unlock(&ks->mu);
}

/* Opens a wrapped key (bytea as text, "\x..." hex) of user. */
static int unwrap(keystore *ks, const char *user, const char *hex, seal_key *out, todo_err *err)
{
    size_t n;
    unsigned char *w = PQunescapeBytea((const unsigned char *)hex, &n);
    if (w == NULL) return todo_err_set(err, TODO_EINTERNAL, "out of memory");
    arena *a = arena_new();
    uint8_t *plain;
    size_t len;
    int rc = a == NULL ? todo_err_set(err, TODO_EINTERNAL, "out of memory")
                       : seal_open_bytes(&ks->master, w, n, user, a, &plain, &len, err);
    PQfreemem(w);
    if (rc == TODO_OK) {
        if (len == SEAL_KEY_LEN) memcpy(out->k, plain, SEAL_KEY_LEN);
        else rc = todo_err_set(err, TODO_EINVAL, "a wrapped key of the wrong length");
        OPENSSL_cleanse(plain, len);
    }
    arena_free(a);
    if (rc != TODO_OK)
        return todo_err_set(err, TODO_EINTERNAL, "the data key of user %s does not open with TODO_MASTER_KEY: %s", user,
                            err->msg);
    return TODO_OK;
}

int keystore_get(keystore *ks, PGconn *pg, const char *user, seal_key *out, keystore_state *state, todo_err *err)
{
    bool from_db;
    return keystore_get_fresh(ks, pg, user, out, state, &from_db, err);
}

int keystore_get_fresh(keystore *ks, PGconn *pg, const char *user, seal_key *out, keystore_state *state,
                       bool *from_db, todo_err *err)
{
    *from_db = false;
    if (cached(ks, user, out, state)) return TODO_OK;
    *from_db = true;
    const char *p[1] = {user};
    PGresult *r = pgx_exec(pg, "select wrapped is null, wrapped from keys.user_keys where user_id = $1", 1, p, err);
    if (r == NULL) return err->code;
    int rc = TODO_OK;
    if (PQntuples(r) == 0) {
        *state = KEYSTORE_NONE;
    } else if (PQgetvalue(r, 0, 0)[0] == 't') {
        *state = KEYSTORE_DESTROYED;
    } else {
        *state = KEYSTORE_KEY;
        rc = unwrap(ks, user, PQgetvalue(r, 0, 1), out, err);
    }
    PQclear(r);
    if (rc == TODO_OK) remember(ks, user, *state == KEYSTORE_KEY ? out : NULL, *state);
    return rc;
}

int keystore_create(keystore *ks, PGconn *pg, const char *user, seal_key *out, bool *created, todo_err *err)
{
    keystore_state state;
    int rc;
    *created = false;
    if ((rc = keystore_get(ks, pg, user, out, &state, err)) != 0) return rc;
    if (state == KEYSTORE_DESTROYED)
        return todo_err_set(err, TODO_EPRECOND, "user %s was erased: their data is gone and the id cannot be used again",
                            user);
    if (state == KEYSTORE_KEY) return TODO_OK;
    seal_key dk;
    arena *a = arena_new();
    uint8_t *w;
    size_t n;
    if (a == NULL) return todo_err_set(err, TODO_EINTERNAL, "out of memory");
    if ((rc = seal_key_new(&dk, err)) != 0 || (rc = seal_bytes(&ks->master, dk.k, SEAL_KEY_LEN, user, a, &w, &n, err)) != 0) {
        OPENSSL_cleanse(&dk, sizeof dk);
        arena_free(a);
        return rc;
    }
    const char *vals[2] = {user, (const char *)w};
    int lens[2] = {0, (int)n}, fmts[2] = {0, 1};
    PGresult *r = pgx_execb(pg,
                            "insert into keys.user_keys (user_id, wrapped) values ($1, $2) on conflict (user_id) do nothing"
                            " returning 1",
                            2, vals, lens, fmts, err);
    arena_free(a);
    if (r == NULL) {
        OPENSSL_cleanse(&dk, sizeof dk);
        return err->code;
    }
    *created = PQntuples(r) == 1;
    PQclear(r);
    if (*created) {
        *out = dk;
        OPENSSL_cleanse(&dk, sizeof dk);
        remember(ks, user, out, KEYSTORE_KEY);
        return TODO_OK;
    }
    OPENSSL_cleanse(&dk, sizeof dk);
    /* Another writer made it first: read theirs. */
    keystore_forget(ks, user);
    if ((rc = keystore_get(ks, pg, user, out, &state, err)) != 0) return rc;
    if (state == KEYSTORE_KEY) return TODO_OK;
    return todo_err_set(err, state == KEYSTORE_DESTROYED ? TODO_EPRECOND : TODO_EINTERNAL,
                        "user %s was erased meanwhile, or the key vanished", user);
}
