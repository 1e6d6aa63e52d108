-- The sagas of each task, as the query API shows them (GetTaskActivity,
-- issue 15): the projector keeps, per saga, its latest state from the
-- saga.* events on saga.events.v1 (each event is applied once: the claim
-- is on the event's id; an older event never overwrites a newer state).
create table read.task_sagas (
  saga_id    uuid primary key,
  task_id    uuid not null,
  user_id    text not null,
  saga_type  text not null,
  status     smallint not null,      -- todo.v1.SagaStatus
  step       text not null,          -- the step of the latest event ('' for a saga-level one)
  error      text not null,          -- the latest error seen ('' none)
  last_event text not null,          -- e.g. saga.compensated
  started_at timestamptz not null,
  updated_at timestamptz not null
);
create index task_sagas_task on read.task_sagas (task_id, started_at);
