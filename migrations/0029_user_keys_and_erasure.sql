-- Users and erasure by crypto-shredding (issue 17).
--
-- keys.user_keys: one data key per user, wrapped by the master key
-- (TODO_MASTER_KEY; src/common/seal.h, keystore.h). todo-command makes it
-- at the user's first command and seals the personal fields of the user's
-- events with it; todo-projector opens them. EraseUser destroys it: the row
-- stays with wrapped = null, so the id is never given a new key.
create schema keys;
create table keys.user_keys (
  user_id      text primary key,
  wrapped      bytea,                 -- null: destroyed (the user was erased)
  created_at   timestamptz not null default now(),
  destroyed_at timestamptz,
  check ((wrapped is null) = (destroyed_at is not null))
);
grant usage on schema keys to todo_command, todo_projector, todo_saga;
grant select, insert, update on keys.user_keys to todo_command;
grant select on keys.user_keys to todo_projector, todo_saga;  -- todo-saga seals notification texts

-- The user aggregate of the write model: user.registered at the first
-- command, user.erasure_requested and user.erased on EraseUser.
create table write.users (
  id            uuid primary key,      -- a name-based UUID of the user id
  user_id       text not null unique,
  version       bigint not null,
  registered_at timestamptz not null,
  erased_at     timestamptz,
  erased_by     text,
  reason        text
);

-- No event of an erased user is stored but the erasure's own: a
-- todo-command that still has the key in its cache is refused by the
-- database, not trusted to know.
-- The key row is read FOR SHARE: an EraseUser in flight (it updates the
-- row) waits for this transaction, or this one sees the erasure; a command
-- can never slip a clear row past the erasure's purge.
create function todo_meta.refuse_erased_users() returns trigger language plpgsql as $$
declare
  erased boolean;
begin
  if new.event_type in ('user.erasure_requested', 'user.erased') then
    return new;
  end if;
  select k.wrapped is null into erased from keys.user_keys k where k.user_id = new.user_id for share;
  if erased then
    raise exception 'user % was erased', new.user_id using errcode = 'TD001';
  end if;
  return new;
end
$$;
create trigger events_refuse_erased_users before insert on write.events
  for each row execute function todo_meta.refuse_erased_users();

-- The analytics projection's time zones: a name PostgreSQL knows (in any
-- case, as AT TIME ZONE takes it), else UTC; cheaper than reading
-- pg_timezone_names for each profile event.
create function todo_meta.time_zone_or_utc(z text) returns text language plpgsql stable as $$
begin
  if z is null or z = '' then
    return 'UTC';
  end if;
  perform now() at time zone z;
  return z;
exception when others then
  return 'UTC';
end
$$;
