/* probe: see probe.h. */
#include "probe.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "log.h"
#include "pgx.h"

struct probe {
    grpcx_server *s;
    const char *component, *pg_url;
    bool (*kafka_ready)(void *ctx);
    void *ctx;
    PGconn *pg;
    int pg_up, kafka_up;  /* last reported: -1 unknown */
    atomic_int stop;
    pthread_t thread;
};

static void check(probe *p)
{
    todo_err err;
    char app[64];
    snprintf(app, sizeof app, "%s-probe", p->component);
    PGresult *r = NULL;
    if (pgx_ensure(&p->pg, p->pg_url, app, &err) == 0) r = pgx_exec(p->pg, "select 1", 0, NULL, &err);
    int up = r != NULL;
    PQclear(r);
    if (!up) {
        pgx_close(p->pg);
        p->pg = NULL;
    }
    if (up != p->pg_up) {
        if (up) log_info(p->component, "postgresql answers: ready", NULL);
        else log_warn(p->component, "postgresql does not answer: not serving", "error=\"%s\"", err.msg);
    }
    p->pg_up = up;
    grpcx_server_set_health(p->s, "postgresql", true, up);
    if (p->kafka_ready == NULL) return;
    up = p->kafka_ready(p->ctx);
    if (up != p->kafka_up && p->kafka_up != -1)
        log_info(p->component, up ? "kafka takes events again" : "kafka cannot take events; the outbox holds them",
                 NULL);
    p->kafka_up = up;
    grpcx_server_set_health(p->s, "kafka", false, up);
}

static void *probe_main(void *arg)
{
    probe *p = arg;
    while (!atomic_load(&p->stop)) {
        for (int i = 0; i < 10 && !atomic_load(&p->stop); i++) {
            struct timespec ts = {0, 100 * 1000000};
            nanosleep(&ts, NULL);
        }
        if (!atomic_load(&p->stop)) check(p);
    }
    /* Closed here: the statements it prepared are remembered by this
     * thread (pgx), and forgotten only by the thread that closes it. */
    pgx_close(p->pg);
    p->pg = NULL;
    return NULL;
}

probe *probe_start(grpcx_server *s, const char *component, const char *pg_url, bool (*kafka_ready)(void *ctx),
                   void *ctx)
{
    probe *p = calloc(1, sizeof *p);
    if (p == NULL) return NULL;
    *p = (probe){.s = s, .component = component, .pg_url = pg_url, .kafka_ready = kafka_ready, .ctx = ctx,
                 .pg_up = -1, .kafka_up = -1};
    check(p);
    pgx_close(p->pg); /* its statements were prepared on this thread, not the probe's */
    p->pg = NULL;
    if (pthread_create(&p->thread, NULL, probe_main, p) != 0) {
        pgx_close(p->pg);
        free(p);
        return NULL;
    }
    return p;
}

void probe_stop(probe *p)
{
    if (p == NULL) return;
    atomic_store(&p->stop, 1);
    pthread_join(p->thread, NULL); /* the thread closed its connection */
    free(p);
}
