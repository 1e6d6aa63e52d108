/*
 * tz: time zones from the tz database (TZif files, as in
 * /usr/share/zoneinfo), for turning local wall-clock times into instants and
 * back. Transitions come from the file's 64-bit data; instants after its last
 * transition follow the POSIX TZ rule in the file's footer (e.g.
 * "CET-1CEST,M3.5.0,M10.5.0/3"), so dates after 2037 get their DST too.
 *
 * A loaded zone is immutable: one zone may serve several threads.
 */
#ifndef TODO_TZ_H
#define TODO_TZ_H

#include <stdint.h>

#include "todo_err.h"

typedef struct tz_zone tz_zone;

/* Loads zone name ("Europe/Berlin") from dir. TODO_EINVAL in err when the
 * name is unknown or the file is not a TZif file we can read. */
tz_zone *tz_load(const char *dir, const char *name, todo_err *err);

/* Releases a zone; takes NULL. */
void tz_free(tz_zone *z);

/* The UTC offset (seconds east of UTC) in effect at instant t (seconds since
 * the epoch). */
int tz_offset(const tz_zone *z, int64_t t);

/* The instant of local wall-clock time local (seconds since the epoch as if
 * the zone were UTC). A time that does not exist (the hour skipped when
 * clocks go forward) moves forward by the gap; a time that exists twice (the
 * hour repeated when clocks go back) is its first occurrence. */
int64_t tz_to_utc(const tz_zone *z, int64_t local);

/* Civil calendar helpers (proleptic Gregorian): days since 1970-01-01 of a
 * date, and back; the ISO weekday (1 = Monday .. 7 = Sunday) of a day; the
 * number of days of a month. */
int64_t tz_days_from_civil(int64_t y, int m, int d);
void tz_civil_from_days(int64_t days, int64_t *y, int *m, int *d);
int tz_weekday(int64_t days);
int tz_days_in_month(int64_t y, int m);

#endif
