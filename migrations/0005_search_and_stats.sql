-- SearchTasks: a full-text document per task ('simple' configuration: no
-- stemming, so any language works and prefix matches stay predictable).
-- array_to_string is only STABLE (it serves every element type); for text[]
-- it is immutable, which a generated column needs.
create function read.words(tags text[]) returns text language sql immutable parallel safe
  as $$ select array_to_string(tags, ' ') $$;
alter table read.tasks add column search tsvector generated always as (
  to_tsvector('simple'::regconfig, title || ' ' || description || ' ' || category || ' ' || read.words(tags))
) stored;
create index read_tasks_search on read.tasks using gin (search);

-- Overdue counts and due-date filters: a user's open tasks by due date.
create index read_tasks_user_due on read.tasks (user_id, due_at) where not completed and not deleted;

-- GetTaskStats: per-user counters kept incrementally by a trigger on
-- read.tasks, in the same transaction as the projector's write. Overdue
-- depends on the clock and is counted at query time.
create table read.task_stats (
  user_id   text primary key,
  total     bigint not null default 0,   -- not deleted
  completed bigint not null default 0,
  low       bigint not null default 0,
  medium    bigint not null default 0,
  high      bigint not null default 0,
  urgent    bigint not null default 0
);

create function read.tasks_stats() returns trigger language plpgsql as $$
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
  insert into read.task_stats as s (user_id, total, completed, low, medium, high, urgent)
  values (uid, n_live - o_live, n_live * n_done - o_live * o_done,
          (n_p = 1)::int * n_live - (o_p = 1)::int * o_live,
          (n_p = 2)::int * n_live - (o_p = 2)::int * o_live,
          (n_p = 3)::int * n_live - (o_p = 3)::int * o_live,
          (n_p = 4)::int * n_live - (o_p = 4)::int * o_live)
  on conflict (user_id) do update set
    total = s.total + excluded.total, completed = s.completed + excluded.completed,
    low = s.low + excluded.low, medium = s.medium + excluded.medium,
    high = s.high + excluded.high, urgent = s.urgent + excluded.urgent;
  return null;
end
$$;
create trigger tasks_stats after insert or update or delete on read.tasks
  for each row execute function read.tasks_stats();

-- Counters for what was projected before this migration.
insert into read.task_stats (user_id, total, completed, low, medium, high, urgent)
select user_id, count(*), count(*) filter (where completed),
       count(*) filter (where priority = 1), count(*) filter (where priority = 2),
       count(*) filter (where priority = 3), count(*) filter (where priority = 4)
from read.tasks where not deleted group by user_id;
