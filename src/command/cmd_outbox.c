/* cmd_outbox: see cmd_outbox.h. */
#include "cmd_outbox.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pgx.h"

int cmd_outbox_status_read(PGconn *pg, cmd_outbox_status *st, todo_err *err)
{
    PGresult *r = pgx_exec(pg,
                           CMD_OUTBOX_BACKLOG_SQL(
                               ", coalesce((select max(position) from write.events), 0),"
                               " coalesce((select string_agg(a.application_name || ' (backend ' || a.pid || ')', ', ')"
                               "    from pg_locks l join pg_stat_activity a on a.pid = l.pid"
                               "    where l.locktype = 'advisory' and l.objid = " CMD_RELAY_LOCK_KEY
                               " and l.granted), '')"),
                           0, NULL, err);
    if (r == NULL) return err->code;
    st->unpublished = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    st->oldest_age_s = strtod(PQgetvalue(r, 0, 1), NULL);
    st->parked = strtol(PQgetvalue(r, 0, 2), NULL, 10);
    st->held = strtol(PQgetvalue(r, 0, 3), NULL, 10);
    st->last_position = strtoll(PQgetvalue(r, 0, 4), NULL, 10);
    snprintf(st->active, sizeof st->active, "%s", PQgetvalue(r, 0, 5));
    PQclear(r);
    return TODO_OK;
}

int cmd_outbox_parked(PGconn *pg, cmd_parked *out, int cap, int *n, todo_err *err)
{
    char limit[16];
    snprintf(limit, sizeof limit, "%d", cap);
    const char *p[1] = {limit};
    PGresult *r = pgx_exec(pg,
                           "select e.position, e.event_type, e.user_id, e.aggregate_id, e.aggregate_version,"
                           " octet_length(e.envelope), to_char(e.parked_at at time zone 'UTC',"
                           "   'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), coalesce(e.parked_reason, ''),"
                           " (select count(*) from write.events w where w.aggregate_id = e.aggregate_id"
                           "   and w.position > e.position and w.published_at is null and w.parked_at is null)"
                           " from write.events e where e.parked_at is not null and e.published_at is null"
                           " order by e.position limit $1::int",
                           1, p, err);
    if (r == NULL) return err->code;
    *n = PQntuples(r);
    for (int i = 0; i < *n; i++) {
        cmd_parked *x = &out[i];
        x->position = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        snprintf(x->event_type, sizeof x->event_type, "%s", PQgetvalue(r, i, 1));
        snprintf(x->user_id, sizeof x->user_id, "%s", PQgetvalue(r, i, 2));
        snprintf(x->aggregate_id, sizeof x->aggregate_id, "%s", PQgetvalue(r, i, 3));
        x->aggregate_version = strtoll(PQgetvalue(r, i, 4), NULL, 10);
        x->bytes = strtoll(PQgetvalue(r, i, 5), NULL, 10);
        snprintf(x->parked_at, sizeof x->parked_at, "%s", PQgetvalue(r, i, 6));
        snprintf(x->reason, sizeof x->reason, "%s", PQgetvalue(r, i, 7));
        x->waiting = strtol(PQgetvalue(r, i, 8), NULL, 10);
    }
    PQclear(r);
    return TODO_OK;
}

/* Runs an update of one parked row (sql ends in "returning 1"); NOT_FOUND
 * when it matched nothing. */
static int change_parked(PGconn *pg, const char *sql, int nparams, const char *const *params, int64_t position,
                         todo_err *err)
{
    PGresult *r = pgx_exec(pg, sql, nparams, params, err);
    if (r == NULL) return err->code;
    int changed = PQntuples(r);
    PQclear(r);
    if (changed == 0) return todo_err_set(err, TODO_ENOTFOUND, "no parked event at position %" PRId64, position);
    return pgx_cmd(pg, "select pg_notify('todo_outbox', '')", 0, NULL, err) == 0 ? TODO_OK : err->code;
}

int cmd_outbox_retry(PGconn *pg, int64_t position, todo_err *err)
{
    char pos[24];
    snprintf(pos, sizeof pos, "%" PRId64, position);
    const char *p[1] = {pos};
    return change_parked(pg,
                         "update write.events set parked_at = null,"
                         " parked_reason = 'retried after: ' || coalesce(parked_reason, '')"
                         " where position = $1::bigint and parked_at is not null and published_at is null returning 1",
                         1, p, position, err);
}

int cmd_outbox_drop(PGconn *pg, int64_t position, const char *why, todo_err *err)
{
    char pos[24];
    snprintf(pos, sizeof pos, "%" PRId64, position);
    const char *p[2] = {pos, why != NULL && why[0] != '\0' ? why : "no reason given"};
    return change_parked(pg,
                         "update write.events set dropped_at = now(), published_at = now(),"
                         " parked_reason = coalesce(parked_reason, '') || '; dropped by an operator: ' || $2"
                         " where position = $1::bigint and parked_at is not null and published_at is null returning 1",
                         2, p, position, err);
}
