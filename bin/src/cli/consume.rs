//! `runnel consume --topic T`: prints records, one per line, like Kafka's console consumer.
//!
//! Without `--group`, the partitions (all, or `--partition`) are read directly from a start
//! offset (`--offset`, `--from-beginning`, or else the log end, waiting for new records). Stops
//! after `--max-messages`, after `--timeout-ms` without a new record, or when interrupted.
//!
//! With `--group G` it is a classic-protocol group member (`runnel_net::client::group`), able to
//! share a topic with Java or librdkafka consumers: it reads the partitions the group assigns it
//! from the group's committed offsets (or per `--reset` where there are none), commits every
//! `--auto-commit-interval-ms`, before rejoining a rebalance and at exit, and leaves the group
//! when it stops (also on Ctrl-C / SIGTERM, noticed between fetches; a second signal kills).
//! Text output follows Kafka's DefaultMessageFormatter (fields joined by the key separator,
//! `null` for null keys and values); `--json` prints one object per record instead.

use super::{client_config, connect, write_json, CliError, ConnectionArgs};
use runnel_net::client::group::{
    Assignor, GroupMember, MemberConfig, MemberSignal, OffsetToCommit, ILLEGAL_GENERATION,
    REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID,
};
use runnel_net::client::records::{Record, RecordBatch};
use runnel_net::client::{
    Client, ClientError, FetchOptions, FetchPosition, KafkaError, EARLIEST_OFFSET, LATEST_OFFSET,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Longest a fetch waits for new records before the loop looks at its limits again.
const FETCH_WAIT_MS: i32 = 500;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const OFFSET_OUT_OF_RANGE: i16 = 1;
/// How often a group member without partitions looks at its signals and limits.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// `runnel consume ...`.
#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Topic to read.
    #[arg(long)]
    topic: String,
    /// Start at the earliest retained record (default: only records written from now on).
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Read only this partition (default: every partition of the topic).
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..), conflicts_with = "group")]
    partition: Option<i32>,
    /// Start offset in `--partition`: a number, `earliest` or `latest`.
    #[arg(long, requires = "partition", value_parser = parse_start)]
    offset: Option<Start>,
    /// Stop after this many records.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_messages: Option<u64>,
    /// Stop when no record arrives for this many milliseconds.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: Option<u64>,
    /// Print each record's key before its value.
    #[arg(long)]
    print_key: bool,
    /// Print each record's offset (`Offset:N`).
    #[arg(long)]
    print_offset: bool,
    /// Print each record's partition (`Partition:N`).
    #[arg(long)]
    print_partition: bool,
    /// Print each record's timestamp (`CreateTime:MS` or `LogAppendTime:MS`).
    #[arg(long)]
    print_timestamp: bool,
    /// Print each record's headers (`k:v,k2:v2` or `NO_HEADERS`).
    #[arg(long)]
    print_headers: bool,
    /// Text between the printed fields.
    #[arg(long, default_value = "\t")]
    key_separator: String,
    /// Print one JSON object per record (keys and values as UTF-8 text, invalid bytes replaced).
    #[arg(long)]
    json: bool,
    /// Consume as a member of this consumer group (partitions assigned by the group, offsets
    /// committed to it).
    #[arg(long)]
    group: Option<String>,
    /// With --group: where to start in a partition the group has no committed offset for (or
    /// whose committed offset is out of range). Default: `earliest` with --from-beginning, else
    /// `latest`.
    #[arg(
        long,
        requires = "group",
        conflicts_with = "from_beginning",
        value_enum
    )]
    reset: Option<Reset>,
    /// With --group: commit the consumed positions this often (also before a rebalance and at
    /// exit).
    #[arg(long, value_name = "MS", requires = "group", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    auto_commit_interval_ms: u64,
    /// With --group: the group's `session.timeout.ms` for this member.
    #[arg(long, value_name = "MS", requires = "group", default_value_t = 45_000,
          value_parser = clap::value_parser!(i32).range(1..))]
    session_timeout_ms: i32,
    /// With --group: time between heartbeats.
    #[arg(long, value_name = "MS", requires = "group", default_value_t = 3_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    heartbeat_interval_ms: u64,
    /// With --group: how long the coordinator waits for members to rejoin a rebalance (Kafka's
    /// `max.poll.interval.ms`).
    #[arg(long, value_name = "MS", requires = "group", default_value_t = 300_000,
          value_parser = clap::value_parser!(i32).range(1..))]
    rebalance_timeout_ms: i32,
    /// With --group: assignors offered, preferred first.
    #[arg(long, value_name = "NAME,...", requires = "group", value_delimiter = ',',
          default_value = "range,roundrobin", value_parser = parse_assignor)]
    assignor: Vec<Assignor>,
}

/// Where a group member starts without a committed offset (`auto.offset.reset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Reset {
    /// The first retained offset.
    Earliest,
    /// The log end: only new records.
    Latest,
}

fn parse_assignor(text: &str) -> Result<Assignor, String> {
    Assignor::from_name(text)
        .ok_or_else(|| format!("unknown assignor {text:?} (range, roundrobin)"))
}

/// Where to start reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The first retained offset.
    Earliest,
    /// The log end: only new records.
    Latest,
    /// This offset.
    Offset(i64),
}

fn parse_start(text: &str) -> Result<Start, String> {
    match text {
        "earliest" => Ok(Start::Earliest),
        "latest" => Ok(Start::Latest),
        number => match number.parse::<i64>() {
            Ok(offset) if offset >= 0 => Ok(Start::Offset(offset)),
            _ => Err(format!(
                "expected a non-negative offset, `earliest` or `latest`, got {text:?}"
            )),
        },
    }
}

/// Runs `runnel consume ...`.
pub async fn run(args: ConsumeArgs) -> Result<(), CliError> {
    if let Some(group) = args.group.clone() {
        return run_group(args, group).await;
    }
    let mut client = connect(&args.connection).await?;
    let topic = client.topic(&args.topic, false).await?;
    let partitions: Vec<i32> = match args.partition {
        Some(wanted) if topic.partitions.iter().any(|p| p.partition == wanted) => vec![wanted],
        Some(wanted) => {
            return Err(ClientError::Broker {
                context: format!("topic {} has no partition {wanted}", args.topic),
                error: KafkaError {
                    code: UNKNOWN_TOPIC_OR_PARTITION,
                    message: None,
                },
            }
            .into())
        }
        None => topic.partitions.iter().map(|p| p.partition).collect(),
    };
    let start = match (args.offset, args.from_beginning) {
        (Some(start), _) => start,
        (None, true) => Start::Earliest,
        (None, false) => Start::Latest,
    };
    let mut positions = Vec::with_capacity(partitions.len());
    for partition in partitions {
        let offset = match start {
            Start::Offset(offset) => offset,
            Start::Earliest => {
                client
                    .list_offset(&args.topic, partition, EARLIEST_OFFSET)
                    .await?
            }
            Start::Latest => {
                client
                    .list_offset(&args.topic, partition, LATEST_OFFSET)
                    .await?
            }
        };
        positions.push(FetchPosition {
            topic: args.topic.clone(),
            partition,
            offset,
        });
    }
    let mut out = std::io::stdout().lock();
    let mut printed = 0u64;
    let result = consume(&mut client, &args, &mut positions, &mut out, &mut printed).await;
    out.flush()?;
    eprintln!("Processed a total of {printed} messages");
    result
}

async fn consume(
    client: &mut runnel_net::client::Client,
    args: &ConsumeArgs,
    positions: &mut [FetchPosition],
    out: &mut impl Write,
    printed: &mut u64,
) -> Result<(), CliError> {
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let mut last_record = Instant::now();
    loop {
        if args.max_messages.is_some_and(|max| *printed >= max) {
            return Ok(());
        }
        let wait_ms = match idle_limit {
            Some(limit) => {
                let left = limit.saturating_sub(last_record.elapsed());
                if left.is_zero() {
                    return Ok(());
                }
                i32::try_from(left.as_millis()).map_or(FETCH_WAIT_MS, |ms| ms.min(FETCH_WAIT_MS))
            }
            None => FETCH_WAIT_MS,
        };
        let options = FetchOptions {
            max_wait_ms: wait_ms,
            ..FetchOptions::default()
        };
        let fetched = client.fetch(&options, positions).await?;
        let before = *printed;
        for partition in fetched {
            let Some(position) = positions
                .iter_mut()
                .find(|p| p.topic == partition.topic && p.partition == partition.partition)
            else {
                continue; // not asked for
            };
            if let Some(error) = partition.error {
                return Err(ClientError::Broker {
                    context: format!(
                        "fetching {}-{} at offset {}",
                        partition.topic, partition.partition, position.offset
                    ),
                    error,
                }
                .into());
            }
            for batch in &partition.batches {
                if !print_batch(batch, args, position, out, printed)? {
                    return Ok(());
                }
            }
        }
        out.flush()?;
        if *printed > before {
            last_record = Instant::now();
        }
    }
}

/// Prints the batch's records at or after the position and advances it; false once
/// `--max-messages` is reached.
fn print_batch(
    batch: &RecordBatch,
    args: &ConsumeArgs,
    position: &mut FetchPosition,
    out: &mut impl Write,
    printed: &mut u64,
) -> Result<bool, CliError> {
    if batch.next_offset() <= position.offset {
        return Ok(true);
    }
    if !batch.control {
        for record in batch.records() {
            let record = record?;
            if record.offset < position.offset {
                continue;
            }
            if args.json {
                write_json(
                    out,
                    &record_json(&position.topic, position.partition, &record),
                )?;
            } else {
                write_text(out, args, position.partition, &record)?;
            }
            *printed += 1;
            position.offset = record.offset.saturating_add(1);
            if args.max_messages.is_some_and(|max| *printed >= max) {
                return Ok(false);
            }
        }
    }
    position.offset = position.offset.max(batch.next_offset());
    Ok(true)
}

/// Set by the first SIGINT or SIGTERM while a group member runs.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// Makes the first SIGINT or SIGTERM only request a stop, so the member commits and leaves the
/// group; the handler then resets itself, so a second signal ends the process at once.
fn install_stop_handler() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// A group member's consumption of its current assignment.
#[derive(Default)]
struct GroupSession {
    /// In a generation, with `positions` set from its assignment.
    joined: bool,
    /// Next offset to read, per assigned partition.
    positions: Vec<FetchPosition>,
    /// The group's committed offset per assigned partition, as last known (`None`: none).
    committed: BTreeMap<(String, i32), Option<i64>>,
    printed: u64,
}

fn reset_policy(args: &ConsumeArgs) -> Reset {
    match (args.reset, args.from_beginning) {
        (Some(reset), _) => reset,
        (None, true) => Reset::Earliest,
        (None, false) => Reset::Latest,
    }
}

/// `runnel consume --group G`: see the module documentation.
async fn run_group(args: ConsumeArgs, group: String) -> Result<(), CliError> {
    let mut client = connect(&args.connection).await?;
    // A clear error for a topic that does not exist (a Java consumer would wait for it).
    client.topic(&args.topic, false).await?;
    install_stop_handler();
    let config = MemberConfig {
        group_id: group.clone(),
        topics: vec![args.topic.clone()],
        assignors: args.assignor.clone(),
        session_timeout_ms: args.session_timeout_ms,
        rebalance_timeout_ms: args.rebalance_timeout_ms,
        heartbeat_interval: Duration::from_millis(args.heartbeat_interval_ms),
    };
    let bootstrap = &args.connection.bootstrap_server;
    let mut member = GroupMember::new(bootstrap, client_config(&args.connection), config);
    let mut session = GroupSession::default();
    let mut out = std::io::stdout().lock();
    let result = group_loop(&mut client, &mut member, &args, &mut session, &mut out).await;
    let flushed = out.flush();
    let finished = match &result {
        // The broker is gone: committing or leaving would only wait for it.
        Err(CliError::Client(error)) if error.is_connection() => Ok(()),
        _ => finish_group(&mut member, &mut session).await,
    };
    eprintln!("Processed a total of {} messages", session.printed);
    result?;
    flushed?;
    finished
}

async fn group_loop(
    client: &mut Client,
    member: &mut GroupMember,
    args: &ConsumeArgs,
    session: &mut GroupSession,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let idle_limit = args.timeout_ms.map(Duration::from_millis);
    let auto_commit = Duration::from_millis(args.auto_commit_interval_ms);
    let mut last_record = Instant::now();
    let mut last_commit = Instant::now();
    loop {
        let limit_reached = args.max_messages.is_some_and(|max| session.printed >= max);
        if STOP_REQUESTED.load(Ordering::SeqCst) || limit_reached {
            return Ok(());
        }
        let wait_ms = match idle_limit {
            Some(limit) => {
                let left = limit.saturating_sub(last_record.elapsed());
                if left.is_zero() {
                    return Ok(());
                }
                i32::try_from(left.as_millis()).map_or(FETCH_WAIT_MS, |ms| ms.min(FETCH_WAIT_MS))
            }
            None => FETCH_WAIT_MS,
        };
        match member.signal() {
            Some(MemberSignal::Rejoin(_)) => before_rebalance(member, session, out).await?,
            Some(MemberSignal::CoordinatorLost(_)) => member.reconnect().await?,
            Some(MemberSignal::Fatal(error)) => {
                return Err(ClientError::Broker {
                    context: format!("heartbeat in group {}", args.group.as_deref().unwrap_or("")),
                    error,
                }
                .into())
            }
            None => {}
        }
        if !session.joined {
            join_group(client, member, args, session).await?;
            last_commit = Instant::now();
            continue;
        }
        if session.positions.is_empty() {
            let wait = Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0));
            glommio::timer::sleep(wait.min(IDLE_POLL)).await;
            continue;
        }
        let options = FetchOptions {
            max_wait_ms: wait_ms,
            ..FetchOptions::default()
        };
        let fetched = client.fetch(&options, &session.positions).await?;
        let before = session.printed;
        for partition in fetched {
            let Some(position) = session
                .positions
                .iter_mut()
                .find(|p| p.topic == partition.topic && p.partition == partition.partition)
            else {
                continue; // not asked for
            };
            match partition.error {
                Some(error) if error.code == OFFSET_OUT_OF_RANGE => {
                    let reset = reset_policy(args);
                    position.offset =
                        reset_offset(client, &partition.topic, partition.partition, reset).await?;
                    continue;
                }
                Some(error) => {
                    return Err(ClientError::Broker {
                        context: format!(
                            "fetching {}-{} at offset {}",
                            partition.topic, partition.partition, position.offset
                        ),
                        error,
                    }
                    .into())
                }
                None => {}
            }
            for batch in &partition.batches {
                if !print_batch(batch, args, position, out, &mut session.printed)? {
                    return Ok(());
                }
            }
        }
        out.flush()?;
        if session.printed > before {
            last_record = Instant::now();
        }
        if last_commit.elapsed() >= auto_commit {
            match commit_positions(member, session).await {
                Ok(()) => {}
                Err(error) if is_rebalance_error(&error) => {
                    eprintln!("runnel: warning: commit refused ({error}); rejoining the group");
                    session.joined = false;
                }
                Err(error) => return Err(error.into()),
            }
            last_commit = Instant::now();
        }
    }
}

/// Joins (again) and positions every assigned partition at the group's committed offset, or
/// per the reset policy where there is none.
async fn join_group(
    client: &mut Client,
    member: &mut GroupMember,
    args: &ConsumeArgs,
    session: &mut GroupSession,
) -> Result<(), CliError> {
    let partitions = member.join().await?;
    let committed = member.committed(&partitions).await?;
    session.positions.clear();
    session.committed.clear();
    for (topic, partition) in &partitions {
        let stored = committed
            .iter()
            .find(|c| &c.topic == topic && c.partition == *partition)
            .and_then(|c| c.offset);
        let offset = match stored {
            Some(offset) => offset,
            None => reset_offset(client, topic, *partition, reset_policy(args)).await?,
        };
        session
            .committed
            .insert((topic.clone(), *partition), stored);
        session.positions.push(FetchPosition {
            topic: topic.clone(),
            partition: *partition,
            offset,
        });
    }
    session.joined = true;
    let assigned: Vec<String> = partitions
        .iter()
        .map(|(topic, partition)| format!("{topic}-{partition}"))
        .collect();
    eprintln!(
        "runnel: joined group {} (generation {}, member {}, assignor {}): {}",
        args.group.as_deref().unwrap_or(""),
        member.generation_id(),
        member.member_id(),
        member.protocol_name().unwrap_or("-"),
        if assigned.is_empty() {
            "no partitions".to_string()
        } else {
            assigned.join(", ")
        }
    );
    Ok(())
}

async fn reset_offset(
    client: &mut Client,
    topic: &str,
    partition: i32,
    reset: Reset,
) -> Result<i64, ClientError> {
    let timestamp = match reset {
        Reset::Earliest => EARLIEST_OFFSET,
        Reset::Latest => LATEST_OFFSET,
    };
    client.list_offset(topic, partition, timestamp).await
}

/// Before rejoining a rebalance: commit what was consumed, so the partitions' next owners start
/// right after it, then forget the assignment.
async fn before_rebalance(
    member: &mut GroupMember,
    session: &mut GroupSession,
    out: &mut impl Write,
) -> Result<(), CliError> {
    out.flush()?;
    match commit_positions(member, session).await {
        Ok(()) => {}
        Err(error) if is_rebalance_error(&error) => eprintln!(
            "runnel: warning: could not commit before rejoining ({error}); the partitions' next \
             owners may read some records again"
        ),
        Err(error) => return Err(error.into()),
    }
    session.joined = false;
    session.positions.clear();
    session.committed.clear();
    Ok(())
}

/// At the end: commit what was consumed, then leave the group (even if the commit failed).
async fn finish_group(
    member: &mut GroupMember,
    session: &mut GroupSession,
) -> Result<(), CliError> {
    let committed = if session.joined {
        commit_positions(member, session).await
    } else {
        Ok(())
    };
    let left = member.leave().await;
    match committed {
        Err(error) if is_rebalance_error(&error) => {
            eprintln!("runnel: warning: could not commit the last positions ({error})");
        }
        other => other?,
    }
    left.map_err(CliError::from)
}

/// Commits the positions that moved since they were last committed.
async fn commit_positions(
    member: &mut GroupMember,
    session: &mut GroupSession,
) -> Result<(), ClientError> {
    let offsets: Vec<OffsetToCommit> = session
        .positions
        .iter()
        .filter(|position| {
            let key = (position.topic.clone(), position.partition);
            session.committed.get(&key) != Some(&Some(position.offset))
        })
        .map(|position| OffsetToCommit {
            topic: position.topic.clone(),
            partition: position.partition,
            offset: position.offset,
            metadata: None,
        })
        .collect();
    member.commit(&offsets).await?;
    for offset in offsets {
        session
            .committed
            .insert((offset.topic, offset.partition), Some(offset.offset));
    }
    Ok(())
}

/// The commit was refused because the group moved on: the member must rejoin.
fn is_rebalance_error(error: &ClientError) -> bool {
    error.kafka_error().is_some_and(|error| {
        matches!(
            error.code,
            ILLEGAL_GENERATION | UNKNOWN_MEMBER_ID | REBALANCE_IN_PROGRESS
        )
    })
}

fn write_text(
    out: &mut impl Write,
    args: &ConsumeArgs,
    partition: i32,
    record: &Record,
) -> std::io::Result<()> {
    let separator = args.key_separator.as_bytes();
    if args.print_timestamp {
        let kind = if record.log_append_time {
            "LogAppendTime"
        } else {
            "CreateTime"
        };
        write!(out, "{kind}:{}", record.timestamp_ms)?;
        out.write_all(separator)?;
    }
    if args.print_partition {
        write!(out, "Partition:{partition}")?;
        out.write_all(separator)?;
    }
    if args.print_offset {
        write!(out, "Offset:{}", record.offset)?;
        out.write_all(separator)?;
    }
    if args.print_headers {
        if record.headers.is_empty() {
            out.write_all(b"NO_HEADERS")?;
        }
        for (index, header) in record.headers.iter().enumerate() {
            if index > 0 {
                out.write_all(b",")?;
            }
            out.write_all(&header.key)?;
            out.write_all(b":")?;
            out.write_all(header.value.as_deref().unwrap_or(b"null"))?;
        }
        out.write_all(separator)?;
    }
    if args.print_key {
        out.write_all(record.key.as_deref().unwrap_or(b"null"))?;
        out.write_all(separator)?;
    }
    out.write_all(record.value.as_deref().unwrap_or(b"null"))?;
    out.write_all(b"\n")
}

fn record_json(topic: &str, partition: i32, record: &Record) -> Value {
    let text = |bytes: &Option<bytes::Bytes>| -> Value {
        bytes
            .as_ref()
            .map_or(Value::Null, |bytes| String::from_utf8_lossy(bytes).into())
    };
    let headers: Vec<Value> = record
        .headers
        .iter()
        .map(|header| {
            json!({
                "key": String::from_utf8_lossy(&header.key),
                "value": text(&header.value),
            })
        })
        .collect();
    json!({
        "topic": topic,
        "partition": partition,
        "offset": record.offset,
        "timestamp": record.timestamp_ms,
        "timestamp_type": if record.log_append_time { "LogAppendTime" } else { "CreateTime" },
        "key": text(&record.key),
        "value": text(&record.value),
        "headers": headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_offsets_parse() {
        assert_eq!(parse_start("earliest"), Ok(Start::Earliest));
        assert_eq!(parse_start("latest"), Ok(Start::Latest));
        assert_eq!(parse_start("42"), Ok(Start::Offset(42)));
        assert!(parse_start("-1").is_err());
        assert!(parse_start("x").is_err());
    }
}
