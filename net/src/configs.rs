//! Topic configs: Kafka names and string values mapped onto engine settings, with the broker
//! defaults DescribeConfigs reports.

use runnel_engine::{CleanupPolicy, FlushPolicy, LogConfig, TimestampType};
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
    "delete.retention.ms",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
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
        "cleanup.policy" => match parse_cleanup_policy(value) {
            Some(_) => Ok(()),
            None => Err(format!(
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
        "segment.ms" | "flush.ms" | "delete.retention.ms" | "min.compaction.lag.ms" => number(0),
        "min.cleanable.dirty.ratio" => match value.parse::<f64>() {
            Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(()),
            _ => Err(format!(
                "Invalid value {value} for configuration {name}: must be a number between 0 and 1"
            )),
        },
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
    // A compact-only topic is never trimmed by time or size: the engine applies retention only
    // under `delete` (Kafka's rule), and cleans under `compact`.
    if let Some(policy) = overrides
        .get("cleanup.policy")
        .and_then(|value| parse_cleanup_policy(value))
    {
        config.cleanup_policy = policy;
    }
    if let Some(value) = get("delete.retention.ms") {
        config.delete_retention_ms = value.max(0);
    }
    if let Some(value) = get("min.compaction.lag.ms") {
        config.min_compaction_lag_ms = value.max(0);
    }
    if let Some(ratio) = overrides
        .get("min.cleanable.dirty.ratio")
        .and_then(|value| value.parse::<f64>().ok())
        .filter(|ratio| (0.0..=1.0).contains(ratio))
    {
        config.min_cleanable_dirty_ratio = ratio;
    }
    config
}

/// `cleanup.policy`: `delete`, `compact`, or both (a comma-separated list, either order).
pub fn parse_cleanup_policy(value: &str) -> Option<CleanupPolicy> {
    let mut policy = CleanupPolicy {
        delete: false,
        compact: false,
    };
    for part in value.split(',') {
        match part.trim() {
            "delete" => policy.delete = true,
            "compact" => policy.compact = true,
            _ => return None,
        }
    }
    Some(policy)
}

/// The Kafka spelling of a cleanup policy.
pub fn cleanup_policy_name(policy: CleanupPolicy) -> &'static str {
    match (policy.compact, policy.delete) {
        (true, true) => "compact,delete",
        (true, false) => "compact",
        _ => "delete",
    }
}

/// Whether a topic with these configs (over `defaults`) is compacted: its records need keys.
pub fn is_compacted(defaults: &LogConfig, overrides: &BTreeMap<String, String>) -> bool {
    overrides
        .get("cleanup.policy")
        .and_then(|value| parse_cleanup_policy(value))
        .unwrap_or(defaults.cleanup_policy)
        .compact
}

/// The broker default of a topic config, as DescribeConfigs shows it.
pub fn default_value(defaults: &LogConfig, name: &str) -> Option<String> {
    Some(match name {
        "cleanup.policy" => cleanup_policy_name(defaults.cleanup_policy).into(),
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
        "delete.retention.ms" => defaults.delete_retention_ms.to_string(),
        "min.cleanable.dirty.ratio" => defaults.min_cleanable_dirty_ratio.to_string(),
        "min.compaction.lag.ms" => defaults.min_compaction_lag_ms.to_string(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn cleanup_policies_map_to_the_engine() {
        let defaults = LogConfig::default();
        let compact = log_config(
            &defaults,
            &overrides(&[("cleanup.policy", "compact"), ("retention.ms", "1000")]),
        );
        assert_eq!(compact.cleanup_policy, CleanupPolicy::COMPACT);
        assert_eq!(
            compact.retention_ms, 1000,
            "kept, but unused without delete"
        );
        let both = log_config(
            &defaults,
            &overrides(&[("cleanup.policy", "delete,compact")]),
        );
        assert!(both.cleanup_policy.compact && both.cleanup_policy.delete);
        assert_eq!(
            log_config(&defaults, &BTreeMap::new()).cleanup_policy,
            CleanupPolicy::DELETE
        );
        assert!(validate("cleanup.policy", "compact, delete").is_ok());
        assert!(validate("cleanup.policy", "compact,shred").is_err());
        assert!(is_compacted(
            &defaults,
            &overrides(&[("cleanup.policy", "compact")])
        ));
        let compact_defaults = LogConfig {
            cleanup_policy: CleanupPolicy::COMPACT,
            ..LogConfig::default()
        };
        assert!(is_compacted(&compact_defaults, &BTreeMap::new()));
        assert_eq!(
            default_value(&compact_defaults, "cleanup.policy").as_deref(),
            Some("compact")
        );
    }

    #[test]
    fn compaction_settings_are_validated_and_applied() {
        let config = log_config(
            &LogConfig::default(),
            &overrides(&[
                ("delete.retention.ms", "1500"),
                ("min.cleanable.dirty.ratio", "0.01"),
                ("min.compaction.lag.ms", "20"),
            ]),
        );
        assert_eq!(config.delete_retention_ms, 1500);
        assert_eq!(config.min_cleanable_dirty_ratio, 0.01);
        assert_eq!(config.min_compaction_lag_ms, 20);
        config.validate().expect("valid");
        assert!(validate("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "x").is_err());
        assert!(validate("delete.retention.ms", "-1").is_err());
        assert!(validate("min.compaction.lag.ms", "0").is_ok());
    }
}
