/*
 * cmd_validate: the rules a command's fields must meet, checked before any
 * work. Each failure is TODO_EINVAL with a message that begins with the field
 * and states the rule ("title: must be 1 to 255 characters, got 0"). Pure
 * functions, thread-safe.
 */
#ifndef TODO_CMD_VALIDATE_H
#define TODO_CMD_VALIDATE_H

#include <stdbool.h>
#include <stdint.h>

#include "todo/v1/command.pb-c.h"
#include "todo_err.h"

#define CMD_TITLE_MAX 255
#define CMD_DESCRIPTION_MAX 4000
#define CMD_CATEGORY_MAX 64
#define CMD_TAGS_MAX 20
#define CMD_TAG_MAX 32
#define CMD_REQUEST_ID_MAX 128

/* The editable fields of a task, as named in an UpdateTask field mask. */
enum {
    CMD_F_TITLE = 1 << 0,
    CMD_F_DESCRIPTION = 1 << 1,
    CMD_F_PRIORITY = 1 << 2,
    CMD_F_DUE_AT = 1 << 3,
    CMD_F_CATEGORY = 1 << 4,
    CMD_F_TAGS = 1 << 5,
    CMD_F_ALL = (1 << 6) - 1
};

/* Validated, normalized field values; only those in mask are meaningful.
 * Strings are borrowed from the request. */
typedef struct cmd_fields {
    unsigned mask;
    const char *title;
    const char *description;
    const char *category;
    int priority;            /* 1..4 */
    bool has_due;            /* false with CMD_F_DUE_AT: clear the due date */
    int64_t due_us;
    char *const *tags;
    size_t n_tags;
} cmd_fields;

/* CreateTask: every field; PRIORITY_UNSPECIFIED becomes MEDIUM. */
int cmd_validate_create(const Todo__V1__CreateTaskRequest *rq, cmd_fields *out, todo_err *err);

/* UpdateTask: the update_mask must name at least one known field (title,
 * description, priority, due_at, category, tags); only those are checked and
 * only those change. Also checks task_id and expected_version. */
int cmd_validate_update(const Todo__V1__UpdateTaskRequest *rq, cmd_fields *out, todo_err *err);

/* The mask's field names in a fixed order, for events: writes at most
 * 6 names into names and returns how many. */
size_t cmd_fields_names(unsigned mask, const char *names[6]);

/* An id field (task_id, reminder_id, pattern_id): a UUID. */
int cmd_validate_id(const char *field, const char *id, todo_err *err);

/* expected_version: 0 (no check) or positive. */
int cmd_validate_expected_version(int64_t v, todo_err *err);

/* A reminder time: set, a real time, and after now_us. */
int cmd_validate_remind_at(const Google__Protobuf__Timestamp *ts, int64_t now_us, todo_err *err);


#define CMD_MAX_CHANNELS 4

/* A reminder's channels: channel (0: unset) and the list channels, joined
 * into out (channel first, no repeats, each valid, at most
 * CMD_MAX_CHANNELS); at least one is required. *n_out gets the count. */
int cmd_validate_channels(int channel, const int *channels, size_t n, int out[CMD_MAX_CHANNELS], size_t *n_out,
                          todo_err *err);

/* A notification profile (SetNotificationPreferences): email an address
 * (local@domain, at most 254 bytes, no spaces or control characters) or
 * empty; webhook_url https:// (http:// too when allow_http) with a host, at
 * most 2,000 bytes, or empty; quiet hours "HH:MM" both or neither. */
int cmd_validate_email(const char *email, todo_err *err);
int cmd_validate_webhook_url(const char *url, bool allow_http, todo_err *err);
int cmd_validate_quiet_hours(const char *start, const char *end, todo_err *err);

/* An IANA time zone name known to this machine's tz database
 * (zoneinfo_dir, normally /usr/share/zoneinfo). field names it. */
int cmd_validate_time_zone(const char *field, const char *zone, const char *zoneinfo_dir, todo_err *err);

/* A recurrence rule whose fields make sense together (see proto):
 *   DAILY          nothing else
 *   WEEKLY         by_weekday: 1..7 distinct days
 *   MONTHLY        day_of_month 1..31 (a shorter month uses its last day)
 *   EVERY_N_DAYS   interval_days 1..365
 * plus a time zone, and at most one of ends_at (after now_us) and
 * max_occurrences (1..1000). Errors name the field as "rule.<field>". */
int cmd_validate_rule(const Todo__V1__RecurrenceRule *rule, int64_t now_us, const char *zoneinfo_dir, todo_err *err);

/* Checks a timestamp field: seconds within years 1..9999, nanos 0..999999999.
 * field names it in the message. */
int cmd_validate_timestamp(const char *field, int64_t seconds, int32_t nanos, todo_err *err);

/* Checks a client request id: empty, or 1..128 printable ASCII characters. */
int cmd_validate_request_id(const char *request_id, todo_err *err);

#endif
