-- What operators decided about dead letters (todoctl dlq redrive, discard):
-- one row per dead letter, written before the decision is carried out, so
-- that two operators never both redrive one letter (the second is told who
-- holds it) and a discarded letter keeps its reason and who decided.
-- done is false while the decision is being carried out; a claim left
-- undone for a minute (a todoctl that crashed) may be taken over.
create table todo_meta.dlq_decisions (
    letter_id      text primary key,
    action         text not null check (action in ('redriven', 'discarded')),
    reason         text not null default '',
    operator       text not null,
    original_topic text not null default '',
    consumer_group text not null default '',
    reason_code    text not null default '',
    event_type     text not null default '',
    claimed_at     timestamptz not null default now(),
    done           boolean not null default false,
    decided_at     timestamptz
);
create index dlq_decisions_decided on todo_meta.dlq_decisions (decided_at);
