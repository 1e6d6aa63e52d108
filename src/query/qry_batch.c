/* qry_batch: see qry_batch.h. */
#include "qry_batch.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "arena.h"
#include "auth.h"
#include "pgx.h"
#include "qry_page.h"

/* A statement's answer, shared by the lookups of its batch: the last to
 * be done with it clears it. */
typedef struct shared {
    PGresult *r;
    atomic_int refs;
} shared;

typedef struct lookup {
    const char *id, *user;
    int limit, *rows, n_rows; /* lists */
    shared *res;
    int row, rc;
    todo_err err;
    bool done;
    struct lookup *next;
    /* A pumped read (qry_batch_get_later): its copies and its answer. */
    char id_copy[40], user_copy[AUTH_USER_MAX];
    qry_batch_answer answer;
    void *ctx;
} lookup;

struct qry_batch {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    lookup *head, *tail;
    bool busy;     /* a statement is in flight */
    int in_flight; /* its lookups */
    int max_batch;
    qry_batch_kind kind;
    char *one_sql, *many_sql;
    int64_t statements, reads;
    /* The pump: threads with their own connections that run what is queued. */
    pthread_t pumps[8];
    int n_pumps;
    bool stopping;
    char *pg_url;
};

qry_batch *qry_batch_new(qry_batch_kind kind, int max_batch)
{
    qry_batch *b = calloc(1, sizeof *b);
    if (b == NULL) return NULL;
    size_t n = strlen(qry_task_select) + 512;
    b->one_sql = malloc(n);
    b->many_sql = malloc(n);
    if (b->one_sql == NULL || b->many_sql == NULL) {
        free(b->one_sql);
        free(b->many_sql);
        free(b);
        return NULL;
    }
    if (kind == QRY_BATCH_GET) {
        snprintf(b->one_sql, n, "%s from read.tasks where id = $1 and user_id = $2 and not deleted", qry_task_select);
        snprintf(b->many_sql, n,
                 "%s from read.tasks join unnest($1::uuid[], $2::text[]) k(kid, kuser)"
                 " on id = k.kid and user_id = k.kuser where not deleted",
                 qry_task_select);
    } else {
        /* As ListTasks alone (qry_list_sql), and for many: each user's page
         * from the same index, numbered by its place in the arrays. */
        const char *key = qry_sort_text(QRY_SORT_CREATED_AT);
        snprintf(b->one_sql, n,
                 "%s, %s as page_key from read.tasks where user_id = $1 and not deleted"
                 " order by created_at desc, tasks.id desc limit $2",
                 qry_task_select, key);
        snprintf(b->many_sql, n,
                 "select t.*, k.n from unnest($1::text[], $2::int[]) with ordinality k(kuser, klim, n)"
                 " cross join lateral (%s, %s as page_key from read.tasks where user_id = k.kuser and not deleted"
                 " order by created_at desc, tasks.id desc limit k.klim) t",
                 qry_task_select, key);
    }
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->kind = kind;
    b->max_batch = max_batch < 1 ? 1 : max_batch;
    return b;
}

void qry_batch_free(qry_batch *b)
{
    if (b == NULL) return;
    pthread_mutex_lock(&b->mu);
    b->stopping = true;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < b->n_pumps; i++) pthread_join(b->pumps[i], NULL);
    free(b->pg_url);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b->one_sql);
    free(b->many_sql);
    free(b);
}

/* Row x of r after row y in a page, newest first: page key (text of
 * created_at, ordered as the times are), then id, descending. */
static bool after(const PGresult *r, int x, int y)
{
    int c = strcmp(PQgetvalue(r, x, 15), PQgetvalue(r, y, 15));
    return c < 0 || (c == 0 && strcmp(PQgetvalue(r, x, 0), PQgetvalue(r, y, 0)) < 0);
}

/* Each list's rows of r: those numbered with its place among the n
 * (column 16), in page order. PostgreSQL returns them so (a nested loop
 * over the arrays); the insertion keeps it so whatever the plan. */
static void pages_of(const PGresult *r, lookup *first, int n)
{
    lookup **at = calloc((size_t)n, sizeof *at);
    if (at == NULL) abort();
    int place = 0;
    for (lookup *l = first; l != NULL; l = l->next) {
        l->n_rows = 0;
        at[place++] = l;
    }
    for (int i = 0, rows = PQntuples(r); i < rows; i++) {
        int k = atoi(PQgetvalue(r, i, 16)) - 1;
        if (k < 0 || k >= n || at[k]->n_rows >= at[k]->limit) continue;
        lookup *l = at[k];
        int j = l->n_rows++;
        while (j > 0 && after(r, l->rows[j - 1], i)) {
            l->rows[j] = l->rows[j - 1];
            j--;
        }
        l->rows[j] = i;
    }
    free(at);
}

/* The arrays of a batch: {a,b,...} of each read's text (quoted: user ids
 * are [A-Za-z0-9._@:-], ids UUIDs) or number. */
static char *array_of(lookup *first, int what)
{
    size_t len = 3;
    for (lookup *l = first; l != NULL; l = l->next) len += (what == 0 ? strlen(l->id) : what == 1 ? strlen(l->user) : 11) + 3;
    char *out = malloc(len), *p = out;
    if (out == NULL) abort();
    *p++ = '{';
    for (lookup *l = first; l != NULL; l = l->next) {
        const char *sep = l == first ? "" : ",";
        if (what == 0) p += sprintf(p, "%s%s", sep, l->id);
        else if (what == 1) p += sprintf(p, "%s\"%s\"", sep, l->user);
        else p += sprintf(p, "%s%d", sep, l->limit);
    }
    strcpy(p, "}");
    return out;
}

/* Runs the n reads from first (a detached list) on pg, setting each one's
 * res, row or rows, rc and err. */
static void run(qry_batch *b, PGconn *pg, lookup *first, int n)
{
    todo_err err;
    PGresult *r;
    bool get = b->kind == QRY_BATCH_GET;
    if (n == 1) {
        char limit[16];
        snprintf(limit, sizeof limit, "%d", first->limit);
        const char *p[2] = {get ? first->id : first->user, get ? first->user : limit};
        r = pgx_exec(pg, b->one_sql, 2, p, &err);
    } else {
        char *a0 = array_of(first, get ? 0 : 1), *a1 = array_of(first, get ? 1 : 2);
        const char *p[2] = {a0, a1};
        r = pgx_exec(pg, b->many_sql, 2, p, &err);
        free(a0);
        free(a1);
    }
    shared *s = r != NULL ? malloc(sizeof *s) : NULL;
    if (r != NULL && s == NULL) abort();
    if (s != NULL) {
        s->r = r;
        atomic_init(&s->refs, n);
    }
    int rows = r != NULL ? PQntuples(r) : 0;
    for (lookup *l = first; l != NULL; l = l->next) {
        l->res = s;
        l->row = -1;
        l->rc = s != NULL ? TODO_OK : TODO_EUNAVAIL;
        if (s == NULL) l->err = err;
        if (!get && s != NULL && n == 1) {
            l->n_rows = rows < l->limit ? rows : l->limit;
            for (int i = 0; i < l->n_rows; i++) l->rows[i] = i;
        }
        for (int i = 0; get && i < rows && l->row < 0; i++)
            if (strcasecmp(PQgetvalue(r, i, 0), l->id) == 0 && strcmp(PQgetvalue(r, i, 1), l->user) == 0) l->row = i;
    }
    if (!get && s != NULL && n > 1) pages_of(r, first, n);
}

/* Takes the oldest max_batch queued lookups (the queue is not empty) as a
 * detached list, their count in *n; under b->mu. */
static lookup *take(qry_batch *b, int *n)
{
    lookup *first = b->head, *last = first;
    *n = 1;
    while (*n < b->max_batch && last->next != NULL) {
        last = last->next;
        (*n)++;
    }
    b->head = last->next;
    if (b->head == NULL) b->tail = NULL;
    last->next = NULL;
    return first;
}

/* Queues me and returns once a statement answered it. */
static int read_one(qry_batch *b, PGconn *pg, lookup *me, qry_found *out, todo_err *err)
{
    pthread_mutex_lock(&b->mu);
    if (b->tail != NULL) b->tail->next = me;
    else b->head = me;
    b->tail = me;
    while (!me->done) {
        if (b->busy) {
            pthread_cond_wait(&b->cv, &b->mu);
            continue;
        }
        /* Lead: take the oldest max_batch lookups (this one among them,
         * unless more than that were waiting before it). */
        b->busy = true;
        int n;
        lookup *first = take(b, &n);
        b->in_flight = n;
        pthread_mutex_unlock(&b->mu);
        run(b, pg, first, n);
        pthread_mutex_lock(&b->mu);
        /* Once done is set and the lock is let go, a follower returns and
         * its lookup (on its stack) is gone: nothing is read after. */
        for (lookup *l = first, *next; l != NULL; l = next) {
            next = l->next;
            l->done = true;
        }
        b->busy = false;
        b->in_flight = 0;
        b->statements++;
        b->reads += n;
        pthread_cond_broadcast(&b->cv);
    }
    pthread_mutex_unlock(&b->mu);
    if (me->rc != TODO_OK) {
        if (err != NULL) *err = me->err;
        return me->rc;
    }
    out->r = me->res->r;
    out->row = me->row;
    out->ref = me->res;
    return TODO_OK;
}

int qry_batch_get(qry_batch *b, PGconn *pg, const char *id, const char *user, qry_found *out, todo_err *err)
{
    lookup me = {.id = id, .user = user, .row = -1};
    return read_one(b, pg, &me, out, err);
}

int qry_batch_list(qry_batch *b, PGconn *pg, const char *user, int limit, int *rows, int *n_rows, qry_found *out,
                   todo_err *err)
{
    lookup me = {.user = user, .limit = limit, .rows = rows, .row = -1};
    int rc = read_one(b, pg, &me, out, err);
    *n_rows = rc == TODO_OK ? me.n_rows : 0;
    return rc;
}

void qry_batch_done(qry_found *f)
{
    shared *s = f->ref;
    if (s == NULL) return;
    if (atomic_fetch_sub(&s->refs, 1) == 1) {
        PQclear(s->r);
        free(s);
    }
    f->ref = NULL;
    f->r = NULL;
}

void qry_batch_stats(qry_batch *b, int64_t *statements, int64_t *reads)
{
    pthread_mutex_lock(&b->mu);
    *statements = b->statements;
    *reads = b->reads;
    pthread_mutex_unlock(&b->mu);
}

int qry_batch_waiting(qry_batch *b)
{
    int n = 0;
    pthread_mutex_lock(&b->mu);
    for (lookup *l = b->head; l != NULL; l = l->next) n++;
    pthread_mutex_unlock(&b->mu);
    return n;
}

int qry_batch_in_flight(qry_batch *b)
{
    pthread_mutex_lock(&b->mu);
    int n = b->in_flight;
    pthread_mutex_unlock(&b->mu);
    return n;
}

/* ---- the pump ---- */

typedef struct pump_arg {
    qry_batch *b;
    int index;
} pump_arg;

static void *pump_main(void *arg)
{
    pump_arg pa = *(pump_arg *)arg;
    free(arg);
    qry_batch *b = pa.b;
    PGconn *pg = NULL;
    char app_name[32];
    snprintf(app_name, sizeof app_name, "todo-query-%s-pump-%d", b->kind == QRY_BATCH_GET ? "get" : "list", pa.index);
    arena *a = arena_new();
    if (a == NULL) abort();
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (b->head == NULL && !b->stopping) pthread_cond_wait(&b->cv, &b->mu);
        if (b->head == NULL) break; /* stopping, with nothing left to answer */
        int n;
        lookup *first = take(b, &n);
        b->in_flight += n;
        pthread_mutex_unlock(&b->mu);
        todo_err err;
        if (pgx_ensure(&pg, b->pg_url, app_name, &err) != 0) {
            todo_err_set(&err, TODO_EUNAVAIL, "the read database is unreachable; retry later");
            for (lookup *l = first; l != NULL; l = l->next) {
                l->rc = TODO_EUNAVAIL;
                l->err = err;
                l->res = NULL;
            }
        } else {
            run(b, pg, first, n);
        }
        for (lookup *l = first, *next; l != NULL; l = next) {
            next = l->next;
            qry_pumped p = {.rc = l->rc, .err = &l->err, .id = l->id, .limit = l->limit, .rows = l->rows,
                            .n_rows = l->n_rows,
                            .f = {.r = l->res != NULL ? l->res->r : NULL, .row = l->row, .ref = l->res}};
            arena_reset(a);
            l->answer(l->ctx, &p, a);
            qry_batch_done(&p.f);
            free(l->rows);
            free(l);
        }
        pthread_mutex_lock(&b->mu);
        b->in_flight -= n;
        b->statements++;
        b->reads += n;
    }
    pthread_mutex_unlock(&b->mu);
    pgx_close(pg);
    arena_free(a);
    return NULL;
}

int qry_batch_pump(qry_batch *b, const char *pg_url, int threads, todo_err *err)
{
    if (threads < 1 || threads > (int)(sizeof b->pumps / sizeof b->pumps[0]))
        return todo_err_set(err, TODO_EINVAL, "1 to 8 pump threads");
    b->pg_url = strdup(pg_url);
    if (b->pg_url == NULL) return todo_err_set(err, TODO_EINTERNAL, "out of memory");
    for (int i = 0; i < threads; i++) {
        pump_arg *pa = malloc(sizeof *pa);
        if (pa == NULL) abort();
        *pa = (pump_arg){b, i};
        if (pthread_create(&b->pumps[i], NULL, pump_main, pa) != 0) abort();
        b->n_pumps++;
    }
    return TODO_OK;
}

bool qry_batch_pumped(const qry_batch *b) { return b->n_pumps > 0; }

static void queue_later(qry_batch *b, lookup *l, const char *user, qry_batch_answer answer, void *ctx)
{
    snprintf(l->user_copy, sizeof l->user_copy, "%s", user);
    l->id = l->id_copy;
    l->user = l->user_copy;
    l->row = -1;
    l->answer = answer;
    l->ctx = ctx;
    pthread_mutex_lock(&b->mu);
    if (b->tail != NULL) b->tail->next = l;
    else b->head = l;
    b->tail = l;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

void qry_batch_get_later(qry_batch *b, const char *id, const char *user, qry_batch_answer answer, void *ctx)
{
    lookup *l = calloc(1, sizeof *l);
    if (l == NULL) abort();
    snprintf(l->id_copy, sizeof l->id_copy, "%s", id);
    queue_later(b, l, user, answer, ctx);
}

void qry_batch_list_later(qry_batch *b, const char *user, int limit, qry_batch_answer answer, void *ctx)
{
    lookup *l = calloc(1, sizeof *l);
    if (l == NULL) abort();
    l->limit = limit;
    l->rows = calloc((size_t)limit, sizeof *l->rows);
    if (l->rows == NULL) abort();
    queue_later(b, l, user, answer, ctx);
}
