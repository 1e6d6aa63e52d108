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

static int64_t us_of(const PGresult *r, int col, bool *present)
{
    bool null = PQgetisnull(r, 0, col);
    if (present != NULL) *present = !null;
    return null ? 0 : strtoll(PQgetvalue(r, 0, col), NULL, 10);
}

int cmd_store_load(PGconn *pg, arena *a, const char *user, const char *id, cmd_task *t, todo_err *err)
{
    const char *p[2] = {id, user};
    PGresult *r = pgx_exec(pg,
                           "select user_id, title, description, priority, (extract(epoch from due_at) * 1000000)::bigint,"
                           " category, array_to_string(tags, E'\\x1f'),"
                           " (extract(epoch from completed_at) * 1000000)::bigint,"
                           " (extract(epoch from deleted_at) * 1000000)::bigint, version,"
                           " (extract(epoch from created_at) * 1000000)::bigint,"
                           " (extract(epoch from updated_at) * 1000000)::bigint"
                           " from write.tasks where id = $1::uuid and user_id = $2",
                           2, p, err);
    if (r == NULL) return err->code;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return todo_err_set(err, TODO_ENOTFOUND, "task %s not found", id);
    }
    memset(t, 0, sizeof *t);
    snprintf(t->id, sizeof t->id, "%s", id);
    t->user_id = arena_strdup(a, PQgetvalue(r, 0, 0));
    t->title = arena_strdup(a, PQgetvalue(r, 0, 1));
    t->description = arena_strdup(a, PQgetvalue(r, 0, 2));
    t->priority = atoi(PQgetvalue(r, 0, 3));
    t->due_us = us_of(r, 4, &t->has_due);
    t->category = arena_strdup(a, PQgetvalue(r, 0, 5));
    pgx_split(a, PQgetvalue(r, 0, 6), '\x1f', &t->tags, &t->n_tags);
    t->completed_us = us_of(r, 7, &t->completed);
    t->deleted_us = us_of(r, 8, &t->deleted);
    t->version = strtoll(PQgetvalue(r, 0, 9), NULL, 10);
    t->created_us = us_of(r, 10, NULL);
    t->updated_us = us_of(r, 11, NULL);
    PQclear(r);
    return TODO_OK;
}

/* The text form of an optional time, in a. */
static const char *time_param(arena *a, bool present, int64_t us)
{
    if (!present) return NULL;
    char *out = arena_alloc(a, 40);
    event_format_time(us, out, 40);
    return out;
}

static const char *const INSERT_SQL =
    "with t as ("
    "  insert into write.tasks (id, user_id, title, description, priority, due_at, category, tags, completed_at,"
    "                           deleted_at, version, updated_at, created_at)"
    "  values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $16) returning 1)"
    " insert into write.events (event_id, event_type, schema_version, user_id, aggregate_type, aggregate_id,"
    "                           aggregate_version, envelope)"
    " select $13, $14, $15, $2, 'task', $1, $11, $17 from t returning position";

static const char *const UPDATE_SQL =
    "with t as ("
    "  update write.tasks set title = $3, description = $4, priority = $5, due_at = $6, category = $7, tags = $8,"
    "    completed_at = $9, deleted_at = $10, version = $11, updated_at = $12"
    "  where id = $1 and user_id = $2 and version = $11::bigint - 1 returning 1)"
    " insert into write.events (event_id, event_type, schema_version, user_id, aggregate_type, aggregate_id,"
    "                           aggregate_version, envelope)"
    " select $13, $14, $15, $2, 'task', $1, $11, $16 from t returning position";

/* Runs the task+event statement; TODO_ECONFLICT when the version moved. */
static int save_task(PGconn *pg, arena *a, const cmd_write *w, int64_t *position, todo_err *err)
{
    const cmd_task *t = w->task;
    bool insert = t->version == 1;
    char prio[8], version[24], sv[8];
    snprintf(prio, sizeof prio, "%d", t->priority);
    snprintf(version, sizeof version, "%" PRId64, t->version);
    snprintf(sv, sizeof sv, "%d", w->schema_version);
    const char *params[17] = {
        t->id, t->user_id, t->title, t->description, prio, time_param(a, t->has_due, t->due_us), t->category,
        pgx_text_array(a, t->tags, t->n_tags), time_param(a, t->completed, t->completed_us),
        time_param(a, t->deleted, t->deleted_us), version, time_param(a, true, t->updated_us), w->event_id,
        w->event_type, sv, NULL, NULL};
    int lengths[17] = {0}, formats[17] = {0};
    int n = insert ? 17 : 16;
    if (insert) params[15] = time_param(a, true, t->created_us);
    params[n - 1] = (const char *)w->envelope;
    lengths[n - 1] = (int)w->envelope_len;
    formats[n - 1] = 1;
    PGresult *r = pgx_execb(pg, insert ? INSERT_SQL : UPDATE_SQL, n, params, lengths, formats, err);
    if (r == NULL) return err->code;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return todo_err_set(err, TODO_ECONFLICT, "task %s changed concurrently", t->id);
    }
    *position = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return TODO_OK;
}

int cmd_store_save(PGconn *pg, const cmd_write *w, const cmd_request *rq, int64_t *position, todo_err *err)
{
    arena *a = arena_new();
    int rc;
    if (!has_request(rq)) {
        rc = save_task(pg, a, w, position, err);
        arena_free(a);
        return rc;
    }
    /* Claim the request id first: a concurrent duplicate blocks on the row
     * until this transaction ends, then finds it taken. */
    char version[24], ttl[16];
    snprintf(version, sizeof version, "%" PRId64, w->task->version);
    snprintf(ttl, sizeof ttl, "%d", rq->ttl_s);
    const char *p[8] = {w->task->user_id, rq->request_id, rq->rpc, rq->hash, w->task->id, version, w->event_id, ttl};
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
    if (rc == TODO_OK) rc = save_task(pg, a, w, position, err);
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
                           "select r.rpc, r.request_hash, r.aggregate_id::text, r.version, r.event_id::text, e.position"
                           " from write.requests r join write.events e on e.event_id = r.event_id"
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
    reply->consistency_token = arena_alloc(a, 40);
    event_token_encode(strtoll(PQgetvalue(r, 0, 5), NULL, 10), reply->consistency_token);
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
