/*
 * Integration tests: one oversized or unpublishable event never stops the
 * outbox (issue: a CreateRecurringPattern carrying ~1 MB of unknown fields
 * once stopped event delivery for every user).
 *
 * The services run with TODO_EVENT_MAX_BYTES=2048 and TODO_RELAY_BATCH=50,
 * so that "too large" and "more than a batch" are cheap to reach:
 *   - a command whose event would be too large is refused naming the field,
 *     and nothing is written;
 *   - unknown fields a client adds never reach write.events;
 *   - a row over the limit that got into the outbox anyway is parked with
 *     its reason, everything after it (other users, more than a batch) is
 *     published once and projected, the parked aggregate's later event
 *     waits; dropping the parked row lets it through across the gap;
 *   - retrying a parked row publishes it before what waited behind it;
 *   - the relay's batch and its backlog status read a backlog once, not
 *     once per row (they read it once per row, quadratic, when the planner
 *     took the unpublished rows' index for the parked-row probe: at 82,000
 *     rows the status query ran for minutes and nothing was published);
 *   - a publisher whose status query hangs still publishes (the query is
 *     cut at 2 s);
 *   - when Kafka refuses a row (here: users.events.v1's max.message.bytes
 *     lowered for the test), none of the later rows of its user is written
 *     behind it, whether the producer is new to the partition (the later
 *     rows wait for the first acknowledgement) or settled on it (Kafka
 *     refuses what would follow the gap). librdkafka's mock cluster checks
 *     neither, so this is tested here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_outbox.h"
#include "event.h"
#include "grpcx.h"
#include "harness.h"
#include "kafkax.h"
#include "outbox.h"
#include "text.h"
#include "topic_names.h"
#include "todo/v1/command.pb-c.h"
#include "todo/v1/events.pb-c.h"

#define LIMIT 2048

static Todo__V1__CommandReply *create(const char *auth, const char *title, const char *description,
                                      grpc_status_code want, grpcx_result *res)
{
    Todo__V1__CreateTaskRequest rq = TODO__V1__CREATE_TASK_REQUEST__INIT;
    Todo__V1__CommandReply *rp = NULL;
    rq.title = (char *)title;
    rq.description = (char *)(description != NULL ? description : "");
    grpc_status_code code = harness_command("CreateTask", &rq.base, auth, &rp, res);
    if (code != want) fail_msg("CreateTask: %s (%s)", grpcx_code_name(code), res->message);
    return rp;
}

/* A task.updated envelope (in a), with a new event id in event_id. */
static uint8_t *task_updated(arena *a, const char *user, const char *task_id, int64_t version, const char *title,
                             const char *description, char event_id[37], size_t *len)
{
    Todo__V1__TaskUpdated ev = TODO__V1__TASK_UPDATED__INIT;
    char *fields[2] = {"title", "description"};
    ev.task_id = (char *)task_id;
    ev.title = (char *)title;
    ev.description = (char *)description;
    ev.changed_fields = fields;
    ev.n_changed_fields = 2;
    assert_int_equal(text_uuid_v4(event_id), 0);
    event_meta m = {.event_id = event_id, .event_type = "task.updated", .source = "test", .time_us = event_now_us(),
                    .user_id = user, .aggregate_type = "task", .aggregate_id = task_id,
                    .aggregate_version = version, .schema_version = 1, .correlation_id = "", .causation_id = ""};
    uint8_t *env;
    todo_err err;
    assert_int_equal(event_encode(&m, &ev.base, a, &env, len, &err), 0);
    return env;
}

/* Writes an event straight into the outbox, as a command would (or, with
 * parked, as the relay leaves a row it could not publish). Returns its
 * position. */
static long long inject(const char *user, const char *task_id, int64_t version, const char *title,
                        const char *description, bool parked)
{
    char event_id[37];
    arena *a = arena_new();
    size_t len;
    uint8_t *env = task_updated(a, user, task_id, version, title, description, event_id, &len);
    char v[24];
    snprintf(v, sizeof v, "%lld", (long long)version);
    const char *p[7] = {event_id, user, task_id, v, (const char *)env, parked ? "t" : "f", NULL};
    int lengths[7] = {0, 0, 0, 0, (int)len, 0, 0}, formats[7] = {0, 0, 0, 0, 1, 0, 0};
    PGresult *r = PQexecParams(harness_db,
                               "insert into write.events (event_id, event_type, schema_version, user_id, aggregate_type,"
                               " aggregate_id, aggregate_version, envelope, parked_at, parked_reason)"
                               " values ($1::uuid, 'task.updated', 1, $2, 'task', $3::uuid, $4::bigint, $5,"
                               " case when $6::bool then now() end, case when $6::bool then 'injected by the test' end)"
                               " returning position",
                               6, NULL, p, lengths, formats, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) fail_msg("inject: %s", PQresultErrorMessage(r));
    long long pos = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    /* The task's state follows, as a command's statement would have it:
     * other tests (a rebuild) compare the read model with write.tasks. */
    const char *q[3] = {task_id, v, title};
    r = PQexecParams(harness_db, "update write.tasks set version = $2::bigint, title = $3 where id = $1::uuid", 3, NULL,
                     q, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) fail_msg("inject: %s", PQresultErrorMessage(r));
    PQclear(r);
    arena_free(a);
    return pos;
}

static long long scalar_pos(const char *sql, long long position)
{
    char p[24];
    snprintf(p, sizeof p, "%lld", position);
    return harness_scalar(harness_db, sql, p);
}

/* Waits until sql (one parameter) gives want; false on time-out. */
static bool wait_for(const char *sql, const char *param, long long want, int timeout_ms)
{
    long long until = harness_now_ms() + timeout_ms;
    while (harness_now_ms() < until) {
        if (harness_scalar(harness_db, sql, param) == want) return true;
        harness_sleep_ms(50);
    }
    return false;
}

typedef struct positions {
    const char *prefix;
    long long pos[512];
    int n;
} positions;

static bool ours(const rd_kafka_message_t *m, void *ctx)
{
    positions *p = ctx;
    size_t plen = strlen(p->prefix);
    if (m->key_len < plen || memcmp(m->key, p->prefix, plen) != 0 || p->n == 512) return false;
    rd_kafka_headers_t *h;
    const void *v;
    size_t vlen;
    char buf[24] = "";
    if (rd_kafka_message_headers(m, &h) == 0 && rd_kafka_header_get_last(h, "todo_position", &v, &vlen) == 0 &&
        vlen < sizeof buf)
        memcpy(buf, v, vlen);
    p->pos[p->n++] = strtoll(buf, NULL, 10);
    return true;
}

static void an_event_over_the_limit_is_refused_naming_the_field(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "toolarge");
    char *auth = harness_bearer(user, 600, NULL), description[3001];
    memset(description, 'd', 3000);
    description[3000] = '\0';
    grpcx_result res;
    create(auth, "big", description, GRPC_STATUS_INVALID_ARGUMENT, &res);
    assert_true(strncmp(res.message, "description: the task.created event would be", 44) == 0);
    assert_non_null(strstr(res.message, "TODO_EVENT_MAX_BYTES"));
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.tasks where user_id = $1", user), 0);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.events where user_id = $1", user), 0);
    free(auth);
}

static void unknown_fields_never_reach_storage(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "unknown");
    char *auth = harness_bearer(user, 600, NULL);
    grpcx_result res;
    Todo__V1__CommandReply *t = create(auth, "template", NULL, GRPC_STATUS_OK, &res);

    /* The rule carries 300,000 bytes of an unknown field 99 (the request
     * stays under the 320 KiB limit). */
    enum { JUNK = 300000 };
    uint8_t *junk = malloc(JUNK + 8);
    size_t n = 0;
    uint32_t v = JUNK;
    do {
        junk[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    memset(junk + n, 'x', JUNK);
    ProtobufCMessageUnknownField u = {.tag = 99, .wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED, .len = n + JUNK,
                                      .data = junk};
    Todo__V1__RecurrenceRule rule = TODO__V1__RECURRENCE_RULE__INIT;
    rule.frequency = TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_DAILY;
    rule.time_zone = "UTC";
    rule.base.n_unknown_fields = 1;
    rule.base.unknown_fields = &u;
    Todo__V1__CreateRecurringPatternRequest rq = TODO__V1__CREATE_RECURRING_PATTERN_REQUEST__INIT;
    rq.task_id = t->id;
    rq.rule = &rule;
    Todo__V1__CommandReply *rp = NULL;
    assert_int_equal(harness_command("CreateRecurringPattern", &rq.base, auth, &rp, &res), GRPC_STATUS_OK);
    assert_true(harness_scalar(harness_db, "select max(octet_length(envelope)) from write.events where user_id = $1",
                               user) < 1024);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from write.events where user_id = $1"
                                                " and position('\\x78787878787878787878'::bytea in envelope) > 0", user),
                     0);
    assert_true(wait_for("select count(*) from write.events where user_id = $1 and published_at is null", user, 0,
                         10000));
    free(junk);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    protobuf_c_message_free_unpacked(&t->base, NULL);
    free(auth);
}

static void a_parked_event_never_stops_the_outbox(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char prefix[64], owner[80];
    harness_user(prefix, "parking");
    snprintf(owner, sizeof owner, "%.40s-owner", prefix);
    char *auth = harness_bearer(owner, 600, NULL);
    grpcx_result res;
    Todo__V1__CommandReply *a = create(auth, "before", NULL, GRPC_STATUS_OK, &res);
    assert_true(wait_for("select count(*) from read.tasks where id = $1::uuid", a->id, 1, 20000));

    /* Version 2 is over the limit (it came in some other way than a
     * command); version 3 is ordinary. */
    char big[3001];
    memset(big, 'y', 3000);
    big[3000] = '\0';
    long long p2 = inject(owner, a->id, 2, "too big", big, false);
    long long p3 = inject(owner, a->id, 3, "after the gap", "", false);

    /* More than a relay batch of other users' commands. */
    enum { USERS = 6, EACH = 10 };
    for (int u = 0; u < USERS; u++) {
        char user[80];
        snprintf(user, sizeof user, "%.40s-u%d", prefix, u);
        char *other = harness_bearer(user, 600, NULL);
        for (int i = 0; i < EACH; i++) {
            Todo__V1__CommandReply *rp = create(other, "ordinary", NULL, GRPC_STATUS_OK, &res);
            protobuf_c_message_free_unpacked(&rp->base, NULL);
        }
        free(other);
    }
    char like[80];
    snprintf(like, sizeof like, "%.40s-u%%", prefix);
    assert_true(wait_for("select count(*) from write.events where user_id like $1 and published_at is null", like, 0,
                         20000));
    assert_true(wait_for("select count(*) from read.tasks where user_id like $1", like, USERS * EACH, 20000));

    /* The big one is parked with its reason; version 3 waits behind it. */
    assert_int_equal(scalar_pos("select count(*) from write.events where position = $1::bigint and parked_at is not null"
                                " and parked_reason like '%TODO_EVENT_MAX_BYTES%'", p2), 1);
    assert_int_equal(scalar_pos("select count(*) from write.events where position = $1::bigint and published_at is null"
                                " and parked_at is null", p3), 1);
    cmd_parked parked[64];
    int n = 0;
    todo_err err;
    assert_int_equal(cmd_outbox_parked(harness_db, parked, 64, &n, &err), 0);
    bool listed = false;
    for (int i = 0; i < n; i++)
        if (parked[i].position == p2) {
            listed = true;
            assert_int_equal(parked[i].waiting, 1);
            assert_true(parked[i].bytes > LIMIT);
        }
    assert_true(listed);
    cmd_outbox_status st;
    assert_int_equal(cmd_outbox_status_read(harness_db, &st, &err), 0);
    assert_true(st.parked >= 1 && st.held >= 1);

    /* Each published record once: nothing after the parked row was sent
     * again on a later pass. */
    positions got = {.prefix = prefix};
    harness_count("tasks.events.v1", ours, &got, 1 + USERS * EACH, 20000);
    assert_int_equal(got.n, 1 + USERS * EACH);
    for (int i = 0; i < got.n; i++)
        for (int j = i + 1; j < got.n; j++)
            if (got.pos[i] == got.pos[j]) fail_msg("position %lld was published twice", got.pos[i]);

    /* Dropped: version 3 goes out and is projected across the gap. */
    assert_int_equal(cmd_outbox_drop(harness_db, p2, "too large to ever publish", &err), 0);
    assert_int_equal(cmd_outbox_drop(harness_db, p2, "again", &err), TODO_ENOTFOUND);
    assert_true(wait_for("select count(*) from read.tasks where id = $1::uuid and title = 'after the gap'"
                         " and version = 3", a->id, 1, 20000));
    assert_int_equal(scalar_pos("select count(*) from write.events where position = $1::bigint"
                                " and dropped_at is not null and parked_reason like '%dropped by an operator%'", p2), 1);
    protobuf_c_message_free_unpacked(&a->base, NULL);
    free(auth);
}

static void a_retried_event_goes_out_before_what_waited_behind_it(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "retried");
    char *auth = harness_bearer(user, 600, NULL);
    grpcx_result res;
    Todo__V1__CommandReply *b = create(auth, "first", NULL, GRPC_STATUS_OK, &res);
    long long p2 = inject(user, b->id, 2, "second", "", true);
    long long p3 = inject(user, b->id, 3, "third", "", false);
    harness_sleep_ms(1500); /* the relay had its chance: version 3 still waits */
    assert_int_equal(scalar_pos("select count(*) from write.events where position = $1::bigint and published_at is null",
                                p3), 1);
    todo_err err;
    assert_int_equal(cmd_outbox_retry(harness_db, p2, &err), 0);
    assert_true(wait_for("select count(*) from write.events where user_id = $1 and published_at is null", user, 0,
                         10000));
    positions got = {.prefix = user};
    assert_int_equal(harness_consume("tasks.events.v1", ours, &got, 3, 20000), 3);
    assert_true(got.pos[1] == p2 && got.pos[2] == p3);
    assert_true(wait_for("select count(*) from read.tasks where id = $1::uuid and title = 'third' and version = 3",
                         b->id, 1, 20000));
    protobuf_c_message_free_unpacked(&b->base, NULL);
    free(auth);
}

/* Runs sql on the test's connection, which must accept it. */
static void exec_ok(const char *sql)
{
    PGresult *r = PQexec(harness_db, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
}

/* The shared buffers (hit and read) the statement touched, subplans
 * included: the root's line of EXPLAIN (ANALYZE, BUFFERS). */
static long long buffers_of(const char *sql)
{
    char explain[4096];
    snprintf(explain, sizeof explain, "explain (analyze, buffers) %s", sql);
    PGresult *r = PQexec(harness_db, explain);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    long long total = -1;
    for (int i = 0; i < PQntuples(r) && total < 0; i++) {
        const char *b = strstr(PQgetvalue(r, i, 0), "Buffers: shared");
        if (b == NULL) continue;
        const char *hit = strstr(b, "hit="), *read = strstr(b, "read=");
        total = (hit != NULL ? strtoll(hit + 4, NULL, 10) : 0) + (read != NULL ? strtoll(read + 5, NULL, 10) : 0);
    }
    PQclear(r);
    assert_true(total >= 0);
    return total;
}

static void the_relay_reads_its_backlog_once_not_once_per_row(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    enum { BACKLOG = 3000 };
    /* Statistics taken while the outbox was (about) empty, as autovacuum
     * mostly finds it; then a backlog, never committed, so the stack's
     * relay never sees it. */
    exec_ok("begin");
    exec_ok("analyze write.events");
    exec_ok("insert into write.events (event_id, event_type, schema_version, user_id, aggregate_type, aggregate_id,"
            " aggregate_version, envelope) select gen_random_uuid(), 'task.created', 1, 'relay-backlog', 'task',"
            " gen_random_uuid(), 1, decode(repeat('ab', 180), 'hex') from generate_series(1, 3000)");
    exec_ok("prepare relay_batch(int) as " CMD_RELAY_SELECT_SQL);
    long long batch = buffers_of("execute relay_batch(500)");
    long long status = buffers_of(CMD_OUTBOX_BACKLOG_SQL(""));
    exec_ok("rollback");
    exec_ok("deallocate relay_batch");
    /* Once over the backlog is a page per few rows and a probe per row of
     * the batch (about 1,000 buffers each); once per row read 69,595 and
     * 224,230 here (360-byte envelopes, like CreateTask's). */
    if (batch > 5 * BACKLOG || status > 5 * BACKLOG)
        fail_msg("over a backlog of %d rows the relay's batch of 500 read %lld buffers and its status %lld"
                 " (at most %d each)", BACKLOG, batch, status, 5 * BACKLOG);
}

/* An outbox publisher whose status query takes a minute still publishes:
 * the query is cut at 2 s (outbox.c), since the publisher waits for it. A
 * table of the test's own, so the stack's relay is not involved. */
/* A test outbox table public.<name>, made anew, and its statements; the
 * status statement ends with status_from (a FROM clause, or ""). */
typedef struct test_outbox {
    char name[32], table[48], select_sql[192], done_sql[128], park_sql[128], status_sql[192];
} test_outbox;

static outbox_table test_outbox_table(test_outbox *b, const char *name, const char *lock_key, const char *status_from)
{
    snprintf(b->name, sizeof b->name, "%s", name);
    snprintf(b->table, sizeof b->table, "public.%s", name);
    char sql[320];
    snprintf(sql, sizeof sql, "drop table if exists %s", b->table);
    exec_ok(sql);
    snprintf(sql, sizeof sql,
             "create table %s (id bigserial primary key, user_id text not null, aggregate_id text not null,"
             " envelope bytea not null, event_type text not null, done boolean not null default false)",
             b->table);
    exec_ok(sql);
    snprintf(b->select_sql, sizeof b->select_sql,
             "select id, user_id, aggregate_id, envelope, event_type from %s where not done order by id limit $1::int",
             b->table);
    snprintf(b->done_sql, sizeof b->done_sql, "update %s set done = true where id = any($1::bigint[])", b->table);
    snprintf(b->park_sql, sizeof b->park_sql,
             "update %s set done = true where id = $1::bigint and $2::text is not null", b->table);
    snprintf(b->status_sql, sizeof b->status_sql,
             "select (select count(*) from %s where not done), 0::float8, 0::bigint, 0::bigint%s", b->table,
             status_from);
    return (outbox_table){.name = b->name, .table = b->table, .lock_key = lock_key, .channel = b->name,
                          .select_sql = b->select_sql, .done_sql = b->done_sql, .park_sql = b->park_sql,
                          .status_sql = b->status_sql};
}

/* Inserts one task.updated row of a new user (named after label) into
 * the test outbox, and waits up to 20 s for the publisher to mark it. */
static bool one_row_is_published(const test_outbox *b, const char *label, const char *title)
{
    char user[64], task_id[37], event_id[37], sql[192];
    harness_user(user, label);
    assert_int_equal(text_uuid_v4(task_id), 0);
    arena *a = arena_new();
    size_t len;
    uint8_t *env = task_updated(a, user, task_id, 2, title, "", event_id, &len);
    const char *p[3] = {user, task_id, (const char *)env};
    int lengths[3] = {0, 0, (int)len}, formats[3] = {0, 0, 1};
    snprintf(sql, sizeof sql,
             "insert into %s (user_id, aggregate_id, envelope, event_type) values ($1, $2, $3, 'task.updated')",
             b->table);
    PGresult *r = PQexecParams(harness_db, sql, 3, NULL, p, lengths, formats, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) fail_msg("insert: %s", PQresultErrorMessage(r));
    PQclear(r);
    arena_free(a);
    snprintf(sql, sizeof sql, "select count(*) from %s where user_id = $1 and done", b->table);
    return wait_for(sql, user, 1, 20000);
}

static void drop_test_outbox(const test_outbox *b)
{
    char sql[96];
    snprintf(sql, sizeof sql, "drop table %s", b->table);
    exec_ok(sql);
}

static void a_slow_status_query_never_holds_events_back(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    test_outbox b;
    const outbox_table t = test_outbox_table(&b, "slow_outbox", "7428399", " from pg_sleep(60)");
    const outbox_opts o = {.pg_url = getenv("TODO_PG_URL"), .brokers = getenv("TODO_KAFKA_BROKERS"),
                           .app_name = "test-slow-outbox", .batch = 10, .poll_ms = 100, .max_event_bytes = 1 << 20};
    todo_err err;
    outbox *ob = outbox_start(&t, &o, &err);
    if (ob == NULL) fail_msg("outbox_start: %s", err.msg);
    /* Once the publisher sits in its status query, a row arrives. */
    assert_true(wait_for("select count(*) from pg_stat_activity where application_name like 'test-slow-outbox%'"
                         " and state = 'active' and query like $1",
                         "%pg_sleep(60)%", 1, 20000));
    /* Published well before the status query would have ended (60 s). */
    bool published = one_row_is_published(&b, "slow-status", "waits for no gauge");
    outbox_stop(ob);
    drop_test_outbox(&b);
    assert_true(published);
}

/* What the publisher's ticks saw on its connection. */
typedef struct tick_seen {
    char synchronous_commit[16];
    int ticks;
} tick_seen;

static void record_settings(PGconn *pg, void *ctx)
{
    tick_seen *seen = ctx;
    PGresult *r = PQexec(pg, "select current_setting('synchronous_commit')");
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        snprintf(seen->synchronous_commit, sizeof seen->synchronous_commit, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    seen->ticks++;
}

/* The publisher's marks (published, parked) are committed without waiting
 * for their WAL flush: a mark a database crash loses only sends its row
 * again, as a crash between Kafka's acknowledgement and the mark does
 * anyway. The flush was a quarter of the relay's database CPU per event.
 * The rows are still marked. */
static void the_publishers_marks_do_not_wait_for_the_wal_flush(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    tick_seen seen = {.ticks = 0};
    test_outbox b;
    outbox_table t = test_outbox_table(&b, "async_outbox", "7428400", "");
    t.leader_tick = record_settings;
    t.ctx = &seen;
    const outbox_opts o = {.pg_url = getenv("TODO_PG_URL"), .brokers = getenv("TODO_KAFKA_BROKERS"),
                           .app_name = "test-async-outbox", .batch = 10, .poll_ms = 100, .max_event_bytes = 1 << 20};
    todo_err err;
    outbox *ob = outbox_start(&t, &o, &err);
    if (ob == NULL) fail_msg("outbox_start: %s", err.msg);
    bool published = one_row_is_published(&b, "async-marks", "marked without a flush");
    outbox_stop(ob); /* joins the publisher: seen is its no more */
    drop_test_outbox(&b);
    assert_true(published);
    assert_true(seen.ticks > 0);
    assert_string_equal(seen.synchronous_commit, "off");
}

/* ---- Kafka refuses what would follow a refused row ---- */

#define GAP_MAX_BYTES "2000" /* users.events.v1's max.message.bytes during the test */

/* Describes users.events.v1 into res (a new one, to be freed) with the
 * topic's own overrides but max.message.bytes; mmb gets that one's value. */
static rd_kafka_ConfigResource_t *users_topic_overrides(rd_kafka_t *rk, rd_kafka_queue_t *q, char *mmb, size_t cap)
{
    rd_kafka_ConfigResource_t *d = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, TOPIC_USERS);
    rd_kafka_DescribeConfigs(rk, &d, 1, NULL, q);
    rd_kafka_ConfigResource_destroy(d);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 20000);
    assert_non_null(ev);
    assert_int_equal(rd_kafka_event_error(ev), RD_KAFKA_RESP_ERR_NO_ERROR);
    size_t cnt, n;
    const rd_kafka_ConfigResource_t **out =
        rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(ev), &cnt);
    assert_int_equal(cnt, 1);
    rd_kafka_ConfigResource_t *res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, TOPIC_USERS);
    const rd_kafka_ConfigEntry_t **e = rd_kafka_ConfigResource_configs(out[0], &n);
    snprintf(mmb, cap, "?");
    for (size_t i = 0; i < n; i++) {
        const char *name = rd_kafka_ConfigEntry_name(e[i]), *v = rd_kafka_ConfigEntry_value(e[i]);
        if (strcmp(name, "max.message.bytes") == 0) snprintf(mmb, cap, "%s", v != NULL ? v : "");
        else if (rd_kafka_ConfigEntry_source(e[i]) == RD_KAFKA_CONFIG_SOURCE_DYNAMIC_TOPIC_CONFIG)
            rd_kafka_ConfigResource_set_config(res, name, v);
    }
    rd_kafka_event_destroy(ev);
    return res;
}

/* Sets users.events.v1's max.message.bytes to value, or (NULL) back to the
 * broker's default, keeping the topic's other overrides (AlterConfigs
 * replaces them as a whole), and waits until the broker reports it. */
static void set_users_max_message_bytes(const char *value)
{
    char errstr[256], mmb[32];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, harness_kafka_conf(), errstr, sizeof errstr);
    assert_non_null(rk);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_ConfigResource_t *res = users_topic_overrides(rk, q, mmb, sizeof mmb);
    if (value != NULL) rd_kafka_ConfigResource_set_config(res, "max.message.bytes", value);
    rd_kafka_AlterConfigs(rk, &res, 1, NULL, q);
    rd_kafka_ConfigResource_destroy(res);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 20000);
    assert_non_null(ev);
    assert_int_equal(rd_kafka_event_error(ev), RD_KAFKA_RESP_ERR_NO_ERROR);
    size_t cnt;
    const rd_kafka_ConfigResource_t **out =
        rd_kafka_AlterConfigs_result_resources(rd_kafka_event_AlterConfigs_result(ev), &cnt);
    assert_int_equal(cnt, 1);
    assert_int_equal(rd_kafka_ConfigResource_error(out[0]), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_event_destroy(ev);
    long long until = harness_now_ms() + 20000;
    for (;;) {
        rd_kafka_ConfigResource_destroy(users_topic_overrides(rk, q, mmb, sizeof mmb));
        if (value != NULL ? strcmp(mmb, value) == 0 : strcmp(mmb, GAP_MAX_BYTES) != 0) break;
        if (harness_now_ms() > until) fail_msg("max.message.bytes of %s is still %s", TOPIC_USERS, mmb);
        harness_sleep_ms(100);
    }
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
}

static int restore_users_topic(void **state)
{
    (void)state;
    if (harness_stack_available()) set_users_max_message_bytes(NULL);
    return 0;
}

/* The user's user.registered envelope, sent again with correlation id corr
 * (its event id unchanged: a consumer takes it for the duplicate it is). */
static outbox_row registered_again(arena *a, const Todo__V1__EventEnvelope *env, int64_t id, const char *corr)
{
    Todo__V1__EventEnvelope e = *env;
    e.correlation_id = (char *)corr;
    size_t len = protobuf_c_message_get_packed_size(&e.base);
    uint8_t *bytes = arena_alloc(a, len);
    protobuf_c_message_pack(&e.base, bytes);
    return (outbox_row){.id = id, .key = env->user_id, .aggregate = env->aggregate_id, .bytes = bytes, .len = len};
}

typedef struct resent {
    const char *user;
    int n;
} resent;

/* A record of the test's user whose correlation id starts with "gap-". */
static bool resent_by_the_test(const rd_kafka_message_t *m, void *ctx)
{
    resent *r = ctx;
    char corr[16];
    if (m->key_len != strlen(r->user) || memcmp(m->key, r->user, m->key_len) != 0) return false;
    if (kafkax_header(m, "correlation_id", corr, sizeof corr) == NULL || strncmp(corr, "gap-", 4) != 0) return false;
    r->n++;
    return true;
}

/* Refused by Kafka as too large, and lz4 cannot make it small: a
 * correlation id of 6,000 pseudo-random letters and digits. */
static char *incompressible(arena *a)
{
    static const char alnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    char *c = arena_alloc(a, 6001);
    uint32_t x = 2463534242u;
    memcpy(c, "gap-", 4);
    for (int i = 4; i < 6000; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        c[i] = alnum[x % 62];
    }
    c[6000] = '\0';
    return c;
}

static void kafka_writes_nothing_of_a_user_behind_a_row_it_refused(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "gap");
    char *auth = harness_bearer(user, 600, NULL);
    free(harness_create(auth, "registers the user"));
    free(auth);
    /* The user's user.registered, as the relay sent it. */
    const char *p[1] = {user};
    PGresult *r = PQexecParams(harness_db,
                               "select envelope from write.events where user_id = $1 and event_type = 'user.registered'",
                               1, NULL, p, NULL, NULL, 1);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(r), 1);
    arena *a = arena_new();
    Todo__V1__EventEnvelope *env;
    todo_err err;
    assert_int_equal(event_decode((const uint8_t *)PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0), a, &env, &err),
                     TODO_OK);
    PQclear(r);
    outbox_row rows[3] = {registered_again(a, env, 1, incompressible(a)), registered_again(a, env, 2, "gap-after-1"),
                          registered_again(a, env, 3, "gap-after-2")};
    assert_true(rows[0].len > 6000);
    set_users_max_message_bytes(GAP_MAX_BYTES);
    /* The large row in one request, the later ones in the next. */
    const char *const conf[] = {"batch.size", "1000", "message.timeout.ms", "30000", NULL};
    const char *brokers = getenv("TODO_KAFKA_BROKERS");

    /* A producer new to the partition: the later rows wait for the large
     * one's acknowledgement, which never comes. */
    outbox_sender *s = outbox_sender_new(brokers, "test-gap-new", 8, 65536, conf, &err);
    assert_non_null(s);
    for (int i = 0; i < 200 && !outbox_sender_topic_known(s, TOPIC_USERS); i++) harness_sleep_ms(50);
    assert_true(outbox_sender_topic_known(s, TOPIC_USERS));
    assert_int_equal(outbox_send(s, rows, 3, false, NULL), 0);
    assert_int_equal(outbox_row_state(s, 0), OUTBOX_REFUSED);
    assert_non_null(strstr(outbox_row_reason(s, 0), "Kafka refused it"));
    assert_int_equal(outbox_row_state(s, 1), OUTBOX_HELD);
    assert_int_equal(outbox_row_state(s, 2), OUTBOX_HELD);
    outbox_sender_free(s);

    /* A producer settled on the partition: the rows leave together (one
     * round). The refusal stops the producer (gapless), and whatever of the
     * later rows reached Kafka behind it was refused as out of sequence. */
    s = outbox_sender_new(brokers, "test-gap-settled", 8, 65536, conf, &err);
    assert_non_null(s);
    outbox_row settle = registered_again(a, env, 4, "gap-settles");
    assert_int_equal(outbox_send(s, &settle, 1, false, NULL), 1);
    for (int i = 0; i < 200 && !outbox_sender_topic_known(s, TOPIC_USERS); i++) harness_sleep_ms(50);
    assert_true(outbox_sender_topic_known(s, TOPIC_USERS));
    int ok = outbox_send(s, rows, 3, false, NULL);
    assert_int_equal(outbox_send_rounds(s), 1);
    char why[320] = "";
    bool fatal = outbox_sender_fatal(s, why, sizeof why);
    printf("settled: %d acknowledged; fatal: %s\n", ok, fatal ? why : "no");
    for (int i = 0; i < 3; i++) printf("  row %d: state %d %s\n", i, outbox_row_state(s, i), outbox_row_reason(s, i));
    assert_int_equal(ok, 0);
    for (int i = 0; i < 3; i++) assert_int_not_equal(outbox_row_state(s, i), OUTBOX_OK);
    outbox_sender_free(s);

    /* In the topic: the row that settled the partition, nothing after it. */
    resent seen = {user, 0};
    assert_int_equal(harness_count(TOPIC_USERS, resent_by_the_test, &seen, 1, 20000), 1);
    arena_free(a);
}

static int setup(void **state)
{
    setenv("TODO_EVENT_MAX_BYTES", "2048", 1);
    setenv("TODO_RELAY_BATCH", "50", 1);
    return harness_group_setup(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(an_event_over_the_limit_is_refused_naming_the_field),
        cmocka_unit_test(unknown_fields_never_reach_storage),
        cmocka_unit_test(a_parked_event_never_stops_the_outbox),
        cmocka_unit_test(a_retried_event_goes_out_before_what_waited_behind_it),
        cmocka_unit_test(the_relay_reads_its_backlog_once_not_once_per_row),
        cmocka_unit_test(a_slow_status_query_never_holds_events_back),
        cmocka_unit_test(the_publishers_marks_do_not_wait_for_the_wal_flush),
        cmocka_unit_test_teardown(kafka_writes_nothing_of_a_user_behind_a_row_it_refused, restore_users_topic),
    };
    return cmocka_run_group_tests(tests, setup, harness_group_teardown);
}
