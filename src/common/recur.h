/*
 * recur: the arithmetic of recurring tasks. Given a rule, its time zone and
 * the template's due time (the anchor), recur_next finds the next occurrence
 * after an instant. Occurrences keep the anchor's local wall-clock time in
 * the rule's zone across DST changes (09:00 stays 09:00); a time the zone
 * skips moves forward by the gap, a time it repeats is its first occurrence.
 *
 *   DAILY          every day
 *   WEEKLY         the days of by_weekday
 *   MONTHLY        day_of_month, or the month's last day when it is shorter
 *                  (31 -> 30 April, 28 or 29 February)
 *   EVERY_N_DAYS   every interval_days days from the anchor's date
 *
 * Pure and thread-safe.
 */
#ifndef TODO_RECUR_H
#define TODO_RECUR_H

#include <stdint.h>

#include "todo/v1/task.pb-c.h"
#include "tz.h"

/* The next occurrence (seconds since the epoch) strictly after `after`, or
 * -1 when the series has ended: the next would be after rule->ends_at, or
 * `done` occurrences already reached rule->max_occurrences. */
int64_t recur_next(const Todo__V1__RecurrenceRule *rule, const tz_zone *zone, int64_t anchor, int64_t after,
                   int done);

#endif
