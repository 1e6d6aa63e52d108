-- Reminders and recurring patterns: aggregates of their own (own versions,
-- own events), each belonging to a task of the same user.
create table write.reminders (
  id         uuid primary key,
  task_id    uuid not null references write.tasks (id),
  user_id    text not null,
  remind_at  timestamptz not null,
  channel    smallint not null,
  status     text not null check (status in ('scheduled', 'cancelled', 'fired')),
  version    bigint not null,
  created_at timestamptz not null,
  updated_at timestamptz not null
);
create index reminders_task on write.reminders (task_id) where status = 'scheduled';
-- The reminder scheduler (todo-saga) takes due reminders in time order.
create index reminders_due on write.reminders (remind_at) where status = 'scheduled';

create table write.recurring_patterns (
  id         uuid primary key,
  task_id    uuid not null unique references write.tasks (id),
  user_id    text not null,
  rule       bytea not null,          -- the serialized todo.v1.RecurrenceRule
  time_zone  text not null,
  version    bigint not null,
  created_at timestamptz not null,
  updated_at timestamptz not null
);

-- The read side shows the pattern a task is the template of.
alter table read.tasks add column recurring_pattern_id uuid;
