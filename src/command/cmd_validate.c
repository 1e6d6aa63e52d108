/* cmd_validate: see cmd_validate.h. */
#include "cmd_validate.h"

#include <stdio.h>
#include <string.h>

#include "event.h"
#include "text.h"

#define MIN_SECONDS (-62135596800LL) /* 0001-01-01T00:00:00Z */
#define MAX_SECONDS 253402300799LL   /* 9999-12-31T23:59:59Z */

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

int cmd_validate_create(const Todo__V1__CreateTaskRequest *rq, cmd_new_task *out, todo_err *err)
{
    int rc;
    memset(out, 0, sizeof *out);
    if ((rc = cmd_validate_request_id(rq->request_id, err)) != 0) return rc;
    if ((rc = check_text("title", rq->title, 1, CMD_TITLE_MAX, false, err)) != 0) return rc;
    if (is_blank(rq->title)) return todo_err_set(err, TODO_EINVAL, "title: must not be blank");
    if ((rc = check_text("description", rq->description, 0, CMD_DESCRIPTION_MAX, true, err)) != 0) return rc;
    if ((rc = check_text("category", rq->category, 0, CMD_CATEGORY_MAX, false, err)) != 0) return rc;
    if ((int)rq->priority < 0 || (int)rq->priority > TODO__V1__PRIORITY__PRIORITY_URGENT)
        return todo_err_set(err, TODO_EINVAL, "priority: unknown value %d (use LOW, MEDIUM, HIGH or URGENT)",
                            (int)rq->priority);
    if (rq->due_at != NULL) {
        if ((rc = cmd_validate_timestamp("due_at", rq->due_at->seconds, rq->due_at->nanos, err)) != 0) return rc;
        out->has_due = true;
        out->due_us = event_timestamp_us(rq->due_at);
    }
    if (rq->n_tags > CMD_TAGS_MAX)
        return todo_err_set(err, TODO_EINVAL, "tags: at most %d tags, got %zu", CMD_TAGS_MAX, rq->n_tags);
    for (size_t i = 0; i < rq->n_tags; i++) {
        char field[32];
        snprintf(field, sizeof field, "tags[%zu]", i);
        if ((rc = check_text(field, rq->tags[i], 1, CMD_TAG_MAX, false, err)) != 0) return rc;
        for (size_t j = 0; j < i; j++)
            if (strcmp(rq->tags[i], rq->tags[j]) == 0)
                return todo_err_set(err, TODO_EINVAL, "tags[%zu]: duplicates tags[%zu] \"%s\"", i, j, rq->tags[i]);
    }
    out->title = rq->title;
    out->description = rq->description;
    out->category = rq->category;
    out->priority = rq->priority == TODO__V1__PRIORITY__PRIORITY_UNSPECIFIED ? TODO__V1__PRIORITY__PRIORITY_MEDIUM
                                                                              : (int)rq->priority;
    out->tags = rq->tags;
    out->n_tags = rq->n_tags;
    return TODO_OK;
}
