//! What the load threads measure and tell the main thread, and how the main thread prints it.
//!
//! Each load thread keeps a [`Delta`] (counters and HdrHistograms in microseconds) that its
//! producers and consumers add to; a reporter task sends it to the main thread every second
//! over a bounded channel and starts a fresh one. The main thread adds the deltas up: the
//! interval's counters make the progress line's rates, the running histograms its p99 and the
//! final summary's percentiles.

use super::verify::{Acked, Consumed, Failed, Violations};
use crate::json::Json;
use hdrhistogram::Histogram;
use runnel_net::client::ClientError;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Latencies above this (an hour) are recorded as this.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;
/// Percentiles in the summary and the JSON file.
pub const PERCENTILES: [(f64, &str); 5] = [
    (50.0, "p50"),
    (90.0, "p90"),
    (99.0, "p99"),
    (99.9, "p99.9"),
    (99.99, "p99.99"),
];

/// A latency histogram in microseconds, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

/// Records a latency (clamped into the histogram's range).
pub fn record_latency(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.max(1));
}

/// The name an error is counted under: the Kafka error name, or the kind of client failure.
pub fn error_name(error: &ClientError) -> String {
    match error {
        ClientError::Broker { error, .. } => error.name(),
        ClientError::Timeout(_) => "TIMEOUT".into(),
        ClientError::Connect { .. } => "CONNECT_FAILED".into(),
        ClientError::Transport(_) | ClientError::Broken(_) => "CONNECTION_LOST".into(),
        ClientError::UnsupportedApi { .. } => "UNSUPPORTED_API".into(),
        ClientError::Protocol(_) => "PROTOCOL_ERROR".into(),
        ClientError::Records(_) => "CORRUPT_RECORDS".into(),
    }
}

/// Counters and latencies gathered since the last report.
#[derive(Clone, Debug)]
pub struct Delta {
    /// Records acknowledged (acks 0: sent).
    pub produced_records: u64,
    /// Their key + value bytes.
    pub produced_bytes: u64,
    /// Records read.
    pub consumed_records: u64,
    /// Their key + value bytes.
    pub consumed_bytes: u64,
    /// Errors by name (batches for produce errors, requests otherwise).
    pub errors: BTreeMap<String, u64>,
    /// Produce latency: record created to acknowledged.
    pub produce_latency_us: Histogram<u64>,
    /// End-to-end latency: record created to read by a consumer.
    pub e2e_latency_us: Histogram<u64>,
}

impl Default for Delta {
    fn default() -> Delta {
        Delta {
            produced_records: 0,
            produced_bytes: 0,
            consumed_records: 0,
            consumed_bytes: 0,
            errors: BTreeMap::new(),
            produce_latency_us: new_histogram(),
            e2e_latency_us: new_histogram(),
        }
    }
}

impl Delta {
    /// Counts one error.
    pub fn error(&mut self, name: String) {
        *self.errors.entry(name).or_default() += 1;
    }

    /// Hands over what was gathered and starts afresh.
    pub fn take(&mut self) -> Delta {
        std::mem::take(self)
    }

    /// Adds `other` in.
    pub fn add(&mut self, other: &Delta) {
        self.produced_records += other.produced_records;
        self.produced_bytes += other.produced_bytes;
        self.consumed_records += other.consumed_records;
        self.consumed_bytes += other.consumed_bytes;
        for (name, count) in &other.errors {
            *self.errors.entry(name.clone()).or_default() += count;
        }
        // Same bounds on both sides: adding cannot fail.
        let _ = self.produce_latency_us.add(&other.produce_latency_us);
        let _ = self.e2e_latency_us.add(&other.e2e_latency_us);
    }

    /// Errors, all names together.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// When a side (producers or consumers) of a thread started and finished its work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First record created (producers) or first fetch sent (consumers).
    pub started: Instant,
    /// Last acknowledgement (producers) or the end of reading (consumers).
    pub finished: Instant,
}

impl Window {
    /// The window covering both.
    pub fn merge(this: Option<Window>, other: Option<Window>) -> Option<Window> {
        match (this, other) {
            (Some(a), Some(b)) => Some(Window {
                started: a.started.min(b.started),
                finished: a.finished.max(b.finished),
            }),
            (a, b) => a.or(b),
        }
    }

    /// Its length (at least a microsecond, so rates stay finite).
    pub fn seconds(&self) -> f64 {
        (self.finished - self.started).as_secs_f64().max(1e-6)
    }
}

/// What a thread hands over when its producers and consumers are done.
#[derive(Debug, Default)]
pub struct ThreadOutcome {
    /// What was gathered since the last report.
    pub delta: Delta,
    /// The producers' working time.
    pub produce_window: Option<Window>,
    /// The consumers' working time.
    pub consume_window: Option<Window>,
    /// `--verify`: acknowledged batches.
    pub acked: Vec<Acked>,
    /// `--verify`: failed batches.
    pub failed: Vec<Failed>,
    /// `--verify`: what each partition's reader saw (e2e).
    pub consumed: Vec<Consumed>,
    /// `--verify`: violations already judged (consume of an earlier run's data).
    pub violations: Violations,
    /// Duplicates read from producers that were not idempotent.
    pub duplicates_allowed: u64,
}

/// A message from a load thread to the main thread.
#[derive(Debug)]
pub enum Report {
    /// Every report interval: what was gathered since the last report.
    Progress(Box<Delta>),
    /// Once, at the end.
    Finished(Box<ThreadOutcome>),
}

/// Formats a count with thousands separators.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A latency in microseconds as milliseconds, e.g. `1.234 ms`.
pub fn millis(micros: u64) -> String {
    format!("{:.3} ms", micros as f64 / 1000.0)
}

/// `p50 1.2 ms  p90 ...  max ...` for the summary.
pub fn percentiles_line(histogram: &Histogram<u64>) -> String {
    let mut parts: Vec<String> = PERCENTILES
        .iter()
        .map(|(percentile, name)| {
            let value = histogram.value_at_quantile(percentile / 100.0);
            format!("{name} {}", millis(value))
        })
        .collect();
    parts.push(format!("max {}", millis(histogram.max())));
    parts.join("  ")
}

/// The percentiles as JSON (microseconds), or null when nothing was recorded.
pub fn percentiles_json(histogram: &Histogram<u64>) -> Json {
    if histogram.is_empty() {
        return Json::Null;
    }
    let mut entries: Vec<(String, Json)> = PERCENTILES
        .iter()
        .map(|(percentile, name)| {
            let value = histogram.value_at_quantile(percentile / 100.0);
            ((*name).to_string(), Json::from(value))
        })
        .collect();
    entries.push(("max".into(), Json::from(histogram.max())));
    entries.push(("mean".into(), Json::from(histogram.mean())));
    entries.push(("count".into(), Json::from(histogram.len())));
    Json::Object(entries)
}

/// Percentiles a latency CDF is drawn through: dense in the tail, where brokers differ.
const CDF_PERCENTILES: [f64; 20] = [
    1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 98.0, 99.0, 99.5, 99.9,
    99.95, 99.99, 99.999, 100.0,
];

/// The latency distribution as `[[percentile, microseconds], ...]` (for a CDF plot), or null
/// when nothing was recorded.
pub fn cdf_json(histogram: &Histogram<u64>) -> Json {
    if histogram.is_empty() {
        return Json::Null;
    }
    Json::Array(
        CDF_PERCENTILES
            .iter()
            .map(|percentile| {
                let value = histogram.value_at_quantile(percentile / 100.0);
                Json::Array(vec![Json::from(*percentile), Json::from(value)])
            })
            .collect(),
    )
}

/// The errors as `3 (TIMEOUT 2, CONNECTION_LOST 1)`, or `none`.
pub fn errors_line(errors: &BTreeMap<String, u64>) -> String {
    let total: u64 = errors.values().sum();
    if total == 0 {
        return "none".into();
    }
    let names: Vec<String> = errors
        .iter()
        .map(|(name, count)| format!("{name} {}", thousands(*count)))
        .collect();
    format!("{} ({})", thousands(total), names.join(", "))
}

/// The errors as JSON: `{"total": n, "by_kind": {...}}`.
pub fn errors_json(errors: &BTreeMap<String, u64>) -> Json {
    let total: u64 = errors.values().sum();
    Json::object([
        ("total", Json::from(total)),
        (
            "by_kind",
            Json::Object(
                errors
                    .iter()
                    .map(|(name, count)| (name.clone(), Json::from(*count)))
                    .collect(),
            ),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_add_up_and_reset() {
        let mut thread = Delta {
            produced_records: 3,
            produced_bytes: 300,
            ..Delta::default()
        };
        thread.error("TIMEOUT".into());
        record_latency(&mut thread.produce_latency_us, Duration::from_micros(1500));
        record_latency(&mut thread.produce_latency_us, Duration::from_secs(7200));
        let taken = thread.take();
        assert_eq!(thread.produced_records, 0);
        assert!(thread.produce_latency_us.is_empty() && thread.errors.is_empty());
        let mut total = Delta::default();
        total.add(&taken);
        total.add(&taken);
        assert_eq!(total.produced_records, 6);
        assert_eq!(total.error_count(), 2);
        assert_eq!(total.produce_latency_us.len(), 4);
        // Clamped to the histogram's top rather than lost.
        assert!(total.produce_latency_us.max() >= LATENCY_MAX_US - LATENCY_MAX_US / 500);
    }

    #[test]
    fn numbers_format() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(millis(1234), "1.234 ms");
        let mut errors = BTreeMap::new();
        assert_eq!(errors_line(&errors), "none");
        errors.insert("TIMEOUT".to_string(), 2);
        errors.insert("CONNECTION_LOST".to_string(), 1);
        assert_eq!(errors_line(&errors), "3 (CONNECTION_LOST 1, TIMEOUT 2)");
    }
}
