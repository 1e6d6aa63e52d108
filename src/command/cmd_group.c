/* cmd_group: see cmd_group.h. */
#include "cmd_group.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "log.h"
#include "pgx.h"

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
    int64_t batches, saves;
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

/* Runs each save of the batch on its own (after the batch failed). */
static void one_by_one(cmd_group *g, PGconn *pg, pending **batch, int n, const pgx_stmt *st)
{
    for (int i = 0; i < n; i++) {
        todo_err err;
        int64_t position = 0;
        PGresult *r = pgx_execb(pg, st[i].sql, st[i].n, st[i].values, st[i].lengths, st[i].formats, &err);
        int rc = r != NULL ? cmd_store_saved(r, batch[i]->w, &position, &err) : err.code;
        PQclear(r);
        finish(g, batch[i], rc, &err, position);
    }
}

static void run_batch(cmd_group *g, PGconn *pg, arena *a, pending **batch, int n)
{
    todo_err err;
    pgx_stmt *st = arena_calloc(a, (size_t)(n + 2) * sizeof *st);
    PGresult **res = arena_calloc(a, (size_t)(n + 2) * sizeof *res);
    st[0] = (pgx_stmt){.sql = "begin"};
    for (int i = 0; i < n; i++) cmd_store_save_stmt(a, batch[i]->w, &st[i + 1]);
    st[n + 1] = (pgx_stmt){.sql = "commit"};
    int failed = -1;
    int rc = pgx_pipeline(pg, st, n + 2, res, &failed, &err);
    if (rc == TODO_OK) {
        for (int i = 0; i < n; i++) {
            int64_t position = 0;
            todo_err one;
            int src = cmd_store_saved(res[i + 1], batch[i]->w, &position, &one);
            finish(g, batch[i], src, &one, position);
        }
        for (int i = 0; i < n + 2; i++) PQclear(res[i]);
        pthread_mutex_lock(&g->mu);
        g->batches++;
        g->saves += n;
        pthread_mutex_unlock(&g->mu);
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
    one_by_one(g, pg, batch, n, st + 1);
}

cmd_group *cmd_group_new(int max_batch)
{
    cmd_group *g = calloc(1, sizeof *g);
    if (g == NULL) return NULL;
    pthread_mutex_init(&g->mu, NULL);
    g->max_batch = max_batch < 1 ? 1 : max_batch;
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
    pthread_mutex_unlock(&g->mu);
    pthread_cond_destroy(&p.cv);
    if (p.rc != 0) {
        *err = p.err;
        return p.rc;
    }
    *position = p.position;
    return TODO_OK;
}

void cmd_group_stats(cmd_group *g, int64_t *batches, int64_t *saves)
{
    pthread_mutex_lock(&g->mu);
    *batches = g->batches;
    *saves = g->saves;
    pthread_mutex_unlock(&g->mu);
}
