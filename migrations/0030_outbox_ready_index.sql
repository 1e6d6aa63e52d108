-- The relay's index holds only the rows it may publish: unpublished and
-- not parked. events_unpublished (published_at is null) also matched the
-- relay's "is an earlier event of this aggregate parked?" probe, and with
-- statistics taken while the outbox was empty (the usual case) the planner
-- priced both partial indexes at one row and could pick it for the probe:
-- every row of a batch then read the whole backlog (a batch of 500 over a
-- backlog of 5,000 rows: 303,000 buffers, 0.4 s; the backlog status query:
-- 2.1 million buffers, 2.5 s). Under a burst the relay fell behind, the
-- backlog grew and each batch got slower: at 82,000 rows the status query
-- ran for minutes and no event reached Kafka for any user (issue 19).
-- The probe can only use events_parked (or the aggregate's own index) now.
create index events_ready on write.events (position) where published_at is null and parked_at is null;
drop index write.events_unpublished;
