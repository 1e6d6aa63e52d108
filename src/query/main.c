/*
 * todo-query: the read side. Serves todo.v1.TaskQueryService over gRPC from
 * the read schema only. Settings come from the environment
 * (docs/OPERATIONS.md); SIGINT or SIGTERM stop it gracefully.
 */
#include <stdio.h>
#include <stdlib.h>

#include "auth.h"
#include "config.h"
#include "grpcx.h"
#include "log.h"
#include "metrics.h"
#include "pgx.h"
#include "probe.h"
#include "qry_service.h"
#include "svc.h"

int main(void)
{
    todo_config cfg;
    todo_err err;
    sigset_t sigs;

    if (config_load(&cfg, CONFIG_QUERY, NULL, NULL, &err) != 0) {
        fprintf(stderr, "todo-query: %s\n", err.msg);
        return 2;
    }
    log_set_level(cfg.log_level);
    if (pgx_start_check("query", cfg.pg_url, "", !cfg.local) != 0) return 1; /* least privilege */
    auth_keys *user_keys = NULL; /* TODO_JWT_PUBLIC_KEYS: immutable, shared by every call */
    if (cfg.jwt_public_keys[0] != '\0' && auth_keys_load(cfg.jwt_public_keys, &user_keys, &err) != 0) {
        fprintf(stderr, "todo-query: TODO_JWT_PUBLIC_KEYS: %s\n", err.msg);
        return 2;
    }
    cfg.jwt_keys = user_keys;
    if (cfg.jwt_secret_is_default)
        log_warn("query", "using the built-in development JWT secret (TODO_ENV=local)", NULL);
    else if (user_keys != NULL)
        log_info("query", "user tokens are verified with public keys", "keys=%zu", auth_keys_count(user_keys));
    qry_app app = {.cfg = &cfg, .gets = qry_batch_new(QRY_BATCH_GET, cfg.query_batch),
                   .lists = qry_batch_new(QRY_BATCH_LIST, cfg.query_batch)};
    if (app.gets == NULL || app.lists == NULL) {
        fprintf(stderr, "todo-query: out of memory\n");
        return 1;
    }
    svc_signals_block(&sigs); /* before any thread starts */
    /* GetTask lookups and first pages are answered by pump threads with
     * their own connections: the gRPC workers do not wait on PostgreSQL. */
    if (cfg.query_pumps > 0 && (qry_batch_pump(app.gets, cfg.pg_url, cfg.query_pumps, &err) != 0 ||
                                qry_batch_pump(app.lists, cfg.pg_url, cfg.query_pumps, &err) != 0)) {
        fprintf(stderr, "todo-query: %s\n", err.msg);
        return 1;
    }
    if ((app.watch = qry_watch_start(&cfg, &err)) == NULL) {
        fprintf(stderr, "todo-query: %s\n", err.msg);
        return 1;
    }
    metrics_server *metrics = metrics_start("todo-query", cfg.metrics_addr);

    grpcx_server_opts opts = {
        .threads = cfg.grpc_threads, .blocking_threads = cfg.query_read_threads,
        .max_message_bytes = cfg.max_message_bytes,
        .call_memory_bytes = cfg.call_memory_bytes, .authenticate = qry_authenticate,
        .thread_init = qry_thread_init, .thread_cleanup = qry_thread_cleanup, .app = &app,
        .component = "query",
        .tls = {cfg.grpc_tls_cert, cfg.grpc_tls_key, cfg.grpc_tls_client_ca},
        .max_streams = cfg.grpc_max_streams, .max_connection_idle_ms = cfg.grpc_max_connection_idle_ms,
        .max_connection_age_ms = cfg.grpc_max_connection_age_ms,
        .max_connection_age_grace_ms = cfg.grpc_max_connection_age_grace_ms, .keepalive_ms = cfg.grpc_keepalive_ms,
        .keepalive_timeout_ms = cfg.grpc_keepalive_timeout_ms, .memory_bytes = (long long)cfg.grpc_memory_mb << 20,
    };
    grpcx_server *srv = grpcx_server_new(&opts, &err);
    probe *health = NULL;
    if (srv == NULL || qry_service_register(srv, &err) != 0 ||
        (health = probe_start(srv, "query", cfg.pg_url, NULL, NULL)) == NULL ||
        grpcx_server_start(srv, cfg.query_addr, &err) != 0) {
        probe_stop(health);
        log_error("query", "cannot start the gRPC server", "error=\"%s\"", err.msg);
        grpcx_server_free(srv);
        qry_watch_stop(app.watch);
        metrics_server_stop(metrics);
        qry_batch_free(app.gets);
        qry_batch_free(app.lists);
        return 1;
    }
    int sig = svc_signals_wait(&sigs);
    log_info("query", "stopping", "signal=%d", sig);
    grpcx_server_shutdown(srv, cfg.shutdown_grace_ms); /* ends the WatchUpdates streams */
    qry_watch_stop(app.watch);
    probe_stop(health);
    grpcx_server_free(srv);
    int64_t statements[2], reads[2];
    qry_batch_stats(app.gets, &statements[0], &reads[0]);
    qry_batch_stats(app.lists, &statements[1], &reads[1]);
    log_info("query", "batched reads", "get_statements=%lld gets=%lld list_statements=%lld lists=%lld",
             (long long)statements[0], (long long)reads[0], (long long)statements[1], (long long)reads[1]);
    qry_batch_free(app.gets);
    qry_batch_free(app.lists);
    metrics_server_stop(metrics);
    auth_keys_free(user_keys);
    return 0;
}
