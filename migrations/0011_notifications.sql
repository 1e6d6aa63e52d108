-- Notification dispatch (todo-saga): one row per (notification, recipient),
-- claimed before delivery and marked after, so that a notification is never
-- sent twice to the same recipient (Redis only remembers it faster).
create table saga.notifications (
  notification_id text not null,
  recipient       text not null,
  channel         text not null,
  status          text not null check (status in ('sending', 'sent', 'failed')),
  attempts        integer not null default 0,
  last_error      text not null default '',
  created_at      timestamptz not null default now(),
  updated_at      timestamptz not null default now(),
  sent_at         timestamptz,
  primary key (notification_id, recipient)
);
