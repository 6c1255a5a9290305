//! `runnel-load produce | consume | e2e`: load against any Kafka-compatible broker through
//! runnel's own client (`runnel_net::client`; produce requests pipelined with
//! [`Pipeline`](runnel_net::client::pipeline::Pipeline)).
//!
//! Threads: the main thread sets up (connects, creates the topic if asked, reads the partition
//! count and the start and end offsets), then starts `--threads` load threads, each one glommio
//! executor owning some producers and consumers (dealt out round robin). Load threads report to
//! the main thread over one bounded channel ([`Report`]): counters and HdrHistograms every
//! [`REPORT_INTERVAL`], and everything else (acknowledgements and readings for `--verify`) once
//! at the end. The main thread prints a progress line every second, stops a run whose consumers
//! make no progress for `--drain-timeout-s`, merges the histograms, runs the final check and
//! prints the summary (and `--json`).
//!
//! What crosses threads is only [`Control`] (atomics) and the report channel.

mod args;
mod consumer;
mod payload;
mod producer;
mod rate;
mod stats;
mod verify;

pub use args::{CommonArgs, ConsumeArgs, ProduceArgs, Start};

use crate::json::Json;
use args::{compression_name, parse_start};
use consumer::{Assignment, ConsumerPlan, End, GroupPlan, VerifyMode};
use producer::ProducerPlan;
use runnel_net::client::{
    Client, ClientConfig, ClientError, FetchOptions, NewTopic, EARLIEST_OFFSET, LATEST_OFFSET,
};
use stats::{Delta, Report, ThreadOutcome, Window};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use verify::Violations;

/// How often a load thread sends its counters.
pub const REPORT_INTERVAL: Duration = Duration::from_millis(250);
/// How often the progress line is printed.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Default run length of produce and e2e without `--duration` or `--records`.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Reports in the channel before a load thread waits (the main thread drains it constantly).
const REPORTS_QUEUED_MAX: usize = 256;
/// Error messages each load thread prints in full (every error is counted).
const ERRORS_PRINTED_MAX: u32 = 5;
/// How long setup waits for a new topic's partitions to have leaders.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest producers wait for group members to join before an e2e run starts.
pub const GROUP_JOIN_WAIT: Duration = Duration::from_secs(60);
/// Exit code when `--verify` found a violation.
pub const EXIT_VERIFY_FAILED: u8 = 3;

/// `runnel-load produce`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProduceCommand {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    produce: ProduceArgs,
}

/// `runnel-load consume`.
#[derive(clap::Args, Debug, Clone)]
pub struct ConsumeCommand {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    consume: ConsumeArgs,
    /// Where to start in each partition: earliest, latest or an offset. Without `--records` or
    /// `--duration`, reading stops at the log end as it was at the start.
    #[arg(long, default_value = "earliest", value_parser = parse_start)]
    from: Start,
}

/// `runnel-load e2e`.
#[derive(clap::Args, Debug, Clone)]
pub struct E2eCommand {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    produce: ProduceArgs,
    #[command(flatten)]
    consume: ConsumeArgs,
}

/// The workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Produce,
    Consume,
    E2e,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
            Mode::E2e => "e2e",
        }
    }
}

/// One run, whatever the mode.
#[derive(Clone, Debug)]
struct Spec {
    mode: Mode,
    common: CommonArgs,
    produce: Option<ProduceArgs>,
    consume: Option<ConsumeArgs>,
    from: Start,
}

/// Runs `runnel-load produce`. `Ok(false)`: `--verify` found a violation.
pub fn run_produce(command: ProduceCommand) -> Result<bool, String> {
    run(Spec {
        mode: Mode::Produce,
        common: command.common,
        produce: Some(command.produce),
        consume: None,
        from: Start::Latest,
    })
}

/// Runs `runnel-load consume`.
pub fn run_consume(command: ConsumeCommand) -> Result<bool, String> {
    run(Spec {
        mode: Mode::Consume,
        common: command.common,
        produce: None,
        consume: Some(command.consume),
        from: command.from,
    })
}

/// Runs `runnel-load e2e`.
pub fn run_e2e(command: E2eCommand) -> Result<bool, String> {
    run(Spec {
        mode: Mode::E2e,
        common: command.common,
        produce: Some(command.produce),
        consume: Some(command.consume),
        from: Start::Latest,
    })
}

/// Shared by every load thread and the main thread.
#[derive(Debug)]
pub struct Control {
    /// Stop now: producers stop creating records (and flush), consumers stop reading.
    pub stop: AtomicBool,
    /// Producers not finished yet.
    pub producers_running: AtomicUsize,
    /// e2e with `--group`: members that have not joined yet; producers wait for them (at most
    /// [`GROUP_JOIN_WAIT`]) so end-to-end latency does not include the first rebalance.
    pub members_joining: AtomicUsize,
    /// Per partition: one past the highest acknowledged offset.
    pub acked_end: Vec<AtomicI64>,
    /// Records read by all consumers.
    pub consumed_total: AtomicU64,
    /// consume `--records`.
    pub consume_limit: Option<u64>,
}

/// One load thread's counters and results; its producers and consumers add to them.
#[derive(Debug, Default)]
pub struct ThreadState {
    /// Counters since the last report.
    pub delta: RefCell<Delta>,
    /// Everything handed over at the end.
    pub outcome: RefCell<ThreadOutcome>,
    errors_printed: Cell<u32>,
}

impl ThreadState {
    /// Counts an error, printing the first few in full.
    pub fn error(&self, error: &ClientError) {
        if self.errors_printed.get() < ERRORS_PRINTED_MAX {
            self.errors_printed.set(self.errors_printed.get() + 1);
            eprintln!("runnel-load: error: {error}");
        }
        self.error_named(stats::error_name(error));
    }

    /// Counts an error by name.
    pub fn error_named(&self, name: String) {
        self.delta.borrow_mut().error(name);
    }
}

/// What setup found out.
struct Setup {
    partitions: i32,
    /// Per partition, where consumers start.
    starts: Vec<i64>,
    /// Per partition, where consume stops (the log end at the start), if it stops there.
    ends: Option<Vec<i64>>,
}

/// A producer's or a consumer's plan, for a load thread.
enum Worker {
    Producer(ProducerPlan),
    Consumer(ConsumerPlan),
}

fn run(mut spec: Spec) -> Result<bool, String> {
    check_spec(&mut spec)?;
    let client_config = ClientConfig {
        client_id: format!("runnel-load-{}", spec.mode.name()),
        connect_timeout: Duration::from_millis(spec.common.request_timeout_ms),
        request_timeout: Duration::from_millis(spec.common.request_timeout_ms),
        ..ClientConfig::default()
    };
    let setup = on_executor(setup(spec.clone(), client_config.clone()))??;
    let workers = plan_workers(&spec, &setup, &client_config);
    let producers = workers
        .iter()
        .filter(|worker| matches!(worker, Worker::Producer(_)))
        .count();
    let control = Arc::new(Control {
        stop: AtomicBool::new(false),
        producers_running: AtomicUsize::new(producers),
        members_joining: AtomicUsize::new(match (&spec.consume, spec.mode) {
            (Some(consume), Mode::E2e) if consume.group.is_some() => workers.len() - producers,
            _ => 0,
        }),
        acked_end: (0..setup.partitions).map(|_| AtomicI64::new(0)).collect(),
        consumed_total: AtomicU64::new(0),
        consume_limit: (spec.mode == Mode::Consume)
            .then_some(spec.common.records)
            .flatten(),
    });
    let threads = spec
        .common
        .threads
        .map_or_else(
            || std::thread::available_parallelism().map_or(1, usize::from),
            |threads| threads as usize,
        )
        .min(workers.len())
        .max(1);
    print_header(&spec, &setup, producers, workers.len() - producers, threads);
    let started = Instant::now();
    let (handles, reports) = start_threads(workers, threads, &control)?;
    // Consumers with an end to reach (e2e once the producers are done, consume to the log
    // end) are stopped if they stall; others run to their --duration or --records.
    let stall_stop = spec.mode == Mode::E2e || setup.ends.is_some();
    let (total, finished, timeline) =
        watch(&spec, &control, &reports, threads, started, stall_stop);
    let elapsed = started.elapsed();
    for handle in handles {
        handle
            .join()
            .map_err(|error| format!("a load thread failed: {error}"))?;
    }
    if finished.len() != threads {
        return Err("a load thread ended without reporting".into());
    }
    let mut summary = summarize(&spec, total, finished, elapsed);
    summary.timeline = timeline;
    print_summary(&summary);
    if let Some(path) = &spec.common.json {
        let document = summary_json(&spec, &setup, threads, &summary).to_string() + "\n";
        std::fs::write(path, document)
            .map_err(|error| format!("writing {}: {error}", path.display()))?;
    }
    Ok(summary
        .verify
        .as_ref()
        .is_none_or(|verify| verify.violations.is_empty()))
}

/// Checks the combination of arguments and fills in defaults.
fn check_spec(spec: &mut Spec) -> Result<(), String> {
    let common = &mut spec.common;
    if let Some(consume) = &spec.consume {
        if consume.group.is_some() && common.verify {
            return Err(
                "--verify reads each partition with one consumer from start to end: leave out \
                 --group (a rebalance may hand records to another member twice)"
                    .into(),
            );
        }
    }
    if let Some(produce) = &spec.produce {
        if !(1..=args::SIZE_MAX_BYTES).contains(&produce.record_size) {
            return Err("--record-size must be from 1 byte to 16 MiB".into());
        }
        if !(1..=args::SIZE_MAX_BYTES).contains(&produce.batch_size) {
            return Err("--batch-size must be from 1 byte to 16 MiB".into());
        }
        if produce.idempotence && produce.acks != -1 {
            return Err("--idempotence needs --acks all".into());
        }
        if common.verify && produce.acks == 0 {
            return Err("--verify needs acknowledgements: use --acks 1 or all".into());
        }
        if common.verify && (produce.record_size as usize) < payload::HEADER_LEN {
            return Err(format!(
                "--verify needs --record-size of at least {} (the value header)",
                payload::HEADER_LEN
            ));
        }
        if common.duration.is_none() && common.records.is_none() {
            common.duration = Some(DEFAULT_DURATION);
        }
    }
    if spec.mode == Mode::Consume
        && spec.from == Start::Latest
        && common.duration.is_none()
        && common.records.is_none()
    {
        return Err("consume --from latest needs --duration or --records".into());
    }
    Ok(())
}

/// Runs `future` on a glommio executor on this thread.
fn on_executor<T>(future: impl std::future::Future<Output = T>) -> Result<T, String> {
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .map_err(|error| format!("cannot start an executor: {error}"))?;
    Ok(executor.run(future))
}

async fn setup(spec: Spec, config: ClientConfig) -> Result<Setup, String> {
    let bootstrap = &spec.common.bootstrap;
    let topic = &spec.common.topic;
    let mut client = Client::connect(bootstrap, config)
        .await
        .map_err(|error| error.to_string())?;
    if spec.common.create {
        create_topic(&mut client, &spec.common).await?;
    }
    let partitions = wait_for_leaders(&mut client, topic, spec.common.create).await?;
    let mut starts = Vec::with_capacity(partitions as usize);
    let mut ends = Vec::with_capacity(partitions as usize);
    for partition in 0..partitions {
        let start = match (spec.mode, spec.from) {
            (Mode::Consume, Start::Earliest) => {
                list_offset(&mut client, topic, partition, EARLIEST_OFFSET).await?
            }
            (Mode::Consume, Start::Offset(offset)) => offset,
            _ => list_offset(&mut client, topic, partition, LATEST_OFFSET).await?,
        };
        starts.push(start);
        if spec.mode == Mode::Consume {
            ends.push(list_offset(&mut client, topic, partition, LATEST_OFFSET).await?);
        }
    }
    let reads_to_end = spec.mode == Mode::Consume
        && spec.common.duration.is_none()
        && spec.common.records.is_none();
    Ok(Setup {
        partitions,
        starts,
        ends: reads_to_end.then_some(ends),
    })
}

async fn create_topic(client: &mut Client, common: &CommonArgs) -> Result<(), String> {
    let topic = NewTopic {
        name: common.topic.clone(),
        partitions: common.partitions.map(|count| count as i32),
        replication_factor: common.replication_factor,
        configs: Vec::new(),
    };
    match client.create_topic(&topic, false).await {
        Ok(()) => Ok(()),
        Err(error) if error.kafka_error().is_some_and(|error| error.code == 36) => {
            eprintln!(
                "runnel-load: topic {} exists already; using it as it is",
                common.topic
            );
            Ok(())
        }
        Err(error) => Err(error.to_string()),
    }
}

/// The topic's partition count, once every partition has a leader (a new topic's may not yet).
async fn wait_for_leaders(client: &mut Client, topic: &str, created: bool) -> Result<i32, String> {
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    loop {
        let result = client.topic(topic, false).await;
        let ready = match &result {
            Ok(info) => {
                !info.partitions.is_empty()
                    && info
                        .partitions
                        .iter()
                        .all(|partition| partition.leader >= 0 && partition.error.is_none())
            }
            Err(_) => false,
        };
        if ready {
            let info = result.map_err(|error| error.to_string())?;
            return i32::try_from(info.partitions.len()).map_err(|_| "too many partitions".into());
        }
        let retry = created && Instant::now() < deadline;
        match result {
            Err(error) if !retry => {
                let hint = if created {
                    ""
                } else {
                    " (add --create to make it)"
                };
                return Err(format!("{error}{hint}"));
            }
            Ok(_) if !retry => {
                return Err(format!("topic {topic}: some partitions have no leader"));
            }
            _ => glommio::timer::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Errors a partition answers while its leadership settles (Kafka right after CreateTopics:
/// Metadata already names the leader before that broker acts as one): retried during setup.
const SETTLING_ERRORS: [i16; 3] = [
    3, // UNKNOWN_TOPIC_OR_PARTITION
    5, // LEADER_NOT_AVAILABLE
    6, // NOT_LEADER_OR_FOLLOWER
];

async fn list_offset(
    client: &mut Client,
    topic: &str,
    partition: i32,
    which: i64,
) -> Result<i64, String> {
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    loop {
        match client.list_offset(topic, partition, which).await {
            Ok(offset) => return Ok(offset),
            Err(error)
                if Instant::now() < deadline
                    && error
                        .kafka_error()
                        .is_some_and(|error| SETTLING_ERRORS.contains(&error.code)) =>
            {
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error.to_string()),
        }
    }
}

/// A number unique enough to tell this run's producers from earlier runs' in stamped values.
fn run_id() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    let mut mix = payload::SplitMix64::new(nanos ^ u64::from(std::process::id()).rotate_left(32));
    mix.next_u64() & 0xffff_ffff
}

fn plan_workers(spec: &Spec, setup: &Setup, client: &ClientConfig) -> Vec<Worker> {
    let mut workers = Vec::new();
    let common = &spec.common;
    if let Some(produce) = &spec.produce {
        let run_id = run_id();
        let producers = u64::from(produce.producers);
        let rate = produce
            .rate
            .map(|rate| rate.records_per_second(produce.record_size) / producers as f64);
        for index in 0..produce.producers {
            let records = common
                .records
                .map(|total| total / producers + u64::from(u64::from(index) < total % producers));
            if records == Some(0) {
                continue;
            }
            workers.push(Worker::Producer(ProducerPlan {
                index,
                load_id: run_id << 32 | u64::from(index),
                bootstrap: common.bootstrap.clone(),
                client: client.clone(),
                topic: common.topic.clone(),
                partitions: setup.partitions,
                record_bytes: produce.record_size as usize,
                keys: produce.keys,
                rate_per_s: rate,
                records,
                duration: common.duration,
                acks: produce.acks,
                batch_bytes: produce.batch_size as usize,
                linger: Duration::from_millis(produce.linger_ms),
                max_in_flight: produce.max_in_flight as usize,
                compression: produce.compression,
                idempotence: produce.idempotence,
                verify: common.verify,
            }));
        }
    }
    if let Some(consume) = &spec.consume {
        let consumers = (consume.consumers as usize).min(setup.partitions as usize);
        if consumers < consume.consumers as usize {
            eprintln!(
                "runnel-load: {} consumers for {} partitions: starting {consumers}",
                consume.consumers, setup.partitions
            );
        }
        let verify = match (common.verify, spec.mode) {
            (false, _) => VerifyMode::Off,
            (true, Mode::E2e) => VerifyMode::Acknowledged,
            (true, _) => VerifyMode::Standalone {
                from_log_start: spec.from == Start::Earliest,
            },
        };
        let fetch = FetchOptions {
            max_wait_ms: consume.fetch_max_wait_ms,
            ..FetchOptions::default()
        };
        let end = |slot: usize| match (&setup.ends, spec.mode) {
            (Some(ends), _) => End::Offset(ends[slot]),
            (None, Mode::E2e) => End::Tail,
            (None, _) => End::Never,
        };
        let group = consume.group.as_ref().map(|group_id| GroupPlan {
            group_id: group_id.clone(),
            starts: setup.starts.clone(),
            ends: (0..setup.partitions as usize).map(end).collect(),
        });
        for index in 0..consumers {
            // In a group, the group deals the partitions out.
            let assignments = match group {
                Some(_) => Vec::new(),
                None => (index..setup.partitions as usize)
                    .step_by(consumers)
                    .map(|slot| Assignment {
                        partition: slot as i32,
                        start: setup.starts[slot],
                        end: end(slot),
                    })
                    .collect(),
            };
            workers.push(Worker::Consumer(ConsumerPlan {
                bootstrap: common.bootstrap.clone(),
                client: client.clone(),
                topic: common.topic.clone(),
                assignments,
                group: group.clone(),
                duration: (spec.mode == Mode::Consume)
                    .then_some(common.duration)
                    .flatten(),
                fetch,
                verify,
                e2e: spec.mode == Mode::E2e,
            }));
        }
    }
    workers
}

type ThreadHandles = Vec<glommio::ExecutorJoinHandle<()>>;

/// Starts the load threads; worker `i` goes to thread `i % threads`.
fn start_threads(
    workers: Vec<Worker>,
    threads: usize,
    control: &Arc<Control>,
) -> Result<(ThreadHandles, flume::Receiver<Report>), String> {
    let mut per_thread: Vec<Vec<Worker>> = (0..threads).map(|_| Vec::new()).collect();
    for (index, worker) in workers.into_iter().enumerate() {
        per_thread[index % threads].push(worker);
    }
    let (reports, outcomes) = flume::bounded(REPORTS_QUEUED_MAX);
    let mut handles = Vec::with_capacity(threads);
    for (index, workers) in per_thread.into_iter().enumerate() {
        let (control, reports) = (control.clone(), reports.clone());
        let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .name(&format!("load-{index}"))
            .spawn(move || load_thread(workers, control, reports))
            .map_err(|error| format!("starting load thread {index}: {error}"))?;
        handles.push(handle);
    }
    Ok((handles, outcomes))
}

/// One load thread: runs its producers and consumers, reporting as it goes.
async fn load_thread(workers: Vec<Worker>, control: Arc<Control>, reports: flume::Sender<Report>) {
    let thread = Rc::new(ThreadState::default());
    let reporter = glommio::spawn_local(report_progress(thread.clone(), reports.clone()));
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|worker| match worker {
            Worker::Producer(plan) => {
                glommio::spawn_local(producer::run(plan, thread.clone(), control.clone()))
            }
            Worker::Consumer(plan) => {
                glommio::spawn_local(consumer::run(plan, thread.clone(), control.clone()))
            }
        })
        .collect();
    for task in tasks {
        task.await;
    }
    reporter.cancel().await;
    let mut outcome = thread.outcome.take();
    outcome.delta = thread.delta.take();
    // The main thread waits for this; it only goes away if the run is torn down.
    let _ = reports
        .send_async(Report::Finished(Box::new(outcome)))
        .await;
}

async fn report_progress(thread: Rc<ThreadState>, reports: flume::Sender<Report>) {
    loop {
        glommio::timer::sleep(REPORT_INTERVAL).await;
        let delta = thread.delta.borrow_mut().take();
        if reports
            .send_async(Report::Progress(Box::new(delta)))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// One progress interval of the run, for the throughput-over-time plot.
#[derive(Clone, Copy, Debug)]
struct Tick {
    /// Seconds since the start, at the end of the interval.
    elapsed_s: f64,
    produced_mb_per_s: f64,
    consumed_mb_per_s: f64,
}

/// Progress intervals kept for `--json` (a day at one per second); later ones are dropped.
const TIMELINE_MAX: usize = 86_400;

/// The main thread during the run: prints progress, stops a stalled run, collects outcomes
/// and the throughput of each progress interval.
fn watch(
    spec: &Spec,
    control: &Control,
    reports: &flume::Receiver<Report>,
    threads: usize,
    started: Instant,
    stall_stop: bool,
) -> (Delta, Vec<ThreadOutcome>, Vec<Tick>) {
    let mut timeline = Vec::new();
    let mut total = Delta::default();
    let mut interval = Delta::default();
    let mut finished = Vec::new();
    let mut next_tick = started + PROGRESS_INTERVAL;
    let mut last_tick = started;
    let mut idle_since: Option<Instant> = None;
    let drain_timeout = Duration::from_secs(spec.common.drain_timeout_s);
    while finished.len() < threads {
        match reports.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
            Ok(Report::Progress(delta)) => {
                interval.add(&delta);
                total.add(&delta);
            }
            Ok(Report::Finished(outcome)) => {
                interval.add(&outcome.delta);
                total.add(&outcome.delta);
                finished.push(*outcome);
            }
            Err(flume::RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                if !spec.common.quiet {
                    print_progress(spec, &interval, &total, now - started, now - last_tick);
                }
                if timeline.len() < TIMELINE_MAX {
                    let seconds = (now - last_tick).as_secs_f64().max(1e-3);
                    timeline.push(Tick {
                        elapsed_s: (now - started).as_secs_f64(),
                        produced_mb_per_s: interval.produced_bytes as f64 / seconds / 1e6,
                        consumed_mb_per_s: interval.consumed_bytes as f64 / seconds / 1e6,
                    });
                }
                let producing = control.producers_running.load(Ordering::Acquire) > 0;
                if !stall_stop || producing || interval.consumed_records > 0 {
                    idle_since = None;
                } else {
                    let idle = *idle_since.get_or_insert(last_tick);
                    if now - idle >= drain_timeout && !control.stop.swap(true, Ordering::AcqRel) {
                        eprintln!(
                            "runnel-load: consumers read nothing for {} s: stopping",
                            spec.common.drain_timeout_s
                        );
                    }
                }
                interval = Delta::default();
                last_tick = now;
                next_tick += PROGRESS_INTERVAL;
            }
            Err(flume::RecvTimeoutError::Disconnected) => break,
        }
    }
    (total, finished, timeline)
}

fn print_header(spec: &Spec, setup: &Setup, producers: usize, consumers: usize, threads: usize) {
    let common = &spec.common;
    let mut line = format!(
        "runnel-load {}: topic {} ({} partitions) at {}; ",
        spec.mode.name(),
        common.topic,
        setup.partitions,
        common.bootstrap
    );
    if let Some(produce) = &spec.produce {
        line += &format!(
            "{producers} producers (records {} B, keys {}, rate {}, acks {}, batch {} B, \
             linger {} ms, in flight {}, compression {}, idempotence {}); ",
            produce.record_size,
            produce.keys,
            produce
                .rate
                .map_or_else(|| "unlimited".to_string(), |rate| rate.to_string()),
            if produce.acks == -1 {
                "all".to_string()
            } else {
                produce.acks.to_string()
            },
            produce.batch_size,
            produce.linger_ms,
            produce.max_in_flight,
            compression_name(produce.compression),
            if produce.idempotence { "on" } else { "off" },
        );
    }
    if spec.consume.is_some() {
        line += &format!("{consumers} consumers; ");
    }
    line += &format!("{threads} threads");
    if let Some(duration) = common.duration {
        line += &format!(", {:.1} s", duration.as_secs_f64());
    }
    if let Some(records) = common.records {
        line += &format!(", {} records", stats::thousands(records));
    }
    if common.verify {
        line += ", verify";
    }
    println!("{line}");
}

fn print_progress(spec: &Spec, interval: &Delta, total: &Delta, elapsed: Duration, span: Duration) {
    let seconds = span.as_secs_f64().max(1e-3);
    let mut parts = vec![format!("{:>6.1}s", elapsed.as_secs_f64())];
    if spec.produce.is_some() {
        parts.push(format!(
            "produced {:>9} rec/s {:>8.1} MB/s p99 {}",
            stats::thousands((interval.produced_records as f64 / seconds) as u64),
            interval.produced_bytes as f64 / seconds / 1e6,
            stats::millis(total.produce_latency_us.value_at_quantile(0.99)),
        ));
    }
    if spec.consume.is_some() {
        let mut consumed = format!(
            "consumed {:>9} rec/s {:>8.1} MB/s",
            stats::thousands((interval.consumed_records as f64 / seconds) as u64),
            interval.consumed_bytes as f64 / seconds / 1e6,
        );
        if spec.mode == Mode::E2e {
            consumed += &format!(
                " e2e p99 {}",
                stats::millis(total.e2e_latency_us.value_at_quantile(0.99))
            );
        }
        parts.push(consumed);
    }
    parts.push(format!("errors {}", stats::thousands(total.error_count())));
    println!("{}", parts.join(" | "));
}

/// One side's figures.
struct Side {
    records: u64,
    bytes: u64,
    seconds: f64,
}

impl Side {
    fn records_per_s(&self) -> f64 {
        self.records as f64 / self.seconds
    }

    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e6
    }
}

/// The verify outcome.
struct VerifySummary {
    violations: Violations,
    acknowledged: Option<u64>,
    read: u64,
    duplicates_allowed: u64,
}

/// Everything the summary and the JSON file show.
struct Summary {
    mode: Mode,
    total: Delta,
    elapsed: Duration,
    /// Throughput per progress interval (filled in after `summarize`).
    timeline: Vec<Tick>,
    produce: Option<Side>,
    consume: Option<Side>,
    verify: Option<VerifySummary>,
}

fn summarize(
    spec: &Spec,
    total: Delta,
    finished: Vec<ThreadOutcome>,
    elapsed: Duration,
) -> Summary {
    let mut produce_window = None;
    let mut consume_window = None;
    let (mut acked, mut failed, mut consumed) = (Vec::new(), Vec::new(), Vec::new());
    let mut violations = Violations::default();
    let mut duplicates_allowed = 0;
    for outcome in finished {
        produce_window = Window::merge(produce_window, outcome.produce_window);
        consume_window = Window::merge(consume_window, outcome.consume_window);
        acked.extend(outcome.acked);
        failed.extend(outcome.failed);
        consumed.extend(outcome.consumed);
        violations.merge(outcome.violations);
        duplicates_allowed += outcome.duplicates_allowed;
    }
    let side = |records, bytes, window: Option<Window>| Side {
        records,
        bytes,
        seconds: window.map_or(elapsed.as_secs_f64().max(1e-6), |window| window.seconds()),
    };
    let produce = spec
        .produce
        .as_ref()
        .map(|_| side(total.produced_records, total.produced_bytes, produce_window));
    let consume = spec
        .consume
        .as_ref()
        .map(|_| side(total.consumed_records, total.consumed_bytes, consume_window));
    let verify = spec.common.verify.then(|| match spec.mode {
        Mode::E2e => {
            let outcome = verify::check_acknowledged(&acked, &failed, consumed);
            VerifySummary {
                violations: outcome.violations,
                acknowledged: Some(outcome.acknowledged),
                read: outcome.read,
                duplicates_allowed,
            }
        }
        Mode::Produce => VerifySummary {
            acknowledged: Some(acked.iter().map(|ack| u64::from(ack.count)).sum()),
            violations: verify::check_acknowledgements(&acked),
            read: 0,
            duplicates_allowed,
        },
        Mode::Consume => VerifySummary {
            violations,
            acknowledged: None,
            read: total.consumed_records,
            duplicates_allowed,
        },
    });
    Summary {
        mode: spec.mode,
        total,
        elapsed,
        timeline: Vec::new(),
        produce,
        consume,
        verify,
    }
}

fn print_summary(summary: &Summary) {
    println!("--- summary ({:.2} s) ---", summary.elapsed.as_secs_f64());
    if let Some(side) = &summary.produce {
        println!(
            "produce: {} records, {:.1} MB in {:.2} s: {} records/s, {:.2} MB/s",
            stats::thousands(side.records),
            side.bytes as f64 / 1e6,
            side.seconds,
            stats::thousands(side.records_per_s() as u64),
            side.mb_per_s()
        );
        let histogram = &summary.total.produce_latency_us;
        if !histogram.is_empty() {
            println!("  produce latency: {}", stats::percentiles_line(histogram));
        }
    }
    if let Some(side) = &summary.consume {
        println!(
            "consume: {} records, {:.1} MB in {:.2} s: {} records/s, {:.2} MB/s",
            stats::thousands(side.records),
            side.bytes as f64 / 1e6,
            side.seconds,
            stats::thousands(side.records_per_s() as u64),
            side.mb_per_s()
        );
        let histogram = &summary.total.e2e_latency_us;
        if summary.mode == Mode::E2e && !histogram.is_empty() {
            println!(
                "  end-to-end latency: {}",
                stats::percentiles_line(histogram)
            );
        }
    }
    println!("errors: {}", stats::errors_line(&summary.total.errors));
    let Some(verify) = &summary.verify else {
        return;
    };
    if verify.violations.is_empty() {
        let acknowledged = verify.acknowledged.map_or_else(String::new, |count| {
            format!("{} acknowledged, ", stats::thousands(count))
        });
        println!(
            "verify: OK ({acknowledged}{} read; {} duplicates from non-idempotent producers)",
            stats::thousands(verify.read),
            stats::thousands(verify.duplicates_allowed)
        );
        return;
    }
    let kinds: Vec<String> = verify
        .violations
        .counts()
        .iter()
        .map(|(kind, count)| format!("{} {}", kind.name(), stats::thousands(*count)))
        .collect();
    println!(
        "verify: FAILED: {} records in violation ({})",
        stats::thousands(verify.violations.total()),
        kinds.join(", ")
    );
    for example in verify.violations.examples() {
        println!("  {example}");
    }
}

fn side_json(side: &Side) -> Vec<(String, Json)> {
    vec![
        ("records".into(), Json::from(side.records)),
        ("bytes".into(), Json::from(side.bytes)),
        ("seconds".into(), Json::from(side.seconds)),
        ("records_per_s".into(), Json::from(side.records_per_s())),
        ("mb_per_s".into(), Json::from(side.mb_per_s())),
    ]
}

fn summary_json(spec: &Spec, setup: &Setup, threads: usize, summary: &Summary) -> Json {
    let common = &spec.common;
    let mut config = vec![
        ("threads".to_string(), Json::from(threads as u64)),
        ("verify".to_string(), Json::from(common.verify)),
        (
            "duration_s".to_string(),
            Json::from(common.duration.map(|duration| duration.as_secs_f64())),
        ),
        ("records".to_string(), Json::from(common.records)),
    ];
    if let Some(produce) = &spec.produce {
        config.extend([
            (
                "producers".to_string(),
                Json::from(u64::from(produce.producers)),
            ),
            ("record_size".to_string(), Json::from(produce.record_size)),
            ("keys".to_string(), Json::String(produce.keys.to_string())),
            (
                "rate".to_string(),
                produce
                    .rate
                    .map_or(Json::Null, |rate| Json::String(rate.to_string())),
            ),
            ("acks".to_string(), Json::Number(f64::from(produce.acks))),
            ("batch_size".to_string(), Json::from(produce.batch_size)),
            ("linger_ms".to_string(), Json::from(produce.linger_ms)),
            (
                "max_in_flight".to_string(),
                Json::from(u64::from(produce.max_in_flight)),
            ),
            (
                "compression".to_string(),
                Json::from(compression_name(produce.compression)),
            ),
            ("idempotence".to_string(), Json::from(produce.idempotence)),
        ]);
    }
    if let Some(consume) = &spec.consume {
        config.push((
            "consumers".to_string(),
            Json::from(u64::from(consume.consumers)),
        ));
    }
    let produce = summary.produce.as_ref().map_or(Json::Null, |side| {
        let mut entries = side_json(side);
        let latency = stats::percentiles_json(&summary.total.produce_latency_us);
        entries.push(("latency_us".into(), latency));
        let cdf = stats::cdf_json(&summary.total.produce_latency_us);
        entries.push(("latency_cdf_us".into(), cdf));
        Json::Object(entries)
    });
    let consume = summary.consume.as_ref().map_or(Json::Null, |side| {
        let mut entries = side_json(side);
        if summary.mode == Mode::E2e {
            let latency = stats::percentiles_json(&summary.total.e2e_latency_us);
            entries.push(("e2e_latency_us".into(), latency));
            let cdf = stats::cdf_json(&summary.total.e2e_latency_us);
            entries.push(("e2e_latency_cdf_us".into(), cdf));
        }
        Json::Object(entries)
    });
    let verify = summary.verify.as_ref().map_or(Json::Null, |verify| {
        Json::object([
            ("ok", Json::from(verify.violations.is_empty())),
            ("violations", Json::from(verify.violations.total())),
            (
                "by_kind",
                Json::Object(
                    verify
                        .violations
                        .counts()
                        .iter()
                        .map(|(kind, count)| (kind.name().to_string(), Json::from(*count)))
                        .collect(),
                ),
            ),
            (
                "examples",
                Json::Array(
                    verify
                        .violations
                        .examples()
                        .iter()
                        .map(|example| Json::String(example.to_string()))
                        .collect(),
                ),
            ),
            ("acknowledged", Json::from(verify.acknowledged)),
            ("read", Json::from(verify.read)),
            ("duplicates_allowed", Json::from(verify.duplicates_allowed)),
        ])
    });
    Json::object([
        ("tool", Json::from("runnel-load")),
        ("mode", Json::from(spec.mode.name())),
        ("bootstrap", Json::from(common.bootstrap.as_str())),
        ("topic", Json::from(common.topic.as_str())),
        ("partitions", Json::from(setup.partitions as u64)),
        ("config", Json::Object(config)),
        ("elapsed_s", Json::from(summary.elapsed.as_secs_f64())),
        ("produce", produce),
        ("consume", consume),
        ("errors", stats::errors_json(&summary.total.errors)),
        ("verify", verify),
        (
            "timeline",
            Json::Array(
                summary
                    .timeline
                    .iter()
                    .map(|tick| {
                        Json::object([
                            ("elapsed_s", Json::from(tick.elapsed_s)),
                            ("produced_mb_per_s", Json::from(tick.produced_mb_per_s)),
                            ("consumed_mb_per_s", Json::from(tick.consumed_mb_per_s)),
                        ])
                    })
                    .collect(),
            ),
        ),
    ])
}
