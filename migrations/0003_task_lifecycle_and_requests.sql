-- Soft delete on the read side (a deleted task keeps its row so that a
-- restore brings it back), and the record of handled client request ids
-- (idempotent retries): a retried command with the same request_id returns
-- the first answer. Records older than TODO_REQUEST_TTL_S are ignored and
-- purged by the active relay.
alter table read.tasks add column deleted boolean not null default false;

create table write.requests (
  user_id      text not null,
  request_id   text not null,
  rpc          text not null,
  request_hash text not null,        -- SHA-256 of the serialized request
  aggregate_id uuid not null,
  version      bigint not null,
  event_id     uuid not null,
  created_at   timestamptz not null default now(),
  primary key (user_id, request_id)
);
create index requests_created on write.requests (created_at);
