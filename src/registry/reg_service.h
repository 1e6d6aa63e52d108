/*
 * reg_service: todo.v1.SchemaRegistryService (proto/todo/v1/registry.proto),
 * the operations of `todoctl registry` over gRPC, on reg_store.
 *
 * Every call needs a valid bearer token; CheckSchema, RegisterSchema and
 * SetMode need a service token with scope registry:write (PERMISSION_DENIED
 * otherwise: a check costs as much as a registration), and take a
 * descriptor set of at most REG_MAX_SCHEMA_BYTES (RESOURCE_EXHAUSTED). Bad
 * input is INVALID_ARGUMENT naming the field; an unknown subject, version or
 * id is NOT_FOUND; a registration that breaks the subject's mode is
 * FAILED_PRECONDITION naming the rule, message and field (CheckSchema
 * answers the same violations in its reply instead).
 */
#ifndef TODO_REG_SERVICE_H
#define TODO_REG_SERVICE_H

#include <libpq-fe.h>

#include "grpcx.h"

/* The largest descriptor set CheckSchema and RegisterSchema take (the
 * project's whole API is ~20 KB). */
#define REG_MAX_SCHEMA_BYTES (256 * 1024)

/* The caller is the one the hosting server's grpcx_server_opts.authenticate
 * named (grpcx_call_user); without one every call is UNAUTHENTICATED. */
typedef struct reg_service_opts {
    PGconn *(*pg)(grpcx_call *call, todo_err *err);       /* the worker thread's connection */
} reg_service_opts;

/* Hosts the service on s; o is borrowed and must outlive the server (one
 * registry service per process). */
int reg_service_register(grpcx_server *s, const reg_service_opts *o, todo_err *err);

#endif
