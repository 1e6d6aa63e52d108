/*
 * arena: see arena.h. Blocks are chained; a request that does not fit the
 * current block gets a block of its own size (at least ARENA_BLOCK).
 */
#include "arena.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_BLOCK 8192
#define ARENA_ALIGN 16

typedef struct arena_block {
    struct arena_block *next;
    size_t size;  /* usable bytes in data */
    size_t used;
    _Alignas(ARENA_ALIGN) unsigned char data[];
} arena_block;

struct arena {
    arena_block *head; /* the block being filled; older ones follow */
    size_t total;
};

static arena_block *block_new(size_t size)
{
    arena_block *b = malloc(sizeof *b + size);
    if (b == NULL) return NULL;
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

arena *arena_new(void)
{
    arena *a = calloc(1, sizeof *a);
    if (a == NULL) return NULL;
    a->head = block_new(ARENA_BLOCK);
    if (a->head == NULL) {
        free(a);
        return NULL;
    }
    return a;
}

void arena_free(arena *a)
{
    if (a == NULL) return;
    for (arena_block *b = a->head, *next; b != NULL; b = next) {
        next = b->next;
        free(b);
    }
    free(a);
}

void arena_reset(arena *a)
{
    /* Keep the oldest block (the first one allocated, ARENA_BLOCK bytes). */
    arena_block *b = a->head;
    while (b->next != NULL) {
        arena_block *next = b->next;
        free(b);
        b = next;
    }
    b->used = 0;
    a->head = b;
    a->total = 0;
}

void *arena_alloc(arena *a, size_t size)
{
    size_t need = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    arena_block *b = a->head;
    if (need < size) abort(); /* size overflow: a caller bug */
    if (b->size - b->used < need) {
        b = block_new(need > ARENA_BLOCK ? need : ARENA_BLOCK);
        if (b == NULL) abort(); /* out of memory is fatal, as in Redis's zmalloc */
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += need;
    a->total += need;
    return p;
}

void *arena_calloc(arena *a, size_t size)
{
    void *p = arena_alloc(a, size);
    if (p != NULL) memset(p, 0, size);
    return p;
}

char *arena_strndup(arena *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    if (p == NULL) return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *arena_strdup(arena *a, const char *s) { return arena_strndup(a, s, strlen(s)); }

char *arena_printf(arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *p = arena_alloc(a, (size_t)n + 1);
    if (p == NULL) return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

static void *pbc_alloc(void *data, size_t size) { return arena_alloc(data, size); }
static void pbc_free(void *data, void *ptr) { (void)data; (void)ptr; }

void arena_pbc_allocator(arena *a, ProtobufCAllocator *out)
{
    out->alloc = pbc_alloc;
    out->free = pbc_free;
    out->allocator_data = a;
}

size_t arena_used(const arena *a) { return a->total; }
