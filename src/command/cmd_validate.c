/* cmd_validate: see cmd_validate.h. */
#include "cmd_validate.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "event.h"
#include "text.h"

#define MIN_SECONDS (-62135596800LL) /* 0001-01-01T00:00:00Z */
#define MAX_SECONDS 253402300799LL   /* 9999-12-31T23:59:59Z */

static const char *const FIELD_NAMES[] = {"title", "description", "priority", "due_at", "category", "tags"};

/* Checks that s is valid UTF-8 of min..max characters without control
 * characters (tabs and newlines are allowed where multiline is true). */
static int check_text(const char *field, const char *s, long min, long max, bool multiline, todo_err *err)
{
    size_t n = strlen(s);
    long chars = text_utf8_chars(s, n);
    if (chars < 0) return todo_err_set(err, TODO_EINVAL, "%s: must be valid UTF-8", field);
    if (chars < min || chars > max) {
        if (min > 0)
            return todo_err_set(err, TODO_EINVAL, "%s: must be %ld to %ld characters, got %ld", field, min, max, chars);
        return todo_err_set(err, TODO_EINVAL, "%s: must be at most %ld characters, got %ld", field, max, chars);
    }
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        bool ws = *p == '\n' || *p == '\t' || *p == '\r';
        if ((*p < 0x20 && !(multiline && ws)) || *p == 0x7F)
            return todo_err_set(err, TODO_EINVAL, "%s: must not contain control characters", field);
    }
    return TODO_OK;
}

static bool is_blank(const char *s)
{
    for (; *s != '\0'; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r') return false;
    return true;
}

int cmd_validate_timestamp(const char *field, int64_t seconds, int32_t nanos, todo_err *err)
{
    if (seconds < MIN_SECONDS || seconds > MAX_SECONDS)
        return todo_err_set(err, TODO_EINVAL, "%s: must be between years 1 and 9999", field);
    if (nanos < 0 || nanos > 999999999)
        return todo_err_set(err, TODO_EINVAL, "%s: nanos must be 0 to 999999999, got %d", field, (int)nanos);
    return TODO_OK;
}

int cmd_validate_request_id(const char *rid, todo_err *err)
{
    size_t n = strlen(rid);
    if (n > CMD_REQUEST_ID_MAX)
        return todo_err_set(err, TODO_EINVAL, "request_id: must be at most %d characters, got %zu",
                            CMD_REQUEST_ID_MAX, n);
    for (size_t i = 0; i < n; i++)
        if (rid[i] < 0x21 || rid[i] > 0x7E)
            return todo_err_set(err, TODO_EINVAL, "request_id: must be printable ASCII without spaces");
    return TODO_OK;
}

int cmd_validate_id(const char *field, const char *id, todo_err *err)
{
    if (!text_is_uuid(id)) return todo_err_set(err, TODO_EINVAL, "%s: must be a UUID", field);
    return TODO_OK;
}

int cmd_validate_expected_version(int64_t v, todo_err *err)
{
    if (v < 0) return todo_err_set(err, TODO_EINVAL, "expected_version: must be 0 (no check) or positive");
    return TODO_OK;
}

/* Checks the fields named in out->mask, taking values from the arguments. */
static int check_fields(cmd_fields *out, const char *title, const char *description, Todo__V1__Priority priority,
                        const Google__Protobuf__Timestamp *due, const char *category, char *const *tags,
                        size_t n_tags, bool create, todo_err *err)
{
    unsigned m = out->mask;
    int rc;
    if (m & CMD_F_TITLE) {
        if ((rc = check_text("title", title, 1, CMD_TITLE_MAX, false, err)) != 0) return rc;
        if (is_blank(title)) return todo_err_set(err, TODO_EINVAL, "title: must not be blank");
        out->title = title;
    }
    if (m & CMD_F_DESCRIPTION) {
        if ((rc = check_text("description", description, 0, CMD_DESCRIPTION_MAX, true, err)) != 0) return rc;
        out->description = description;
    }
    if (m & CMD_F_CATEGORY) {
        if ((rc = check_text("category", category, 0, CMD_CATEGORY_MAX, false, err)) != 0) return rc;
        out->category = category;
    }
    if (m & CMD_F_PRIORITY) {
        int p = (int)priority;
        if (p < 0 || p > TODO__V1__PRIORITY__PRIORITY_URGENT || (!create && p == 0))
            return todo_err_set(err, TODO_EINVAL, "priority: unknown value %d (use LOW, MEDIUM, HIGH or URGENT)", p);
        out->priority = p == 0 ? TODO__V1__PRIORITY__PRIORITY_MEDIUM : p;
    }
    if (m & CMD_F_DUE_AT) {
        out->has_due = due != NULL;
        if (due != NULL) {
            if ((rc = cmd_validate_timestamp("due_at", due->seconds, due->nanos, err)) != 0) return rc;
            out->due_us = event_timestamp_us(due);
        }
    }
    if (m & CMD_F_TAGS) {
        if (n_tags > CMD_TAGS_MAX)
            return todo_err_set(err, TODO_EINVAL, "tags: at most %d tags, got %zu", CMD_TAGS_MAX, n_tags);
        for (size_t i = 0; i < n_tags; i++) {
            char field[32];
            snprintf(field, sizeof field, "tags[%zu]", i);
            if ((rc = check_text(field, tags[i], 1, CMD_TAG_MAX, false, err)) != 0) return rc;
            for (size_t j = 0; j < i; j++)
                if (strcmp(tags[i], tags[j]) == 0)
                    return todo_err_set(err, TODO_EINVAL, "tags[%zu]: duplicates tags[%zu] \"%s\"", i, j, tags[i]);
        }
        out->tags = tags;
        out->n_tags = n_tags;
    }
    return TODO_OK;
}

int cmd_validate_create(const Todo__V1__CreateTaskRequest *rq, cmd_fields *out, todo_err *err)
{
    int rc;
    memset(out, 0, sizeof *out);
    if ((rc = cmd_validate_request_id(rq->request_id, err)) != 0) return rc;
    out->mask = CMD_F_ALL;
    return check_fields(out, rq->title, rq->description, rq->priority, rq->due_at, rq->category, rq->tags,
                        rq->n_tags, true, err);
}

int cmd_validate_update(const Todo__V1__UpdateTaskRequest *rq, cmd_fields *out, todo_err *err)
{
    int rc;
    memset(out, 0, sizeof *out);
    if ((rc = cmd_validate_request_id(rq->request_id, err)) != 0) return rc;
    if ((rc = cmd_validate_id("task_id", rq->task_id, err)) != 0) return rc;
    if ((rc = cmd_validate_expected_version(rq->expected_version, err)) != 0) return rc;
    if (rq->update_mask == NULL || rq->update_mask->n_paths == 0)
        return todo_err_set(err, TODO_EINVAL,
                            "update_mask: must name at least one of title, description, priority, due_at, category, tags");
    for (size_t i = 0; i < rq->update_mask->n_paths; i++) {
        const char *p = rq->update_mask->paths[i];
        unsigned bit = 0;
        for (unsigned f = 0; f < 6; f++)
            if (strcmp(p, FIELD_NAMES[f]) == 0) bit = 1u << f;
        if (bit == 0)
            return todo_err_set(err, TODO_EINVAL,
                                "update_mask: unknown field \"%.64s\" (use title, description, priority, due_at, "
                                "category, tags)", p);
        out->mask |= bit;
    }
    return check_fields(out, rq->title, rq->description, rq->priority, rq->due_at, rq->category, rq->tags,
                        rq->n_tags, false, err);
}

size_t cmd_fields_names(unsigned mask, const char *names[6])
{
    size_t n = 0;
    for (unsigned f = 0; f < 6; f++)
        if (mask & (1u << f)) names[n++] = FIELD_NAMES[f];
    return n;
}

int cmd_validate_remind_at(const Google__Protobuf__Timestamp *ts, int64_t now_us, todo_err *err)
{
    int rc;
    if (ts == NULL) return todo_err_set(err, TODO_EINVAL, "remind_at: is required");
    if ((rc = cmd_validate_timestamp("remind_at", ts->seconds, ts->nanos, err)) != 0) return rc;
    if (event_timestamp_us(ts) <= now_us) return todo_err_set(err, TODO_EINVAL, "remind_at: must be in the future");
    return TODO_OK;
}

static const char *channel_name(int c)
{
    switch (c) {
    case TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_EMAIL: return "EMAIL";
    case TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_PUSH: return "PUSH";
    case TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_SMS: return "SMS";
    default: return "IN_APP";
    }
}

int cmd_validate_channels(int channel, const int *channels, size_t n, int out[CMD_MAX_CHANNELS], size_t *n_out,
                          todo_err *err)
{
    size_t k = 0;
    *n_out = 0;
    if (channel == 0 && n == 0)
        return todo_err_set(err, TODO_EINVAL,
                            "channel: one of channel or channels is required (EMAIL, PUSH, SMS or IN_APP)");
    for (size_t i = 0; i <= n; i++) {
        int c = i == 0 ? channel : channels[i - 1];
        const char *field = i == 0 ? "channel" : "channels";
        if (i == 0 && c == 0) continue;
        if (c < TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_EMAIL || c > TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_IN_APP)
            return todo_err_set(err, TODO_EINVAL, "%s: must be EMAIL, PUSH, SMS or IN_APP, got %d", field, c);
        bool seen = false;
        for (size_t j = 0; j < k; j++) seen = seen || out[j] == c;
        if (seen) {
            if (i > 0 && channel == c) continue; /* channel repeated in channels: the same request */
            return todo_err_set(err, TODO_EINVAL, "channels: %s appears twice", channel_name(c));
        }
        if (k == CMD_MAX_CHANNELS)
            return todo_err_set(err, TODO_EINVAL, "channels: at most %d", CMD_MAX_CHANNELS);
        out[k++] = c;
    }
    *n_out = k;
    return TODO_OK;
}

int cmd_validate_email(const char *email, todo_err *err)
{
    size_t n = strlen(email);
    if (n == 0) return TODO_OK;
    if (n > 254) return todo_err_set(err, TODO_EINVAL, "email: at most 254 bytes, got %zu", n);
    const char *at = strchr(email, '@');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)email[i];
        if (c <= 0x20 || c == 0x7f || c == '<' || c == '>' || c == ',' || c == ';' || c == '"' || c == '\\')
            return todo_err_set(err, TODO_EINVAL, "email: byte %zu is not allowed in an address", i);
    }
    if (at == NULL || at == email || at[1] == '\0' || strchr(at + 1, '@') != NULL || strchr(at + 1, '.') == NULL)
        return todo_err_set(err, TODO_EINVAL, "email: \"%.80s\" is not an address like name@example.com", email);
    return TODO_OK;
}

int cmd_validate_webhook_url(const char *url, bool allow_http, todo_err *err)
{
    size_t n = strlen(url);
    if (n == 0) return TODO_OK;
    if (n > 2000) return todo_err_set(err, TODO_EINVAL, "webhook_url: at most 2000 bytes, got %zu", n);
    const char *host = strncmp(url, "https://", 8) == 0                  ? url + 8
                       : allow_http && strncmp(url, "http://", 7) == 0 ? url + 7
                                                                       : NULL;
    if (host == NULL)
        return todo_err_set(err, TODO_EINVAL, "webhook_url: must start with https://%s", allow_http ? " or http://" : "");
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)url[i] <= 0x20 || url[i] == 0x7f)
            return todo_err_set(err, TODO_EINVAL, "webhook_url: byte %zu is a space or control character", i);
    if (*host == '\0' || *host == '/' || *host == ':' || *host == '@')
        return todo_err_set(err, TODO_EINVAL, "webhook_url: names no host");
    return TODO_OK;
}

/* "HH:MM", 00:00 to 23:59. */
static bool clock_time(const char *s)
{
    return strlen(s) == 5 && s[0] >= '0' && s[0] <= '2' && s[1] >= '0' && s[1] <= '9' && s[2] == ':' &&
           s[3] >= '0' && s[3] <= '5' && s[4] >= '0' && s[4] <= '9' && (s[0] - '0') * 10 + (s[1] - '0') < 24;
}

int cmd_validate_quiet_hours(const char *start, const char *end, todo_err *err)
{
    if (start[0] == '\0' && end[0] == '\0') return TODO_OK;
    if (start[0] == '\0' || end[0] == '\0')
        return todo_err_set(err, TODO_EINVAL, "quiet_hours_%s: is required with quiet_hours_%s",
                            start[0] == '\0' ? "start" : "end", start[0] == '\0' ? "end" : "start");
    if (!clock_time(start)) return todo_err_set(err, TODO_EINVAL, "quiet_hours_start: \"%.16s\" is not HH:MM", start);
    if (!clock_time(end)) return todo_err_set(err, TODO_EINVAL, "quiet_hours_end: \"%.16s\" is not HH:MM", end);
    if (strcmp(start, end) == 0)
        return todo_err_set(err, TODO_EINVAL, "quiet_hours_end: equals quiet_hours_start (an empty or whole day)");
    return TODO_OK;
}

int cmd_validate_time_zone(const char *field, const char *zone, const char *dir, todo_err *err)
{
    size_t n = strlen(zone);
    char path[512], magic[4];
    if (n == 0) return todo_err_set(err, TODO_EINVAL, "%s: is required (an IANA name such as Europe/Berlin)", field);
    if (n > 64 || zone[0] == '/' || strstr(zone, "..") != NULL)
        return todo_err_set(err, TODO_EINVAL, "%s: \"%.64s\" is not an IANA time zone name", field, zone);
    for (const char *p = zone; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '/' || c == '_' ||
              c == '-' || c == '+'))
            return todo_err_set(err, TODO_EINVAL, "%s: \"%.64s\" is not an IANA time zone name", field, zone);
    }
    snprintf(path, sizeof path, "%s/%s", dir, zone);
    FILE *f = fopen(path, "rb");
    bool tzif = f != NULL && fread(magic, 1, 4, f) == 4 && memcmp(magic, "TZif", 4) == 0;
    if (f != NULL) fclose(f);
    if (!tzif) return todo_err_set(err, TODO_EINVAL, "%s: unknown time zone \"%s\"", field, zone);
    return TODO_OK;
}

int cmd_validate_rule(const Todo__V1__RecurrenceRule *r, int64_t now_us, const char *dir, todo_err *err)
{
    int rc;
    if (r == NULL) return todo_err_set(err, TODO_EINVAL, "rule: is required");
    bool days = r->n_by_weekday > 0, dom = r->day_of_month != 0, every = r->interval_days != 0;
    switch (r->frequency) {
    case TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_DAILY:
        if (days || dom || every)
            return todo_err_set(err, TODO_EINVAL, "rule: DAILY takes no by_weekday, day_of_month or interval_days");
        break;
    case TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_WEEKLY:
        if (!days) return todo_err_set(err, TODO_EINVAL, "rule.by_weekday: WEEKLY needs at least one weekday");
        if (dom || every) return todo_err_set(err, TODO_EINVAL, "rule: WEEKLY takes no day_of_month or interval_days");
        for (size_t i = 0; i < r->n_by_weekday; i++) {
            int d = (int)r->by_weekday[i];
            if (d < 1 || d > 7)
                return todo_err_set(err, TODO_EINVAL, "rule.by_weekday[%zu]: must be MONDAY..SUNDAY, got %d", i, d);
            for (size_t j = 0; j < i; j++)
                if ((int)r->by_weekday[j] == d)
                    return todo_err_set(err, TODO_EINVAL, "rule.by_weekday[%zu]: repeats by_weekday[%zu]", i, j);
        }
        break;
    case TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_MONTHLY:
        if (r->day_of_month < 1 || r->day_of_month > 31)
            return todo_err_set(err, TODO_EINVAL, "rule.day_of_month: MONTHLY needs a day 1..31, got %d",
                                (int)r->day_of_month);
        if (days || every) return todo_err_set(err, TODO_EINVAL, "rule: MONTHLY takes no by_weekday or interval_days");
        break;
    case TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_EVERY_N_DAYS:
        if (r->interval_days < 1 || r->interval_days > 365)
            return todo_err_set(err, TODO_EINVAL, "rule.interval_days: EVERY_N_DAYS needs 1..365, got %d",
                                (int)r->interval_days);
        if (days || dom) return todo_err_set(err, TODO_EINVAL, "rule: EVERY_N_DAYS takes no by_weekday or day_of_month");
        break;
    default:
        return todo_err_set(err, TODO_EINVAL, "rule.frequency: must be DAILY, WEEKLY, MONTHLY or EVERY_N_DAYS");
    }
    if ((rc = cmd_validate_time_zone("rule.time_zone", r->time_zone, dir, err)) != 0) return rc;
    if (r->ends_at != NULL && r->max_occurrences != 0)
        return todo_err_set(err, TODO_EINVAL, "rule: set ends_at or max_occurrences, not both");
    if (r->ends_at != NULL) {
        if ((rc = cmd_validate_timestamp("rule.ends_at", r->ends_at->seconds, r->ends_at->nanos, err)) != 0) return rc;
        if (event_timestamp_us(r->ends_at) <= now_us)
            return todo_err_set(err, TODO_EINVAL, "rule.ends_at: must be in the future");
    }
    if (r->max_occurrences < 0 || r->max_occurrences > 1000)
        return todo_err_set(err, TODO_EINVAL, "rule.max_occurrences: must be 0 (unbounded) to 1000, got %d",
                            (int)r->max_occurrences);
    return TODO_OK;
}
