-- What each projection (consumer group) last did, for `todoctl projection
-- status`: written in the same transaction as every batch it applies.
create table read.projection_status (
  projection    text primary key,       -- the consumer group
  batches       bigint not null default 0,
  events        bigint not null default 0,  -- records handled (applied, skipped or dead-lettered)
  applied       bigint not null default 0,
  dead          bigint not null default 0,
  last_batch_at timestamptz,
  last_error    text,                    -- the last failure seen (a batch retried, a dead letter)
  last_error_at timestamptz
);
