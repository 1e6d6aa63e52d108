/*
 * cmd_users: the user aggregate (write.users, migration 0029).
 *
 * Registration: a user's first command makes their data key (keystore.h)
 * and records user.registered before its own event. Every command after
 * that finds the key in the cache (or in keys.user_keys) and seals the
 * personal fields of its event with it (seal.h).
 *
 * EraseUser (scope users:erase): in one transaction, destroys the key
 * (keys.user_keys keeps the row, without it), purges the personal fields
 * the write model holds (task titles, descriptions, tags and categories,
 * inbox texts, notification addresses), and records user.erasure_requested
 * and user.erased. From then on the database refuses the user's events
 * (migration 0029's trigger), so a todo-command that still has the key
 * cached cannot write for them either.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_core.h"
#include "ctoken.h"
#include "event.h"
#include "keystore.h"
#include "lock_keys.h"
#include "log.h"
#include "pgx.h"
#include "seal.h"
#include "text.h"
#include "todo/v1/command.pb-c.h"
#include "todo/v1/events.pb-c.h"

#define REASON_MAX 500

void cmd_user_id(const char *user, char out[37])
{
    char name[AUTH_USER_MAX + 32];
    snprintf(name, sizeof name, "todo:user:%s", user);
    text_name_uuid(name, out);
}

typedef struct user_agg {
    int64_t registered_us;
} user_agg;

static int load_user(cmd_ctx *x, const char *id, void **agg, int64_t *version, todo_err *err)
{
    const char *p[1] = {id};
    PGresult *r = pgx_exec(x->t->pg, "select version from write.users where id = $1::uuid", 1, p, err);
    if (r == NULL) return err->code;
    int rc = PQntuples(r) == 0 ? todo_err_set(err, TODO_ENOTFOUND, "user %s is not registered", x->user) : TODO_OK;
    if (rc == TODO_OK) *version = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    *agg = arena_calloc(x->a, sizeof(user_agg));
    return rc;
}

static void user_state(cmd_ctx *x, const void *agg, int64_t version, int64_t now, const char **sql,
                       const char *const **params, int *n)
{
    (void)agg;
    const char **p = arena_alloc(x->a, 4 * sizeof *p);
    char id[37];
    cmd_user_id(x->user, id);
    p[0] = arena_strdup(x->a, id);
    p[1] = x->user;
    p[2] = arena_printf(x->a, "%" PRId64, version);
    p[3] = event_time_text(x->a, now);
    *params = p;
    *n = version == 1 ? 4 : 3;
    *sql = version == 1 ? "insert into write.users (id, user_id, version, registered_at) values ($1::uuid, $2,"
                          " $3::bigint, $4::timestamptz) on conflict do nothing returning 1"
                        : "update write.users set version = $3::bigint where id = $1::uuid and user_id = $2"
                          " and version = $3::bigint - 1 returning 1";
}

static const cmd_kind user_kind = {.aggregate_type = "user", .load = load_user, .state = user_state};

/* True when user has a write.users row (or the database could not say:
 * then registration is tried and its conflict ignored). */
static bool registered(cmd_ctx *x)
{
    char id[37];
    cmd_user_id(x->user, id);
    const char *p[1] = {id};
    todo_err err;
    PGresult *r = pgx_exec(x->t->pg, "select 1 from write.users where id = $1::uuid", 1, p, &err);
    bool yes = r != NULL && PQntuples(r) == 1;
    PQclear(r);
    return yes;
}

int cmd_user_key(cmd_ctx *x, seal_key *key, bool *register_user, todo_err *err)
{
    keystore *ks = x->t->app->keys;
    keystore_state state;
    bool from_db;
    *register_user = false;
    int rc = keystore_get_fresh(ks, x->t->pg, x->user, key, &state, &from_db, err);
    if (rc != TODO_OK) return rc;
    if (state == KEYSTORE_DESTROYED)
        return todo_err_set(err, TODO_EPRECOND, "user %s was erased: their data is gone and the id cannot be used again",
                            x->user);
    if (state == KEYSTORE_KEY) {
        /* Read from the database: a key made by a command refused later
         * (an event over the limit) left the user unregistered. */
        *register_user = from_db && !registered(x);
        return TODO_OK;
    }
    bool created = false;
    if ((rc = keystore_create(ks, x->t->pg, x->user, key, &created, err)) != TODO_OK) return rc;
    *register_user = created || !registered(x);
    return TODO_OK;
}

int cmd_user_register(cmd_ctx *x, todo_err *err)
{
    /* user.registered, saved on its own (never under the command's request
     * id), before the command's event. */
    char id[37];
    cmd_user_id(x->user, id);
    int64_t now = event_now_us();
    Todo__V1__UserRegistered ev = TODO__V1__USER_REGISTERED__INIT;
    ev.id = id;
    ev.user_id = x->user;
    ev.registered_at = event_timestamp(x->a, now);
    cmd_request req = x->req;
    x->req.request_id = "";
    ProtobufCMessage *resp = NULL;
    int rc = cmd_save(x, &user_kind, id, arena_calloc(x->a, sizeof(user_agg)), 1, now, "user.registered", 1, &ev.base,
                      &resp, err);
    x->req = req;
    if (rc == TODO_ECONFLICT) return TODO_OK; /* registered meanwhile */
    if (rc == TODO_OK) log_info("command", "user registered", "user=%s", x->user);
    return rc;
}

/* Saves one event of the user aggregate at version inside the caller's
 * transaction. */
static int save_in_tx(cmd_ctx *x, const char *id, int64_t version, int64_t now, const char *type,
                      const ProtobufCMessage *event, char event_id[37], int64_t *position, todo_err *err)
{
    uint8_t *env;
    size_t env_len;
    int rc;
    if ((rc = cmd_encode(x, "user", id, version, now, type, 1, event, event_id, &env, &env_len, err)) != 0) return rc;
    cmd_write w = {.aggregate_type = "user", .aggregate_id = id, .user_id = x->user, .version = version,
                   .event_id = event_id, .event_type = type, .schema_version = 1, .envelope = env,
                   .envelope_len = env_len};
    user_state(x, NULL, version, now, &w.state_sql, &w.state_params, &w.n_state);
    pgx_stmt st;
    cmd_store_save_stmt(x->a, &w, &st);
    PGresult *r = pgx_execb(x->t->pg, st.sql, st.n, st.values, st.lengths, st.formats, err);
    if (r == NULL) return err->code;
    rc = cmd_store_saved(r, &w, position, err);
    PQclear(r);
    return rc;
}

/* The erasure's transaction; *version the user aggregate's version after
 * it, *already when the user was erased before (nothing done). */
static int erase(cmd_ctx *x, const char *reason, int64_t *version, char event_id[37], bool *already, todo_err *err)
{
    char id[37];
    cmd_user_id(x->user, id);
    int64_t now = event_now_us(), position;
    const char *u[1] = {x->user};
    const char *reg[1] = {id};
    PGresult *r;
    int rc;
    *already = false;
    if ((rc = pgx_cmd(x->t->pg, "begin", 0, NULL, err)) != 0) return rc;
    /* The key first (the trigger then refuses the user's other events),
     * under its row lock: a concurrent EraseUser waits here and then finds
     * the user erased. */
    if ((rc = pgx_cmd(x->t->pg,
                      "insert into keys.user_keys (user_id, wrapped, destroyed_at) values ($1, null, now())"
                      " on conflict (user_id) do nothing",
                      1, u, err)) != 0)
        goto fail;
    if ((r = pgx_exec(x->t->pg, "select wrapped is null from keys.user_keys where user_id = $1 for update", 1, u,
                      err)) == NULL)
        goto fail_rc;
    /* The projections' batches in flight (each holds its projection's swap
     * lock shared) finish first, and the next ones wait for this commit:
     * no batch that read the user as not erased commits after it, so
     * user.erased, published after it, deletes everything they wrote. */
    if ((rc = pgx_cmd(x->t->pg,
                      "select pg_advisory_xact_lock(" LOCK_PROJ_SWAP "), pg_advisory_xact_lock(" LOCK_ANALYTICS_SWAP ")",
                      0, NULL, err)) != 0) {
        PQclear(r);
        goto fail;
    }
    bool destroyed = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    /* Erased before: the key gone and the erasure recorded (read after the
     * lock, so an erasure that held it is seen committed). */
    if (destroyed) {
        if ((r = pgx_exec(x->t->pg, "select count(*) from write.users where user_id = $1 and erased_at is not null", 1,
                          u, err)) == NULL)
            goto fail_rc;
        *already = PQgetvalue(r, 0, 0)[0] != '0';
        PQclear(r);
    }
    if (!*already && (rc = pgx_cmd(x->t->pg,
                                   "update keys.user_keys set wrapped = null, destroyed_at = coalesce(destroyed_at, now())"
                                   " where user_id = $1",
                                   1, u, err)) != 0)
        goto fail;
    if ((r = pgx_exec(x->t->pg, "select version from write.users where id = $1::uuid for update", 1, reg, err)) == NULL)
        goto fail_rc;
    *version = PQntuples(r) == 1 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0; /* 0: never registered */
    PQclear(r);
    if (*already) {
        event_id[0] = '\0';
        return pgx_cmd(x->t->pg, "commit", 0, NULL, err);
    }
    /* The write model's personal fields. */
    static const char *const purge[] = {
        "update write.tasks set title = '', description = '', tags = '{}', category = '' where user_id = $1",
        "update write.inbox set subject = '', body = '' where user_id = $1",
        "update write.user_profiles set email = '', webhook_url = '' where user_id = $1",
    };
    for (size_t i = 0; i < sizeof purge / sizeof purge[0]; i++)
        if ((rc = pgx_cmd(x->t->pg, purge[i], 1, u, err)) != 0) goto fail;
    Todo__V1__UserErasureRequested req = TODO__V1__USER_ERASURE_REQUESTED__INIT;
    req.id = id;
    req.user_id = x->user;
    req.requested_by = (char *)x->actor;
    req.reason = (char *)reason;
    Todo__V1__UserErased done = TODO__V1__USER_ERASED__INIT;
    done.id = id;
    done.user_id = x->user;
    done.erased_at = event_timestamp(x->a, now);
    char first_id[37];
    const char *fin[4] = {id, x->actor, reason, NULL};
    if ((rc = save_in_tx(x, id, *version + 1, now, "user.erasure_requested", &req.base, first_id, &position, err)) != 0 ||
        (rc = save_in_tx(x, id, *version + 2, now, "user.erased", &done.base, event_id, &position, err)) != 0 ||
        (rc = pgx_cmd(x->t->pg,
                      "update write.users set erased_at = now(), erased_by = $2, reason = $3 where id = $1::uuid", 3,
                      fin, err)) != 0 ||
        (rc = pgx_cmd(x->t->pg, "commit", 0, NULL, err)) != 0)
        goto fail;
    *version += 2;
    return TODO_OK;
fail_rc:
    rc = err->code;
fail:
    pgx_cmd(x->t->pg, "rollback", 0, NULL, NULL);
    return rc;
}

int cmd_erase_user(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__EraseUserRequest *rq = (const Todo__V1__EraseUserRequest *)req;
    cmd_ctx x = {0};
    int rc;
    if ((rc = cmd_begin(&x, c, "EraseUser", "", req, err)) != 0) return rc;
    if (!grpcx_call_has_scope(c, AUTH_SCOPE_USERS_ERASE))
        return todo_err_set(err, TODO_EDENIED, "EraseUser needs a service token with scope %s (todoctl user erase)",
                            AUTH_SCOPE_USERS_ERASE);
    size_t n = strlen(rq->user_id);
    if (n == 0 || n >= AUTH_USER_MAX)
        return todo_err_set(err, TODO_EINVAL, "user_id: 1 to %d characters, got %zu", AUTH_USER_MAX - 1, n);
    if (strlen(rq->reason) > REASON_MAX)
        return todo_err_set(err, TODO_EINVAL, "reason: at most %d characters, got %zu", REASON_MAX, strlen(rq->reason));
    /* The user erased is the request's, whoever the token acts for. */
    snprintf(x.user, sizeof x.user, "%s", rq->user_id);
    snprintf(x.t->audit_user, sizeof x.t->audit_user, "%s", x.user);
    int64_t version = 0;
    char event_id[37];
    bool already;
    if ((rc = erase(&x, rq->reason, &version, event_id, &already, err)) != 0) return cmd_storage_error(&x, err);
    keystore_forget(x.t->app->keys, x.user);
    log_info("command", already ? "user already erased" : "user erased", "user=%s by=%s", x.user, x.actor);
    char id[37];
    cmd_user_id(x.user, id);
    Todo__V1__CommandReply *rp = arena_alloc(x.a, sizeof *rp);
    todo__v1__command_reply__init(rp);
    rp->id = arena_strdup(x.a, id);
    rp->version = version;
    rp->event_id = arena_strdup(x.a, event_id);
    rp->consistency_token = arena_alloc(x.a, CTOKEN_MAX);
    ctoken_encode(&x.t->cfg->token_key, x.user, id, version, rp->consistency_token);
    *resp = &rp->base;
    return TODO_OK;
}
