/*
 * proj_rebuild: a zero-downtime rebuild of the read model from a topic replay
 * (`todoctl projection rebuild`).
 *
 *  1. Take the rebuild lock (one rebuild at a time; a second is refused).
 *  2. Create the shadow schema read_rebuild as a copy of read's tables,
 *     indexes, triggers and grants, empty, and remember it in
 *     todo_meta.rebuilds with a consumer group of its own; or, when a killed
 *     rebuild left one, resume it with the same group.
 *  3. Replay tasks.events.v1 from offset 0 into the shadow (proj_loop) while
 *     the live projection keeps serving, until the shadow has applied, per
 *     partition, at least what the live copy has.
 *  4. Take the swap lock exclusively (live batches pause), catch up with what
 *     the live copy holds now, and in ONE transaction rename read to
 *     read_old, read_rebuild to read, drop read_old. Release the lock: the
 *     live projector carries on in the new copy, skipping what it holds.
 *
 * Queries are answered throughout (they read "read", whichever copy that
 * names).
 */
#ifndef TODO_PROJ_REBUILD_H
#define TODO_PROJ_REBUILD_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

typedef struct proj_rebuild_progress {
    const char *phase;        /* "replaying", "catching up under the swap lock", "swapped" */
    int64_t applied;          /* records handled by the rebuild so far (this run) */
    double rate;              /* records per second */
    int64_t remaining;        /* records of the topic not yet replayed (estimate) */
    bool resumed;             /* continues a rebuild that was interrupted */
} proj_rebuild_progress;

typedef struct proj_rebuild_opts {
    const todo_config *cfg;
    const char *projection;   /* the live projection's consumer group */
    /* Told about once a second, and at phase changes (may be NULL). */
    void (*progress)(const proj_rebuild_progress *p, void *ctx);
    /* Nonzero stops the rebuild where it is (resumable). */
    int (*interrupted)(void *ctx);
    void *ctx;
} proj_rebuild_opts;

/* Runs a rebuild to its end. TODO_EPRECOND when another is running;
 * TODO_EUNAVAIL when interrupted or a dependency failed (run it again to
 * resume). */
int proj_rebuild(const proj_rebuild_opts *o, todo_err *err);

#endif
