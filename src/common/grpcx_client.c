/* grpcx_client: see grpcx_client.h. One batch per call, on its own queue. */
#include "grpcx_client.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct grpcx_channel {
    grpc_channel *ch;
};

char *grpcx_read_pem(const char *path, todo_err *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        todo_err_set(err, TODO_EINVAL, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 8192, n = 0;
    char *buf = malloc(cap);
    for (size_t got; buf != NULL && (got = fread(buf + n, 1, cap - n - 1, f)) > 0;) {
        n += got;
        if (n + 1 == cap && cap < (4u << 20)) {
            char *b = realloc(buf, cap * 2);
            if (b == NULL) free(buf);
            buf = b;
            cap *= 2;
        }
    }
    bool whole = buf != NULL && feof(f);
    fclose(f);
    if (buf == NULL) {
        todo_err_set(err, TODO_EINTERNAL, "out of memory reading %s", path);
        return NULL;
    }
    if (!whole) {
        free(buf);
        todo_err_set(err, TODO_EINVAL, "%s is larger than 4 MiB: not a PEM file of ours", path);
        return NULL;
    }
    buf[n] = '\0';
    if (strstr(buf, "-----BEGIN ") == NULL) {
        free(buf);
        todo_err_set(err, TODO_EINVAL, "%s holds no PEM block", path);
        return NULL;
    }
    return buf;
}

static bool set_(const char *s) { return s != NULL && s[0] != '\0'; }

int grpcx_target(const char *addrs, char *out, size_t cap, bool *balanced, todo_err *err)
{
    *balanced = strncmp(addrs, "dns:", 4) == 0;
    if (strchr(addrs, ',') == NULL) {
        if (strlen(addrs) >= cap) return todo_err_set(err, TODO_EINVAL, "gRPC target too long: %.64s...", addrs);
        snprintf(out, cap, "%s", addrs);
        return TODO_OK;
    }
    /* A list: IP literals of one family, as gRPC's ipv4:/ipv6: targets. */
    int family = 0;
    size_t off = 0;
    for (const char *p = addrs; *p != '\0';) {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        char one[128], host[64];
        if (len == 0 || len >= sizeof one)
            return todo_err_set(err, TODO_EINVAL, "address list \"%s\": an empty or overlong entry", addrs);
        snprintf(one, sizeof one, "%.*s", (int)len, p);
        const char *colon = one[0] == '[' ? strstr(one, "]:") : strrchr(one, ':');
        size_t hl = colon != NULL ? (size_t)(colon - one) - (one[0] == '[') : 0;
        if (colon != NULL && hl < sizeof host) snprintf(host, sizeof host, "%.*s", (int)hl, one + (one[0] == '['));
        unsigned char buf[16];
        int f = colon == NULL || hl >= sizeof host       ? 0
                : inet_pton(AF_INET, host, buf) == 1  ? 4
                : inet_pton(AF_INET6, host, buf) == 1 ? 6
                                                      : 0;
        if (f == 0 || (family != 0 && f != family))
            return todo_err_set(err, TODO_EINVAL,
                                "address list \"%s\": \"%s\" is not an IP address:port of the list's family (a list "
                                "takes IP literals; for host names use one DNS name that resolves to every "
                                "instance: dns:///name:port)",
                                addrs, one);
        family = f;
        int n = snprintf(out + off, cap - off, "%s%s", off == 0 ? (f == 4 ? "ipv4:" : "ipv6:") : ",", one);
        if (n < 0 || (size_t)n >= cap - off) return todo_err_set(err, TODO_EINVAL, "address list too long");
        off += (size_t)n;
        p += len + (end != NULL);
    }
    *balanced = true;
    return TODO_OK;
}

grpcx_channel *grpcx_channel_open(const char *target, const grpcx_tls_client *tls, todo_err *err)
{
    grpcx_channel *c = calloc(1, sizeof *c);
    if (c == NULL) {
        todo_err_set(err, TODO_EINTERNAL, "out of memory");
        return NULL;
    }
    grpc_channel_credentials *creds = NULL;
    grpc_arg argv[2];
    grpc_channel_args args = {.num_args = 0, .args = argv};
    char resolved[1024];
    bool balanced = false;
    if (grpcx_target(target, resolved, sizeof resolved, &balanced, err) != TODO_OK) {
        free(c);
        return NULL;
    }
    if (balanced) { /* every address a subchannel; calls go round them, skipping those that are down */
        argv[args.num_args++] = (grpc_arg){.type = GRPC_ARG_STRING, .key = GRPC_ARG_SERVICE_CONFIG,
                                           .value.string = "{\"loadBalancingConfig\": [{\"round_robin\": {}}]}"};
    }
    if (tls != NULL && set_(tls->ca_file)) {
        if (set_(tls->cert_file) != set_(tls->key_file)) {
            free(c);
            todo_err_set(err, TODO_EINVAL, "a client certificate needs its key, and a key its certificate");
            return NULL;
        }
        char *ca = grpcx_read_pem(tls->ca_file, err), *cert = NULL, *key = NULL;
        if (ca != NULL && set_(tls->cert_file)) {
            cert = grpcx_read_pem(tls->cert_file, err);
            key = cert != NULL ? grpcx_read_pem(tls->key_file, err) : NULL;
        }
        if (ca == NULL || (set_(tls->cert_file) && key == NULL)) {
            free(ca);
            free(cert);
            free(c);
            return NULL;
        }
        grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
        grpc_init();
        creds = grpc_ssl_credentials_create(ca, cert != NULL ? &pair : NULL, NULL, NULL);
        free(ca);
        free(cert);
        free(key);
        if (set_(tls->server_name))
            argv[args.num_args++] = (grpc_arg){.type = GRPC_ARG_STRING, .key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                                               .value.string = (char *)tls->server_name};
    } else {
        grpc_init();
        creds = grpc_insecure_credentials_create();
    }
    c->ch = grpc_channel_create(resolved, creds, args.num_args > 0 ? &args : NULL);
    grpc_channel_credentials_release(creds);
    if (c->ch == NULL) {
        free(c);
        grpc_shutdown();
        todo_err_set(err, TODO_EINVAL, "bad gRPC target %s", target);
        return NULL;
    }
    return c;
}

grpcx_tls_client grpcx_tls_client_of(const todo_config *cfg)
{
    return (grpcx_tls_client){.ca_file = cfg->grpc_tls_ca, .cert_file = cfg->grpc_tls_client_cert,
                              .key_file = cfg->grpc_tls_client_key, .server_name = cfg->grpc_tls_server_name};
}

grpcx_channel *grpcx_channel_new(const char *target)
{
    todo_err err;
    return grpcx_channel_open(target, NULL, &err);
}

void grpcx_channel_free(grpcx_channel *c)
{
    if (c == NULL) return;
    grpc_channel_destroy(c->ch);
    free(c);
    grpc_shutdown();
}

grpc_status_code grpcx_unary(grpcx_channel *c, const char *path, const ProtobufCMessage *req,
                             const ProtobufCMessageDescriptor *resp_desc, const char *authorization,
                             int timeout_ms, ProtobufCMessage **resp, grpcx_result *res)
{
    return grpcx_unary_md(c, path, req, resp_desc, authorization, NULL, 0, timeout_ms, resp, res);
}

grpc_status_code grpcx_unary_md(grpcx_channel *c, const char *path, const ProtobufCMessage *req,
                                const ProtobufCMessageDescriptor *resp_desc, const char *authorization,
                                const grpcx_md *extra, size_t n_extra, int timeout_ms, ProtobufCMessage **resp,
                                grpcx_result *res)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    grpc_slice method = grpc_slice_from_copied_string(path);
    grpc_call *call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL, deadline, NULL);
    grpc_metadata md[9];
    size_t n_md = 0;
    grpc_metadata_array initial, trailing;
    grpc_byte_buffer *recv = NULL, *send;
    grpc_slice details = grpc_empty_slice();
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_op ops[6];
    size_t n = 0, len;
    static int tag;

    *resp = NULL;
    memset(md, 0, sizeof md);
    memset(ops, 0, sizeof ops);
    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);

    len = protobuf_c_message_get_packed_size(req);
    grpc_slice body = grpc_slice_malloc(len);
    protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(body));
    send = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);

    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (authorization != NULL) {
        md[n_md].key = grpc_slice_from_static_string("authorization");
        md[n_md++].value = grpc_slice_from_copied_string(authorization);
    }
    for (size_t i = 0; i < n_extra && n_md < sizeof md / sizeof md[0]; i++) {
        md[n_md].key = grpc_slice_from_copied_string(extra[i].key);
        md[n_md++].value = grpc_slice_from_copied_string(extra[i].value);
    }
    ops[n].data.send_initial_metadata.count = n_md;
    ops[n].data.send_initial_metadata.metadata = n_md > 0 ? md : NULL;
    n++;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = send;
    ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[n++].data.recv_initial_metadata.recv_initial_metadata = &initial;
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &recv;
    ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[n].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[n].data.recv_status_on_client.status = &status;
    ops[n++].data.recv_status_on_client.status_details = &details;

    res->message[0] = '\0';
    if (grpc_call_start_batch(call, ops, n, &tag, NULL) != GRPC_CALL_OK) {
        status = GRPC_STATUS_INTERNAL;
        snprintf(res->message, sizeof res->message, "could not start the call");
    } else {
        grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        size_t dl = GRPC_SLICE_LENGTH(details);
        if (dl >= sizeof res->message) dl = sizeof res->message - 1;
        memcpy(res->message, GRPC_SLICE_START_PTR(details), dl);
        res->message[dl] = '\0';
        if (status == GRPC_STATUS_OK) {
            grpc_byte_buffer_reader r;
            if (recv != NULL && grpc_byte_buffer_reader_init(&r, recv)) {
                grpc_slice all = grpc_byte_buffer_reader_readall(&r);
                *resp = protobuf_c_message_unpack(resp_desc, NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
                grpc_slice_unref(all);
                grpc_byte_buffer_reader_destroy(&r);
            }
            if (*resp == NULL) {
                status = GRPC_STATUS_INTERNAL;
                snprintf(res->message, sizeof res->message, "the reply is not a valid %s", resp_desc->name);
            }
        }
    }
    res->code = status;

    for (size_t i = 0; i < n_md; i++) {
        grpc_slice_unref(md[i].key);
        grpc_slice_unref(md[i].value);
    }
    grpc_slice_unref(details);
    grpc_slice_unref(method);
    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailing);
    grpc_byte_buffer_destroy(send);
    if (recv != NULL) grpc_byte_buffer_destroy(recv);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
    return status;
}

/* ---- server streams ---- */

struct grpcx_stream {
    grpc_completion_queue *cq;
    grpc_call *call;
    grpc_slice method;
    grpc_metadata md[1];
    size_t n_md;
    grpc_byte_buffer *send, *recv;
    grpc_metadata_array initial, trailing;
    grpc_slice details;
    grpc_status_code status;
    /* The outstanding batches: each field's address is its tag. */
    char t_start, t_recv, t_status;
    bool start_pending, recv_pending, status_pending;
};

/* Marks the batch of tag as completed. */
static void stream_done(grpcx_stream *st, void *tag)
{
    if (tag == &st->t_start) st->start_pending = false;
    else if (tag == &st->t_recv) st->recv_pending = false;
    else if (tag == &st->t_status) st->status_pending = false;
}

static void stream_result(grpcx_stream *st, grpcx_result *res)
{
    size_t dl = GRPC_SLICE_LENGTH(st->details);
    if (dl >= sizeof res->message) dl = sizeof res->message - 1;
    memcpy(res->message, GRPC_SLICE_START_PTR(st->details), dl);
    res->message[dl] = '\0';
    res->code = st->status;
}

grpcx_stream *grpcx_stream_open(grpcx_channel *c, const char *path, const ProtobufCMessage *req,
                                const char *authorization, int timeout_ms, grpcx_result *res)
{
    grpcx_stream *st = calloc(1, sizeof *st);
    if (st == NULL) {
        res->code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        snprintf(res->message, sizeof res->message, "out of memory");
        return NULL;
    }
    st->cq = grpc_completion_queue_create_for_next(NULL);
    gpr_timespec deadline = timeout_ms > 0 ? gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                                          gpr_time_from_millis(timeout_ms, GPR_TIMESPAN))
                                           : gpr_inf_future(GPR_CLOCK_REALTIME);
    st->method = grpc_slice_from_copied_string(path);
    st->call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, st->cq, st->method, NULL, deadline,
                                        NULL);
    st->details = grpc_empty_slice();
    st->status = GRPC_STATUS_UNKNOWN;
    grpc_metadata_array_init(&st->initial);
    grpc_metadata_array_init(&st->trailing);
    if (authorization != NULL) {
        st->md[0].key = grpc_slice_from_static_string("authorization");
        st->md[0].value = grpc_slice_from_copied_string(authorization);
        st->n_md = 1;
    }
    size_t len = protobuf_c_message_get_packed_size(req);
    grpc_slice body = grpc_slice_malloc(len);
    protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(body));
    st->send = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);

    grpc_op ops[4], fin;
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    memset(&fin, 0, sizeof fin);
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].data.send_initial_metadata.count = st->n_md;
    ops[n++].data.send_initial_metadata.metadata = st->n_md > 0 ? st->md : NULL;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = st->send;
    ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[n++].data.recv_initial_metadata.recv_initial_metadata = &st->initial;
    fin.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    fin.data.recv_status_on_client.trailing_metadata = &st->trailing;
    fin.data.recv_status_on_client.status = &st->status;
    fin.data.recv_status_on_client.status_details = &st->details;
    st->start_pending = grpc_call_start_batch(st->call, ops, n, &st->t_start, NULL) == GRPC_CALL_OK;
    st->status_pending =
        st->start_pending && grpc_call_start_batch(st->call, &fin, 1, &st->t_status, NULL) == GRPC_CALL_OK;
    if (!st->status_pending) {
        res->code = GRPC_STATUS_INTERNAL;
        snprintf(res->message, sizeof res->message, "could not start the call");
        grpcx_stream_close(st);
        return NULL;
    }
    return st;
}

int grpcx_stream_next(grpcx_stream *st, const ProtobufCMessageDescriptor *desc, int wait_ms, ProtobufCMessage **msg,
                      grpcx_result *res)
{
    *msg = NULL;
    if (!st->recv_pending && st->status_pending) {
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &st->recv;
        st->recv_pending = grpc_call_start_batch(st->call, &op, 1, &st->t_recv, NULL) == GRPC_CALL_OK;
    }
    gpr_timespec until = wait_ms < 0 ? gpr_inf_future(GPR_CLOCK_MONOTONIC)
                                     : gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                                    gpr_time_from_millis(wait_ms, GPR_TIMESPAN));
    while (st->recv_pending) {
        grpc_event ev = grpc_completion_queue_next(st->cq, until, NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT) return -1;
        stream_done(st, ev.tag);
    }
    if (st->recv != NULL) {
        grpc_byte_buffer_reader r;
        if (grpc_byte_buffer_reader_init(&r, st->recv)) {
            grpc_slice all = grpc_byte_buffer_reader_readall(&r);
            *msg = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
            grpc_slice_unref(all);
            grpc_byte_buffer_reader_destroy(&r);
        }
        grpc_byte_buffer_destroy(st->recv);
        st->recv = NULL;
        if (*msg != NULL) return 1;
        grpc_call_cancel(st->call, NULL);
    }
    /* The stream ended (or sent what does not decode): its status. */
    while (st->status_pending || st->start_pending)
        stream_done(st, grpc_completion_queue_next(st->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).tag);
    stream_result(st, res);
    return 0;
}

void grpcx_stream_close(grpcx_stream *st)
{
    if (st == NULL) return;
    if (st->start_pending || st->recv_pending || st->status_pending) grpc_call_cancel(st->call, NULL);
    while (st->start_pending || st->recv_pending || st->status_pending)
        stream_done(st, grpc_completion_queue_next(st->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).tag);
    if (st->recv != NULL) grpc_byte_buffer_destroy(st->recv);
    grpc_byte_buffer_destroy(st->send);
    for (size_t i = 0; i < st->n_md; i++) grpc_slice_unref(st->md[i].value);
    grpc_slice_unref(st->details);
    grpc_slice_unref(st->method);
    grpc_metadata_array_destroy(&st->initial);
    grpc_metadata_array_destroy(&st->trailing);
    grpc_call_unref(st->call);
    grpc_completion_queue_shutdown(st->cq);
    while (grpc_completion_queue_next(st->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(st->cq);
    free(st);
}
