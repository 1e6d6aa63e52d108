/*
 * cmd_service: the handlers of todo.v1.TaskCommandService.
 *
 * Each handler authenticates the caller (the user id comes from the bearer
 * token only), validates the request (cmd_validate), and writes the state
 * change and its event (the outbox row) in one transaction, then answers with
 * the new version and a consistency token. Handlers run on the gRPC worker
 * threads, each with its own PostgreSQL connection (cmd_thread).
 */
#ifndef TODO_CMD_SERVICE_H
#define TODO_CMD_SERVICE_H

#include "audit.h"
#include "config.h"
#include <libpq-fe.h>

#include "grpcx.h"

/* What the handlers share; borrowed, it must outlive the server. */
typedef struct cmd_app {
    const todo_config *cfg;
    audit_log *audit;      /* every command, accepted or refused, is audited here */
    struct cmd_group **groups; /* group commit (cmd_group.h): n_groups committers, worker i uses i % n_groups */
    int n_groups;              /* 0: every save on the worker's own connection */
    struct keystore *keys;     /* the users' data keys (keystore.h), sealing their events' personal fields */
} cmd_app;

/* Hosts TaskCommandService on s. */
int cmd_service_register(grpcx_server *s, todo_err *err);

/* grpcx thread hooks: app is the cmd_app. */
void *cmd_thread_init(void *app, int index);
void cmd_thread_cleanup(void *state);

/* The calling worker thread's database connection (connected on first use),
 * or NULL with err set: for services hosted beside this one. */
PGconn *cmd_thread_pg(grpcx_call *c, todo_err *err);

/* grpcx_server_opts.authenticate for todo-command: the caller's bearer
 * token names the user (grpcx_call_user), or the call is refused
 * (UNAUTHENTICATED) and audited as such, before its request is decoded. */
int cmd_authenticate(grpcx_call *c, todo_err *err);

#endif
