/*
 * proj_rebuild: a zero-downtime rebuild of one projection (proj_def.h) from
 * a topic replay (`todoctl projection rebuild <name>`). For the task read
 * model (schema read):
 *
 *  1. Take the projection's rebuild lock (one rebuild of it at a time; a
 *     second is refused; other projections go on serving and can be rebuilt
 *     meanwhile).
 *  2. Create the shadow schema read_rebuild as a copy of read's tables,
 *     indexes, triggers and grants, empty, and remember it in
 *     todo_meta.rebuilds with a consumer group of its own; or, when a killed
 *     rebuild left one, resume it with the same group.
 *  3. Replay the projection's topics from offset 0 into the shadow (proj_loop) while
 *     the live projection keeps serving, until the shadow has applied, per
 *     partition, at least what the live copy has.
 *  4. Take its swap lock exclusively (live batches pause), catch up with what
 *     the live copy holds now, and in ONE transaction rename read to
 *     read_old, read_rebuild to read, drop read_old. Release the lock: the
 *     live projector carries on in the new copy, skipping what it holds.
 *
 * Queries are answered throughout (they read "read", whichever copy that
 * names). The analytics model (schema analytics) is rebuilt the same way in
 * analytics_rebuild.
 */
#ifndef TODO_PROJ_REBUILD_H
#define TODO_PROJ_REBUILD_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "proj_def.h"

typedef struct proj_rebuild_progress {
    const char *phase;        /* "replaying", "catching up under the swap lock", "swapped" */
    int64_t applied;          /* records handled by the rebuild so far (this run) */
    double rate;              /* records per second */
    int64_t remaining;        /* records of the topic not yet replayed (estimate) */
    bool resumed;             /* continues a rebuild that was interrupted */
} proj_rebuild_progress;

typedef struct proj_rebuild_opts {
    const todo_config *cfg;
    const proj_def *def;      /* the projection rebuilt */
    const char *projection;   /* its live consumer group (proj_def_group) */
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
