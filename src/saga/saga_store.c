/* saga_store: see saga_store.h. */
#include "saga_store.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "keystore.h"
#include "lock_keys.h"
#include "log.h"
#include "pgx.h"
#include "seal.h"
#include "text.h"
#include "trace.h"

/* "{a,b,c}" of n ints. */
static char *int_array(arena *a, const int *v, int n)
{
    char *out = arena_alloc(a, (size_t)n * 12 + 3);
    size_t len = 0;
    out[len++] = '{';
    for (int i = 0; i < n; i++) len += (size_t)sprintf(out + len, "%s%d", i ? "," : "", v[i]);
    out[len++] = '}';
    out[len] = '\0';
    return out;
}

/* The columns of a row, in the order saga_store_load and _claim select them. */
#define COLUMNS                                                                                                  \
    "id::text, type, state, step, array_to_string(step_states, ','), array_to_string(attempts, ','),"           \
    " array_to_string(step_errors, E'\\x1f'), error, array_to_string(ctx_keys, E'\\x1f'),"                      \
    " array_to_string(ctx_values, E'\\x1f'), user_id, cardinality(step_states)"

/* Splits s at sep into at most max numbers. */
static int split_ints(const char *s, int *out, int max)
{
    int n = 0;
    while (*s != '\0' && n < max) {
        char *end;
        out[n++] = (int)strtol(s, &end, 10);
        s = *end == ',' ? end + 1 : end;
        if (end == s && *s != '\0') break;
    }
    return n;
}

static int from_row(const PGresult *res, int row, saga_record *r, char *user, size_t user_cap, todo_err *err)
{
    arena *a = arena_new();
    char **parts;
    size_t n;
    int v[SAGA_MAX_STEPS];
    memset(r, 0, sizeof *r);
    snprintf(r->id, sizeof r->id, "%s", PQgetvalue(res, row, 0));
    snprintf(r->type, sizeof r->type, "%s", PQgetvalue(res, row, 1));
    if (saga_state_parse(PQgetvalue(res, row, 2), &r->state) != 0) {
        arena_free(a);
        return todo_err_set(err, TODO_EINTERNAL, "saga %s has an unknown state %s", r->id, PQgetvalue(res, row, 2));
    }
    r->step = atoi(PQgetvalue(res, row, 3));
    int k = split_ints(PQgetvalue(res, row, 4), v, SAGA_MAX_STEPS);
    for (int i = 0; i < k; i++) r->steps[i] = (saga_step_state)v[i];
    k = split_ints(PQgetvalue(res, row, 5), v, SAGA_MAX_STEPS);
    for (int i = 0; i < k; i++) r->attempts[i] = v[i];
    pgx_split(a, PQgetvalue(res, row, 6), '\x1f', &parts, &n);
    for (size_t i = 0; i < n && i < SAGA_MAX_STEPS; i++) snprintf(r->errors[i], SAGA_ERROR_MAX, "%s", parts[i]);
    snprintf(r->error, sizeof r->error, "%s", PQgetvalue(res, row, 7));
    char **keys, **values;
    size_t nk, nv;
    pgx_split(a, PQgetvalue(res, row, 8), '\x1f', &keys, &nk);
    pgx_split(a, PQgetvalue(res, row, 9), '\x1f', &values, &nv);
    for (size_t i = 0; i < nk && i < SAGA_MAX_CTX; i++) saga_record_set(r, keys[i], i < nv ? values[i] : "");
    if (user != NULL) snprintf(user, user_cap, "%s", PQgetvalue(res, row, 10));
    arena_free(a);
    return TODO_OK;
}

/* The parameters $2.. of a record: state, step, step_states, attempts,
 * step_errors, error, ctx_keys, ctx_values. */
static void params_of(arena *a, const saga_record *r, int n_steps, const char **p)
{
    int states[SAGA_MAX_STEPS];
    char *errors[SAGA_MAX_STEPS], *keys[SAGA_MAX_CTX], *values[SAGA_MAX_CTX];
    for (int i = 0; i < n_steps; i++) {
        states[i] = (int)r->steps[i];
        errors[i] = (char *)r->errors[i];
    }
    for (int i = 0; i < r->n_ctx; i++) {
        keys[i] = (char *)r->keys[i];
        values[i] = (char *)r->values[i];
    }
    p[0] = saga_state_name(r->state);
    p[1] = arena_printf(a, "%d", r->step);
    p[2] = int_array(a, states, n_steps);
    p[3] = int_array(a, r->attempts, n_steps);
    p[4] = pgx_text_array(a, errors, (size_t)n_steps);
    p[5] = r->error;
    p[6] = pgx_text_array(a, keys, (size_t)r->n_ctx);
    p[7] = pgx_text_array(a, values, (size_t)r->n_ctx);
}

/* The protobuf status of a saga state. */
static Todo__V1__SagaStatus status_of(saga_state s)
{
    switch (s) {
    case SAGA_RUNNING: return TODO__V1__SAGA_STATUS__SAGA_STATUS_RUNNING;
    case SAGA_COMPENSATING: return TODO__V1__SAGA_STATUS__SAGA_STATUS_COMPENSATING;
    case SAGA_COMPLETED: return TODO__V1__SAGA_STATUS__SAGA_STATUS_COMPLETED;
    case SAGA_COMPENSATED: return TODO__V1__SAGA_STATUS__SAGA_STATUS_COMPENSATED;
    default: return TODO__V1__SAGA_STATUS__SAGA_STATUS_FAILED;
    }
}

int saga_outbox_encode(arena *a, const event_meta *m, const ProtobufCMessage *payload, const char **hex,
                       todo_err *err)
{
    uint8_t *bytes;
    size_t len;
    int rc = event_encode(m, payload, a, &bytes, &len, err);
    if (rc != TODO_OK) return rc;
    static const char digits[] = "0123456789abcdef";
    char *out = arena_alloc(a, 2 * len + 1);
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * len] = '\0';
    *hex = out;
    return TODO_OK;
}

static keystore *outbox_keys;

void saga_store_set_keys(struct keystore *ks) { outbox_keys = ks; }

/* payload, or a copy (in a) with its personal fields sealed with the
 * user's key; *erased when the user was erased (then nothing is added). */
static int sealed_payload(PGconn *pg, const event_meta *m, const ProtobufCMessage *payload, arena *a,
                          const ProtobufCMessage **out, bool *erased, todo_err *err)
{
    *out = payload;
    *erased = false;
    if (outbox_keys == NULL || seal_descriptor(payload->descriptor->name) == NULL || seal_event_is_sealed(payload))
        return TODO_OK;
    seal_key key;
    keystore_state state;
    int rc = keystore_get(outbox_keys, pg, m->user_id, &key, &state, err);
    if (rc != TODO_OK || state == KEYSTORE_NONE) return rc; /* no key: a user from before sealing */
    if (state == KEYSTORE_DESTROYED) {
        *erased = true;
        return TODO_OK;
    }
    ProtobufCMessage *copy = arena_alloc(a, payload->descriptor->sizeof_message);
    memcpy(copy, payload, payload->descriptor->sizeof_message);
    rc = seal_event(copy, &key, seal_event_aad(a, m->user_id, m->aggregate_id, m->event_type), a, err);
    OPENSSL_cleanse(&key, sizeof key);
    *out = copy;
    return rc;
}

int saga_outbox_add(PGconn *pg, const event_meta *m, const ProtobufCMessage *payload, todo_err *err)
{
    arena *a = arena_new();
    const char *hex = NULL;
    bool erased = false;
    int rc = a == NULL ? todo_err_set(err, TODO_EINTERNAL, "out of memory")
                       : sealed_payload(pg, m, payload, a, &payload, &erased, err);
    if (rc == TODO_OK && erased) {
        log_info("saga", "not requested: the user was erased", "type=%s aggregate=%s", m->event_type, m->aggregate_id);
        arena_free(a);
        return TODO_OK;
    }
    if (rc == TODO_OK) rc = saga_outbox_encode(a, m, payload, &hex, err);
    if (rc == TODO_OK)
        rc = pgx_cmd(pg,
                     "insert into saga.outbox (user_id, event_type, aggregate_id, envelope)"
                     " values ($1, $2, $3, decode($4, 'hex'))",
                     4, (const char *const[]){m->user_id, m->event_type, m->aggregate_id, hex}, err);
    arena_free(a);
    return rc;
}

/* The events of a transition of r (saga events, and next_occurrence's
 * recurring.task.generated) for saga.outbox, as parameters: event types,
 * aggregate ids, envelopes in hex. */
static int events_of(arena *a, const saga_record *r, const char *user, const saga_event *ev, int n, const char **p,
                     todo_err *err)
{
    char **types = arena_alloc(a, (size_t)(2 * n + 1) * sizeof *types);
    char **aggs = arena_alloc(a, (size_t)(2 * n + 1) * sizeof *aggs);
    char **hexes = arena_alloc(a, (size_t)(2 * n + 1) * sizeof *hexes);
    const char *occ = saga_record_get(r, "occurrence_id"), *pattern = saga_record_get(r, "pattern_id");
    const char *task = saga_record_get(r, "task_id");
    size_t k = 0;
    char tp[56] = ""; /* the trace the transition is made in (the worker's, or the starter's) */
    if (trace_current() != NULL) trace_format(trace_current(), tp);
    for (int i = 0; i < n; i++) {
        char event_id[37];
        const char *hex;
        Todo__V1__SagaEvent se = TODO__V1__SAGA_EVENT__INIT;
        se.saga_id = (char *)r->id;
        se.saga_type = (char *)r->type;
        se.status = status_of(r->state);
        se.step = (char *)(ev[i].step != NULL ? ev[i].step : "");
        se.attempt = ev[i].attempt;
        se.error = (char *)(ev[i].error != NULL ? ev[i].error : "");
        se.task_id = (char *)(task != NULL ? task : "");
        text_uuid_v4(event_id);
        event_meta m = {.event_id = event_id, .event_type = arena_printf(a, "saga.%s", ev[i].what),
                        .source = "todo-saga", .time_us = event_now_us(), .user_id = user, .aggregate_type = "saga",
                        .aggregate_id = r->id, .aggregate_version = 1, .schema_version = 1, .causation_id = r->id,
                        .correlation_id = saga_record_get(r, "correlation_id"), .traceparent = tp};
        int rc = saga_outbox_encode(a, &m, &se.base, &hex, err);
        if (rc != TODO_OK) return rc;
        types[k] = (char *)m.event_type;
        aggs[k] = (char *)r->id;
        hexes[k++] = (char *)hex;
        /* The task-completion saga made the next occurrence of a series. */
        if (strcmp(ev[i].what, "step.completed") == 0 && ev[i].step != NULL &&
            strcmp(ev[i].step, "next_occurrence") == 0 && occ != NULL && occ[0] != '\0' && pattern != NULL &&
            pattern[0] != '\0' && task != NULL) {
            Todo__V1__RecurringTaskGenerated g = TODO__V1__RECURRING_TASK_GENERATED__INIT;
            g.pattern_id = (char *)pattern;
            g.completed_task_id = (char *)task;
            g.task_id = (char *)occ;
            text_uuid_v4(event_id);
            m.event_type = "recurring.task.generated";
            if ((rc = saga_outbox_encode(a, &m, &g.base, &hex, err)) != TODO_OK) return rc;
            types[k] = "recurring.task.generated";
            aggs[k] = (char *)r->id;
            hexes[k++] = (char *)hex;
        }
    }
    p[0] = pgx_text_array(a, types, k);
    p[1] = pgx_text_array(a, aggs, k);
    p[2] = pgx_text_array(a, hexes, k);
    return TODO_OK;
}

/* Inserts the events ($12..$14, see events_of) of saga $1 (type $10, user
 * $11, state $2) when the CTE named `cond` produced a row. */
#define OUTBOX_INSERT(cond)                                                                                     \
    " ev as (insert into saga.outbox (saga_id, saga_type, user_id, state, event_type, aggregate_id, envelope)"  \
    "  select $1::uuid, $10, $11, $2, ty, ag, decode(hx, 'hex')"                                               \
    "  from unnest($12::text[], $13::text[], $14::text[]) with ordinality as u(ty, ag, hx, n)"                  \
    "  where exists (select 1 from " cond ") order by n)"

int saga_store_insert(PGconn *pg, const saga_record *r, int n_steps, const char *user, bool *inserted, todo_err *err)
{
    arena *a = arena_new();
    const char *p[14];
    const saga_event started = {.what = "started"};
    p[0] = r->id;
    params_of(a, r, n_steps, p + 1);
    p[9] = r->type;
    p[10] = user;
    int rc = events_of(a, r, user, &started, 1, p + 11, err);
    PGresult *res = rc != TODO_OK ? NULL : pgx_exec(pg,
                             "with ins as (insert into saga.sagas (id, state, step, step_states, attempts, step_errors,"
                             " error, ctx_keys, ctx_values, type, user_id) values ($1::uuid, $2, $3::int, $4::smallint[],"
                             " $5::int[], $6::text[], $7, $8::text[], $9::text[], $10, $11)"
                             " on conflict (id) do nothing returning 1)," OUTBOX_INSERT("ins")
                             " select count(*) from ins",
                             14, p, err);
    arena_free(a);
    if (res == NULL) return err->code;
    *inserted = strcmp(PQgetvalue(res, 0, 0), "1") == 0;
    PQclear(res);
    return TODO_OK;
}

int saga_store_save(void *store, const saga_record *r, const saga_event *events, int n_events, todo_err *err)
{
    saga_store_pg *s = store;
    arena *a = arena_new();
    const char *p[15];
    p[0] = r->id;
    params_of(a, r, s->n_steps, p + 1);
    p[9] = r->type;
    p[10] = saga_record_get(r, "user_id") != NULL ? saga_record_get(r, "user_id") : "";
    int rc = events_of(a, r, p[10], events, n_events, p + 11, err);
    p[14] = arena_printf(a, "%d", s->lease_s);
    /* One statement: the record, renewing the lease, and its events; none
     * of it when the lease is lost. */
    PGresult *res = rc != TODO_OK ? NULL : pgx_exec(s->pg,
                             "with upd as (update saga.sagas set state = $2, step = $3::int, step_states = $4::smallint[],"
                             " attempts = $5::int[], step_errors = $6::text[], error = $7, ctx_keys = $8::text[],"
                             " ctx_values = $9::text[], updated_at = now(),"
                             " lease_until = now() + make_interval(secs => $15::int)"
                             " where id = $1::uuid and owner = $16 returning 1)," OUTBOX_INSERT("upd")
                             " select count(*) from upd",
                             16, (const char *const[]){p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9],
                                                       p[10], p[11], p[12], p[13], p[14], s->instance},
                             err);
    arena_free(a);
    if (res == NULL) return err->code;
    int rows = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    if (rows == 0) return todo_err_set(err, TODO_ECONFLICT, "saga %s: lease lost to another instance", r->id);
    return TODO_OK;
}

saga_store saga_store_of(saga_store_pg *s)
{
    return (saga_store){.save = saga_store_save, .ctx = s};
}

int saga_store_claim(saga_store_pg *s, saga_record *r, char user[128], bool *found, todo_err *err)
{
    char lease[16];
    snprintf(lease, sizeof lease, "%d", s->lease_s);
    const char *p[2] = {s->instance, lease};
    PGresult *res = pgx_exec(s->pg,
                             "update saga.sagas set owner = $1, lease_until = now() + make_interval(secs => $2::int)"
                             " where id = (select id from saga.sagas where state in ('RUNNING', 'COMPENSATING')"
                             "  and (owner is null or owner = $1 or lease_until < now())"
                             "  order by created_at limit 1 for update skip locked)"
                             " returning " COLUMNS,
                             2, p, err);
    if (res == NULL) return err->code;
    *found = PQntuples(res) == 1;
    int rc = *found ? from_row(res, 0, r, user, 128, err) : TODO_OK;
    if (*found) s->n_steps = atoi(PQgetvalue(res, 0, 11));
    PQclear(res);
    return rc;
}

int saga_store_load(PGconn *pg, const char *id, saga_record *r, todo_err *err)
{
    const char *p[1] = {id};
    PGresult *res = pgx_exec(pg, "select " COLUMNS " from saga.sagas where id = $1::uuid", 1, p, err);
    if (res == NULL) return err->code;
    int rc = PQntuples(res) == 1 ? from_row(res, 0, r, NULL, 0, err)
                                 : todo_err_set(err, TODO_ENOTFOUND, "saga %s not found", id);
    PQclear(res);
    return rc;
}

/* Runs an operator's update of saga id; explains a refusal. */
static int operate(PGconn *pg, const char *id, const char *sql, const char *wanted, todo_err *err)
{
    const char *p[1] = {id};
    PGresult *res = pgx_exec(pg, sql, 1, p, err);
    if (res == NULL) return err->code;
    int rows = PQntuples(res);
    PQclear(res);
    if (rows == 1) return TODO_OK;
    res = pgx_exec(pg, "select state from saga.sagas where id = $1::uuid", 1, p, err);
    if (res == NULL) return err->code;
    int rc = PQntuples(res) == 0 ? todo_err_set(err, TODO_ENOTFOUND, "saga %s not found", id)
                                 : todo_err_set(err, TODO_EPRECOND, "saga %s is %s; only %s ones can be", id,
                                                PQgetvalue(res, 0, 0), wanted);
    PQclear(res);
    return rc;
}

int saga_store_resolution(PGconn *pg, const char *id, saga_resolution *out, bool *found, todo_err *err)
{
    const char *p[1] = {id};
    PGresult *res = pgx_exec(pg,
                             "select resolved_by, to_char(resolved_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS'), why"
                             " from saga.resolutions where saga_id = $1::uuid",
                             1, p, err);
    if (res == NULL) return err->code;
    *found = PQntuples(res) == 1;
    if (*found) {
        snprintf(out->by, sizeof out->by, "%s", PQgetvalue(res, 0, 0));
        snprintf(out->at, sizeof out->at, "%s", PQgetvalue(res, 0, 1));
        snprintf(out->why, sizeof out->why, "%s", PQgetvalue(res, 0, 2));
    }
    PQclear(res);
    return TODO_OK;
}

/* TODO_EPRECOND naming who resolved saga id, when and why; TODO_OK when
 * nobody did. */
static int not_resolved(PGconn *pg, const char *id, todo_err *err)
{
    saga_resolution r;
    bool found;
    int rc = saga_store_resolution(pg, id, &r, &found, err);
    if (rc != TODO_OK || !found) return rc;
    return todo_err_set(err, TODO_EPRECOND, "saga %s was resolved by %s at %s UTC (%s)", id, r.by, r.at, r.why);
}

/* Runs fn on saga id in a transaction that holds the saga's row, so that a
 * retry and a resolution of one saga never both pass their checks. */
static int with_saga_locked(PGconn *pg, const char *id, int (*fn)(PGconn *, const char *, const void *, todo_err *),
                            const void *arg, todo_err *err)
{
    const char *p[1] = {id};
    int rc = pgx_cmd(pg, "begin", 0, NULL, err);
    if (rc == TODO_OK) rc = pgx_cmd(pg, "select 1 from saga.sagas where id = $1::uuid for update", 1, p, err);
    if (rc == TODO_OK) rc = fn(pg, id, arg, err);
    if (rc == TODO_OK) rc = pgx_cmd(pg, "commit", 0, NULL, err);
    if (rc != TODO_OK) {
        todo_err ignored;
        pgx_cmd(pg, "rollback", 0, NULL, &ignored);
    }
    return rc;
}

static int retry_locked(PGconn *pg, const char *id, const void *arg, todo_err *err)
{
    (void)arg;
    int rc = not_resolved(pg, id, err);
    if (rc != TODO_OK) return rc;
    /* The step whose compensation failed is compensable again (DONE). */
    return operate(pg, id,
                   "update saga.sagas set state = 'COMPENSATING', step_states[step + 1] = 1, attempts[step + 1] = 0,"
                   " owner = null, lease_until = null, updated_at = now()"
                   " where id = $1::uuid and state = 'FAILED' returning 1",
                   "FAILED", err);
}

int saga_store_retry(PGconn *pg, const char *id, todo_err *err)
{
    return with_saga_locked(pg, id, retry_locked, NULL, err);
}

typedef struct resolution {
    const char *by, *why;
} resolution;

static int resolve_locked(PGconn *pg, const char *id, const void *arg, todo_err *err)
{
    const resolution *rs = arg;
    int rc = not_resolved(pg, id, err);
    if (rc != TODO_OK) return rc;
    const char *p[3] = {id, rs->by, rs->why};
    PGresult *res = pgx_exec(pg,
                             "insert into saga.resolutions (saga_id, resolved_by, why)"
                             " select id, $2, $3 from saga.sagas where id = $1::uuid and state = 'FAILED'"
                             " on conflict (saga_id) do nothing returning 1",
                             3, p, err);
    if (res == NULL) return err->code;
    int rows = PQntuples(res);
    PQclear(res);
    if (rows == 1) return TODO_OK;
    if ((rc = not_resolved(pg, id, err)) != TODO_OK) return rc; /* another operator, just now */
    res = pgx_exec(pg, "select state from saga.sagas where id = $1::uuid", 1, p, err);
    if (res == NULL) return err->code;
    rc = PQntuples(res) == 0 ? todo_err_set(err, TODO_ENOTFOUND, "saga %s not found", id)
                             : todo_err_set(err, TODO_EPRECOND, "saga %s is %s; only FAILED ones are resolved", id,
                                            PQgetvalue(res, 0, 0));
    PQclear(res);
    return rc;
}

int saga_store_resolve(PGconn *pg, const char *id, const char *by, const char *why, todo_err *err)
{
    if (by == NULL || by[0] == '\0' || strlen(by) > 128 || why == NULL || why[0] == '\0' || strlen(why) > 1000)
        return todo_err_set(err, TODO_EINVAL, "a resolution names who (1..128 characters) and why (1..1000)");
    resolution rs = {by, why};
    return with_saga_locked(pg, id, resolve_locked, &rs, err);
}

int saga_store_compensate(PGconn *pg, const char *id, todo_err *err)
{
    return operate(pg, id,
                   "update saga.sagas set state = 'COMPENSATING',"
                   " step_states[step + 1] = case when state = 'RUNNING' then 2 else step_states[step + 1] end,"
                   " attempts[step + 1] = 0, owner = null, lease_until = null, updated_at = now(),"
                   " error = 'compensation requested by an operator'"
                   " where id = $1::uuid and state in ('RUNNING', 'COMPLETED') returning 1",
                   "RUNNING or COMPLETED", err);
}

int saga_store_upgrade_outbox(PGconn *pg, long *converted, todo_err *err)
{
    *converted = 0;
    PGresult *res = pgx_exec(pg,
                             "select id, saga_id::text, saga_type, user_id, state, what, step, attempt, error, detail,"
                             " pattern_id, task_id from saga.outbox where envelope is null order by id",
                             0, NULL, err);
    if (res == NULL) return err->code;
    int rc = TODO_OK;
    for (int i = 0; i < PQntuples(res) && rc == TODO_OK; i++) {
        arena *a = arena_new();
        saga_record r;
        saga_event ev = {.what = PQgetvalue(res, i, 5), .step = PQgetvalue(res, i, 6),
                         .attempt = atoi(PQgetvalue(res, i, 7)), .error = PQgetvalue(res, i, 8)};
        const char *p[3];
        memset(&r, 0, sizeof r);
        snprintf(r.id, sizeof r.id, "%s", PQgetvalue(res, i, 1));
        snprintf(r.type, sizeof r.type, "%s", PQgetvalue(res, i, 2));
        if (saga_state_parse(PQgetvalue(res, i, 4), &r.state) != 0) r.state = SAGA_FAILED;
        saga_record_set(&r, "pattern_id", PQgetvalue(res, i, 10));
        saga_record_set(&r, "task_id", PQgetvalue(res, i, 11));
        saga_record_set(&r, "occurrence_id", PQgetvalue(res, i, 9));
        rc = events_of(a, &r, PQgetvalue(res, i, 3), &ev, 1, p, err);
        /* The row becomes its first event; a second (the series' new
         * occurrence) is added after it. */
        if (rc == TODO_OK)
            rc = pgx_cmd(pg,
                         "with t as (select u.* from unnest($2::text[], $3::text[], $4::text[]) with ordinality"
                         "  as u(ty, ag, hx, n)),"
                         " upd as (update saga.outbox o set event_type = t.ty, aggregate_id = t.ag,"
                         "  envelope = decode(t.hx, 'hex') from t where o.id = $1::bigint and t.n = 1)"
                         " insert into saga.outbox (saga_id, saga_type, user_id, state, event_type, aggregate_id,"
                         "  envelope) select o.saga_id, o.saga_type, o.user_id, o.state, t.ty, t.ag, decode(t.hx, 'hex')"
                         "  from t, saga.outbox o where o.id = $1::bigint and t.n > 1",
                         4, (const char *const[]){PQgetvalue(res, i, 0), p[0], p[1], p[2]}, err);
        if (rc == TODO_OK) (*converted)++;
        arena_free(a);
    }
    PQclear(res);
    return rc;
}

int saga_outbox_status(PGconn *pg, saga_outbox_stat *st, todo_err *err)
{
    PGresult *r = pgx_exec(pg,
                           "select" SAGA_OUTBOX_BACKLOG_COLUMNS ","
                           " coalesce((select string_agg(a.application_name || ' (backend ' || a.pid || ')', ', ')"
                           "    from pg_locks l join pg_stat_activity a on a.pid = l.pid"
                           "    where l.locktype = 'advisory' and l.objid = " LOCK_SAGA_OUTBOX " and l.granted), '')"
                           SAGA_OUTBOX_BACKLOG_FROM,
                           0, NULL, err);
    if (r == NULL) return err->code;
    st->rows = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    st->oldest_age_s = strtod(PQgetvalue(r, 0, 1), NULL);
    st->parked = strtol(PQgetvalue(r, 0, 2), NULL, 10);
    st->held = strtol(PQgetvalue(r, 0, 3), NULL, 10);
    snprintf(st->active, sizeof st->active, "%s", PQgetvalue(r, 0, 4));
    PQclear(r);
    return TODO_OK;
}

int saga_outbox_parked(PGconn *pg, saga_outbox_row *out, int cap, int *n, todo_err *err)
{
    char limit[16];
    snprintf(limit, sizeof limit, "%d", cap);
    PGresult *r = pgx_exec(pg,
                           "select o.id, o.event_type, o.user_id, o.aggregate_id, octet_length(o.envelope),"
                           " to_char(o.parked_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
                           " coalesce(o.parked_reason, ''),"
                           " (select count(*) from saga.outbox w where w.aggregate_id = o.aggregate_id and w.id > o.id"
                           "   and w.parked_at is null)"
                           " from saga.outbox o where o.parked_at is not null order by o.id limit $1::int",
                           1, (const char *const[]){limit}, err);
    if (r == NULL) return err->code;
    *n = PQntuples(r);
    for (int i = 0; i < *n; i++) {
        saga_outbox_row *x = &out[i];
        x->id = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        snprintf(x->event_type, sizeof x->event_type, "%s", PQgetvalue(r, i, 1));
        snprintf(x->user_id, sizeof x->user_id, "%s", PQgetvalue(r, i, 2));
        snprintf(x->aggregate_id, sizeof x->aggregate_id, "%s", PQgetvalue(r, i, 3));
        x->bytes = strtoll(PQgetvalue(r, i, 4), NULL, 10);
        snprintf(x->parked_at, sizeof x->parked_at, "%s", PQgetvalue(r, i, 5));
        snprintf(x->reason, sizeof x->reason, "%s", PQgetvalue(r, i, 6));
        x->waiting = strtol(PQgetvalue(r, i, 7), NULL, 10);
    }
    PQclear(r);
    return TODO_OK;
}

/* Runs sql on parked row id (returning 1), then wakes the publisher. */
static int change_parked(PGconn *pg, const char *sql, long long id, todo_err *err)
{
    char pos[24];
    snprintf(pos, sizeof pos, "%lld", id);
    PGresult *r = pgx_exec(pg, sql, 1, (const char *const[]){pos}, err);
    if (r == NULL) return err->code;
    int changed = PQntuples(r);
    PQclear(r);
    if (changed == 0) return todo_err_set(err, TODO_ENOTFOUND, "no parked saga outbox row %lld", id);
    return pgx_cmd(pg, "select pg_notify('todo_saga_outbox', '')", 0, NULL, err) == 0 ? TODO_OK : err->code;
}

int saga_outbox_retry(PGconn *pg, long long id, todo_err *err)
{
    return change_parked(pg,
                         "update saga.outbox set parked_at = null,"
                         " parked_reason = 'retried after: ' || coalesce(parked_reason, '')"
                         " where id = $1::bigint and parked_at is not null returning 1",
                         id, err);
}

int saga_outbox_drop(PGconn *pg, long long id, todo_err *err)
{
    return change_parked(pg, "delete from saga.outbox where id = $1::bigint and parked_at is not null returning 1", id,
                         err);
}
