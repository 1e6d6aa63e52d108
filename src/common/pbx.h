/*
 * pbx: decoding protobuf bytes that come from outside, safely.
 *
 * protobuf-c 1.4.1 trusts its input more than a server can: it recurses
 * into nested messages without a depth limit (10,000 levels overflow a
 * thread's stack), allocates for every unknown field it keeps (a 1 MiB
 * request of 2-byte unknown fields costs ~54 MB), re-encodes those unknown
 * fields when the message is packed again (so a client could smuggle bytes
 * into what we store and publish), and accepts a field number 0 written as
 * a two-byte varint that it then cannot decode once re-encoded.
 *
 * So every message that arrives from a client, a file or another process
 * goes through pbx_decode (or pbx_check before a decoder of its own):
 *
 *   1. pbx_check walks the raw bytes against the message's descriptor
 *      without allocating: every tag names a field number 1..2^29-1 with
 *      wire type 0, 1, 2 or 5 (no groups), every length fits, known
 *      message fields nest at most max_depth deep, and every known string
 *      field is UTF-8 without NUL characters (a C string would silently
 *      cut the text at the NUL; the error names the field: "title: ...");
 *   2. protobuf-c decodes into the caller's arena, with at most max_bytes
 *      of it: past that the decode fails with TODO_ETOOBIG instead of
 *      growing (or aborting the process);
 *   3. pbx_strip_unknown drops the unknown fields at every level, so what
 *      the program stores or sends on is made of the fields it knows.
 *
 * Pure functions, thread-safe.
 */
#ifndef TODO_PBX_H
#define TODO_PBX_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "todo_err.h"

/* Nested messages accepted by default (our API nests at most 4 deep;
 * descriptor sets a few more). */
#define PBX_MAX_DEPTH 32

typedef struct pbx_limits {
    int max_depth;      /* known message fields nested deeper: TODO_EINVAL */
    size_t max_bytes;   /* arena memory the decoded message may take: TODO_ETOOBIG; 0 = no limit */
} pbx_limits;

/* Checks that buf is a well-formed d message within lim (see above); d
 * may be NULL to check the wire format alone. TODO_EINVAL says what is
 * wrong and where ("not a valid todo.v1.CreateTaskRequest message: ...",
 * or "rule.time_zone: text must be UTF-8 without NUL characters"). */
int pbx_check(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len, int max_depth, todo_err *err);

/* pbx_check, then decodes into a and strips unknown fields. *out lives
 * in a. TODO_EINVAL: the bytes are not a valid d message; TODO_ETOOBIG:
 * decoding needs more than lim->max_bytes. */
int pbx_decode(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len, arena *a, const pbx_limits *lim,
               ProtobufCMessage **out, todo_err *err);

/* Drops the unknown fields of m and of every message it holds. alloc is
 * the allocator m was decoded with (NULL: protobuf-c's default, malloc);
 * an arena's allocator frees nothing, which is fine. */
void pbx_strip_unknown(ProtobufCMessage *m, ProtobufCAllocator *alloc);

#endif
