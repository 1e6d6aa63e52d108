/*
 * topics: the Kafka topics of DESIGN as configuration. One table per
 * profile (dev: one broker; production: three) gives each topic its
 * partitions, replication factor, min.insync.replicas, cleanup policy and
 * retention. topics_apply makes a cluster match it: creates what is missing,
 * reports what differs, and with fix set repairs what can be repaired online
 * (topic configs through AlterConfigs, more partitions through
 * CreatePartitions). Fewer partitions or another replication factor cannot
 * be repaired online and stay reported.
 */
#ifndef TODO_TOPICS_H
#define TODO_TOPICS_H

#include <stdbool.h>

#include "todo_err.h"

typedef enum topics_profile { TOPICS_DEV, TOPICS_PRODUCTION } topics_profile;

typedef struct topics_spec {
    const char *name;
    int partitions;
    int replication;
    int min_isr;
    const char *cleanup_policy;   /* "delete" or "compact" */
    const char *retention_ms;     /* "-1": kept for ever (projections rebuild from it) */
} topics_spec;

/* "dev" or "production"; TODO_EINVAL otherwise. */
int topics_profile_parse(const char *name, topics_profile *out, todo_err *err);
const char *topics_profile_name(topics_profile p);

/* The table of a profile; *n receives its length. */
const topics_spec *topics_table(topics_profile p, int *n);

/* Receives one human-readable line per topic checked. */
typedef void (*topics_say)(const char *line, void *ctx);

/* Makes the cluster at brokers match profile p (see above). Returns TODO_OK
 * when it matches afterwards, TODO_EPRECOND when differences remain (each
 * was said), TODO_EUNAVAIL when the cluster could not be reached. */
int topics_apply(const char *brokers, topics_profile p, bool fix, int timeout_ms, topics_say say, void *ctx,
                 todo_err *err);

#endif
