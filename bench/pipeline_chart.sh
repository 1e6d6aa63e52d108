#!/usr/bin/env bash
# A chart of the event pipeline from a real run, drawn from Prometheus
# (issue 14): the four services on the bench stack, Debian's Prometheus
# scraping them every second, 20 s of CreateTask at 8 clients then 10 s of
# task completions (sagas) at 4; then Prometheus' query_range API gives
#   CreateTask calls/s and their p99 latency (grpc_server_*),
#   the outbox's unpublished rows and the projector's lag in records,
#   sagas completed per second and notifications sent per second,
# which gnuplot draws into docs/ops/pipeline.png (and the run's folder).
#
#   bench/pipeline_chart.sh
source "$(dirname "$0")/../scripts/lib.sh"
cd "$TODO_REPO"
out="$TODO_REPO/bench/results/pipeline-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out/prometheus"

source bench/common.sh
bench_stack
$bin/command/todo-command >"$out/command.log" 2>&1 & pids+=($!)
$bin/query/todo-query >"$out/query.log" 2>&1 & pids+=($!)
$bin/projection/todo-projector >"$out/projector.log" 2>&1 & pids+=($!)
$bin/saga/todo-saga >"$out/saga.log" 2>&1 & pids+=($!)
prom_port=$(free_port)
cat >"$out/prometheus.yml" <<YML
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - {job_name: todo-command, static_configs: [{targets: ['$TODO_COMMAND_METRICS_ADDR']}]}
  - {job_name: todo-query, static_configs: [{targets: ['$TODO_QUERY_METRICS_ADDR']}]}
  - {job_name: todo-projector, static_configs: [{targets: ['$TODO_PROJECTOR_METRICS_ADDR']}]}
  - {job_name: todo-saga, static_configs: [{targets: ['$TODO_SAGA_METRICS_ADDR']}]}
YML
prometheus --config.file="$out/prometheus.yml" --storage.tsdb.path="$out/prometheus" \
  --web.listen-address=127.0.0.1:$prom_port --log.level=warn 2>"$out/prometheus.log" & pids+=($!)
for _ in $(seq 300); do $bin/cli/todoctl health >/dev/null 2>&1 && break; sleep 0.1; done

log "warming up (10 s, not charted)"
build/dev/bench/todo-loadgen --rpc create --clients 8 --seconds 10 --user-prefix chart-warm >/dev/null || true
sleep 5
t0=$(date +%s)
log "20 s of CreateTask at 8 clients, then 10 s of completions at 4"
build/dev/bench/todo-loadgen --rpc create --clients 8 --seconds 20 --user-prefix chart >"$out/create.json" || true
build/dev/bench/todo-loadgen --rpc complete --clients 4 --seconds 10 --user-prefix chart-done >"$out/complete.json" || true
sleep 10
t1=$(date +%s)

python3 - "$prom_port" "$t0" "$t1" "$out" <<'PY'
import json, sys, urllib.parse, urllib.request
port, t0, t1, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
queries = {
    "create_rate": 'sum(rate(grpc_server_handled_total{grpc_method="CreateTask",grpc_code="OK"}[3s]))',
    "create_p99_ms": '1000 * histogram_quantile(0.99, sum by (le) (rate(grpc_server_handling_seconds_bucket{grpc_method="CreateTask"}[3s])))',
    "outbox_rows": 'sum(todo_outbox_unpublished_rows{outbox="write.events"})',
    "projector_lag": 'sum(todo_consumer_lag_records{group="projection-task-read-v1"})',
    "sagas_completed": 'sum(rate(todo_saga_transitions_total{transition="completed"}[3s]))',
    "notifications_sent": 'sum(rate(todo_notifications_total{outcome="sent"}[3s]))',
}
series = {}
for name, q in queries.items():
    url = "http://127.0.0.1:%s/api/v1/query_range?%s" % (port, urllib.parse.urlencode(
        {"query": q, "start": t0, "end": t1, "step": "1"}))
    r = json.load(urllib.request.urlopen(url))["data"]["result"]
    series[name] = {int(float(t)): float(v) for t, v in (r[0]["values"] if r else [])}
with open(out + "/pipeline.dat", "w") as f:
    for t in range(t0, t1 + 1):
        row = [str(t - t0)] + [("%g" % series[n][t]) if t in series[n] and series[n][t] == series[n][t] else "NaN"
                               for n in queries]
        f.write(" ".join(row) + "\n")
PY
command -v gnuplot >/dev/null || { [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null 2>&1; } || true
gnuplot <<GP
set terminal pngcairo size 1200,800 noenhanced font ",10"
set output "$out/pipeline.png"
set multiplot layout 3,1 title "todo: the event pipeline from Prometheus, one real run ($(nproc) cores; 1 s scrapes)"
set grid
set xlabel "seconds"
set key top right
set ylabel "CreateTask/s"; set y2label "p99 ms"; set y2tics; set ytics nomirror
plot "$out/pipeline.dat" using 1:2 with lines lw 2 title "CreateTask OK/s", "" using 1:3 axes x1y2 with lines title "p99 latency (ms)"
unset y2tics; unset y2label
set ylabel "records"
plot "$out/pipeline.dat" using 1:4 with lines lw 2 title "outbox: unpublished rows", "" using 1:5 with lines lw 2 title "projector lag (records)"
set ylabel "per second"
plot "$out/pipeline.dat" using 1:6 with lines lw 2 title "sagas completed/s", "" using 1:7 with lines lw 2 title "notifications sent/s"
unset multiplot
GP
cp "$out/pipeline.png" docs/ops/pipeline.png
log "chart: docs/ops/pipeline.png (data: $out/pipeline.dat)"
