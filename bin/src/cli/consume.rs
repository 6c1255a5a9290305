//! `runnel consume --topic T`: prints records, one per line, like Kafka's console consumer.
//!
//! No consumer group: the partitions (all, or `--partition`) are read directly from a start
//! offset (`--offset`, `--from-beginning`, or else the log end, waiting for new records). Stops
//! after `--max-messages`, after `--timeout-ms` without a new record, or when interrupted.
//! Text output follows Kafka's DefaultMessageFormatter (fields joined by the key separator,
//! `null` for null keys and values); `--json` prints one object per record instead.

use super::{connect, write_json, CliError, ConnectionArgs};
use runnel_net::client::records::{Record, RecordBatch};
use runnel_net::client::{
    ClientError, FetchOptions, FetchPosition, KafkaError, EARLIEST_OFFSET, LATEST_OFFSET,
};
use serde_json::{json, Value};
use std::io::Write;
use std::time::{Duration, Instant};

/// Longest a fetch waits for new records before the loop looks at its limits again.
const FETCH_WAIT_MS: i32 = 500;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

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
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
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
