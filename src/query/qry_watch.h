/*
 * qry_watch: the WatchUpdates streams of one todo-query process.
 *
 * One thread (the hub) feeds every open stream from the update feed
 * (feed.updates, migration 0025): it LISTENs to the projector's `feed`
 * notifications (payload: the user whose feed grew) and, for each stream of
 * that user, reads the rows after the stream's position and sends them, one
 * Update each with the item as the read model shows it. It reads at most
 * what the stream's buffer has room for (GRPCX_STREAM_BUFFER): a slow client
 * costs one bounded buffer and never holds the projector back; one that has
 * read nothing for TODO_WATCH_STALL_MS while more waits is ended with
 * RESOURCE_EXHAUSTED, and resumes from the last position it got. A stream
 * with nothing new gets a keep-alive every TODO_WATCH_KEEPALIVE_MS. On a hot
 * standby (no NOTIFY there) the hub looks every 250 ms instead; it also
 * looks at every stream at each keep-alive round, so a notification lost
 * with a connection delays an update, never loses it.
 */
#ifndef TODO_QRY_WATCH_H
#define TODO_QRY_WATCH_H

#include <stdint.h>

#include "config.h"
#include "grpcx.h"
#include "todo_err.h"

typedef struct qry_watch qry_watch;

/* Starts the hub (its database connection is made when needed). NULL with
 * err set when out of memory or the thread cannot start. */
qry_watch *qry_watch_start(const todo_config *cfg, todo_err *err);

/* Stops the hub and lets go of the streams it holds; takes NULL. Call once
 * the server is shut down (grpcx ended the streams). */
void qry_watch_stop(qry_watch *w);

/* Hands st, user's stream, to the hub: it sends a keep-alive at position
 * `after` first, then every update after it. TODO_ETOOBIG when
 * TODO_WATCH_MAX_STREAMS are open (st stays the caller's then). */
int qry_watch_add(qry_watch *w, grpcx_server_stream *st, const char *user, int64_t after, todo_err *err);

#endif
