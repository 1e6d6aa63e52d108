/* cmd_relay: see cmd_relay.h. */
#include "cmd_relay.h"

#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"
#include "cmd_store.h"
#include "event.h"
#include "kafkax.h"
#include "log.h"
#include "pgx.h"

#define RELAY_LOCK_KEY "7428312" /* advisory lock: the one active relay */
#define PURGE_EVERY_S 60         /* the active relay purges expired request ids this often */
#define LAG_EVERY_S 10           /* ...and reports a backlog this often */

struct cmd_relay {
    const todo_config *cfg;
    pthread_t thread;
    int wake[2];           /* self-pipe: stop wakes the thread */
    atomic_int stop;
    PGconn *pg;
    bool leader;
    rd_kafka_t *rk;
    int *delivered;        /* per row of the batch: 0 pending, 1 ok, -1 failed */
    arena *arena;
    time_t last_purge, last_lag;
    char app_name[48];
};

/* Reports the backlog (rows not yet published, age of the oldest) while
 * there is one. */
static void report_lag(cmd_relay *r)
{
    todo_err err;
    cmd_outbox_status st;
    time_t now = time(NULL);
    if (now - r->last_lag < LAG_EVERY_S) return;
    r->last_lag = now;
    if (cmd_outbox_status_read(r->pg, &st, &err) == TODO_OK && st.unpublished > 0)
        log_warn("relay", "outbox backlog", "rows=%ld oldest_age_s=%.1f", st.unpublished, st.oldest_age_s);
}

/* Housekeeping of the active relay: forget request ids past their TTL. */
static void purge_requests(cmd_relay *r)
{
    todo_err err;
    time_t now = time(NULL);
    if (now - r->last_purge < PURGE_EVERY_S) return;
    r->last_purge = now;
    long n = cmd_store_purge_requests(r->pg, r->cfg->request_ttl_s, &err);
    if (n < 0) log_warn("relay", "purging expired request ids failed", "error=\"%s\"", err.msg);
    else if (n > 0) log_info("relay", "purged expired request ids", "rows=%ld", n);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    cmd_relay *r = opaque;
    intptr_t i = (intptr_t)msg->_private;
    r->delivered[i] = msg->err == RD_KAFKA_RESP_ERR_NO_ERROR ? 1 : -1;
    if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR)
        log_warn("relay", "delivery failed", "error=\"%s\"", rd_kafka_err2str(msg->err));
}

/* Waits up to ms for a notification or a stop; drains notifications. */
static void wait_for_work(cmd_relay *r, int ms)
{
    struct pollfd fds[2] = {{.fd = r->wake[0], .events = POLLIN}, {.fd = -1, .events = POLLIN}};
    if (r->pg != NULL && r->leader) fds[1].fd = PQsocket(r->pg);
    if (poll(fds, 2, ms) > 0 && fds[1].revents != 0) {
        PQconsumeInput(r->pg);
        PGnotify *n;
        while ((n = PQnotifies(r->pg)) != NULL) PQfreemem(n);
    }
}

static void drop_connection(cmd_relay *r)
{
    pgx_close(r->pg);
    r->pg = NULL;
    if (r->leader) log_warn("relay", "lost the database connection; no longer the active relay", NULL);
    r->leader = false;
}

/* Sends one batch; returns the number of rows marked published, or -1. */
static int publish_batch(cmd_relay *r, PGresult *rows)
{
    int n = PQntuples(rows), delivered = 0;
    todo_err err;

    arena_reset(r->arena);
    memset(r->delivered, 0, sizeof(int) * (size_t)r->cfg->relay_batch);
    for (int i = 0; i < n; i++) {
        const char *pos = PQgetvalue(rows, i, 0);
        const char *type = PQgetvalue(rows, i, 1);
        const char *user = PQgetvalue(rows, i, 2);
        size_t len = 0;
        uint8_t *hex = PQunescapeBytea((const unsigned char *)PQgetvalue(rows, i, 3), &len);
        uint8_t *bytes = arena_alloc(r->arena, len + 1);
        if (hex != NULL) memcpy(bytes, hex, len);
        PQfreemem(hex);
        const char *topic = event_topic(type);
        Todo__V1__EventEnvelope *env = NULL;
        rd_kafka_headers_t *h = NULL;
        void *value = (void *)bytes;

        if (topic == NULL) topic = "tasks.events.v1";
        /* Stamp the global position into the envelope and the headers. A row
         * that does not decode (never expected) goes out as stored, without
         * headers: the consumers dead-letter it, nothing is held back. */
        if (event_decode(bytes, len, r->arena, &env, &err) == TODO_OK) {
            env->position = strtoll(pos, NULL, 10);
            len = todo__v1__event_envelope__get_packed_size(env);
            value = arena_alloc(r->arena, len + 1);
            todo__v1__event_envelope__pack(env, value);
            h = event_kafka_headers(env);
        } else {
            log_error("relay", "stored event does not decode; publishing it as stored", "position=%s error=\"%s\"",
                      pos, err.msg);
            h = rd_kafka_headers_new(1);
            rd_kafka_header_add(h, "todo_position", -1, pos, -1);
        }
        for (;;) {
            rd_kafka_resp_err_t e = rd_kafka_producev(
                r->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(user, strlen(user)), RD_KAFKA_V_VALUE(value, len),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE((void *)(intptr_t)i),
                RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
            if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                rd_kafka_poll(r->rk, 100);
                continue;
            }
            if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
                rd_kafka_headers_destroy(h);
                r->delivered[i] = -1;
                log_error("relay", "produce refused", "position=%s error=\"%s\"", pos, rd_kafka_err2str(e));
            }
            break;
        }
    }
    /* Waits for every delivery report (message.timeout.ms bounds it). */
    while (rd_kafka_outq_len(r->rk) > 0 && !atomic_load(&r->stop)) rd_kafka_flush(r->rk, 500);

    while (delivered < n && r->delivered[delivered] == 1) delivered++;
    if (delivered == 0) return 0;

    /* Mark the delivered prefix: positions as a bigint[] literal. */
    size_t cap = (size_t)delivered * 21 + 3, off = 0;
    char *ids = arena_alloc(r->arena, cap);
    ids[off++] = '{';
    for (int i = 0; i < delivered; i++)
        off += (size_t)snprintf(ids + off, cap - off, "%s%s", i ? "," : "", PQgetvalue(rows, i, 0));
    ids[off++] = '}';
    ids[off] = '\0';
    const char *params[1] = {ids};
    if (pgx_cmd(r->pg, "update write.events set published_at = now() where position = any($1::bigint[])", 1,
                params, &err) != 0) {
        log_error("relay", "could not mark rows published; they will be sent again", "error=\"%s\"", err.msg);
        return -1;
    }
    log_debug("relay", "published", "rows=%d first=%s last=%s", delivered, PQgetvalue(rows, 0, 0),
              PQgetvalue(rows, delivered - 1, 0));
    return delivered;
}

static void *relay_main(void *arg)
{
    cmd_relay *r = arg;
    todo_err err;
    char limit[16];
    snprintf(limit, sizeof limit, "%d", r->cfg->relay_batch);
    const char *params[1] = {limit};

    while (!atomic_load(&r->stop)) {
        if (r->pg == NULL || PQstatus(r->pg) != CONNECTION_OK) {
            if (r->pg != NULL) drop_connection(r);
            if (pgx_ensure(&r->pg, r->cfg->pg_url, r->app_name, &err) != 0) {
                log_warn("relay", "database unreachable; retrying", "error=\"%s\"", err.msg);
                wait_for_work(r, 1000);
                continue;
            }
        }
        if (!r->leader) {
            PGresult *res = pgx_exec(r->pg, "select pg_try_advisory_lock(" RELAY_LOCK_KEY ")", 0, NULL, &err);
            if (res == NULL) {
                drop_connection(r);
                continue;
            }
            r->leader = PQgetvalue(res, 0, 0)[0] == 't';
            PQclear(res);
            if (!r->leader) {
                wait_for_work(r, r->cfg->relay_poll_ms);
                continue;
            }
            if (pgx_cmd(r->pg, "listen todo_outbox", 0, NULL, &err) != 0) {
                drop_connection(r);
                continue;
            }
            log_info("relay", "active: this instance publishes the outbox", "application_name=%s", r->app_name);
        }
        purge_requests(r);
        report_lag(r);
        PGresult *rows = pgx_exec(r->pg,
                                  "select position, event_type, user_id, envelope from write.events"
                                  " where published_at is null order by position limit $1::int",
                                  1, params, &err);
        if (rows == NULL) {
            log_warn("relay", "reading the outbox failed", "error=\"%s\"", err.msg);
            drop_connection(r);
            continue;
        }
        int n = PQntuples(rows), done = n > 0 ? publish_batch(r, rows) : 0;
        PQclear(rows);
        if (done < 0 || (n > 0 && done < n)) {
            wait_for_work(r, 1000); /* Kafka trouble: back off, then retry the rest */
        } else if (n < r->cfg->relay_batch) {
            wait_for_work(r, r->cfg->relay_poll_ms);
        }
    }
    /* On this thread: its prepared statements are remembered per thread. */
    pgx_close(r->pg);
    r->pg = NULL;
    return NULL;
}

int cmd_outbox_status_read(PGconn *pg, cmd_outbox_status *st, todo_err *err)
{
    PGresult *r = pgx_exec(pg,
                           "select count(*), coalesce(extract(epoch from now() - min(created_at)), 0)::float8,"
                           " coalesce((select max(position) from write.events), 0),"
                           " coalesce((select string_agg(a.application_name || ' (backend ' || a.pid || ')', ', ')"
                           "    from pg_locks l join pg_stat_activity a on a.pid = l.pid"
                           "    where l.locktype = 'advisory' and l.objid = " RELAY_LOCK_KEY " and l.granted), '')"
                           " from write.events where published_at is null",
                           0, NULL, err);
    if (r == NULL) return err->code;
    st->unpublished = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    st->oldest_age_s = strtod(PQgetvalue(r, 0, 1), NULL);
    st->last_position = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
    snprintf(st->active, sizeof st->active, "%s", PQgetvalue(r, 0, 3));
    PQclear(r);
    return TODO_OK;
}

cmd_relay *cmd_relay_start(const todo_config *cfg, todo_err *err)
{
    cmd_relay *r = calloc(1, sizeof *r);
    if (r == NULL) {
        todo_err_set(err, TODO_EINTERNAL, "out of memory");
        return NULL;
    }
    r->cfg = cfg;
    r->wake[0] = r->wake[1] = -1;
    /* The pid names the instance in pg_stat_activity (todoctl outbox). */
    snprintf(r->app_name, sizeof r->app_name, "todo-command-relay-%d", (int)getpid());
    r->delivered = calloc((size_t)cfg->relay_batch, sizeof(int));
    r->arena = arena_new();
    if (r->delivered == NULL || r->arena == NULL || pipe(r->wake) != 0) {
        todo_err_set(err, TODO_EINTERNAL, "out of resources starting the relay");
        cmd_relay_stop(r);
        return NULL;
    }
    r->rk = kafkax_producer_new(cfg->kafka_brokers, "todo-command-relay", on_delivery, r, err);
    if (r->rk == NULL) {
        cmd_relay_stop(r);
        return NULL;
    }
    if (pthread_create(&r->thread, NULL, relay_main, r) != 0) {
        rd_kafka_destroy(r->rk);
        r->rk = NULL;
        todo_err_set(err, TODO_EINTERNAL, "cannot start the relay thread");
        cmd_relay_stop(r);
        return NULL;
    }
    return r;
}

void cmd_relay_stop(cmd_relay *r)
{
    if (r == NULL) return;
    if (r->rk != NULL) {
        atomic_store(&r->stop, 1);
        if (write(r->wake[1], "x", 1) < 0) { /* the thread polls every second anyway */
        }
        pthread_join(r->thread, NULL);
        rd_kafka_flush(r->rk, 5000);
        rd_kafka_destroy(r->rk);
    }
    pgx_close(r->pg);
    if (r->wake[0] >= 0) close(r->wake[0]);
    if (r->wake[1] >= 0) close(r->wake[1]);
    arena_free(r->arena);
    free(r->delivered);
    free(r);
}
