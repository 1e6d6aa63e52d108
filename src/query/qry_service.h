/*
 * qry_service: the handlers of todo.v1.TaskQueryService, over the read
 * schema only (the todo_query role can do nothing else, so this service runs
 * against a read replica as well).
 *
 * Each handler authenticates the caller; a task of another user is
 * indistinguishable from a missing one (NOT_FOUND). A request with a
 * consistency token is answered only once the caller's events up to that
 * token are projected: the handler waits (LISTEN read_progress, no polling)
 * until the deadline and otherwise answers UNAVAILABLE saying how far behind
 * the projection is.
 */
#ifndef TODO_QRY_SERVICE_H
#define TODO_QRY_SERVICE_H

#include "config.h"
#include "grpcx.h"
#include "qry_batch.h"
#include "qry_watch.h"

/* What the workers share: the settings and the batchers of GetTask and
 * ListTasks (first pages in the default order, no filter). */
typedef struct qry_app {
    const todo_config *cfg;
    qry_batch *gets, *lists; /* TODO_QUERY_BATCH reads per statement */
    qry_watch *watch;        /* the WatchUpdates streams */
} qry_app;

int qry_service_register(grpcx_server *s, todo_err *err);

/* grpcx_server_opts.authenticate for todo-query: the caller's bearer
 * token names the user (grpcx_call_user) before the request is decoded, or
 * the call is refused (UNAUTHENTICATED). */
int qry_authenticate(grpcx_call *c, todo_err *err);

/* grpcx thread hooks: app is the qry_app. */
void *qry_thread_init(void *app, int index);
void qry_thread_cleanup(void *state);

#endif
