/*
 * dlq_watch: the depth of the dead-letter topic as a Prometheus gauge,
 * todo_dlq_depth{group, reason_code}: the dead letters system.dlq.v1 holds
 * now, that is neither redriven nor discarded (the compacted topic's live
 * keys). A thread reads the topic from its start (every partition; a
 * consumer that joins no group and commits nothing) and follows it, keeping
 * the live dead-letter ids in memory: a letter counts from its record on,
 * until its tombstone. Memory: about 50 bytes per live letter.
 */
#ifndef TODO_DLQ_WATCH_H
#define TODO_DLQ_WATCH_H

#include "todo_err.h"

typedef struct dlq_watch dlq_watch;

/* Starts following the dead-letter topic on brokers (kafkax's settings).
 * NULL with err set when the thread cannot start; a broker away is waited
 * for. */
dlq_watch *dlq_watch_start(const char *brokers, todo_err *err);

/* The live letters of group with reason_code it counts now (NULL: any). */
long dlq_watch_depth(dlq_watch *w, const char *group, const char *reason_code);

/* Stops the thread and releases everything; takes NULL. */
void dlq_watch_stop(dlq_watch *w);

#endif
