/* recur: see recur.h. */
#include "recur.h"

#include <stdbool.h>

#define HORIZON_DAYS 800 /* a valid rule always has an occurrence within this */

static int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

static bool matches(const Todo__V1__RecurrenceRule *r, int64_t day, int64_t anchor_day)
{
    switch (r->frequency) {
    case TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_DAILY:
        return true;
    case TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_WEEKLY:
        for (size_t i = 0; i < r->n_by_weekday; i++)
            if ((int)r->by_weekday[i] == tz_weekday(day)) return true;
        return false;
    case TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_MONTHLY: {
        int64_t y;
        int m, d;
        tz_civil_from_days(day, &y, &m, &d);
        int last = tz_days_in_month(y, m);
        return d == (r->day_of_month < last ? r->day_of_month : last);
    }
    case TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_EVERY_N_DAYS:
        return r->interval_days > 0 && day >= anchor_day && (day - anchor_day) % r->interval_days == 0;
    default:
        return false;
    }
}

int64_t recur_next(const Todo__V1__RecurrenceRule *r, const tz_zone *z, int64_t anchor, int64_t after, int done)
{
    if (r->max_occurrences > 0 && done >= r->max_occurrences) return -1;
    int64_t local_anchor = anchor + tz_offset(z, anchor);
    int64_t anchor_day = floor_div(local_anchor, 86400);
    int64_t time_of_day = local_anchor - anchor_day * 86400;
    int64_t day = floor_div(after + tz_offset(z, after), 86400);
    for (int64_t d = day; d < day + HORIZON_DAYS; d++) {
        if (!matches(r, d, anchor_day)) continue;
        int64_t t = tz_to_utc(z, d * 86400 + time_of_day);
        if (t <= after) continue;
        if (r->ends_at != NULL && t > r->ends_at->seconds) return -1;
        return t;
    }
    return -1;
}
