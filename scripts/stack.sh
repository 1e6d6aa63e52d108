#!/usr/bin/env bash
# Starts, stops and describes a local stack: PostgreSQL, Redis and a
# single-node Apache Kafka (KRaft), each its own process on a loopback port,
# all state under $TODO_STACK_ROOT/<name>.
#
#   scripts/stack.sh start [name]   start what is not running (default name: dev)
#   scripts/stack.sh stop  [name]   stop everything of that stack
#   scripts/stack.sh env   [name]   print the stack's settings as shell exports
#   scripts/stack.sh status [name]
#   scripts/stack.sh wipe  [name]   stop and delete the stack's data
#   scripts/stack.sh kafka-stop|kafka-start [name] [node]   only the broker(s) (outage tests)
#   scripts/stack.sh kafka-kill [name] node   SIGKILL one broker (crash tests)
#   scripts/stack.sh kafka-leader [name] topic   the node leading most of topic's partitions
#
# The dev stack uses fixed ports (overridable, see docs/OPERATIONS.md); any
# other stack picks free ports on its first start and keeps them. Two stacks
# run side by side. Starting a stack twice reuses what is already running.
#
# The stack named "secure" (or any stack first started with
# TODO_STACK_MAKE_SECURE=1) protects every hop as production would: Kafka's only
# client listener is SASL_SSL (SCRAM-SHA-512 users made at format time,
# a PEM keystore of the stack's CA), PostgreSQL refuses connections without
# TLS and its URLs ask for sslmode=verify-full, and Redis wants a password
# (the services reach it over TLS; TODO_STACK_REDIS_PLAIN_URL is for tools).
# The passwords are made at first start and kept in the stack's stack.env.
#
# The stack named "cluster" (or any stack first started with
# TODO_STACK_KAFKA_NODES=3) runs three Kafka nodes, each broker and
# controller of one KRaft quorum, with the production topic profile
# (replication 3, min.insync.replicas 2; `stack.sh env` exports
# TODO_TOPIC_PROFILE=production), and a PostgreSQL streaming replica (or any
# stack first started with TODO_STACK_PG_REPLICA=1) that applies WAL
# TODO_STACK_REPLICA_DELAY_MS (300) late: the scale-out tests' cluster
# (docs/SCALING.md). Node 1 keeps its state in kafka/, node N in kafka-N/.
source "$(dirname "$0")/lib.sh"

cmd=${1:-status}
name=${2:-dev}
[[ "$name" =~ ^[a-z0-9_-]+$ ]] || die "stack name '$name' must be lowercase letters, digits, - or _"
dir="$TODO_STACK_ROOT/$name"
envf="$dir/stack.env"

# The stack's settings (stack.env), and the Kafka version it was made with
# (TODO_KAFKA_VERSION at its first start: its data is that version's).
load_env() {
  # shellcheck disable=SC1090
  source "$envf"
  KAFKA_LIBS="$TODO_CACHE/kafka-$KAFKA_VERSION/libs"
}

# The Prometheus endpoints of the four services (a stack file written before
# they existed gets them added).
choose_metrics_ports() {
  [ -n "${COMMAND_METRICS_PORT:-}" ] && return
  if [ "$name" = dev ]; then
    COMMAND_METRICS_PORT=${TODO_DEV_COMMAND_METRICS_PORT:-9464}
    QUERY_METRICS_PORT=${TODO_DEV_QUERY_METRICS_PORT:-9465}
    PROJECTOR_METRICS_PORT=${TODO_DEV_PROJECTOR_METRICS_PORT:-9466}
    SAGA_METRICS_PORT=${TODO_DEV_SAGA_METRICS_PORT:-9467}
  else
    COMMAND_METRICS_PORT=$(free_port); QUERY_METRICS_PORT=$(free_port)
    PROJECTOR_METRICS_PORT=$(free_port); SAGA_METRICS_PORT=$(free_port)
  fi
  mkdir -p "$dir"
  cat >> "$envf" <<ENV
COMMAND_METRICS_PORT=$COMMAND_METRICS_PORT
QUERY_METRICS_PORT=$QUERY_METRICS_PORT
PROJECTOR_METRICS_PORT=$PROJECTOR_METRICS_PORT
SAGA_METRICS_PORT=$SAGA_METRICS_PORT
ENV
}

choose_ports() {
  if [ -f "$envf" ]; then
    load_env
    choose_metrics_ports
    return
  fi
  if [ "$name" = dev ]; then
    PG_PORT=${TODO_DEV_PG_PORT:-54329}
    REDIS_PORT=${TODO_DEV_REDIS_PORT:-63799}
    KAFKA_PORT=${TODO_DEV_KAFKA_PORT:-19092}
    KAFKA_CTL_PORT=${TODO_DEV_KAFKA_CTL_PORT:-19093}
    COMMAND_PORT=${TODO_DEV_COMMAND_PORT:-50051}
    QUERY_PORT=${TODO_DEV_QUERY_PORT:-50052}
  else
    PG_PORT=$(free_port); REDIS_PORT=$(free_port)
    KAFKA_PORT=$(free_port); KAFKA_CTL_PORT=$(free_port)
    COMMAND_PORT=$(free_port); QUERY_PORT=$(free_port)
  fi
  # (Not TODO_STACK_SECURE: `stack.sh env secure` exports that one, and a
  # shell holding it must not make every stack it starts next secure.)
  SECURE=0
  [ "$name" = secure ] || [ "${TODO_STACK_MAKE_SECURE:-0}" = 1 ] && SECURE=1
  PG_REPLICA=0
  [ "$name" = cluster ] && PG_REPLICA=1
  PG_REPLICA=${TODO_STACK_PG_REPLICA:-$PG_REPLICA}
  REPLICA_DELAY_MS=${TODO_STACK_REPLICA_DELAY_MS:-300}
  KAFKA_NODES=1
  [ "$name" = cluster ] && KAFKA_NODES=3
  KAFKA_NODES=${TODO_STACK_KAFKA_NODES:-$KAFKA_NODES}
  [[ "$KAFKA_NODES" =~ ^[13]$ ]] || die "TODO_STACK_KAFKA_NODES must be 1 or 3, got '$KAFKA_NODES'"
  local more_ports=""
  for n in $(seq 2 "$KAFKA_NODES"); do
    more_ports+="KAFKA_PORT_$n=$(free_port)"$'\n'"KAFKA_CTL_PORT_$n=$(free_port)"$'\n'
  done
  mkdir -p "$dir"
  KAFKA_PASSWORD=$(openssl rand -hex 16); KAFKA_ADMIN_PASSWORD=$(openssl rand -hex 16)
  REDIS_PASSWORD=$(openssl rand -hex 16); REDIS_TLS_PORT=$(free_port)
  (umask 077; : > "$envf")
  cat > "$envf" <<ENV
SECURE=$SECURE
PG_REPLICA=$PG_REPLICA
PG_REPLICA_PORT=$(free_port)
REPLICA_DELAY_MS=$REPLICA_DELAY_MS
KAFKA_VERSION=$KAFKA_VERSION
KAFKA_NODES=$KAFKA_NODES
${more_ports}KAFKA_PASSWORD=$KAFKA_PASSWORD
KAFKA_ADMIN_PASSWORD=$KAFKA_ADMIN_PASSWORD
REDIS_PASSWORD=$REDIS_PASSWORD
PG_PORT=$PG_PORT
REDIS_PORT=$REDIS_PORT
REDIS_TLS_PORT=$REDIS_TLS_PORT
KAFKA_PORT=$KAFKA_PORT
KAFKA_CTL_PORT=$KAFKA_CTL_PORT
COMMAND_PORT=$COMMAND_PORT
QUERY_PORT=$QUERY_PORT
ENV
  load_env
  choose_metrics_ports
}

# The secure stack's client settings (SECURE=1): Kafka over SASL_SSL, and
# PostgreSQL's URL parameters.
kafka_client_config() {
  echo "security.protocol=SASL_SSL;sasl.mechanisms=SCRAM-SHA-512;sasl.username=todo;sasl.password=$KAFKA_PASSWORD;ssl.ca.location=$dir/certs/ca.pem"
}

print_env() {
  local pgq="" redis_url="redis://127.0.0.1:$REDIS_PORT"
  if [ "${SECURE:-0}" = 1 ]; then
    pgq="?sslmode=verify-full&sslrootcert=$dir/certs/ca.pem"
    # The services over TLS; tools such as redis-cli on the password-only port.
    redis_url="rediss://default:$REDIS_PASSWORD@127.0.0.1:$REDIS_TLS_PORT?ca=$dir/certs/ca.pem"
  fi
  cat <<ENV
export TODO_STACK=$name
export TODO_ENV=local
export TODO_PG_URL='postgresql://postgres@127.0.0.1:$PG_PORT/todo$pgq'
export TODO_COMMAND_PG_URL='postgresql://todo_command@127.0.0.1:$PG_PORT/todo$pgq'
export TODO_QUERY_PG_URL='postgresql://todo_query@127.0.0.1:$PG_PORT/todo$pgq'
export TODO_PROJECTOR_PG_URL='postgresql://todo_projector@127.0.0.1:$PG_PORT/todo$pgq'
export TODO_SAGA_PG_URL='postgresql://todo_saga@127.0.0.1:$PG_PORT/todo$pgq'
export TODO_REDIS_URL='$redis_url'
export TODO_KAFKA_BROKERS=$(bootstrap)
export TODO_STACK_KAFKA_NODES=${KAFKA_NODES:-1}
export TODO_TOPIC_PROFILE=$([ "${KAFKA_NODES:-1}" -ge 3 ] && echo production || echo dev)
export TODO_COMMAND_ADDR=127.0.0.1:$COMMAND_PORT
export TODO_QUERY_ADDR=127.0.0.1:$QUERY_PORT
export TODO_COMMAND_METRICS_ADDR=127.0.0.1:$COMMAND_METRICS_PORT
export TODO_QUERY_METRICS_ADDR=127.0.0.1:$QUERY_METRICS_PORT
export TODO_PROJECTOR_METRICS_ADDR=127.0.0.1:$PROJECTOR_METRICS_PORT
export TODO_SAGA_METRICS_ADDR=127.0.0.1:$SAGA_METRICS_PORT
export TODO_STACK_DIR=$dir
ENV
  if [ "${PG_REPLICA:-0}" = 1 ]; then
    echo "export TODO_STACK_PG_REPLICA_URL='postgresql://todo_query@127.0.0.1:$PG_REPLICA_PORT/todo$pgq'"
  else
    echo "unset TODO_STACK_PG_REPLICA_URL"
  fi
  if [ "${SECURE:-0}" = 1 ]; then
    echo "export TODO_KAFKA_CONFIG='$(kafka_client_config)'"
    echo "export TODO_STACK_SECURE=1"
    echo "export TODO_STACK_REDIS_PLAIN_URL='redis://default:$REDIS_PASSWORD@127.0.0.1:$REDIS_PORT'"
  else
    echo "unset TODO_KAFKA_CONFIG TODO_STACK_SECURE TODO_STACK_REDIS_PLAIN_URL"
  fi
}

pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres; }

start_pg() {
  local data="$dir/pg/data" logf="$dir/pg/postgres.log"
  if pg_ready; then log "PostgreSQL already answers on $PG_PORT"; return; fi
  mkdir -p "$dir/pg"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir/pg"
  if [ ! -f "$data/PG_VERSION" ]; then
    as_postgres "$PG_BIN/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$dir/pg/initdb.log" 2>&1 \
      || { tail -n 20 "$dir/pg/initdb.log" >&2; die "initdb failed"; }
  fi
  # TLS with a certificate of the stack's own CA (clients may ask for
  # sslmode=verify-full with sslrootcert=$dir/certs/ca.pem; docs/SECURITY.md).
  # (made again when missing or due to expire within a day: they last 30 days).
  { openssl x509 -checkend 86400 -noout -in "$dir/certs/server.pem" >/dev/null 2>&1 && [ -f "$dir/certs/jwt-rs256.pub" ]; } \
    || bash "$TODO_REPO/scripts/make-certs.sh" "$dir/certs" >/dev/null
  if [ "${SECURE:-0}" = 1 ]; then # TLS or nothing over TCP
    printf 'local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all all reject\n' >"$data/pg_hba.conf"
    [ "$(id -u)" = 0 ] && chown postgres: "$data/pg_hba.conf"
  fi
  install -m 600 "$dir/certs/server.key" "$dir/pg/server.key"
  install -m 644 "$dir/certs/server.pem" "$dir/pg/server.pem"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir/pg/server.key" "$dir/pg/server.pem"
  as_postgres "$PG_BIN/pg_ctl" -D "$data" -l "$logf" -w -t 60 start \
    -o "-p $PG_PORT -k $dir/pg -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=128MB -c ssl=on -c ssl_cert_file=$dir/pg/server.pem -c ssl_key_file=$dir/pg/server.key" >/dev/null \
    || { tail -n 30 "$logf" >&2; die "PostgreSQL did not start"; }
  wait_for 60 PostgreSQL "$logf" pg_ready
  if ! "$PG_BIN/../bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atqc "select 1 from pg_database where datname='todo'" postgres | grep -q 1; then
    "$PG_BIN/../bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "create database todo" postgres
  fi
  log "PostgreSQL on 127.0.0.1:$PG_PORT"
}

replica_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_REPLICA_PORT" -U postgres; }

# The streaming replica of a stack made with one (PG_REPLICA=1): a
# pg_basebackup of the primary, in hot standby, applying what it receives
# REPLICA_DELAY_MS late (recovery_min_apply_delay: a replica that lags on
# purpose, for the read-your-writes tests).
start_pg_replica() {
  [ "${PG_REPLICA:-0}" = 1 ] || return 0
  local rd="$dir/pg-replica" data="$dir/pg-replica/data" logf="$dir/pg-replica/postgres.log"
  if replica_ready; then log "PostgreSQL replica already answers on $PG_REPLICA_PORT"; return; fi
  mkdir -p "$rd"
  [ "$(id -u)" = 0 ] && chown postgres: "$rd"
  if [ ! -f "$data/PG_VERSION" ]; then
    as_postgres "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" -U postgres -D "$data" -R -X stream -c fast \
      >"$rd/basebackup.log" 2>&1 || { tail -n 20 "$rd/basebackup.log" >&2; die "pg_basebackup failed"; }
  fi
  as_postgres "$PG_BIN/pg_ctl" -D "$data" -l "$logf" -w -t 60 start \
    -o "-p $PG_REPLICA_PORT -k $rd -c listen_addresses=127.0.0.1 -c max_connections=200 -c hot_standby=on -c recovery_min_apply_delay=${REPLICA_DELAY_MS}ms -c ssl=on -c ssl_cert_file=$dir/pg/server.pem -c ssl_key_file=$dir/pg/server.key" >/dev/null \
    || { tail -n 30 "$logf" >&2; die "the PostgreSQL replica did not start"; }
  wait_for 60 "PostgreSQL replica" "$logf" replica_ready
  log "PostgreSQL replica on 127.0.0.1:$PG_REPLICA_PORT (applies ${REPLICA_DELAY_MS} ms late)"
}

redis_ready() {
  local auth=()
  [ "${SECURE:-0}" = 1 ] && auth=(--pass "$REDIS_PASSWORD" --no-auth-warning)
  [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "${auth[@]}" ping 2>/dev/null)" = PONG ]
}

start_redis() {
  if redis_ready; then log "Redis already answers on $REDIS_PORT"; return; fi
  mkdir -p "$dir/redis"
  local auth=()
  [ "${SECURE:-0}" = 1 ] && auth=(--requirepass "$REDIS_PASSWORD" --tls-port "$REDIS_TLS_PORT"
                                  --tls-cert-file "$dir/certs/server.pem" --tls-key-file "$dir/certs/server.key"
                                  --tls-ca-cert-file "$dir/certs/ca.pem" --tls-auth-clients no)
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes \
    --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log" --dir "$dir/redis" \
    --save "" --appendonly no "${auth[@]}" >/dev/null
  wait_for 30 Redis "$dir/redis/redis.log" redis_ready
  log "Redis on 127.0.0.1:$REDIS_PORT"
}

# Node N's client port, controller port and folder (node 1: the stack's
# first broker, kafka/).
node_port() { if [ "$1" = 1 ]; then echo "$KAFKA_PORT"; else local v="KAFKA_PORT_$1"; echo "${!v}"; fi; }
node_ctl_port() { if [ "$1" = 1 ]; then echo "$KAFKA_CTL_PORT"; else local v="KAFKA_CTL_PORT_$1"; echo "${!v}"; fi; }
node_dir() { if [ "$1" = 1 ]; then echo "$dir/kafka"; else echo "$dir/kafka-$1"; fi; }
nodes() { seq 1 "${KAFKA_NODES:-1}"; }
bootstrap() {
  local b="" n
  for n in $(nodes); do b+="${b:+,}127.0.0.1:$(node_port "$n")"; done
  echo "$b"
}

kcat_security() {
  if [ "${SECURE:-0}" = 1 ]; then
    printf '%s\n' -X security.protocol=SASL_SSL -X sasl.mechanisms=SCRAM-SHA-512 -X sasl.username=todo \
      -X "sasl.password=$KAFKA_PASSWORD" -X "ssl.ca.location=$dir/certs/ca.pem"
  fi
}

# kafka_ready [node]: that node answers metadata requests (without a node:
# every node does, and they all see each other).
kafka_ready() {
  local sec=() n
  mapfile -t sec < <(kcat_security)
  if [ $# -gt 0 ]; then
    kcat -b "127.0.0.1:$(node_port "$1")" "${sec[@]}" -L -m 2 >/dev/null 2>&1
    return
  fi
  for n in $(nodes); do
    [ "$(kcat -b "127.0.0.1:$(node_port "$n")" "${sec[@]}" -L -m 2 2>/dev/null | grep -c '^  broker ')" -ge "${KAFKA_NODES:-1}" ] || return 1
  done
}

# The broker's listeners (node $1): PLAINTEXT, or SASL_SSL on a secure
# stack (the controller listener stays PLAINTEXT on loopback: the brokers' own).
kafka_listeners() {
  local port ctl; port=$(node_port "$1"); ctl=$(node_ctl_port "$1")
  if [ "${SECURE:-0}" != 1 ]; then
    cat <<PROPS
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$ctl
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
PROPS
    return
  fi
  cat <<PROPS
listeners=SASL_SSL://127.0.0.1:$port,CONTROLLER://127.0.0.1:$ctl
advertised.listeners=SASL_SSL://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$KAFKA_ADMIN_PASSWORD";
ssl.keystore.type=PEM
ssl.keystore.location=$(node_dir "$1")/keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$dir/certs/ca.pem
PROPS
}

# What a cluster of KAFKA_NODES nodes replicates its own topics with.
kafka_replication() {
  local rf=${KAFKA_NODES:-1} isr=1
  [ "$rf" -ge 3 ] && isr=2
  cat <<PROPS
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
default.replication.factor=$rf
min.insync.replicas=$isr
PROPS
}

# Writes node $1's configuration and formats its storage (once, with the
# cluster's id $2); prints the java command line's options.
kafka_node_prepare() {
  local node=$1 uuid=$2 kd voters="" n
  kd=$(node_dir "$node")
  mkdir -p "$kd/data"
  for n in $(nodes); do voters+="${voters:+,}$n@127.0.0.1:$(node_ctl_port "$n")"; done
  local scram=()
  if [ "${SECURE:-0}" = 1 ]; then
    (umask 077; cat "$dir/certs/server.key" "$dir/certs/server.pem" > "$kd/keystore.pem")
    scram=(--add-scram "SCRAM-SHA-512=[name=admin,password=$KAFKA_ADMIN_PASSWORD]"
           --add-scram "SCRAM-SHA-512=[name=todo,password=$KAFKA_PASSWORD]")
  fi
  (umask 077; : > "$kd/server.properties") # it may hold the admin's password
  cat > "$kd/server.properties" <<PROPS
process.roles=broker,controller
node.id=$node
controller.quorum.voters=$voters
$(kafka_listeners "$node")
log.dirs=$kd/data
num.partitions=3
$(kafka_replication)
offsets.topic.num.partitions=10
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=-1
PROPS
  cat > "$kd/log4j.properties" <<PROPS
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$kd/server.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
PROPS
  if [ ! -f "$kd/data/meta.properties" ]; then
    java -Xmx256m -cp "$KAFKA_LIBS/*" "-Dlog4j.configuration=file:$kd/log4j.properties" kafka.tools.StorageTool format \
      --cluster-id="$uuid" -c "$kd/server.properties" "${scram[@]}" >"$kd/format.log" 2>&1 \
      || { cat "$kd/format.log" >&2; die "Kafka storage format of node $node failed"; }
  fi
}

kafka_node_launch() {
  local node=$1 kd; kd=$(node_dir "$node")
  if pid_alive "$kd/kafka.pid"; then return; fi
  local heap=512m
  [ "${KAFKA_NODES:-1}" -gt 1 ] && heap=384m
  nohup java -Xms256m "-Xmx$heap" -XX:+UseG1GC -Djava.awt.headless=true \
    "-Dlog4j.configuration=file:$kd/log4j.properties" -cp "$KAFKA_LIBS/*" kafka.Kafka "$kd/server.properties" \
    >"$kd/stdout.log" 2>&1 </dev/null &
  echo $! > "$kd/kafka.pid"
}

# start_kafka [node]: every node (or that one) that is not running.
start_kafka() {
  local n list
  if [ $# -gt 0 ]; then list=$1; else list=$(nodes); fi
  if [ $# -eq 0 ] && kafka_ready; then
    [ "${KAFKA_NODES:-1}" -gt 1 ] && { wait_for 180 "in-sync replicas" "$dir/kafka/server.log" kafka_in_sync || exit 1; }
    log "Kafka already answers on $(bootstrap)"; return
  fi
  [ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ] || die "Kafka jars missing in $KAFKA_LIBS: run scripts/install-deps.sh"
  local uuid # base64url: it may start with "-", hence --cluster-id=VALUE, never "-t VALUE"
  uuid=$(python3 -c 'import uuid,base64; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')
  for n in $list; do kafka_node_prepare "$n" "$uuid"; done
  for n in $list; do kafka_node_launch "$n"; done
  for n in $list; do
    wait_for 120 "Kafka node $n" "$(node_dir "$n")/server.log" kafka_ready "$n" \
      || { tail -n 20 "$(node_dir "$n")/stdout.log" >&2; exit 1; }
  done
  [ $# -gt 0 ] || wait_for 120 "the Kafka cluster" "$dir/kafka/server.log" kafka_ready || exit 1
  # A node that comes back is in service once it caught up: a rolling
  # restart must not take the next node down before.
  [ "${KAFKA_NODES:-1}" -gt 1 ] && { wait_for 180 "in-sync replicas" "$(node_dir "${1:-1}")/server.log" kafka_in_sync || exit 1; }
  log "Kafka $KAFKA_VERSION on $(bootstrap)$([ $# -gt 0 ] && echo " (node $1)")$([ "${SECURE:-0}" = 1 ] && echo ' (SASL_SSL, SCRAM-SHA-512)')"
}

# stop_kafka [node] [signal]: SIGTERM (a clean shutdown, SIGKILL after 30 s),
# or the signal given.
stop_kafka() {
  local n list sig=${2:-TERM}
  if [ $# -gt 0 ] && [ -n "$1" ]; then list=$1; else list=$(nodes); fi
  for n in $list; do
    local pf; pf="$(node_dir "$n")/kafka.pid"
    [ -f "$pf" ] || continue
    local pid; pid=$(cat "$pf")
    if kill "-$sig" "$pid" 2>/dev/null; then
      for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pf"
  done
}

# Every partition of every topic (none: nothing to wait for) has a leader, and each of its replicas on
# a node that runs is in sync, as seen by every node that runs.
kafka_in_sync() {
  local sec=() n live=""
  mapfile -t sec < <(kcat_security)
  for n in $(nodes); do pid_alive "$(node_dir "$n")/kafka.pid" && live+="$n,"; done
  for n in $(nodes); do
    pid_alive "$(node_dir "$n")/kafka.pid" || continue
    kcat -b "127.0.0.1:$(node_port "$n")" "${sec[@]}" -L -m 5 2>/dev/null | awk -v live=",$live" '
      /^ *partition / { seen++
        if ($0 ~ /leader -1/) bad++
        r = $0; sub(/.*replicas: /, "", r); sub(/, isrs:.*/, "", r)
        i = $0; sub(/.*isrs: /, "", i); sub(/,? *$/, "", i)
        nr = split(r, a, ","); i = "," i ","
        for (k = 1; k <= nr; k++) if (index(live, "," a[k] ",") && !index(i, "," a[k] ",")) bad++ }
      END { exit bad == 0 ? 0 : 1 }' || return 1
  done
}

# The node that leads most partitions of topic $1.
kafka_leader() {
  local sec=()
  mapfile -t sec < <(kcat_security)
  kcat -b "$(bootstrap)" "${sec[@]}" -L -t "$1" 2>/dev/null \
    | awk '/partition .*leader/ { for (i = 1; i <= NF; i++) if ($i == "leader") c[$(i+1)+0]++ }
           END { best = ""; for (k in c) if (best == "" || c[k] > c[best]) best = k; print best }' | tr -d ','
}

stop_all() {
  stop_kafka
  if [ -f "$dir/redis/redis.pid" ]; then
    kill "$(cat "$dir/redis/redis.pid")" 2>/dev/null || true
    rm -f "$dir/redis/redis.pid"
  fi
  if [ -f "$dir/pg-replica/data/postmaster.pid" ]; then
    as_postgres "$PG_BIN/pg_ctl" -D "$dir/pg-replica/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  if [ -f "$dir/pg/data/postmaster.pid" ]; then
    as_postgres "$PG_BIN/pg_ctl" -D "$dir/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  log "stack '$name' stopped"
}

case "$cmd" in
  start)
    choose_ports
    t0=$(date +%s.%N)
    start_pg; start_pg_replica; start_redis; start_kafka
    log "stack '$name' up in $(python3 -c "print(round($(date +%s.%N)-$t0,1))")s; settings: scripts/stack.sh env $name"
    ;;
  stop) [ -f "$envf" ] && load_env; stop_all ;;
  kafka-stop) load_env; stop_kafka "${3:-}"; log "Kafka of stack '$name' stopped${3:+ (node $3)}" ;;
  kafka-kill) load_env; [ -n "${3:-}" ] || die "kafka-kill needs a node"; stop_kafka "$3" KILL; log "Kafka node $3 of stack '$name' killed" ;;
  kafka-start) load_env; if [ -n "${3:-}" ]; then start_kafka "$3"; else start_kafka; fi ;;
  kafka-leader) load_env; kafka_leader "${3:?kafka-leader needs a topic}" ;;
  wipe) [ -f "$envf" ] && { load_env; stop_all; }; rm -rf "$dir" ;;
  env) choose_ports; print_env ;;
  status)
    [ -f "$envf" ] || { echo "stack '$name': never started"; exit 0; }
    load_env
    pg_ready && echo "postgres  up   127.0.0.1:$PG_PORT" || echo "postgres  down 127.0.0.1:$PG_PORT"
    if [ "${PG_REPLICA:-0}" = 1 ]; then
      replica_ready && echo "replica   up   127.0.0.1:$PG_REPLICA_PORT" || echo "replica   down 127.0.0.1:$PG_REPLICA_PORT"
    fi
    redis_ready && echo "redis     up   127.0.0.1:$REDIS_PORT" || echo "redis     down 127.0.0.1:$REDIS_PORT"
    for n in $(nodes); do
      kafka_ready "$n" && echo "kafka-$n   up   127.0.0.1:$(node_port "$n")" || echo "kafka-$n   down 127.0.0.1:$(node_port "$n")"
    done
    ;;
  *) die "unknown command '$cmd' (start, stop, env, status, wipe)" ;;
esac
