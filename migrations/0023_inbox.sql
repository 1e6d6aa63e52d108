-- The user's inbox (issue 15): in-app notifications.
--
-- The write side owns it: todo-saga's dispatcher delivers an in-app
-- notification through todo-command (DeliverInAppNotification), which adds
-- an entry (an aggregate of its own; its id a name-based UUID of the user
-- and the notification id, so a notification is one entry however often it
-- is delivered); MarkNotificationRead marks it read. Events inbox.* on
-- users.events.v1; the projector builds read.notifications from them.
create table write.inbox (
  id              uuid primary key,
  user_id         text not null,
  notification_id text not null,
  subject         text not null,
  body            text not null,
  task_id         uuid,
  read_at         timestamptz,
  version         bigint not null,
  created_at      timestamptz not null,
  updated_at      timestamptz not null
);

create table read.notifications (
  id              uuid primary key,
  user_id         text not null,
  notification_id text not null,
  subject         text not null,
  body            text not null,
  task_id         uuid,
  read_at         timestamptz,
  version         bigint not null,
  created_at      timestamptz not null
);
-- ListNotifications: newest first per user, and the unread ones.
create index notifications_user on read.notifications (user_id, created_at desc, id desc);
create index notifications_unread on read.notifications (user_id, created_at desc, id desc) where read_at is null;
