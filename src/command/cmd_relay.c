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
#include "cmd_outbox.h"
#include "cmd_store.h"
#include "event.h"
#include "kafkax.h"
#include "log.h"
#include "pgx.h"

#define PURGE_EVERY_S 60         /* the active relay purges expired request ids this often */
#define LAG_EVERY_S 10           /* ...and reports a backlog this often */

/* What became of a row of the batch. */
enum { ROW_HELD = 0, ROW_SENT = 2, ROW_OK = 1, ROW_FAILED = -1, ROW_REFUSED = -2 };
/* ROW_HELD: not sent (an earlier row of its aggregate or user failed in
 * this batch); ROW_SENT: waiting for its delivery report; ROW_OK: Kafka
 * has it; ROW_FAILED: a failure worth retrying; ROW_REFUSED: Kafka (or our
 * size limit) refuses it for good: it is parked. */

struct cmd_relay {
    const todo_config *cfg;
    pthread_t thread;
    int wake[2];           /* self-pipe: stop wakes the thread */
    atomic_int stop;
    PGconn *pg;
    bool leader;
    rd_kafka_t *rk;
    int *delivered;        /* per row of the batch: see the ROW_ values */
    rd_kafka_resp_err_t *errors; /* per row: why it failed */
    bool retry;            /* the last batch had rows worth sending again */
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
    if (cmd_outbox_status_read(r->pg, &st, &err) == TODO_OK && (st.unpublished > 0 || st.parked > 0))
        log_warn("relay", "outbox backlog", "rows=%ld oldest_age_s=%.1f parked=%ld waiting_behind_parked=%ld",
                 st.unpublished, st.oldest_age_s, st.parked, st.held);
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
    r->errors[i] = msg->err;
    r->delivered[i] = msg->err == RD_KAFKA_RESP_ERR_NO_ERROR ? ROW_OK
                      : kafkax_err_permanent(msg->err) ? ROW_REFUSED
                                                       : ROW_FAILED;
    if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR)
        log_warn("relay", "delivery failed", "error=\"%s\"", rd_kafka_err2str(msg->err));
}

/* Takes the notifications libpq holds; returns how many there were. */
static int drain_notifies(PGconn *pg)
{
    int n = 0;
    PGnotify *note;
    while ((note = PQnotifies(pg)) != NULL) {
        PQfreemem(note);
        n++;
    }
    return n;
}

/* Waits up to ms for a notification or a stop; drains notifications. A
 * NOTIFY that arrived while the previous statement ran was read by libpq
 * with that statement's answer: the socket stays quiet, so it is taken
 * first (waiting on the socket alone lost that wake-up until the next
 * poll interval). */
static void wait_for_work(cmd_relay *r, int ms)
{
    struct pollfd fds[2] = {{.fd = r->wake[0], .events = POLLIN}, {.fd = -1, .events = POLLIN}};
    if (r->pg != NULL && r->leader) {
        PQconsumeInput(r->pg);
        if (drain_notifies(r->pg) > 0) return;
        fds[1].fd = PQsocket(r->pg);
    }
    if (poll(fds, 2, ms) > 0 && fds[1].revents != 0) {
        PQconsumeInput(r->pg);
        drain_notifies(r->pg);
    }
}

static void drop_connection(cmd_relay *r)
{
    pgx_close(r->pg);
    r->pg = NULL;
    if (r->leader) log_warn("relay", "lost the database connection; no longer the active relay", NULL);
    r->leader = false;
}

/* True when row i of rows shares column col with a row before it whose
 * state is one of the failed ones (a linear scan: failures are rare). */
static bool behind_failure(cmd_relay *r, PGresult *rows, int i, int col)
{
    for (int k = 0; k < i; k++)
        if ((r->delivered[k] == ROW_FAILED || r->delivered[k] == ROW_REFUSED) &&
            strcmp(PQgetvalue(rows, k, col), PQgetvalue(rows, i, col)) == 0)
            return true;
    return false;
}

/* Parks row i: set aside with its reason; the aggregate's later events
 * wait behind it (see migrations/0015_outbox_parking.sql). */
static int park(cmd_relay *r, PGresult *rows, int i, size_t len)
{
    todo_err err;
    const char *pos = PQgetvalue(rows, i, 0);
    char *reason = r->errors[i] == RD_KAFKA_RESP_ERR_NO_ERROR
                       ? arena_printf(r->arena, "the event is %zu bytes, over TODO_EVENT_MAX_BYTES (%d)", len,
                                      r->cfg->event_max_bytes)
                       : arena_printf(r->arena, "Kafka refused it: %s (%zu bytes)", rd_kafka_err2str(r->errors[i]), len);
    const char *params[2] = {pos, reason};
    log_error("relay", "event parked: it cannot be published; later events of its aggregate wait",
              "position=%s type=%s aggregate=%s reason=\"%s\"", pos, PQgetvalue(rows, i, 1), PQgetvalue(rows, i, 4),
              reason);
    return pgx_cmd(r->pg,
                   "update write.events set parked_at = now(), parked_reason = $2"
                   " where position = $1::bigint and published_at is null",
                   2, params, &err) == 0
               ? 0
               : -1;
}

/* Sends one batch; returns the number of rows done with (published or
 * parked), or -1 when the database failed us. Every row Kafka acknowledged
 * is marked, whatever happened to the rows around it: a row sent again is
 * a duplicate on the topic. A row that fails holds back the later rows of
 * its user in this batch (per-user order); a row refused for good is
 * parked and holds back its aggregate's later rows until an operator
 * retries or drops it. */
static int publish_batch(cmd_relay *r, PGresult *rows)
{
    int n = PQntuples(rows), done = 0;
    todo_err err;

    r->retry = false;
    arena_reset(r->arena);
    memset(r->delivered, 0, sizeof(int) * (size_t)r->cfg->relay_batch);
    size_t *sizes = arena_calloc(r->arena, sizeof(size_t) * (size_t)n + 1);
    for (int i = 0; i < n; i++) {
        r->errors[i] = RD_KAFKA_RESP_ERR_NO_ERROR;
        if (behind_failure(r, rows, i, 2) || behind_failure(r, rows, i, 4)) continue; /* ROW_HELD */
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
        } else {
            log_error("relay", "stored event does not decode; publishing it as stored", "position=%s error=\"%s\"",
                      pos, err.msg);
        }
        sizes[i] = len;
        if (len > (size_t)r->cfg->event_max_bytes) { /* commands refuse these; this one came another way */
            r->delivered[i] = ROW_REFUSED;
            continue;
        }
        if (env != NULL) {
            h = event_kafka_headers(env);
        } else {
            h = rd_kafka_headers_new(1);
            rd_kafka_header_add(h, "todo_position", -1, pos, -1);
        }
        r->delivered[i] = ROW_SENT;
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
                r->errors[i] = e;
                r->delivered[i] = kafkax_err_permanent(e) ? ROW_REFUSED : ROW_FAILED;
                log_error("relay", "produce refused", "position=%s error=\"%s\"", pos, rd_kafka_err2str(e));
            }
            break;
        }
    }
    /* Waits for every delivery report (message.timeout.ms bounds it). */
    while (rd_kafka_outq_len(r->rk) > 0 && !atomic_load(&r->stop)) rd_kafka_flush(r->rk, 500);

    /* Mark what Kafka has first (whatever happens next, nothing it has is
     * sent again), then park what it refused: positions as a bigint[]
     * literal. */
    size_t cap = (size_t)n * 21 + 3, off = 0;
    char *ids = arena_alloc(r->arena, cap);
    int marked = 0;
    ids[off++] = '{';
    for (int i = 0; i < n; i++)
        if (r->delivered[i] == ROW_OK)
            off += (size_t)snprintf(ids + off, cap - off, "%s%s", marked++ ? "," : "", PQgetvalue(rows, i, 0));
    ids[off++] = '}';
    ids[off] = '\0';
    const char *params[1] = {ids};
    if (marked > 0 && pgx_cmd(r->pg, "update write.events set published_at = now() where position = any($1::bigint[])",
                              1, params, &err) != 0) {
        log_error("relay", "could not mark rows published; they will be sent again", "error=\"%s\"", err.msg);
        return -1;
    }
    if (marked > 0) log_debug("relay", "published", "rows=%d first=%s", marked, PQgetvalue(rows, 0, 0));
    for (int i = 0; i < n; i++) {
        r->retry |= r->delivered[i] == ROW_FAILED || r->delivered[i] == ROW_SENT; /* SENT: stopped while waiting */
        if (r->delivered[i] != ROW_REFUSED) continue;
        if (park(r, rows, i, sizes[i]) != 0) return -1;
        done++;
    }
    return done + marked;
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
            PGresult *res = pgx_exec(r->pg, "select pg_try_advisory_lock(" CMD_RELAY_LOCK_KEY ")", 0, NULL, &err);
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
        /* Parked rows and the rows of their aggregates after them wait for
         * an operator (events_parked keeps the check cheap). */
        PGresult *rows = pgx_exec(r->pg,
                                  "select e.position, e.event_type, e.user_id, e.envelope, e.aggregate_id"
                                  " from write.events e where e.published_at is null and e.parked_at is null"
                                  " and not exists (select 1 from write.events p where p.parked_at is not null"
                                  "   and p.published_at is null and p.aggregate_id = e.aggregate_id"
                                  "   and p.position < e.position)"
                                  " order by e.position limit $1::int",
                                  1, params, &err);
        if (rows == NULL) {
            log_warn("relay", "reading the outbox failed", "error=\"%s\"", err.msg);
            drop_connection(r);
            continue;
        }
        int n = PQntuples(rows), done = n > 0 ? publish_batch(r, rows) : 0;
        PQclear(rows);
        if (done < 0 || r->retry) {
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
    r->errors = calloc((size_t)cfg->relay_batch, sizeof *r->errors);
    r->arena = arena_new();
    if (r->delivered == NULL || r->errors == NULL || r->arena == NULL || pipe(r->wake) != 0) {
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
    free(r->errors);
    free(r);
}
