-- What a rebuild needs of the read model (todoctl projection rebuild):
--
-- * Nothing of the read schema may depend on functions that live in it, or
--   a swap would drop them with the old copy: the generated search column and
--   the statistics trigger use functions in todo_meta instead, and the
--   trigger finds task_stats in the schema of the table it fires on.
-- * Each batch records, in its own transaction, how far it got per
--   partition, so that a rebuild knows exactly what the live copy holds.
-- * todo_meta.rebuilds remembers a rebuild in progress, so that one killed
--   can be resumed.
grant usage on schema todo_meta to todo_query, todo_projector;

create function todo_meta.words(tags text[]) returns text language sql immutable parallel safe
  as $$ select array_to_string(tags, ' ') $$;
alter table read.tasks drop column search;
alter table read.tasks add column search tsvector generated always as (
  to_tsvector('simple'::regconfig, title || ' ' || description || ' ' || category || ' ' || todo_meta.words(tags))
) stored;
create index read_tasks_search on read.tasks using gin (search);
drop function read.words(text[]);

create function todo_meta.tasks_stats() returns trigger language plpgsql as $$
declare
  o_live int := 0; o_done int := 0; o_p smallint := 0;
  n_live int := 0; n_done int := 0; n_p smallint := 0;
  uid text;
begin
  if tg_op <> 'INSERT' and not old.deleted then
    o_live := 1; o_done := old.completed::int; o_p := old.priority;
  end if;
  if tg_op <> 'DELETE' and not new.deleted then
    n_live := 1; n_done := new.completed::int; n_p := new.priority;
  end if;
  if tg_op = 'DELETE' then uid := old.user_id; else uid := new.user_id; end if;
  if o_live = n_live and o_done = n_done and o_p = n_p then
    return null;
  end if;
  execute format(
    'insert into %I.task_stats as s (user_id, total, completed, low, medium, high, urgent)'
    ' values ($1, $2, $3, $4, $5, $6, $7) on conflict (user_id) do update set'
    ' total = s.total + excluded.total, completed = s.completed + excluded.completed,'
    ' low = s.low + excluded.low, medium = s.medium + excluded.medium,'
    ' high = s.high + excluded.high, urgent = s.urgent + excluded.urgent', tg_table_schema)
  using uid, n_live - o_live, n_live * n_done - o_live * o_done,
        (n_p = 1)::int * n_live - (o_p = 1)::int * o_live,
        (n_p = 2)::int * n_live - (o_p = 2)::int * o_live,
        (n_p = 3)::int * n_live - (o_p = 3)::int * o_live,
        (n_p = 4)::int * n_live - (o_p = 4)::int * o_live;
  return null;
end
$$;
drop trigger tasks_stats on read.tasks;
create trigger tasks_stats after insert or update or delete on read.tasks
  for each row execute function todo_meta.tasks_stats();
drop function read.tasks_stats();

create table read.projection_offsets (
  projection  text not null,     -- the consumer group
  topic       text not null,
  partition   integer not null,
  next_offset bigint not null,
  primary key (projection, topic, partition)
);

create table todo_meta.rebuilds (
  projection     text primary key,   -- the live projection's group
  shadow_schema  text not null,
  consumer_group text not null,
  started_at     timestamptz not null default now()
);
