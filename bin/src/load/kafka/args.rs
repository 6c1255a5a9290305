//! Command-line arguments of `runnel-load produce | consume | e2e`, in the spirit of Kafka's
//! `kafka-producer-perf-test` and the OpenMessaging Benchmark, and their parsers.

use super::payload::{parse_keys, KeySpace};
use super::rate::{parse_rate, Rate};
use crate::engine::parse_bytes;
use runnel_engine::batch::Compression;
use std::path::PathBuf;
use std::time::Duration;

/// Largest `--record-size` and `--batch-size`.
pub const SIZE_MAX_BYTES: u64 = 16 << 20;

/// Arguments every mode takes.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// The broker: runnel or any Kafka-compatible one (single-node: every partition is read
    /// and written through this broker).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Topic.
    #[arg(long)]
    pub topic: String,
    /// Partitions of the topic `--create` makes (default: the broker's default).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub partitions: Option<u32>,
    /// Create the topic first (an existing topic is used as it is).
    #[arg(long)]
    pub create: bool,
    /// Replication factor for `--create` (default: the broker's default).
    #[arg(long, value_parser = clap::value_parser!(i16).range(1..=32))]
    pub replication_factor: Option<i16>,
    /// Run this long: `30s`, `2m`, `500ms`, or seconds. produce/e2e default: 10s (when
    /// `--records` is not given either).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Produce this many records (all producers together); consume: read this many.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub records: Option<u64>,
    /// Load threads, each one glommio executor owning some of the producers and consumers.
    /// Default: the number of CPUs (at most one per producer and consumer).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Check what was read (the standard check of shared/reliability.md): nothing acknowledged
    /// lost, no duplicates with idempotence, order kept per partition. Exit code 3 on a
    /// violation.
    #[arg(long)]
    pub verify: bool,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Limit on one request's round trip (and on connecting).
    #[arg(long, default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub request_timeout_ms: u64,
    /// Longest the consumers may go without reading anything once the producers are done (e2e),
    /// or while reading to the log end (consume without --duration or --records), before the
    /// run is stopped (then, with --verify, what was not read counts as lost).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub drain_timeout_s: u64,
    /// No progress line every second.
    #[arg(long)]
    pub quiet: bool,
}

/// Producer arguments (produce, e2e).
#[derive(clap::Args, Debug, Clone)]
pub struct ProduceArgs {
    /// Value bytes per record (k/m suffixes). With `--verify` at least 44 (the value header).
    #[arg(long, default_value = "1k", value_parser = parse_bytes)]
    pub record_size: u64,
    /// Keys: `none`, or N for keys uniform over N distinct keys (partitioned by murmur2).
    #[arg(long, default_value = "none", value_parser = parse_keys)]
    pub keys: KeySpace,
    /// Target rate, all producers together: records/s (`5000`) or bytes/s (`50MB/s`).
    /// Default: as fast as the broker acknowledges.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<Rate>,
    /// Producers, each with its own connection.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub producers: u32,
    /// Acknowledgements: `all` (-1), `1` or `0`.
    #[arg(long, default_value = "all", value_parser = parse_acks, allow_hyphen_values = true)]
    pub acks: i16,
    /// Largest batch per partition in bytes (Java's `batch.size`).
    #[arg(long, default_value = "16k", value_parser = parse_bytes)]
    pub batch_size: u64,
    /// How long a batch may wait for more records (Java's `linger.ms`).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub linger_ms: u64,
    /// Produce requests in flight per producer connection.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_in_flight: u32,
    /// Batch compression: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    pub compression: Compression,
    /// Idempotent producers: InitProducerId, then producer id, epoch and sequence per
    /// partition in every batch (needs `--acks all`).
    #[arg(long)]
    pub idempotence: bool,
}

/// Consumer arguments (consume, e2e).
#[derive(clap::Args, Debug, Clone)]
pub struct ConsumeArgs {
    /// Consumers, each with its own connection; partitions are dealt out round robin.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub consumers: u32,
    /// Consume as members of this consumer group (classic protocol): the group assigns the
    /// partitions, members start at the group's committed offsets (else at `--from`), commit
    /// every second and leave at the end. Without it, partitions are dealt out directly.
    #[arg(long)]
    pub group: Option<String>,
    /// Longest a Fetch waits for data at the tail.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i32).range(0..=60_000))]
    pub fetch_max_wait_ms: i32,
}

/// Where `consume` starts reading each partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The log start.
    Earliest,
    /// The log end when the run starts.
    Latest,
    /// This offset.
    Offset(i64),
}

/// Parses `--from earliest|latest|N`.
pub fn parse_start(text: &str) -> Result<Start, String> {
    match text {
        "earliest" => Ok(Start::Earliest),
        "latest" => Ok(Start::Latest),
        number => match number.parse::<i64>() {
            Ok(offset) if offset >= 0 => Ok(Start::Offset(offset)),
            _ => Err(format!(
                "{text:?}: --from is `earliest`, `latest` or a non-negative offset"
            )),
        },
    }
}

/// Parses `--acks all|-1|1|0`.
pub fn parse_acks(text: &str) -> Result<i16, String> {
    match text {
        "all" | "-1" => Ok(-1),
        "1" => Ok(1),
        "0" => Ok(0),
        _ => Err(format!("{text:?}: --acks is `all`, `1` or `0`")),
    }
}

/// Parses `--compression`.
pub fn parse_compression(text: &str) -> Result<Compression, String> {
    match text.to_ascii_lowercase().as_str() {
        "none" => Ok(Compression::None),
        "gzip" => Ok(Compression::Gzip),
        "snappy" => Ok(Compression::Snappy),
        "lz4" => Ok(Compression::Lz4),
        "zstd" => Ok(Compression::Zstd),
        _ => Err(format!(
            "{text:?}: --compression is none, gzip, snappy, lz4 or zstd"
        )),
    }
}

/// The name `--compression` takes.
pub fn compression_name(compression: Compression) -> &'static str {
    match compression {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    }
}

/// Parses `500ms`, `30s`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let end = text
        .find(|character: char| !(character.is_ascii_digit() || character == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 30s, 2m, 500ms)"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(format!("{text:?}: unknown unit (use ms, s, m or h)")),
    };
    if !(seconds > 0.0 && seconds <= 366.0 * 86_400.0) {
        return Err(format!(
            "{text:?}: a duration must be above zero and at most a year"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 days").is_err());
    }

    #[test]
    fn knobs_parse() {
        assert_eq!(parse_acks("all"), Ok(-1));
        assert_eq!(parse_acks("-1"), Ok(-1));
        assert_eq!(parse_acks("0"), Ok(0));
        assert!(parse_acks("2").is_err());
        for name in ["none", "gzip", "snappy", "lz4", "zstd"] {
            assert_eq!(parse_compression(name).map(compression_name), Ok(name));
        }
        assert!(parse_compression("brotli").is_err());
        assert_eq!(parse_start("earliest"), Ok(Start::Earliest));
        assert_eq!(parse_start("42"), Ok(Start::Offset(42)));
        assert!(parse_start("-1").is_err());
    }
}
