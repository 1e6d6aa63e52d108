# Sourced by the bench scripts (after scripts/lib.sh, from the repository
# root): bench_stack builds build/dev, starts the "bench" stack (free
# ports), applies the migrations and topics and sets $bin; the services and
# tools a script starts go into pids=() and are stopped, with the stack, when
# the script exits.
bench_stack() {
  bash scripts/build.sh dev >/dev/null
  bash scripts/stack.sh start bench >/dev/null
  eval "$(bash scripts/stack.sh env bench)"
  export TODO_MIGRATIONS_DIR="$TODO_REPO/migrations"
  bin=build/dev/src
  $bin/cli/todoctl migrate >/dev/null
  $bin/cli/todoctl topics apply >/dev/null
  pids=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  bash scripts/stack.sh stop bench >/dev/null 2>&1 || true
}

# CPU seconds (utime + stime, with those of reaped children) of the pids;
# 0 for pids that are gone.
cpu_of() {
  local t=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    t=$(awk -v t="$t" -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); print t + ($12 + $13 + $14 + $15) / hz}' "/proc/$p/stat")
  done
  echo "$t"
}

# The pgbench baseline's tables (the write model's, without our trigger's
# neighbours: bench.tasks and bench.events, made afresh) and its CreateTask
# script, the two-row transaction, as DIR/create.sql; needs $PSQL.
bench_baseline_tables() {
  $PSQL <<'SQL'
drop schema if exists bench cascade;
create schema bench;
create table bench.tasks (like write.tasks including all);
create table bench.events (like write.events including all);
SQL
  cat > "$1/create.sql" <<'SQL'
BEGIN;
INSERT INTO bench.tasks (id, user_id, title, description, priority, category, tags, version, created_at, updated_at)
  VALUES (gen_random_uuid(), 'u' || :client_id, 'benchmark task', '', 2, '', '{}', 1, now(), now());
INSERT INTO bench.events (event_id, event_type, schema_version, user_id, aggregate_type, aggregate_id,
  aggregate_version, envelope)
  VALUES (gen_random_uuid(), 'task.created', 2, 'u' || :client_id, 'task', gen_random_uuid(), 1,
  decode(repeat('ab', 180), 'hex'));
END;
SQL
}

# A clustered bar chart of DIR/chart.dat as DIR/chart.png, titled TITLE;
# LINES (gnuplot) add settings and the plot command. gnuplot is installed
# when missing; without it, no chart.
bench_chart() {
  command -v gnuplot >/dev/null || { [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null 2>&1; } || true
  command -v gnuplot >/dev/null || { log "gnuplot is not available: no chart"; return 0; }
  gnuplot <<GP
set terminal pngcairo size 1200,600 noenhanced font ",10"
set output "$1/chart.png"
set title "$2"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -30
set key top left
set grid ytics
$3
GP
  log "chart in $1/chart.png"
}
