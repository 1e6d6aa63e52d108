/*
 * Integration tests of group commit (cmd_group) on the real PostgreSQL, in
 * a scratch database of their own: concurrent saves share transactions and
 * each gets its own outcome; a save whose version moved fails alone; a save
 * the database refuses fails alone while the rest of its batch commits.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_group.h"
#include "harness.h"
#include "pgx.h"
#include "text.h"

static char db_url[512], db_name[64];
static cmd_group *group;

/* What kind of save a thread makes, by its number. */
enum { GOOD, MOVED, REFUSED, LOCKED };

typedef struct worker {
    int index, kind, n;
    int ok, conflicts, failures;
    int64_t positions[64];
} worker;

static void *run(void *arg)
{
    worker *w = arg;
    todo_err err;
    PGconn *pg = pgx_connect(db_url, "test_group_commit", &err);
    if (pg == NULL) return NULL;
    arena *a = arena_new();
    for (int i = 0; i < w->n; i++) {
        char event_id[37], aggregate_id[37];
        text_uuid_v4(event_id);
        text_uuid_v4(aggregate_id);
        /* The state statement: writes a row (GOOD), nothing (MOVED: the
         * version moved), or fails in the database (REFUSED). */
        static const char *const state[] = {"select 1 where $1::int = 1", "select 1 where $1::int = 0",
                                            "select 1 where 1 / ($1::int - 1) = 1",
                                            "update write.locks set id = id where id = $1::int returning 1"};
        const char *params[1] = {"1"};
        cmd_write cw = {.aggregate_type = "test", .aggregate_id = aggregate_id, .user_id = "u", .version = 1,
                        .state_sql = state[w->kind], .state_params = params, .n_state = 1, .event_id = event_id,
                        .event_type = "test.saved", .schema_version = 1, .envelope = (const uint8_t *)"x",
                        .envelope_len = 1};
        int64_t position = 0;
        arena_reset(a);
        int rc = cmd_group_save(group, pg, a, &cw, &position, &err);
        if (rc == TODO_OK) w->positions[w->ok++] = position;
        else if (rc == TODO_ECONFLICT) w->conflicts++;
        else w->failures++;
    }
    arena_free(a);
    pgx_close(pg);
    return NULL;
}

static void run_workers(worker *ws, int n)
{
    pthread_t th[32];
    for (int i = 0; i < n; i++) pthread_create(&th[i], NULL, run, &ws[i]);
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
}

static long long rows(void)
{
    PGconn *c = PQconnectdb(db_url);
    long long n = harness_scalar(c, "select count(*) from write.events", NULL);
    PQfinish(c);
    return n;
}

static void concurrent_saves_share_transactions_and_keep_their_outcomes(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    worker ws[16];
    long long before = rows();
    for (int i = 0; i < 16; i++) ws[i] = (worker){.index = i, .kind = GOOD, .n = 50};
    int64_t b0, s0, b1, s1, solo;
    cmd_group_stats(group, &b0, &s0, &solo);
    run_workers(ws, 16);
    cmd_group_stats(group, &b1, &s1, &solo);
    int ok = 0;
    for (int i = 0; i < 16; i++) {
        assert_int_equal(ws[i].failures + ws[i].conflicts, 0);
        ok += ws[i].ok;
        for (int k = 1; k < ws[i].ok; k++) assert_true(ws[i].positions[k] > ws[i].positions[k - 1]);
    }
    assert_int_equal(ok, 800);
    assert_int_equal(rows() - before, 800);
    assert_int_equal(s1 - s0, 800);
    printf("800 saves from 16 threads in %lld transactions\n", (long long)(b1 - b0));
    assert_true(b1 - b0 < 800); /* some were written together */
}

static void a_moved_or_refused_save_fails_alone(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    worker ws[12];
    long long before = rows();
    for (int i = 0; i < 12; i++) ws[i] = (worker){.index = i, .kind = i < 8 ? GOOD : i < 10 ? MOVED : REFUSED, .n = 30};
    run_workers(ws, 12);
    int ok = 0;
    for (int i = 0; i < 12; i++) {
        ok += ws[i].ok;
        if (ws[i].kind == GOOD) assert_int_equal(ws[i].ok, 30);
        if (ws[i].kind == MOVED) assert_int_equal(ws[i].conflicts, 30);
        if (ws[i].kind == REFUSED) assert_int_equal(ws[i].failures, 30);
    }
    assert_int_equal(ok, 8 * 30);
    assert_int_equal(rows() - before, 8 * 30);
}

typedef struct crowd {
    worker ws[16];
    atomic_int done;
} crowd;

static void *run_crowd(void *arg)
{
    crowd *c = arg;
    run_workers(c->ws, 16);
    atomic_store(&c->done, 1);
    return NULL;
}

/* A side transaction holds a row lock one save needs (as a long
 * transaction, an operator's psql session or a migration would): that save
 * waits, alone on its own connection, while 16 threads of other saves all
 * commit. (Before, group commit batched every save behind the blocked
 * statement: all of them waited as long as the lock was held.) */
static void a_save_waiting_on_a_lock_holds_nobody_else(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    PGconn *side = PQconnectdb(db_url);
    PQclear(PQexec(side, "begin"));
    PGresult *r = PQexec(side, "select id from write.locks where id = 1 for update");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    int64_t b, s, solo0, solo1;
    cmd_group_stats(group, &b, &s, &solo0);
    worker blocked = {.index = 99, .kind = LOCKED, .n = 1};
    pthread_t bt, ct;
    pthread_create(&bt, NULL, run, &blocked);
    harness_sleep_ms(200); /* it is inside the group, waiting on the lock */
    static crowd c;
    for (int i = 0; i < 16; i++) c.ws[i] = (worker){.index = i, .kind = GOOD, .n = 5};
    atomic_store(&c.done, 0);
    pthread_create(&ct, NULL, run_crowd, &c);
    long long until = harness_now_ms() + 30000;
    while (!atomic_load(&c.done) && harness_now_ms() < until) harness_sleep_ms(20);
    int done_while_locked = atomic_load(&c.done);
    PQclear(PQexec(side, "commit")); /* only now */
    pthread_join(ct, NULL);
    pthread_join(bt, NULL);
    PQfinish(side);
    assert_true(done_while_locked);
    for (int i = 0; i < 16; i++) assert_int_equal(c.ws[i].ok, 5);
    assert_int_equal(blocked.ok, 1); /* and the blocked save went through once the lock was gone */
    cmd_group_stats(group, &b, &s, &solo1);
    assert_int_equal(solo1 - solo0, 1);
}

static int setup(void **state)
{
    (void)state;
    if (!harness_stack_available()) return 0;
    if (!harness_scratch_db("gcdb", db_name, db_url, sizeof db_url)) return -1;
    PGconn *c = PQconnectdb(db_url);
    PGresult *r = PQexec(c, "create schema write; create table write.events (position bigserial primary key,"
                  " event_id uuid not null unique, event_type text not null, schema_version int not null,"
                  " user_id text not null, aggregate_type text not null, aggregate_id uuid not null,"
                  " aggregate_version bigint not null, envelope bytea not null);"
                  " create table write.locks (id int primary key); insert into write.locks values (1)");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    PQfinish(c);
    group = cmd_group_new(64, 50);
    return ok && group != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    if (!harness_stack_available()) return 0;
    cmd_group_free(group);
    harness_drop_db(db_name);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(concurrent_saves_share_transactions_and_keep_their_outcomes),
        cmocka_unit_test(a_moved_or_refused_save_fails_alone),
        cmocka_unit_test(a_save_waiting_on_a_lock_holds_nobody_else),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
