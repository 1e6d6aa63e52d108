/* qry_watch: see qry_watch.h. */
#include "qry_watch.h"

#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"
#include "auth.h"
#include "event.h"
#include "log.h"
#include "metrics.h"
#include "pgx.h"
#include "qry_page.h"
#include "qry_rows.h"
#include "todo/v1/query.pb-c.h"

#define STANDBY_POLL_MS 250

typedef struct sub {
    grpcx_server_stream *st;
    char user[AUTH_USER_MAX];
    int64_t pos;        /* the last position queued */
    bool hello;         /* the first keep-alive is due */
    bool dirty;         /* the feed may hold more for it */
    double last_sent;   /* when a message was last queued (monotonic s) */
    double full_since;  /* since when it is behind with a full buffer (0: not) */
} sub;

struct qry_watch {
    const todo_config *cfg;
    pthread_t thread;
    sub **subs;         /* the hub's own: only its thread touches them */
    int n, cap;
    pthread_mutex_t mu; /* the streams handed over and not yet taken, and the count of all */
    sub **adds;
    int n_adds, cap_adds, total;
    int efd;            /* wakes the hub: a stream added, a message sent, a stream over, stop */
    atomic_bool stop;
    PGconn *pg;
    bool primary;   /* pg is a primary's: notifications can be listened to */
    bool listening; /* LISTENing to `feed`: while there are streams */
    arena *a;
    metric_series *open, *sent, *listens;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void kick(void *ctx)
{
    qry_watch *w = ctx;
    uint64_t one = 1;
    if (write(w->efd, &one, sizeof one) < 0) { /* the counter is full: the hub wakes anyway */
    }
}

/* Queues a keep-alive at s's position. */
static int send_keep_alive(qry_watch *w, sub *s)
{
    Todo__V1__KeepAlive ka = TODO__V1__KEEP_ALIVE__INIT;
    Todo__V1__Update u = TODO__V1__UPDATE__INIT;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ka.server_time = event_timestamp(w->a, (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
    u.position = s->pos;
    u.item_case = TODO__V1__UPDATE__ITEM_KEEP_ALIVE;
    u.keep_alive = &ka;
    int rc = grpcx_server_stream_send(s->st, &u.base);
    if (rc == TODO_OK) s->last_sent = now_s();
    return rc;
}

/* "{id,id,...}" of the rows of r (entity id in column 2) of kind. */
static const char *ids_of(arena *a, const PGresult *r, const char *kind)
{
    size_t cap = (size_t)PQntuples(r) * 38 + 3, len = 0;
    char *out = arena_alloc(a, cap);
    out[len++] = '{';
    for (int i = 0; i < PQntuples(r); i++) {
        if (strcmp(PQgetvalue(r, i, 1), kind) != 0) continue;
        if (len > 1) out[len++] = ',';
        memcpy(out + len, PQgetvalue(r, i, 2), 36);
        len += 36;
    }
    out[len++] = '}';
    out[len] = '\0';
    return len > 2 ? out : NULL;
}

/* The items of one kind the rows name, as the read model shows them now
 * (NULL when the rows name none, or on failure: err set). */
static PGresult *items(qry_watch *w, const PGresult *rows, const char *kind, const char *select, const char *from,
                       bool *failed, todo_err *err)
{
    const char *ids = ids_of(w->a, rows, kind);
    if (ids == NULL) return NULL;
    const char *p[1] = {ids};
    PGresult *r = pgx_exec(w->pg, arena_printf(w->a, "%s %s = any($1::uuid[])", select, from), 1, p, err);
    if (r == NULL) *failed = true;
    return r;
}

/* Row of r whose id (column 0) is id, or -1. */
static int find(const PGresult *r, const char *id)
{
    for (int i = 0; r != NULL && i < PQntuples(r); i++)
        if (strcmp(PQgetvalue(r, i, 0), id) == 0) return i;
    return -1;
}

/* Sends s up to room updates after its position. Returns the number
 * sent, or -1 when the database failed (err) or the stream was ended. */
static int feed_one(qry_watch *w, sub *s, int room, todo_err *err)
{
    char after[24], limit[16];
    snprintf(after, sizeof after, "%" PRId64, s->pos);
    snprintf(limit, sizeof limit, "%d", room);
    const char *p[3] = {s->user, after, limit};
    PGresult *rows = pgx_exec(w->pg,
                              "select position, kind, entity_id::text, version, event_type,"
                              " (extract(epoch from event_time) * 1000000)::bigint from feed.updates"
                              " where user_id = $1 and position > $2::bigint order by position limit $3::int",
                              3, p, err);
    if (rows == NULL) return -1;
    bool failed = false;
    PGresult *tasks = items(w, rows, "task", qry_task_select, "from read.tasks where id", &failed, err);
    PGresult *rems = failed ? NULL
                            : items(w, rows, "reminder", qry_reminder_select, "from read.reminders r where r.id",
                                    &failed, err);
    PGresult *notes = failed ? NULL
                             : items(w, rows, "notification", qry_notification_select,
                                     "from read.notifications n where n.id", &failed, err);
    int sent = 0;
    for (int i = 0; i < PQntuples(rows) && !failed; i++) {
        int64_t pos = strtoll(PQgetvalue(rows, i, 0), NULL, 10);
        if (pos != s->pos + 1) { /* pruned while the client was away */
            log_info("query", "a watch stream fell behind what the feed keeps", "user=%s position=%" PRId64, s->user,
                     s->pos);
            grpcx_server_stream_end(s->st, TODO_ERANGE,
                             arena_printf(w->a,
                                          "the feed no longer keeps the updates after position %" PRId64
                                          " (TODO_FEED_RETENTION_HOURS); read the current state again and watch"
                                          " from now",
                                          s->pos));
            sent = -1;
            break;
        }
        Todo__V1__Update u = TODO__V1__UPDATE__INIT;
        const char *kind = PQgetvalue(rows, i, 1), *id = PQgetvalue(rows, i, 2);
        u.position = pos;
        u.entity_id = (char *)id;
        u.version = strtoll(PQgetvalue(rows, i, 3), NULL, 10);
        u.event_type = PQgetvalue(rows, i, 4);
        u.time = qry_ts_of(w->a, rows, i, 5);
        int k;
        if (strcmp(kind, "task") == 0 && (k = find(tasks, id)) >= 0) {
            u.item_case = TODO__V1__UPDATE__ITEM_TASK;
            u.task = qry_task_of(w->a, tasks, k);
        } else if (strcmp(kind, "reminder") == 0 && (k = find(rems, id)) >= 0) {
            u.item_case = TODO__V1__UPDATE__ITEM_REMINDER;
            u.reminder = qry_reminder_of(w->a, rems, k);
        } else if (strcmp(kind, "notification") == 0 && (k = find(notes, id)) >= 0) {
            u.item_case = TODO__V1__UPDATE__ITEM_NOTIFICATION;
            u.notification = qry_notification_of(w->a, notes, k);
        }
        if (grpcx_server_stream_send(s->st, &u.base) != TODO_OK) break; /* over: the next round lets it go */
        s->pos = pos;
        s->last_sent = now_s();
        sent++;
    }
    PQclear(rows);
    PQclear(tasks);
    PQclear(rems);
    PQclear(notes);
    return failed ? -1 : sent;
}

/* Takes the streams handed over since the last round into subs. */
static void take_adds(qry_watch *w)
{
    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < w->n_adds; i++) {
        if (w->n == w->cap) {
            int cap = w->cap > 0 ? w->cap * 2 : 16;
            sub **grown = realloc(w->subs, (size_t)cap * sizeof *grown);
            if (grown == NULL) abort();
            w->subs = grown;
            w->cap = cap;
        }
        w->subs[w->n++] = w->adds[i];
    }
    w->n_adds = 0;
    pthread_mutex_unlock(&w->mu);
}

/* One round over every stream (the hub's thread; no lock held while it
 * reads the database, so handing a stream over never waits for it). */
static void feed_all(qry_watch *w)
{
    double now = now_s();
    double keepalive = w->cfg->watch_keepalive_ms / 1000.0, stall = w->cfg->watch_stall_ms / 1000.0;
    for (int i = 0; i < w->n; i++) {
        sub *s = w->subs[i];
        int pending = grpcx_server_stream_pending(s->st);
        if (pending < 0) { /* over or ending: let it go */
            grpcx_server_stream_release(s->st);
            free(s);
            w->subs[i--] = w->subs[--w->n];
            pthread_mutex_lock(&w->mu);
            w->total--;
            pthread_mutex_unlock(&w->mu);
            metric_add(w->open, -1);
            continue;
        }
        int room = GRPCX_STREAM_BUFFER - pending;
        if (s->hello && room > 0 && send_keep_alive(w, s) == TODO_OK) {
            s->hello = false;
            room--;
        }
        if (s->dirty && room > 0 && w->pg != NULL) {
            todo_err err;
            arena_reset(w->a);
            int sent = feed_one(w, s, room, &err);
            if (sent < 0 && PQstatus(w->pg) != CONNECTION_OK) {
                log_warn("query", "the watch hub lost its database connection", "error=\"%s\"", err.msg);
                break; /* reconnects; every stream is looked at again then */
            }
            if (sent >= 0) {
                metric_add(w->sent, sent);
                s->dirty = sent == room; /* a full read: maybe more */
                s->full_since = 0;
                room -= sent;
            }
        } else if (s->dirty && room == 0) {
            if (s->full_since == 0) s->full_since = now;
            else if (now - s->full_since > stall) {
                log_info("query", "ending a watch stream whose client reads nothing", "user=%s position=%" PRId64,
                         s->user, s->pos);
                /* At once, not after the buffer: a client that reads nothing never lets it drain. */
                grpcx_server_stream_abort(s->st, TODO_ETOOBIG,
                                 arena_printf(w->a,
                                              "the client read nothing for %d ms while updates waited; reconnect"
                                              " with after_position set to the last position received",
                                              w->cfg->watch_stall_ms));
            }
        }
        if (room > 0 && now - s->last_sent >= keepalive) send_keep_alive(w, s);
    }
    arena_reset(w->a);
}

static void set_listening(qry_watch *w, bool on)
{
    w->listening = on;
    metric_set(w->listens, on);
}

/* Makes sure the hub has a connection, LISTENing to the projector's `feed`
 * notifications while it has streams and only then (without streams, a
 * batch of the projector would still wake it and its backend); true when
 * it has one. A new connection, or a LISTEN that starts, means
 * notifications may have been missed: every stream is looked at. */
static bool connect_db(qry_watch *w)
{
    todo_err err;
    if (w->pg == NULL || PQstatus(w->pg) != CONNECTION_OK) {
        pgx_close(w->pg);
        w->pg = NULL;
        w->primary = false;
        set_listening(w, false);
        if (pgx_ensure(&w->pg, w->cfg->pg_url, "todo-query-watch", &err) != 0) {
            pgx_close(w->pg);
            w->pg = NULL;
            return false;
        }
        const char *standby = PQparameterStatus(w->pg, "in_hot_standby");
        w->primary = standby == NULL || strcmp(standby, "on") != 0;
        for (int i = 0; i < w->n; i++) w->subs[i]->dirty = true;
    }
    bool want = w->primary && w->n > 0;
    if (want != w->listening) {
        if (pgx_cmd(w->pg, want ? "listen feed" : "unlisten feed", 0, NULL, &err) != 0) {
            pgx_close(w->pg);
            w->pg = NULL;
            set_listening(w, false);
            return false;
        }
        set_listening(w, want);
        if (want)
            for (int i = 0; i < w->n; i++) w->subs[i]->dirty = true;
    }
    return true;
}

/* True when libpq holds notifications not yet taken (they stay queued). */
static bool notifies_waiting(qry_watch *w)
{
    PQconsumeInput(w->pg);
    PGnotify *nt = PQnotifies(w->pg);
    if (nt == NULL) return false;
    /* Taken: mark its user's streams now; the rest are taken after the poll. */
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->subs[i]->user, nt->extra) == 0) w->subs[i]->dirty = true;
    PQfreemem(nt);
    return true;
}

static void *hub_main(void *arg)
{
    qry_watch *w = arg;
    double next_sweep = now_s() + w->cfg->watch_keepalive_ms / 1000.0;
    while (!atomic_load(&w->stop)) {
        bool db = connect_db(w);
        /* A primary's hub sleeps until notified (or, without streams, until
         * one comes); a standby's looks every STANDBY_POLL_MS. */
        int timeout = db && w->primary ? 1000 : STANDBY_POLL_MS;
        /* Notifications libpq took in with the last round's answers: the
         * socket will not say so. */
        if (db && w->listening && PQisBusy(w->pg) == 0 && notifies_waiting(w)) timeout = 0;
        struct pollfd pfd[2] = {{.fd = w->efd, .events = POLLIN}, {.fd = db ? PQsocket(w->pg) : -1, .events = POLLIN}};
        poll(pfd, 2, timeout);
        if (pfd[0].revents & POLLIN) {
            uint64_t v;
            if (read(w->efd, &v, sizeof v) < 0) { /* drained already */
            }
        }
        take_adds(w);
        /* A stream's first read after the LISTEN: nothing falls between. */
        if (db && w->primary && w->n > 0 && !w->listening) db = connect_db(w);
        bool all = !db || !w->listening || now_s() >= next_sweep;
        /* Also when not listening but the socket speaks: a connection the
         * server closed is noticed here, not polled for in a loop. */
        if (db && (w->listening || pfd[1].revents != 0)) {
            PQconsumeInput(w->pg);
            PGnotify *nt;
            while ((nt = PQnotifies(w->pg)) != NULL) {
                for (int i = 0; i < w->n; i++)
                    if (strcmp(w->subs[i]->user, nt->extra) == 0) w->subs[i]->dirty = true;
                PQfreemem(nt);
            }
        }
        if (all) {
            for (int i = 0; i < w->n; i++) w->subs[i]->dirty = true;
            if (now_s() >= next_sweep) next_sweep = now_s() + w->cfg->watch_keepalive_ms / 1000.0;
        }
        feed_all(w);
    }
    /* On this thread: pgx's statement cache is per thread. */
    pgx_close(w->pg);
    w->pg = NULL;
    return NULL;
}

qry_watch *qry_watch_start(const todo_config *cfg, todo_err *err)
{
    qry_watch *w = calloc(1, sizeof *w);
    if (w == NULL || (w->a = arena_new()) == NULL) {
        free(w);
        todo_err_set(err, TODO_EINTERNAL, "out of memory");
        return NULL;
    }
    w->cfg = cfg;
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&w->mu, NULL);
    w->open = metric_only(metric_gauge("todo_watch_streams", "WatchUpdates streams open now.", NULL));
    w->sent = metric_only(metric_counter("todo_watch_updates_total", "Updates sent on WatchUpdates streams.", NULL));
    w->listens = metric_only(metric_gauge("todo_watch_listening",
                                          "1 while the watch hub LISTENs to the projector's feed notifications "
                                          "(only while WatchUpdates streams are open).",
                                          NULL));
    if (w->efd < 0 || pthread_create(&w->thread, NULL, hub_main, w) != 0) {
        if (w->efd >= 0) close(w->efd);
        pthread_mutex_destroy(&w->mu);
        arena_free(w->a);
        free(w);
        todo_err_set(err, TODO_EINTERNAL, "the watch hub could not start");
        return NULL;
    }
    return w;
}

void qry_watch_stop(qry_watch *w)
{
    if (w == NULL) return;
    atomic_store(&w->stop, true);
    kick(w);
    pthread_join(w->thread, NULL);
    take_adds(w); /* the thread is gone: what it did not take yet */
    for (int i = 0; i < w->n; i++) {
        grpcx_server_stream_release(w->subs[i]->st);
        free(w->subs[i]);
    }
    metric_add(w->open, -w->n);
    free(w->subs);
    free(w->adds);
    pgx_close(w->pg);
    close(w->efd);
    pthread_mutex_destroy(&w->mu);
    arena_free(w->a);
    free(w);
}

int qry_watch_add(qry_watch *w, grpcx_server_stream *st, const char *user, int64_t after, todo_err *err)
{
    sub *s = calloc(1, sizeof *s);
    if (s == NULL) return todo_err_set(err, TODO_EINTERNAL, "out of memory");
    s->st = st;
    snprintf(s->user, sizeof s->user, "%s", user);
    s->pos = after;
    s->hello = s->dirty = true;
    s->last_sent = now_s();
    /* Before the hub can see it: once handed over, the hub may let go of st
     * at any time (the client gone), and the hold is then the hub's. */
    grpcx_server_stream_on_event(st, kick, w);
    pthread_mutex_lock(&w->mu);
    if (w->total >= w->cfg->watch_max_streams) {
        pthread_mutex_unlock(&w->mu);
        free(s);
        return todo_err_set(err, TODO_ETOOBIG, "%d WatchUpdates streams are open here (TODO_WATCH_MAX_STREAMS); retry later",
                            w->cfg->watch_max_streams);
    }
    if (w->n_adds == w->cap_adds) {
        int cap = w->cap_adds > 0 ? w->cap_adds * 2 : 16;
        sub **grown = realloc(w->adds, (size_t)cap * sizeof *grown);
        if (grown == NULL) {
            pthread_mutex_unlock(&w->mu);
            free(s);
            return todo_err_set(err, TODO_EINTERNAL, "out of memory");
        }
        w->adds = grown;
        w->cap_adds = cap;
    }
    w->adds[w->n_adds++] = s;
    w->total++;
    metric_add(w->open, 1);
    pthread_mutex_unlock(&w->mu);
    kick(w);
    return TODO_OK;
}
