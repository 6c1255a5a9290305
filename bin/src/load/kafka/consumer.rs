//! One load consumer: fetches its partitions on its own connection, one Fetch at a time (as
//! Kafka consumers do per broker), counts records and bytes, measures end-to-end latency, and
//! feeds the `--verify` checker.
//!
//! Where a partition's reading ends ([`End`]): at an offset fixed before the run (consume catch
//! up), at the tail once every producer has finished (e2e: the high watermark of the first
//! answer after that, and at least the end of what producers had acknowledged), or never (ended
//! by `--duration`, `--records` or the main thread's stop).
//!
//! Partitions are either assigned directly (dealt out by the main thread) or, with `--group`,
//! by the group: the consumer is a [`GroupMember`], starts each partition at the group's
//! committed offset (else where `--from` says), commits its positions every
//! [`COMMIT_INTERVAL`], before rejoining a rebalance and at the end, then leaves the group.
//!
//! Runs on its thread's executor.

use super::payload;
use super::stats::{record_latency, Window};
use super::verify::PartitionCheck;
use super::{Control, ThreadState};
use runnel_net::client::group::{
    Assignor, GroupMember, MemberConfig, MemberSignal, OffsetToCommit,
};
use runnel_net::client::records::Record;
use runnel_net::client::{
    Client, ClientConfig, ClientError, FetchOptions, FetchPosition, FetchedPartition,
    EARLIEST_OFFSET, LATEST_OFFSET,
};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Kafka's OFFSET_OUT_OF_RANGE.
const OFFSET_OUT_OF_RANGE: i16 = 1;
/// Reconnect and error backoff.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often a group member commits its positions.
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Group membership timings: short, so a load run's rebalances settle quickly.
const SESSION_TIMEOUT_MS: i32 = 10_000;
const REBALANCE_TIMEOUT_MS: i32 = 10_000;
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Where one partition's reading ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Before this offset.
    Offset(i64),
    /// At the tail once the producers are done (e2e).
    Tail,
    /// Never: the run's duration, record count or stop ends it.
    Never,
}

/// How reads are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyMode {
    /// Not at all.
    Off,
    /// Against the producers' acknowledgements, at the end (e2e).
    Acknowledged,
    /// On their own (consume of an earlier run's data); `from_log_start`: sequences must start
    /// at 0.
    Standalone {
        /// Reading starts at the log start.
        from_log_start: bool,
    },
}

/// One partition assigned to a consumer.
#[derive(Clone, Copy, Debug)]
pub struct Assignment {
    /// Partition.
    pub partition: i32,
    /// First offset to read.
    pub start: i64,
    /// Where reading ends.
    pub end: End,
}

/// A consumer in a group: where partitions start and end, whichever it is given.
#[derive(Clone, Debug)]
pub struct GroupPlan {
    /// Group id.
    pub group_id: String,
    /// Per partition, where to start without a committed offset.
    pub starts: Vec<i64>,
    /// Per partition, where reading ends.
    pub ends: Vec<End>,
}

/// What one consumer is asked to do.
#[derive(Clone, Debug)]
pub struct ConsumerPlan {
    /// The broker.
    pub bootstrap: String,
    /// Client settings.
    pub client: ClientConfig,
    /// Topic.
    pub topic: String,
    /// Its partitions (empty with a group).
    pub assignments: Vec<Assignment>,
    /// `--group`: partitions come from the group.
    pub group: Option<GroupPlan>,
    /// `--duration`.
    pub duration: Option<Duration>,
    /// Fetch limits.
    pub fetch: FetchOptions,
    /// `--verify`.
    pub verify: VerifyMode,
    /// Measure end-to-end latency (e2e).
    pub e2e: bool,
}

/// One partition's reading state.
struct PartitionState {
    partition: i32,
    position: i64,
    end: End,
    /// The tail offset once known (e2e), or the fixed end.
    end_offset: Option<i64>,
    check: Option<PartitionCheck>,
}

impl PartitionState {
    fn done(&self) -> bool {
        self.end_offset.is_some_and(|end| self.position >= end)
    }
}

impl PartitionState {
    fn new(plan: &ConsumerPlan, assignment: &Assignment) -> PartitionState {
        PartitionState {
            partition: assignment.partition,
            position: assignment.start,
            end: assignment.end,
            end_offset: match assignment.end {
                End::Offset(end) => Some(end),
                End::Tail | End::Never => None,
            },
            check: (plan.verify != VerifyMode::Off)
                .then(|| PartitionCheck::new(assignment.partition)),
        }
    }
}

/// Runs one consumer until its partitions are read to their ends or it is stopped.
pub async fn run(plan: ConsumerPlan, thread: Rc<ThreadState>, control: Arc<Control>) {
    let started = Instant::now();
    let deadline = plan.duration.map(|duration| started + duration);
    let states = match &plan.group {
        None => run_assigned(&plan, &thread, &control, deadline).await,
        Some(group) => {
            run_in_group(&plan, group, &thread, &control, deadline).await;
            Vec::new()
        }
    };
    let finished = Instant::now();
    let mut outcome = thread.outcome.borrow_mut();
    let window = Some(Window { started, finished });
    outcome.consume_window = Window::merge(outcome.consume_window, window);
    for state in states {
        let Some(check) = state.check else { continue };
        outcome.duplicates_allowed += check.duplicates_allowed();
        match plan.verify {
            VerifyMode::Off => {}
            VerifyMode::Acknowledged => outcome.consumed.push(check.into_consumed()),
            VerifyMode::Standalone { from_log_start } => {
                let found = check.finish_standalone(from_log_start);
                outcome.violations.merge(found);
            }
        }
    }
}

/// Whether the run says to stop reading (stop, `--duration`, consume `--records`).
fn should_stop(control: &Control, deadline: Option<Instant>) -> bool {
    control.stop.load(Ordering::Acquire)
        || deadline.is_some_and(|deadline| Instant::now() >= deadline)
        || control
            .consume_limit
            .is_some_and(|limit| control.consumed_total.load(Ordering::Acquire) >= limit)
}

/// Reads directly assigned partitions; returns their states (with the checks).
async fn run_assigned(
    plan: &ConsumerPlan,
    thread: &ThreadState,
    control: &Control,
    deadline: Option<Instant>,
) -> Vec<PartitionState> {
    let mut states: Vec<PartitionState> = plan
        .assignments
        .iter()
        .map(|assignment| PartitionState::new(plan, assignment))
        .collect();
    let mut client: Option<Client> = None;
    let mut backoff = BACKOFF_MIN;
    loop {
        glommio::yield_if_needed().await;
        if should_stop(control, deadline) || states.iter().all(PartitionState::done) {
            return states;
        }
        let Some(connected) = client.as_mut() else {
            client = connect(plan, thread, &mut backoff).await;
            continue;
        };
        match fetch_round(plan, thread, control, connected, &mut states).await {
            Ok(()) => backoff = BACKOFF_MIN,
            Err(error) => on_fetch_error(&error, thread, &mut client, &mut backoff).await,
        }
    }
}

/// Connects, or counts the failure and waits out the backoff.
async fn connect(
    plan: &ConsumerPlan,
    thread: &ThreadState,
    backoff: &mut Duration,
) -> Option<Client> {
    match Client::connect(&plan.bootstrap, plan.client.clone()).await {
        Ok(connected) => {
            *backoff = BACKOFF_MIN;
            Some(connected)
        }
        Err(error) => {
            thread.error(&error);
            glommio::timer::sleep(*backoff).await;
            *backoff = (*backoff * 2).min(BACKOFF_MAX);
            None
        }
    }
}

/// Counts a failed fetch, drops a broken connection, waits out the backoff.
async fn on_fetch_error(
    error: &ClientError,
    thread: &ThreadState,
    client: &mut Option<Client>,
    backoff: &mut Duration,
) {
    thread.error(error);
    if error.is_connection() {
        *client = None;
    }
    glommio::timer::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
}

/// One Fetch of the partitions not done yet, and its answers taken in.
async fn fetch_round(
    plan: &ConsumerPlan,
    thread: &ThreadState,
    control: &Control,
    client: &mut Client,
    states: &mut [PartitionState],
) -> Result<(), ClientError> {
    // Sampled before the fetch: its answer then shows everything the producers wrote.
    let producers_done = control.producers_running.load(Ordering::Acquire) == 0;
    let positions: Vec<FetchPosition> = states
        .iter()
        .filter(|state| !state.done())
        .map(|state| FetchPosition {
            topic: plan.topic.clone(),
            partition: state.partition,
            offset: state.position,
        })
        .collect();
    if positions.is_empty() {
        // A group member with nothing (left) to read waits for a rebalance or the end.
        glommio::timer::sleep(BACKOFF_MAX / 10).await;
        return Ok(());
    }
    for answer in client.fetch(&plan.fetch, &positions).await? {
        let Some(state) = states
            .iter_mut()
            .find(|state| state.partition == answer.partition)
        else {
            continue;
        };
        read_partition(plan, thread, control, state, &answer, producers_done);
        if let Some(error) = &answer.error {
            if error.code == OFFSET_OUT_OF_RANGE {
                reset_position(client, &plan.topic, state, &answer, thread).await;
            } else {
                glommio::timer::sleep(BACKOFF_MIN).await;
            }
        }
    }
    Ok(())
}

/// Reads the partitions the group assigns, following rebalances, until stopped or (when every
/// partition has an end offset) every assigned partition is read to its end.
async fn run_in_group(
    plan: &ConsumerPlan,
    group: &GroupPlan,
    thread: &ThreadState,
    control: &Control,
    deadline: Option<Instant>,
) {
    let config = MemberConfig {
        group_id: group.group_id.clone(),
        topics: vec![plan.topic.clone()],
        assignors: vec![Assignor::Range, Assignor::RoundRobin],
        session_timeout_ms: SESSION_TIMEOUT_MS,
        rebalance_timeout_ms: REBALANCE_TIMEOUT_MS,
        heartbeat_interval: HEARTBEAT_INTERVAL,
    };
    let mut member = GroupMember::new(&plan.bootstrap, plan.client.clone(), config);
    let ends_known = group.ends.iter().all(|end| matches!(end, End::Offset(_)));
    let tailing = group.ends.iter().all(|end| *end == End::Tail);
    let mut client: Option<Client> = None;
    let mut backoff = BACKOFF_MIN;
    let mut states: Vec<PartitionState> = Vec::new();
    let mut joined_once = false;
    'membership: while !should_stop(control, deadline) {
        states = match join(plan, group, &mut member).await {
            Ok(states) => {
                if !joined_once {
                    joined_once = true;
                    control.members_joining.fetch_sub(1, Ordering::AcqRel);
                }
                states
            }
            Err(error) => {
                thread.error(&error);
                glommio::timer::sleep(BACKOFF_MAX).await;
                continue;
            }
        };
        let mut last_commit = Instant::now();
        loop {
            glommio::yield_if_needed().await;
            match member.signal() {
                Some(MemberSignal::Rejoin(_)) => {
                    commit(&plan.topic, &mut member, &states, thread).await;
                    continue 'membership;
                }
                Some(MemberSignal::CoordinatorLost(_)) => {
                    if let Err(error) = member.reconnect().await {
                        thread.error(&error);
                    }
                }
                Some(MemberSignal::Fatal(error)) => {
                    thread.error_named(error.name());
                    break 'membership;
                }
                None => {}
            }
            // Done when every assigned partition is read to its end; a member assigned nothing
            // is done once there will be no more to read.
            let read_to_end = if states.is_empty() {
                ends_known || (tailing && control.producers_running.load(Ordering::Acquire) == 0)
            } else {
                states.iter().all(PartitionState::done)
            };
            if should_stop(control, deadline) || read_to_end {
                break 'membership;
            }
            if last_commit.elapsed() >= COMMIT_INTERVAL {
                commit(&plan.topic, &mut member, &states, thread).await;
                last_commit = Instant::now();
            }
            let Some(connected) = client.as_mut() else {
                client = connect(plan, thread, &mut backoff).await;
                continue;
            };
            match fetch_round(plan, thread, control, connected, &mut states).await {
                Ok(()) => backoff = BACKOFF_MIN,
                Err(error) => on_fetch_error(&error, thread, &mut client, &mut backoff).await,
            }
        }
    }
    commit(&plan.topic, &mut member, &states, thread).await;
    if let Err(error) = member.leave().await {
        thread.error(&error);
    }
}

/// Joins (again) and sets up the assigned partitions from the group's committed offsets.
async fn join(
    plan: &ConsumerPlan,
    group: &GroupPlan,
    member: &mut GroupMember,
) -> Result<Vec<PartitionState>, ClientError> {
    let partitions = group.starts.len() as i32;
    let assigned: Vec<(String, i32)> = member
        .join()
        .await?
        .into_iter()
        .filter(|(topic, partition)| topic == &plan.topic && (0..partitions).contains(partition))
        .collect();
    let committed = member.committed(&assigned).await?;
    let states = assigned
        .iter()
        .map(|(_, partition)| {
            let slot = *partition as usize;
            let start = committed
                .iter()
                .find(|entry| entry.partition == *partition)
                .and_then(|entry| entry.offset)
                .unwrap_or(group.starts[slot]);
            let assignment = Assignment {
                partition: *partition,
                start,
                end: group.ends[slot],
            };
            PartitionState::new(plan, &assignment)
        })
        .collect();
    Ok(states)
}

/// Commits every assigned partition's position (a failure is counted: the partition's next
/// owner may read some records again).
async fn commit(
    topic: &str,
    member: &mut GroupMember,
    states: &[PartitionState],
    thread: &ThreadState,
) {
    let offsets: Vec<OffsetToCommit> = states
        .iter()
        .map(|state| OffsetToCommit {
            topic: topic.to_string(),
            partition: state.partition,
            offset: state.position,
            metadata: None,
        })
        .collect();
    if let Err(error) = member.commit(&offsets).await {
        thread.error(&error);
    }
}

/// Takes in one partition's answer: records, latency, checks, the new position and end.
fn read_partition(
    plan: &ConsumerPlan,
    thread: &ThreadState,
    control: &Control,
    state: &mut PartitionState,
    answer: &FetchedPartition,
    producers_done: bool,
) {
    if let Some(error) = &answer.error {
        thread.error_named(error.name());
        return;
    }
    let mut records = 0u64;
    let mut bytes = 0u64;
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64);
    let mut corrupt_batches = 0;
    let mut delta = thread.delta.borrow_mut();
    'batches: for batch in &answer.batches {
        if batch.control {
            state.position = state.position.max(batch.next_offset());
            continue;
        }
        for record in batch.records() {
            let record = match record {
                Ok(record) => record,
                Err(error) => {
                    corrupt_batches += 1;
                    eprintln!("runnel-load: partition {}: {error}", state.partition);
                    state.position = state.position.max(batch.next_offset());
                    continue 'batches;
                }
            };
            if record.offset < state.position {
                continue;
            }
            records += 1;
            bytes += record_bytes(&record);
            if plan.e2e {
                if let Some(latency) = e2e_latency_us(&record, now_us) {
                    record_latency(&mut delta.e2e_latency_us, Duration::from_micros(latency));
                }
            }
            if let Some(check) = state.check.as_mut() {
                check.observe(
                    record.offset,
                    record.key.as_deref(),
                    record.value.as_deref(),
                );
            }
        }
        state.position = state.position.max(batch.next_offset());
    }
    delta.consumed_records += records;
    delta.consumed_bytes += bytes;
    drop(delta);
    for _ in 0..corrupt_batches {
        thread.error_named("CORRUPT_RECORDS".into());
    }
    control.consumed_total.fetch_add(records, Ordering::AcqRel);
    if state.end == End::Tail && producers_done && state.end_offset.is_none() {
        let acked_end = control.acked_end[state.partition as usize].load(Ordering::Acquire);
        state.end_offset = Some(answer.high_watermark.max(acked_end));
    }
}

fn record_bytes(record: &Record) -> u64 {
    let length = |field: &Option<bytes::Bytes>| field.as_ref().map_or(0, |bytes| bytes.len());
    (length(&record.key) + length(&record.value)) as u64
}

/// Microseconds from the record's creation to `now_us`: from the value's stamp when it has
/// one, else from the record's (millisecond) CreateTime timestamp.
fn e2e_latency_us(record: &Record, now_us: u64) -> Option<u64> {
    let stamped = record
        .value
        .as_deref()
        .and_then(|value| payload::read_value(value).ok().flatten())
        .map(|stamp| stamp.create_us);
    let created_us = match stamped {
        Some(created_us) => created_us,
        None if !record.log_append_time => u64::try_from(record.timestamp_ms).ok()? * 1000,
        None => return None,
    };
    Some(now_us.saturating_sub(created_us))
}

/// After OFFSET_OUT_OF_RANGE: below the log start, go to it; above the end, go to the end.
async fn reset_position(
    client: &mut Client,
    topic: &str,
    state: &mut PartitionState,
    answer: &FetchedPartition,
    thread: &ThreadState,
) {
    let target = if answer.log_start_offset >= 0 && state.position < answer.log_start_offset {
        EARLIEST_OFFSET
    } else {
        LATEST_OFFSET
    };
    match client.list_offset(topic, state.partition, target).await {
        Ok(offset) if offset >= 0 => {
            eprintln!(
                "runnel-load: partition {}: offset {} out of range, reading from {offset}",
                state.partition, state.position
            );
            state.position = offset;
        }
        Ok(_) => {}
        Err(error) => thread.error(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};

    fn record(value: Option<Bytes>, timestamp_ms: i64, log_append_time: bool) -> Record {
        Record {
            offset: 0,
            timestamp_ms,
            log_append_time,
            key: None,
            value,
            headers: Vec::new(),
        }
    }

    #[test]
    fn e2e_latency_prefers_the_stamp_over_the_timestamp() {
        let stamp = payload::Stamp {
            producer: 1,
            partition: 0,
            sequence: 0,
            key_index: payload::NO_KEY,
            create_us: 5_000_250,
            flags: 0,
        };
        let value = payload::write_value(&mut BytesMut::new(), &stamp, b"x", 64);
        assert_eq!(
            e2e_latency_us(&record(Some(value), 1, false), 5_001_000),
            Some(750)
        );
        let plain = Some(Bytes::from_static(b"not ours"));
        assert_eq!(
            e2e_latency_us(&record(plain.clone(), 5_000, false), 5_002_000),
            Some(2_000)
        );
        assert_eq!(e2e_latency_us(&record(plain, 5_000, true), 5_002_000), None);
    }
}
