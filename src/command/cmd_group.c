/* cmd_group: see cmd_group.h. */
#include "cmd_group.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "log.h"
#include "metrics.h"
#include "pgx.h"

static metric_series *m_saves, *m_solo;
static pthread_once_t m_once = PTHREAD_ONCE_INIT;

static void init_metrics(void)
{
    static const double b[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000};
    m_saves = metric_only(metric_histogram("todo_group_commit_saves",
                                           "Saves written by one group-commit transaction.", NULL, b,
                                           (int)(sizeof b / sizeof b[0])));
    m_solo = metric_only(metric_counter("todo_group_commit_solo_total",
                                        "Saves written alone because a row lock held them in a group.", NULL));
}

typedef struct pending {
    const cmd_write *w;
    int rc;
    todo_err err;
    int64_t position;
    bool done;
    pthread_cond_t cv;
    struct pending *next;
} pending;

struct cmd_group {
    pthread_mutex_t mu;
    pending *head, *tail;   /* saves waiting for a transaction */
    bool leading;           /* a caller is writing a batch */
    int max_batch;
    char lock_timeout[48];  /* "set local lock_timeout = '<ms>ms'" */
    int64_t batches, saves, solo;
};

static void finish(cmd_group *g, pending *p, int rc, const todo_err *err, int64_t position)
{
    pthread_mutex_lock(&g->mu);
    p->rc = rc;
    if (rc != 0 && err != NULL) p->err = *err;
    p->position = position;
    p->done = true;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&g->mu);
}

/* Runs each save of the batch in a transaction of its own (after the
 * batch failed), lock waits bounded as in the batch. */
static void one_by_one(cmd_group *g, PGconn *pg, pending **batch, int n, const pgx_stmt *st)
{
    for (int i = 0; i < n; i++) {
        todo_err err;
        int64_t position = 0;
        pgx_stmt one[4] = {{.sql = "begin"}, {.sql = g->lock_timeout}, st[i], {.sql = "commit"}};
        PGresult *res[4] = {0};
        int rc = pgx_pipeline(pg, one, 4, res, NULL, &err);
        if (rc == TODO_OK) rc = cmd_store_saved(res[2], batch[i]->w, &position, &err);
        else if (PQstatus(pg) == CONNECTION_OK && PQtransactionStatus(pg) != PQTRANS_IDLE)
            pgx_cmd(pg, "rollback", 0, NULL, NULL);
        for (int k = 0; k < 4; k++) PQclear(res[k]);
        finish(g, batch[i], rc, &err, position);
    }
}

static void run_batch(cmd_group *g, PGconn *pg, arena *a, pending **batch, int n)
{
    todo_err err;
    pgx_stmt *st = arena_calloc(a, (size_t)(n + 3) * sizeof *st);
    PGresult **res = arena_calloc(a, (size_t)(n + 3) * sizeof *res);
    st[0] = (pgx_stmt){.sql = "begin"};
    st[1] = (pgx_stmt){.sql = g->lock_timeout};
    for (int i = 0; i < n; i++) cmd_store_save_stmt(a, batch[i]->w, &st[i + 2]);
    st[n + 2] = (pgx_stmt){.sql = "commit"};
    int failed = -1;
    int rc = pgx_pipeline(pg, st, n + 3, res, &failed, &err);
    if (rc == TODO_OK) {
        for (int i = 0; i < n; i++) {
            int64_t position = 0;
            todo_err one;
            int src = cmd_store_saved(res[i + 2], batch[i]->w, &position, &one);
            finish(g, batch[i], src, &one, position);
        }
        for (int i = 0; i < n + 3; i++) PQclear(res[i]);
        pthread_mutex_lock(&g->mu);
        g->batches++;
        g->saves += n;
        pthread_mutex_unlock(&g->mu);
        pthread_once(&m_once, init_metrics);
        metric_observe(m_saves, n);
        return;
    }
    if (rc == TODO_EUNAVAIL || PQstatus(pg) != CONNECTION_OK) {
        for (int i = 0; i < n; i++) finish(g, batch[i], TODO_EUNAVAIL, &err, 0);
        return;
    }
    /* A statement failed: nothing of the batch is committed. */
    if (PQtransactionStatus(pg) != PQTRANS_IDLE) pgx_cmd(pg, "rollback", 0, NULL, NULL);
    if (n == 1) {
        finish(g, batch[0], rc, &err, 0);
        return;
    }
    log_warn("command", "a grouped save failed; saving the batch one by one", "saves=%d failed=%d error=\"%s\"", n,
             failed, err.msg);
    one_by_one(g, pg, batch, n, st + 2);
}

cmd_group *cmd_group_new(int max_batch, int lock_timeout_ms)
{
    cmd_group *g = calloc(1, sizeof *g);
    if (g == NULL) return NULL;
    pthread_mutex_init(&g->mu, NULL);
    g->max_batch = max_batch < 1 ? 1 : max_batch;
    snprintf(g->lock_timeout, sizeof g->lock_timeout, "set local lock_timeout = '%dms'",
             lock_timeout_ms < 1 ? 1 : lock_timeout_ms);
    return g;
}

void cmd_group_free(cmd_group *g)
{
    if (g == NULL) return;
    pthread_mutex_destroy(&g->mu);
    free(g);
}

int cmd_group_save(cmd_group *g, PGconn *pg, arena *a, const cmd_write *w, int64_t *position, todo_err *err)
{
    pending p = {.w = w};
    pthread_cond_init(&p.cv, NULL);
    pthread_mutex_lock(&g->mu);
    if (g->tail != NULL) g->tail->next = &p;
    else g->head = &p;
    g->tail = &p;
    while (!p.done) {
        if (g->leading) {
            pthread_cond_wait(&p.cv, &g->mu);
            continue;
        }
        /* Lead: take what is queued (this save among it) and write it. */
        g->leading = true;
        pending **batch = arena_alloc(a, (size_t)g->max_batch * sizeof *batch);
        int n = 0;
        while (g->head != NULL && n < g->max_batch) {
            batch[n++] = g->head;
            g->head = g->head->next;
        }
        if (g->head == NULL) g->tail = NULL;
        pthread_mutex_unlock(&g->mu);
        run_batch(g, pg, a, batch, n);
        pthread_mutex_lock(&g->mu);
        g->leading = false;
        /* Saves queued meanwhile: the first of them leads next. */
        if (g->head != NULL) pthread_cond_signal(&g->head->cv);
    }
    if (p.rc == TODO_ELOCKED) {
        g->solo++;
        pthread_once(&m_once, init_metrics);
        metric_add(m_solo, 1);
    }
    pthread_mutex_unlock(&g->mu);
    pthread_cond_destroy(&p.cv);
    if (p.rc == TODO_ELOCKED) {
        /* Blocked on a row lock: wait for it alone, holding nobody else. */
        static const cmd_request none = {.request_id = ""};
        return cmd_store_save(pg, w, &none, position, err);
    }
    if (p.rc != 0) {
        *err = p.err;
        return p.rc;
    }
    *position = p.position;
    return TODO_OK;
}

void cmd_group_stats(cmd_group *g, int64_t *batches, int64_t *saves, int64_t *solo)
{
    pthread_mutex_lock(&g->mu);
    *batches = g->batches;
    *saves = g->saves;
    *solo = g->solo;
    pthread_mutex_unlock(&g->mu);
}
