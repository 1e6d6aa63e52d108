/* qry_dates: see qry_dates.h. */
#include "qry_dates.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil). */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const int64_t yoe = y - era * 400;
    const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* Parses "YYYY-MM-DD" (years 1..9999) into its day number. */
static bool parse_date(const char *s, int64_t *day)
{
    int y, m, d, n = 0;
    if (strlen(s) != 10 || s[4] != '-' || s[7] != '-') return false;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9')) return false;
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &m, &d, &n) != 3 || n != 10) return false;
    static const int days_in[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1 || m < 1 || m > 12 || d < 1 || d > days_in[m - 1] + (m == 2 && leap)) return false;
    *day = days_from_civil(y, m, d);
    return true;
}

int qry_date_range(const char *from, const char *from_field, const char *to, const char *to_field, int max_days,
                   todo_err *err)
{
    int64_t a, b;
    if (!parse_date(from, &a))
        return todo_err_set(err, TODO_EINVAL, "%s: must be a date as YYYY-MM-DD, got \"%.40s\"", from_field, from);
    if (!parse_date(to, &b))
        return todo_err_set(err, TODO_EINVAL, "%s: must be a date as YYYY-MM-DD, got \"%.40s\"", to_field, to);
    if (b < a) return todo_err_set(err, TODO_EINVAL, "%s: %s is before %s %s", to_field, to, from_field, from);
    if (b - a > max_days)
        return todo_err_set(err, TODO_EINVAL, "%s: at most %d days after %s (%s), got %lld", to_field, max_days,
                            from_field, from, (long long)(b - a));
    return TODO_OK;
}
