/*
 * reflect: the gRPC server reflection protocol (grpc.reflection.v1 and
 * v1alpha, whose messages are the same on the wire) over a FileDescriptorSet
 * embedded at build time.
 *
 * The index maps file names and fully-qualified symbols (messages, nested
 * messages, enums, services, methods) to the serialized FileDescriptorProto
 * that declares them. An answer to file_by_filename or
 * file_containing_symbol carries that file and its transitive dependencies,
 * each once. The index is immutable after reflect_index_new, so one index
 * serves all threads.
 */
#ifndef TODO_REFLECT_H
#define TODO_REFLECT_H

#include "arena.h"
#include "todo_err.h"

#include <stddef.h>

typedef struct reflect_index reflect_index;

/* Builds an index over the serialized FileDescriptorSet at set (borrowed: it
 * must outlive the index). Returns NULL with err set on a malformed set. */
reflect_index *reflect_index_new(const unsigned char *set, size_t len, todo_err *err);

/* Releases the index; takes NULL. */
void reflect_index_free(reflect_index *idx);

/* Answers one serialized ServerReflectionRequest with a serialized
 * ServerReflectionResponse allocated in a. services (n of them) are the
 * fully-qualified names the server hosts, for list_services. Returns TODO_OK,
 * or TODO_EINVAL when the request does not decode (the stream should then end
 * with INVALID_ARGUMENT). Unknown files or symbols are answered in-band with
 * an ErrorResponse (code NOT_FOUND), as the protocol asks. */
int reflect_answer(const reflect_index *idx, const char *const *services, size_t n,
                   const unsigned char *req, size_t req_len, arena *a,
                   unsigned char **out, size_t *out_len, todo_err *err);

/* True when the index knows the symbol (used by tests and by the server to
 * check that every hosted service is described). */
int reflect_has_symbol(const reflect_index *idx, const char *symbol);

#endif
