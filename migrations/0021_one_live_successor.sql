-- A recurring series must not end by accident (issue 15).
--
-- generated_from was unique over every task, deleted ones included: when the
-- task-completion saga compensated (the task was reopened) it deleted the
-- occurrence it had made, which kept holding the completed task's slot, so
-- completing the task again made no next occurrence (CreateNextOccurrence
-- answered ALREADY_EXISTS) and the series was silently over. Now a
-- completed task has at most one *live* next occurrence; deleted ones do not
-- count.
alter table write.tasks drop constraint tasks_generated_from_key;
create unique index tasks_live_successor on write.tasks (generated_from) where deleted_at is null;

-- The saga's compensation finds the occurrence its own CreateNextOccurrence
-- made (if it made one) from the request record, instead of sending the
-- request again (which would create one when the first attempt never ran).
grant select on write.requests to todo_saga;
