/*
 * todoctl outbox: the command side's outbox (docs/OPERATIONS.md, "The
 * outbox and parked events").
 *
 *   todoctl outbox                         backlog, parked events, the active relay
 *   todoctl outbox parked                  each parked event: why, how big, what waits behind it
 *   todoctl outbox retry POSITION          the relay tries it again (after the cause was fixed)
 *   todoctl outbox drop POSITION [--reason TEXT]
 *                                          it leaves the outbox unpublished; its aggregate's
 *                                          waiting events go out across the gap
 *   todoctl outbox --saga [parked|retry ID|drop ID [--reason TEXT]]
 *                                          the same for todo-saga's outbox (saga.outbox)
 *
 * Uses the admin connection (TODO_PG_URL); a running relay wakes up on
 * retry and drop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_outbox.h"
#include "pgx.h"
#include "saga_store.h"
#include "todoctl.h"

static int status(PGconn *pg)
{
    todo_err err;
    cmd_outbox_status st;
    if (cmd_outbox_status_read(pg, &st, &err) != 0) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return 1;
    }
    printf("unpublished events   %ld\n", st.unpublished);
    printf("oldest unpublished   %.1f s\n", st.oldest_age_s);
    printf("parked events        %ld%s\n", st.parked, st.parked > 0 ? "   (todoctl outbox parked)" : "");
    printf("waiting behind them  %ld\n", st.held);
    printf("last position        %lld\n", st.last_position);
    printf("active relay         %s\n", st.active[0] ? st.active : "none");
    saga_outbox_stat ss;
    if (saga_outbox_status(pg, &ss, &err) != 0) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return 1;
    }
    printf("saga outbox          %ld unpublished, oldest %.1f s, %ld parked%s, %ld waiting behind them\n", ss.rows,
           ss.oldest_age_s, ss.parked, ss.parked > 0 ? " (todoctl outbox --saga parked)" : "", ss.held);
    printf("saga publisher       %s\n", ss.active[0] ? ss.active : "none");
    return 0;
}

static int saga_parked(PGconn *pg)
{
    enum { CAP = 200 };
    saga_outbox_row *rows = calloc(CAP, sizeof *rows);
    int n = 0;
    todo_err err;
    if (rows == NULL || saga_outbox_parked(pg, rows, CAP, &n, &err) != 0) {
        fprintf(stderr, "todoctl: %s\n", rows == NULL ? "out of memory" : err.msg);
        free(rows);
        return 1;
    }
    if (n == 0) printf("no parked saga outbox rows\n");
    for (int i = 0; i < n; i++) {
        const saga_outbox_row *p = &rows[i];
        printf("id %lld  %s  user %s  aggregate %s  %lld bytes  parked %s\n", p->id, p->event_type, p->user_id,
               p->aggregate_id, p->bytes, p->parked_at);
        printf("    reason: %s\n", p->reason);
        printf("    waiting behind it: %ld event(s) of the same aggregate\n", p->waiting);
    }
    free(rows);
    return 0;
}

static int parked(PGconn *pg)
{
    enum { CAP = 200 };
    cmd_parked *rows = calloc(CAP, sizeof *rows);
    int n = 0;
    todo_err err;
    if (rows == NULL || cmd_outbox_parked(pg, rows, CAP, &n, &err) != 0) {
        fprintf(stderr, "todoctl: %s\n", rows == NULL ? "out of memory" : err.msg);
        free(rows);
        return 1;
    }
    if (n == 0) printf("no parked events\n");
    for (int i = 0; i < n; i++) {
        const cmd_parked *p = &rows[i];
        printf("position %lld  %s  user %s  aggregate %s v%lld  %lld bytes  parked %s\n", p->position, p->event_type,
               p->user_id, p->aggregate_id, p->aggregate_version, p->bytes, p->parked_at);
        printf("    reason: %s\n", p->reason);
        printf("    waiting behind it: %ld event(s) of the same aggregate\n", p->waiting);
    }
    if (n == CAP) printf("(the first %d; retry or drop some to see more)\n", CAP);
    free(rows);
    return 0;
}

static int act(PGconn *pg, int argc, char **argv, bool drop, bool saga)
{
    if (argc < 4) return 2;
    char *end;
    long long position = strtoll(argv[3], &end, 10);
    if (*end != '\0' || position <= 0) {
        fprintf(stderr, "todoctl: POSITION must be a positive number (see todoctl outbox parked)\n");
        return 2;
    }
    const char *why = NULL;
    for (int i = 4; i < argc; i++) {
        if (drop && strcmp(argv[i], "--reason") == 0 && i + 1 < argc) why = argv[++i];
        else return 2;
    }
    todo_err err;
    int rc = saga ? (drop ? saga_outbox_drop(pg, position, &err) : saga_outbox_retry(pg, position, &err))
             : drop ? cmd_outbox_drop(pg, position, why, &err)
                    : cmd_outbox_retry(pg, position, &err);
    if (rc != 0) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return 1;
    }
    if (saga) {
        printf(drop ? "saga outbox row %lld dropped (reason: %s): the events waiting behind it are published next\n"
                    : "saga outbox row %lld is back: the publisher sends it, then what waited behind it%s\n",
               position, drop ? (why != NULL ? why : "none given") : "");
        return 0;
    }
    printf(drop ? "position %lld dropped: the events waiting behind it are published next\n"
                : "position %lld is back in the outbox: the relay publishes it, then what waited behind it\n",
           position);
    return 0;
}

int todoctl_outbox(const todo_config *cfg, int argc, char **argv)
{
    bool saga = argc > 2 && strcmp(argv[2], "--saga") == 0;
    if (saga) { /* drop the flag: the rest reads as for write.events */
        for (int i = 2; i + 1 < argc; i++) argv[i] = argv[i + 1];
        argc--;
    }
    const char *sub = argc > 2 ? argv[2] : "";
    if (sub[0] != '\0' && strcmp(sub, "parked") != 0 && strcmp(sub, "retry") != 0 && strcmp(sub, "drop") != 0)
        return 2;
    todo_err err;
    PGconn *pg = pgx_connect(cfg->admin_pg_url, "todoctl", &err);
    if (pg == NULL) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return 1;
    }
    int rc = sub[0] == '\0'                  ? status(pg)
             : strcmp(sub, "parked") == 0 ? (saga ? saga_parked(pg) : parked(pg))
                                              : act(pg, argc, argv, strcmp(sub, "drop") == 0, saga);
    pgx_close(pg);
    return rc;
}
