-- The reminders read model (ListReminders), and read-your-writes per event
-- stream: a user's task events and reminder events travel on two topics
-- (tasks.events.v1, reminders.events.v1), each in order on its own, but not
-- in order with each other. A consistency token therefore names the stream
-- of its event, and user_positions records the highest position applied per
-- user and stream.
create table read.reminders (
  id           uuid primary key,
  task_id      uuid not null,
  user_id      text not null,
  remind_at    timestamptz not null,
  channel      smallint not null,
  status       text not null check (status in ('scheduled', 'cancelled', 'fired')),
  reason       text not null default '',   -- why it was cancelled
  triggered_at timestamptz,                -- when it last fired
  version      bigint not null,
  created_at   timestamptz not null,
  updated_at   timestamptz not null
);
-- ListReminders: a user's reminders in due order, optionally of one task.
create index read_reminders_user_due on read.reminders (user_id, remind_at, id);
create index read_reminders_task on read.reminders (task_id, remind_at, id);

alter table read.user_positions add column stream text not null default 'tasks.events.v1';
alter table read.user_positions drop constraint user_positions_pkey;
alter table read.user_positions add primary key (user_id, stream);
alter table read.user_positions alter column stream drop default;
