-- The update feed (issue 15): what WatchUpdates streams.
--
-- Every event the live projector applies adds one row for its user, in the
-- same transaction as the read-model write, numbered per user: position
-- 1, 2, 3... without gaps, in the order the user's events were applied
-- (feed.heads holds each user's last position; its row lock orders the
-- user's batches, so a reader never sees position n+1 before n). A client
-- resumes a stream after the last position it saw.
--
-- Its own schema, not read: a rebuild replays the read model into a copy
-- and swaps it in, which would renumber the feed under clients that hold
-- positions. The rebuild's replay writes no feed; the live projector goes
-- on adding to it meanwhile.
create schema feed;

create table feed.heads (
  user_id  text primary key,
  position bigint not null
);

create table feed.updates (
  user_id     text not null,
  position    bigint not null,
  kind        text not null,        -- task, reminder, notification, pattern, profile
  entity_id   uuid not null,        -- the event's aggregate
  version     bigint not null,      -- ... at this version
  event_type  text not null,
  event_time  timestamptz not null,
  recorded_at timestamptz not null default now(),
  primary key (user_id, position)
);
-- Resuming from a consistency token (an aggregate at a version).
create index updates_entity on feed.updates (user_id, entity_id, version);
-- Pruning (TODO_FEED_RETENTION_HOURS).
create index updates_recorded on feed.updates (recorded_at);

grant usage on schema feed to todo_query, todo_projector;
grant select on feed.heads, feed.updates to todo_query;
grant select, insert, update, delete on feed.heads, feed.updates to todo_projector;
