/* Unit tests of cmd_validate: every CreateTask rule, and that the message
 * names the field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "cmd_validate.h"

static Todo__V1__CreateTaskRequest base(void)
{
    Todo__V1__CreateTaskRequest rq = TODO__V1__CREATE_TASK_REQUEST__INIT;
    rq.title = "Buy milk";
    return rq;
}

static void expect_invalid(const Todo__V1__CreateTaskRequest *rq, const char *field)
{
    cmd_fields nt;
    todo_err err;
    assert_int_equal(cmd_validate_create(rq, &nt, &err), TODO_EINVAL);
    if (strncmp(err.msg, field, strlen(field)) != 0) fail_msg("expected \"%s\" to name %s", err.msg, field);
}

static void a_plain_task_passes_with_medium_priority(void **state)
{
    (void)state;
    Todo__V1__CreateTaskRequest rq = base();
    cmd_fields nt;
    todo_err err;
    assert_int_equal(cmd_validate_create(&rq, &nt, &err), TODO_OK);
    assert_int_equal(nt.priority, TODO__V1__PRIORITY__PRIORITY_MEDIUM);
    assert_false(nt.has_due);
    assert_string_equal(nt.title, "Buy milk");
}

static void title_length_is_counted_in_characters(void **state)
{
    (void)state;
    Todo__V1__CreateTaskRequest rq = base();
    char t[1024];
    rq.title = "";
    expect_invalid(&rq, "title");
    rq.title = "   ";
    expect_invalid(&rq, "title");
    /* 255 two-byte characters: 510 bytes but 255 characters, allowed. */
    for (int i = 0; i < 255; i++) memcpy(t + 2 * i, "\xc3\xa9", 2);
    t[510] = '\0';
    rq.title = t;
    cmd_fields nt;
    todo_err err;
    assert_int_equal(cmd_validate_create(&rq, &nt, &err), TODO_OK);
    memset(t, 'x', 256);
    t[256] = '\0';
    expect_invalid(&rq, "title");
    rq.title = "bad \xff utf8";
    expect_invalid(&rq, "title");
    rq.title = "tab\tin title";
    expect_invalid(&rq, "title");
}

static void description_allows_newlines_but_has_a_bound(void **state)
{
    (void)state;
    Todo__V1__CreateTaskRequest rq = base();
    cmd_fields nt;
    todo_err err;
    static char d[CMD_DESCRIPTION_MAX + 2];
    rq.description = "line one\nline two";
    assert_int_equal(cmd_validate_create(&rq, &nt, &err), TODO_OK);
    memset(d, 'd', CMD_DESCRIPTION_MAX + 1);
    rq.description = d;
    expect_invalid(&rq, "description");
}

static void priority_must_be_known(void **state)
{
    (void)state;
    Todo__V1__CreateTaskRequest rq = base();
    rq.priority = (Todo__V1__Priority)9;
    expect_invalid(&rq, "priority");
    rq.priority = (Todo__V1__Priority)-1;
    expect_invalid(&rq, "priority");
}

static void due_date_must_be_a_real_time(void **state)
{
    (void)state;
    Todo__V1__CreateTaskRequest rq = base();
    Google__Protobuf__Timestamp due = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    cmd_fields nt;
    todo_err err;
    rq.due_at = &due;
    due.seconds = 1800000000;
    due.nanos = 500000000;
    assert_int_equal(cmd_validate_create(&rq, &nt, &err), TODO_OK);
    assert_true(nt.has_due);
    assert_int_equal(nt.due_us, 1800000000500000LL);
    due.nanos = -1;
    expect_invalid(&rq, "due_at");
    due.nanos = 0;
    due.seconds = 253402300800LL; /* year 10000 */
    expect_invalid(&rq, "due_at");
}

static void tags_are_bounded_and_unique(void **state)
{
    (void)state;
    Todo__V1__CreateTaskRequest rq = base();
    char *tags[CMD_TAGS_MAX + 1];
    for (int i = 0; i <= CMD_TAGS_MAX; i++) tags[i] = "t";
    rq.tags = tags;
    rq.n_tags = 2;
    expect_invalid(&rq, "tags[1]"); /* duplicate */
    char names[CMD_TAGS_MAX + 1][4];
    for (int i = 0; i <= CMD_TAGS_MAX; i++) {
        snprintf(names[i], sizeof names[i], "t%d", i);
        tags[i] = names[i];
    }
    rq.n_tags = CMD_TAGS_MAX + 1;
    expect_invalid(&rq, "tags");
    rq.n_tags = 1;
    tags[0] = "";
    expect_invalid(&rq, "tags[0]");
    tags[0] = "a-tag-that-is-much-longer-than-32-chars";
    expect_invalid(&rq, "tags[0]");
}

static void category_and_request_id_are_checked(void **state)
{
    (void)state;
    Todo__V1__CreateTaskRequest rq = base();
    char cat[80];
    memset(cat, 'c', 65);
    cat[65] = '\0';
    rq.category = cat;
    expect_invalid(&rq, "category");
    rq.category = "";
    rq.request_id = "has space";
    expect_invalid(&rq, "request_id");
    todo_err err;
    assert_int_equal(cmd_validate_request_id("", &err), TODO_OK);
    assert_int_equal(cmd_validate_request_id("req-123_ABC", &err), TODO_OK);
}

static Todo__V1__UpdateTaskRequest update_base(Google__Protobuf__FieldMask *mask, char **paths, size_t n)
{
    Todo__V1__UpdateTaskRequest rq = TODO__V1__UPDATE_TASK_REQUEST__INIT;
    google__protobuf__field_mask__init(mask);
    mask->paths = paths;
    mask->n_paths = n;
    rq.update_mask = mask;
    rq.task_id = "123e4567-e89b-42d3-a456-426614174000";
    return rq;
}

static void update_changes_only_the_masked_fields(void **state)
{
    (void)state;
    Google__Protobuf__FieldMask mask;
    char *paths[] = {"title", "due_at"};
    Todo__V1__UpdateTaskRequest rq = update_base(&mask, paths, 2);
    cmd_fields f;
    todo_err err;
    rq.title = "New title";
    rq.description = "\xff not checked: not in the mask";
    assert_int_equal(cmd_validate_update(&rq, &f, &err), TODO_OK);
    assert_int_equal(f.mask, CMD_F_TITLE | CMD_F_DUE_AT);
    assert_string_equal(f.title, "New title");
    assert_false(f.has_due); /* due_at named but unset: clear it */
    const char *names[6];
    assert_int_equal(cmd_fields_names(f.mask, names), 2);
    assert_string_equal(names[0], "title");
    assert_string_equal(names[1], "due_at");
}

static void update_needs_a_known_mask_a_task_id_and_a_real_priority(void **state)
{
    (void)state;
    Google__Protobuf__FieldMask mask;
    char *bad[] = {"owner"};
    char *prio[] = {"priority"};
    cmd_fields f;
    todo_err err;
    Todo__V1__UpdateTaskRequest rq = update_base(&mask, bad, 1);
    assert_int_equal(cmd_validate_update(&rq, &f, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "update_mask: unknown field \"owner\""));
    rq = update_base(&mask, bad, 0);
    assert_int_equal(cmd_validate_update(&rq, &f, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "update_mask"));
    rq = update_base(&mask, prio, 1);
    rq.priority = TODO__V1__PRIORITY__PRIORITY_UNSPECIFIED;
    assert_int_equal(cmd_validate_update(&rq, &f, &err), TODO_EINVAL);
    assert_true(strncmp(err.msg, "priority", 8) == 0);
    rq.priority = TODO__V1__PRIORITY__PRIORITY_LOW;
    rq.task_id = "nope";
    assert_int_equal(cmd_validate_update(&rq, &f, &err), TODO_EINVAL);
    assert_true(strncmp(err.msg, "task_id", 7) == 0);
    rq.task_id = "123e4567-e89b-42d3-a456-426614174000";
    rq.expected_version = -1;
    assert_int_equal(cmd_validate_update(&rq, &f, &err), TODO_EINVAL);
    assert_true(strncmp(err.msg, "expected_version", 16) == 0);
    rq.expected_version = 3;
    assert_int_equal(cmd_validate_update(&rq, &f, &err), TODO_OK);
    assert_int_equal(f.priority, TODO__V1__PRIORITY__PRIORITY_LOW);
}

#define ZONEINFO "/usr/share/zoneinfo"
#define NOW 1800000000000000LL

static void reminder_fields_are_checked(void **state)
{
    (void)state;
    Google__Protobuf__Timestamp at = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    todo_err err;
    assert_int_equal(cmd_validate_remind_at(NULL, NOW, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "remind_at: is required"));
    at.seconds = NOW / 1000000 - 1;
    assert_int_equal(cmd_validate_remind_at(&at, NOW, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "future"));
    at.seconds = NOW / 1000000 + 60;
    assert_int_equal(cmd_validate_remind_at(&at, NOW, &err), TODO_OK);
}

static void time_zones_must_be_known_iana_names(void **state)
{
    (void)state;
    todo_err err;
    assert_int_equal(cmd_validate_time_zone("tz", "Europe/Berlin", ZONEINFO, &err), TODO_OK);
    assert_int_equal(cmd_validate_time_zone("tz", "America/Argentina/Buenos_Aires", ZONEINFO, &err), TODO_OK);
    assert_int_equal(cmd_validate_time_zone("tz", "UTC", ZONEINFO, &err), TODO_OK);
    const char *bad[] = {"", "Mars/Olympus", "../../etc/passwd", "/etc/localtime", "Europe/Berlin ", "Europe"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(cmd_validate_time_zone("tz", bad[i], ZONEINFO, &err), TODO_EINVAL);
        assert_true(strncmp(err.msg, "tz", 2) == 0);
    }
}

static Todo__V1__RecurrenceRule rule(Todo__V1__RecurrenceFrequency f)
{
    Todo__V1__RecurrenceRule r = TODO__V1__RECURRENCE_RULE__INIT;
    r.frequency = f;
    r.time_zone = "Europe/Berlin";
    return r;
}

static void rules_must_make_sense(void **state)
{
    (void)state;
    todo_err err;
    Todo__V1__Weekday days[] = {TODO__V1__WEEKDAY__WEEKDAY_MONDAY, TODO__V1__WEEKDAY__WEEKDAY_FRIDAY};
    Todo__V1__RecurrenceRule r = rule(TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_DAILY);
    assert_int_equal(cmd_validate_rule(&r, NOW, ZONEINFO, &err), TODO_OK);
    r.day_of_month = 3;
    assert_int_equal(cmd_validate_rule(&r, NOW, ZONEINFO, &err), TODO_EINVAL);

    r = rule(TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_WEEKLY);
    assert_int_equal(cmd_validate_rule(&r, NOW, ZONEINFO, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "rule.by_weekday"));
    r.by_weekday = days;
    r.n_by_weekday = 2;
    assert_int_equal(cmd_validate_rule(&r, NOW, ZONEINFO, &err), TODO_OK);
    days[1] = TODO__V1__WEEKDAY__WEEKDAY_MONDAY;
    assert_int_equal(cmd_validate_rule(&r, NOW, ZONEINFO, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "repeats"));

    r = rule(TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_MONTHLY);
    r.day_of_month = 32;
    assert_int_equal(cmd_validate_rule(&r, NOW, ZONEINFO, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "rule.day_of_month"));
    r.day_of_month = 31; /* shorter months use their last day */
    assert_int_equal(cmd_validate_rule(&r, NOW, ZONEINFO, &err), TODO_OK);

    r = rule(TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_EVERY_N_DAYS);
    assert_int_equal(cmd_validate_rule(&r, NOW, ZONEINFO, &err), TODO_EINVAL);
    r.interval_days = 3;
    assert_int_equal(cmd_validate_rule(&r, NOW, ZONEINFO, &err), TODO_OK);

    Google__Protobuf__Timestamp end = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    end.seconds = NOW / 1000000 + 86400;
    r.ends_at = &end;
    r.max_occurrences = 5;
    assert_int_equal(cmd_validate_rule(&r, NOW, ZONEINFO, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "not both"));
    r.max_occurrences = 0;
    assert_int_equal(cmd_validate_rule(&r, NOW, ZONEINFO, &err), TODO_OK);
    end.seconds = NOW / 1000000 - 1;
    assert_int_equal(cmd_validate_rule(&r, NOW, ZONEINFO, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "rule.ends_at"));
    r.ends_at = NULL;
    r.max_occurrences = 1001;
    assert_int_equal(cmd_validate_rule(&r, NOW, ZONEINFO, &err), TODO_EINVAL);

    r = rule(TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_UNSPECIFIED);
    assert_int_equal(cmd_validate_rule(&r, NOW, ZONEINFO, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "rule.frequency"));
    r = rule(TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_DAILY);
    r.time_zone = "Nowhere/Special";
    assert_int_equal(cmd_validate_rule(&r, NOW, ZONEINFO, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "rule.time_zone"));
    assert_int_equal(cmd_validate_rule(NULL, NOW, ZONEINFO, &err), TODO_EINVAL);
}

static void reminder_channels_are_joined_and_checked(void **state)
{
    (void)state;
    todo_err err;
    int out[CMD_MAX_CHANNELS];
    size_t n;
    const int email = TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_EMAIL, push = TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_PUSH,
              sms = TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_SMS;
    assert_int_equal(cmd_validate_channels(0, NULL, 0, out, &n, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "one of channel or channels is required"));
    assert_int_equal(cmd_validate_channels(push, NULL, 0, out, &n, &err), TODO_OK);
    assert_int_equal(n, 1);
    assert_int_equal(out[0], push);
    int list[] = {email, push};
    assert_int_equal(cmd_validate_channels(push, list, 2, out, &n, &err), TODO_OK); /* channel first, once */
    assert_int_equal(n, 2);
    assert_int_equal(out[0], push);
    assert_int_equal(out[1], email);
    int twice[] = {email, email};
    assert_int_equal(cmd_validate_channels(0, twice, 2, out, &n, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "EMAIL appears twice"));
    int four[] = {email, sms, TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_IN_APP};
    assert_int_equal(cmd_validate_channels(push, four, 3, out, &n, &err), TODO_OK);
    assert_int_equal(n, 4);
    int bad[] = {sms, 9};
    assert_int_equal(cmd_validate_channels(0, bad, 2, out, &n, &err), TODO_EINVAL);
    assert_true(strncmp(err.msg, "channels: must be", 17) == 0);
    assert_int_equal(cmd_validate_channels(7, NULL, 0, out, &n, &err), TODO_EINVAL);
    assert_true(strncmp(err.msg, "channel: must be", 16) == 0);
}

static void notification_profiles_are_checked(void **state)
{
    (void)state;
    todo_err err;
    assert_int_equal(cmd_validate_email("", &err), TODO_OK);
    assert_int_equal(cmd_validate_email("ann@example.com", &err), TODO_OK);
    const char *bad_mail[] = {"ann", "@example.com", "ann@", "ann@example", "a@b@example.com", "ann @example.com",
                              "ann@example.com\r\nBcc: eve@example.com", "<ann@example.com>"};
    for (size_t i = 0; i < sizeof bad_mail / sizeof bad_mail[0]; i++) {
        assert_int_equal(cmd_validate_email(bad_mail[i], &err), TODO_EINVAL);
        assert_true(strncmp(err.msg, "email:", 6) == 0);
    }
    assert_int_equal(cmd_validate_webhook_url("", false, &err), TODO_OK);
    assert_int_equal(cmd_validate_webhook_url("https://hooks.example.com/x", false, &err), TODO_OK);
    assert_int_equal(cmd_validate_webhook_url("http://127.0.0.1:8080/x", false, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "must start with https://"));
    assert_int_equal(cmd_validate_webhook_url("http://127.0.0.1:8080/x", true, &err), TODO_OK);
    assert_int_equal(cmd_validate_webhook_url("ftp://example.com", true, &err), TODO_EINVAL);
    assert_int_equal(cmd_validate_webhook_url("https:///x", false, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "no host"));
    assert_int_equal(cmd_validate_webhook_url("https://a.example.com/x y", false, &err), TODO_EINVAL);
    assert_int_equal(cmd_validate_quiet_hours("", "", &err), TODO_OK);
    assert_int_equal(cmd_validate_quiet_hours("22:00", "07:30", &err), TODO_OK);
    assert_int_equal(cmd_validate_quiet_hours("22:00", "", &err), TODO_EINVAL);
    assert_true(strncmp(err.msg, "quiet_hours_end", 15) == 0);
    assert_int_equal(cmd_validate_quiet_hours("24:00", "07:00", &err), TODO_EINVAL);
    assert_true(strncmp(err.msg, "quiet_hours_start", 17) == 0);
    assert_int_equal(cmd_validate_quiet_hours("22:00", "7:00", &err), TODO_EINVAL);
    assert_int_equal(cmd_validate_quiet_hours("08:00", "08:00", &err), TODO_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_plain_task_passes_with_medium_priority),
        cmocka_unit_test(title_length_is_counted_in_characters),
        cmocka_unit_test(description_allows_newlines_but_has_a_bound),
        cmocka_unit_test(priority_must_be_known),
        cmocka_unit_test(due_date_must_be_a_real_time),
        cmocka_unit_test(tags_are_bounded_and_unique),
        cmocka_unit_test(category_and_request_id_are_checked),
        cmocka_unit_test(update_changes_only_the_masked_fields),
        cmocka_unit_test(update_needs_a_known_mask_a_task_id_and_a_real_priority),
        cmocka_unit_test(reminder_fields_are_checked),
        cmocka_unit_test(time_zones_must_be_known_iana_names),
        cmocka_unit_test(rules_must_make_sense),
        cmocka_unit_test(reminder_channels_are_joined_and_checked),
        cmocka_unit_test(notification_profiles_are_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
