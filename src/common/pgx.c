/* pgx: see pgx.h. */
#include "pgx.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"

/* PostgreSQL round trips: one statement, or one pipeline of several. */
static metric_series *rt_statement, *rt_pipeline;
static pthread_once_t rt_once = PTHREAD_ONCE_INIT;

static void rt_init(void)
{
    static const double b[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5};
    metric *m = metric_histogram("todo_pg_round_trip_seconds",
                                 "PostgreSQL round trips of this process: one statement, or one pipeline of several.",
                                 "kind", b, (int)(sizeof b / sizeof b[0]));
    rt_statement = metric_with(m, "statement");
    rt_pipeline = metric_with(m, "pipeline");
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Server notices ("relation already exists, skipping") go to the debug log,
 * not to stderr. */
static void on_notice(void *arg, const char *message)
{
    (void)arg;
    size_t n = strcspn(message, "\n");
    char buf[300];
    snprintf(buf, sizeof buf, "%.*s", (int)(n < 299 ? n : 299), message);
    log_debug("pg", buf, NULL);
}

static PGconn *connect_with(const char *url, const char *app_name, const char *options, todo_err *err)
{
    const char *keys[] = {"dbname", "application_name", "connect_timeout", options ? "options" : NULL, NULL};
    const char *vals[] = {url, app_name, "5", options, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        char msg[300];
        const char *m = c != NULL ? PQerrorMessage(c) : "out of memory";
        size_t n = strcspn(m, "\n");
        if (n >= sizeof msg) n = sizeof msg - 1;
        memcpy(msg, m, n);
        msg[n] = '\0';
        todo_err_set(err, TODO_EUNAVAIL, "cannot connect to PostgreSQL: %s", msg);
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, on_notice, NULL);
    return c;
}

/* Prepared statements: each thread remembers, per connection, the SQL it
 * prepared, so a statement is parsed and planned once per connection rather
 * than on every call. Our connections belong to one thread each. */
#define STMT_CACHE 64

typedef struct stmt {
    const PGconn *conn;
    char *sql;
    char name[24];
} stmt;

static _Thread_local stmt stmts[STMT_CACHE];
static _Thread_local int n_stmts;
static _Thread_local unsigned stmt_counter;

/* Forgets the statements of c (a new connection may reuse an old address). */
static void forget(const PGconn *c)
{
    for (int i = 0; i < n_stmts;) {
        if (stmts[i].conn == c) {
            free(stmts[i].sql);
            stmts[i] = stmts[--n_stmts];
        } else {
            i++;
        }
    }
}

/* The name of sql prepared on c, preparing it when needed; NULL when it
 * cannot be (the cache is full, or the server refused to prepare it). */
static const char *prepared(PGconn *c, const char *sql, int n)
{
    for (int i = 0; i < n_stmts; i++)
        if (stmts[i].conn == c && strcmp(stmts[i].sql, sql) == 0) return stmts[i].name;
    if (n_stmts == STMT_CACHE) return NULL;
    stmt *s = &stmts[n_stmts];
    snprintf(s->name, sizeof s->name, "todo_%u", stmt_counter++);
    PGresult *r = PQprepare(c, s->name, sql, n, NULL);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok || (s->sql = strdup(sql)) == NULL) return NULL;
    s->conn = c;
    n_stmts++;
    return s->name;
}

PGconn *pgx_connect(const char *url, const char *app_name, todo_err *err)
{
    PGconn *c = connect_with(url, app_name, NULL, err);
    if (c != NULL) forget(c);
    return c;
}

PGconn *pgx_connect_schema(const char *url, const char *app_name, const char *schema, todo_err *err)
{
    char options[96];
    size_t n = strlen(schema);
    bool ok = n > 0 && n < 64 && ((schema[0] >= 'a' && schema[0] <= 'z') || schema[0] == '_');
    for (size_t i = 0; ok && i < n; i++)
        ok = (schema[i] >= 'a' && schema[i] <= 'z') || (schema[i] >= '0' && schema[i] <= '9') || schema[i] == '_';
    if (!ok) {
        todo_err_set(err, TODO_EINVAL, "schema name \"%.64s\" is not a plain lowercase identifier", schema);
        return NULL;
    }
    snprintf(options, sizeof options, "-c search_path=%s", schema);
    PGconn *c = connect_with(url, app_name, options, err);
    if (c != NULL) forget(c);
    return c;
}

void pgx_close(PGconn *c)
{
    if (c == NULL) return;
    forget(c);
    PQfinish(c);
}

int pgx_ensure(PGconn **conn, const char *url, const char *app_name, todo_err *err)
{
    if (*conn != NULL && PQstatus(*conn) == CONNECTION_OK) return TODO_OK;
    pgx_close(*conn);
    *conn = pgx_connect(url, app_name, err);
    return *conn != NULL ? TODO_OK : TODO_EUNAVAIL;
}

int pgx_status_of(const PGresult *r, const PGconn *c)
{
    const char *state = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (PQstatus(c) != CONNECTION_OK) return TODO_EUNAVAIL;
    if (state == NULL) return TODO_EINTERNAL;
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0) return TODO_ECONFLICT;
    if (strcmp(state, "23505") == 0) return TODO_EEXISTS;
    if (strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0) return TODO_EUNAVAIL;
    if (strcmp(state, "57014") == 0) return TODO_EDEADLINE;
    if (strcmp(state, "55P03") == 0) return TODO_ELOCKED; /* lock_not_available: lock_timeout */
    if (strcmp(state, "TD001") == 0) return TODO_EPRECOND; /* an erased user's event (migration 0029) */
    return TODO_EINTERNAL;
}

/* Sets err from a failed result (or the connection's error). */
static int fail_with(PGconn *c, PGresult *r, todo_err *err)
{
    int code = pgx_status_of(r, c);
    const char *m = r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(c);
    size_t len = strcspn(m, "\n");
    return todo_err_set(err, code, "database error: %.*s", (int)(len > 300 ? 300 : len), m);
}

PGresult *pgx_exec(PGconn *c, const char *sql, int n, const char *const *values, todo_err *err)
{
    return pgx_execb(c, sql, n, values, NULL, NULL, err);
}

PGresult *pgx_execb(PGconn *c, const char *sql, int n, const char *const *values, const int *lengths,
                    const int *formats, todo_err *err)
{
    /* A failed transaction refuses even PREPARE: run such calls unprepared. */
    const char *name = PQtransactionStatus(c) == PQTRANS_INERROR ? NULL : prepared(c, sql, n);
    pthread_once(&rt_once, rt_init);
    double t0 = mono_s();
    PGresult *r = name != NULL ? PQexecPrepared(c, name, n, values, lengths, formats, 0)
                               : PQexecParams(c, sql, n, NULL, values, lengths, formats, 0);
    metric_observe(rt_statement, mono_s() - t0);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return r;
    fail_with(c, r, err);
    PQclear(r);
    return NULL;
}

int pgx_cmd(PGconn *c, const char *sql, int n, const char *const *values, todo_err *err)
{
    PGresult *r = pgx_exec(c, sql, n, values, err);
    if (r == NULL) return err != NULL ? err->code : TODO_EINTERNAL;
    PQclear(r);
    return TODO_OK;
}

int pgx_pipeline(PGconn *c, const pgx_stmt *list, int n, PGresult **results, int *failed, todo_err *err)
{
    int rc = TODO_OK, sent = 0, got = 0;
    if (failed != NULL) *failed = -1;
    for (int i = 0; results != NULL && i < n; i++) results[i] = NULL;
    if (n == 0) return TODO_OK;
    /* Prepare first: PQprepare waits for its answer, which pipeline mode forbids. */
    const char **names = calloc((size_t)n, sizeof *names);
    if (names == NULL) return todo_err_set(err, TODO_EINTERNAL, "out of memory");
    bool in_error = PQtransactionStatus(c) == PQTRANS_INERROR;
    for (int i = 0; i < n && !in_error; i++) names[i] = prepared(c, list[i].sql, list[i].n);
    pthread_once(&rt_once, rt_init);
    double t0 = mono_s();
    if (PQenterPipelineMode(c) != 1) {
        free(names);
        return todo_err_set(err, TODO_EUNAVAIL, "database error: cannot enter pipeline mode: %s", PQerrorMessage(c));
    }
    for (; sent < n; sent++) {
        const pgx_stmt *s = &list[sent];
        int ok = names[sent] != NULL ? PQsendQueryPrepared(c, names[sent], s->n, s->values, s->lengths, s->formats, 0)
                                     : PQsendQueryParams(c, s->sql, s->n, NULL, s->values, s->lengths, s->formats, 0);
        if (ok != 1) break;
    }
    free(names);
    if (PQpipelineSync(c) != 1 || sent < n) {
        rc = todo_err_set(err, TODO_EUNAVAIL, "database error: sending a pipeline failed: %s", PQerrorMessage(c));
        if (failed != NULL) *failed = sent;
    }
    /* Each statement's result is followed by a NULL; the sync point ends it. */
    int idle = 0;
    for (;;) {
        PGresult *r = PQgetResult(c);
        if (r == NULL) {
            if (PQstatus(c) != CONNECTION_OK || ++idle > n + 2) break;
            continue;
        }
        idle = 0;
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            break;
        }
        int i = got++;
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            if (results != NULL && i < n) results[i] = r;
            else PQclear(r);
            continue;
        }
        if (rc == TODO_OK && st != PGRES_PIPELINE_ABORTED) {
            rc = fail_with(c, r, err);
            if (failed != NULL) *failed = i;
        }
        PQclear(r);
    }
    metric_observe(rt_pipeline, mono_s() - t0);
    if (PQexitPipelineMode(c) != 1 || PQstatus(c) != CONNECTION_OK) {
        if (rc == TODO_OK || PQstatus(c) != CONNECTION_OK)
            rc = todo_err_set(err, TODO_EUNAVAIL, "database error: a pipeline did not finish: %s", PQerrorMessage(c));
    }
    if (rc != TODO_OK && results != NULL)
        for (int i = 0; i < n; i++) {
            PQclear(results[i]);
            results[i] = NULL;
        }
    return rc;
}

char *pgx_text_array(arena *a, char *const *items, size_t n)
{
    size_t cap = 3;
    for (size_t i = 0; i < n; i++) cap += 2 * strlen(items[i]) + 3;
    char *out = arena_alloc(a, cap), *p = out;
    *p++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i > 0) *p++ = ',';
        *p++ = '"';
        for (const char *s = items[i]; *s != '\0'; s++) {
            if (*s == '"' || *s == '\\') *p++ = '\\';
            *p++ = *s;
        }
        *p++ = '"';
    }
    *p++ = '}';
    *p = '\0';
    return out;
}

void pgx_split(arena *a, const char *s, char sep, char ***items, size_t *n)
{
    size_t count = 1;
    *n = 0;
    *items = NULL;
    if (s[0] == '\0') return;
    for (const char *p = s; *p; p++) count += *p == sep;
    *items = arena_alloc(a, count * sizeof **items);
    for (const char *p = s;;) {
        const char *e = strchr(p, sep);
        size_t len = e != NULL ? (size_t)(e - p) : strlen(p);
        (*items)[(*n)++] = arena_strndup(a, p, len);
        if (e == NULL) break;
        p = e + 1;
    }
}

int pgx_check_least_privilege(const char *url, const char *app_name, const char *writes, todo_err *err)
{
    PGconn *pg = pgx_connect(url, app_name, err);
    if (pg == NULL) return TODO_EUNAVAIL;
    const char *p[1] = {writes};
    PGresult *r = pgx_exec(pg,
                           "select current_user::text,"
                           " case when r.rolsuper then 'is a superuser'"
                           "  when r.rolcreaterole then 'can create roles'"
                           "  when r.rolcreatedb then 'can create databases'"
                           "  when r.rolbypassrls then 'bypasses row-level security'"
                           "  when r.rolreplication then 'can replicate' else '' end,"
                           " coalesce((select string_agg(n.nspname, ', ' order by n.nspname) from pg_namespace n"
                           "  where n.nspname not like 'pg\\_%' and n.nspname <> 'information_schema'"
                           "  and (pg_has_role(current_user, n.nspowner, 'USAGE')"
                           "   or has_schema_privilege(current_user, n.oid, 'CREATE'))), ''),"
                           " coalesce((select string_agg(distinct n.nspname, ', ') from pg_class c"
                           "  join pg_namespace n on n.oid = c.relnamespace"
                           "  where c.relkind in ('r', 'p') and n.nspname not like 'pg\\_%'"
                           "  and n.nspname <> 'information_schema'"
                           "  and n.nspname <> all (coalesce(string_to_array(nullif($1, ''), ','), '{}'::text[]))"
                           "  and (has_table_privilege(current_user, c.oid, 'INSERT')"
                           "   or has_table_privilege(current_user, c.oid, 'UPDATE')"
                           "   or has_table_privilege(current_user, c.oid, 'DELETE')"
                           "   or has_table_privilege(current_user, c.oid, 'TRUNCATE'))), '')"
                           " from pg_roles r where r.rolname = current_user",
                           1, p, err);
    int rc = TODO_OK;
    if (r == NULL) {
        rc = TODO_EUNAVAIL;
    } else if (PQntuples(r) != 1) {
        rc = todo_err_set(err, TODO_EUNAVAIL, "cannot read the role's rights");
    } else {
        const char *role = PQgetvalue(r, 0, 0), *power = PQgetvalue(r, 0, 1), *schemas = PQgetvalue(r, 0, 2),
                   *elsewhere = PQgetvalue(r, 0, 3);
        if (power[0] != '\0')
            rc = todo_err_set(err, TODO_EDENIED, "database role %s %s: a service connects with a role of its own "
                              "and no more rights than its schema's (docs/SECURITY.md)", role, power);
        else if (schemas[0] != '\0')
            rc = todo_err_set(err, TODO_EDENIED, "database role %s owns or can create in schema(s) %s: it must only "
                              "use them (docs/SECURITY.md)", role, schemas);
        else if (elsewhere[0] != '\0')
            rc = todo_err_set(err, TODO_EDENIED, "database role %s can write tables of schema(s) %s, beyond its own "
                              "(%s) (docs/SECURITY.md)", role, elsewhere, writes[0] != '\0' ? writes : "none");
    }
    PQclear(r);
    pgx_close(pg);
    return rc;
}

int pgx_start_check(const char *component, const char *url, const char *writes, bool strict)
{
    todo_err err;
    char app[64];
    snprintf(app, sizeof app, "todo-%s-role-check", component);
    int rc = pgx_check_least_privilege(url, app, writes, &err);
    if (rc == TODO_OK) return 0;
    if (strict) {
        log_error(component, rc == TODO_EDENIED ? "refusing to start: the database role has too many rights"
                                                : "refusing to start: cannot check the database role's rights",
                  "error=\"%s\"", err.msg);
        return 1;
    }
    log_warn(component, rc == TODO_EDENIED ? "the database role has too many rights (refused outside TODO_ENV=local)"
                                           : "cannot check the database role's rights now",
             "error=\"%s\"", err.msg);
    return 0;
}
