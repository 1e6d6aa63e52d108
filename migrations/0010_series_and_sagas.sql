-- Recurring series on the write side, and the saga store.
--
-- An occurrence created by CreateNextOccurrence belongs to its pattern's
-- series (series_id), has a number in it (the template is occurrence 1), and
-- names the completed occurrence it follows (generated_from, unique: one
-- next occurrence per completed task, however often it is completed).
alter table write.tasks add column series_id uuid;
alter table write.tasks add column occurrence integer;
alter table write.tasks add column generated_from uuid unique;

-- todo-saga's role: its own schema, and read-only access to what its
-- reminder scheduler and the task-completion saga look at.
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'todo_saga') then
    create role todo_saga login;
  end if;
end
$$;
revoke all on schema public from todo_saga;
create schema saga;
grant usage on schema saga to todo_saga;
alter default privileges in schema saga grant select, insert, update, delete on tables to todo_saga;
grant usage on schema write to todo_saga;
grant select on write.reminders, write.tasks, write.recurring_patterns to todo_saga;

-- One row per saga: the orchestrator's record (saga_core.h), saved before
-- every attempt and after every outcome. A running saga is leased by one
-- todo-saga instance at a time (owner, lease_until); an expired lease lets
-- another instance resume it.
create table saga.sagas (
  id           uuid primary key,          -- the id of the event that started it
  type         text not null,
  state        text not null check (state in ('RUNNING', 'COMPENSATING', 'COMPLETED', 'FAILED', 'COMPENSATED')),
  step         integer not null,
  step_states  smallint[] not null,       -- saga_step_state per step
  attempts     integer[] not null,
  step_errors  text[] not null,
  error        text not null default '',
  ctx_keys     text[] not null,
  ctx_values   text[] not null,
  user_id      text not null,
  owner        text,
  lease_until  timestamptz,
  created_at   timestamptz not null default now(),
  updated_at   timestamptz not null default now()
);
create index sagas_active on saga.sagas (created_at) where state in ('RUNNING', 'COMPENSATING');
create index sagas_state on saga.sagas (state, updated_at);
