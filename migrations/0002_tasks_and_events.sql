-- The write model of tasks and the event store, which is also the outbox:
-- a command inserts its state change and its event in one transaction; the
-- relay publishes rows in position order and stamps published_at after the
-- broker acknowledged them.
create table write.tasks (
  id           uuid primary key,
  user_id      text not null,
  title        text not null,
  description  text not null default '',
  priority     smallint not null,
  due_at       timestamptz,
  category     text not null default '',
  tags         text[] not null default '{}',
  completed_at timestamptz,
  deleted_at   timestamptz,
  version      bigint not null,
  created_at   timestamptz not null,
  updated_at   timestamptz not null
);
create index tasks_user on write.tasks (user_id);

create table write.events (
  position          bigserial primary key,
  event_id          uuid not null unique,
  event_type        text not null,
  schema_version    integer not null,
  user_id           text not null,
  aggregate_type    text not null,
  aggregate_id      uuid not null,
  aggregate_version bigint not null,
  envelope          bytea not null,      -- the serialized todo.v1.EventEnvelope
  created_at        timestamptz not null default now(),
  published_at      timestamptz,
  unique (aggregate_id, aggregate_version)
);
create index events_unpublished on write.events (position) where published_at is null;

-- Wakes the relay (LISTEN todo_outbox) once per inserting statement.
create function write.notify_outbox() returns trigger language plpgsql as $$
begin
  perform pg_notify('todo_outbox', '');
  return null;
end
$$;
create trigger events_notify after insert on write.events
  for each statement execute function write.notify_outbox();

-- The read model. Overdue status is computed at query time, never stored.
create table read.tasks (
  id           uuid primary key,
  user_id      text not null,
  title        text not null,
  description  text not null default '',
  priority     smallint not null,
  due_at       timestamptz,
  category     text not null default '',
  tags         text[] not null default '{}',
  completed    boolean not null default false,
  completed_at timestamptz,
  version      bigint not null,
  created_at   timestamptz not null,
  updated_at   timestamptz not null
);
-- ListTasks: a user's tasks newest first, keyset-paginated on (created_at, id).
create index read_tasks_user_created on read.tasks (user_id, created_at desc, id desc);

-- The projector's idempotency record: the highest aggregate version applied
-- per aggregate, updated in the same transaction as the read model.
create table read.applied_versions (
  aggregate_id uuid primary key,
  version      bigint not null
);

-- Read-your-writes: the highest event-store position applied per user. A
-- user's events share one partition (key = user id) and are applied in order,
-- so position >= P means every event of that user up to P is visible.
create table read.user_positions (
  user_id  text primary key,
  position bigint not null
);

-- The projector notifies 'read_progress' after each committed batch; queries
-- that wait for a consistency token LISTEN on it.
