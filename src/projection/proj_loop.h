/*
 * proj_loop: a projection's consume-apply-commit loop, shared by
 * todo-projector (the live projections) and `todoctl projection rebuild` (a
 * shadow copy of one).
 *
 * Loop (consume.h's, with the projector's applier): poll up to the batch
 * size from the definition's topics (proj_def.h) in the consumer group; apply the batch in one
 * database transaction (proj_apply); dead-letter the records that cannot be
 * applied and wait until the dead-letter topic acknowledged them; only then
 * commit the offsets. A crash anywhere re-delivers records that proj_apply
 * then skips. While the database is away the same batch is retried; nothing
 * is skipped. A failure is recorded (projection_status.last_error) with the
 * next batch that commits.
 */
#ifndef TODO_PROJ_LOOP_H
#define TODO_PROJ_LOOP_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "proj_apply.h"

typedef struct proj_loop_opts {
    const todo_config *cfg;
    const proj_def *def;      /* the projection */
    const char *group;        /* consumer group (the live one's, or a rebuild's) */
    const char *schema;       /* the copy written: the definition's schema, or a shadow */
    bool shadow;              /* a rebuild's copy (see proj_status) */
    /* Asked between batches (and while retrying): nonzero ends the loop. */
    int (*should_stop)(void *ctx);
    /* Told after each committed batch (may be NULL). */
    void (*after_batch)(const proj_stats *st, size_t records, void *ctx);
    void *ctx;
} proj_loop_opts;

/* Runs until should_stop says so. Returns TODO_OK, or a status when it
 * could not start (err says why). */
int proj_loop_run(const proj_loop_opts *o, todo_err *err);

/* Several loops with the same options, each on a thread of its own (they
 * share the consumer group: Kafka splits the partitions among them). */
typedef struct proj_loops proj_loops;

/* Starts n (1..8) loops; NULL with err set when not even one started. */
proj_loops *proj_loops_start(const proj_loop_opts *o, int n, todo_err *err);

/* True once any of them returned (told to stop, or could not start). */
bool proj_loops_any_finished(proj_loops *l);

/* Waits for all of them (make should_stop say yes first) and frees l.
 * Returns TODO_OK, or the first failure's status with err set. */
int proj_loops_join(proj_loops *l, todo_err *err);

#endif
