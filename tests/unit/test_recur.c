/* Unit tests of tz and recur: calendar arithmetic, DST in named zones (from
 * the transition table and from the footer rule after 2037), month ends and
 * leap years. Times are written as UTC instants; the comments give the
 * local wall-clock times they stand for. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "recur.h"

#define ZONEINFO "/usr/share/zoneinfo"

static int64_t utc(int64_t y, int m, int d, int hh, int mm)
{
    return tz_days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60;
}

static void calendar_helpers_agree_with_the_gregorian_calendar(void **state)
{
    (void)state;
    assert_int_equal(tz_days_from_civil(1970, 1, 1), 0);
    assert_int_equal(tz_days_from_civil(2000, 3, 1), 11017);
    assert_int_equal(tz_weekday(0), 4);                           /* a Thursday */
    assert_int_equal(tz_weekday(tz_days_from_civil(2026, 11, 27)), 5); /* a Friday */
    assert_int_equal(tz_days_in_month(2024, 2), 29);
    assert_int_equal(tz_days_in_month(2100, 2), 28);
    assert_int_equal(tz_days_in_month(2000, 2), 29);
    assert_int_equal(tz_days_in_month(2026, 4), 30);
    for (int64_t day = -800000; day < 800000; day += 997) {
        int64_t y;
        int m, d;
        tz_civil_from_days(day, &y, &m, &d);
        assert_int_equal(tz_days_from_civil(y, m, d), day);
    }
}

static void offsets_follow_dst_before_and_after_2037(void **state)
{
    (void)state;
    todo_err err;
    tz_zone *berlin = tz_load(ZONEINFO, "Europe/Berlin", &err);
    tz_zone *ny = tz_load(ZONEINFO, "America/New_York", &err);
    tz_zone *sydney = tz_load(ZONEINFO, "Australia/Sydney", &err);
    assert_non_null(berlin);
    assert_non_null(ny);
    assert_non_null(sydney);
    assert_int_equal(tz_offset(berlin, utc(2026, 1, 15, 12, 0)), 3600);
    assert_int_equal(tz_offset(berlin, utc(2026, 7, 15, 12, 0)), 7200);
    /* 2026-03-29 01:00 UTC: clocks go from 02:00 to 03:00. */
    assert_int_equal(tz_offset(berlin, utc(2026, 3, 29, 0, 59)), 3600);
    assert_int_equal(tz_offset(berlin, utc(2026, 3, 29, 1, 0)), 7200);
    /* Past the table: the footer rule (last Sunday of March, 2050-03-27). */
    assert_int_equal(tz_offset(berlin, utc(2050, 3, 27, 0, 59)), 3600);
    assert_int_equal(tz_offset(berlin, utc(2050, 3, 27, 1, 0)), 7200);
    assert_int_equal(tz_offset(berlin, utc(2050, 10, 30, 1, 0)), 3600);
    /* New York 2040: second Sunday of March (11th) at 02:00 EST = 07:00 UTC. */
    assert_int_equal(tz_offset(ny, utc(2040, 3, 11, 6, 59)), -5 * 3600);
    assert_int_equal(tz_offset(ny, utc(2040, 3, 11, 7, 0)), -4 * 3600);
    /* Southern hemisphere: summer in January. */
    assert_int_equal(tz_offset(sydney, utc(2045, 1, 10, 0, 0)), 11 * 3600);
    assert_int_equal(tz_offset(sydney, utc(2045, 7, 10, 0, 0)), 10 * 3600);
    assert_null(tz_load(ZONEINFO, "Nowhere/Land", &err));
    assert_null(tz_load(ZONEINFO, "../../etc/passwd", &err));
    tz_free(berlin);
    tz_free(ny);
    tz_free(sydney);
}

static void local_times_in_gaps_and_overlaps(void **state)
{
    (void)state;
    todo_err err;
    tz_zone *z = tz_load(ZONEINFO, "Europe/Berlin", &err);
    /* 02:30 on 2026-03-29 does not exist: it becomes 03:30 CEST = 01:30 UTC. */
    assert_int_equal(tz_to_utc(z, utc(2026, 3, 29, 2, 30)), utc(2026, 3, 29, 1, 30));
    /* 02:30 on 2026-10-25 happens twice: the first is 02:30 CEST = 00:30 UTC. */
    assert_int_equal(tz_to_utc(z, utc(2026, 10, 25, 2, 30)), utc(2026, 10, 25, 0, 30));
    assert_int_equal(tz_to_utc(z, utc(2026, 7, 1, 9, 0)), utc(2026, 7, 1, 7, 0));
    tz_free(z);
}

static Todo__V1__RecurrenceRule make(Todo__V1__RecurrenceFrequency f)
{
    Todo__V1__RecurrenceRule r = TODO__V1__RECURRENCE_RULE__INIT;
    r.frequency = f;
    r.time_zone = "Europe/Berlin";
    return r;
}

static void daily_keeps_the_wall_clock_time_across_dst(void **state)
{
    (void)state;
    todo_err err;
    tz_zone *z = tz_load(ZONEINFO, "Europe/Berlin", &err);
    Todo__V1__RecurrenceRule r = make(TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_DAILY);
    int64_t anchor = utc(2026, 3, 28, 8, 0); /* 09:00 CET */
    int64_t next = recur_next(&r, z, anchor, anchor, 0);
    assert_int_equal(next, utc(2026, 3, 29, 7, 0)); /* 09:00 CEST */
    assert_int_equal(recur_next(&r, z, anchor, utc(2026, 10, 24, 7, 0), 0), utc(2026, 10, 25, 8, 0));
    /* A daily 02:30 meets the skipped hour: that day it is 03:30. */
    int64_t early = utc(2026, 3, 27, 1, 30); /* 02:30 CET */
    assert_int_equal(recur_next(&r, z, early, utc(2026, 3, 28, 1, 30), 0), utc(2026, 3, 29, 1, 30));
    tz_free(z);
}

static void monthly_uses_the_last_day_of_shorter_months(void **state)
{
    (void)state;
    todo_err err;
    tz_zone *z = tz_load(ZONEINFO, "Europe/Berlin", &err);
    Todo__V1__RecurrenceRule r = make(TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_MONTHLY);
    r.day_of_month = 31;
    int64_t jan = utc(2026, 1, 31, 17, 0); /* 18:00 CET */
    int64_t feb = recur_next(&r, z, jan, jan, 0);
    assert_int_equal(feb, utc(2026, 2, 28, 17, 0));
    int64_t mar = recur_next(&r, z, jan, feb, 1);
    assert_int_equal(mar, utc(2026, 3, 31, 16, 0)); /* 18:00 CEST */
    assert_int_equal(recur_next(&r, z, jan, mar, 2), utc(2026, 4, 30, 16, 0));
    /* Leap year. */
    int64_t jan28 = utc(2028, 1, 31, 17, 0);
    assert_int_equal(recur_next(&r, z, jan28, jan28, 0), utc(2028, 2, 29, 17, 0));
    r.day_of_month = 29;
    assert_int_equal(recur_next(&r, z, jan, jan, 0), utc(2026, 2, 28, 17, 0));
    tz_free(z);
}

static void weekly_and_every_n_days(void **state)
{
    (void)state;
    todo_err err;
    tz_zone *z = tz_load(ZONEINFO, "America/New_York", &err);
    Todo__V1__Weekday days[] = {TODO__V1__WEEKDAY__WEEKDAY_MONDAY, TODO__V1__WEEKDAY__WEEKDAY_FRIDAY};
    Todo__V1__RecurrenceRule r = make(TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_WEEKLY);
    r.by_weekday = days;
    r.n_by_weekday = 2;
    int64_t wed = utc(2026, 11, 25, 14, 0); /* Wednesday 09:00 EST */
    int64_t fri = recur_next(&r, z, wed, wed, 0);
    assert_int_equal(fri, utc(2026, 11, 27, 14, 0));
    assert_int_equal(recur_next(&r, z, wed, fri, 1), utc(2026, 11, 30, 14, 0)); /* Monday */

    Todo__V1__RecurrenceRule n = make(TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_EVERY_N_DAYS);
    n.interval_days = 3;
    assert_int_equal(recur_next(&n, z, wed, wed, 0), utc(2026, 11, 28, 14, 0));
    assert_int_equal(recur_next(&n, z, wed, utc(2026, 11, 28, 14, 0), 1), utc(2026, 12, 1, 14, 0));
    /* Across New York's 2040 spring change, every 3 days at 09:00. */
    int64_t a = utc(2040, 3, 8, 14, 0); /* 09:00 EST */
    assert_int_equal(recur_next(&n, z, a, a, 0), utc(2040, 3, 11, 13, 0)); /* 09:00 EDT */
    tz_free(z);
}

static void series_end_by_date_or_count(void **state)
{
    (void)state;
    todo_err err;
    tz_zone *z = tz_load(ZONEINFO, "UTC", &err);
    Google__Protobuf__Timestamp end = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    Todo__V1__RecurrenceRule r = make(TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_DAILY);
    int64_t anchor = utc(2026, 1, 1, 9, 0);
    end.seconds = utc(2026, 1, 3, 9, 0);
    r.ends_at = &end;
    assert_int_equal(recur_next(&r, z, anchor, utc(2026, 1, 2, 9, 0), 1), utc(2026, 1, 3, 9, 0));
    assert_int_equal(recur_next(&r, z, anchor, utc(2026, 1, 3, 9, 0), 2), -1);
    r.ends_at = NULL;
    r.max_occurrences = 3;
    assert_int_equal(recur_next(&r, z, anchor, anchor, 2), utc(2026, 1, 2, 9, 0));
    assert_int_equal(recur_next(&r, z, anchor, anchor, 3), -1);
    tz_free(z);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(calendar_helpers_agree_with_the_gregorian_calendar),
        cmocka_unit_test(offsets_follow_dst_before_and_after_2037),
        cmocka_unit_test(local_times_in_gaps_and_overlaps),
        cmocka_unit_test(daily_keeps_the_wall_clock_time_across_dst),
        cmocka_unit_test(monthly_uses_the_last_day_of_shorter_months),
        cmocka_unit_test(weekly_and_every_n_days),
        cmocka_unit_test(series_end_by_date_or_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
