/*
 * Integration tests of `todoctl projection rebuild` on the real stack: a
 * rebuild while a writer keeps creating tasks and a reader keeps querying
 * ends with a read model equal, row for row, to the write model, with every
 * query answered; a second rebuild is refused while one runs; a killed
 * rebuild resumes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "todo/v1/command.pb-c.h"
#include "todo/v1/query.pb-c.h"

static atomic_int stop_traffic;

typedef struct traffic {
    char user[64];
    char *auth;
    int created, create_failures, reads, read_failures, reminded;
} traffic;

static void *writer(void *arg)
{
    traffic *t = arg;
    while (!atomic_load(&stop_traffic)) {
        Todo__V1__CreateTaskRequest rq = TODO__V1__CREATE_TASK_REQUEST__INIT;
        grpcx_result res;
        Todo__V1__CommandReply *rp = NULL;
        rq.title = "written during the rebuild";
        if (harness_command("CreateTask", &rq.base, t->auth, &rp, &res) == GRPC_STATUS_OK) t->created++;
        else t->create_failures++;
        /* Every fifth task gets a reminder: the other source topic. */
        if (rp != NULL && t->created % 5 == 0) {
            Todo__V1__ScheduleReminderRequest sr = TODO__V1__SCHEDULE_REMINDER_REQUEST__INIT;
            Google__Protobuf__Timestamp at = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
            at.seconds = (int64_t)time(NULL) + 86400;
            sr.task_id = rp->id;
            sr.remind_at = &at;
            sr.channel = TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_PUSH;
            if (harness_command("ScheduleReminder", &sr.base, t->auth, NULL, &res) == GRPC_STATUS_OK) t->reminded++;
            else t->create_failures++;
        }
        if (rp != NULL) protobuf_c_message_free_unpacked(&rp->base, NULL);
        harness_sleep_ms(5);
    }
    return NULL;
}

static void *reader(void *arg)
{
    traffic *t = arg;
    while (!atomic_load(&stop_traffic)) {
        Todo__V1__ListTasksRequest rq = TODO__V1__LIST_TASKS_REQUEST__INIT;
        Todo__V1__ListTasksResponse *rs = NULL;
        grpcx_result res;
        rq.page_size = 5;
        if (grpcx_unary(harness_svc.qry, "/todo.v1.TaskQueryService/ListTasks", &rq.base,
                        &todo__v1__list_tasks_response__descriptor, t->auth, 10000, (ProtobufCMessage **)&rs,
                        &res) == GRPC_STATUS_OK) {
            t->reads++;
            protobuf_c_message_free_unpacked(&rs->base, NULL);
        } else {
            t->read_failures++;
            fprintf(stderr, "read failed during the rebuild: %s\n", res.message);
        }
        harness_sleep_ms(10);
    }
    return NULL;
}

/* Rows of the write model (tasks, reminders) whose read row is missing or
 * differs. */
/* Erased users (test_erasure) are in the write model, purged, and in no
 * read model: they are left out of the comparisons. */
#define LIVE_USER(alias) " and " alias ".user_id not in (select user_id from keys.user_keys where wrapped is null)"

static long long differences(void)
{
    return harness_scalar(harness_db,
                          "select (select count(*) from write.tasks w left join read.tasks r using (id)"
                          " where (r.id is null or r.version <> w.version or r.title <> w.title"
                          " or r.priority <> w.priority or r.deleted <> (w.deleted_at is not null)"
                          " or r.completed <> (w.completed_at is not null) or r.tags <> w.tags"
                          " or r.category <> w.category)" LIVE_USER("w") ")"
                          " + (select count(*) from write.reminders w left join read.reminders r using (id)"
                          " where (r.id is null or r.version <> w.version or r.status <> w.status"
                          " or r.remind_at <> w.remind_at or r.task_id <> w.task_id)" LIVE_USER("w") ")"
                          " + (select count(*) from write.inbox w left join read.notifications r using (id)"
                          " where (r.id is null or r.version <> w.version or r.subject <> w.subject"
                          " or (r.read_at is null) <> (w.read_at is null))" LIVE_USER("w") ")"
                          " + (select count(*) from read.tasks r where r.user_id in"
                          " (select user_id from keys.user_keys where wrapped is null))",
                          NULL);
}

/* Waits until the live projection has applied every published event. */
static void wait_projection_idle(void)
{
    long long until = harness_now_ms() + 60000;
    while (harness_now_ms() < until &&
           (harness_scalar(harness_db, "select count(*) from write.events where published_at is null", NULL) != 0 ||
            differences() != 0))
        harness_sleep_ms(100);
}

/* Starts `todoctl projection rebuild` in the background; its output goes to
 * the tests' log folder. */
static pid_t start_rebuild(const char *log)
{
    char path[512], logpath[512];
    snprintf(path, sizeof path, "%s/cli/todoctl", TODO_BIN_DIR);
    snprintf(logpath, sizeof logpath, "%s/../tests/logs/%s.log", TODO_BIN_DIR, log);
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = freopen(logpath, "a", stdout);
        (void)f;
        dup2(1, 2);
        execl(path, path, "projection", "rebuild", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static bool rebuild_lock_held(void)
{
    return harness_scalar(harness_db,
                          "select count(*) from pg_locks where locktype = 'advisory' and objid = 7428314 and granted",
                          NULL) > 0;
}

/* Two entries in user's inbox (users.events.v1), one of them read: the
 * rebuild replays that topic too. */
static void fill_inbox(const char *user, const char *auth)
{
    char *svc = harness_service_bearer(user);
    Todo__V1__DeliverInAppNotificationRequest d = TODO__V1__DELIVER_IN_APP_NOTIFICATION_REQUEST__INIT;
    Todo__V1__CommandReply *r;
    grpcx_result res;
    d.notification_id = "rebuild-1";
    d.subject = "kept by the rebuild";
    assert_int_equal(harness_command("DeliverInAppNotification", &d.base, svc, &r, &res), GRPC_STATUS_OK);
    Todo__V1__MarkNotificationReadRequest mr = TODO__V1__MARK_NOTIFICATION_READ_REQUEST__INIT;
    mr.entry_id = r->id;
    assert_int_equal(harness_command("MarkNotificationRead", &mr.base, auth, NULL, &res), GRPC_STATUS_OK);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    d.notification_id = "rebuild-2";
    assert_int_equal(harness_command("DeliverInAppNotification", &d.base, svc, NULL, &res), GRPC_STATUS_OK);
    free(svc);
}

static void a_rebuild_under_load_equals_the_write_model(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    traffic t = {0};
    harness_user(t.user, "rebuild");
    t.auth = harness_bearer(t.user, 600, NULL);
    fill_inbox(t.user, t.auth);
    pthread_t w, rd;
    atomic_store(&stop_traffic, 0);
    pthread_create(&w, NULL, writer, &t);
    pthread_create(&rd, NULL, reader, &t);
    harness_sleep_ms(300);
    long long batches_before = harness_scalar(harness_db, "select batches from read.projection_status where projection = "
                                                          "'projection-task-read-v1'", NULL);
    static char out[65536]; /* the rebuild's progress and its projector's log lines */
    int rc = harness_todoctl("projection rebuild", out, sizeof out);
    harness_sleep_ms(300);
    atomic_store(&stop_traffic, 1);
    pthread_join(w, NULL);
    pthread_join(rd, NULL);
    if (rc != 0) fail_msg("rebuild failed: %s", out);
    assert_non_null(strstr(out, "rebuild: swapped"));
    printf("rebuild under load: %d tasks written and %d queries answered meanwhile\n", t.created, t.reads);
    assert_int_equal(t.create_failures, 0);
    assert_int_equal(t.read_failures, 0);
    assert_true(t.created > 0 && t.reads > 0);
    wait_projection_idle();
    assert_int_equal(differences(), 0);
    /* The rebuilt copy holds every task's history: a row per task event,
     * at its version, as its type left the task. */
    assert_int_equal(harness_scalar(harness_db,
                                    "select count(*) from write.events e where e.aggregate_type = 'task'"
                                    " and e.published_at is not null" /* parked ones never reach a topic */
                                    /* nor dropped ones (todoctl outbox drop): their task has a gap */
                                    " and not exists (select 1 from write.events d where d.aggregate_id = e.aggregate_id"
                                    " and d.dropped_at is not null)"
                                    LIVE_USER("e") " and not exists (select 1 from read.task_history h where h.task_id = e.aggregate_id"
                                    " and h.version = e.aggregate_version and h.event_type = e.event_type)",
                                    NULL),
                     0);
    assert_int_equal(harness_scalar(harness_db,
                                    "select count(*) from read.task_history h join write.tasks w on w.id = h.task_id"
                                    " and w.version = h.version where h.title <> w.title or h.completed <>"
                                    " (w.completed_at is not null)",
                                    NULL),
                     0);
    /* The live projection's counters go on across the swap, and the
     * replay's are shown beside them. */
    assert_true(harness_scalar(harness_db, "select batches from read.projection_status where projection = "
                                           "'projection-task-read-v1'", NULL) >= batches_before);
    static char status[16384];
    assert_int_equal(harness_todoctl("projection status", status, sizeof status), 0);
    assert_null(strstr(status, "no batch applied yet"));
    assert_non_null(strstr(status, "last rebuild: "));
    /* The indexes built after the replay (not kept up row by row) are all there. */
    assert_int_equal(harness_scalar(harness_db,
                                    "select count(*) from pg_indexes where schemaname = 'read' and indexname in"
                                    " ('read_tasks_user_created', 'read_tasks_user_due', 'read_tasks_search',"
                                    " 'read_reminders_user_due', 'read_reminders_task')",
                                    NULL),
                     5);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from read.tasks where user_id = $1", t.user), t.created);
    assert_int_equal(harness_scalar(harness_db, "select count(*) from read.reminders where user_id = $1", t.user),
                     t.reminded);
    /* The statistics were rebuilt too. */
    assert_int_equal(harness_scalar(harness_db, "select coalesce(sum(total), 0) from read.task_stats", NULL),
                     harness_scalar(harness_db, "select count(*) from read.tasks where not deleted", NULL));
    assert_int_equal(harness_scalar(harness_db, "select count(*) from pg_namespace where nspname like 'read_%'", NULL), 0);
    /* Indexes keep the names the migrations gave them. */
    assert_int_equal(harness_scalar(harness_db,
                                    "select count(*) from pg_indexes where schemaname = 'read' and indexname in"
                                    " ('read_tasks_user_created', 'read_tasks_search', 'read_tasks_user_due', 'tasks_pkey',"
                                    "  'reminders_pkey', 'read_reminders_user_due', 'read_reminders_task')",
                                    NULL),
                     7);
    free(t.auth);
}

static void a_second_rebuild_is_refused_and_a_killed_one_resumes(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    static char out[65536]; /* the rebuild's progress and its projector's log lines */
    pid_t first = start_rebuild("rebuild-1");
    long long until = harness_now_ms() + 20000;
    while (!rebuild_lock_held() && harness_now_ms() < until) harness_sleep_ms(20);
    assert_true(rebuild_lock_held());
    assert_int_equal(harness_todoctl("projection rebuild", out, sizeof out), 1);
    assert_non_null(strstr(out, "already running"));

    /* Kill it once the shadow copy has some of the replay. */
    until = harness_now_ms() + 20000;
    while (harness_scalar(harness_db, "select count(*) from pg_namespace where nspname = 'read_rebuild'", NULL) == 0 &&
           harness_now_ms() < until)
        harness_sleep_ms(20);
    harness_sleep_ms(500);
    kill(first, SIGKILL);
    waitpid(first, NULL, 0);
    if (harness_scalar(harness_db, "select count(*) from todo_meta.rebuilds", NULL) == 1) {
        /* Killed mid-way: the next run picks it up. */
        assert_int_equal(harness_todoctl("projection rebuild", out, sizeof out), 0);
        assert_non_null(strstr(out, "(resumed)"));
    } else {
        /* It finished before the kill landed: nothing to resume. */
        assert_int_equal(harness_todoctl("projection rebuild", out, sizeof out), 0);
    }
    assert_non_null(strstr(out, "rebuild: done"));
    wait_projection_idle();
    assert_int_equal(differences(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_rebuild_under_load_equals_the_write_model),
        cmocka_unit_test(a_second_rebuild_is_refused_and_a_killed_one_resumes),
    };
    return cmocka_run_group_tests(tests, harness_group_setup, harness_group_teardown);
}
