-- Reminders reach the user (issue 15).
--
-- A user's notification profile (SetNotificationPreferences): where the
-- EMAIL and PUSH (webhook) channels reach them, and their quiet hours. An
-- aggregate of its own (aggregate type "user_profile", its id a UUID derived
-- from the user id), its events on users.events.v1.
create table write.user_profiles (
  id                uuid primary key,
  user_id           text not null unique,
  email             text not null default '',
  webhook_url       text not null default '',
  time_zone         text not null default '',
  quiet_hours_start text not null default '',   -- "HH:MM" or ''
  quiet_hours_end   text not null default '',
  version           bigint not null,
  created_at        timestamptz not null,
  updated_at        timestamptz not null
);
-- todo-saga's notifier reads where to deliver.
grant select on write.user_profiles to todo_saga;

-- A reminder may name several channels; `channel` stays the first of them.
alter table write.reminders add column channels smallint[];

-- Notifications held back by the recipient's quiet hours (todo-saga's
-- dispatcher), released when not_before comes. The request is the
-- serialized todo.v1.SendNotification.
create table saga.deferred_notifications (
  notification_id text not null,
  recipient       text not null,
  not_before      timestamptz not null,
  request         bytea not null,
  correlation_id  text not null default '',
  created_at      timestamptz not null default now(),
  primary key (notification_id, recipient)
);
create index deferred_notifications_due on saga.deferred_notifications (not_before);
