/*
 * Integration test of users and erasure by crypto-shredding (issue 17) on
 * the real stack: a user's first command registers them (their data key,
 * user.registered); the personal fields of their events are sealed in the
 * event store and on Kafka while the read model shows them; `todoctl user
 * erase` destroys the key, purges the write model, and the projections
 * delete the user's rows; the user's id is refused afterwards; a full
 * rebuild of the task read model brings none of their rows back; no
 * record of any topic and no stored event holds their titles in clear;
 * another user is untouched throughout.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "todo/v1/command.pb-c.h"
#include "todo/v1/query.pb-c.h"

/* A dead letter (of any consumer) whose bytes name the user (ctx). */
static bool dead_letter_of(const rd_kafka_message_t *m, void *ctx)
{
    const char *user = ctx;
    return m->payload != NULL && memmem(m->payload, m->len, user, strlen(user)) != NULL;
}

static char *create(const char *auth, const char *title, const char *description, char **token)
{
    Todo__V1__CreateTaskRequest rq = TODO__V1__CREATE_TASK_REQUEST__INIT;
    Todo__V1__CommandReply *rp;
    grpcx_result res;
    char *tags[] = {"private-tag"};
    rq.title = (char *)title;
    rq.description = (char *)description;
    rq.priority = TODO__V1__PRIORITY__PRIORITY_HIGH;
    rq.n_tags = 1;
    rq.tags = tags;
    if (harness_command("CreateTask", &rq.base, auth, &rp, &res) != GRPC_STATUS_OK) fail_msg("%s", res.message);
    char *id = strdup(rp->id);
    if (token != NULL) *token = strdup(rp->consistency_token);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    return id;
}

static long long count_of(const char *sql, const char *user)
{
    return harness_scalar(harness_db, sql, user);
}

/* Waits until sql (one parameter) counts want (timeout_ms at most). */
static long long wait_count(const char *sql, const char *param, long long want, int timeout_ms)
{
    long long until = harness_now_ms() + timeout_ms, n;
    while ((n = count_of(sql, param)) != want && harness_now_ms() < until) harness_sleep_ms(100);
    return n;
}

static void an_erased_user_is_unreadable_everywhere_and_the_others_untouched(void **state)
{
    (void)state;
    HARNESS_NEED_STACK();
    char user[64], other[64], title[96], secret[96], kept[96], updated[96];
    harness_user(user, "erase");
    harness_user(other, "keep");
    snprintf(title, sizeof title, "confidential-%s", user);
    snprintf(secret, sizeof secret, "diary-of-%s", user);
    snprintf(updated, sizeof updated, "renamed-%s", user);
    snprintf(kept, sizeof kept, "kept-%s", other);
    char *auth = harness_bearer(user, 600, NULL), *oauth = harness_bearer(other, 600, NULL);

    /* Registration at the first command: a key and user.registered. */
    char *token = NULL;
    char *task = create(auth, title, secret, NULL);
    char *second = create(auth, "second task", secret, NULL);
    Todo__V1__UpdateTaskRequest up = TODO__V1__UPDATE_TASK_REQUEST__INIT;
    Todo__V1__CommandReply *rp;
    grpcx_result res;
    char *fields[] = {"title"};
    up.task_id = task;
    up.title = updated;
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    mask.n_paths = 1;
    mask.paths = fields;
    up.update_mask = &mask;
    assert_int_equal(harness_command("UpdateTask", &up.base, auth, &rp, &res), GRPC_STATUS_OK);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    char *other_task = create(oauth, kept, "nothing to hide", &token);
    /* A reminder, a notification profile with an address. */
    char email[128];
    snprintf(email, sizeof email, "%s@mail.example.com", user);
    Todo__V1__ScheduleReminderRequest sr = TODO__V1__SCHEDULE_REMINDER_REQUEST__INIT;
    Google__Protobuf__Timestamp when = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    when.seconds = (int64_t)time(NULL) + 86400;
    sr.task_id = second;
    sr.remind_at = &when;
    sr.channel = TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_IN_APP;
    assert_int_equal(harness_command("ScheduleReminder", &sr.base, auth, &rp, &res), GRPC_STATUS_OK);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    Todo__V1__SetNotificationPreferencesRequest pr = TODO__V1__SET_NOTIFICATION_PREFERENCES_REQUEST__INIT;
    pr.email = email;
    pr.time_zone = "Europe/Berlin";
    assert_int_equal(harness_command("SetNotificationPreferences", &pr.base, auth, &rp, &res), GRPC_STATUS_OK);
    protobuf_c_message_free_unpacked(&rp->base, NULL);
    assert_int_equal(count_of("select count(*) from keys.user_keys where user_id = $1 and wrapped is not null", user), 1);
    assert_int_equal(count_of("select count(*) from write.events where user_id = $1 and event_type = 'user.registered'",
                              user),
                     1);

    /* Sealed where events are kept, in clear in the read model. */
    assert_int_equal(wait_count("select count(*) from read.tasks where user_id = $1", user, 2, 30000), 2);
    assert_int_equal(wait_count("select count(*) from read.tasks where title = $1", updated, 1, 30000), 1);
    assert_int_equal(count_of("select count(*) from read.tasks where description = $1", secret), 2);
    assert_int_equal(wait_count("select count(*) from read.tasks where title = $1", kept, 1, 30000), 1);
    assert_int_equal(wait_count("select count(*) from read.reminders where user_id = $1", user, 1, 30000), 1);
    assert_int_equal(wait_count("select count(*) from analytics.users where user_id = $1", user, 1, 30000), 1);
    assert_true(count_of("select count(*) from feed.updates where user_id = $1", user) > 0);
    assert_int_equal(count_of("select count(*) from read.tasks where $1 = any(tags)", "private-tag") > 0, 1);
    assert_int_equal(count_of("select count(*) from write.events where user_id = $1 and"
                              " position(convert_to('confidential-', 'UTF8') in envelope) > 0",
                              user),
                     0);
    harness_needle n_title = {user, title}, n_secret = {user, secret}, n_updated = {user, updated}, n_any = {user, ""},
           n_tag = {user, "private-tag"}, n_email = {user, email};
    assert_true(harness_wait_published(user, 30000) >= 0);
    assert_int_equal(harness_count("tasks.events.v1", harness_holds_text, &n_title, 0, 30000), 0);

    /* The erasure. */
    static char out[65536];
    char args[200];
    snprintf(args, sizeof args, "user erase %s --reason 'asked by the user'", user);
    int rc = harness_todoctl(args, out, sizeof out);
    if (rc != 0) fail_msg("todoctl %s: %d: %s", args, rc, out);
    assert_non_null(strstr(out, "erased"));
    assert_int_equal(count_of("select count(*) from keys.user_keys where user_id = $1 and wrapped is null", user), 1);
    assert_int_equal(count_of("select count(*) from write.tasks where user_id = $1 and title <> ''", user), 0);
    assert_int_equal(count_of("select count(*) from write.events where user_id = $1 and event_type in"
                              " ('user.erasure_requested', 'user.erased')",
                              user),
                     2);
    /* Again: nothing more happens. */
    assert_int_equal(harness_todoctl(args, out, sizeof out), 0);
    assert_int_equal(count_of("select count(*) from write.events where user_id = $1 and event_type = 'user.erased'", user),
                     1);
    /* The projections delete the user's rows. */
    assert_int_equal(wait_count("select count(*) from read.tasks where user_id = $1", user, 0, 30000), 0);
    assert_int_equal(count_of("select count(*) from read.task_history where user_id = $1", user), 0);
    assert_int_equal(wait_count("select count(*) from analytics.activity where user_id = $1", user, 0, 30000), 0);
    static const char *const gone[] = {
        "select count(*) from read.reminders where user_id = $1",
        "select count(*) from read.notifications where user_id = $1",
        "select count(*) from read.task_sagas where user_id = $1",
        "select count(*) from read.task_stats where user_id = $1",
        "select count(*) from feed.updates where user_id = $1",
        "select count(*) from feed.heads where user_id = $1",
        "select count(*) from analytics.tasks where user_id = $1",
        "select count(*) from analytics.users where user_id = $1",
        "select count(*) from write.user_profiles where user_id = $1 and email <> ''",
    };
    for (size_t i = 0; i < sizeof gone / sizeof gone[0]; i++)
        if (count_of(gone[i], user) != 0) fail_msg("left after the erasure: %s", gone[i]);
    /* The id is refused from now on. */
    Todo__V1__CreateTaskRequest cr = TODO__V1__CREATE_TASK_REQUEST__INIT;
    cr.title = "after the erasure";
    assert_int_equal(harness_command("CreateTask", &cr.base, auth, &rp, &res), GRPC_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(res.message, "was erased"));
    /* A service token of another scope may not erase. */
    char *internal = harness_service_bearer(other);
    Todo__V1__EraseUserRequest er = TODO__V1__ERASE_USER_REQUEST__INIT;
    er.user_id = other;
    assert_int_equal(harness_command("EraseUser", &er.base, internal, &rp, &res), GRPC_STATUS_PERMISSION_DENIED);
    free(internal);

    /* A full rebuild of the task read model: none of the user's rows. */
    rc = harness_todoctl("projection rebuild", out, sizeof out);
    if (rc != 0) fail_msg("todoctl projection rebuild: %d: %s", rc, out);
    assert_int_equal(count_of("select count(*) from read.tasks where user_id = $1", user), 0);
    assert_int_equal(count_of("select count(*) from read.task_history where user_id = $1", user), 0);
    assert_int_equal(count_of("select count(*) from read.tasks where title = $1", kept), 1);

    /* Every topic and the event store: the user's records are there, none
     * holds their texts in clear. */
    static const char *const topics[] = {"tasks.events.v1", "users.events.v1", "reminders.events.v1"};
    assert_int_equal(harness_count("tasks.events.v1", harness_holds_text, &n_any, 3, 30000), 3); /* two created, one updated */
    assert_int_equal(harness_count("users.events.v1", harness_holds_text, &n_any, 4, 30000), 4); /* registered, profile, erasure */
    for (size_t i = 0; i < sizeof topics / sizeof topics[0]; i++) {
        assert_int_equal(harness_count(topics[i], harness_holds_text, &n_title, 0, 30000), 0);
        assert_int_equal(harness_count(topics[i], harness_holds_text, &n_secret, 0, 30000), 0);
        assert_int_equal(harness_count(topics[i], harness_holds_text, &n_updated, 0, 30000), 0);
        assert_int_equal(harness_count(topics[i], harness_holds_text, &n_tag, 0, 30000), 0);
        assert_int_equal(harness_count(topics[i], harness_holds_text, &n_email, 0, 30000), 0);
    }
    /* A key gone is a normal case: the projectors (live and rebuilt) and
     * todo-saga skipped the user's events, none was dead-lettered. */
    assert_int_equal(harness_count("system.dlq.v1", dead_letter_of, user, 0, 30000), 0);
    assert_int_equal(count_of("select count(*) from write.events where user_id = $1 and"
                              " (position(convert_to('diary-of-', 'UTF8') in envelope) > 0"
                              " or position(convert_to('renamed-', 'UTF8') in envelope) > 0)",
                              user),
                     0);

    /* The other user reads their task as before. */
    Todo__V1__GetTaskRequest gr = TODO__V1__GET_TASK_REQUEST__INIT;
    Todo__V1__Task *t = NULL;
    gr.task_id = other_task;
    gr.consistency_token = token;
    assert_int_equal(grpcx_unary(harness_svc.qry, "/todo.v1.TaskQueryService/GetTask", &gr.base,
                                 &todo__v1__task__descriptor, oauth, 15000, (ProtobufCMessage **)&t, &res),
                     GRPC_STATUS_OK);
    assert_string_equal(t->title, kept);
    protobuf_c_message_free_unpacked(&t->base, NULL);
    free(task);
    free(second);
    free(other_task);
    free(token);
    free(auth);
    free(oauth);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(an_erased_user_is_unreadable_everywhere_and_the_others_untouched),
    };
    return cmocka_run_group_tests(tests, harness_group_setup, harness_group_teardown);
}
