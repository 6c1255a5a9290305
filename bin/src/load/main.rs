//! `runnel-load`: the load generator. Thin: argument parsing here, one module per workload.
//!
//! `runnel-load engine` drives the storage engine directly (no network): N partition logs on
//! one or more shards, appends as fast as group commit allows, and optionally runs `fio` with the
//! same write pattern in the same run as the baseline (see `perf/engine-vs-fio.sh`).

mod engine;
mod fio;
mod io_stats;
mod json;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "runnel-load", version, about = "Load generator for runnel")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Append pre-built batches straight into partition logs and report MB/s and latency,
    /// optionally side by side with fio.
    Engine(engine::EngineArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Engine(args) => engine::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("runnel-load: {error}");
            ExitCode::FAILURE
        }
    }
}
