/*
 * cmd_validate: the rules a command's fields must meet, checked before any
 * work. Each failure is TODO_EINVAL with a message that names the field and
 * the rule ("title: must be 1 to 255 characters, got 0"). Pure functions,
 * thread-safe; no database, no clock except where the rule says.
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

/* A CreateTask request that passed validation, normalized: */
typedef struct cmd_new_task {
    const char *title;
    const char *description;
    const char *category;
    int priority;            /* 1..4; PRIORITY_UNSPECIFIED became MEDIUM */
    bool has_due;
    int64_t due_us;          /* microseconds since the epoch when has_due */
    char *const *tags;       /* borrowed from the request */
    size_t n_tags;
} cmd_new_task;

/* Checks rq (borrowed; out points into it). */
int cmd_validate_create(const Todo__V1__CreateTaskRequest *rq, cmd_new_task *out, todo_err *err);

/* Checks a timestamp field: seconds within years 1..9999, nanos 0..999999999.
 * field names it in the message. */
int cmd_validate_timestamp(const char *field, int64_t seconds, int32_t nanos, todo_err *err);

/* Checks a client request id: empty, or 1..128 printable ASCII characters. */
int cmd_validate_request_id(const char *request_id, todo_err *err);

#endif
