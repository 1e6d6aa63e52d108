/*
 * park: ordered parking of a consumer group's records behind its dead
 * letters (docs/OPERATIONS.md, "Dead letters").
 *
 * While a dead letter of a group is live in system.dlq.v1, the later
 * records of its aggregate, and the records caused by a record parked or
 * dead-lettered (their causation_id names its event), are not applied out
 * of order: they are dead-lettered too, with reason code "parked" and the
 * id of the letter at the head of the chain (parked_behind). todoctl dlq
 * redrive of any letter of a chain sends the whole chain back, head first,
 * in the order it was parked; each redriven record carries the head's id
 * (DLQ_HEADER_REDRIVE_ROOT), so the letters of its own chain do not park it
 * again, while a head that fails again parks the rest of the chain behind
 * its new letter.
 *
 * A park is the set of the group's live letters: loaded from the topic when
 * a consumer starts, then followed (new letters of every instance of the
 * group, tombstones of redriven and discarded ones). One per consume loop,
 * used on its thread only.
 */
#ifndef TODO_PARK_H
#define TODO_PARK_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>

#include "todo_err.h"

#define PARK_ID_MAX 40   /* a letter id (a UUID) with its NUL */
#define PARK_KEY_MAX 130 /* an aggregate or event id with its NUL */

/* Headers a redriven record carries (besides dlq.h's history): its own
 * letter's id, and the id at the head of its chain. */
#define DLQ_HEADER_REDRIVE_OF "todo_dlq_redrive_of"
#define DLQ_HEADER_REDRIVE_ROOT "todo_dlq_redrive_root"

typedef struct park park;

/* A park of group's letters; NULL when out of memory. */
park *park_new(const char *group);
void park_free(park *p);

/* Reads system.dlq.v1 to its end for the group's live letters, then follows
 * it from there (park_follow). A failure (the topic cannot be read yet)
 * leaves the park with the letters this process sends until park_follow
 * loads it, trying every few seconds. */
int park_load(park *p, const char *brokers, todo_err *err);

/* Takes what arrived on system.dlq.v1 since the last call, without waiting. */
void park_follow(park *p);

/* Adds a live letter (or replaces the one of that id): aggregate and event
 * of its record, and root, the letter at the head of its chain (its own id
 * for a head). */
void park_add(park *p, const char *letter_id, const char *aggregate, const char *event_id, const char *root);

/* Forgets a letter (its record was redriven and applied): it parks nothing
 * more, even if the letter itself is read on system.dlq.v1 afterwards (the
 * follower lags; its tombstone comes later). */
void park_remove(park *p, const char *letter_id);

/* One record of system.dlq.v1 (park_load and park_follow read them): a
 * letter of the group is added, a tombstone removes what it names. */
void park_take(park *p, const rd_kafka_message_t *m);

/* Whether a record of aggregate caused by causation (either may be "" or
 * NULL) must wait: true when a live letter of its aggregate, or of the
 * event that caused it, is there, other than the letters of chain
 * except_root (NULL: none); root gets the head of the chain it waits
 * behind. */
bool park_blocks(const park *p, const char *aggregate, const char *causation, const char *except_root,
                 char root[PARK_ID_MAX]);

/* The live letters in the park. */
int park_count(const park *p);

/* What ordering needs of a record, from its headers (ce_subject, ce_id,
 * causation_id, DLQ_HEADER_REDRIVE_OF, DLQ_HEADER_REDRIVE_ROOT); ""
 * for what it lacks. */
typedef struct park_record {
    char aggregate[PARK_KEY_MAX], event_id[PARK_KEY_MAX], causation[PARK_KEY_MAX];
    char redrive_of[PARK_ID_MAX], redrive_root[PARK_ID_MAX];
} park_record;
void park_record_of(const rd_kafka_message_t *m, park_record *out);

/* Marks, in a batch msgs[0..n), the records after record `from` that must
 * wait behind it (its aggregate's, and those its chain caused) with reason
 * PARK_REASON_IN_BATCH, unless dead[] already says why they are dead.
 * Appliers call it when they dead-letter record `from` in the middle of a
 * batch, before applying the records after it. */
#define PARK_REASON_IN_BATCH "parked: behind an earlier dead letter of its aggregate or causation chain"
void park_followers(rd_kafka_message_t *const *msgs, size_t n, const char **dead, size_t from);

#endif
