/* cmd_relay: see cmd_relay.h. */
#include "cmd_relay.h"

#include <stdlib.h>
#include <time.h>

#include "cmd_outbox.h"
#include "cmd_store.h"
#include "log.h"
#include "outbox.h"

#define PURGE_EVERY_S 60         /* the active relay purges expired request ids this often */

struct cmd_relay {
    const todo_config *cfg;
    outbox_table table;
    outbox_opts opts;
    outbox *ob;
    time_t last_purge;
};

/* Housekeeping of the active relay: forget request ids past their TTL. */
static void leader_tick(PGconn *pg, void *ctx)
{
    cmd_relay *r = ctx;
    todo_err err;
    time_t now = time(NULL);
    if (now - r->last_purge >= PURGE_EVERY_S) {
        r->last_purge = now;
        long n = cmd_store_purge_requests(pg, r->cfg->request_ttl_s, &err);
        if (n < 0) log_warn("relay", "purging expired request ids failed", "error=\"%s\"", err.msg);
        else if (n > 0) log_info("relay", "purged expired request ids", "rows=%ld", n);
    }
}

cmd_relay *cmd_relay_start(const todo_config *cfg, todo_err *err)
{
    cmd_relay *r = calloc(1, sizeof *r);
    if (r == NULL) {
        todo_err_set(err, TODO_EINTERNAL, "out of memory");
        return NULL;
    }
    r->cfg = cfg;
    r->table = (outbox_table){
        .name = "relay",
        .table = "write.events",
        .lock_key = CMD_RELAY_LOCK_KEY,
        .channel = "todo_outbox",
        .select_sql = CMD_RELAY_SELECT_SQL,
        .done_sql = "update write.events set published_at = now() where position = any($1::bigint[])",
        .park_sql = "update write.events set parked_at = now(), parked_reason = $2"
                    " where position = $1::bigint and published_at is null",
        .status_sql = CMD_OUTBOX_BACKLOG_SQL(""),
        .stamp_position = true,
        .leader_tick = leader_tick,
        .ctx = r,
    };
    /* The pid names the instance in pg_stat_activity (todoctl outbox). */
    r->opts = (outbox_opts){.pg_url = cfg->pg_url, .brokers = cfg->kafka_brokers, .app_name = "todo-command-relay",
                            .batch = cfg->relay_batch, .poll_ms = cfg->relay_poll_ms,
                            .max_event_bytes = cfg->event_max_bytes};
    if ((r->ob = outbox_start(&r->table, &r->opts, err)) == NULL) {
        free(r);
        return NULL;
    }
    return r;
}

bool cmd_relay_kafka_ready(void *r)
{
    return outbox_kafka_ready(((cmd_relay *)r)->ob);
}

void cmd_relay_stop(cmd_relay *r)
{
    if (r == NULL) return;
    outbox_stop(r->ob);
    free(r);
}
