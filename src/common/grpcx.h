/*
 * grpcx: a gRPC server runtime on the gRPC C core, for protobuf-c services.
 *
 * A server hosts services described by protoc-c's ProtobufCServiceDescriptor;
 * each method is a synchronous unary handler run on one of N worker threads,
 * which all take events from one completion queue: a call is handled by
 * whichever worker is free, never queued behind one that is busy (a lock
 * wait, a consistency-token wait). The runtime decodes the request into a per-call arena, checks the
 * deadline, calls the handler, encodes its reply or maps its todo_status to a
 * gRPC status with the handler's message, and always answers:
 *
 *   - a method without a handler answers UNIMPLEMENTED;
 *   - an unknown method answers UNIMPLEMENTED (the C core would leave it
 *     hanging: a generic request is kept posted for it);
 *   - the caller is authenticated (opts.authenticate) before the request
 *     body is looked at: a refused caller costs no decoding;
 *   - the request is decoded with pbx_decode (pbx.h): checked on its raw
 *     bytes first (nesting, field numbers, UTF-8 without NUL in every text
 *     field: INVALID_ARGUMENT naming the field), decoded within a memory
 *     budget (opts.call_memory_bytes: RESOURCE_EXHAUSTED past it, never an
 *     abort), and stripped of unknown fields, so nothing a client adds
 *     beyond the API reaches storage or Kafka;
 *   - a request over the maximum message size answers RESOURCE_EXHAUSTED
 *     (the C core enforces the limit).
 *
 * Every server also hosts grpc.health.v1.Health (Check, and Watch: a stream
 * of the status, a message each time it changes) and server reflection
 * (grpc.reflection.v1 and v1alpha) over the descriptor set embedded at build
 * time, so `grpcurl -plaintext HOST:PORT list` needs no proto files.
 *
 * Life cycle: grpcx_server_new, grpcx_server_add_service (any number),
 * grpcx_server_start, ... grpcx_server_shutdown (graceful: in-flight calls
 * finish within the grace period, then the rest are cancelled),
 * grpcx_server_free. Only the handlers run concurrently; the life-cycle
 * functions are called from one thread.
 */
#ifndef TODO_GRPCX_H
#define TODO_GRPCX_H

#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

#include "arena.h"
#include "grpcx_status.h"
#include "trace.h"
#include "todo_err.h"

typedef struct grpcx_server grpcx_server;
typedef struct grpcx_call grpcx_call;

/* A unary handler. req is decoded in the call's arena (borrowed). On success
 * it sets *resp to a message that lives until the handler returns (in the
 * arena, or static) and returns TODO_OK; otherwise it returns a todo_status
 * and says why in err, which becomes the gRPC status message. */
typedef int (*grpcx_unary_fn)(grpcx_call *call, const ProtobufCMessage *req, ProtobufCMessage **resp,
                              todo_err *err);

/* A server stream (a method declared `returns (stream ...)`). */
typedef struct grpcx_server_stream grpcx_server_stream;

/* A server-streaming handler. It runs like a unary one (the caller
 * authenticated, the request decoded and checked, on a worker) and opens
 * the stream: on TODO_OK the stream stays open, and st is the handler's to
 * send on from any thread until it calls grpcx_server_stream_release; otherwise
 * the call ends with that status (err's message) and st is not to be used. */
typedef int (*grpcx_server_stream_fn)(grpcx_call *call, const ProtobufCMessage *req, grpcx_server_stream *st, todo_err *err);

typedef struct grpcx_method {
    const char *name;      /* as in the service descriptor, e.g. "CreateTask" */
    grpcx_unary_fn fn;     /* a unary method's handler, or */
    grpcx_server_stream_fn stream; /* a server-streaming method's */
} grpcx_method;

/* TLS of a server: PEM files. cert_file and key_file: its certificate
 * (chain) and key (NULL or "": plaintext). client_ca_file (may be NULL or
 * ""): every client must present a certificate signed by this CA (mutual
 * TLS); the handshake of one that does not fails. */
typedef struct grpcx_tls_server {
    const char *cert_file, *key_file, *client_ca_file;
} grpcx_tls_server;

typedef struct grpcx_server_opts {
    int threads;                          /* worker threads, >= 1 */
    /* Threads that run calls whose handlers may block for long (a wait,
     * an unbatched query): see grpcx_call_offload. 0: none, every handler
     * runs on the worker that took its call. */
    int blocking_threads;
    int blocking_queue;                   /* calls waiting for them at most (0: 64 per thread) */
    int max_message_bytes;                /* largest request accepted */
    size_t call_memory_bytes;             /* decoding a request may take this much (0: 8 MiB) */
    /* Called for every call of an application service (not health or
     * reflection) before its request is decoded; returns TODO_OK (having
     * named the caller with grpcx_call_set_user) or a status that becomes
     * the call's answer (err's message). NULL: every call goes through. */
    int (*authenticate)(grpcx_call *call, todo_err *err);
    /* Called once on each worker thread before it serves, and after it
     * stopped: per-thread state such as a database connection. */
    void *(*thread_init)(void *app, int index);
    void (*thread_cleanup)(void *state);
    void *app;                            /* handed to thread_init, borrowed */
    const char *component;                /* for logs, e.g. "command" */
    grpcx_tls_server tls;                 /* TLS files (all NULL: plaintext) */
    /* Connection limits (0: gRPC's default), docs/SECURITY.md: */
    int max_streams;                      /* concurrent calls per connection */
    int max_connection_idle_ms;           /* a connection without calls is closed after this */
    int max_connection_age_ms;            /* every connection is closed (gracefully) after this */
    int max_connection_age_grace_ms;      /* ... its calls get this long to finish */
    int keepalive_ms;                     /* the server pings an idle connection this often */
    int keepalive_timeout_ms;             /* ... and closes it when no answer comes in this long */
    long long memory_bytes;               /* memory all connections may take (a resource quota) */
} grpcx_server_opts;

/* Creates a server (not yet listening). Returns NULL with err set. */
grpcx_server *grpcx_server_new(const grpcx_server_opts *opts, todo_err *err);

/* Hosts svc. methods (n of them) give the handlers; a method of svc missing
 * from the table answers UNIMPLEMENTED. Server-streaming methods take a
 * grpcx_server_stream_fn; client and bidirectional streaming are not supported.
 * Call before grpcx_server_start. */
int grpcx_server_add_service(grpcx_server *s, const ProtobufCServiceDescriptor *svc,
                             const grpcx_method *methods, size_t n, todo_err *err);

/* Binds addr ("127.0.0.1:50051", "[::]:0"...), with TLS when opts.tls
 * names a certificate, starts the workers and serves. Returns TODO_OK,
 * TODO_EINVAL when a TLS file cannot be read, or TODO_EUNAVAIL when the
 * address cannot be bound. */
int grpcx_server_start(grpcx_server *s, const char *addr, todo_err *err);

/* The port bound by grpcx_server_start (useful with port 0). */
int grpcx_server_port(const grpcx_server *s);

/* Health: what Check answers (SERVING after start, NOT_SERVING from shutdown
 * on). Thread-safe. A change reaches every Health/Watch stream; at shutdown
 * each stream gets NOT_SERVING, then ends with UNAVAILABLE. */
void grpcx_server_set_serving(grpcx_server *s, bool serving);

/* Reports a dependency's state in Health/Check: a check naming component
 * ("postgresql", "kafka") answers its state; while a required one is down,
 * the server as a whole ("") and its API services answer NOT_SERVING (a
 * load balancer sends no calls that would fail). Call from one thread (the
 * first call adds the component). */
void grpcx_server_set_health(grpcx_server *s, const char *component, bool required, bool up);

/* Stops accepting calls, lets in-flight calls finish for up to grace_ms,
 * cancels the rest, stops the workers. Every open server stream first
 * sends what it has queued, then ends with UNAVAILABLE. */
void grpcx_server_shutdown(grpcx_server *s, int grace_ms);

/* Releases the server (shutting it down first if needed); takes NULL. */
void grpcx_server_free(grpcx_server *s);

/* --- inside a handler --- */

/* The first value of request metadata key (lowercase), copied into the
 * call's arena, or NULL. */
const char *grpcx_call_metadata(grpcx_call *c, const char *key);

/* The call's span (trace.h): a child of the caller's `traceparent`
 * metadata, or the root of a new trace. The handler's log lines carry it;
 * events written for the call take it into their envelopes. */
const trace_ctx *grpcx_call_trace(grpcx_call *c);

/* Adds key: value to the reply's initial metadata (at most 4 entries; key
 * lowercase, value printable ASCII; both are copied). Unary calls only: a
 * server stream has sent its initial metadata before its handler runs. */
void grpcx_call_reply_metadata(grpcx_call *c, const char *key, const char *value);

/* The identity a client proved with its TLS certificate (mutual TLS): the
 * certificate's first subject alternative name, else its common name,
 * copied into the call's arena; NULL without one. */
const char *grpcx_call_peer_identity(grpcx_call *c);

/* The authenticated caller (set by opts.authenticate), or NULL. */
void grpcx_call_set_user(grpcx_call *c, const char *user);
const char *grpcx_call_user(grpcx_call *c);

/* The service acting for the user (authenticated with a service token),
 * or NULL for a user's own call; and that token's scopes (space-separated:
 * "internal", "registry:write"). A user's own call has none. */
void grpcx_call_set_service(grpcx_call *c, const char *service);
const char *grpcx_call_service(grpcx_call *c);
void grpcx_call_set_scope(grpcx_call *c, const char *scope);
bool grpcx_call_has_scope(grpcx_call *c, const char *scope);

/* The call's arena: released when the call ends. */
arena *grpcx_call_arena(grpcx_call *c);

/* The worker thread's state from thread_init. */
void *grpcx_call_state(grpcx_call *c);

/* The full method path, "/todo.v1.TaskCommandService/CreateTask". */
const char *grpcx_call_method(grpcx_call *c);

/* Milliseconds left before the client's deadline (negative when passed,
 * LONG_MAX without one). */
long grpcx_call_ms_left(grpcx_call *c);

/* --- replies given later (a unary handler that does not block) ---
 *
 * A handler may take its call to answer from another thread: it calls
 * grpcx_call_later, returns TODO_OK with *resp left NULL, and its worker
 * goes on to other calls. (Returning an error instead answers the call at
 * once, and the handle is not to be used.) The request message and the
 * call's arena are gone once the handler returns: copy what the answer
 * needs. Every call taken is answered exactly once, also while the server
 * shuts down: grpcx_server_shutdown waits for the answers before its
 * workers stop (a call the client gave up on is answered into the void). */
typedef struct grpcx_later grpcx_later;
grpcx_later *grpcx_call_later(grpcx_call *c);

/* Answers a taken call: rc TODO_OK with resp (packed before this returns,
 * so it may live in the caller's arena), or a todo_status with err's
 * message. Any thread; the handle is gone afterwards. */
void grpcx_later_reply(grpcx_later *l, int rc, const ProtobufCMessage *resp, const todo_err *err);

/* The taken call's span, for the answering thread's log lines
 * (trace_enter). */
const trace_ctx *grpcx_later_trace(grpcx_later *l);

/* --- the blocking pool (opts.blocking_threads) ---
 *
 * A handler about to block (wait on a database, a lock, a timer) calls
 * grpcx_call_offload first, before anything with an effect. True: the call
 * is queued for a thread of the pool, and the handler returns TODO_OK at
 * once, leaving *resp NULL; that thread runs the whole call again (the
 * authentication, the decoding, the handler: there grpcx_call_offload
 * answers false, and grpcx_call_state is that thread's state, made by
 * thread_init with an index from opts.threads on). False: the server has no
 * pool, or the call already runs there, was taken (grpcx_call_later) or
 * opens a server stream:
 * the handler goes on where it is; also when opts.blocking_queue calls
 * wait for the pool already (the worker then takes no other call until
 * this one is done: back-pressure, and bounded memory). So calls that wait
 * hold a pool thread each, not one of the workers (which can then be as
 * few as the cores). Calls queued for the pool are run in the order they came, also
 * while the server shuts down, until its grace period is over: those still
 * queued then are answered UNAVAILABLE without being run. Calling
 * grpcx_call_later after grpcx_call_offload answered true aborts (the call
 * would be answered twice). */
bool grpcx_call_offload(grpcx_call *c);

/* True when the call runs on a thread of the blocking pool. */
bool grpcx_call_pooled(grpcx_call *c);

/* --- server streams (thread-safe; st from a grpcx_server_stream_fn) ---
 *
 * Each stream has a bounded buffer: at most GRPCX_STREAM_BUFFER messages
 * wait to be sent (one is sent at a time, as fast as the client reads), so
 * a slow client holds that much memory and no more. */
#define GRPCX_STREAM_BUFFER 64

/* Queues msg (packed at once: the caller keeps it). TODO_OK; TODO_ETOOBIG
 * when the buffer is full; TODO_EUNAVAIL when the stream is over or
 * ending (the client left, grpcx_server_stream_end, the server shutting down). */
int grpcx_server_stream_send(grpcx_server_stream *st, const ProtobufCMessage *msg);

/* The messages not sent yet (the one being sent included), or -1 once the
 * stream is over or ending. */
int grpcx_server_stream_pending(grpcx_server_stream *st);

/* Ends the stream with status (a todo_status) and msg once what is queued
 * is sent. Later calls change nothing. */
void grpcx_server_stream_end(grpcx_server_stream *st, int status, const char *msg);

/* Ends the stream at once with status and msg, dropping what is queued (a
 * client that reads nothing never lets the queue drain, so a status behind
 * it would never go out). Later calls change nothing. */
void grpcx_server_stream_abort(grpcx_server_stream *st, int status, const char *msg);

/* fn(ctx) is called, on a worker thread with no grpcx lock held, each time a
 * message went out and when the stream is over: the time to send more, or
 * to let it go. */
void grpcx_server_stream_on_event(grpcx_server_stream *st, void (*fn)(void *ctx), void *ctx);

/* The handler's hold on st ends (it is freed once the call is over too). */
void grpcx_server_stream_release(grpcx_server_stream *st);

#endif
