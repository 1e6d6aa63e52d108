/*
 * qry_dates: the calendar dates of requests ("YYYY-MM-DD", as
 * GetProductivityStats takes them).
 */
#ifndef TODO_QRY_DATES_H
#define TODO_QRY_DATES_H

#include "todo_err.h"

/* Checks that from and to (fields from_field and to_field of the request)
 * are dates, from not after to and to at most max_days after from.
 * TODO_EINVAL naming the field otherwise. */
int qry_date_range(const char *from, const char *from_field, const char *to, const char *to_field, int max_days,
                   todo_err *err);

#endif
