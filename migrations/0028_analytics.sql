-- The analytics projection (issue 17): productivity over time, a second
-- read model with its own schema, consumer group (projection-analytics-v1),
-- status and rebuild (src/projection/proj_analytics.c). It keeps facts, not
-- totals: each counted event (activity) and each task's due time and state
-- (tasks). GetProductivityStats groups them into days in the user's time
-- zone when asked, so a zone change applies to the whole history and the
-- order in which a replay reads the topics cannot change a number.
create schema analytics;
grant usage on schema analytics to todo_query, todo_projector;
alter default privileges in schema analytics grant select on tables to todo_query;
alter default privileges in schema analytics grant select, insert, update, delete on tables to todo_projector;

-- The runtime's bookkeeping, as in read (proj_apply.h).
create table analytics.applied_versions (like read.applied_versions including all);
create table analytics.projection_status (like read.projection_status including all);
create table analytics.projection_offsets (like read.projection_offsets including all);

-- Each user's time zone (user.notification_preferences_set; UTC until set).
create table analytics.users (
  user_id   text primary key,
  time_zone text not null
);

-- Each task: when it was created, when it is due, whether it is done.
create table analytics.tasks (
  id           uuid primary key,
  user_id      text not null,
  created_at   timestamptz not null,
  due_at       timestamptz,
  completed    boolean not null default false,
  completed_at timestamptz,
  deleted      boolean not null default false
);
create index analytics_tasks_user_due on analytics.tasks (user_id, due_at) where due_at is not null;

-- Each counted event: a task created, completed or reopened, when, and for
-- a completion the seconds since the task was created.
create table analytics.activity (
  task_id             uuid not null,
  version             bigint not null,
  user_id             text not null,
  kind                text not null check (kind in ('created', 'completed', 'reopened')),
  at                  timestamptz not null,
  seconds_to_complete double precision,
  primary key (task_id, version)
);
create index analytics_activity_user_at on analytics.activity (user_id, at);

grant select on all tables in schema analytics to todo_query;
grant select, insert, update, delete on all tables in schema analytics to todo_projector;
