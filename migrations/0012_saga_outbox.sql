-- The saga store's outbox: the events of every saga transition, written in
-- the same statement as the saga's record, published to saga.events.v1 by
-- todo-saga's publisher (at least once, in order), then deleted.
create table saga.outbox (
  id         bigserial primary key,
  saga_id    uuid not null,
  saga_type  text not null,
  user_id    text not null,
  state      text not null,          -- the saga's state after the transition
  what       text not null,          -- "started", "step.completed", ...
  step       text not null default '',
  attempt    integer not null default 0,
  error      text not null default '',
  detail     text not null default '', -- next_occurrence's step.completed: the new occurrence
  pattern_id text not null default '',
  task_id    text not null default '',
  created_at timestamptz not null default now()
);
grant usage on sequence saga.outbox_id_seq to todo_saga;
