//! `runnel-load engine`: appends pre-built batches straight into partition logs (no network) as
//! fast as the engine acknowledges them, and reports MB/s and append latency; with `--fio`, runs
//! fio with the same pattern on the same directory in the same invocation and prints the ratio.
//!
//! Each batch is built once; an append clones it (a copy, outside the timed region) and the
//! latency recorded is that of `PartitionLog::append` alone. `--concurrency` appenders per
//! partition keep that many appends in flight, so group commit has something to merge.
//!
//! Threads: one glommio executor per shard (`--shards`, default 1), pinned with `--pin true`; partition `p`
//! lives on shard `p % shards`. Shards start appending together (a barrier after opening).

use crate::fio::{self, FioJob, FioResult};
use crate::io_stats::{CountingStorage, IoCounters, IoSnapshot};
use crate::json::Json;
use bytes::BytesMut;
use clap::builder::ArgAction;
use hdrhistogram::Histogram;
use runnel_engine::{CacheBudget, FlushPolicy, LogConfig, LogContext, PartitionLog};
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Tail cache per shard, as a broker shard would have.
const TAIL_CACHE_BYTES: u64 = 64 << 20;
/// Latencies above this are recorded as this (an append slower than a minute is a failure anyway).
const LATENCY_MAX_US: u64 = 60_000_000;
/// Linux reports /proc CPU times in USER_HZ ticks, which is 100 on every architecture we run on.
const USER_HZ: f64 = 100.0;

/// Arguments of `runnel-load engine`.
#[derive(clap::Args, Debug, Clone)]
pub struct EngineArgs {
    /// Directory the partition logs (and fio's files) are created in; must be on the disk under
    /// test. Sub-directories `runnel-load-<p>` are replaced at start and removed at the end.
    #[arg(long)]
    dir: PathBuf,
    /// Partition logs to append to.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    partitions: u32,
    /// Bytes per batch (exact: the last record is shortened to fit). Accepts k/m/g suffixes.
    #[arg(long, default_value = "16k", value_parser = parse_bytes)]
    batch_bytes: u64,
    /// Value bytes per record.
    #[arg(long, default_value = "1k", value_parser = parse_bytes)]
    record_bytes: u64,
    /// Bytes to append over all partitions (fio writes the same per job).
    #[arg(long, default_value = "512m", value_parser = parse_bytes)]
    total_bytes: u64,
    /// `true`: FlushPolicy::EveryCommit (ack after fdatasync); `false`: FlushPolicy::Never.
    #[arg(long, action = ArgAction::Set, default_value_t = true)]
    fsync: bool,
    /// Appends in flight per partition.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    /// Shards (glommio executors, one per CPU).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    shards: u32,
    /// Pin shard `s` to CPU `s`, as the broker does. On a machine shared with other work a pinned
    /// shard cannot move off a busy CPU while fio's threads can, so the default is unpinned.
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    pin: bool,
    /// Also run fio with the same pattern and print runnel/fio.
    #[arg(long)]
    fio: bool,
    /// Rounds of (runnel, then fio); the summary is the median. Interleaving the two in several
    /// rounds keeps a burst of noise from landing on one side only.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Stop each runnel or fio phase after this long even if `--total-bytes` is not reached
    /// (MB/s stays comparable; a busy shared disk cannot stretch a run without bound).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    max_seconds: u64,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Override LogConfig::write_bytes_max (the largest single direct write); default: the
    /// engine's default.
    #[arg(long, value_parser = parse_bytes)]
    write_bytes_max: Option<u64>,
    /// Drop segment writes and syncs instead of doing them (they complete at once): measures the
    /// CPU ceiling of the append path itself. Not comparable with fio.
    #[arg(long, conflicts_with = "fio")]
    null_io: bool,
    /// Also print one Markdown table row (the header is in perf/engine-vs-fio.sh).
    #[arg(long)]
    markdown_row: bool,
}

/// What the engine phase measured, over all shards.
struct EngineResult {
    appended_bytes: u64,
    appends: u64,
    elapsed: Duration,
    latencies_us: Histogram<u64>,
    io: IoSnapshot,
    cpu_seconds: Option<f64>,
}

impl EngineResult {
    fn mb_per_s(&self) -> f64 {
        self.appended_bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    /// Logical bytes per group commit: per fdatasync with fsync on, per write without.
    fn bytes_per_commit(&self, fsync: bool) -> Option<u64> {
        let commits = if fsync { self.io.syncs } else { self.io.writes };
        (commits > 0).then(|| self.appended_bytes / commits)
    }
}

/// What one shard measured.
struct ShardOutcome {
    appended_bytes: u64,
    appends: u64,
    started: Instant,
    finished: Instant,
    latencies_us: Histogram<u64>,
    io: IoSnapshot,
}

/// One round: the engine run, then the fio runs right after it.
struct Round {
    engine: EngineResult,
    fio: Vec<(FioJob, FioResult)>,
}

/// Medians over the rounds; ratios are medians of each round's own ratio.
struct Summary {
    runnel_mb_per_s: f64,
    append_p50_us: f64,
    append_p99_us: f64,
    bytes_per_commit: Option<f64>,
    fio: Vec<FioSummary>,
}

struct FioSummary {
    block_bytes: u64,
    mb_per_s: f64,
    runnel_over_fio: f64,
}

/// Runs the workload and prints (and optionally writes) the results.
pub fn run(args: &EngineArgs) -> Result<(), String> {
    check_args(args)?;
    if args.fio {
        fio::check_installed()?;
    }
    std::fs::create_dir_all(&args.dir)
        .map_err(|error| format!("creating {}: {error}", args.dir.display()))?;
    let batch = runnel_benches::batch_of_exact_size(
        args.batch_bytes as usize,
        args.record_bytes as usize,
        wall_clock_ms(),
    );
    print_header(args);
    let mut rounds = Vec::new();
    // fio's block sizes are fixed after the first round so every round compares the same thing.
    let mut fio_block_sizes: Option<Vec<u64>> = None;
    for round in 1..=args.rounds {
        let engine = run_engine(args, &batch)?;
        print_engine(args, round, &engine);
        let mut fio_runs = Vec::new();
        if args.fio {
            let sizes = fio_block_sizes.get_or_insert_with(|| fio_block_sizes_for(args, &engine));
            for &block_bytes in sizes.iter() {
                let job = fio_job(args, block_bytes);
                let result = job.run()?;
                print_fio(&job, &result, &engine);
                fio_runs.push((job, result));
            }
        }
        rounds.push(Round {
            engine,
            fio: fio_runs,
        });
    }
    let summary = summarize(args, &rounds);
    print_summary(&summary, args.rounds);
    if args.markdown_row {
        println!("{}", markdown_row(args, &summary));
    }
    if let Some(path) = &args.json {
        let document = to_json(args, &rounds, &summary).to_string() + "\n";
        std::fs::write(path, document)
            .map_err(|error| format!("writing {}: {error}", path.display()))?;
    }
    Ok(())
}

fn check_args(args: &EngineArgs) -> Result<(), String> {
    if args.batch_bytes < args.record_bytes + 128 || args.batch_bytes > 1 << 20 {
        return Err(format!(
            "--batch-bytes {} must hold one record of --record-bytes {} and be at most 1 MiB",
            args.batch_bytes, args.record_bytes
        ));
    }
    if args.total_bytes < args.batch_bytes * u64::from(args.partitions) {
        return Err("--total-bytes must allow at least one batch per partition".into());
    }
    Ok(())
}

fn batches_per_partition(args: &EngineArgs) -> u64 {
    args.total_bytes / u64::from(args.partitions) / args.batch_bytes
}

fn partition_dir(dir: &Path, partition: u32) -> PathBuf {
    dir.join(format!("runnel-load-{partition}"))
}

/// Starts the shards, waits for them, and merges their results.
fn run_engine(args: &EngineArgs, batch: &[u8]) -> Result<EngineResult, String> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let barrier = Arc::new(Barrier::new(args.shards as usize));
    let cpu_before = process_cpu_seconds();
    let mut handles = Vec::new();
    for shard in 0..args.shards {
        let partitions: Vec<u32> = (shard..args.partitions)
            .step_by(args.shards as usize)
            .collect();
        let (args, batch, barrier) = (args.clone(), batch.to_vec(), barrier.clone());
        let placement = if args.pin && (args.shards as usize) <= cpus {
            glommio::Placement::Fixed(shard as usize)
        } else {
            glommio::Placement::Unbound
        };
        let handle = glommio::LocalExecutorBuilder::new(placement)
            .name(&format!("load-shard-{shard}"))
            .spawn(move || async move { run_shard(&args, &batch, &partitions, &barrier).await })
            .map_err(|error| format!("starting shard {shard}: {error}"))?;
        handles.push(handle);
    }
    let outcomes: Vec<ShardOutcome> = handles
        .into_iter()
        .map(|handle| {
            handle
                .join()
                .map_err(|error| format!("shard failed: {error}"))?
        })
        .collect::<Result<_, String>>()?;
    let cpu_seconds = match (cpu_before, process_cpu_seconds()) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    merge_outcomes(outcomes, cpu_seconds)
}

fn merge_outcomes(
    outcomes: Vec<ShardOutcome>,
    cpu_seconds: Option<f64>,
) -> Result<EngineResult, String> {
    let started = outcomes.iter().map(|outcome| outcome.started).min();
    let finished = outcomes.iter().map(|outcome| outcome.finished).max();
    let (Some(started), Some(finished)) = (started, finished) else {
        return Err("no shard ran".into());
    };
    let mut latencies_us = new_histogram();
    let mut io = IoSnapshot::default();
    let (mut appended_bytes, mut appends) = (0, 0);
    for outcome in &outcomes {
        latencies_us
            .add(&outcome.latencies_us)
            .map_err(|error| format!("merging histograms: {error}"))?;
        io = io.plus(&outcome.io);
        appended_bytes += outcome.appended_bytes;
        appends += outcome.appends;
    }
    Ok(EngineResult {
        appended_bytes,
        appends,
        elapsed: finished - started,
        latencies_us,
        io,
        cpu_seconds,
    })
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

/// One shard: opens its partitions, waits for the other shards, appends, closes.
async fn run_shard(
    args: &EngineArgs,
    batch: &[u8],
    partitions: &[u32],
    barrier: &Barrier,
) -> Result<ShardOutcome, String> {
    let counters = Rc::new(IoCounters::default());
    let context = LogContext {
        storage: Rc::new(CountingStorage::new(counters.clone(), args.null_io)),
        cache: CacheBudget::new(TAIL_CACHE_BYTES),
    };
    let config = LogConfig {
        flush: if args.fsync {
            FlushPolicy::EveryCommit
        } else {
            FlushPolicy::Never
        },
        ..LogConfig::default()
    };
    let config = LogConfig {
        write_bytes_max: args
            .write_bytes_max
            .map_or(config.write_bytes_max, |bytes| bytes as usize),
        ..config
    };
    let mut logs = Vec::new();
    let opened = open_logs(&args.dir, partitions, &config, &context, &mut logs).await;
    // Every shard reaches the barrier, even one that failed to open, so none waits forever.
    barrier.wait();
    opened?;
    let io_before = counters.snapshot();
    let histogram = Rc::new(RefCell::new(new_histogram()));
    let batch = BytesMut::from(batch);
    let started = Instant::now();
    let drivers: Vec<_> = logs
        .iter()
        .map(|log| {
            let (log, batch, histogram) = (log.clone(), batch.clone(), histogram.clone());
            let (batches, concurrency) = (batches_per_partition(args), args.concurrency);
            let deadline = started + Duration::from_secs(args.max_seconds);
            let load = PartitionLoad {
                batches,
                concurrency,
                deadline,
            };
            glommio::spawn_local(drive_partition(log, batch, load, histogram))
        })
        .collect();
    let mut appends = 0;
    for driver in drivers {
        appends += driver.await?;
    }
    let finished = Instant::now();
    let io = counters.snapshot().since(&io_before);
    close_and_remove(&args.dir, partitions, logs).await?;
    let latencies_us = Rc::try_unwrap(histogram)
        .map_err(|_| "an appender outlived its partition")?
        .into_inner();
    Ok(ShardOutcome {
        appended_bytes: appends * batch.len() as u64,
        appends,
        started,
        finished,
        latencies_us,
        io,
    })
}

async fn open_logs(
    dir: &Path,
    partitions: &[u32],
    config: &LogConfig,
    context: &LogContext,
    logs: &mut Vec<PartitionLog>,
) -> Result<(), String> {
    for &partition in partitions {
        let path = partition_dir(dir, partition);
        remove_if_present(&path)?;
        let log = PartitionLog::open(&path, config.clone(), context.clone())
            .await
            .map_err(|error| format!("opening {}: {error}", path.display()))?;
        logs.push(log);
    }
    Ok(())
}

async fn close_and_remove(
    dir: &Path,
    partitions: &[u32],
    logs: Vec<PartitionLog>,
) -> Result<(), String> {
    for (log, &partition) in logs.iter().zip(partitions) {
        log.close()
            .await
            .map_err(|error| format!("closing partition {partition}: {error}"))?;
        remove_if_present(&partition_dir(dir, partition))?;
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<(), String> {
    match std::fs::remove_dir_all(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("removing {}: {error}", path.display()))
        }
        _ => Ok(()),
    }
}

/// What one partition is asked to do.
#[derive(Clone, Copy)]
struct PartitionLoad {
    batches: u64,
    concurrency: u32,
    /// No append starts after this.
    deadline: Instant,
}

/// Appends up to `load.batches` copies of `batch` to `log` with `load.concurrency` appends in
/// flight until the deadline; returns the number appended.
async fn drive_partition(
    log: PartitionLog,
    batch: BytesMut,
    load: PartitionLoad,
    histogram: Rc<RefCell<Histogram<u64>>>,
) -> Result<u64, String> {
    let remaining = Rc::new(Cell::new(load.batches));
    let appenders: Vec<_> = (0..load.concurrency)
        .map(|_| {
            let (log, batch) = (log.clone(), batch.clone());
            let (remaining, histogram) = (remaining.clone(), histogram.clone());
            glommio::spawn_local(async move {
                let mut appended = 0u64;
                while remaining.get() > 0 && Instant::now() < load.deadline {
                    remaining.set(remaining.get() - 1);
                    let copy = batch.clone();
                    let started = Instant::now();
                    log.append(copy)
                        .await
                        .map_err(|error| format!("append: {error}"))?;
                    let micros = started.elapsed().as_micros() as u64;
                    histogram
                        .borrow_mut()
                        .saturating_record(micros.clamp(1, LATENCY_MAX_US));
                    appended += 1;
                }
                Ok::<u64, String>(appended)
            })
        })
        .collect();
    let mut appended = 0;
    for appender in appenders {
        appended += appender.await?;
    }
    Ok(appended)
}

/// fio at the batch size, and at the observed bytes per group commit when that differs.
fn fio_block_sizes_for(args: &EngineArgs, engine: &EngineResult) -> Vec<u64> {
    let mut block_sizes = vec![args.batch_bytes];
    if let Some(commit_bytes) = engine.bytes_per_commit(args.fsync) {
        let rounded = ((commit_bytes + 2048) / 4096 * 4096).clamp(4096, 16 << 20);
        if rounded != args.batch_bytes {
            block_sizes.push(rounded);
        }
    }
    block_sizes
}

fn fio_job(args: &EngineArgs, block_bytes: u64) -> FioJob {
    FioJob {
        dir: args.dir.clone(),
        block_bytes,
        jobs: args.partitions,
        bytes_per_job: args.total_bytes / u64::from(args.partitions),
        fdatasync: args.fsync,
        runtime_s: args.max_seconds,
    }
}

fn summarize(args: &EngineArgs, rounds: &[Round]) -> Summary {
    let over_rounds = |value: &dyn Fn(&Round) -> f64| {
        median(rounds.iter().map(value).collect()).expect("at least one round")
    };
    let commits: Vec<f64> = rounds
        .iter()
        .filter_map(|round| round.engine.bytes_per_commit(args.fsync))
        .map(|bytes| bytes as f64)
        .collect();
    let fio_count = rounds.first().map_or(0, |round| round.fio.len());
    let fio = (0..fio_count)
        .map(|index| FioSummary {
            block_bytes: rounds[0].fio[index].0.block_bytes,
            mb_per_s: over_rounds(&|round| round.fio[index].1.write_bytes_per_s / 1e6),
            runnel_over_fio: over_rounds(&|round| {
                round.engine.mb_per_s() / (round.fio[index].1.write_bytes_per_s / 1e6)
            }),
        })
        .collect();
    Summary {
        runnel_mb_per_s: over_rounds(&|round| round.engine.mb_per_s()),
        append_p50_us: over_rounds(&|round| {
            round.engine.latencies_us.value_at_quantile(0.5) as f64
        }),
        append_p99_us: over_rounds(&|round| {
            round.engine.latencies_us.value_at_quantile(0.99) as f64
        }),
        bytes_per_commit: median(commits),
        fio,
    }
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => None,
        length if length % 2 == 1 => Some(values[middle]),
        _ => Some((values[middle - 1] + values[middle]) / 2.0),
    }
}

fn print_header(args: &EngineArgs) {
    println!(
        "runnel engine: {} partition(s) x {} B batches of {} B records, fsync={}, {} in flight per \
         partition, {} shard(s){}, {} round(s){}",
        args.partitions,
        args.batch_bytes,
        args.record_bytes,
        args.fsync,
        args.concurrency,
        args.shards,
        if args.pin { " (pinned)" } else { "" },
        args.rounds,
        if args.null_io { ", NULL I/O" } else { "" }
    );
}

fn print_engine(args: &EngineArgs, round: u32, engine: &EngineResult) {
    let histogram = &engine.latencies_us;
    println!(
        "  [{round}] runnel: {} appends, {:.1} MiB in {:.2} s = {:.1} MB/s; append latency p50 {} \
         us, p99 {} us, max {} us",
        engine.appends,
        engine.appended_bytes as f64 / f64::from(1 << 20),
        engine.elapsed.as_secs_f64(),
        engine.mb_per_s(),
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
        histogram.max()
    );
    let average_us = |busy_ns: u64, count: u64| busy_ns as f64 / count.max(1) as f64 / 1e3;
    println!(
        "      {} writes (avg {:.0} us), {} fdatasyncs (avg {:.0} us), no I/O in flight {:.0}% of \
         the time, {} B per commit, device/logical bytes {:.3}{}",
        engine.io.writes,
        average_us(engine.io.write_busy_ns, engine.io.writes),
        engine.io.syncs,
        average_us(engine.io.sync_busy_ns, engine.io.syncs),
        engine.io.idle_ns as f64 / engine.elapsed.as_nanos() as f64 * 100.0,
        engine
            .bytes_per_commit(args.fsync)
            .map_or("-".into(), |bytes| bytes.to_string()),
        engine.io.write_bytes as f64 / engine.appended_bytes as f64,
        engine.cpu_seconds.map_or(String::new(), |seconds| format!(
            ", CPU {seconds:.2} s ({:.2} s/GB)",
            seconds / (engine.appended_bytes as f64 / 1e9)
        ))
    );
}

fn print_summary(summary: &Summary, rounds: u32) {
    let fio: Vec<String> = summary
        .fio
        .iter()
        .map(|fio| {
            format!(
                "fio bs={} {:.1} MB/s, runnel/fio {:.2}",
                fio.block_bytes, fio.mb_per_s, fio.runnel_over_fio
            )
        })
        .collect();
    println!(
        "  median of {rounds}: runnel {:.1} MB/s, p50 {:.0} us, p99 {:.0} us{}{}",
        summary.runnel_mb_per_s,
        summary.append_p50_us,
        summary.append_p99_us,
        if fio.is_empty() { "" } else { "; " },
        fio.join("; ")
    );
}

fn print_fio(job: &FioJob, result: &FioResult, engine: &EngineResult) {
    let micros = |value: Option<f64>| value.map_or("-".into(), |us| format!("{us:.0}"));
    println!(
        "      fio bs={} x {} job(s), fdatasync={}: {:.1} MB/s (write p50 {} us p99 {} us, fdatasync \
         p50 {} us p99 {} us) -> runnel/fio = {:.2}",
        job.block_bytes,
        job.jobs,
        job.fdatasync,
        result.write_bytes_per_s / 1e6,
        micros(result.write_clat_p50_us),
        micros(result.write_clat_p99_us),
        micros(result.sync_p50_us),
        micros(result.sync_p99_us),
        engine.mb_per_s() / (result.write_bytes_per_s / 1e6)
    );
}

/// `| partitions | batch KiB | fsync | runnel MB/s | p50 us | p99 us | fio MB/s | ratio |
/// commit KiB | fio@commit MB/s | ratio |`
fn markdown_row(args: &EngineArgs, summary: &Summary) -> String {
    let fio_cells = |index: usize| {
        summary.fio.get(index).map_or("- | -".into(), |fio| {
            format!("{:.1} | {:.2}", fio.mb_per_s, fio.runnel_over_fio)
        })
    };
    let commit_kib = summary
        .bytes_per_commit
        .map_or("-".into(), |bytes| format!("{:.1}", bytes / 1024.0));
    let at_commit = if summary.fio.len() > 1 {
        fio_cells(1)
    } else {
        "(same) | (same)".into()
    };
    format!(
        "| {} | {} | {} | {:.1} | {:.0} | {:.0} | {} | {} | {} |",
        args.partitions,
        args.batch_bytes / 1024,
        if args.fsync { "on" } else { "off" },
        summary.runnel_mb_per_s,
        summary.append_p50_us,
        summary.append_p99_us,
        fio_cells(0),
        commit_kib,
        at_commit
    )
}

fn round_json(round: &Round, fsync: bool) -> Json {
    let engine = &round.engine;
    let histogram = &engine.latencies_us;
    let runnel = Json::object([
        ("mb_per_s", engine.mb_per_s().into()),
        ("appended_bytes", engine.appended_bytes.into()),
        ("appends", engine.appends.into()),
        ("elapsed_s", engine.elapsed.as_secs_f64().into()),
        ("append_p50_us", histogram.value_at_quantile(0.5).into()),
        ("append_p99_us", histogram.value_at_quantile(0.99).into()),
        ("append_p999_us", histogram.value_at_quantile(0.999).into()),
        ("append_max_us", histogram.max().into()),
        ("writes", engine.io.writes.into()),
        ("write_bytes", engine.io.write_bytes.into()),
        ("fdatasyncs", engine.io.syncs.into()),
        (
            "write_busy_s",
            (engine.io.write_busy_ns as f64 / 1e9).into(),
        ),
        (
            "fdatasync_busy_s",
            (engine.io.sync_busy_ns as f64 / 1e9).into(),
        ),
        ("bytes_per_commit", engine.bytes_per_commit(fsync).into()),
        ("cpu_seconds", engine.cpu_seconds.into()),
    ]);
    let fio = round.fio.iter().map(|(job, result)| {
        let mut entry = result.to_json(job);
        if let Json::Object(entries) = &mut entry {
            let ratio = engine.mb_per_s() / (result.write_bytes_per_s / 1e6);
            entries.push(("runnel_over_fio".into(), ratio.into()));
        }
        entry
    });
    Json::object([("runnel", runnel), ("fio", Json::Array(fio.collect()))])
}

fn to_json(args: &EngineArgs, rounds: &[Round], summary: &Summary) -> Json {
    let fio_summary = summary.fio.iter().map(|fio| {
        Json::object([
            ("block_bytes", fio.block_bytes.into()),
            ("mb_per_s", fio.mb_per_s.into()),
            ("runnel_over_fio", fio.runnel_over_fio.into()),
        ])
    });
    let summary_json = Json::object([
        ("runnel_mb_per_s", summary.runnel_mb_per_s.into()),
        ("append_p50_us", summary.append_p50_us.into()),
        ("append_p99_us", summary.append_p99_us.into()),
        ("bytes_per_commit", summary.bytes_per_commit.into()),
        ("fio", Json::Array(fio_summary.collect())),
    ]);
    Json::object([
        ("workload", "engine-append".into()),
        ("dir", Json::String(args.dir.display().to_string())),
        ("partitions", u64::from(args.partitions).into()),
        ("batch_bytes", args.batch_bytes.into()),
        ("record_bytes", args.record_bytes.into()),
        ("total_bytes", args.total_bytes.into()),
        ("fsync", args.fsync.into()),
        ("concurrency", u64::from(args.concurrency).into()),
        ("shards", u64::from(args.shards).into()),
        ("pin", args.pin.into()),
        ("write_bytes_max", args.write_bytes_max.into()),
        ("null_io", args.null_io.into()),
        ("max_seconds", args.max_seconds.into()),
        ("summary", summary_json),
        (
            "rounds",
            Json::Array(
                rounds
                    .iter()
                    .map(|round| round_json(round, args.fsync))
                    .collect(),
            ),
        ),
    ])
}

/// Parses `16384`, `16k`, `16KiB`, `512m`, `1g` (binary multiples).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, suffix) = lower.split_at(digits_end);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a byte count"))?;
    let shift = match suffix.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => return Err(format!("{text:?}: unknown unit (use k, m or g)")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// User + system CPU seconds of this process so far (all threads), from /proc/self/stat.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / USER_HZ)
}

fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_with_units() {
        assert_eq!(parse_bytes("16384"), Ok(16384));
        assert_eq!(parse_bytes("16k"), Ok(16384));
        assert_eq!(parse_bytes("16KiB"), Ok(16384));
        assert_eq!(parse_bytes("256kb"), Ok(256 << 10));
        assert_eq!(parse_bytes("512m"), Ok(512 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert!(parse_bytes("12q").is_err());
        assert!(parse_bytes("k").is_err());
        assert!(parse_bytes("99999999999g").is_err());
    }

    #[derive(clap::Parser)]
    struct TestCli {
        #[command(flatten)]
        engine: EngineArgs,
    }

    #[test]
    fn small_run_on_two_shards_appends_everything_and_cleans_up() {
        use clap::Parser;
        let dir = std::env::temp_dir().join(format!("runnel-load-test-{}", std::process::id()));
        let json_path = dir.join("result.json");
        let cli = TestCli::parse_from([
            "test",
            "--dir",
            dir.to_str().expect("utf-8 temp dir"),
            "--partitions",
            "3",
            "--shards",
            "2",
            "--batch-bytes",
            "16k",
            "--total-bytes",
            "384k",
            "--fsync",
            "true",
            "--concurrency",
            "4",
            "--json",
            json_path.to_str().expect("utf-8 temp dir"),
        ]);
        run(&cli.engine).expect("engine run");
        let document = std::fs::read_to_string(&json_path).expect("result file");
        let result = crate::json::parse(&document).expect("valid JSON");
        let rounds = result
            .get("rounds")
            .and_then(Json::as_array)
            .expect("rounds");
        let appended = rounds[0]
            .path(&["runnel", "appended_bytes"])
            .and_then(Json::as_f64);
        assert_eq!(appended, Some(f64::from(384 * 1024)));
        let syncs = rounds[0]
            .path(&["runnel", "fdatasyncs"])
            .and_then(Json::as_f64);
        assert!(
            syncs.is_some_and(|count| count >= 3.0),
            "one commit per log at least"
        );
        for partition in 0..3 {
            assert!(!partition_dir(&dir, partition).exists());
        }
        std::fs::remove_dir_all(&dir).expect("remove temp dir");
    }

    #[test]
    fn cpu_seconds_are_readable() {
        assert!(process_cpu_seconds().is_some_and(|seconds| seconds >= 0.0));
    }
}
