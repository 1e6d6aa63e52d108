-- The outbox can set a row aside: one event that Kafka refuses for good
-- (too large, invalid) must not stop the relay for every user.
--
-- parked_at/parked_reason: the relay could not publish the row and will not
-- try again by itself; the aggregate's later events wait behind it (the
-- relay skips them) so that no consumer sees them before it.
-- `todoctl outbox retry` clears parked_at (the relay tries again, then the
-- waiting events follow in order); `todoctl outbox drop` gives it up:
-- dropped_at and published_at are set (it left the outbox without
-- reaching Kafka) and the waiting events go out, across the gap.
alter table write.events
  add column parked_at     timestamptz,
  add column parked_reason text,
  add column dropped_at    timestamptz;

-- Few rows: what the relay checks for every batch ("is an earlier event of
-- this aggregate parked?") and what operators list.
create index events_parked on write.events (aggregate_id, position)
  where parked_at is not null and published_at is null;
