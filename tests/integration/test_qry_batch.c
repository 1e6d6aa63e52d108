/*
 * Integration tests of read batching (qry_batch) on the real PostgreSQL,
 * in a scratch database of their own: concurrent lookups each get their own
 * row (never another user's, never a deleted one) and concurrent first
 * pages their own user's newest tasks in order; reads that queue while a
 * statement is in flight go together in the next one; a failed statement
 * fails every read of its batch, and the reads after it are answered;
 * reads queued for a pump (qry_batch_get_later, qry_batch_list_later) are
 * each answered once with their own rows, none lost when the batcher is
 * freed, and UNAVAILABLE while the database cannot be reached.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "pgx.h"
#include "qry_batch.h"
#include "text.h"

#define USERS 3
#define TASKS 5 /* per user; the last one deleted */

static char db_url[512], db_name[64];
static char ids[USERS][TASKS][37];
static int page[USERS][TASKS - 1]; /* each user's visible tasks, newest first */
static const char *const users[USERS] = {"alice", "bob", "carol@example.org"};

/* The title of a task: its user and number, so a row says whose it is. */
static void title_of(char *out, size_t n, int u, int k) { snprintf(out, n, "%s-%d", users[u], k); }

typedef struct worker {
    qry_batch *b;
    bool lists; /* b is a QRY_BATCH_LIST batcher */
    int index, n;
    int right, wrong, unavailable;
} worker;

/* One lookup of task k of user owner by user asker; true when the answer
 * is right: the row when the task is asker's and not deleted, else none. */
static bool lookup_is_right(worker *w, PGconn *pg, int owner, int k, int asker, bool upper)
{
    char id[37], want[64];
    todo_err err;
    qry_found f;
    snprintf(id, sizeof id, "%s", ids[owner][k]);
    if (upper)
        for (char *c = id; *c; c++) *c = (char)toupper((unsigned char)*c);
    int rc = qry_batch_get(w->b, pg, id, users[asker], &f, &err);
    if (rc != TODO_OK) {
        w->unavailable++;
        return true;
    }
    bool visible = owner == asker && k != TASKS - 1;
    bool right = visible ? f.row >= 0 : f.row < 0;
    if (right && visible) {
        title_of(want, sizeof want, owner, k);
        right = strcmp(PQgetvalue(f.r, f.row, 2), want) == 0 && strcmp(PQgetvalue(f.r, f.row, 1), users[asker]) == 0 &&
                strcasecmp(PQgetvalue(f.r, f.row, 0), id) == 0;
    }
    qry_batch_done(&f);
    return right;
}

/* One first page of asker's tasks of limit rows; true when it is
 * page[asker] cut to limit. */
static bool page_is_right(worker *w, PGconn *pg, int asker, int limit)
{
    todo_err err;
    qry_found f;
    int rows[TASKS + 1], n = -1;
    int rc = qry_batch_list(w->b, pg, users[asker], limit, rows, &n, &f, &err);
    if (rc != TODO_OK) {
        w->unavailable++;
        return true;
    }
    int want = limit < TASKS - 1 ? limit : TASKS - 1;
    bool right = n == want;
    for (int i = 0; right && i < n; i++)
        right = strcmp(PQgetvalue(f.r, rows[i], 0), ids[asker][page[asker][i]]) == 0 &&
                strcmp(PQgetvalue(f.r, rows[i], 1), users[asker]) == 0;
    qry_batch_done(&f);
    return right;
}

static void *run(void *arg)
{
    worker *w = arg;
    todo_err err;
    PGconn *pg = pgx_connect(db_url, "test_qry_batch", &err);
    if (pg == NULL) return NULL;
    for (int i = 0; i < w->n; i++) {
        int seed = w->index * 7919 + i * 31;
        int owner = seed % USERS, k = (seed / USERS) % TASKS, asker = (seed / 5) % USERS;
        bool right = w->lists ? page_is_right(w, pg, asker, 1 + seed % (TASKS + 1))
                              : lookup_is_right(w, pg, owner, k, asker, (seed & 4) != 0);
        if (right) w->right++;
        else w->wrong++;
    }
    pgx_close(pg);
    return NULL;
}

/* 16 threads of n reads each (first pages with lists, else lookups) through
 * one batcher: every answer right, none unavailable. */
static void sixteen_threads(bool lists, int n, const char *what)
{
    qry_batch *b = qry_batch_new(lists ? QRY_BATCH_LIST : QRY_BATCH_GET, 32);
    worker ws[16];
    pthread_t th[16];
    for (int i = 0; i < 16; i++) ws[i] = (worker){.b = b, .lists = lists, .index = i, .n = n};
    for (int i = 0; i < 16; i++) pthread_create(&th[i], NULL, run, &ws[i]);
    for (int i = 0; i < 16; i++) pthread_join(th[i], NULL);
    int64_t statements, reads;
    qry_batch_stats(b, &statements, &reads);
    for (int i = 0; i < 16; i++) {
        assert_int_equal(ws[i].wrong, 0);
        assert_int_equal(ws[i].unavailable, 0);
        assert_int_equal(ws[i].right, n);
    }
    assert_int_equal(reads, 16 * n);
    printf("%lld %s from 16 threads in %lld statements\n", (long long)reads, what, (long long)statements);
    qry_batch_free(b);
}

static void concurrent_lookups_each_get_their_own_row(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    sixteen_threads(false, 300, "lookups");
}

static void concurrent_first_pages_each_get_their_own_tasks_in_order(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    sixteen_threads(true, 200, "first pages");
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits (up to 10 s) until what(b) is n. */
static void wait_for(int (*what)(qry_batch *), qry_batch *b, int n)
{
    for (int i = 0; i < 1000 && what(b) != n; i++) sleep_ms(10);
    assert_int_equal(what(b), n);
}

/* Ends the sessions of this test whose statement waits on a lock, once
 * there is one: the statement in flight fails as on a lost connection. */
static void kill_waiting_statement(void)
{
    PGconn *admin = harness_admin();
    for (int i = 0; i < 1000; i++) {
        long long n = harness_scalar(admin,
                                     "select count(pg_terminate_backend(pid)) from pg_stat_activity where"
                                     " application_name = $1 and wait_event_type = 'Lock'",
                                     "test_qry_batch");
        if (n > 0) break;
        sleep_ms(10);
    }
    PQfinish(admin);
}

/* Six lookups while read.tasks is held (ACCESS EXCLUSIVE, on a connection
 * of its own): the first leads and its statement waits on the lock, the
 * five others queue behind it. With kill, the sessions of both statements
 * are ended while they wait. */
static void six_behind_a_lock(qry_batch *b, bool lists, worker *ws, bool kill)
{
    pthread_t th[6];
    PGconn *holder = PQconnectdb(db_url);
    PQclear(PQexec(holder, "begin; lock table read.tasks in access exclusive mode"));
    for (int i = 0; i < 6; i++) ws[i] = (worker){.b = b, .lists = lists, .index = i, .n = 1};
    pthread_create(&th[0], NULL, run, &ws[0]);
    wait_for(qry_batch_in_flight, b, 1);
    for (int i = 1; i < 6; i++) pthread_create(&th[i], NULL, run, &ws[i]);
    wait_for(qry_batch_waiting, b, 5);
    if (kill) {
        kill_waiting_statement();
        wait_for(qry_batch_in_flight, b, 5);
        kill_waiting_statement();
    }
    PQclear(PQexec(holder, "commit"));
    PQfinish(holder);
    for (int i = 0; i < 6; i++) pthread_join(th[i], NULL);
}

static void reads_queued_behind_a_statement_go_together(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    for (int kind = 0; kind < 2; kind++) {
        qry_batch *b = qry_batch_new(kind == 0 ? QRY_BATCH_GET : QRY_BATCH_LIST, 32);
        worker ws[6];
        six_behind_a_lock(b, kind == 1, ws, false);
        int64_t statements, reads;
        qry_batch_stats(b, &statements, &reads);
        for (int i = 0; i < 6; i++) assert_int_equal(ws[i].right, 1);
        assert_int_equal(reads, 6);
        assert_int_equal(statements, 2); /* the first alone, then the five together */
        qry_batch_free(b);
    }
}

static void a_failed_statement_fails_its_batch_and_the_next_is_answered(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    qry_batch *b = qry_batch_new(QRY_BATCH_GET, 32);
    worker ws[6];
    six_behind_a_lock(b, false, ws, true);
    int64_t statements, lookups;
    qry_batch_stats(b, &statements, &lookups);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(ws[i].unavailable, 1);
        assert_int_equal(ws[i].wrong, 0);
    }
    assert_int_equal(statements, 2);
    /* Nothing is left behind: the next lookups are answered. */
    worker after = {.b = b, .index = 99, .n = 20};
    run(&after);
    assert_int_equal(after.right, 20);
    assert_int_equal(after.unavailable, 0);
    qry_batch_free(b);
}

/* ---- the pump ---- */

typedef struct asked {
    int owner, k, asker, limit;
    char id[37];
} asked;

static atomic_int pumped_right, pumped_wrong, pumped_unavailable;

/* Checks a pumped read's answer against what was asked (ctx). */
static void check_pumped(void *ctx, const qry_pumped *p, arena *a)
{
    (void)a;
    const asked *q = ctx;
    if (p->rc != TODO_OK) {
        atomic_fetch_add(&pumped_unavailable, 1);
        return;
    }
    bool right;
    if (q->limit > 0) { /* a first page */
        int want = q->limit < TASKS - 1 ? q->limit : TASKS - 1;
        right = p->n_rows == want;
        for (int i = 0; right && i < p->n_rows; i++)
            right = strcmp(PQgetvalue(p->f.r, p->rows[i], 0), ids[q->asker][page[q->asker][i]]) == 0 &&
                    strcmp(PQgetvalue(p->f.r, p->rows[i], 1), users[q->asker]) == 0;
    } else {
        bool visible = q->owner == q->asker && q->k != TASKS - 1;
        right = strcmp(p->id, q->id) == 0 && (visible ? p->f.row >= 0 : p->f.row < 0);
        if (right && visible) {
            char want[64];
            title_of(want, sizeof want, q->owner, q->k);
            right = strcmp(PQgetvalue(p->f.r, p->f.row, 2), want) == 0 &&
                    strcmp(PQgetvalue(p->f.r, p->f.row, 1), users[q->asker]) == 0;
        }
    }
    atomic_fetch_add(right ? &pumped_right : &pumped_wrong, 1);
}

static atomic_int pumped_found, pumped_missing;

/* Counts a pumped lookup's row found or not. */
static void count_found(void *ctx, const qry_pumped *p, arena *a)
{
    (void)ctx, (void)a;
    if (p->rc == TODO_OK) atomic_fetch_add(p->f.row >= 0 ? &pumped_found : &pumped_missing, 1);
}

/* n reads queued at once for 2 pump threads (first pages with lists):
 * each answered right once, all of them by the time the batcher is freed. */
static void pumped_reads(bool lists, int n)
{
    qry_batch *b = qry_batch_new(lists ? QRY_BATCH_LIST : QRY_BATCH_GET, 32);
    todo_err err;
    assert_int_equal(qry_batch_pump(b, db_url, 2, &err), TODO_OK);
    assert_true(qry_batch_pumped(b));
    asked *q = calloc((size_t)n, sizeof *q);
    atomic_store(&pumped_right, 0);
    atomic_store(&pumped_wrong, 0);
    atomic_store(&pumped_unavailable, 0);
    for (int i = 0; i < n; i++) {
        int seed = i * 31 + 7;
        q[i] = (asked){.owner = seed % USERS, .k = (seed / USERS) % TASKS, .asker = (seed / 5) % USERS};
        if (lists) {
            q[i].limit = 1 + seed % (TASKS + 1);
            qry_batch_list_later(b, users[q[i].asker], q[i].limit, check_pumped, &q[i]);
        } else {
            snprintf(q[i].id, sizeof q[i].id, "%s", ids[q[i].owner][q[i].k]);
            qry_batch_get_later(b, q[i].id, users[q[i].asker], check_pumped, &q[i]);
        }
    }
    qry_batch_free(b); /* answers what is still queued */
    assert_int_equal(atomic_load(&pumped_wrong), 0);
    assert_int_equal(atomic_load(&pumped_unavailable), 0);
    assert_int_equal(atomic_load(&pumped_right), n);
    free(q);
}

static void pumped_reads_are_each_answered_once_with_their_own_rows(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    pumped_reads(false, 600);
    pumped_reads(true, 400);
}

/* A user id of the longest length is copied whole: cut by a byte, it named
 * the user whose id is its prefix, whose task it was then answered. */
static void a_pumped_lookup_keeps_the_longest_user_id_whole(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char longest[129], prefix[128], id[37];
    memset(longest, 'u', 128);
    longest[128] = '\0';
    memcpy(prefix, longest, 127);
    prefix[127] = '\0';
    text_uuid_v4(id);
    PGconn *c = PQconnectdb(db_url);
    const char *p[2] = {id, prefix};
    PGresult *r = PQexecParams(c, "insert into read.tasks (id, user_id, title) values ($1, $2, 'the prefix''s')", 2,
                               NULL, p, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    PQfinish(c);
    qry_batch *b = qry_batch_new(QRY_BATCH_GET, 32);
    todo_err err;
    assert_int_equal(qry_batch_pump(b, db_url, 1, &err), TODO_OK);
    atomic_store(&pumped_found, 0);
    atomic_store(&pumped_missing, 0);
    qry_batch_get_later(b, id, longest, count_found, NULL);
    qry_batch_get_later(b, id, prefix, count_found, NULL);
    qry_batch_free(b);
    assert_int_equal(atomic_load(&pumped_found), 1);   /* the prefix's own lookup */
    assert_int_equal(atomic_load(&pumped_missing), 1); /* not the longer id's */
}

static void a_pump_without_its_database_answers_unavailable(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    qry_batch *b = qry_batch_new(QRY_BATCH_GET, 32);
    todo_err err;
    char url[64];
    snprintf(url, sizeof url, "postgresql://nobody@127.0.0.1:%d/none?connect_timeout=2", harness_free_port());
    assert_int_equal(qry_batch_pump(b, url, 1, &err), TODO_OK);
    asked q = {.owner = 0, .k = 0, .asker = 0};
    snprintf(q.id, sizeof q.id, "%s", ids[0][0]);
    atomic_store(&pumped_unavailable, 0);
    qry_batch_get_later(b, q.id, users[0], check_pumped, &q);
    qry_batch_free(b);
    assert_int_equal(atomic_load(&pumped_unavailable), 1);
}

static int setup(void **state)
{
    (void)state;
    if (!harness_stack_available()) return 0;
    if (!harness_scratch_db("qbdb", db_name, db_url, sizeof db_url)) return -1;
    PGconn *c = PQconnectdb(db_url);
    /* read.tasks as the migrations leave it, in the columns GetTask reads. */
    PGresult *r = PQexec(c, "create schema read; create table read.tasks (id uuid primary key, user_id text not null,"
                  " title text not null, description text not null default '', priority smallint not null default 2,"
                  " due_at timestamptz, category text not null default '', tags text[] not null default '{}',"
                  " completed boolean not null default false, completed_at timestamptz, version bigint not null default 1,"
                  " created_at timestamptz not null default now(), updated_at timestamptz not null default now(),"
                  " deleted boolean not null default false, recurring_pattern_id uuid)");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    for (int u = 0; u < USERS && ok; u++)
        for (int k = 0; k < TASKS && ok; k++) {
            char title[64];
            text_uuid_v4(ids[u][k]);
            title_of(title, sizeof title, u, k);
            /* Tasks 0 and 1 share a time, as do 2 and 3: the id decides. */
            char minute[8];
            snprintf(minute, sizeof minute, "%d", k / 2);
            const char *p[5] = {ids[u][k], users[u], title, k == TASKS - 1 ? "true" : "false", minute};
            r = PQexecParams(c,
                             "insert into read.tasks (id, user_id, title, deleted, created_at) values ($1, $2, $3, $4,"
                             " '2026-01-01T00:00:00Z'::timestamptz + $5::int * interval '1 minute')",
                             5, NULL, p, NULL, NULL, 0);
            ok = PQresultStatus(r) == PGRES_COMMAND_OK;
            PQclear(r);
        }
    PQfinish(c);
    /* Newest first: 2 and 3 (the greater id first), then 0 and 1. */
    for (int u = 0; u < USERS; u++) {
        bool hi = strcmp(ids[u][3], ids[u][2]) > 0, lo = strcmp(ids[u][1], ids[u][0]) > 0;
        page[u][0] = hi ? 3 : 2;
        page[u][1] = hi ? 2 : 3;
        page[u][2] = lo ? 1 : 0;
        page[u][3] = lo ? 0 : 1;
    }
    return ok ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    if (!harness_stack_available()) return 0;
    harness_drop_db(db_name);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(concurrent_lookups_each_get_their_own_row),
        cmocka_unit_test(concurrent_first_pages_each_get_their_own_tasks_in_order),
        cmocka_unit_test(reads_queued_behind_a_statement_go_together),
        cmocka_unit_test(a_failed_statement_fails_its_batch_and_the_next_is_answered),
        cmocka_unit_test(pumped_reads_are_each_answered_once_with_their_own_rows),
        cmocka_unit_test(a_pumped_lookup_keeps_the_longest_user_id_whole),
        cmocka_unit_test(a_pump_without_its_database_answers_unavailable),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
