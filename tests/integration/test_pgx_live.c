/*
 * Integration tests of pgx against the real PostgreSQL: pipelines (one
 * round trip for many statements), prepared statements, and what a failure
 * in the middle of a pipeline leaves behind.
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_pipeline_runs_every_statement_in_order),
        cmocka_unit_test(a_failure_names_its_statement_and_skips_the_rest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
