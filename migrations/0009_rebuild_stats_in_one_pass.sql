-- A rebuild replays the whole history into a shadow copy of the read model.
-- Maintaining task_stats row by row (the tasks_stats trigger) costs about as
-- much as the replay itself there, so a rebuild keeps the copy's triggers
-- disabled while it replays and counts the statistics once, from the
-- copy's tasks, just before the swap (under the swap lock, so no event is
-- applied in between); then it enables the triggers again. The count is the
-- trigger's rule in one statement: live (not deleted) tasks per user, how
-- many completed, how many per priority.
create function todo_meta.tasks_stats_recount(target text) returns void language plpgsql as $$
begin
  execute format('delete from %I.task_stats', target);
  execute format(
    'insert into %I.task_stats (user_id, total, completed, low, medium, high, urgent)'
    ' select user_id, count(*), count(*) filter (where completed),'
    ' count(*) filter (where priority = 1), count(*) filter (where priority = 2),'
    ' count(*) filter (where priority = 3), count(*) filter (where priority = 4)'
    ' from %I.tasks where not deleted group by user_id', target, target);
end
$$;
