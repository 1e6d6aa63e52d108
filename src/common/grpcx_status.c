/* grpcx_status: see grpcx_status.h. */
#include "grpcx_status.h"

#include "todo_err.h"

grpc_status_code grpcx_status_of(int st)
{
    switch (st) {
    case TODO_OK: return GRPC_STATUS_OK;
    case TODO_EINVAL: return GRPC_STATUS_INVALID_ARGUMENT;
    case TODO_ENOTFOUND: return GRPC_STATUS_NOT_FOUND;
    case TODO_ECONFLICT: return GRPC_STATUS_ABORTED;
    case TODO_EUNAVAIL: return GRPC_STATUS_UNAVAILABLE;
    case TODO_EUNAUTH: return GRPC_STATUS_UNAUTHENTICATED;
    case TODO_EPRECOND: return GRPC_STATUS_FAILED_PRECONDITION;
    case TODO_EEXISTS: return GRPC_STATUS_ALREADY_EXISTS;
    case TODO_EUNIMPL: return GRPC_STATUS_UNIMPLEMENTED;
    case TODO_EDEADLINE: return GRPC_STATUS_DEADLINE_EXCEEDED;
    case TODO_EDENIED: return GRPC_STATUS_PERMISSION_DENIED;
    case TODO_ETOOBIG: return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case TODO_ELOCKED: return GRPC_STATUS_ABORTED;
    case TODO_ERANGE: return GRPC_STATUS_OUT_OF_RANGE;
    default: return GRPC_STATUS_INTERNAL;
    }
}

const char *grpcx_code_name(grpc_status_code code)
{
    static const char *const names[] = {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
        "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
        "UNAUTHENTICATED"};
    if ((int)code < 0 || (size_t)code >= sizeof names / sizeof names[0]) return "UNKNOWN";
    return names[code];
}
