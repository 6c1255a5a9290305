//! The fio baseline: the same write pattern as the engine run, on the same directory, in the same
//! invocation (the machines are noisy; only ratios from one run mean something).
//!
//! Pattern: one file per partition (`numjobs` = partitions), sequential writes of one block size,
//! io_uring, O_DIRECT, queue depth 1 (the engine has one write in flight per partition), and with
//! fsync on, an `fdatasync` after every write: what a group commit holding that many bytes costs.

use crate::json::{self, Json};
use std::path::PathBuf;
use std::process::Command;

/// One fio run.
#[derive(Clone, Debug)]
pub struct FioJob {
    /// Directory the files go in (removed afterwards: `--unlink=1`).
    pub dir: PathBuf,
    /// Bytes per write.
    pub block_bytes: u64,
    /// Parallel jobs, one file each.
    pub jobs: u32,
    /// Bytes each job writes.
    pub bytes_per_job: u64,
    /// `fdatasync` after every write.
    pub fdatasync: bool,
    /// Stop after this long even if `bytes_per_job` is not written yet.
    pub runtime_s: u64,
}

/// What fio measured, summed over its jobs (`--group_reporting`).
#[derive(Clone, Debug)]
pub struct FioResult {
    /// Write bandwidth, bytes per second.
    pub write_bytes_per_s: f64,
    /// Bytes written.
    pub write_bytes: f64,
    /// Completion latency of a write, p50 / p99, µs.
    pub write_clat_p50_us: Option<f64>,
    pub write_clat_p99_us: Option<f64>,
    /// Latency of an fdatasync, p50 / p99, µs (fsync runs only).
    pub sync_p50_us: Option<f64>,
    pub sync_p99_us: Option<f64>,
    /// User + system CPU seconds fio spent.
    pub cpu_seconds: Option<f64>,
}

impl FioJob {
    /// The fio command line.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--name=runnel-baseline".into(),
            format!("--directory={}", self.dir.display()),
            "--rw=write".into(),
            format!("--bs={}", self.block_bytes),
            "--ioengine=io_uring".into(),
            "--direct=1".into(),
            "--iodepth=1".into(),
            format!("--numjobs={}", self.jobs),
            "--nrfiles=1".into(),
            format!("--size={}", self.bytes_per_job),
            format!("--fdatasync={}", u8::from(self.fdatasync)),
            format!("--runtime={}", self.runtime_s),
            "--unlink=1".into(),
            "--group_reporting".into(),
            "--output-format=json".into(),
        ]
    }

    /// Runs fio and parses its report.
    pub fn run(&self) -> Result<FioResult, String> {
        let output = Command::new("fio")
            .args(self.args())
            .output()
            .map_err(|error| format!("running fio (is it installed?): {error}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(format!(
                "fio failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr),
                stdout
            ));
        }
        parse_report(&stdout)
    }
}

/// Extracts the figures from fio's JSON report (fio may print notices before the document).
pub fn parse_report(stdout: &str) -> Result<FioResult, String> {
    let start = stdout
        .find('{')
        .ok_or_else(|| format!("no JSON in fio's output: {stdout}"))?;
    let report = json::parse(&stdout[start..]).map_err(|error| format!("fio report: {error}"))?;
    let job = report
        .get("jobs")
        .and_then(Json::as_array)
        .and_then(|jobs| jobs.first())
        .ok_or("fio report has no jobs")?;
    let number = |keys: &[&str]| job.path(keys).and_then(Json::as_f64);
    let percentile_us = |keys: &[&str], percentile: &str| {
        job.path(keys)
            .and_then(|value| value.get(percentile))
            .and_then(Json::as_f64)
            .map(|nanos| nanos / 1000.0)
    };
    let write_bytes_per_s = number(&["write", "bw_bytes"]).ok_or("fio report: no write bw")?;
    let runtime_s = number(&["job_runtime"]).map(|millis| millis / 1000.0);
    let cpu_seconds = match (number(&["usr_cpu"]), number(&["sys_cpu"]), runtime_s) {
        (Some(user), Some(system), Some(runtime)) => Some((user + system) / 100.0 * runtime),
        _ => None,
    };
    Ok(FioResult {
        write_bytes_per_s,
        write_bytes: number(&["write", "io_bytes"]).unwrap_or(0.0),
        write_clat_p50_us: percentile_us(&["write", "clat_ns", "percentile"], "50.000000"),
        write_clat_p99_us: percentile_us(&["write", "clat_ns", "percentile"], "99.000000"),
        sync_p50_us: percentile_us(&["sync", "lat_ns", "percentile"], "50.000000"),
        sync_p99_us: percentile_us(&["sync", "lat_ns", "percentile"], "99.000000"),
        cpu_seconds,
    })
}

impl FioResult {
    /// The result as JSON, with the job that produced it.
    pub fn to_json(&self, job: &FioJob) -> Json {
        Json::object([
            ("block_bytes", job.block_bytes.into()),
            ("jobs", u64::from(job.jobs).into()),
            ("bytes_per_job", job.bytes_per_job.into()),
            ("fdatasync", job.fdatasync.into()),
            ("write_mb_per_s", (self.write_bytes_per_s / 1e6).into()),
            ("write_bytes", self.write_bytes.into()),
            ("write_clat_p50_us", self.write_clat_p50_us.into()),
            ("write_clat_p99_us", self.write_clat_p99_us.into()),
            ("sync_p50_us", self.sync_p50_us.into()),
            ("sync_p99_us", self.sync_p99_us.into()),
            ("cpu_seconds", self.cpu_seconds.into()),
            ("command", Json::String(command_line(&job.args()))),
        ])
    }
}

fn command_line(args: &[String]) -> String {
    std::iter::once("fio")
        .chain(args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks that fio is runnable before a long engine run.
pub fn check_installed() -> Result<(), String> {
    Command::new("fio")
        .arg("--version")
        .output()
        .map_err(|error| format!("fio not found ({error}); install it (apt-get install fio)"))
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_fio_3_report() {
        let report = r#"note: both iodepth >= 1 and synchronous I/O engine are selected
{ "fio version" : "fio-3.33", "jobs" : [ { "jobname" : "runnel-baseline", "job_runtime" : 2000,
  "usr_cpu" : 10.0, "sys_cpu" : 15.0,
  "write" : { "io_bytes" : 268435456, "bw_bytes" : 134217728,
    "clat_ns" : { "percentile" : { "50.000000" : 80384, "99.000000" : 150528 } } },
  "sync" : { "total_ios" : 16384, "lat_ns" : { "percentile" : { "50.000000" : 120000,
    "99.000000" : 400000 } } } } ] }"#;
        let result = parse_report(report).expect("parses");
        assert_eq!(result.write_bytes_per_s, 134_217_728.0);
        assert_eq!(result.write_clat_p50_us, Some(80.384));
        assert_eq!(result.sync_p99_us, Some(400.0));
        assert_eq!(result.cpu_seconds, Some(0.5));
    }
}
