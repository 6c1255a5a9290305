//! `runnel produce --topic T`: one record per stdin line.
//!
//! A reader thread turns stdin into chunks of lines; a chunk ends when the bytes already read
//! are used up (so typed lines go out at once), or at [`CHUNK_RECORDS_MAX`] records or
//! [`CHUNK_BYTES_MAX`] bytes (so piped input goes out in batches). Each chunk becomes one
//! Produce request with one batch per partition, and the next chunk is sent once it is
//! acknowledged. At most [`CHUNKS_QUEUED_MAX`] chunks wait between the two, so memory stays
//! bounded whatever the input.
//!
//! Records are keyed when `--key-separator` is given (the key is the text before its first
//! occurrence) and go to `murmur2(key) % partitions`, as with Kafka's default partitioner;
//! unkeyed records go to one partition per chunk, rotating. A line without the separator stops
//! the command with a usage error; the lines before it have been sent.

use super::{connect, write_json, CliError, ConnectionArgs};
use bytes::Bytes;
use runnel_net::client::records::{encode_batch, NewRecord};
use runnel_net::client::{partition_for_key, Client, ProducedPartition, TopicInfo};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Records in one chunk (one Produce request) at most.
const CHUNK_RECORDS_MAX: usize = 1_000;
/// Line bytes in one chunk at most (a single longer line travels alone). Below the broker's
/// default `max.message.bytes` (1 MiB) with room for the record overhead.
const CHUNK_BYTES_MAX: usize = 512 * 1024;
/// Chunks read ahead of the producer.
const CHUNKS_QUEUED_MAX: usize = 2;
/// Longest line accepted; longer is an input error.
const LINE_BYTES_MAX: usize = 16 << 20;

/// `runnel produce ...`.
#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Topic to write to (created if the broker auto-creates topics).
    #[arg(long)]
    topic: String,
    /// Split each line into key and value at the first occurrence of this text.
    #[arg(long, value_name = "SEPARATOR", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    key_separator: Option<String>,
    /// Write every record to this partition instead of choosing by key.
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    partition: Option<i32>,
    /// Acknowledgements to wait for: -1 (all), 1 (leader), 0 (none).
    #[arg(long, default_value = "-1", allow_hyphen_values = true, value_parser = parse_acks)]
    acks: i16,
    /// Print a JSON summary (records and offsets per partition) at the end.
    #[arg(long)]
    json: bool,
}

fn parse_acks(text: &str) -> Result<i16, String> {
    match text {
        "all" | "-1" => Ok(-1),
        "0" => Ok(0),
        "1" => Ok(1),
        _ => Err(format!("expected -1 (or all), 0 or 1, got {text:?}")),
    }
}

/// A run of lines read from stdin; `first_line` numbers them for error messages.
struct Chunk {
    first_line: u64,
    lines: Vec<Vec<u8>>,
}

enum ReadError {
    TooLong { line: u64 },
    Io(std::io::Error),
}

/// Offsets written to one partition.
#[derive(Default)]
struct PartitionSummary {
    records: u64,
    first_offset: Option<i64>,
    last_offset: Option<i64>,
}

/// Runs `runnel produce ...`.
pub async fn run(args: ProduceArgs) -> Result<(), CliError> {
    let mut client = connect(&args.connection).await?;
    let topic = topic_for_produce(&mut client, &args.topic).await?;
    let partitions = i32::try_from(topic.partitions.len())
        .ok()
        .filter(|count| *count > 0)
        .ok_or_else(|| CliError::Usage(format!("topic {} has no partitions", args.topic)))?;
    if let Some(partition) = args.partition {
        if partition >= partitions {
            return Err(CliError::Usage(format!(
                "--partition {partition}: topic {} has {partitions} partition(s)",
                args.topic
            )));
        }
    }
    let (sender, receiver) = flume::bounded(CHUNKS_QUEUED_MAX);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            read_chunks(
                BufReader::with_capacity(64 * 1024, std::io::stdin()),
                sender,
            )
        })
        .map_err(CliError::Output)?;
    let mut sticky = sticky_start(partitions);
    let mut summary: BTreeMap<i32, PartitionSummary> = BTreeMap::new();
    let mut total = 0u64;
    while let Ok(chunk) = receiver.recv_async().await {
        let chunk = chunk.map_err(|error| match error {
            ReadError::TooLong { line } => {
                CliError::Usage(format!("line {line} is longer than {LINE_BYTES_MAX} bytes"))
            }
            ReadError::Io(error) => CliError::Usage(format!("reading stdin: {error}")),
        })?;
        sticky = (sticky + 1) % partitions;
        let (by_partition, bad_line) = route(&chunk, args.key_separator.as_deref(), |key| {
            match (args.partition, key) {
                (Some(partition), _) => partition,
                (None, Some(key)) => partition_for_key(key, partitions),
                (None, None) => sticky,
            }
        });
        let counts: Vec<(i32, u64)> = by_partition
            .iter()
            .map(|(partition, records)| (*partition, records.len() as u64))
            .collect();
        let batches: Vec<(i32, Bytes)> = by_partition
            .into_iter()
            .map(|(partition, records)| (partition, encode_batch(&records)))
            .collect();
        if !batches.is_empty() {
            let produced = client.produce(&args.topic, batches, args.acks).await?;
            record_offsets(&mut summary, &counts, &produced);
            total += counts.iter().map(|(_, count)| count).sum::<u64>();
        }
        if let Some(message) = bad_line {
            return Err(CliError::Usage(message));
        }
    }
    if args.json {
        let partitions: Vec<_> = summary
            .iter()
            .map(|(partition, part)| {
                json!({
                    "partition": partition,
                    "records": part.records,
                    "first_offset": part.first_offset,
                    "last_offset": part.last_offset,
                })
            })
            .collect();
        let mut out = std::io::stdout().lock();
        write_json(
            &mut out,
            &json!({"topic": args.topic, "records": total, "partitions": partitions}),
        )?;
        out.flush()?;
    }
    Ok(())
}

/// The topic's metadata, letting the broker auto-create it. A topic that was just created may
/// answer LEADER_NOT_AVAILABLE for a moment (Kafka does); ask again a bounded number of times.
async fn topic_for_produce(client: &mut Client, name: &str) -> Result<TopicInfo, CliError> {
    const LEADER_NOT_AVAILABLE: i16 = 5;
    const ATTEMPTS_MAX: u32 = 20;
    let mut attempt = 1;
    loop {
        match client.topic(name, true).await {
            Err(error)
                if attempt < ATTEMPTS_MAX
                    && error.kafka_error().map(|e| e.code) == Some(LEADER_NOT_AVAILABLE) =>
            {
                attempt += 1;
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
            result => return Ok(result?),
        }
    }
}

/// Splits a chunk's lines into records grouped by partition (in line order within each). Stops
/// at a line without the key separator: the records before it, and the error for it.
fn route(
    chunk: &Chunk,
    key_separator: Option<&str>,
    partition_of: impl Fn(Option<&[u8]>) -> i32,
) -> (BTreeMap<i32, Vec<NewRecord>>, Option<String>) {
    let timestamp_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        });
    let mut by_partition: BTreeMap<i32, Vec<NewRecord>> = BTreeMap::new();
    for (line_number, line) in (chunk.first_line..).zip(&chunk.lines) {
        let (key, value) = match key_separator {
            None => (None, line.as_slice()),
            Some(separator) => {
                let Some(at) = find(line, separator.as_bytes()) else {
                    let error = format!("line {line_number} has no key separator {separator:?}");
                    return (by_partition, Some(error));
                };
                (Some(&line[..at]), &line[at + separator.len()..])
            }
        };
        by_partition
            .entry(partition_of(key))
            .or_default()
            .push(NewRecord {
                key: key.map(Bytes::copy_from_slice),
                value: Some(Bytes::copy_from_slice(value)),
                headers: Vec::new(),
                timestamp_ms,
            });
    }
    (by_partition, None)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn record_offsets(
    summary: &mut BTreeMap<i32, PartitionSummary>,
    counts: &[(i32, u64)],
    produced: &[ProducedPartition],
) {
    for (partition, count) in counts {
        let entry = summary.entry(*partition).or_default();
        entry.records += count;
        if let Some(answer) = produced.iter().find(|p| p.partition == *partition) {
            entry.first_offset.get_or_insert(answer.base_offset);
            let count = i64::try_from(*count).unwrap_or(i64::MAX);
            entry.last_offset = Some(answer.base_offset.saturating_add(count - 1));
        }
    }
}

fn sticky_start(partitions: i32) -> i32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    (nanos % partitions.unsigned_abs()) as i32
}

/// The stdin thread: reads lines into chunks and sends them until EOF, an error, or the
/// receiver going away.
fn read_chunks<R: Read>(mut reader: BufReader<R>, sender: flume::Sender<Result<Chunk, ReadError>>) {
    let mut line_number = 0u64;
    let mut chunk = Chunk {
        first_line: 1,
        lines: Vec::new(),
    };
    let mut chunk_bytes = 0usize;
    loop {
        let mut line = Vec::new();
        let limit = LINE_BYTES_MAX as u64 + 1;
        let read = match (&mut reader).take(limit).read_until(b'\n', &mut line) {
            Ok(read) => read,
            Err(error) => {
                let _ = sender.send(Err(ReadError::Io(error)));
                return;
            }
        };
        if read == 0 {
            break;
        }
        line_number += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        } else if line.len() > LINE_BYTES_MAX {
            let _ = sender.send(Err(ReadError::TooLong { line: line_number }));
            return;
        }
        let over = !chunk.lines.is_empty() && chunk_bytes + line.len() > CHUNK_BYTES_MAX;
        if over && !send_chunk(&sender, &mut chunk, &mut chunk_bytes, line_number) {
            return;
        }
        chunk_bytes += line.len();
        chunk.lines.push(line);
        let input_drained = reader.buffer().is_empty();
        if (input_drained || chunk.lines.len() >= CHUNK_RECORDS_MAX)
            && !send_chunk(&sender, &mut chunk, &mut chunk_bytes, line_number + 1)
        {
            return;
        }
    }
    if !chunk.lines.is_empty() {
        let _ = sender.send(Ok(chunk));
    }
}

/// Sends the chunk and starts a new one at `next_line`; false if the receiver is gone.
fn send_chunk(
    sender: &flume::Sender<Result<Chunk, ReadError>>,
    chunk: &mut Chunk,
    chunk_bytes: &mut usize,
    next_line: u64,
) -> bool {
    let full = std::mem::replace(
        chunk,
        Chunk {
            first_line: next_line,
            lines: Vec::new(),
        },
    );
    *chunk_bytes = 0;
    sender.send(Ok(full)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk as (first line number, lines), or the reader's error as text.
    type ChunkResult = Result<(u64, Vec<Vec<u8>>), String>;

    fn chunks_of(input: &[u8], buffer_bytes: usize) -> Vec<ChunkResult> {
        let (sender, receiver) = flume::unbounded();
        read_chunks(BufReader::with_capacity(buffer_bytes, input), sender);
        receiver
            .drain()
            .map(|chunk| match chunk {
                Ok(chunk) => Ok((chunk.first_line, chunk.lines)),
                Err(ReadError::TooLong { line }) => Err(format!("too long at {line}")),
                Err(ReadError::Io(error)) => Err(error.to_string()),
            })
            .collect()
    }

    #[test]
    fn lines_are_split_and_chunked_with_their_numbers() {
        let chunks = chunks_of(b"a\nb\r\n\nlast", 1 << 16);
        assert_eq!(
            chunks,
            vec![Ok((
                1,
                vec![b"a".to_vec(), b"b".to_vec(), b"".to_vec(), b"last".to_vec()]
            ))]
        );
        // A tiny read buffer drains after every line: each line is its own chunk.
        let chunks = chunks_of(b"one\ntwo\nthree\n", 4);
        let firsts: Vec<u64> = chunks.iter().map(|c| c.as_ref().unwrap().0).collect();
        let lines: usize = chunks.iter().map(|c| c.as_ref().unwrap().1.len()).sum();
        assert_eq!(lines, 3);
        assert_eq!(firsts.first(), Some(&1));
        assert!(firsts.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn chunks_stay_under_the_byte_limit() {
        let line = vec![b'x'; 100 * 1024];
        let mut input = Vec::new();
        for _ in 0..12 {
            input.extend_from_slice(&line);
            input.push(b'\n');
        }
        for chunk in chunks_of(&input, 4 << 20) {
            let (_, lines) = chunk.unwrap();
            assert!(lines.iter().map(Vec::len).sum::<usize>() <= CHUNK_BYTES_MAX);
        }
    }

    #[test]
    fn keys_split_at_the_first_separator() {
        let chunk = Chunk {
            first_line: 7,
            lines: vec![b"k1:v:1".to_vec(), b":empty key".to_vec()],
        };
        let (routed, error) = route(&chunk, Some(":"), |_| 0);
        assert_eq!(error, None);
        let records = &routed[&0];
        assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(records[0].value.as_deref(), Some(&b"v:1"[..]));
        assert_eq!(records[1].key.as_deref(), Some(&b""[..]));
        let missing = Chunk {
            first_line: 7,
            lines: vec![b"k:v".to_vec(), b"no separator".to_vec()],
        };
        let (routed, error) = route(&missing, Some(":"), |_| 0);
        assert_eq!(routed[&0].len(), 1, "the line before the bad one is kept");
        assert!(error.is_some_and(|message| message.contains("line 8")));
    }
}
