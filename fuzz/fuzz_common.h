/*
 * fuzz_common: what the fuzz targets and their seed maker (make_seeds.c)
 * share: the protobuf messages they must agree on, and the check that a
 * decoded message survives being packed and decoded again.
 *
 * fuzz_methods lists every RPC method our servers host, in a fixed order:
 * the first byte of a fuzz_requests input picks one by its index (modulo
 * the count), so a request seed starts with its method's index. Adding a
 * method to a service shifts the indices after it; remake the seeds then
 * (scripts/fuzz.sh seeds).
 *
 * fuzz_event_payload maps the message names of event.h's schemas to their
 * generated descriptors, which protobuf-c cannot look up by name.
 */
#ifndef TODO_FUZZ_COMMON_H
#define TODO_FUZZ_COMMON_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

#include "arena.h"
#include "pbx.h"

/* The clock, the secret (of bearer and consistency tokens) and the caller
 * of every target and seed, fixed so that a run repeats; the clock reads
 * 2026-01-01T00:00:00Z. */
#define FUZZ_NOW_S 1767225600L
#define FUZZ_NOW_US (FUZZ_NOW_S * 1000000LL)
#define FUZZ_SECRET "fuzz-secret-0123456789abcdef0123456789"
#define FUZZ_USER "alice"       /* the caller tokens are issued to */
#define FUZZ_OTHER_USER "bob"

typedef struct fuzz_method {
    const ProtobufCServiceDescriptor *service;
    const ProtobufCMethodDescriptor *method;
} fuzz_method;

/* The hosted methods: TaskCommandService (todo-command), TaskQueryService
 * (todo-query), SchemaRegistryService (todo-command), each in declaration
 * order, then grpc.health.v1.Health/Check and
 * grpc.reflection.v1.ServerReflection/ServerReflectionInfo, which every
 * server hosts (grpcx_server.c; v1alpha's reflection messages are the same
 * on the wire). Sets *out to a static table; returns its length. */
size_t fuzz_methods(const fuzz_method **out);

/* The descriptor of an event payload message by its full name
 * ("todo.v1.TaskCreatedV2"), or NULL when it is not one. */
const ProtobufCMessageDescriptor *fuzz_event_payload(const char *full_name);

/* Packs m (decoded by pbx_decode within lim) and decodes the bytes again
 * with pbx_decode into a: what a service stores or sends on must read
 * back. Aborts, after saying why on stderr, when the packed size is not
 * what protobuf-c announced, when the bytes do not decode, or when packing
 * the result again gives other bytes. what names the input in the message. */
void fuzz_check_repack(const ProtobufCMessage *m, arena *a, const pbx_limits *lim, const char *what);

/* Prints "fuzz finding: <what>: <detail>" on stderr and aborts. */
void fuzz_fail(const char *what, const char *detail) __attribute__((noreturn));

#endif
