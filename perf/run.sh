#!/usr/bin/env bash
# The perf harness in one command (perf-method.md): fio and iperf3 limits, runnel (release) and
# Apache Kafka 4.1.1 (KRaft, from Maven Central) on the same workloads with runnel-load and
# Kafka's ProducerPerformance/ConsumerPerformance, side by side in one run.
#
#   perf/run.sh                 quick mode (a few minutes; for development)
#   perf/run.sh --mode full     the full sizes of perf/workloads/workloads.json
#   perf/run.sh --workloads produce-throughput,e2e-latency --brokers runnel,kafka
#   perf/run.sh --mode full --previous HEAD~3
#                               also runs a broker built from an earlier commit (perf-method.md's
#                               third baseline, for regressions), with this commit's runnel-load
#
# Writes perf/results/<date>-<workload>.json, <date>-perf-<mode>.{json,md} and PNG plots, and
# prints the Markdown table. Installs what it needs (fio, iperf3, a venv, the Kafka jars).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v fio >/dev/null || need+=(fio)
command -v iperf3 >/dev/null || need+=(iperf3)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} (apt)" >&2
    apt-get install -y "${need[@]}" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "${need[@]}" >/dev/null; }
fi
if [ ! -x .venv-perf/bin/python ] || ! cmp -s perf/requirements.txt .venv-perf/.requirements 2>/dev/null; then
    echo "creating .venv-perf" >&2
    python3 -m venv .venv-perf
    .venv-perf/bin/pip install --quiet --disable-pip-version-check -r perf/requirements.txt
    cp perf/requirements.txt .venv-perf/.requirements
fi
perf/kafka.sh fetch
cargo build --release -q -p runnel-bin --bin runnel --bin runnel-load

args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --previous)
            [ $# -ge 2 ] || { echo "--previous needs a commit" >&2; exit 2; }
            rev=$(git rev-parse --short "$2^{commit}") || { echo "unknown commit $2" >&2; exit 2; }
            tree=target/perf-previous/src
            # A worktree already at that commit is reused (cargo then has nothing to rebuild).
            if [ "$(git -C "$tree" rev-parse --short HEAD 2>/dev/null)" != "$rev" ]; then
                git worktree remove --force "$tree" >/dev/null 2>&1 || rm -rf "$tree"
                git worktree prune
                git worktree add --detach "$tree" "$rev" >/dev/null
            fi
            echo "building runnel at $rev (target/perf-previous)" >&2
            (cd "$tree" && CARGO_TARGET_DIR="$PWD/../target" cargo build --release -q -p runnel-bin --bin runnel)
            args+=(--previous-bin "$PWD/target/perf-previous/target/release/runnel" --previous-label "$rev")
            shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
exec .venv-perf/bin/python perf/harness.py "${args[@]}"
