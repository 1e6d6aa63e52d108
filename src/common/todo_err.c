/* todo_err: see todo_err.h. */
#include "todo_err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int todo_err_set(todo_err *err, int code, const char *fmt, ...)
{
    if (err != NULL) {
        /* Formatted aside first: a caller may wrap the message it already
         * holds ("...: %s", err->msg). */
        char msg[sizeof err->msg];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        memcpy(err->msg, msg, sizeof msg);
        err->code = code;
    }
    return code;
}

void todo_err_clear(todo_err *err)
{
    if (err != NULL) {
        err->code = TODO_OK;
        err->msg[0] = '\0';
    }
}

const char *todo_status_name(int code)
{
    switch (code) {
    case TODO_OK: return "ok";
    case TODO_EINVAL: return "invalid argument";
    case TODO_ENOTFOUND: return "not found";
    case TODO_ECONFLICT: return "conflict";
    case TODO_EUNAVAIL: return "unavailable";
    case TODO_EINTERNAL: return "internal error";
    case TODO_EUNAUTH: return "unauthenticated";
    case TODO_EPRECOND: return "failed precondition";
    case TODO_EEXISTS: return "already exists";
    case TODO_EUNIMPL: return "unimplemented";
    case TODO_EDEADLINE: return "deadline exceeded";
    case TODO_EDENIED: return "permission denied";
    case TODO_ETOOBIG: return "resource exhausted";
    case TODO_ELOCKED: return "lock wait timed out";
    case TODO_ERANGE: return "out of range";
    default: return "unknown error";
    }
}
