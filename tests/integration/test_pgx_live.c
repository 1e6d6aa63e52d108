/*
 * Integration tests of pgx against the real PostgreSQL: pipelines (one
 * round trip for many statements), prepared statements, what a failure
 * in the middle of a pipeline leaves behind, and TLS to the server with
 * sslmode=verify-full (the stack's server has a certificate of its own CA,
 * made at stack start by scripts/make-certs.sh).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "pgx.h"

static PGconn *connect_admin(void)
{
    todo_err err;
    PGconn *c = pgx_connect(getenv("TODO_PG_URL"), "test_pgx_live", &err);
    if (c == NULL) fail_msg("%s", err.msg);
    return c;
}

static void a_pipeline_runs_every_statement_in_order(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    PGconn *c = connect_admin();
    todo_err err;
    const char *one[1] = {"41"};
    pgx_stmt s[] = {
        {"begin", 0, NULL},
        {"create temp table pipe_t (v int) on commit drop", 0, NULL},
        {"insert into pipe_t values ($1::int + 1)", 1, one},
        {"insert into pipe_t select v * 2 from pipe_t", 0, NULL},
        {"select sum(v), count(*) from pipe_t", 0, NULL},
        {"commit", 0, NULL},
    };
    PGresult *res[6];
    int failed = 7;
    /* Twice: the second run uses the statements prepared by the first. */
    for (int round = 0; round < 2; round++) {
        assert_int_equal(pgx_pipeline(c, s, 6, res, &failed, &err), TODO_OK);
        assert_int_equal(failed, -1);
        assert_string_equal(PQgetvalue(res[4], 0, 0), "126");
        assert_string_equal(PQgetvalue(res[4], 0, 1), "2");
        for (int i = 0; i < 6; i++) PQclear(res[i]);
    }
    /* The connection is out of pipeline mode: plain calls work. */
    assert_int_equal(PQpipelineStatus(c), PQ_PIPELINE_OFF);
    assert_int_equal(pgx_cmd(c, "select 1", 0, NULL, &err), TODO_OK);
    assert_int_equal(pgx_pipeline(c, s, 0, NULL, NULL, &err), TODO_OK);
    pgx_close(c);
}

static void a_failure_names_its_statement_and_skips_the_rest(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    PGconn *c = connect_admin();
    todo_err err;
    const char *bad[1] = {"not-a-uuid"};
    pgx_stmt s[] = {
        {"begin", 0, NULL},
        {"create temp table pipe_f (v int)", 0, NULL},
        {"select $1::uuid", 1, bad},
        {"insert into pipe_f values (1)", 0, NULL},
        {"commit", 0, NULL},
    };
    PGresult *res[5];
    int failed = -1;
    assert_int_equal(pgx_pipeline(c, s, 5, res, &failed, &err), TODO_EINTERNAL);
    assert_int_equal(failed, 2);
    assert_non_null(strstr(err.msg, "invalid input syntax for type uuid"));
    for (int i = 0; i < 5; i++) assert_null(res[i]);
    /* The transaction is aborted, not committed: roll it back and nothing is left. */
    assert_int_equal(PQtransactionStatus(c), PQTRANS_INERROR);
    assert_int_equal(pgx_cmd(c, "rollback", 0, NULL, &err), TODO_OK);
    PGresult *r = pgx_exec(c, "select count(*) from pg_class where relname = 'pipe_f'", 0, NULL, &err);
    assert_non_null(r);
    assert_string_equal(PQgetvalue(r, 0, 0), "0");
    PQclear(r);
    /* A unique violation maps to its status, as with pgx_exec. */
    pgx_stmt dup[] = {{"create temp table pipe_u (v int primary key)", 0, NULL},
                      {"insert into pipe_u values (1), (1)", 0, NULL}};
    assert_int_equal(pgx_pipeline(c, dup, 2, NULL, &failed, &err), TODO_EEXISTS);
    assert_int_equal(failed, 1);
    pgx_close(c);
}

/* The admin URL with extra query parameters. */
static void url_with(char *out, size_t cap, const char *params)
{
    const char *base = getenv("TODO_PG_URL");
    snprintf(out, cap, "%s%s%s", base, strchr(base, '?') ? "&" : "?", params);
}

/* verify-full against the stack's CA: an encrypted session with the
 * server it meant; another CA, or a name the certificate does not carry,
 * gets no session. */
static void tls_with_verify_full_checks_the_servers_certificate(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    const char *dir = getenv("TODO_STACK_DIR");
    assert_non_null(dir);
    char url[1200], params[600];
    todo_err err;
    snprintf(params, sizeof params, "sslmode=verify-full&sslrootcert=%s/certs/ca.pem", dir);
    url_with(url, sizeof url, params);
    PGconn *c = pgx_connect(url, "test_pgx_tls", &err);
    if (c == NULL) fail_msg("%s", err.msg);
    PGresult *r = pgx_exec(c, "select ssl::text, version from pg_stat_ssl where pid = pg_backend_pid()", 0, NULL, &err);
    assert_non_null(r);
    assert_string_equal(PQgetvalue(r, 0, 0), "true");
    assert_non_null(strstr(PQgetvalue(r, 0, 1), "TLS"));
    PQclear(r);
    pgx_close(c);

    snprintf(params, sizeof params, "sslmode=verify-full&sslrootcert=%s/certs/other-ca.pem", dir);
    url_with(url, sizeof url, params);
    assert_null(pgx_connect(url, "test_pgx_tls", &err));
    assert_non_null(strstr(err.msg, "certificate verify failed"));

    /* The certificate names localhost and 127.0.0.1: another name is refused. */
    snprintf(params, sizeof params, "sslmode=verify-full&sslrootcert=%s/certs/ca.pem&hostaddr=127.0.0.1&host=db.example.com",
             dir);
    url_with(url, sizeof url, params);
    assert_null(pgx_connect(url, "test_pgx_tls", &err));
    assert_non_null(strstr(err.msg, "does not match host name"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_pipeline_runs_every_statement_in_order),
        cmocka_unit_test(a_failure_names_its_statement_and_skips_the_rest),
        cmocka_unit_test(tls_with_verify_full_checks_the_servers_certificate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
