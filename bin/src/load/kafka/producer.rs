//! One load producer: creates records at the asked rate, batches them per partition, and keeps
//! up to `--max-in-flight` Produce requests in flight on its own connection (a
//! [`Pipeline`]).
//!
//! Batching follows the Java producer: records go to an open batch per partition (keyed records
//! by the key's murmur2 partition, unkeyed ones to a sticky partition that moves on when its
//! batch fills); a batch is sent when it is full or `--linger-ms` old, together with every other
//! sendable batch, in one request of at most [`REQUEST_BYTES_MAX`] once a window slot is free.
//! Creating records waits when the batch a record would join is full and no slot is free, or
//! when [`BUFFER_BYTES_MAX`] is buffered (Java's `buffer.memory`).
//!
//! A second task (the completer) takes each answer in order: it records latencies, counts
//! errors and, with `--verify`, keeps what was acknowledged and what failed. Any failure of an
//! idempotent producer's request, and any connection failure, ends the session: the producer
//! reconnects (with backoff), asks for a new producer id, and starts its Kafka sequences over.
//! Batches are never retried, so a failed batch stays failed (its records may still show up;
//! the checker knows where they may).
//!
//! Runs on its thread's executor; the completer and the pipeline's reader share it.

use super::payload::{self, KeyChooser, KeySpace, SplitMix64, Stamp};
use super::rate::RateLimiter;
use super::stats::{record_latency, Window};
use super::verify::{Acked, Failed};
use super::{Control, ThreadState};
use bytes::{Bytes, BytesMut};
use runnel_engine::batch::Compression;
use runnel_net::client::pipeline::{Pipeline, ProduceInFlight};
use runnel_net::client::records::{encode_batch_with, BatchOptions, NewRecord};
use runnel_net::client::{partition_for_key, Client, ClientConfig, ClientError, KafkaError};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Largest Produce request built (Java's `max.request.size`), unless one batch is larger.
pub const REQUEST_BYTES_MAX: usize = 1 << 20;
/// Most bytes buffered in open batches (Java's `buffer.memory`).
pub const BUFFER_BYTES_MAX: usize = 32 << 20;
/// Random bytes beyond the record size that values are cut from (so values differ).
const FILLER_SLACK_BYTES: usize = 4096;
/// Per-record overhead in a batch, for deciding when a batch is full.
const RECORD_OVERHEAD_BYTES: usize = 16;
/// Reconnect backoff.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What one producer is asked to do.
#[derive(Clone, Debug)]
pub struct ProducerPlan {
    /// Index among all producers of this run.
    pub index: u32,
    /// Id stamped into values: run id << 32 | index.
    pub load_id: u64,
    /// The broker.
    pub bootstrap: String,
    /// Client settings.
    pub client: ClientConfig,
    /// Topic.
    pub topic: String,
    /// Its partition count.
    pub partitions: i32,
    /// Value bytes per record.
    pub record_bytes: usize,
    /// Keys.
    pub keys: KeySpace,
    /// This producer's share of `--rate`, records/s; `None`: unlimited.
    pub rate_per_s: Option<f64>,
    /// This producer's share of `--records`.
    pub records: Option<u64>,
    /// `--duration`.
    pub duration: Option<Duration>,
    /// `--acks`.
    pub acks: i16,
    /// `--batch-size`.
    pub batch_bytes: usize,
    /// `--linger-ms`.
    pub linger: Duration,
    /// `--max-in-flight`.
    pub max_in_flight: usize,
    /// `--compression`.
    pub compression: Compression,
    /// `--idempotence`.
    pub idempotence: bool,
    /// `--verify`: CRC in every value, acknowledgements kept.
    pub verify: bool,
}

/// A batch being filled.
struct OpenBatch {
    records: Vec<NewRecord>,
    created: Vec<Instant>,
    bytes: usize,
    payload_bytes: u64,
    opened: Instant,
    first_sequence: u64,
}

/// What the completer needs to know about one sent batch.
struct SentBatch {
    partition: i32,
    first_sequence: u64,
    count: u32,
    payload_bytes: u64,
    created: Vec<Instant>,
    known_offset: i64,
}

/// A request handed to the completer.
struct Sent {
    request: ProduceInFlight,
    batches: Vec<SentBatch>,
    /// The session it was sent on.
    session: u64,
}

/// A connection with its idempotent producer identity.
struct Session {
    /// Counts sessions of this producer, from 1.
    id: u64,
    pipeline: Pipeline,
    producer_id: i64,
    producer_epoch: i16,
    /// Next Kafka sequence per partition (idempotence only).
    sequences: Vec<i32>,
}

/// What the producer loop and its completer share.
struct Shared {
    plan: Rc<ProducerPlan>,
    thread: Rc<ThreadState>,
    control: Arc<Control>,
    /// Highest offset acknowledged so far, per partition (-1: none).
    known_offsets: RefCell<Vec<i64>>,
    /// The session with this id must be replaced (set by the completer).
    failed_session: Cell<Option<u64>>,
    first_created: Cell<Option<Instant>>,
    last_answered: Cell<Option<Instant>>,
}

/// Runs one producer to the end of its records or duration, then waits for every answer.
pub async fn run(plan: ProducerPlan, thread: Rc<ThreadState>, control: Arc<Control>) {
    let plan = Rc::new(plan);
    let shared = Rc::new(Shared {
        plan: plan.clone(),
        thread: thread.clone(),
        control: control.clone(),
        known_offsets: RefCell::new(vec![-1; plan.partitions as usize]),
        failed_session: Cell::new(None),
        first_created: Cell::new(None),
        last_answered: Cell::new(None),
    });
    let (to_complete, sent) = flume::bounded(plan.max_in_flight + 1);
    let completer = glommio::spawn_local(complete(sent, shared.clone()));
    wait_for_members(&control).await;
    let mut producer = Producer::new(plan.clone(), shared.clone());
    // The connection stays open until every answer is in.
    let session = producer.run(&to_complete).await;
    drop(to_complete);
    completer.await;
    drop(session);
    if let (Some(started), Some(finished)) =
        (shared.first_created.get(), shared.last_answered.get())
    {
        let window = Some(Window { started, finished });
        let mut outcome = thread.outcome.borrow_mut();
        outcome.produce_window = Window::merge(outcome.produce_window, window);
    }
    control.producers_running.fetch_sub(1, Ordering::AcqRel);
}

/// The producer loop's state.
struct Producer {
    plan: Rc<ProducerPlan>,
    shared: Rc<Shared>,
    keys: KeyChooser,
    random: SplitMix64,
    filler: Vec<u8>,
    value_buffer: BytesMut,
    /// Next stamped sequence per partition.
    sequences: Vec<u64>,
    open: Vec<Option<OpenBatch>>,
    buffered_bytes: usize,
    sticky: i32,
    /// The next record's key and partition, chosen but not yet created.
    next: Option<(Option<(u32, Bytes)>, i32)>,
    created: u64,
    /// Where the next `take_ready` starts, so no partition is always last.
    drain_from: usize,
}

impl Producer {
    fn new(plan: Rc<ProducerPlan>, shared: Rc<Shared>) -> Producer {
        let seed = plan.load_id ^ 0x5eed_0000_0000_0000;
        let mut random = SplitMix64::new(seed);
        let filler = random.bytes(plan.record_bytes + FILLER_SLACK_BYTES);
        let partitions = plan.partitions as usize;
        Producer {
            keys: KeyChooser::new(plan.keys, seed.rotate_left(17)),
            sticky: (plan.index % plan.partitions as u32) as i32,
            plan,
            shared,
            random,
            filler,
            value_buffer: BytesMut::new(),
            sequences: vec![0; partitions],
            open: (0..partitions).map(|_| None).collect(),
            buffered_bytes: 0,
            next: None,
            created: 0,
            drain_from: 0,
        }
    }

    /// The loop; returns the session still open, with requests perhaps in flight.
    async fn run(&mut self, to_complete: &flume::Sender<Sent>) -> Option<Session> {
        let plan = self.plan.clone();
        let started = Instant::now();
        let deadline = plan.duration.map(|duration| started + duration);
        let mut limiter = plan.rate_per_s.map(|rate| RateLimiter::new(rate, 0));
        let mut session: Option<Session> = None;
        let mut sessions = 0;
        let mut backoff = BACKOFF_MIN;
        let mut generation_ended: Option<Instant> = None;
        loop {
            glommio::yield_if_needed().await;
            let now = Instant::now();
            let generating = generation_ended.is_none()
                && plan.records.is_none_or(|quota| self.created < quota)
                && deadline.is_none_or(|deadline| now < deadline)
                && !self.shared.control.stop.load(Ordering::Acquire);
            if !generating && generation_ended.is_none() {
                generation_ended = Some(now);
            }
            if !generating && self.buffered_bytes == 0 {
                break;
            }
            let failed = self.shared.failed_session.take();
            if failed.is_some() && failed == session.as_ref().map(|session| session.id) {
                session = None;
            }
            let Some(active) = session.as_mut() else {
                if let Some(ended) = generation_ended {
                    if now > ended + plan.client.request_timeout {
                        self.fail_buffered();
                        break;
                    }
                }
                sessions += 1;
                match open_session(&plan, sessions).await {
                    Ok(opened) => {
                        session = Some(opened);
                        backoff = BACKOFF_MIN;
                    }
                    Err(error) => {
                        self.shared.thread.error(&error);
                        glommio::timer::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
                continue;
            };
            let blocked = generating && self.blocked();
            if active.pipeline.has_free_slot() {
                // Blocked with a free slot: send what there is rather than wait for linger.
                let ready = self.take_ready(now, !generating || blocked);
                if !ready.is_empty() {
                    if let Err(error) = self.send(active, ready, to_complete).await {
                        self.shared.thread.error(&error);
                        session = None;
                    }
                    continue;
                }
            }
            if !generating || blocked {
                // Wait for a slot; the ready batches go out on the next turn.
                if active.pipeline.wait_for_slot().await.is_err() {
                    session = None;
                }
                continue;
            }
            let elapsed_ns = (now - started).as_nanos() as u64;
            let delay_ns = limiter
                .as_ref()
                .map_or(0, |limiter| limiter.delay_ns(elapsed_ns));
            if delay_ns == 0 {
                if let Some(limiter) = limiter.as_mut() {
                    limiter.take(elapsed_ns);
                }
                self.create_record(now);
                continue;
            }
            let mut wake = now + Duration::from_nanos(delay_ns);
            if let Some(oldest) = self.oldest_open() {
                wake = wake.min(oldest + plan.linger);
            }
            if let Some(deadline) = deadline {
                wake = wake.min(deadline);
            }
            let sleep = glommio::timer::sleep(wake.saturating_duration_since(now));
            if active.pipeline.has_free_slot() {
                sleep.await;
            } else {
                let slot = async {
                    let _ = active.pipeline.wait_for_slot().await;
                };
                futures_lite::future::or(sleep, slot).await;
            }
        }
        session
    }

    /// Picks the next record's key and partition (once) and says whether its batch is full or
    /// the buffer is: then creating must wait.
    fn blocked(&mut self) -> bool {
        if self.buffered_bytes >= BUFFER_BYTES_MAX {
            return true;
        }
        let partition = self.next_target().1;
        self.is_full(partition)
    }

    fn next_target(&mut self) -> &(Option<(u32, Bytes)>, i32) {
        if self.next.is_none() {
            let key = self.keys.next_key();
            let partition = match &key {
                Some((_, key)) => partition_for_key(key, self.plan.partitions),
                None => {
                    if self.is_full(self.sticky) {
                        // The sticky partition's batch is full: move on (as Java does).
                        self.sticky = (self.sticky + 1) % self.plan.partitions;
                    }
                    self.sticky
                }
            };
            self.next = Some((key, partition));
        }
        self.next.as_ref().expect("just chosen")
    }

    fn record_bytes_estimate(&self) -> usize {
        self.plan.record_bytes + RECORD_OVERHEAD_BYTES + 16
    }

    fn is_full(&self, partition: i32) -> bool {
        self.open[partition as usize]
            .as_ref()
            .is_some_and(|batch| batch.bytes + self.record_bytes_estimate() > self.plan.batch_bytes)
    }

    fn oldest_open(&self) -> Option<Instant> {
        self.open.iter().flatten().map(|batch| batch.opened).min()
    }

    /// Creates the next record and adds it to its partition's batch.
    fn create_record(&mut self, now: Instant) {
        let (key, partition) = match self.next.take() {
            Some(target) => target,
            None => {
                self.next_target();
                self.next.take().expect("just chosen")
            }
        };
        let slot = partition as usize;
        let sequence = self.sequences[slot];
        self.sequences[slot] += 1;
        let create_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_micros() as u64);
        let mut flags = 0;
        if self.plan.idempotence {
            flags |= payload::FLAG_IDEMPOTENT;
        }
        if self.plan.verify {
            flags |= payload::FLAG_CRC;
        }
        let stamp = Stamp {
            producer: self.plan.load_id,
            partition,
            sequence,
            key_index: key.as_ref().map_or(payload::NO_KEY, |(index, _)| *index),
            create_us,
            flags,
        };
        let start = self.random.below(FILLER_SLACK_BYTES as u64) as usize;
        let value = payload::write_value(
            &mut self.value_buffer,
            &stamp,
            &self.filler[start..],
            self.plan.record_bytes,
        );
        let key = key.map(|(_, key)| key);
        let payload_bytes = (value.len() + key.as_ref().map_or(0, Bytes::len)) as u64;
        let size = payload_bytes as usize + RECORD_OVERHEAD_BYTES;
        let batch = self.open[slot].get_or_insert_with(|| OpenBatch {
            records: Vec::new(),
            created: Vec::new(),
            bytes: 0,
            payload_bytes: 0,
            opened: now,
            first_sequence: sequence,
        });
        batch.records.push(NewRecord {
            key,
            value: Some(value),
            headers: Vec::new(),
            timestamp_ms: (create_us / 1000) as i64,
        });
        batch.created.push(now);
        batch.bytes += size;
        batch.payload_bytes += payload_bytes;
        self.buffered_bytes += size;
        self.created += 1;
        if self.shared.first_created.get().is_none() {
            self.shared.first_created.set(Some(now));
        }
    }

    /// Takes the batches that may go now (full, lingered, or all when `flush`), up to one
    /// request's worth.
    fn take_ready(&mut self, now: Instant, flush: bool) -> Vec<(i32, OpenBatch)> {
        let partitions = self.open.len();
        let mut ready = Vec::new();
        let mut request_bytes = 0;
        for step in 0..partitions {
            let slot = (self.drain_from + step) % partitions;
            let partition = slot as i32;
            let sendable = match &self.open[slot] {
                Some(batch) => {
                    flush || self.is_full(partition) || now >= batch.opened + self.plan.linger
                }
                None => false,
            };
            if !sendable {
                continue;
            }
            let bytes = self.open[slot].as_ref().map_or(0, |batch| batch.bytes);
            if !ready.is_empty() && request_bytes + bytes > REQUEST_BYTES_MAX {
                break;
            }
            if let Some(batch) = self.open[slot].take() {
                request_bytes += batch.bytes;
                self.buffered_bytes -= batch.bytes;
                ready.push((partition, batch));
            }
        }
        self.drain_from = (self.drain_from + 1) % partitions;
        ready
    }

    /// Encodes the batches and sends them in one request.
    async fn send(
        &mut self,
        session: &mut Session,
        ready: Vec<(i32, OpenBatch)>,
        to_complete: &flume::Sender<Sent>,
    ) -> Result<(), ClientError> {
        let known_offsets = self.shared.known_offsets.borrow().clone();
        let mut encoded = Vec::with_capacity(ready.len());
        let mut batches = Vec::with_capacity(ready.len());
        for (partition, batch) in ready {
            let count = batch.records.len() as u32;
            let slot = partition as usize;
            let base_sequence = if self.plan.idempotence {
                session.sequences[slot]
            } else {
                -1
            };
            let options = BatchOptions {
                compression: self.plan.compression,
                producer_id: session.producer_id,
                producer_epoch: session.producer_epoch,
                base_sequence,
            };
            let sent = SentBatch {
                partition,
                first_sequence: batch.first_sequence,
                count,
                payload_bytes: batch.payload_bytes,
                created: batch.created,
                known_offset: known_offsets[slot],
            };
            match encode_batch_with(&batch.records, &options) {
                Ok(bytes) => {
                    if self.plan.idempotence {
                        // Kafka's sequences wrap from i32::MAX to 0.
                        let next = i64::from(session.sequences[slot]) + i64::from(count);
                        session.sequences[slot] = (next % (i64::from(i32::MAX) + 1)) as i32;
                    }
                    encoded.push((partition, bytes));
                    batches.push(sent);
                }
                Err(error) => {
                    self.shared.thread.error_named("ENCODE_FAILED".into());
                    eprintln!("runnel-load: cannot encode a batch: {error}");
                    self.shared.fail(&sent);
                }
            }
        }
        if encoded.is_empty() {
            return Ok(());
        }
        let result = session
            .pipeline
            .send_produce(&self.plan.topic, encoded, self.plan.acks)
            .await;
        match result {
            Ok(request) => {
                // The completer keeps up with the window, so this waits rarely and briefly.
                let sent = Sent {
                    request,
                    batches,
                    session: session.id,
                };
                let _ = to_complete.send_async(sent).await;
                glommio::yield_if_needed().await;
                Ok(())
            }
            Err(error) => {
                for batch in &batches {
                    self.shared.fail(batch);
                }
                Err(error)
            }
        }
    }

    /// Gives up on what is still buffered (the broker stayed unreachable past the end).
    fn fail_buffered(&mut self) {
        let known_offsets = self.shared.known_offsets.borrow().clone();
        for (slot, batch) in self.open.iter_mut().enumerate() {
            if let Some(batch) = batch.take() {
                self.shared.thread.error_named("NOT_SENT".into());
                self.shared.fail(&SentBatch {
                    partition: slot as i32,
                    first_sequence: batch.first_sequence,
                    count: batch.records.len() as u32,
                    payload_bytes: batch.payload_bytes,
                    created: Vec::new(),
                    known_offset: known_offsets[slot],
                });
            }
        }
        self.buffered_bytes = 0;
    }
}

/// e2e with a group: waits (bounded) until every member has joined once.
async fn wait_for_members(control: &Control) {
    let deadline = Instant::now() + super::GROUP_JOIN_WAIT;
    while control.members_joining.load(Ordering::Acquire) > 0
        && Instant::now() < deadline
        && !control.stop.load(Ordering::Acquire)
    {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

async fn open_session(plan: &ProducerPlan, id: u64) -> Result<Session, ClientError> {
    let mut client = Client::connect(&plan.bootstrap, plan.client.clone()).await?;
    let (producer_id, producer_epoch) = if plan.idempotence {
        client.init_producer_id().await?
    } else {
        (-1, -1)
    };
    Ok(Session {
        id,
        pipeline: Pipeline::new(client, plan.max_in_flight)?,
        producer_id,
        producer_epoch,
        sequences: vec![0; plan.partitions as usize],
    })
}

impl Shared {
    /// Records a batch as failed (for the checker).
    fn fail(&self, batch: &SentBatch) {
        if self.plan.verify {
            self.thread.outcome.borrow_mut().failed.push(Failed {
                partition: batch.partition,
                producer: self.plan.load_id,
                first_sequence: batch.first_sequence,
                count: batch.count,
                known_offset: batch.known_offset,
            });
        }
    }

    /// Records an acknowledged batch at `base_offset`.
    fn acknowledged(&self, batch: &SentBatch, base_offset: i64, now: Instant) {
        let mut delta = self.thread.delta.borrow_mut();
        delta.produced_records += u64::from(batch.count);
        delta.produced_bytes += batch.payload_bytes;
        for created in &batch.created {
            record_latency(&mut delta.produce_latency_us, now - *created);
        }
        drop(delta);
        if self.plan.acks == 0 {
            return;
        }
        let last = base_offset + i64::from(batch.count) - 1;
        let slot = batch.partition as usize;
        let mut known = self.known_offsets.borrow_mut();
        known[slot] = known[slot].max(last);
        self.control.acked_end[slot].fetch_max(last + 1, Ordering::AcqRel);
        if self.plan.verify {
            self.thread.outcome.borrow_mut().acked.push(Acked {
                partition: batch.partition,
                producer: self.plan.load_id,
                first_sequence: batch.first_sequence,
                count: batch.count,
                base_offset,
            });
        }
    }
}

/// The completer: takes answers in the order requests were sent.
async fn complete(sent: flume::Receiver<Sent>, shared: Rc<Shared>) {
    while let Ok(Sent {
        request,
        batches,
        session,
    }) = sent.recv_async().await
    {
        let answers = request.answers().await;
        let now = Instant::now();
        shared.last_answered.set(Some(now));
        match answers {
            Ok(answers) => {
                for ((partition, answer), batch) in answers.into_iter().zip(&batches) {
                    debug_assert_eq!(partition, batch.partition);
                    match answer {
                        Ok(base_offset) => shared.acknowledged(batch, base_offset, now),
                        Err(error) => on_batch_error(&shared, batch, &error, session),
                    }
                }
            }
            Err(error) => {
                shared.thread.error(&error);
                for batch in &batches {
                    shared.fail(batch);
                }
                shared.failed_session.set(Some(session));
            }
        }
    }
}

fn on_batch_error(shared: &Shared, batch: &SentBatch, error: &KafkaError, session: u64) {
    shared.thread.error_named(error.name());
    shared.fail(batch);
    if shared.plan.idempotence {
        // This partition's sequence is now broken: start a new producer id.
        shared.failed_session.set(Some(session));
    }
}
