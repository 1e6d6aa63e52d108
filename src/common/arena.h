/*
 * arena: a bump allocator for memory that lives exactly as long as one unit
 * of work (a gRPC call, a projector batch). Everything allocated from it is
 * released at once by arena_reset or arena_free; nothing is freed singly.
 *
 * arena_pbc_allocator lets protobuf-c unpack into the arena, so that decoded
 * requests need no protobuf_c_message_free_unpacked.
 *
 * Running out of memory inside an allocation aborts the process (as Redis's
 * zmalloc does): callers need not check arena_alloc and its friends for NULL.
 *
 * An arena belongs to one thread at a time.
 */
#ifndef TODO_ARENA_H
#define TODO_ARENA_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

typedef struct arena arena;

/* Returns a new empty arena, or NULL when out of memory. */
arena *arena_new(void);

/* Releases the arena and everything allocated from it; takes NULL. */
void arena_free(arena *a);

/* Releases everything allocated from the arena but keeps its first block
 * for reuse. */
void arena_reset(arena *a);

/* Returns size bytes aligned for any type; never NULL. Not zeroed. */
void *arena_alloc(arena *a, size_t size);

/* Zeroed arena_alloc. */
void *arena_calloc(arena *a, size_t size);

/* Copies the n bytes at s and a terminating NUL into the arena. */
char *arena_strndup(arena *a, const char *s, size_t n);

/* Copies the string s into the arena. */
char *arena_strdup(arena *a, const char *s);

/* printf into the arena. */
char *arena_printf(arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Fills *out with an allocator that takes memory from a (free is a no-op). */
void arena_pbc_allocator(arena *a, ProtobufCAllocator *out);

/* Bytes handed out since the last reset (for tests and limits). */
size_t arena_used(const arena *a);

#endif
