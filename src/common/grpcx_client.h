/*
 * grpcx_client: a small synchronous gRPC client on the C core (unary calls
 * and server streams), for todoctl and the tests. A channel may be used
 * from several threads at once (each call makes its own completion queue).
 */
#ifndef TODO_GRPCX_CLIENT_H
#define TODO_GRPCX_CLIENT_H

#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>

#include "config.h"
#include "todo_err.h"

typedef struct grpcx_channel grpcx_channel;

typedef struct grpcx_result {
    grpc_status_code code;
    char message[512];   /* the server's status message */
} grpcx_result;

/* Opens an insecure (plaintext) channel to target ("127.0.0.1:50051").
 * Returns NULL when the target is malformed. A target may list several
 * instances ("127.0.0.1:50051,127.0.0.1:50061": IP literals of one family)
 * or be a DNS name (dns:///name:port) that resolves to several: the calls
 * then go round the instances that answer (the gRPC core's round_robin);
 * a call on an instance that dies fails with UNAVAILABLE and the next goes
 * to another (grpcx_target). */
grpcx_channel *grpcx_channel_new(const char *target);

/* The gRPC core's target for addrs (grpcx_channel_new's forms): a list
 * becomes "ipv4:a:1,b:2" (or "ipv6:..."); *balanced says whether the
 * channel should go round the addresses. TODO_EINVAL naming the entry
 * that is not an IP literal of the list's family. */
int grpcx_target(const char *addrs, char *out, size_t cap, bool *balanced, todo_err *err);

/* TLS of a client: PEM files. ca_file: the CA that signed the server's
 * certificate (NULL or "": plaintext). cert_file and key_file (both or
 * neither): this client's certificate, for servers that require one
 * (mutual TLS). server_name: the name the server's certificate must carry
 * when it is not the target's host (NULL or "": the host). */
typedef struct grpcx_tls_client {
    const char *ca_file, *cert_file, *key_file, *server_name;
} grpcx_tls_client;

/* grpcx_channel_new with TLS when tls names a CA file. Returns NULL with
 * err set when a file cannot be read or the target is malformed; a server
 * whose certificate does not verify fails the calls (UNAVAILABLE), not the
 * channel. */
grpcx_channel *grpcx_channel_open(const char *target, const grpcx_tls_client *tls, todo_err *err);

/* The client TLS settings of cfg (TODO_GRPC_TLS_CA, ...): borrowed from
 * cfg. */
grpcx_tls_client grpcx_tls_client_of(const todo_config *cfg);

/* Reads a whole (PEM) file into a NUL-terminated malloc'd string; NULL
 * with err naming the file when it cannot. */
char *grpcx_read_pem(const char *path, todo_err *err);

/* Closes the channel; takes NULL. */
void grpcx_channel_free(grpcx_channel *ch);

/* Calls path ("/pkg.Service/Method") with req. authorization (may be NULL)
 * is sent as the authorization metadata. On GRPC_STATUS_OK *resp holds the
 * decoded reply (free it with protobuf_c_message_free_unpacked(*resp, NULL));
 * otherwise *resp is NULL and res says why. Returns res->code. */
grpc_status_code grpcx_unary(grpcx_channel *ch, const char *path, const ProtobufCMessage *req,
                             const ProtobufCMessageDescriptor *resp_desc, const char *authorization,
                             int timeout_ms, ProtobufCMessage **resp, grpcx_result *res);

/* A request metadata entry (key lowercase; value printable ASCII). */
typedef struct grpcx_md {
    const char *key, *value;
} grpcx_md;

/* grpcx_unary sending the n entries of md (at most 8) besides
 * authorization. */
grpc_status_code grpcx_unary_md(grpcx_channel *ch, const char *path, const ProtobufCMessage *req,
                                const ProtobufCMessageDescriptor *resp_desc, const char *authorization,
                                const grpcx_md *md, size_t n, int timeout_ms, ProtobufCMessage **resp,
                                grpcx_result *res);

/* A server-streaming call (Health/Watch): one request, then messages as
 * the server sends them. One thread uses a stream at a time. */
typedef struct grpcx_stream grpcx_stream;

/* Starts the call of path with req. timeout_ms 0: no deadline. Returns NULL
 * when the call cannot start (res says why). */
grpcx_stream *grpcx_stream_open(grpcx_channel *ch, const char *path, const ProtobufCMessage *req,
                                const char *authorization, int timeout_ms, grpcx_result *res);

/* Waits up to wait_ms (< 0: forever) for the next message. Returns 1 with
 * *msg (free with protobuf_c_message_free_unpacked), 0 when the stream has
 * ended (res holds its status), -1 when nothing came in time. */
int grpcx_stream_next(grpcx_stream *st, const ProtobufCMessageDescriptor *desc, int wait_ms,
                      ProtobufCMessage **msg, grpcx_result *res);

/* Cancels the call if it still runs and releases the stream; takes NULL. */
void grpcx_stream_close(grpcx_stream *st);

#endif
