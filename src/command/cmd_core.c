/* cmd_core: see cmd_core.h. */
#include "cmd_core.h"

#include "cmd_group.h"
#include "cmd_service.h"

#include <openssl/crypto.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "cmd_group.h"
#include "cmd_service.h"
#include "cmd_validate.h"
#include "ctoken.h"
#include "event.h"
#include "log.h"
#include "pgx.h"
#include "seal.h"
#include "text.h"

#define MAX_ATTEMPTS 30    /* load-change-save rounds before a busy aggregate answers ABORTED */
#define MAX_BACKOFF_MS 50  /* jittered pause between rounds: up to min(2^round, this) ms */

/* A metadata value fit for an event: 1 to 128 printable ASCII characters,
 * or NULL. */
static const char *sane_metadata(grpcx_call *c, const char *key)
{
    const char *v = grpcx_call_metadata(c, key);
    bool ok = v != NULL && v[0] != '\0' && strlen(v) <= 128;
    for (const char *p = v; ok && *p != '\0'; p++) ok = *p >= 0x21 && *p <= 0x7E;
    return ok ? v : NULL;
}

/* The correlation id: the client's x-correlation-id when it sent a sane one,
 * else the call's trace id (so a trace and its events share one id).
 * Returned to the client in the reply metadata. */
static const char *correlation(grpcx_call *c, arena *a)
{
    const char *v = sane_metadata(c, "x-correlation-id");
    if (v == NULL) v = arena_strdup(a, grpcx_call_trace(c)->trace_id);
    grpcx_call_reply_metadata(c, "x-correlation-id", v);
    return v;
}

int cmd_begin(cmd_ctx *x, grpcx_call *c, const char *rpc, const char *request_id, const ProtobufCMessage *msg,
              todo_err *err)
{
    int rc;
    x->call = c;
    x->rpc = rpc;
    x->t = grpcx_call_state(c);
    x->a = grpcx_call_arena(c);
    x->correlation_id = correlation(c, x->a);
    /* What caused the events: the caller's x-causation-id (todo-saga names
     * the event its saga reacts to), else this call itself (its span). */
    x->causation_id = sane_metadata(c, "x-causation-id");
    if (x->causation_id == NULL) x->causation_id = arena_printf(x->a, "call:%s", grpcx_call_trace(c)->span_id);
    char *tp = arena_alloc(x->a, 56);
    trace_format(grpcx_call_trace(c), tp);
    x->traceparent = tp;
    snprintf(x->t->audit_correlation, sizeof x->t->audit_correlation, "%s", x->correlation_id);
    const char *user = grpcx_call_user(c); /* cmd_authenticate named the caller */
    if (user == NULL) return todo_err_set(err, TODO_EUNAUTH, "the caller is not authenticated");
    snprintf(x->user, sizeof x->user, "%s", user);
    snprintf(x->t->audit_user, sizeof x->t->audit_user, "%s", x->user);
    x->actor = grpcx_call_service(c) != NULL ? arena_strdup(x->a, grpcx_call_service(c)) : x->user;
    if ((rc = cmd_validate_request_id(request_id, err)) != 0) return rc;
    cmd_request_init(&x->req, rpc, request_id, msg, x->t->cfg->request_ttl_s);
    if (pgx_ensure(&x->t->pg, x->t->cfg->pg_url, x->t->app_name, err) != 0)
        return todo_err_set(err, TODO_EUNAVAIL, "the database is unreachable; retry later");
    return TODO_OK;
}

int cmd_replay(cmd_ctx *x, ProtobufCMessage **resp, todo_err *err)
{
    bool found = false;
    Todo__V1__CommandReply *rp;
    *resp = NULL;
    if (x->req.request_id[0] == '\0') return TODO_OK;
    rp = arena_alloc(x->a, sizeof *rp);
    todo__v1__command_reply__init(rp);
    int rc = cmd_store_find_request(x->t->pg, x->a, x->user, &x->req, &found, rp, err);
    if (rc == TODO_OK && found) {
        rp->consistency_token = arena_alloc(x->a, CTOKEN_MAX);
        ctoken_encode(&x->t->cfg->token_key, x->user, rp->id, rp->version, rp->consistency_token);
        *resp = &rp->base;
    }
    return rc;
}

int cmd_storage_error(cmd_ctx *x, todo_err *err)
{
    log_error("command", "write failed", "rpc=%s correlation_id=%s detail=\"%s\"", x->rpc, x->correlation_id, err->msg);
    return todo_err_set(err, err->code == TODO_EUNAVAIL ? TODO_EUNAVAIL : TODO_EINTERNAL,
                        "the change could not be stored; retry later");
}

/* The top-level field of m that takes the most room once encoded
 * (strings, bytes and messages; repeated ones added up), for an error
 * message. */
static const char *largest_field(const ProtobufCMessage *m, size_t *size)
{
    const char *name = "?";
    *size = 0;
    for (unsigned i = 0; i < m->descriptor->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &m->descriptor->fields[i];
        const char *at = (const char *)m + f->offset;
        size_t n = 1, total = 0;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(const size_t *)((const char *)m + f->quantifier_offset);
            at = *(const char *const *)at;
        }
        for (size_t k = 0; k < n && at != NULL; k++) {
            if (f->type == PROTOBUF_C_TYPE_STRING) {
                const char *str = f->label == PROTOBUF_C_LABEL_REPEATED ? ((char *const *)at)[k] : *(char *const *)at;
                total += str != NULL ? strlen(str) : 0;
            } else if (f->type == PROTOBUF_C_TYPE_BYTES) {
                total += f->label == PROTOBUF_C_LABEL_REPEATED ? ((const ProtobufCBinaryData *)at)[k].len
                                                               : ((const ProtobufCBinaryData *)at)->len;
            } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
                const ProtobufCMessage *sub = f->label == PROTOBUF_C_LABEL_REPEATED
                                                  ? ((ProtobufCMessage *const *)at)[k]
                                                  : *(ProtobufCMessage *const *)at;
                total += sub != NULL ? protobuf_c_message_get_packed_size(sub) : 0;
            }
        }
        if (total > *size) {
            *size = total;
            name = f->name;
        }
    }
    return name;
}

int cmd_encode(cmd_ctx *x, const char *aggregate_type, const char *id, int64_t version, int64_t now, const char *type,
               int schema, const ProtobufCMessage *event, char event_id[37], uint8_t **env, size_t *env_len,
               todo_err *err)
{
    if (text_uuid_v4(event_id) != 0) return todo_err_set(err, TODO_EINTERNAL, "no randomness for a new id");
    event_meta m = {
        .event_id = event_id, .event_type = type, .source = "todo-command", .time_us = now, .user_id = x->user,
        .aggregate_type = aggregate_type, .aggregate_id = id, .aggregate_version = version,
        .schema_version = schema, .correlation_id = x->correlation_id, .causation_id = x->causation_id,
        .traceparent = x->traceparent, .actor = x->actor,
    };
    return event_encode(&m, event, x->a, env, env_len, err);
}

/* Whether events' personal fields are sealed: only bench/todo-command-unsealed,
 * the baseline of what sealing costs (bench/ab.sh), is built without. */
#ifdef TODO_BENCH_UNSEALED
#define SEALING 0
#else
#define SEALING 1
#endif

/* True for the events of the user's lifecycle itself, written without
 * their key (registration makes it, erasure destroys it). */
static bool lifecycle_event(const char *type)
{
    return strcmp(type, "user.registered") == 0 || strcmp(type, "user.erasure_requested") == 0 ||
           strcmp(type, "user.erased") == 0;
}

int cmd_save(cmd_ctx *x, const cmd_kind *k, const char *id, const void *agg, int64_t version, int64_t now,
             const char *type, int schema, const ProtobufCMessage *event, ProtobufCMessage **resp, todo_err *err)
{
    char event_id[37];
    uint8_t *env;
    size_t env_len, field_size;
    int64_t position = 0;
    int rc;
    /* For an error message, before the personal fields are sealed. */
    const char *field = largest_field(event, &field_size);
    bool register_user = false;
    if (SEALING && !lifecycle_event(type)) {
        /* The user's key (made at their first command); the event's
         * personal fields sealed with it (seal.h). */
        seal_key key;
        if ((rc = cmd_user_key(x, &key, &register_user, err)) != 0) return rc;
        rc = seal_event((ProtobufCMessage *)event, &key, seal_event_aad(x->a, x->user, id, type), x->a, err);
        OPENSSL_cleanse(&key, sizeof key);
        if (rc != 0) return rc;
    }
    if ((rc = cmd_encode(x, k->aggregate_type, id, version, now, type, schema, event, event_id, &env, &env_len, err)) !=
        0)
        return rc;
    if (env_len > (size_t)x->t->cfg->event_max_bytes) {
        /* The relay would have to park it: refuse it here, nothing written. */
        return todo_err_set(err, TODO_EINVAL,
                            "%s: the %s event would be %zu bytes, over the limit of %d (TODO_EVENT_MAX_BYTES); %s "
                            "takes %zu bytes",
                            field, type, env_len, x->t->cfg->event_max_bytes, field, field_size);
    }
    /* A new user is registered before their first event (and not when
     * that event is refused). */
    if (register_user && (rc = cmd_user_register(x, err)) != 0) return rc;
    cmd_write w = {.aggregate_type = k->aggregate_type, .aggregate_id = id, .user_id = x->user, .version = version,
                   .event_id = event_id, .event_type = type, .schema_version = schema, .envelope = env,
                   .envelope_len = env_len};
    k->state(x, agg, version, now, &w.state_sql, &w.state_params, &w.n_state);
    const cmd_app *app = x->t->app;
    if (app->n_groups > 0 && (x->req.request_id == NULL || x->req.request_id[0] == '\0'))
        rc = cmd_group_save(app->groups[x->t->index % app->n_groups], x->t->pg, x->a, &w, &position, err);
    else
        rc = cmd_store_save(x->t->pg, &w, &x->req, &position, err);
    if (rc != 0) return rc;

    Todo__V1__CommandReply *rp = arena_alloc(x->a, sizeof *rp);
    todo__v1__command_reply__init(rp);
    rp->id = arena_strdup(x->a, id);
    rp->version = version;
    rp->event_id = arena_strdup(x->a, event_id);
    rp->consistency_token = arena_alloc(x->a, CTOKEN_MAX);
    ctoken_encode(&x->t->cfg->token_key, x->user, id, version, rp->consistency_token);
    *resp = &rp->base;
    log_debug("command", type, "user=%s id=%s version=%" PRId64 " position=%" PRId64 " correlation_id=%s", x->user, id,
              version, position, x->correlation_id);
    return TODO_OK;
}

int cmd_create(cmd_ctx *x, const cmd_kind *k, const char *id, const void *agg, int64_t now, const char *type,
               int schema, const ProtobufCMessage *event, ProtobufCMessage **resp, todo_err *err)
{
    int rc;
    if ((rc = cmd_replay(x, resp, err)) != 0 || *resp != NULL) return rc;
    rc = cmd_save(x, k, id, agg, 1, now, type, schema, event, resp, err);
    if (rc == TODO_EEXISTS) { /* a duplicate of this request won the race */
        if ((rc = cmd_replay(x, resp, err)) != 0 || *resp != NULL) return rc;
        return todo_err_set(err, TODO_ECONFLICT, "request_id %s is being handled concurrently; retry",
                            x->req.request_id);
    }
    /* TODO_ECONFLICT: the kind's insert wrote nothing (a uniqueness rule of
     * the kind); the caller says which. TODO_EINVAL: refused before
     * anything was written (an event over TODO_EVENT_MAX_BYTES). */
    return rc == 0 || rc == TODO_ECONFLICT || rc == TODO_EINVAL || rc == TODO_EPRECOND ? rc : cmd_storage_error(x, err);
}

/* Sleeps a random time below min(2^attempt, MAX_BACKOFF_MS) ms, so that
 * writers racing for one aggregate spread out. */
static void backoff(int attempt)
{
    unsigned r;
    long cap = attempt < 6 ? 1L << attempt : MAX_BACKOFF_MS;
    if (cap > MAX_BACKOFF_MS) cap = MAX_BACKOFF_MS;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r = (unsigned)attempt * 7919u;
    long us = (long)(r % (unsigned)(cap * 1000));
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

int cmd_mutate(cmd_ctx *x, const cmd_kind *k, const char *id, int64_t expected, cmd_change_fn fn, const void *arg,
               ProtobufCMessage **resp, todo_err *err)
{
    int rc;
    if ((rc = cmd_replay(x, resp, err)) != 0 || *resp != NULL) return rc;
    for (int attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        void *agg = NULL;
        int64_t version = 0;
        const char *type = NULL;
        int schema = 1;
        ProtobufCMessage *event = NULL;
        int64_t now = event_now_us();
        rc = k->load(x, id, &agg, &version, err);
        if (rc == TODO_ENOTFOUND) return rc;
        if (rc != 0) return cmd_storage_error(x, err);
        if (expected != 0 && version != expected)
            return todo_err_set(err, TODO_ECONFLICT, "%s %s is at version %" PRId64 ", not the expected %" PRId64,
                                k->aggregate_type, id, version, expected);
        if ((rc = fn(x, agg, arg, now, &type, &schema, &event, err)) != 0) return rc;
        rc = cmd_save(x, k, id, agg, version + 1, now, type, schema, event, resp, err);
        if (rc == TODO_EEXISTS) { /* a duplicate of this request won the race */
            if ((rc = cmd_replay(x, resp, err)) != 0 || *resp != NULL) return rc;
            continue;
        }
        if (rc != TODO_ECONFLICT) return rc == 0 || rc == TODO_EINVAL || rc == TODO_EPRECOND ? rc : cmd_storage_error(x, err);
        /* Someone saved a newer version between our load and save, or the
         * save's guard on another aggregate failed (a reminder fires only
         * while its task is open): load again. A moved version is refused
         * above when the caller named one; otherwise fn decides again on
         * what is there now. */
        backoff(attempt);
    }
    return todo_err_set(err, TODO_ECONFLICT, "%s %s is changing too often; retry", k->aggregate_type, id);
}
