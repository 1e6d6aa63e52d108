/*
 * grpcx_server: see grpcx.h.
 *
 * Every completion-queue tag points to a struct whose first member is a
 * tag_kind, so one switch dispatches all events. The workers share one
 * completion queue and keep, per registered method, one request posted
 * each (re-posted as soon as a call arrives), plus one generic request each
 * that catches unregistered methods and the reflection stream. Every posted
 * tag comes back exactly once: with success=0 at shutdown, when it is freed
 * and not re-posted.
 */
#include "grpcx.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "grpcx_client.h"
#include "log.h"
#include "metrics.h"
#include "pbx.h"
#include "reflect.h"
#include "trace.h"

extern const unsigned char todo_descriptor_set[];
extern const size_t todo_descriptor_set_len;

#define MAX_SERVICES 16
#define GRPCX_USER_MAX 129
#define DEFAULT_CALL_MEMORY (8u << 20)
#define REFLECTION_V1 "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
#define REFLECTION_V1ALPHA "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
#define HEALTH_WATCH "/grpc.health.v1.Health/Watch"

typedef enum tag_kind {
    TAG_UNARY, TAG_GENERIC, TAG_SHUTDOWN, TAG_WATCH, TAG_WATCH_CLOSE, TAG_STREAM, TAG_STREAM_CLOSE
} tag_kind;

/* The start of every tag. A call's events may be taken by different
 * workers one after the other; the hand-off goes through the completion
 * queue, whose own synchronization is in the (uninstrumented) gRPC library.
 * handoff makes it visible to ThreadSanitizer: released before the tag is
 * given to gRPC, acquired when a worker takes it back. */
typedef struct tag_head {
    tag_kind kind;
    atomic_uint handoff;
} tag_head;

typedef struct method_entry {
    char *path;
    const ProtobufCMethodDescriptor *md;
    grpcx_unary_fn fn;
    grpcx_server_stream_fn stream;
    void *handle;
    bool open;           /* built in (health): no authentication */
    const char *service; /* the metrics' labels: "todo.v1.TaskCommandService", */
    const char *name;    /* "CreateTask" (into path) */
    metric_series *started, *seconds;
    _Atomic(metric_series *) handled[17]; /* per status code, found on first use */
} method_entry;

/* A worker thread: its own state (a database connection) and arena. All
 * workers take events from the server's one completion queue, so a call
 * is picked up by whichever worker is free: none waits behind a worker
 * busy in a handler (a lock wait, a consistency-token wait). A call's
 * events come one at a time, each handled by the worker that took it. */
typedef struct worker {
    struct grpcx_server *s;
    pthread_t thread;
    void *state;
    arena *arena;
    int index;
    bool blocking; /* a thread of the blocking pool (grpcx_call_offload), not a completion-queue worker */
} worker;

struct grpcx_server {
    grpc_server *srv;
    grpcx_server_opts opts;
    char component[32];
    method_entry *methods;
    size_t n_methods;
    const char *services[MAX_SERVICES];
    size_t n_services;
    worker *workers;
    grpc_completion_queue *cq;  /* shared by the workers */
    /* The blocking pool: calls offloaded by their handlers, run again by
     * these threads in the order they came (a FIFO of unary_call). */
    worker *blockers;
    pthread_mutex_t pool_mu;
    pthread_cond_t pool_cv;
    struct unary_call *pool_head, *pool_tail;
    int pool_queued, pool_max; /* calls in the queue, and the most it takes */
    bool pool_stop;
    atomic_bool pool_refuse; /* the shutdown's grace is over: queued calls are answered UNAVAILABLE, not run */
    atomic_int outstanding;     /* completions still due on cq, plus events being handled */
    atomic_int cq_shut;
    reflect_index *reflect;
    atomic_int serving;
    /* Dependencies reported by name in Health/Check ("postgresql",
     * "kafka"); a required one that is down makes the server's own
     * services NOT_SERVING. */
    struct component {
        char name[32];
        bool required;
        atomic_int up;
    } components[8];
    atomic_int n_components;
    atomic_int draining; /* set once the server stopped taking calls */
    /* Health/Watch streams: told of every change of serving or of a
     * component. watch_mu guards the list (taken before a watch's own). */
    pthread_mutex_t watch_mu;
    struct watch_call *watches;
    struct grpcx_server_stream *streams; /* the open server streams (also under watch_mu) */
    atomic_bool watch_finish; /* shutting down: each stream ends after NOT_SERVING */
    int port;
    bool started, stopped;
};

/* One registered-method call, from the posted request to the sent reply. */
typedef struct unary_call {
    tag_kind kind;
    atomic_uint handoff;
    bool replying;          /* false: the request is posted; true: the reply batch is */
    worker *w;
    method_entry *m;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_byte_buffer *reply;
    grpc_slice details;
    int cancelled;
    grpc_metadata reply_md[4];
    size_t n_reply_md;
    char user[GRPCX_USER_MAX];   /* the authenticated caller, "" before */
    char service[64];            /* the service acting for user (a service token), "" for a user's own call */
    char scope[128];             /* that token's scopes, space-separated */
    trace_ctx trace;             /* this call's span: a child of the caller's traceparent, or a new trace */
    gpr_timespec t0;             /* when its handling began */
    bool begun;                  /* handled once already (counted, span made): offloaded, now run again */
    struct unary_call *pool_next;
} unary_call;

/* One call to an unregistered method: reflection streams, or UNIMPLEMENTED. */
typedef enum stream_state { ST_POSTED, ST_RECV, ST_SEND, ST_DONE } stream_state;

typedef struct stream_call {
    tag_kind kind;
    atomic_uint handoff;
    stream_state state;
    worker *w;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_byte_buffer *recv;
    grpc_byte_buffer *send;
    grpc_slice status_details;
    bool sent_initial;
    int cancelled;
} stream_call;

struct grpcx_call {
    unary_call *u;
    worker *w;
    bool later;   /* the handler took the call (grpcx_call_later): u may be gone once it returns */
    bool offload; /* the handler asked for the blocking pool (grpcx_call_offload) */
};

/* ---- handler accessors ---- */

const char *grpcx_call_metadata(grpcx_call *c, const char *key)
{
    for (size_t i = 0; i < c->u->md.count; i++) {
        const grpc_metadata *m = &c->u->md.metadata[i];
        if (grpc_slice_str_cmp(m->key, key) == 0)
            return arena_strndup(c->w->arena, (const char *)GRPC_SLICE_START_PTR(m->value),
                                 GRPC_SLICE_LENGTH(m->value));
    }
    return NULL;
}

void grpcx_call_set_user(grpcx_call *c, const char *user)
{
    snprintf(c->u->user, sizeof c->u->user, "%s", user != NULL ? user : "");
}

const char *grpcx_call_peer_identity(grpcx_call *c)
{
    grpc_auth_context *ctx = grpc_call_auth_context(c->u->call);
    if (ctx == NULL) return NULL;
    const char *found = NULL;
    /* The subject alternative names first (the peer identity property is
     * the SAN when there is one), then the common name. */
    static const char *const props[] = {GRPC_X509_SAN_PROPERTY_NAME, GRPC_X509_CN_PROPERTY_NAME};
    for (size_t k = 0; k < 2 && found == NULL; k++) {
        grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ctx, props[k]);
        const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
        if (p != NULL) found = arena_strndup(c->w->arena, p->value, p->value_length);
    }
    grpc_auth_context_release(ctx);
    return found;
}

void grpcx_call_set_service(grpcx_call *c, const char *service)
{
    snprintf(c->u->service, sizeof c->u->service, "%s", service != NULL ? service : "");
}

const char *grpcx_call_service(grpcx_call *c) { return c->u->service[0] != '\0' ? c->u->service : NULL; }

void grpcx_call_set_scope(grpcx_call *c, const char *scope)
{
    snprintf(c->u->scope, sizeof c->u->scope, "%s", scope != NULL ? scope : "");
}

bool grpcx_call_has_scope(grpcx_call *c, const char *scope)
{
    size_t n = strlen(scope);
    for (const char *p = c->u->scope; *p != '\0';) {
        while (*p == ' ') p++;
        const char *e = p;
        while (*e != '\0' && *e != ' ') e++;
        if ((size_t)(e - p) == n && n > 0 && strncmp(p, scope, n) == 0) return true;
        p = e;
    }
    return false;
}

const char *grpcx_call_user(grpcx_call *c) { return c->u->user[0] != '\0' ? c->u->user : NULL; }

const trace_ctx *grpcx_call_trace(grpcx_call *c) { return &c->u->trace; }

void grpcx_call_reply_metadata(grpcx_call *c, const char *key, const char *value)
{
    unary_call *u = c->u;
    if (u->n_reply_md == sizeof u->reply_md / sizeof u->reply_md[0]) return;
    u->reply_md[u->n_reply_md].key = grpc_slice_from_copied_string(key);
    u->reply_md[u->n_reply_md].value = grpc_slice_from_copied_string(value);
    u->n_reply_md++;
}

arena *grpcx_call_arena(grpcx_call *c) { return c->w->arena; }
void *grpcx_call_state(grpcx_call *c) { return c->w->state; }
const char *grpcx_call_method(grpcx_call *c) { return c->u->m->path; }

long grpcx_call_ms_left(grpcx_call *c)
{
    gpr_timespec d = c->u->deadline;
    if (gpr_time_cmp(d, gpr_inf_future(d.clock_type)) == 0) return LONG_MAX;
    gpr_timespec left = gpr_time_sub(d, gpr_now(d.clock_type));
    return (long)gpr_time_to_millis(left);
}

/* ---- built-in health check ---- */

/* What Health answers for service ("" the server as a whole): SERVING or
 * NOT_SERVING, or SERVICE_UNKNOWN for a name served neither here nor a
 * component. */
static int health_status(grpcx_server *s, const char *service)
{
    bool known = service[0] == '\0', up = atomic_load(&s->serving) != 0;
    for (size_t i = 0; i < s->n_services && !known; i++) known = strcmp(s->services[i], service) == 0;
    int n = atomic_load(&s->n_components);
    bool component = false;
    for (int i = 0; i < n && !component; i++)
        if (strcmp(s->components[i].name, service) == 0) {
            component = known = true;
            up = up && atomic_load(&s->components[i].up);
        }
    for (int i = 0; i < n && !component; i++) /* the server, or one of its services: every required one */
        if (s->components[i].required) up = up && atomic_load(&s->components[i].up);
    if (!known) return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    return up ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
              : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

static int health_check(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Grpc__Health__V1__HealthCheckRequest *rq = (const Grpc__Health__V1__HealthCheckRequest *)req;
    int status = health_status(c->w->s, rq->service);
    if (status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN)
        return todo_err_set(err, TODO_ENOTFOUND, "service %s is not served here", rq->service);
    Grpc__Health__V1__HealthCheckResponse *rs = arena_alloc(grpcx_call_arena(c), sizeof *rs);
    grpc__health__v1__health_check_response__init(rs);
    rs->status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
    *resp = &rs->base;
    return TODO_OK;
}

/* ---- posting requests ---- */

static void post_unary(worker *w, method_entry *m)
{
    unary_call *u = calloc(1, sizeof *u);
    if (u == NULL) abort();
    u->kind = TAG_UNARY;
    u->w = w;
    u->m = m;
    grpc_metadata_array_init(&u->md);
    atomic_fetch_add_explicit(&u->handoff, 1, memory_order_release);
    if (grpc_server_request_registered_call(w->s->srv, m->handle, &u->call, &u->deadline, &u->md,
                                            &u->payload, w->s->cq, w->s->cq, u) != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&u->md);
        free(u);
        return;
    }
    atomic_fetch_add(&w->s->outstanding, 1);
}

static void post_generic(worker *w)
{
    stream_call *sc = calloc(1, sizeof *sc);
    if (sc == NULL) abort();
    sc->kind = TAG_GENERIC;
    sc->w = w;
    grpc_call_details_init(&sc->details);
    grpc_metadata_array_init(&sc->md);
    atomic_fetch_add_explicit(&sc->handoff, 1, memory_order_release);
    if (grpc_server_request_call(w->s->srv, &sc->call, &sc->details, &sc->md, w->s->cq, w->s->cq, sc) !=
        GRPC_CALL_OK) {
        grpc_call_details_destroy(&sc->details);
        grpc_metadata_array_destroy(&sc->md);
        free(sc);
        return;
    }
    atomic_fetch_add(&w->s->outstanding, 1);
}

/* Starts a batch, counting the completion it owes. */
static bool start_batch(worker *w, grpc_call *call, const grpc_op *ops, size_t n, void *tag)
{
    atomic_fetch_add(&w->s->outstanding, 1);
    atomic_fetch_add_explicit(&((tag_head *)tag)->handoff, 1, memory_order_release);
    if (grpc_call_start_batch(call, ops, n, tag, NULL) == GRPC_CALL_OK) return true;
    atomic_fetch_sub(&w->s->outstanding, 1);
    return false;
}

/* ---- unary calls ---- */

static void unary_free(unary_call *u)
{
    if (u->payload != NULL) grpc_byte_buffer_destroy(u->payload);
    if (u->reply != NULL) grpc_byte_buffer_destroy(u->reply);
    if (u->replying) grpc_slice_unref(u->details);
    for (size_t i = 0; i < u->n_reply_md; i++) {
        grpc_slice_unref(u->reply_md[i].key);
        grpc_slice_unref(u->reply_md[i].value);
    }
    grpc_metadata_array_destroy(&u->md);
    if (u->call != NULL) grpc_call_unref(u->call);
    free(u);
}

static grpc_byte_buffer *pack_message(const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    grpc_slice sl = grpc_slice_malloc(n);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(sl));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    return bb;
}

/* Reads a byte buffer into one arena copy. */
static unsigned char *read_buffer(grpc_byte_buffer *bb, arena *a, size_t *len)
{
    grpc_byte_buffer_reader r;
    unsigned char *out;
    if (!grpc_byte_buffer_reader_init(&r, bb)) return NULL;
    grpc_slice sl = grpc_byte_buffer_reader_readall(&r);
    *len = GRPC_SLICE_LENGTH(sl);
    out = arena_alloc(a, *len + 1);
    memcpy(out, GRPC_SLICE_START_PTR(sl), *len);
    grpc_slice_unref(sl);
    grpc_byte_buffer_reader_destroy(&r);
    return out;
}

/* The gRPC server metrics, named as grpc-ecosystem's go-grpc-prometheus
 * names them (dashboards for it work unchanged). */
typedef struct call_metrics_t {
    metric *started, *handled, *seconds, *in_flight;
    metric_series *in_flight_series;
} call_metrics_t;

static call_metrics_t cm_instance;
static pthread_once_t cm_once = PTHREAD_ONCE_INIT;

static void init_call_metrics(void)
{
    const char *labels = "grpc_service,grpc_method";
    cm_instance.started = metric_counter("grpc_server_started_total", "RPCs started on the server.", labels);
    cm_instance.handled = metric_counter("grpc_server_handled_total",
                                         "RPCs completed on the server, whatever their status.",
                                         "grpc_service,grpc_method,grpc_code");
    cm_instance.seconds = metric_histogram("grpc_server_handling_seconds",
                                           "Time from the start of an RPC's handling to its reply.", labels,
                                           METRIC_LATENCY_BUCKETS, METRIC_N_LATENCY_BUCKETS);
    cm_instance.in_flight = metric_gauge("grpc_server_calls_in_flight", "RPCs being handled now.", NULL);
    cm_instance.in_flight_series = metric_only(cm_instance.in_flight);
}

static call_metrics_t *call_metrics(void)
{
    pthread_once(&cm_once, init_call_metrics);
    return &cm_instance;
}

/* Counts a finished call of m with its status code. */
static void count_handled(method_entry *m, grpc_status_code code)
{
    /* The series of (method, code), looked up once. */
    metric_series *handled = (unsigned)code < 17 ? atomic_load_explicit(&m->handled[code], memory_order_acquire) : NULL;
    if (handled == NULL) {
        handled = metric_with(call_metrics()->handled, m->service, m->name, grpcx_code_name(code));
        if ((unsigned)code < 17) atomic_store_explicit(&m->handled[code], handled, memory_order_release);
    }
    metric_add(handled, 1);
}

static bool stream_open(unary_call *u, grpcx_call *c, const ProtobufCMessage *req);

/* Counts the call's end and sends its reply (the message packed in
 * u->reply, if any) with code and msg. */
static void unary_reply(unary_call *u, grpc_status_code code, const char *msg)
{
    method_entry *m = u->m;
    grpcx_server *s = u->w->s;
    if (code == GRPC_STATUS_INTERNAL)
        log_error(s->component, "call failed", "method=%s code=%s detail=\"%s\"", m->path, grpcx_code_name(code),
                  msg);
    double us = gpr_timespec_to_micros(gpr_time_sub(gpr_now(GPR_CLOCK_MONOTONIC), u->t0));
    log_debug(s->component, "call", "method=%s code=%s ms=%.3f", m->path, grpcx_code_name(code), us / 1000.0);
    metric_add(call_metrics()->in_flight_series, -1);
    metric_observe(m->seconds, us / 1e6);
    count_handled(m, code);

    grpc_op ops[4];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].data.send_initial_metadata.count = u->n_reply_md;
    ops[n++].data.send_initial_metadata.metadata = u->n_reply_md > 0 ? u->reply_md : NULL;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n++].data.recv_close_on_server.cancelled = &u->cancelled;
    if (u->reply != NULL) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = u->reply;
    }
    u->details = grpc_slice_from_copied_string(msg);
    u->replying = true;
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n++].data.send_status_from_server.status_details = &u->details;
    if (!start_batch(u->w, u->call, ops, n, u)) {
        log_error(s->component, "could not start the reply batch", "method=%s", m->path);
        unary_free(u);
    }
}

/* A handler's result as the call's status: the error's code and message,
 * INTERNAL when it produced no reply, or OK with resp packed into
 * u->reply. */
static grpc_status_code handler_status(unary_call *u, int rc, const ProtobufCMessage *resp, const todo_err *err,
                                       const char **msg)
{
    *msg = "";
    if (rc != TODO_OK) {
        *msg = err != NULL ? err->msg : "";
        return grpcx_status_of(rc);
    }
    if (resp == NULL) {
        *msg = "the handler produced no reply";
        return GRPC_STATUS_INTERNAL;
    }
    u->reply = pack_message(resp);
    return GRPC_STATUS_OK;
}

static void pool_push(unary_call *u);

static void unary_handle(unary_call *u)
{
    worker *w = u->w;
    method_entry *m = u->m;
    grpc_status_code code = GRPC_STATUS_OK;
    todo_err err;
    const char *msg = "";
    bool streamed = false; /* a server stream took the call */
    bool taken = false;    /* the handler took it to answer later: u is not to be touched after */
    bool offloaded = false; /* the handler sent it to the blocking pool, to be run again there */

    arena_reset(w->arena);
    todo_err_clear(&err);
    if (!u->begun) { /* counted and given its span once, also when it is run again */
        u->begun = true;
        metric_add(u->m->started, 1);
        metric_add(call_metrics()->in_flight_series, 1);
        u->t0 = gpr_now(GPR_CLOCK_MONOTONIC);
        grpcx_call tc = {.u = u, .w = w};
        trace_ctx caller;
        trace_child(trace_parse(grpcx_call_metadata(&tc, "traceparent"), &caller) ? &caller : NULL, &u->trace);
    }
    trace_enter(&u->trace); /* the handler's log lines carry it */
    if (u->payload == NULL) {
        code = GRPC_STATUS_INVALID_ARGUMENT;
        msg = "the request carried no message";
    } else if (gpr_time_cmp(u->deadline, gpr_now(u->deadline.clock_type)) <= 0) {
        code = GRPC_STATUS_DEADLINE_EXCEEDED;
        msg = "the deadline passed before the call was handled";
    } else if (m->fn == NULL && m->stream == NULL) {
        code = GRPC_STATUS_UNIMPLEMENTED;
        msg = arena_printf(w->arena, "%s is not implemented yet", m->path);
    } else {
        ProtobufCMessage *req = NULL, *resp = NULL;
        size_t len = 0;
        grpcx_call c = {.u = u, .w = w};
        const grpcx_server_opts *o = &w->s->opts;
        pbx_limits lim = {.max_depth = PBX_MAX_DEPTH,
                          .max_bytes = o->call_memory_bytes ? o->call_memory_bytes : DEFAULT_CALL_MEMORY};
        int rc = o->authenticate != NULL && !m->open ? o->authenticate(&c, &err) : TODO_OK;
        unsigned char *bytes = rc == TODO_OK ? read_buffer(u->payload, w->arena, &len) : NULL;
        if (rc == TODO_OK && bytes == NULL) rc = todo_err_set(&err, TODO_EINVAL, "the request could not be read");
        if (rc == TODO_OK) rc = pbx_decode(m->md->input, bytes, len, w->arena, &lim, &req, &err);
        if (rc != TODO_OK) {
            code = grpcx_status_of(rc);
            msg = err.msg;
        } else if (m->stream != NULL) {
            streamed = stream_open(u, &c, req);
            if (!streamed) {
                code = GRPC_STATUS_INTERNAL;
                msg = "the stream could not be opened";
            }
        } else {
            rc = m->fn(&c, req, &resp, &err);
            taken = c.later;
            offloaded = c.offload && rc == TODO_OK;
            if (c.offload && !offloaded) { /* offloaded, then refused: its place in the queue is given back */
                pthread_mutex_lock(&w->s->pool_mu);
                w->s->pool_queued--;
                pthread_mutex_unlock(&w->s->pool_mu);
            }
            if (offloaded) { /* the blocking pool runs it again; nothing of this run is kept */
                if (u->reply != NULL) grpc_byte_buffer_destroy(u->reply);
                u->reply = NULL;
            } else if (rc != TODO_OK || !taken) {
                code = handler_status(u, rc, resp, &err, &msg);
            }
        }
    }
    if (streamed) { /* the stream has the call now; it counts its own end */
        metric_add(call_metrics()->in_flight_series, -1);
        trace_leave();
        unary_free(u);
        arena_reset(w->arena);
        return;
    }
    if (code != GRPC_STATUS_OK && taken) { /* taken, then refused: answered now (the handle unused) */
        taken = false;
        atomic_fetch_sub(&w->s->outstanding, 1);
    }
    if (!taken && !offloaded) unary_reply(u, code, msg); /* logged in the call's span */
    trace_leave();
    arena_reset(w->arena);
    if (offloaded) pool_push(u); /* the last touch of u on this thread */
}

/* ---- the blocking pool ---- */

bool grpcx_call_pooled(grpcx_call *c) { return c->w->blocking; }

bool grpcx_call_offload(grpcx_call *c)
{
    grpcx_server *s = c->w->s;
    if (c->offload) return true; /* asked twice: one place */
    if (c->w->blocking || s->opts.blocking_threads <= 0 || c->later || c->u->m->stream != NULL) return false;
    /* A full queue: the worker runs the call itself, and takes no other
     * call meanwhile (back-pressure, and bounded memory). The place is held
     * from here: the handler returns, then its call is queued. */
    pthread_mutex_lock(&s->pool_mu);
    bool room = s->pool_queued < s->pool_max;
    if (room) s->pool_queued++;
    pthread_mutex_unlock(&s->pool_mu);
    if (room) c->offload = true;
    return room;
}

/* Queues u for the blocking pool, counted as owed (the workers wait for
 * it). Reply metadata of the first run is dropped: the second adds its own. */
static void pool_push(unary_call *u)
{
    grpcx_server *s = u->w->s;
    for (size_t i = 0; i < u->n_reply_md; i++) {
        grpc_slice_unref(u->reply_md[i].key);
        grpc_slice_unref(u->reply_md[i].value);
    }
    u->n_reply_md = 0;
    u->pool_next = NULL;
    atomic_fetch_add(&s->outstanding, 1);
    pthread_mutex_lock(&s->pool_mu);
    if (s->pool_tail != NULL) s->pool_tail->pool_next = u;
    else s->pool_head = u;
    s->pool_tail = u;
    pthread_cond_signal(&s->pool_cv);
    pthread_mutex_unlock(&s->pool_mu);
}

/* A thread of the blocking pool: runs offloaded calls until the pool is
 * stopped and empty. */
static void *blocker_main(void *arg)
{
    worker *w = arg;
    grpcx_server *s = w->s;
    if (s->opts.thread_init != NULL) w->state = s->opts.thread_init(s->opts.app, w->index);
    pthread_mutex_lock(&s->pool_mu);
    for (;;) {
        while (s->pool_head == NULL && !s->pool_stop) pthread_cond_wait(&s->pool_cv, &s->pool_mu);
        unary_call *u = s->pool_head;
        if (u == NULL) break; /* stopped, and nothing left */
        s->pool_head = u->pool_next;
        if (s->pool_head == NULL) s->pool_tail = NULL;
        s->pool_queued--;
        pthread_mutex_unlock(&s->pool_mu);
        u->w = w;
        if (atomic_load(&s->pool_refuse)) unary_reply(u, GRPC_STATUS_UNAVAILABLE, "the server is shutting down");
        else unary_handle(u); /* starts its reply (counted up) before it is counted down */
        atomic_fetch_sub(&s->outstanding, 1);
        pthread_mutex_lock(&s->pool_mu);
    }
    pthread_mutex_unlock(&s->pool_mu);
    if (s->opts.thread_cleanup != NULL) s->opts.thread_cleanup(w->state);
    return NULL;
}

/* ---- replies given later ---- */

grpcx_later *grpcx_call_later(grpcx_call *c)
{
    unary_call *u = c->u;
    if (c->offload) { /* the call is queued for the pool: a reply from here too would be a second one */
        log_error(u->w->s->component, "grpcx_call_later after grpcx_call_offload", "method=%s", u->m->path);
        abort();
    }
    if (!c->later) {
        c->later = true;
        atomic_fetch_add(&u->w->s->outstanding, 1); /* the reply owed: the workers wait for it */
    }
    return (grpcx_later *)u;
}

void grpcx_later_reply(grpcx_later *l, int rc, const ProtobufCMessage *resp, const todo_err *err)
{
    unary_call *u = (unary_call *)l;
    grpcx_server *s = u->w->s;
    const char *msg;
    trace_enter(&u->trace);
    grpc_status_code code = handler_status(u, rc, resp, err, &msg);
    unary_reply(u, code, msg); /* counts the reply batch it starts */
    trace_leave();
    atomic_fetch_sub(&s->outstanding, 1);
}

const trace_ctx *grpcx_later_trace(grpcx_later *l) { return &((unary_call *)l)->trace; }

static void on_unary(unary_call *u, int ok)
{
    if (u->replying || !ok) {
        unary_free(u);
        return;
    }
    post_unary(u->w, u->m); /* keep the method's requests posted */
    unary_handle(u);
}

/* ---- generic calls: reflection streams and unknown methods ---- */

static void stream_free(stream_call *sc)
{
    if (sc->recv != NULL) grpc_byte_buffer_destroy(sc->recv);
    if (sc->send != NULL) grpc_byte_buffer_destroy(sc->send);
    if (sc->state == ST_DONE) grpc_slice_unref(sc->status_details);
    grpc_call_details_destroy(&sc->details);
    grpc_metadata_array_destroy(&sc->md);
    if (sc->call != NULL) grpc_call_unref(sc->call);
    free(sc);
}

static void stream_finish(stream_call *sc, grpc_status_code code, const char *msg)
{
    grpc_op ops[3];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!sc->sent_initial) ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    sc->sent_initial = true;
    sc->status_details = grpc_slice_from_copied_string(msg);
    sc->state = ST_DONE;
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n++].data.send_status_from_server.status_details = &sc->status_details;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n++].data.recv_close_on_server.cancelled = &sc->cancelled;
    if (!start_batch(sc->w, sc->call, ops, n, sc)) stream_free(sc);
}

static void stream_recv(stream_call *sc)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &sc->recv;
    sc->state = ST_RECV;
    if (!start_batch(sc->w, sc->call, &op, 1, sc)) stream_free(sc);
}

static void stream_answer(stream_call *sc)
{
    worker *w = sc->w;
    grpcx_server *s = w->s;
    unsigned char *req, *out = NULL;
    size_t len = 0, out_len = 0;
    todo_err err;

    arena_reset(w->arena);
    req = read_buffer(sc->recv, w->arena, &len);
    grpc_byte_buffer_destroy(sc->recv);
    sc->recv = NULL;
    if (req == NULL ||
        reflect_answer(s->reflect, s->services, s->n_services, req, len, w->arena, &out, &out_len, &err) != 0) {
        stream_finish(sc, GRPC_STATUS_INVALID_ARGUMENT, req == NULL ? "unreadable message" : err.msg);
        arena_reset(w->arena);
        return;
    }
    grpc_slice sl = grpc_slice_from_copied_buffer((const char *)out, out_len);
    sc->send = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    arena_reset(w->arena);

    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!sc->sent_initial) ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    sc->sent_initial = true;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = sc->send;
    sc->state = ST_SEND;
    if (!start_batch(w, sc->call, ops, n, sc)) stream_free(sc);
}

static void watch_begin(stream_call *sc);

static void on_generic(stream_call *sc, int ok)
{
    switch (sc->state) {
    case ST_POSTED:
        if (!ok) {
            stream_free(sc);
            return;
        }
        post_generic(sc->w);
        if (grpc_slice_str_cmp(sc->details.method, HEALTH_WATCH) == 0) {
            watch_begin(sc);
        } else if (grpc_slice_str_cmp(sc->details.method, REFLECTION_V1) == 0 ||
            grpc_slice_str_cmp(sc->details.method, REFLECTION_V1ALPHA) == 0) {
            stream_recv(sc);
        } else {
            char *m = grpc_slice_to_c_string(sc->details.method);
            char msg[512];
            snprintf(msg, sizeof msg, "method %s is not served here", m);
            gpr_free(m);
            stream_finish(sc, GRPC_STATUS_UNIMPLEMENTED, msg);
        }
        return;
    case ST_RECV:
        if (!ok) stream_free(sc);
        else if (sc->recv == NULL) stream_finish(sc, GRPC_STATUS_OK, ""); /* client half-closed */
        else stream_answer(sc);
        return;
    case ST_SEND:
        grpc_byte_buffer_destroy(sc->send);
        sc->send = NULL;
        if (!ok) stream_free(sc);
        else stream_recv(sc);
        return;
    case ST_DONE:
        stream_free(sc);
        return;
    }
}

/* ---- Health/Watch: a server stream per watcher ----
 *
 * A watch receives its one request, then sends the service's status, and
 * a new message each time it changes (grpcx_server_set_serving and
 * grpcx_server_set_health tell every watch), until the client goes away or
 * the server shuts down (NOT_SERVING, then status UNAVAILABLE). At most one
 * send is in flight per call: a change seen meanwhile is sent when it
 * completes (the latest status only). A watch lives while a batch of it is
 * outstanding or it is in the server's list (refs). */

typedef enum watch_phase { W_RECV, W_STREAM, W_ENDED } watch_phase;

typedef struct watch_call watch_call;

typedef struct watch_close_tag {
    tag_kind kind; /* TAG_WATCH_CLOSE: the call is over (client gone, or status sent) */
    atomic_uint handoff;
    watch_call *watch;
} watch_close_tag;

struct watch_call {
    tag_kind kind; /* TAG_WATCH: the receive, then each send */
    atomic_uint handoff;
    grpcx_server *s;
    grpc_call *call;
    watch_close_tag close;
    pthread_mutex_t mu;
    int refs;
    watch_phase phase;
    bool sending, listed;
    int last; /* the status last sent; -1 none */
    char service[256];
    grpc_byte_buffer *recv, *send;
    grpc_slice details;
    bool have_details;
    int cancelled;
    watch_call *next;
};

static void watch_free(watch_call *w)
{
    if (w->recv != NULL) grpc_byte_buffer_destroy(w->recv);
    if (w->send != NULL) grpc_byte_buffer_destroy(w->send);
    if (w->have_details) grpc_slice_unref(w->details);
    grpc_call_unref(w->call);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/* Starts a batch of w's call (w->mu held); counts it in refs and in the
 * server's outstanding completions. */
static bool watch_batch(watch_call *w, const grpc_op *ops, size_t n, void *tag)
{
    atomic_fetch_add(&w->s->outstanding, 1);
    atomic_fetch_add_explicit(&((tag_head *)tag)->handoff, 1, memory_order_release);
    if (grpc_call_start_batch(w->call, ops, n, tag, NULL) != GRPC_CALL_OK) {
        atomic_fetch_sub(&w->s->outstanding, 1);
        return false;
    }
    w->refs++;
    return true;
}

/* Ends the stream with code (w->mu held). */
static void watch_end(watch_call *w, grpc_status_code code, const char *msg)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    w->phase = W_ENDED;
    w->details = grpc_slice_from_copied_string(msg);
    w->have_details = true;
    op.op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    op.data.send_status_from_server.status = code;
    op.data.send_status_from_server.status_details = &w->details;
    watch_batch(w, &op, 1, w);
}

/* Sends what changed since the last message, or ends the stream once the
 * server is shutting down and NOT_SERVING went out (w->mu held). */
static void watch_pump(watch_call *w)
{
    if (w->phase != W_STREAM || w->sending) return;
    int now = health_status(w->s, w->service);
    if (now == w->last) {
        if (atomic_load(&w->s->watch_finish)) watch_end(w, GRPC_STATUS_UNAVAILABLE, "the server is shutting down");
        return;
    }
    Grpc__Health__V1__HealthCheckResponse rs = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    rs.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)now;
    w->send = pack_message(&rs.base);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = w->send;
    if (watch_batch(w, &op, 1, w)) {
        w->sending = true;
        w->last = now;
    } else {
        grpc_byte_buffer_destroy(w->send);
        w->send = NULL;
        watch_end(w, GRPC_STATUS_INTERNAL, "the health status could not be sent");
    }
}

/* Tells every watch that a status may have changed. */
static void watch_notify(grpcx_server *s)
{
    pthread_mutex_lock(&s->watch_mu);
    for (watch_call *w = s->watches; w != NULL; w = w->next) {
        pthread_mutex_lock(&w->mu);
        watch_pump(w);
        pthread_mutex_unlock(&w->mu);
    }
    pthread_mutex_unlock(&s->watch_mu);
}

/* Takes over the call of a generic request for Health/Watch. */
static void watch_begin(stream_call *sc)
{
    grpcx_server *s = sc->w->s;
    watch_call *w = calloc(1, sizeof *w);
    if (w == NULL) abort();
    w->kind = TAG_WATCH;
    w->close.kind = TAG_WATCH_CLOSE;
    w->close.watch = w;
    w->s = s;
    w->call = sc->call;
    w->last = -1;
    sc->call = NULL;
    stream_free(sc);
    pthread_mutex_init(&w->mu, NULL);

    pthread_mutex_lock(&s->watch_mu);
    pthread_mutex_lock(&w->mu);
    grpc_op close_op, ops[2];
    memset(&close_op, 0, sizeof close_op);
    memset(ops, 0, sizeof ops);
    close_op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    close_op.data.recv_close_on_server.cancelled = &w->cancelled;
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_MESSAGE;
    ops[1].data.recv_message.recv_message = &w->recv;
    bool ok = watch_batch(w, &close_op, 1, &w->close) && watch_batch(w, ops, 2, w);
    if (ok) {
        w->listed = true;
        w->refs++;
        w->next = s->watches;
        s->watches = w;
    }
    if (!ok && w->refs > 0) grpc_call_cancel(w->call, NULL); /* under the lock: its close tag comes back, then it is freed */
    int refs = w->refs;
    pthread_mutex_unlock(&w->mu);
    pthread_mutex_unlock(&s->watch_mu);
    if (refs == 0) watch_free(w);
}

/* A receive or a send of w completed. */
static void on_watch(watch_call *w, int ok)
{
    pthread_mutex_lock(&w->mu);
    w->refs--;
    if (w->phase == W_RECV) {
        Grpc__Health__V1__HealthCheckRequest *rq = NULL;
        if (ok && w->recv != NULL) {
            grpc_byte_buffer_reader r;
            if (grpc_byte_buffer_reader_init(&r, w->recv)) {
                grpc_slice all = grpc_byte_buffer_reader_readall(&r);
                rq = grpc__health__v1__health_check_request__unpack(NULL, GRPC_SLICE_LENGTH(all),
                                                                    GRPC_SLICE_START_PTR(all));
                grpc_slice_unref(all);
                grpc_byte_buffer_reader_destroy(&r);
            }
        }
        if (!ok) {
            w->phase = W_ENDED;
        } else if (rq == NULL || strlen(rq->service) >= sizeof w->service) {
            watch_end(w, GRPC_STATUS_INVALID_ARGUMENT, "the request is not a HealthCheckRequest with a service name");
        } else {
            snprintf(w->service, sizeof w->service, "%s", rq->service);
            w->phase = W_STREAM;
            watch_pump(w);
        }
        if (rq != NULL) grpc__health__v1__health_check_request__free_unpacked(rq, NULL);
    } else if (w->sending) {
        w->sending = false;
        grpc_byte_buffer_destroy(w->send);
        w->send = NULL;
        if (ok) watch_pump(w);
        else w->phase = W_ENDED; /* the client is gone */
    }
    int refs = w->refs;
    pthread_mutex_unlock(&w->mu);
    if (refs == 0) watch_free(w);
}

/* w's call is over: it leaves the list (frees once its last batch is back). */
static void on_watch_close(watch_call *w)
{
    grpcx_server *s = w->s;
    pthread_mutex_lock(&s->watch_mu);
    pthread_mutex_lock(&w->mu);
    if (w->listed) {
        for (watch_call **p = &s->watches; *p != NULL; p = &(*p)->next)
            if (*p == w) {
                *p = w->next;
                break;
            }
        w->listed = false;
        w->refs--;
    }
    w->refs--; /* the close batch */
    w->phase = W_ENDED;
    int refs = w->refs;
    pthread_mutex_unlock(&w->mu);
    pthread_mutex_unlock(&s->watch_mu);
    if (refs == 0) watch_free(w);
}

/* ---- application server streams (grpcx_server_stream_fn) ----
 *
 * A stream takes over its call once the handler's request is decoded: a
 * close batch (RECV_CLOSE_ON_SERVER: the call is over) and the initial
 * metadata go out at once, then the handler runs. Messages wait in a ring
 * of GRPCX_STREAM_BUFFER, sent one at a time; the status follows the last
 * (grpcx_server_stream_end, or UNAVAILABLE at shutdown). refs counts the batches
 * in flight, the handler's hold and the server's list; the grpc_call is
 * released once the call is over and no batch of it is in flight (before
 * the server is destroyed), the struct when refs reach 0. */

typedef struct stream_close_tag {
    tag_kind kind; /* TAG_STREAM_CLOSE */
    atomic_uint handoff;
    struct grpcx_server_stream *st;
} stream_close_tag;

struct grpcx_server_stream {
    tag_kind kind; /* TAG_STREAM: the initial metadata, each send, the status */
    atomic_uint handoff;
    grpcx_server *s;
    method_entry *m;
    grpc_call *call;
    stream_close_tag close;
    pthread_mutex_t mu;
    int refs, batches;
    bool sending;       /* the initial metadata or a message is in flight */
    bool ending, ended; /* the status is due / was sent */
    bool over;          /* the call is over: nothing more goes out */
    bool listed;
    grpc_byte_buffer *ring[GRPCX_STREAM_BUFFER];
    int head, n;
    grpc_byte_buffer *send;
    grpc_status_code code;
    grpc_slice details;
    bool have_details;
    char msg[256];
    int cancelled;
    void (*on_event)(void *ctx);
    void *ctx;
    struct grpcx_server_stream *next;
};

static void stream_drop_queue(grpcx_server_stream *st)
{
    for (; st->n > 0; st->n--) {
        grpc_byte_buffer_destroy(st->ring[st->head]);
        st->head = (st->head + 1) % GRPCX_STREAM_BUFFER;
    }
}

static void stream_struct_free(grpcx_server_stream *st)
{
    stream_drop_queue(st);
    if (st->send != NULL) grpc_byte_buffer_destroy(st->send);
    if (st->have_details) grpc_slice_unref(st->details);
    if (st->call != NULL) grpc_call_unref(st->call);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

/* Starts a batch of st's call (st->mu held). */
static bool stream_batch(grpcx_server_stream *st, const grpc_op *ops, size_t n, void *tag)
{
    atomic_fetch_add(&st->s->outstanding, 1);
    atomic_fetch_add_explicit(&((tag_head *)tag)->handoff, 1, memory_order_release);
    if (grpc_call_start_batch(st->call, ops, n, tag, NULL) != GRPC_CALL_OK) {
        atomic_fetch_sub(&st->s->outstanding, 1);
        return false;
    }
    st->refs++;
    st->batches++;
    return true;
}

/* The call is over and nothing of it in flight: gRPC gets it back (st->mu held). */
static void stream_let_call_go(grpcx_server_stream *st)
{
    if (st->over && st->batches == 0 && st->call != NULL) {
        grpc_call_unref(st->call);
        st->call = NULL;
    }
}

/* Sends the next message, or the status once nothing is queued and the
 * stream is ending (st->mu held). */
static void stream_pump(grpcx_server_stream *st)
{
    if (st->over || st->sending || st->ended) return;
    grpc_op op;
    memset(&op, 0, sizeof op);
    if (st->n > 0) {
        st->send = st->ring[st->head];
        st->head = (st->head + 1) % GRPCX_STREAM_BUFFER;
        st->n--;
        op.op = GRPC_OP_SEND_MESSAGE;
        op.data.send_message.send_message = st->send;
        if (stream_batch(st, &op, 1, st)) {
            st->sending = true;
            return;
        }
        grpc_byte_buffer_destroy(st->send);
        st->send = NULL;
        st->code = GRPC_STATUS_INTERNAL;
        snprintf(st->msg, sizeof st->msg, "a message could not be sent");
        st->ending = true;
    }
    if (!st->ending) return;
    st->ended = true;
    st->details = grpc_slice_from_copied_string(st->msg);
    st->have_details = true;
    op.op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    op.data.send_status_from_server.status = st->code;
    op.data.send_status_from_server.status_details = &st->details;
    if (!stream_batch(st, &op, 1, st)) grpc_call_cancel(st->call, NULL); /* its close comes back */
    count_handled(st->m, st->code);
}

/* Opens the stream of u's call and runs its handler; false when the call
 * could not be taken over (u still owns it then). */
static bool stream_open(unary_call *u, grpcx_call *c, const ProtobufCMessage *req)
{
    grpcx_server *s = u->w->s;
    grpcx_server_stream *st = calloc(1, sizeof *st);
    if (st == NULL) return false;
    st->kind = TAG_STREAM;
    st->close.kind = TAG_STREAM_CLOSE;
    st->close.st = st;
    st->s = s;
    st->m = u->m;
    st->call = u->call;
    st->refs = 1; /* the handler's */
    pthread_mutex_init(&st->mu, NULL);

    pthread_mutex_lock(&s->watch_mu);
    pthread_mutex_lock(&st->mu);
    grpc_op close_op, md_op;
    memset(&close_op, 0, sizeof close_op);
    memset(&md_op, 0, sizeof md_op);
    close_op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    close_op.data.recv_close_on_server.cancelled = &st->cancelled;
    md_op.op = GRPC_OP_SEND_INITIAL_METADATA;
    if (!stream_batch(st, &close_op, 1, &st->close)) {
        pthread_mutex_unlock(&st->mu);
        pthread_mutex_unlock(&s->watch_mu);
        st->call = NULL;
        stream_struct_free(st);
        return false;
    }
    /* The stream's now (its close batch is out); u keeps pointing at it
     * while the handler runs, for the call's accessors. */
    st->sending = stream_batch(st, &md_op, 1, st);
    if (!st->sending) grpc_call_cancel(st->call, NULL);
    st->listed = true;
    st->refs++;
    st->next = s->streams;
    s->streams = st;
    if (atomic_load(&s->watch_finish)) { /* opened as the server stops */
        st->ending = true;
        st->code = GRPC_STATUS_UNAVAILABLE;
        snprintf(st->msg, sizeof st->msg, "the server is shutting down");
    }
    pthread_mutex_unlock(&st->mu);
    pthread_mutex_unlock(&s->watch_mu);

    todo_err err;
    todo_err_clear(&err);
    int rc = u->m->stream(c, req, st, &err);
    u->call = NULL;
    if (rc != TODO_OK) {
        if (grpcx_status_of(rc) == GRPC_STATUS_INTERNAL)
            log_error(s->component, "call failed", "method=%s detail=\"%s\"", u->m->path, err.msg);
        grpcx_server_stream_end(st, rc, err.msg);
        grpcx_server_stream_release(st);
    }
    return true;
}

/* Events go to the handler's callback, outside the lock. */
static void stream_tell(void (*fn)(void *), void *ctx)
{
    if (fn != NULL) fn(ctx);
}

/* A batch of st completed: the initial metadata or a message went out (or
 * failed: the client is gone), or the status did. */
static void on_stream(grpcx_server_stream *st, int ok)
{
    pthread_mutex_lock(&st->mu);
    st->refs--;
    st->batches--;
    bool tell = false;
    if (st->sending) {
        st->sending = false;
        tell = st->send != NULL;
        if (st->send != NULL) grpc_byte_buffer_destroy(st->send);
        st->send = NULL;
        if (ok) stream_pump(st);
        else if (st->call != NULL && !st->over) grpc_call_cancel(st->call, NULL); /* its close comes back */
    }
    stream_let_call_go(st);
    void (*fn)(void *) = tell ? st->on_event : NULL;
    void *ctx = st->ctx;
    int refs = st->refs;
    pthread_mutex_unlock(&st->mu);
    stream_tell(fn, ctx);
    if (refs == 0) stream_struct_free(st);
}

/* st's call is over (the client left, or the status went out). */
static void on_stream_close(grpcx_server_stream *st)
{
    grpcx_server *s = st->s;
    pthread_mutex_lock(&s->watch_mu);
    pthread_mutex_lock(&st->mu);
    if (st->listed) {
        for (grpcx_server_stream **p = &s->streams; *p != NULL; p = &(*p)->next)
            if (*p == st) {
                *p = st->next;
                break;
            }
        st->listed = false;
        st->refs--;
    }
    st->refs--;
    st->batches--;
    st->over = true;
    if (!st->ended) count_handled(st->m, GRPC_STATUS_CANCELLED);
    stream_drop_queue(st);
    stream_let_call_go(st);
    void (*fn)(void *) = st->on_event;
    void *ctx = st->ctx;
    int refs = st->refs;
    pthread_mutex_unlock(&st->mu);
    pthread_mutex_unlock(&s->watch_mu);
    stream_tell(fn, ctx);
    if (refs == 0) stream_struct_free(st);
}

/* Shutdown: every open stream ends once its queue is sent. */
static void streams_finish(grpcx_server *s)
{
    pthread_mutex_lock(&s->watch_mu);
    for (grpcx_server_stream *st = s->streams; st != NULL; st = st->next) {
        pthread_mutex_lock(&st->mu);
        if (!st->ending && !st->over) {
            st->ending = true;
            st->code = GRPC_STATUS_UNAVAILABLE;
            snprintf(st->msg, sizeof st->msg, "the server is shutting down");
            stream_pump(st);
        }
        pthread_mutex_unlock(&st->mu);
    }
    pthread_mutex_unlock(&s->watch_mu);
}

int grpcx_server_stream_send(grpcx_server_stream *st, const ProtobufCMessage *msg)
{
    grpc_byte_buffer *bb = pack_message(msg);
    int rc = TODO_OK;
    pthread_mutex_lock(&st->mu);
    if (st->over || st->ending) {
        rc = TODO_EUNAVAIL;
    } else if (st->n == GRPCX_STREAM_BUFFER) {
        rc = TODO_ETOOBIG;
    } else {
        st->ring[(st->head + st->n) % GRPCX_STREAM_BUFFER] = bb;
        st->n++;
        stream_pump(st);
    }
    pthread_mutex_unlock(&st->mu);
    if (rc != TODO_OK) grpc_byte_buffer_destroy(bb);
    return rc;
}

int grpcx_server_stream_pending(grpcx_server_stream *st)
{
    pthread_mutex_lock(&st->mu);
    int n = st->over || st->ending ? -1 : st->n + (st->send != NULL);
    pthread_mutex_unlock(&st->mu);
    return n;
}

void grpcx_server_stream_end(grpcx_server_stream *st, int status, const char *msg)
{
    pthread_mutex_lock(&st->mu);
    if (!st->over && !st->ending) {
        st->ending = true;
        st->code = grpcx_status_of(status);
        snprintf(st->msg, sizeof st->msg, "%s", msg != NULL ? msg : "");
        stream_pump(st);
    }
    pthread_mutex_unlock(&st->mu);
}

void grpcx_server_stream_abort(grpcx_server_stream *st, int status, const char *msg)
{
    pthread_mutex_lock(&st->mu);
    if (!st->over && !st->ended && st->call != NULL) {
        st->ending = st->ended = true;
        st->code = grpcx_status_of(status);
        stream_drop_queue(st);
        grpc_call_cancel_with_status(st->call, st->code, msg != NULL ? msg : "", NULL); /* its close comes back */
        count_handled(st->m, st->code);
    }
    pthread_mutex_unlock(&st->mu);
}

void grpcx_server_stream_on_event(grpcx_server_stream *st, void (*fn)(void *ctx), void *ctx)
{
    pthread_mutex_lock(&st->mu);
    st->on_event = fn;
    st->ctx = ctx;
    pthread_mutex_unlock(&st->mu);
}

void grpcx_server_stream_release(grpcx_server_stream *st)
{
    pthread_mutex_lock(&st->mu);
    int refs = --st->refs;
    pthread_mutex_unlock(&st->mu);
    if (refs == 0) stream_struct_free(st);
}

/* ---- workers ---- */

static void *worker_main(void *arg)
{
    worker *w = arg;
    grpcx_server *s = w->s;

    if (s->opts.thread_init != NULL) w->state = s->opts.thread_init(s->opts.app, w->index);
    /* Every worker adds one request per method to the shared queue. */
    for (size_t i = 0; i < s->n_methods; i++) post_unary(w, &s->methods[i]);
    post_generic(w);
    for (;;) {
        /* A bounded wait, so that a draining worker notices all is idle. */
        gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(100, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(s->cq, until, NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type == GRPC_OP_COMPLETE) {
            /* The call is this worker's while it handles the event. */
            (void)atomic_load_explicit(&((tag_head *)ev.tag)->handoff, memory_order_acquire);
            switch (*(tag_kind *)ev.tag) {
            case TAG_UNARY:
                ((unary_call *)ev.tag)->w = w;
                on_unary(ev.tag, ev.success);
                break;
            case TAG_GENERIC:
                ((stream_call *)ev.tag)->w = w;
                on_generic(ev.tag, ev.success);
                break;
            case TAG_WATCH: on_watch(ev.tag, ev.success); break;
            case TAG_WATCH_CLOSE: on_watch_close(((watch_close_tag *)ev.tag)->watch); break;
            case TAG_STREAM: on_stream(ev.tag, ev.success); break;
            case TAG_STREAM_CLOSE: on_stream_close(((stream_close_tag *)ev.tag)->st); break;
            case TAG_SHUTDOWN: break;
            }
            /* Counted down only now: a handler may start its reply batch
             * (counted up) before it returns, so the count is never 0 while
             * a worker is in a handler. */
            atomic_fetch_sub(&s->outstanding, 1);
        }
        /* Once nothing is owed, the queue is shut down (once): every worker
         * then sees GRPC_QUEUE_SHUTDOWN. */
        if (atomic_load(&s->draining) && atomic_load(&s->outstanding) == 0 && !atomic_exchange(&s->cq_shut, 1))
            grpc_completion_queue_shutdown(s->cq);
    }
    if (s->opts.thread_cleanup != NULL) s->opts.thread_cleanup(w->state);
    return NULL;
}

/* ---- life cycle ---- */

static int add_method(grpcx_server *s, const char *service, const ProtobufCMethodDescriptor *md,
                      grpcx_unary_fn fn, grpcx_server_stream_fn stream, todo_err *err)
{
    method_entry *nm = realloc(s->methods, (s->n_methods + 1) * sizeof *nm);
    if (nm == NULL) return todo_err_set(err, TODO_EINTERNAL, "out of memory");
    s->methods = nm;
    method_entry *e = &s->methods[s->n_methods];
    memset(e, 0, sizeof *e);
    size_t len = strlen(service) + strlen(md->name) + 3;
    e->path = malloc(len);
    if (e->path == NULL) return todo_err_set(err, TODO_EINTERNAL, "out of memory");
    snprintf(e->path, len, "/%s/%s", service, md->name);
    e->path[strlen(service) + 1] = '\0'; /* the labels point into the path */
    e->service = e->path + 1;
    e->name = e->path + strlen(service) + 2;
    e->started = metric_with(call_metrics()->started, e->service, e->name);
    e->seconds = metric_with(call_metrics()->seconds, e->service, e->name);
    e->path[strlen(service) + 1] = '/';
    e->md = md;
    e->fn = fn;
    e->stream = stream;
    e->open = false;
    /* host NULL, or clients that send another authority never match. */
    e->handle = grpc_server_register_method(s->srv, e->path, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    if (e->handle == NULL) {
        free(e->path);
        return todo_err_set(err, TODO_EINTERNAL, "could not register %s", e->path);
    }
    s->n_methods++;
    return TODO_OK;
}

grpcx_server *grpcx_server_new(const grpcx_server_opts *opts, todo_err *err)
{
    grpcx_server *s = calloc(1, sizeof *s);
    grpc_arg args[10];
    grpc_channel_args chargs = {.num_args = 2, .args = args};

    if (s == NULL) {
        todo_err_set(err, TODO_EINTERNAL, "out of memory");
        return NULL;
    }
    if (opts->threads < 1) {
        free(s);
        todo_err_set(err, TODO_EINVAL, "a server needs at least one thread");
        return NULL;
    }
    s->opts = *opts;
    pthread_mutex_init(&s->watch_mu, NULL);
    pthread_mutex_init(&s->pool_mu, NULL);
    pthread_cond_init(&s->pool_cv, NULL);
    snprintf(s->component, sizeof s->component, "%s", opts->component ? opts->component : "grpc");
    s->reflect = reflect_index_new(todo_descriptor_set, todo_descriptor_set_len, err);
    if (s->reflect == NULL) {
        free(s);
        return NULL;
    }
    grpc_init();
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = opts->max_message_bytes;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = 16 << 20;
    /* The connection limits that are set (docs/SECURITY.md: they bound what
     * one client can take, HTTP/2 rapid reset included). */
    const struct {
        const char *key;
        int value;
    } limits[] = {
        {GRPC_ARG_MAX_CONCURRENT_STREAMS, opts->max_streams},
        {GRPC_ARG_MAX_CONNECTION_IDLE_MS, opts->max_connection_idle_ms},
        {GRPC_ARG_MAX_CONNECTION_AGE_MS, opts->max_connection_age_ms},
        {GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, opts->max_connection_age_grace_ms},
        {GRPC_ARG_KEEPALIVE_TIME_MS, opts->keepalive_ms},
        {GRPC_ARG_KEEPALIVE_TIMEOUT_MS, opts->keepalive_timeout_ms},
    };
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++)
        if (limits[i].value > 0)
            args[chargs.num_args++] = (grpc_arg){.type = GRPC_ARG_INTEGER, .key = (char *)limits[i].key,
                                                 .value.integer = limits[i].value};
    grpc_resource_quota *quota = NULL;
    if (opts->memory_bytes > 0) {
        quota = grpc_resource_quota_create("todo-grpc");
        grpc_resource_quota_resize(quota, (size_t)opts->memory_bytes);
        args[chargs.num_args++] = (grpc_arg){.type = GRPC_ARG_POINTER, .key = GRPC_ARG_RESOURCE_QUOTA,
                                             .value.pointer = {.p = quota, .vtable = grpc_resource_quota_arg_vtable()}};
    }
    s->srv = grpc_server_create(&chargs, NULL);
    if (quota != NULL) grpc_resource_quota_unref(quota); /* the server holds it */

    /* The built-in services. Health/Watch (server streaming) is taken by
     * the generic path (watch_begin). */
    const ProtobufCServiceDescriptor *h = &grpc__health__v1__health__descriptor;
    if (add_method(s, h->name, &h->methods[0], health_check, NULL, err) != 0) {
        grpcx_server_free(s);
        return NULL;
    }
    s->methods[s->n_methods - 1].open = true;
    s->services[s->n_services++] = h->name;
    s->services[s->n_services++] = "grpc.reflection.v1.ServerReflection";
    s->services[s->n_services++] = "grpc.reflection.v1alpha.ServerReflection";
    return s;
}

int grpcx_server_add_service(grpcx_server *s, const ProtobufCServiceDescriptor *svc,
                             const grpcx_method *methods, size_t n, todo_err *err)
{
    if (s->started) return todo_err_set(err, TODO_EINTERNAL, "services must be added before start");
    if (s->n_services == MAX_SERVICES) return todo_err_set(err, TODO_EINTERNAL, "too many services");
    if (!reflect_has_symbol(s->reflect, svc->name))
        return todo_err_set(err, TODO_EINTERNAL, "service %s is missing from the descriptor set", svc->name);
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (unsigned j = 0; j < svc->n_methods; j++) found |= strcmp(svc->methods[j].name, methods[i].name) == 0;
        if (!found)
            return todo_err_set(err, TODO_EINTERNAL, "%s has no method %s", svc->name, methods[i].name);
    }
    for (unsigned j = 0; j < svc->n_methods; j++) {
        grpcx_unary_fn fn = NULL;
        grpcx_server_stream_fn stream = NULL;
        for (size_t i = 0; i < n; i++)
            if (strcmp(svc->methods[j].name, methods[i].name) == 0) {
                fn = methods[i].fn;
                stream = methods[i].stream;
            }
        int rc = add_method(s, svc->name, &svc->methods[j], fn, stream, err);
        if (rc != 0) return rc;
    }
    s->services[s->n_services++] = svc->name;
    return TODO_OK;
}

static bool set_(const char *s) { return s != NULL && s[0] != '\0'; }

/* The server's credentials: TLS from opts.tls, or plaintext. */
static grpc_server_credentials *server_credentials(const grpcx_tls_server *tls, todo_err *err)
{
    if (!set_(tls->cert_file) && !set_(tls->key_file)) return grpc_insecure_server_credentials_create();
    if (!set_(tls->cert_file) || !set_(tls->key_file)) {
        todo_err_set(err, TODO_EINVAL, "TLS needs both a certificate and its key");
        return NULL;
    }
    char *cert = grpcx_read_pem(tls->cert_file, err);
    char *key = cert != NULL ? grpcx_read_pem(tls->key_file, err) : NULL;
    char *ca = key != NULL && set_(tls->client_ca_file) ? grpcx_read_pem(tls->client_ca_file, err) : NULL;
    grpc_server_credentials *creds = NULL;
    if (key != NULL && (ca != NULL || !set_(tls->client_ca_file))) {
        grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
        creds = grpc_ssl_server_credentials_create_ex(
            ca, &pair, 1, ca != NULL ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                     : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
            NULL);
        if (creds == NULL) todo_err_set(err, TODO_EINVAL, "the TLS certificate or key is not usable");
    }
    free(cert);
    free(key);
    free(ca);
    return creds;
}

int grpcx_server_start(grpcx_server *s, const char *addr, todo_err *err)
{
    grpc_server_credentials *creds = server_credentials(&s->opts.tls, err);
    if (creds == NULL) return err->code;
    s->port = grpc_server_add_http2_port(s->srv, addr, creds);
    grpc_server_credentials_release(creds);
    if (s->port == 0) return todo_err_set(err, TODO_EUNAVAIL, "cannot listen on %s (address in use or invalid)", addr);

    s->workers = calloc((size_t)s->opts.threads, sizeof *s->workers);
    if (s->workers == NULL) return todo_err_set(err, TODO_EINTERNAL, "out of memory");
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->srv, s->cq, NULL);
    for (int i = 0; i < s->opts.threads; i++) {
        s->workers[i].s = s;
        s->workers[i].index = i;
        s->workers[i].arena = arena_new();
        if (s->workers[i].arena == NULL) abort();
    }
    int nb = s->opts.blocking_threads > 0 ? s->opts.blocking_threads : 0;
    s->pool_max = s->opts.blocking_queue > 0 ? s->opts.blocking_queue : 64 * nb;
    s->blockers = nb > 0 ? calloc((size_t)nb, sizeof *s->blockers) : NULL;
    if (nb > 0 && s->blockers == NULL) abort();
    for (int i = 0; i < nb; i++) {
        s->blockers[i] = (worker){.s = s, .index = s->opts.threads + i, .arena = arena_new(), .blocking = true};
        if (s->blockers[i].arena == NULL) abort();
    }
    grpc_server_start(s->srv);
    s->started = true;
    atomic_store(&s->serving, 1);
    for (int i = 0; i < nb; i++)
        if (pthread_create(&s->blockers[i].thread, NULL, blocker_main, &s->blockers[i]) != 0) abort();
    for (int i = 0; i < s->opts.threads; i++)
        if (pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i]) != 0) abort();
    log_info(s->component, "serving", "addr=%s port=%d threads=%d blocking_threads=%d tls=%s", addr, s->port,
             s->opts.threads, nb,
             !set_(s->opts.tls.cert_file)          ? "off"
             : set_(s->opts.tls.client_ca_file) ? "mutual"
                                                : "on");
    return TODO_OK;
}

int grpcx_server_port(const grpcx_server *s) { return s->port; }

void grpcx_server_set_serving(grpcx_server *s, bool serving)
{
    if (atomic_exchange(&s->serving, serving ? 1 : 0) != (serving ? 1 : 0)) watch_notify(s);
}

void grpcx_server_set_health(grpcx_server *s, const char *component, bool required, bool up)
{
    int n = atomic_load(&s->n_components);
    for (int i = 0; i < n; i++)
        if (strcmp(s->components[i].name, component) == 0) {
            if (atomic_exchange(&s->components[i].up, up ? 1 : 0) != (up ? 1 : 0)) watch_notify(s);
            return;
        }
    if (n == (int)(sizeof s->components / sizeof s->components[0])) return;
    struct component *k = &s->components[n];
    snprintf(k->name, sizeof k->name, "%s", component);
    k->required = required;
    atomic_store(&k->up, up ? 1 : 0);
    atomic_store(&s->n_components, n + 1); /* published complete; one thread adds components */
    watch_notify(s);
}

void grpcx_server_shutdown(grpcx_server *s, int grace_ms)
{
    static tag_kind shutdown_tag = TAG_SHUTDOWN;
    if (!s->started || s->stopped) return;
    s->stopped = true;
    /* Watchers hear NOT_SERVING, then their streams end. */
    atomic_store(&s->watch_finish, true);
    atomic_store(&s->serving, 0);
    watch_notify(s);
    streams_finish(s);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_server_shutdown_and_notify(s->srv, cq, &shutdown_tag);
    gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(grace_ms, GPR_TIMESPAN));
    grpc_event ev = grpc_completion_queue_pluck(cq, &shutdown_tag, until, NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
        log_warn(s->component, "cancelling calls still running after the grace period", "grace_ms=%d", grace_ms);
        atomic_store(&s->pool_refuse, true); /* calls still queued for the pool are not run */
        grpc_server_cancel_all_calls(s->srv);
        grpc_completion_queue_pluck(cq, &shutdown_tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    }
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
    atomic_store(&s->draining, 1);
    for (int i = 0; i < s->opts.threads; i++) {
        pthread_join(s->workers[i].thread, NULL);
        arena_free(s->workers[i].arena);
    }
    /* The workers stopped once nothing was owed: the pool's queue is empty. */
    pthread_mutex_lock(&s->pool_mu);
    s->pool_stop = true;
    pthread_cond_broadcast(&s->pool_cv);
    pthread_mutex_unlock(&s->pool_mu);
    for (int i = 0; i < (s->opts.blocking_threads > 0 ? s->opts.blocking_threads : 0); i++) {
        pthread_join(s->blockers[i].thread, NULL);
        arena_free(s->blockers[i].arena);
    }
    grpc_completion_queue_destroy(s->cq);
    grpc_server_destroy(s->srv);
    s->srv = NULL;
    log_info(s->component, "stopped", NULL);
}

void grpcx_server_free(grpcx_server *s)
{
    if (s == NULL) return;
    if (s->started) grpcx_server_shutdown(s, 0);
    if (s->srv != NULL) grpc_server_destroy(s->srv);
    for (size_t i = 0; i < s->n_methods; i++) free(s->methods[i].path);
    free(s->methods);
    free(s->workers);
    free(s->blockers);
    reflect_index_free(s->reflect);
    pthread_mutex_destroy(&s->watch_mu);
    pthread_mutex_destroy(&s->pool_mu);
    pthread_cond_destroy(&s->pool_cv);
    free(s);
    grpc_shutdown();
}
