//! `runnel`: the broker and its command-line tools. Thin: argument parsing and wiring only.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "runnel",
    version,
    about = "A Kafka-compatible event-streaming broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a broker (not implemented yet: the storage engine exists, the network layer does not).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9092")]
        listen: String,
        /// Directory holding the partition logs.
        #[arg(long, default_value = "./runnel-data")]
        data_dir: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { listen, data_dir } => {
            eprintln!(
                "runnel: the broker is not implemented yet (would listen on {listen} with data in \
                 {data_dir}). The storage engine is ready; the Kafka protocol layer is the next issue."
            );
            ExitCode::from(2)
        }
    }
}
