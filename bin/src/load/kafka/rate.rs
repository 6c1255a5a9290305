//! `--rate`: how fast records are created, and the limiter that paces one producer.
//!
//! The limiter keeps a schedule (record n is due at `start + n / rate`) rather than a gap after
//! each record, so a producer that falls briefly behind catches up and the long-run rate is
//! exact. Catching up is bounded by [`CATCH_UP_MAX_NS`]: after a longer stall (a slow broker, a
//! full window) the schedule restarts from now minus that, instead of firing a burst as long as
//! the stall. Times are plain nanoseconds so the logic is testable without a clock.

/// Longest backlog a limiter makes up for after a stall.
pub const CATCH_UP_MAX_NS: u64 = 100_000_000;

/// `--rate`: records per second, or bytes per second (turned into records by the record size).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    /// Records per second.
    Records(f64),
    /// Bytes (of value) per second.
    Bytes(f64),
}

impl Rate {
    /// Records per second for records of `record_bytes`.
    pub fn records_per_second(self, record_bytes: u64) -> f64 {
        match self {
            Rate::Records(per_second) => per_second,
            Rate::Bytes(per_second) => per_second / record_bytes.max(1) as f64,
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::Records(per_second) => write!(out, "{per_second} records/s"),
            Rate::Bytes(per_second) => write!(out, "{} MB/s", per_second / 1e6),
        }
    }
}

/// Parses `--rate`: `N` (records/s), `Nrps`, or `N MB/s` / `NMB/s` / `Nmb` (10^6 bytes/s),
/// `KB/s` and `GB/s` likewise.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let lower = text.trim().to_ascii_lowercase().replace(' ', "");
    let end = lower
        .find(|character: char| !(character.is_ascii_digit() || character == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(end);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: --rate needs a number"))?;
    let unit = unit.trim_end_matches("/s").trim_end_matches("ps");
    let rate = match unit {
        "" | "r" | "rec" | "records" => Rate::Records(number),
        "kb" => Rate::Bytes(number * 1e3),
        "mb" => Rate::Bytes(number * 1e6),
        "gb" => Rate::Bytes(number * 1e9),
        _ => {
            return Err(format!(
                "{text:?}: --rate is records/s (`5000`) or bytes/s (`50MB/s`, `500KB/s`)"
            ))
        }
    };
    let value = match rate {
        Rate::Records(value) | Rate::Bytes(value) => value,
    };
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("{text:?}: --rate must be above zero"));
    }
    Ok(rate)
}

/// Paces one producer at a fixed rate. See the module documentation.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    interval_ns: f64,
    /// When the next record is due, in the caller's nanoseconds.
    next_due_ns: f64,
}

impl RateLimiter {
    /// A limiter for `per_second` (> 0) records, the first due at `start_ns`.
    pub fn new(per_second: f64, start_ns: u64) -> RateLimiter {
        assert!(per_second > 0.0 && per_second.is_finite(), "bad rate");
        RateLimiter {
            interval_ns: 1e9 / per_second,
            next_due_ns: start_ns as f64,
        }
    }

    /// Nanoseconds until the next record is due (0: now).
    pub fn delay_ns(&self, now_ns: u64) -> u64 {
        let wait = self.next_due_ns - now_ns as f64;
        if wait <= 0.0 {
            0
        } else {
            wait.ceil() as u64
        }
    }

    /// Takes the next record's turn (call when [`RateLimiter::delay_ns`] is 0).
    pub fn take(&mut self, now_ns: u64) {
        let floor = now_ns.saturating_sub(CATCH_UP_MAX_NS) as f64;
        self.next_due_ns = self.next_due_ns.max(floor) + self.interval_ns;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a limiter in simulated time for `duration_ns`, taking every turn as soon as it is
    /// due (plus `lag_ns`, the caller's own delay); returns how many records it allowed.
    fn simulate(per_second: f64, duration_ns: u64, lag_ns: u64) -> u64 {
        let mut limiter = RateLimiter::new(per_second, 0);
        let (mut now, mut count) = (0u64, 0u64);
        while now < duration_ns {
            let delay = limiter.delay_ns(now);
            if delay > 0 {
                now += delay + lag_ns;
                continue;
            }
            limiter.take(now);
            count += 1;
        }
        count
    }

    #[test]
    fn the_long_run_rate_is_exact() {
        assert_eq!(simulate(1000.0, 1_000_000_000, 0), 1000);
        assert_eq!(simulate(1000.0, 10_000_000_000, 0), 10_000);
        assert_eq!(simulate(250.0, 2_000_000_000, 0), 500);
        // A caller that always wakes late still gets the rate: the schedule catches up.
        let late = simulate(1000.0, 10_000_000_000, 300_000);
        assert!((9_990..=10_010).contains(&late), "{late}");
    }

    #[test]
    fn a_stall_is_made_up_only_within_the_bound() {
        let mut limiter = RateLimiter::new(1000.0, 0);
        limiter.take(0);
        assert_eq!(limiter.delay_ns(0), 1_000_000);
        // Stalled for 10 s: only 100 ms of backlog (100 records) fire at once, plus the one
        // due now.
        let now = 10_000_000_000;
        let mut burst = 0;
        while limiter.delay_ns(now) == 0 {
            limiter.take(now);
            burst += 1;
            assert!(burst <= 1000, "unbounded burst");
        }
        assert_eq!(burst, 101);
        assert_eq!(limiter.delay_ns(now), 1_000_000);
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("5000"), Ok(Rate::Records(5000.0)));
        assert_eq!(parse_rate("2.5e0").ok(), None);
        assert_eq!(parse_rate("50MB/s"), Ok(Rate::Bytes(50e6)));
        assert_eq!(parse_rate("50 mb/s"), Ok(Rate::Bytes(50e6)));
        assert_eq!(parse_rate("500KB/s"), Ok(Rate::Bytes(500e3)));
        assert_eq!(parse_rate("1000rps"), Ok(Rate::Records(1000.0)));
        assert_eq!(parse_rate("1000 records/s"), Ok(Rate::Records(1000.0)));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("10 furlongs").is_err());
        assert_eq!(Rate::Bytes(50e6).records_per_second(1000), 50_000.0);
    }
}
