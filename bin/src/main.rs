//! `runnel`: the broker and its command-line tools. Thin: argument parsing and wiring only.

mod cli;
mod config_file;

use clap::{Parser, Subcommand};
use runnel_engine::LogConfig;
use runnel_net::frame::DEFAULT_FRAME_BYTES_MAX;
use runnel_net::group::GroupLimits;
use runnel_net::group_service::GroupConfig;
use runnel_net::server::Broker;
use runnel_net::shard::BrokerConfig;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "runnel",
    version,
    about = "A Kafka-compatible event-streaming broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a single-node broker.
    Serve(ServeArgs),
    /// Create, describe, list, delete topics and alter their configs.
    #[command(after_help = cli::EXIT_CODES_HELP)]
    Topic(cli::topic::TopicArgs),
    /// Write stdin to a topic, one record per line.
    #[command(after_help = cli::EXIT_CODES_HELP)]
    Produce(cli::produce::ProduceArgs),
    /// Print a topic's records, one per line (alone, or as a member of a consumer group).
    #[command(after_help = cli::EXIT_CODES_HELP)]
    Consume(cli::consume::ConsumeArgs),
    /// List, describe, delete consumer groups and reset their offsets.
    #[command(after_help = cli::EXIT_CODES_HELP)]
    Group(cli::group::GroupArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: String,
    /// HOST:PORT given to clients in Metadata (default: the listen address).
    #[arg(long)]
    advertised_listener: Option<String>,
    /// Directory holding topic metadata and partition logs.
    #[arg(long, default_value = "./runnel-data")]
    data_dir: PathBuf,
    /// Number of shards (one executor per core); default: all cores.
    #[arg(long)]
    shards: Option<usize>,
    /// This broker's node id.
    #[arg(long, default_value_t = 1)]
    node_id: i32,
    /// `num.partitions`: partitions of auto-created topics.
    #[arg(long, default_value_t = 1)]
    num_partitions: i32,
    /// `auto.create.topics.enable`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    auto_create_topics: bool,
    /// `socket.request.max.bytes`.
    #[arg(long, default_value_t = DEFAULT_FRAME_BYTES_MAX)]
    socket_request_max_bytes: usize,
    /// Close a connection whose started request is not complete within this many ms (a
    /// stalled half request), or whose response write stalls this long.
    #[arg(long, default_value_t = 30_000)]
    request_timeout_ms: u64,
    /// `connections.max.idle.ms`: close a connection with no request for this many ms.
    #[arg(long, default_value_t = 600_000)]
    connections_max_idle_ms: u64,
    /// Tail cache per shard, MiB.
    #[arg(long, default_value_t = 256)]
    cache_mib_per_shard: u64,
    /// Broker-wide log defaults in Kafka's server.properties format (log.retention.hours,
    /// log.segment.bytes, log.flush.interval.messages, message.max.bytes, ...).
    #[arg(long)]
    config: Option<PathBuf>,
    /// `offsets.retention.minutes`: a consumer group's committed offsets expire this long after
    /// the group became empty (by commit time for groups without members).
    #[arg(long, default_value_t = 10_080)]
    offsets_retention_minutes: u64,
    /// Testing knob: offset retention in milliseconds; overrides --offsets-retention-minutes.
    #[arg(long)]
    offsets_retention_ms: Option<u64>,
    /// `offsets.retention.check.interval.ms`: how often expired offsets are removed.
    #[arg(long, default_value_t = 600_000)]
    offsets_retention_check_interval_ms: u64,
    /// `group.initial.rebalance.delay.ms`: how long a new group's first rebalance waits for
    /// more members.
    #[arg(long, default_value_t = 3_000)]
    group_initial_rebalance_delay_ms: u32,
    /// `log.cleaner.backoff.ms`: how long a shard's log cleaner sleeps when no compacted
    /// partition needs cleaning.
    #[arg(long, default_value_t = 15_000)]
    log_cleaner_backoff_ms: u64,
    /// `log.cleaner.dedupe.buffer.size`: memory for the cleaners' key maps, split among shards.
    #[arg(long, default_value_t = 128 << 20)]
    log_cleaner_dedupe_buffer_size: u64,
    /// `log.flush.offset.checkpoint.interval.ms`: how often each partition records how much of
    /// its active segment is synced (its recovery point), so a restart after a crash checks only
    /// the data written after it. Kafka's default is 60 s; a checkpoint here costs one small
    /// unsynced write per partition that grew, so the default is 1 s.
    #[arg(long, default_value_t = 1_000)]
    log_flush_offset_checkpoint_interval_ms: u64,
}

fn main() -> ExitCode {
    // A hostile client must not make every decode error capture a backtrace.
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUNNEL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => match serve(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("runnel: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Topic(args) => cli::run(|| cli::topic::run(args)),
        Command::Produce(args) => cli::run(|| cli::produce::run(args)),
        Command::Consume(args) => cli::run(|| cli::consume::run(args)),
        Command::Group(args) => cli::run(|| cli::group::run(args)),
    }
}

fn resolve(address: &str) -> Result<SocketAddr, String> {
    address
        .to_socket_addrs()
        .map_err(|error| format!("bad address {address}: {error}"))?
        .next()
        .ok_or_else(|| format!("address {address} resolves to nothing"))
}

fn group_config(args: &ServeArgs) -> Result<GroupConfig, String> {
    let retention_ms = match args.offsets_retention_ms {
        Some(ms) => ms,
        None => args.offsets_retention_minutes.saturating_mul(60_000),
    };
    if retention_ms == 0 || args.offsets_retention_check_interval_ms == 0 {
        return Err("offset retention and its check interval must be above 0".into());
    }
    Ok(GroupConfig {
        limits: GroupLimits {
            initial_rebalance_delay_ms: i64::from(args.group_initial_rebalance_delay_ms),
            ..GroupLimits::default()
        },
        offsets_retention_ms: i64::try_from(retention_ms).unwrap_or(i64::MAX),
        offsets_retention_check_interval_ms: args.offsets_retention_check_interval_ms,
    })
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let listen = resolve(&args.listen)?;
    let (advertised_host, advertised_port) = match &args.advertised_listener {
        Some(listener) => {
            let (host, port) = listener
                .rsplit_once(':')
                .ok_or_else(|| format!("--advertised-listener {listener}: expected HOST:PORT"))?;
            let port: i32 = port
                .parse()
                .map_err(|_| format!("--advertised-listener {listener}: bad port"))?;
            (host.to_string(), port)
        }
        None => (listen.ip().to_string(), i32::from(listen.port())),
    };
    let cores = std::thread::available_parallelism().map_or(1, |count| count.get());
    let shards = args.shards.unwrap_or(cores);
    if shards == 0 || shards > 1024 {
        return Err(format!("--shards {shards}: must be between 1 and 1024"));
    }
    if args.request_timeout_ms == 0 || args.connections_max_idle_ms == 0 {
        return Err("--request-timeout-ms and --connections-max-idle-ms must be above 0".into());
    }
    if args.log_flush_offset_checkpoint_interval_ms == 0 {
        return Err("--log-flush-offset-checkpoint-interval-ms must be above 0".into());
    }
    if !(1..=10_000).contains(&args.num_partitions) {
        return Err("--num-partitions must be between 1 and 10000".into());
    }
    let config = BrokerConfig {
        listen,
        advertised_host,
        advertised_port,
        data_dir: args.data_dir.clone(),
        shards,
        node_id: args.node_id,
        frame_bytes_max: args.socket_request_max_bytes,
        request_timeout_ms: args.request_timeout_ms,
        connections_max_idle_ms: args.connections_max_idle_ms,
        auto_create_topics: args.auto_create_topics,
        default_partitions: args.num_partitions,
        log_defaults: match &args.config {
            Some(path) => config_file::load(path)?,
            None => LogConfig::default(),
        },
        cache_bytes_per_shard: args.cache_mib_per_shard << 20,
        groups: group_config(&args)?,
        cleaner: runnel_engine::CleanerConfig {
            backoff_ms: args.log_cleaner_backoff_ms.max(1),
            dedupe_buffer_bytes: (args.log_cleaner_dedupe_buffer_size / shards as u64).max(1 << 20),
            ..runnel_engine::CleanerConfig::default()
        },
        recovery_checkpoint_interval_ms: args.log_flush_offset_checkpoint_interval_ms,
    };
    let signals = block_shutdown_signals();
    let broker = Broker::start(config)?;
    println!(
        "runnel ready: listening on {} with {shards} shard(s), data in {}",
        broker.listen,
        args.data_dir.display()
    );
    wait_for_signal(&signals);
    eprintln!("runnel: shutting down (closing logs cleanly)");
    broker.shutdown();
    Ok(())
}

/// Blocks SIGINT and SIGTERM in this thread before the shard threads start (they inherit the
/// mask), so the signals are only ever taken by `wait_for_signal`.
fn block_shutdown_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) {
    let mut signal = 0;
    // SAFETY: `set` was initialised by block_shutdown_signals.
    unsafe { libc::sigwait(set, &mut signal) };
}
