/* qry_service: see qry_service.h. */
#include "qry_service.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "auth_cache.h"
#include "ctoken.h"
#include "event.h"
#include "log.h"
#include "pgx.h"
#include "qry_dates.h"
#include "qry_page.h"
#include "qry_rows.h"
#include "qry_search.h"
#include "text.h"
#include "trace.h"
#include "todo/v1/query.pb-c.h"

#define PAGE_DEFAULT 20
#define PAGE_MAX 100
#define TEXT_FILTER_MAX 200
#define REPLY_MARGIN_MS 100       /* answered this long before the client's deadline */

typedef struct qry_thread {
    const todo_config *cfg;
    qry_batch *gets, *lists;
    qry_watch *watch;
    PGconn *pg;
    auth_cache *tokens;
    char app_name[32];
} qry_thread;

/* Calls waiting for a consistency token right now, process-wide: at most
 * half the threads that run them (the read threads, or the workers without
 * them) wait up to TODO_QUERY_TOKEN_WAIT_MS; while they do, the others wait
 * SHORT_WAIT_MS at most, so waiting calls never hold every thread for long
 * (a read model that lags by more answers UNAVAILABLE). */
static atomic_int waiting;
#define SHORT_WAIT_MS 250

void *qry_thread_init(void *app, int index)
{
    qry_thread *t = calloc(1, sizeof *t);
    if (t == NULL) abort();
    const qry_app *q = app;
    t->cfg = q->cfg;
    t->gets = q->gets;
    t->lists = q->lists;
    t->watch = q->watch;
    snprintf(t->app_name, sizeof t->app_name, "todo-query-%d", index);
    t->tokens = auth_cache_new((size_t)t->cfg->token_cache);
    return t;
}

void qry_thread_cleanup(void *state)
{
    qry_thread *t = state;
    if (t == NULL) return;
    pgx_close(t->pg);
    auth_cache_free(t->tokens);
    free(t);
}

/* A failed read: logged with its detail, answered UNAVAILABLE without it. */
static int read_failed(const char *what, todo_err *err)
{
    log_error("query", "read failed", "what=\"%s\" detail=\"%s\"", what, err->msg);
    return todo_err_set(err, TODO_EUNAVAIL, "%s failed; retry later", what);
}

int qry_authenticate(grpcx_call *c, todo_err *err)
{
    qry_thread *t = grpcx_call_state(c);
    auth_identity id;
    auth_rules rules = AUTH_RULES_OF(t->cfg);
    int rc = auth_cache_verify(t->tokens, t->cfg->jwt_secret, NULL, grpcx_call_metadata(c, "authorization"),
                               (long)time(NULL), &rules, &id, err);
    if (rc == TODO_OK) grpcx_call_set_user(c, id.user);
    return rc;
}

/* Takes the caller qry_authenticate named. */
static int caller(grpcx_call *c, char user[AUTH_USER_MAX], todo_err *err)
{
    const char *who = grpcx_call_user(c);
    if (who == NULL) return todo_err_set(err, TODO_EUNAUTH, "the caller is not authenticated");
    snprintf(user, AUTH_USER_MAX, "%s", who);
    return TODO_OK;
}

/* Makes sure the thread has a connection (opened at its first read: a
 * worker whose reads all go to the pumps and the read threads opens none). */
static int connect_read(qry_thread *t, todo_err *err)
{
    if (pgx_ensure(&t->pg, t->cfg->pg_url, t->app_name, err) != 0)
        return todo_err_set(err, TODO_EUNAVAIL, "the read database is unreachable; retry later");
    return TODO_OK;
}

/* caller, then connect_read. */
static int begin(grpcx_call *c, qry_thread *t, char user[AUTH_USER_MAX], todo_err *err)
{
    int rc = caller(c, user, err);
    return rc != TODO_OK ? rc : connect_read(t, err);
}

/* The version of aggregate id the read model has applied (0 when none),
 * or -1. */
static int64_t applied_version(qry_thread *t, const char *id, todo_err *err)
{
    const char *p[1] = {id};
    PGresult *r = pgx_exec(t->pg, "select version from read.applied_versions where aggregate_id = $1::uuid", 1, p, err);
    if (r == NULL) return -1;
    int64_t v = PQntuples(r) > 0 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    PQclear(r);
    return v;
}

/* Takes the notifications libpq holds; true when there was any. */
static bool drain_notifies(PGconn *pg)
{
    bool any = false;
    PGnotify *n;
    PQconsumeInput(pg);
    while ((n = PQnotifies(pg)) != NULL) {
        PQfreemem(n);
        any = true;
    }
    return any;
}

/* True when the connection is to a hot standby (a streaming replica):
 * PostgreSQL 14+ reports in_hot_standby, and keeps it current. */
static bool on_standby(PGconn *pg)
{
    const char *v = PQparameterStatus(pg, "in_hot_standby");
    return v != NULL && strcmp(v, "on") == 0;
}

/* The wait proper: LISTENs to read_progress only for its duration (a
 * worker that kept listening between calls buffered every notification of
 * every projector batch while idle, and held back the server's NOTIFY
 * queue). A standby takes no LISTEN (and NOTIFY is not replicated): there
 * it polls, 2 ms apart at first, doubling to 25 ms. */
static int wait_applied(grpcx_call *c, qry_thread *t, const char *id, int64_t want, int wait_ms, todo_err *err)
{
    bool standby = on_standby(t->pg);
    int pause_ms = 2;
    if (!standby && pgx_cmd(t->pg, "listen read_progress", 0, NULL, err) != 0) return TODO_EUNAVAIL;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long until_ms = now.tv_sec * 1000LL + now.tv_nsec / 1000000 + wait_ms;
    int64_t have = 0;
    int rc = TODO_OK;
    for (;;) {
        drain_notifies(t->pg); /* the check below sees their effect */
        if ((have = applied_version(t, id, err)) < 0) {
            rc = TODO_EUNAVAIL;
            break;
        }
        if (have >= want) break;
        /* Stop REPLY_MARGIN_MS before the client's deadline, so that the
         * answer reaches it before it gives up, and at TODO_QUERY_TOKEN_WAIT_MS
         * at the latest. */
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long left = until_ms - (now.tv_sec * 1000LL + now.tv_nsec / 1000000);
        long call_left = grpcx_call_ms_left(c);
        if (call_left != LONG_MAX && call_left - REPLY_MARGIN_MS < left) left = call_left - REPLY_MARGIN_MS;
        if (left <= 0) {
            rc = todo_err_set(err, TODO_EUNAVAIL,
                              "the read model has not caught up with the consistency token yet (version %" PRId64
                              " of %s applied, the token names %" PRId64 "; waited %d ms); retry later",
                              have, id, want, wait_ms);
            break;
        }
        if (standby) {
            struct timespec nap = {0, (long)(left < pause_ms ? left : pause_ms) * 1000000L};
            nanosleep(&nap, NULL);
            pause_ms = pause_ms * 2 > 25 ? 25 : pause_ms * 2;
            continue;
        }
        /* A notification that came with the check's answer is in libpq
         * already: the socket would stay quiet. */
        if (drain_notifies(t->pg)) continue;
        struct pollfd pfd = {.fd = PQsocket(t->pg), .events = POLLIN};
        poll(&pfd, 1, left > 1000 ? 1000 : (int)left);
    }
    if (standby) return rc;
    todo_err unerr;
    if (pgx_cmd(t->pg, "unlisten read_progress", 0, NULL, &unerr) != 0 && rc == TODO_OK)
        rc = todo_err_set(err, TODO_EUNAVAIL, "the read database is unreachable; retry later");
    drain_notifies(t->pg);
    return rc;
}

/* Read-your-writes: returns once the write the token stands for (its
 * aggregate at its version: ctoken.h) is in the read model, waiting for
 * read_progress notifications for TODO_QUERY_TOKEN_WAIT_MS at most (or
 * SHORT_WAIT_MS, see `waiting`), never past the call's deadline. */
static int await_token(grpcx_call *c, qry_thread *t, const char *user, const char *token, todo_err *err)
{
    char id[37];
    int64_t want, have;
    int rc;
    if (token[0] == '\0') return TODO_OK;
    if ((rc = ctoken_decode(&t->cfg->token_key, user, token, id, &want, err)) != 0) return rc;
    if ((have = applied_version(t, id, err)) < 0) return TODO_EUNAVAIL;
    if (have >= want) return TODO_OK; /* the usual case: no wait */
    int short_ms = t->cfg->token_wait_ms < SHORT_WAIT_MS ? t->cfg->token_wait_ms : SHORT_WAIT_MS;
    /* With read threads, the workers are few (one per core) and every other
     * call waits for them: one waits briefly at most (a WatchUpdates start,
     * or a read its worker runs because the read threads' queue is full). */
    if (t->cfg->query_read_threads > 0 && !grpcx_call_pooled(c)) return wait_applied(c, t, id, want, short_ms, err);
    int threads = t->cfg->query_read_threads > 0 ? t->cfg->query_read_threads : t->cfg->grpc_threads;
    int max = threads / 2 > 0 ? threads / 2 : 1;
    if (atomic_fetch_add(&waiting, 1) >= max) {
        atomic_fetch_sub(&waiting, 1);
        return wait_applied(c, t, id, want, short_ms, err);
    }
    rc = wait_applied(c, t, id, want, t->cfg->token_wait_ms, err);
    atomic_fetch_sub(&waiting, 1);
    return rc;
}

/* The page size a request asked for (0: the default), checked. */
static int page_size(int32_t asked, int *size, todo_err *err)
{
    *size = asked == 0 ? PAGE_DEFAULT : asked;
    if (*size < 1 || *size > PAGE_MAX)
        return todo_err_set(err, TODO_EINVAL, "page_size: must be 0 (default %d) to %d, got %d", PAGE_DEFAULT,
                            PAGE_MAX, asked);
    return TODO_OK;
}

/* The keyset token after row `last` of r (its id in column 0, its sort key
 * as text in column key_col), in a. */
static char *next_token(arena *a, const PGresult *r, int last, int key_col, qry_sort sort)
{
    qry_page_key key = {.sort = sort};
    snprintf(key.value, sizeof key.value, "%s", PQgetvalue(r, last, key_col));
    snprintf(key.id, sizeof key.id, "%s", PQgetvalue(r, last, 0));
    char *token = arena_alloc(a, QRY_PAGE_TOKEN_MAX);
    qry_page_encode(&key, token);
    return token;
}

/* GetTask with as_of: the last version of the task's history at or
 * before that time (read.task_history, migration 0027). */
static int get_task_as_of(qry_thread *t, arena *a, const char *user, const Todo__V1__GetTaskRequest *rq,
                          ProtobufCMessage **resp, todo_err *err)
{
    if (!event_timestamp_valid(rq->as_of))
        return todo_err_set(err, TODO_EINVAL, "as_of: not a valid time (years 1 to 9999, nanos 0 to 999,999,999)");
    char at[32];
    snprintf(at, sizeof at, "%" PRId64, event_timestamp_us(rq->as_of));
    const char *p[3] = {rq->task_id, user, at};
    PGresult *r = pgx_exec(t->pg,
                           "select h.task_id::text, h.user_id, h.title, h.description, h.priority,"
                           " (extract(epoch from h.due_at) * 1000000)::bigint, h.completed,"
                           " (extract(epoch from h.completed_at) * 1000000)::bigint, h.category,"
                           " array_to_string(h.tags, E'\\x1f'),"
                           " (select (extract(epoch from min(f.event_time)) * 1000000)::bigint from read.task_history f"
                           "  where f.task_id = h.task_id),"
                           " (extract(epoch from h.event_time) * 1000000)::bigint, h.version,"
                           " (h.due_at is not null and h.due_at < to_timestamp($3::bigint / 1000000.0)"
                           "  and not h.completed), coalesce(h.recurring_pattern_id::text, ''), h.deleted"
                           " from read.task_history h where h.task_id = $1::uuid and h.user_id = $2"
                           " and h.event_time <= to_timestamp($3::bigint / 1000000.0) order by h.version desc limit 1",
                           3, p, err);
    if (r == NULL) return read_failed("reading the task's history", err);
    if (PQntuples(r) == 0 || PQgetvalue(r, 0, 15)[0] == 't') {
        bool deleted = PQntuples(r) > 0;
        PQclear(r);
        return todo_err_set(err, TODO_ENOTFOUND, "task %s %s at that time", rq->task_id,
                            deleted ? "was deleted" : "did not exist (or its history does not go back that far)");
    }
    *resp = &qry_task_of(a, r, 0)->base;
    PQclear(r);
    return TODO_OK;
}

/* GetTask's reply from a lookup of task id whose outcome is rc (err
 * filled when it failed) and f: the task, NOT_FOUND, or UNAVAILABLE. */
static int task_found(arena *a, int rc, const qry_found *f, const char *id, ProtobufCMessage **resp, todo_err *err)
{
    if (rc != TODO_OK) return read_failed("reading the task", err);
    if (f->row < 0) return todo_err_set(err, TODO_ENOTFOUND, "task %s not found", id);
    *resp = &qry_task_of(a, f->r, f->row)->base;
    return TODO_OK;
}

/* A pumped GetTask's answer (qry_batch_answer; ctx is the call taken). */
static void answer_get(void *ctx, const qry_pumped *p, arena *a)
{
    grpcx_later *l = ctx;
    todo_err e = p->rc != TODO_OK ? *p->err : (todo_err){0};
    ProtobufCMessage *resp = NULL;
    trace_enter(grpcx_later_trace(l));
    int rc = task_found(a, p->rc, &p->f, p->id, &resp, &e);
    trace_leave();
    grpcx_later_reply(l, rc, resp, &e);
}

static int get_task(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__GetTaskRequest *rq = (const Todo__V1__GetTaskRequest *)req;
    qry_thread *t = grpcx_call_state(c);
    arena *a = grpcx_call_arena(c);
    char user[AUTH_USER_MAX];
    int rc;

    if ((rc = caller(c, user, err)) != 0) return rc;
    if (!text_is_uuid(rq->task_id)) return todo_err_set(err, TODO_EINVAL, "task_id: must be a UUID");
    /* A plain lookup goes to a pump thread at once, and this worker goes
     * on; one with a token or an as-of time runs on a read thread. */
    bool plain = rq->consistency_token[0] == '\0' && rq->as_of == NULL;
    if (!plain || !qry_batch_pumped(t->gets)) {
        if (grpcx_call_offload(c)) return TODO_OK;
        if ((rc = connect_read(t, err)) != 0) return rc;
        if ((rc = await_token(c, t, user, rq->consistency_token, err)) != 0) return rc;
        if (rq->as_of != NULL) return get_task_as_of(t, a, user, rq, resp, err);
    }
    if (qry_batch_pumped(t->gets)) { /* (a token's lookup too, once the token is in) */
        qry_batch_get_later(t->gets, rq->task_id, user, answer_get, grpcx_call_later(c));
        return TODO_OK;
    }
    qry_found f = {.ref = NULL};
    rc = task_found(a, qry_batch_get(t->gets, t->pg, rq->task_id, user, &f, err), &f, rq->task_id, resp, err);
    qry_batch_done(&f);
    return rc;
}

/* A WHERE clause under construction with its parameters. */
typedef struct where {
    char sql[1024];
    size_t len;
    const char *params[16];
    int n;
} where;

/* The end of a keyset page's WHERE clause: after key (from the request's
 * page token, or NULL on the first page) " and (expr, id_col) > or <
 * ($i::cast, $j::uuid)" as asc says, then the limit parameter: size + 1
 * rows, the last telling whether another page follows. limit holds its text. */
static void page_after(where *w, const qry_page_key *key, const char *expr, const char *id_col, bool asc,
                       const char *cast, char limit[16], int size)
{
    if (key != NULL) {
        w->params[w->n++] = key->value;
        w->params[w->n++] = key->id;
        w->len += (size_t)snprintf(w->sql + w->len, sizeof w->sql - w->len, " and (%s, %s) %s ($%d::%s, $%d::uuid)",
                                   expr, id_col, asc ? ">" : "<", w->n - 1, cast, w->n);
    }
    snprintf(limit, 16, "%d", size + 1);
    w->params[w->n++] = limit;
}

/* Appends " and <text>", where each '?' in text becomes the placeholder of
 * value (added as the next parameter when not NULL). */
static void cond(where *w, const char *text, const char *value)
{
    if (value != NULL) w->params[w->n++] = value;
    w->len += (size_t)snprintf(w->sql + w->len, sizeof w->sql - w->len, " and ");
    for (const char *p = text; *p != '\0' && w->len + 8 < sizeof w->sql; p++) {
        if (*p == '?') w->len += (size_t)snprintf(w->sql + w->len, sizeof w->sql - w->len, "$%d", w->n);
        else w->sql[w->len++] = *p;
    }
    w->sql[w->len] = '\0';
}

/* Escapes LIKE wildcards so the text filter matches literally. */
static char *like_pattern(arena *a, const char *s)
{
    char *out = arena_alloc(a, strlen(s) * 2 + 3), *p = out;
    *p++ = '%';
    for (; *s; s++) {
        if (*s == '%' || *s == '_' || *s == '\\') *p++ = '\\';
        *p++ = *s;
    }
    *p++ = '%';
    *p = '\0';
    return out;
}

/* rs's tasks: the first size of the n rows of r (their row numbers in at;
 * NULL: 0..n-1) and, when there are more, the token after the last shown
 * (its page key in column 15). */
static void fill_page(arena *a, Todo__V1__ListTasksResponse *rs, const PGresult *r, const int *at, int n, int size,
                      qry_sort sort)
{
    int shown = n > size ? size : n;
    rs->tasks = arena_alloc(a, (size_t)(shown + 1) * sizeof *rs->tasks);
    for (int i = 0; i < shown; i++) rs->tasks[rs->n_tasks++] = qry_task_of(a, r, at != NULL ? at[i] : i);
    if (n > size) rs->next_page_token = next_token(a, r, at != NULL ? at[shown - 1] : shown - 1, 15, sort);
}

/* ListTasks' first page of size from a batched list whose outcome is rc
 * (err filled when it failed): the rows of f numbered in rows[0..n), or
 * UNAVAILABLE. */
static int first_page_found(arena *a, int rc, const qry_found *f, const int *rows, int n, int size,
                            ProtobufCMessage **resp, todo_err *err)
{
    if (rc != TODO_OK) return read_failed("listing tasks", err);
    Todo__V1__ListTasksResponse *rs = arena_alloc(a, sizeof *rs);
    todo__v1__list_tasks_response__init(rs);
    fill_page(a, rs, f->r, rows, n, size, (qry_sort){.field = QRY_SORT_CREATED_AT, .asc = false});
    *resp = &rs->base;
    return TODO_OK;
}

/* A pumped first page's answer (qry_batch_answer; ctx is the call taken). */
static void answer_first_page(void *ctx, const qry_pumped *p, arena *a)
{
    grpcx_later *l = ctx;
    todo_err e = p->rc != TODO_OK ? *p->err : (todo_err){0};
    ProtobufCMessage *resp = NULL;
    trace_enter(grpcx_later_trace(l));
    int rc = first_page_found(a, p->rc, &p->f, p->rows, p->n_rows, p->limit - 1, &resp, &e);
    trace_leave();
    grpcx_later_reply(l, rc, resp, &e);
}

/* ListTasks' first page of size in the default order, no filter, through
 * the batcher (or its pump, with the call answered there). */
static int first_page(grpcx_call *c, qry_thread *t, arena *a, const char *user, int size, ProtobufCMessage **resp,
                      todo_err *err)
{
    if (qry_batch_pumped(t->lists)) {
        qry_batch_list_later(t->lists, user, size + 1, answer_first_page, grpcx_call_later(c));
        return TODO_OK;
    }
    int *rows = arena_alloc(a, (size_t)(size + 1) * sizeof *rows), n = 0;
    qry_found f = {.ref = NULL};
    int rc = qry_batch_list(t->lists, t->pg, user, size + 1, rows, &n, &f, err);
    rc = first_page_found(a, rc, &f, rows, n, size, resp, err);
    qry_batch_done(&f);
    return rc;
}

static int list_tasks(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__ListTasksRequest *rq = (const Todo__V1__ListTasksRequest *)req;
    qry_thread *t = grpcx_call_state(c);
    arena *a = grpcx_call_arena(c);
    char user[AUTH_USER_MAX], limit[16];
    qry_sort sort;
    qry_page_key key;
    where w = {.len = 0, .n = 0};
    int rc, size;

    if ((rc = caller(c, user, err)) != 0 || (rc = page_size(rq->page_size, &size, err)) != 0) return rc;
    if ((int)rq->priority < 0 || (int)rq->priority > TODO__V1__PRIORITY__PRIORITY_URGENT)
        return todo_err_set(err, TODO_EINVAL, "priority: unknown value %d", (int)rq->priority);
    if (strlen(rq->text) > TEXT_FILTER_MAX || text_utf8_chars(rq->text, strlen(rq->text)) < 0)
        return todo_err_set(err, TODO_EINVAL, "text: must be valid UTF-8 of at most %d bytes", TEXT_FILTER_MAX);
    if (strlen(rq->category) > 256 || strlen(rq->tag) > 256)
        return todo_err_set(err, TODO_EINVAL, "%s: too long", strlen(rq->tag) > 256 ? "tag" : "category");
    /* Checked like the commands' times: an impossible one would make the
     * database refuse the statement, answered as UNAVAILABLE (retry). */
    if (rq->due_before != NULL && !event_timestamp_valid(rq->due_before))
        return todo_err_set(err, TODO_EINVAL, "due_before: must be a time of years 1 to 9999 (nanos 0..999999999)");
    if (rq->due_after != NULL && !event_timestamp_valid(rq->due_after))
        return todo_err_set(err, TODO_EINVAL, "due_after: must be a time of years 1 to 9999 (nanos 0..999999999)");
    if ((rc = qry_sort_parse(rq->order_by, &sort, err)) != 0) return rc;
    if (rq->page_token[0] != '\0' && (rc = qry_page_decode(rq->page_token, &sort, &key, err)) != 0) return rc;
    /* The chatbot's "my tasks": the first page, newest first, no filter;
     * such calls arriving together are read in one statement. */
    bool mine = rq->completed == NULL && rq->priority == 0 && rq->category[0] == '\0' && rq->tag[0] == '\0' &&
                rq->due_before == NULL && rq->due_after == NULL && rq->overdue == NULL && rq->text[0] == '\0' &&
                rq->page_token[0] == '\0' && !rq->include_total && sort.field == QRY_SORT_CREATED_AT && !sort.asc;
    /* A plain first page goes to a pump thread, and this worker goes on;
     * any other list to a read thread. */
    if (mine && rq->consistency_token[0] == '\0' && qry_batch_pumped(t->lists))
        return first_page(c, t, a, user, size, resp, err);
    if (grpcx_call_offload(c)) return TODO_OK;
    if ((rc = connect_read(t, err)) != 0) return rc;
    if ((rc = await_token(c, t, user, rq->consistency_token, err)) != 0) return rc;
    if (mine) return first_page(c, t, a, user, size, resp, err);
    w.params[w.n++] = user;
    w.len = (size_t)snprintf(w.sql, sizeof w.sql, " where user_id = $1 and not deleted");
    if (rq->completed != NULL) cond(&w, "completed = ?", rq->completed->value ? "true" : "false");
    if (rq->priority != 0) cond(&w, "priority = ?", arena_printf(a, "%d", (int)rq->priority));
    if (rq->category[0] != '\0') cond(&w, "category = ?", rq->category);
    if (rq->tag[0] != '\0') cond(&w, "? = any(tags)", rq->tag);
    if (rq->due_before != NULL) cond(&w, "due_at < ?::timestamptz", event_time_text(a, event_timestamp_us(rq->due_before)));
    if (rq->due_after != NULL) cond(&w, "due_at >= ?::timestamptz", event_time_text(a, event_timestamp_us(rq->due_after)));
    if (rq->overdue != NULL)
        cond(&w, rq->overdue->value ? "(due_at < now() and not completed)"
                                    : "not (due_at is not null and due_at < now() and not completed)", NULL);
    if (rq->text[0] != '\0')
        cond(&w, "(title ilike ? or description ilike ?)", like_pattern(a, rq->text));

    Todo__V1__ListTasksResponse *rs = arena_alloc(a, sizeof *rs);
    todo__v1__list_tasks_response__init(rs);
    if (rq->include_total) {
        PGresult *r = pgx_exec(t->pg, arena_printf(a, "select count(*) from read.tasks%s", w.sql), w.n, w.params, err);
        if (r == NULL) return read_failed("counting tasks", err);
        rs->total = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
    }
    page_after(&w, rq->page_token[0] != '\0' ? &key : NULL, qry_sort_expr(sort.field), "id", sort.asc,
               qry_sort_cast(sort.field), limit, size);
    char *sql = qry_list_sql(a, w.sql, sort, w.n);
    PGresult *r = pgx_exec(t->pg, sql, w.n, w.params, err);
    if (r == NULL) return read_failed("listing tasks", err);
    fill_page(a, rs, r, NULL, PQntuples(r), size, sort);
    PQclear(r);
    *resp = &rs->base;
    return TODO_OK;
}

static int search_tasks(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    if (grpcx_call_offload(c)) return TODO_OK; /* it waits on PostgreSQL: run in the read pool */
    const Todo__V1__SearchTasksRequest *rq = (const Todo__V1__SearchTasksRequest *)req;
    qry_thread *t = grpcx_call_state(c);
    arena *a = grpcx_call_arena(c);
    char user[AUTH_USER_MAX], tsq[QRY_SEARCH_MAX_WORDS * (QRY_SEARCH_MAX_WORD + 6) + 8], limit[16], offset_s[16];
    int rc, offset = 0, size;

    if ((rc = begin(c, t, user, err)) != 0 || (rc = page_size(rq->page_size, &size, err)) != 0) return rc;
    if ((rc = qry_search_tsquery(rq->query, tsq, sizeof tsq, err)) < 0) return rc;
    if (rq->page_token[0] != '\0' && (rc = qry_search_token_decode(rq->page_token, &offset, err)) != 0) return rc;
    if ((rc = await_token(c, t, user, rq->consistency_token, err)) != 0) return rc;

    snprintf(limit, sizeof limit, "%d", size + 1);
    snprintf(offset_s, sizeof offset_s, "%d", offset);
    const char *params[4] = {user, tsq, limit, offset_s};
    /* Ranked by relevance, then newest first; ties broken by id so pages are stable. */
    char *sql = arena_printf(a,
                             "%s from read.tasks, to_tsquery('simple', $2) q where user_id = $1 and not deleted"
                             " and search @@ q"
                             " order by ts_rank(search, q) desc, created_at desc, tasks.id desc limit $3::int offset $4::int",
                             qry_task_select);
    PGresult *r = pgx_exec(t->pg, sql, 4, params, err);
    if (r == NULL) return read_failed("searching tasks", err);
    Todo__V1__ListTasksResponse *rs = arena_alloc(a, sizeof *rs);
    todo__v1__list_tasks_response__init(rs);
    int rows = PQntuples(r), shown = rows > size ? size : rows;
    rs->tasks = arena_alloc(a, (size_t)(shown + 1) * sizeof *rs->tasks);
    for (int i = 0; i < shown; i++) rs->tasks[rs->n_tasks++] = qry_task_of(a, r, i);
    if (rows > size && offset + size <= QRY_SEARCH_MAX_OFFSET) {
        rs->next_page_token = arena_alloc(a, 40);
        qry_search_token_encode(offset + size, rs->next_page_token);
    }
    PQclear(r);
    *resp = &rs->base;
    return TODO_OK;
}

static int get_task_stats(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    if (grpcx_call_offload(c)) return TODO_OK; /* it waits on PostgreSQL: run in the read pool */
    const Todo__V1__GetTaskStatsRequest *rq = (const Todo__V1__GetTaskStatsRequest *)req;
    qry_thread *t = grpcx_call_state(c);
    arena *a = grpcx_call_arena(c);
    char user[AUTH_USER_MAX];
    int rc;
    static const char *const names[] = {"LOW", "MEDIUM", "HIGH", "URGENT"};

    if ((rc = begin(c, t, user, err)) != 0) return rc;
    if ((rc = await_token(c, t, user, rq->consistency_token, err)) != 0) return rc;
    const char *params[1] = {user};
    /* The counters are kept by a trigger as events are projected; overdue
     * depends on the clock and is counted now. */
    PGresult *r = pgx_exec(t->pg,
                           "select coalesce(s.total, 0), coalesce(s.completed, 0), coalesce(s.low, 0),"
                           " coalesce(s.medium, 0), coalesce(s.high, 0), coalesce(s.urgent, 0),"
                           " (select count(*) from read.tasks where user_id = $1 and not completed and not deleted"
                           "  and due_at < now())"
                           " from (select 1) one left join read.task_stats s on s.user_id = $1",
                           1, params, err);
    if (r == NULL) return read_failed("reading statistics", err);
    Todo__V1__TaskStats *st = arena_alloc(a, sizeof *st);
    todo__v1__task_stats__init(st);
    st->total = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    st->completed = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    st->pending = st->total - st->completed;
    st->overdue = strtoll(PQgetvalue(r, 0, 6), NULL, 10);
    st->completion_rate = st->total > 0 ? (double)st->completed / (double)st->total : 0.0;
    st->n_by_priority = 4;
    st->by_priority = arena_alloc(a, 4 * sizeof *st->by_priority);
    for (int i = 0; i < 4; i++) {
        Todo__V1__TaskStats__ByPriorityEntry *e = arena_alloc(a, sizeof *e);
        todo__v1__task_stats__by_priority_entry__init(e);
        e->key = (char *)names[i];
        e->value = strtoll(PQgetvalue(r, 0, 2 + i), NULL, 10);
        st->by_priority[i] = e;
    }
    PQclear(r);
    *resp = &st->base;
    return TODO_OK;
}

static int list_reminders(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    if (grpcx_call_offload(c)) return TODO_OK; /* it waits on PostgreSQL: run in the read pool */
    const Todo__V1__ListRemindersRequest *rq = (const Todo__V1__ListRemindersRequest *)req;
    qry_thread *t = grpcx_call_state(c);
    arena *a = grpcx_call_arena(c);
    char user[AUTH_USER_MAX], limit[16];
    const qry_sort sort = {.field = QRY_SORT_REMIND_AT, .asc = true};
    qry_page_key key;
    where w = {.len = 0, .n = 0};
    int rc, size;

    if ((rc = begin(c, t, user, err)) != 0 || (rc = page_size(rq->page_size, &size, err)) != 0) return rc;
    if (rq->task_id[0] != '\0' && !text_is_uuid(rq->task_id))
        return todo_err_set(err, TODO_EINVAL, "task_id: must be a UUID or empty");
    if (rq->page_token[0] != '\0' && (rc = qry_page_decode(rq->page_token, &sort, &key, err)) != 0) return rc;
    if ((rc = await_token(c, t, user, rq->consistency_token, err)) != 0) return rc;

    w.params[w.n++] = user;
    w.len = (size_t)snprintf(w.sql, sizeof w.sql,
                             " where r.user_id = $1 and not exists"
                             " (select 1 from read.tasks k where k.id = r.task_id and k.deleted)");
    if (rq->task_id[0] != '\0') cond(&w, "r.task_id = ?::uuid", rq->task_id);
    if (!rq->include_inactive) cond(&w, "r.status = 'scheduled'", NULL);
    page_after(&w, rq->page_token[0] != '\0' ? &key : NULL, "r.remind_at", "r.id", true, "timestamptz", limit, size);
    char *sql = arena_printf(a,
                             "%s, %s as page_key from read.reminders r%s order by r.remind_at, r.id limit $%d",
                             qry_reminder_select, qry_sort_text(QRY_SORT_REMIND_AT), w.sql, w.n);
    PGresult *r = pgx_exec(t->pg, sql, w.n, w.params, err);
    if (r == NULL) return read_failed("listing reminders", err);
    Todo__V1__ListRemindersResponse *rs = arena_alloc(a, sizeof *rs);
    todo__v1__list_reminders_response__init(rs);
    int rows = PQntuples(r), shown = rows > size ? size : rows;
    rs->reminders = arena_alloc(a, (size_t)(shown + 1) * sizeof *rs->reminders);
    for (int i = 0; i < shown; i++) rs->reminders[rs->n_reminders++] = qry_reminder_of(a, r, i);
    if (rows > size) rs->next_page_token = next_token(a, r, shown - 1, 10, sort);
    PQclear(r);
    *resp = &rs->base;
    return TODO_OK;
}

static int list_notifications(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    if (grpcx_call_offload(c)) return TODO_OK; /* it waits on PostgreSQL: run in the read pool */
    const Todo__V1__ListNotificationsRequest *rq = (const Todo__V1__ListNotificationsRequest *)req;
    qry_thread *t = grpcx_call_state(c);
    arena *a = grpcx_call_arena(c);
    char user[AUTH_USER_MAX], limit[16];
    const qry_sort sort = {.field = QRY_SORT_CREATED_AT, .asc = false}; /* newest first */
    qry_page_key key;
    where w = {.len = 0, .n = 0};
    int rc, size;

    if ((rc = begin(c, t, user, err)) != 0 || (rc = page_size(rq->page_size, &size, err)) != 0) return rc;
    if (rq->page_token[0] != '\0' && (rc = qry_page_decode(rq->page_token, &sort, &key, err)) != 0) return rc;
    if ((rc = await_token(c, t, user, rq->consistency_token, err)) != 0) return rc;

    w.params[w.n++] = user;
    w.len = (size_t)snprintf(w.sql, sizeof w.sql, " where n.user_id = $1");
    if (rq->unread_only) cond(&w, "n.read_at is null", NULL);
    page_after(&w, rq->page_token[0] != '\0' ? &key : NULL, "n.created_at", "n.id", false, "timestamptz", limit,
               size);
    char *sql = arena_printf(a,
                             "%s, %s as page_key from read.notifications n%s order by n.created_at desc, n.id desc"
                             " limit $%d",
                             qry_notification_select, qry_sort_text(QRY_SORT_CREATED_AT), w.sql, w.n);
    PGresult *r = pgx_exec(t->pg, sql, w.n, w.params, err);
    if (r == NULL) return read_failed("listing notifications", err);
    Todo__V1__ListNotificationsResponse *rs = arena_alloc(a, sizeof *rs);
    todo__v1__list_notifications_response__init(rs);
    int rows = PQntuples(r), shown = rows > size ? size : rows;
    rs->notifications = arena_alloc(a, (size_t)(shown + 1) * sizeof *rs->notifications);
    for (int i = 0; i < shown; i++) rs->notifications[rs->n_notifications++] = qry_notification_of(a, r, i);
    if (rows > size) rs->next_page_token = next_token(a, r, shown - 1, 8, sort);
    PQclear(r);
    *resp = &rs->base;
    return TODO_OK;
}

static int get_task_activity(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    if (grpcx_call_offload(c)) return TODO_OK; /* it waits on PostgreSQL: run in the read pool */
    const Todo__V1__GetTaskActivityRequest *rq = (const Todo__V1__GetTaskActivityRequest *)req;
    qry_thread *t = grpcx_call_state(c);
    arena *a = grpcx_call_arena(c);
    char user[AUTH_USER_MAX];
    int rc;

    if ((rc = begin(c, t, user, err)) != 0) return rc;
    if (!text_is_uuid(rq->task_id)) return todo_err_set(err, TODO_EINVAL, "task_id: must be a UUID");
    if ((rc = await_token(c, t, user, rq->consistency_token, err)) != 0) return rc;
    const char *p[2] = {rq->task_id, user};
    PGresult *r = pgx_exec(t->pg,
                           "select s.saga_id::text, s.saga_type, s.status, s.step, s.error, s.last_event,"
                           " (extract(epoch from s.started_at) * 1000000)::bigint,"
                           " (extract(epoch from s.updated_at) * 1000000)::bigint"
                           " from read.tasks k left join read.task_sagas s on s.task_id = k.id and s.user_id = k.user_id"
                           " where k.id = $1::uuid and k.user_id = $2 and not k.deleted"
                           " order by s.started_at, s.saga_id",
                           2, p, err);
    if (r == NULL) return read_failed("reading the task's activity", err);
    if (PQntuples(r) == 0) {
        PQclear(r);
        return todo_err_set(err, TODO_ENOTFOUND, "task %s not found", rq->task_id);
    }
    Todo__V1__TaskActivity *rs = arena_alloc(a, sizeof *rs);
    todo__v1__task_activity__init(rs);
    rs->task_id = arena_strdup(a, rq->task_id);
    rs->sagas = arena_alloc(a, (size_t)PQntuples(r) * sizeof *rs->sagas);
    for (int i = 0; i < PQntuples(r); i++) {
        if (PQgetisnull(r, i, 0)) continue; /* the task, without sagas */
        Todo__V1__SagaSummary *m = arena_alloc(a, sizeof *m);
        todo__v1__saga_summary__init(m);
        m->saga_id = arena_strdup(a, PQgetvalue(r, i, 0));
        m->saga_type = arena_strdup(a, PQgetvalue(r, i, 1));
        m->status = (Todo__V1__SagaStatus)atoi(PQgetvalue(r, i, 2));
        m->step = arena_strdup(a, PQgetvalue(r, i, 3));
        m->error = arena_strdup(a, PQgetvalue(r, i, 4));
        m->last_event = arena_strdup(a, PQgetvalue(r, i, 5));
        m->started_at = qry_ts_of(a, r, i, 6);
        m->updated_at = qry_ts_of(a, r, i, 7);
        rs->sagas[rs->n_sagas++] = m;
    }
    PQclear(r);
    *resp = &rs->base;
    return TODO_OK;
}

/* The fields GetTaskHistory compares, as the columns of its select from
 * 5 on ("" unset). */
static const char *const history_fields[] = {"title",        "description", "priority", "due_at", "completed",
                                             "completed_at", "category",    "tags",     "deleted"};
#define N_HISTORY_FIELDS 9

/* A field's text as shown: priority by its name. */
static const char *history_text(int field, const char *v)
{
    if (field == 2 && v[0] != '\0') {
        const ProtobufCEnumValue *e = protobuf_c_enum_descriptor_get_value(&todo__v1__priority__descriptor, atoi(v));
        return e != NULL ? e->name : v;
    }
    return v;
}

static int get_task_history(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    if (grpcx_call_offload(c)) return TODO_OK; /* it waits on PostgreSQL: run in the read pool */
    static const char *const before_any[N_HISTORY_FIELDS] = {"", "", "", "", "false", "", "", "", "false"};
    const Todo__V1__GetTaskHistoryRequest *rq = (const Todo__V1__GetTaskHistoryRequest *)req;
    qry_thread *t = grpcx_call_state(c);
    arena *a = grpcx_call_arena(c);
    char user[AUTH_USER_MAX], from[24] = "1", limit[16];
    int rc, size;

    if ((rc = begin(c, t, user, err)) != 0 || (rc = page_size(rq->page_size, &size, err)) != 0) return rc;
    if (!text_is_uuid(rq->task_id)) return todo_err_set(err, TODO_EINVAL, "task_id: must be a UUID");
    bool paged = rq->page_token[0] != '\0';
    if (paged) { /* the last version of the page before: the baseline of this one's first */
        char *end;
        long long v = strtoll(rq->page_token, &end, 10);
        if (*end != '\0' || v < 1 || strlen(rq->page_token) > 18)
            return todo_err_set(err, TODO_EINVAL, "page_token: not one GetTaskHistory gave");
        snprintf(from, sizeof from, "%lld", v);
    }
    if ((rc = await_token(c, t, user, rq->consistency_token, err)) != 0) return rc;
    snprintf(limit, sizeof limit, "%d", size + 1 + paged);
    const char *p[4] = {rq->task_id, user, from, limit};
    PGresult *r = pgx_exec(t->pg,
                           "select version, event_type, (extract(epoch from event_time) * 1000000)::bigint, actor,"
                           " correlation_id, title, description, priority::text,"
                           " coalesce(to_char(due_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''),"
                           " completed::text,"
                           " coalesce(to_char(completed_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''),"
                           " category, array_to_string(tags, ','), deleted::text"
                           " from read.task_history where task_id = $1::uuid and user_id = $2 and version >= $3::bigint"
                           " order by version limit $4::int",
                           4, p, err);
    if (r == NULL) return read_failed("reading the task's history", err);
    int rows = PQntuples(r);
    if (rows == 0 && !paged) { /* no history: a task of another user, or none */
        PQclear(r);
        const char *q[2] = {rq->task_id, user};
        if ((r = pgx_exec(t->pg, "select 1 from read.tasks where id = $1::uuid and user_id = $2", 2, q, err)) == NULL)
            return read_failed("reading the task", err);
        bool exists = PQntuples(r) > 0;
        PQclear(r);
        if (!exists) return todo_err_set(err, TODO_ENOTFOUND, "task %s not found", rq->task_id);
        r = NULL;
    }
    Todo__V1__TaskHistory *rs = arena_alloc(a, sizeof *rs);
    todo__v1__task_history__init(rs);
    /* The page token's own version comes first: the baseline, not shown. */
    int start = paged && rows > 0 && strcmp(PQgetvalue(r, 0, 0), from) == 0 ? 1 : 0;
    int shown = rows - start > size ? size : rows - start;
    if (shown < 0) shown = 0;
    rs->changes = arena_alloc(a, (size_t)(shown + 1) * sizeof *rs->changes);
    for (int i = start; i < start + shown; i++) {
        Todo__V1__TaskChange *ch = arena_alloc(a, sizeof *ch);
        todo__v1__task_change__init(ch);
        ch->version = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        ch->event_type = arena_strdup(a, PQgetvalue(r, i, 1));
        ch->time = qry_ts_of(a, r, i, 2);
        ch->actor = arena_strdup(a, PQgetvalue(r, i, 3));
        ch->correlation_id = arena_strdup(a, PQgetvalue(r, i, 4));
        /* Against the version before (read with it), or nothing before it. */
        bool has_before = i > 0; /* the version before it that the history holds */
        ch->fields = arena_alloc(a, N_HISTORY_FIELDS * sizeof *ch->fields);
        for (int f = 0; f < N_HISTORY_FIELDS; f++) {
            const char *now = history_text(f, PQgetvalue(r, i, 5 + f));
            const char *was = has_before ? history_text(f, PQgetvalue(r, i - 1, 5 + f)) : before_any[f];
            if (strcmp(now, was) == 0) continue;
            Todo__V1__FieldChange *fc = arena_alloc(a, sizeof *fc);
            todo__v1__field_change__init(fc);
            fc->field = (char *)history_fields[f];
            fc->old_value = arena_strdup(a, was);
            fc->new_value = arena_strdup(a, now);
            ch->fields[ch->n_fields++] = fc;
        }
        rs->changes[rs->n_changes++] = ch;
    }
    if (rows - start > size) rs->next_page_token = arena_printf(a, "%" PRId64, rs->changes[shown - 1]->version);
    PQclear(r);
    *resp = &rs->base;
    return TODO_OK;
}

/* The caller's feed position after which a WatchUpdates stream starts
 * (feed.updates: migration 0025). */
static int watch_start_position(grpcx_call *c, qry_thread *t, const char *user,
                                const Todo__V1__WatchUpdatesRequest *rq, int64_t *after, todo_err *err)
{
    const char *p[3] = {user};
    PGresult *r = pgx_exec(t->pg, "select coalesce((select position from feed.heads where user_id = $1), 0)", 1, p, err);
    if (r == NULL) return read_failed("reading the update feed", err);
    int64_t head = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    if (rq->consistency_token[0] != '\0') {
        char id[37], version[24];
        int64_t want;
        int rc;
        if ((rc = ctoken_decode(&t->cfg->token_key, user, rq->consistency_token, id, &want, err)) != 0) return rc;
        if ((rc = await_token(c, t, user, rq->consistency_token, err)) != 0) return rc;
        snprintf(version, sizeof version, "%" PRId64, want);
        p[1] = id;
        p[2] = version;
        if ((r = pgx_exec(t->pg,
                          "select position from feed.updates where user_id = $1 and entity_id = $2::uuid"
                          " and version = $3::bigint",
                          3, p, err)) == NULL)
            return read_failed("reading the update feed", err);
        bool found = PQntuples(r) > 0;
        if (found) *after = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
        if (!found)
            return todo_err_set(err, TODO_ERANGE,
                                "consistency_token: the feed no longer keeps the change it names (or never did:"
                                " it is older than the feed); read the current state again and watch from now");
        return TODO_OK;
    }
    if (rq->after_position == 0) {
        *after = head;
        return TODO_OK;
    }
    if (rq->after_position > head)
        return todo_err_set(err, TODO_ERANGE, "after_position: %" PRId64 " is ahead of the feed (its last position is %" PRId64 ")",
                            rq->after_position, head);
    *after = rq->after_position;
    if (rq->after_position == head) return TODO_OK;
    char next[24];
    snprintf(next, sizeof next, "%" PRId64, rq->after_position + 1);
    p[1] = next;
    if ((r = pgx_exec(t->pg, "select 1 from feed.updates where user_id = $1 and position = $2::bigint", 2, p, err)) ==
        NULL)
        return read_failed("reading the update feed", err);
    bool kept = PQntuples(r) > 0;
    PQclear(r);
    if (!kept)
        return todo_err_set(err, TODO_ERANGE,
                            "after_position: the feed no longer keeps the updates after %" PRId64
                            " (TODO_FEED_RETENTION_HOURS); read the current state again and watch from now",
                            rq->after_position);
    return TODO_OK;
}

/* GetProductivityStats: the analytics projection's facts grouped into the
 * caller's days (their time zone now: analytics.users). A day's overdue
 * count: its tasks due that day, before now, not deleted, and not done by
 * their due time. */
#define STATS_MAX_DAYS 366
#define STATS_ZONE "z as (select coalesce((select time_zone from analytics.users where user_id = $1), 'UTC') as tz)"

static int get_productivity_stats(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    if (grpcx_call_offload(c)) return TODO_OK; /* it waits on PostgreSQL: run in the read pool */
    const Todo__V1__GetProductivityStatsRequest *rq = (const Todo__V1__GetProductivityStatsRequest *)req;
    qry_thread *t = grpcx_call_state(c);
    arena *a = grpcx_call_arena(c);
    char user[AUTH_USER_MAX];
    int rc;

    if ((rc = begin(c, t, user, err)) != 0) return rc;
    if ((rc = qry_date_range(rq->from_date, "from_date", rq->to_date, "to_date", STATS_MAX_DAYS, err)) != 0) return rc;
    const char *p[3] = {user, rq->from_date, rq->to_date};
    PGresult *r = pgx_exec(
        t->pg,
        "with " STATS_ZONE ","
        " b as (select $2::date::timestamp at time zone z.tz as lo, ($3::date + 1)::timestamp at time zone z.tz as hi,"
        "  z.tz from z),"
        " act as (select (a.at at time zone b.tz)::date as day, count(*) filter (where a.kind = 'created') as created,"
        "  count(*) filter (where a.kind = 'completed') as completed,"
        "  count(*) filter (where a.kind = 'reopened') as reopened,"
        "  sum(a.seconds_to_complete) filter (where a.kind = 'completed') as secs,"
        "  count(a.seconds_to_complete) filter (where a.kind = 'completed') as timed"
        "  from analytics.activity a, b where a.user_id = $1 and a.at >= b.lo and a.at < b.hi group by 1),"
        " od as (select (k.due_at at time zone b.tz)::date as day, count(*) as overdue from analytics.tasks k, b"
        "  where k.user_id = $1 and k.due_at >= b.lo and k.due_at < b.hi and k.due_at < now() and not k.deleted"
        "  and (not k.completed or k.completed_at > k.due_at) group by 1)"
        " select to_char(d, 'YYYY-MM-DD'), coalesce(act.created, 0), coalesce(act.completed, 0),"
        " coalesce(act.reopened, 0), coalesce(od.overdue, 0), coalesce(act.secs, 0), coalesce(act.timed, 0),"
        " (select tz from z) from generate_series($2::date, $3::date, interval '1 day') d"
        " left join act on act.day = d::date left join od on od.day = d::date order by d",
        3, p, err);
    if (r == NULL) return read_failed("reading the productivity statistics", err);
    Todo__V1__ProductivityStats *rs = arena_alloc(a, sizeof *rs);
    todo__v1__productivity_stats__init(rs);
    Todo__V1__DayStats *total = arena_alloc(a, sizeof *total);
    todo__v1__day_stats__init(total);
    rs->total = total;
    rs->days = arena_alloc(a, (size_t)(PQntuples(r) + 1) * sizeof *rs->days);
    double secs = 0, timed = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        Todo__V1__DayStats *d = arena_alloc(a, sizeof *d);
        todo__v1__day_stats__init(d);
        d->date = arena_strdup(a, PQgetvalue(r, i, 0));
        d->created = atoi(PQgetvalue(r, i, 1));
        d->completed = atoi(PQgetvalue(r, i, 2));
        d->reopened = atoi(PQgetvalue(r, i, 3));
        d->overdue = atoi(PQgetvalue(r, i, 4));
        double s = strtod(PQgetvalue(r, i, 5), NULL), n = strtod(PQgetvalue(r, i, 6), NULL);
        d->average_completion_seconds = n > 0 ? s / n : 0;
        secs += s;
        timed += n;
        total->created += d->created;
        total->completed += d->completed;
        total->reopened += d->reopened;
        total->overdue += d->overdue;
        rs->days[rs->n_days++] = d;
    }
    total->average_completion_seconds = timed > 0 ? secs / timed : 0;
    rs->time_zone = arena_strdup(a, PQntuples(r) > 0 ? PQgetvalue(r, 0, 7) : "UTC");
    PQclear(r);
    /* Streaks: runs of consecutive days with a completion (a run's days
     * minus their rank are one date); the current one ends today or
     * yesterday. */
    r = pgx_exec(t->pg,
                 "with " STATS_ZONE ","
                 " d as (select distinct (a.at at time zone z.tz)::date as day from analytics.activity a, z"
                 "  where a.user_id = $1 and a.kind = 'completed'),"
                 " runs as (select max(day) as last, count(*) as n from"
                 "  (select day, day - (row_number() over (order by day))::int as grp from d) g group by grp)"
                 " select coalesce(max(n), 0), coalesce((select n from runs, z"
                 "  where last >= (now() at time zone z.tz)::date - 1 order by last desc limit 1), 0) from runs",
                 1, p, err);
    if (r == NULL) return read_failed("reading the productivity streaks", err);
    rs->longest_streak_days = atoi(PQgetvalue(r, 0, 0));
    rs->current_streak_days = atoi(PQgetvalue(r, 0, 1));
    PQclear(r);
    *resp = &rs->base;
    return TODO_OK;
}

static int watch_updates(grpcx_call *c, const ProtobufCMessage *req, grpcx_server_stream *st, todo_err *err)
{
    const Todo__V1__WatchUpdatesRequest *rq = (const Todo__V1__WatchUpdatesRequest *)req;
    qry_thread *t = grpcx_call_state(c);
    char user[AUTH_USER_MAX];
    int64_t after = 0;
    int rc;

    if ((rc = begin(c, t, user, err)) != 0) return rc;
    if (rq->after_position < 0)
        return todo_err_set(err, TODO_EINVAL, "after_position: must be 0 (from now) or a position, got %" PRId64,
                            rq->after_position);
    if (rq->after_position > 0 && rq->consistency_token[0] != '\0')
        return todo_err_set(err, TODO_EINVAL, "give after_position or consistency_token, not both");
    if ((rc = watch_start_position(c, t, user, rq, &after, err)) != 0) return rc;
    return qry_watch_add(t->watch, st, user, after, err);
}

int qry_service_register(grpcx_server *s, todo_err *err)
{
    static const grpcx_method methods[] = {
        {"GetTask", get_task},
        {"ListTasks", list_tasks},
        {"SearchTasks", search_tasks},
        {"GetTaskStats", get_task_stats},
        {"ListReminders", list_reminders},
        {"ListNotifications", list_notifications},
        {"WatchUpdates", NULL, watch_updates},
        {"GetTaskActivity", get_task_activity},
        {"GetTaskHistory", get_task_history},
        {"GetProductivityStats", get_productivity_stats},
    };
    return grpcx_server_add_service(s, &todo__v1__task_query_service__descriptor, methods,
                                    sizeof methods / sizeof methods[0], err);
}
