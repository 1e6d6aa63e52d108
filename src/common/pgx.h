/*
 * pgx: PostgreSQL helpers over libpq: connect with an application name and
 * a connect time-out, run parameterized SQL and turn failures into
 * todo_status values (serialization failures and deadlocks: TODO_ECONFLICT;
 * unique violations: TODO_EEXISTS; lost connections: TODO_EUNAVAIL).
 *
 * Statements run through pgx_exec/pgx_execb are prepared once per connection
 * and reused (a per-thread cache: a PGconn belongs to one thread). Close
 * connections with pgx_close.
 */
#ifndef TODO_PGX_H
#define TODO_PGX_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "arena.h"
#include "todo_err.h"

/* Connects to url (a postgresql:// URI or key=value string). Returns NULL
 * with TODO_EUNAVAIL in err when the server cannot be reached. */
PGconn *pgx_connect(const char *url, const char *app_name, todo_err *err);

/* pgx_connect with search_path set to schema (a plain lowercase
 * identifier; TODO_EINVAL otherwise) for the whole session. */
PGconn *pgx_connect_schema(const char *url, const char *app_name, const char *schema, todo_err *err);

/* Closes a connection made here, forgetting what was prepared on it; takes
 * NULL. Use it instead of PQfinish, on the thread that used the connection
 * (what was prepared is remembered per thread). */
void pgx_close(PGconn *c);

/* Makes *conn usable: reconnects when it is NULL or broken. */
int pgx_ensure(PGconn **conn, const char *url, const char *app_name, todo_err *err);

/* Runs sql with n text parameters (values may hold NULLs). Returns the
 * result (the caller PQclear()s it) on success, or NULL with err set. */
PGresult *pgx_exec(PGconn *c, const char *sql, int n, const char *const *values, todo_err *err);

/* Runs sql and discards the result: TODO_OK or a status with err. */
int pgx_cmd(PGconn *c, const char *sql, int n, const char *const *values, todo_err *err);

/* Like pgx_exec, with per-parameter lengths and formats (1 = binary, for
 * bytea); either array may be NULL for all-text parameters. */
PGresult *pgx_execb(PGconn *c, const char *sql, int n, const char *const *values, const int *lengths,
                    const int *formats, todo_err *err);

/* One statement of a pipeline: sql with n parameters, text unless lengths
 * and formats (both NULL, or n entries as in pgx_execb) say otherwise. */
typedef struct pgx_stmt {
    const char *sql;
    int n;
    const char *const *values;
    const int *lengths;
    const int *formats;
} pgx_stmt;

/* Runs the n statements in order in ONE round trip (libpq pipeline mode;
 * prepared like pgx_exec's). results (n entries, or NULL) receives each
 * statement's result (the caller PQclear()s them). Returns TODO_OK when all
 * succeeded; otherwise the status of the first that failed, with err and
 * *failed (may be NULL) set to its index: the server skipped the ones after
 * it, a transaction they were in is aborted, and every result is NULL.
 * The connection is back out of pipeline mode on return, or broken
 * (TODO_EUNAVAIL; reconnect). */
int pgx_pipeline(PGconn *c, const pgx_stmt *stmts, int n, PGresult **results, int *failed, todo_err *err);

/* A PostgreSQL text[] literal ('{"a","b"}') of the n strings, in a. */
char *pgx_text_array(arena *a, char *const *items, size_t n);

/* Splits s at sep into *items (*n of them) in a; "" gives none. Pairs with
 * SQL's array_to_string(tags, E'\x1f'). */
void pgx_split(arena *a, const char *s, char sep, char ***items, size_t *n);

/* The status matching a failed result's SQLSTATE. */
int pgx_status_of(const PGresult *r, const PGconn *c);

/* Least privilege, checked at a service's start outside local: the role
 * of url is no superuser and cannot create roles or databases, bypass row
 * security or replicate; it owns no schema and can create in none; and it
 * can write (insert, update, delete, truncate) only tables of the schemas
 * in writes (a comma-separated list, "" none). TODO_EDENIED naming the
 * first excess right; TODO_EUNAVAIL when the database cannot be asked. */
int pgx_check_least_privilege(const char *url, const char *app_name, const char *writes, todo_err *err);

/* What a service does at start with pgx_check_least_privilege: when strict
 * (production) an excess right or a check that cannot be made stops it
 * (returns nonzero, logged as an error under component); otherwise each is
 * a warning and it returns 0. */
int pgx_start_check(const char *component, const char *url, const char *writes, bool strict);

#endif
