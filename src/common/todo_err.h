/*
 * todo_err: the project's error convention.
 *
 * A fallible function returns TODO_OK (0) or a negative todo_status that says
 * what kind of failure it was; the detail a person can act on goes into a
 * caller-provided todo_err. Nothing here prints or exits: the caller decides
 * where the error is logged or which gRPC status it becomes (grpcx_status_of
 * is the one place that maps statuses to gRPC codes).
 */
#ifndef TODO_ERR_H
#define TODO_ERR_H

#include <stddef.h>

typedef enum todo_status {
    TODO_OK = 0,
    TODO_EINVAL = -1,      /* the input is wrong: INVALID_ARGUMENT */
    TODO_ENOTFOUND = -2,   /* NOT_FOUND */
    TODO_ECONFLICT = -3,   /* concurrent change, version mismatch: ABORTED */
    TODO_EUNAVAIL = -4,    /* a dependency is down, retry later: UNAVAILABLE */
    TODO_EINTERNAL = -5,   /* a bug or an unexpected state: INTERNAL */
    TODO_EUNAUTH = -6,     /* no or bad credentials: UNAUTHENTICATED */
    TODO_EPRECOND = -7,    /* the state forbids it: FAILED_PRECONDITION */
    TODO_EEXISTS = -8,     /* ALREADY_EXISTS */
    TODO_EUNIMPL = -9,     /* UNIMPLEMENTED */
    TODO_EDEADLINE = -10,  /* DEADLINE_EXCEEDED */
    TODO_EDENIED = -11,    /* PERMISSION_DENIED */
    TODO_ETOOBIG = -12,    /* RESOURCE_EXHAUSTED */
    TODO_ELOCKED = -13,    /* a lock wait timed out (lock_timeout): ABORTED, or retried by the caller */
    TODO_ERANGE = -14      /* past what is kept or exists (a stream position): OUT_OF_RANGE */
} todo_status;

#define TODO_ERR_MSG_MAX 512

typedef struct todo_err {
    int code;                     /* a todo_status */
    char msg[TODO_ERR_MSG_MAX];   /* short factual message, no secrets */
} todo_err;

/* Records code and a printf-style message in err (which may be NULL) and
 * returns code, so that `return todo_err_set(err, TODO_EINVAL, ...)` reads
 * naturally. */
int todo_err_set(todo_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Clears err to TODO_OK with an empty message. */
void todo_err_clear(todo_err *err);

/* The status's name ("invalid argument", ...); never NULL. */
const char *todo_status_name(int code);

#endif
