/* Unit tests of the topic table: every topic of DESIGN, in both profiles,
 * with the properties the rest of the system relies on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <regex.h>
#include <string.h>

#include "topics.h"

static const char *const design[] = {"tasks.events.v1", "reminders.events.v1", "users.events.v1",
                                     "notifications.commands.v1", "recurring.commands.v1", "saga.events.v1",
                                     "system.dlq.v1", "system.audit.v1"};

static const topics_spec *find(const topics_spec *t, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0) return &t[i];
    return NULL;
}

static void both_profiles_hold_every_design_topic(void **state)
{
    (void)state;
    regex_t re;
    assert_int_equal(regcomp(&re, "^[a-z]+\\.[a-z]+\\.v[0-9]+$", REG_EXTENDED | REG_NOSUB), 0);
    for (int p = TOPICS_DEV; p <= TOPICS_PRODUCTION; p++) {
        int n;
        const topics_spec *t = topics_table((topics_profile)p, &n);
        assert_int_equal(n, 8);
        for (size_t i = 0; i < sizeof design / sizeof design[0]; i++) assert_non_null(find(t, n, design[i]));
        for (int i = 0; i < n; i++) {
            assert_int_equal(regexec(&re, t[i].name, 0, NULL, 0), 0);
            assert_true(t[i].partitions >= 1);
            assert_true(t[i].min_isr >= 1 && t[i].min_isr <= t[i].replication);
        }
        /* Rebuild sources keep their history; the DLQ is compacted. */
        assert_string_equal(find(t, n, "tasks.events.v1")->retention_ms, "-1");
        assert_string_equal(find(t, n, "reminders.events.v1")->retention_ms, "-1");
        assert_string_equal(find(t, n, "system.dlq.v1")->cleanup_policy, "compact");
    }
    regfree(&re);
}

static void production_survives_a_broker_loss(void **state)
{
    (void)state;
    int n;
    const topics_spec *t = topics_table(TOPICS_PRODUCTION, &n);
    for (int i = 0; i < n; i++) {
        assert_int_equal(t[i].replication, 3);
        assert_int_equal(t[i].min_isr, 2);
    }
    t = topics_table(TOPICS_DEV, &n);
    for (int i = 0; i < n; i++) assert_int_equal(t[i].replication, 1);
}

static void profiles_parse_by_name(void **state)
{
    (void)state;
    topics_profile p;
    todo_err err;
    assert_int_equal(topics_profile_parse("production", &p, &err), TODO_OK);
    assert_int_equal(p, TOPICS_PRODUCTION);
    assert_string_equal(topics_profile_name(p), "production");
    assert_int_equal(topics_profile_parse("prod", &p, &err), TODO_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(both_profiles_hold_every_design_topic),
        cmocka_unit_test(production_survives_a_broker_loss),
        cmocka_unit_test(profiles_parse_by_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
