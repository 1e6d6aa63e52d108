/*
 * todo-command: the write side. Serves todo.v1.TaskCommandService (and the
 * schema registry's todo.v1.SchemaRegistryService) over gRPC,
 * runs the outbox relay and writes the audit trail. Settings come from the environment
 * (docs/OPERATIONS.md); SIGINT or SIGTERM stop it gracefully.
 */
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

#include "cmd_group.h"
#include "cmd_relay.h"
#include "cmd_service.h"
#include "auth.h"
#include "config.h"
#include "event.h"
#include "grpcx.h"
#include "kafkax.h"
#include "keystore.h"
#include "log.h"
#include "metrics.h"
#include "pgx.h"
#include "probe.h"
#include "reg_local.h"
#include "reg_service.h"
#include "svc.h"

/* How long a user's data key (or its erasure) is cached (keystore.h). */
#define KEY_CACHE_S 60

static void stop_groups(cmd_app *app)
{
    int64_t batches = 0, saves = 0, solo = 0;
    for (int i = 0; i < app->n_groups; i++) {
        int64_t b, n, s;
        cmd_group_stats(app->groups[i], &b, &n, &s);
        batches += b;
        saves += n;
        solo += s;
        cmd_group_free(app->groups[i]);
    }
    if (app->n_groups > 0)
        log_info("command", "group commit", "batches=%lld saves=%lld saved_alone_over_a_lock=%lld", (long long)batches,
                 (long long)saves, (long long)solo);
    app->n_groups = 0;
}

int main(void)
{
    todo_config cfg;
    todo_err err;
    sigset_t sigs;

    if (config_load(&cfg, CONFIG_COMMAND, NULL, NULL, &err) != 0) {
        fprintf(stderr, "todo-command: %s\n", err.msg);
        return 2;
    }
    if (kafkax_set_security(cfg.kafka_config, &err) != 0) {
        fprintf(stderr, "todo-command: %s\n", err.msg);
        return 2;
    }
    log_set_level(cfg.log_level);
    if (pgx_start_check("command", cfg.pg_url, "write,registry,keys", !cfg.local) != 0) return 1; /* least privilege */
    auth_keys *user_keys = NULL; /* TODO_JWT_PUBLIC_KEYS: immutable, shared by every call */
    if (cfg.jwt_public_keys[0] != '\0' && auth_keys_load(cfg.jwt_public_keys, &user_keys, &err) != 0) {
        fprintf(stderr, "todo-command: TODO_JWT_PUBLIC_KEYS: %s\n", err.msg);
        return 2;
    }
    cfg.jwt_keys = user_keys;
    if (cfg.jwt_secret_is_default)
        log_warn("command", "using the built-in development JWT secret (TODO_ENV=local)", NULL);
    else if (user_keys != NULL)
        log_info("command", "user tokens are verified with public keys", "keys=%zu", auth_keys_count(user_keys));
    svc_signals_block(&sigs); /* before any thread starts */

    /* The event types this service writes (the catalogue's, event.c): their
     * schemas are registered (or found registered) before it serves, and it
     * does not start when the registry refuses one. */
    const char *produced[64];
    size_t n_produced = event_types_of_producer("todo-command", produced, 64);
    if (reg_register_at_startup(cfg.pg_url, "todo-command", produced, n_produced, &err) != 0) {
        log_error("command", "cannot register the event schemas", "error=\"%s\"", err.msg);
        return 1;
    }
    metrics_server *metrics = metrics_start("todo-command", cfg.metrics_addr);
    cmd_app app = {.cfg = &cfg};
    seal_key master;
    if (seal_key_parse(cfg.master_key, &master, &err) != 0 || (app.keys = keystore_new(&master, KEY_CACHE_S)) == NULL) {
        log_error("command", "cannot use TODO_MASTER_KEY", "error=\"%s\"", cfg.master_key[0] ? err.msg : "not set");
        return 1;
    }
    OPENSSL_cleanse(&master, sizeof master);
    cmd_group *groups[16];
    for (int i = 0; i < cfg.group_committers; i++) {
        if ((groups[i] = cmd_group_new(cfg.group_commit_max, cfg.group_lock_timeout_ms)) == NULL) {
            log_error("command", "cannot start group commit", "error=\"out of memory\"");
            return 1;
        }
        app.n_groups++;
    }
    app.groups = groups;
    if ((app.audit = audit_new(cfg.kafka_brokers, "todo-command", &err)) == NULL) {
        log_error("command", "cannot start the audit producer", "error=\"%s\"", err.msg);
        keystore_free(app.keys);
        return 1;
    }
    cmd_relay *relay = cmd_relay_start(&cfg, &err);
    if (relay == NULL) {
        log_error("command", "cannot start the outbox relay", "error=\"%s\"", err.msg);
        audit_free(app.audit, 0);
        keystore_free(app.keys);
        return 1;
    }
    grpcx_server_opts opts = {
        .threads = cfg.grpc_threads, .max_message_bytes = cfg.max_message_bytes,
        .call_memory_bytes = cfg.call_memory_bytes, .authenticate = cmd_authenticate,
        .thread_init = cmd_thread_init, .thread_cleanup = cmd_thread_cleanup, .app = &app,
        .component = "command",
        .tls = {cfg.grpc_tls_cert, cfg.grpc_tls_key, cfg.grpc_tls_client_ca},
        .max_streams = cfg.grpc_max_streams, .max_connection_idle_ms = cfg.grpc_max_connection_idle_ms,
        .max_connection_age_ms = cfg.grpc_max_connection_age_ms,
        .max_connection_age_grace_ms = cfg.grpc_max_connection_age_grace_ms, .keepalive_ms = cfg.grpc_keepalive_ms,
        .keepalive_timeout_ms = cfg.grpc_keepalive_timeout_ms, .memory_bytes = (long long)cfg.grpc_memory_mb << 20,
    };
    grpcx_server *srv = grpcx_server_new(&opts, &err);
    reg_service_opts registry = {.pg = cmd_thread_pg};
    probe *health = NULL;
    if (srv == NULL || cmd_service_register(srv, &err) != 0 || reg_service_register(srv, &registry, &err) != 0 ||
        (health = probe_start(srv, "command", cfg.pg_url, cmd_relay_kafka_ready, relay)) == NULL ||
        grpcx_server_start(srv, cfg.command_addr, &err) != 0) {
        probe_stop(health);
        log_error("command", "cannot start the gRPC server", "error=\"%s\"", err.msg);
        grpcx_server_free(srv);
        stop_groups(&app);
        cmd_relay_stop(relay);
        audit_free(app.audit, 1000);
        keystore_free(app.keys);
        metrics_server_stop(metrics);
        return 1;
    }
    int sig = svc_signals_wait(&sigs);
    log_info("command", "stopping", "signal=%d", sig);
    grpcx_server_shutdown(srv, cfg.shutdown_grace_ms);
    probe_stop(health);
    stop_groups(&app);
    cmd_relay_stop(relay);
    grpcx_server_free(srv);
    audit_free(app.audit, 5000);
    keystore_free(app.keys);
    metrics_server_stop(metrics);
    auth_keys_free(user_keys);
    return 0;
}
