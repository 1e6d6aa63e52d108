/*
 * todoctl saga: look at sagas and steer them (docs/OPERATIONS.md, "Sagas").
 *
 *   todoctl saga list [--state S] [--user U] [--task T] [--limit N]   newest first
 *   todoctl saga show ID                        every step, attempts, errors, context
 *   todoctl saga retry ID                       a FAILED saga compensates again
 *   todoctl saga compensate ID                  a RUNNING or COMPLETED saga is undone
 *   todoctl saga failed [--limit N]             failed compensations nobody resolved, oldest first
 *   todoctl saga resolve ID --why TEXT [--by NAME]   a FAILED saga settled by hand
 *
 * Reads and writes saga.sagas with TODO_PG_URL; a running todo-saga picks up
 * what retry and compensate changed.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgx.h"
#include "saga_completion.h"
#include "saga_store.h"
#include "text.h"
#include "todoctl.h"

static const char *const STEP_STATES[] = {"pending", "done", "failed", "compensated", "compensation failed"};

static int list(PGconn *pg, int argc, char **argv)
{
    const char *state = NULL, *limit = "20", *user = NULL, *task = NULL;
    todo_err err;
    saga_state s;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--state") == 0 && i + 1 < argc) state = argv[++i];
        else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) limit = argv[++i];
        else if (strcmp(argv[i], "--user") == 0 && i + 1 < argc) user = argv[++i];
        else if (strcmp(argv[i], "--task") == 0 && i + 1 < argc) task = argv[++i];
        else return 2;
    }
    if (state != NULL && saga_state_parse(state, &s) != 0) {
        fprintf(stderr, "todoctl: --state must be RUNNING, COMPENSATING, COMPLETED, COMPENSATED or FAILED\n");
        return 2;
    }
    if (atoi(limit) < 1 || atoi(limit) > 1000) {
        fprintf(stderr, "todoctl: --limit must be 1..1000\n");
        return 2;
    }
    const char *p[4] = {state, limit, user, task};
    PGresult *r = pgx_exec(pg,
                           "select id::text, type, state, step, user_id, to_char(updated_at, 'YYYY-MM-DD HH24:MI:SS'),"
                           " left(error, 90),"
                           " coalesce((select v from unnest(ctx_keys, ctx_values) as c(k, v) where k = 'task_id'), '')"
                           " from saga.sagas where ($1::text is null or state = $1) and ($3::text is null or user_id = $3)"
                           " and ($4::text is null or exists (select 1 from unnest(ctx_keys, ctx_values) as c(k, v)"
                           "   where k = 'task_id' and v = $4))"
                           " order by updated_at desc limit $2::int",
                           4, p, &err);
    if (r == NULL) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return 1;
    }
    printf("%-36s  %-15s %-12s %4s  %-19s  %-24s %-36s  %s\n", "saga", "type", "state", "step", "updated (UTC)", "user",
           "task", "error");
    for (int i = 0; i < PQntuples(r); i++)
        printf("%-36s  %-15s %-12s %4s  %-19s  %-24s %-36s  %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
               PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 5), PQgetvalue(r, i, 4),
               PQgetvalue(r, i, 7), PQgetvalue(r, i, 6));
    if (PQntuples(r) == 0) printf("no sagas\n");
    PQclear(r);
    return 0;
}

/* The dead letters of compensations: FAILED sagas nobody resolved, oldest
 * first, with the step whose compensation failed and its last error. */
static int failed(PGconn *pg, int argc, char **argv)
{
    const char *limit = "50";
    todo_err err;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) limit = argv[++i];
        else return 2;
    }
    if (atoi(limit) < 1 || atoi(limit) > 1000) {
        fprintf(stderr, "todoctl: --limit must be 1..1000\n");
        return 2;
    }
    const char *p[1] = {limit};
    PGresult *r = pgx_exec(pg,
                           "select s.id::text, s.type, s.step, s.user_id,"
                           " to_char(s.updated_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS'),"
                           " s.attempts[s.step + 1], left(coalesce(nullif(s.step_errors[s.step + 1], ''), s.error), 120)"
                           " from saga.sagas s where s.state = 'FAILED'"
                           " and not exists (select 1 from saga.resolutions r where r.saga_id = s.id)"
                           " order by s.updated_at limit $1::int",
                           1, p, &err);
    if (r == NULL) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return 1;
    }
    printf("%-36s  %-15s %-22s %-19s  %-8s %-24s  %s\n", "saga", "type", "compensation failed", "since (UTC)",
           "attempts", "user", "last error");
    for (int i = 0; i < PQntuples(r); i++) {
        int step = atoi(PQgetvalue(r, i, 2));
        const char *name = strcmp(PQgetvalue(r, i, 1), saga_completion_def.type) == 0 && step >= 0 &&
                                   step < saga_completion_def.n_steps
                               ? saga_completion_def.steps[step].name
                               : "?";
        printf("%-36s  %-15s %d %-20s %-19s  %-8s %-24s  %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), step, name,
               PQgetvalue(r, i, 4), PQgetvalue(r, i, 5), PQgetvalue(r, i, 3), PQgetvalue(r, i, 6));
    }
    if (PQntuples(r) == 0) printf("no failed compensations waiting\n");
    else printf("%d waiting: todoctl saga retry ID (compensate again) or saga resolve ID --why TEXT\n", PQntuples(r));
    PQclear(r);
    return 0;
}

static int resolve(PGconn *pg, int argc, char **argv)
{
    const char *why = NULL, *by = getenv("USER");
    todo_err err;
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "--why") == 0 && i + 1 < argc) why = argv[++i];
        else if (strcmp(argv[i], "--by") == 0 && i + 1 < argc) by = argv[++i];
        else return 2;
    }
    if (why == NULL) {
        fprintf(stderr, "todoctl: saga resolve needs --why TEXT (what was done by hand)\n");
        return 2;
    }
    if (saga_store_resolve(pg, argv[3], by != NULL && by[0] ? by : "operator", why, &err) != 0) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return 1;
    }
    printf("saga %s resolved by %s: %s\n", argv[3], by != NULL && by[0] ? by : "operator", why);
    return 0;
}

static int show(PGconn *pg, const char *id)
{
    saga_record r;
    todo_err err;
    if (saga_store_load(pg, id, &r, &err) != 0) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return 1;
    }
    const saga_def *def = strcmp(r.type, saga_completion_def.type) == 0 ? &saga_completion_def : NULL;
    printf("saga %s (%s): %s at step %d\n", r.id, r.type, saga_state_name(r.state), r.step);
    if (r.error[0] != '\0') printf("  error: %s\n", r.error);
    int n = def != NULL ? def->n_steps : SAGA_MAX_STEPS;
    for (int i = 0; i < n; i++) {
        unsigned st = (unsigned)r.steps[i];
        printf("  %d %-18s %-20s attempts %d%s%s\n", i, def != NULL ? def->steps[i].name : "?",
               st < 5 ? STEP_STATES[st] : "?", r.attempts[i], r.errors[i][0] ? "  last error: " : "", r.errors[i]);
    }
    printf("  context:\n");
    for (int i = 0; i < r.n_ctx; i++) printf("    %s = %s\n", r.keys[i], r.values[i]);
    saga_resolution res;
    bool resolved = false;
    if (saga_store_resolution(pg, id, &res, &resolved, &err) == TODO_OK && resolved)
        printf("  resolved by %s at %s UTC: %s\n", res.by, res.at, res.why);
    return 0;
}

int todoctl_saga(const todo_config *cfg, int argc, char **argv)
{
    todo_err err;
    if (argc < 3) return 2;
    const char *op = argv[2];
    bool listing = strcmp(op, "list") == 0 || strcmp(op, "failed") == 0;
    if (!listing && (argc < 4 || !text_is_uuid(argv[3]) || (argc != 4 && strcmp(op, "resolve") != 0))) return 2;
    PGconn *pg = pgx_connect(cfg->admin_pg_url, "todoctl", &err);
    if (pg == NULL) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return 1;
    }
    int rc = 2;
    if (strcmp(op, "list") == 0) {
        rc = list(pg, argc, argv);
    } else if (strcmp(op, "failed") == 0) {
        rc = failed(pg, argc, argv);
    } else if (strcmp(op, "resolve") == 0) {
        rc = resolve(pg, argc, argv);
    } else if (strcmp(op, "show") == 0) {
        rc = show(pg, argv[3]);
    } else if (strcmp(op, "retry") == 0 || strcmp(op, "compensate") == 0) {
        int st = op[0] == 'r' ? saga_store_retry(pg, argv[3], &err) : saga_store_compensate(pg, argv[3], &err);
        if (st != 0) fprintf(stderr, "todoctl: %s\n", err.msg);
        else printf("saga %s will %s; a running todo-saga picks it up\n", argv[3],
                    op[0] == 'r' ? "compensate again" : "be compensated");
        rc = st == 0 ? 0 : 1;
    }
    pgx_close(pg);
    return rc;
}
