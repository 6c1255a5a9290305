//! `runnel-load`: the load generator. Thin: argument parsing here, one module per workload.
//!
//! `runnel-load engine` drives the storage engine directly (no network): N partition logs on
//! one or more shards, appends as fast as group commit allows, and optionally runs `fio` with the
//! same write pattern in the same run as the baseline (see `perf/engine-vs-fio.sh`).
//!
//! `runnel-load produce | consume | e2e` load any Kafka-compatible broker through runnel's
//! client (see [`kafka`]).

mod engine;
mod fio;
mod io_stats;
mod json;
mod kafka;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "runnel-load",
    version,
    about = "Load generator for runnel",
    after_help = "Exit codes: 0 ok, 1 the run failed (e.g. cannot reach the broker), 2 usage, \
                  3 --verify found a violation."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Append pre-built batches straight into partition logs and report MB/s and latency,
    /// optionally side by side with fio.
    Engine(engine::EngineArgs),
    /// Produce records as fast as acknowledged or at --rate; report throughput and latency.
    Produce(kafka::ProduceCommand),
    /// Read records (from earliest, latest or an offset); report throughput.
    Consume(kafka::ConsumeCommand),
    /// Producers and tailing consumers together; report end-to-end latency.
    E2e(kafka::E2eCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Engine(args) => engine::run(&args).map(|()| true),
        Command::Produce(command) => kafka::run_produce(command),
        Command::Consume(command) => kafka::run_consume(command),
        Command::E2e(command) => kafka::run_e2e(command),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("runnel-load: verify failed");
            ExitCode::from(kafka::EXIT_VERIFY_FAILED)
        }
        Err(error) => {
            eprintln!("runnel-load: {error}");
            ExitCode::FAILURE
        }
    }
}
