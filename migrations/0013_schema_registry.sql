-- The schema registry (issue 5): subjects (one per event type,
-- "task.created"), their versions, each a protobuf schema (a serialized
-- FileDescriptorSet with its dependencies, and the message's full name)
-- under a global id, and a compatibility mode per subject with a global
-- default (subject '*').
create schema registry;
grant usage on schema registry to todo_command, todo_projector, todo_saga, todo_query;

create table registry.schemas (
  id             serial primary key,             -- the global schema id
  fingerprint    text not null unique,           -- sha256 of message name + descriptor set: the same schema again gets the same id
  message        text not null,                  -- full name, "todo.v1.TaskCreated"
  descriptor_set bytea not null,
  created_at     timestamptz not null default now()
);

create table registry.versions (
  subject    text not null,
  version    integer not null,
  schema_id  integer not null references registry.schemas (id),
  created_at timestamptz not null default now(),
  primary key (subject, version),
  unique (subject, schema_id)
);

create table registry.config (
  subject text primary key,                      -- '*': the global default
  mode    text not null check (mode in ('NONE', 'BACKWARD', 'FORWARD', 'FULL', 'BACKWARD_TRANSITIVE',
                                        'FORWARD_TRANSITIVE', 'FULL_TRANSITIVE'))
);
insert into registry.config (subject, mode) values ('*', 'BACKWARD');

grant select on all tables in schema registry to todo_command, todo_projector, todo_saga, todo_query;
-- Producers register their compiled schemas at start-up.
grant insert on registry.schemas, registry.versions to todo_command, todo_saga;
grant usage on sequence registry.schemas_id_seq to todo_command, todo_saga;
