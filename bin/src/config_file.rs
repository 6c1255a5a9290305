//! `runnel serve --config FILE`: broker-wide log defaults in Kafka's `server.properties` format
//! (`key=value`, `#` comments). Everything with a command-line flag is set by the flag; the file
//! holds the rest. An unknown key or a bad value is an error naming the line, never ignored.

use runnel_engine::{FlushPolicy, LogConfig, TimestampType};

/// The file this loader accepts, at most (a config file is small; this bounds a wrong path).
const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;

/// Reads `path` and applies it to the engine defaults.
pub fn load(path: &std::path::Path) -> Result<LogConfig, String> {
    let size = std::fs::metadata(path)
        .map_err(|error| format!("--config {}: {error}", path.display()))?
        .len();
    if size > CONFIG_FILE_BYTES_MAX {
        return Err(format!("--config {}: larger than 1 MiB", path.display()));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("--config {}: {error}", path.display()))?;
    parse(&text).map_err(|error| format!("--config {}: {error}", path.display()))
}

/// Parses the text of a config file onto `LogConfig::default()`.
pub fn parse(text: &str) -> Result<LogConfig, String> {
    let mut config = LogConfig::default();
    let mut flush_interval_ms: Option<u64> = None;
    let mut flush_messages: Option<i64> = None;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected key=value", number + 1))?;
        let (key, value) = (key.trim(), value.trim());
        let bad = || format!("line {}: bad value {value:?} for {key}", number + 1);
        let int = || value.parse::<i64>().map_err(|_| bad());
        let positive = || int().and_then(|parsed| u64::try_from(parsed).map_err(|_| bad()));
        match key {
            "log.retention.ms" => config.retention_ms = int()?,
            "log.retention.minutes" => config.retention_ms = int()?.saturating_mul(60_000),
            "log.retention.hours" => config.retention_ms = int()?.saturating_mul(3_600_000),
            "log.retention.bytes" => config.retention_bytes = int()?,
            "log.segment.bytes" => config.segment_bytes = positive()?,
            "log.roll.ms" => config.segment_ms = positive()?,
            "log.roll.hours" => config.segment_ms = positive()?.saturating_mul(3_600_000),
            "log.index.interval.bytes" => config.index_interval_bytes = positive()?,
            "message.max.bytes" => config.max_batch_bytes = positive()? as usize,
            "log.message.timestamp.type" => {
                config.timestamp_type = match value {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    _ => return Err(bad()),
                }
            }
            "log.cleanup.policy" => {
                config.cleanup_policy =
                    runnel_net::configs::parse_cleanup_policy(value).ok_or_else(bad)?
            }
            "log.cleaner.delete.retention.ms" => config.delete_retention_ms = int()?,
            "log.cleaner.min.compaction.lag.ms" => config.min_compaction_lag_ms = int()?,
            "log.cleaner.min.cleanable.ratio" => {
                config.min_cleanable_dirty_ratio = value.parse().map_err(|_| bad())?
            }
            "log.flush.interval.ms" => flush_interval_ms = Some(positive()?),
            "log.flush.interval.messages" => flush_messages = Some(int()?),
            _ => {
                return Err(format!(
                    "line {}: unknown or unsupported setting {key:?} (broker-level settings are flags: see runnel serve --help)",
                    number + 1
                ))
            }
        }
    }
    // Kafka's pair: flush every message (runnel's default), at most every N ms, or never.
    config.flush = match (flush_messages, flush_interval_ms) {
        (Some(1), _) | (_, Some(0)) => FlushPolicy::EveryCommit,
        (_, Some(interval_ms)) => FlushPolicy::IntervalMs(interval_ms),
        (Some(_), None) => FlushPolicy::Never,
        (None, None) => config.flush,
    };
    config.validate().map_err(|error| error.to_string())?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_style_settings_apply() {
        let config = parse(
            "# comment\nlog.retention.hours=24\nlog.segment.bytes = 1048576\n\
             log.message.timestamp.type=LogAppendTime\nlog.flush.interval.messages=9223372036854775807\n",
        )
        .unwrap();
        assert_eq!(config.retention_ms, 24 * 3_600_000);
        assert_eq!(config.segment_bytes, 1 << 20);
        assert_eq!(config.timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(config.flush, FlushPolicy::Never);
        assert_eq!(
            parse("log.flush.interval.ms=50").unwrap().flush,
            FlushPolicy::IntervalMs(50)
        );
        assert_eq!(parse("").unwrap().flush, FlushPolicy::EveryCommit);
    }

    #[test]
    fn compaction_defaults_apply() {
        let config = parse(
            "log.cleanup.policy=compact,delete\nlog.cleaner.delete.retention.ms=5000\n\
             log.cleaner.min.cleanable.ratio=0.25\nlog.cleaner.min.compaction.lag.ms=7\n",
        )
        .unwrap();
        assert!(config.cleanup_policy.compact && config.cleanup_policy.delete);
        assert_eq!(config.delete_retention_ms, 5000);
        assert_eq!(config.min_cleanable_dirty_ratio, 0.25);
        assert_eq!(config.min_compaction_lag_ms, 7);
        assert!(parse("log.cleanup.policy=shred").is_err());
        assert!(parse("log.cleaner.min.cleanable.ratio=2").is_err());
    }

    #[test]
    fn bad_lines_are_errors_naming_the_line() {
        assert!(parse("nonsense").unwrap_err().contains("line 1"));
        assert!(parse("\nlog.segment.bytes=-5")
            .unwrap_err()
            .contains("line 2"));
        assert!(parse("num.partitions=3").unwrap_err().contains("flags"));
        assert!(
            parse("log.segment.bytes=10").is_err(),
            "below the engine's minimum"
        );
        assert!(parse("log.message.timestamp.type=Whenever").is_err());
    }
}
