-- Roles and schemas. The write side (schema "write") and the read side
-- (schema "read") are separate, and so are the roles that touch them:
--   todo_command   reads and writes the write schema only
--   todo_query     can only SELECT the read schema
--   todo_projector writes the read schema only
-- Roles are created without passwords; production sets them (ALTER ROLE ...
-- PASSWORD) or uses another authentication method, see docs/OPERATIONS.md.
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'todo_command') then
    create role todo_command login;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'todo_query') then
    create role todo_query login;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'todo_projector') then
    create role todo_projector login;
  end if;
end
$$;

create schema write;
create schema read;

revoke all on schema public from todo_command, todo_query, todo_projector;
grant usage on schema write to todo_command;
grant usage on schema read to todo_query, todo_projector;

alter default privileges in schema write grant select, insert, update, delete on tables to todo_command;
alter default privileges in schema write grant usage, select on sequences to todo_command;
alter default privileges in schema read grant select on tables to todo_query;
alter default privileges in schema read grant select, insert, update, delete on tables to todo_projector;
