/* cmd_store: see cmd_store.h. */
#include "cmd_store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "pgx.h"
#include "text.h"

void cmd_request_init(cmd_request *rq, const char *rpc, const char *request_id, const ProtobufCMessage *msg, int ttl_s)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t stackbuf[1024], *buf = n <= sizeof stackbuf ? stackbuf : malloc(n);
    rq->request_id = request_id;
    rq->rpc = rpc;
    rq->ttl_s = ttl_s;
    if (buf == NULL) abort();
    /* protobuf-c packs fields in number order: equal requests, equal bytes. */
    protobuf_c_message_pack(msg, buf);
    text_sha256_hex(buf, n, rq->hash);
    if (buf != stackbuf) free(buf);
}

static bool has_request(const cmd_request *rq) { return rq != NULL && rq->request_id != NULL && rq->request_id[0]; }

int64_t cmd_store_us(const PGresult *r, int col, bool *present)
{
    bool null = PQgetisnull(r, 0, col);
    if (present != NULL) *present = !null;
    return null ? 0 : strtoll(PQgetvalue(r, 0, col), NULL, 10);
}

const char *cmd_store_time(arena *a, bool present, int64_t us)
{
    return present ? event_time_text(a, us) : NULL;
}

void cmd_store_save_stmt(arena *a, const cmd_write *w, pgx_stmt *out)
{
    int n = w->n_state, total = n + 8;
    char *version = arena_printf(a, "%" PRId64, w->version), *sv = arena_printf(a, "%d", w->schema_version);
    const char **params = arena_alloc(a, (size_t)total * sizeof *params);
    int *lengths = arena_calloc(a, (size_t)total * sizeof *lengths);
    int *formats = arena_calloc(a, (size_t)total * sizeof *formats);
    for (int i = 0; i < n; i++) params[i] = w->state_params[i];
    params[n] = w->event_id;
    params[n + 1] = w->event_type;
    params[n + 2] = sv;
    params[n + 3] = w->user_id;
    params[n + 4] = w->aggregate_type;
    params[n + 5] = w->aggregate_id;
    params[n + 6] = version;
    params[n + 7] = (const char *)w->envelope;
    lengths[n + 7] = (int)w->envelope_len;
    formats[n + 7] = 1;
    out->sql = arena_printf(a,
                            "with s as (%s) insert into write.events (event_id, event_type, schema_version, user_id,"
                            " aggregate_type, aggregate_id, aggregate_version, envelope)"
                            " select $%d::uuid, $%d, $%d::int, $%d, $%d, $%d::uuid, $%d::bigint, $%d::bytea from s"
                            " returning position",
                            w->state_sql, n + 1, n + 2, n + 3, n + 4, n + 5, n + 6, n + 7, n + 8);
    out->n = total;
    out->values = params;
    out->lengths = lengths;
    out->formats = formats;
}

int cmd_store_saved(const PGresult *r, const cmd_write *w, int64_t *position, todo_err *err)
{
    if (PQntuples(r) == 0)
        return todo_err_set(err, TODO_ECONFLICT, "%s %s changed concurrently", w->aggregate_type, w->aggregate_id);
    *position = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    return TODO_OK;
}

/* Runs w's save statement; TODO_ECONFLICT when the state statement wrote
 * nothing. */
static int save_state(PGconn *pg, arena *a, const cmd_write *w, int64_t *position, todo_err *err)
{
    pgx_stmt st;
    cmd_store_save_stmt(a, w, &st);
    PGresult *r = pgx_execb(pg, st.sql, st.n, st.values, st.lengths, st.formats, err);
    if (r == NULL) return err->code;
    int rc = cmd_store_saved(r, w, position, err);
    PQclear(r);
    return rc;
}

int cmd_store_save(PGconn *pg, const cmd_write *w, const cmd_request *rq, int64_t *position, todo_err *err)
{
    arena *a = arena_new();
    int rc;
    if (!has_request(rq)) {
        rc = save_state(pg, a, w, position, err);
        arena_free(a);
        return rc;
    }
    /* Claim the request id first: a concurrent duplicate blocks on the row
     * until this transaction ends, then finds it taken. */
    char version[24], ttl[16];
    snprintf(version, sizeof version, "%" PRId64, w->version);
    snprintf(ttl, sizeof ttl, "%d", rq->ttl_s);
    const char *p[8] = {w->user_id, rq->request_id, rq->rpc, rq->hash, w->aggregate_id, version, w->event_id, ttl};
    if ((rc = pgx_cmd(pg, "begin", 0, NULL, err)) != 0) goto out;
    PGresult *r = pgx_exec(pg,
                           "insert into write.requests (user_id, request_id, rpc, request_hash, aggregate_id, version,"
                           " event_id) values ($1, $2, $3, $4, $5, $6, $7)"
                           " on conflict (user_id, request_id) do update set rpc = excluded.rpc,"
                           " request_hash = excluded.request_hash, aggregate_id = excluded.aggregate_id,"
                           " version = excluded.version, event_id = excluded.event_id, created_at = now()"
                           " where write.requests.created_at < now() - make_interval(secs => $8::int)"
                           " returning 1",
                           8, p, err);
    if (r == NULL) {
        rc = err->code;
    } else {
        rc = PQntuples(r) == 1 ? TODO_OK : todo_err_set(err, TODO_EEXISTS, "request_id %s is taken", rq->request_id);
        PQclear(r);
    }
    if (rc == TODO_OK) rc = save_state(pg, a, w, position, err);
    if (rc == TODO_OK) rc = pgx_cmd(pg, "commit", 0, NULL, err);
    else pgx_cmd(pg, "rollback", 0, NULL, NULL);
out:
    arena_free(a);
    return rc;
}

int cmd_store_find_request(PGconn *pg, arena *a, const char *user, const cmd_request *rq, bool *found,
                           Todo__V1__CommandReply *reply, todo_err *err)
{
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", rq->ttl_s);
    const char *p[3] = {user, rq->request_id, ttl};
    *found = false;
    PGresult *r = pgx_exec(pg,
                           "select r.rpc, r.request_hash, r.aggregate_id::text, r.version, r.event_id::text"
                           " from write.requests r"
                           " where r.user_id = $1 and r.request_id = $2"
                           " and r.created_at >= now() - make_interval(secs => $3::int)",
                           3, p, err);
    if (r == NULL) return err->code;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return TODO_OK;
    }
    if (strcmp(PQgetvalue(r, 0, 0), rq->rpc) != 0 || strcmp(PQgetvalue(r, 0, 1), rq->hash) != 0) {
        int rc = todo_err_set(err, TODO_EINVAL,
                              "request_id: \"%s\" was already used for a different request (%s); use a new request_id",
                              rq->request_id, PQgetvalue(r, 0, 0));
        PQclear(r);
        return rc;
    }
    *found = true;
    reply->id = arena_strdup(a, PQgetvalue(r, 0, 2));
    reply->version = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
    reply->event_id = arena_strdup(a, PQgetvalue(r, 0, 4));
    PQclear(r);
    return TODO_OK;
}

long cmd_store_purge_requests(PGconn *pg, int ttl_s, todo_err *err)
{
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", ttl_s);
    const char *p[1] = {ttl};
    PGresult *r = pgx_exec(pg, "delete from write.requests where created_at < now() - make_interval(secs => $1::int)",
                           1, p, err);
    if (r == NULL) return -1;
    long n = strtol(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return n;
}
