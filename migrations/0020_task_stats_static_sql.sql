-- Two per-row costs of the projector's writes, gone. First, the task
-- counters' trigger without dynamic SQL on the live read model:
-- EXECUTE parsed and planned its statement again for every row the
-- projector wrote (issue 19: yyparse was 5% of the projector's backend,
-- whose CPU per CreateTask was more than the command's own). Static SQL in
-- PL/pgSQL is planned once per session. The rebuild's shadow schema
-- (read_rebuild) has its own static branch; any other schema keeps EXECUTE.
create or replace function todo_meta.tasks_stats() returns trigger language plpgsql as $$
declare
  o_live int := 0; o_done int := 0; o_p smallint := 0;
  n_live int := 0; n_done int := 0; n_p smallint := 0;
  uid text;
  d_total int; d_done int; d_low int; d_medium int; d_high int; d_urgent int;
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
  d_total := n_live - o_live;
  d_done := n_live * n_done - o_live * o_done;
  d_low := (n_p = 1)::int * n_live - (o_p = 1)::int * o_live;
  d_medium := (n_p = 2)::int * n_live - (o_p = 2)::int * o_live;
  d_high := (n_p = 3)::int * n_live - (o_p = 3)::int * o_live;
  d_urgent := (n_p = 4)::int * n_live - (o_p = 4)::int * o_live;
  if tg_table_schema = 'read' then
    insert into read.task_stats as s (user_id, total, completed, low, medium, high, urgent)
    values (uid, d_total, d_done, d_low, d_medium, d_high, d_urgent)
    on conflict (user_id) do update set
      total = s.total + excluded.total, completed = s.completed + excluded.completed,
      low = s.low + excluded.low, medium = s.medium + excluded.medium,
      high = s.high + excluded.high, urgent = s.urgent + excluded.urgent;
  elsif tg_table_schema = 'read_rebuild' then
    insert into read_rebuild.task_stats as s (user_id, total, completed, low, medium, high, urgent)
    values (uid, d_total, d_done, d_low, d_medium, d_high, d_urgent)
    on conflict (user_id) do update set
      total = s.total + excluded.total, completed = s.completed + excluded.completed,
      low = s.low + excluded.low, medium = s.medium + excluded.medium,
      high = s.high + excluded.high, urgent = s.urgent + excluded.urgent;
  else
    execute format(
      'insert into %I.task_stats as s (user_id, total, completed, low, medium, high, urgent)'
      ' values ($1, $2, $3, $4, $5, $6, $7) on conflict (user_id) do update set'
      ' total = s.total + excluded.total, completed = s.completed + excluded.completed,'
      ' low = s.low + excluded.low, medium = s.medium + excluded.medium,'
      ' high = s.high + excluded.high, urgent = s.urgent + excluded.urgent', tg_table_schema)
    using uid, d_total, d_done, d_low, d_medium, d_high, d_urgent;
  end if;
  return null;
end
$$;

-- The search column's tag words in PL/pgSQL: the same text, but as a SQL
-- function that cannot be inlined (array_to_string is only stable) it was
-- parsed and planned again for every row written, twice (once trying to
-- inline it, once to run it): ~20% of the projector's backend CPU.
-- PL/pgSQL keeps its plan for the session.
create or replace function todo_meta.words(tags text[]) returns text language plpgsql immutable parallel safe
  as $$ begin return array_to_string(tags, ' '); end $$;
