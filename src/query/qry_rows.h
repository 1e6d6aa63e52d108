/*
 * qry_rows: the read model's rows as API messages, shared by the queries
 * (qry_service) and the WatchUpdates streams (qry_watch).
 *
 * Each *_of reads row `row` of a result whose columns are those of the
 * matching select: qry_task_select (qry_page.h), qry_reminder_select (from
 * read.reminders r), qry_notification_select (from read.notifications n).
 * The messages live in a.
 */
#ifndef TODO_QRY_ROWS_H
#define TODO_QRY_ROWS_H

#include <libpq-fe.h>

#include "arena.h"
#include "todo/v1/query.pb-c.h"

extern const char *const qry_reminder_select;
extern const char *const qry_notification_select;

/* A timestamp column (microseconds since the epoch as text), NULL when null. */
Google__Protobuf__Timestamp *qry_ts_of(arena *a, const PGresult *r, int row, int col);

Todo__V1__Task *qry_task_of(arena *a, const PGresult *r, int row);
Todo__V1__Reminder *qry_reminder_of(arena *a, const PGresult *r, int row);
Todo__V1__Notification *qry_notification_of(arena *a, const PGresult *r, int row);

#endif
