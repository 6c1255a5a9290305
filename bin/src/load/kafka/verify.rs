//! `--verify`: the standard check of `shared/reliability.md` over runnel-load's own records.
//!
//! Every value carries a [`Stamp`](super::payload::Stamp): load producer id, partition, the
//! record's sequence within (producer, partition), key index and a CRC. Reading a partition in
//! offset order, a [`PartitionCheck`] checks each record as it arrives (offsets increase, the
//! value is intact and ours, key and partition are the stamped ones, no sequence seen twice when
//! the producer was idempotent, sequences of one producer increase) and keeps a compact log of
//! what sat at which offset ([`Consumed`]: runs of consecutive offsets holding consecutive
//! sequences, about one entry per batch).
//!
//! Then one of two final checks:
//! * [`check_acknowledged`] (e2e, where the producers' acknowledgements are known): every
//!   acknowledged record is at its acknowledged offset, no offset was acknowledged twice, a
//!   record never acknowledged is one whose write failed and it sits above every offset its
//!   producer knew when sending it (such a late write also excuses its own reordering).
//! * [`PartitionCheck::finish_standalone`] (consume of an earlier run's data, acknowledgements
//!   unknown): each producer's sequences in a partition have no gap, and start at 0 when reading
//!   from the log start. Sound when the producing run reported no errors.
//!
//! Pure, single-threaded code; memory is about one entry per batch read or acknowledged.

use super::payload::{self, FLAG_IDEMPOTENT};
use std::collections::{BTreeMap, HashMap};

/// Examples of violations kept for the report (every violation is counted).
pub const EXAMPLES_MAX: usize = 20;
/// Possible reorders kept for the final check; more are violations at once.
const REORDERS_MAX: usize = 10_000;

/// A kind of violation of the standard check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// An acknowledged record is not at its offset (not read back, or a sequence gap).
    Lost,
    /// An acknowledged offset holds another record.
    Moved,
    /// A record of an idempotent producer appears twice.
    Duplicate,
    /// A producer's records are out of sequence order within a partition.
    Reordered,
    /// A value whose CRC does not match.
    Corrupt,
    /// The record's key is not the one its value names.
    WrongKey,
    /// The record sits in another partition than the one it was sent to.
    WrongPartition,
    /// A record runnel-load did not write.
    Foreign,
    /// Offsets read did not increase.
    OffsetsNotIncreasing,
    /// Two acknowledgements claim the same offset.
    AckedTwice,
    /// A failed write shows up at or below an offset its producer already knew.
    FailedBelowKnown,
    /// A record of this run that was neither acknowledged nor reported failed.
    Unacknowledged,
}

impl Kind {
    /// The name used in the report and the JSON file.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Lost => "lost",
            Kind::Moved => "moved",
            Kind::Duplicate => "duplicate",
            Kind::Reordered => "reordered",
            Kind::Corrupt => "corrupt",
            Kind::WrongKey => "wrong_key",
            Kind::WrongPartition => "wrong_partition",
            Kind::Foreign => "foreign",
            Kind::OffsetsNotIncreasing => "offsets_not_increasing",
            Kind::AckedTwice => "acked_twice",
            Kind::FailedBelowKnown => "failed_write_below_known_offset",
            Kind::Unacknowledged => "unacknowledged",
        }
    }
}

/// One violation (or `count` alike), with where and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// What was violated.
    pub kind: Kind,
    /// Partition.
    pub partition: i32,
    /// First offset concerned (-1 when none applies).
    pub offset: i64,
    /// Records concerned.
    pub count: u64,
    /// A sentence for the report.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(out, "{}: partition {}", self.kind.name(), self.partition)?;
        if self.offset >= 0 {
            write!(out, " offset {}", self.offset)?;
        }
        if self.count > 1 {
            write!(out, " ({} records)", self.count)?;
        }
        write!(out, ": {}", self.detail)
    }
}

/// Violations found: records concerned per kind, and the first few as examples.
#[derive(Clone, Debug, Default)]
pub struct Violations {
    counts: BTreeMap<Kind, u64>,
    examples: Vec<Violation>,
}

impl Violations {
    /// Counts `violation` and keeps it if there is room.
    pub fn add(&mut self, violation: Violation) {
        *self.counts.entry(violation.kind).or_default() += violation.count;
        if self.examples.len() < EXAMPLES_MAX {
            self.examples.push(violation);
        }
    }

    /// Adds everything in `other`.
    pub fn merge(&mut self, other: Violations) {
        for (kind, count) in other.counts {
            *self.counts.entry(kind).or_default() += count;
        }
        let room = EXAMPLES_MAX.saturating_sub(self.examples.len());
        self.examples.extend(other.examples.into_iter().take(room));
    }

    /// No violation.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Records concerned, all kinds together.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Records concerned per kind.
    pub fn counts(&self) -> &BTreeMap<Kind, u64> {
        &self.counts
    }

    /// The first violations found.
    pub fn examples(&self) -> &[Violation] {
        &self.examples
    }
}

/// A batch the broker acknowledged: `count` records with sequences from `first_sequence`, at
/// offsets from `base_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acked {
    /// Partition.
    pub partition: i32,
    /// Load producer id.
    pub producer: u64,
    /// Sequence of the first record.
    pub first_sequence: u64,
    /// Records.
    pub count: u32,
    /// Offset of the first record.
    pub base_offset: i64,
}

/// A batch whose write failed or whose outcome is unknown (the connection broke).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failed {
    /// Partition.
    pub partition: i32,
    /// Load producer id.
    pub producer: u64,
    /// Sequence of the first record.
    pub first_sequence: u64,
    /// Records.
    pub count: u32,
    /// Highest offset the producer had seen acknowledged in the partition when it sent the
    /// batch (-1: none); if the batch shows up, it must be above this.
    pub known_offset: i64,
}

/// Offsets `offset..offset+len` hold sequences `sequence..sequence+len` of `producer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    offset: i64,
    producer: u64,
    sequence: u64,
    len: u64,
}

impl Run {
    fn end(&self) -> i64 {
        self.offset + self.len as i64
    }

    /// The sequence at `offset` (which the run covers).
    fn sequence_at(&self, offset: i64) -> u64 {
        self.sequence + (offset - self.offset) as u64
    }
}

/// A set of sequences as sorted, disjoint, half-open intervals (usually one).
#[derive(Clone, Debug, Default)]
struct SequenceSet {
    intervals: Vec<(u64, u64)>,
}

impl SequenceSet {
    fn contains(&self, sequence: u64) -> bool {
        let index = self.intervals.partition_point(|&(_, end)| end <= sequence);
        self.intervals
            .get(index)
            .is_some_and(|&(start, _)| start <= sequence)
    }

    /// One past the largest sequence, 0 when empty.
    fn end(&self) -> u64 {
        self.intervals.last().map_or(0, |&(_, end)| end)
    }

    /// Adds a sequence not in the set.
    fn insert(&mut self, sequence: u64) {
        debug_assert!(!self.contains(sequence));
        if let Some(last) = self.intervals.last_mut() {
            if last.1 == sequence {
                last.1 += 1;
                return;
            }
        }
        let index = self
            .intervals
            .partition_point(|&(start, _)| start < sequence);
        self.intervals.insert(index, (sequence, sequence + 1));
        // Merge with the neighbours it now touches.
        if index + 1 < self.intervals.len() && self.intervals[index + 1].0 == sequence + 1 {
            self.intervals[index].1 = self.intervals[index + 1].1;
            self.intervals.remove(index + 1);
        }
        if index > 0 && self.intervals[index - 1].1 == sequence {
            self.intervals[index - 1].1 = self.intervals[index].1;
            self.intervals.remove(index);
        }
    }
}

/// What one producer's records in one partition looked like so far.
#[derive(Debug, Default)]
struct ProducerSeen {
    sequences: SequenceSet,
    idempotent: bool,
}

/// A record whose sequence was below one already read: a violation unless it is a failed
/// write that landed late.
#[derive(Clone, Copy, Debug)]
struct Reorder {
    producer: u64,
    sequence: u64,
    offset: i64,
}

/// Checks one partition's records as they are read, in offset order. See the module docs.
#[derive(Debug)]
pub struct PartitionCheck {
    partition: i32,
    last_offset: Option<i64>,
    producers: HashMap<u64, ProducerSeen>,
    runs: Vec<Run>,
    reorders: Vec<Reorder>,
    records: u64,
    duplicates_allowed: u64,
    violations: Violations,
}

/// A partition's reading, for [`check_acknowledged`].
#[derive(Debug)]
pub struct Consumed {
    partition: i32,
    runs: Vec<Run>,
    reorders: Vec<Reorder>,
    records: u64,
    violations: Violations,
}

impl PartitionCheck {
    /// Nothing read yet.
    pub fn new(partition: i32) -> PartitionCheck {
        PartitionCheck {
            partition,
            last_offset: None,
            producers: HashMap::new(),
            runs: Vec::new(),
            reorders: Vec::new(),
            records: 0,
            duplicates_allowed: 0,
            violations: Violations::default(),
        }
    }

    /// Duplicates seen from producers that were not idempotent (allowed, counted).
    pub fn duplicates_allowed(&self) -> u64 {
        self.duplicates_allowed
    }

    /// Checks the next record read.
    pub fn observe(&mut self, offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        self.records += 1;
        if let Some(last) = self.last_offset {
            if offset <= last {
                self.violation(
                    Kind::OffsetsNotIncreasing,
                    offset,
                    format!("offset {offset} read after offset {last}"),
                );
            }
        }
        self.last_offset = Some(self.last_offset.map_or(offset, |last| last.max(offset)));
        let stamp = match payload::read_value(value.unwrap_or_default()) {
            Ok(Some(stamp)) => stamp,
            Ok(None) => {
                let detail = "a record runnel-load did not write (no RNL1 value header)";
                return self.violation(Kind::Foreign, offset, detail.into());
            }
            Err(error) => return self.violation(Kind::Corrupt, offset, error.to_string()),
        };
        if stamp.partition != self.partition {
            let detail = format!(
                "producer {:#x} sequence {} was sent to partition {}",
                stamp.producer, stamp.sequence, stamp.partition
            );
            self.violation(Kind::WrongPartition, offset, detail);
        }
        if !payload::key_matches(&stamp, key) {
            let detail = format!(
                "key {:?} but the value names key index {}",
                key.map(String::from_utf8_lossy),
                stamp.key_index
            );
            self.violation(Kind::WrongKey, offset, detail);
        }
        let seen = self.producers.entry(stamp.producer).or_default();
        seen.idempotent |= stamp.flags & FLAG_IDEMPOTENT != 0;
        if seen.sequences.contains(stamp.sequence) {
            if seen.idempotent {
                let detail = format!(
                    "producer {:#x} (idempotent) sequence {} read a second time",
                    stamp.producer, stamp.sequence
                );
                self.violation(Kind::Duplicate, offset, detail);
            } else {
                self.duplicates_allowed += 1;
            }
        } else {
            if stamp.sequence < seen.sequences.end() {
                let reorder = Reorder {
                    producer: stamp.producer,
                    sequence: stamp.sequence,
                    offset,
                };
                if self.reorders.len() < REORDERS_MAX {
                    self.reorders.push(reorder);
                } else {
                    self.violations
                        .add(reorder_violation(self.partition, &reorder));
                }
            }
            seen.sequences.insert(stamp.sequence);
        }
        self.push_run(offset, stamp.producer, stamp.sequence);
    }

    fn push_run(&mut self, offset: i64, producer: u64, sequence: u64) {
        if let Some(run) = self.runs.last_mut() {
            if run.end() == offset && run.producer == producer && run.sequence + run.len == sequence
            {
                run.len += 1;
                return;
            }
        }
        self.runs.push(Run {
            offset,
            producer,
            sequence,
            len: 1,
        });
    }

    fn violation(&mut self, kind: Kind, offset: i64, detail: String) {
        self.violations.add(Violation {
            kind,
            partition: self.partition,
            offset,
            count: 1,
            detail,
        });
    }

    /// The check without acknowledgements: no sequence gaps per producer, and sequences from 0
    /// when `from_log_start`. Every reorder counts.
    pub fn finish_standalone(mut self, from_log_start: bool) -> Violations {
        let mut producers: Vec<_> = self.producers.iter().collect();
        producers.sort_by_key(|(producer, _)| **producer);
        let partition = self.partition;
        let mut found = Vec::new();
        for (&producer, seen) in producers {
            let intervals = &seen.sequences.intervals;
            if let (true, Some(&(first, _))) = (from_log_start, intervals.first()) {
                if first > 0 {
                    found.push(Violation {
                        kind: Kind::Lost,
                        partition,
                        offset: -1,
                        count: first,
                        detail: format!(
                            "producer {producer:#x} sequences 0..{} are not in the log \
                             (it starts at sequence {first})",
                            first - 1
                        ),
                    });
                }
            }
            for pair in intervals.windows(2) {
                let (gap_start, gap_end) = (pair[0].1, pair[1].0);
                found.push(Violation {
                    kind: Kind::Lost,
                    partition,
                    offset: -1,
                    count: gap_end - gap_start,
                    detail: format!(
                        "producer {producer:#x} sequences {gap_start}..{} are missing",
                        gap_end - 1
                    ),
                });
            }
        }
        for violation in found {
            self.violations.add(violation);
        }
        for reorder in &self.reorders {
            self.violations.add(reorder_violation(partition, reorder));
        }
        self.violations
    }

    /// The reading, for [`check_acknowledged`].
    pub fn into_consumed(self) -> Consumed {
        Consumed {
            partition: self.partition,
            runs: self.runs,
            reorders: self.reorders,
            records: self.records,
            violations: self.violations,
        }
    }
}

fn reorder_violation(partition: i32, reorder: &Reorder) -> Violation {
    Violation {
        kind: Kind::Reordered,
        partition,
        offset: reorder.offset,
        count: 1,
        detail: format!(
            "producer {:#x} sequence {} read after a later sequence",
            reorder.producer, reorder.sequence
        ),
    }
}

/// The outcome of [`check_acknowledged`].
#[derive(Debug, Default)]
pub struct Outcome {
    /// Everything found, the streaming checks' findings included.
    pub violations: Violations,
    /// Records acknowledged.
    pub acknowledged: u64,
    /// Records read.
    pub read: u64,
}

/// The full check: what the producers had acknowledged (and what failed) against what was
/// read. See the module documentation.
pub fn check_acknowledged(acked: &[Acked], failed: &[Failed], consumed: Vec<Consumed>) -> Outcome {
    let mut outcome = Outcome::default();
    let mut acked_by_partition: BTreeMap<i32, Vec<Acked>> = BTreeMap::new();
    for ack in acked {
        outcome.acknowledged += u64::from(ack.count);
        acked_by_partition
            .entry(ack.partition)
            .or_default()
            .push(*ack);
    }
    let mut failed_by_producer: HashMap<(i32, u64), Vec<Failed>> = HashMap::new();
    for failure in failed {
        failed_by_producer
            .entry((failure.partition, failure.producer))
            .or_default()
            .push(*failure);
    }
    let mut consumed_by_partition: BTreeMap<i32, (Vec<Run>, Vec<Reorder>)> = BTreeMap::new();
    for reading in consumed {
        outcome.read += reading.records;
        outcome.violations.merge(reading.violations);
        consumed_by_partition.insert(reading.partition, (reading.runs, reading.reorders));
    }
    let mut partitions: Vec<i32> = acked_by_partition.keys().copied().collect();
    partitions.extend(consumed_by_partition.keys().copied());
    partitions.sort_unstable();
    partitions.dedup();
    for partition in partitions {
        let mut acks = acked_by_partition.remove(&partition).unwrap_or_default();
        acks.sort_by_key(|ack| ack.base_offset);
        let (mut runs, reorders) = consumed_by_partition.remove(&partition).unwrap_or_default();
        runs.sort_by_key(|run| run.offset);
        let context = PartitionContext {
            partition,
            acks: &acks,
            runs: &runs,
            failed: &failed_by_producer,
        };
        context.check(&reorders, &mut outcome.violations);
    }
    outcome
}

/// One partition's acknowledgements and reading, for the final check.
struct PartitionContext<'a> {
    partition: i32,
    /// Sorted by base offset.
    acks: &'a [Acked],
    /// Sorted by offset.
    runs: &'a [Run],
    failed: &'a HashMap<(i32, u64), Vec<Failed>>,
}

/// The producer side alone (produce `--verify`): no offset was acknowledged twice.
pub fn check_acknowledgements(acked: &[Acked]) -> Violations {
    let mut by_partition: BTreeMap<i32, Vec<Acked>> = BTreeMap::new();
    for ack in acked {
        by_partition.entry(ack.partition).or_default().push(*ack);
    }
    let mut violations = Violations::default();
    let failed = HashMap::new();
    for (partition, mut acks) in by_partition {
        acks.sort_by_key(|ack| ack.base_offset);
        let context = PartitionContext {
            partition,
            acks: &acks,
            runs: &[],
            failed: &failed,
        };
        context.check_overlaps(&mut violations);
    }
    violations
}

impl PartitionContext<'_> {
    fn check(&self, reorders: &[Reorder], violations: &mut Violations) {
        self.check_overlaps(violations);
        for ack in self.acks {
            self.check_read_back(ack, violations);
        }
        self.check_unacknowledged(violations);
        for reorder in reorders {
            if self
                .failed_containing(reorder.producer, reorder.sequence)
                .is_none()
            {
                violations.add(reorder_violation(self.partition, reorder));
            }
        }
    }

    /// No two acknowledgements share an offset.
    fn check_overlaps(&self, violations: &mut Violations) {
        for pair in self.acks.windows(2) {
            let first_end = pair[0].base_offset + i64::from(pair[0].count);
            if pair[1].base_offset < first_end {
                violations.add(self.violation(
                    Kind::AckedTwice,
                    pair[1].base_offset,
                    (first_end - pair[1].base_offset) as u64,
                    format!(
                        "acknowledged to producer {:#x} and to producer {:#x} (sequences {} \
                         and {})",
                        pair[0].producer,
                        pair[1].producer,
                        pair[0].first_sequence,
                        pair[1].first_sequence
                    ),
                ));
            }
        }
    }

    /// Every offset of `ack` holds the acknowledged record.
    fn check_read_back(&self, ack: &Acked, violations: &mut Violations) {
        let end = ack.base_offset + i64::from(ack.count);
        let mut offset = ack.base_offset;
        while offset < end {
            let index = self.runs.partition_point(|run| run.end() <= offset);
            let run = self.runs.get(index).filter(|run| run.offset <= offset);
            let Some(run) = run else {
                let next = self.runs.get(index).map_or(end, |run| run.offset.min(end));
                violations.add(self.violation(
                    Kind::Lost,
                    offset,
                    (next - offset) as u64,
                    format!(
                        "acknowledged to producer {:#x} (sequence {}) but not read back",
                        ack.producer,
                        ack.first_sequence + (offset - ack.base_offset) as u64
                    ),
                ));
                offset = next;
                continue;
            };
            let chunk_end = end.min(run.end());
            let expected = ack.first_sequence + (offset - ack.base_offset) as u64;
            let found = run.sequence_at(offset);
            if run.producer != ack.producer || found != expected {
                violations.add(self.violation(
                    Kind::Moved,
                    offset,
                    (chunk_end - offset) as u64,
                    format!(
                        "acknowledged to producer {:#x} sequence {expected}, but holds producer \
                         {:#x} sequence {found}",
                        ack.producer, run.producer
                    ),
                ));
            }
            offset = chunk_end;
        }
    }

    /// Records read at offsets no acknowledgement names: either copies of acknowledged records
    /// (duplicates, judged when read), or failed writes above what their producer knew.
    fn check_unacknowledged(&self, violations: &mut Violations) {
        let acked_offsets = union(
            self.acks
                .iter()
                .map(|ack| (ack.base_offset, ack.base_offset + i64::from(ack.count)))
                .collect(),
        );
        let mut acked_sequences: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
        for ack in self.acks {
            let range = (
                ack.first_sequence,
                ack.first_sequence + u64::from(ack.count),
            );
            acked_sequences.entry(ack.producer).or_default().push(range);
        }
        let acked_sequences: HashMap<u64, Vec<(u64, u64)>> = acked_sequences
            .into_iter()
            .map(|(producer, ranges)| (producer, union(ranges)))
            .collect();
        for run in self.runs {
            for (start, end) in subtract((run.offset, run.end()), &acked_offsets) {
                let first = run.sequence_at(start);
                let sequences = (first, first + (end - start) as u64);
                let copies = acked_sequences
                    .get(&run.producer)
                    .map_or(&[][..], Vec::as_slice);
                for (low, high) in subtract(sequences, copies) {
                    let offset = start + (low - first) as i64;
                    self.check_failed_write(run.producer, (low, high), offset, violations);
                }
            }
        }
    }

    /// Sequences `low..high` of `producer`, read from `offset` on, were never acknowledged:
    /// they must belong to failed writes, above the offsets known when those were sent.
    fn check_failed_write(
        &self,
        producer: u64,
        (low, high): (u64, u64),
        offset: i64,
        violations: &mut Violations,
    ) {
        let mut sequence = low;
        while sequence < high {
            let at = offset + (sequence - low) as i64;
            match self.failed_containing(producer, sequence) {
                Some(failure) => {
                    let failure_end = failure.first_sequence + u64::from(failure.count);
                    let chunk_end = high.min(failure_end);
                    if at <= failure.known_offset {
                        violations.add(self.violation(
                            Kind::FailedBelowKnown,
                            at,
                            chunk_end - sequence,
                            format!(
                                "a failed write of producer {producer:#x} (sequence {sequence}) \
                                 landed at or below offset {}, acknowledged before it was sent",
                                failure.known_offset
                            ),
                        ));
                    }
                    sequence = chunk_end;
                }
                None => {
                    violations.add(self.violation(
                        Kind::Unacknowledged,
                        at,
                        1,
                        format!(
                            "producer {producer:#x} sequence {sequence} was neither \
                             acknowledged nor reported failed"
                        ),
                    ));
                    sequence += 1;
                }
            }
        }
    }

    fn failed_containing(&self, producer: u64, sequence: u64) -> Option<&Failed> {
        self.failed
            .get(&(self.partition, producer))?
            .iter()
            .find(|failure| {
                (failure.first_sequence..failure.first_sequence + u64::from(failure.count))
                    .contains(&sequence)
            })
    }

    fn violation(&self, kind: Kind, offset: i64, count: u64, detail: String) -> Violation {
        Violation {
            kind,
            partition: self.partition,
            offset,
            count,
            detail,
        }
    }
}

/// Sorted, disjoint union of half-open ranges.
fn union<T: Copy + Ord>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// The parts of `range` outside `covered` (sorted, disjoint, as [`union`] makes them).
fn subtract<T: Copy + Ord>((start, end): (T, T), covered: &[(T, T)]) -> Vec<(T, T)> {
    let mut left = Vec::new();
    let mut position = start;
    let first = covered.partition_point(|&(_, covered_end)| covered_end <= start);
    for &(covered_start, covered_end) in &covered[first..] {
        if covered_start >= end {
            break;
        }
        if covered_start > position {
            left.push((position, covered_start));
        }
        position = position.max(covered_end);
    }
    if position < end {
        left.push((position, end));
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::payload::{key_bytes, write_value, Stamp, FLAG_CRC, NO_KEY};
    use bytes::{Bytes, BytesMut};

    const PRODUCER: u64 = 0xabc_0000_0001;
    const OTHER: u64 = 0xabc_0000_0002;

    /// A record as a producer of this run would have written it.
    fn value(producer: u64, partition: i32, sequence: u64, flags: u8) -> (Option<Bytes>, Bytes) {
        let stamp = Stamp {
            producer,
            partition,
            sequence,
            key_index: (sequence % 3) as u32,
            create_us: 1,
            flags: flags | FLAG_CRC,
        };
        let value = write_value(&mut BytesMut::new(), &stamp, b"filler", 100);
        (Some(key_bytes(stamp.key_index)), value)
    }

    /// Reads `(offset, producer, sequence)` records of partition 0 in the given order.
    fn read(records: &[(i64, u64, u64)], flags: u8) -> PartitionCheck {
        let mut check = PartitionCheck::new(0);
        for &(offset, producer, sequence) in records {
            let (key, value) = value(producer, 0, sequence, flags);
            check.observe(offset, key.as_deref(), Some(&value));
        }
        check
    }

    fn acked(producer: u64, first_sequence: u64, count: u32, base_offset: i64) -> Acked {
        Acked {
            partition: 0,
            producer,
            first_sequence,
            count,
            base_offset,
        }
    }

    fn kinds(violations: &Violations) -> Vec<(Kind, u64)> {
        violations
            .counts()
            .iter()
            .map(|(kind, count)| (*kind, *count))
            .collect()
    }

    /// Offsets 0..n holding sequences 0..n of PRODUCER.
    fn clean(n: i64) -> Vec<(i64, u64, u64)> {
        (0..n)
            .map(|offset| (offset, PRODUCER, offset as u64))
            .collect()
    }

    #[test]
    fn a_clean_run_passes_both_checks() {
        let records = clean(10);
        let standalone = read(&records, FLAG_IDEMPOTENT).finish_standalone(true);
        assert!(standalone.is_empty(), "{:?}", standalone.examples());
        let acks = [acked(PRODUCER, 0, 4, 0), acked(PRODUCER, 4, 6, 4)];
        let outcome = check_acknowledged(
            &acks,
            &[],
            vec![read(&records, FLAG_IDEMPOTENT).into_consumed()],
        );
        assert!(
            outcome.violations.is_empty(),
            "{:?}",
            outcome.violations.examples()
        );
        assert_eq!((outcome.acknowledged, outcome.read), (10, 10));
    }

    #[test]
    fn a_lost_record_is_found() {
        // Offset 4 (sequence 4) was acknowledged but is not there; offsets shifted down.
        let mut records = clean(10);
        records.remove(4);
        let acks = [acked(PRODUCER, 0, 10, 0)];
        let outcome = check_acknowledged(&acks, &[], vec![read(&records, 0).into_consumed()]);
        assert_eq!(kinds(&outcome.violations), vec![(Kind::Lost, 1)]);
        assert_eq!(outcome.violations.examples()[0].offset, 4);
        // Without acknowledgements, the sequence gap gives it away.
        let standalone = read(&records, 0).finish_standalone(false);
        assert_eq!(kinds(&standalone), vec![(Kind::Lost, 1)]);
        assert!(standalone.examples()[0].detail.contains("sequences 4..4"));
    }

    #[test]
    fn a_truncated_log_start_is_loss_when_reading_from_it() {
        let records: Vec<_> = clean(10).into_iter().skip(3).collect();
        let standalone = read(&records, 0).finish_standalone(true);
        assert_eq!(kinds(&standalone), vec![(Kind::Lost, 3)]);
        // Reading from the middle on purpose, a later first sequence is expected.
        assert!(read(&records, 0).finish_standalone(false).is_empty());
    }

    #[test]
    fn an_acknowledged_offset_holding_another_record_is_moved() {
        let records = vec![(0, PRODUCER, 0), (1, OTHER, 0), (2, PRODUCER, 2)];
        let acks = [acked(PRODUCER, 0, 3, 0), acked(OTHER, 0, 1, 7)];
        let outcome = check_acknowledged(&acks, &[], vec![read(&records, 0).into_consumed()]);
        let found = kinds(&outcome.violations);
        assert!(found.contains(&(Kind::Moved, 1)), "{found:?}");
        assert!(found.contains(&(Kind::Lost, 1)), "{found:?}"); // OTHER's offset 7
    }

    #[test]
    fn a_duplicate_is_a_violation_only_with_idempotence() {
        let records = vec![(0, PRODUCER, 0), (1, PRODUCER, 1), (2, PRODUCER, 1)];
        let idempotent = read(&records, FLAG_IDEMPOTENT);
        assert_eq!(idempotent.duplicates_allowed(), 0);
        let acks = [acked(PRODUCER, 0, 2, 0)];
        let outcome = check_acknowledged(&acks, &[], vec![idempotent.into_consumed()]);
        assert_eq!(kinds(&outcome.violations), vec![(Kind::Duplicate, 1)]);
        let plain = read(&records, 0);
        assert_eq!(plain.duplicates_allowed(), 1);
        let outcome = check_acknowledged(&acks, &[], vec![plain.into_consumed()]);
        assert!(
            outcome.violations.is_empty(),
            "{:?}",
            outcome.violations.examples()
        );
        assert!(read(&records, 0).finish_standalone(true).is_empty());
        let standalone = read(&records, FLAG_IDEMPOTENT).finish_standalone(true);
        assert_eq!(kinds(&standalone), vec![(Kind::Duplicate, 1)]);
    }

    #[test]
    fn a_reordered_record_is_found() {
        let records = vec![(0, PRODUCER, 0), (1, PRODUCER, 2), (2, PRODUCER, 1)];
        let standalone = read(&records, 0).finish_standalone(true);
        assert_eq!(kinds(&standalone), vec![(Kind::Reordered, 1)]);
        assert_eq!(standalone.examples()[0].offset, 2);
        let acks = [
            acked(PRODUCER, 0, 1, 0),
            acked(PRODUCER, 2, 1, 1),
            acked(PRODUCER, 1, 1, 2),
        ];
        let outcome = check_acknowledged(&acks, &[], vec![read(&records, 0).into_consumed()]);
        assert_eq!(kinds(&outcome.violations), vec![(Kind::Reordered, 1)]);
    }

    #[test]
    fn a_failed_write_may_land_late_but_only_above_the_known_offset() {
        // Sequence 1 failed (timed out) after offset 0 was acknowledged; sequence 2 was
        // acknowledged at offset 1; the failed write landed at offset 2.
        let records = vec![(0, PRODUCER, 0), (1, PRODUCER, 2), (2, PRODUCER, 1)];
        let acks = [acked(PRODUCER, 0, 1, 0), acked(PRODUCER, 2, 1, 1)];
        let failure = |known_offset| Failed {
            partition: 0,
            producer: PRODUCER,
            first_sequence: 1,
            count: 1,
            known_offset,
        };
        let outcome = check_acknowledged(
            &acks,
            &[failure(0)],
            vec![read(&records, 0).into_consumed()],
        );
        assert!(
            outcome.violations.is_empty(),
            "{:?}",
            outcome.violations.examples()
        );
        // Had the producer known offset 2 already, the failed write may not sit there.
        let outcome = check_acknowledged(
            &acks,
            &[failure(2)],
            vec![read(&records, 0).into_consumed()],
        );
        assert_eq!(
            kinds(&outcome.violations),
            vec![(Kind::FailedBelowKnown, 1)]
        );
        // And a record neither acknowledged nor failed is unexplained.
        let outcome = check_acknowledged(&acks, &[], vec![read(&records, 0).into_consumed()]);
        let found = kinds(&outcome.violations);
        assert!(found.contains(&(Kind::Unacknowledged, 1)), "{found:?}");
        assert!(found.contains(&(Kind::Reordered, 1)), "{found:?}");
    }

    #[test]
    fn corrupt_foreign_misplaced_and_miskeyed_records_are_found() {
        let mut check = PartitionCheck::new(0);
        let (key, good) = value(PRODUCER, 0, 0, 0);
        check.observe(0, key.as_deref(), Some(&good));
        let mut corrupt = good.to_vec();
        corrupt[60] ^= 1;
        check.observe(1, key.as_deref(), Some(&corrupt));
        check.observe(2, None, Some(b"hello from someone else"));
        check.observe(3, None, None);
        let (key, elsewhere) = value(PRODUCER, 5, 0, 0);
        check.observe(4, key.as_deref(), Some(&elsewhere));
        let (_, miskeyed) = value(OTHER, 0, 0, 0);
        check.observe(5, Some(b"key-2"), Some(&miskeyed));
        check.observe(5, Some(b"key-2"), Some(&miskeyed));
        let found = kinds(&check.finish_standalone(true));
        assert_eq!(
            found,
            vec![
                (Kind::Corrupt, 1),
                (Kind::WrongKey, 2),
                (Kind::WrongPartition, 1),
                (Kind::Foreign, 2),
                (Kind::OffsetsNotIncreasing, 1),
            ]
        );
    }

    #[test]
    fn overlapping_acknowledgements_are_found() {
        let records = clean(4);
        let acks = [acked(PRODUCER, 0, 4, 0), acked(OTHER, 0, 2, 2)];
        let outcome = check_acknowledged(&acks, &[], vec![read(&records, 0).into_consumed()]);
        let found = kinds(&outcome.violations);
        assert!(found.contains(&(Kind::AckedTwice, 2)), "{found:?}");
        assert!(found.contains(&(Kind::Moved, 2)), "{found:?}");
    }

    #[test]
    fn the_producer_side_check_finds_an_offset_acknowledged_twice() {
        let fine = [acked(PRODUCER, 0, 4, 0), acked(OTHER, 0, 2, 4)];
        assert!(check_acknowledgements(&fine).is_empty());
        let twice = [acked(PRODUCER, 0, 4, 0), acked(OTHER, 0, 2, 3)];
        let found = check_acknowledgements(&twice);
        assert_eq!(kinds(&found), vec![(Kind::AckedTwice, 1)]);
    }

    #[test]
    fn sequence_sets_merge_intervals() {
        let mut set = SequenceSet::default();
        for sequence in [0, 1, 2, 5, 6, 4, 3, 10, 8] {
            set.insert(sequence);
        }
        assert_eq!(set.intervals, vec![(0, 7), (8, 9), (10, 11)]);
        assert!(set.contains(6) && !set.contains(7) && set.contains(8) && !set.contains(9));
        set.insert(9);
        set.insert(7);
        assert_eq!(set.intervals, vec![(0, 11)]);
        assert_eq!(set.end(), 11);
        let _ = NO_KEY;
    }

    #[test]
    fn ranges_subtract() {
        let covered = union(vec![(5, 8), (0, 2), (7, 10), (12, 13)]);
        assert_eq!(covered, vec![(0, 2), (5, 10), (12, 13)]);
        assert_eq!(
            subtract((0, 15), &covered),
            vec![(2, 5), (10, 12), (13, 15)]
        );
        assert_eq!(subtract((5, 10), &covered), vec![]);
        assert_eq!(subtract((3, 4), &covered), vec![(3, 4)]);
        assert_eq!(subtract((9, 12), &covered), vec![(10, 12)]);
    }
}
