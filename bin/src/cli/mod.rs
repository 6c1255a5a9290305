//! The `runnel` command-line tools: `topic`, `produce`, `consume` and `group`.
//!
//! Thin: argument parsing, output formatting and exit codes. Every broker call goes through
//! `runnel_net::client` (no protocol code here). A command runs on one glommio executor on the
//! calling thread (`produce` adds one thread that reads stdin).
//!
//! Exit codes, for scripts: [`EXIT_OK`], [`EXIT_BROKER`] (the broker answered with an error, or
//! with something unusable; the Kafka error name is printed), [`EXIT_USAGE`] (bad arguments or
//! input), [`EXIT_CONNECT`] (the broker could not be reached, or the connection failed).

pub mod consume;
pub mod group;
pub mod produce;
pub mod topic;

use runnel_net::client::{Client, ClientConfig, ClientError};
use std::future::Future;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

/// Success.
pub const EXIT_OK: u8 = 0;
/// The broker answered with an error (its Kafka name is printed) or an unusable response.
pub const EXIT_BROKER: u8 = 1;
/// Bad arguments or bad input (also what clap uses for argument errors).
pub const EXIT_USAGE: u8 = 2;
/// The broker could not be reached, or the connection failed or timed out.
pub const EXIT_CONNECT: u8 = 3;

/// The exit codes, for `--help`.
pub const EXIT_CODES_HELP: &str = "Exit codes: 0 ok, 1 error from the broker (the Kafka error \
name is printed), 2 usage or input error, 3 cannot connect to the broker.";

/// Where and how to reach the broker; shared by every command.
#[derive(clap::Args, Clone, Debug)]
pub struct ConnectionArgs {
    /// The broker to connect to.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
    pub bootstrap_server: String,
    /// Give up on a request (and on connecting) after this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub request_timeout_ms: u64,
}

/// Why a command failed; decides the exit code.
#[derive(Debug)]
pub enum CliError {
    /// Bad arguments or input: exit 2.
    Usage(String),
    /// From the client: exit 1 or 3.
    Client(ClientError),
    /// The command cannot do what was asked (e.g. resetting an active group): exit 1.
    Failed(String),
    /// Writing the output failed (a closed pipe ends the command quietly).
    Output(io::Error),
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> CliError {
        CliError::Client(error)
    }
}

impl From<runnel_net::client::records::RecordError> for CliError {
    fn from(error: runnel_net::client::records::RecordError) -> CliError {
        CliError::Client(ClientError::Records(error))
    }
}

impl From<io::Error> for CliError {
    fn from(error: io::Error) -> CliError {
        CliError::Output(error)
    }
}

/// Runs a command's future on a fresh executor on this thread and turns its result into the
/// exit code, printing the error (if any) on stderr.
pub fn run<F, Fut>(command: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), CliError>>,
{
    let executor = match glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).make() {
        Ok(executor) => executor,
        Err(error) => {
            eprintln!("runnel: cannot start the I/O executor: {error}");
            return ExitCode::from(EXIT_BROKER);
        }
    };
    let result = executor.run(command());
    ExitCode::from(report(result))
}

fn report(result: Result<(), CliError>) -> u8 {
    match result {
        Ok(()) => EXIT_OK,
        Err(CliError::Usage(message)) => {
            eprintln!("runnel: {message}");
            EXIT_USAGE
        }
        Err(CliError::Client(error)) if error.is_connection() => {
            eprintln!("runnel: {error}");
            EXIT_CONNECT
        }
        Err(CliError::Client(error)) => {
            eprintln!("runnel: error: {error}");
            EXIT_BROKER
        }
        Err(CliError::Failed(message)) => {
            eprintln!("runnel: error: {message}");
            EXIT_BROKER
        }
        Err(CliError::Output(error)) if error.kind() == io::ErrorKind::BrokenPipe => EXIT_OK,
        Err(CliError::Output(error)) => {
            eprintln!("runnel: writing output: {error}");
            EXIT_BROKER
        }
    }
}

/// Connects and negotiates versions.
pub async fn connect(args: &ConnectionArgs) -> Result<Client, CliError> {
    Ok(Client::connect(&args.bootstrap_server, client_config(args)).await?)
}

/// The client settings every command uses.
pub fn client_config(args: &ConnectionArgs) -> ClientConfig {
    let timeout = Duration::from_millis(args.request_timeout_ms);
    ClientConfig {
        client_id: "runnel-cli".into(),
        connect_timeout: timeout,
        request_timeout: timeout,
        ..ClientConfig::default()
    }
}

/// Parses `KEY=VALUE` (for `--config`).
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// Writes rows under a header line, each column padded to its widest cell.
pub fn write_table(out: &mut impl Write, headers: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header_row: Vec<String> = headers.iter().map(|header| header.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (index, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if index + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Writes one JSON value on its own line.
pub fn write_json(out: &mut impl Write, value: &serde_json::Value) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)
}

/// A topic id as Kafka's tools print it: URL-safe base64 of the 16 bytes, no padding.
pub fn topic_id_string(id: uuid::Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    for chunk in id.as_bytes().chunks(3) {
        let bits = chunk.iter().enumerate().fold(0u32, |acc, (index, byte)| {
            acc | u32::from(*byte) << (16 - 8 * index)
        });
        for index in 0..=chunk.len() {
            out.push(char::from(
                ALPHABET[(bits >> (18 - 6 * index)) as usize & 63],
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids_print_like_kafka() {
        assert_eq!(topic_id_string(uuid::Uuid::nil()), "AAAAAAAAAAAAAAAAAAAAAA");
        // The topic id in Kafka's quickstart output, and one that needs the URL-safe digits.
        let id = uuid::Uuid::from_bytes([
            0x34, 0xf9, 0x99, 0x1f, 0x28, 0x5b, 0x47, 0xdc, 0xb4, 0xd3, 0x03, 0x20, 0x94, 0xc1,
            0xf6, 0xb2,
        ]);
        assert_eq!(topic_id_string(id), "NPmZHyhbR9y00wMglMH2sg");
        assert_eq!(topic_id_string(uuid::Uuid::max()), "_____________________w");
    }

    #[test]
    fn tables_align_columns() {
        let mut out = Vec::new();
        let rows = vec![
            vec!["a-long-topic".to_string(), "3".to_string()],
            vec!["t".to_string(), "12".to_string()],
        ];
        write_table(&mut out, &["TOPIC", "PARTITIONS"], &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "TOPIC         PARTITIONS\na-long-topic  3\nt             12\n"
        );
    }

    #[test]
    fn key_values_parse() {
        assert_eq!(
            parse_key_value("retention.ms=1000"),
            Ok(("retention.ms".into(), "1000".into()))
        );
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    #[test]
    fn exit_codes_follow_the_error_kind() {
        assert_eq!(report(Ok(())), EXIT_OK);
        assert_eq!(report(Err(CliError::Usage("x".into()))), EXIT_USAGE);
        let connect = ClientError::Connect {
            address: "a".into(),
            reason: "refused".into(),
        };
        assert_eq!(report(Err(connect.into())), EXIT_CONNECT);
        let broker = ClientError::Broker {
            context: "c".into(),
            error: runnel_net::client::KafkaError {
                code: 3,
                message: None,
            },
        };
        assert_eq!(report(Err(broker.into())), EXIT_BROKER);
        assert_eq!(report(Err(CliError::Failed("x".into()))), EXIT_BROKER);
        let pipe = io::Error::from(io::ErrorKind::BrokenPipe);
        assert_eq!(report(Err(pipe.into())), EXIT_OK);
    }
}
