/*
 * probe: a server's readiness, reported in its Health/Check (grpcx). A
 * thread checks, every second, that PostgreSQL answers (`select 1` on a
 * connection of its own: the "postgresql" component, required: while it is
 * down the server answers NOT_SERVING) and, when given, that Kafka can take
 * events (the "kafka" component, not required: commands still succeed, the
 * outbox holds their events). Changes are logged.
 */
#ifndef TODO_PROBE_H
#define TODO_PROBE_H

#include <stdbool.h>

#include "grpcx.h"

typedef struct probe probe;

/* kafka_ready (may be NULL: no "kafka" component) is called with ctx from
 * the probe's thread. Checks once before it returns, so the first Health
 * answer is already true. NULL when the thread cannot start. */
probe *probe_start(grpcx_server *s, const char *component, const char *pg_url, bool (*kafka_ready)(void *ctx),
                   void *ctx);

/* Stops the thread and frees p; takes NULL. */
void probe_stop(probe *p);

#endif
