-- todo-saga publishes through the same outbox module as todo-command
-- (src/common/outbox.h): a row is one encoded event envelope, written in the
-- transaction that made it (a saga transition, a notification request, a
-- notification's outcome), with the user it is keyed by and the aggregate a
-- parked row holds back.
--
-- The structured columns of 0012 stay for rows written by an older todo-saga:
-- at start todo-saga encodes those into envelopes (saga_store_upgrade_outbox),
-- then publishes them like any other row.
alter table saga.outbox
  add column event_type    text,
  add column aggregate_id  text,
  add column envelope      bytea,
  add column parked_at     timestamptz,
  add column parked_reason text,
  alter column saga_id drop not null,
  alter column saga_type set default '',
  alter column state set default '',
  alter column what set default '';

create index saga_outbox_parked on saga.outbox (aggregate_id, id) where parked_at is not null;

-- Wakes the active publisher (LISTEN todo_saga_outbox) on every insert.
create function saga.notify_outbox() returns trigger language plpgsql as $$
begin
  perform pg_notify('todo_saga_outbox', '');
  return null;
end
$$;
create trigger saga_outbox_notify after insert on saga.outbox
  for each statement execute function saga.notify_outbox();
