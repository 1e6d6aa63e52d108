/*
 * Integration test of the analytics projection (issue 17) on the real
 * stack: a scripted month of one user's activity, produced as events whose
 * times are the script's (tasks created, due, completed, reopened, deleted
 * over the last 30 days, in the user's time zone, Asia/Kolkata: +05:30), is
 * counted per day by GetProductivityStats exactly as the test counts it
 * itself; the same numbers after `todoctl projection rebuild analytics`,
 * which replaces the analytics schema and leaves the task read model as it
 * was; and a bad date range is refused naming its field.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "event.h"
#include "harness.h"
#include "text.h"
#include "todo/v1/events.pb-c.h"
#include "todo/v1/query.pb-c.h"

#define DAYS 30
#define ZONE "Asia/Kolkata"
#define ZONE_OFFSET_S 19800 /* +05:30, no daylight saving time */
#define MAX_TASKS 128

typedef struct expected {
    int created, completed, reopened, overdue;
    double secs; /* sum of the seconds from creation to each completion */
} expected;

typedef struct script {
    char user[64];
    int64_t now;         /* seconds, UTC: the script's "now" (every event before it) */
    int64_t first_day;   /* the script's first local day (days since the epoch) */
    expected day[DAYS];
    bool completion_day[DAYS];
    int64_t version[MAX_TASKS];
    arena *a;
} script;

static uint32_t seed = 17;

static uint32_t next_rand(void)
{
    seed = seed * 1103515245u + 12345u;
    return (seed >> 8) & 0xffffff;
}

static int64_t local_day(int64_t utc_s) { return (utc_s + ZONE_OFFSET_S) / 86400; }

/* Produces one event of the script's user. */
static void emit(script *s, const char *type, const char *agg_type, const char *agg, int64_t version, int32_t schema,
                 int64_t at_s, const ProtobufCMessage *payload)
{
    char id[37];
    uint8_t *bytes;
    size_t len;
    todo_err err;
    text_uuid_v4(id);
    event_meta m = {.event_id = id, .event_type = type, .source = "test-analytics", .time_us = at_s * 1000000,
                    .user_id = s->user, .aggregate_type = agg_type, .aggregate_id = agg, .aggregate_version = version,
                    .schema_version = schema, .actor = s->user};
    assert_int_equal(event_encode(&m, payload, s->a, &bytes, &len, &err), 0);
    harness_produce(event_topic(type), s->user, bytes, len);
}

static Google__Protobuf__Timestamp *ts(script *s, int64_t at_s)
{
    Google__Protobuf__Timestamp *t = arena_alloc(s->a, sizeof *t);
    google__protobuf__timestamp__init(t);
    t->seconds = at_s;
    return t;
}

/* One task's life, as the script decides it (fate 0..5), its events
 * produced and counted where the test expects them. */
static void task_life(script *s, int64_t created, int fate)
{
    char task[37];
    text_uuid_v4(task);
    int64_t v = 0, due = 0, completed_at = 0, limit = s->now - 5;
    bool completed = false, deleted = false;
    Todo__V1__TaskCreatedV2 c = TODO__V1__TASK_CREATED_V2__INIT;
    c.task_id = task;
    c.title = "scripted task";
    c.created_at = ts(s, created);
    if (fate == 1 || fate == 4 || fate == 5) due = created + (fate == 4 ? 3600 : 3600 * (1 + (int64_t)(next_rand() % 60)));
    /* A due time is either well past or well ahead: one that passes while
     * the test runs would change the overdue count under it. */
    if (due != 0 && due > s->now - 600 && due < s->now + 3 * 86400) due = s->now + 7 * 86400;
    if (fate == 4 || fate == 5) c.due_at = ts(s, due);
    emit(s, "task.created", "task", task, ++v, 2, created, &c.base);
    s->day[local_day(created) - s->first_day].created++;
    if (fate == 1) { /* the due time comes with an update */
        Todo__V1__TaskUpdated u = TODO__V1__TASK_UPDATED__INIT;
        char *fields[] = {"due_at"};
        u.task_id = task;
        u.n_changed_fields = 1;
        u.changed_fields = fields;
        u.due_at = ts(s, due);
        emit(s, "task.updated", "task", task, ++v, 1, created + 60 < limit ? created + 60 : created, &u.base);
    }
    /* Completions (and a reopening between two for fate 3). */
    int64_t t = created;
    int rounds = fate == 2 || fate == 4 ? 1 : fate == 3 ? 2 : 0;
    for (int r = 0; r < rounds; r++) {
        int64_t at = fate == 4 && r == 0 ? created + 5 * 3600 : t + 600 + (int64_t)(next_rand() % (2 * 86400));
        if (at >= limit) break;
        if (r > 0) { /* reopened half-way between */
            int64_t reopened = t + (at - t) / 2;
            Todo__V1__TaskReopened o = TODO__V1__TASK_REOPENED__INIT;
            o.task_id = task;
            o.reopened_at = ts(s, reopened);
            emit(s, "task.reopened", "task", task, ++v, 1, reopened, &o.base);
            s->day[local_day(reopened) - s->first_day].reopened++;
            completed = false;
        }
        Todo__V1__TaskCompleted k = TODO__V1__TASK_COMPLETED__INIT;
        k.task_id = task;
        k.completed_at = ts(s, at);
        emit(s, "task.completed", "task", task, ++v, 1, at, &k.base);
        int d = (int)(local_day(at) - s->first_day);
        s->day[d].completed++;
        s->day[d].secs += (double)(at - created);
        s->completion_day[d] = true;
        completed = true;
        completed_at = at;
        t = at;
    }
    if (fate == 5 && created + 120 < limit) {
        Todo__V1__TaskDeleted del = TODO__V1__TASK_DELETED__INIT;
        del.task_id = task;
        del.deleted_at = ts(s, created + 120);
        emit(s, "task.deleted", "task", task, ++v, 1, created + 120, &del.base);
        deleted = true;
    }
    /* Overdue: due (in the range, before now), not deleted, not done by then. */
    if (due != 0 && due < s->now && !deleted && (!completed || completed_at > due)) {
        int64_t d = local_day(due) - s->first_day;
        if (d >= 0 && d < DAYS) s->day[d].overdue++;
    }
}

/* The user's time zone, then DAYS days of tasks ending today (local). */
static void run_script(script *s)
{
    char profile[37];
    text_uuid_v4(profile);
    Todo__V1__NotificationPreferencesSet pf = TODO__V1__NOTIFICATION_PREFERENCES_SET__INIT;
    pf.profile_id = profile;
    pf.time_zone = ZONE;
    emit(s, "user.notification_preferences_set", "user_profile", profile, 1, 1, s->now - 40 * 86400, &pf.base);
    int64_t today = local_day(s->now);
    s->first_day = today - (DAYS - 1);
    int n = 0;
    for (int64_t d = s->first_day; d <= today && n < MAX_TASKS; d++) {
        int64_t start = d * 86400 - ZONE_OFFSET_S; /* the local midnight, UTC */
        int64_t span = d == today ? s->now - 600 - start : 86400;
        if (span < 60) continue; /* just after midnight: nothing today yet */
        int tasks = 1 + (int)(next_rand() % 3);
        /* The last days all have a completion (a task of fate 4 early in
         * the day, done 5 hours later): a current streak to count. */
        for (int i = 0; i < tasks; i++, n++) {
            bool streak = d >= today - 3 && i == 0;
            int64_t in_day = streak ? (int64_t)(next_rand() % 3600) : (int64_t)(next_rand() % (uint32_t)span);
            task_life(s, start + (in_day < span ? in_day : 0), streak ? 4 : (int)(next_rand() % 6));
        }
    }
}

static Todo__V1__ProductivityStats *stats(const char *auth, const char *from, const char *to, grpc_status_code *code,
                                          grpcx_result *res)
{
    Todo__V1__GetProductivityStatsRequest rq = TODO__V1__GET_PRODUCTIVITY_STATS_REQUEST__INIT;
    Todo__V1__ProductivityStats *out = NULL;
    rq.from_date = (char *)from;
    rq.to_date = (char *)to;
    *code = grpcx_unary(harness_svc.qry, "/todo.v1.TaskQueryService/GetProductivityStats", &rq.base,
                        &todo__v1__productivity_stats__descriptor, auth, 15000, (ProtobufCMessage **)&out, res);
    return out;
}

static void date_of(int64_t day, char out[11])
{
    time_t t = (time_t)(day * 86400);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

/* The longest run of completion days, and the run ending today or yesterday. */
static void streaks(const script *s, int *longest, int *current)
{
    int run = 0;
    *longest = *current = 0;
    for (int d = 0; d < DAYS; d++) {
        run = s->completion_day[d] ? run + 1 : 0;
        if (run > *longest) *longest = run;
    }
    int64_t today = local_day((int64_t)time(NULL)) - s->first_day;
    int64_t end = today < DAYS && s->completion_day[today] ? today : today - 1;
    for (int64_t d = end; d >= 0 && d < DAYS && s->completion_day[d]; d--) (*current)++;
}

/* True when the answer is what the script expects (says what differs
 * when report). */
static bool matches(const script *s, const Todo__V1__ProductivityStats *st, bool report)
{
    expected total = {0};
    int timed = 0;
    if (st->n_days != DAYS) {
        if (report) print_error("%zu days, want %d\n", st->n_days, DAYS);
        return false;
    }
    for (int d = 0; d < DAYS; d++) {
        const expected *e = &s->day[d];
        const Todo__V1__DayStats *g = st->days[d];
        char date[11];
        date_of(s->first_day + d, date);
        double avg = e->completed > 0 ? e->secs / e->completed : 0;
        if (strcmp(g->date, date) != 0 || g->created != e->created || g->completed != e->completed ||
            g->reopened != e->reopened || g->overdue != e->overdue || fabs(g->average_completion_seconds - avg) > 0.01) {
            if (report)
                print_error("%s: got %s created %d completed %d reopened %d overdue %d avg %.2f; want created %d"
                            " completed %d reopened %d overdue %d avg %.2f\n",
                            date, g->date, g->created, g->completed, g->reopened, g->overdue,
                            g->average_completion_seconds, e->created, e->completed, e->reopened, e->overdue, avg);
            return false;
        }
        total.created += e->created;
        total.completed += e->completed;
        total.reopened += e->reopened;
        total.overdue += e->overdue;
        total.secs += e->secs;
        timed += e->completed;
    }
    int longest, current;
    streaks(s, &longest, &current);
    double avg = timed > 0 ? total.secs / timed : 0;
    const Todo__V1__DayStats *g = st->total;
    bool ok = g != NULL && g->created == total.created && g->completed == total.completed &&
              g->reopened == total.reopened && g->overdue == total.overdue &&
              fabs(g->average_completion_seconds - avg) < 0.01 && st->longest_streak_days == longest &&
              st->current_streak_days == current && strcmp(st->time_zone, ZONE) == 0;
    if (!ok && report && g != NULL)
        print_error("total: created %d/%d completed %d/%d reopened %d/%d overdue %d/%d avg %.2f/%.2f streaks %d/%d"
                    " %d/%d zone %s\n",
                    g->created, total.created, g->completed, total.completed, g->reopened, total.reopened, g->overdue,
                    total.overdue, g->average_completion_seconds, avg, st->longest_streak_days, longest,
                    st->current_streak_days, current, st->time_zone);
    return ok;
}

/* Asks until the answer matches (the projection catches up) or timeout_ms
 * passed; fails the test saying what differs. */
static void expect_stats(const script *s, const char *auth, int timeout_ms)
{
    char from[11], to[11];
    date_of(s->first_day, from);
    date_of(s->first_day + DAYS - 1, to);
    long long until = harness_now_ms() + timeout_ms;
    for (;;) {
        grpc_status_code code;
        grpcx_result res;
        Todo__V1__ProductivityStats *st = stats(auth, from, to, &code, &res);
        assert_int_equal(code, GRPC_STATUS_OK);
        bool last = harness_now_ms() >= until, ok = matches(s, st, last);
        protobuf_c_message_free_unpacked(&st->base, NULL);
        if (ok) return;
        if (last) fail_msg("GetProductivityStats does not count the scripted month as the test does");
        harness_sleep_ms(250);
    }
}

static void a_scripted_month_is_counted_per_day_before_and_after_a_rebuild(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    static script s;
    memset(&s, 0, sizeof s);
    s.a = arena_new();
    harness_user(s.user, "analytics");
    s.now = (int64_t)time(NULL);
    run_script(&s);
    char *auth = harness_bearer(s.user, 600, NULL);
    expect_stats(&s, auth, 60000);

    /* The analytics projection alone is rebuilt: its schema is a new one,
     * the task read model's is the same. */
    const char *oid_sql = "select oid::bigint from pg_namespace where nspname = $1";
    long long read_before = harness_scalar(harness_db, oid_sql, "read");
    long long analytics_before = harness_scalar(harness_db, oid_sql, "analytics");
    static char out[262144]; /* a progress line a second */
    int rc = harness_todoctl("projection rebuild analytics", out, sizeof out);
    if (rc != 0) fail_msg("todoctl projection rebuild analytics: %d: %s", rc, out);
    assert_int_equal(harness_scalar(harness_db, oid_sql, "read"), read_before);
    assert_true(harness_scalar(harness_db, oid_sql, "analytics") != analytics_before);
    expect_stats(&s, auth, 30000);
    assert_int_equal(harness_todoctl("projection status analytics", out, sizeof out), 0);
    assert_non_null(strstr(out, "projection analytics (group projection-analytics-v1, schema analytics)"));
    assert_non_null(strstr(out, "last rebuild: "));
    assert_null(strstr(out, "projection tasks"));
    /* Every projection without a name; an unknown name is refused. */
    assert_int_equal(harness_todoctl("projection status", out, sizeof out), 0);
    assert_non_null(strstr(out, "projection tasks (group "));
    assert_non_null(strstr(out, "projection analytics (group "));
    assert_int_equal(harness_todoctl("projection rebuild nosuch", out, sizeof out), 2);
    assert_non_null(strstr(out, "no projection named \"nosuch\""));
    free(auth);
    arena_free(s.a);
}

static void a_user_without_activity_gets_zero_days_and_bad_ranges_are_refused(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64];
    harness_user(user, "idle");
    char *auth = harness_bearer(user, 600, NULL);
    grpc_status_code code;
    grpcx_result res;
    Todo__V1__ProductivityStats *st = stats(auth, "2026-02-27", "2026-03-01", &code, &res);
    assert_int_equal(code, GRPC_STATUS_OK);
    assert_int_equal(st->n_days, 3);
    assert_string_equal(st->days[0]->date, "2026-02-27");
    assert_string_equal(st->days[2]->date, "2026-03-01");
    assert_int_equal(st->total->created + st->total->completed + st->total->overdue, 0);
    assert_int_equal(st->current_streak_days + st->longest_streak_days, 0);
    assert_string_equal(st->time_zone, "UTC");
    protobuf_c_message_free_unpacked(&st->base, NULL);

    st = stats(auth, "2026-02-30", "2026-03-01", &code, &res);
    assert_null(st);
    assert_int_equal(code, GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(res.message, "from_date: must be a date"));
    st = stats(auth, "2025-01-01", "2026-06-01", &code, &res);
    assert_null(st);
    assert_int_equal(code, GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(res.message, "to_date: at most 366 days"));
    free(auth);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_user_without_activity_gets_zero_days_and_bad_ranges_are_refused),
        cmocka_unit_test(a_scripted_month_is_counted_per_day_before_and_after_a_rebuild),
    };
    return cmocka_run_group_tests(tests, harness_group_setup, harness_group_teardown);
}
