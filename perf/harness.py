#!/usr/bin/env python3
"""The perf harness (perf-method.md): in one run on this machine, measure the hardware limits
(fio for the disk, iperf3 for loopback), runnel, and Apache Kafka 4.x on the same workloads with
the same clients, and write figures, baselines and ratios.

Run it through perf/run.sh (it builds the release binaries and prepares the venv and the Kafka
jars). Every broker is started fresh for each workload, on a data directory on the disk under
test, and stopped afterwards; its CPU seconds and peak RSS are read from /proc.

Durability: runnel runs twice where it matters, with its default (fdatasync before acks=all
answers, `fsync`) and with Kafka's default (`log.flush.interval.messages` = Long.MAX_VALUE, no
fsync: `nofsync`). Kafka runs with its default (no fsync). Every figure names its setting.

Clients: runnel-load drives both brokers; Kafka's own ProducerPerformance / ConsumerPerformance
drive both too where they fit the workload (they have no keyed mode and no fixed-rate tailing
consumer, so many-partitions and e2e-latency use runnel-load only).
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNEL = os.path.join(ROOT, "target", "release", "runnel")
LOAD = os.path.join(ROOT, "target", "release", "runnel-load")
KAFKA_SH = os.path.join(ROOT, "perf", "kafka.sh")
WORKLOADS = os.path.join(ROOT, "perf", "workloads", "workloads.json")
READY = re.compile(r"runnel ready: listening on (\S+):(\d+)")
CLK_TCK = os.sysconf("SC_CLK_TCK")
MB = 1e6
GB = 1e9
LONG_MAX = 9223372036854775807


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def disk_note(path):
    """The block device under `path` and its readahead (it changes how mmap'd index files and
    cold reads behave, e.g. Kafka's sparse index files fault in read_ahead_kb at a time)."""
    try:
        device = os.stat(path).st_dev
        sysfs = os.path.realpath(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}")
        queue = os.path.join(sysfs, "queue")
        if not os.path.isdir(queue):
            queue = os.path.join(os.path.dirname(sysfs), "queue")
        with open(os.path.join(queue, "read_ahead_kb")) as handle:
            readahead = handle.read().strip()
        return f"disk {os.path.basename(os.path.dirname(queue))} read_ahead_kb={readahead}"
    except OSError:
        return "disk unknown"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- process figures


class ProcStats:
    """CPU seconds (user + system, children excluded) and peak RSS of one process."""

    def __init__(self, pid):
        self.pid = pid

    def cpu_seconds(self):
        try:
            with open(f"/proc/{self.pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            # Fields 14 and 15 (utime, stime) of proc(5), counted from after the comm field.
            return (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError, ValueError):
            return None

    def peak_rss_bytes(self):
        try:
            with open(f"/proc/{self.pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None


# ---------------------------------------------------------------- brokers


class Runnel:
    name = "runnel"

    def __init__(self, data_dir, setting, binary=RUNNEL):
        self.data_dir = data_dir
        self.setting = setting
        self.binary = binary
        self.proc = None
        self.port = free_port()

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self, wipe=True):
        if wipe:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        os.makedirs(self.data_dir, exist_ok=True)
        config = os.path.join(os.path.dirname(self.data_dir), "runnel-perf.properties")
        with open(config, "w") as handle:
            if self.setting == "nofsync":
                handle.write(f"log.flush.interval.messages={LONG_MAX}\n")
        logfile = open(self.data_dir + ".log", "a")
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--listen", self.bootstrap, "--data-dir", self.data_dir,
             "--config", config],
            stdout=subprocess.PIPE, stderr=logfile, text=True,
        )
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"runnel exited during start; see {self.data_dir}.log")
            if READY.search(line):
                break
        self.stats = ProcStats(self.proc.pid)
        return time.monotonic() - started

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Kafka:
    name = "kafka"
    setting = "default (no fsync)"

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.pid = None
        self.port = free_port()

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self, wipe=True):
        started = time.monotonic()
        if wipe:
            out = subprocess.run([KAFKA_SH, "start", self.data_dir, str(self.port)],
                                 check=True, capture_output=True, text=True)
        else:
            out = subprocess.run([KAFKA_SH, "restart", self.data_dir], check=True,
                                 capture_output=True, text=True)
        self.pid = int(out.stdout.strip().splitlines()[-1])
        self.stats = ProcStats(self.pid)
        return time.monotonic() - started

    def kill9(self):
        os.kill(self.pid, signal.SIGKILL)
        wait_gone(self.pid)

    def stop(self):
        if self.pid:
            subprocess.run([KAFKA_SH, "stop", str(self.pid)], check=False)
            wait_gone(self.pid)


def wait_gone(pid, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # A child of ours that exited must be reaped to disappear.
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)


# ---------------------------------------------------------------- clients


def run(cmd, timeout, env=None):
    log("$ " + " ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def create_topic(bootstrap, topic, partitions):
    """Creates the topic and waits until every partition takes a produce (Kafka names leaders
    in Metadata before they act as such, and creating 1,000 partitions takes it a while: a
    measurement must not start before that)."""
    run([RUNNEL, "topic", "create", "--bootstrap-server", bootstrap, "--topic", topic,
         "--partitions", str(partitions)], timeout=120)
    seconds = ready_after_restart(bootstrap, topic, partitions, timeout=600)
    log(f"{topic}: all {partitions} partitions took a produce after {seconds:.1f} s")


def runnel_load(mode, bootstrap, args, timeout):
    """Runs runnel-load and returns its --json summary."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        path = handle.name
    try:
        run([LOAD, mode, "--bootstrap", bootstrap, *args, "--json", path], timeout=timeout)
        with open(path) as handle:
            return json.load(handle)
    finally:
        os.unlink(path)


PP_FINAL = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th")


def producer_performance(bootstrap, topic, records, record_size, batch_size, linger_ms, timeout):
    """Kafka's ProducerPerformance; MB/s here is MiB-based in the tool, converted to MB/s."""
    result = run([KAFKA_SH, "run", "org.apache.kafka.tools.ProducerPerformance",
                  "--topic", topic, "--num-records", str(records), "--record-size",
                  str(record_size), "--throughput", "-1", "--producer-props",
                  f"bootstrap.servers={bootstrap}", "acks=all", f"batch.size={batch_size}",
                  f"linger.ms={linger_ms}"], timeout=timeout)
    match = None
    for line in result.stdout.splitlines():
        match = PP_FINAL.search(line) or match
    if not match:
        raise RuntimeError("no summary from ProducerPerformance:\n" + result.stdout[-2000:])
    records_sent = int(match.group(1))
    records_per_s = float(match.group(2))
    return {
        "client": "ProducerPerformance",
        "records": records_sent,
        "records_per_s": records_per_s,
        "mb_per_s": records_per_s * record_size / MB,
        "latency_ms": {"avg": float(match.group(4)), "p50": float(match.group(6)),
                       "p95": float(match.group(7)), "p99": float(match.group(8)),
                       "p99.9": float(match.group(9)), "max": float(match.group(5))},
    }


def consumer_performance(bootstrap, topic, records, timeout):
    """Kafka's ConsumerPerformance: reads `records` from the start in a fresh group."""
    result = run([KAFKA_SH, "run", "org.apache.kafka.tools.ConsumerPerformance",
                  "--bootstrap-server", bootstrap, "--topic", topic, "--messages", str(records),
                  "--group", f"perf-cp-{time.time_ns()}", "--timeout", "60000"],
                 timeout=timeout)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    header = next(i for i, line in enumerate(lines) if line.startswith("start.time"))
    names = [name.strip() for name in lines[header].split(",")]
    values = [value.strip() for value in lines[header + 1].split(",")]
    row = dict(zip(names, values))
    mib = float(row["data.consumed.in.MB"])
    seconds = None
    # The tool's MB.sec includes the group join; fetch.MB.sec excludes it. Report the latter.
    fetch_mib_s = float(row.get("fetch.MB.sec", row["MB.sec"]))
    return {
        "client": "ConsumerPerformance",
        "records": int(float(row["data.consumed.in.nMsg"])),
        "bytes": mib * 1024 * 1024,
        "mb_per_s": fetch_mib_s * 1024 * 1024 / MB,
        "seconds": seconds,
    }


def drop_caches():
    subprocess.run(["sync"], check=False)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- limits


def fio_limit(data_dir, seconds):
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, "fio.dat")
    result = run(["fio", "--name=limit", f"--filename={path}", "--rw=write", "--bs=1M",
                  "--iodepth=16", "--ioengine=io_uring", "--direct=1", "--size=2G",
                  f"--runtime={seconds}", "--time_based", "--output-format=json"],
                 timeout=seconds + 120)
    os.unlink(path)
    job = json.loads(result.stdout)["jobs"][0]["write"]
    return {"mb_per_s": job["bw_bytes"] / MB, "tool": "fio write 1M qd16 io_uring direct"}


def iperf_limit(seconds, zerocopy):
    port = free_port()
    server = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        cmd = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J"]
        if zerocopy:
            cmd.append("-Z")
        result = run(cmd, timeout=seconds + 60)
    finally:
        server.wait(timeout=30)
    received = json.loads(result.stdout)["end"]["sum_received"]
    return {"mb_per_s": received["bits_per_second"] / 8 / MB,
            "tool": "iperf3 loopback" + (" -Z (sendfile)" if zerocopy else "")}


# ---------------------------------------------------------------- workloads


def broker_figures(broker, cpu_before, moved_bytes):
    cpu = broker.stats.cpu_seconds()
    figures = {"broker_peak_rss_mb": (broker.stats.peak_rss_bytes() or 0) / MB}
    if cpu is not None and cpu_before is not None and moved_bytes:
        figures["broker_cpu_s"] = cpu - cpu_before
        figures["broker_cpu_s_per_gb"] = (cpu - cpu_before) / (moved_bytes / GB)
    return figures


def load_summary(summary, side="produce", latency="latency_us"):
    """The figures of a runnel-load --json summary the tables use: `side` is `produce` or
    `consume`, `latency` the histogram (`latency_us`, or `e2e_latency_us` on the consume side)."""
    part = summary.get(side) or {}
    return {
        "client": "runnel-load",
        "records": part.get("records"),
        "records_per_s": part.get("records_per_s"),
        "mb_per_s": part.get("mb_per_s"),
        "latency_ms": {key: value / 1000.0 for key, value in (part.get(latency) or {}).items()
                       if key != "count"},
        "latency_cdf_us": part.get(latency.replace("_us", "_cdf_us")),
        "timeline": summary.get("timeline"),
        "errors": (summary.get("errors") or {}).get("total"),
    }


def attempt(results, client, measure):
    """Runs one client's measurement; a failure is recorded (and logged), not raised, so the
    other client still runs."""
    try:
        results.append(measure())
    except Exception as error:  # noqa: BLE001 - any failure is a result to report
        log(f"{client} failed: {error}")
        results.append({"client": client, "error": str(error)[-2000:]})


def w_produce_throughput(broker, spec, size, clients):
    results = []

    def with_load():
        topic = "perf-produce-load"
        create_topic(broker.bootstrap, topic, spec["partitions"])
        cpu = broker.stats.cpu_seconds()
        summary = load_summary(runnel_load("produce", broker.bootstrap, [
            "--topic", topic, "--record-size", str(spec["record_size"]), "--acks", "all",
            "--batch-size", str(spec["batch_size"]), "--linger-ms", str(spec["linger_ms"]),
            "--duration", f"{size['seconds']}s", "--quiet"], timeout=size["seconds"] + 300))
        moved = (summary["records"] or 0) * spec["record_size"]
        return {**summary, **broker_figures(broker, cpu, moved)}

    def with_tools():
        topic = "perf-produce-pp"
        create_topic(broker.bootstrap, topic, spec["partitions"])
        cpu = broker.stats.cpu_seconds()
        summary = producer_performance(broker.bootstrap, topic, size["records"],
                                       spec["record_size"], spec["batch_size"],
                                       spec["linger_ms"], timeout=size["seconds"] * 20 + 300)
        moved = summary["records"] * spec["record_size"]
        return {**summary, **broker_figures(broker, cpu, moved)}

    if "runnel-load" in clients:
        attempt(results, "runnel-load", with_load)
    if "kafka-tools" in clients:
        attempt(results, "ProducerPerformance", with_tools)
    return results


def w_e2e_latency(broker, spec, size, clients):
    topic = "perf-e2e"
    create_topic(broker.bootstrap, topic, spec["partitions"])
    cpu = broker.stats.cpu_seconds()
    summary = load_summary(runnel_load("e2e", broker.bootstrap, [
        "--topic", topic, "--record-size", str(spec["record_size"]), "--acks", "all",
        "--batch-size", str(spec["batch_size"]), "--linger-ms", str(spec["linger_ms"]),
        "--rate", f"{size['rate_mb']}MB/s", "--duration", f"{size['seconds']}s", "--quiet"],
        timeout=size["seconds"] + 300), side="consume", latency="e2e_latency_us")
    moved = 2 * (summary["records"] or 0) * spec["record_size"]
    return [{**summary, **broker_figures(broker, cpu, moved)}]


def fill(broker, topic, partitions, record_size, total_bytes, keys=None):
    create_topic(broker.bootstrap, topic, partitions)
    records = total_bytes // record_size
    args = ["--topic", topic, "--record-size", str(record_size), "--acks", "all",
            "--batch-size", "262144", "--linger-ms", "5", "--records", str(records), "--quiet"]
    if keys:
        args += ["--keys", str(keys)]
    runnel_load("produce", broker.bootstrap, args, timeout=3600)
    return records


def w_consume_catchup(broker, spec, size, clients):
    topic = "perf-catchup"
    records = fill(broker, topic, spec["partitions"], spec["record_size"], size["bytes"])
    results = []

    def with_load():
        cached = drop_caches()
        cpu = broker.stats.cpu_seconds()
        summary = load_summary(runnel_load("consume", broker.bootstrap, [
            "--topic", topic, "--from", "earliest", "--records", str(records), "--quiet"],
            timeout=3600), side="consume")
        summary["page_cache_dropped"] = cached
        moved = (summary["records"] or 0) * spec["record_size"]
        return {**summary, **broker_figures(broker, cpu, moved)}

    def with_tools():
        cached = drop_caches()
        cpu = broker.stats.cpu_seconds()
        summary = consumer_performance(broker.bootstrap, topic, records, timeout=3600)
        summary["page_cache_dropped"] = cached
        return {**summary, **broker_figures(broker, cpu, summary["bytes"])}

    if "runnel-load" in clients:
        attempt(results, "runnel-load", with_load)
    if "kafka-tools" in clients:
        attempt(results, "ConsumerPerformance", with_tools)
    return results


def w_many_partitions(broker, spec, size, clients):
    topic = "perf-many"
    create_topic(broker.bootstrap, topic, spec["partitions"])
    args = ["--topic", topic, "--record-size", str(spec["record_size"]), "--acks", "all",
            "--keys", str(spec["keys"]), "--batch-size", str(spec["batch_size"]),
            "--max-in-flight", str(spec["max_in_flight"]), "--linger-ms", str(spec["linger_ms"]),
            "--quiet"]
    # Unmeasured warm-up with the same load: a fresh Kafka takes tens of seconds of this
    # load before its first ~100k keyed records over 1,000 partitions are through (JIT, first
    # appends); the figure is the steady state after it, for both brokers.
    runnel_load("produce", broker.bootstrap, args + ["--duration", f"{spec['warmup_seconds']}s"],
                timeout=spec["warmup_seconds"] + 600)
    cpu = broker.stats.cpu_seconds()
    summary = load_summary(runnel_load("produce", broker.bootstrap,
                                       args + ["--duration", f"{size['seconds']}s"],
                                       timeout=size["seconds"] + 600))
    moved = (summary["records"] or 0) * spec["record_size"]
    return [{**summary, **broker_figures(broker, cpu, moved)}]


def ready_after_restart(bootstrap, topic, partitions, timeout=900):
    """Seconds until every partition of `topic` takes an acks=all produce again."""
    from confluent_kafka import Producer

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            with socket.create_connection(("127.0.0.1", int(bootstrap.split(":")[1])), 1):
                break
        except OSError:
            time.sleep(0.02)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "retry.backoff.ms": 20, "reconnect.backoff.ms": 20,
                         "reconnect.backoff.max.ms": 100, "message.timeout.ms": timeout * 1000})
    failures = []
    for partition in range(partitions):
        producer.produce(topic, b"ready?", partition=partition,
                         on_delivery=lambda error, _m: error and failures.append(error))
    producer.flush(timeout)
    if failures:
        raise RuntimeError(f"produce after restart failed: {failures[:3]}")
    return time.monotonic() - started


def w_restart(broker, spec, size, clients):
    topic = "perf-restart"
    fill(broker, topic, spec["partitions"], spec["record_size"], size["bytes"])
    broker.kill9()
    started = time.monotonic()
    broker.start(wipe=False)
    seconds = ready_after_restart(broker.bootstrap, topic, spec["partitions"])
    total = time.monotonic() - started
    return [{"client": "confluent-kafka probe", "ready_s": total, "probe_s": seconds,
             "stored_bytes": size["bytes"]}]


RUNNERS = {
    "produce-throughput": w_produce_throughput,
    "e2e-latency": w_e2e_latency,
    "consume-catchup": w_consume_catchup,
    "many-partitions": w_many_partitions,
    "restart": w_restart,
}
# Workloads whose figure depends on the durability setting: runnel runs them both ways.
DURABILITY_SENSITIVE = {"produce-throughput", "e2e-latency", "many-partitions"}


# ---------------------------------------------------------------- report


def headline(workload, result):
    """(value, unit, higher_is_better) of one result."""
    if workload == "e2e-latency":
        return result.get("latency_ms", {}).get("p99"), "ms p99", False
    if workload == "restart":
        return result.get("ready_s"), "s to ready", False
    if workload == "many-partitions":
        return result.get("records_per_s"), "msgs/s", True
    return result.get("mb_per_s"), "MB/s", True


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


def fmt(value, digits=2):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(report):
    lines = [f"# Perf run {report['date']} ({report['mode']})", "",
             f"Machine: {report['machine']}. Commit: {report['commit']}. "
             f"Command: `{report['command']}`.", "",
             "## Limits", "", "| limit | MB/s | tool |", "|---|---|---|"]
    for name, limit in report["limits"].items():
        lines.append(f"| {name} | {fmt(limit['mb_per_s'], 0)} | {limit['tool']} |")
    lines += ["", "## Workloads", "",
              "| workload | broker | setting | client | figure | runnel/Kafka (same client) "
              "| runnel/previous | vs limit | broker CPU s/GB | peak RSS MB |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    previous = report.get("previous", {}).get("label")
    for workload, runs in report["workloads"].items():
        kafka = {r["client"]: r for r in runs if r["broker"] == "kafka"}
        earlier = {(r["client"], r["setting"]): r for r in runs
                   if previous and r["broker"] == f"runnel@{previous}"}
        for r in runs:
            value, unit, higher = headline(workload, r)
            if r.get("error"):
                first = r["error"].strip().splitlines()[-1][:120].replace("|", "/")
                lines.append(f"| {workload} | {r['broker']} | {r['setting']} | {r['client']} | "
                             f"failed: {first} | | | | | |")
                continue

            def relative(base):
                if base is None or base.get("error"):
                    return None
                base_value, _, _ = headline(workload, base)
                return ratio(value, base_value) if higher else ratio(base_value, value)

            rel = relative(kafka.get(r["client"])) if r["broker"].startswith("runnel") else None
            prev = (relative(earlier.get((r["client"], r["setting"])))
                    if r["broker"] == "runnel" else None)
            limit = None
            if workload in ("produce-throughput",) and value:
                limit = ratio(value, report["limits"]["disk"]["mb_per_s"])
            if workload == "consume-catchup" and value:
                limit = ratio(value, report["limits"]["loopback_sendfile"]["mb_per_s"])
            lines.append(
                f"| {workload} | {r['broker']} | {r['setting']} | {r['client']} | "
                f"{fmt(value)} {unit} | {fmt(rel)}{'' if rel is None else ('x' if higher else 'x (Kafka/runnel)')} | "
                f"{fmt(prev)}{'' if prev is None else ('x' if higher else 'x (previous/now)')} | "
                f"{fmt(limit)} | {fmt(r.get('broker_cpu_s_per_gb'))} | "
                f"{fmt(r.get('broker_peak_rss_mb'), 0)} |")
    lines += ["", "Ratios: higher is better for runnel; for latency and restart time the ratio "
              "is Kafka's (or the previous commit's) figure over runnel's. Limits: disk = fio, "
              "loopback = iperf3."]
    if previous:
        lines.append(f"Previous: `runnel@{previous}` is the broker built from commit {previous}, "
                     "driven by this commit's runnel-load.")
    return "\n".join(lines) + "\n"


def plots(report, base):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no plots")
        return []
    written = []
    runs = report["workloads"].get("e2e-latency", [])
    if runs:
        fig, ax = plt.subplots(figsize=(7, 4))
        for r in runs:
            cdf = r.get("latency_cdf_us") or []
            if cdf:
                ax.plot([point[1] / 1000.0 for point in cdf], [point[0] for point in cdf],
                        label=f"{r['broker']} ({r['setting']})")
        ax.set_xscale("log")
        ax.set_xlabel("end-to-end latency (ms)")
        ax.set_ylabel("percentile")
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
        path = f"{base}-e2e-latency-cdf.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        written.append(path)
    runs = [r for r in report["workloads"].get("produce-throughput", []) if r.get("timeline")]
    if runs:
        fig, ax = plt.subplots(figsize=(7, 4))
        for r in runs:
            series = r["timeline"]
            ax.plot([point["elapsed_s"] for point in series],
                    [point["produced_mb_per_s"] for point in series],
                    label=f"{r['broker']} ({r['setting']}, runnel-load)")
        ax.set_xlabel("second")
        ax.set_ylabel("MB/s acknowledged")
        ax.legend()
        ax.grid(True, alpha=0.3)
        path = f"{base}-produce-throughput.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        written.append(path)
    return written


# ---------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["quick", "full"], default="quick")
    parser.add_argument("--dir", default=os.path.join(ROOT, "target", "perf"),
                        help="directory on the disk under test (brokers' data, fio's file)")
    parser.add_argument("--workloads", default=",".join(RUNNERS),
                        help="comma-separated subset of: " + ", ".join(RUNNERS))
    parser.add_argument("--brokers", default="runnel,kafka")
    parser.add_argument("--out", default=os.path.join(ROOT, "perf", "results"))
    parser.add_argument("--previous-bin", help="a runnel binary built from an earlier commit: "
                        "its broker runs every workload too (runnel-load only), for regressions")
    parser.add_argument("--previous-label", default="previous",
                        help="what to call that commit in the report (e.g. its short hash)")
    args = parser.parse_args()

    with open(WORKLOADS) as handle:
        specs = json.load(handle)
    chosen = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for workload in chosen:
        if workload not in RUNNERS:
            sys.exit(f"unknown workload {workload}")
    brokers = [b.strip() for b in args.brokers.split(",")]
    os.makedirs(args.dir, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)

    quick = args.mode == "quick"
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "mode": args.mode,
        "machine": f"{os.cpu_count()} cores, {os.uname().release}, {disk_note(args.dir)}",
        "commit": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True).stdout.strip(),
        "command": "perf/run.sh " + " ".join(sys.argv[1:]),
        "limits": {},
        "workloads": {},
    }
    # The longest produce run writes what the broker takes in 60 s (~25 GB at 400 MB/s); a
    # broker that runs out of disk measures nothing, so refuse to start without room.
    needed = 8e9 if quick else 40e9
    free = shutil.disk_usage(args.dir).free
    if free < needed:
        sys.exit(f"{args.dir}: {free / GB:.0f} GB free, the {args.mode} mode needs about "
                 f"{needed / GB:.0f} GB (brokers' data is removed after each run)")
    log("limits: fio and iperf3")
    report["limits"]["disk"] = fio_limit(args.dir, 5 if quick else 20)
    report["limits"]["loopback"] = iperf_limit(3 if quick else 10, zerocopy=False)
    report["limits"]["loopback_sendfile"] = iperf_limit(3 if quick else 10, zerocopy=True)

    systems = []
    previous = f"runnel@{args.previous_label}"
    if args.previous_bin:
        report["previous"] = {"label": args.previous_label, "binary": args.previous_bin}
    if "runnel" in brokers:
        for setting in ("fsync", "nofsync"):
            systems.append(("runnel", setting))
            # Right after the same setting of this commit, so drift on a noisy machine
            # affects both alike.
            if args.previous_bin:
                systems.append((previous, setting))
    if "kafka" in brokers:
        systems.append(("kafka", "default (no fsync)"))
    for workload in chosen:
        spec = specs[workload]
        size = spec[args.mode]
        runs = []
        for system, setting in systems:
            if (system.startswith("runnel") and setting == "nofsync"
                    and workload not in DURABILITY_SENSITIVE):
                continue
            data = os.path.join(args.dir, f"{system}-{workload}")
            clients = ["runnel-load", "kafka-tools"]
            if system == "runnel":
                broker = Runnel(data, setting)
            elif system == previous:
                broker = Runnel(data, setting, binary=args.previous_bin)
                clients = ["runnel-load"]
            else:
                broker = Kafka(data)
            log(f"{workload}: {system} ({setting})")
            broker.start()
            try:
                for result in RUNNERS[workload](broker, spec, size, clients):
                    result.update({"broker": system, "setting": setting})
                    runs.append(result)
            except Exception as error:  # one failed workload must not lose the others
                log(f"{workload} on {system} failed: {error}")
                runs.append({"broker": system, "setting": setting, "client": "-",
                             "error": str(error)[-2000:]})
            finally:
                broker.stop()
                shutil.rmtree(data, ignore_errors=True)
        report["workloads"][workload] = runs
        base = os.path.join(args.out, f"{report['date']}-{workload}")
        with open(base + ".json", "w") as handle:
            json.dump({**report, "workloads": {workload: runs}}, handle, indent=2)

    name = f"{report['date']}-perf-{args.mode}"
    if chosen != list(RUNNERS):
        name += "-" + "+".join(chosen)
    base = os.path.join(args.out, name)
    with open(base + ".json", "w") as handle:
        json.dump(report, handle, indent=2)
    table = markdown(report)
    with open(base + ".md", "w") as handle:
        handle.write(table)
    for path in plots(report, os.path.join(args.out, report["date"])):
        log(f"wrote {path}")
    print(table)


if __name__ == "__main__":
    main()
