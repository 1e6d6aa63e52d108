-- The schema registry's gRPC service (hosted by todo-command) sets
-- compatibility modes too: the command role may write registry.config.
grant insert, update on registry.config to todo_command;
