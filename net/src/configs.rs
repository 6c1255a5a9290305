//! Topic configs: Kafka names and string values mapped onto engine settings, with the broker
//! defaults DescribeConfigs reports.

use runnel_engine::{FlushPolicy, LogConfig, TimestampType};
use std::collections::BTreeMap;

/// Topic configs this broker understands, with how to validate them.
pub const TOPIC_CONFIGS: &[&str] = &[
    "cleanup.policy",
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "max.message.bytes",
    "message.timestamp.type",
    "min.insync.replicas",
    "flush.messages",
    "flush.ms",
    "index.interval.bytes",
];

/// Checks one config name/value pair; the error is the message for INVALID_CONFIG (40).
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let number = |min: i64| -> Result<(), String> {
        match value.parse::<i64>() {
            Ok(parsed) if parsed >= min => Ok(()),
            _ => Err(format!(
                "Invalid value {value} for configuration {name}: must be an integer >= {min}"
            )),
        }
    };
    match name {
        "cleanup.policy" => match value {
            "delete" | "compact" | "compact,delete" | "delete,compact" => Ok(()),
            _ => Err(format!(
                "Invalid value {value} for configuration cleanup.policy"
            )),
        },
        "message.timestamp.type" => match value {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err(format!(
                "Invalid value {value} for configuration message.timestamp.type"
            )),
        },
        "retention.ms" | "retention.bytes" => number(-1),
        "segment.bytes" => number(1024).and_then(|()| {
            if value.parse::<i64>().unwrap_or(0) > i64::from(i32::MAX) {
                Err(format!(
                    "Invalid value {value} for configuration segment.bytes"
                ))
            } else {
                Ok(())
            }
        }),
        "segment.ms" | "flush.ms" => number(0),
        "max.message.bytes" => number(0),
        "min.insync.replicas" | "flush.messages" | "index.interval.bytes" => number(1),
        _ => Err(format!("Unknown topic config name: {name}")),
    }
}

/// The engine config for a topic: broker defaults overridden by the topic's configs.
pub fn log_config(defaults: &LogConfig, overrides: &BTreeMap<String, String>) -> LogConfig {
    let mut config = defaults.clone();
    let get = |name: &str| {
        overrides
            .get(name)
            .and_then(|value| value.parse::<i64>().ok())
    };
    if let Some(value) = get("retention.ms") {
        config.retention_ms = value;
    }
    if let Some(value) = get("retention.bytes") {
        config.retention_bytes = value;
    }
    if let Some(value) = get("segment.bytes") {
        config.segment_bytes = value.clamp(1024, i64::from(i32::MAX)) as u64;
    }
    if let Some(value) = get("segment.ms") {
        config.segment_ms = value.max(1) as u64;
    }
    if let Some(value) = get("max.message.bytes") {
        config.max_batch_bytes = value.clamp(61, 256 << 20) as usize;
    }
    if let Some(value) = get("index.interval.bytes") {
        config.index_interval_bytes = value.max(1) as u64;
    }
    if overrides.get("message.timestamp.type").map(String::as_str) == Some("LogAppendTime") {
        config.timestamp_type = TimestampType::LogAppendTime;
    }
    // flush.ms: 0 = sync every commit (the default), N > 0 = at most every N ms;
    // flush.messages = i64::MAX (Kafka's default) with no flush.ms = never.
    match (get("flush.ms"), get("flush.messages")) {
        (Some(0), _) => config.flush = FlushPolicy::EveryCommit,
        (Some(ms), _) if ms > 0 && ms < i64::MAX => {
            config.flush = FlushPolicy::IntervalMs(ms as u64)
        }
        (_, Some(messages)) if messages == i64::MAX => config.flush = FlushPolicy::Never,
        _ => {}
    }
    // A compact-only topic is never trimmed by time or size (Kafka's rule); until compaction
    // exists its data is simply kept.
    let policy = overrides
        .get("cleanup.policy")
        .map_or("delete", String::as_str);
    if !policy.split(',').any(|part| part.trim() == "delete") {
        config.retention_ms = -1;
        config.retention_bytes = -1;
    }
    config
}

/// The broker default of a topic config, as DescribeConfigs shows it.
pub fn default_value(defaults: &LogConfig, name: &str) -> Option<String> {
    Some(match name {
        "cleanup.policy" => "delete".into(),
        "retention.ms" => defaults.retention_ms.to_string(),
        "retention.bytes" => defaults.retention_bytes.to_string(),
        "segment.bytes" => defaults.segment_bytes.to_string(),
        "segment.ms" => defaults.segment_ms.to_string(),
        "max.message.bytes" => defaults.max_batch_bytes.to_string(),
        "message.timestamp.type" => match defaults.timestamp_type {
            TimestampType::CreateTime => "CreateTime".into(),
            TimestampType::LogAppendTime => "LogAppendTime".into(),
        },
        "min.insync.replicas" => "1".into(),
        "flush.messages" => match defaults.flush {
            FlushPolicy::EveryCommit => "1".into(),
            _ => i64::MAX.to_string(),
        },
        "flush.ms" => match defaults.flush {
            FlushPolicy::EveryCommit => "0".into(),
            FlushPolicy::IntervalMs(ms) => ms.to_string(),
            FlushPolicy::Never => i64::MAX.to_string(),
        },
        "index.interval.bytes" => defaults.index_interval_bytes.to_string(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_only_topics_are_never_trimmed_by_retention() {
        let defaults = LogConfig::default();
        let compact: BTreeMap<String, String> = [
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("retention.ms".to_string(), "1000".to_string()),
        ]
        .into();
        let config = log_config(&defaults, &compact);
        assert_eq!((config.retention_ms, config.retention_bytes), (-1, -1));
        let both: BTreeMap<String, String> = [
            ("cleanup.policy".to_string(), "compact,delete".to_string()),
            ("retention.ms".to_string(), "1000".to_string()),
        ]
        .into();
        assert_eq!(log_config(&defaults, &both).retention_ms, 1000);
        assert_eq!(
            log_config(&defaults, &BTreeMap::new()).retention_ms,
            defaults.retention_ms
        );
    }
}
