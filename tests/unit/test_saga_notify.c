/* Unit tests of what the notification channels send (saga_notify.h): the
 * webhook signature and the mail's text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "saga_notify.h"
#include "saga_templates.h"
#include "tz.h"

#define SECRET "test-webhook-secret-0123456789abcdef"

static void webhook_signatures_are_hmac_sha256_of_time_and_body(void **state)
{
    (void)state;
    char sig[96];
    /* printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac SECRET */
    saga_notify_signature(SECRET, 1700000000, "{\"a\":1}", sig);
    assert_string_equal(sig, "t=1700000000,v1=129140e7a5235885cba26aacf5321529030599439ebbd0d5cb163b3eacd5e6ec");
    char other[96];
    saga_notify_signature(SECRET, 1700000001, "{\"a\":1}", other); /* the time is signed too */
    assert_string_not_equal(sig + 16, other + 16);
}

static void mails_are_one_safe_message(void **state)
{
    (void)state;
    Todo__V1__SendNotification n = TODO__V1__SEND_NOTIFICATION__INIT;
    n.notification_id = "2f1c9a7e-0000-8000-8000-000000000001";
    n.recipient = "ann";
    n.channel = "email";
    /* A subject with a line break and a header after it: it stays one
     * encoded word, never a header of its own. */
    n.subject = "Reminder: pay\r\nBcc: eve@example.com";
    n.body = "line one\nline two\r\n.dot line";
    char *m = saga_notify_mail("todo@example.com", "ann@example.com", &n, 1700000000);
    assert_non_null(m);
    assert_non_null(strstr(m, "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"));
    assert_non_null(strstr(m, "From: <todo@example.com>\r\nTo: <ann@example.com>\r\n"));
    assert_non_null(strstr(m, "Message-ID: <2f1c9a7e-0000-8000-8000-000000000001@todo>\r\n"));
    assert_null(strstr(m, "\r\nBcc:"));
    assert_non_null(strstr(m, "Subject: =?UTF-8?B?UmVtaW5kZXI6IHBheQ0KQmNjOiBldmVAZXhhbXBsZS5jb20=?=\r\n"));
    assert_non_null(strstr(m, "Content-Type: text/plain; charset=UTF-8\r\n"));
    assert_non_null(strstr(m, "\r\n\r\nline one\r\nline two\r\n.dot line\r\n"));
    /* No bare LF anywhere. */
    for (const char *c = m; *c != '\0'; c++)
        if (*c == '\n') assert_true(c > m && c[-1] == '\r');
    free(m);
    /* An address with brackets or spaces cannot open a second header. */
    m = saga_notify_mail("todo@example.com", "ann@example.com>\r\nBcc: <eve@example.com", &n, 1700000000);
    assert_non_null(strstr(m, "To: <ann@example.comBcc:eve@example.com>\r\n"));
    free(m);
}

static void quiet_hours_end_in_the_users_zone(void **state)
{
    (void)state;
    todo_err err;
    tz_zone *berlin = tz_load("/usr/share/zoneinfo", "Europe/Berlin", &err);
    assert_non_null(berlin);
    /* 22:00-07:00 spans midnight: at 23:30 Berlin (22:30 UTC, winter) it
     * ends at 07:00 Berlin the next day, 06:00 UTC. */
    assert_int_equal(saga_quiet_until(berlin, 22 * 60, 7 * 60, 1768516200), 1768543200);
    /* At noon Berlin: not quiet. */
    assert_int_equal(saga_quiet_until(berlin, 22 * 60, 7 * 60, 1768474800), 0);
    /* 09:00-17:00 in summer (UTC+2): at 10:00 Berlin it ends at 15:00 UTC. */
    assert_int_equal(saga_quiet_until(berlin, 9 * 60, 17 * 60, 1782892800), 1782918000);
    /* Across the spring-forward night: 01:00-03:30, at 01:30 CET (00:30 UTC)
     * it ends at 03:30 CEST, 01:30 UTC. */
    assert_int_equal(saga_quiet_until(berlin, 60, 3 * 60 + 30, 1774744200), 1774747800);
    /* The end itself is outside the window. */
    assert_int_equal(saga_quiet_until(berlin, 9 * 60, 17 * 60, 1782918000), 0);
    tz_free(berlin);
}

/* Each kind of notification names the task; the recurring one says when
 * the next is due; the Message-ID is the notification's. */
static void templates_name_the_task(void **state)
{
    (void)state;
    arena *a = arena_new();
    saga_message m = saga_template_reminder_due(a, "Pay rent");
    assert_string_equal(m.subject, "Reminder: Pay rent");
    assert_string_equal(m.body, "Your reminder for \"Pay rent\" is due now.");
    m = saga_template_task_completed(a, "Pay rent");
    assert_string_equal(m.subject, "Task completed");
    assert_string_equal(m.body, "You completed \"Pay rent\".");
    m = saga_template_recurring_created(a, "Water the plants", 1796281200LL * 1000000); /* 2026-12-03 07:00 UTC */
    assert_string_equal(m.subject, "Next up: Water the plants");
    assert_string_equal(m.body,
                        "You completed \"Water the plants\". The next one, due Thu 03 Dec 2026 07:00 UTC, is on your list.");
    m = saga_template_recurring_created(a, "Water the plants", 0);
    assert_string_equal(m.body, "You completed \"Water the plants\". The next one is on your list.");
    m = saga_template_saga_compensated(a, "Pay rent", "creating the next task of its series", true);
    assert_string_equal(m.subject, "Could not finish completing \"Pay rent\"");
    assert_non_null(strstr(m.body, "but creating the next task of its series failed, so"));
    m = saga_template_saga_compensated(a, "Pay rent", "an operator's decision", false);
    assert_non_null(strstr(m.body, "but an operator's decision stopped it"));
    arena_free(a);

    Todo__V1__SendNotification n = TODO__V1__SEND_NOTIFICATION__INIT;
    char id[256];
    n.notification_id = "6f1c2a9e-0000-4000-8000-00000000abcd";
    saga_notify_message_id(&n, id, sizeof id);
    assert_string_equal(id, "6f1c2a9e-0000-4000-8000-00000000abcd@todo");
    n.notification_id = "a<b>\r\nc";
    saga_notify_message_id(&n, id, sizeof id);
    assert_string_equal(id, "abc@todo");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(webhook_signatures_are_hmac_sha256_of_time_and_body),
        cmocka_unit_test(mails_are_one_safe_message),
        cmocka_unit_test(quiet_hours_end_in_the_users_zone),
        cmocka_unit_test(templates_name_the_task),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
