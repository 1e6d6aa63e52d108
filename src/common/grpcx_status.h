/*
 * grpcx_status: gRPC status codes for servers and clients alike: the one
 * place a todo_status becomes a gRPC code, and the codes' names. Clients
 * include this (with grpcx_client.h), not the server runtime's grpcx.h.
 */
#ifndef TODO_GRPCX_STATUS_H
#define TODO_GRPCX_STATUS_H

#include <grpc/status.h>

/* The gRPC code of a todo_status (todo_err.h). */
grpc_status_code grpcx_status_of(int todo_status);

/* The canonical name of a gRPC code ("INVALID_ARGUMENT"). */
const char *grpcx_code_name(grpc_status_code code);

#endif
