-- A task's history (issue 17): the task as each of its events left it,
-- written by the projector right after it applies the event, in the same
-- transaction (the read model's row at the event's version). GetTaskHistory
-- pages through it and tells what each event changed by comparing a
-- version with the one before; GetTask with as_of reads the last version
-- at or before a time. Rebuilt with the rest of the read model.
create table read.task_history (
  task_id        uuid not null,
  version        bigint not null,
  user_id        text not null,
  event_type     text not null,
  event_time     timestamptz not null,
  actor          text not null,        -- the user, or the service acting for them ('' before actors were recorded)
  correlation_id text not null,
  title          text not null,
  description    text not null,
  priority       smallint not null,
  due_at         timestamptz,
  completed      boolean not null,
  completed_at   timestamptz,
  category       text not null,
  tags           text[] not null,
  deleted        boolean not null,
  recurring_pattern_id uuid,
  primary key (task_id, version)
);
-- as_of: the last version at or before a time.
create index task_history_time on read.task_history (task_id, event_time);
