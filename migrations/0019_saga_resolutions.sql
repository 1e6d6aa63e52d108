-- Failed compensations an operator settled by hand (todoctl saga resolve):
-- a FAILED saga is the dead letter of a compensation; once resolved it
-- keeps its state and history, leaves the list of failures waiting for a
-- person (todoctl saga failed, the todo_sagas{state="FAILED"} gauge) and is
-- no longer retried. Who, when and why are kept.
create table saga.resolutions (
    saga_id     uuid primary key references saga.sagas (id) on delete cascade,
    resolved_by text not null check (length(resolved_by) between 1 and 128),
    resolved_at timestamptz not null default now(),
    why         text not null check (length(why) between 1 and 1000)
);
