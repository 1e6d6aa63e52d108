/* qry_batch: see qry_batch.h. */
#include "qry_batch.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
    shared *res;
    int row, rc;
    todo_err err;
    bool done;
    struct lookup *next;
} lookup;

struct qry_batch {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    lookup *head, *tail;
    bool busy;     /* a statement is in flight */
    int in_flight; /* its lookups */
    int max_batch;
    char *one_sql, *many_sql;
    int64_t statements, lookups;
};

qry_batch *qry_batch_new(int max_batch)
{
    qry_batch *b = calloc(1, sizeof *b);
    if (b == NULL) return NULL;
    size_t n = strlen(qry_task_select) + 256;
    b->one_sql = malloc(n);
    b->many_sql = malloc(n);
    if (b->one_sql == NULL || b->many_sql == NULL) {
        free(b->one_sql);
        free(b->many_sql);
        free(b);
        return NULL;
    }
    snprintf(b->one_sql, n, "%s from read.tasks where id = $1 and user_id = $2 and not deleted", qry_task_select);
    snprintf(b->many_sql, n,
             "%s from read.tasks join unnest($1::uuid[], $2::text[]) k(kid, kuser) on id = k.kid and user_id = k.kuser"
             " where not deleted",
             qry_task_select);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->max_batch = max_batch < 1 ? 1 : max_batch;
    return b;
}

void qry_batch_free(qry_batch *b)
{
    if (b == NULL) return;
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b->one_sql);
    free(b->many_sql);
    free(b);
}

/* Runs the n lookups from first (a detached list) on pg, setting each
 * one's res, row, rc and err. */
static void run(qry_batch *b, PGconn *pg, lookup *first, int n)
{
    todo_err err;
    PGresult *r;
    if (n == 1) {
        const char *p[2] = {first->id, first->user};
        r = pgx_exec(pg, b->one_sql, 2, p, &err);
    } else {
        /* Array literals: ids are UUIDs, user ids [A-Za-z0-9._@:-] (quoted
         * all the same). */
        size_t ids_len = 2, users_len = 2;
        for (lookup *l = first; l != NULL; l = l->next) {
            ids_len += strlen(l->id) + 1;
            users_len += strlen(l->user) + 3;
        }
        char *ids = malloc(ids_len + 1), *users = malloc(users_len + 1);
        if (ids == NULL || users == NULL) abort();
        char *pi = ids, *pu = users;
        *pi++ = '{';
        *pu++ = '{';
        for (lookup *l = first; l != NULL; l = l->next) {
            const char *sep = l == first ? "" : ",";
            pi += sprintf(pi, "%s%s", sep, l->id);
            pu += sprintf(pu, "%s\"%s\"", sep, l->user);
        }
        strcpy(pi, "}");
        strcpy(pu, "}");
        const char *p[2] = {ids, users};
        r = pgx_exec(pg, b->many_sql, 2, p, &err);
        free(ids);
        free(users);
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
        for (int i = 0; i < rows && l->row < 0; i++)
            if (strcasecmp(PQgetvalue(r, i, 0), l->id) == 0 && strcmp(PQgetvalue(r, i, 1), l->user) == 0) l->row = i;
    }
}

int qry_batch_get(qry_batch *b, PGconn *pg, const char *id, const char *user, qry_found *out, todo_err *err)
{
    lookup me = {.id = id, .user = user, .row = -1};
    pthread_mutex_lock(&b->mu);
    if (b->tail != NULL) b->tail->next = &me;
    else b->head = &me;
    b->tail = &me;
    while (!me.done) {
        if (b->busy) {
            pthread_cond_wait(&b->cv, &b->mu);
            continue;
        }
        /* Lead: take the oldest max_batch lookups (this one among them,
         * unless more than that were waiting before it). */
        b->busy = true;
        lookup *first = b->head, *last = first;
        int n = 1;
        while (n < b->max_batch && last->next != NULL) {
            last = last->next;
            n++;
        }
        b->head = last->next;
        if (b->head == NULL) b->tail = NULL;
        last->next = NULL;
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
        b->lookups += n;
        pthread_cond_broadcast(&b->cv);
    }
    pthread_mutex_unlock(&b->mu);
    if (me.rc != TODO_OK) {
        if (err != NULL) *err = me.err;
        return me.rc;
    }
    out->r = me.res->r;
    out->row = me.row;
    out->ref = me.res;
    return TODO_OK;
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

void qry_batch_stats(qry_batch *b, int64_t *statements, int64_t *lookups)
{
    pthread_mutex_lock(&b->mu);
    *statements = b->statements;
    *lookups = b->lookups;
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
