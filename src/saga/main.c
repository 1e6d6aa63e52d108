/*
 * todo-saga: the task-completion saga, the reminder scheduler and the
 * notification dispatcher. The process and its thread roles: saga_proc.h.
 */
#include <curl/curl.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "config.h"
#include "event.h"
#include "kafkax.h"
#include "keystore.h"
#include "lock_keys.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "pgx.h"
#include "reg_local.h"
#include "saga_proc.h"
#include "saga_store.h"
#include "svc.h"

#define SAGA_OUTBOX_BATCH 200

/* saga.outbox for the outbox publisher. Its lock is also the one the
 * publisher of todo-saga before migration 0017 took per batch: an old and a
 * new instance never publish at once. */
static const outbox_table saga_outbox = {
    .name = "saga-outbox",
    .table = "saga.outbox",
    .lock_key = LOCK_SAGA_OUTBOX,
    .channel = "todo_saga_outbox",
    .select_sql = "select o.id, o.user_id, o.aggregate_id, o.envelope, o.event_type from saga.outbox o"
                  " where o.envelope is not null and o.parked_at is null"
                  " and not exists (select 1 from saga.outbox p where p.parked_at is not null"
                  "   and p.aggregate_id = o.aggregate_id and p.id < o.id)"
                  " order by o.id limit $1::int",
    .done_sql = "delete from saga.outbox where id = any($1::bigint[])",
    .park_sql = "update saga.outbox set parked_at = now(), parked_reason = $2 where id = $1::bigint",
    .status_sql = "select" SAGA_OUTBOX_BACKLOG_COLUMNS SAGA_OUTBOX_BACKLOG_FROM,
};

/* Rows an older todo-saga left in saga.outbox get their envelopes. */
static int upgrade_outbox(const todo_config *cfg)
{
    todo_err err;
    long n = 0;
    PGconn *pg = pgx_connect(cfg->pg_url, "todo-saga-upgrade", &err);
    int rc = pg != NULL ? saga_store_upgrade_outbox(pg, &n, &err) : err.code;
    pgx_close(pg);
    if (rc != 0) log_error("saga", "cannot encode the saga outbox's older rows", "error=\"%s\"", err.msg);
    else if (n > 0) log_info("saga", "encoded older saga outbox rows", "rows=%ld", n);
    return rc;
}

int main(void)
{
    static saga_proc p; /* large (the settings): not on the stack */
    todo_err err;
    sigset_t sigs;
    if (config_load(&p.cfg, CONFIG_SAGA, NULL, NULL, &err) != 0) {
        fprintf(stderr, "todo-saga: %s\n", err.msg);
        return 2;
    }
    if (kafkax_set_security(p.cfg.kafka_config, &err) != 0 || kafkax_set_instance(p.cfg.instance, &err) != 0) {
        fprintf(stderr, "todo-saga: %s\n", err.msg);
        return 2;
    }
    log_set_level(p.cfg.log_level);
    if (pgx_start_check("saga", p.cfg.pg_url, "saga,registry", !p.cfg.local) != 0) return 1; /* least privilege */
    const char *produced[64];
    size_t n_produced = event_types_of_producer("todo-saga", produced, 64);
    if (reg_register_at_startup(p.cfg.pg_url, "todo-saga", produced, n_produced, &err) != 0) {
        log_error("saga", "cannot register the event schemas", "error=\"%s\"", err.msg);
        return 1;
    }
    if ((p.resolver = reg_resolver_new()) == NULL) {
        log_error("saga", "cannot start", "error=\"out of memory\"");
        return 1;
    }
    /* Notification texts are sealed with the recipient's data key (seal.h). */
    seal_key master;
    if (seal_key_parse(p.cfg.master_key, &master, &err) != 0 || (p.keys = keystore_new(&master, 60)) == NULL) {
        log_error("saga", "cannot use TODO_MASTER_KEY", "error=\"%s\"", p.cfg.master_key[0] ? err.msg : "not set");
        reg_resolver_free(p.resolver);
        return 1;
    }
    OPENSSL_cleanse(&master, sizeof master);
    saga_store_set_keys(p.keys);
    if (upgrade_outbox(&p.cfg) != 0) {
        keystore_free(p.keys);
        return 1;
    }
    grpcx_channel *check = saga_proc_channel(&p); /* its TLS files are readable: said now, not by every worker */
    if (check == NULL) {
        keystore_free(p.keys);
        return 1;
    }
    grpcx_channel_free(check);
    svc_signals_block(&sigs);
    metrics_server *metrics = metrics_start("todo-saga", p.cfg.metrics_addr);
    outbox_opts oo = {.pg_url = p.cfg.pg_url, .brokers = p.cfg.kafka_brokers, .app_name = "todo-saga-outbox",
                      .batch = SAGA_OUTBOX_BATCH, .poll_ms = p.cfg.relay_poll_ms,
                      .max_event_bytes = p.cfg.event_max_bytes};
    outbox *ob = outbox_start(&saga_outbox, &oo, &err);
    if (ob == NULL) {
        log_error("saga", "cannot start", "error=\"%s\"", err.msg);
        reg_resolver_free(p.resolver);
        keystore_free(p.keys);
        metrics_server_stop(metrics);
        return 1;
    }
    log_info("saga", "starting", "instance=%s workers=%d lease_s=%d", p.cfg.saga_instance, p.cfg.saga_workers,
             p.cfg.saga_lease_s);
    curl_global_init(CURL_GLOBAL_DEFAULT); /* before any thread: not thread-safe */
    pthread_t th[5 + 64];
    saga_worker_arg workers[64];
    int n = 0;
    pthread_create(&th[n++], NULL, saga_starter_main, &p);
    pthread_create(&th[n++], NULL, saga_scheduler_main, &p);
    pthread_create(&th[n++], NULL, saga_dispatch_main, &p);
    pthread_create(&th[n++], NULL, saga_remind_main, &p);
    pthread_create(&th[n++], NULL, saga_release_main, &p);
    for (int i = 0; i < p.cfg.saga_workers && i < 64; i++) {
        workers[i] = (saga_worker_arg){.proc = &p, .n = i};
        pthread_create(&th[n++], NULL, saga_worker_main, &workers[i]);
    }
    while (!atomic_load(&p.stopping))
        if (svc_signals_pending(&sigs) != 0) atomic_store(&p.stopping, 1);
        else saga_proc_pause_ms(&p, 100);
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
    outbox_stop(ob); /* what is left is published by the next start */
    curl_global_cleanup();
    reg_resolver_free(p.resolver);
    keystore_free(p.keys);
    metrics_server_stop(metrics);
    log_info("saga", "stopped", "instance=%s", p.cfg.saga_instance);
    return 0;
}
