/* saga_store: see saga_store.h. */
#include "saga_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "pgx.h"

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

/* The events as parameters: whats, steps, attempts, errors, details (the
 * new occurrence on next_occurrence's step.completed). */
static void events_of(arena *a, const saga_record *r, const saga_event *ev, int n, const char **p)
{
    char **w = arena_alloc(a, (size_t)(n + 1) * sizeof *w), **st = arena_alloc(a, (size_t)(n + 1) * sizeof *st);
    char **er = arena_alloc(a, (size_t)(n + 1) * sizeof *er), **d = arena_alloc(a, (size_t)(n + 1) * sizeof *d);
    int *at = arena_alloc(a, (size_t)(n + 1) * sizeof *at);
    const char *occ = saga_record_get(r, "occurrence_id");
    for (int i = 0; i < n; i++) {
        w[i] = (char *)ev[i].what;
        st[i] = (char *)(ev[i].step != NULL ? ev[i].step : "");
        er[i] = (char *)(ev[i].error != NULL ? ev[i].error : "");
        at[i] = ev[i].attempt;
        d[i] = (char *)(ev[i].step != NULL && strcmp(ev[i].step, "next_occurrence") == 0 && occ != NULL ? occ : "");
    }
    p[0] = pgx_text_array(a, w, (size_t)n);
    p[1] = pgx_text_array(a, st, (size_t)n);
    p[2] = int_array(a, at, n);
    p[3] = pgx_text_array(a, er, (size_t)n);
    p[4] = pgx_text_array(a, d, (size_t)n);
}

/* Inserts the events ($13..$17) of saga $1 (state $2, type $10, user $11)
 * when the CTE named `cond` produced a row. */
#define OUTBOX_INSERT(cond)                                                                                     \
    " ev as (insert into saga.outbox (saga_id, saga_type, user_id, state, what, step, attempt, error, detail,"  \
    "  pattern_id, task_id) select $1::uuid, $10, $11, $2, w, s, a, e, d, coalesce(($12::text[])[1], ''),"      \
    "  coalesce(($12::text[])[2], '')"                                                                          \
    "  from unnest($13::text[], $14::text[], $15::int[], $16::text[], $17::text[]) as t(w, s, a, e, d)"         \
    "  where exists (select 1 from " cond "))"

int saga_store_insert(PGconn *pg, const saga_record *r, int n_steps, const char *user, bool *inserted, todo_err *err)
{
    arena *a = arena_new();
    const char *p[17];
    const saga_event started = {.what = "started"};
    char *series[2] = {(char *)saga_record_get(r, "pattern_id"), (char *)saga_record_get(r, "task_id")};
    p[0] = r->id;
    params_of(a, r, n_steps, p + 1);
    p[9] = r->type;
    p[10] = user;
    p[11] = pgx_text_array(a, series, series[0] != NULL && series[1] != NULL ? 2 : 0);
    events_of(a, r, &started, 1, p + 12);
    PGresult *res = pgx_exec(pg,
                             "with ins as (insert into saga.sagas (id, state, step, step_states, attempts, step_errors,"
                             " error, ctx_keys, ctx_values, type, user_id) values ($1::uuid, $2, $3::int, $4::smallint[],"
                             " $5::int[], $6::text[], $7, $8::text[], $9::text[], $10, $11)"
                             " on conflict (id) do nothing returning 1)," OUTBOX_INSERT("ins")
                             " select count(*) from ins",
                             17, p, err);
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
    const char *p[18];
    char *series[2] = {(char *)saga_record_get(r, "pattern_id"), (char *)saga_record_get(r, "task_id")};
    p[0] = r->id;
    params_of(a, r, s->n_steps, p + 1);
    p[9] = r->type;
    p[10] = saga_record_get(r, "user_id") != NULL ? saga_record_get(r, "user_id") : "";
    p[11] = pgx_text_array(a, series, series[0] != NULL && series[1] != NULL ? 2 : 0);
    events_of(a, r, events, n_events, p + 12);
    p[17] = arena_printf(a, "%d", s->lease_s);
    /* One statement: the record, renewing the lease, and its events; none
     * of it when the lease is lost. */
    PGresult *res = pgx_exec(s->pg,
                             "with upd as (update saga.sagas set state = $2, step = $3::int, step_states = $4::smallint[],"
                             " attempts = $5::int[], step_errors = $6::text[], error = $7, ctx_keys = $8::text[],"
                             " ctx_values = $9::text[], updated_at = now(),"
                             " lease_until = now() + make_interval(secs => $18::int)"
                             " where id = $1::uuid and owner = $19 returning 1)," OUTBOX_INSERT("upd")
                             " select count(*) from upd",
                             19, (const char *const[]){p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9],
                                                       p[10], p[11], p[12], p[13], p[14], p[15], p[16], p[17],
                                                       s->instance},
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

int saga_store_retry(PGconn *pg, const char *id, todo_err *err)
{
    /* The step whose compensation failed is compensable again (DONE). */
    return operate(pg, id,
                   "update saga.sagas set state = 'COMPENSATING', step_states[step + 1] = 1, attempts[step + 1] = 0,"
                   " owner = null, lease_until = null, updated_at = now()"
                   " where id = $1::uuid and state = 'FAILED' returning 1",
                   "FAILED", err);
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
