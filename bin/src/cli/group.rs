//! `runnel group list|describe|delete|reset-offsets`: consumer groups, in the spirit of Kafka's
//! `kafka-consumer-groups`. Every group call goes to the group's coordinator through
//! `runnel_net::client::group::GroupAdmin`.

use super::{connect, write_json, write_table, CliError, ConnectionArgs};
use clap::{ArgGroup, Subcommand};
use runnel_net::client::group::{
    decode_assignment, CommittedOffset, GroupAdmin, GroupInfo, OffsetToCommit,
    PROTOCOL_TYPE_CONSUMER,
};
use runnel_net::client::{EARLIEST_OFFSET, LATEST_OFFSET};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

/// `runnel group ...`.
#[derive(clap::Args, Debug)]
pub struct GroupArgs {
    #[command(subcommand)]
    command: GroupCommand,
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// List groups with their state and protocol type.
    List(ListArgs),
    /// Show a group's state, members, assignments, committed offsets and lag.
    Describe(DescribeArgs),
    /// Delete groups (only groups without members) and their committed offsets.
    Delete(DeleteArgs),
    /// Change an inactive group's committed offsets.
    ResetOffsets(ResetArgs),
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
struct DescribeArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// The group.
    #[arg(value_name = "GROUP")]
    group: String,
    /// Show the members and their assignments instead of the offsets.
    #[arg(long)]
    members: bool,
    /// Print the result as JSON (members and offsets).
    #[arg(long, conflicts_with = "members")]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct DeleteArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// The groups.
    #[arg(value_name = "GROUP", required = true)]
    groups: Vec<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
#[command(group(ArgGroup::new("scope").required(true).args(["topics", "all_topics"])))]
#[command(group(ArgGroup::new("target").required(true)
    .args(["to_earliest", "to_latest", "to_offset", "to_datetime"])))]
struct ResetArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// The group (must have no members).
    #[arg(long)]
    group: String,
    /// A topic, or some of its partitions (`TOPIC:0,2`); repeatable.
    #[arg(long = "topic", value_name = "TOPIC[:P,...]", value_parser = parse_topic_spec)]
    topics: Vec<TopicSpec>,
    /// Every topic the group has committed offsets for.
    #[arg(long)]
    all_topics: bool,
    /// To the first retained offset.
    #[arg(long)]
    to_earliest: bool,
    /// To the log end.
    #[arg(long)]
    to_latest: bool,
    /// To this offset (kept within the retained range).
    #[arg(long, value_name = "OFFSET", value_parser = clap::value_parser!(i64).range(0..))]
    to_offset: Option<i64>,
    /// To the first offset whose timestamp is at or after this time (the log end if none):
    /// `YYYY-MM-DDTHH:MM:SS[.sss]` with `Z` or `±HH:MM`; no zone means UTC.
    #[arg(long, value_name = "ISO8601", value_parser = parse_datetime_ms)]
    to_datetime: Option<i64>,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Commit the plan (the default; accepted for Kafka's command line).
    #[arg(long, conflicts_with = "dry_run")]
    execute: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

/// `--topic` of reset-offsets: a topic and optionally some of its partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TopicSpec {
    topic: String,
    /// Empty: every partition.
    partitions: Vec<i32>,
}

/// Runs `runnel group ...`.
pub async fn run(args: GroupArgs) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match args.command {
        GroupCommand::List(args) => list(args, &mut out).await,
        GroupCommand::Describe(args) => describe(args, &mut out).await,
        GroupCommand::Delete(args) => delete(args, &mut out).await,
        GroupCommand::ResetOffsets(args) => reset_offsets(args, &mut out).await,
    }?;
    out.flush()?;
    Ok(())
}

async fn admin(connection: &ConnectionArgs) -> Result<GroupAdmin, CliError> {
    Ok(GroupAdmin::new(connect(connection).await?))
}

async fn list(args: ListArgs, out: &mut impl Write) -> Result<(), CliError> {
    let groups = admin(&args.connection).await?.list().await?;
    if args.json {
        let listed: Vec<Value> = groups
            .iter()
            .map(|group| {
                json!({
                    "group": group.group_id,
                    "state": group.state,
                    "protocol_type": group.protocol_type,
                })
            })
            .collect();
        write_json(out, &Value::Array(listed))?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|group| {
            vec![
                group.group_id.clone(),
                dash_if_empty(&group.state),
                dash_if_empty(&group.protocol_type),
            ]
        })
        .collect();
    write_table(out, &["GROUP", "STATE", "PROTOCOL-TYPE"], &rows)?;
    Ok(())
}

/// A member as described, with its assignment decoded.
struct MemberRow {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    host: String,
    partitions: Vec<(String, i32)>,
}

/// One row of the offsets table.
struct OffsetRow {
    topic: Option<String>,
    partition: Option<i32>,
    current: Option<i64>,
    log_end: Option<i64>,
    /// Index into the members, if the partition is assigned.
    member: Option<usize>,
}

impl OffsetRow {
    /// Log end minus committed offset, as Kafka's tool computes it (not clamped).
    fn lag(&self) -> Option<i64> {
        Some(self.log_end? - self.current?)
    }
}

async fn describe(args: DescribeArgs, out: &mut impl Write) -> Result<(), CliError> {
    let mut admin = admin(&args.connection).await?;
    let group = args.group.as_str();
    let info = admin.describe(group).await?;
    let committed = admin.committed(group).await?;
    if info.state == "Dead" && committed.is_empty() {
        return Err(CliError::Failed(format!(
            "consumer group '{group}' does not exist"
        )));
    }
    let members = member_rows(&info);
    let rows = offset_rows(&mut admin, &members, &committed).await?;
    if args.json {
        write_json(out, &describe_json(&info, &members, &rows))?;
        return Ok(());
    }
    write_table(
        out,
        &["GROUP", "STATE", "PROTOCOL-TYPE", "ASSIGNOR", "MEMBERS"],
        &[vec![
            group.to_string(),
            info.state.clone(),
            dash_if_empty(&info.protocol_type),
            dash_if_empty(&info.protocol),
            members.len().to_string(),
        ]],
    )?;
    writeln!(out)?;
    if members.is_empty() {
        eprintln!("Consumer group '{group}' has no active members.");
    }
    if args.members {
        let member_table: Vec<Vec<String>> = members
            .iter()
            .map(|member| {
                let assigned: Vec<String> = member
                    .partitions
                    .iter()
                    .map(|(topic, partition)| format!("{topic}-{partition}"))
                    .collect();
                vec![
                    group.to_string(),
                    member.member_id.clone(),
                    member.host.clone(),
                    member.client_id.clone(),
                    member.partitions.len().to_string(),
                    if assigned.is_empty() {
                        "-".into()
                    } else {
                        assigned.join(",")
                    },
                ]
            })
            .collect();
        write_table(
            out,
            &[
                "GROUP",
                "CONSUMER-ID",
                "HOST",
                "CLIENT-ID",
                "#PARTITIONS",
                "ASSIGNMENT",
            ],
            &member_table,
        )?;
        return Ok(());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let member = row.member.map(|index| &members[index]);
            vec![
                group.to_string(),
                row.topic.clone().unwrap_or_else(|| "-".into()),
                dash(row.partition),
                dash(row.current),
                dash(row.log_end),
                dash(row.lag()),
                member.map_or("-".into(), |m| m.member_id.clone()),
                member.map_or("-".into(), |m| m.host.clone()),
                member.map_or("-".into(), |m| m.client_id.clone()),
            ]
        })
        .collect();
    write_table(
        out,
        &[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID",
        ],
        &table,
    )?;
    Ok(())
}

/// The members with their assignments decoded (only consumer groups' assignments are in the
/// consumer protocol's format; others show no partitions). An assignment that does not decode
/// is reported and shown as none, so one bad member does not hide the rest of the group.
fn member_rows(info: &GroupInfo) -> Vec<MemberRow> {
    let consumer = info.protocol_type == PROTOCOL_TYPE_CONSUMER;
    let mut members: Vec<MemberRow> = info
        .members
        .iter()
        .map(|member| {
            let partitions = if consumer {
                decode_assignment(&member.assignment).unwrap_or_else(|error| {
                    eprintln!(
                        "runnel: warning: the assignment of member {} does not decode: {error}",
                        member.member_id
                    );
                    Vec::new()
                })
            } else {
                Vec::new()
            };
            MemberRow {
                member_id: member.member_id.clone(),
                group_instance_id: member.group_instance_id.clone(),
                client_id: member.client_id.clone(),
                host: member.client_host.clone(),
                partitions,
            }
        })
        .collect();
    members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    members
}

/// Kafka's rows: every assigned partition (committed or not), every committed partition nobody
/// is assigned, and a `-` row for each member without partitions. Sorted by topic, partition.
async fn offset_rows(
    admin: &mut GroupAdmin,
    members: &[MemberRow],
    committed: &[CommittedOffset],
) -> Result<Vec<OffsetRow>, CliError> {
    let mut owners: BTreeMap<(String, i32), usize> = BTreeMap::new();
    for (index, member) in members.iter().enumerate() {
        for key in &member.partitions {
            owners.insert(key.clone(), index);
        }
    }
    let current: BTreeMap<(String, i32), Option<i64>> = committed
        .iter()
        .map(|c| ((c.topic.clone(), c.partition), c.offset))
        .collect();
    let partitions: BTreeSet<(String, i32)> = owners
        .keys()
        .cloned()
        .chain(
            current
                .iter()
                .filter(|(_, offset)| offset.is_some())
                .map(|(key, _)| key.clone()),
        )
        .collect();
    let mut rows = Vec::with_capacity(partitions.len() + members.len());
    for (topic, partition) in partitions {
        // A partition of a deleted topic has no log end: shown as `-`, not an error.
        let log_end = match admin
            .client()
            .list_offset(&topic, partition, LATEST_OFFSET)
            .await
        {
            Ok(offset) => Some(offset),
            Err(error) if error.kafka_error().is_some() => None,
            Err(error) => return Err(error.into()),
        };
        let key = (topic, partition);
        rows.push(OffsetRow {
            current: current.get(&key).copied().flatten(),
            member: owners.get(&key).copied(),
            log_end,
            topic: Some(key.0),
            partition: Some(key.1),
        });
    }
    for (index, member) in members.iter().enumerate() {
        if member.partitions.is_empty() {
            rows.push(OffsetRow {
                topic: None,
                partition: None,
                current: None,
                log_end: None,
                member: Some(index),
            });
        }
    }
    Ok(rows)
}

fn describe_json(info: &GroupInfo, members: &[MemberRow], rows: &[OffsetRow]) -> Value {
    let members_json: Vec<Value> = members
        .iter()
        .map(|member| {
            let assignment: Vec<Value> = member
                .partitions
                .iter()
                .map(|(topic, partition)| json!({"topic": topic, "partition": partition}))
                .collect();
            json!({
                "member_id": member.member_id,
                "group_instance_id": member.group_instance_id,
                "client_id": member.client_id,
                "host": member.host,
                "assignment": assignment,
            })
        })
        .collect();
    let offsets: Vec<Value> = rows
        .iter()
        .map(|row| {
            let member = row.member.map(|index| &members[index]);
            json!({
                "topic": row.topic,
                "partition": row.partition,
                "current_offset": row.current,
                "log_end_offset": row.log_end,
                "lag": row.lag(),
                "consumer_id": member.map(|m| m.member_id.clone()),
                "host": member.map(|m| m.host.clone()),
                "client_id": member.map(|m| m.client_id.clone()),
            })
        })
        .collect();
    json!({
        "group": info.group_id,
        "state": info.state,
        "protocol_type": info.protocol_type,
        "protocol": info.protocol,
        "members": members_json,
        "offsets": offsets,
    })
}

async fn delete(args: DeleteArgs, out: &mut impl Write) -> Result<(), CliError> {
    let mut admin = admin(&args.connection).await?;
    let mut results = Vec::with_capacity(args.groups.len());
    for group in &args.groups {
        results.push((group.clone(), admin.delete(group).await?));
    }
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(group, error)| error.as_ref().map(|error| format!("'{group}': {error}")))
        .collect();
    if args.json {
        let deleted: Vec<Value> = results
            .iter()
            .map(|(group, error)| {
                json!({
                    "group": group,
                    "deleted": error.is_none(),
                    "error": error.as_ref().map(|error| error.name()),
                })
            })
            .collect();
        write_json(out, &Value::Array(deleted))?;
    } else {
        for (group, error) in &results {
            if error.is_none() {
                writeln!(out, "Deleted consumer group '{group}'.")?;
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "could not delete {}",
            failed.join("; ")
        )))
    }
}

async fn reset_offsets(args: ResetArgs, out: &mut impl Write) -> Result<(), CliError> {
    let mut admin = admin(&args.connection).await?;
    let group = args.group.as_str();
    let info = admin.describe(group).await?;
    if info.state != "Empty" && info.state != "Dead" {
        return Err(CliError::Failed(format!(
            "assignments can only be reset if the group '{group}' is inactive, but the current \
             state is {}",
            info.state
        )));
    }
    let committed = admin.committed(group).await?;
    let partitions = reset_scope(&mut admin, &args, &committed).await?;
    if partitions.is_empty() {
        return Err(CliError::Failed(format!(
            "group '{group}' has no committed offsets to reset (name the topics with --topic)"
        )));
    }
    let mut plan = Vec::with_capacity(partitions.len());
    for (topic, partition) in partitions {
        let offset = target_offset(&mut admin, &args, &topic, partition).await?;
        plan.push(OffsetToCommit {
            topic,
            partition,
            offset,
            metadata: None,
        });
    }
    if args.json {
        let planned: Vec<Value> = plan
            .iter()
            .map(|offset| {
                json!({
                    "group": group,
                    "topic": offset.topic,
                    "partition": offset.partition,
                    "new_offset": offset.offset,
                })
            })
            .collect();
        write_json(out, &json!({"dry_run": args.dry_run, "offsets": planned}))?;
    } else {
        let rows: Vec<Vec<String>> = plan
            .iter()
            .map(|offset| {
                vec![
                    group.to_string(),
                    offset.topic.clone(),
                    offset.partition.to_string(),
                    offset.offset.to_string(),
                ]
            })
            .collect();
        write_table(out, &["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"], &rows)?;
    }
    if args.dry_run {
        eprintln!("runnel: dry run: nothing committed");
        return Ok(());
    }
    admin.commit(group, &plan).await?;
    Ok(())
}

/// The partitions to reset, sorted: the named topics' (checked against the metadata) or every
/// partition the group has committed.
async fn reset_scope(
    admin: &mut GroupAdmin,
    args: &ResetArgs,
    committed: &[CommittedOffset],
) -> Result<Vec<(String, i32)>, CliError> {
    let mut partitions = BTreeSet::new();
    if args.all_topics {
        partitions.extend(
            committed
                .iter()
                .filter(|c| c.offset.is_some())
                .map(|c| (c.topic.clone(), c.partition)),
        );
    }
    for spec in &args.topics {
        let topic = admin.client().topic(&spec.topic, false).await?;
        let known: BTreeSet<i32> = topic.partitions.iter().map(|p| p.partition).collect();
        if spec.partitions.is_empty() {
            partitions.extend(known.iter().map(|p| (spec.topic.clone(), *p)));
            continue;
        }
        for partition in &spec.partitions {
            if !known.contains(partition) {
                return Err(CliError::Usage(format!(
                    "topic {} has no partition {partition}",
                    spec.topic
                )));
            }
            partitions.insert((spec.topic.clone(), *partition));
        }
    }
    Ok(partitions.into_iter().collect())
}

async fn target_offset(
    admin: &mut GroupAdmin,
    args: &ResetArgs,
    topic: &str,
    partition: i32,
) -> Result<i64, CliError> {
    let client = admin.client();
    let offset = if args.to_earliest {
        client
            .list_offset(topic, partition, EARLIEST_OFFSET)
            .await?
    } else if args.to_latest {
        client.list_offset(topic, partition, LATEST_OFFSET).await?
    } else if let Some(wanted) = args.to_offset {
        let earliest = client
            .list_offset(topic, partition, EARLIEST_OFFSET)
            .await?;
        let latest = client.list_offset(topic, partition, LATEST_OFFSET).await?;
        if wanted < earliest || wanted > latest {
            let kept = wanted.clamp(earliest, latest);
            eprintln!(
                "runnel: note: offset {wanted} is outside {topic}-{partition}'s range \
                 [{earliest}, {latest}]; using {kept}"
            );
        }
        wanted.clamp(earliest, latest)
    } else if let Some(timestamp_ms) = args.to_datetime {
        match client.list_offset(topic, partition, timestamp_ms).await? {
            offset if offset >= 0 => offset,
            _ => client.list_offset(topic, partition, LATEST_OFFSET).await?,
        }
    } else {
        return Err(CliError::Usage(
            "name a target: --to-earliest, --to-latest, --to-offset or --to-datetime".into(),
        ));
    };
    Ok(offset)
}

fn dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_string(), |value| value.to_string())
}

fn dash_if_empty(text: &str) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text.to_string()
    }
}

/// `TOPIC` or `TOPIC:P,P,...` (topic names cannot contain `:`).
fn parse_topic_spec(text: &str) -> Result<TopicSpec, String> {
    let (topic, partitions) = match text.split_once(':') {
        Some((topic, list)) => {
            let partitions = list
                .split(',')
                .map(|p| p.trim().parse::<i32>().ok().filter(|p| *p >= 0))
                .collect::<Option<Vec<i32>>>()
                .filter(|partitions| !partitions.is_empty())
                .ok_or_else(|| format!("expected TOPIC or TOPIC:P,P,... got {text:?}"))?;
            (topic, partitions)
        }
        None => (text, Vec::new()),
    };
    if topic.is_empty() {
        return Err(format!("expected TOPIC or TOPIC:P,P,... got {text:?}"));
    }
    Ok(TopicSpec {
        topic: topic.to_string(),
        partitions,
    })
}

/// `YYYY-MM-DDTHH:MM[:SS[.fraction]]` with an optional `Z` or `±HH[:]MM` zone (none: UTC), as
/// milliseconds since the epoch.
fn parse_datetime_ms(text: &str) -> Result<i64, String> {
    let bad = || format!("expected an ISO-8601 time like 2024-05-01T12:00:00.000Z, got {text:?}");
    let (date, rest) = text.split_once('T').ok_or_else(bad)?;
    let date: Vec<&str> = date.split('-').collect();
    let [year, month, day] = date.as_slice() else {
        return Err(bad());
    };
    let (time, zone_minutes) = if let Some(time) = rest.strip_suffix('Z') {
        (time, 0)
    } else if let Some(at) = rest.rfind(['+', '-']) {
        (&rest[..at], parse_zone(&rest[at..]).ok_or_else(bad)?)
    } else {
        (rest, 0)
    };
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let clock: Vec<&str> = clock.split(':').collect();
    let (hour, minute, second) = match clock.as_slice() {
        [hour, minute] => (*hour, *minute, "0"),
        [hour, minute, second] => (*hour, *minute, *second),
        _ => return Err(bad()),
    };
    let number = |digits: &str, len: std::ops::RangeInclusive<usize>, max: i64| {
        let ok = len.contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
        ok.then(|| digits.parse::<i64>().ok())
            .flatten()
            .filter(|value| *value <= max)
    };
    let year = number(year, 4..=4, 9999).ok_or_else(bad)?;
    let month = number(month, 2..=2, 12)
        .filter(|m| *m >= 1)
        .ok_or_else(bad)?;
    let day = number(day, 2..=2, days_in_month(year, month))
        .filter(|d| *d >= 1)
        .ok_or_else(bad)?;
    let hour = number(hour, 2..=2, 23).ok_or_else(bad)?;
    let minute = number(minute, 2..=2, 59).ok_or_else(bad)?;
    let second = number(second, 1..=2, 59).ok_or_else(bad)?;
    let millis = if fraction.is_empty() {
        0
    } else {
        let padded = format!("{:0<3}", &fraction[..fraction.len().min(3)]);
        number(&padded, 3..=3, 999)
            .filter(|_| fraction.len() <= 9 && fraction.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(bad)?
    };
    let days = days_from_civil(year, month, day);
    let seconds = ((days * 24 + hour) * 60 + minute) * 60 + second - zone_minutes * 60;
    Ok(seconds * 1000 + millis)
}

/// `+HH:MM`, `-HHMM` or `+HH` as minutes east of UTC.
fn parse_zone(zone: &str) -> Option<i64> {
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
    if !(digits.len() == 2 || digits.len() == 4) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i64 = digits[..2].parse().ok()?;
    let minutes: i64 = if digits.len() == 4 {
        digits[2..].parse().ok()?
    } else {
        0
    };
    (hours <= 23 && minutes <= 59).then_some(sign * (hours * 60 + minutes))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = if year >= 0 { year } else { year - 399 } / 400;
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_parse_to_epoch_millis() {
        assert_eq!(parse_datetime_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_datetime_ms("1970-01-01T00:00:00.001"), Ok(1));
        assert_eq!(
            parse_datetime_ms("2024-02-29T12:34:56.789Z"),
            Ok(1_709_210_096_789)
        );
        assert_eq!(
            parse_datetime_ms("2024-02-29T13:34:56.789+01:00"),
            Ok(1_709_210_096_789)
        );
        assert_eq!(
            parse_datetime_ms("2024-02-29T07:04:56.789-0530"),
            Ok(1_709_210_096_789)
        );
        assert_eq!(parse_datetime_ms("2000-03-01T00:00"), Ok(951_868_800_000));
        for bad in [
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01",
            "2024-01-01T25:00:00",
            "2024-01-01T00:00:00+2",
            "x",
            "2024-01-01T00:00:00.abc",
        ] {
            assert!(parse_datetime_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn topic_specs_parse() {
        assert_eq!(
            parse_topic_spec("t"),
            Ok(TopicSpec {
                topic: "t".into(),
                partitions: vec![]
            })
        );
        assert_eq!(
            parse_topic_spec("t:0,2"),
            Ok(TopicSpec {
                topic: "t".into(),
                partitions: vec![0, 2]
            })
        );
        assert!(parse_topic_spec("t:").is_err());
        assert!(parse_topic_spec("t:-1").is_err());
        assert!(parse_topic_spec(":1").is_err());
    }

    #[test]
    fn lag_needs_both_offsets() {
        let row = |current, log_end| OffsetRow {
            topic: None,
            partition: None,
            current,
            log_end,
            member: None,
        };
        assert_eq!(row(Some(3), Some(10)).lag(), Some(7));
        assert_eq!(
            row(Some(12), Some(10)).lag(),
            Some(-2),
            "as Kafka's tool: not clamped"
        );
        assert_eq!(row(None, Some(10)).lag(), None);
        assert_eq!(row(Some(3), None).lag(), None);
    }
}
