#!/usr/bin/env bash
# Apache Kafka 4.x, the baseline broker of the perf harness (perf-method.md): single-node KRaft
# (combined broker + controller), run with `java -cp` from jars fetched from Maven Central, with
# the JVM flags of Kafka's own kafka-server-start.sh (1 GiB heap, G1).
#
#   perf/kafka.sh fetch                 fetch the jars into .tools/kafka-broker (idempotent)
#   perf/kafka.sh start DATA_DIR PORT   format DATA_DIR (wiped) and start; waits until ready;
#                                       prints the broker's pid; log in DATA_DIR.log
#   perf/kafka.sh restart DATA_DIR      start again on DATA_DIR's data (no format); prints the pid
#   perf/kafka.sh stop PID              SIGTERM, wait (then SIGKILL after 60 s)
#   perf/kafka.sh run CLASS ARGS...     run a tool class (ProducerPerformance, ...) on the jars
#
# Kafka's defaults are kept except what a single node needs (replication factors 1) and
# group.initial.rebalance.delay.ms=0 (as runnel, so group workloads start at once). Kafka does not
# fsync by default (it relies on replication); the harness says so next to every figure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
jars=$root/.tools/kafka-broker
pom=$root/perf/kafka/pom.xml
JAVA_OPTS=${KAFKA_JAVA_OPTS:--Xmx1G -Xms1G -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true}

fetch() {
    if [ -f "$jars/.pom" ] && cmp -s "$pom" "$jars/.pom"; then
        return 0
    fi
    if ! command -v mvn >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
        echo "installing maven and a JDK (apt)" >&2
        apt-get install -y maven >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y maven >/dev/null; }
    fi
    echo "fetching the Apache Kafka broker jars (maven) into $jars" >&2
    rm -rf "$jars.tmp"
    mkdir -p "$(dirname "$jars")"
    local log
    log=$(mktemp)
    if ! mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$jars.tmp" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
    cp "$pom" "$jars.tmp/.pom"
    rm -rf "$jars"
    mv "$jars.tmp" "$jars"
}

run() {
    fetch
    local class=$1
    shift
    # shellcheck disable=SC2086
    exec java $JAVA_OPTS -cp "$jars/*" "$class" "$@"
}

start() {
    fetch
    local dir=$1 port=$2
    local controller=$((port + 1))
    rm -rf "$dir"
    mkdir -p "$dir"
    local props=$dir/server.properties
    cat >"$props" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
    local cluster
    cluster=$(java -cp "$jars/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)
    java -cp "$jars/*" kafka.tools.StorageTool format -t "$cluster" -c "$props" >"$dir.log" 2>&1
    launch "$dir"
}

# Starts the broker on DATA_DIR's existing config and data (after `start`, e.g. after a kill -9),
# waits until it logs that it started, and prints its pid.
launch() {
    local dir=$1
    local props=$dir/server.properties
    local before
    before=$(grep -c "Kafka Server started" "$dir.log" 2>/dev/null || true)
    # shellcheck disable=SC2086
    setsid java $JAVA_OPTS -cp "$jars/*" kafka.Kafka "$props" >>"$dir.log" 2>&1 </dev/null &
    local pid=$!
    local deadline=$((SECONDS + 900))
    until [ "$(grep -c "Kafka Server started" "$dir.log" 2>/dev/null || true)" -gt "${before:-0}" ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "kafka exited during start; see $dir.log" >&2
            tail -20 "$dir.log" >&2
            return 1
        fi
        if [ $SECONDS -ge $deadline ]; then
            echo "kafka not ready after 900 s; see $dir.log" >&2
            kill -9 "$pid" 2>/dev/null || true
            return 1
        fi
        sleep 0.5
    done
    echo "$pid"
}

stop() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    local deadline=$((SECONDS + 60))
    while kill -0 "$pid" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then
            kill -9 "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
}

cmd=${1:-}
shift || true
case "$cmd" in
fetch) fetch ;;
start) start "$@" ;;
restart) launch "$@" ;;
stop) stop "$@" ;;
run) run "$@" ;;
*)
    sed -n '2,18p' "$0" >&2
    exit 2
    ;;
esac
