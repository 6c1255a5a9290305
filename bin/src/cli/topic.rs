//! `runnel topic create|describe|list|delete|alter-config`.

use super::{
    connect, parse_key_value, topic_id_string, write_json, write_table, CliError, ConnectionArgs,
};
use clap::{ArgGroup, Subcommand};
use runnel_net::client::{ApiKey, Client, ConfigSource, NewTopic, TopicInfo};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::Write;

/// `runnel topic ...`.
#[derive(clap::Args, Debug)]
pub struct TopicArgs {
    #[command(subcommand)]
    command: TopicCommand,
}

#[derive(Subcommand, Debug)]
enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// Show topics' partitions, leaders, replicas and configs.
    Describe(DescribeArgs),
    /// List topics.
    List(ListArgs),
    /// Delete a topic.
    Delete(DeleteArgs),
    /// Set or remove configs of a topic.
    AlterConfig(AlterConfigArgs),
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Topic name.
    #[arg(long)]
    topic: String,
    /// Number of partitions (default: the broker's num.partitions).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: Option<i32>,
    /// Replication factor (default: the broker's).
    #[arg(long, value_parser = clap::value_parser!(i16).range(1..))]
    replication_factor: Option<i16>,
    /// A topic config, e.g. `--config retention.ms=60000`; repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    configs: Vec<(String, String)>,
    /// Succeed if the topic already exists.
    #[arg(long)]
    if_not_exists: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct DescribeArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Topic to describe (default: every topic).
    #[arg(long)]
    topic: Option<String>,
    /// Show every config, not only those set on the topic.
    #[arg(long)]
    all_configs: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct ListArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct DeleteArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Topic name.
    #[arg(long)]
    topic: String,
    /// Succeed if the topic does not exist.
    #[arg(long)]
    if_exists: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
#[command(group(ArgGroup::new("change").required(true).multiple(true).args(["configs", "delete_configs"])))]
struct AlterConfigArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Topic name.
    #[arg(long)]
    topic: String,
    /// A config to set, e.g. `--config retention.ms=60000`; repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    configs: Vec<(String, String)>,
    /// A config to remove (back to the broker default); repeatable.
    #[arg(long = "delete-config", value_name = "KEY")]
    delete_configs: Vec<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Kafka's TOPIC_ALREADY_EXISTS and UNKNOWN_TOPIC_OR_PARTITION.
const TOPIC_ALREADY_EXISTS: i16 = 36;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

/// Runs `runnel topic ...`.
pub async fn run(args: TopicArgs) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match args.command {
        TopicCommand::Create(args) => create(args, &mut out).await,
        TopicCommand::Describe(args) => describe(args, &mut out).await,
        TopicCommand::List(args) => list(args, &mut out).await,
        TopicCommand::Delete(args) => delete(args, &mut out).await,
        TopicCommand::AlterConfig(args) => alter_config(args, &mut out).await,
    }?;
    out.flush()?;
    Ok(())
}

async fn create(args: CreateArgs, out: &mut impl Write) -> Result<(), CliError> {
    let mut client = connect(&args.connection).await?;
    let topic = NewTopic {
        name: args.topic.clone(),
        partitions: args.partitions,
        replication_factor: args.replication_factor,
        configs: args.configs,
    };
    let created = match client.create_topic(&topic, false).await {
        Ok(()) => true,
        Err(error)
            if args.if_not_exists
                && error.kafka_error().map(|e| e.code) == Some(TOPIC_ALREADY_EXISTS) =>
        {
            false
        }
        Err(error) => return Err(error.into()),
    };
    if args.json {
        write_json(out, &json!({"topic": args.topic, "created": created}))?;
    } else if created {
        writeln!(out, "Created topic {}.", args.topic)?;
    } else {
        writeln!(out, "Topic {} already exists.", args.topic)?;
    }
    Ok(())
}

async fn delete(args: DeleteArgs, out: &mut impl Write) -> Result<(), CliError> {
    let mut client = connect(&args.connection).await?;
    let deleted = match client.delete_topic(&args.topic).await {
        Ok(()) => true,
        Err(error)
            if args.if_exists
                && error.kafka_error().map(|e| e.code) == Some(UNKNOWN_TOPIC_OR_PARTITION) =>
        {
            false
        }
        Err(error) => return Err(error.into()),
    };
    if args.json {
        write_json(out, &json!({"topic": args.topic, "deleted": deleted}))?;
    } else if deleted {
        writeln!(out, "Deleted topic {}.", args.topic)?;
    } else {
        writeln!(out, "Topic {} does not exist.", args.topic)?;
    }
    Ok(())
}

async fn alter_config(args: AlterConfigArgs, out: &mut impl Write) -> Result<(), CliError> {
    let mut client = connect(&args.connection).await?;
    client
        .alter_topic_configs(&args.topic, &args.configs, &args.delete_configs)
        .await?;
    if args.json {
        let set: Map<String, Value> = args
            .configs
            .iter()
            .map(|(key, value)| (key.clone(), Value::from(value.as_str())))
            .collect();
        write_json(
            out,
            &json!({"topic": args.topic, "set": set, "deleted": args.delete_configs}),
        )?;
    } else {
        writeln!(out, "Updated configs of topic {}.", args.topic)?;
    }
    Ok(())
}

async fn list(args: ListArgs, out: &mut impl Write) -> Result<(), CliError> {
    let mut client = connect(&args.connection).await?;
    let mut topics = client.metadata(None, false).await?.topics;
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    if args.json {
        let listed: Vec<Value> = topics
            .iter()
            .map(|topic| {
                json!({
                    "name": topic.name,
                    "topic_id": topic_id_string(topic.topic_id),
                    "partitions": topic.partitions.len(),
                    "replication_factor": replication_factor(topic),
                    "internal": topic.is_internal,
                })
            })
            .collect();
        write_json(out, &Value::Array(listed))?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|topic| {
            vec![
                topic.name.clone(),
                topic.partitions.len().to_string(),
                replication_factor(topic).to_string(),
            ]
        })
        .collect();
    write_table(out, &["TOPIC", "PARTITIONS", "REPLICATION FACTOR"], &rows)?;
    Ok(())
}

async fn describe(args: DescribeArgs, out: &mut impl Write) -> Result<(), CliError> {
    let mut client = connect(&args.connection).await?;
    let mut topics = match &args.topic {
        Some(name) => vec![client.topic(name, false).await?],
        None => client.metadata(None, false).await?.topics,
    };
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    // `None`: the broker has no DescribeConfigs (said once on stderr, not an error).
    let mut configs: Vec<Option<BTreeMap<String, String>>> = Vec::with_capacity(topics.len());
    let can_describe_configs = client.version(ApiKey::DescribeConfigs).is_ok();
    if !can_describe_configs {
        eprintln!("runnel: note: the broker does not support DescribeConfigs; configs not shown");
    }
    for topic in &topics {
        configs.push(if can_describe_configs {
            Some(topic_configs(&mut client, &topic.name, args.all_configs).await?)
        } else {
            None
        });
    }
    if args.json {
        let described: Vec<Value> = topics
            .iter()
            .zip(&configs)
            .map(|(topic, configs)| describe_json(topic, configs.as_ref()))
            .collect();
        write_json(out, &Value::Array(described))?;
        return Ok(());
    }
    let summary: Vec<Vec<String>> = topics
        .iter()
        .zip(&configs)
        .map(|(topic, configs)| {
            let configs = match configs {
                None => "(not available)".to_string(),
                Some(configs) if configs.is_empty() => "-".to_string(),
                Some(configs) => configs
                    .iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect::<Vec<_>>()
                    .join(","),
            };
            vec![
                topic.name.clone(),
                topic_id_string(topic.topic_id),
                topic.partitions.len().to_string(),
                replication_factor(topic).to_string(),
                configs,
            ]
        })
        .collect();
    write_table(
        out,
        &[
            "TOPIC",
            "TOPIC ID",
            "PARTITIONS",
            "REPLICATION FACTOR",
            "CONFIGS",
        ],
        &summary,
    )?;
    let ids = |ids: &[i32]| ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    let partitions: Vec<Vec<String>> = topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|partition| {
                vec![
                    topic.name.clone(),
                    partition.partition.to_string(),
                    partition.leader.to_string(),
                    ids(&partition.replicas),
                    ids(&partition.isr),
                ]
            })
        })
        .collect();
    writeln!(out)?;
    write_table(
        out,
        &["TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR"],
        &partitions,
    )?;
    Ok(())
}

/// The topic's configs: those set on it, or all of them with `all`.
async fn topic_configs(
    client: &mut Client,
    name: &str,
    all: bool,
) -> Result<BTreeMap<String, String>, CliError> {
    Ok(client
        .describe_topic_configs(name)
        .await?
        .into_iter()
        .filter(|entry| all || entry.source == ConfigSource::TOPIC)
        .map(|entry| {
            let value = match (entry.is_sensitive, entry.value) {
                (true, _) => "(sensitive)".to_string(),
                (false, Some(value)) => value,
                (false, None) => "null".to_string(),
            };
            (entry.name, value)
        })
        .collect())
}

fn describe_json(topic: &TopicInfo, configs: Option<&BTreeMap<String, String>>) -> Value {
    let partitions: Vec<Value> = topic
        .partitions
        .iter()
        .map(|partition| {
            json!({
                "partition": partition.partition,
                "leader": partition.leader,
                "leader_epoch": partition.leader_epoch,
                "replicas": partition.replicas,
                "isr": partition.isr,
            })
        })
        .collect();
    json!({
        "name": topic.name,
        "topic_id": topic_id_string(topic.topic_id),
        "internal": topic.is_internal,
        "partition_count": topic.partitions.len(),
        "replication_factor": replication_factor(topic),
        "configs": configs,
        "partitions": partitions,
    })
}

fn replication_factor(topic: &TopicInfo) -> usize {
    topic
        .partitions
        .iter()
        .map(|partition| partition.replicas.len())
        .max()
        .unwrap_or(0)
}
