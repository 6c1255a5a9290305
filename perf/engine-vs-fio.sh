#!/usr/bin/env bash
# The engine's append path against fio, same write pattern, same directory, same run
# (perf-method.md: on these noisy machines only a ratio measured side by side means something).
#
# Matrix: partitions {1,8} x batch {16 KiB, 256 KiB} x fsync {off,on}, 1 KiB records, release
# build. Each cell runs `runnel-load engine --fio` for $ROUNDS interleaved rounds (runnel, then fio
# at the batch size, then fio at runnel's observed bytes per group commit) and reports medians.
#
# Prints a Markdown table on stdout and writes it to perf/results/<date>-engine-append.md, with
# every round's figures in perf/results/<date>-engine-append.json and the full log in .log.
#
# Environment (all optional):
#   DIR            directory on the disk under test (default: target/perf-engine)
#   ROUNDS         interleaved rounds per cell (default 3)
#   NOFSYNC_BYTES  bytes per cell without fsync, over all partitions (default 512m)
#   FSYNC_BYTES    bytes per cell with fsync (default 256m)
#   MAX_SECONDS    cap on each runnel or fio phase, so a busy disk cannot stall the matrix (4)
#   CONCURRENCY    appends in flight per partition (default 8)
set -euo pipefail

cd "$(dirname "$0")/.."
DIR=${DIR:-$PWD/target/perf-engine}
ROUNDS=${ROUNDS:-3}
NOFSYNC_BYTES=${NOFSYNC_BYTES:-512m}
FSYNC_BYTES=${FSYNC_BYTES:-256m}
MAX_SECONDS=${MAX_SECONDS:-4}
CONCURRENCY=${CONCURRENCY:-8}

if ! command -v fio >/dev/null; then
    echo "installing fio" >&2
    apt-get update -qq >&2 && apt-get install -y -qq fio >&2
fi

cargo build --release -q -p runnel-bin --bin runnel-load
LOAD=$PWD/target/release/runnel-load

mkdir -p "$DIR" perf/results
stamp=$(date -u +%Y-%m-%d)
base=perf/results/$stamp-engine-append
cells=$(mktemp -d)
trap 'rm -rf "$cells"' EXIT
: >"$base.log"

# Targets from the issue: >= 0.85 of fio without fsync, >= 0.70 with group-committed fsync.
verdict() { # ratio target -> yes/no
    awk -v ratio="$1" -v target="$2" \
        'BEGIN { if (ratio == "-" || ratio == "(same)") print "-"; else if (ratio + 0 >= target + 0) print "yes"; else print "NO" }'
}

rows=()
cell=0
for partitions in 1 8; do
    for batch in 16k 256k; do
        for fsync in false true; do
            cell=$((cell + 1))
            if [[ $fsync == true ]]; then bytes=$FSYNC_BYTES target=0.70; else bytes=$NOFSYNC_BYTES target=0.85; fi
            echo "== cell $cell: partitions=$partitions batch=$batch fsync=$fsync bytes=$bytes" | tee -a "$base.log" >&2
            row=$("$LOAD" engine --dir "$DIR" --partitions "$partitions" --batch-bytes "$batch" \
                --record-bytes 1k --total-bytes "$bytes" --fsync "$fsync" \
                --concurrency "$CONCURRENCY" --fio --rounds "$ROUNDS" --max-seconds "$MAX_SECONDS" \
                --json "$cells/$cell.json" --markdown-row | tee -a "$base.log" | tail -n 1)
            # Columns: partitions batch fsync runnel p50 p99 fio ratio commit fio@commit ratio@commit
            IFS='|' read -r _ _ _ _ _ _ _ _ ratio _ _ ratio_commit _ <<<"$row"
            ratio=$(echo "$ratio" | xargs) ratio_commit=$(echo "$ratio_commit" | xargs)
            rows+=("$row $target | $(verdict "$ratio" "$target") | $(verdict "$ratio_commit" "$target") |")
        done
    done
done

{
    echo "# Engine append vs fio ($stamp)"
    echo
    echo "Command: \`perf/engine-vs-fio.sh\` (ROUNDS=$ROUNDS NOFSYNC_BYTES=$NOFSYNC_BYTES" \
        "FSYNC_BYTES=$FSYNC_BYTES MAX_SECONDS=$MAX_SECONDS CONCURRENCY=$CONCURRENCY)."
    echo "Commit $(git rev-parse --short HEAD) (engine/ $(git diff --quiet HEAD -- engine && echo unmodified || echo 'with local changes'))," \
        "$(uname -r), $(nproc) CPUs, $(fio --version), dir $DIR on" \
        "$(df --output=fstype "$DIR" | tail -n 1 | xargs)."
    echo
    echo "runnel: \`runnel-load engine\`, one unpinned shard, $CONCURRENCY appends in flight per partition," \
        "1 KiB records in batches of exactly the given size; fsync on = FlushPolicy::EveryCommit" \
        "(ack after fdatasync), off = FlushPolicy::Never. fio: one job and file per partition," \
        "sequential write, io_uring, direct=1, iodepth=1, fdatasync=1 when fsync is on; first at" \
        "bs = batch size, then at bs = runnel's measured bytes per group commit (per fdatasync with" \
        "fsync on, per write with it off; rounded to 4 KiB). MB/s = 10^6 B/s of" \
        "batch bytes; latencies are runnel append latencies (HdrHistogram, us). Medians of" \
        "$ROUNDS interleaved rounds; a ratio is the median of each round's runnel/fio."
    echo
    echo "| partitions | batch KiB | fsync | runnel MB/s | append p50 us | append p99 us | fio MB/s (bs=batch) | runnel/fio | commit KiB | fio MB/s (bs=commit) | runnel/fio@commit | target | met (bs=batch) | met (bs=commit) |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
} | tee "$base.md"

{
    echo "{\"workload\": \"engine-append\", \"date\": \"$stamp\", \"cells\": ["
    first=1
    for index in $(seq 1 "$cell"); do
        [[ $first == 1 ]] || echo ","
        first=0
        cat "$cells/$index.json"
    done
    echo "]}"
} >"$base.json"
echo "wrote $base.md, $base.json, $base.log" >&2
